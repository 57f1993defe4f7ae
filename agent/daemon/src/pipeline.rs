//! The daemon's cycle: scan → change tracking → events → report (→ spool, next).
//!
//! The pipeline owns the collectors (long-lived, built once from the validated config), the
//! events observed between reports, the latest full report and the report sequence. The
//! control server only serves what the pipeline produced, and asks it for a cycle when a
//! client wants a fresh scan.

use crate::collect::Collectors;
use crate::config::Config;
use guestward_core::Event;
use guestward_report::Report;
use guestward_report::protocol::Collector;
use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Events kept between two full reports before the oldest are dropped (and counted).
pub const MAX_PENDING_EVENTS: usize = 10_000;

/// The file in the state directory that holds the last report sequence number.
const SEQUENCE_FILE: &str = "report-sequence";

/// Why a cycle produced no report. The events it had taken are back in the queue, so the next
/// cycle carries them.
#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    /// The scan thread died (a collector panic is contained in its section; this is worse).
    #[error("the scan failed: {0}; the previous report is unchanged and pending events are kept")]
    ScanFailed(String),
}

/// Events observed between reports (file changes, lifecycle notices), carried by the next
/// full report, and the instance's lifecycle as instance metadata last announced it.
///
/// Apart from the [`Pipeline`] because the file integrity monitor's thread feeds it: that
/// thread must not own the pipeline, which owns the monitor. With that cycle the thread could
/// drop the last reference at shutdown, and the monitor's drop would then join its own thread.
#[derive(Debug, Default)]
pub struct EventQueue {
    /// Bounded: see [`MAX_PENDING_EVENTS`].
    pending: Mutex<VecDeque<Event>>,
    lifecycle_state: RwLock<Option<String>>,
    dropped: AtomicU64,
}

impl EventQueue {
    /// Queues an event for the next full report. When the queue is full the oldest event is
    /// dropped and counted (`events_dropped_total` in `agentctl status`): memory stays bounded
    /// however noisy the host, and the loss is visible rather than silent. A poisoned lock
    /// (a panic elsewhere while holding it) still takes the event: the queue holds plain data.
    pub fn push(&self, event: Event) {
        if event.kind == guestward_cloud::TERMINATING {
            let mut state = self.lifecycle_state.write().unwrap_or_else(|e| e.into_inner());
            *state = Some("terminating".to_string());
        }
        let mut queue = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if queue.len() >= MAX_PENDING_EVENTS {
            queue.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        queue.push_back(event);
    }

    /// Takes every pending event, oldest first.
    fn take(&self) -> Vec<Event> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect()
    }

    /// Puts events taken by a cycle that failed back in front of the queue (within the bound).
    fn put_back(&self, events: Vec<Event>) {
        let mut queue = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for event in events.into_iter().rev() {
            if queue.len() >= MAX_PENDING_EVENTS {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            queue.push_front(event);
        }
    }

    /// The instance's announced lifecycle state, if any.
    pub fn lifecycle_state(&self) -> Option<String> {
        self.lifecycle_state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Events dropped since start.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The per-host report sequence, kept in the state directory so it keeps rising across
/// restarts: a receiver tells a lost report (a gap) from a repeated one (a duplicate).
#[derive(Debug)]
struct Sequence {
    path: PathBuf,
    last: Mutex<u64>,
}

impl Sequence {
    /// The stored sequence; a missing file starts at 0. An unreadable one also starts at 0,
    /// loudly: the batch ids still tell reports apart.
    fn load(state_dir: &Path) -> Self {
        let path = state_dir.join(SEQUENCE_FILE);
        let last = match guestward_core::read_regular_file_capped(&path, 64, false) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).trim().parse::<u64>().unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "report sequence unreadable; starting again at 1");
                0
            }),
            Err(guestward_core::HostFsError::NotFound { .. }) => 0,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "report sequence unreadable; starting again at 1");
                0
            }
        };
        Self { path, last: Mutex::new(last) }
    }

    /// The next number, stored before it is used. A failed store is logged and the number is
    /// still used: the report matters more than the counter (the batch id stays unique).
    fn next(&self) -> u64 {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        *last = last.saturating_add(1);
        let value = *last;
        if let Err(e) =
            guestward_core::state_file::write_atomic(&self.path, 64, |out| writeln!(out, "{value}"))
        {
            tracing::warn!(error = %e, "report sequence not stored; a restart may repeat it");
        }
        value
    }
}

/// The cycle's owner. See the module documentation.
#[derive(Debug)]
pub struct Pipeline {
    /// The configuration it runs with.
    pub config: Arc<Config>,
    /// Every collector, built once.
    pub collectors: Collectors,
    /// Events observed between reports.
    pub events: Arc<EventQueue>,
    latest: RwLock<Option<Arc<Report>>>,
    sequence: Sequence,
    /// Cycles run one at a time, whether scheduled or requested.
    gate: tokio::sync::Mutex<()>,
    scan_runs: AtomicU64,
    scan_degraded_runs: AtomicU64,
    scan_failures: AtomicU64,
}

/// The pipeline's counters, for `agentctl status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelineCounters {
    /// Scans completed.
    pub scan_runs_total: u64,
    /// Scans in which a section degraded or failed.
    pub scan_degraded_runs_total: u64,
    /// Scans that produced no report at all.
    pub scan_failures_total: u64,
    /// Events dropped from the pending queue.
    pub events_dropped_total: u64,
}

impl Pipeline {
    /// A pipeline over `collectors`, feeding on `events`.
    pub fn new(config: Arc<Config>, collectors: Collectors, events: Arc<EventQueue>) -> Self {
        let sequence = Sequence::load(config.agent.state_dir.as_path());
        Self {
            config,
            collectors,
            events,
            latest: RwLock::new(None),
            sequence,
            gate: tokio::sync::Mutex::new(()),
            scan_runs: AtomicU64::new(0),
            scan_degraded_runs: AtomicU64::new(0),
            scan_failures: AtomicU64::new(0),
        }
    }

    /// One cycle of the given collectors.
    ///
    /// A full cycle (every collector) also tracks changes against the stored inventories,
    /// carries the events observed since the previous full report, takes the next sequence
    /// number, and becomes the latest report. A partial one (`agentctl ports`) only scans:
    /// it must not move the stored inventories forward (the next delta would skip changes),
    /// and leaves the pending events for the next full report.
    pub async fn cycle(self: &Arc<Self>, only: BTreeSet<Collector>) -> Result<Arc<Report>, CycleError> {
        let _gate = self.gate.lock().await;
        let full = only == Collector::all();
        let pending = if full { self.events.take() } else { Vec::new() };
        let kept = pending.clone();
        let this = Arc::clone(self);
        let built = tokio::task::spawn_blocking(move || this.assemble(&only, full, pending)).await;
        let report = match built {
            Ok(report) => Arc::new(report),
            Err(e) => {
                self.scan_failures.fetch_add(1, Ordering::Relaxed);
                self.events.put_back(kept);
                tracing::error!(error = %e, "scan failed");
                return Err(CycleError::ScanFailed(e.to_string()));
            }
        };
        self.scan_runs.fetch_add(1, Ordering::Relaxed);
        if report.any_degraded() {
            self.scan_degraded_runs.fetch_add(1, Ordering::Relaxed);
        }
        if full {
            *self.latest.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&report));
        }
        Ok(report)
    }

    /// Scan, then (full cycles) change tracking, events and the sequence number.
    fn assemble(&self, only: &BTreeSet<Collector>, full: bool, pending: Vec<Event>) -> Report {
        let mut report = crate::scan::run(&self.config, &self.collectors, only);
        report.events.extend(pending);
        if full {
            let state_dir = self.config.agent.state_dir.as_path();
            crate::collect::packages::track_changes(
                state_dir,
                self.config.packages.full_snapshot_interval_secs,
                &mut report,
            );
            crate::collect::network::track_changes(state_dir, &mut report);
            report.sequence = Some(self.sequence.next());
        }
        report.events.sort_by_key(|e| e.time);
        report
    }

    /// The latest full report.
    pub fn latest(&self) -> Option<Arc<Report>> {
        self.latest.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The counters.
    pub fn counters(&self) -> PipelineCounters {
        PipelineCounters {
            scan_runs_total: self.scan_runs.load(Ordering::Relaxed),
            scan_degraded_runs_total: self.scan_degraded_runs.load(Ordering::Relaxed),
            scan_failures_total: self.scan_failures.load(Ordering::Relaxed),
            events_dropped_total: self.events.dropped_total(),
        }
    }
}
