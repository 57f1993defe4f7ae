//! The spool: order, durability, hostile directory contents, the size bound's drop order.

use crate::support::{HOST, report, small, small_as};
use guestward_core::testing::within;
use guestward_report::Report;
use guestward_transport::spool::{DropClass, compress_report};
use guestward_transport::{Spool, SpoolError};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

fn decode(compressed: &[u8]) -> Report {
    serde_json::from_slice(&zstd::stream::decode_all(compressed).unwrap()).unwrap()
}

#[test]
fn push_pending_acknowledge_and_reopen_keep_sequence_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool");
    let spool = Spool::open(&path, 64 << 20).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o700);
    // Pushed out of order: the spool hands them back by sequence.
    let reports: Vec<Report> = [3, 1, 2, 10].into_iter().map(small).collect();
    for r in &reports {
        assert!(spool.push(r).unwrap().dropped.is_empty());
    }
    let pending = spool.pending(u64::MAX).unwrap();
    let seqs: Vec<_> = pending.iter().map(|b| b.sequence.unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 10]);
    for b in &pending {
        let r = decode(&b.compressed);
        assert_eq!(r.batch_id, b.batch_id);
        assert_eq!(r.collected_at, b.collected_at);
        assert_eq!(&r, reports.iter().find(|x| x.batch_id == b.batch_id).unwrap());
    }
    // Each entry is private and holds one zstd frame.
    for e in std::fs::read_dir(&path).unwrap() {
        let e = e.unwrap();
        assert_eq!(e.metadata().unwrap().permissions().mode() & 0o777, 0o600, "{:?}", e.file_name());
    }
    // A byte budget: at least one, then as many as fit.
    let one = spool.pending(1).unwrap();
    assert_eq!(one.len(), 1);
    let first_two = pending[0].compressed.len() + pending[1].compressed.len();
    assert_eq!(spool.pending(u64::try_from(first_two).unwrap()).unwrap().len(), 2);

    spool.acknowledge(&[pending[0].batch_id.clone(), "unknown".into()]).unwrap();
    let stats = spool.stats();
    assert_eq!(stats.reports, 3);
    assert_eq!(stats.oldest_collected_at, Some(pending[1].collected_at));
    drop(spool);

    let reopened = Spool::open(&path, 64 << 20).unwrap();
    let again: Vec<_> = reopened.pending(u64::MAX).unwrap().iter().map(|b| b.sequence.unwrap()).collect();
    assert_eq!(again, [2, 3, 10]);
    assert_eq!(reopened.stats().bytes, stats.bytes);
    assert_eq!(reopened.stats().oldest_collected_at, stats.oldest_collected_at);
}

/// The collector refuses a request that holds another host's report: a batch is one host's,
/// and the host of the newest report (what the agent reports as now) survives a reopen.
#[test]
fn a_batch_never_mixes_host_ids_and_the_newest_host_is_known_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool");
    let spool = Spool::open(&path, 64 << 20).unwrap();
    assert_eq!(spool.newest_host_id(), None);
    let reports = [small_as(1, "old-host"), small_as(2, "old-host"), small(3), small(4)];
    for r in &reports {
        spool.push(r).unwrap();
    }
    let hosts = |batch: &[guestward_transport::spool::SpooledBatch]| {
        batch.iter().map(|b| (b.sequence.unwrap(), b.host_id.clone().unwrap())).collect::<Vec<_>>()
    };
    let old = spool.pending(u64::MAX).unwrap();
    assert_eq!(hosts(&old), [(1, "old-host".to_string()), (2, "old-host".to_string())]);
    assert_eq!(spool.newest_host_id(), Some(Some(HOST.to_string())));
    drop(spool);
    // The host ids are read back from the entries' heads.
    let reopened = Spool::open(&path, 64 << 20).unwrap();
    assert_eq!(hosts(&reopened.pending(u64::MAX).unwrap()), hosts(&old));
    assert_eq!(reopened.newest_host_id(), Some(Some(HOST.to_string())));
    reopened.acknowledge(&[reports[0].batch_id.clone(), reports[1].batch_id.clone()]).unwrap();
    let now = reopened.pending(u64::MAX).unwrap();
    assert_eq!(hosts(&now), [(3, HOST.to_string()), (4, HOST.to_string())]);
}

#[test]
fn leftover_temporary_files_are_removed_and_foreign_files_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool");
    let spool = Spool::open(&path, 64 << 20).unwrap();
    let r = small(1);
    spool.push(&r).unwrap();
    drop(spool);
    // A write cut short by a crash, and files that are not ours.
    std::fs::write(
        path.join(format!(".00000000000000000002-{}.zst.tmp", guestward_report::new_batch_id())),
        b"\x28\xb5partial",
    )
    .unwrap();
    std::fs::write(path.join("notes.txt"), "hello").unwrap();
    std::fs::write(path.join("00000000000000000009-bad id.zst"), "x").unwrap();
    // Our name, but not a spooled report.
    std::fs::write(path.join("00000000000000000005-abc.zst"), "not zstd").unwrap();
    let spool = Spool::open(&path, 64 << 20).unwrap();
    let ids: Vec<_> = spool.pending(u64::MAX).unwrap().into_iter().map(|b| b.batch_id).collect();
    assert_eq!(ids, [r.batch_id]);
    let names: Vec<String> =
        std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    assert!(names.contains(&"notes.txt".to_string()), "foreign files are left alone: {names:?}");
    // The entry with our name that is not a report is set aside with its reason, and counted.
    let rejected = path.join("rejected");
    assert!(rejected.join("00000000000000000005-abc.zst").is_file());
    let reason = std::fs::read_to_string(rejected.join("00000000000000000005-abc.zst.reason")).unwrap();
    assert!(
        reason.starts_with("unusable when the agent started: ") && reason.contains("not a zstd"),
        "{reason}"
    );
    assert_eq!(spool.stats().rejected_total, 1);
    drop(spool);
    assert_eq!(Spool::open(&path, 64 << 20).unwrap().stats().rejected_total, 1, "kept across starts");
}

/// A planted or damaged entry of hundreds of megabytes is judged by its head, streamed: it is
/// never read whole into memory (250 MB of zeros once took 266 MB of RSS at start).
#[test]
fn a_huge_entry_that_is_not_a_report_is_set_aside_without_being_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool");
    drop(Spool::open(&path, 64 << 20).unwrap());
    let name = format!("00000000000000000007-{}.zst", guestward_report::new_batch_id());
    // Sparse: 1 GiB that costs no disk. Over the cap it is refused unread; under it (a larger
    // spool_max_bytes) only its first bytes are looked at.
    let huge = std::fs::File::create(path.join(&name)).unwrap();
    huge.set_len(1 << 30).unwrap();
    drop(huge);
    let spool = within(Duration::from_secs(20), "open a spool with a 1 GiB entry", {
        let path = path.clone();
        move || Spool::open(&path, 4 << 30).unwrap()
    });
    assert_eq!(spool.stats().reports, 0);
    assert_eq!(spool.stats().rejected_total, 1);
    assert!(path.join("rejected").join(&name).is_file());
}

#[test]
fn a_planted_symlink_or_fifo_is_neither_followed_nor_blocking() {
    within(Duration::from_secs(20), "opening a spool with a FIFO and a symlink in it", || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let spool = Spool::open(&path, 64 << 20).unwrap();
        let good = small(1);
        spool.push(&good).unwrap();
        drop(spool);
        // A symlink under an entry's name pointing at a real report elsewhere (it would be
        // read and shipped if followed), and a FIFO under another (it would block a read).
        let outside = dir.path().join("outside.zst");
        let planted = small(2);
        std::fs::write(&outside, compress_report(&planted).unwrap()).unwrap();
        std::os::unix::fs::symlink(
            &outside,
            path.join(format!("00000000000000000002-{}.zst", planted.batch_id)),
        )
        .unwrap();
        nix::unistd::mkfifo(
            &path.join("00000000000000000003-fifo.zst"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let spool = Spool::open(&path, 64 << 20).unwrap();
        let ids: Vec<_> = spool.pending(u64::MAX).unwrap().into_iter().map(|b| b.batch_id).collect();
        assert_eq!(ids, [good.batch_id]);
        assert_eq!(spool.stats().reports, 1);
        // Both set aside as they are (the link itself, not its target), and counted.
        assert_eq!(spool.stats().rejected_total, 2);
        assert!(
            std::fs::symlink_metadata(
                path.join("rejected").join(format!("00000000000000000002-{}.zst", planted.batch_id))
            )
            .unwrap()
            .file_type()
            .is_symlink()
        );
        assert!(outside.is_file(), "the link's target is left alone");
    });
}

#[test]
fn an_entry_replaced_by_a_fifo_while_open_leaves_the_queue_without_blocking_it() {
    within(Duration::from_secs(20), "a FIFO in place of a spooled entry", || {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 64 << 20).unwrap();
        let (a, b) = (small(1), small(2));
        spool.push(&a).unwrap();
        spool.push(&b).unwrap();
        let name = format!("00000000000000000001-{}.zst", a.batch_id);
        std::fs::remove_file(dir.path().join(&name)).unwrap();
        nix::unistd::mkfifo(&dir.path().join(&name), nix::sys::stat::Mode::from_bits_truncate(0o600))
            .unwrap();
        let ids: Vec<_> = spool.pending(u64::MAX).unwrap().into_iter().map(|x| x.batch_id).collect();
        assert_eq!(ids, [b.batch_id]);
        assert_eq!(spool.stats().reports, 1);
        assert_eq!(spool.stats().reports_dropped_total, 1);
    });
}

#[test]
fn a_symlink_in_place_of_the_spool_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.path().join("spool")).unwrap();
    let err = Spool::open(&dir.path().join("spool"), 64 << 20).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
}

#[test]
fn a_batch_id_that_is_not_a_file_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 64 << 20).unwrap();
    let mut r = small(1);
    r.batch_id = "../../escape".into();
    let err = spool.push(&r).unwrap_err();
    assert!(err.to_string().contains("batch_id"), "{err}");
    assert!(spool.is_empty());
}

/// Five reports fill the spool; a sixth almost as large as the bound must make room, which
/// takes every class in turn: the superseded snapshots of all five, then their non-FIM events,
/// then whole reports, oldest first. The newest is untouched; counters persist.
#[test]
fn the_size_bound_drops_snapshots_then_other_events_then_whole_reports() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool");
    let older: Vec<Report> = (1..=5).map(|s| report(s, 6000, 20, 3)).collect();
    let filled = {
        let spool = Spool::open(&path, 1 << 30).unwrap();
        for r in &older {
            spool.push(r).unwrap();
        }
        spool.stats().bytes
    };
    let max = filled + 2000;
    // The sixth: compressed just under the bound.
    let target = max as f64 - 1500.0;
    let (mut chars, mut newest) = (10_000.0, report(6, 10_000, 0, 1));
    for _ in 0..4 {
        let size = compress_report(&newest).unwrap().len() as f64;
        chars += (target - size) / 0.75;
        newest = report(6, chars as usize, 0, 1);
    }
    let per_char = compress_report(&newest).unwrap().len() as f64 / chars;
    let newest_size = compress_report(&newest).unwrap().len() as u64;
    assert!(newest_size < max && newest_size > max - 2500, "{newest_size} vs {max}");

    let spool = Spool::open(&path, max).unwrap();
    let outcome = spool.push(&newest).unwrap();
    let classes: Vec<(DropClass, u64)> =
        outcome.dropped.iter().map(|d| (d.what, d.sequence.unwrap())).collect();
    eprintln!("drops: {classes:?}");
    // Every class, in order, oldest report first within each.
    let rank = |c: DropClass| match c {
        DropClass::SupersededSnapshot => 0,
        DropClass::NonFimEvents => 1,
        DropClass::Report => 2,
    };
    assert!(classes.windows(2).all(|w| (rank(w[0].0), w[0].1) < (rank(w[1].0), w[1].1)), "{classes:?}");
    let of = |c: DropClass| classes.iter().filter(|(x, _)| *x == c).map(|(_, s)| *s).collect::<Vec<_>>();
    assert_eq!(of(DropClass::SupersededSnapshot), [1, 2, 3, 4, 5]);
    assert_eq!(of(DropClass::NonFimEvents), [1, 2, 3, 4, 5]);
    assert!(!of(DropClass::Report).is_empty());
    assert!(!classes.iter().any(|(_, s)| *s == 6), "the newest report is never thinned");
    for d in &outcome.dropped {
        match d.what {
            DropClass::SupersededSnapshot => assert_eq!((d.events, d.findings), (0, 0)),
            DropClass::NonFimEvents => assert_eq!((d.events, d.findings), (20, 0)),
            // What a whole report still held: 3 FIM changes, 1 coverage gap, 1 finding.
            DropClass::Report => assert_eq!((d.events, d.findings), (4, 1)),
        }
        let event = d.to_event(guestward_core::Timestamp::now());
        assert_eq!(event.kind, "transport.spool_dropped");
        assert_eq!(event.data["batch_id"], d.batch_id.as_str());
    }
    let stats = spool.stats();
    assert!(stats.bytes <= max, "{} > {max}", stats.bytes);
    assert_eq!(stats.superseded_snapshots_dropped_total, 5);
    assert_eq!(stats.events_dropped_total, 100);
    assert_eq!(stats.reports_dropped_total, of(DropClass::Report).len() as u64);

    // What is left: thinned older reports keep batch_id, sequence, FIM events and findings;
    // the newest is whole.
    let left: Vec<Report> = spool.pending(u64::MAX).unwrap().iter().map(|b| decode(&b.compressed)).collect();
    let (last, thinned) = left.split_last().unwrap();
    assert_eq!(last, &newest);
    for r in thinned {
        let original = older.iter().find(|o| o.batch_id == r.batch_id).unwrap();
        assert_eq!(r.sequence, original.sequence);
        assert!(r.host.is_none());
        assert_eq!(r.findings, original.findings);
        assert!(r.events.iter().all(|e| e.kind.starts_with("fim.") || e.kind.starts_with("coverage.")));
        assert_eq!(r.events.len(), 4);
    }

    // Counters survive a restart; a report larger than the whole spool is refused and counted.
    drop(spool);
    let spool = Spool::open(&path, max).unwrap();
    assert_eq!(spool.stats(), stats);
    let huge = report(7, (max as f64 * 1.5 / per_char) as usize, 0, 0);
    let err = spool.push(&huge).unwrap_err();
    assert!(matches!(err, SpoolError::TooLarge { .. }), "{err}");
    assert_eq!(spool.stats().reports_dropped_total, stats.reports_dropped_total + 1);
    assert_eq!(spool.too_large_total(), 1);
    assert_eq!(spool.stats().reports, stats.reports);
}

#[test]
fn a_push_and_the_shipper_reading_concurrently_lose_nothing() {
    within(Duration::from_secs(60), "concurrent push and acknowledge", || {
        let dir = tempfile::tempdir().unwrap();
        let spool = std::sync::Arc::new(Spool::open(dir.path(), 64 << 20).unwrap());
        let writer = {
            let spool = spool.clone();
            std::thread::spawn(move || {
                (1..=100)
                    .map(|s| {
                        let r = small(s);
                        spool.push(&r).unwrap();
                        r.batch_id
                    })
                    .collect::<Vec<_>>()
            })
        };
        let mut acked = Vec::new();
        while !writer.is_finished() || !spool.is_empty() {
            let batch = spool.pending(10_000).unwrap();
            let ids: Vec<String> = batch.iter().map(|b| b.batch_id.clone()).collect();
            spool.acknowledge(&ids).unwrap();
            acked.extend(ids);
        }
        let pushed = writer.join().unwrap();
        acked.sort();
        let mut expected = pushed.clone();
        expected.sort();
        assert_eq!(acked, expected);
    });
}

/// A disk that refuses entries (full) does not stop the reports: the spool holds them in
/// memory, hands them out in order with the entries on disk, forgets them once acknowledged,
/// keeps at most `MAX_HELD_BYTES` of them (the oldest dropped, counted), and writes what it
/// holds to disk at the first push that finds room (a reopened spool has them).
#[test]
fn a_full_disk_holds_reports_in_memory_in_order_and_writes_them_once_there_is_room() {
    use guestward_core::testing::{Mount, fill_filesystem, skip_or_fail};
    use guestward_transport::spool::MAX_HELD_BYTES;
    let mnt = tempfile::tempdir().unwrap();
    let _tmpfs = match Mount::tmpfs(mnt.path(), "8m") {
        Ok(t) => t,
        Err(reason) => {
            return skip_or_fail(
                "a_full_disk_holds_reports_in_memory_in_order_and_writes_them_once_there_is_room",
                &reason,
            );
        }
    };
    let path = mnt.path().join("spool");
    let spool = Spool::open(&path, 64 << 20).unwrap();
    assert!(spool.push(&small(1)).unwrap().held_in_memory.is_none());
    let filler = mnt.path().join("filler");
    fill_filesystem(&filler);

    let second = small(2);
    let held = spool.push(&second).unwrap().held_in_memory.expect("held in memory");
    assert!(held.contains("No space left on device"), "{held}");
    assert!(spool.push(&small(3)).unwrap().held_in_memory.is_some());
    assert_eq!((spool.len(), spool.held_in_memory()), (3, 2));
    let pending = spool.pending(u64::MAX).unwrap();
    let seqs: Vec<_> = pending.iter().map(|b| b.sequence.unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(decode(&pending[1].compressed), second);
    assert_eq!((spool.stats().reports, spool.stats().held_in_memory), (3, 2));
    spool.acknowledge(std::slice::from_ref(&second.batch_id)).unwrap();
    assert_eq!((spool.len(), spool.held_in_memory()), (2, 1));

    // Bounded: reports of about 1.1 MB compressed each, more than MAX_HELD_BYTES of them. The
    // oldest held go, each a dropped report; the newest stays.
    let big: Vec<Report> = (10..16).map(|seq| report(seq, 1_500_000, 1, 1)).collect();
    let mut dropped = Vec::new();
    for r in &big {
        let out = spool.push(r).unwrap();
        assert!(out.held_in_memory.is_some());
        dropped.extend(out.dropped);
    }
    assert!(!dropped.is_empty() && dropped.iter().all(|d| d.what == DropClass::Report), "{dropped:?}");
    assert_eq!(dropped[0].sequence, Some(3), "the oldest held report goes first");
    let stats = spool.stats();
    // What is held, and the one small entry on disk.
    assert!(stats.bytes <= MAX_HELD_BYTES + (64 << 10), "{stats:?}");
    assert_eq!(stats.reports_dropped_total, u64::try_from(dropped.len()).unwrap());
    let last = spool.pending(u64::MAX).unwrap().last().map(|b| b.batch_id.clone());
    assert_eq!(last.as_deref(), Some(big[5].batch_id.as_str()));

    // Still no room: writing what is held (as the daemon does when it stops) keeps it held.
    let held = spool.held_in_memory();
    assert!(held > 0);
    assert_eq!(spool.write_held(), held);

    // Room again: the next push writes what is held first, then itself.
    std::fs::remove_file(&filler).unwrap();
    let kept: Vec<u64> = spool.pending(u64::MAX).unwrap().iter().map(|b| b.sequence.unwrap()).collect();
    assert!(spool.push(&small(20)).unwrap().held_in_memory.is_none());
    assert_eq!(spool.held_in_memory(), 0);
    drop(spool);
    let reopened = Spool::open(&path, 64 << 20).unwrap();
    let on_disk: Vec<u64> = reopened.pending(u64::MAX).unwrap().iter().map(|b| b.sequence.unwrap()).collect();
    let mut expected = kept;
    expected.push(20);
    assert_eq!(on_disk, expected);
}

/// `push_then`'s callback runs once the report is in the spool and before any reader can see
/// it (the daemon stores the report's sequence number there: a report delivered and
/// acknowledged first would leave its number unstored), and not at all for a refused report.
#[test]
fn push_then_runs_before_a_reader_sees_the_report_and_not_for_a_refused_one() {
    within(Duration::from_secs(60), "push_then and a concurrent reader", || {
        let dir = tempfile::tempdir().unwrap();
        let spool = std::sync::Arc::new(Spool::open(dir.path(), 1 << 20).unwrap());
        assert_eq!(spool.highest_sequence(), None);
        let (seen_tx, seen_rx) = std::sync::mpsc::channel();
        let mut ran = false;
        spool
            .push_then(&small(5), || {
                ran = true;
                let reader = std::sync::Arc::clone(&spool);
                let seen_tx = seen_tx.clone();
                std::thread::spawn(move || {
                    let pending = reader.pending(u64::MAX).unwrap();
                    seen_tx.send(pending.len()).unwrap();
                });
                // The reader waits for the push to end: it has seen nothing yet.
                assert!(seen_rx.recv_timeout(Duration::from_millis(300)).is_err());
            })
            .unwrap();
        assert!(ran);
        assert_eq!(seen_rx.recv().unwrap(), 1, "the reader saw the report once the push ended");
        assert_eq!(spool.highest_sequence(), Some(5));

        let huge = report(6, 4 << 20, 0, 0);
        let mut ran = false;
        assert!(matches!(spool.push_then(&huge, || ran = true), Err(SpoolError::TooLarge { .. })));
        assert!(!ran, "the callback ran for a refused report");
        assert_eq!(spool.highest_sequence(), Some(5));
    });
}
