//! Crash safety: a process killed (-9) while pushing loses nothing `push` had returned for,
//! and leaves no partial entry.

use crate::support::report;
use guestward_core::testing::within;
use guestward_transport::Spool;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const CHILD_ENV: &str = "GUESTWARD_TEST_SPOOL_CRASH_DIR";

/// The child half: does nothing in a normal run; with the variable set (by the test below) it
/// pushes reports forever and prints each batch id once `push` returned.
#[test]
fn crash_child_pushes_in_a_loop() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else { return };
    let spool = Spool::open(std::path::Path::new(&dir), 1 << 30).unwrap();
    for seq in 1.. {
        // Sizes vary so that some writes take long enough to be cut.
        let r = report(seq, 2_000 + (seq as usize % 7) * 30_000, 5, 2);
        spool.push(&r).unwrap();
        println!("PUSHED {}", r.batch_id);
    }
}

#[test]
fn kill_9_while_pushing_loses_no_acknowledged_report_and_leaves_no_partial_entry() {
    within(Duration::from_secs(120), "kill -9 during pushes", || {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["crash::crash_child_pushes_in_a_loop", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &spool_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut printed = Vec::new();
        while printed.len() < 40 {
            let line = lines.next().expect("the child stopped printing").unwrap();
            if let Some(id) = line.strip_prefix("PUSHED ") {
                printed.push(id.to_string());
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Ids printed before the kill, still in the pipe.
        for line in lines {
            if let Some(id) = line.unwrap().strip_prefix("PUSHED ") {
                printed.push(id.to_string());
            }
        }
        let spool = Spool::open(&spool_dir, 1 << 30).unwrap();
        let pending = spool.pending(u64::MAX).unwrap();
        let found: Vec<&str> = pending.iter().map(|b| b.batch_id.as_str()).collect();
        for id in &printed {
            assert!(
                found.contains(&id.as_str()),
                "batch {id} was pushed (push returned) but is gone after kill -9"
            );
        }
        // Every entry is whole (at most one more than printed: pushed, killed before printing).
        assert!(found.len() <= printed.len() + 1, "{} entries, {} printed", found.len(), printed.len());
        for b in &pending {
            let json = zstd::stream::decode_all(&b.compressed[..]).unwrap();
            let r: guestward_report::Report = serde_json::from_slice(&json).unwrap();
            assert_eq!(r.batch_id, b.batch_id);
        }
        let leftovers: Vec<_> = std::fs::read_dir(&spool_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        eprintln!("killed after {} acknowledged pushes; {} entries intact", printed.len(), found.len());
    });
}
