//! The pacing hook (`guestward_fim::Pace`): the daemon's self-limits slow scan hashing down
//! through it. Bounded by deadlines: a rest that never ends fails the test instead of hanging.

use crate::common::{config_for, tree};
use guestward_core::HostRoot;
use guestward_core::testing::within;
use guestward_fim::scan::ScanOptions;
use guestward_fim::{Fim, Mechanism, Pace, Purpose, Scope};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// With the pace at its highest, each file costs the longest rest: the scan cannot finish
/// until the pace is lifted, and once it is, the rest in progress ends at its next slice and
/// the scan completes with every file hashed.
#[test]
fn a_paced_scan_waits_until_the_pace_is_lifted_then_completes() {
    let files: Vec<(String, String)> = (0..20).map(|i| (format!("f{i}"), format!("content {i}"))).collect();
    let refs: Vec<(&str, &str)> = files.iter().map(|(n, c)| (n.as_str(), c.as_str())).collect();
    let (dir, root) = tree(&refs);
    let state = dir.path().join("state");
    let fim = Fim::new(config_for(&root, vec![]), HostRoot::live(), &state).unwrap();
    let pace = Arc::new(Pace::new());
    pace.set_micros_per_mib(u64::MAX);
    let lifted = Arc::new(AtomicBool::new(false));
    let lifter = {
        let (pace, lifted) = (Arc::clone(&pace), Arc::clone(&lifted));
        std::thread::spawn(move || {
            // Long enough for an unpaced scan of 20 tiny files to be over many times.
            std::thread::sleep(Duration::from_secs(2));
            lifted.store(true, Ordering::SeqCst);
            pace.set_micros_per_mib(0);
        })
    };
    let (summary, lifted_before_end) = within(Duration::from_secs(120), "a paced scan", move || {
        let opts = ScanOptions {
            rate: Default::default(),
            threads: 2,
            progress: None,
            cancel: None,
            pace: Some(&pace),
            rehash: Default::default(),
        };
        let summary = fim.scan(Purpose::Init, &Scope::All, Mechanism::Rescan, &opts, &mut |_| {}).unwrap();
        (summary, lifted.load(Ordering::SeqCst))
    });
    lifter.join().unwrap();
    assert!(lifted_before_end, "the scan finished while paced at the highest pace: the pace was not obeyed");
    assert!(!summary.stats.cancelled, "{summary:?}");
    assert!(summary.stats.bytes_hashed > 0, "{summary:?}");
}
