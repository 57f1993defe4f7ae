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

/// Once quiet after its first scan, the daemon hands its executable's code pages back to the
/// kernel (`guestward_reclaim`): its file-backed resident memory falls well below what the
/// scan left mapped, and the daemon keeps answering (the pages it needs fault back in).
#[test]
fn quiet_after_the_first_scan_the_daemon_unmaps_its_idle_code() {
    let env = unit_environment();
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let daemon = Daemon::start_with("[imds]\nenabled = false\n", &env);
    let rss_file = || proc_status_value(daemon.pid(), "RssFile").unwrap();
    let mut most = 0;
    daemon.wait_for(
        || {
            most = most.max(rss_file());
            let (code, out, _) = daemon.ctl(&["status", "--json"]);
            code == 0 && serde_json::from_str::<Value>(&out).unwrap()["last_scan"].is_object()
        },
        "the first scan",
    );
    // The release comes after a 5 s sample with the scan's work, then a quiet one: within
    // 15 s on an idle machine; the margin is for a loaded one.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut least = u64::MAX;
    while Instant::now() < deadline {
        let now = rss_file();
        most = most.max(now);
        least = least.min(now);
        if least * 2 < most {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(least * 2 < most, "file-backed RSS never fell to half of {most} KiB (lowest {least} KiB)");
    let (code, out, err) = daemon.ctl(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("running (pid"), "{out}");
}
