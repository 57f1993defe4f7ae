//! Scanning trees into the staging table, in parallel, resumably, with bounded memory.
//!
//! Shape: the calling thread walks directories (`lstat` only, never following symlinks) and
//! sends one job per entry into a bounded channel; `threads` workers read and hash; one writer
//! thread batches records into SQLite. Every channel is bounded, so memory does not grow with
//! the tree: a million-file baseline holds a few thousand records in flight at most. A
//! metadata-first scan, whose work per entry is as small as the walk's, has `threads` threads
//! walk together instead, each examining what it lists (see [`walk`]).
//!
//! Why plain threads and channels rather than rayon: the work is a pipeline with back-pressure
//! (walk → hash → write) and one writer that must own its SQLite connection; rayon's
//! fork-join model would need the whole file list up front or an unbounded `par_bridge`
//! buffer, and adds a global pool the daemon would share with nothing else.

use crate::config::{Policy, RateLimit, Rule};
use crate::dirfd;
pub use crate::model::{Rehash, ScanProgress, ScanStats};
use crate::record::{FileKind, FileRecord, Hashing, Lane, ReadOptions, read_record_opened};
use crate::store::{Store, StoreError};
use guestward_core::{HostRoot, Problem, Timestamp};
use nix::sys::stat::FileStat;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod walk;
use walk::{JobsTo, Out, SharedStack, Walk};

/// Most problems kept per scan (the count of all of them is kept too).
const MAX_PROBLEMS: usize = 200;
/// Records written per SQLite transaction (held in the writer until then: 1,000 records are
/// about 0.3 MB of an `init`'s heap).
const BATCH: usize = 1_000;
/// A record waits at most this long in the writer before it is committed to the staging
/// table, however busy the writer is: what is committed survives a kill and is resumed.
pub const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// Progress is reported about this often.
const REPORT_EVERY: Duration = Duration::from_millis(100);
/// Batches of files waiting for a hashing thread. Each file holds its directory's descriptor
/// open, so this (times [`JOB_BATCH`], plus the batch each thread holds) also bounds the
/// descriptors in flight (with [`dirfd::MAX_DEPTH`] and `walk::MAX_HELD_OPEN` for the walk
/// itself): 256, as with 8 batches of 32 before.
const JOB_QUEUE: usize = 4;
/// Entries handed to a hashing thread in one message, and records handed to the writer in one
/// message: a wake-up per batch instead of two per file. Per-file messages cost /usr (133k
/// entries) about a second of CPU in futex wake-ups and context switches on 2 cores; batches
/// of 64 rather than 32 took a further 7% off a `check --fast` of /usr (longer merged reads
/// too, see `Store::baseline_records`).
const JOB_BATCH: usize = 64;
/// A batch is handed over early once it holds this many bytes to hash, so that large files
/// are spread over the threads rather than queued behind each other.
const JOB_BATCH_BYTES: u64 = 8 << 20;
/// SQLite page cache of each hashing thread's baseline connection (metadata-first scans), in
/// KiB: a batch's lookups are one read along the path index (`Store::baseline_records`), which
/// needs little more than the pages on its way down, and each thread has its own connection.
const LOOKUP_CACHE_KIB: u32 = 128;
/// getdents64 buffer of the walk: /usr's largest directories take a few reads.
const DIRENT_BUFFER_BYTES: usize = 64 * 1024;
/// Directory entries sorted at a time (see `walk_target`). Each is held with its name until it
/// is handed on: /usr/share/man/man1 here (17,911 entries) took 2.4 MB of a check's 4.6 MB heap
/// peak in chunks of 16,384 (heaptrack). Chunks of 4,096 keep nearly all of the path order.
const SORTED_CHUNK: usize = 4_096;
/// Page cache of the walk's reader connection, KiB.
const READER_CACHE_KIB: u32 = 256;
/// Page cache of the writer's connection, KiB.
const WRITER_CACHE_KIB: u32 = 512;

/// A concrete tree to walk: a rule's path with wildcards expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Path on the monitored system.
    pub host: PathBuf,
    /// Index into [`Policy::rules`].
    pub rule: usize,
}

impl Policy {
    /// The rule governing `host_path`: the most specific rule whose path covers it, unless
    /// the path (or a directory above it, below the rule's root) is excluded.
    pub fn governing(&self, host_path: &Path) -> Option<&Rule> {
        let parts: Vec<&OsStr> = normal_parts(host_path);
        let mut best: Option<(&Rule, usize)> = None;
        for rule in &self.rules {
            let pat = normal_parts(&rule.pattern);
            if pat.len() > parts.len() {
                continue;
            }
            if !pat.iter().zip(&parts).all(|(p, q)| *p == "*" || p == q) {
                continue;
            }
            if !rule.recursive && parts.len() > pat.len() + 1 {
                continue;
            }
            if best.is_none_or(|(_, n)| pat.len() > n) {
                best = Some((rule, pat.len()));
            }
        }
        let (rule, depth) = best?;
        // An excluded directory excludes everything below it.
        let mut p = PathBuf::from("/");
        for (i, c) in parts.iter().enumerate() {
            p.push(c);
            if i + 1 >= depth && rule.excludes(&p) {
                return None;
            }
        }
        Some(rule)
    }

    /// Expands every rule into concrete targets (wildcards resolved through `root`; only real
    /// directories match `*`, never symlinks).
    pub fn targets(&self, root: &HostRoot) -> Vec<Target> {
        let mut out = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            for host in expand(root, &rule.pattern) {
                out.push(Target { host, rule: i });
            }
        }
        out
    }

    /// The literal part of a rule's path before any wildcard: the scope of the rule's records.
    pub fn literal_prefix(rule: &Rule) -> PathBuf {
        let mut p = PathBuf::from("/");
        for c in normal_parts(&rule.pattern) {
            if c == "*" {
                break;
            }
            p.push(c);
        }
        p
    }
}

pub(crate) fn normal_parts(p: &Path) -> Vec<&OsStr> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s),
            _ => None,
        })
        .collect()
}

fn expand(root: &HostRoot, pattern: &Path) -> Vec<PathBuf> {
    let mut current = vec![PathBuf::from("/")];
    for part in normal_parts(pattern) {
        let mut next = Vec::new();
        for base in current {
            if part == "*" {
                let Ok(real) = root.resolve_parent(&base) else {
                    continue;
                };
                let Ok(rd) = std::fs::read_dir(&real) else {
                    continue;
                };
                let mut names: Vec<_> = rd
                    .flatten()
                    .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                    .map(|e| e.file_name())
                    .collect();
                names.sort_unstable();
                next.extend(names.into_iter().map(|n| base.join(n)));
            } else {
                next.push(base.join(part));
            }
        }
        current = next;
    }
    current
}

/// Where a host path lives on this machine, without following its final component.
pub fn real_path(root: &HostRoot, host: &Path) -> Option<PathBuf> {
    root.resolve_parent(host).ok()
}

/// Options of one scan.
pub struct ScanOptions<'a> {
    /// Speed cap.
    pub rate: RateLimit,
    /// Hashing threads (0 = one per CPU).
    pub threads: usize,
    /// Called from the writer thread about every 100 ms.
    pub progress: Option<&'a (dyn Fn(&ScanProgress) + Sync)>,
    /// Set to stop the scan early (daemon shutdown); the staged rows stay for a resume.
    pub cancel: Option<&'a AtomicBool>,
    /// Rests the hashing threads take per MiB, set by the host process while it is over its
    /// CPU budget (see [`crate::pace`]); `None`: never paced.
    pub pace: Option<&'a crate::pace::Pace>,
    /// Which entries are read again: all, or only those whose metadata moved since the
    /// baseline ([`Rehash::Changed`], the `--fast` check and the daemon's scheduled rescans).
    pub rehash: Rehash,
}

impl std::fmt::Debug for ScanOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanOptions")
            .field("rate", &self.rate)
            .field("threads", &self.threads)
            .field("rehash", &self.rehash)
            .finish()
    }
}

#[cfg(test)]
impl ScanOptions<'static> {
    /// A full rehash on `threads` threads, with no rate limit, progress, cancel or pace.
    pub(crate) fn unlimited(threads: usize) -> Self {
        Self {
            rate: RateLimit::default(),
            threads,
            progress: None,
            cancel: None,
            pace: None,
            rehash: Rehash::All,
        }
    }
}

/// Why a scan failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A thread could not be started.
    #[error("cannot start a scan thread: {0}")]
    Thread(std::io::Error),
    /// A scan thread died: what it held was never staged, so the scan cannot be compared
    /// (it would report those files removed).
    #[error("the scan thread {0} stopped unexpectedly; the scan is incomplete and was not compared")]
    ThreadDied(&'static str),
}

/// One entry to record: where it is (its directory's descriptor and its name there, never a
/// path: see [`crate::dirfd`]) and what `fstatat` said it is.
struct Job {
    host: PathBuf,
    dir: Arc<File>,
    name: OsString,
    /// The walk's `fstatat`; `None`: left to the hashing thread (see `walk_target`).
    stat: Option<FileStat>,
    /// With `stat` left to the hashing thread: getdents listed a regular file and the scan
    /// reads every one, so the thread opens it and `fstat`s the descriptor (`open_regular`)
    /// instead of an `fstatat` followed by the open.
    open_first: bool,
    opts: ReadOptions,
    /// Its extended attributes, read by the walk through the descriptor it opened (a
    /// directory, in a full scan: see `walk::Walk::list`), which `stat` is the `fstat` of.
    xattrs: Option<std::io::Result<Option<crate::record::Xattrs>>>,
}

enum Write {
    Records(Vec<(PathBuf, FileRecord)>),
    /// A directory could not be read: keep its baseline records rather than call them removed.
    CarryOver(PathBuf),
}

struct Limiter {
    rate: RateLimit,
    start: Instant,
    used: Mutex<(u64, u64)>,
}

impl Limiter {
    fn take(&self, bytes: u64) {
        if self.rate.files_per_sec == 0 && self.rate.bytes_per_sec == 0 {
            return;
        }
        let (files, total) = {
            let Ok(mut used) = self.used.lock() else {
                return;
            };
            used.0 += 1;
            used.1 += bytes;
            *used
        };
        let mut due = Duration::ZERO;
        if self.rate.files_per_sec > 0 {
            due = due.max(Duration::from_secs_f64(files as f64 / self.rate.files_per_sec as f64));
        }
        if self.rate.bytes_per_sec > 0 {
            due = due.max(Duration::from_secs_f64(total as f64 / self.rate.bytes_per_sec as f64));
        }
        let elapsed = self.start.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
    }
}

#[derive(Default)]
struct Counters {
    seen: AtomicU64,
    done: AtomicU64,
    resumed: AtomicU64,
    bytes: AtomicU64,
    hashed: AtomicU64,
    reused: AtomicU64,
    /// Entries reused and not staged (`stage_with`'s `prune`): done, as far as progress goes.
    pruned: AtomicU64,
    /// Entries found in the baseline by the hashing threads' lookups (metadata-first).
    found: AtomicU64,
    /// Some entry was not looked up (a thread without a baseline connection, a row that could
    /// not be read): `found` does not cover every entry.
    lookups_incomplete: AtomicBool,
    walk_done: AtomicBool,
    problems: Mutex<(u64, Vec<Problem>)>,
}

impl Counters {
    fn problem(&self, p: Problem) {
        if let Ok(mut g) = self.problems.lock() {
            g.0 += 1;
            if g.1.len() < MAX_PROBLEMS {
                g.1.push(p);
            }
        }
    }
}

/// Walks `targets` (closed under nesting by the caller) and stages a record for every entry
/// in `state_dir`'s store. With `resume`, entries already staged with an identical `lstat`
/// are kept instead of re-hashed.
pub fn stage(
    policy: &Policy,
    root: &HostRoot,
    state_dir: &Path,
    targets: &[Target],
    resume: bool,
    opts: &ScanOptions<'_>,
) -> Result<ScanStats, ScanError> {
    stage_with(policy, root, state_dir, targets, resume, opts, Staging::All, None).map(|s| s.stats)
}

/// Which files also get an MD5 in the scan's read (dpkg package files, for the baseline's
/// trust anchor: see [`FileRecord::md5`]), by host path, and what is told of each MD5 taken.
/// Called from the hashing threads.
pub(crate) trait Md5Wanted: Sync {
    /// Whether the file at `host` gets an MD5.
    fn wants(&self, host: &Path) -> bool;
    /// `md5` was taken of the regular file at `host` in this scan's read of it, which saw it
    /// whole and unchanged; its record carries the same MD5, whether staged or, equal to its
    /// baseline row, left unstaged.
    fn taken(&self, host: &Path, md5: &[u8; 16]) {
        let _ = (host, md5);
    }
    /// The record of the regular file at `host`, read whole and unchanged in this scan, carries
    /// `md5` over from its baseline row, a row the trust anchor trusts (the scan prunes: see
    /// `Finish::record`), since its content digests are the row's.
    fn carried(&self, host: &Path, md5: &[u8; 16]) {
        let _ = (host, md5);
    }
}

impl<F: Fn(&Path) -> bool + Sync> Md5Wanted for F {
    fn wants(&self, host: &Path) -> bool {
        self(host)
    }
}

/// See [`Md5Wanted`].
pub(crate) type WantsMd5<'a> = &'a dyn Md5Wanted;

/// What a scan stages of what it walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Staging {
    /// Every entry (a baseline, a resumed scan).
    All,
    /// Only the entries that differ from their baseline record: an entry recorded (or, metadata
    /// first, reused) identical to its baseline row is not staged, since it would be compared
    /// equal and accepted unchanged. SQLite then sees only what changed.
    Changes,
    /// Every entry, metadata first, keeping the rows already staged: after a `Changes` pass
    /// that did not meet every baseline row, so that the diff can tell what was removed.
    FillIn,
}

/// What [`stage_with`] did.
pub(crate) struct Staged {
    /// The counters.
    pub stats: ScanStats,
    /// Entries left out of staging as identical to their baseline row ([`Staging::Changes`]).
    pub pruned: u64,
    /// Entries walked that have a baseline row, when every entry was looked up. Equal to the
    /// baseline's rows in the scanned trees: every row was met, nothing was removed, and the
    /// staged rows are the whole difference.
    pub found: Option<u64>,
}

/// [`stage`], staging as `staging` says, with the MD5 of the files `md5` names.
#[allow(clippy::too_many_arguments)]
pub(crate) fn stage_with(
    policy: &Policy,
    root: &HostRoot,
    state_dir: &Path,
    targets: &[Target],
    resume: bool,
    opts: &ScanOptions<'_>,
    staging: Staging,
    md5: Option<WantsMd5<'_>>,
) -> Result<Staged, ScanError> {
    // Rows left unstaged stay in the baseline as they are: with a key they must carry its
    // valid MACs, which holds only for a baseline sealed with it (its rows verified on read);
    // an unsealed one is rewritten whole, so that `fim update` seals every row. A scan that
    // takes MD5s looks the baseline up too: an MD5 recorded with the SHA-256 the file still
    // has is carried over instead of computed again.
    let lookups = opts.rehash == Rehash::Changed || staging != Staging::All || md5.is_some();
    let started = Timestamp::now();
    let t0 = Instant::now();
    // Keyed like the engine's store: staged rows are sealed, resumed rows verified.
    // Page caches sized for what each connection does (SQLite's default is 2 MiB each): the
    // reader counts the baseline once and looks up a resumed scan's rows, the writer appends
    // in walk order. Measured with heaptrack: 4 MiB of a `fim init`'s 9 MiB heap peak was
    // these two caches at their default size.
    let reader = Store::open_keyed(state_dir, policy.baseline_key.clone())?;
    reader.set_cache_kib(READER_CACHE_KIB)?;
    let mut writer_store = Store::open_keyed(state_dir, policy.baseline_key.clone())?;
    writer_store.set_cache_kib(WRITER_CACHE_KIB)?;
    // For the progress shown (its total, until the walk is over): a count of every row, which
    // a scan nobody watches does not pay for.
    let baseline_entries = match opts.progress {
        Some(_) => reader.file_count().unwrap_or(0),
        None => 0,
    };
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
    } else {
        opts.threads
    };
    let md5_lanes = md5_lanes_per_thread(threads);
    let balance = &Balance::new(threads, md5_lanes);
    let counters = Counters::default();
    let links = &HardLinks::default();
    let limiter = Limiter { rate: opts.rate, start: Instant::now(), used: Mutex::new((0, 0)) };
    let (job_tx, job_rx) = sync_channel::<Vec<Job>>(JOB_QUEUE);
    let job_rx = Arc::new(Mutex::new(job_rx));
    // Records waiting for the writer, in messages of up to `JOB_BATCH`: about 1,000, which
    // keeps the hashing threads from waiting on a commit without holding a second batch.
    let (write_tx, write_rx) = sync_channel::<Write>(1024 / JOB_BATCH);
    let mut cancelled = false;
    // Directories held open while they wait to be listed (see `walk`), for every thread.
    let held = std::sync::atomic::AtomicUsize::new(0);
    // The work of the threads that walk together, when they do (see below).
    let shared = SharedStack::new(targets);

    let result: Result<(), ScanError> = std::thread::scope(|s| {
        let writer = std::thread::Builder::new()
            .name("fim-writer".into())
            .spawn_scoped(s, || {
                let keep = staging == Staging::FillIn;
                writer_loop(&mut writer_store, write_rx, &counters, opts, t0, baseline_entries, keep)
            })
            .map_err(ScanError::Thread)?;
        // Each thread looks up the baseline records of its own entries (metadata-first
        // scans): one read connection each, so the lookups run in parallel too. A store that
        // cannot be opened here only costs the reuse: every file is then hashed.
        let open_lookups = || {
            let baseline = match lookups {
                false => None,
                true => Store::open_keyed(state_dir, policy.baseline_key.clone())
                    .and_then(|st| st.set_cache_kib(LOOKUP_CACHE_KIB).map(|()| st))
                    .and_then(|st| st.baseline_verified().map(|v| (st, v)))
                    .map_err(|e| tracing::warn!(error = %e, "FIM baseline not readable for a metadata-first scan; every file is hashed"))
                    .ok(),
            };
            if lookups && baseline.is_none() {
                counters.lookups_incomplete.store(true, Ordering::Relaxed);
            }
            let prune = staging == Staging::Changes
                && baseline.as_ref().is_some_and(|(_, verified)| *verified || policy.baseline_key.is_none());
            if staging == Staging::Changes && !prune {
                counters.lookups_incomplete.store(true, Ordering::Relaxed);
            }
            (baseline, prune)
        };
        // Metadata first, every entry goes to the hashing threads anyway (`lookups`): they
        // stat what is not a directory (see `Walk::list`). A resumed scan compares each
        // entry's stat with its staged row here, so it keeps the walk's own.
        let defer_stat = opts.rehash == Rehash::Changed && lookups && !resume;
        // A full scan (not resumed: that compares each stat with its staged row in the walk)
        // opens the regular files getdents lists before examining them.
        let open_regular_first = opts.rehash == Rehash::All && !resume;
        let walk = Walk {
            policy,
            root,
            defer_stat,
            open_regular_first,
            counters: &counters,
            held: &held,
            cancel: opts.cancel,
            state_dir,
        };
        // Metadata first and no MD5 to take (no lanes to share): every thread walks, and
        // examines what it lists itself (see `walk`).
        if defer_stat && md5.is_none() {
            drop(job_rx);
            drop(job_tx);
            let stack = &shared;
            let mut walkers = Vec::new();
            for i in 0..threads {
                let tx = write_tx.clone();
                let (baseline, prune) = open_lookups();
                let (counters, limiter) = (&counters, &limiter);
                let pacing = Pacing { pace: opts.pace, cancel: opts.cancel };
                let rehash = opts.rehash;
                let spawned =
                    std::thread::Builder::new().name(format!("fim-walk-{i}")).spawn_scoped(s, move || {
                        let finish = Finish { tx: &tx, counters, links, prune, md5: None };
                        let mut buf = guestward_core::ReadBuffer::new(crate::record::READ_BUFFER_BYTES);
                        let mut examine = |jobs: Vec<Job>| {
                            examine_here(
                                jobs,
                                baseline.as_ref(),
                                rehash,
                                &finish,
                                &mut buf,
                                &mut |n, paced| account(limiter, pacing, counters, n, paced),
                            )
                        };
                        let mut out = Out::new(JobsTo::Here(&mut examine), &tx, true, None);
                        walk::walk_shared(&walk, stack, &mut out);
                    });
                match spawned {
                    Ok(h) => walkers.push(h),
                    Err(e) => {
                        if walkers.is_empty() {
                            stack.stop();
                            drop(write_tx);
                            return Err(ScanError::Thread(e));
                        }
                    }
                }
            }
            drop(write_tx);
            let mut died = None;
            for w in walkers {
                if w.join().is_err() {
                    died = Some("fim-walk");
                }
            }
            if opts.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                cancelled = true;
            }
            counters.walk_done.store(true, Ordering::Relaxed);
            match writer.join() {
                Ok(r) => r.map_err(ScanError::Store)?,
                Err(_) => return Err(ScanError::ThreadDied("fim-writer")),
            }
            return died.map_or(Ok(()), |t| Err(ScanError::ThreadDied(t)));
        }
        let mut workers = Vec::new();
        for i in 0..threads {
            let rx = Arc::clone(&job_rx);
            let tx = write_tx.clone();
            let counters = &counters;
            let limiter = &limiter;
            let pacing = Pacing { pace: opts.pace, cancel: opts.cancel };
            let (baseline, prune) = open_lookups();
            let rehash = opts.rehash;
            let spawned =
                std::thread::Builder::new().name(format!("fim-hash-{i}")).spawn_scoped(s, move || {
                    worker_loop(
                        &rx,
                        &tx,
                        counters,
                        limiter,
                        pacing,
                        Lookups { baseline, rehash, prune, md5, md5_lanes, links, balance: (balance, i) },
                    )
                });
            match spawned {
                Ok(h) => workers.push(h),
                Err(e) => {
                    if workers.is_empty() {
                        return Err(ScanError::Thread(e));
                    }
                }
            }
        }
        let walk_tx = write_tx.clone();
        drop(write_tx);
        let mut out = Out::new(JobsTo::Queue(&job_tx), &walk_tx, lookups, resume.then_some(&reader));
        // The hashing threads hold the only receivers of the jobs: when they are all gone (the
        // writer failed, and they stop on their next send to it), the walk's next send fails
        // and the walk stops, instead of waiting forever for room in the queue.
        drop(job_rx);
        for t in targets {
            if opts.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                cancelled = true;
                break;
            }
            if out.gone {
                break;
            }
            walk::walk_target(&walk, t, &mut out);
        }
        out.flush();
        drop(out);
        if opts.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            cancelled = true;
        }
        counters.walk_done.store(true, Ordering::Relaxed);
        drop(job_tx);
        drop(walk_tx);
        // A worker that died lost the file it was hashing: never compare such a scan.
        let mut died = None;
        for w in workers {
            if w.join().is_err() {
                died = Some("fim-hash");
            }
        }
        // Set while the files were being hashed, after the walk: the hashing stopped early.
        if opts.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            cancelled = true;
        }
        match writer.join() {
            Ok(r) => r.map_err(ScanError::Store)?,
            Err(_) => return Err(ScanError::ThreadDied("fim-writer")),
        }
        died.map_or(Ok(()), |t| Err(ScanError::ThreadDied(t)))
    });
    result?;
    let (problem_count, problems) = counters.problems.lock().map(|g| g.clone()).unwrap_or_default();
    let found =
        (staging == Staging::Changes && !resume && !counters.lookups_incomplete.load(Ordering::Relaxed))
            .then(|| counters.found.load(Ordering::Relaxed));
    let stats = ScanStats {
        entries: counters.done.load(Ordering::Relaxed) + counters.pruned.load(Ordering::Relaxed),
        resumed: counters.resumed.load(Ordering::Relaxed),
        bytes_hashed: counters.bytes.load(Ordering::Relaxed),
        problem_count,
        problems,
        started: Some(started),
        duration_ms: u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
        cancelled,
        rehash: opts.rehash,
        files_hashed: counters.hashed.load(Ordering::Relaxed),
        reused: counters.reused.load(Ordering::Relaxed),
    };
    Ok(Staged { stats, pruned: counters.pruned.load(Ordering::Relaxed), found })
}

/// What a hashing thread obeys besides the rate limit: the host's pace (self-limits) and the
/// scan's cancel flag, which cuts a rest short.
#[derive(Clone, Copy)]
struct Pacing<'a> {
    pace: Option<&'a crate::pace::Pace>,
    cancel: Option<&'a AtomicBool>,
}

/// What a hashing thread does with the baseline: its own connection to look records up (and
/// whether they are verified), whether unchanged entries reuse them, whether entries equal to
/// them are left unstaged.
struct Lookups<'a> {
    baseline: Option<(Store, bool)>,
    rehash: Rehash,
    prune: bool,
    md5: Option<WantsMd5<'a>>,
    /// MD5 lanes the thread may hold (see [`md5_lanes_per_thread`]).
    md5_lanes: usize,
    links: &'a HardLinks,
    /// The MD5 lanes' files handed between the threads, and this thread's number in it.
    balance: (&'a Balance, usize),
}

/// A hashing thread's membership of the [`Balance`]: it leaves when it returns, however.
struct Member<'a> {
    balance: &'a Balance,
    me: usize,
    taking_jobs: bool,
    left: bool,
}

impl Drop for Member<'_> {
    fn drop(&mut self) {
        if !self.left {
            self.balance.leave(self.me, self.taking_jobs);
        }
    }
}

/// MD5 lanes each of `threads` hashing threads may hold, each an open file: all of
/// [`guestward_digest::MD5_LANES`] unless that would take more than a quarter of the process's
/// descriptor limit (`RLIMIT_NOFILE`, 1,024 for a service unless raised): with one thread per
/// CPU, a 96-vCPU instance would otherwise hold 1,700 files open and fail to open the next.
/// Fewer than three is none: MD5 chains go to SIMD lanes three at a time or more.
fn md5_lanes_per_thread(threads: usize) -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    md5_lanes_within(soft, threads)
}

/// [`md5_lanes_per_thread`] under a descriptor limit of `soft`.
fn md5_lanes_within(soft: u64, threads: usize) -> usize {
    let budget = usize::try_from(soft / 4).unwrap_or(usize::MAX);
    // The lane of a large file and the file read beside the lanes are open too.
    let lanes = (budget / threads.max(1)).saturating_sub(2).min(guestward_digest::MD5_LANES);
    if lanes < 3 { 0 } else { lanes }
}

/// Most inodes with several links remembered per scan: the links of one inode are nearly
/// always in one directory, met one after another, so a small map finds them; when it is
/// full it starts over.
const MAX_REMEMBERED_LINKS: usize = 4096;

/// Records of files with more than one hard link hashed in this scan, by (device, inode): a
/// further link to the same inode with the same size, mtime, ctime, mode and owner is the same
/// content (the kernel moves ctime on every change, see `FileRecord::reused`), so it is not
/// read again. /usr here has 0.86 GB of such links (Mesa's 26 MB driver under 13 names, git's
/// 3.8 MB binary under 143).
#[derive(Default)]
struct HardLinks(Mutex<std::collections::HashMap<(u64, u64), FileRecord>>);

impl HardLinks {
    fn key(st: &nix::sys::stat::FileStat) -> Option<(u64, u64)> {
        (st.st_nlink > 1 && FileKind::from_mode(st.st_mode) == FileKind::File)
            .then_some((st.st_dev, st.st_ino))
    }

    /// The record of another link to the inode `st` describes, hashed earlier in this scan and
    /// unchanged since; `md5`: it must carry an MD5.
    fn find(&self, st: &nix::sys::stat::FileStat, md5: bool) -> Option<FileRecord> {
        let key = Self::key(st)?;
        let now = FileRecord::from_stat(st);
        let map = self.0.lock().ok()?;
        let rec = map.get(&key)?;
        (rec.unchanged_in(&now) && (!md5 || rec.md5.is_some())).then(|| rec.clone())
    }

    fn remember(&self, st: &nix::sys::stat::FileStat, rec: &FileRecord) {
        let Some(key) = Self::key(st) else { return };
        if rec.flags
            & (crate::record::FLAG_UNSTABLE
                | crate::record::FLAG_UNREADABLE
                | crate::record::FLAG_HASH_SKIPPED)
            != 0
        {
            return;
        }
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= MAX_REMEMBERED_LINKS {
                map.clear();
            }
            map.insert(key, rec.clone());
        }
    }
}

/// Smallest file a hashing thread reads in a [`Lane`]: one read buffer or more, so that it
/// spans several reads of the files it is read with.
const LANE_MIN_BYTES: u64 = crate::record::READ_BUFFER_BYTES as u64;

/// Smallest file whose MD5 is taken that is read in an MD5 lane. A round of the lanes reads as
/// much of each file as the shortest has, so a file of a few blocks would end most rounds early
/// and cost each lane a read for little; the 2% of dpkg's bytes in smaller files are hashed as
/// they are read (measured over this machine's dpkg files, docs/benchmarks.md).
const MD5_LANE_MIN_BYTES: u64 = 4096;

/// A job whose file is being read in a [`Lane`], and what its record needs when it is done.
struct InLane {
    job: Job,
    stat: FileStat,
    prev: Option<FileRecord>,
    read_opts: ReadOptions,
    lane: Lane,
}

/// Smallest file a hashing thread hands to another for its MD5 lanes (see [`Balance`]).
const HANDOFF_MIN_BYTES: u64 = 1 << 20;

/// A file opened for the MD5 lanes, and what its record needs, on its way to another thread.
struct Pending {
    job: Job,
    stat: FileStat,
    prev: Option<FileRecord>,
    read_opts: ReadOptions,
    file: File,
    /// The thread that opened it.
    from: usize,
}

impl Pending {
    /// Bytes to read: the size when it was opened.
    fn size(&self) -> u64 {
        u64::try_from(self.stat.st_size).unwrap_or(0)
    }
}

/// A file on its way to another thread's MD5 lanes.
#[allow(
    clippy::large_enum_variant,
    reason = "the common variant, inline in a queue of at most a thread's MD5 lanes"
)]
enum Waiting {
    /// Opened by a thread still taking jobs, not read yet.
    Opened(Pending),
    /// Part read, its hashes so far with it: shared by a thread out of jobs with one that has
    /// nothing left to read (see [`Balance::share`]). Boxed: its hash states are kilobytes.
    Reading { lane: Box<InLane>, from: usize },
}

impl Waiting {
    /// Bytes left to hash.
    fn size(&self) -> u64 {
        match self {
            Waiting::Opened(p) => p.size(),
            Waiting::Reading { lane, .. } => lane.lane.left(),
        }
    }

    /// The thread that handed it over.
    fn from(&self) -> usize {
        match self {
            Waiting::Opened(p) => p.from,
            Waiting::Reading { from, .. } => *from,
        }
    }
}

/// Rounds a thread out of jobs reads its MD5 lanes before it looks whether another thread
/// waits with nothing to read: about 1 MiB a lane (16 KiB buffers), some milliseconds.
const SHARE_CHECK_ROUNDS: usize = 64;

/// Keeps the bytes the hashing threads' MD5 lanes have left about equal, so that they finish
/// together. Files join a thread's lanes as the walk meets them, and 16 lanes advance together,
/// so a large file met late is far from its end when the jobs run out: over a first baseline
/// of /usr one thread was left alone with 282 MB in five files against the other's 58 MB, for
/// 0.2-0.4 s at the end (docs/benchmarks.md). A thread about to add a large file to its lanes
/// while they hold more than another thread's and the file together hands the file over
/// instead, opened. At the very end, the files a thread is reading are shared too: a thread
/// out of jobs whose lanes hold several files hands the larger ones, part read, to a thread
/// with nothing left ([`Self::share`]). A thread with nothing left waits for either kind until
/// every thread is waiting, when none can hand it anything more.
struct Balance {
    /// Bytes each thread's MD5 lanes have left, as it last said (`u64::MAX`: gone).
    left: Vec<AtomicU64>,
    /// Most files waiting to be taken: each holds a descriptor (the MD5 lanes' budget of them
    /// is a thread's, see [`md5_lanes_per_thread`]).
    max_waiting: usize,
    state: Mutex<Handed>,
    /// A file is handed over, a thread stops taking jobs or leaves, or the last one to wait
    /// leaves: a waiting thread looks again.
    changed: std::sync::Condvar,
    /// `state.files.len()`, to look without the lock.
    waiting: std::sync::atomic::AtomicUsize,
    /// `state.idle`, to look without the lock.
    idle: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct Handed {
    files: Vec<Waiting>,
    /// Their bytes: another thread's lanes will hold them too.
    bytes: u64,
    /// Threads that take handed files (from their start until they return).
    alive: usize,
    /// Threads still taking jobs.
    taking_jobs: usize,
    /// Threads waiting with nothing left to read ([`Balance::wait_for_more`]).
    idle: usize,
}

impl Balance {
    /// For `threads` threads of `md5_lanes` MD5 lanes each.
    fn new(threads: usize, md5_lanes: usize) -> Self {
        Self {
            left: (0..threads).map(|_| AtomicU64::new(u64::MAX)).collect(),
            max_waiting: md5_lanes,
            state: Mutex::default(),
            changed: std::sync::Condvar::new(),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            idle: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Handed> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Thread `me` starts: it takes jobs and handed files until [`Self::leave`].
    fn join(&self, me: usize) {
        let mut st = self.state();
        st.alive += 1;
        st.taking_jobs += 1;
        self.say_left(me, 0);
    }

    /// Thread `me` returns, whatever the reason (it takes nothing more).
    fn leave(&self, me: usize, taking_jobs: bool) {
        let mut st = self.state();
        st.alive -= 1;
        if taking_jobs {
            st.taking_jobs -= 1;
        }
        self.say_left(me, u64::MAX);
        self.changed.notify_all();
    }

    fn say_left(&self, me: usize, bytes: u64) {
        if let Some(l) = self.left.get(me) {
            l.store(bytes, Ordering::Relaxed);
        }
    }

    /// Hands `p` to another thread when the lanes of `me` hold `mine` bytes, more than
    /// another's, the files waiting and `p` together; else gives it back, to be kept. Files
    /// wait until a thread takes them (one busy reading its lanes takes them once one is done),
    /// so those waiting count as the other's, and at most `max_waiting` wait.
    fn hand_off(&self, me: usize, mine: u64, p: Pending) -> Option<Pending> {
        let size = p.size();
        if size < HANDOFF_MIN_BYTES {
            return Some(p);
        }
        let others = self.left.iter().enumerate().filter(|(i, _)| *i != me);
        let least = others.map(|(_, l)| l.load(Ordering::Relaxed)).min().unwrap_or(u64::MAX);
        let mut st = self.state();
        // Only while another thread will take it: one that left takes nothing.
        if st.alive < 2
            || st.files.len() >= self.max_waiting
            || mine <= least.saturating_add(st.bytes).saturating_add(size)
        {
            return Some(p);
        }
        st.bytes += size;
        st.files.push(Waiting::Opened(p));
        self.waiting.store(st.files.len(), Ordering::Relaxed);
        self.changed.notify_one();
        None
    }

    /// Thread `me`, out of jobs, hands some of the files its MD5 lanes are reading to a thread
    /// that has nothing left, when one waits and nothing waits for it: the one with the most
    /// left, and the next largest while what it hands stays below what it keeps. Only while
    /// it keeps at least one, and only files of [`HANDOFF_MIN_BYTES`] or more left. Returns
    /// the bytes handed over.
    ///
    /// Without this, the thread whose lanes held the most when the jobs ran out read them
    /// alone while the other core idled: 0.09-0.23 s at the end of a first baseline of /usr
    /// (docs/benchmarks.md).
    fn share(&self, me: usize, lanes: &mut Vec<InLane>) -> u64 {
        if self.idle.load(Ordering::Relaxed) == 0
            || self.waiting.load(Ordering::Relaxed) != 0
            || lanes.len() < 2
        {
            return 0;
        }
        let mut st = self.state();
        if st.idle == 0 || !st.files.is_empty() {
            return 0;
        }
        let mut kept = left_in(lanes);
        let mut given = 0u64;
        while lanes.len() > 1 && st.files.len() < self.max_waiting {
            let Some((i, most)) =
                lanes.iter().map(|l| l.lane.left()).enumerate().max_by_key(|&(_, left)| left)
            else {
                break;
            };
            // The largest goes even if it is more than what stays: the giver is then done
            // sooner, the taker no later than the giver would have been with it.
            if most < HANDOFF_MIN_BYTES || (given > 0 && given + most > kept - most) {
                break;
            }
            let lane = lanes.swap_remove(i);
            given += most;
            kept -= most;
            st.files.push(Waiting::Reading { lane: Box::new(lane), from: me });
        }
        if given > 0 {
            st.bytes += given;
            self.waiting.store(st.files.len(), Ordering::Relaxed);
            self.changed.notify_all();
        }
        given
    }

    /// A file handed over by another thread than `me` (by any thread when `any`).
    fn take(&self, me: usize, any: bool) -> Option<Waiting> {
        if self.waiting.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut st = self.state();
        let i = st.files.iter().position(|p| any || p.from() != me)?;
        let p = st.files.swap_remove(i);
        st.bytes = st.bytes.saturating_sub(p.size());
        self.waiting.store(st.files.len(), Ordering::Relaxed);
        Some(p)
    }

    /// Thread `me` has taken its last job.
    fn out_of_jobs(&self) {
        let mut st = self.state();
        st.taking_jobs -= 1;
        self.changed.notify_all();
    }

    /// Waits, with nothing left to read, for a file handed over: false (and thread `me` has
    /// left) once no thread takes jobs and every thread there is waits too, so none will hand
    /// one over.
    fn wait_for_more(&self, me: usize) -> bool {
        self.say_left(me, 0);
        let mut st = self.state();
        st.idle += 1;
        self.idle.store(st.idle, Ordering::Relaxed);
        loop {
            if !st.files.is_empty() {
                st.idle -= 1;
                self.idle.store(st.idle, Ordering::Relaxed);
                return true;
            }
            if st.taking_jobs == 0 && st.idle >= st.alive {
                st.idle -= 1;
                st.alive -= 1;
                self.idle.store(st.idle, Ordering::Relaxed);
                self.say_left(me, u64::MAX);
                self.changed.notify_all();
                return false;
            }
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Bytes `lanes` have left to hash.
fn left_in(lanes: &[InLane]) -> u64 {
    lanes.iter().map(|l| l.lane.left()).sum()
}

/// What a hashing thread does with a record once read.
struct Finish<'a> {
    tx: &'a SyncSender<Write>,
    counters: &'a Counters,
    links: &'a HardLinks,
    prune: bool,
    md5: Option<WantsMd5<'a>>,
}

impl Finish<'_> {
    /// Stages (or prunes) the record `rec` of `host`, read with the error `err`; false when the
    /// writer is gone.
    fn record(
        &self,
        records: &mut Vec<(PathBuf, FileRecord)>,
        host: PathBuf,
        prev: Option<&FileRecord>,
        stat: &FileStat,
        hashes: bool,
        (mut rec, err): (FileRecord, Option<std::io::Error>),
    ) -> bool {
        let counters = self.counters;
        if hashes && rec.flags & crate::record::FLAG_HASH_SKIPPED == 0 {
            counters.hashed.fetch_add(1, Ordering::Relaxed);
        }
        // A regular file read whole without a change seen: what the trust anchor may judge it by.
        let sound = err.is_none()
            && rec.kind == FileKind::File
            && rec.flags & (crate::record::FLAG_UNSTABLE | crate::record::FLAG_UNREADABLE) == 0;
        // An MD5 here, before one is carried over from the baseline, was taken in this scan's
        // read of the file (or of its inode, under another link: the links are remembered
        // before the carrying too).
        let taken_here = rec.md5;
        if let (Some(md5), Some(m), true) = (taken_here, self.md5, sound) {
            m.taken(&host, &md5);
        }
        if hashes && err.is_none() {
            self.links.remember(stat, &rec);
        }
        rec.carry_md5(prev);
        // Carried over: this read's content digests are the baseline row's, so its MD5 is the
        // row's. Told only in a pruned scan, whose baseline rows are verified with the key (or
        // there is none): the rows the anchor would otherwise read it back from, one lookup
        // per package file (`ScannedContent`).
        if let (None, Some(md5), Some(m), true, true) = (taken_here, rec.md5, self.md5, sound, self.prune) {
            m.carried(&host, &md5);
        }
        match err {
            // Replaced between the walk's fstatat and our open: nothing of what is there
            // now was examined, so keep the baseline record (as for an unreadable
            // directory) and say so; the change itself is seen by the next scan or
            // inotify event.
            Some(e) if dirfd::is_changed_during_scan(&e) => {
                counters.problem(problem(&host, &e));
                if !records.is_empty() && self.tx.send(Write::Records(std::mem::take(records))).is_err() {
                    return false;
                }
                if self.tx.send(Write::CarryOver(host)).is_err() {
                    return false;
                }
            }
            Some(e) => {
                counters.problem(problem(&host, &e));
                records.push((host, rec));
            }
            // Read again and found as recorded: nothing to stage (see `Staging::Changes`).
            None if self.prune && prev == Some(&rec) => {
                counters.pruned.fetch_add(1, Ordering::Relaxed);
            }
            None => records.push((host, rec)),
        }
        true
    }
}

/// Bytes about to be read, for the rate limit, the host's pace and the progress. Paced once
/// per file (`paced`): a file written during the rest is hashed again (its stat changed), and
/// that attempt must not owe the rest a second time.
fn account(limiter: &Limiter, pacing: Pacing<'_>, counters: &Counters, n: u64, paced: &mut bool) {
    limiter.take(n);
    if let Some(pace) = pacing.pace.filter(|_| !*paced) {
        *paced = true;
        pace.pause(n, pacing.cancel);
    }
    counters.bytes.fetch_add(n, Ordering::Relaxed);
}

/// An entry examined, whose content is to be read: its baseline record did not stand.
struct ToRead {
    job: Job,
    stat: FileStat,
    prev: Option<FileRecord>,
    /// Opened by the examination (see `Job::open_first`).
    opened: Option<File>,
    /// A regular file whose digests the rule asks for.
    hashes: bool,
    read_opts: ReadOptions,
    /// The record of another link to the same inode, read in this scan.
    linked: Option<FileRecord>,
}

/// Examines `job` (with its baseline record `prev`, if looked up): its metadata, taken here
/// unless the walk took it. `None` when there is nothing to read: it is gone since the
/// listing (or cannot be examined: reported), or, metadata first, its metadata is as its
/// baseline record says and the record stands (pushed to `records` unless pruned).
fn examine(
    job: Job,
    prev: Option<FileRecord>,
    rehash: Rehash,
    finish: &Finish<'_>,
    records: &mut Vec<(PathBuf, FileRecord)>,
) -> Option<ToRead> {
    let counters = finish.counters;
    let mut opened = None;
    let examined = match job.stat {
        Some(st) => Ok(st),
        None => match job.open_first.then(|| crate::record::open_regular(&job.dir, &job.name)).flatten() {
            Some((file, st)) => {
                opened = Some(file);
                Ok(st)
            }
            // Not a readable regular file now: examined as any other entry.
            None => dirfd::stat_at(&job.dir, &job.name),
        },
    };
    let stat = match examined {
        Ok(st) => st,
        Err(e) => {
            // Gone since the listing (or unreadable): as if the walk had not met it, so the
            // diff looks for its baseline row (see `Staged::found`).
            if prev.is_some() {
                counters.found.fetch_sub(1, Ordering::Relaxed);
            }
            if e.kind() != std::io::ErrorKind::NotFound {
                counters.problem(problem(&job.host, &e));
            }
            return None;
        }
    };
    let reused = prev
        .as_ref()
        .filter(|_| rehash == Rehash::Changed)
        .and_then(|prev| FileRecord::reused(prev, &stat, job.opts));
    if let Some(rec) = reused {
        counters.reused.fetch_add(1, Ordering::Relaxed);
        if finish.prune {
            counters.pruned.fetch_add(1, Ordering::Relaxed);
        } else {
            records.push((job.host, rec));
        }
        return None;
    }
    let hashes = FileKind::from_mode(stat.st_mode) == FileKind::File && job.opts.attributes.hashes();
    // An MD5 known for this content is carried over when the record is finished (same
    // content digests); one is taken in this read only when none is, for the files asked for.
    let known_md5 = prev.as_ref().filter(|p| p.md5.is_some() && p.same_stat(&FileRecord::from_stat(&stat)));
    let read_opts = ReadOptions {
        md5: hashes && known_md5.is_none() && finish.md5.is_some_and(|m| m.wants(&job.host)),
        ..job.opts
    };
    let linked = if hashes { finish.links.find(&stat, read_opts.md5) } else { None };
    Some(ToRead { job, stat, prev, opened, hashes, read_opts, linked })
}

/// Reads an examined entry whole (`opened` by the examination, if it was), or takes the
/// record of its other link read in this scan (`linked`). Paced once per file (see [`account`]).
#[allow(clippy::too_many_arguments)]
fn read_examined(
    job: &mut Job,
    opened: Option<File>,
    stat: &FileStat,
    read_opts: ReadOptions,
    linked: Option<FileRecord>,
    buf: &mut guestward_core::ReadBuffer,
    account: &mut dyn FnMut(u64, &mut bool),
    hashing: Hashing<'_>,
) -> (FileRecord, Option<std::io::Error>) {
    if let Some(rec) = linked {
        return (rec, None);
    }
    let mut paced = false;
    read_record_opened(
        &job.dir,
        &job.name,
        opened,
        job.xattrs.take(),
        stat,
        read_opts,
        None,
        buf,
        &mut |n| account(n, &mut paced),
        hashing,
    )
}

/// Examines a batch of `jobs` on the walking thread (see `walk`): looked up, examined, and
/// read whole if changed, each in turn. False when the writer is gone.
fn examine_here(
    jobs: Vec<Job>,
    baseline: Option<&(Store, bool)>,
    rehash: Rehash,
    finish: &Finish<'_>,
    buf: &mut guestward_core::ReadBuffer,
    account: &mut dyn FnMut(u64, &mut bool),
) -> bool {
    let prevs = lookup_batch(baseline, &jobs, finish.counters);
    let mut records = Vec::new();
    for (job, prev) in jobs.into_iter().zip(prevs) {
        let Some(ToRead { mut job, stat, prev, opened, hashes, read_opts, linked }) =
            examine(job, prev, rehash, finish, &mut records)
        else {
            continue;
        };
        let read =
            read_examined(&mut job, opened, &stat, read_opts, linked, buf, account, Hashing::Read(None));
        if !finish.record(&mut records, job.host, prev.as_ref(), &stat, hashes, read) {
            return false;
        }
    }
    records.is_empty() || finish.tx.send(Write::Records(records)).is_ok()
}

fn worker_loop(
    rx: &Mutex<Receiver<Vec<Job>>>,
    tx: &SyncSender<Write>,
    counters: &Counters,
    limiter: &Limiter,
    pacing: Pacing<'_>,
    lookups: Lookups<'_>,
) {
    let Lookups { baseline, rehash, prune, md5, md5_lanes: max_md5_lanes, links, balance: (balance, me) } =
        lookups;
    balance.join(me);
    let mut member = Member { balance, me, taking_jobs: true, left: false };
    let finish = Finish { tx, counters, links, prune, md5 };
    let mut buf = guestward_core::ReadBuffer::new(crate::record::READ_BUFFER_BYTES);
    // Bytes about to be read, for the rate limit, the host's pace and the progress. Paced
    // once per file: a file written during the rest is hashed again (its stat changed), and
    // that attempt must not owe the rest a second time.
    let account = |n: u64, paced: &mut bool| account(limiter, pacing, counters, n, paced);
    // One large file read in a lane while the next files are read (see `Lane`).
    let mut in_lane: Option<InLane> = None;
    // Files whose MD5 is taken (dpkg's, in a first baseline), read together in lanes of their
    // own once there are `max_md5_lanes` of them (the engine's 16 SIMD lanes, unless the
    // descriptor budget allows fewer): MD5 is a single chain per file at about 0.8 GB/s, 16
    // chains side by side run at about 6 (`guestward_digest`).
    let mut md5_lanes: Vec<InLane> = Vec::with_capacity(max_md5_lanes);
    // Buffers of finished lanes, for the next: one allocation per thread and lane, not per file
    // (of two sizes: the large-file lane's and the MD5 lanes').
    let mut spare: Vec<guestward_core::ReadBuffer> = Vec::new();
    // A lane's record, once it has read its file: checked and completed like any other read.
    let complete = |done: InLane,
                    buf: &mut guestward_core::ReadBuffer,
                    spare: &mut Vec<guestward_core::ReadBuffer>,
                    records: &mut Vec<_>|
     -> bool {
        let InLane { job, stat, prev, read_opts, lane } = done;
        let (file, digests, lane_buf) = lane.into_digests();
        spare.push(lane_buf);
        let mut paced = true;
        let read = read_record_opened(
            &job.dir,
            &job.name,
            Some(file),
            None,
            &stat,
            read_opts,
            None,
            buf,
            &mut |n| account(n, &mut paced),
            Hashing::Done(digests),
        );
        finish.record(records, job.host, prev.as_ref(), &stat, true, read)
    };
    // A file for the MD5 lanes joins them; once they are full, they are read together until
    // one is done (and its record completed). False: the writer is gone.
    let join_md5_lanes = |p: Waiting,
                          md5_lanes: &mut Vec<InLane>,
                          buf: &mut guestward_core::ReadBuffer,
                          spare: &mut Vec<guestward_core::ReadBuffer>,
                          records: &mut Vec<_>|
     -> bool {
        match p {
            Waiting::Opened(p) => {
                let size = p.size();
                let Pending { job, stat, prev, read_opts, file, .. } = p;
                account(size, &mut false);
                let lane = Lane::new(
                    file,
                    size,
                    read_opts,
                    spare_buffer(spare, crate::record::MD5_LANE_BUFFER_BYTES),
                );
                md5_lanes.push(InLane { lane, job, stat, prev, read_opts });
            }
            // Accounted for by the thread that opened it.
            Waiting::Reading { lane, .. } => md5_lanes.push(*lane),
        }
        let read = md5_lanes.len() < max_md5_lanes
            || read_md5_lanes(md5_lanes, usize::MAX, &mut |done| complete(done, buf, spare, records));
        balance.say_left(me, left_in(md5_lanes));
        read
    };
    loop {
        // A cancel (the daemon stopping, Ctrl-C on a one-shot command) once went unseen after
        // the walk: every file queued was still hashed, at `initial_scan_rate` for minutes.
        // The jobs left are dropped with the queue; a cancelled scan is compared with nothing.
        if pacing.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return;
        }
        // The lock is held only while taking one batch; hashing happens outside it.
        let jobs = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(_) => return,
        };
        let Ok(jobs) = jobs else {
            // No more jobs: the file in the large-file lane is read to its end alone, and the
            // MD5 lanes left are read together to their ends, unless the scan was cancelled (a
            // cancelled scan is compared with nothing; a resumed one reads what it did not
            // stage).
            if pacing.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return;
            }
            let mut records = Vec::with_capacity(1 + md5_lanes.len());
            if let Some(mut last) = in_lane.take() {
                last.lane.finish_alone();
                if !complete(last, &mut buf, &mut spare, &mut records) {
                    return;
                }
            }
            balance.out_of_jobs();
            member.taking_jobs = false;
            loop {
                // Files the threads still taking jobs hand over join the lanes as they come;
                // its own only once it has nothing else to read (it may have just shared them).
                while let Some(p) = balance.take(me, md5_lanes.is_empty()) {
                    if !join_md5_lanes(p, &mut md5_lanes, &mut buf, &mut spare, &mut records) {
                        return;
                    }
                }
                if !md5_lanes.is_empty() {
                    if !read_md5_lanes(&mut md5_lanes, SHARE_CHECK_ROUNDS, &mut |done| {
                        complete(done, &mut buf, &mut spare, &mut records)
                    }) {
                        return;
                    }
                    balance.share(me, &mut md5_lanes);
                    balance.say_left(me, left_in(&md5_lanes));
                    continue;
                }
                // The writer has what is done while this thread waits.
                if !records.is_empty() && tx.send(Write::Records(std::mem::take(&mut records))).is_err() {
                    return;
                }
                if !balance.wait_for_more(me) {
                    member.left = true;
                    return;
                }
            }
        };
        let mut records = Vec::with_capacity(jobs.len());
        let prevs = lookup_batch(baseline.as_ref(), &jobs, counters);
        for (job, prev) in jobs.into_iter().zip(prevs) {
            if let Some(p) = balance.take(me, false)
                && !join_md5_lanes(p, &mut md5_lanes, &mut buf, &mut spare, &mut records)
            {
                return;
            }
            let Some(ToRead { mut job, stat, prev, opened, hashes, read_opts, linked }) =
                examine(job, prev, rehash, &finish, &mut records)
            else {
                continue;
            };
            let mut opened = opened;
            let size = u64::try_from(stat.st_size).unwrap_or(0);
            // A file opened here is read in a lane, not by itself, when it is of one of two
            // kinds. Never one with other hard links: those are met next, and find its record
            // (`HardLinks`) only once it is read.
            // - Its MD5 is taken: it joins the MD5 lanes; once they are full, they are read
            //   together until one is done (and its record completed).
            // - It is large: it is read alongside the next files when the large-file lane is
            //   free, else together with the file in it until one of the two is read.
            let laneable =
                linked.is_none() && hashes && stat.st_nlink == 1 && size <= read_opts.max_file_size_bytes;
            let md5_lane = read_opts.md5 && max_md5_lanes > 0 && size >= MD5_LANE_MIN_BYTES;
            if laneable
                && (md5_lane || size >= LANE_MIN_BYTES)
                && let Some(file) = opened.take()
            {
                if md5_lane {
                    let p = Pending { job, stat, prev, read_opts, file, from: me };
                    let Some(p) = balance.hand_off(me, left_in(&md5_lanes), p) else { continue };
                    if !join_md5_lanes(Waiting::Opened(p), &mut md5_lanes, &mut buf, &mut spare, &mut records)
                    {
                        return;
                    }
                    continue;
                }
                account(size, &mut false);
                let lane = Lane::new(
                    file,
                    size,
                    read_opts,
                    spare_buffer(&mut spare, crate::record::LANE_BUFFER_BYTES),
                );
                let mut new = InLane { lane, job, stat, prev, read_opts };
                let Some(mut old) = in_lane.take() else {
                    in_lane = Some(new);
                    continue;
                };
                Lane::read_many(&mut [&mut old.lane, &mut new.lane]);
                for l in [old, new] {
                    if !l.lane.done() {
                        in_lane = Some(l);
                    } else if !complete(l, &mut buf, &mut spare, &mut records) {
                        return;
                    }
                }
                continue;
            }
            let read = read_examined(
                &mut job,
                opened,
                &stat,
                read_opts,
                linked,
                &mut buf,
                &mut |n, paced| account(n, paced),
                Hashing::Read(in_lane.as_mut().map(|l| &mut l.lane)),
            );
            if !finish.record(&mut records, job.host, prev.as_ref(), &stat, hashes, read) {
                return;
            }
            if let Some(done) = in_lane.take_if(|l| l.lane.done())
                && !complete(done, &mut buf, &mut spare, &mut records)
            {
                return;
            }
        }
        if !records.is_empty() && tx.send(Write::Records(records)).is_err() {
            return;
        }
    }
}

/// A buffer of `len` bytes for a new lane: a finished lane's if one of that size is spare.
fn spare_buffer(spare: &mut Vec<guestward_core::ReadBuffer>, len: usize) -> guestward_core::ReadBuffer {
    match spare.iter().position(|b| b.len() == len) {
        Some(i) => spare.swap_remove(i),
        None => guestward_core::ReadBuffer::new(len),
    }
}

/// Reads the MD5 lanes together until one is done (or `rounds` rounds were read), and hands
/// each done one to `complete` (false: the writer is gone, and so is the scan).
fn read_md5_lanes(lanes: &mut Vec<InLane>, rounds: usize, complete: &mut dyn FnMut(InLane) -> bool) -> bool {
    let mut reading: Vec<&mut Lane> = lanes.iter_mut().map(|l| &mut l.lane).collect();
    Lane::read_many_at_most(&mut reading, rounds);
    lanes.extract_if(.., |l| l.lane.done()).all(complete)
}

/// The baseline records of a batch of entries (metadata-first scans; all `None` otherwise),
/// looked up in one read transaction.
fn lookup_batch(
    baseline: Option<&(Store, bool)>,
    jobs: &[Job],
    counters: &Counters,
) -> Vec<Option<FileRecord>> {
    let Some((store, verify)) = baseline else {
        return jobs.iter().map(|_| None).collect();
    };
    let paths: Vec<&[u8]> = jobs.iter().map(|job| job.host.as_os_str().as_bytes()).collect();
    let looked = store.in_read_transaction(|store| {
        store
            .baseline_records(&paths, *verify)
            .into_iter()
            .map(|looked| match looked {
                Ok(Some(prev)) => {
                    counters.found.fetch_add(1, Ordering::Relaxed);
                    Some(prev)
                }
                Ok(None) => None,
                // A row that cannot be read or verified is not reused: the entry is read, and
                // the diff reports the row itself.
                Err(_) => {
                    counters.lookups_incomplete.store(true, Ordering::Relaxed);
                    None
                }
            })
            .collect()
    });
    looked.unwrap_or_else(|_| {
        counters.lookups_incomplete.store(true, Ordering::Relaxed);
        jobs.iter().map(|_| None).collect()
    })
}

fn writer_loop(
    store: &mut Store,
    rx: Receiver<Write>,
    counters: &Counters,
    opts: &ScanOptions<'_>,
    t0: Instant,
    baseline_entries: u64,
    keep_staged: bool,
) -> Result<(), StoreError> {
    let mut batch = Vec::with_capacity(BATCH);
    let mut last_report = Instant::now();
    // When the oldest unflushed record arrived. Its own clock, not `last_report`'s: that one is
    // reset every 100 ms, so a flush keyed on it never fired while records kept coming (issue 9,
    // item 19), and a slow scan (rate-limited, or hashing big files) kept up to a whole batch
    // unstaged for minutes, lost on a kill instead of resumed.
    let mut batch_since: Option<Instant> = None;
    let report = |counters: &Counters| {
        if let Some(p) = opts.progress {
            p(&ScanProgress {
                entries_seen: counters.seen.load(Ordering::Relaxed),
                entries_done: counters.done.load(Ordering::Relaxed) + counters.pruned.load(Ordering::Relaxed),
                entries_resumed: counters.resumed.load(Ordering::Relaxed),
                bytes_hashed: counters.bytes.load(Ordering::Relaxed),
                baseline_entries,
                elapsed_ms: u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
                walk_done: counters.walk_done.load(Ordering::Relaxed),
            });
        }
    };
    loop {
        let msg = rx.recv_timeout(REPORT_EVERY);
        match msg {
            Ok(Write::Records(records)) => {
                batch_since.get_or_insert_with(Instant::now);
                batch.extend(records);
            }
            Ok(Write::CarryOver(dir)) => {
                store.stage_batch_with(&batch, keep_staged)?;
                counters.done.fetch_add(batch.len() as u64, Ordering::Relaxed);
                batch.clear();
                batch_since = None;
                carry_over(store, &dir, keep_staged)?;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if batch.len() >= BATCH || batch_since.is_some_and(|t| t.elapsed() >= FLUSH_EVERY) {
            store.stage_batch_with(&batch, keep_staged)?;
            counters.done.fetch_add(batch.len() as u64, Ordering::Relaxed);
            batch.clear();
            batch_since = None;
        }
        if last_report.elapsed() >= REPORT_EVERY {
            report(counters);
            last_report = Instant::now();
        }
    }
    store.stage_batch_with(&batch, keep_staged)?;
    counters.done.fetch_add(batch.len() as u64, Ordering::Relaxed);
    report(counters);
    Ok(())
}

fn carry_over(store: &mut Store, dir: &Path, keep_staged: bool) -> Result<(), StoreError> {
    let mut rows = Vec::new();
    match store.get(dir) {
        Ok(Some(r)) => rows.push((dir.to_path_buf(), r)),
        // A damaged or tampered row is not carried (nor re-sealed): left out of staging, the
        // diff meets it in the baseline and reports it by path.
        Ok(None) | Err(StoreError::Row { .. }) => {}
        Err(e) => return Err(e),
    }
    store.for_each_below(dir, |p, r| rows.push((p, r)))?;
    for chunk in rows.chunks(BATCH) {
        store.stage_batch_with(chunk, keep_staged)?;
    }
    Ok(())
}

fn problem(host: &Path, e: &std::io::Error) -> Problem {
    let shown = crate::events::escape_path(host);
    let (code, message) = match e.kind() {
        _ if dirfd::is_changed_during_scan(e) => ("changed_during_scan", format!("{shown}: {e}")),
        // What to do about it, since nothing under it is in the baseline or checked: a FIM
        // started without the capability (by hand as a user, or a unit that lost it) reads
        // little of a system tree, and says so here.
        std::io::ErrorKind::PermissionDenied => {
            ("permission_denied", format!("{shown}: {e} ({})", guestward_core::READ_PERMISSION_ADVICE))
        }
        std::io::ErrorKind::NotFound => ("not_found", format!("{shown}: {e}")),
        _ => ("io", format!("{shown}: {e}")),
    };
    Problem::new(code, message).with_path(shown)
}

/// The smallest set of roots covering `paths` (none below another).
pub fn minimal_roots(mut paths: Vec<PathBuf>) -> Vec<PathBuf> {
    paths.sort_unstable();
    paths.dedup();
    let mut out: Vec<PathBuf> = Vec::new();
    for p in paths {
        if !out.iter().any(|o| p.starts_with(o)) {
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::config::{Config, PathEntry, PathRule};
    use crate::record::hex;
    use guestward_core::AbsolutePath;
    use md5::Digest as _;

    fn policy(entries: Vec<PathEntry>) -> Policy {
        Config { paths: entries, ..Config::default() }.policy().unwrap()
    }

    #[test]
    fn most_specific_rule_governs_and_excluded_dirs_hide_subtrees() {
        let p = policy(vec![
            PathEntry::Rule(PathRule {
                path: AbsolutePath::new("/etc").unwrap(),
                recursive: true,
                exclude: vec!["/etc/cache".into()],
                attributes: None,
                max_file_size_bytes: None,
            }),
            PathEntry::Simple(AbsolutePath::new("/etc/cache/keep").unwrap()),
            PathEntry::Simple(AbsolutePath::new("/home/*/.ssh/authorized_keys").unwrap()),
        ]);
        assert_eq!(p.governing(Path::new("/etc/passwd")).unwrap().index, 0);
        assert!(p.governing(Path::new("/etc/cache/x")).is_none());
        assert_eq!(p.governing(Path::new("/etc/cache/keep/x")).unwrap().index, 1);
        assert_eq!(p.governing(Path::new("/home/bob/.ssh/authorized_keys")).unwrap().index, 2);
        assert!(p.governing(Path::new("/home/bob/.ssh/id_rsa")).is_none());
        assert!(p.governing(Path::new("/usr/bin/ls")).is_none());
        assert_eq!(Policy::literal_prefix(&p.rules[2]), Path::new("/home"));
    }

    #[test]
    fn rate_limit_slows_the_scan_down_and_progress_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("t");
        std::fs::create_dir(&tree).unwrap();
        for i in 0..30 {
            std::fs::write(tree.join(format!("f{i}")), "x").unwrap();
        }
        let p = policy(vec![PathEntry::Simple(AbsolutePath::new(&tree).unwrap())]);
        let root = HostRoot::live();
        let targets = p.targets(&root);
        let last = Mutex::new(ScanProgress::default());
        let report = |pr: &ScanProgress| *last.lock().unwrap() = pr.clone();
        let opts = ScanOptions {
            rate: RateLimit { files_per_sec: 100, bytes_per_sec: 0 },
            threads: 2,
            progress: Some(&report),
            cancel: None,
            pace: None,
            rehash: Rehash::All,
        };
        let stats = stage(&p, &root, &dir.path().join("state"), &targets, false, &opts).unwrap();
        assert_eq!(stats.entries, 31);
        // 30 hashed files at 100/s cannot take less than ~0.3 s (a lower bound only).
        assert!(stats.duration_ms >= 250, "{stats:?}");
        let last = last.lock().unwrap().clone();
        assert_eq!((last.entries_done, last.walk_done), (31, true));
    }

    /// A file with several hard links is read once per scan; every link gets its record, and
    /// a link whose inode changed in between is read again. The MD5 asked for is taken too.
    #[test]
    fn hard_links_to_one_inode_are_read_once_with_every_link_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("t");
        std::fs::create_dir(&tree).unwrap();
        let content = vec![7u8; 100_000];
        std::fs::write(tree.join("a"), &content).unwrap();
        for name in ["b", "c", "d"] {
            std::fs::hard_link(tree.join("a"), tree.join(name)).unwrap();
        }
        std::fs::write(tree.join("single"), b"one link").unwrap();
        let p = policy(vec![PathEntry::Simple(AbsolutePath::new(&tree).unwrap())]);
        let root = HostRoot::live();
        let state = dir.path().join("state");
        let opts = ScanOptions::unlimited(1);
        let wants = |_: &Path| true;
        let staged =
            stage_with(&p, &root, &state, &p.targets(&root), false, &opts, Staging::All, Some(&wants))
                .unwrap();
        assert_eq!(staged.stats.bytes_hashed, 100_000 + 8, "each inode read once: {:?}", staged.stats);
        let store = Store::open(&state).unwrap();
        let a = store.staged(&tree.join("a")).unwrap().unwrap();
        assert_eq!(a.md5.map(|m| hex(&m)).as_deref(), Some(hex(&md5::Md5::digest(&content)).as_str()));
        for name in ["b", "c", "d"] {
            assert_eq!(store.staged(&tree.join(name)).unwrap().unwrap(), a, "{name}");
        }
        // One thread walks in order, so the links are met one after another; with the inode
        // rewritten, a later scan reads it once again (not from any earlier scan).
        std::fs::write(tree.join("a"), b"changed").unwrap();
        let again = stage(&p, &root, &state, &p.targets(&root), false, &opts).unwrap();
        assert_eq!(again.bytes_hashed, 7 + 8);
        let b = store.staged(&tree.join("b")).unwrap().unwrap();
        assert_eq!((b.size, b.md5), (7, None), "no MD5 asked for");
    }

    /// Large files are read in lanes, two at a time and alongside the small ones, and files
    /// whose MD5 is taken in MD5 lanes, up to 16 at a time (on two threads, the large ones
    /// maybe handed from one thread's lanes to the other's): every file still gets the digests
    /// of its own content (SHA-256, and MD5 when asked), large ones of every size around the
    /// lane's buffer, with hard links read once, on one thread and on two.
    #[test]
    fn files_read_in_lanes_get_the_digests_of_their_own_content() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("t");
        std::fs::create_dir(&tree).unwrap();
        let lane = crate::record::LANE_BUFFER_BYTES;
        let sizes = [
            LANE_MIN_BYTES as usize,
            LANE_MIN_BYTES as usize + 1,
            2 * lane - 1,
            3 * lane + 17,
            1_000_003,
            300_000,
            LANE_MIN_BYTES as usize - 1,
            5,
            0,
            4096,
            4095,
            2 * lane + 65,
            crate::record::MD5_LANE_BUFFER_BYTES - 1,
            crate::record::MD5_LANE_BUFFER_BYTES + 65,
            // Large enough to be handed to the other thread's MD5 lanes (see `Balance`).
            3 * HANDOFF_MIN_BYTES as usize + 1,
            2 * HANDOFF_MIN_BYTES as usize + 65,
        ];
        let mut expected = Vec::new();
        // Each size three times: more files than the MD5 lanes hold, when MD5s are taken.
        for (i, size) in sizes.iter().enumerate().cycle().take(3 * sizes.len()) {
            let copy = expected.len() / 4 / sizes.len();
            // Interleaved with small files, so that large ones are read alongside them too.
            for j in 0..3 {
                let name = format!("{copy}-{i:02}-small-{j}");
                let content = format!("small {copy} {i} {j}").into_bytes();
                std::fs::write(tree.join(&name), &content).unwrap();
                expected.push((name, content));
            }
            let name = format!("{copy}-{i:02}-big");
            let content: Vec<u8> =
                (0..*size).map(|k| (k as u8).wrapping_mul(7).wrapping_add((i + copy) as u8)).collect();
            std::fs::write(tree.join(&name), &content).unwrap();
            expected.push((name, content));
        }
        let linked: Vec<u8> = (0..400_000u32).map(|k| (k % 251) as u8).collect();
        std::fs::write(tree.join("linked-a"), &linked).unwrap();
        std::fs::hard_link(tree.join("linked-a"), tree.join("linked-b")).unwrap();
        expected.push(("linked-a".into(), linked.clone()));
        expected.push(("linked-b".into(), linked));
        let p = policy(vec![PathEntry::Simple(AbsolutePath::new(&tree).unwrap())]);
        let root = HostRoot::live();
        // With MD5s (the MD5 lanes take the files of 4 KiB or more) and without (the SHA-256
        // lane takes the large ones), on one thread and on two.
        for (threads, md5) in [(1, false), (2, false), (1, true), (2, true)] {
            let state = dir.path().join(format!("state-{threads}-{md5}"));
            let opts = ScanOptions::unlimited(threads);
            let wants = TakenMd5s { wants: md5, ..TakenMd5s::default() };
            stage_with(&p, &root, &state, &p.targets(&root), false, &opts, Staging::All, Some(&wants))
                .unwrap();
            let store = Store::open(&state).unwrap();
            let taken = wants.taken.into_inner().unwrap();
            for (name, content) in &expected {
                let at = format!("{name}, {threads} thread(s), MD5 taken: {md5}");
                let rec = store.staged(&tree.join(name)).unwrap().unwrap();
                assert_eq!(rec.size, content.len() as u64, "{at}");
                assert_eq!(rec.sha256, Some(sha2::Sha256::digest(content).into()), "{at}");
                assert_eq!(rec.md5, md5.then(|| md5::Md5::digest(content).into()), "{at}");
                assert_eq!(rec.flags, 0, "{at}");
                // Every MD5 taken is told, with the file's own path, once.
                assert_eq!(taken.get(&tree.join(name)), rec.md5.as_ref(), "{at}");
            }
            assert_eq!(taken.len(), if md5 { expected.len() } else { 0 });
        }
    }

    /// A file goes to another thread's MD5 lanes only while they hold less than the giver's
    /// and the file together, and only a large one; it is taken by another thread (by the
    /// giver itself only once it is out of jobs); a thread out of jobs waits for more until no
    /// other thread can hand one over; nothing is handed to a thread that has left.
    #[test]
    fn md5_lane_files_go_to_the_thread_with_less_left_and_none_is_lost() {
        const MIB: u64 = 1 << 20;
        let dir = tempfile::tempdir().unwrap();
        let dir_file = Arc::new(File::open(dir.path()).unwrap());
        let pending = |from: usize, size: u64| pending_file(dir.path(), &dir_file, from, size);
        let balance = Balance::new(2, 2);
        balance.join(0);
        balance.join(1);
        balance.say_left(1, 4 * MIB);
        // Not heavier by the file's size, or a small file: kept.
        assert!(balance.hand_off(0, 5 * MIB, pending(0, 2 * MIB)).is_some());
        assert!(balance.hand_off(0, 100 * MIB, pending(0, MIB / 2)).is_some());
        // Heavier: handed over, for thread 1, not back to thread 0 while it takes jobs.
        assert!(balance.hand_off(0, 7 * MIB, pending(0, 2 * MIB)).is_none());
        // What waits counts as thread 1's: 7 MiB is no longer more than 4 + 2 + 2.
        assert!(balance.hand_off(0, 7 * MIB, pending(0, 2 * MIB)).is_some());
        // At most as many wait as a thread has MD5 lanes (each holds a descriptor).
        assert!(balance.hand_off(0, 100 * MIB, pending(0, 2 * MIB)).is_none());
        assert!(balance.hand_off(0, 100 * MIB, pending(0, 2 * MIB)).is_some());
        assert!(balance.take(0, false).is_none());
        for _ in 0..2 {
            assert_eq!(balance.take(1, false).map(|p| p.from()), Some(0));
        }
        assert!(balance.take(1, true).is_none());
        assert_eq!(balance.state().bytes, 0, "taken, no longer waiting");

        // Thread 1 out of jobs waits for files until thread 0 has nothing to hand over either.
        balance.out_of_jobs();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let mut got = Vec::new();
                while balance.wait_for_more(1) {
                    got.extend(balance.take(1, true).map(|p| match p {
                        Waiting::Opened(p) => p.job.host,
                        Waiting::Reading { lane, .. } => lane.job.host,
                    }));
                }
                got
            });
            while balance.left[1].load(Ordering::Relaxed) != 0 {
                std::thread::yield_now();
            }
            assert!(
                balance.hand_off(0, 9 * MIB, pending(0, 2 * MIB)).is_none(),
                "it waits with nothing left"
            );
            // Out of jobs, thread 0 reads its lanes to their ends (it could share them: thread
            // 1 still waits), then returns.
            balance.out_of_jobs();
            balance.leave(0, false);
            assert_eq!(waiter.join().unwrap(), vec![dir.path().join(format!("f0-{}", 2 * MIB))]);
        });
        // Thread 1 has left: thread 0 keeps its files.
        assert_eq!(balance.left[1].load(Ordering::Relaxed), u64::MAX);
        assert!(balance.hand_off(0, 100 * MIB, pending(0, 2 * MIB)).is_some());
    }

    /// A file of `size` bytes of a pattern in `dir`, opened for thread `from`'s MD5 lanes.
    fn pending_file(dir: &Path, dir_file: &Arc<File>, from: usize, size: u64) -> Pending {
        let name = format!("f{from}-{size}");
        let content: Vec<u8> = (0..size).map(|i| (i % 251) as u8 ^ (size % 255) as u8).collect();
        std::fs::write(dir.join(&name), content).unwrap();
        let file = File::open(dir.join(&name)).unwrap();
        let stat = nix::sys::stat::fstat(&file).unwrap();
        let opts = ReadOptions {
            attributes: crate::config::AttributeSet::of(crate::config::Attribute::DEFAULT),
            max_file_size_bytes: u64::MAX,
            md5: true,
        };
        let job = Job {
            host: dir.join(&name),
            dir: Arc::clone(dir_file),
            name: name.into(),
            stat: None,
            open_first: true,
            opts,
            xattrs: None,
        };
        Pending { job, stat, prev: None, read_opts: opts, file, from }
    }

    /// At the end, a thread out of jobs shares the files its MD5 lanes are reading with one
    /// that has nothing left: only while one waits and nothing waits for it, the largest
    /// first and the next while what it hands stays below what it keeps, never its last
    /// file nor one under 1 MiB left. The taker finishes a file part read by the giver to the
    /// digests of its whole content, and a thread waiting with nothing left leaves only once
    /// every thread waits, not while another still reads files it could share.
    #[test]
    fn files_being_read_are_shared_with_a_thread_that_has_none_left() {
        const MIB: u64 = 1 << 20;
        let dir = tempfile::tempdir().unwrap();
        let dir_file = Arc::new(File::open(dir.path()).unwrap());
        let in_lane = |size: u64| {
            let p = pending_file(dir.path(), &dir_file, 0, size);
            let buf = guestward_core::ReadBuffer::new(crate::record::MD5_LANE_BUFFER_BYTES);
            let lane = Lane::new(p.file, size, p.read_opts, buf);
            InLane { job: p.job, stat: p.stat, prev: None, read_opts: p.read_opts, lane }
        };
        let mut lanes: Vec<InLane> = [8 * MIB, 3 * MIB, 2 * MIB, MIB / 2].into_iter().map(in_lane).collect();
        // Thread 0 has read part of each.
        assert!(read_md5_lanes(&mut lanes, 4, &mut |_| panic!("none is done after 4 rounds")));
        let before = left_in(&lanes);
        assert!(before < 8 * MIB + 3 * MIB + 2 * MIB + MIB / 2);
        let balance = Balance::new(2, 16);
        balance.join(0);
        balance.join(1);
        balance.out_of_jobs();
        balance.out_of_jobs();
        // No thread waits: nothing is shared.
        assert_eq!(balance.share(0, &mut lanes), 0);
        assert_eq!(lanes.len(), 4);
        let balance = &balance;
        std::thread::scope(|s| {
            let (got_tx, got_rx) = std::sync::mpsc::channel();
            let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
            let waiter = s.spawn(move || {
                assert!(balance.wait_for_more(1), "a file comes");
                let mut taken = Vec::new();
                while let Some(w) = balance.take(1, taken.is_empty()) {
                    taken.push(w);
                }
                got_tx.send(taken).unwrap();
                go_rx.recv().unwrap();
                // Waits for more until thread 0 has nothing left either.
                let mut later = Vec::new();
                while balance.wait_for_more(1) {
                    while let Some(w) = balance.take(1, true) {
                        later.push(w.size());
                    }
                }
                later
            });
            while balance.idle.load(Ordering::Relaxed) == 0 {
                std::thread::yield_now();
            }
            // The 8 MiB file goes, though it is more than the 5.5 MiB kept; not the 3 MiB one
            // after it (8 + 3 handed against 2.5 kept).
            let given = balance.share(0, &mut lanes);
            let taken = got_rx.recv().unwrap();
            assert_eq!(taken.len(), 1);
            let Some(Waiting::Reading { lane: mut shared, from: 0 }) = taken.into_iter().next() else {
                panic!("not the file being read")
            };
            assert_eq!(given, shared.lane.left());
            assert_eq!(shared.job.host, dir.path().join(format!("f0-{}", 8 * MIB)));
            assert_eq!(left_in(&lanes) + given, before, "nothing lost");
            // The thread that took it finishes it: the digests of the whole content.
            Lane::read_many(&mut [&mut shared.lane]);
            assert!(shared.lane.done());
            let (_, digests, _) = shared.lane.into_digests();
            let digests = digests.unwrap();
            let content = std::fs::read(dir.path().join(format!("f0-{}", 8 * MIB))).unwrap();
            assert_eq!(digests.sha256, Some(sha2::Sha256::digest(&content).into()));
            assert_eq!(digests.md5, Some(md5::Md5::digest(&content).into()));
            // Thread 1 is reading: nothing more is shared.
            assert_eq!(balance.share(0, &mut lanes), 0);
            go_tx.send(()).unwrap();
            while balance.idle.load(Ordering::Relaxed) == 0 {
                std::thread::yield_now();
            }
            // Thread 1 waits again while thread 0 still reads: it stays.
            std::thread::sleep(Duration::from_millis(50));
            assert!(!waiter.is_finished(), "left while thread 0 could still share");
            // Nothing under 1 MiB left is shared, nor a thread's last file.
            let mut small = vec![in_lane(MIB / 2), in_lane(MIB / 2 + 1)];
            assert_eq!(balance.share(0, &mut small), 0);
            let mut last = vec![in_lane(4 * MIB)];
            assert_eq!(balance.share(0, &mut last), 0);
            // Next the 3 MiB file goes, and only it: 3 + 2 handed would be more than 0.5 kept.
            let second = lanes.iter().map(|l| l.lane.left()).max().unwrap();
            assert_eq!(balance.share(0, &mut lanes), second);
            assert_eq!(lanes.len(), 2);
            // Thread 0 is done with its own and waits too: both leave.
            while balance.waiting.load(Ordering::Relaxed) != 0 {
                std::thread::yield_now();
            }
            assert!(!balance.wait_for_more(0), "nothing is left to come");
            assert_eq!(waiter.join().unwrap(), vec![second]);
        });
    }

    /// An [`Md5Wanted`] that wants every MD5 or none, and keeps what it is told was taken and
    /// what carried over.
    #[derive(Default)]
    struct TakenMd5s {
        wants: bool,
        taken: Mutex<std::collections::BTreeMap<PathBuf, [u8; 16]>>,
        carried: Mutex<std::collections::BTreeMap<PathBuf, [u8; 16]>>,
    }

    impl TakenMd5s {
        fn wanting() -> Self {
            Self { wants: true, ..Self::default() }
        }

        fn told(self) -> [std::collections::BTreeMap<PathBuf, [u8; 16]>; 2] {
            [self.taken.into_inner().unwrap(), self.carried.into_inner().unwrap()]
        }
    }

    impl Md5Wanted for TakenMd5s {
        fn wants(&self, _: &Path) -> bool {
            self.wants
        }

        fn taken(&self, host: &Path, md5: &[u8; 16]) {
            let earlier = self.taken.lock().unwrap().insert(host.to_path_buf(), *md5);
            assert!(earlier.is_none(), "{} told twice", host.display());
        }

        fn carried(&self, host: &Path, md5: &[u8; 16]) {
            assert!(!self.taken.lock().unwrap().contains_key(host), "{} taken and carried", host.display());
            let earlier = self.carried.lock().unwrap().insert(host.to_path_buf(), *md5);
            assert!(earlier.is_none(), "{} told twice", host.display());
        }
    }

    /// An MD5 taken in the scan's own read of a file it saw whole and unchanged is told as
    /// taken; one carried over from the baseline row of the same content as carried, and only
    /// by a scan that prunes (its rows are the ones the anchor trusts); none for a read that saw
    /// no content.
    #[test]
    fn md5s_are_told_as_taken_in_a_sound_read_or_carried_from_a_trusted_row() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("t");
        std::fs::create_dir(&tree).unwrap();
        std::fs::write(tree.join("kept"), b"kept content").unwrap();
        std::fs::write(tree.join("new"), b"new content").unwrap();
        let p = policy(vec![PathEntry::Simple(AbsolutePath::new(&tree).unwrap())]);
        let root = HostRoot::live();
        let state = dir.path().join("state");
        let opts = ScanOptions::unlimited(1);
        let scan = |staging| {
            let told = TakenMd5s::wanting();
            stage_with(&p, &root, &state, &p.targets(&root), false, &opts, staging, Some(&told)).unwrap();
            told.told()
        };
        let [taken, carried] = scan(Staging::All);
        assert_eq!((taken.len(), carried.len()), (2, 0));
        Store::open(&state).unwrap().replace_all().unwrap();
        let kept_md5 = <[u8; 16]>::from(md5::Md5::digest(b"kept content"));

        // Over that baseline, "kept" is unchanged: its MD5 is carried over, not taken again.
        std::fs::write(tree.join("new"), b"new content, changed").unwrap();
        let [taken, carried] = scan(Staging::Changes);
        assert_eq!(taken.keys().collect::<Vec<_>>(), vec![&tree.join("new")]);
        assert_eq!(taken[&tree.join("new")], <[u8; 16]>::from(md5::Md5::digest(b"new content, changed")));
        assert_eq!(carried.into_iter().collect::<Vec<_>>(), vec![(tree.join("kept"), kept_md5)]);
        let store = Store::open(&state).unwrap();
        assert_eq!(store.get(&tree.join("kept")).unwrap().unwrap().md5, Some(kept_md5), "in the baseline");

        // A scan that stages every entry does not prune: its MD5s carried are not told.
        let [taken, carried] = scan(Staging::All);
        assert!(taken.contains_key(&tree.join("new")) && carried.is_empty(), "{taken:?} {carried:?}");

        // A FIFO where a file was: no content read, nothing told of it.
        std::fs::remove_file(tree.join("new")).unwrap();
        nix::unistd::mkfifo(&tree.join("new"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let [taken, carried] = scan(Staging::Changes);
        assert!(taken.is_empty(), "{taken:?}");
        assert_eq!(carried.keys().collect::<Vec<_>>(), vec![&tree.join("kept")]);
    }

    /// The MD5 lanes of all hashing threads together stay within a quarter of the descriptor
    /// limit: all 16 on the usual 1,024 and two threads, fewer on many threads, none when
    /// fewer than three would be left, all 16 without a limit.
    #[test]
    fn md5_lanes_keep_to_a_quarter_of_the_descriptor_limit() {
        for (soft, threads, lanes) in
            [(1024, 2, 16), (1024, 1, 16), (1024, 16, 14), (1024, 48, 3), (1024, 64, 0), (1024, 96, 0)]
                .into_iter()
                .chain([(4096, 64, 14), (u64::MAX, 96, 16), (0, 2, 0), (1024, 0, 16)])
        {
            let got = md5_lanes_within(soft, threads);
            assert_eq!(got, lanes, "limit {soft}, {threads} threads");
            assert!(got == 0 || threads * (got + 2) <= usize::try_from(soft / 4).unwrap_or(usize::MAX));
        }
    }

    /// Subdirectories are opened as their parent is listed while fewer than
    /// `walk::MAX_HELD_OPEN` wait, the rest by name when listed: a directory of more
    /// subdirectories than that is walked whole, by the one walk of a full scan and by the
    /// threads walking together of a metadata-first one, each entry once. Their extended
    /// attributes are recorded alike, read through the descriptor held or by name.
    #[test]
    fn a_directory_of_more_subdirectories_than_are_held_open_is_walked_whole() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("t");
        let n = walk::MAX_HELD_OPEN + 40;
        for i in 0..n {
            let sub = tree.join(format!("d{i:03}"));
            std::fs::create_dir_all(sub.join("n")).unwrap();
            std::fs::write(sub.join("f"), format!("{i}")).unwrap();
            std::fs::write(sub.join("n/g"), format!("{i}")).unwrap();
        }
        // Every subdirectory and its `n` carry an attribute of their own, when the file system
        // takes user attributes.
        let xattrs = (0..n).all(|i| {
            let sub = tree.join(format!("d{i:03}"));
            xattr::set(&sub, "user.gw", format!("{i}").as_bytes()).is_ok()
                && xattr::set(sub.join("n"), "user.gw.n", format!("n{i}").as_bytes()).is_ok()
        });
        if !xattrs {
            guestward_core::testing::skip_or_fail(
                "a_directory_of_more_subdirectories_than_are_held_open_is_walked_whole",
                &format!("user attributes on {}: the walk is tested, not the attributes", tree.display()),
            );
        }
        let p = policy(vec![PathEntry::Simple(AbsolutePath::new(&tree).unwrap())]);
        let root = HostRoot::live();
        for rehash in [Rehash::Changed, Rehash::All] {
            let state = dir.path().join(format!("state-{rehash:?}"));
            let opts = ScanOptions { rehash, ..ScanOptions::unlimited(3) };
            let staged =
                stage_with(&p, &root, &state, &p.targets(&root), false, &opts, Staging::All, None).unwrap();
            let stats = staged.stats;
            // The tree, and per subdirectory: itself, `f`, `n` and `n/g`.
            assert_eq!(stats.entries, 1 + 4 * n as u64, "{rehash:?}: {stats:?}");
            assert_eq!((stats.problem_count, stats.files_hashed), (0, 2 * n as u64), "{rehash:?}: {stats:?}");
            let mut store = Store::open(&state).unwrap();
            for i in [0, n / 2, n - 1] {
                let g = tree.join(format!("d{i:03}/n/g"));
                assert!(store.staged(&g).unwrap().is_some(), "{rehash:?}: {}", g.display());
            }
            let recorded = |store: &Store, at: &str, name: &str, value: &str| {
                let rec = store.staged(&tree.join(at)).unwrap().unwrap();
                let want = vec![(name.as_bytes().to_vec(), value.as_bytes().to_vec())];
                assert_eq!(rec.xattrs, Some(want), "{rehash:?}: {at}");
            };
            for i in (0..n).filter(|_| xattrs) {
                recorded(&store, &format!("d{i:03}"), "user.gw", &format!("{i}"));
                recorded(&store, &format!("d{i:03}/n"), "user.gw.n", &format!("n{i}"));
            }
            if !xattrs || rehash == Rehash::Changed {
                continue;
            }
            // A full check over that baseline (the last scan of the loop), which looks each
            // entry up on its hashing threads: an attribute changed on a directory held open
            // (the first) and on one opened by name (the last) is recorded as it is now.
            store.replace_all().unwrap();
            let changed = [format!("d{:03}", 0), format!("d{:03}/n", 0), format!("d{:03}", n - 1)];
            for at in &changed {
                xattr::set(tree.join(at), "user.gw.new", b"new").unwrap();
                xattr::remove(tree.join(at), if at.ends_with("/n") { "user.gw.n" } else { "user.gw" })
                    .unwrap();
            }
            stage_with(&p, &root, &state, &p.targets(&root), false, &opts, Staging::Changes, None).unwrap();
            for at in &changed {
                recorded(&store, at, "user.gw.new", "new");
            }
        }
    }

    /// A directory longer than one sorted chunk of its listing is walked whole, each entry
    /// once, and its subdirectories after it.
    #[test]
    fn a_directory_longer_than_a_sorted_chunk_is_walked_whole() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("t");
        std::fs::create_dir(&tree).unwrap();
        let n = SORTED_CHUNK + 3;
        for i in 0..n {
            std::fs::File::create(tree.join(format!("f{i}"))).unwrap();
        }
        std::fs::create_dir(tree.join("sub")).unwrap();
        std::fs::write(tree.join("sub/inner"), b"x").unwrap();
        let p = policy(vec![PathEntry::Simple(AbsolutePath::new(&tree).unwrap())]);
        let root = HostRoot::live();
        let state = dir.path().join("state");
        let opts = ScanOptions::unlimited(2);
        let stats = stage(&p, &root, &state, &p.targets(&root), false, &opts).unwrap();
        // The tree, its files, `sub` and `sub/inner`.
        assert_eq!(stats.entries, n as u64 + 3, "{stats:?}");
        assert_eq!(stats.problem_count, 0, "{stats:?}");
        let store = Store::open(&state).unwrap();
        for name in ["f0", &format!("f{}", n - 1), "sub", "sub/inner"] {
            assert!(store.staged(&tree.join(name)).unwrap().is_some(), "{name}");
        }
        // Sorted through a temporary file in the state directory (`listing`), never linked:
        // nothing but the store is left there.
        for entry in std::fs::read_dir(&state).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(name.starts_with("fim.db") || name == "reserve", "left in the state directory: {name}");
        }
    }

    #[test]
    fn minimal_roots_drops_nested() {
        let r = minimal_roots(vec!["/etc/ssh".into(), "/etc".into(), "/etc0".into(), "/etc".into()]);
        assert_eq!(r, vec![PathBuf::from("/etc"), PathBuf::from("/etc0")]);
    }
}
