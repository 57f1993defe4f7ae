use crate::support::*;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn live_scan_json_validates_against_the_published_schema() {
    let config = empty_config();
    let (code, stdout, stderr) = run(agent().args(["scan", "--json", "--config"]).arg(config.path()));
    assert!(code == 0 || code == 1, "exit {code}: {stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    validate_against_schema(&report);
    assert_eq!(report["schema_version"], 2);
    // A one-shot report has its own time-ordered id and no sequence (it is never shipped).
    assert_eq!(report["batch_id"].as_str().unwrap().as_bytes()[14], b'7', "UUIDv7: {}", report["batch_id"]);
    assert!(report.get("sequence").is_none());
    assert!(report.get("scanned_root").is_none());
    // On this Debian machine the live dpkg inventory is real and non-trivial.
    if std::path::Path::new("/var/lib/dpkg/status").exists() {
        let n = report["packages"]["data"]["dpkg"]["installed"].as_array().unwrap().len();
        assert!(n > 50, "only {n} packages");
    }
    assert!(report["host"]["data"]["live"]["cpu_count"].as_u64().unwrap() >= 1);
}

#[test]
fn root_scan_reads_the_fixture_tree_not_the_host() {
    let config = empty_config();
    let root = fixture("roots/debian-min");
    let (code, stdout, stderr) =
        run(agent().args(["scan", "--json", "--config"]).arg(config.path()).arg("--root").arg(&root));
    assert_eq!(code, 0, "{stderr}\n{stdout}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    validate_against_schema(&report);
    let host = &report["host"]["data"];
    assert_eq!(host["hostname"], "snapshot-host");
    assert_eq!(host["os"]["version_codename"], "bookworm", "absolute symlink resolved inside the root");
    assert!(host.get("live").is_none() || host["live"].is_null(), "no live facts under --root");
    assert_eq!(report["agent"]["host_id"], "5f1b0c6a2e9d4b7f8a3c1e0d9b8a7f6e");
    assert_eq!(report["agent"]["host_id_source"], "machine_id");
    let pkgs: Vec<String> = report["packages"]["data"]["dpkg"]["installed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}:{}", p["name"].as_str().unwrap(), p["architecture"].as_str().unwrap()))
        .collect();
    assert_eq!(pkgs, ["zlib1g:amd64", "zlib1g:i386", "tzdata:all"]);
}

#[test]
fn degraded_collector_exits_1_and_keeps_the_rest() {
    let config = empty_config();
    let (code, stdout, _) =
        run(agent().args(["scan", "--config"]).arg(config.path()).arg("--root").arg(fixture("roots/broken")));
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("== packages: DEGRADED"), "{stdout}");
    assert!(stdout.contains("var/lib/dpkg/status:11: skipped a stanza: missing Package field"), "{stdout}");
    assert!(stdout.contains("dpkg      2 installed"), "{stdout}");
    assert!(stdout.contains("== host: ok"), "{stdout}");
}

#[test]
fn only_selects_collectors() {
    let config = empty_config();
    let (code, stdout, stderr) = run(agent()
        .args(["scan", "--json", "--only", "packages", "--config"])
        .arg(config.path())
        .arg("--root")
        .arg(fixture("roots/debian-min")));
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert!(report.get("host").is_none());
    assert_eq!(report["packages"]["status"], "ok");

    let (code, _, stderr) = run(agent().args(["scan", "--only", "bogus"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid value 'bogus'"), "{stderr}");
}

#[test]
fn bad_config_is_exit_2_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "[packages]\ndpkg_admin_dir = 42\n").unwrap();
    let (code, stdout, stderr) = run(agent().args(["scan", "--config"]).arg(&path));
    assert_eq!(code, 2, "{stdout}");
    assert!(stdout.is_empty());
    let expected = format!("{}:2:18: key `packages.dpkg_admin_dir`", path.display());
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn missing_root_is_exit_2() {
    let (code, _, stderr) = run(agent().args(["scan", "--root", "/nonexistent/snapshot"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/snapshot") && stderr.contains("not found"), "{stderr}");
}

#[test]
fn unreadable_database_as_non_root_says_what_and_why() {
    // Build a root whose dpkg status file only root may read, then scan it as `nobody`.
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("var/lib/dpkg");
    std::fs::create_dir_all(&admin).unwrap();
    std::fs::copy(fixture("dpkg/multiarch.status"), admin.join("status")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(admin.join("status"), std::fs::Permissions::from_mode(0o600)).unwrap();
    for p in [dir.path(), &dir.path().join("var"), &dir.path().join("var/lib"), &admin] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let config = empty_config();
    std::fs::set_permissions(config.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let bin = env!("CARGO_BIN_EXE_guestward-agent");
    // As root the scan runs as `nobody` from a copy of the binary in a directory `nobody` can
    // enter: the target directory may sit under a home only root can read (CI clones anywhere).
    let bin_dir = tempfile::Builder::new().prefix("gw-as-nobody").tempdir_in("/tmp").unwrap();
    let bin_copy = bin_dir.path().join("guestward-agent");
    std::fs::copy(bin, &bin_copy).unwrap();
    for p in [bin_dir.path(), &bin_copy] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut cmd = if is_root() {
        let setpriv =
            ["/usr/bin/setpriv", "/bin/setpriv"].into_iter().find(|p| std::path::Path::new(p).exists());
        let Some(setpriv) = setpriv else {
            guestward_core::testing::skip_or_fail(
                "unreadable_database_as_non_root_says_what_and_why",
                "running as root without setpriv to drop privileges",
            );
            return;
        };
        let mut c = std::process::Command::new(setpriv);
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(&bin_copy);
        c
    } else {
        std::process::Command::new(bin)
    };
    // 126: the copy could not be executed (a /tmp mounted noexec).
    let (code, stdout, stderr) =
        run(cmd.args(["scan", "--config"]).arg(config.path()).arg("--root").arg(dir.path()));
    if stderr.contains("Permission denied") && code == 126 {
        guestward_core::testing::skip_or_fail(
            "unreadable_database_as_non_root_says_what_and_why",
            "`nobody` cannot execute the test binary here",
        );
        return;
    }
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("permission denied"), "{stdout}");
    assert!(stdout.contains("var/lib/dpkg/status"), "{stdout}");
    // The other collector still ran and said what it could not find.
    assert!(stdout.contains("== host: DEGRADED") && stdout.contains("etc/os-release: not found"), "{stdout}");
}

#[test]
fn help_documents_exit_codes() {
    let (code, stdout, _) = run(agent().args(["scan", "--help"]));
    assert_eq!(code, 0);
    assert!(stdout.contains("Exit codes:") && stdout.contains("2  usage or configuration error"), "{stdout}");
}

#[test]
fn check_config_accepts_the_shipped_example_and_rejects_a_typo() {
    let example = std::path::Path::new(REPO).join("packaging/agent.toml");
    let (code, stdout, stderr) = run(agentctl().arg("check-config").arg(&example));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.ends_with("agent.toml: ok\n"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("agent.toml");
    std::fs::write(&bad, "[agent]\nstate_dir = \"/var/lib/guestward\"\n\n[packages]\ndpkg_admdir = \"/x\"\n")
        .unwrap();
    let (code, _, stderr) = run(agentctl().arg("check-config").arg(&bad));
    assert_eq!(code, 1);
    assert!(stderr.contains(":5:1: key `packages.dpkg_admdir`: unknown field `dpkg_admdir`"), "{stderr}");

    // Unreadable is not "invalid": exit 2, as `guestward-agent check-config`.
    let (code, _, stderr) = run(agentctl().arg("check-config").arg(dir.path().join("absent.toml")));
    assert_eq!(code, 2, "an unreadable file is a usage error");
    assert!(stderr.contains("absent.toml: cannot read config"), "{stderr}");
}

/// A snapshot whose hostname, PRETTY_NAME and a package directory name carry terminal escape
/// sequences (retitle the window, clear the screen), with a FIFO in place of that package's
/// METADATA: the human summary shows them escaped, the JSON keeps them exact, and the FIFO is
/// reported instead of hanging the scan.
#[test]
fn terminal_escapes_from_scanned_files_render_escaped_in_human_output() {
    const HOSTILE: &str = "\x1b]0;pwned\x07\x1b[2J";
    const SHOWN: &str = "\\x1b]0;pwned\\x07\\x1b[2J";
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("hostname"), format!("evil{HOSTILE}host\n")).unwrap();
    std::fs::write(etc.join("os-release"), format!("ID=debian\nPRETTY_NAME=\"Debian{HOSTILE}\"\n")).unwrap();
    let dist = dir.path().join(format!("usr/lib/python3.11/site-packages/evil{HOSTILE}-1.0.dist-info"));
    std::fs::create_dir_all(&dist).unwrap();
    nix::unistd::mkfifo(&dist.join("METADATA"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let config = empty_config();

    let (code, stdout, stderr, _) = run_bounded(
        agent()
            .args(["scan", "--only", "host,packages", "--config"])
            .arg(config.path())
            .arg("--root")
            .arg(dir.path()),
        Duration::from_secs(60),
    );
    assert!(code == Some(0) || code == Some(1), "exit {code:?}: {stderr}");
    assert!(
        !stdout.contains('\x1b') && !stdout.contains('\x07'),
        "raw control characters reached the terminal: {stdout:?}"
    );
    assert!(stdout.contains(&format!("evil{SHOWN}host")), "{stdout}");
    assert!(stdout.contains(&format!("Debian{SHOWN}")), "{stdout}");
    assert!(stdout.contains("fifo") && stdout.contains(&format!("evil{SHOWN}-1.0.dist-info")), "{stdout}");

    let (_, json, stderr, _) = run_bounded(
        agent()
            .args(["scan", "--json", "--only", "host", "--config"])
            .arg(config.path())
            .arg("--root")
            .arg(dir.path()),
        Duration::from_secs(60),
    );
    let report: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}\n{stderr}"));
    assert_eq!(
        report["host"]["data"]["hostname"],
        format!("evil{HOSTILE}host"),
        "JSON keeps the exact value"
    );
    assert_eq!(report["host"]["data"]["os"]["pretty_name"], format!("Debian{HOSTILE}"));
}

/// A user other than the agent's runs `scan` on a host where the agent is installed: the state
/// directory is private (0700), so the FIM section cannot be read. That is not a failure of the
/// scan (exit 0): the section is skipped and says why and where to look instead. The network
/// section says once that other users' processes could not be inspected.
#[test]
fn scan_as_another_user_skips_a_private_fim_state_and_names_uninspected_processes_once() {
    use std::os::unix::fs::PermissionsExt;
    if !is_root() {
        guestward_core::testing::skip_or_fail(
            "scan_as_another_user_skips_a_private_fim_state_and_names_uninspected_processes_once",
            "needs root to own a private state directory and switch to nobody",
        );
        return;
    }
    let Some(setpriv) = setpriv() else {
        guestward_core::testing::skip_or_fail(
            "scan_as_another_user_skips_a_private_fim_state_and_names_uninspected_processes_once",
            "setpriv is not installed",
        );
        return;
    };
    let dir = tempfile::Builder::new().prefix("gw-private-state").tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("fim.db"), "").unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, format!("[agent]\nstate_dir = \"{}\"\n", state.display())).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A copy of the binary `nobody` can execute (the target dir may be under a private home).
    let bin = dir.path().join("guestward-agent");
    std::fs::copy(env!("CARGO_BIN_EXE_guestward-agent"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let scan_as_nobody = |only: &str| {
        run(std::process::Command::new(setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .arg("--config")
            .arg(&config)
            .args(["scan", "--only", only]))
    };
    let (code, stdout, stderr) = scan_as_nobody("fim");
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("== fim: skipped"), "{stdout}");
    assert!(stdout.contains("readable only by the agent's user"), "{stdout}");

    // The network section as such a user: root's processes (pid 1 at least) cannot be
    // inspected. Said once, as the section's problem, not again under the table.
    let (code, stdout, stderr) = scan_as_nobody("network");
    assert_eq!(code, 1, "degraded: {stdout}{stderr}");
    assert!(stdout.contains("problem: ") && stdout.contains("could not be inspected"), "{stdout}");
    assert_eq!(stdout.matches("could not be inspected").count(), 1, "{stdout}");
}

/// Run without root over a tree whose `/etc` and `/var/lib/dpkg` it cannot enter, a scan is
/// degraded and names both: what every system keeps readable by all users is never excused as
/// another user's privacy (such a scan once passed as clean, exit 0, even with `--fail-on`).
#[test]
fn scan_as_another_user_does_not_excuse_an_unreadable_package_database_or_passwd() {
    use std::os::unix::fs::PermissionsExt;
    const NAME: &str = "scan_as_another_user_does_not_excuse_an_unreadable_package_database_or_passwd";
    if !is_root() {
        guestward_core::testing::skip_or_fail(NAME, "needs root to close directories to nobody");
        return;
    }
    let Some(setpriv) = setpriv() else {
        guestward_core::testing::skip_or_fail(NAME, "setpriv is not installed");
        return;
    };
    let dir = tempfile::Builder::new().prefix("gw-closed-root").tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.path().join("root");
    for (path, text) in [
        ("etc/passwd", "root:x:0:0::/root:/bin/sh\ntoor:x:0:0::/root:/bin/sh\n"),
        (
            "var/lib/dpkg/status",
            "Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n\n",
        ),
    ] {
        std::fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
        std::fs::write(root.join(path), text).unwrap();
    }
    for closed in ["etc", "var/lib/dpkg"] {
        std::fs::set_permissions(root.join(closed), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    for open in ["", "var", "var/lib"] {
        std::fs::set_permissions(root.join(open), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let bin = dir.path().join("guestward-agent");
    std::fs::copy(env!("CARGO_BIN_EXE_guestward-agent"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "").unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, stdout, stderr) = run(std::process::Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .arg("--config")
        .arg(&config)
        .args(["scan", "--only", "packages,updates,access", "--json", "--root"])
        .arg(&root));
    assert_eq!(code, 1, "degraded, not clean: {stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let problems = |section: &str| report[section]["problems"].to_string();
    assert!(problems("packages").contains("/var/lib/dpkg/status"), "{}", report["packages"]);
    // The updates collector too: a status file it cannot look at is not a host without dpkg.
    assert!(problems("updates").contains("/var/lib/dpkg/status"), "{}", report["updates"]);
    assert!(problems("access").contains("/etc/passwd"), "{}", report["access"]);
}

/// A stderr that cannot be written (a health check's log on a full disk) once turned every
/// error path into a panic and exit 101; `agentctl status --json` then printed no JSON.
#[test]
fn a_full_stderr_keeps_the_documented_exit_codes_and_the_json() {
    let full = || std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[agent]\nscan_interval_secs = 0\n").unwrap();
    let cases: [(&str, Command, i32); 3] = [
        (
            "scan --root missing",
            {
                let mut c = agent();
                c.args(["scan", "--root", "/nonexistent/snap"]);
                c
            },
            2,
        ),
        (
            "check-config of a bad file",
            {
                let mut c = agent();
                c.arg("check-config").arg(&bad);
                c
            },
            1,
        ),
        (
            "scan with a bad config",
            {
                let mut c = agent();
                c.args(["scan", "--config"]).arg(&bad);
                c
            },
            2,
        ),
    ];
    for (what, mut cmd, expected) in cases {
        let out = cmd.stderr(full()).stdout(Stdio::piped()).output().unwrap();
        assert_eq!(out.status.code(), Some(expected), "{what}: {out:?}");
    }
    // A full disk under stdout is an error that says it was standard output.
    let out = agent().args(["scan", "--only", "host"]).stdout(full()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot write to standard output: No space left on device"), "{stderr}");
    let socket = dir.path().join("none.sock");
    let out =
        agentctl().arg("--socket").arg(&socket).args(["status", "--json"]).stderr(full()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["health"]["verdict"], "not_running", "{json}");
}

/// A config key written as an escape sequence must not drive the terminal of whoever checks
/// the file: `check-config` and `run` print it escaped.
#[test]
fn check_config_prints_control_characters_of_the_file_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("esc.toml");
    std::fs::write(&path, "[agent]\n\"\\u001b]0;PWNED\\u0007\" = 1\n").unwrap();
    let (code, _, stderr) = run(agent().arg("check-config").arg(&path));
    assert_eq!(code, 1, "{stderr}");
    assert!(!stderr.contains('\u{1b}') && !stderr.contains('\u{7}'), "{stderr:?}");
    assert!(stderr.contains("\\x1b]0;PWNED\\x07"), "{stderr}");
}

/// Under a process limit (the unit's `TasksMax`, `ulimit -u`) a thread the kernel refuses once
/// panicked a collector's scope: the scan lost its network and updates sections, or crashed
/// starting the IMDS client's runtime. Now a scan needs no thread at all (its work runs on the
/// calling thread), and `verify-packages` and the daemon say which limit to raise.
#[test]
fn a_process_limit_degrades_to_fewer_threads_instead_of_panicking() {
    use std::os::unix::fs::PermissionsExt;
    const TEST: &str = "a_process_limit_degrades_to_fewer_threads_instead_of_panicking";
    if !is_root() {
        guestward_core::testing::skip_or_fail(
            TEST,
            "needs root to switch to nobody (root ignores ulimit -u)",
        );
        return;
    }
    let Some(setpriv) = setpriv() else {
        guestward_core::testing::skip_or_fail(TEST, "setpriv is not installed");
        return;
    };
    let exe = env!("CARGO_BIN_EXE_guestward-agent");
    // `ulimit -u` counts every task of the user, other tests' processes as nobody included:
    // 1 leaves not one thread beside the main one, whatever else runs (with 4, a test running
    // as nobody at the same moment left the scan no room for a thread).
    let (code, stdout, stderr) = run(std::process::Command::new(setpriv)
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "bash", "-c"])
        .arg(format!("ulimit -u 1 && exec {exe} scan --json --only host,network,updates,packages,cloud"))
        .current_dir("/"));
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(code == 0 || code == 1, "exit {code}: {stderr}");
    // Nothing lost, and the operator is told why the scan was slow.
    assert!(
        stderr.contains("kernel refused threads while this scan ran") && stderr.contains("ulimit -u"),
        "{stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    for section in ["host", "network", "updates", "packages", "cloud"] {
        let status = report[section]["status"].as_str().unwrap_or("");
        assert!(status == "ok" || status == "degraded", "{section}: {}", report[section]);
        assert!(report[section]["data"].is_object(), "{section}: {}", report[section]);
    }
    let (code, _, stderr) = run(std::process::Command::new(setpriv)
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "bash", "-c"])
        // 1 again (with 2, a test running as nobody at the same moment took the signal
        // thread's place, then left one hasher room once it ended).
        .arg(format!("ulimit -u 1 && exec {exe} fim verify-packages --package dpkg --no-progress"))
        .current_dir("/"));
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("ulimit -u"), "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "").unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    // IMDS answered, with no thread to run its client on: the requests run on the collecting
    // thread (the emulator runs in this process, outside the limit). Named by its address,
    // then by a host name: the lookup, too, runs on that thread (tokio's resolver panicked).
    let imds = tokio::runtime::Runtime::new().unwrap();
    let emulator = imds.block_on(guestward_imds_emulator::Emulator::start(Default::default()));
    let by_name = format!("http://localhost:{}", emulator.addr().port());
    for endpoint in [emulator.url(), by_name] {
        let (code, stdout, stderr) = run(std::process::Command::new(setpriv)
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "bash", "-c"])
            .arg(format!("ulimit -u 1 && exec {exe} --config {} scan --json --only cloud", config.display()))
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &endpoint)
            .env_remove("AWS_EC2_METADATA_DISABLED")
            .current_dir("/"));
        assert!(!stderr.contains("panicked"), "{endpoint}: {stderr}");
        assert_eq!(code, 0, "{endpoint}: {stderr}");
        let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let cloud = &report["cloud"];
        assert_eq!(cloud["data"]["instance"]["instance_id"], guestward_imds_emulator::INSTANCE_ID, "{cloud}");
    }
    // The daemon cannot work without its runtime's workers: it does not start, and says why
    // instead of panicking in tokio.
    let (code, _, stderr) = run(std::process::Command::new(setpriv)
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "bash", "-c"])
        .arg(format!("ulimit -u 1 && exec {exe} --config {} run", config.display()))
        .current_dir("/"));
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("async runtime") && stderr.contains("ulimit -u"), "{stderr}");
    // The flag is bounded as the config key is.
    let (code, _, stderr) = run(agent().args(["fim", "verify-packages", "--threads", "1000"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("1000") && stderr.contains("0..=64"), "{stderr}");
}
