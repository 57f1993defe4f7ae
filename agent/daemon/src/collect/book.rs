//! Each collector's record in the daemon: its last run, result and error, and when a collector
//! that did not do its whole job is tried again.
//!
//! Isolation: every collector runs on its own thread and a panic becomes an error section
//! (`scan.rs`), so one collector's failure never takes the others' sections with it. What this
//! module adds is the memory of it (`agentctl status` shows each collector's state) and the
//! retry: a collector whose run failed (`error` section) or degraded (some inputs unreadable)
//! is run again on its own, after a backoff, instead of waiting a full scan interval, while
//! the others keep their schedule.
//!
//! Backoff: the first retry comes `scan_interval_secs / 10` after the failed run (at least
//! 1 s, at most 30 s), each further one after twice the previous wait, never more than the
//! scan interval; every wait is spread by ±10 % so a fleet does not retry in step. A retry
//! that would wait the whole scan interval is left to the next full scan, so a collector that
//! keeps failing costs about log2(10) extra runs at most, then runs with the full scans only.

use guestward_core::{SectionStatus, Timestamp};
use guestward_report::Report;
use guestward_report::protocol::{Collector, CollectorState, CollectorStatus};
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Fraction by which scheduled waits are spread (±), so hosts started together drift apart.
pub const JITTER_FRACTION: f64 = 0.10;

/// Shortest and longest first retry delay.
const RETRY_BASE_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

/// `d` spread uniformly over `d × [1 − 10 %, 1 + 10 %]`.
pub fn jittered(d: Duration) -> Duration {
    let factor = 1.0 + JITTER_FRACTION * (2.0 * fastrand::f64() - 1.0);
    d.mul_f64(factor)
}

/// The wait before retry number `failures` (1 after the first failed run) of a collector, for
/// a scan interval of `interval`, before jitter.
pub fn retry_backoff(interval: Duration, failures: u32) -> Duration {
    let base = (interval / 10).clamp(RETRY_BASE_RANGE.0, RETRY_BASE_RANGE.1);
    let doublings = failures.saturating_sub(1).min(20);
    base.saturating_mul(1u32 << doublings).min(interval)
}

#[derive(Debug, Clone)]
struct Entry {
    state: CollectorState,
    last_run_at: Option<Timestamp>,
    last_duration_ms: Option<u64>,
    last_error: Option<String>,
    consecutive_failures: u32,
    retry_at: Option<(Instant, Timestamp)>,
}

impl Entry {
    /// One more run in a row that failed or degraded: the retry after its backoff, or none once
    /// the backoff has grown to the scan interval (the next full scan runs it anyway; two
    /// independently jittered schedules would otherwise add a run about every other interval).
    fn failed_again(&mut self, interval: Duration, now: Instant) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let backoff = retry_backoff(interval, self.consecutive_failures);
        self.retry_at = (backoff < interval).then(|| {
            let wait = jittered(backoff);
            (now + wait, add(Timestamp::now(), wait))
        });
    }
}

impl Default for Entry {
    fn default() -> Self {
        Self {
            state: CollectorState::Pending,
            last_run_at: None,
            last_duration_ms: None,
            last_error: None,
            consecutive_failures: 0,
            retry_at: None,
        }
    }
}

/// Every collector's record, in [`Collector::ALL`] order. Cheap to read (one small lock,
/// never held across a scan).
#[derive(Debug, Default)]
pub struct CollectorBook {
    entries: Mutex<[Entry; Collector::ALL.len()]>,
}

/// `c`'s place in [`Collector::ALL`] (checked by a test), the order of the book's entries.
fn index(c: Collector) -> usize {
    match c {
        Collector::Host => 0,
        Collector::Packages => 1,
        Collector::Network => 2,
        Collector::Cloud => 3,
        Collector::Fim => 4,
        Collector::Updates => 5,
        Collector::Access => 6,
    }
}

/// One section's outcome: its status, its first problem (or why it was skipped) and its
/// duration.
fn outcome(report: &Report, c: Collector) -> Option<(SectionStatus, Option<String>, u64)> {
    fn of<T>(s: &Option<guestward_core::Section<T>>) -> Option<(SectionStatus, Option<String>, u64)> {
        let s = s.as_ref()?;
        let first = s.problems.first().map(|p| match &p.path {
            Some(path) if !p.message.contains(path.as_str()) => format!("{}: {}", path, p.message),
            _ => p.message.clone(),
        });
        Some((s.status, first, s.duration_ms))
    }
    match c {
        Collector::Host => of(&report.host),
        Collector::Packages => of(&report.packages),
        Collector::Network => of(&report.network),
        Collector::Cloud => of(&report.cloud),
        Collector::Fim => of(&report.fim),
        Collector::Updates => of(&report.updates),
        Collector::Access => of(&report.access),
    }
}

impl CollectorBook {
    /// Every collector pending.
    pub fn new() -> Self {
        Self::default()
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, [Entry; Collector::ALL.len()]> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records the run of the collectors in `ran` whose sections `report` holds, and schedules
    /// a retry for those that failed or degraded (`interval`: the scan interval in force).
    pub fn record(&self, report: &Report, ran: &BTreeSet<Collector>, interval: Duration) {
        let now = Instant::now();
        let mut entries = self.entries();
        for &c in ran {
            let entry = &mut entries[index(c)];
            let Some((status, first_problem, duration_ms)) = outcome(report, c) else {
                // No section for a collector that was asked for (not expected): no retry either,
                // so a missing section can never make the scheduler spin.
                entry.retry_at = None;
                continue;
            };
            entry.last_run_at = Some(report.collected_at);
            entry.last_duration_ms = Some(duration_ms);
            entry.state = match status {
                SectionStatus::Ok => CollectorState::Ok,
                SectionStatus::Degraded => CollectorState::Degraded,
                SectionStatus::Error => CollectorState::Failed,
                SectionStatus::Skipped => CollectorState::Skipped,
            };
            if matches!(entry.state, CollectorState::Failed | CollectorState::Degraded) {
                entry.last_error = first_problem;
                entry.failed_again(interval, now);
            } else {
                entry.last_error = None;
                entry.consecutive_failures = 0;
                entry.retry_at = None;
            }
        }
    }

    /// Records a cycle that produced no report at all (its scan thread died): every collector
    /// in `ran` failed with `error`.
    pub fn record_crash(&self, ran: &BTreeSet<Collector>, error: &str, interval: Duration) {
        let now = Instant::now();
        let mut entries = self.entries();
        for &c in ran {
            let entry = &mut entries[index(c)];
            entry.state = CollectorState::Failed;
            entry.last_run_at = Some(Timestamp::now());
            entry.last_duration_ms = None;
            entry.last_error = Some(error.to_string());
            entry.failed_again(interval, now);
        }
    }

    /// The collectors whose retry is due at `now`.
    pub fn due(&self, now: Instant) -> BTreeSet<Collector> {
        let entries = self.entries();
        Collector::ALL
            .into_iter()
            .filter(|&c| entries[index(c)].retry_at.is_some_and(|(at, _)| at <= now))
            .collect()
    }

    /// The earliest retry scheduled, if any.
    pub fn next_retry(&self) -> Option<Instant> {
        self.entries().iter().filter_map(|e| e.retry_at.map(|(at, _)| at)).min()
    }

    /// Each collector's status, in [`Collector::ALL`] order; `next_scan_at` is the next full
    /// scan (a collector runs then, or at its retry when that comes first).
    pub fn statuses(&self, next_scan_at: Option<Timestamp>) -> Vec<CollectorStatus> {
        let entries = self.entries();
        Collector::ALL
            .into_iter()
            .map(|c| {
                let e = &entries[index(c)];
                let retry = e.retry_at.map(|(_, at)| at);
                let next_run_at = match (retry, next_scan_at) {
                    (Some(r), Some(n)) => Some(r.min(n)),
                    (r, n) => r.or(n),
                };
                CollectorStatus {
                    name: c,
                    state: e.state,
                    last_run_at: e.last_run_at,
                    last_duration_ms: e.last_duration_ms,
                    last_error: e.last_error.clone(),
                    consecutive_failures: e.consecutive_failures,
                    next_run_at,
                }
            })
            .collect()
    }
}

/// `at + d` in whole seconds (rounded up), saturating (a far future stays far).
pub fn add(at: Timestamp, d: Duration) -> Timestamp {
    let secs = i64::try_from(d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))).unwrap_or(i64::MAX);
    Timestamp::from_unix_secs(at.unix_secs().saturating_add(secs)).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_backoff_starts_at_a_tenth_of_the_interval_and_doubles_up_to_it() {
        let interval = Duration::from_secs(900);
        let waits: Vec<u64> = (1..=7).map(|n| retry_backoff(interval, n).as_secs()).collect();
        assert_eq!(waits, vec![30, 60, 120, 240, 480, 900, 900]);
        // A short interval starts shorter, never under a second.
        assert_eq!(retry_backoff(Duration::from_secs(20), 1), Duration::from_secs(2));
        assert_eq!(retry_backoff(Duration::from_secs(5), 1), Duration::from_secs(1));
        assert_eq!(retry_backoff(interval, u32::MAX), interval);
    }

    #[test]
    fn jitter_stays_within_ten_percent_and_spreads() {
        let d = Duration::from_secs(100);
        let samples: Vec<Duration> = (0..500).map(|_| jittered(d)).collect();
        assert!(samples.iter().all(|s| *s >= Duration::from_secs(90) && *s <= Duration::from_secs(110)));
        assert!(samples.iter().any(|s| *s < Duration::from_secs(97)), "no sample in the lower part");
        assert!(samples.iter().any(|s| *s > Duration::from_secs(103)), "no sample in the upper part");
    }

    #[test]
    fn a_failed_section_schedules_a_retry() {
        let book = CollectorBook::new();
        let mut report = crate::scan::empty_report();
        report.packages = Some(guestward_core::Section::failed(
            guestward_core::Problem::new("io", "cannot read").with_path("/var/lib/dpkg/status"),
            Instant::now(),
        ));
        let ran: BTreeSet<Collector> = [Collector::Packages].into();
        book.record(&report, &ran, Duration::from_secs(20));
        let s = &book.statuses(None)[index(Collector::Packages)];
        assert_eq!(s.state, CollectorState::Failed);
        assert_eq!(s.consecutive_failures, 1);
        assert_eq!(s.last_error.as_deref(), Some("/var/lib/dpkg/status: cannot read"));
        assert!(book.next_retry().is_some());
        assert!(book.due(Instant::now() + Duration::from_secs(3)).contains(&Collector::Packages));
        assert_eq!(book.statuses(None)[index(Collector::Host)].state, CollectorState::Pending);
    }

    #[test]
    fn a_collector_that_keeps_failing_is_left_to_the_full_scans_once_its_backoff_reaches_the_interval() {
        let book = CollectorBook::new();
        let ran: BTreeSet<Collector> = [Collector::Packages].into();
        let interval = Duration::from_secs(900);
        // Backoffs 30, 60, 120, 240, 480 s are retried; the sixth would wait the interval.
        for failures in 1..=5 {
            book.record_crash(&ran, "scan thread died", interval);
            assert!(book.next_retry().is_some(), "no retry after {failures} failure(s)");
        }
        book.record_crash(&ran, "scan thread died", interval);
        assert_eq!(book.next_retry(), None);
        assert_eq!(book.statuses(None)[index(Collector::Packages)].consecutive_failures, 6);
    }

    #[test]
    fn entries_are_in_the_order_of_collector_all() {
        for (i, c) in Collector::ALL.into_iter().enumerate() {
            assert_eq!(index(c), i, "{c}");
        }
    }
}
