//! `scripts/demo`, a newcomer's first end-to-end run, works.

use crate::support::*;
use std::time::Duration;

/// `bash scripts/demo` from the repository root exits 0 and prints the demo host (`demo-host`)
/// in the collector's host list, with the one report it delivered, the fleet's findings, and
/// the version of openssl it runs (as `dpkg-query` lists it), and the collector's own port as
/// the agent's network scan saw it: on loopback, owned by the collector (its `comm`: the
/// kernel keeps the first 15 bytes of the executable's name).
#[test]
fn scripts_demo_runs_and_lists_the_demo_host() {
    for tool in ["curl", "python3"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            guestward_core::testing::skip_or_fail(
                "demo::scripts_demo_runs_and_lists_the_demo_host",
                &format!("scripts/demo needs {tool}, which is not installed"),
            );
            return;
        }
    }
    guestward_core::testing::within(Duration::from_secs(90), "scripts/demo", || {
        let mut cmd = std::process::Command::new("bash");
        // The binaries under test, not whichever of target/debug and target/release is newer.
        let bin_dir = bin("guestward-agent").parent().unwrap().to_path_buf();
        cmd.arg("scripts/demo").current_dir(REPO).env("GUESTWARD_BIN_DIR", bin_dir);
        for var in ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
            cmd.env_remove(var);
        }
        let out = run_bounded(&mut cmd, Duration::from_secs(80));
        out.assert_success("scripts/demo");
        let lines: Vec<&str> = out.stdout.lines().collect();
        let table = lines.iter().position(|l| l.starts_with("HOST ")).unwrap_or_else(|| {
            panic!("scripts/demo printed no host list:\n{out}");
        });
        let row: Vec<&str> = lines.get(table + 1).map(|l| l.split_whitespace().collect()).unwrap_or_default();
        // HOST, LAST SEEN (`0s ago`), REPORTS, MISSING.
        assert_eq!(
            row.get(..5).map(|r| [r[0], r[2], r[3], r[4]]),
            Some(["demo-host", "ago", "1", "0"]),
            "the demo host, one report, none missing:\n{out}"
        );
        assert!(
            out.stdout.contains("on 1 host; 1 host searched")
                || out.stdout.contains("no finding matches (1 host searched)"),
            "scripts/demo printed no findings answer:\n{out}"
        );
        // Which version of openssl the fleet (this machine) runs: what dpkg says it has.
        let asked = lines.iter().position(|l| l.starts_with("== guestward-collector packages openssl"));
        let answer =
            &lines[asked.unwrap_or_else(|| panic!("scripts/demo asked no packages question:\n{out}")) + 1..];
        match installed_deb("openssl") {
            Ok(Some((version, arch))) => {
                let row: Vec<&str> =
                    answer.get(1).map(|l| l.split_whitespace().collect()).unwrap_or_default();
                assert_eq!(
                    row.get(..5),
                    Some(&["demo-host", "openssl", version.as_str(), arch.as_str(), "dpkg"][..]),
                    "the host's openssl, as dpkg-query lists it:\n{out}"
                );
                assert_eq!(answer.get(3).copied(), Some("1 of 1 host has it (1 version)"), "{out}");
            }
            Ok(None) => {
                assert_eq!(answer.first().copied(), Some("no package matches (1 host searched)"), "{out}");
            }
            Err(reason) => guestward_core::testing::skip_or_fail(
                "demo::scripts_demo_runs_and_lists_the_demo_host (its packages answer)",
                &format!("dpkg-query, the oracle of the packages answer, cannot run: {reason}"),
            ),
        }
        // The collector's port, from the line that announced it, and its listener as the
        // agent's scan of this machine saw it while the collector ran.
        let port = lines
            .iter()
            .find_map(|l| l.strip_prefix("== collector on https://127.0.0.1:"))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("scripts/demo announced no collector address:\n{out}"));
        let asked = lines.iter().position(|l| l.starts_with("== guestward-collector listeners --port"));
        let answer =
            &lines[asked.unwrap_or_else(|| panic!("scripts/demo asked no listeners question:\n{out}")) + 1..];
        assert_eq!(
            answer.first().map(|l| l.split_whitespace().collect::<Vec<_>>()),
            Some(vec![
                "HOST", "PORT", "PROTO", "ADDRESS", "SCOPE", "PROCESS", "USER", "UNIT", "PUBLIC", "AS", "OF"
            ]),
            "{out}"
        );
        let row: Vec<&str> = answer.get(1).map(|l| l.split_whitespace().collect()).unwrap_or_default();
        assert_eq!(
            row.get(..6),
            Some(&["demo-host", port, "tcp", "127.0.0.1", "loopback", "guestward-colle"][..]),
            "the collector's listener, as the agent saw it:\n{out}"
        );
        assert_eq!(answer.get(3).copied(), Some("1 of 1 host listens so (1 service)"), "{out}");
    });
}

/// `package`'s version and architecture as `dpkg-query` lists them (`None`: not installed).
fn installed_deb(package: &str) -> Result<Option<(String, String)>, String> {
    let out = std::process::Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Status} ${Version} ${Architecture}", package])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok(match text.split_whitespace().collect::<Vec<_>>()[..] {
        ["installed", version, arch] => Some((version.to_string(), arch.to_string())),
        _ => None,
    })
}
