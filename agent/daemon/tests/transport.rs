//! `[transport]` end to end, without a collector (the full round trip against the real
//! collector is `tests/e2e`): `run --once` refuses to run without it, its settings are checked
//! with file, line, column and key, a collector nobody answers for leaves every report in the
//! spool (exit 3) where the next run finds it, and `agentctl status` shows the transport.

use crate::support::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every run here is bounded: a delivery that never gives up fails the test instead of CI.
const LIMIT: Duration = Duration::from_secs(60);

/// A port on 127.0.0.1 nobody listens on: bound, then released.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `[transport]` on the test PKI (`tests/fixtures/tls`), its key copied 0600 into `dir` (git
/// does not keep modes, and the shipper refuses a key others can read).
fn transport_section(dir: &Path, url: &str) -> String {
    let fixtures = fixture("tls");
    let key = dir.join("agent-key.pem");
    std::fs::copy(fixtures.join("agent-key.pem"), &key).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    format!(
        "[transport]\nenabled = true\nurl = \"{url}\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        fixtures.join("ca.pem").display(),
        fixtures.join("agent.pem").display(),
        key.display()
    )
}

/// An `agent.toml` in `dir`: state inside it, FIM off (a one-shot run reads no baseline), host
/// id `test-host` (the certificate's), then `extra`.
fn config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "[agent]\nstate_dir = \"{}\"\nhost_id = \"test-host\"\n[fim]\nenabled = false\n[imds]\nenabled = false\n{extra}",
            dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn run_once_without_transport_is_a_usage_error_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "");
    let (code, stdout, stderr, _) =
        run_bounded(agent().arg("run").arg("--once").arg("--config").arg(&path), LIMIT);
    assert_eq!(code, Some(2), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stderr.contains("`[transport] enabled`") && stderr.contains(&path.display().to_string()),
        "{stderr}"
    );
    assert!(!dir.path().join("state").exists(), "a refused run created its state directory");
    // The run-only flags need --once.
    let (code, _, stderr, _) = run_bounded(agent().args(["run", "--timeout-secs", "5"]), LIMIT);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--once"), "{stderr}");
}

#[test]
fn transport_settings_are_checked_with_file_line_column_and_key() {
    let dir = tempfile::tempdir().unwrap();
    // Lines 1-7 are the fixed head written by `config`.
    let path = config(
        dir.path(),
        "[transport]\nenabled = true\nurl = \"http://collector:8443\"\ncert_file = \"agent.pem\"\nspool_max_bytes = 1024\ntls_min_version = \"1.1\"\n",
    );
    let shown = path.display().to_string();
    for (what, cmd) in [("guestward-agent", agent()), ("agentctl", agentctl())] {
        let mut cmd = cmd;
        let (code, _, stderr, _) = run_bounded(cmd.arg("check-config").arg(&path), LIMIT);
        assert_eq!(code, Some(1), "{what}: {stderr}");
        // `tls_min_version` does not deserialize; it is listed with its line, and the other keys
        // are checked too.
        assert!(
            stderr.contains(&format!("{shown}:13:19: key `transport.tls_min_version`")),
            "{what}: {stderr}"
        );
    }
    std::fs::write(&path, std::fs::read_to_string(&path).unwrap().replace("tls_min_version = \"1.1\"\n", ""))
        .unwrap();
    let (code, _, stderr, _) = run_bounded(agent().arg("check-config").arg(&path), LIMIT);
    assert_eq!(code, Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with(&shown)).collect();
    let expected = [
        ":8:1: key `transport.ca_file`: is required",
        ":10:7: key `transport.url`: must be an https:// URL",
        ":11:13: key `transport.cert_file`: must be an absolute path",
        ":12:19: key `transport.spool_max_bytes`: must be 1048576..=68719476736, got 1024",
    ];
    for e in expected {
        assert!(lines.iter().any(|l| l.contains(e)), "no line with {e:?} in:\n{stderr}");
    }
    // `key_file` missing is reported too (at the table, as it is not written).
    assert!(lines.iter().any(|l| l.contains("key `transport.key_file`: is required")), "{stderr}");
}

/// The reports of every run that could not deliver stay in the spool, and the next run tries
/// them again (and keeps them when it fails too).
#[test]
fn run_once_against_an_unreachable_collector_keeps_every_report_spooled() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("https://127.0.0.1:{}", closed_port());
    let path = config(dir.path(), &transport_section(dir.path(), &url));
    let once = |json: bool| {
        let mut cmd = agent();
        cmd.args(["run", "--once", "--timeout-secs", "2", "--config"]).arg(&path);
        if json {
            cmd.arg("--json");
        }
        run_bounded(&mut cmd, LIMIT)
    };
    let (code, stdout, stderr, took) = once(false);
    assert_eq!(code, Some(3), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("not delivered") && stderr.contains("stay spooled"), "{stderr}");
    assert!(took < Duration::from_secs(30), "--timeout-secs 2 took {took:?}");
    let spool = dir.path().join("state/spool");
    let files = std::fs::read_dir(&spool).unwrap().count();
    assert!(files >= 1, "nothing in {}", spool.display());

    let (code, stdout, stderr, _) = once(true);
    assert_eq!(code, Some(3), "stdout: {stdout}\nstderr: {stderr}");
    let outcome: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(outcome["delivered"], false, "{outcome}");
    assert_eq!(outcome["report"]["spooled"], true, "{outcome}");
    assert_eq!(outcome["report"]["sequence"], 2, "{outcome}");
    assert_eq!(outcome["spool"]["reports"], 2, "both runs' reports stay spooled: {outcome}");
    assert!(outcome["error"].as_str().is_some_and(|e| !e.is_empty()), "{outcome}");
}

#[test]
fn daemon_refuses_to_start_when_the_transport_credentials_cannot_be_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let section = transport_section(dir.path(), "https://127.0.0.1:1")
        .replace(&fixture("tls").join("agent.pem").display().to_string(), "/nonexistent/agent.pem");
    let path = config(
        dir.path(),
        &format!("[control]\nsocket_path = \"{}\"\n{section}", dir.path().join("run/agent.sock").display()),
    );
    let (code, _, stderr, _) =
        run_bounded(agent().arg("--config").arg(&path).arg("run"), Duration::from_secs(20));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("/nonexistent/agent.pem") && stderr.contains("[transport]"), "{stderr}");
    assert!(!dir.path().join("run/agent.sock").exists(), "the refused daemon bound its socket");
}

#[test]
fn status_shows_the_transport_when_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("https://127.0.0.1:{}", closed_port());
    let section = format!("[agent]\nhost_id = \"test-host\"\n{}", transport_section(dir.path(), &url));
    let daemon = Daemon::start_with(&section, &[]);
    let mut status = Value::Null;
    daemon.wait_for(
        || {
            let (code, out, _) = daemon.ctl(&["status", "--json"]);
            status = serde_json::from_str(&out).unwrap_or(Value::Null);
            // Degraded (exit 1) once the shipper has failed to reach the closed port.
            code == 1
                && status["transport"]["spool"]["reports"].as_u64().unwrap_or(0) >= 1
                && status["transport"]["last_error"].is_string()
        },
        "the first report in the spool",
    );
    let t = &status["transport"];
    assert_eq!(t["url"], url.as_str(), "{status}");
    assert_eq!(t["connected"], false, "{status}");
    assert_eq!(t["certificate"]["subject"], "test-host", "{status}");
    assert_eq!(status["counters"]["spool_push_failures_total"], 0, "{status}");
    let (code, out, err) = daemon.ctl(&["status"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("transport: not connected to"), "{out}");
    assert!(out.contains(&format!("transport   {url}")) && out.contains("spool     "), "{out}");
    assert!(out.contains("CN=test-host"), "{out}");
    assert_eq!(t["certificate"]["names"], "host test-host (SAN URI)", "{status}");
    assert!(t["certificate"]["identity_problem"].is_null(), "{status}");
    assert!(!out.contains("IDENTITY"), "{out}");

    // Without `[transport]` the block says so, and the JSON has none.
    let plain = Daemon::start();
    let (_, out, _) = plain.ctl(&["status", "--json"]);
    assert!(serde_json::from_str::<Value>(&out).unwrap()["transport"].is_null(), "{out}");
    let (_, out, _) = plain.ctl(&["status"]);
    assert!(out.contains("transport   off"), "{out}");
}

/// The certificate is `test-host`'s, the agent reports as another host: the collector would
/// refuse every report (403). The agent says so itself, naming both ids: in `agentctl status`
/// (degraded, an IDENTITY line) and as finding GW-TLS-002 in its report.
#[test]
fn a_certificate_for_another_host_is_a_finding_and_degrades_the_status() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("https://127.0.0.1:{}", closed_port());
    let section =
        format!("[agent]\nhost_id = \"i-0another00000000\"\n{}", transport_section(dir.path(), &url));
    let daemon = Daemon::start_with(&section, &[]);
    let mut status = Value::Null;
    daemon.wait_for(
        || {
            let (_, out, _) = daemon.ctl(&["status", "--json"]);
            status = serde_json::from_str(&out).unwrap_or(Value::Null);
            status["transport"]["certificate"]["identity_problem"].is_string()
        },
        "the certificate's identity problem in the status",
    );
    let expected = "names host test-host (SAN URI), but this agent reports as host i-0another00000000: the collector refuses its reports (403)";
    assert_eq!(status["transport"]["certificate"]["identity_problem"], expected, "{status}");
    let reasons = status["health"]["reasons"].to_string();
    assert!(reasons.contains(expected), "{status}");
    let (code, out, err) = daemon.ctl(&["status"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("  IDENTITY  the certificate names host test-host (SAN URI)"), "{out}");
    // And the report the daemon made carries the finding.
    let (code, out, err) = daemon.ctl(&["report", "--json"]);
    assert!(code == 0 || code == 1, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let finding = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "GW-TLS-002")
        .unwrap_or_else(|| panic!("no GW-TLS-002 in {out}"));
    assert_eq!(finding["severity"], "high", "{finding}");
    // In the report's order, most severe first, like the scan's own findings.
    let ranks: Vec<u8> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| match f["severity"].as_str().unwrap() {
            "critical" => 0,
            "high" => 1,
            "medium" => 2,
            "low" => 3,
            _ => 4,
        })
        .collect();
    assert!(ranks.is_sorted(), "{out}");
    assert_eq!(finding["evidence"]["reporting_as"], "i-0another00000000", "{finding}");
    assert_eq!(finding["evidence"]["names"], "host test-host (SAN URI)", "{finding}");
}

#[test]
fn run_once_is_refused_while_a_daemon_ships_on_the_same_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with(&transport_section(dir.path(), "https://127.0.0.1:1"), &[]);
    let (code, stdout, stderr, _) = run_bounded(
        agent().args(["run", "--once", "--config"]).arg(daemon.dir_path.join("agent.toml")),
        LIMIT,
    );
    assert_eq!(code, Some(2), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("a daemon is running") && stderr.contains("agentctl scan"), "{stderr}");
}
