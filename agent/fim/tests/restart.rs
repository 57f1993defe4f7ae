//! Restart mid-baseline: a process is killed (SIGKILL) while building the baseline of 50k
//! files; the next run resumes instead of starting over, completes, and reports no change.
//!
//! The killed process is this test binary re-executed on the ignored test `child_baseline`.

use guestward_core::HostRoot;
use guestward_fim::config::RateLimit;
use guestward_fim::oneshot::{self, OneShot};
use guestward_fim::{Fim, FimError};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FILES: usize = 50_000;
const ENV_TREE: &str = "GUESTWARD_FIM_CHILD_TREE";
const ENV_STATE: &str = "GUESTWARD_FIM_CHILD_STATE";

fn oneshot(tree: &Path, state: &Path) -> OneShot {
    let mut config = crate::common::config_for(tree, vec![]);
    // Slow enough that the kill lands mid-scan on any machine.
    config.initial_scan_rate = RateLimit { files_per_sec: 20_000, bytes_per_sec: 0 };
    OneShot { config, state_dir: state.to_path_buf(), root: HostRoot::live(), progress_bar: false }
}

#[test]
#[ignore = "child process of restart_mid_baseline_resumes_without_spurious_changes"]
fn child_baseline() {
    let (Some(tree), Some(state)) = (std::env::var_os(ENV_TREE), std::env::var_os(ENV_STATE)) else {
        panic!("run only by restart_mid_baseline_resumes_without_spurious_changes");
    };
    let mut o = oneshot(Path::new(&tree), Path::new(&state));
    o.config.threads = 2;
    let fim = Fim::new(o.config.clone(), o.root.clone(), &o.state_dir).unwrap();
    let progress = |p: &guestward_fim::scan::ScanProgress| println!("PROGRESS {}", p.entries_done);
    let opts = guestward_fim::scan::ScanOptions {
        rate: o.config.initial_scan_rate,
        threads: 2,
        progress: Some(&progress),
        cancel: None,
        pace: None,
        rehash: Default::default(),
    };
    fim.scan(
        guestward_fim::Purpose::Init,
        &guestward_fim::Scope::All,
        guestward_fim::Mechanism::Rescan,
        &opts,
        &mut |_| {},
    )
    .unwrap();
    println!("DONE");
}

#[test]
fn restart_mid_baseline_resumes_without_spurious_changes() {
    let dir = crate::common::scratch();
    let tree = dir.path().join("tree");
    for d in 0..50 {
        std::fs::create_dir_all(tree.join(format!("d{d:02}"))).unwrap();
    }
    for i in 0..FILES {
        std::fs::write(tree.join(format!("d{:02}/f{i}", i % 50)), i.to_string()).unwrap();
    }
    let state = dir.path().join("state");

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "restart::child_baseline", "--ignored", "--nocapture", "--test-threads=1"])
        .env(ENV_TREE, &tree)
        .env(ENV_STATE, &state)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut killed_at = 0u64;
    for line in stdout.lines() {
        let line = line.unwrap();
        assert_ne!(line, "DONE", "the child finished before it could be killed");
        if let Some(n) = line.strip_prefix("PROGRESS ").and_then(|n| n.parse::<u64>().ok())
            && n >= 12_000
        {
            child.kill().unwrap();
            killed_at = n;
            break;
        }
        assert!(Instant::now() < deadline, "child made no progress");
    }
    child.wait().unwrap();
    assert!(killed_at > 0, "child never reported progress");

    // The interrupted baseline is not a baseline: checking now is an error, not a list of
    // "added" files.
    let o = oneshot(&tree, &state);
    assert!(matches!(oneshot::check(&o), Err(FimError::NoBaseline { .. })));

    // Restart: resumes from the staged records.
    let mut o = o;
    o.config.initial_scan_rate = RateLimit::default();
    let init = oneshot::init(&o).unwrap();
    let total = (FILES + 50 + 1) as u64;
    assert_eq!(init.summary.stats.entries, total);
    assert!(
        init.summary.stats.resumed >= killed_at,
        "resumed only {} of {killed_at}",
        init.summary.stats.resumed
    );
    assert!(init.summary.stats.resumed < total, "some work was left for the restart");

    let fim = Fim::new(o.config.clone(), o.root.clone(), &o.state_dir).unwrap();
    assert_eq!(fim.store().unwrap().file_count().unwrap(), total);
    let check = oneshot::check(&o).unwrap();
    assert_eq!(check.summary.changes, 0, "{:#?}", &check.changes[..check.changes.len().min(5)]);
    assert_eq!(check.exit_code(), 0);
}
