use crate::support::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

#[test]
fn daemon_serves_status_report_and_scans_then_stops_cleanly() {
    let daemon = Daemon::start();
    let state_mode =
        std::fs::metadata(daemon.socket.parent().unwrap().parent().unwrap().join("state")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(state_mode.permissions().mode() & 0o777, 0o700, "state dir must be private");

    // The first scan starts at once; wait until status shows it.
    daemon.wait_for(
        || {
            let (code, out, _) = daemon.ctl(&["status", "--json"]);
            code == 0 && serde_json::from_str::<Value>(&out).unwrap()["last_scan"].is_object()
        },
        "the first scan",
    );
    // Checked once the daemon answers: the socket exists from its bind, a moment before its
    // chmod (connections in between are refused anyway: peer credentials decide, not the
    // mode), and CI under load once read the mode in that moment.
    let socket_mode = std::fs::metadata(&daemon.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(socket_mode, 0o660);
    let (code, out, err) = daemon.ctl(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("running (pid") && out.contains("  packages  ok"), "{out}");

    let (code, out, err) = daemon.ctl(&["report", "--json"]);
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    validate_against_schema(&report);

    let (code, out, err) = daemon.ctl(&["scan", "--only", "host", "--json"]);
    assert_eq!(code, 0, "{err}");
    let fresh: Value = serde_json::from_str(&out).unwrap();
    assert!(fresh.get("packages").is_none() && fresh["host"]["status"] == "ok");

    let (code, out, _) = daemon.ctl(&["status", "--json"]);
    assert_eq!(code, 0);
    let status: Value = serde_json::from_str(&out).unwrap();
    assert!(status["counters"]["scan_runs_total"].as_u64().unwrap() >= 2);

    let socket = daemon.socket.clone();
    assert_eq!(daemon.terminate(), 0);
    assert!(!socket.exists(), "socket removed on shutdown");
}

#[test]
fn agentctl_without_a_daemon_says_so() {
    let (code, _, err) = run(agentctl().args(["--socket", "/nonexistent/agent.sock", "status"]));
    // `status`: 2 not running (its documented health-check code); other commands: 2 as always.
    assert_eq!(code, 2);
    assert!(err.contains("not running") && err.contains("/nonexistent/agent.sock"), "{err}");
    let (code, _, err) = run(agentctl().args(["--socket", "/nonexistent/agent.sock", "report"]));
    assert_eq!(code, 2);
    assert!(err.contains("not running"), "{err}");
}

#[test]
fn other_users_are_refused_by_peer_credentials() {
    let Some(setpriv) = ["/usr/bin/setpriv", "/bin/setpriv"].into_iter().find(|p| Path::new(p).exists())
    else {
        guestward_core::testing::skip_or_fail(
            "other_users_are_refused_by_peer_credentials",
            "setpriv not installed",
        );
        return;
    };
    if !is_root() {
        guestward_core::testing::skip_or_fail(
            "other_users_are_refused_by_peer_credentials",
            "needs root to switch users",
        );
        return;
    }
    let daemon = Daemon::start();
    // Served once: the daemon has set the socket's own mode (0660, after binding it), which
    // would otherwise race with the test's below and refuse `nobody` at the file level.
    let (code, out, err) = daemon.ctl(&["status"]);
    assert!(code == 0 || code == 1, "{out}{err}");
    // Open the socket to everyone at the file level, so the peer-credential check is what
    // refuses the connection.
    use std::os::unix::fs::PermissionsExt;
    for p in [daemon.socket.parent().unwrap(), &daemon.socket] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    std::fs::set_permissions(
        daemon.socket.parent().unwrap().parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let (code, _, err) = run(Command::new(setpriv)
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            &crate::support::agentctl_path().display().to_string(),
            "--socket",
        ])
        .arg(&daemon.socket)
        .arg("status"));
    // `status` exits 3 on permission denied (health checks tell it from "not running").
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("permission denied"), "{err}");
    let (_, out, _) = daemon.ctl(&["status", "--json"]);
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["counters"]["control_denied_connections_total"], 1);
}

#[test]
fn a_second_daemon_refuses_to_steal_the_socket() {
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{}\"\n[control]\nsocket_path = \"{}\"\n",
            dir.path().join("state").display(),
            daemon.socket.display()
        ),
    )
    .unwrap();
    let (code, _, err) = run(agent().arg("--config").arg(&config).arg("run"));
    assert_eq!(code, 2);
    assert!(err.contains("already listening"), "{err}");
}

/// Nor its state directory, on another socket: two daemons on one state directory once both
/// ran, recording each change twice and shipping two reports under each sequence number.
#[test]
fn a_second_daemon_refuses_the_state_directory_of_the_first() {
    let daemon = Daemon::start();
    let other_socket = daemon.dir_path.join("run2/agent.sock");
    let (code, _, err, took) = run_bounded(
        agent()
            .arg("--config")
            .arg(daemon.dir_path.join("agent.toml"))
            .arg("run")
            .arg("--socket")
            .arg(&other_socket),
        std::time::Duration::from_secs(60),
    );
    assert_eq!(code, Some(2), "{err}");
    let first = format!("pid {}: guestward-agent --config", daemon.pid());
    assert!(
        err.contains("another guestward-agent uses the state directory") && err.contains(&first),
        "{err}"
    );
    assert!(!other_socket.exists(), "refused before it listened ({took:?})");
    // Running (ok or degraded: this machine's collectors are not the point), not 2.
    let (code, out, _) = daemon.ctl(&["status"]);
    assert!(code == 0 || code == 1, "the first daemon runs on: {out}");
}

#[test]
fn spot_interruption_notice_marks_terminating_and_flushes_a_report() {
    use guestward_imds_emulator::{Emulator, EmulatorConfig, TokenMode};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emu =
        rt.block_on(Emulator::start(EmulatorConfig { tokens: TokenMode::Required, ..Default::default() }));
    let daemon = Daemon::start_with(
        "[imds]\nspot_poll_interval_secs = 1\n[fim]\nenabled = false\n",
        &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", emu.url())],
    );
    let status = |d: &Daemon| -> Value {
        let (code, out, err) = d.ctl(&["status", "--json"]);
        assert!(code == 0 || code == 1, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    daemon.wait_for(|| status(&daemon)["last_scan"].is_object(), "the first scan");
    assert!(status(&daemon)["lifecycle_state"].is_null());
    let scans_before = status(&daemon)["counters"]["scan_runs_total"].as_u64().unwrap();

    emu.update(|c| {
        c.spot_instance_action =
            Some(r#"{"action": "terminate", "time": "2026-11-29T20:00:00Z"}"#.to_string())
    });
    daemon.wait_for(|| status(&daemon)["lifecycle_state"] == "terminating", "the termination notice");
    // The notice triggers an immediate full report carrying the event (the "flush").
    daemon.wait_for(
        || {
            let (_, out, _) = daemon.ctl(&["report", "--json"]);
            serde_json::from_str::<Value>(&out).ok().is_some_and(|r| {
                r["events"].as_array().is_some_and(|e| e.iter().any(|e| e["kind"] == "lifecycle.terminating"))
            })
        },
        "a report with the lifecycle.terminating event",
    );
    assert!(status(&daemon)["counters"]["scan_runs_total"].as_u64().unwrap() > scans_before);
    let (_, out, _) = daemon.ctl(&["status"]);
    assert!(out.contains("lifecycle   terminating"), "{out}");
    // One IMDS collector per process: scans and the lifecycle watcher share its client, so
    // within one token lifetime (6 h by default) the daemon asked for exactly one token.
    assert_eq!(emu.counters().token_put_requests, 1, "{:?}", emu.counters());
}
