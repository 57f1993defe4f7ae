//! A baseline store that fails writes: the state directory is a tiny tmpfs, filled up so that
//! SQLite gets SQLITE_FULL. The failure is counted, opens a `store_write_failed` coverage gap
//! naming the path and the SQLite error, a rescan while the disk is still full fails and keeps
//! the gap open, and the first rescan after space is freed closes it and repairs the baseline.
//! Also: the report section read from the state directory without a monitor.

use crate::common::{self, p};
use guestward_core::testing::{Mount, fill_filesystem, skip_or_fail};
use guestward_core::{HostRoot, SectionStatus};
use guestward_fim::oneshot::{self, OneShot};
use guestward_fim::report::{BASELINE_WRITES_FAILED, COVERAGE_GAPS_OPEN};
use guestward_fim::{
    BaselineState, CoverageGap, FimReport, FimStatus, GapCause, Mechanism, Monitor, ScanOutcome, fim_findings,
};
use std::path::Path;
use std::time::{Duration, Instant};

fn wait_status(
    monitor: &Monitor,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&FimStatus) -> bool,
) -> FimStatus {
    let end = Instant::now() + timeout;
    loop {
        let s = monitor.status();
        if pred(&s) {
            return s;
        }
        if Instant::now() > end {
            panic!("{what}: not within {timeout:?}; status:\n{s:#?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn gaps(events: &common::Events) -> Vec<CoverageGap> {
    events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.kind == "coverage.gap")
        .map(|e| serde_json::from_value(e.data.clone()).unwrap())
        .collect()
}

#[test]
fn a_full_state_dir_counts_the_failed_write_opens_a_gap_and_the_next_rescan_closes_it() {
    let (_dir, tree) = common::tree(&[("a.conf", "one"), ("sub/b.conf", "two")]);
    let mnt = tempfile::tempdir().unwrap();
    let state = mnt.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let _unmount = match Mount::tmpfs(&state, "8m") {
        Ok(g) => g,
        Err(reason) => {
            return skip_or_fail(
                "a_full_state_dir_counts_the_failed_write_opens_a_gap_and_the_next_rescan_closes_it",
                &reason,
            );
        }
    };
    let state_in = state.clone();
    guestward_core::testing::within(Duration::from_secs(180), "store failure test", move || {
        store_failure_scenario(&tree, &state_in)
    });
}

fn store_failure_scenario(tree: &Path, state: &Path) {
    let (monitor, events) = common::start(common::config_for(tree, vec![]), state);
    let a = tree.join("a.conf");

    // The WAL is emptied first (a checkpoint that truncates it), so that the monitor's next
    // write must allocate; then every free byte of the tmpfs is taken.
    {
        let c = rusqlite::Connection::open(state.join("fim.db")).unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        let busy: i64 = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0)).unwrap();
        assert_eq!(busy, 0, "the WAL checkpoint was blocked");
    }
    let filler = state.join("filler");
    fill_filesystem(&filler);

    // A realtime change now cannot be recorded in the baseline.
    std::fs::write(&a, "changed while the state directory is full").unwrap();
    common::wait_change(&events, Duration::from_secs(20), |c| {
        c.path == p(&a) && c.mechanism == Mechanism::Realtime
    });
    let s = wait_status(&monitor, Duration::from_secs(20), "a counted write failure and a gap", |s| {
        s.store_write_failures_total >= 1 && s.open_gaps.iter().any(|g| g.cause == GapCause::StoreWriteFailed)
    });
    let gap = s.open_gaps.iter().find(|g| g.cause == GapCause::StoreWriteFailed).unwrap().clone();
    eprintln!("gap: {gap:?}");
    assert_eq!(gap.trees, vec![p(&a)], "the gap names the path whose record was not written");
    assert!(gap.detail.contains(&p(&a)) && gap.detail.contains("fim.db"), "{}", gap.detail);
    assert!(gap.detail.contains("full"), "the SQLite error is named: {}", gap.detail);
    assert!(s.last_store_error.as_deref().is_some_and(|e| e.contains(&p(&a))), "{s:?}");
    assert!(s.degraded, "{s:?}");
    // The gap reached the event sink (the report), even though the event log is full too.
    assert!(gaps(&events).iter().any(|g| g.id == gap.id && g.end.is_none()), "{:?}", gaps(&events));
    assert!(s.event_store_failures_total >= 1, "the event log write failed too: {s:?}");
    // The report section says so.
    let section = monitor.section();
    assert_eq!(section.status, SectionStatus::Degraded, "{section:?}");
    let report = section.data.unwrap();
    assert!(report.store_write_failures_total >= 1);
    let ids: Vec<String> = fim_findings(&report).into_iter().map(|f| f.id).collect();
    assert!(
        ids.iter().any(|i| i == COVERAGE_GAPS_OPEN) && ids.iter().any(|i| i == BASELINE_WRITES_FAILED),
        "{ids:?}"
    );

    // A rescan while the disk is still full fails and leaves the gap open.
    monitor.request_rescan(Some(vec![tree.to_path_buf()]));
    let s = wait_status(&monitor, Duration::from_secs(30), "the rescan fails", |s| {
        s.last_verification.as_ref().is_some_and(|v| v.outcome == ScanOutcome::Failed)
    });
    assert!(s.open_gaps.iter().any(|g| g.id == gap.id), "the gap stays open: {s:?}");
    assert!(s.last_verification.as_ref().unwrap().error.as_deref().unwrap_or("").contains("full"), "{s:?}");
    // `agentctl fim status` shows the counter, the open gap and the failed verification.
    let mut human = Vec::new();
    s.render_human(&mut human).unwrap();
    let human = String::from_utf8(human).unwrap();
    let line = format!("errors:     {} failed baseline write(s)", s.store_write_failures_total);
    assert!(
        human.contains(&line) && human.contains("store_write_failed") && human.contains(" failed in "),
        "{human}"
    );

    // Space is back: the next rescan of the tree succeeds and closes every store gap.
    std::fs::remove_file(&filler).unwrap();
    monitor.request_rescan(Some(vec![tree.to_path_buf()]));
    let s = wait_status(&monitor, Duration::from_secs(60), "the rescan closes the gaps", |s| {
        s.open_gaps.is_empty()
            && s.last_verification.as_ref().is_some_and(|v| v.outcome == ScanOutcome::Completed)
    });
    assert!(!s.degraded, "{s:?}");
    assert!(
        gaps(&events).iter().any(|g| g.id == gap.id && g.end.is_some()),
        "a closing coverage.gap event: {:?}",
        gaps(&events)
    );
    // The rescan found the change the baseline had missed (reported again, by the rescan).
    common::wait_change(&events, Duration::from_secs(5), |c| {
        c.path == p(&a) && c.mechanism == Mechanism::Rescan
    });
    assert_eq!(monitor.section().status, SectionStatus::Ok);
    monitor.stop();

    // The baseline matches the files again.
    let o = OneShot {
        config: common::config_for(tree, vec![]),
        state_dir: state.to_path_buf(),
        root: HostRoot::live(),
        progress_bar: false,
    };
    let check = oneshot::check(&o).unwrap();
    assert_eq!(check.summary.changes, 0, "{:?}", check.changes);
}

#[test]
fn the_fim_section_is_read_from_the_state_dir_without_creating_or_writing_it() {
    let (dir, tree) = common::tree(&[("a", "1"), ("d/b", "2")]);
    // No state directory at all: skipped, with how to create a baseline, and nothing created.
    let state = dir.path().join("state");
    let section = FimReport::from_state_dir(&state);
    assert_eq!(section.status, SectionStatus::Skipped);
    assert!(section.note.as_deref().unwrap_or("").contains("fim init"), "{section:?}");
    assert!(!state.exists(), "the state directory was created");

    let o = OneShot {
        config: common::config_for(&tree, vec![]),
        state_dir: state.clone(),
        root: HostRoot::live(),
        progress_bar: false,
    };
    oneshot::init(&o).unwrap();
    let db = state.join("fim.db");
    let before = std::fs::read(&db).unwrap();
    let section = FimReport::from_state_dir(&state);
    assert_eq!(section.status, SectionStatus::Ok, "{section:?}");
    let report = section.data.unwrap();
    assert!(matches!(report.baseline, BaselineState::Complete { .. }), "{report:?}");
    // The tree root, `a`, `d`, `d/b`.
    assert_eq!(report.entries, 4);
    let v = report.last_verification.unwrap();
    assert_eq!((v.purpose, v.outcome), (guestward_fim::Purpose::Init, ScanOutcome::Completed));
    assert!(report.open_gaps.is_empty() && report.monitor.is_none());
    assert_eq!(std::fs::read(&db).unwrap(), before, "the database was written");
}
