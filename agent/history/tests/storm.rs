//! Storms never lose a path: the coalescer in front of a real store.

use crate::common::{fim_change, open, roomy};
use guestward_core::testing::within;
use guestward_core::{Event, Timestamp};
use guestward_history::{Batch, CoalesceLimits, Coalescer, Query, StoredEvent};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// The input of one storm: (offset from the start, event).
fn storm(rewritten: usize, rewrites: usize, created: usize, span: Duration) -> Vec<(Duration, Event)> {
    let start = Timestamp::now();
    let mut out = Vec::new();
    let per_round = created.div_ceil(rewrites);
    let mut made = 0;
    for round in 0..rewrites {
        let at = span.mul_f64(round as f64 / rewrites as f64);
        let time = Timestamp(start.0 + at);
        for f in 0..rewritten {
            let r = round as u64;
            let (change, old) = if round == 0 { ("added", None) } else { ("modified", Some(r)) };
            out.push((at, fim_change(&format!("/srv/www/page-{f}.html"), change, old, Some(r + 1), time)));
        }
        for _ in 0..per_round {
            if made < created {
                out.push((
                    at,
                    fim_change(&format!("/srv/upload/new-{made}.bin"), "added", None, Some(7), time),
                ));
                made += 1;
            }
        }
    }
    out
}

/// Events of one stored row: its `coalesced.count`, or 1.
fn weight(e: &StoredEvent) -> u64 {
    e.event.data.get("coalesced").and_then(|c| c["count"].as_u64()).unwrap_or(1)
}

#[test]
fn a_storm_of_rewrites_and_new_files_keeps_every_path_and_the_counts_add_up() {
    within(Duration::from_secs(120), "storm through coalescer and store", || {
        // The measured storm of the issue: 2,000 files rewritten 30 times and 600 created in 18 s.
        let input = storm(2000, 30, 600, Duration::from_secs(18));
        let total = input.len() as u64;
        assert_eq!(total, 2000 * 30 + 600);
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path(), roomy());
        let limits = CoalesceLimits::default();
        let mut c = Coalescer::new(limits);
        let t0 = Instant::now();
        let mut next_drain = Duration::from_secs(1);
        let mut peak = 0;
        let mut appended = 0u64;
        let mut coalesced = 0u64;
        let mut feed = |store: &mut guestward_history::EventStore, batch: Batch| {
            assert_eq!(batch.dropped, 0, "the default cap holds this storm");
            coalesced += batch.coalesced;
            appended += batch.events.len() as u64;
            store.append_batch(&batch).unwrap();
        };
        for (at, event) in input {
            // The daemon drains about once a second.
            while at >= next_drain {
                feed(&mut store, c.drain(t0 + next_drain));
                next_drain += Duration::from_secs(1);
            }
            c.push(event, t0 + at);
            peak = peak.max(c.memory_bytes());
        }
        // The storm is over: after a quiet window every summary is released.
        feed(&mut store, c.drain(t0 + Duration::from_secs(18) + limits.window + Duration::from_secs(1)));
        assert_eq!(c.pending(), 0);
        assert_eq!(c.memory_bytes(), 0, "the memory accounting returns to zero once all is released");
        assert!(peak <= limits.max_memory_bytes, "peak {peak} bytes");
        eprintln!("storm of {total} events: {appended} rows, peak {peak} bytes held");

        let rows = store.query(&Query { limit: usize::MAX, ..Query::default() }).unwrap();
        assert_eq!(rows.len() as u64, appended);
        // Every path changed in the storm is in the history.
        let paths: BTreeSet<&str> = rows.iter().filter_map(|e| e.event.data["path"].as_str()).collect();
        for f in 0..2000 {
            assert!(paths.contains(format!("/srv/www/page-{f}.html").as_str()), "page-{f} missing");
        }
        for n in 0..600 {
            assert!(paths.contains(format!("/srv/upload/new-{n}.bin").as_str()), "new-{n} missing");
        }
        assert_eq!(paths.len(), 2600);
        // Bounded: at most the per-path allowance plus one summary per path.
        let per_path = u64::from(limits.per_key_events) + 1;
        assert!(appended <= 2600 * per_path, "{appended} rows");
        assert!(appended * 5 < total, "{appended} rows for {total} events is no coalescing");
        // Coalesced counts add up to the input, and the store counted what was folded.
        let represented: u64 = rows.iter().map(weight).sum();
        assert_eq!(represented, total);
        let stats = store.stats().unwrap();
        assert_eq!(stats.coalesced_total, coalesced);
        assert_eq!(stats.coalesced_total, total - appended);
        assert_eq!(stats.dropped_total + stats.overflow_dropped_total, 0);

        // A rewritten page's summary goes from its earliest old state to its latest new one.
        let mut by_path: BTreeMap<&str, Vec<&StoredEvent>> = BTreeMap::new();
        for e in &rows {
            if let Some(p) = e.event.data["path"].as_str() {
                by_path.entry(p).or_default().push(e);
            }
        }
        let page = &by_path["/srv/www/page-7.html"];
        let summary = page.iter().find(|e| e.event.data.get("coalesced").is_some()).unwrap();
        let d = &summary.event.data;
        assert_eq!(d["new"]["size"], 30, "latest new state: {d}");
        let first_folded = 30 - d["coalesced"]["count"].as_u64().unwrap();
        assert_eq!(d["old"]["size"], first_folded, "earliest old state of the folded events: {d}");
        assert_eq!(d["change"], "modified");
        assert!(Timestamp::from_unix_secs(0).unwrap() < summary.event.time);
    });
}

#[test]
fn a_storm_beyond_the_memory_cap_drops_the_oldest_and_records_one_gap() {
    within(Duration::from_secs(120), "storm beyond the cap", || {
        let limits = CoalesceLimits {
            max_memory_bytes: 1 << 20,
            max_pending_events: 100,
            ..CoalesceLimits::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path(), roomy());
        let mut c = Coalescer::new(limits);
        let t0 = Instant::now();
        let now = Timestamp::now();
        // 20,000 distinct paths at once, each changed once: nothing to fold, far beyond 1 MiB.
        let total = 20_000u64;
        for i in 0..total {
            c.push(fim_change(&format!("/srv/spray/f{i}"), "added", None, Some(i), now), t0);
            assert!(c.memory_bytes() <= limits.max_memory_bytes, "{} bytes held", c.memory_bytes());
        }
        let batch = c.flush(t0);
        assert!(batch.dropped > 0);
        let gaps: Vec<&Event> = batch.events.iter().filter(|e| e.kind == "coverage.gap").collect();
        assert_eq!(gaps.len(), 1, "one gap for the whole drop");
        assert_eq!(gaps[0].data["cause"], "history_overflow");
        assert_eq!(gaps[0].data["dropped"], batch.dropped);
        let kept = (batch.events.len() - 1) as u64;
        assert_eq!(kept + batch.dropped, total, "every event is either stored or counted as dropped");
        // The newest survive: the drop took the oldest.
        assert!(batch.events.iter().any(|e| e.data["path"] == format!("/srv/spray/f{}", total - 1)));
        assert!(!batch.events.iter().any(|e| e.data["path"] == "/srv/spray/f0"));

        assert!(c.drain(t0 + limits.window).is_empty());
        assert_eq!(c.memory_bytes(), 0, "the memory accounting returns to zero once all is released");
        store.append_batch(&batch).unwrap();
        let stats = store.stats().unwrap();
        assert_eq!(stats.overflow_dropped_total, batch.dropped);
        assert_eq!(stats.open_gaps, 1, "the gap waits for the next rescan");
        assert_eq!(store.close_overflow_gaps(Timestamp::now()).unwrap().len(), 1);
    });
}

#[test]
fn a_path_busy_forever_is_still_reported_every_max_hold() {
    let limits = CoalesceLimits::default();
    let mut c = Coalescer::new(limits);
    let t0 = Instant::now();
    let mut released = Vec::new();
    // One change a second for 3 minutes: never quiet for a window.
    for s in 0..180u64 {
        let at = t0 + Duration::from_secs(s);
        c.push(fim_change("/var/log/busy", "modified", Some(s), Some(s + 1), Timestamp::now()), at);
        released.extend(c.drain(at).events);
    }
    released.extend(c.flush(t0 + Duration::from_secs(180)).events);
    let represented: u64 =
        released.iter().map(|e| e.data.get("coalesced").and_then(|c| c["count"].as_u64()).unwrap_or(1)).sum();
    assert_eq!(represented, 180);
    // Summaries came out during the storm, not only at its end.
    assert!(
        released.len() >= 3 && released.len() <= 3 * (limits.per_key_events as usize + 1) + 1,
        "{}",
        released.len()
    );
}

#[test]
fn a_burst_of_distinct_paths_beyond_the_backlog_goes_to_the_store_instead_of_filling_memory() {
    within(Duration::from_secs(120), "burst of distinct paths", || {
        // A `chown -R` over a big tree: every file changes once, 5,000 a second for 6 s. Held
        // until quiet, 30,000 summaries would be far beyond the cap; drained each second,
        // none is dropped.
        let limits = CoalesceLimits::default();
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path(), roomy());
        let mut c = Coalescer::new(limits);
        let t0 = Instant::now();
        let now = Timestamp::now();
        let total = 30_000u64;
        for i in 0..total {
            let at = t0 + Duration::from_micros(i * 200);
            c.push(fim_change(&format!("/usr/lib/f{i}"), "modified", Some(1), Some(2), now), at);
            if i % 5_000 == 4_999 {
                let batch = c.drain(at);
                assert_eq!(batch.dropped, 0, "nothing dropped at {i}");
                store.append_batch(&batch).unwrap();
            }
        }
        store.append_batch(&c.drain(t0 + Duration::from_secs(7))).unwrap();
        let stats = store.stats().unwrap();
        assert_eq!(stats.stored, total, "every path stored once");
        assert_eq!(stats.overflow_dropped_total, 0);
        assert_eq!(stats.coalesced_total, 0);
    });
}
