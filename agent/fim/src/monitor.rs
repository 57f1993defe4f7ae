//! Realtime monitoring: inotify (through `notify`), per-path debouncing, the watch budget, and
//! verification rescans so that nothing is missed silently.
//!
//! One engine thread owns the baseline connection and the watcher. The `notify` reader thread
//! only forwards events into a bounded queue; when that queue is full the event is dropped and
//! a flag is raised, which the engine handles exactly like a kernel `IN_Q_OVERFLOW`: a
//! `coverage.gap` event opens, the watched trees are rescanned at once, and the gap closes
//! when the rescan has compared every file. Idle cost is zero: the thread sleeps in
//! `recv_timeout` until an event, a debounce deadline or the next scheduled rescan.
//!
//! Watches are placed per directory by us (never `RecursiveMode::Recursive`, which would walk
//! into excluded subtrees and follow the kernel limit blindly): before placing any, the
//! directories each tree needs are counted against `fs.inotify.max_user_watches` minus a
//! reserve, and trees that do not fit are put on periodic rescans and reported.
//!
//! Files that live shorter than the debounce (dropped, run and deleted within milliseconds)
//! are still reported: events are coalesced per path, and a path that appeared and is gone
//! again when its window ends is reported as `added` then `removed`, marked
//! [`Transient`], with the attributes captured while it existed (its
//! stat at creation, and for small files the hash at its first close after writing). A
//! directory created and removed within the window is reported the same way; files created
//! inside it before its watch could be placed are not seen by inotify at all.

use crate::config::{Attribute, AttributeSet, Config, Rule};
use crate::dirfd;
use crate::engine::{Fim, FimError, Purpose, ScanSummary, Scope};
use crate::events::{
    Attributes, ChangeKind, CoverageGap, DIRECTORY_TIMESTAMPS, FimChange, FoldedParent, GapCause, Mechanism,
    Transient, escape_path,
};
pub use crate::model::{FimStatus, MonitorState, ScanOutcome, TreeMode, TreeStatus, Verification};
use crate::record::{FileKind, FileRecord, ReadOptions, read_record_at};
use crate::scan::{Rehash, ScanError, ScanOptions, ScanProgress, Target, real_path};
use crate::store::{Store, StoreError};
use guestward_core::{Event, Timestamp};
use nix::sys::stat::FileStat;
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where the kernel publishes the per-user watch limit.
const MAX_USER_WATCHES: &str = "/proc/sys/fs/inotify/max_user_watches";
/// Paths waiting for their debounce deadline; beyond this the engine stops tracking single
/// paths and rescans instead (bounded memory under an event storm). Each costs its slot in the
/// map (a power-of-two table kept at most 7/8 full, so up to two slots of about 170 bytes per
/// path) and its path: at 100,000 they could take 27 MB (19 MB of table), 40% of the 64 MiB
/// budget, and a storm of new files (which anyone who can write to a watched directory can
/// make) filled it. At 8,192 it is under 3 MiB; a burst larger than that within one debounce
/// window is covered by a coverage gap and a rescan, as any overflow.
const MAX_PENDING: usize = 8_192;
/// Most bytes of paths pending at once: 128 a path at `MAX_PENDING`. Paths are up to 4,096
/// bytes: at that length 8,192 of them held 32 MiB, and anyone who can write to a watched tree
/// chooses the length.
const MAX_PENDING_PATH_BYTES: usize = 1 << 20;
/// The queue's memory bound, per event of `event_queue_capacity` (12 MiB at the default
/// 65,536): an event of a path of up to about 60 bytes costs less ([`queued_cost`]), so a storm
/// of those is bounded by the count as before. Counted in events only, a storm of files at the
/// end of 3,000-byte paths queued 200 MiB, past the unit's `MemoryMax=`: the agent would be
/// killed, again at each restart, by any user who can write to a watched tree.
const QUEUED_BYTES_PER_EVENT: usize = 192;
/// What glibc's malloc adds to a small allocation, as [`queued_cost`] counts it.
const ALLOCATION_BYTES: usize = 16;
/// Page cache of the monitor's own connection, KiB (SQLite's default is 2,000). It serves one
/// changed file at a time (a baseline lookup, a row and an event written) and lives as long as
/// the daemon: the default's pages, filled by a storm's event log, stayed in its memory.
const MONITOR_CACHE_KIB: u32 = 512;
/// Changes a scan stores in the event log per commit (see `Store::append_events`).
const STORED_EVENTS_PER_COMMIT: usize = 512;
/// Room for pending paths the map keeps once a burst is over (see [`release_room`]).
const PENDING_KEPT: usize = 256;
/// Pending paths holding a record captured while they existed (for files that may be gone
/// before they are examined); beyond this new paths are still reported, without attributes.
const MAX_SNAPSHOTS: usize = 4_096;
/// Largest new file hashed when it is closed after writing (rather than only after the
/// debounce), so that a file deleted soon after is reported with its hash. Larger ones are
/// captured by their attributes only: hashing them twice would cost too much.
const SNAPSHOT_HASH_MAX_BYTES: u64 = 1 << 20;
/// First retry of a failed baseline write/read or scan (a verification rescan of the trees
/// concerned); doubled after each failed retry up to [`STORE_RETRY_MAX`].
const STORE_RETRY: Duration = Duration::from_secs(30);
/// Longest wait between retries of a failed store write or scan.
const STORE_RETRY_MAX: Duration = Duration::from_secs(600);
/// Open store/scan gaps on single paths beyond which a new failure opens one gap on its
/// whole tree instead (a full disk during a storm fails thousands of writes).
const MAX_PATH_GAPS: usize = 16;
/// A repeated error (store, watcher) is logged at most this often; every one is counted.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Receives every event the monitor emits (already stored in the event log).
pub type EventSink = Box<dyn FnMut(&Event) + Send>;

enum Msg {
    Fs(notify::Result<notify::Event>),
    Rescan(Option<Vec<PathBuf>>),
    Stop,
}

struct Shared {
    status: Mutex<FimStatus>,
    cancel: AtomicBool,
    dropped: AtomicBool,
    /// The host's pace for scan hashing (see [`crate::pace`]); `None`: never paced.
    pace: Option<Arc<crate::pace::Pace>>,
    /// Filesystem events queued for the engine: the queue's bound (`event_queue_capacity`) is
    /// kept with this count, not by `sync_channel`, which allocates every slot up front
    /// (65,536 slots of about 72 bytes: 4.5 MiB resident in an idle agent). The unbounded
    /// channel allocates as it fills and frees as it drains.
    queued: std::sync::atomic::AtomicUsize,
    /// What the queued events hold ([`queued_cost`]), bounded by [`QUEUED_BYTES_PER_EVENT`]
    /// times the capacity.
    queued_bytes: std::sync::atomic::AtomicUsize,
}

impl Shared {
    /// Takes one event of `cost` bytes off the queue's counts.
    fn unqueue(&self, cost: usize) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
        self.queued_bytes.fetch_sub(cost, Ordering::AcqRel);
    }
}

/// The running realtime monitor.
pub struct Monitor {
    fim: Fim,
    tx: Sender<Msg>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// The baseline is this monitor's while it runs: a one-shot `fim update` meanwhile would
    /// share its staging tables (see [`crate::lock`]).
    _lock: crate::lock::StateLock,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor").finish_non_exhaustive()
    }
}

impl Monitor {
    /// Starts watching. Returns at once; watches, the first baseline (when there is none) or
    /// the startup verification rescan run on the monitor's thread (see [`Self::status`]).
    /// Fails with [`crate::lock::LockError::Busy`] while another process scans the baseline
    /// (a one-shot `fim init`, or a second daemon on the same state directory).
    pub fn start(fim: Fim, sink: EventSink) -> Result<Self, FimError> {
        Self::start_paced(fim, sink, None)
    }

    /// [`Self::start`], with its scans' hashing paced by `pace` (the daemon's self-limits
    /// turn it up while the agent is over its CPU budget; see [`crate::pace`]). `None`: the
    /// same as [`Self::start`].
    pub fn start_paced(
        fim: Fim,
        sink: EventSink,
        pace: Option<Arc<crate::pace::Pace>>,
    ) -> Result<Self, FimError> {
        let lock = crate::lock::StateLock::acquire(&fim.state_dir)?;
        let (tx, rx) = channel();
        let capacity = fim.config.event_queue_capacity.max(16);
        let shared = Arc::new(Shared {
            status: Mutex::new(FimStatus::starting()),
            cancel: AtomicBool::new(false),
            dropped: AtomicBool::new(false),
            pace,
            queued: std::sync::atomic::AtomicUsize::new(0),
            queued_bytes: std::sync::atomic::AtomicUsize::new(0),
        });
        let max_bytes = capacity.saturating_mul(QUEUED_BYTES_PER_EVENT);
        let query_fim = fim.clone();
        let fwd_tx = tx.clone();
        let fwd_shared = Arc::clone(&shared);
        let handler = move |res: notify::Result<notify::Event>| {
            // notify's inotify mask includes IN_OPEN: every program reading /etc would wake
            // the engine. Opens say nothing about integrity; drop them on the reader thread.
            if let Ok(ev) = &res
                && matches!(ev.kind, EventKind::Access(AccessKind::Open(_)))
            {
                return;
            }
            // Never block the inotify reader: a full queue becomes an explicit overflow.
            let res = res.map(compact_event);
            let cost = queued_cost(&res);
            // Both counts are taken first and given back when over: the engine may be taking
            // events off meanwhile, and a count never goes below what is queued.
            fwd_shared.queued_bytes.fetch_add(cost, Ordering::AcqRel);
            let full = fwd_shared.queued.fetch_add(1, Ordering::AcqRel) >= capacity
                || fwd_shared.queued_bytes.load(Ordering::Acquire) > max_bytes;
            if full {
                fwd_shared.unqueue(cost);
                fwd_shared.dropped.store(true, Ordering::Release);
            } else if fwd_tx.send(Msg::Fs(res)).is_err() {
                // The engine has stopped: nothing will take it off the count.
                fwd_shared.unqueue(cost);
            }
        };
        let watcher =
            notify::INotifyWatcher::new(handler, notify::Config::default().with_follow_symlinks(false));
        // Opened after the watcher so the inotify instance is created as early as possible.
        let store = fim.store()?;
        store.set_cache_kib(MONITOR_CACHE_KIB)?;
        let engine_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("fim-monitor".into())
            .spawn(move || {
                let mut engine = Engine::new(fim, store, watcher, engine_shared, sink);
                engine.run(rx);
            })
            .map_err(|e| FimError::Watcher(e.to_string()))?;
        Ok(Self { fim: query_fim, tx, shared, thread: Some(thread), _lock: lock })
    }

    /// A snapshot of the monitor's status.
    pub fn status(&self) -> FimStatus {
        // A poisoned lock still holds the last status (counters included): show it rather
        // than a blank one.
        self.shared.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The FIM section of the report ([`crate::FimReport`]): `degraded` while a coverage gap
    /// is open or fewer inotify watches were granted than the trees need, with one problem
    /// each. Findings: [`crate::fim_findings`] over its data.
    pub fn section(&self) -> guestward_core::Section<crate::FimReport> {
        let started = Instant::now();
        crate::FimReport::from_status(&self.status()).into_section(started)
    }

    /// Stored events at or after `since` (for `agentctl fim events --since`); read through
    /// a separate connection, so it never waits for a running scan.
    pub fn events_since(&self, since: Timestamp, limit: usize) -> Result<Vec<Event>, FimError> {
        self.fim.events_since(since, limit)
    }

    /// Asks for a verification rescan of `trees` (all trees when `None`).
    pub fn request_rescan(&self, trees: Option<Vec<PathBuf>>) {
        let _ = self.tx.send(Msg::Rescan(trees));
    }

    /// Blocks until the monitor watches (startup scan done) or `timeout` passes; returns
    /// whether it is watching.
    pub fn wait_watching(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.status().state == MonitorState::Watching {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Asks the monitor to stop without waiting (for holders of a shared reference); a
    /// running scan is cancelled and resumes at the next start.
    pub fn request_stop(&self) {
        self.shared.cancel.store(true, Ordering::Release);
        let _ = self.tx.send(Msg::Stop);
    }

    /// Stops the monitor (a running scan is cancelled and resumes at the next start).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.cancel.store(true, Ordering::Release);
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            // The last owner of the monitor may be dropped on the monitor's own thread (the
            // daemon's event sink holds the state that holds the monitor): joining itself
            // would panic with EDEADLK. The thread is on its way out then anyway.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What the events of one path said during its debounce window (one entry per path however
/// many events: a path created and deleted a thousand times is one entry).
#[derive(Default)]
struct Pending {
    first: Option<Instant>,
    last: Option<Instant>,
    renamed_from: Option<PathBuf>,
    rename_source: bool,
    /// Renamed to a path that is monitored: its content lives on (and is reported) there.
    moved_into_tree: bool,
    /// Wall-clock times of the first and last event, for a transient report.
    first_seen: Option<Timestamp>,
    last_seen: Option<Timestamp>,
    /// Created or moved in during this window.
    appeared: bool,
    /// The record captured while it existed (no xattrs, to keep it small; see
    /// `MAX_SNAPSHOTS`), hashed when it was small enough and closed after writing.
    snapshot: Option<Box<FileRecord>>,
    /// The snapshot was taken at a close after writing (not only at creation).
    snapshot_written: bool,
}

/// What an event says about a path, for the transient bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Created or moved in.
    Appeared,
    /// Closed after writing.
    Written,
    /// Anything else.
    Other,
}

/// A directory to watch: its path, and the device and inode it had when listed through its
/// descriptor (`None` above the tree, where paths are trusted).
struct WatchDir {
    real: PathBuf,
    id: Option<(u64, u64)>,
}

struct Tree {
    target: Target,
    mode: TreeMode,
    watches: u64,
    reason: Option<String>,
}

/// What the engine keeps about an open gap to know which rescan closes it.
struct GapScope {
    /// The host paths it covers (a rescan of these, or of something above them, closes it).
    trees: Vec<PathBuf>,
    cause: GapCause,
    /// Stays open while the condition lasts (a tree on periodic rescans only): no rescan
    /// closes it.
    persistent: bool,
}

struct Engine {
    fim: Fim,
    store: Store,
    watcher: Option<notify::INotifyWatcher>,
    /// Why the watcher could not be created.
    watcher_error: Option<String>,
    /// Open gaps by id.
    gaps: HashMap<u64, GapScope>,
    /// When gaps left by failed store writes or scans are retried.
    retry_at: Option<Instant>,
    retry_wait: Duration,
    /// When a store or watcher error was last logged (rate limit; all are counted).
    last_store_log: Option<Instant>,
    last_watcher_log: Option<Instant>,
    shared: Arc<Shared>,
    sink: EventSink,
    watched: BTreeSet<PathBuf>,
    /// Directories whose records below were all reported removed during this pass over the
    /// paths due (see [`Self::drop_subtree`]).
    dropped_this_pass: BTreeSet<PathBuf>,
    budget: u64,
    trees: Vec<Tree>,
    pending: HashMap<PathBuf, Pending>,
    /// Bytes of the paths that key `pending` (at most [`MAX_PENDING_PATH_BYTES`]).
    pending_path_bytes: usize,
    /// Pending entries holding a snapshot.
    snapshots: usize,
    next_due: Option<Instant>,
    next_full: Instant,
    next_unwatched: Instant,
    /// When every file is to be hashed again (`fim.full_rehash_interval_secs`); until then
    /// rescans are metadata first. Now at start: the startup rescan after a downtime reads
    /// everything (offline changes are where ctime is least to be trusted).
    next_rehash: Instant,
    gap_seq: u64,
    buf: guestward_core::ReadBuffer,
    /// The queue's receiving end, once [`Self::run`] started.
    rx: Option<Receiver<Msg>>,
    /// Messages taken off the queue by [`Self::discard_queued`] that it does not answer,
    /// handled before the queue's next ones.
    set_aside: std::collections::VecDeque<Msg>,
    /// Package attribution and per-transaction grouping (with a package oracle).
    attributor: Option<crate::attribution::Attributor>,
    /// What the status last said a running transaction holds (id, changes), and when: it is
    /// published again when that moves, at most every [`HOLDING_PUBLISH_EVERY`] while the
    /// same transaction runs (an upgrade holds thousands of changes one by one).
    published_holding: Option<(String, u64)>,
    published_holding_at: Option<Instant>,
}

/// How often the status's count of changes held for a running transaction is brought up to date.
const HOLDING_PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// The store's `meta` key of the last coverage gap id given.
const META_GAP_SEQ: &str = "last_gap_id";

/// Why a tree whose watches could not be placed (`reason`, as `add_watches` or the budget
/// check said) is on rescans.
fn unwatched_cause(reason: &str) -> GapCause {
    if reason.contains("kernel") {
        GapCause::WatchLimit
    } else if reason.starts_with("cannot watch") {
        GapCause::WatcherError
    } else {
        GapCause::WatchBudget
    }
}

impl Engine {
    fn new(
        fim: Fim,
        store: Store,
        watcher: notify::Result<notify::INotifyWatcher>,
        shared: Arc<Shared>,
        sink: EventSink,
    ) -> Self {
        let (watcher, watcher_error) = match watcher {
            Ok(w) => (Some(w), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let now = Instant::now();
        let full = Duration::from_secs(fim.config.rescan_interval_secs.max(1));
        let unwatched = Duration::from_secs(fim.config.unwatched_rescan_interval_secs.max(1));
        let attributor = fim
            .packages
            .as_ref()
            .map(|p| crate::attribution::Attributor::new(Arc::clone(&p.0), fim.root.clone()));
        // Gap ids go on from the last process's: a history holding gaps of several runs never
        // shows two different gaps under one id.
        let gap_seq = store.meta(META_GAP_SEQ).ok().flatten().and_then(|v| v.parse().ok()).unwrap_or(0);
        Self {
            attributor,
            published_holding: None,
            published_holding_at: None,
            fim,
            store,
            watcher,
            watcher_error,
            gaps: HashMap::new(),
            retry_at: None,
            retry_wait: STORE_RETRY,
            last_store_log: None,
            last_watcher_log: None,
            shared,
            sink,
            watched: BTreeSet::new(),
            dropped_this_pass: BTreeSet::new(),
            budget: 0,
            trees: Vec::new(),
            pending: HashMap::new(),
            pending_path_bytes: 0,
            snapshots: 0,
            next_due: None,
            next_full: now + full,
            next_unwatched: now + unwatched,
            next_rehash: now,
            gap_seq,
            buf: guestward_core::ReadBuffer::new(crate::record::READ_BUFFER_BYTES),
            rx: None,
            set_aside: std::collections::VecDeque::new(),
        }
    }

    fn cfg(&self) -> &Config {
        &self.fim.config
    }

    /// Whether the monitor was asked to stop ([`Monitor::stop`], [`Monitor::request_stop`]).
    fn stopping(&self) -> bool {
        self.shared.cancel.load(Ordering::Acquire)
    }

    fn with_status(&self, f: impl FnOnce(&mut FimStatus)) {
        // Poisoned or not, the counters keep counting: a failure is never dropped.
        let mut s = self.shared.status.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s);
    }

    fn run(&mut self, rx: Receiver<Msg>) {
        self.rx = Some(rx);
        self.place_watches();
        self.startup_scan();
        self.publish(MonitorState::Watching);
        loop {
            let now = Instant::now();
            let mut wake = self.next_full.min(self.next_unwatched);
            if self.cfg().fast_rescans {
                wake = wake.min(self.next_rehash);
            }
            if let Some(d) = self.next_due {
                wake = wake.min(d);
            }
            if let Some(r) = self.retry_at {
                wake = wake.min(r);
            }
            if let Some(a) = self.attributor.as_ref().and_then(|a| a.next_wake(now)) {
                wake = wake.min(a);
            }
            let msg = self.next_msg(wake.saturating_duration_since(now));
            if self.stopping() {
                // Stop is queued behind every event before it (65,536 in a storm): those and
                // the paths still pending are left to the startup rescan of the next start.
                break;
            }
            match msg {
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(Msg::Fs(ev)) => self.on_fs(ev),
                Ok(Msg::Rescan(trees)) => {
                    let scope = trees.map(Scope::Trees).unwrap_or(Scope::All);
                    self.verify(scope, None, false);
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if self.shared.dropped.swap(false, Ordering::AcqRel) {
                self.overflow(
                    GapCause::EventBacklog,
                    "the agent's event queue was full; events were dropped",
                );
            }
            let now = Instant::now();
            if self.next_due.is_some_and(|d| d <= now) {
                self.process_due(now);
            }
            let rehash_due = self.cfg().fast_rescans && now >= self.next_rehash;
            if now >= self.next_full || rehash_due {
                self.next_full = now + Duration::from_secs(self.cfg().rescan_interval_secs.max(1));
                self.verify(Scope::All, None, true);
                // A full rehash that did not complete is tried again with the next rescan.
                if rehash_due && self.next_rehash <= now {
                    self.next_rehash = self.next_full;
                }
            }
            if now >= self.next_unwatched {
                self.next_unwatched =
                    now + Duration::from_secs(self.cfg().unwatched_rescan_interval_secs.max(1));
                let trees: Vec<PathBuf> = self
                    .trees
                    .iter()
                    .filter(|t| t.mode != TreeMode::Realtime)
                    .map(|t| t.target.host.clone())
                    .collect();
                if !trees.is_empty() {
                    self.verify(Scope::Trees(trees), None, true);
                }
            }
            if self.retry_at.is_some_and(|r| r <= Instant::now()) {
                self.retry_failed();
            }
            self.poll_attribution(false);
        }
        // What a transaction still holds is reported rather than lost.
        self.poll_attribution(true);
        self.publish(MonitorState::Stopped);
    }

    /// The next message: those set aside by [`Self::discard_queued`] first, then the queue's.
    /// File events set aside still count as queued until now, so the two together stay
    /// within `event_queue_capacity`.
    fn next_msg(&mut self, timeout: Duration) -> Result<Msg, RecvTimeoutError> {
        let msg = match self.set_aside.pop_front() {
            Some(msg) => msg,
            None => match self.rx.as_ref() {
                Some(rx) => rx.recv_timeout(timeout)?,
                None => return Err(RecvTimeoutError::Disconnected),
            },
        };
        if let Msg::Fs(res) = &msg {
            self.shared.unqueue(queued_cost(res));
        }
        Ok(msg)
    }

    /// Takes the file events already queued off the queue before a rescan of `trees` starts:
    /// the rescan reads what they left, so examining them afterwards only repeats it. Kept,
    /// they held the queue full through the rescan (65,536 events, 10-15 MiB), any event during
    /// it was dropped again, and after the rescan the engine took one event and started the
    /// next rescan: a storm of 300,000 new files kept the agent rescanning, its queue full,
    /// long after the storm (an hour was not enough to empty it).
    ///
    /// Only events that cannot be about a directory are answered so (a file created, written,
    /// removed): a directory's events place or drop its watches, which a rescan does not.
    /// Those, events about anything outside `trees`, errors, a kernel overflow and control
    /// messages are set aside and handled after the rescan, in order.
    fn discard_queued(&mut self, trees: &[PathBuf]) {
        let Some(rx) = self.rx.as_ref() else { return };
        // Only what is queued now: a storm that goes on must not keep the rescan from starting.
        let queued = self.shared.queued.load(Ordering::Acquire);
        let mut kept = Vec::new();
        let mut discarded = 0usize;
        for _ in 0..queued {
            let Ok(msg) = rx.try_recv() else { break };
            let Msg::Fs(res) = msg else {
                kept.push(msg);
                continue;
            };
            let answered = res.as_ref().is_ok_and(|ev| {
                let file_only = matches!(
                    ev.kind,
                    EventKind::Create(notify::event::CreateKind::File)
                        | EventKind::Remove(notify::event::RemoveKind::File)
                        | EventKind::Access(AccessKind::Close(AccessMode::Write))
                        | EventKind::Modify(ModifyKind::Data(_))
                );
                let inside = |p: &PathBuf| {
                    let host = self.host_of(p);
                    trees.iter().any(|t| host.starts_with(t))
                };
                file_only && !ev.need_rescan() && !ev.paths.is_empty() && ev.paths.iter().all(inside)
            });
            if answered {
                self.shared.unqueue(queued_cost(&res));
                discarded += 1;
            } else {
                kept.push(Msg::Fs(res));
            }
        }
        self.set_aside.extend(kept);
        if discarded > 0 {
            let n = u64::try_from(discarded).unwrap_or(u64::MAX);
            self.with_status(|s| s.queued_events_answered_by_rescans += n);
            tracing::debug!(discarded, "queued FIM events answered by the rescan that starts now");
        }
    }

    // ---------- watches ----------

    fn place_watches(&mut self) {
        if let Some(e) = self.watcher_error.clone() {
            self.watcher_failed(format!("cannot create the inotify watcher: {e}"));
        }
        let kernel =
            std::fs::read_to_string(MAX_USER_WATCHES).ok().and_then(|s| s.trim().parse::<u64>().ok());
        let reserve = u64::from(self.cfg().watch_reserve_percent.min(100));
        let mut budget = kernel.map(|k| k - k * reserve / 100).unwrap_or(8192);
        if self.cfg().max_watches > 0 {
            budget = budget.min(self.cfg().max_watches);
        }
        self.budget = budget;
        let targets = self.fim.policy.targets(&self.fim.root);
        for target in targets {
            let Some(real) = real_path(&self.fim.root, &target.host) else {
                continue;
            };
            let (dirs, list_error) = self.tree_dirs(&target, &real);
            // The parent of a tree root is watched too (non-recursively) so that the root
            // appearing, vanishing or being replaced is seen.
            let need = dirs.len() as u64 + 1;
            let mut tree = Tree { target, mode: TreeMode::Realtime, watches: need, reason: None };
            let parent_exists =
                real.parent().is_some_and(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()));
            if self.watcher.is_none() {
                tree.mode = TreeMode::RescanOnly;
                tree.reason = Some(format!(
                    "the inotify watcher could not be created ({}); checked by rescans every {} s",
                    self.watcher_error.as_deref().unwrap_or("unknown error"),
                    self.cfg().unwatched_rescan_interval_secs
                ));
            } else if !parent_exists {
                // Nothing to watch yet (e.g. /home/bob/.ssh does not exist): not a loss of
                // coverage of anything that exists, but creation is only seen by rescans.
                tree.mode = TreeMode::Absent;
                tree.watches = 0;
                tree.reason = Some(format!(
                    "its directory does not exist; its creation is checked by rescans every {} s",
                    self.cfg().unwatched_rescan_interval_secs
                ));
            } else if let Some(reason) = list_error {
                self.watcher_failed(reason.clone());
                tree.mode = TreeMode::RescanOnly;
                tree.reason = Some(format!(
                    "{reason}; checked by rescans every {} s",
                    self.cfg().unwatched_rescan_interval_secs
                ));
            } else {
                let mut all = Vec::with_capacity(dirs.len() + 1);
                if let Some(parent) = real.parent() {
                    // Above the tree: trusted like the rule's path itself.
                    all.push(WatchDir { real: parent.to_path_buf(), id: None });
                }
                all.extend(dirs);
                // Directories an earlier tree already watches (`/etc` for `/etc/pam.d`) cost
                // nothing more.
                let used = self.watched.len() as u64;
                let new = all.iter().filter(|d| !self.watched.contains(&d.real)).count() as u64;
                if used + new > budget {
                    tree.mode = TreeMode::RescanOnly;
                    tree.reason = Some(format!(
                        "needs {new} more watches but only {} of the budget of {budget} are left; checked by rescans every {} s",
                        budget.saturating_sub(used),
                        self.cfg().unwatched_rescan_interval_secs
                    ));
                } else if let Err(reason) = self.add_watches(&all) {
                    if reason.starts_with("cannot watch") {
                        self.watcher_failed(reason.clone());
                    }
                    tree.mode = TreeMode::RescanOnly;
                    tree.reason = Some(reason);
                }
            }
            self.trees.push(tree);
        }
        // One gap per cause (stays open: these trees are covered by periodic rescans, not in
        // realtime), so a directory the watcher cannot open is not reported as a budget matter.
        let mut open: BTreeMap<GapCause, Vec<(PathBuf, String)>> = BTreeMap::new();
        for t in self.trees.iter().filter(|t| t.mode == TreeMode::RescanOnly) {
            let reason = t.reason.clone().unwrap_or_default();
            let cause =
                if self.watcher.is_none() { GapCause::WatcherError } else { unwatched_cause(&reason) };
            open.entry(cause).or_default().push((t.target.host.clone(), reason));
        }
        for (cause, trees) in open {
            let detail =
                trees.iter().map(|(p, r)| format!("{}: {r}", escape_path(p))).collect::<Vec<_>>().join("; ");
            let shown = trees.iter().map(|(p, _)| escape_path(p)).collect();
            let hosts = trees.into_iter().map(|(p, _)| p).collect();
            self.open_gap_scoped(cause, shown, detail, Timestamp::now(), hosts, true);
        }
        self.with_status(|s| s.kernel_max_user_watches = kernel);
        self.publish(MonitorState::Starting);
    }

    /// Directories of a tree that need a watch: not excluded, governed by this tree's rule
    /// (nested rules count their own), and only the root for non-recursive rules.
    ///
    /// Listed through directory descriptors (see [`crate::dirfd`]), never following a symlink.
    /// The watches themselves are then placed by path (inotify has no `*at` form): a directory
    /// swapped for a symlink in between gets a watch on the symlink's target, whose events
    /// only make us examine paths inside the tree, again through descriptors, and the swap's
    /// own event (a type change) removes the watches below it.
    ///
    /// A directory that cannot be opened or listed for a reason other than being gone (or
    /// not a directory) is returned as an error beside what was found: the caller puts the
    /// tree on rescans, since the subdirectories below it would get no watch.
    fn tree_dirs(&self, target: &Target, real: &Path) -> (Vec<WatchDir>, Option<String>) {
        let mut out = Vec::new();
        let mut error = None;
        let fail = |error: &mut Option<String>, what: &str, dir: &Path, e: &std::io::Error| {
            if !not_there(e) && error.is_none() {
                *error = Some(format!("cannot watch {}: {what}: {e}", escape_path(dir)));
            }
        };
        let Some(rule) = self.fim.policy.rules.get(target.rule) else {
            return (out, error);
        };
        if self.fim.policy.governing(&target.host).map(|r| r.index) != Some(rule.index) {
            return (out, error);
        }
        let at = match dirfd::locate(&self.fim.root, rule, &target.host) {
            Ok(at) => at,
            Err(e) => {
                fail(&mut error, "cannot reach it", &target.host, &e);
                return (out, error);
            }
        };
        let mut stack = vec![(target.host.clone(), real.to_path_buf(), Arc::new(at.dir), at.name, 0usize)];
        while let Some((host, dir_real, parent, name, depth)) = stack.pop() {
            // O_NOFOLLOW|O_DIRECTORY: a symlink or a non-directory is simply not descended.
            let dir = match dirfd::open_dir_at(&parent, &name) {
                Ok(d) => d,
                Err(e) => {
                    fail(&mut error, "cannot open it", &host, &e);
                    continue;
                }
            };
            drop(parent);
            let id = dirfd::stat_fd(&dir).ok().map(|st| (st.st_dev, st.st_ino));
            out.push(WatchDir { real: dir_real.clone(), id });
            if !rule.recursive || depth >= dirfd::MAX_DEPTH {
                continue;
            }
            let dir = Arc::new(dir);
            let mut listing = match dirfd::list(&dir) {
                Ok(l) => l,
                Err(e) => {
                    fail(&mut error, "cannot list it", &host, &e);
                    continue;
                }
            };
            for e in listing.iter() {
                let e = match e {
                    Ok(e) => e,
                    Err(errno) => {
                        fail(&mut error, "listing it failed part-way", &host, &std::io::Error::from(errno));
                        break;
                    }
                };
                let bytes = e.file_name().to_bytes();
                if bytes == b"." || bytes == b".." {
                    continue;
                }
                let name = std::ffi::OsStr::from_bytes(bytes);
                // d_type from readdir: no extra fstatat, and a symlink is never a directory.
                let is_dir = match e.file_type() {
                    Some(t) => t == nix::dir::Type::Directory,
                    None => dirfd::stat_at(&dir, name).is_ok_and(|st| dirfd::is_dir(&st)),
                };
                if !is_dir {
                    continue;
                }
                let h = host.join(name);
                if self.fim.policy.governing(&h).map(|r| r.index) == Some(rule.index) {
                    stack.push((h, dir_real.join(name), Arc::clone(&dir), name.to_os_string(), depth + 1));
                }
            }
        }
        (out, error)
    }

    fn add_watches(&mut self, dirs: &[WatchDir]) -> Result<(), String> {
        let Some(w) = self.watcher.as_mut() else {
            return Err("no watcher".into());
        };
        for WatchDir { real: d, id } in dirs {
            if self.watched.contains(d) {
                continue;
            }
            if self.watched.len() as u64 >= self.budget {
                return Err(format!("the watch budget of {} is used up", self.budget));
            }
            match w.watch(d, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    // inotify_add_watch resolves the path and follows symlinks: if the
                    // directory we listed was swapped meanwhile, the watch may sit on some
                    // other directory. Checked after placing it, and dropped if so (the swap's
                    // own event brings the directory back to us).
                    let moved = id.is_some_and(|(dev, ino)| {
                        std::fs::metadata(d).map_or(true, |m| (m.dev(), m.ino()) != (dev, ino))
                    });
                    if moved {
                        let _ = w.unwatch(d);
                        continue;
                    }
                    self.watched.insert(d.clone());
                }
                Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                    return Err("the kernel's fs.inotify.max_user_watches limit was hit".into());
                }
                // Vanished (or replaced by a non-directory) since we listed it: nothing to
                // watch; its own event says what happened.
                Err(e) if vanished(&e) => {}
                // Anything else (permission, memory) leaves a directory unwatched: the caller
                // puts the tree on rescans and opens a gap, never a silent hole.
                Err(e) => return Err(format!("cannot watch {}: {e}", escape_path(d))),
            }
        }
        Ok(())
    }

    /// The watch library drops its watch of a directory, and of every directory below, when
    /// the directory is renamed away or deleted (its `IN_MOVED_FROM`, `IN_DELETE`), at once.
    /// Our list follows at once too, or it would say watched what no longer is: a directory
    /// renamed and renamed back within the debounce window was then examined as "still
    /// watched", never watched again, and changes inside it went unreported.
    fn forget_watches_below(&mut self, real: &Path) {
        // Paths order by component, so a directory's descendants follow it: a range, not a
        // pass over every watch (a storm of removals would make that quadratic).
        let below: Vec<PathBuf> =
            self.watched.range(real.to_path_buf()..).take_while(|p| p.starts_with(real)).cloned().collect();
        for p in below {
            self.watched.remove(&p);
        }
    }

    fn remove_watches_below(&mut self, real: &Path) {
        let gone: Vec<PathBuf> = self.watched.iter().filter(|p| p.starts_with(real)).cloned().collect();
        for p in gone {
            self.watched.remove(&p);
            if let Some(w) = self.watcher.as_mut() {
                let _ = w.unwatch(&p);
            }
        }
    }

    fn tree_of(&self, host: &Path) -> Option<usize> {
        self.trees
            .iter()
            .enumerate()
            .filter(|(_, t)| host.starts_with(&t.target.host))
            .max_by_key(|(_, t)| t.target.host.components().count())
            .map(|(i, _)| i)
    }

    /// Watches a directory that appeared inside a realtime tree, with its subdirectories.
    fn watch_new_dir(&mut self, host: &Path, real: &Path) {
        let Some(ti) = self.tree_of(host) else { return };
        if self.trees[ti].mode != TreeMode::Realtime {
            return;
        }
        let Some(rule) = self.fim.policy.governing(host) else {
            return;
        };
        if !rule.recursive && host != self.trees[ti].target.host {
            return;
        }
        let target = Target { host: host.to_path_buf(), rule: rule.index };
        let (dirs, list_error) = self.tree_dirs(&target, real);
        let placed = self.add_watches(&dirs);
        if let Err(reason) = list_error.map_or(placed, Err) {
            let tree = &mut self.trees[ti];
            tree.mode = TreeMode::RescanOnly;
            tree.reason = Some(reason.clone());
            let host = tree.target.host.clone();
            let cause = unwatched_cause(&reason);
            if cause == GapCause::WatcherError {
                self.watcher_failed(reason.clone());
            }
            self.open_gap_scoped(cause, vec![escape_path(&host)], reason, Timestamp::now(), vec![host], true);
        }
    }

    // ---------- scans ----------

    fn startup_scan(&mut self) {
        let baseline = match self.fim.baseline_time() {
            Ok(b) => b,
            Err(e) => {
                // Never taken as "no baseline": that would build a new one from whatever is on
                // disk now and accept an attacker's changes silently. Retried until readable.
                let trees = self.trees.iter().map(|t| t.target.host.clone()).collect();
                self.store_failed(false, "read when the baseline was completed", trees, &e);
                return;
            }
        };
        match baseline {
            None => {
                // A failure leaves a retried gap (see `baseline`).
                self.baseline();
            }
            Some(since) => {
                let trees = self.trees.iter().map(|t| escape_path(&t.target.host)).collect();
                let detail =
                    "changes made while the agent was not running are found by the startup rescan".into();
                let id = self.open_gap_at(GapCause::AgentNotRunning, trees, detail, since);
                self.verify(Scope::All, Some(id), true);
            }
        }
    }

    /// Builds the first baseline; a failure leaves a gap over every tree that the retry
    /// closes by building it again.
    fn baseline(&mut self) -> bool {
        self.publish(MonitorState::Baselining);
        let rate = self.cfg().initial_scan_rate;
        let ok = self
            .run_scan(Purpose::Init, &Scope::All, Mechanism::Rescan, rate, Rehash::All)
            .is_some_and(|s| !s.stats.cancelled);
        if ok {
            self.close_covered_gaps(&Scope::All);
            self.next_rehash =
                Instant::now() + Duration::from_secs(self.cfg().full_rehash_interval_secs.max(1));
        }
        ok
    }

    /// Runs one scan. A scan that fails as a whole is counted and leaves a gap over its
    /// scope (retried by [`Self::retry_failed`]); `None` then.
    fn run_scan(
        &mut self,
        purpose: Purpose,
        scope: &Scope,
        mechanism: Mechanism,
        rate: crate::config::RateLimit,
        rehash: Rehash,
    ) -> Option<ScanSummary> {
        let shared = Arc::clone(&self.shared);
        let progress = move |p: &ScanProgress| {
            if let Ok(mut s) = shared.status.lock() {
                s.scan_progress = Some(p.clone());
            }
        };
        let opts = ScanOptions {
            rate,
            threads: self.fim.config.threads,
            progress: Some(&progress),
            cancel: Some(&self.shared.cancel),
            pace: self.shared.pace.as_deref(),
            rehash,
        };
        let fim = self.fim.clone();
        let keep = self.fim.config.max_stored_events;
        let started = Instant::now();
        let mut changes = 0u64;
        let mut logged = false;
        // Changes are emitted as the diff streams out of SQLite, never collected: a rescan
        // after a package upgrade may report many thousands.
        let (store, sink, shared) = (&self.store, &mut self.sink, &self.shared);
        let attributor = &mut self.attributor;
        // Stored in batches (see `Store::append_events`), handed on one by one.
        let mut unstored: Vec<Event> = Vec::new();
        let store_batch = |batch: &mut Vec<Event>, logged: &mut bool| {
            let stored = store.append_events(batch, keep);
            if let Err(err) = stored {
                if let Ok(mut s) = shared.status.lock() {
                    s.event_store_failures_total += u64::try_from(batch.len()).unwrap_or(u64::MAX);
                }
                if !std::mem::replace(logged, true) {
                    tracing::warn!(error = %err, "cannot store FIM events of this scan in the event log; they are still reported");
                }
            }
            batch.clear();
        };
        let result = fim.scan(purpose, scope, mechanism, &opts, &mut |c| {
            changes += 1;
            // Changes a package transaction is making wait for its end (see `attribution`).
            let c = match attributor.as_mut() {
                Some(a) => match a.offer(&crate::events::unescape_path(&c.path), c, Instant::now()) {
                    Some(c) => c,
                    None => return,
                },
                None => c,
            };
            let e = c.to_event(Timestamp::now());
            // Handed on before it is counted (see `report_change`).
            sink(&e);
            if let Ok(mut s) = shared.status.lock() {
                s.changes_reported += 1;
                if mechanism == Mechanism::Realtime {
                    s.changes_realtime += 1;
                }
            }
            unstored.push(e);
            if unstored.len() >= STORED_EVENTS_PER_COMMIT {
                store_batch(&mut unstored, &mut logged);
            }
        });
        store_batch(&mut unstored, &mut logged);
        let trees = match scope {
            Scope::All => self.trees.iter().map(|t| escape_path(&t.target.host)).collect(),
            Scope::Trees(t) => t.iter().map(|p| escape_path(p)).collect(),
        };
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let (Some(a), Ok(summary)) = (self.attributor.as_mut(), &result) {
            a.set_baseline_mismatches(&summary.baseline);
        }
        self.publish_attribution();
        let verification = match &result {
            Ok(summary) => Verification {
                purpose,
                trees,
                finished: summary.finished,
                duration_ms,
                outcome: if summary.stats.cancelled {
                    ScanOutcome::Cancelled
                } else {
                    ScanOutcome::Completed
                },
                changes,
                counts: Some(summary.counts),
                error: None,
                baseline_integrity: Some(summary.baseline.integrity),
            },
            Err(e) => Verification {
                purpose,
                trees,
                finished: Timestamp::now(),
                duration_ms,
                outcome: ScanOutcome::Failed,
                changes,
                counts: None,
                error: Some(e.to_string()),
                baseline_integrity: None,
            },
        };
        self.with_status(|s| {
            s.scan_progress = None;
            s.last_verification = Some(verification);
            s.refresh_degraded();
        });
        match result {
            Ok(summary) => Some(summary),
            Err(e) => {
                let hosts = match scope {
                    Scope::All => self.trees.iter().map(|t| t.target.host.clone()).collect(),
                    Scope::Trees(t) => t.clone(),
                };
                match store_error(&e) {
                    Some(se) => self.store_failed(true, "scan into", hosts, se),
                    None => {
                        tracing::warn!(error = %e, "FIM scan failed; retried");
                        let shown: Vec<String> = hosts.iter().map(|h| escape_path(h)).collect();
                        self.open_retry_gap(
                            GapCause::ScanFailed,
                            hosts,
                            format!("scan of {} failed: {e}", shown.join(", ")),
                        );
                    }
                }
                None
            }
        }
    }

    /// A verification rescan; when it completes, closes gap `gap` and every other open gap
    /// (but those that last while a tree is on rescans only) whose trees it covered.
    fn verify(&mut self, scope: Scope, gap: Option<u64>, gentle: bool) -> bool {
        self.publish(MonitorState::Verifying);
        let rate = if gentle { self.cfg().rescan_rate } else { self.cfg().initial_scan_rate };
        // Metadata first unless a full rehash is due (see `next_rehash`).
        let rehash = if self.cfg().fast_rescans && Instant::now() < self.next_rehash {
            Rehash::Changed
        } else {
            Rehash::All
        };
        let done = self.run_scan(Purpose::Rescan, &scope, Mechanism::Rescan, rate, rehash);
        let ok = done.is_some_and(|summary| !summary.stats.cancelled);
        if ok && rehash == Rehash::All && scope == Scope::All {
            self.next_rehash =
                Instant::now() + Duration::from_secs(self.cfg().full_rehash_interval_secs.max(1));
        }
        if ok {
            if let Some(id) = gap {
                self.close_gap(id);
            }
            self.close_covered_gaps(&scope);
        }
        self.publish(MonitorState::Watching);
        ok
    }

    /// Retries what failed: a rescan of the trees of every gap left by a failed store
    /// access or scan (or the first baseline, when there is still none). Success closes
    /// them; failure waits twice as long before the next try.
    fn retry_failed(&mut self) {
        self.retry_at = None;
        let trees: Vec<PathBuf> =
            self.gaps.values().filter(|g| retryable(g.cause)).flat_map(|g| g.trees.iter().cloned()).collect();
        if trees.is_empty() {
            self.retry_wait = STORE_RETRY;
            return;
        }
        let ok = match self.fim.baseline_time() {
            Ok(None) => self.baseline(),
            Ok(Some(_)) => self.verify(Scope::Trees(crate::scan::minimal_roots(trees)), None, false),
            Err(e) => {
                self.store_failed(false, "read when the baseline was completed", trees, &e);
                false
            }
        };
        if ok {
            self.retry_wait = STORE_RETRY;
        } else {
            self.retry_wait = (self.retry_wait * 2).min(STORE_RETRY_MAX);
        }
        if self.gaps.values().any(|g| retryable(g.cause)) && self.retry_at.is_none() {
            self.retry_at = Some(Instant::now() + self.retry_wait);
        }
        self.publish(MonitorState::Watching);
    }

    fn overflow(&mut self, cause: GapCause, detail: &str) {
        let trees: Vec<PathBuf> = self
            .trees
            .iter()
            .filter(|t| t.mode == TreeMode::Realtime)
            .map(|t| t.target.host.clone())
            .collect();
        self.with_status(|s| s.overflows += 1);
        let id = self.open_gap(cause, trees.clone(), detail.to_string());
        self.discard_queued(&trees);
        self.watch_what_was_missed(&trees);
        // Started at once and scoped to the watched trees; unlimited speed, since every
        // second of delay is a second an attacker's change goes unreported.
        self.verify(Scope::Trees(trees), Some(id), false);
    }

    /// Places the watches `trees` lack. Events were lost, among them, possibly, a directory's
    /// creation: the rescan records such a directory but places no watch, so what was written
    /// in it afterwards went unseen until the next scheduled rescan, with no gap said (an
    /// attacker could make a storm, create a directory in it, and work there later). Placed
    /// before the rescan: a change made between the two is then seen by one or the other.
    fn watch_what_was_missed(&mut self, trees: &[PathBuf]) {
        for host in trees {
            if let Some(real) = real_path(&self.fim.root, host) {
                self.watch_new_dir(host, &real);
            }
        }
        self.publish_watches();
    }

    // ---------- failures ----------

    /// A baseline write (`write`) or read failed for `paths`: counted, logged (rate-limited),
    /// and covered by a gap that stays open until a verification rescan of `paths` succeeds
    /// (retried on its own): a full disk never lets the baseline drift from what was reported
    /// without saying so.
    fn store_failed(&mut self, write: bool, op: &str, paths: Vec<PathBuf>, err: &StoreError) {
        let shown: Vec<String> = paths.iter().map(|p| escape_path(p)).collect();
        let detail = format!(
            "baseline {} failed ({op} {}): {err}; the baseline may not match the files until a rescan of {} succeeds",
            if write { "write" } else { "read" },
            shown.join(", "),
            if shown.len() == 1 { "it" } else { "them" }
        );
        self.with_status(|s| {
            if write {
                s.store_write_failures_total += 1;
            } else {
                s.store_read_failures_total += 1;
            }
            s.last_store_error = Some(detail.clone());
        });
        if self.last_store_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            self.last_store_log = Some(Instant::now());
            tracing::error!(error = %err, paths = %shown.join(", "), "{detail}");
        }
        let cause = if write { GapCause::StoreWriteFailed } else { GapCause::StoreReadFailed };
        self.open_retry_gap(cause, paths, detail);
    }

    /// Opens a gap over `paths` that the retry closes, unless an open one already covers
    /// them. Past [`MAX_PATH_GAPS`] gaps, the gap covers the whole tree of each path.
    fn open_retry_gap(&mut self, cause: GapCause, mut paths: Vec<PathBuf>, detail: String) {
        let covered = |gaps: &HashMap<u64, GapScope>, p: &Path| {
            gaps.values().any(|g| !g.persistent && g.trees.iter().any(|t| p.starts_with(t)))
        };
        paths.retain(|p| !covered(&self.gaps, p));
        if paths.is_empty() {
            return;
        }
        if self.gaps.values().filter(|g| retryable(g.cause)).count() >= MAX_PATH_GAPS {
            paths = paths
                .iter()
                .map(|p| {
                    self.tree_of(p).map(|i| self.trees[i].target.host.clone()).unwrap_or_else(|| p.clone())
                })
                .collect();
            paths = crate::scan::minimal_roots(paths);
            paths.retain(|p| !covered(&self.gaps, p));
            if paths.is_empty() {
                return;
            }
        }
        self.open_gap(cause, paths, detail);
        if self.retry_at.is_none() {
            self.retry_at = Some(Instant::now() + self.retry_wait);
        }
    }

    /// The watcher failed (creation, a watch, reading events): counted, logged
    /// (rate-limited), shown in the status. The caller opens the gap.
    fn watcher_failed(&mut self, detail: String) {
        if self.last_watcher_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            self.last_watcher_log = Some(Instant::now());
            tracing::error!(error = %detail, "FIM inotify watcher error; the trees concerned are verified by rescans");
        }
        self.with_status(|s| {
            s.watcher_errors_total += 1;
            s.last_watcher_error = Some(detail);
        });
    }

    // ---------- gaps and events ----------

    fn open_gap(&mut self, cause: GapCause, trees: Vec<PathBuf>, detail: String) -> u64 {
        let shown = trees.iter().map(|t| escape_path(t)).collect();
        self.open_gap_scoped(cause, shown, detail, Timestamp::now(), trees, false)
    }

    fn open_gap_at(&mut self, cause: GapCause, trees: Vec<String>, detail: String, start: Timestamp) -> u64 {
        let hosts = self.trees.iter().map(|t| t.target.host.clone()).collect();
        self.open_gap_scoped(cause, trees, detail, start, hosts, false)
    }

    fn open_gap_scoped(
        &mut self,
        cause: GapCause,
        trees: Vec<String>,
        detail: String,
        start: Timestamp,
        hosts: Vec<PathBuf>,
        persistent: bool,
    ) -> u64 {
        self.gap_seq += 1;
        if let Err(e) = self.store.set_meta(META_GAP_SEQ, &self.gap_seq.to_string()) {
            // Only the ids' uniqueness across a restart is at stake; the gap itself is reported.
            tracing::debug!(error = %e, "the last coverage gap id could not be stored");
        }
        let gap = CoverageGap { id: self.gap_seq, cause, trees, start, end: None, detail };
        self.gaps.insert(self.gap_seq, GapScope { trees: hosts, cause, persistent });
        self.emit(gap.to_event(Timestamp::now()));
        self.with_status(|s| {
            s.open_gaps.push(gap);
            s.refresh_degraded();
        });
        self.gap_seq
    }

    /// Closes every open gap a completed scan of `scope` verified.
    fn close_covered_gaps(&mut self, scope: &Scope) {
        let mut ids: Vec<u64> = self
            .gaps
            .iter()
            .filter(|(_, g)| {
                !g.persistent
                    && match scope {
                        Scope::All => true,
                        Scope::Trees(roots) => g.trees.iter().all(|t| roots.iter().any(|r| t.starts_with(r))),
                    }
            })
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            self.close_gap(id);
        }
    }

    fn close_gap(&mut self, id: u64) {
        self.gaps.remove(&id);
        let mut closed = None;
        self.with_status(|s| {
            if let Some(i) = s.open_gaps.iter().position(|g| g.id == id) {
                closed = Some(s.open_gaps.remove(i));
            }
            s.refresh_degraded();
        });
        if let Some(mut gap) = closed {
            gap.end = Some(Timestamp::now());
            self.emit(gap.to_event(Timestamp::now()));
        }
    }

    fn emit_change(&mut self, c: FimChange) {
        let c = match self.attributor.as_mut() {
            Some(a) => {
                let before = a.report().counts.clone();
                let held = a.offer(&crate::events::unescape_path(&c.path), c, Instant::now());
                // Published when something was attributed, not for every change of a storm.
                if a.report().counts != before {
                    self.publish_attribution();
                }
                match held {
                    Some(c) => c,
                    None => return,
                }
            }
            None => c,
        };
        self.report_change(c);
    }

    /// Ends a package transaction's group once it is over (`now`: at once, at shutdown),
    /// reporting its grouped event and the changes that did not match their package.
    fn poll_attribution(&mut self, now: bool) {
        let Some(a) = self.attributor.as_mut() else { return };
        let out = if now { a.flush() } else { a.poll(Instant::now()) };
        if out.changes.is_empty() && out.transaction.is_none() {
            let published = self.published_holding.as_ref().map(|(id, n)| (id.as_str(), *n));
            let stale = match (a.holding_count(), published) {
                (current, before) if current == before => false,
                // Another transaction, or none any more: at once.
                (Some((id, _)), Some((was, _))) if id == was => {
                    self.published_holding_at.is_none_or(|t| t.elapsed() >= HOLDING_PUBLISH_EVERY)
                }
                _ => true,
            };
            if stale {
                self.publish_attribution();
            }
            return;
        }
        if let Some(t) = &out.transaction {
            self.emit(t.to_event(Timestamp::now()));
        }
        for c in out.changes {
            self.report_change(c);
        }
        self.publish_attribution();
    }

    fn publish_attribution(&mut self) {
        if let Some(a) = &self.attributor {
            let mut report = a.report().clone();
            report.holding = a.holding();
            self.published_holding =
                report.holding.as_ref().map(|h| (h.transaction.id.clone(), h.held_changes));
            self.published_holding_at = Some(Instant::now());
            self.with_status(|s| s.attribution = Some(report));
        }
    }

    fn report_change(&mut self, c: FimChange) {
        // Handed on before it is counted: a status that counts a change means its event is
        // already with the daemon, so a report asked for after seeing the count carries it.
        self.emit(c.to_event(Timestamp::now()));
        // Every caller is a realtime path (inotify); scans count in `run_scan`.
        self.with_status(|s| {
            s.changes_reported += 1;
            s.changes_realtime += 1;
        });
    }

    fn emit(&mut self, e: Event) {
        if let Err(err) = self.store.append_event(&e, self.fim.config.max_stored_events) {
            // Counted; logged at most once a minute (a full disk fails every event).
            self.with_status(|s| s.event_store_failures_total += 1);
            if self.last_store_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                self.last_store_log = Some(Instant::now());
                tracing::warn!(error = %err, "cannot store FIM event in the event log; it is still reported");
            }
        }
        (self.sink)(&e);
    }

    /// The watches in use and each tree's mode, as changes have left them: a directory
    /// created, removed or renamed changes both, and `fim status` once went on showing the
    /// numbers of the last scan (a tree put on rescans for want of watches still "realtime").
    /// Cheap: no query of the store.
    fn publish_watches(&self) {
        let watches = self.watched.len() as u64;
        let modes: Vec<(String, TreeMode, Option<String>)> =
            self.trees.iter().map(|t| (escape_path(&t.target.host), t.mode, t.reason.clone())).collect();
        self.with_status(|s| {
            s.watches_used = watches;
            for tree in &mut s.trees {
                if let Some((_, mode, reason)) = modes.iter().find(|(path, ..)| *path == tree.path) {
                    tree.mode = *mode;
                    tree.reason.clone_from(reason);
                }
            }
            s.refresh_degraded();
        });
    }

    fn publish(&self, state: MonitorState) {
        let files = self.store.file_count().unwrap_or(0);
        let baseline = self.fim.baseline_time().ok().flatten();
        let last = self.fim.last_scan().ok().flatten();
        let trees: Vec<TreeStatus> = self
            .trees
            .iter()
            .map(|t| TreeStatus {
                path: escape_path(&t.target.host),
                rule: self
                    .fim
                    .policy
                    .rules
                    .get(t.target.rule)
                    .map(|r| escape_path(&r.pattern))
                    .unwrap_or_default(),
                mode: t.mode,
                watches: t.watches,
                reason: t.reason.clone(),
            })
            .collect();
        let watches = self.watched.len() as u64;
        let budget = self.budget;
        self.with_status(|s| {
            s.state = state;
            s.files_in_baseline = files;
            s.baseline_completed_at = baseline;
            s.last_scan = last;
            s.watches_used = watches;
            s.watch_budget = budget;
            s.trees = trees;
            s.refresh_degraded();
        });
    }

    // ---------- realtime ----------

    fn host_of(&self, real: &Path) -> PathBuf {
        let root = &self.fim.root;
        if root.is_live() {
            return real.to_path_buf();
        }
        match real.strip_prefix(root.dir()) {
            Ok(rel) => Path::new("/").join(rel),
            Err(_) => real.to_path_buf(),
        }
    }

    fn on_fs(&mut self, ev: notify::Result<notify::Event>) {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                let cause = if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) {
                    GapCause::WatchLimit
                } else {
                    GapCause::WatcherError
                };
                let detail = format!("inotify reported: {e}");
                self.watcher_failed(detail.clone());
                let trees: Vec<PathBuf> = self.trees.iter().map(|t| t.target.host.clone()).collect();
                self.with_status(|s| s.overflows += 1);
                let id = self.open_gap(cause, trees.clone(), detail);
                self.verify(Scope::Trees(trees), Some(id), false);
                return;
            }
        };
        if ev.need_rescan() {
            self.overflow(GapCause::QueueOverflow, "the kernel inotify queue overflowed (IN_Q_OVERFLOW)");
            return;
        }
        match ev.kind {
            EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                for p in ev.paths {
                    self.touch(p, Seen::Appeared);
                }
            }
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                for p in ev.paths {
                    self.touch(p, Seen::Written);
                }
            }
            EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Name(RenameMode::From | RenameMode::Any)) => {
                for p in ev.paths {
                    self.forget_watches_below(&p);
                    self.touch(p, Seen::Other);
                }
            }
            EventKind::Modify(
                ModifyKind::Data(_) | ModifyKind::Metadata(_) | ModifyKind::Any | ModifyKind::Other,
            ) => {
                for p in ev.paths {
                    self.touch(p, Seen::Other);
                }
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                if let [from, to] = &ev.paths[..] {
                    self.forget_watches_below(from);
                    self.touch(from.clone(), Seen::Other);
                    self.touch(to.clone(), Seen::Appeared);
                    let into_tree = self.fim.policy.governing(&self.host_of(to)).is_some();
                    if let Some(p) = self.pending.get_mut(to) {
                        p.renamed_from = Some(from.clone());
                    }
                    if let Some(p) = self.pending.get_mut(from) {
                        p.rename_source = true;
                        p.moved_into_tree |= into_tree;
                    }
                }
            }
            // Opens and read-only closes say nothing about integrity.
            _ => {}
        }
    }

    fn touch(&mut self, real: PathBuf, seen: Seen) {
        let over = self.pending.len() >= MAX_PENDING
            || self.pending_path_bytes + real.as_os_str().len() > MAX_PENDING_PATH_BYTES;
        if over && !self.pending.contains_key(&real) {
            // Too many distinct paths in flight: stop tracking them one by one. A new map, not
            // `clear()`, which would keep the full table for the life of the daemon.
            self.pending = HashMap::new();
            self.pending_path_bytes = 0;
            self.snapshots = 0;
            self.next_due = None;
            self.overflow(
                GapCause::EventBacklog,
                "more paths changed at once than the agent tracks individually",
            );
            return;
        }
        let now = Instant::now();
        let wall = Timestamp::now();
        let p = match self.pending.entry(real.clone()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                self.pending_path_bytes += real.as_os_str().len();
                e.insert(Pending::default())
            }
        };
        p.first.get_or_insert(now);
        p.last = Some(now);
        p.first_seen.get_or_insert(wall);
        p.last_seen = Some(wall);
        let capture = match seen {
            Seen::Appeared => {
                p.appeared = true;
                p.snapshot.is_none().then_some(false)
            }
            Seen::Written if p.appeared && !p.snapshot_written => Some(true),
            _ => None,
        };
        let due = now + Duration::from_millis(self.fim.config.debounce_ms);
        self.next_due = Some(self.next_due.map_or(due, |d| d.min(due)));
        if let Some(hash) = capture {
            self.capture(&real, hash);
        }
    }

    /// Records what a path that just appeared is, while it exists: if it is gone again before
    /// its debounce ends (a file dropped, used and deleted within milliseconds), this is all
    /// that can be reported about it. At creation only its stat (who created it, with what
    /// mode); at its first close after writing, for small files, its hash too, which the
    /// examination after the debounce then reuses if the file did not change since.
    fn capture(&mut self, real: &Path, hash: bool) {
        let had = self.pending.get(real).is_some_and(|p| p.snapshot.is_some());
        if !had && self.snapshots >= MAX_SNAPSHOTS {
            return;
        }
        let host = self.host_of(real);
        let Some(rule) = self.fim.policy.governing(&host) else {
            return;
        };
        let Ok(Some((at, st))) = lookup(&self.fim.root, rule, &host) else {
            return;
        };
        let mut rec = FileRecord::from_stat(&st);
        if hash && rec.kind == FileKind::File && rec.size <= SNAPSHOT_HASH_MAX_BYTES {
            // Content only (no xattrs, no link target): a small record per pending path.
            let mut attrs = vec![];
            for a in [Attribute::Sha256, Attribute::Blake3] {
                if rule.attributes.has(a) {
                    attrs.push(a);
                }
            }
            let opts = ReadOptions {
                attributes: AttributeSet::of(&attrs),
                max_file_size_bytes: rule.max_file_size_bytes,
                md5: false,
            };
            let (hashed, err) =
                read_record_at(&at.dir, &at.name, &st, opts, None, &mut self.buf, &mut |_| {});
            if err.is_none() {
                rec = hashed;
            }
        }
        rec.xattrs = None;
        if let Some(p) = self.pending.get_mut(real) {
            if p.snapshot.is_none() {
                self.snapshots += 1;
            }
            p.snapshot = Some(Box::new(rec));
            p.snapshot_written |= hash;
        }
    }

    fn due_at(&self, p: &Pending) -> Instant {
        let now = Instant::now();
        let debounce = Duration::from_millis(self.fim.config.debounce_ms);
        let max = Duration::from_millis(self.fim.config.max_delay_ms.max(self.fim.config.debounce_ms));
        let last = p.last.unwrap_or(now) + debounce;
        let first = p.first.unwrap_or(now) + max;
        last.min(first)
    }

    fn process_due(&mut self, now: Instant) {
        self.dropped_this_pass.clear();
        let mut due: Vec<PathBuf> = Vec::new();
        let mut next: Option<Instant> = None;
        for (path, p) in &self.pending {
            let at = self.due_at(p);
            if at <= now {
                due.push(path.clone());
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        // Rename targets first: they consume their sources.
        due.sort_by_key(|p| self.pending.get(p).is_none_or(|x| x.renamed_from.is_none()));
        for path in due {
            // Up to `MAX_PENDING` files are examined here, each hashed, stored and reported:
            // seconds after a storm, more under the CPU limit. A stop does not wait for them
            // (the startup rescan of the next start compares their trees with the baseline).
            if self.stopping() {
                break;
            }
            if let Some(p) = self.pending.remove(&path) {
                self.pending_path_bytes = self.pending_path_bytes.saturating_sub(path.as_os_str().len());
                if p.snapshot.is_some() {
                    self.snapshots = self.snapshots.saturating_sub(1);
                }
                if p.rename_source && self.pending_target_of(&path) {
                    // Its rename target is still settling; it will handle this path.
                    continue;
                }
                self.examine(&path, &p);
            }
        }
        self.publish_watches();
        // Removing entries never shrinks a map: the table a storm grew would stay.
        release_room(&mut self.pending, PENDING_KEPT);
        // Items that arrived while examining have pushed `next_due` already.
        let remaining = self.pending.values().map(|p| self.due_at(p)).min();
        self.next_due = match (next, remaining) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    fn pending_target_of(&self, from: &Path) -> bool {
        self.pending.values().any(|p| p.renamed_from.as_deref() == Some(from))
    }

    /// Compares one path with the baseline, reports and records the difference. `seen` is
    /// what its events said during the debounce window.
    fn examine(&mut self, real: &Path, seen: &Pending) {
        let renamed_from = seen.renamed_from.as_deref();
        let host = self.host_of(real);
        let from_host = renamed_from.map(|f| self.host_of(f));
        let governed = self.fim.policy.governing(&host).cloned();
        if let Some(from) = &from_host {
            let source_gone = match self.fim.policy.governing(from) {
                Some(rule) => matches!(lookup(&self.fim.root, rule, from), Ok(None)),
                // Not monitored: only whether a name is there, nothing is read.
                None => renamed_from.is_some_and(|f| std::fs::symlink_metadata(f).is_err()),
            };
            let old = match self.store.get(from) {
                Ok(old) => old,
                Err(e) => {
                    // The source's record cannot be read: whether it was removed is not known
                    // here; the gap's rescan of it decides.
                    self.store_failed(false, "read", vec![from.clone()], &e);
                    None
                }
            };
            match (&governed, old, source_gone) {
                (Some(_), Some(old), true) => {
                    self.renamed(from, renamed_from.unwrap_or(from), &host, real, old);
                    return;
                }
                (None, Some(_), _) | (Some(_), Some(_), false) => {
                    // Moved somewhere not monitored (or the source reappeared): examine the
                    // source on its own.
                    if let Some(f) = renamed_from {
                        self.examine(f, &Pending::default());
                    }
                }
                _ => {}
            }
        }
        let Some(rule) = governed else { return };
        let old = match self.store.get(&host) {
            Ok(o) => o,
            Err(e) => {
                // Not compared, so not reported: the gap says so until a rescan compares it.
                self.store_failed(false, "read", vec![host], &e);
                return;
            }
        };
        let found = match lookup(&self.fim.root, &rule, &host) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(path = %escape_path(&host), error = %e, "FIM cannot examine a changed path");
                return;
            }
        };
        let Some((at, st)) = found else {
            match old {
                Some(old) => self.removed(&host, real, old),
                // Never in the baseline and already gone: it lived shorter than the debounce.
                // Unless it was renamed to a monitored path (whose own report covers it), say
                // that it existed.
                None if !(seen.rename_source && seen.moved_into_tree)
                    && (seen.appeared || !self.removal_reported_above(real)) =>
                {
                    self.transient(&host, &rule, seen)
                }
                None => {}
            }
            return;
        };
        let opts = ReadOptions::of_rule(&rule);
        let reuse = seen.snapshot.as_deref();
        let (new, err) = read_record_at(&at.dir, &at.name, &st, opts, reuse, &mut self.buf, &mut |_| {});
        if err.as_ref().is_some_and(dirfd::is_changed_during_scan) {
            // Replaced between our fstatat and open: whatever is there now has its own events
            // coming; look again after the debounce rather than record half of it.
            self.touch(real.to_path_buf(), Seen::Other);
            return;
        }
        if let Some(mut c) = self.fim.change_of(&host, old.as_ref(), Some(&new), Mechanism::Realtime) {
            c.folded_parent = self.fold_parent(&host, &c);
            self.emit_change(c);
        }
        if let Err(e) = self.store.put(&host, &new) {
            // Reported but not recorded: the next event or scan would report it again, or
            // worse, a later revert to the recorded state would go unreported.
            self.store_failed(true, "record the new state of", vec![host.clone()], &e);
        }
        let was_dir = old.as_ref().is_some_and(|o| o.kind == FileKind::Dir);
        if was_dir && new.kind != FileKind::Dir {
            self.drop_subtree(&host, real);
        }
        if new.kind == FileKind::Dir && (!was_dir || !self.watched.contains(real)) {
            self.new_dir(&host, real);
        }
    }

    /// Reports a path that appeared and was gone before its examination: `added` then
    /// `removed`, with what was captured while it existed (see [`Transient`]).
    fn transient(&mut self, host: &Path, rule: &Rule, seen: &Pending) {
        let now = Timestamp::now();
        let transient = Transient {
            first_seen: seen.first_seen.unwrap_or(now),
            last_seen: seen.last_seen.unwrap_or(now),
        };
        let attrs = seen.snapshot.as_deref().map(Attributes::from);
        let added = FimChange {
            path: escape_path(host),
            old_path: None,
            change: ChangeKind::Added,
            changed: Vec::new(),
            old: None,
            new: attrs.clone(),
            mechanism: Mechanism::Realtime,
            rule: escape_path(&rule.pattern),
            transient: Some(transient.clone()),
            attributes: Vec::new(),
            folded_parent: None,
            package: None,
        };
        let mut added = added;
        added.folded_parent = self.fold_parent(host, &added);
        let removed = FimChange { change: ChangeKind::Removed, old: attrs, new: None, ..added.clone() };
        self.emit_change(added);
        self.emit_change(removed);
    }

    /// A directory appeared: watch it first, then scan it, so files created before the watch
    /// existed are found and files created after it are reported by their own events.
    fn new_dir(&mut self, host: &Path, real: &Path) {
        self.watch_new_dir(host, real);
        let rate = self.cfg().initial_scan_rate;
        // A failure is counted and leaves a gap over the directory (see `run_scan`).
        let _ = self.run_scan(
            Purpose::Rescan,
            &Scope::Trees(vec![host.to_path_buf()]),
            Mechanism::Realtime,
            rate,
            Rehash::All,
        );
    }

    fn removed(&mut self, host: &Path, real: &Path, old: crate::record::FileRecord) {
        if let Some(mut c) = self.fim.change_of(host, Some(&old), None, Mechanism::Realtime) {
            c.folded_parent = self.fold_parent(host, &c);
            self.emit_change(c);
        }
        if let Err(e) = self.store.delete(host) {
            self.store_failed(true, "remove the record of", vec![host.to_path_buf()], &e);
        }
        if old.kind == FileKind::Dir {
            self.drop_subtree(host, real);
        }
    }

    /// An entry was added, removed, renamed or replaced (`c`) at `host`: its directory's mtime
    /// and ctime moved with it, and inotify says nothing about the directory itself. When those
    /// timestamps are all that differ from the directory's record, the record is refreshed now
    /// and the directory's old and new values returned for the entry's event (`folded_parent`):
    /// otherwise the next verification rescan would report the directory on its own, long
    /// after the entry. Any other difference (mode, owner) is left to the directory's own
    /// event or the rescan.
    fn fold_parent(&mut self, host: &Path, c: &FimChange) -> Option<FoldedParent> {
        if !c.changes_directory_entries() {
            return None;
        }
        let dir = host.parent()?;
        let rule = self.fim.policy.governing(dir).cloned()?;
        let old = self.store.get(dir).ok().flatten().filter(|o| o.kind == FileKind::Dir)?;
        let (at, st) = lookup(&self.fim.root, &rule, dir).ok().flatten()?;
        let opts = ReadOptions::of_rule(&rule);
        let (new, err) = read_record_at(&at.dir, &at.name, &st, opts, None, &mut self.buf, &mut |_| {});
        if err.is_some() || new.kind != FileKind::Dir {
            return None;
        }
        let changed = old.diff(&new, rule.attributes);
        if changed.is_empty() || !changed.iter().all(|a| DIRECTORY_TIMESTAMPS.contains(a)) {
            return None;
        }
        let dc = self.fim.change_of(dir, Some(&old), Some(&new), Mechanism::Realtime)?;
        if let Err(e) = self.store.put(dir, &new) {
            self.store_failed(true, "record the new state of", vec![dir.to_path_buf()], &e);
            return None;
        }
        Some(FoldedParent { attributes: dc.value_changes(), path: dc.path })
    }

    fn drop_subtree(&mut self, host: &Path, real: &Path) {
        let mut gone = Vec::new();
        if let Err(e) = self.store.for_each_below(host, |p, r| gone.push((p, r))) {
            // Some removals below may not be reported: the gap's rescan reports them.
            self.store_failed(false, "list the records below", vec![host.to_path_buf()], &e);
        }
        for (p, r) in gone {
            if let Some(c) = self.fim.change_of(&p, Some(&r), None, Mechanism::Realtime) {
                self.emit_change(c);
            }
        }
        if let Err(e) = self.store.delete_below(host) {
            self.store_failed(true, "remove the records below", vec![host.to_path_buf()], &e);
        }
        self.remove_watches_below(real);
        self.dropped_this_pass.insert(real.to_path_buf());
    }

    /// Whether a directory above `real` had its records reported removed in this pass: the
    /// deletion events of the files below it are then answered already. Examined after it,
    /// each found no record and nothing there, and was reported again as a file that came and
    /// went ("transient", existed 0 ms) though it had existed for seconds.
    fn removal_reported_above(&self, real: &Path) -> bool {
        real.ancestors().skip(1).any(|a| self.dropped_this_pass.contains(a))
    }

    fn renamed(
        &mut self,
        from: &Path,
        from_real: &Path,
        host: &Path,
        real: &Path,
        old: crate::record::FileRecord,
    ) {
        let Some(rule) = self.fim.policy.governing(host).cloned() else {
            return;
        };
        let Ok(Some((at, st))) = lookup(&self.fim.root, &rule, host) else {
            // Gone again already: the source is simply removed.
            self.removed(from, from_real, old);
            return;
        };
        let opts = ReadOptions::of_rule(&rule);
        let (new, _) = read_record_at(&at.dir, &at.name, &st, opts, None, &mut self.buf, &mut |_| {});
        let change = FimChange {
            path: escape_path(host),
            old_path: Some(escape_path(from)),
            change: ChangeKind::Renamed,
            changed: old.diff(&new, rule.attributes),
            old: Some(Attributes::from(&old)),
            new: Some(Attributes::from(&new)),
            mechanism: Mechanism::Realtime,
            rule: escape_path(&rule.pattern),
            transient: None,
            attributes: Vec::new(),
            folded_parent: None,
            package: None,
        }
        .with_values();
        // Both directories' timestamps moved. The destination's values are carried by the
        // event. A source directory elsewhere is not refreshed here: the event has no room for
        // its values, so its record stays and the next verification reports its change.
        let mut change = change;
        change.folded_parent = self.fold_parent(host, &change);
        self.emit_change(change);
        if let Err(e) = self.store.delete(from) {
            self.store_failed(true, "remove the record of", vec![from.to_path_buf()], &e);
        }
        if let Err(e) = self.store.put(host, &new) {
            self.store_failed(true, "record the new state of", vec![host.to_path_buf()], &e);
        }
        if old.kind == FileKind::Dir {
            // Children keep their records under the new name; the scan below reports any
            // real difference.
            if let Err(e) = self.store.move_below(from, host) {
                self.store_failed(
                    true,
                    "move the records below",
                    vec![from.to_path_buf(), host.to_path_buf()],
                    &e,
                );
            }
            self.remove_watches_below(from_real);
        }
        if new.kind == FileKind::Dir {
            self.new_dir(host, real);
        }
    }
}

/// The store error behind a failed scan, if that is what failed.
fn store_error(e: &FimError) -> Option<&StoreError> {
    match e {
        FimError::Store(se) | FimError::Scan(ScanError::Store(se)) => Some(se),
        _ => None,
    }
}

/// Gaps the engine retries on its own (the others close with the rescan that follows them,
/// or last while their cause does).
fn retryable(cause: GapCause) -> bool {
    matches!(cause, GapCause::StoreWriteFailed | GapCause::StoreReadFailed | GapCause::ScanFailed)
}

/// What a queued event holds in memory, in bytes: its slot in the channel, its path list and
/// its paths (compacted: see [`compact_event`]), each allocation with malloc's header.
/// Counted when queued and again, the same, when taken off.
fn queued_cost(res: &notify::Result<notify::Event>) -> usize {
    let paths = match res {
        Ok(ev) => &ev.paths,
        Err(e) => &e.paths,
    };
    let list = paths.len() * std::mem::size_of::<PathBuf>() + ALLOCATION_BYTES;
    let names = paths.iter().map(|p| p.as_os_str().len() + ALLOCATION_BYTES).sum::<usize>();
    // The channel's slot: the message and its state word.
    std::mem::size_of::<Msg>() + 8 + list + names
}

/// An event as small as it can be while it waits in the queue (up to `event_queue_capacity`
/// of them during a storm): notify builds each path list with room for four paths (96 bytes
/// for one) and each joined path with spare room. Full, the default queue of 65,536 events
/// held 6 MiB of that room beside 10 MiB of events.
fn compact_event(mut ev: notify::Event) -> notify::Event {
    for p in &mut ev.paths {
        p.shrink_to_fit();
    }
    ev.paths.shrink_to_fit();
    ev
}

/// Gives back the room of a map that a burst grew and that is now at most a quarter full,
/// keeping room for `kept` entries (or twice what it holds), so that a quiet agent does not
/// keep a storm's table and a busy one does not reallocate at every pass.
fn release_room<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, kept: usize) {
    if map.capacity() > kept && map.len() <= map.capacity() / 4 {
        map.shrink_to(kept.max(map.len().saturating_mul(2)));
    }
}

/// A directory is gone, or is no directory (a symlink or file swapped in): nothing to watch.
fn not_there(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
        || matches!(e.raw_os_error(), Some(nix::libc::ENOTDIR) | Some(nix::libc::ELOOP))
}

/// A watch failed because the directory is gone or is no directory any more.
fn vanished(e: &notify::Error) -> bool {
    match &e.kind {
        notify::ErrorKind::PathNotFound | notify::ErrorKind::WatchNotFound => true,
        notify::ErrorKind::Io(io) => {
            io.kind() == std::io::ErrorKind::NotFound || io.raw_os_error() == Some(nix::libc::ENOTDIR)
        }
        _ => false,
    }
}

/// The entry `host` (governed by `rule`) reached through directory descriptors, with its
/// `fstatat`; `Ok(None)` when it does not exist inside the tree (a component on the way is
/// missing, a symlink or not a directory).
fn lookup(
    root: &guestward_core::HostRoot,
    rule: &Rule,
    host: &Path,
) -> std::io::Result<Option<(dirfd::Located, FileStat)>> {
    let at = match dirfd::locate(root, rule, host) {
        Ok(at) => at,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match dirfd::stat_at(&at.dir, &at.name) {
        Ok(st) => Ok(Some((at, st))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The queue is bounded by bytes as well as by events: an event of an ordinary path fits
    /// the per-event share (a storm of them is bounded by the count, as before), one at the end
    /// of a long path takes many shares, and the default queue never holds more than 12 MiB.
    #[test]
    fn queued_events_are_bounded_by_what_their_paths_hold() {
        let created = |path: String| {
            Ok(compact_event(
                notify::Event::new(EventKind::Create(notify::event::CreateKind::File)).add_path(path.into()),
            ))
        };
        let ordinary = queued_cost(&created(format!("/etc/ssh/sshd_config.d/{}", "x".repeat(24))));
        assert!(ordinary <= QUEUED_BYTES_PER_EVENT, "{ordinary} B for an ordinary path");
        let long = queued_cost(&created(format!("/srv/{}", "d/".repeat(2000))));
        assert!(long > 4000 + std::mem::size_of::<Msg>(), "{long} B for a 4,000-byte path");
        let default = crate::Config::default().event_queue_capacity * QUEUED_BYTES_PER_EVENT;
        assert!(default <= 12 << 20, "{default} B");
    }

    /// The most the pending paths can hold during a storm of new files, whatever its size
    /// and however long its paths: the map's table at its largest (slots are a power of two,
    /// at most 7/8 full), the paths' bytes at their bound and an allocation header each. With
    /// 100,000 paths it was 22 MiB of table (the daemon's budget is 64 MiB); it must stay a
    /// small share of it.
    #[test]
    fn pending_paths_of_any_storm_fit_in_a_few_mib() {
        let mut map: HashMap<PathBuf, Pending> = HashMap::new();
        for i in 0..MAX_PENDING {
            map.insert(PathBuf::from(format!("/w/{i}")), Pending::default());
        }
        let slots = (map.capacity() * 8 / 7).next_power_of_two();
        let table = slots * (std::mem::size_of::<(PathBuf, Pending)>() + 1);
        let paths = MAX_PENDING_PATH_BYTES + MAX_PENDING * ALLOCATION_BYTES;
        let worst = table + paths;
        assert!(worst <= 4 << 20, "{MAX_PENDING} pending paths can take {worst} bytes ({table} of table)");
    }

    /// A storm's table is given back once its paths are examined (a map keeps the table of its
    /// largest size otherwise), and a busy map is left alone.
    #[test]
    fn a_storms_table_is_given_back_once_it_drains() {
        let mut map: HashMap<PathBuf, Pending> = HashMap::new();
        for i in 0..MAX_PENDING {
            map.insert(PathBuf::from(format!("/w/{i}")), Pending::default());
        }
        let full = map.capacity();
        // Still busy: more than a quarter full, nothing moves.
        map.retain(|p, _| p.as_os_str().as_bytes().last().is_some_and(|b| b % 2 == 0));
        let busy = map.len();
        assert!(busy > full / 4, "{busy} of {full}");
        let table = map.capacity();
        release_room(&mut map, PENDING_KEPT);
        assert_eq!(map.capacity(), table, "not reallocated");
        // A few left: the room shrinks to what they need, the kept room at least.
        let keep: Vec<PathBuf> = map.keys().take(300).cloned().collect();
        map.retain(|p, _| keep.contains(p));
        release_room(&mut map, PENDING_KEPT);
        assert!(map.capacity() >= 600 && map.capacity() < full / 4, "{} of {full}", map.capacity());
        assert_eq!(map.len(), 300);
        // Empty: the kept room only.
        map.clear();
        release_room(&mut map, PENDING_KEPT);
        assert!(map.capacity() >= PENDING_KEPT && map.capacity() <= 2 * PENDING_KEPT, "{}", map.capacity());
        // A small map is never reallocated.
        let mut small: HashMap<PathBuf, Pending> = HashMap::new();
        small.insert(PathBuf::from("/w/a"), Pending::default());
        let before = small.capacity();
        release_room(&mut small, PENDING_KEPT);
        assert_eq!(small.capacity(), before);
    }

    /// Queued events hold no spare room: one path, allocated to its length.
    #[test]
    fn queued_events_are_compacted() {
        let ev = notify::Event::new(EventKind::Create(notify::event::CreateKind::File))
            .add_path(Path::new("/work/watch").join("f0000001.txt"));
        assert!(ev.paths.capacity() > 1, "notify's list has spare room (else this test is moot)");
        let ev = compact_event(ev);
        assert_eq!(ev.paths.capacity(), 1);
        assert_eq!(ev.paths[0].capacity(), ev.paths[0].as_os_str().len());
        assert_eq!(ev.paths[0], Path::new("/work/watch/f0000001.txt"));
    }

    /// The reasons `add_watches` and the start-up budget check give, each to its cause: a
    /// directory the watcher cannot open is not a budget matter.
    #[test]
    fn each_reason_a_tree_is_not_watched_has_its_own_cause() {
        let cases = [
            ("the watch budget of 3 is used up", GapCause::WatchBudget),
            (
                "needs 40 more watches but only 2 of the budget of 10 are left; checked by rescans every 3600 s",
                GapCause::WatchBudget,
            ),
            ("the kernel's fs.inotify.max_user_watches limit was hit", GapCause::WatchLimit),
            (
                "cannot watch /etc/ssl/private: cannot open it: Permission denied (os error 13)",
                GapCause::WatcherError,
            ),
        ];
        for (reason, cause) in cases {
            assert_eq!(unwatched_cause(reason), cause, "{reason}");
        }
    }
}
