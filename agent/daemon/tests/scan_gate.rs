//! `scan` as a gate for an AMI bake or a CI job (issue 12, item 6): findings first, `--fail-on`,
//! and a non-root scan that is not "degraded" by other users' homes. Also the JSON layout
//! (compact unless standard output is a terminal).

use crate::support::{agent, empty_config, fixture, is_root, run, setpriv};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

#[test]
fn scan_fail_on_high_exits_nonzero_on_a_root_with_a_log4shell_jar_and_zero_on_a_clean_one() {
    let config = empty_config();
    let scan = |root: &Path, extra: &[&str]| {
        run(agent().arg("--config").arg(config.path()).arg("scan").arg("--root").arg(root).args(extra))
    };
    let vulnerable = fixture("lang/root-app");
    let (code, out, err) = scan(&vulnerable, &["--fail-on", "high"]);
    assert_eq!(code, 4, "a critical Log4Shell finding fails --fail-on high: {out}{err}");
    // Findings lead, before the sections, with their count by severity and their location.
    let findings = out.find("findings: 2 (2 critical)").unwrap_or_else(|| panic!("{out}"));
    let first_section = out.find("== host").unwrap_or_else(|| panic!("{out}"));
    assert!(findings < first_section, "findings come first:\n{out}");
    let log4shell = out.lines().position(|l| l.contains("GW-LANG-001")).unwrap_or_else(|| panic!("{out}"));
    let at = out.lines().nth(log4shell + 1).unwrap_or_default();
    assert!(at.contains("at /opt/shop/shop-1.4.2.jar") && at.contains("log4j-core-2.14.1.jar"), "{out}");

    // Without --fail-on the exit code is what it always was; `critical` fails too; the JSON
    // output obeys the same gate.
    let (code, out, _) = scan(&vulnerable, &[]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = scan(&vulnerable, &["--fail-on", "critical", "--json"]);
    assert_eq!(code, 4);
    serde_json::from_str::<serde_json::Value>(&out).unwrap();

    let clean = fixture("roots/debian-min");
    let (code, out, err) = scan(&clean, &["--fail-on", "low"]);
    assert_eq!(code, 0, "no finding on the clean root: {out}{err}");
    assert!(out.contains("findings: none"), "{out}");

    let (code, _, err) = scan(&clean, &["--fail-on", "severe"]);
    assert_eq!(code, 2, "an unknown threshold is a usage error: {err}");
    let (_, help, _) = run(agent().args(["scan", "--help"]));
    assert!(help.contains("--fail-on") && help.contains("4  scan --fail-on"), "{help}");
}

#[test]
fn a_non_root_scan_notes_other_users_unreadable_homes_and_stays_ok() {
    let test = "a_non_root_scan_notes_other_users_unreadable_homes_and_stays_ok";
    if !is_root() {
        guestward_core::testing::skip_or_fail(test, "needs root to make a home only root can read");
        return;
    }
    let Some(setpriv) = setpriv() else {
        guestward_core::testing::skip_or_fail(test, "running as root without setpriv to drop privileges");
        return;
    };
    // A snapshot root with two homes `nobody` cannot enter, and nothing else wrong with it.
    let dir = tempfile::Builder::new().prefix("gw-homes").tempdir_in("/tmp").unwrap();
    let root = dir.path().join("root");
    let src = fixture("roots/debian-min");
    copy_tree(&src, &root);
    for home in ["home/alice", "root"] {
        std::fs::create_dir_all(root.join(home).join(".local/lib")).unwrap();
    }
    chmod_tree(dir.path(), 0o755, 0o644);
    for home in ["home/alice", "root"] {
        std::fs::set_permissions(root.join(home), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    // The binary, copied where `nobody` may run it (the target directory may be under a home).
    let bin = dir.path().join("guestward-agent");
    std::fs::copy(env!("CARGO_BIN_EXE_guestward-agent"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "").unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

    let mut cmd = std::process::Command::new(setpriv);
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(&bin);
    let (code, out, err) = run(cmd.arg("--config").arg(&config).arg("scan").arg("--root").arg(&root));
    if code == 126 {
        guestward_core::testing::skip_or_fail(test, "`nobody` cannot execute the test binary here");
        return;
    }
    assert_eq!(code, 0, "not degraded:\n{out}{err}");
    assert!(out.contains("== packages: ok"), "{out}");
    assert!(
        out.contains(
            "note: 2 paths not readable as uid 65534 (other users' homes); run as root to include them"
        ),
        "{out}"
    );
    assert!(!out.contains("problem:"), "{out}");

    // The JSON keeps the paths, apart from the problems.
    let mut cmd = std::process::Command::new(setpriv);
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(&bin);
    let (code, out, _) = run(cmd.arg("--config").arg(&config).args(["scan", "--json", "--root"]).arg(&root));
    assert_eq!(code, 0);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let packages = &report["packages"];
    assert_eq!(packages["status"], "ok");
    assert!(packages.get("problems").is_none(), "{packages}");
    let excused: Vec<&str> = packages["expected_problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert!(
        excused.iter().any(|p| p.contains("home/alice")) && excused.iter().any(|p| p.contains("/root/")),
        "{excused:?}"
    );
    crate::support::validate_against_schema(&report);

    // As root the same tree is read in full: nothing to excuse, nothing noted.
    let (code, out, err) = run(agent().arg("--config").arg(&config).arg("scan").arg("--root").arg(&root));
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("not readable as uid"), "{out}");
}

#[test]
fn scan_json_is_compact_in_a_pipe_and_indented_on_a_terminal() {
    let config = empty_config();
    let (code, out, err) = run(agent()
        .arg("--config")
        .arg(config.path())
        .args(["scan", "--json", "--root"])
        .arg(fixture("roots/debian-min")));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "one line of compact JSON in a pipe");
    serde_json::from_str::<serde_json::Value>(&out).unwrap();

    let Some(script) = ["/usr/bin/script", "/bin/script"].into_iter().find(|p| Path::new(p).exists()) else {
        guestward_core::testing::skip_or_fail(
            "scan_json_is_compact_in_a_pipe_and_indented_on_a_terminal",
            "util-linux `script` (to give the scan a terminal) is not installed",
        );
        return;
    };
    let command = format!(
        "{} --config {} scan --json --root {}",
        env!("CARGO_BIN_EXE_guestward-agent"),
        config.path().display(),
        fixture("roots/debian-min").display()
    );
    let (limit, what) = (std::time::Duration::from_secs(60), "a scan on a terminal");
    let (code, out, _, _) = guestward_core::testing::within(limit, what, move || {
        crate::support::run_bounded(
            std::process::Command::new(script).args(["-qec", &command, "/dev/null"]),
            limit,
        )
    });
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("{\r\n  \"schema_version\"") || out.contains("{\n  \"schema_version\""), "{out}");
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn chmod_tree(path: &Path, dir_mode: u32, file_mode: u32) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    if meta.is_dir() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(dir_mode)).unwrap();
        for entry in std::fs::read_dir(path).unwrap() {
            chmod_tree(&entry.unwrap().path(), dir_mode, file_mode);
        }
    } else if meta.is_file() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(file_mode)).unwrap();
    }
}
