//! The real binary: `pki` commands, `serve --config`, a config error, shutdown on SIGTERM.

use crate::common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_guestward-collector");

fn ok(args: &[&str], dir: &Path) -> String {
    let out = Command::new(BIN).args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn binary_issues_a_pki_and_serves_it_from_a_config_file_until_sigterm() {
    guestward_core::testing::within(Duration::from_secs(90), "binary serve", || {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let out = ok(&["pki", "init", "--dir", "pki"], d);
        assert!(out.contains("pki/ca.pem"), "{out}");
        ok(&["pki", "issue-agent", "--dir", "pki", "--host-id", HOST_A], d);
        ok(&["pki", "issue-agent", "--dir", "pki", "--host-id", HOST_B], d);
        ok(&["pki", "issue-operator", "--dir", "pki", "--name", OPERATOR], d);
        let again = Command::new(BIN).args(["pki", "init", "--dir", "pki"]).current_dir(d).output().unwrap();
        assert!(!again.status.success());
        assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

        // Paths in the file are relative to it (pki/ca.pem... are the defaults).
        std::fs::write(
            d.join("collector.toml"),
            "listen = \"127.0.0.1:0\"\ndb = \"c.db\"\n[limits]\nburst = 100\n",
        )
        .unwrap();
        let (mut child, addr) = serve_binary(&d.join("collector.toml"), Stdio::null());

        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let ca = std::fs::read(d.join("pki/ca.pem")).unwrap();
            let agent = d.join("pki/agents").join(HOST_A);
            let client = reqwest::Client::builder()
                .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
                .identity(identity(&agent.join("cert.pem"), &agent.join("key.pem")))
                .resolve("localhost", addr)
                .no_proxy()
                .build()
                .unwrap();
            let url = format!("https://localhost:{}/v1/reports", addr.port());
            let resp = client
                .post(url)
                .header("content-type", "application/json")
                .body(body(&[report(HOST_A, 1)]))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
        });
        let meta = std::fs::metadata(d.join("c.db")).unwrap();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777, 0o600);

        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "exit after SIGTERM: {status}");
    });
}

#[test]
fn binary_refuses_a_config_with_an_unknown_key_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("collector.toml");
    std::fs::write(&file, "[limits]\nmax_body = 1\n").unwrap();
    let out = Command::new(BIN).args(["serve", "--config"]).arg(&file).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("collector.toml") && err.contains("max_body"), "{err}");
    // A server key readable by others is refused.
    let pki_dir = new_pki(dir.path());
    std::fs::set_permissions(
        pki_dir.join("server-key.pem"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--pki-dir"])
        .arg(&pki_dir)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("server-key.pem") && err.contains("chmod 600"), "{err}");
    std::fs::write(&file, "[limits]\nmax_body_bytes = 0\n").unwrap();
    let out = Command::new(BIN).args(["serve", "--config"]).arg(&file).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("limits.max_body_bytes"), "{err}");
}

/// `println!` panicked when stdout was a closed pipe or a full disk: `serve | head -c0` killed
/// the server, and `pki` commands exited 101 after writing their files.
#[test]
fn binary_survives_a_closed_stdout_and_a_full_stderr() {
    guestward_core::testing::within(Duration::from_secs(60), "closed stdout", || {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // stdout: a pipe whose reader is gone before anything is written.
        let closed_pipe = || {
            let (reader, writer) = std::io::pipe().unwrap();
            drop(reader);
            writer
        };
        let out = Command::new(BIN)
            .args(["pki", "init", "--dir", "pki"])
            .current_dir(d)
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(stderr.is_empty(), "{stderr}");
        assert!(d.join("pki/ca.pem").exists());
        // A full disk under stdout is an error with a message, not a panic.
        let out = Command::new(BIN)
            .args(["pki", "issue-agent", "--dir", "pki", "--host-id", HOST_A])
            .current_dir(d)
            .stdout(std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(!stderr.contains("panicked") && stderr.contains("No space left"), "{stderr}");
        // The server keeps serving with nobody reading its "listening on" line.
        let mut child = Command::new(BIN)
            .args(["serve", "--pki-dir", "pki", "--db", "c.db", "--listen", "127.0.0.1:0"])
            .current_dir(d)
            .stdout(closed_pipe())
            .stderr(std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        assert!(child.try_wait().unwrap().is_none(), "the server stopped");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        assert!(child.wait().unwrap().success());
        // An error with stderr on a full disk keeps its exit code.
        let out = Command::new(BIN)
            .args(["serve", "--config", "/nonexistent/collector.toml"])
            .stderr(std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
    });
}

/// A PKI file the collector could not read was named twice and came with the agent's advice
/// (`nopki/ca.pem: nopki/ca.pem: not found`; `...: permission denied (the agent needs
/// CAP_DAC_READ_SEARCH, which guestward-agent.service grants, or root)`).
#[test]
fn an_unreadable_pki_file_is_named_once_with_the_collector_s_own_advice() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--pki-dir", "nopki", "--listen", "127.0.0.1:0", "--db", "c.db"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("nopki/ca.pem: not found"), "{err}");
    assert_eq!(err.matches("nopki/ca.pem").count(), 1, "{err}");

    // As a user who may not read the files (root reads everything).
    let Some(setpriv) = ["/usr/bin/setpriv", "/bin/setpriv"].into_iter().find(|p| Path::new(p).exists())
    else {
        guestward_core::testing::skip_or_fail(
            "an_unreadable_pki_file_is_named_once",
            "setpriv not installed",
        );
        return;
    };
    if !nix::unistd::Uid::effective().is_root() {
        guestward_core::testing::skip_or_fail(
            "an_unreadable_pki_file_is_named_once",
            "needs root to switch users",
        );
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let pki = new_pki(dir.path());
    std::fs::set_permissions(&pki, std::fs::Permissions::from_mode(0o700)).unwrap();
    // A copy of the binary `nobody` may run: the target directory may be private.
    let bin_dir = tempfile::Builder::new().prefix("gw-collector-as-nobody").tempdir_in("/tmp").unwrap();
    let bin = bin_dir.path().join("guestward-collector");
    std::fs::copy(BIN, &bin).unwrap();
    // The database is opened first: where `nobody` may create it.
    let db_dir = dir.path().join("db");
    std::fs::create_dir(&db_dir).unwrap();
    for (p, mode) in
        [(dir.path(), 0o755), (db_dir.as_path(), 0o777), (bin_dir.path(), 0o755), (bin.as_path(), 0o755)]
    {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let out = Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(db_dir.join("c.db"))
        .arg("--pki-dir")
        .arg(&pki)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let ca = pki.join("ca.pem").display().to_string();
    assert!(err.contains(&format!("{ca}: permission denied (the collector must run as a user")), "{err}");
    assert_eq!(err.matches(&ca).count(), 1, "{err}");
    assert!(!err.contains("CAP_DAC_READ_SEARCH") && !err.contains("guestward-agent"), "{err}");
}

/// `db compact`, as an operator runs it: refused while a collector has the database open,
/// naming the file and what to do; done once it is closed (`--json` for scripts); a mistyped
/// path is an error, never a new empty database.
#[test]
fn db_compact_refuses_an_open_database_and_compacts_a_closed_one() {
    use guestward_collector::store::{Retention, SqliteStore};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let store = SqliteStore::open(&db, Retention::KEEP_EVERYTHING).unwrap();
    let out = Command::new(BIN).args(["db", "compact", "--db"]).arg(&db).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&db.display().to_string()) && err.contains("stop the collector"), "{err}");
    drop(store);

    let out = Command::new(BIN).args(["db", "compact", "--json", "--db"]).arg(&db).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // A database made by this version: nothing to rewrite, incremental auto_vacuum already.
    assert_eq!(summary["rows_rewritten"], 0, "{summary}");
    assert_eq!(summary["vacuum"]["outcome"], "free_pages_released", "{summary}");
    let out = Command::new(BIN).args(["db", "compact", "--no-vacuum", "--db"]).arg(&db).output().unwrap();
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(human.contains("compacted") && human.contains("not asked (--no-vacuum)"), "{human}");
    // A full stdout: the work is done, and the error says so.
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out = Command::new(BIN).args(["db", "compact", "--db"]).arg(&db).stdout(full).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("was compacted, but its summary could not be written"), "{err}");

    let missing = dir.path().join("typo.db");
    let out = Command::new(BIN).args(["db", "compact", "--db"]).arg(&missing).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("typo.db") && err.contains("no such file"), "{err}");
    assert!(!missing.exists());
}
