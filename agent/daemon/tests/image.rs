//! Image lifecycle end to end: the real daemon against the IMDS emulator on 127.0.0.1.
//!
//! The clone test: state created for instance A (identity, spooled reports, the client
//! certificate's fingerprint), then the daemon started on that state against an emulator
//! answering instance B. Also: the same instance started again (a stop/start: only
//! `pendingTime` changed) keeps its identity; a damaged `identity.json` is replaced with a
//! clear log line; `prepare-image` removes what it lists (`--dry-run` nothing) and refuses
//! while a daemon runs. The machine-id rule off EC2 is covered by the identity module's unit
//! tests (the daemon reads the real /etc/machine-id).

use crate::support::*;
use guestward_imds_emulator::{Emulator, EmulatorConfig};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const INSTANCE_A: &str = "i-0aaaaaaaaaaaaaaaa";
const INSTANCE_B: &str = "i-0bbbbbbbbbbbbbbbb";
/// Each command, and each wait for the daemon. Generous: the whole test binary runs these
/// daemons beside 70 other tests on 2 cores, where a first full scan can take a minute.
const LIMIT: Duration = Duration::from_secs(150);

fn emulator(instance_id: &str, pending_time: &str) -> (tokio::runtime::Runtime, Emulator) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emu = rt.block_on(Emulator::start(EmulatorConfig {
        instance_id: instance_id.to_string(),
        pending_time: pending_time.to_string(),
        ..EmulatorConfig::default()
    }));
    (rt, emu)
}

/// A TCP listener on 127.0.0.1 that counts connections and closes each at once: the shipper
/// reaches it (and fails its TLS handshake), so a count of 0 proves nothing was attempted.
struct Listener {
    port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Listener {
    fn start() -> Self {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let port = socket.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (Arc::clone(&accepted), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match socket.accept() {
                    Ok((stream, _)) => {
                        count.fetch_add(1, Ordering::Relaxed);
                        drop(stream);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self { port, accepted, stop }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A test directory: `agent.toml` (state, socket, a small FIM tree, optionally `[transport]`
/// with the test PKI's certificate and key copied in, so they can be replaced), and the log.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(transport_port: Option<u16>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("watched/etc")).unwrap();
        std::fs::write(d.join("watched/etc/app.conf"), "port = 8080\n").unwrap();
        let mut text = format!(
            "[agent]\nstate_dir = \"{}\"\nscan_interval_secs = 3600\n[control]\nsocket_path = \"{}\"\n\
             [fim]\npaths = [\"{}\"]\n",
            d.join("state").display(),
            d.join("run/agent.sock").display(),
            d.join("watched").display()
        );
        if let Some(port) = transport_port {
            std::fs::copy(fixture("tls/agent.pem"), d.join("agent.pem")).unwrap();
            std::fs::copy(fixture("tls/agent-key.pem"), d.join("agent-key.pem")).unwrap();
            std::fs::set_permissions(d.join("agent-key.pem"), std::fs::Permissions::from_mode(0o600))
                .unwrap();
            text.push_str(&format!(
                "[transport]\nenabled = true\nurl = \"https://127.0.0.1:{port}\"\nca_file = \"{}\"\n\
                 cert_file = \"{}\"\nkey_file = \"{}\"\n",
                fixture("tls/ca.pem").display(),
                d.join("agent.pem").display(),
                d.join("agent-key.pem").display()
            ));
        }
        std::fs::write(d.join("agent.toml"), text).unwrap();
        Self { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn identity(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.path("state/identity.json")).unwrap()).unwrap()
    }

    fn spooled(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path("state/spool"))
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.retain(|n| n.ends_with(".zst"));
        names.sort();
        names
    }

    /// Starts `guestward-agent run` with IMDS at `emu` (or none), its log appended to `log`.
    fn start(&self, emu: Option<&Emulator>) -> Agent {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.path("agent.log")).unwrap();
        let mut cmd = agent();
        cmd.arg("--config").arg(self.path("agent.toml")).arg("run");
        match emu {
            Some(emu) => cmd
                .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", emu.url())
                .env_remove("AWS_EC2_METADATA_DISABLED"),
            None => cmd.env("AWS_EC2_METADATA_DISABLED", "true"),
        };
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap();
        let agent = Agent { child, socket: self.path("run/agent.sock") };
        wait_for(|| agent.socket.exists(), "the control socket");
        agent
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("agent.log")).unwrap_or_default()
    }
}

struct Agent {
    child: Child,
    socket: PathBuf,
}

impl Agent {
    fn ctl(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let (code, out, err, _) = run_bounded(agentctl().arg("--socket").arg(&self.socket).args(args), LIMIT);
        (code, out, err)
    }

    /// `agentctl status --json` once it answers. A daemon just started on a loaded machine
    /// (CI runs the suites side by side) may not answer the first time; an answer that never
    /// comes fails here, with what agentctl said, not later as a missing field.
    fn status(&self) -> Value {
        let deadline = Instant::now() + LIMIT;
        loop {
            let (code, out, err) = self.ctl(&["status", "--json"]);
            match serde_json::from_str::<Value>(&out) {
                Ok(status) if status.is_object() => return status,
                _ => assert!(
                    Instant::now() < deadline,
                    "no status: exit {code:?}, stdout {out:?}, stderr {err:?}"
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, and waits for a clean exit (the socket removed).
    fn stop(mut self) {
        Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the daemon did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(mut ready: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + LIMIT;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SHA-256 (hex) of a PEM certificate's DER, computed by openssl (an oracle independent of
/// the agent's own code).
fn openssl_fingerprint(cert: &Path) -> Option<String> {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim().rsplit('=').next()?.replace(':', "").to_ascii_lowercase())
}

#[test]
fn a_daemon_on_a_disk_cloned_into_another_instance_discards_the_identity_and_holds_the_old_certificate() {
    guestward_core::testing::within(Duration::from_secs(600), "the clone test", || {
        if Command::new("openssl").arg("version").output().is_err() {
            guestward_core::testing::skip_or_fail("clone test", "openssl is not installed");
            return;
        }
        let collector = Listener::start();
        let setup = Setup::new(Some(collector.port));
        let fingerprint = openssl_fingerprint(&setup.path("agent.pem")).unwrap();

        // Instance A: identity recorded, a report spooled (the collector never answers).
        let (_rt_a, emu_a) = emulator(INSTANCE_A, "2026-11-29T08:00:00Z");
        let a = setup.start(Some(&emu_a));
        wait_for(
            || !setup.spooled().is_empty() && collector.accepted() > 0,
            "instance A's report spooled and sent",
        );
        let id_a = setup.identity();
        assert_eq!(id_a["instance_id"], INSTANCE_A, "{id_a}");
        assert_eq!(id_a["certificate_sha256"], fingerprint.as_str(), "{id_a}");
        assert_eq!(id_a["pending_time"], "2026-11-29T08:00:00Z", "{id_a}");
        // FIM's baseline of A must be complete before A stops, so B has one to keep.
        wait_for(|| a.status()["fim"]["baseline_complete"] == true, "instance A's FIM baseline");
        a.stop();
        let spooled_a = setup.spooled();
        assert!(!spooled_a.is_empty());

        // The disk, cloned into instance B.
        let (_rt_b, emu_b) = emulator(INSTANCE_B, "2026-12-01T10:00:00Z");
        let sent_before = collector.accepted();
        let b = setup.start(Some(&emu_b));
        let mut status = Value::Null;
        wait_for(
            || {
                status = b.status();
                status["last_scan"].is_object()
                    && status["transport"]["spool"]["reports"].as_u64().unwrap_or(0) >= 1
            },
            "instance B's first report spooled",
        );
        let id = &status["identity"];
        assert_eq!(id["instance_id"], INSTANCE_B, "{status}");
        assert!(id["reinitialised_at"].is_string(), "{status}");
        let reason = id["reinitialised_reason"].as_str().unwrap();
        assert!(reason.contains(INSTANCE_A) && reason.contains(INSTANCE_B), "{reason}");
        assert_ne!(id["installation_id"], id_a["installation_id"], "{status}");
        assert_eq!(id["credentials"], "waiting", "{status}");
        assert!(id["credentials_action"].as_str().unwrap().contains("cert_file"), "{status}");
        let held = status["transport"]["held"].as_str().unwrap();
        assert!(held.contains(&fingerprint), "{held}");
        assert_eq!(status["health"]["verdict"], "degraded", "{status}");

        // The old instance's reports are gone, not sent under the new identity.
        let spooled_b = setup.spooled();
        assert!(
            spooled_a.iter().all(|n| !spooled_b.contains(n)),
            "A's reports {spooled_a:?} still in {spooled_b:?}"
        );
        // The old certificate is never presented again: a flush is refused with the reason,
        // and the collector saw no connection.
        let (code, out, err) = b.ctl(&["flush", "--timeout", "3"]);
        assert_eq!(code, Some(1), "{out}{err}");
        assert!(format!("{out}{err}").contains("holding reports"), "{out}{err}");
        assert_eq!(collector.accepted(), sent_before, "the retired certificate was used");

        // identity.json: B, the old certificate retired, why.
        let id_b = setup.identity();
        assert_eq!(id_b["instance_id"], INSTANCE_B);
        assert_eq!(id_b["retired_certificates"][0], fingerprint.as_str(), "{id_b}");
        assert!(id_b["certificate_sha256"].is_null(), "{id_b}");
        assert_eq!(id_b["reinitialised"]["previous_instance_id"], INSTANCE_A, "{id_b}");

        // Reported: the event in the next report, a log line.
        let (code, out, err) = b.ctl(&["report", "--json"]);
        assert_eq!(code, Some(0), "{err}");
        let report: Value = serde_json::from_str(&out).unwrap();
        validate_against_schema(&report);
        let event = report["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "identity.reinitialised")
            .unwrap_or_else(|| panic!("no identity.reinitialised event in {}", report["events"]));
        assert_eq!(event["data"]["previous"]["instance_id"], INSTANCE_A, "{event}");
        assert_eq!(event["data"]["current"]["instance_id"], INSTANCE_B, "{event}");
        assert_eq!(event["data"]["spool_reports_dropped"], spooled_a.len(), "{event}");
        assert_eq!(event["data"]["credentials"], "waiting", "{event}");
        assert!(setup.log().contains("agent identity re-initialised"), "{}", setup.log());
        // The human status says what to do.
        let (_, human, _) = b.ctl(&["status"]);
        assert!(human.contains("re-initialised") && human.contains("waiting"), "{human}");

        // The FIM baseline was kept, golden until B's first verification ends.
        assert!(setup.path("state/fim.db").exists());
        wait_for(|| !setup.path("state/fim-golden.json").exists(), "the golden baseline re-verified");

        // New certificate files (a certificate of B's own): delivery resumes, no restart.
        let made = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "30",
            ])
            .args(["-subj", "/CN=instance-b", "-keyout"])
            .arg(setup.path("new-key.pem"))
            .arg("-out")
            .arg(setup.path("new.pem"))
            .output()
            .unwrap();
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        std::fs::set_permissions(setup.path("new-key.pem"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::rename(setup.path("new-key.pem"), setup.path("agent-key.pem")).unwrap();
        std::fs::rename(setup.path("new.pem"), setup.path("agent.pem")).unwrap();
        let _ = b.ctl(&["flush", "--timeout", "3"]);
        wait_for(|| collector.accepted() > sent_before, "delivery with the new certificate");
        let status = b.status();
        assert!(status["transport"]["held"].is_null(), "{status}");
        assert_eq!(status["identity"]["credentials"], "in_use", "{status}");
    });
}

#[test]
fn the_same_instance_stopped_and_started_keeps_its_identity() {
    guestward_core::testing::within(Duration::from_secs(400), "stop/start", || {
        let setup = Setup::new(None);
        let (_rt, emu) = emulator(INSTANCE_A, "2026-11-29T08:00:00Z");
        let first = setup.start(Some(&emu));
        let created = setup.identity();
        first.stop();
        // A stop and start: the same instance id, a new pendingTime.
        let (_rt2, emu2) = emulator(INSTANCE_A, "2026-11-30T07:00:00Z");
        let second = setup.start(Some(&emu2));
        let status = second.status();
        let kept = setup.identity();
        assert_eq!(kept["installation_id"], created["installation_id"], "{kept}");
        assert_eq!(kept["pending_time"], "2026-11-30T07:00:00Z", "{kept}");
        assert!(kept["reinitialised"].is_null(), "{kept}");
        assert!(status["identity"]["reinitialised_at"].is_null(), "{status}");
        assert_eq!(status["identity"]["credentials"], "none", "{status}");
        assert!(setup.log().contains("stopped and started"), "{}", setup.log());
        assert!(!setup.log().contains("re-initialised"), "{}", setup.log());
    });
}

#[test]
fn a_damaged_identity_file_is_replaced_with_a_log_line_naming_it() {
    guestward_core::testing::within(Duration::from_secs(300), "damaged identity", || {
        let setup = Setup::new(None);
        std::fs::create_dir(setup.path("state")).unwrap();
        std::fs::set_permissions(setup.path("state"), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(setup.path("state/identity.json"), "{\"format\": 1, \"installation_id\": ").unwrap();
        let daemon = setup.start(None);
        let status = daemon.status();
        assert!(
            status["identity"]["reinitialised_reason"].as_str().unwrap().contains("unusable"),
            "{status}"
        );
        let log = setup.log();
        assert!(log.contains("identity.json") && log.contains("unusable"), "{log}");
        assert!(setup.identity()["installation_id"].is_string());
    });
}

#[test]
fn prepare_image_lists_with_dry_run_removes_what_it_lists_and_refuses_a_running_daemon() {
    guestward_core::testing::within(Duration::from_secs(400), "prepare-image", || {
        let setup = Setup::new(Some(Listener::start().port));
        // A running daemon: refused, nothing changed.
        let daemon = setup.start(None);
        wait_for(|| setup.path("state/identity.json").exists(), "the identity");
        let prepare = |args: &[&str]| {
            run_bounded(
                agent().arg("--config").arg(setup.path("agent.toml")).arg("prepare-image").args(args),
                LIMIT,
            )
        };
        let (code, _, err, _) = prepare(&[]);
        assert_eq!(code, Some(3), "{err}");
        assert!(err.contains("answers on") && err.contains("stop it first"), "{err}");
        assert!(setup.path("state/identity.json").exists());
        // With --json the refusal is an object on stdout too.
        let (code, out, err, _) = prepare(&["--dry-run", "--json"]);
        assert_eq!(code, Some(3), "{err}");
        let refusal: Value = serde_json::from_str(&out).unwrap();
        assert_eq!((refusal["refused"].as_bool(), refusal["exit_code"].as_u64()), (Some(true), Some(3)));
        assert!(refusal["error"].as_str().unwrap().contains("answers on"), "{refusal}");
        wait_for(|| daemon.status()["fim"]["baseline_complete"] == true, "the FIM baseline");
        daemon.stop();

        // An agent that answers on no socket of this config (a daemon with `--socket`
        // elsewhere, `run --once` from cron, `fim init`) still holds its lock: refused, named.
        for lock in ["agent.lock", "fim.lock"] {
            let held = guestward_core::lock::DirLock::acquire(&setup.path("state"), lock).unwrap();
            let (code, _, err, _) = prepare(&[]);
            assert_eq!(code, Some(3), "{lock}: {err}");
            assert!(err.contains("another process uses the state directory") && err.contains("pid"), "{err}");
            assert!(setup.path("state/identity.json").exists(), "{lock}: changed while refused");
            drop(held);
        }

        // --dry-run: listed, nothing removed.
        let (code, out, err, _) = prepare(&["--dry-run"]);
        assert_eq!(code, Some(0), "{err}");
        for listed in
            ["identity.json", "spool", "events.db", "fim.db", "agent.pem", "agent-key.pem", "would remove"]
        {
            assert!(out.contains(listed), "{listed} not in:\n{out}");
        }
        assert!(!out.contains("ca.pem"), "the CA is never removed:\n{out}");
        assert!(setup.path("state/identity.json").exists() && setup.path("agent.pem").exists());

        // Without root the private state dir cannot even be looked into: that is not a clean
        // image (exit 1, each path named), not "nothing to remove".
        if let Some(setpriv) = setpriv() {
            std::fs::set_permissions(setup.path(""), std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::set_permissions(setup.path("agent.toml"), std::fs::Permissions::from_mode(0o644))
                .unwrap();
            let (code, out, err, _) = run_bounded(
                Command::new(setpriv)
                    .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                    .arg(env!("CARGO_BIN_EXE_guestward-agent"))
                    .arg("--config")
                    .arg(setup.path("agent.toml"))
                    .args(["prepare-image", "--dry-run"]),
                LIMIT,
            );
            assert_eq!(code, Some(1), "{out}{err}");
            assert!(out.contains("cannot check") && out.contains("identity.json"), "{out}");
            assert!(out.contains("run prepare-image as root"), "{out}");
            assert!(!out.contains("nothing to remove"), "{out}");
        }

        // Through agentctl, as JSON, keeping the baseline (golden).
        let (code, out, err, _) = run_bounded(
            agentctl()
                .args(["prepare-image", "--keep-baseline", "--json", "--config"])
                .arg(setup.path("agent.toml")),
            LIMIT,
        );
        assert_eq!(code, Some(0), "{out}{err}");
        let outcome: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(outcome["service"], "not_running", "{outcome}");
        let items = outcome["items"].as_array().unwrap();
        assert!(items.iter().all(|i| i["done"] == true), "{outcome}");
        for item in items.iter().filter(|i| i["action"] == "remove") {
            let path = Path::new(item["path"].as_str().unwrap());
            assert!(std::fs::symlink_metadata(path).is_err(), "{} still there", path.display());
        }
        assert!(items.iter().any(|i| i["action"] == "mark_golden"), "{outcome}");
        assert!(setup.path("state/fim.db").exists() && setup.path("state/fim-golden.json").exists());
        assert!(fixture("tls/ca.pem").exists());
        for gone in ["state/identity.json", "state/spool", "state/events.db", "agent.pem", "agent-key.pem"] {
            assert!(!setup.path(gone).exists(), "{gone} still there");
        }

        // A shared state directory is refused.
        let shared = setup.path("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            setup.path("shared.toml"),
            format!(
                "[agent]\nstate_dir = \"{}\"\n[control]\nsocket_path = \"{}\"\n",
                shared.display(),
                setup.path("run/agent.sock").display()
            ),
        )
        .unwrap();
        let (code, _, err, _) = run_bounded(
            agent().arg("--config").arg(setup.path("shared.toml")).args(["prepare-image"]),
            LIMIT,
        );
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("0755"), "{err}");
    });
}
