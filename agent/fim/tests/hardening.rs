//! Issue 9 regressions: resumed checks, baseline damage and tampering, the writer's flush
//! timer. Every scan runs on a thread with a deadline, so a regression fails instead of
//! hanging CI.

use guestward_core::testing::within;
use guestward_core::{AbsolutePath, HostRoot};
use guestward_fim::config::RateLimit;
use guestward_fim::integrity::Integrity;
use guestward_fim::oneshot::{self, CheckReport, OneShot};
use guestward_fim::scan::{ScanOptions, ScanProgress};
use guestward_fim::{ChangeKind, Fim, Mechanism, Purpose, Scope};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn oneshot_for(tree: &Path, state: &Path, key: Option<&Path>) -> OneShot {
    let mut config = crate::common::config_for(tree, vec![]);
    config.baseline_key_file = key.map(|k| AbsolutePath::new(k).unwrap());
    OneShot { config, state_dir: state.to_path_buf(), root: HostRoot::live(), progress_bar: false }
}

fn run(what: &'static str, o: &OneShot) -> CheckReport {
    let o = o.clone();
    within(Duration::from_secs(60), what, move || match what {
        "init" => oneshot::init(&o),
        "update" => oneshot::update(&o),
        _ => oneshot::check(&o),
    })
    .unwrap()
}

fn summary_of(r: &CheckReport) -> Vec<(String, ChangeKind, Vec<guestward_fim::config::Attribute>)> {
    let mut v: Vec<_> = r.changes.iter().map(|c| (c.path.clone(), c.change, c.changed.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn db(state: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(state.join(guestward_fim::store::DB_FILE)).unwrap()
}

fn p(path: &Path) -> Vec<u8> {
    path.as_os_str().as_bytes().to_vec()
}

#[test]
fn a_resumed_check_reports_files_deleted_since_the_interrupted_run() {
    let dir = crate::common::scratch();
    let tree = dir.path().join("tree");
    for d in 0..30 {
        std::fs::create_dir_all(tree.join(format!("d{d:02}"))).unwrap();
        for f in 0..100 {
            std::fs::write(tree.join(format!("d{d:02}/f{f}")), format!("{d}/{f}")).unwrap();
        }
    }
    let state = dir.path().join("state");
    let o = oneshot_for(&tree, &state, None);
    run("init", &o);
    // Every file changed (its mode): a check stages only entries that differ from the
    // baseline, and this one must have something to resume from.
    for d in 0..30 {
        for f in 0..100 {
            let path = tree.join(format!("d{d:02}/f{f}"));
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        }
    }

    // A check interrupted the way the daemon interrupts a scan on shutdown: slowed down, and
    // cancelled once the writer has committed some rows (the walk is still running then: the
    // bounded job queue holds only part of the 3031 entries).
    let config = o.config.clone();
    let state2 = state.clone();
    let stats = within(Duration::from_secs(60), "the interrupted check", move || {
        let fim = Fim::new(config, HostRoot::live(), &state2).unwrap();
        let cancel = AtomicBool::new(false);
        let progress = |p: &ScanProgress| {
            if p.entries_done > 0 {
                cancel.store(true, Ordering::Relaxed);
            }
        };
        let opts = ScanOptions {
            rate: RateLimit { files_per_sec: 1000, bytes_per_sec: 0 },
            threads: 2,
            progress: Some(&progress),
            cancel: Some(&cancel),
            pace: None,
            rehash: Default::default(),
        };
        fim.scan(Purpose::Check, &Scope::All, Mechanism::Rescan, &opts, &mut |_| {}).unwrap().stats
    });
    assert!(stats.cancelled, "the check was not interrupted: {stats:?}");

    // Delete files the interrupted run had already staged, plus one it had not.
    let fim = Fim::new(o.config.clone(), HostRoot::live(), &state).unwrap();
    let store = fim.store().unwrap();
    let staged_files: Vec<PathBuf> = (0..30)
        .flat_map(|d| (0..100).map(move |f| (d, f)))
        .map(|(d, f)| tree.join(format!("d{d:02}/f{f}")))
        .filter(|path| store.staged(path).unwrap().is_some())
        .take(3)
        .collect();
    assert_eq!(staged_files.len(), 3, "the interrupted check staged nothing");
    let unstaged = (0..30)
        .flat_map(|d| (0..100).map(move |f| (d, f)))
        .map(|(d, f)| tree.join(format!("d{d:02}/f{f}")))
        .find(|path| store.staged(path).unwrap().is_none())
        .expect("the interrupted check staged everything");
    drop(store);
    for f in staged_files.iter().chain([&unstaged]) {
        std::fs::remove_file(f).unwrap();
    }

    let resumed = run("check", &o);
    assert!(resumed.summary.stats.resumed > 0, "the check did not resume: {:?}", resumed.summary.stats);
    for f in staged_files.iter().chain([&unstaged]) {
        let shown = f.display().to_string();
        assert!(
            resumed.changes.iter().any(|c| c.path == shown && c.change == ChangeKind::Removed),
            "{shown} deleted after the interruption is not reported removed: {:#?}",
            resumed.changes
        );
    }
    let fresh = run("check", &o);
    assert_eq!(fresh.summary.stats.resumed, 0);
    assert_eq!(summary_of(&resumed), summary_of(&fresh), "a resumed check must report what a fresh one does");
    assert_eq!(resumed.summary.changes, fresh.summary.changes);
}

#[test]
fn writer_flushes_staged_rows_every_500_ms_under_continuous_traffic() {
    let dir = crate::common::scratch();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    for i in 0..400 {
        std::fs::write(tree.join(format!("f{i}")), i.to_string()).unwrap();
    }
    let state = dir.path().join("state");
    let config = crate::common::config_for(&tree, vec![]);
    let policy = config.policy().unwrap();
    let targets = policy.targets(&HostRoot::live());
    // 400 files at 100 files/s: a record reaches the writer every ~10 ms for 4 s, far fewer
    // than a batch (2000). The writer must still commit at least every 500 ms.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let state2 = state.clone();
    std::thread::spawn(move || {
        let opts = ScanOptions {
            rate: RateLimit { files_per_sec: 100, bytes_per_sec: 0 },
            threads: 1,
            progress: None,
            cancel: None,
            pace: None,
            rehash: Default::default(),
        };
        let r = guestward_fim::scan::stage(&policy, &HostRoot::live(), &state2, &targets, false, &opts);
        let _ = done_tx.send(r.map(|s| s.entries));
    });
    let start = Instant::now();
    let mut first_commit = None;
    while start.elapsed() < Duration::from_secs(3) {
        if state.join(guestward_fim::store::DB_FILE).exists()
            && let Ok(store) = guestward_fim::store::Store::open(&state)
            && store.staged_count().unwrap_or(0) > 0
        {
            first_commit = Some(start.elapsed());
            break;
        }
        assert!(done_rx.try_recv().is_err(), "the scan finished before any commit was seen");
        std::thread::sleep(Duration::from_millis(25));
    }
    let first_commit = first_commit.expect("no row committed within 3 s of continuous traffic");
    assert!(first_commit < Duration::from_millis(2000), "first commit after {first_commit:?}");
    let entries = done_rx.recv_timeout(Duration::from_secs(60)).expect("scan did not finish").unwrap();
    assert_eq!(entries, 401);
}

#[test]
fn truncated_baseline_hash_is_reported_as_damage_naming_path_and_column() {
    let (dir, tree) = crate::common::tree(&[("a", "alpha"), ("b", "beta")]);
    let state = dir.path().join("state");
    let o = oneshot_for(&tree, &state, None);
    run("init", &o);
    let a = tree.join("a");
    let n = db(&state)
        .execute("UPDATE files SET sha256 = substr(sha256, 1, 31) WHERE path = ?1", [p(&a)])
        .unwrap();
    assert_eq!(n, 1);
    // The content changes too: with the short hash silently ignored, nothing was reported.
    std::fs::write(&a, "ALPHA").unwrap();
    std::fs::write(tree.join("b"), "BETA").unwrap();
    let r = run("check", &o);
    let b = &r.summary.baseline;
    assert_eq!(b.damaged_rows, 1, "{b:?}");
    let problem = b.problems.iter().find(|p| p.code == "baseline_damaged").expect("no damage reported");
    let shown = a.display().to_string();
    assert_eq!(problem.path.as_deref(), Some(shown.as_str()));
    assert!(
        problem.message.contains(&shown)
            && problem.message.contains("`sha256`")
            && problem.message.contains("31 bytes"),
        "{}",
        problem.message
    );
    // The other file is still compared; the damaged one is not passed off as unchanged.
    assert!(r.changes.iter().any(|c| c.path.ends_with("/b")), "{:#?}", r.changes);
    assert_eq!(r.exit_code(), oneshot::EXIT_ERROR, "a damaged baseline cannot give a clean check");
    let mut human = Vec::new();
    r.render_human(&mut human).unwrap();
    let human = String::from_utf8(human).unwrap();
    assert!(human.contains("DAMAGE:") && human.contains(&shown), "{human}");
}

#[test]
fn out_of_range_integer_in_baseline_is_reported_with_a_clear_message() {
    let (dir, tree) = crate::common::tree(&[("a", "alpha"), ("b", "beta")]);
    let state = dir.path().join("state");
    let o = oneshot_for(&tree, &state, None);
    run("init", &o);
    let a = tree.join("a");
    db(&state).execute("UPDATE files SET uid = 4294967296 WHERE path = ?1", [p(&a)]).unwrap();
    db(&state).execute("UPDATE files SET kind = 'file' WHERE path = ?1", [p(&tree.join("b"))]).unwrap();
    let r = run("check", &o);
    let b = &r.summary.baseline;
    assert_eq!(b.damaged_rows, 2, "{b:#?}");
    let uid = b.problems.iter().find(|p| p.message.contains("`uid`")).expect("uid damage not reported");
    assert!(
        uid.message.contains(&a.display().to_string()) && uid.message.contains("4294967296 is out of range"),
        "{}",
        uid.message
    );
    let kind = b.problems.iter().find(|p| p.message.contains("`kind`")).expect("kind damage not reported");
    assert!(kind.message.contains("expected an integer, found text"), "{}", kind.message);
    for p in &b.problems {
        assert!(!p.message.contains("Integral value") && !p.message.contains("Invalid column type"), "{p}");
    }
    assert_eq!(r.exit_code(), oneshot::EXIT_ERROR);
}

/// A tree, its state dir and a key file outside it, initialised (sealed).
fn sealed_tree() -> (tempfile::TempDir, PathBuf, PathBuf, OneShot) {
    let (dir, tree) = crate::common::tree(&[("bin/sudo", "genuine"), ("bin/ls", "ls"), ("etc/gone", "x")]);
    let state = dir.path().join("state");
    let key = dir.path().join("keys/fim-baseline.key");
    let o = oneshot_for(&tree, &state, Some(&key));
    let init = run("init", &o);
    assert_eq!(init.summary.baseline.integrity, Integrity::Sealed, "{:?}", init.summary.baseline);
    assert!(init.summary.baseline.detail.contains("created"), "{:?}", init.summary.baseline);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let clean = run("check", &o);
    assert_eq!(clean.summary.baseline.integrity, Integrity::Verified, "{:?}", clean.summary.baseline);
    assert_eq!(clean.exit_code(), oneshot::EXIT_CLEAN);
    (dir, tree, key, o)
}

#[test]
fn baseline_row_rewritten_with_sqlite_is_detected_by_the_seal() {
    use std::os::unix::fs::MetadataExt;
    let (dir, tree, _key, o) = sealed_tree();
    let state = dir.path().join("state");
    // The attacker replaces a binary and rewrites its baseline row to match the trojan, every
    // compared attribute included: without the seal the check would be clean.
    let sudo = tree.join("bin/sudo");
    std::fs::write(&sudo, "trojan!").unwrap();
    let m = std::fs::symlink_metadata(&sudo).unwrap();
    let sha = {
        use sha2::Digest;
        sha2::Sha256::digest(b"trojan!").to_vec()
    };
    let n = db(&state)
        .execute(
            "UPDATE files SET sha256 = ?2, size = ?3, mtime_ns = ?4, ctime_ns = ?5, inode = ?6 WHERE path = ?1",
            rusqlite::params![
                p(&sudo),
                sha,
                m.size() as i64,
                m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                m.ctime() * 1_000_000_000 + m.ctime_nsec(),
                m.ino() as i64
            ],
        )
        .unwrap();
    assert_eq!(n, 1);
    let r = run("check", &o);
    let b = &r.summary.baseline;
    assert!(r.changes.iter().all(|c| !c.path.ends_with("/sudo")), "the forged row hides the change itself");
    assert_eq!(b.integrity, Integrity::Tampered, "{b:#?}");
    assert_eq!(b.tampered_rows, 1);
    assert_eq!(b.severity, guestward_core::Severity::High);
    let t = b.problems.iter().find(|p| p.code == "baseline_tampered").unwrap();
    assert_eq!(t.path.as_deref(), Some(sudo.display().to_string().as_str()), "{t:?}");
    assert_eq!(r.exit_code(), oneshot::EXIT_ERROR);

    // Deleting a row (to hide a removed file) changes the row set: tampering too.
    let (dir, tree, _key, o) = sealed_tree();
    let state = dir.path().join("state");
    let gone = tree.join("etc/gone");
    std::fs::remove_file(&gone).unwrap();
    db(&state).execute("DELETE FROM files WHERE path = ?1", [p(&gone)]).unwrap();
    let r = run("check", &o);
    assert!(r.changes.iter().all(|c| !c.path.ends_with("/gone")), "{:#?}", r.changes);
    assert_eq!(r.summary.baseline.integrity, Integrity::Tampered, "{:#?}", r.summary.baseline);
    assert!(
        r.summary.baseline.detail.contains("rows were added, removed or replaced outside the agent"),
        "{}",
        r.summary.baseline.detail
    );
    assert_eq!(r.exit_code(), oneshot::EXIT_ERROR);

    // `fim update` accepts the current state and seals it anew.
    run("update", &o);
    let r = run("check", &o);
    assert_eq!(r.summary.baseline.integrity, Integrity::Verified, "{:#?}", r.summary.baseline);
    assert_eq!(r.exit_code(), oneshot::EXIT_CLEAN);
}

/// A configured key that is gone or unusable is not a key never configured: the rows cannot be
/// verified though the operator relies on it, so the check cannot pass (exit 2: a row
/// rewritten meanwhile once read as an ordinary change, exit 1), and `init` builds no unsealed
/// baseline in its place.
#[test]
fn without_the_configured_key_file_the_check_cannot_pass_and_init_refuses() {
    let (dir, tree, key, o) = sealed_tree();
    std::fs::remove_file(&key).unwrap();
    let r = run("check", &o);
    let b = &r.summary.baseline;
    assert_eq!(b.integrity, Integrity::Unsealed, "{b:#?}");
    assert!(
        b.detail.contains(&key.display().to_string()) && b.detail.contains("no such key file"),
        "{}",
        b.detail
    );
    assert!(b.problems.iter().any(|p| p.code == "baseline_unsealed"), "{b:#?}");
    assert_eq!(r.exit_code(), oneshot::EXIT_ERROR);
    let mut human = Vec::new();
    r.render_human(&mut human).unwrap();
    let human = String::from_utf8(human).unwrap();
    assert!(
        human.contains("baseline integrity: unsealed") && human.contains("restore the key file"),
        "{human}"
    );
    // An empty key file: the same, and `init` refuses rather than build an unsealed baseline.
    std::fs::write(&key, "").unwrap();
    assert_eq!(run("check", &o).summary.baseline.integrity, Integrity::Unsealed);
    let fresh = oneshot_for(&tree, &dir.path().join("state-fresh"), Some(&key));
    let e = oneshot::init(&fresh).unwrap_err().to_string();
    assert!(e.contains("fim.baseline_key_file") && e.contains("would not be sealed"), "{e}");
    assert!(!dir.path().join("state-fresh/fim.db").exists(), "nothing built");

    // Not configured at all: said as well.
    let o = oneshot_for(&dir.path().join("tree"), &dir.path().join("state"), None);
    let r = run("check", &o);
    assert_eq!(r.summary.baseline.integrity, Integrity::Unverified);
    assert!(r.summary.baseline.detail.contains("fim.baseline_key_file"), "{}", r.summary.baseline.detail);

    // A key that did not seal this baseline: unsealed, and the check cannot pass as clean.
    let other = dir.path().join("keys/other.key");
    let o = oneshot_for(&dir.path().join("tree"), &dir.path().join("state"), Some(&other));
    guestward_fim::integrity::BaselineKey::create(&other).unwrap();
    let r = run("check", &o);
    assert_eq!(r.summary.baseline.integrity, Integrity::Unsealed, "{:#?}", r.summary.baseline);
    assert_eq!(r.exit_code(), oneshot::EXIT_ERROR);
}

#[test]
fn realtime_style_writes_keep_the_seal_valid() {
    use guestward_fim::record::{FileKind, FileRecord};
    let (dir, tree, _key, o) = sealed_tree();
    let fim = Fim::new(o.config.clone(), HostRoot::live(), dir.path().join("state")).unwrap();
    let mut store = fim.store().unwrap();
    let digest_before = store.root_digest().unwrap();
    // What the monitor does on events: put, delete, rename a directory.
    let new = tree.join("bin/new");
    std::fs::write(&new, "n").unwrap();
    let m = std::fs::symlink_metadata(&new).unwrap();
    let mut rec = FileRecord::from_metadata(&m);
    rec.sha256 = Some([3; 32]);
    rec.xattrs = Some(vec![]);
    assert_eq!(rec.kind, FileKind::File);
    store.put(&new, &rec).unwrap();
    store.delete(&tree.join("bin/ls")).unwrap();
    store.move_below(&tree.join("bin"), &tree.join("sbin")).unwrap();
    assert_eq!(
        store.verify_seal().unwrap(),
        guestward_fim::store::SealVerdict::Valid { rows: store.file_count().unwrap() }
    );
    assert!(
        store.get(&tree.join("sbin/new")).unwrap().is_some(),
        "moved rows are sealed under their new path"
    );
    assert_ne!(store.root_digest().unwrap(), digest_before);
}
