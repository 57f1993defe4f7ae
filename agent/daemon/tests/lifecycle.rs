//! The daemon's lifecycle with the real binaries and real signals: `run --state-dir/--socket`,
//! SIGHUP reloads (a good file applied, a broken one refused while the old one keeps running),
//! a collector that fails reported in `agentctl status` and retried before the next full scan,
//! and `POST /v1/flush`.

use crate::support::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Collectors that do not depend on the machine the tests run on: no IMDS, FIM on a tiny tree
/// of the test's own (the harness's default).
const QUIET: &str = "[imds]\nenabled = false\n";

fn status(socket: &Path) -> Value {
    let (code, out, err, _) = run_bounded(
        agentctl().arg("--socket").arg(socket).args(["status", "--json"]),
        Duration::from_secs(20),
    );
    assert!(matches!(code, Some(0 | 1)), "agentctl status failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn hangup(pid: u32) {
    let ok = std::process::Command::new("kill").arg("-HUP").arg(pid.to_string()).status().unwrap();
    assert!(ok.success());
}

fn collector<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["collectors"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no collector {name} in {status}"))
}

/// A daemon of the test's own (`run` with `args`), its log (info level) in a file.
struct Flagged {
    child: Child,
    log: PathBuf,
}

impl Flagged {
    fn start(config: &Path, args: &[&Path], log: PathBuf) -> Self {
        let mut cmd = agent();
        cmd.env("GUESTWARD_LOG", "info").arg("--config").arg(config).arg("run");
        for a in args {
            cmd.arg(a);
        }
        let child = cmd.stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
        Self { child, log }
    }
}

impl Drop for Flagged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command-line flags win over the file, at start and at a reload; a good file sent with
/// SIGHUP is applied (the scan interval, and the next scan with it), a change that needs a
/// restart is named, and the log says "configuration reloaded" with the file.
#[test]
fn sighup_with_a_good_config_applies_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    let head = |interval: u64, extra: &str| {
        format!(
            "[agent]\nstate_dir = \"{}\"\nscan_interval_secs = {interval}\n[control]\nsocket_path = \"{}\"\n{extra}\
             [fim]\nenabled = false\n{QUIET}",
            dir.path().join("file-state").display(),
            dir.path().join("file-run/agent.sock").display(),
        )
    };
    std::fs::write(&config, head(3600, "")).unwrap();
    let (state, socket) = (dir.path().join("flag-state"), dir.path().join("flag-run/agent.sock"));
    let daemon = Flagged::start(
        &config,
        &[Path::new("--state-dir"), &state, Path::new("--socket"), &socket],
        dir.path().join("agent.log"),
    );
    wait_until("the socket given by --socket", Duration::from_secs(30), || socket.exists());
    wait_until("the first scan", Duration::from_secs(60), || status(&socket)["last_scan"].is_object());
    assert!(state.join("events.db").exists(), "--state-dir not used");
    assert!(!dir.path().join("file-state").exists() && !dir.path().join("file-run").exists());
    let before = status(&socket);
    assert_eq!(before["state_dir"], state.display().to_string().as_str());
    assert_eq!(before["scan_interval_secs"], 3600);
    assert_eq!(before["config_path"], config.display().to_string().as_str());
    assert!(before["reload"].is_null(), "{before}");

    std::fs::write(&config, head(1200, "max_connections = 32\n")).unwrap();
    hangup(daemon.child.id());
    wait_until("the reload", Duration::from_secs(30), || status(&socket)["reload"]["applied"] == true);
    let after = status(&socket);
    assert_eq!(after["scan_interval_secs"], 1200, "{after}");
    assert_eq!(after["reload"]["applied_total"], 1);
    assert_eq!(after["reload"]["needs_restart"], serde_json::json!(["control.max_connections"]));
    // The flags still win over the reloaded file.
    assert_eq!(after["state_dir"], state.display().to_string().as_str());
    assert!(socket.exists());
    // The next scan follows the new interval: 1200 s ±10 % after the first one, not 3600 s.
    let next = after["next_scan_at"].as_str().unwrap().to_string();
    let last = after["last_scan"]["collected_at"].as_str().unwrap().to_string();
    let secs = |t: &str| -> i64 {
        let out = std::process::Command::new("date").args(["-u", "-d", t, "+%s"]).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
    };
    let gap = secs(&next) - secs(&last);
    assert!((1070..=1330).contains(&gap), "next scan {gap} s after the last one: {after}");
    assert_eq!(after["health"]["verdict"], "ok", "{after}");

    let log = std::fs::read_to_string(&daemon.log).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("configuration reloaded") && l.contains(&config.display().to_string())),
        "{log}"
    );
    assert!(log.contains("control.max_connections") && log.contains("restart"), "{log}");
}

/// A broken file sent with SIGHUP changes nothing: the old configuration keeps running, status
/// says the reload was refused with every problem (file, line, key) and the health verdict
/// names it. Fixing the file and sending SIGHUP again applies it.
#[test]
fn sighup_with_a_broken_config_keeps_the_old_config_running_and_says_so() {
    let daemon = Daemon::start_with(QUIET, &[]);
    let path = daemon.dir_path.join("agent.toml");
    wait_until("the first scan", Duration::from_secs(60), || status(&daemon.socket)["last_scan"].is_object());
    let good = std::fs::read_to_string(&path).unwrap();
    assert!(good.contains("scan_interval_secs = 3600"), "{good}");

    let broken =
        good.replace("scan_interval_secs = 3600", "scan_interval_secs = 5") + "[network]\nno_such_key = 1\n";
    std::fs::write(&path, broken).unwrap();
    hangup(daemon.pid());
    wait_until("the refused reload", Duration::from_secs(30), || {
        status(&daemon.socket)["reload"]["applied"] == false
    });
    let s = status(&daemon.socket);
    assert_eq!(s["scan_interval_secs"], 3600, "the old configuration must keep running: {s}");
    let error = s["reload"]["error"].as_str().unwrap();
    assert!(error.contains("key `agent.scan_interval_secs`") && error.contains("got 5"), "{error}");
    assert!(error.contains("network.no_such_key"), "every problem, not only the first: {error}");
    assert!(error.contains(&path.display().to_string()), "{error}");
    assert_eq!(s["reload"]["rejected_total"], 1);
    assert_eq!(s["health"]["verdict"], "degraded", "{s}");
    let reasons = s["health"]["reasons"].to_string();
    assert!(reasons.contains("reload") && reasons.contains("rejected"), "{reasons}");
    // The human status shows the whole error, whose last key lies past 100 characters (it was
    // cut there, into a pipe as on a terminal): into a pipe on one line, on a terminal wrapped
    // at its width.
    let (code, out, _) = daemon.ctl(&["status"]);
    assert_eq!(code, 1, "{out}");
    let line = out.lines().find(|l| l.starts_with("reload ")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("network.no_such_key") && line.chars().count() > 100, "{out}");
    let (code, out) = run_on_terminal(
        agentctl().arg("--socket").arg(&daemon.socket).arg("status"),
        60,
        Duration::from_secs(30),
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.lines().all(|l| l.chars().count() <= 60), "a line is wider than the terminal:\n{out}");
    let joined = out.lines().map(str::trim).collect::<Vec<_>>().join(" ");
    assert!(joined.contains("network.no_such_key"), "{out}");
    // Still serving, on the old configuration.
    let (code, _, err, _) =
        daemon.ctl_bounded(&["scan", "--only", "host", "--json"], Duration::from_secs(30));
    assert_eq!(code, Some(0), "{err}");

    std::fs::write(&path, good.replace("scan_interval_secs = 3600", "scan_interval_secs = 600")).unwrap();
    hangup(daemon.pid());
    wait_until("the good reload", Duration::from_secs(30), || {
        status(&daemon.socket)["reload"]["applied"] == true
    });
    let s = status(&daemon.socket);
    assert_eq!(s["scan_interval_secs"], 600, "{s}");
    assert_eq!(
        (s["reload"]["applied_total"].as_u64(), s["reload"]["rejected_total"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(!s["health"]["reasons"].to_string().contains("reload"), "{s}");
}

/// A dpkg database whose `status` is a directory: the packages collector cannot read it (a
/// real failure, reachable through `[packages] dpkg_admin_dir` as any damaged host would
/// give it), while every other collector works.
fn broken_dpkg(dir: &Path) -> (PathBuf, String) {
    let admin = dir.join("dpkg");
    std::fs::create_dir_all(admin.join("status")).unwrap();
    (admin.clone(), format!("[packages]\ndpkg_admin_dir = \"{}\"\n{QUIET}", admin.display()))
}

#[test]
fn a_collector_forced_to_fail_shows_as_degraded_with_its_error_while_the_others_keep_running() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, extra) = broken_dpkg(dir.path());
    let daemon = Daemon::start_with(&extra, &[]);
    wait_until("the first scan", Duration::from_secs(60), || status(&daemon.socket)["last_scan"].is_object());
    let s = status(&daemon.socket);
    let packages = collector(&s, "packages");
    // It produced a (partial) inventory with an error: `degraded`, with the error that says
    // which file and why.
    assert_eq!(packages["state"], "degraded", "{s}");
    let error = packages["last_error"].as_str().unwrap();
    assert!(error.contains(&admin.join("status").display().to_string()), "{error}");
    assert!(packages["consecutive_failures"].as_u64().unwrap() >= 1, "{s}");
    assert!(packages["last_run_at"].is_string() && packages["last_duration_ms"].is_u64(), "{s}");
    // The others ran and are fine.
    for name in ["host", "network", "cloud", "fim", "access"] {
        let c = collector(&s, name);
        assert!(c["state"] == "ok" || c["state"] == "skipped", "{name}: {s}");
        assert!(c["last_error"].is_null() && c["consecutive_failures"] == 0, "{name}: {s}");
        assert!(c["last_run_at"].is_string(), "{name}: {s}");
    }
    let names: Vec<&str> =
        s["collectors"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["host", "packages", "network", "cloud", "fim", "updates", "access"]);
    assert_eq!(s["health"]["verdict"], "degraded", "{s}");
    let reasons: Vec<&str> =
        s["health"]["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert!(
        reasons.iter().any(|r| r.starts_with("collector packages degraded") && r.contains("status")),
        "{reasons:?}"
    );
}

/// The failed collector is run again on its own after a backoff (1/10 of the scan interval,
/// doubling), long before the next full scan, which keeps its time; once the cause is fixed, a
/// retry finds it healthy and a full scan follows, so the latest report is whole again.
#[test]
fn a_failed_collector_is_retried_with_backoff_before_the_next_full_scan_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, extra) = broken_dpkg(dir.path());
    let socket = dir.path().join("run/agent.sock");
    let config = dir.path().join("agent.toml");
    // Interval 30 s: the first retry about 3 s after the first scan, then 6 s, 12 s later.
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{}\"\nscan_interval_secs = 30\n[control]\nsocket_path = \"{}\"\n\
             [fim]\nenabled = false\n{extra}",
            dir.path().join("state").display(),
            socket.display()
        ),
    )
    .unwrap();
    let daemon = Flagged::start(&config, &[], dir.path().join("agent.log"));
    wait_until("the first scan", Duration::from_secs(30), || {
        socket.exists() && status(&socket)["last_scan"].is_object()
    });
    let first = status(&socket);
    let packages = collector(&first, "packages");
    assert_eq!(packages["state"], "degraded", "{first}");
    let (runs, first_run) =
        (packages["consecutive_failures"].as_u64().unwrap(), packages["last_run_at"].clone());
    let next_full = first["next_scan_at"].clone();
    assert!(
        packages["next_run_at"].as_str().unwrap() < next_full.as_str().unwrap(),
        "the retry must come before the next full scan: {first}"
    );
    let mut retried = Value::Null;
    wait_until("a retry of the packages collector", Duration::from_secs(20), || {
        retried = status(&socket);
        collector(&retried, "packages")["consecutive_failures"].as_u64().unwrap() > runs
    });
    let packages = collector(&retried, "packages");
    assert_ne!(packages["last_run_at"], first_run, "{retried}");
    assert_eq!(retried["next_scan_at"], next_full, "a retry must not move the full-scan schedule: {retried}");
    // The others were not run again by the retry.
    assert_eq!(collector(&retried, "host")["last_run_at"], collector(&first, "host")["last_run_at"]);

    // Fix the database: the next retry finds the collector healthy.
    std::fs::remove_dir(admin.join("status")).unwrap();
    std::fs::write(admin.join("status"), "").unwrap();
    let mut healed = Value::Null;
    wait_until("the packages collector to recover", Duration::from_secs(40), || {
        healed = status(&socket);
        collector(&healed, "packages")["state"] == "ok"
    });
    assert_eq!(collector(&healed, "packages")["consecutive_failures"], 0, "{healed}");
    wait_until("a full report with the recovered section", Duration::from_secs(40), || {
        let (_, out, _) = run(agentctl().arg("--socket").arg(&socket).args(["report", "--json"]));
        serde_json::from_str::<Value>(&out).is_ok_and(|r| r["packages"]["status"] == "ok")
    });
    let log = std::fs::read_to_string(&daemon.log).unwrap();
    assert!(log.contains("retrying collectors") && log.contains("collectors recovered"), "{log}");
}

/// One HTTP request on the control socket (for endpoints `agentctl` does not call yet).
fn request(socket: &Path, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let code = answer.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
fn flush_without_transport_is_a_conflict_that_says_why() {
    let daemon = Daemon::start_with(QUIET, &[]);
    let (code, body) = request(&daemon.socket, "POST", "/v1/flush", "{}");
    assert_eq!(code, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("[transport] enabled = false"), "{body}");
}

/// A collector nobody answers for: the flush waits its timeout, not longer, and says how many
/// reports stay spooled and why.
#[test]
fn flush_against_an_unreachable_collector_says_what_stays_spooled() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let key = dir.path().join("agent-key.pem");
    std::fs::copy(fixture("tls/agent-key.pem"), &key).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let transport = format!(
        "[transport]\nenabled = true\nurl = \"https://127.0.0.1:{port}\"\n\
         ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        fixture("tls/ca.pem").display(),
        fixture("tls/agent.pem").display(),
        key.display()
    );
    let daemon = Daemon::start_with(&format!("{QUIET}{transport}"), &[]);
    wait_until("a report in the spool", Duration::from_secs(60), || {
        status(&daemon.socket)["transport"]["spool"]["reports"].as_u64().unwrap_or(0) >= 1
    });
    let started = Instant::now();
    let (code, outcome) = request(&daemon.socket, "POST", "/v1/flush", r#"{"timeout_secs": 2}"#);
    let took = started.elapsed();
    assert_eq!(code, 200, "{outcome}");
    assert_eq!(outcome["delivered_reports"], 0, "{outcome}");
    assert!(outcome["remaining_reports"].as_u64().unwrap() >= 1, "{outcome}");
    assert!(outcome["error"].as_str().is_some_and(|e| e.contains("not acknowledged")), "{outcome}");
    assert!(took < Duration::from_secs(15), "a 2 s flush took {took:?}");
    let (code, body) = request(&daemon.socket, "POST", "/v1/flush", r#"{"timeout_secs": 0}"#);
    assert_eq!(code, 400, "{body}");
}

/// `--state-dir` applies to `run --once` too: its history, sequence and spool go there, and the
/// file's state directory is never created.
#[test]
fn run_once_keeps_its_state_in_the_state_dir_given_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let key = dir.path().join("agent-key.pem");
    std::fs::copy(fixture("tls/agent-key.pem"), &key).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{}\"\nhost_id = \"test-host\"\n[fim]\nenabled = false\n{QUIET}\
             [transport]\nenabled = true\nurl = \"https://127.0.0.1:{port}\"\nca_file = \"{}\"\n\
             cert_file = \"{}\"\nkey_file = \"{}\"\n",
            dir.path().join("file-state").display(),
            fixture("tls/ca.pem").display(),
            fixture("tls/agent.pem").display(),
            key.display()
        ),
    )
    .unwrap();
    let state = dir.path().join("flag-state");
    let (code, stdout, stderr, _) = run_bounded(
        agent()
            .arg("--config")
            .arg(&config)
            .args(["run", "--once", "--timeout-secs", "1", "--json", "--state-dir"])
            .arg(&state),
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(3), "stdout: {stdout}\nstderr: {stderr}");
    let outcome: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(outcome["spool"]["dir"], state.join("spool").display().to_string().as_str(), "{outcome}");
    assert!(state.join("report-sequence").is_file() && state.join("events.db").is_file());
    assert!(!dir.path().join("file-state").exists(), "the file's state_dir was used");
}
