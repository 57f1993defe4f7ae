//! The daemon's cycle: scan → change tracking → events → report → spool (→ shipper).
//!
//! The pipeline owns the collectors (long-lived, built once from the validated config), the
//! events observed between reports, the latest full report and the report sequence. The
//! control server only serves what the pipeline produced, and asks it for a cycle when a
//! client wants a fresh scan. With `[transport]` enabled, every full report is written to the
//! spool before its events are marked reported, and the shipper is woken to send it.

use crate::collect::Collectors;
use crate::collect::book::CollectorBook;
use crate::config::Config;
use crate::transport::Transport;
use guestward_core::{Event, Timestamp};
use guestward_history::{Coalescer, EventStore, HistoryError, HistoryStats, Query, StoredEvent};
use guestward_report::Report;
use guestward_report::protocol::Collector;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

/// Most events one report carries; the rest wait for the next report (in order, by id). The
/// latest report stays in memory (`agentctl report`), so this bounds what it holds: storms
/// reach the history as one summary per path, so a report rarely needs more.
pub const MAX_REPORT_EVENTS: usize = 2_000;

/// Events expanded and stored per history transaction when the coalescer releases a storm
/// (2,600 summaries at once in the storm test): bounds the memory of one drain to about
/// 1 MB of `serde_json::Value`s, at a cost of one more commit per 256 events.
const STORE_BATCH_EVENTS: usize = 256;

/// Most events held in memory while the history cannot store them (a full disk, a failing
/// file): as many as one report carries from the history. Past it the oldest go, counted; the
/// failed baseline writes that come with a full disk open FIM coverage gaps, closed only by a
/// rescan that re-reads the trees, which reports again what was lost.
const MAX_HELD_EVENTS: usize = MAX_REPORT_EVENTS;

/// The file in the state directory that holds the last report sequence number.
pub(crate) const SEQUENCE_FILE: &str = "report-sequence";

/// Why a cycle produced no report. The events it would have carried stay unreported in the
/// history, so the next cycle carries them.
#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    /// The scan thread died (a collector panic is contained in its section; this is worse).
    #[error("the scan failed: {0}; the previous report is unchanged and pending events are kept")]
    ScanFailed(String),
}

/// The event history: every event the agent observed (file changes, listener and package
/// changes, lifecycle notices, coverage gaps), kept in `events.db` in the state directory,
/// bounded by age and count (`[history]`), behind a coalescing stage that folds storms into
/// one summary per path so a storm never hides a path and memory stays bounded.
///
/// Apart from the [`Pipeline`] because the file integrity monitor's thread feeds it: that
/// thread must not own the pipeline, which owns the monitor. With that cycle the thread could
/// drop the last reference at shutdown, and the monitor's drop would then join its own thread.
#[derive(Debug)]
pub struct EventLog {
    coalescer: Mutex<Coalescer>,
    store: Mutex<EventStore>,
    lifecycle_state: RwLock<Option<String>>,
    /// Appends that failed (disk full, a damaged file): counted and logged, never silent.
    store_failures: AtomicU64,
    /// Events whose append failed, kept for the reports until the history takes them: a
    /// change observed while the disk is full must still be reported (filling the disk that
    /// holds the state directory is a cheap way to try to blind the agent).
    held: Mutex<Held>,
    /// Set when the coalescer dropped events at its memory cap: a FIM rescan is asked for, and
    /// the overflow gap is closed once a verification finished after this time.
    overflow_since: Mutex<Option<Timestamp>>,
}

impl EventLog {
    /// Opens (or creates, 0600) `events.db` in `state_dir`. A file that is not ours, or
    /// damaged, is an error naming it: the daemon does not start without its history.
    pub fn open(state_dir: &Path, config: &guestward_history::HistoryConfig) -> Result<Self, HistoryError> {
        let store = EventStore::open(&state_dir.join(guestward_history::DB_FILE), config.bounds())?;
        Ok(Self {
            coalescer: Mutex::new(Coalescer::new(config.coalesce_limits())),
            store: Mutex::new(store),
            lifecycle_state: RwLock::new(None),
            store_failures: AtomicU64::new(0),
            held: Mutex::new(Held::default()),
            overflow_since: Mutex::new(None),
        })
    }

    /// Takes an event. Cheap (the FIM thread calls it for every change): it only enters the
    /// coalescer; [`Self::drain`] moves what is ready to the store. A poisoned lock (a panic
    /// elsewhere while holding it) still takes the event: the coalescer holds plain data.
    pub fn push(&self, event: Event) {
        if event.kind == guestward_cloud::TERMINATING {
            *self.lifecycle_state.write().unwrap_or_else(|e| e.into_inner()) =
                Some("terminating".to_string());
        }
        self.coalescer.lock().unwrap_or_else(|e| e.into_inner()).push(event, Instant::now());
    }

    /// Moves the events the coalescer has ready into the store. Returns how many events the
    /// coalescer dropped at its memory cap since the last drain (a coverage gap is stored for
    /// them).
    pub fn drain(&self) -> u64 {
        let ready = self.coalescer.lock().unwrap_or_else(|e| e.into_inner()).drain_ready(Instant::now());
        let dropped = self.store_ready(ready);
        if dropped > 0 {
            let mut since = self.overflow_since.lock().unwrap_or_else(|e| e.into_inner());
            since.get_or_insert_with(Timestamp::now);
        }
        dropped
    }

    /// Everything the coalescer holds, to the store (at shutdown).
    pub fn flush(&self) {
        let ready = self.coalescer.lock().unwrap_or_else(|e| e.into_inner()).flush_ready(Instant::now());
        self.store_ready(ready);
    }

    /// Stores what the coalescer released, [`STORE_BATCH_EVENTS`] events per transaction so
    /// only that many are ever expanded at once; returns the events the coalescer dropped.
    fn store_ready(&self, ready: guestward_history::Ready) -> u64 {
        let mut dropped = 0;
        for batch in ready.into_batches(STORE_BATCH_EVENTS) {
            dropped += batch.dropped;
            let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
            // Held events first, so the history keeps the order they were observed in.
            let outcome = self.store_held(&mut store).and_then(|()| store.append_batch(&batch).map(|_| ()));
            drop(store);
            if outcome.is_err() {
                self.hold(batch.events.iter().cloned());
            }
            self.count_failure(outcome, batch.events.len());
        }
        dropped
    }

    /// Stores events directly (change tracking's, which arrive once per cycle, not in storms).
    /// Returns whether they were stored; if not, they are held for the reports (see
    /// [`Self::held_for_report`]).
    /// Held events are retried here even with nothing new to store (every full cycle calls it).
    pub fn append(&self, events: &[Event]) -> bool {
        if events.is_empty() && self.held.lock().unwrap_or_else(|e| e.into_inner()).events.is_empty() {
            return true;
        }
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = self.store_held(&mut store).and_then(|()| match events {
            [] => Ok(()),
            _ => store.append(events).map(|_| ()),
        });
        drop(store);
        let stored = outcome.is_ok();
        if !stored {
            self.hold(events.iter().cloned());
        }
        self.count_failure(outcome, events.len());
        stored
    }

    /// Keeps events the history refused, oldest dropped past [`MAX_HELD_EVENTS`].
    fn hold(&self, events: impl Iterator<Item = Event>) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for event in events {
            held.next = held.next.saturating_add(1);
            let number = held.next;
            held.events.push_back(HeldEvent { number, event, reported: false });
        }
        let over = held.events.len().saturating_sub(MAX_HELD_EVENTS);
        if over > 0 {
            held.events.drain(..over);
            held.dropped = held.dropped.saturating_add(u64::try_from(over).unwrap_or(u64::MAX));
            tracing::error!(
                dropped = over,
                held = MAX_HELD_EVENTS,
                "the history still cannot store events and holds as many as it may in memory: the oldest were dropped; the next FIM rescan that succeeds reports file changes again"
            );
        }
    }

    /// Moves the held events into the history (the caller holds the store's lock). Those a
    /// report already carried are stored as carried when no other event awaits a report, so
    /// no report carries them twice; otherwise they are stored as new (a repeat, never a
    /// loss). On failure what is left stays held.
    fn store_held(&self, store: &mut EventStore) -> Result<(), HistoryError> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.events.is_empty() {
            return Ok(());
        }
        let carried = held.events.iter().take_while(|e| e.reported).count();
        if carried > 0 {
            let stats = store.stats()?;
            let none_waiting = stats.seen_through_id >= store.last_id()?;
            let events: Vec<Event> = held.events.iter().take(carried).map(|e| e.event.clone()).collect();
            let outcome = store.append(&events)?;
            held.events.drain(..carried);
            if none_waiting && let Some(last) = outcome.last_id {
                store.mark_seen(last)?;
            }
        }
        if !held.events.is_empty() {
            let events: Vec<Event> = held.events.iter().map(|e| e.event.clone()).collect();
            store.append(&events)?;
            held.events.clear();
        }
        tracing::info!("events held in memory while the history could not store them are stored now");
        Ok(())
    }

    /// The held events no report has carried yet, with the number of the last of them (for
    /// [`Self::mark_held_reported`]).
    fn held_for_report(&self) -> (Vec<Event>, Option<u64>) {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let waiting: Vec<&HeldEvent> = held.events.iter().filter(|e| !e.reported).collect();
        (waiting.iter().map(|e| e.event.clone()).collect(), waiting.last().map(|e| e.number))
    }

    /// Marks the held events up to `number` as carried by a report that reached the spool (or
    /// the latest report, without transport): they are not carried again.
    fn mark_held_reported(&self, number: u64) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for e in held.events.iter_mut().take_while(|e| e.number <= number) {
            e.reported = true;
        }
    }

    /// Events held in memory now, and dropped at the bound since start.
    pub fn held_counts(&self) -> (usize, u64) {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        (held.events.len(), held.dropped)
    }

    fn count_failure(&self, outcome: Result<(), HistoryError>, events: usize) {
        if let Err(e) = outcome {
            self.store_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, events, "events could not be stored in the history");
        }
    }

    /// Events matching `query`, oldest first.
    pub fn query(&self, query: &Query) -> Result<Vec<StoredEvent>, HistoryError> {
        self.store.lock().unwrap_or_else(|e| e.into_inner()).query(query)
    }

    /// [`Self::query`] as JSON text (see `EventStore::query_json`), for the control socket.
    pub fn query_json(&self, query: &Query) -> Result<String, HistoryError> {
        self.store.lock().unwrap_or_else(|e| e.into_inner()).query_json(query)
    }

    /// Events no report has carried yet, oldest first, at most `limit`.
    fn unreported(&self, limit: usize) -> Result<Vec<StoredEvent>, HistoryError> {
        let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let after = store.stats()?.seen_through_id;
        store.query(&Query { after_id: Some(after), limit, ..Query::default() })
    }

    /// Marks events up to `id` as carried by a report (persisted: a restart does not repeat
    /// them, and the bounds no longer count them as lost when they are pruned).
    fn mark_reported(&self, id: i64) {
        let outcome = self.store.lock().unwrap_or_else(|e| e.into_inner()).mark_seen(id);
        self.count_failure(outcome, 0);
    }

    /// Closes open overflow gaps once a verification rescan finished after the overflow.
    /// `verified_at` (a copy of the monitor's status) is asked only while an overflow is open:
    /// the drain loop calls this every second.
    fn close_overflow_after(&self, verified_at: impl FnOnce() -> Option<Timestamp>) {
        let mut since = self.overflow_since.lock().unwrap_or_else(|e| e.into_inner());
        let Some(overflow) = *since else { return };
        let Some(verified) = verified_at() else { return };
        if verified < overflow {
            return;
        }
        let closed =
            self.store.lock().unwrap_or_else(|e| e.into_inner()).close_overflow_gaps(Timestamp::now());
        match closed {
            Ok(_) => *since = None,
            Err(e) => self.count_failure(Err(e), 0),
        }
    }

    /// Puts a reloaded `[history]` in force: what the coalescer holds is stored first (under
    /// the old limits), then a coalescer with the new limits takes over and the store prunes
    /// to its new bounds.
    pub fn reconfigure(&self, config: &guestward_history::HistoryConfig) {
        // Swapped first, so the FIM thread's pushes go on into the new coalescer while the old
        // one's events are written (no SQLite write under the coalescer's lock).
        let mut old = std::mem::replace(
            &mut *self.coalescer.lock().unwrap_or_else(|e| e.into_inner()),
            Coalescer::new(config.coalesce_limits()),
        );
        if self.store_ready(old.flush_ready(Instant::now())) > 0 {
            // As in `drain`: the loss opens an overflow the next verification closes.
            self.overflow_since.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(Timestamp::now);
        }
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        store.set_bounds(config.bounds());
        let pruned = store.prune().map(|_| ());
        drop(store);
        self.count_failure(pruned, 0);
    }

    /// The history's counters.
    pub fn stats(&self) -> Result<HistoryStats, HistoryError> {
        self.store.lock().unwrap_or_else(|e| e.into_inner()).stats()
    }

    /// Appends that failed since start.
    pub fn store_failures_total(&self) -> u64 {
        self.store_failures.load(Ordering::Relaxed)
    }

    /// The instance's announced lifecycle state, if any.
    pub fn lifecycle_state(&self) -> Option<String> {
        self.lifecycle_state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Events the history refused, oldest first (see [`EventLog::hold`]).
#[derive(Debug, Default)]
struct Held {
    events: std::collections::VecDeque<HeldEvent>,
    /// The number of the last event held.
    next: u64,
    /// Dropped at [`MAX_HELD_EVENTS`] since start.
    dropped: u64,
}

#[derive(Debug)]
struct HeldEvent {
    number: u64,
    event: Event,
    /// Carried by a report already.
    reported: bool,
}

/// The per-host report sequence, kept in the state directory so it keeps rising across
/// restarts: a receiver tells a lost report (a gap) from a repeated one (a duplicate).
///
/// A number is spent only by a report that reached the spool, and stored before the shipper
/// can see that report ([`guestward_transport::Spool::push_then`]). A kill -9 while a report
/// is built, compressed or written thus leaves no number taken by no report: the collector
/// would count that gap as a lost report (the number was once stored when taken, and 2 kills
/// in 160 left such a gap). A report the spool refuses leaves its number, like its events, to
/// the next report. The spool's entries are counted too when the pipeline gets its spool (a
/// kill between an entry's write and the store, or a failed store), and a higher number found
/// there is stored before the shipper starts: once delivered, the entry no longer says so.
#[derive(Debug)]
struct Sequence {
    path: PathBuf,
    /// The number of the last report that reached the spool.
    last: Mutex<u64>,
}

impl Sequence {
    /// The stored sequence; a missing file starts at 0. An unreadable one also starts at 0,
    /// loudly: the batch ids still tell reports apart.
    fn load(state_dir: &Path) -> Self {
        let path = state_dir.join(SEQUENCE_FILE);
        let last = match guestward_core::read_regular_file_capped(&path, 64, false) {
            // No agent counts past i64::MAX (the collector stores sequences as SQLite integers
            // and refuses larger ones): such a value was written by hand, and is as unusable
            // as one that does not parse.
            Ok(bytes) => match String::from_utf8_lossy(&bytes).trim().parse::<u64>() {
                Ok(v) if i64::try_from(v).is_ok() => v,
                Ok(v) => {
                    tracing::warn!(path = %path.display(), value = v, "report sequence beyond what a collector stores; starting again at 1");
                    0
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "report sequence unreadable; starting again at 1");
                    0
                }
            },
            Err(guestward_core::HostFsError::NotFound { .. }) => 0,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "report sequence unreadable; starting again at 1");
                0
            }
        };
        Self { path, last: Mutex::new(last) }
    }

    fn last(&self) -> std::sync::MutexGuard<'_, u64> {
        self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The number the next report takes, spent by [`Self::spend`] once it is spooled.
    fn upcoming(&self) -> u64 {
        self.last().saturating_add(1)
    }

    /// Spends `number`, storing it. A failed store is logged and the report still goes: the
    /// report matters more than the counter (its batch id stays unique, and the spool's
    /// entries are counted at the next start).
    fn spend(&self, number: u64) {
        let mut last = self.last();
        if number <= *last {
            return;
        }
        *last = number;
        if let Err(e) =
            guestward_core::state_file::write_atomic(&self.path, 64, |out| writeln!(out, "{number}"))
        {
            tracing::warn!(error = %e, "report sequence not stored; a restart may repeat it");
        }
    }
}

/// The cycle's owner. See the module documentation.
#[derive(Debug)]
pub struct Pipeline {
    /// The configuration it runs with and every collector built from it (again, per changed
    /// section, on a reload), replaced together by [`Self::reconfigure`]: one lock, so a cycle
    /// never sees the new collectors with the old configuration. A cycle takes its own
    /// references at its start and keeps them to its end, so no lock is held across a scan and
    /// a reload never changes a scan halfway.
    in_force: RwLock<(Arc<Config>, Arc<Collectors>)>,
    /// Each collector's last run and retry backoff.
    book: CollectorBook,
    /// The event history.
    pub events: Arc<EventLog>,
    latest: RwLock<Option<Arc<Report>>>,
    sequence: Sequence,
    /// Cycles run one at a time, whether scheduled or requested.
    gate: tokio::sync::Mutex<()>,
    scan_runs: AtomicU64,
    scan_degraded_runs: AtomicU64,
    scan_failures: AtomicU64,
    /// The spool and shipper, when `[transport]` is enabled.
    transport: Option<Arc<Transport>>,
    /// The daemon's self-limits (`[limits]`); `None` outside the daemon.
    self_limits: Option<Arc<crate::selflimit::SelfLimiter>>,
    /// Whether a report held in memory by the spool marks its events reported (see
    /// [`Self::cycle_spooled`]).
    held_reports_count_as_spooled: bool,
}

/// The events a full report carries, to mark once it reached the spool.
#[derive(Debug, Default, Clone, Copy)]
struct Carried {
    /// The id of the last history event it carries.
    history_through: Option<i64>,
    /// The number of the last held event it carries (see [`EventLog::held_for_report`]).
    held_through: Option<u64>,
}

/// What a cycle produced.
#[derive(Debug)]
pub struct Cycle {
    /// The report.
    pub report: Arc<Report>,
    /// What became of it on its way to the collector.
    pub spooled: Spooled,
}

/// Whether a cycle's report reached the spool.
#[derive(Debug)]
pub enum Spooled {
    /// Not a full report, or `[transport]` is not enabled: nothing was spooled.
    No,
    /// On disk; the spool dropped these to make room (each also became a
    /// `transport.spool_dropped` event in the history).
    Yes(Vec<guestward_transport::DropRecord>),
    /// The spool refused it (the reason); its events stay unreported for the next report.
    Failed(String),
    /// The disk refused its entry (`why`): the spool holds it in memory until it is delivered
    /// or written, and a crash before either loses it. `dropped` as for [`Self::Yes`].
    Held {
        /// The disk's refusal.
        why: String,
        /// What the bounds made the spool drop.
        dropped: Vec<guestward_transport::DropRecord>,
    },
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
    /// Event history appends that failed.
    pub events_store_failures_total: u64,
    /// Events held in memory because the history could not store them.
    pub events_held_in_memory: u64,
    /// Held events dropped at the memory bound since start.
    pub events_held_dropped_total: u64,
    /// Full reports the spool refused.
    pub spool_push_failures_total: u64,
}

impl Pipeline {
    /// A pipeline over `collectors`, feeding on `events`.
    pub fn new(config: Arc<Config>, collectors: Collectors, events: Arc<EventLog>) -> Self {
        let sequence = Sequence::load(config.agent.state_dir.as_path());
        Self {
            in_force: RwLock::new((config, Arc::new(collectors))),
            book: CollectorBook::new(),
            events,
            latest: RwLock::new(None),
            sequence,
            gate: tokio::sync::Mutex::new(()),
            scan_runs: AtomicU64::new(0),
            scan_degraded_runs: AtomicU64::new(0),
            scan_failures: AtomicU64::new(0),
            transport: None,
            self_limits: None,
            held_reports_count_as_spooled: true,
        }
    }

    /// The same pipeline, for a process that ends after one delivery attempt (`run --once`):
    /// a report the spool could only hold in memory leaves its events unreported, for the
    /// next run to carry, since its memory goes with the process.
    pub fn ending_after_delivery(mut self) -> Self {
        self.held_reports_count_as_spooled = false;
        self
    }

    /// The same pipeline, its full reports saying how the agent stands against its own budgets
    /// (`Report::self_limits`), and its scheduled scans postponed while it throttles itself.
    pub fn with_self_limits(mut self, limiter: Arc<crate::selflimit::SelfLimiter>) -> Self {
        self.self_limits = Some(limiter);
        self
    }

    /// The daemon's self-limits, when it measures itself.
    pub fn self_limits(&self) -> Option<&Arc<crate::selflimit::SelfLimiter>> {
        self.self_limits.as_ref()
    }

    /// The same pipeline, delivering its full reports through `transport` (the spool and the
    /// shipper; `None`: reports stay on the host).
    pub fn with_transport(mut self, transport: Option<Arc<Transport>>) -> Self {
        // Before the shipper starts (it may deliver, and so delete, the entry that holds it).
        if let Some(highest) = transport.as_ref().and_then(|t| t.spool.highest_sequence()) {
            self.sequence.spend(highest);
        }
        self.transport = transport;
        self
    }

    /// The spool and shipper, when `[transport]` is enabled.
    pub fn transport(&self) -> Option<&Arc<Transport>> {
        self.transport.as_ref()
    }

    /// The configuration in force (a reload may replace it; the reference stays valid).
    pub fn config(&self) -> Arc<Config> {
        self.in_force().0
    }

    /// The collectors in force (a reload may replace them; the reference stays valid).
    pub fn collectors(&self) -> Arc<Collectors> {
        self.in_force().1
    }

    /// The configuration and collectors in force, as one consistent pair.
    fn in_force(&self) -> (Arc<Config>, Arc<Collectors>) {
        self.in_force.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Puts a reloaded configuration and its collectors in force. A cycle running now
    /// finishes with the ones it started with; the next one uses these.
    pub fn reconfigure(&self, config: Arc<Config>, collectors: Collectors) {
        *self.in_force.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
            (config, Arc::new(collectors));
    }

    /// Each collector's last run, result and retry.
    pub fn book(&self) -> &CollectorBook {
        &self.book
    }

    /// One cycle of the given collectors.
    ///
    /// A full cycle (every collector) also tracks changes against the stored inventories,
    /// stores the changes in the history, carries the events no report has carried yet, takes
    /// the next sequence number, and becomes the latest report. A partial one (`agentctl
    /// ports`) only scans: it must not move the stored inventories forward (the next delta
    /// would skip changes), and leaves the events for the next full report. A cycle that fails
    /// marks nothing as reported, so its events go with the next one.
    pub async fn cycle(self: &Arc<Self>, only: BTreeSet<Collector>) -> Result<Arc<Report>, CycleError> {
        self.cycle_spooled(only).await.map(|c| c.report)
    }

    /// [`Self::cycle`], also saying whether the report reached the spool (`run --once` stops
    /// on a report it could not spool).
    ///
    /// With `[transport]` enabled, a full report is written to the spool (fsync'd) *before*
    /// its events are marked reported: a crash between the two repeats events (the collector
    /// keeps both reports, each with its own batch id), never loses them; a spool that refuses
    /// the report leaves them unreported, so the next report carries them.
    pub async fn cycle_spooled(self: &Arc<Self>, only: BTreeSet<Collector>) -> Result<Cycle, CycleError> {
        let _gate = self.gate.lock().await;
        let full = only == Collector::all();
        let this = Arc::clone(self);
        let (config, collectors) = self.in_force();
        let interval = std::time::Duration::from_secs(config.agent.scan_interval_secs);
        let ran = only.clone();
        let built =
            tokio::task::spawn_blocking(move || this.assemble(&config, &collectors, &only, full)).await;
        let (report, carried) = match built {
            Ok((report, carried)) => (Arc::new(report), carried),
            Err(e) => {
                self.scan_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "scan failed");
                self.book.record_crash(&ran, &format!("the scan failed: {e}"), interval);
                return Err(CycleError::ScanFailed(e.to_string()));
            }
        };
        self.book.record(&report, &ran, interval);
        self.scan_runs.fetch_add(1, Ordering::Relaxed);
        if report.any_degraded() {
            self.scan_degraded_runs.fetch_add(1, Ordering::Relaxed);
        }
        let mut spooled = Spooled::No;
        if full {
            *self.latest.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&report));
            spooled = self.spool(&report).await;
            if matches!(spooled, Spooled::No)
                && let Some(number) = report.sequence
            {
                // No spool: the report is the latest one, and that spends its number.
                self.sequence.spend(number);
            }
            // A report the spool holds in memory (the disk refused it) counts as spooled for a
            // process that stays to deliver it; `run --once` ends after one delivery attempt.
            let taken = match &spooled {
                Spooled::Failed(_) => false,
                Spooled::Held { .. } => self.held_reports_count_as_spooled,
                Spooled::No | Spooled::Yes(_) => true,
            };
            if taken {
                if let Some(id) = carried.history_through {
                    self.events.mark_reported(id);
                }
                if let Some(number) = carried.held_through {
                    self.events.mark_held_reported(number);
                }
            }
            if let Spooled::Yes(dropped) | Spooled::Held { dropped, .. } = &spooled
                && !dropped.is_empty()
            {
                // After the mark: these events are newer than any the report carries, so the
                // next report carries them, and the collector learns what the bound cost.
                let now = Timestamp::now();
                let events: Vec<Event> = dropped.iter().map(|d| d.to_event(now)).collect();
                self.events.append(&events);
            }
        }
        Ok(Cycle { report, spooled })
    }

    /// Writes a full report to the spool (on a blocking thread: it fsyncs), spending its
    /// sequence number, and wakes the shipper. Failures are counted and logged by
    /// [`Transport::push`].
    async fn spool(self: &Arc<Self>, report: &Arc<Report>) -> Spooled {
        let Some(transport) = &self.transport else { return Spooled::No };
        let transport = Arc::clone(transport);
        let report = Arc::clone(report);
        let this = Arc::clone(self);
        let pushed = tokio::task::spawn_blocking(move || {
            transport.push(&report, || {
                if let Some(number) = report.sequence {
                    this.sequence.spend(number);
                }
            })
        });
        match pushed.await {
            Ok(Ok(outcome)) => match outcome.held_in_memory {
                Some(why) => Spooled::Held { why, dropped: outcome.dropped },
                None => Spooled::Yes(outcome.dropped),
            },
            Ok(Err(e)) => Spooled::Failed(e.to_string()),
            Err(e) => {
                // The push panicked: nothing says the report is on disk.
                if let Some(t) = &self.transport {
                    t.count_push_failure();
                }
                tracing::error!(error = %e, "spooling the report failed");
                Spooled::Failed(format!("spooling the report failed: {e}"))
            }
        }
    }

    /// Scan, then (full cycles) change tracking, events and the sequence number. Returns the
    /// report and the id of the last history event it carries.
    fn assemble(
        &self,
        config: &Config,
        collectors: &Collectors,
        only: &BTreeSet<Collector>,
        full: bool,
    ) -> (Report, Carried) {
        let mut report = crate::scan::run(config, collectors, only);
        if !full {
            return (report, Carried::default());
        }
        let state_dir = config.agent.state_dir.as_path();
        let collected = std::mem::take(&mut report.events);
        crate::collect::packages::track_changes(
            state_dir,
            config.packages.full_snapshot_interval_secs,
            &mut report,
        );
        crate::collect::network::track_changes(state_dir, &mut report);
        // Everything observed goes through the history: the report carries what it holds.
        let mut observed = collected;
        observed.append(&mut report.events);
        self.events.drain();
        let observed_stored = self.events.append(&observed);
        self.events.close_overflow_after(|| self.fim_verified_at());
        let mut carried = Carried::default();
        match self.events.unreported(MAX_REPORT_EVENTS) {
            Ok(stored) => {
                carried.history_through = stored.last().map(|e| e.id);
                report.events = stored.into_iter().map(|e| e.event).collect();
            }
            Err(e) => {
                // The history is unreadable: carry this cycle's own observations at least
                // (when they were not stored they are among the held events, below).
                tracing::error!(error = %e, "unreported events could not be read from the history");
                if observed_stored {
                    report.events = observed;
                }
            }
        }
        // And what the history could not take: held in memory until it can.
        let (held, held_through) = self.events.held_for_report();
        report.events.extend(held);
        carried.held_through = held_through;
        if let Some(transport) = &self.transport {
            // GW-TLS-001: a client certificate about to expire (or expired) stops delivery;
            // GW-TLS-002: one that names another host than this report's does too. The report
            // says so, in case it still gets through (a collector of another rule, a log).
            report.findings.extend(transport.shipper.certificate_findings(report.agent.host_id.as_deref()));
            report.sort_findings();
        }
        report.self_limits = self.self_limits.as_ref().map(|l| l.status());
        report.sequence = Some(self.sequence.upcoming());
        report.events.sort_by_key(|e| e.time);
        // The room the databases need to open again (after a restart) is taken back once the
        // disk has it: it was freed when the disk was full.
        crate::daemon::keep_reserve(state_dir);
        (report, carried)
    }

    /// When the FIM monitor last finished a verification (or baseline) scan.
    fn fim_verified_at(&self) -> Option<Timestamp> {
        let status = self.collectors().fim.monitor()?.status();
        status
            .last_verification
            .filter(|v| v.outcome == guestward_fim::ScanOutcome::Completed)
            .map(|v| v.finished)
    }

    /// Runs until the process stops: moves ready events into the history every second, and
    /// when the coalescer had to drop events (its memory cap), asks the FIM monitor for a
    /// verification rescan, which closes the gap once it finishes.
    pub async fn drain_events(self: Arc<Self>) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let this = Arc::clone(&self);
            let dropped = tokio::task::spawn_blocking(move || {
                let dropped = this.events.drain();
                this.events.close_overflow_after(|| this.fim_verified_at());
                dropped
            })
            .await
            .unwrap_or(0);
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    "event storm beyond the coalescing memory cap: a coverage gap was recorded and a verification rescan requested"
                );
                if let Some(monitor) = self.collectors().fim.monitor() {
                    monitor.request_rescan(None);
                }
            }
        }
    }

    /// The latest full report.
    pub fn latest(&self) -> Option<Arc<Report>> {
        self.latest.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The counters.
    pub fn counters(&self) -> PipelineCounters {
        let (held, held_dropped) = self.events.held_counts();
        PipelineCounters {
            scan_runs_total: self.scan_runs.load(Ordering::Relaxed),
            scan_degraded_runs_total: self.scan_degraded_runs.load(Ordering::Relaxed),
            scan_failures_total: self.scan_failures.load(Ordering::Relaxed),
            events_store_failures_total: self.events.store_failures_total(),
            events_held_in_memory: u64::try_from(held).unwrap_or(u64::MAX),
            events_held_dropped_total: held_dropped,
            spool_push_failures_total: self.transport.as_ref().map_or(0, |t| t.push_failures_total()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use guestward_transport::{Shipper, Spool};

    /// A pipeline over an empty host root (scans take milliseconds), FIM and IMDS off, with
    /// `[transport]` on the test PKI of `tests/fixtures/tls` and a spool bounded at `max_bytes`.
    fn pipeline(dir: &Path, max_bytes: u64) -> Arc<Pipeline> {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tls");
        let key = dir.join("agent-key.pem");
        if !key.exists() {
            std::fs::copy(fixtures.join("agent-key.pem"), &key).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let state = dir.join("state");
        crate::daemon::prepare_state_dir(&state).unwrap();
        let text = format!(
            "[agent]\nstate_dir = \"{}\"\nhost_id = \"test-host\"\n[fim]\nenabled = false\n[imds]\nenabled = false\n\
             [transport]\nenabled = true\nurl = \"https://127.0.0.1:1\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            state.display(),
            fixtures.join("ca.pem").display(),
            fixtures.join("agent.pem").display(),
            key.display()
        );
        let config = Arc::new(Config::parse(&text, Path::new("agent.toml")).unwrap());
        let root = dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        let root = guestward_core::HostRoot::new(&root).unwrap();
        let runtime = crate::collect::cloud::ImdsRuntime::Shared(tokio::runtime::Handle::current());
        let collectors = Collectors::new(
            &config,
            root.clone(),
            crate::collect::cloud::CloudCollector::new(&config.imds, root, runtime),
            crate::collect::fim::FimCollector::Off("off in this test"),
        );
        let events = Arc::new(EventLog::open(&state, &config.history).unwrap());
        let spool =
            Arc::new(Spool::open(&crate::transport::Transport::spool_dir(&state), max_bytes).unwrap());
        let shipper = Arc::new(Shipper::new(&config.transport, Arc::clone(&spool)).unwrap());
        let transport = Arc::new(Transport::from_parts(spool, shipper));
        Arc::new(Pipeline::new(config, collectors, events).with_transport(Some(transport)))
    }

    /// The stored sequence goes on rising across restarts; one no collector can store (written
    /// by hand: past i64::MAX) or that does not parse starts again at 1, instead of every
    /// report after it reusing u64::MAX.
    #[test]
    fn the_sequence_resumes_and_an_impossible_stored_one_starts_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(SEQUENCE_FILE);
        for (stored, next) in
            [("41\n", 42), ("18446744073709551615\n", 1), ("9223372036854775808", 1), ("x", 1)]
        {
            std::fs::write(&file, stored).unwrap();
            assert_eq!(Sequence::load(dir.path()).upcoming(), next, "after {stored:?}");
        }
    }

    /// A reloaded `[history]` keeps what the coalescer held and prunes to the new bounds.
    #[test]
    fn history_reconfigure_keeps_held_events_and_applies_the_new_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path(), &guestward_history::HistoryConfig::default()).unwrap();
        let event = |i: u32| Event {
            time: Timestamp::now(),
            kind: "test.event".into(),
            data: serde_json::json!({ "path": format!("/f{i}") }),
        };
        let batch: Vec<Event> = (0..300).map(event).collect();
        log.append(&batch);
        log.push(event(1000));
        assert_eq!(log.stats().unwrap().stored, 300);
        let smaller = guestward_history::HistoryConfig { max_events: 100, ..Default::default() };
        log.reconfigure(&smaller);
        let stats = log.stats().unwrap();
        assert!(stats.stored <= 100, "{stats:?}");
        let newest = log.query(&Query { limit: 1000, ..Query::default() }).unwrap();
        assert!(newest.iter().any(|e| e.event.data["path"] == "/f1000"), "the held event was lost");
        assert_eq!(log.store_failures_total(), 0);
    }

    /// A number is spent only by a report that reached the spool. A process killed while its
    /// report was built (here: assembled, never spooled) leaves no gap: the next process's
    /// report takes the same number. A spool entry whose number was not stored (the store
    /// failed) is counted, and stored, when the pipeline gets its spool: a process that then
    /// delivers it and dies leaves no number to be taken again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_report_killed_before_the_spool_leaves_no_sequence_gap() {
        let dir = tempfile::tempdir().unwrap();
        let first = pipeline(dir.path(), 1 << 30);
        let spooled = first.cycle_spooled(Collector::all()).await.unwrap();
        assert!(matches!(spooled.spooled, Spooled::Yes(_)), "{:?}", spooled.spooled);
        assert_eq!(spooled.report.sequence, Some(1));
        let (config, collectors) = first.in_force();
        let (abandoned, _) = first.assemble(&config, &collectors, &Collector::all(), true);
        assert_eq!(abandoned.sequence, Some(2));
        drop(first);

        let second = pipeline(dir.path(), 1 << 30);
        let next = second.cycle_spooled(Collector::all()).await.unwrap();
        assert!(matches!(next.spooled, Spooled::Yes(_)), "{:?}", next.spooled);
        assert_eq!(next.report.sequence, Some(2), "the abandoned report's number was skipped");
        drop(second);

        // Report 2 is spooled; its stored number is lost (as when the store failed). A process
        // that delivers the report and is killed before a report of its own must not leave
        // number 2 to the next one.
        std::fs::write(dir.path().join("state").join(SEQUENCE_FILE), "1\n").unwrap();
        let delivering = pipeline(dir.path(), 1 << 30);
        let spool = &delivering.transport().unwrap().spool;
        let ids: Vec<String> = spool.pending(u64::MAX).unwrap().into_iter().map(|b| b.batch_id).collect();
        assert_eq!(ids.len(), 2, "{ids:?}");
        spool.acknowledge(&ids).unwrap();
        drop(delivering);
        let third = pipeline(dir.path(), 1 << 30);
        let next = third.cycle_spooled(Collector::all()).await.unwrap();
        assert_eq!(next.report.sequence, Some(3), "a spooled report's number was repeated");
        let stored = std::fs::read_to_string(dir.path().join("state").join(SEQUENCE_FILE)).unwrap();
        assert_eq!(stored.trim(), "3");
    }

    /// A full report is on disk before its events count as reported, and what the spool's bound
    /// drops becomes a `transport.spool_dropped` event that the next report carries.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spool_drops_become_events_carried_by_the_next_report() {
        let dir = tempfile::tempdir().unwrap();
        let first = pipeline(dir.path(), 1 << 30);
        let cycle = first.cycle_spooled(Collector::all()).await.unwrap();
        assert!(matches!(&cycle.spooled, Spooled::Yes(d) if d.is_empty()), "{:?}", cycle.spooled);
        let one_report = first.transport().unwrap().spool.stats();
        assert_eq!(one_report.reports, 1, "{one_report:?}");
        drop(first);

        // The same state dir with room for about one and a half reports: the next push must
        // make room by dropping from the first (undelivered) report.
        let bound = one_report.bytes + one_report.bytes / 2;
        let second = pipeline(dir.path(), bound);
        let cycle = second.cycle_spooled(Collector::all()).await.unwrap();
        let Spooled::Yes(dropped) = &cycle.spooled else { panic!("not spooled: {:?}", cycle.spooled) };
        assert!(!dropped.is_empty(), "a spool over its bound dropped nothing");
        let stored = second
            .events
            .query(&Query {
                kind: Some(guestward_history::KindPattern::parse("transport.spool_dropped").unwrap()),
                limit: 100,
                ..Query::default()
            })
            .unwrap();
        assert_eq!(stored.len(), dropped.len(), "{stored:?}");
        assert_eq!(stored[0].event.data["batch_id"], dropped[0].batch_id);

        let next = second.cycle_spooled(Collector::all()).await.unwrap();
        let carried: Vec<_> =
            next.report.events.iter().filter(|e| e.kind == "transport.spool_dropped").collect();
        assert!(!carried.is_empty(), "the next report does not carry the drop: {:?}", next.report.events);
    }
}
