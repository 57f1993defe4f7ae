//! Metadata-first checks (`fim check --fast`, the daemon's scheduled rescans): entries whose
//! size, mtime, ctime and inode did not move keep their baseline hashes; a content change is
//! still caught through ctime when the writer restores the mtime; the daemon rehashes every
//! file on its schedule.

use guestward_core::HostRoot;
use guestward_fim::config::Attribute;
use guestward_fim::oneshot::{self, OneShot};
use guestward_fim::{ChangeKind, Config, Rehash};
use std::fs::FileTimes;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant, SystemTime};

/// A tree on the disk filesystem of the temporary directory (not /dev/shm): ctime is the
/// filesystem's, as on a real host.
fn tree() -> (tempfile::TempDir, OneShot) {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    for i in 0..20 {
        std::fs::write(tree.join(format!("bin/tool{i}")), format!("#!/bin/sh\necho tool {i:04}\n")).unwrap();
    }
    std::os::unix::fs::symlink("tool0", tree.join("bin/alias")).unwrap();
    let config: Config = crate::common::config_for(&tree, vec![]);
    let o =
        OneShot { config, state_dir: dir.path().join("state"), root: HostRoot::live(), progress_bar: false };
    (dir, o)
}

/// A check's changes as (path, kind), in path order (then kind), to compare two checks.
fn sorted_changes(r: &guestward_fim::model::CheckReport) -> Vec<(String, ChangeKind)> {
    let mut v: Vec<(String, ChangeKind)> = r.changes.iter().map(|c| (c.path.clone(), c.change)).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| format!("{:?}", a.1).cmp(&format!("{:?}", b.1))));
    v
}

#[test]
fn an_unchanged_tree_is_checked_without_reading_a_file() {
    let (_dir, o) = tree();
    let init = oneshot::init(&o).unwrap();
    assert_eq!(init.summary.stats.files_hashed, 20, "{:?}", init.summary.stats);
    let fast = oneshot::check_fast(&o).unwrap();
    assert_eq!(fast.exit_code(), 0, "{:#?}", fast.changes);
    let s = &fast.summary.stats;
    assert_eq!(s.rehash, Rehash::Changed);
    // tree, bin, 20 files, 1 symlink: every one reused, no byte read.
    assert_eq!((s.entries, s.reused, s.files_hashed, s.bytes_hashed), (23, 23, 0, 0), "{s:?}");
    // The full check reads everything and agrees.
    let full = oneshot::check(&o).unwrap();
    assert_eq!(full.exit_code(), 0);
    assert_eq!((full.summary.stats.rehash, full.summary.stats.files_hashed), (Rehash::All, 20));
}

#[test]
fn a_content_change_with_the_mtime_restored_is_caught_through_ctime() {
    let (dir, o) = tree();
    let victim = dir.path().join("tree/bin/tool7");
    oneshot::init(&o).unwrap();
    let before = std::fs::symlink_metadata(&victim).unwrap();
    // ctime has the filesystem's granularity: make sure the write lands on another tick.
    std::thread::sleep(Duration::from_millis(20));
    // Same size, other content, then the old mtime put back with utimensat (what `touch -r`
    // or a careful attacker does).
    std::fs::write(&victim, "#!/bin/sh\necho EVIL 0007\n").unwrap();
    let old_mtime = before.modified().unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&victim).unwrap();
    f.set_times(FileTimes::new().set_modified(old_mtime).set_accessed(SystemTime::now())).unwrap();
    drop(f);
    let after = std::fs::symlink_metadata(&victim).unwrap();
    assert_eq!(
        (after.len(), after.mtime(), after.mtime_nsec(), after.ino()),
        (before.len(), before.mtime(), before.mtime_nsec(), before.ino()),
        "size, mtime and inode restored"
    );
    assert_ne!((after.ctime(), after.ctime_nsec()), (before.ctime(), before.ctime_nsec()));

    let fast = oneshot::check_fast(&o).unwrap();
    assert_eq!(fast.exit_code(), 1);
    let paths: Vec<(&str, ChangeKind)> = fast.changes.iter().map(|c| (c.path.as_str(), c.change)).collect();
    let shown = victim.display().to_string();
    assert_eq!(paths, vec![(shown.as_str(), ChangeKind::Modified)]);
    let changed = &fast.changes[0].changed;
    assert!(changed.contains(&Attribute::Sha256) && changed.contains(&Attribute::Ctime), "{changed:?}");
    assert!(!changed.contains(&Attribute::Mtime), "{changed:?}");
    // Only the file whose ctime moved was read.
    assert_eq!(
        (fast.summary.stats.files_hashed, fast.summary.stats.reused),
        (1, 22),
        "{:?}",
        fast.summary.stats
    );
    // The full check reports the same change.
    let full = oneshot::check(&o).unwrap();
    assert_eq!(full.changes.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(), vec![shown.as_str()]);
    assert_eq!(full.changes[0].changed, fast.changes[0].changed);
}

#[test]
fn fast_update_accepts_the_change_and_reuses_the_rest() {
    let (dir, o) = tree();
    oneshot::init(&o).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(dir.path().join("tree/bin/tool3"), "changed").unwrap();
    std::fs::remove_file(dir.path().join("tree/bin/tool4")).unwrap();
    let update = oneshot::update_fast(&o).unwrap();
    assert_eq!(update.exit_code(), 1);
    assert_eq!(update.summary.counts.modified + update.summary.counts.removed, 2, "{:#?}", update.changes);
    // Accepted: nothing left, fast or full.
    assert_eq!(oneshot::check_fast(&o).unwrap().exit_code(), 0);
    assert_eq!(oneshot::check(&o).unwrap().exit_code(), 0);
}

/// Waits until the monitor's last scan satisfies `pred`.
fn wait_scan(
    monitor: &guestward_fim::Monitor,
    timeout: Duration,
    pred: impl Fn(&guestward_fim::ScanSummary) -> bool,
) -> guestward_fim::ScanSummary {
    let end = Instant::now() + timeout;
    loop {
        if let Some(s) = monitor.status().last_scan.filter(|s| pred(s)) {
            return s;
        }
        assert!(
            Instant::now() < end,
            "no such scan within {timeout:?}; last: {:#?}",
            monitor.status().last_scan
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_daemon_rescans_metadata_first_and_rehashes_everything_on_schedule() {
    let dir = crate::common::scratch();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    for i in 0..10 {
        std::fs::write(tree.join(format!("f{i}")), i.to_string()).unwrap();
    }
    let mut config = crate::common::config_for(&tree, vec![]);
    config.rescan_interval_secs = 1;
    config.full_rehash_interval_secs = 4;
    config.rescan_rate = Default::default();
    let (monitor, _events) = crate::common::start(config, &dir.path().join("state"));
    // Scheduled rescans in between: metadata first, nothing read.
    let fast = wait_scan(&monitor, Duration::from_secs(30), |s| s.stats.rehash == Rehash::Changed);
    assert_eq!((fast.stats.files_hashed, fast.stats.reused), (0, 11), "{:?}", fast.stats);
    // Then the full rehash: every file read again.
    let full = wait_scan(&monitor, Duration::from_secs(30), |s| {
        s.stats.rehash == Rehash::All && s.finished > fast.finished
    });
    assert_eq!((full.stats.files_hashed, full.stats.reused), (10, 0), "{:?}", full.stats);
    // And metadata first again after it.
    let again = wait_scan(&monitor, Duration::from_secs(30), |s| {
        s.stats.rehash == Rehash::Changed && s.finished > full.finished
    });
    assert_eq!(again.stats.files_hashed, 0, "{:?}", again.stats);
    monitor.stop();
}

#[test]
fn fast_rescans_off_rehash_every_time() {
    let dir = crate::common::scratch();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("f"), "x").unwrap();
    let mut config = crate::common::config_for(&tree, vec![]);
    config.rescan_interval_secs = 1;
    config.fast_rescans = false;
    let (monitor, _events) = crate::common::start(config, &dir.path().join("state"));
    let first = wait_scan(&monitor, Duration::from_secs(30), |s| s.purpose == guestward_fim::Purpose::Rescan);
    let second = wait_scan(&monitor, Duration::from_secs(30), |s| s.finished > first.finished);
    for s in [&first, &second] {
        assert_eq!((s.stats.rehash, s.stats.files_hashed), (Rehash::All, 1), "{:?}", s.stats);
    }
    monitor.stop();
}

#[test]
fn content_changed_behind_the_metadata_is_left_to_the_full_rehash() {
    // What a write to the raw block device looks like to the agent: the content differs from
    // the baseline while size, mtime, ctime and inode do not. Made here by editing the baseline
    // row's hash instead of the disk.
    let (dir, o) = tree();
    oneshot::init(&o).unwrap();
    let victim = dir.path().join("tree/bin/tool5");
    let fim = guestward_fim::Fim::new(o.config.clone(), HostRoot::live(), &o.state_dir).unwrap();
    let store = fim.store().unwrap();
    let mut rec = store.get(&victim).unwrap().unwrap();
    rec.sha256 = Some([0x5a; 32]);
    store.put(&victim, &rec).unwrap();
    drop(store);
    // Metadata first trusts the metadata: nothing to see (the documented limit).
    let fast = oneshot::check_fast(&o).unwrap();
    assert_eq!(fast.exit_code(), 0, "{:#?}", fast.changes);
    // The full check (the daemon's scheduled rehash) reads the file and finds the difference.
    let full = oneshot::check(&o).unwrap();
    let shown = victim.display().to_string();
    assert_eq!(full.changes.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(), vec![shown.as_str()]);
    assert_eq!(full.changes[0].changed, vec![Attribute::Sha256]);
}

/// Metadata first, the hashing threads examine what the walk listed as not a directory: a
/// removed file, a file replaced by a FIFO (never opened) or by a directory, a retargeted
/// symlink and a new file are reported as the full check reports them.
#[test]
fn a_fast_check_reports_removals_and_type_changes_as_the_full_check_does() {
    let (dir, o) = tree();
    oneshot::init(&o).unwrap();
    let bin = dir.path().join("tree/bin");
    std::fs::remove_file(bin.join("tool3")).unwrap();
    std::fs::remove_file(bin.join("tool4")).unwrap();
    nix::unistd::mkfifo(&bin.join("tool4"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    std::fs::remove_file(bin.join("tool5")).unwrap();
    std::fs::create_dir(bin.join("tool5")).unwrap();
    std::fs::write(bin.join("tool5/inside"), "new\n").unwrap();
    std::fs::remove_file(bin.join("alias")).unwrap();
    std::os::unix::fs::symlink("tool1", bin.join("alias")).unwrap();
    std::fs::write(bin.join("added"), "added\n").unwrap();

    let fast = oneshot::check_fast(&o).unwrap();
    let full = oneshot::check(&o).unwrap();
    assert_eq!(sorted_changes(&fast), sorted_changes(&full));
    let shown = |name: &str| bin.join(name).display().to_string();
    let fast_changes = sorted_changes(&fast);
    for (path, kind) in [
        (shown("tool3"), ChangeKind::Removed),
        (shown("tool5/inside"), ChangeKind::Added),
        (shown("added"), ChangeKind::Added),
    ] {
        assert!(fast_changes.contains(&(path.clone(), kind)), "{path} {kind:?}: {fast_changes:#?}");
    }
    for name in ["tool4", "tool5", "alias"] {
        assert!(fast_changes.iter().any(|(p, _)| *p == shown(name)), "{name}: {fast_changes:#?}");
    }
    assert_eq!(fast.exit_code(), 1);
}

/// Metadata first, every scan thread walks and examines what it lists itself, the threads
/// taking directories from one stack. Over a tree of many small directories (more threads
/// than CPUs, so that they interleave), the fast check sees every entry once and reports
/// what the full check reports: a deep content change, a removed file, a removed subtree,
/// a new directory and a directory whose mode changed.
#[test]
fn threads_walking_together_meet_every_entry_once_and_agree_with_the_full_check() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let mut entries = 1u64;
    for a in 0..12 {
        for b in 0..4 {
            let leaf = tree.join(format!("d{a:02}/s{b}"));
            std::fs::create_dir_all(&leaf).unwrap();
            entries += if b == 0 { 2 } else { 1 };
            for f in 0..6 {
                std::fs::write(leaf.join(format!("f{f}")), format!("{a} {b} {f}\n")).unwrap();
                entries += 1;
            }
        }
    }
    let mut config: Config = crate::common::config_for(&tree, vec![]);
    config.threads = 4;
    let o =
        OneShot { config, state_dir: dir.path().join("state"), root: HostRoot::live(), progress_bar: false };
    oneshot::init(&o).unwrap();
    let fast = oneshot::check_fast(&o).unwrap();
    assert_eq!(fast.exit_code(), 0, "{:#?}", fast.changes);
    let s = &fast.summary.stats;
    assert_eq!((s.entries, s.reused, s.files_hashed), (entries, entries, 0), "{s:?}");

    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(tree.join("d07/s3/f5"), "7 3 X\n").unwrap();
    std::fs::remove_file(tree.join("d02/s1/f0")).unwrap();
    std::fs::remove_dir_all(tree.join("d11/s2")).unwrap();
    std::fs::create_dir(tree.join("d05/new")).unwrap();
    std::fs::write(tree.join("d05/new/file"), "new\n").unwrap();
    std::fs::set_permissions(tree.join("d09/s0"), std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .unwrap();

    let fast = oneshot::check_fast(&o).unwrap();
    let full = oneshot::check(&o).unwrap();
    assert_eq!(sorted_changes(&fast), sorted_changes(&full));
    let shown = |p: &str| tree.join(p).display().to_string();
    let fast_changes = sorted_changes(&fast);
    for (path, kind) in [
        ("d07/s3/f5", ChangeKind::Modified),
        ("d02/s1/f0", ChangeKind::Removed),
        ("d05/new/file", ChangeKind::Added),
        ("d09/s0", ChangeKind::Modified),
    ] {
        assert!(fast_changes.contains(&(shown(path), kind)), "{path} {kind:?}: {fast_changes:#?}");
    }
    assert!(fast_changes.iter().any(|(p, k)| p.starts_with(&shown("d11/s2")) && *k == ChangeKind::Removed));
    assert_eq!(fast.exit_code(), 1);
}

/// A metadata-first scan cancelled (the daemon stopping) stops its walking threads: none
/// waits for work another will never give, and the scan says it was cancelled.
#[test]
fn a_cancelled_fast_check_stops_every_walking_thread() {
    use guestward_fim::scan::ScanOptions;
    use guestward_fim::{Fim, Mechanism, Purpose, Scope};
    use std::sync::atomic::AtomicBool;
    let (_dir, o) = tree();
    oneshot::init(&o).unwrap();
    let fim = Fim::new(o.config.clone(), HostRoot::live(), &o.state_dir).unwrap();
    let cancel = AtomicBool::new(true);
    let opts = ScanOptions {
        rate: Default::default(),
        threads: 3,
        progress: None,
        cancel: Some(&cancel),
        pace: None,
        rehash: Rehash::Changed,
    };
    let summary = fim.scan(Purpose::Check, &Scope::All, Mechanism::Rescan, &opts, &mut |_| {}).unwrap();
    assert!(summary.stats.cancelled, "{:?}", summary.stats);
    assert_eq!(summary.stats.entries, 0, "{:?}", summary.stats);
}
