//! Issue 12, `agentctl` against the real daemon: `status` shows every part in order and exits
//! 0 ok, 1 degraded, 2 not running or unreachable, 3 permission denied; with `--json` every
//! outcome prints one JSON object; `flush`, `inventory NAME`, completions and man pages.

use crate::support::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// No IMDS requests (the tests do not run on EC2, and must not wait for a metadata service).
const NO_IMDS: &str = "[imds]\nenabled = false\n";

/// A dpkg admin dir holding a small real status file (three packages, one of them twice).
fn dpkg_admin(dir: &Path) -> PathBuf {
    let admin = dir.join("dpkg");
    std::fs::create_dir_all(&admin).unwrap();
    std::fs::copy(fixture("dpkg/multiarch.status"), admin.join("status")).unwrap();
    admin
}

fn wait_for_first_scan(daemon: &Daemon) {
    daemon.wait_for(
        || {
            let (_, out, _) = daemon.ctl(&["status", "--json"]);
            serde_json::from_str::<Value>(&out).is_ok_and(|s| s["last_scan"].is_object())
        },
        "the first scan",
    );
}

/// The index of the first line of `out` starting with `prefix`.
fn line_of(out: &str, prefix: &str) -> usize {
    out.lines().position(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no `{prefix}` line in:\n{out}"))
}

#[test]
fn status_shows_every_part_in_order_and_exits_0_on_a_healthy_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = dpkg_admin(tmp.path());
    let daemon =
        Daemon::start_with(&format!("{NO_IMDS}[packages]\ndpkg_admin_dir = \"{}\"\n", admin.display()), &[]);
    wait_for_first_scan(&daemon);
    // Healthy means the FIM baseline is complete too, which can end after the first scan.
    daemon.wait_for(
        || daemon.ctl(&["status", "--json"]).1.contains("\"baseline_complete\":true"),
        "the FIM baseline",
    );

    let (code, out, err, _) = daemon.ctl_bounded(&["status"], Duration::from_secs(30));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(err.is_empty(), "{err}");
    assert_eq!(out.lines().next(), Some("health      ok"), "{out}");
    let order = ["health", "agent", "config", "identity", "collectors", "fim", "transport", "self-limits"];
    let positions: Vec<usize> = order.iter().map(|p| line_of(&out, p)).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "parts out of order {positions:?}:\n{out}");
    assert!(out.contains(&format!("running (pid {})", daemon.pid())), "{out}");
    let config = out.lines().nth(line_of(&out, "config")).unwrap();
    let path = daemon.dir_path.join("agent.toml");
    assert!(config.contains(&path.display().to_string()), "{config}");
    assert!(out.contains("transport   off: reports stay on this host"), "{out}");
    assert!(out.lines().count() <= 40, "more than a screen:\n{out}");
    // Every state word is lowercase: the scan's sections, collectors, the verdict.
    for capitalised in ["Ok", "Degraded", "Skipped", "Error"] {
        assert!(!out.split_whitespace().any(|w| w == capitalised), "`{capitalised}` in:\n{out}");
    }

    let (code, out, _) = daemon.ctl(&["status", "--json"]);
    assert_eq!(code, 0);
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["health"]["verdict"], "ok");
    for key in ["identity", "collectors", "self_limits", "config_path", "fim"] {
        assert!(!status[key].is_null(), "no `{key}` in {status}");
    }
    assert_eq!(status["config_path"], path.display().to_string(), "{status}");
    // One per `Collector::ALL`.
    let names: Vec<&str> =
        status["collectors"].as_array().unwrap().iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, ["host", "packages", "network", "cloud", "fim", "updates", "access"], "{status}");
    assert!(status["transport"].is_null(), "[transport] is off: {status}");

    // `inventory NAME`: a table of the matching packages, any case; JSON rows with --json.
    let (code, out, err) = daemon.ctl(&["inventory", "ZLIB"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("VERSION") && lines[0].contains("SOURCE"),
        "{out}"
    );
    // The fixture's zlib1g (two architectures); the host's language packages may match too.
    let dpkg: Vec<&&str> = lines[1..].iter().filter(|l| l.contains(" dpkg ")).collect();
    assert_eq!(dpkg.len(), 2, "{out}");
    assert!(dpkg.iter().all(|l| l.starts_with("zlib1g ")), "{out}");
    assert!(lines[1..].iter().all(|l| l.to_lowercase().contains("zlib")), "{out}");
    assert!(!out.contains("tzdata"), "{out}");
    let (code, out, _) = daemon.ctl(&["inventory", "tzdata", "--json"]);
    assert_eq!(code, 0);
    let rows: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["name"], "tzdata");
    assert_eq!(rows[0]["source"], "dpkg");
    let (code, out, _) = daemon.ctl(&["inventory", "no-such-package-anywhere"]);
    assert_eq!(code, 0);
    assert!(out.contains("no installed package name contains `no-such-package-anywhere`"), "{out}");
    let (code, out, err) = daemon.ctl(&["inventory", "--format", "cyclonedx", "--json"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot be used with '--json'"), "{err}");
    let failure: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(failure["kind"], "usage");
}

#[test]
fn status_exits_1_when_a_collector_degrades_and_says_why_first() {
    let tmp = tempfile::tempdir().unwrap();
    // dpkg's status "file" is a directory: the packages collector degrades.
    let admin = tmp.path().join("dpkg");
    std::fs::create_dir_all(admin.join("status")).unwrap();
    let daemon =
        Daemon::start_with(&format!("{NO_IMDS}[packages]\ndpkg_admin_dir = \"{}\"\n", admin.display()), &[]);
    wait_for_first_scan(&daemon);

    let (code, out, err) = daemon.ctl(&["status"]);
    assert_eq!(code, 1, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "health      degraded", "{out}");
    assert!(lines[1].starts_with("  - ") && lines[1].contains("packages"), "the reason comes next:\n{out}");
    let (code, out, _) = daemon.ctl(&["status", "--json"]);
    assert_eq!(code, 1);
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["health"]["verdict"], "degraded");
    assert!(
        status["health"]["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains("packages"))
    );
}

#[test]
fn status_without_an_agent_exits_2_and_still_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    // No socket at all, and a socket nobody listens on (connection refused).
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    for socket in [dir.path().join("missing.sock"), stale] {
        let (code, out, err) = run(agentctl().arg("--socket").arg(&socket).args(["status", "--json"]));
        assert_eq!(code, 2, "{socket:?}: {err}");
        let failure: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"));
        assert_eq!(failure["health"]["verdict"], "not_running", "{failure}");
        assert_eq!(failure["kind"], "not_running");
        assert_eq!(failure["reachable"], false);
        assert_eq!(failure["exit_code"], 2);
        assert_eq!(failure["socket"], socket.display().to_string());
        assert!(failure["error"].as_str().unwrap().contains("not running"), "{failure}");
        // The message goes out once on stderr, not once per layer.
        assert_eq!(err.lines().count(), 1, "{err}");

        let (code, out, err) = run(agentctl().arg("--socket").arg(&socket).arg("status"));
        assert_eq!(code, 2);
        assert!(out.is_empty(), "{out}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("agentctl: the guestward agent is not running"), "{err}");
    }
    // Other commands keep exit 2, and print the same object (without `health`) with --json.
    let (code, out, _) =
        run(agentctl().arg("--socket").arg(dir.path().join("missing.sock")).args(["--json", "report"]));
    assert_eq!(code, 2);
    let failure: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((failure["kind"].as_str(), failure.get("health")), (Some("not_running"), None));
}

/// `--socket` naming a regular file or a directory was reported as "the agent is not running;
/// start it", sending the operator to systemctl for a typo. It names what the path is instead,
/// keeps exit 2, and the JSON `socket` is absolute when the path was given relative.
#[test]
fn a_socket_path_that_is_no_socket_says_so_instead_of_blaming_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("agent.toml"), "").unwrap();
    std::fs::create_dir(dir.path().join("run")).unwrap();
    for (given, kind) in [("agent.toml", "regular file"), ("run", "directory")] {
        let (code, out, err) =
            run(agentctl().current_dir(dir.path()).arg("--socket").arg(given).args(["status", "--json"]));
        assert_eq!(code, 2, "{given}: {err}");
        assert!(err.contains(&format!("{given} is a {kind}, not a socket")), "{err}");
        assert!(err.contains("--socket") && err.contains("control.socket_path"), "{err}");
        assert!(!err.contains("not running") && !err.contains("systemctl start"), "{err}");
        let failure: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"));
        assert_eq!(failure["socket"], dir.path().join(given).display().to_string(), "{failure}");
        assert_eq!(failure["reachable"], false);
        let (code, _, _) = run(agentctl().current_dir(dir.path()).arg("--socket").arg(given).arg("report"));
        assert_eq!(code, 2);
    }
}

/// What answers on the socket need not be the agent: an error text with terminal escapes is
/// shown escaped on stderr (it once reached the terminal raw), and kept as it was in `--json`.
#[test]
fn an_error_answered_on_the_socket_reaches_the_terminal_escaped() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("fake.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    // JSON escapes: the decoded message holds ESC and BEL.
    let hostile = r"\u001b[2J\u001b]0;pwned\u0007";
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = [0u8; 4096];
            let _ = conn.read(&mut request);
            let body = format!("{{\"error\":\"{hostile}\"}}");
            let _ = write!(
                conn,
                "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let (code, _, err) = run(agentctl().arg("--socket").arg(&socket).arg("report"));
    assert_eq!(code, 2, "{err}");
    assert!(!err.contains('\x1b') && !err.contains('\x07'), "raw control bytes on stderr: {err:?}");
    assert!(err.contains("\\x1b[2J"), "{err}");
    let (code, out, _) = run(agentctl().arg("--socket").arg(&socket).args(["--json", "report"]));
    assert_eq!(code, 2);
    let failure: Value = serde_json::from_str(&out).unwrap();
    assert!(failure["error"].as_str().unwrap().contains("\x1b[2J"), "{failure}");
    server.join().unwrap();
}

#[test]
fn status_as_another_user_exits_3_whether_the_socket_or_the_daemon_refuses() {
    const NAME: &str = "status_as_another_user_exits_3_whether_the_socket_or_the_daemon_refuses";
    let Some(setpriv) = setpriv() else {
        guestward_core::testing::skip_or_fail(NAME, "setpriv not installed");
        return;
    };
    if !is_root() {
        guestward_core::testing::skip_or_fail(NAME, "needs root to switch users");
        return;
    }
    // Only root (and members of a `guestward` group, if the machine has one; the test runs
    // with no groups) may use the socket.
    let daemon = Daemon::start_with(&format!("{NO_IMDS}[fim]\nenabled = false\n"), &[]);
    let as_nobody = || {
        let mut cmd = Command::new(setpriv);
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(agentctl_path())
            .arg("--socket")
            .arg(&daemon.socket)
            .args(["status", "--json"]);
        run_bounded(&mut cmd, Duration::from_secs(30))
    };
    // Served once: the daemon has set the socket's own mode (0660, after binding it), which
    // would otherwise race with the test's 0777 below.
    let (code, out, err) = daemon.ctl(&["status"]);
    assert!(code == 0 || code == 1, "{out}{err}");
    // The test's private directory is opened so `nobody` reaches the socket's directory, which
    // the daemon made 0750 root: the connect itself fails with EACCES.
    std::fs::set_permissions(&daemon.dir_path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, out, err, _) = as_nobody();
    assert_eq!(code, Some(3), "{out}{err}");
    let failure: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(failure["health"]["verdict"], "permission_denied", "{failure}");
    assert_eq!(failure["exit_code"], 3);
    assert!(err.contains("permission denied") && err.contains("guestward group"), "{err}");

    // Open at the file level too: now the daemon's peer-credential check refuses (403).
    for p in [daemon.socket.parent().unwrap(), &daemon.socket] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let (code, out, err, _) = as_nobody();
    assert_eq!(code, Some(3), "{out}{err}");
    let failure: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(failure["health"]["verdict"], "permission_denied", "{failure}");
    let (_, out, _) = daemon.ctl(&["status", "--json"]);
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["counters"]["control_denied_connections_total"], 1, "the daemon refused it");
}

#[test]
fn flush_without_reporting_prints_the_agents_refusal() {
    let daemon = Daemon::start_with(&format!("{NO_IMDS}[fim]\nenabled = false\n"), &[]);
    let (code, out, err, _) =
        daemon.ctl_bounded(&["flush", "--timeout", "5", "--json"], Duration::from_secs(40));
    let failure: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?} {err}"));
    assert_eq!(failure["kind"], "api", "{failure}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // 409: `[transport]` is off (exit 1).
    assert_eq!(failure["http_status"], 409, "{failure}");
    assert_eq!(code, Some(1), "{err}");
}

#[test]
fn both_binaries_print_completions_and_write_man_pages_for_packaging() {
    let (code, out, err) = run(agentctl().args(["completions", "bash"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("complete -F") && out.contains("inventory") && out.contains("flush"), "{out}");
    let (code, out, err) = run(agent().args(["completions", "zsh"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("#compdef guestward-agent") && out.contains("check-config"), "{out}");
    let (code, out, _) = run(agent().args(["completions", "fish"]));
    assert_eq!(code, 0);
    assert!(out.contains("complete -c guestward-agent"), "{out}");

    // What packaging runs: scripts/gen-cli-docs OUT BIN_DIR.
    let out_dir = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_guestward-agent")).parent().unwrap();
    let (code, _, err) =
        run(Command::new(Path::new(REPO).join("scripts/gen-cli-docs")).arg(out_dir.path()).arg(bin_dir));
    assert_eq!(code, 0, "{err}");
    for file in [
        "man8/agentctl.8",
        "man8/agentctl-status.8",
        "man8/agentctl-inventory.8",
        "man8/guestward-agent.8",
        "man8/guestward-agent-run.8",
        "bash-completion/completions/agentctl",
        "bash-completion/completions/guestward-agent",
        "zsh/vendor-completions/_agentctl",
        "fish/vendor_completions.d/guestward-agent.fish",
    ] {
        let text =
            std::fs::read_to_string(out_dir.path().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(!text.is_empty(), "{file} is empty");
    }
    let page = std::fs::read_to_string(out_dir.path().join("man8/agentctl-status.8")).unwrap();
    assert!(page.contains(".TH agentctl-status 8") && page.contains("permission denied"), "{page}");
    // The hidden generator has no page of its own.
    assert!(!out_dir.path().join("man8/agentctl-generate-docs.8").exists());
}
