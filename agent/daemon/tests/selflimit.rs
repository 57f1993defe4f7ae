//! Self-limits (`[limits]`) end to end: the real daemon over its budget throttles itself, and
//! `agentctl status` and the report say so.

use crate::support::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// With the smallest CPU budget (0.1% of one core) and a FIM tree of 256 MiB to baseline, the
/// daemon's first minute is far over budget: status shows it throttled with a reason naming
/// the CPU, FIM hashing paced, and a full report carries the same. The control socket keeps
/// answering throughout (every `agentctl` call is bounded).
#[test]
fn with_a_tiny_cpu_budget_fim_hashing_throttles_and_status_says_so() {
    // On disk, not tmpfs: a quarter GiB of RAM is not the test's to take. Deleted on drop.
    let tree = tempfile::tempdir().unwrap();
    let chunk: Vec<u8> = (0..1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    for i in 0..256u32 {
        let mut data = chunk.clone();
        data[..4].copy_from_slice(&i.to_le_bytes());
        std::fs::write(tree.path().join(format!("f{i:03}.bin")), &data).unwrap();
    }
    let config = format!(
        "[imds]\nenabled = false\n[limits]\ncpu_percent = 0.1\n[fim]\npaths = [\"{}\"]\n",
        tree.path().display()
    );
    let daemon = Daemon::start_with(&config, &[]);
    let status = |daemon: &Daemon| -> Value {
        let (code, out, err, _) = daemon.ctl_bounded(&["status", "--json"], Duration::from_secs(20));
        assert!(code.is_some(), "agentctl status did not answer: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("status is not JSON ({e}): {out}\n{err}"))
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    let limits = loop {
        let s = status(&daemon);
        if s["self_limits"]["throttled"] == true {
            break s["self_limits"].clone();
        }
        assert!(Instant::now() < deadline, "never throttled within 180 s: {:#}", s["self_limits"]);
        std::thread::sleep(Duration::from_millis(500));
    };
    let reason = limits["throttle_reason"].as_str().unwrap();
    assert!(reason.starts_with("cpu ") && reason.contains("cpu_percent"), "{reason}");
    assert_eq!(limits["cpu_budget_percent"], 0.1);
    assert!(limits["cpu_percent"].as_f64().unwrap() > 0.1, "{limits:#}");
    assert!(limits["rss_bytes"].as_u64().unwrap() > 0, "{limits:#}");
    assert!(limits["throttled_since"].is_string(), "{limits:#}");
    assert!(limits["throttle_episodes_total"].as_u64().unwrap() >= 1, "{limits:#}");
    assert!(limits["fim_pace_micros_per_mib"].as_u64().unwrap() > 0, "FIM hashing not paced: {limits:#}");

    // A full report made now says so too, and still matches the published schema.
    let (code, out, err, _) = daemon.ctl_bounded(&["scan", "--json"], Duration::from_secs(120));
    assert_eq!(code, Some(0), "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let carried = &report["self_limits"];
    assert_eq!(carried["throttled"], true, "the report does not say it is throttled: {carried:#}");
    assert!(carried["throttle_reason"].as_str().unwrap().starts_with("cpu "), "{carried:#}");
    validate_against_schema(&report);
    drop(daemon);
}
