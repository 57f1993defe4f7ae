//! The directory walk: each target's tree listed directory by directory, every entry handed on
//! as a [`Job`] (see [`Out`]).
//!
//! Two shapes. The walk of one thread ([`walk_target`]) feeds the hashing threads through a
//! bounded queue: what a full scan needs, with the walk ahead of the reads. A metadata-first
//! scan mostly stats entries and looks up their baseline rows, work as small as the walk's
//! own: handed between threads, a batch costs more in wake-ups than it takes to do, and on 2
//! CPUs three busy threads left a fifth of the time idle (`perf sched` of a `check --fast`
//! of /usr). There every thread walks and examines what it lists itself ([`walk_shared`]),
//! taking directories from one stack they share.

use super::{Counters, Job, Target, Write, problem};
use crate::config::{Attribute, Policy, Rule};
use crate::dirfd;
use crate::record::{FileKind, Hashing, ReadOptions, read_record_opened};
use crate::store::Store;
use guestward_core::{HostRoot, Problem};
use nix::sys::stat::FileStat;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Condvar, Mutex};

/// A directory waiting to be listed: opened already, or to be opened from its parent's
/// descriptor (shared); never a path.
pub(super) struct PendingDir<'p> {
    host: PathBuf,
    reach: Reach<'p>,
    depth: usize,
    /// The rule governing the tree it is in.
    rule: &'p Rule,
    /// Rules nested below that rule are walked on their own: each entry is checked for them.
    nested: bool,
}

enum Reach<'p> {
    /// Opened when its parent was listed, its record taken from the open descriptor: it is the
    /// very directory examined.
    Opened(Held<'p>),
    /// To be opened by name in `parent` when listed, and checked to be what the parent's
    /// listing examined (`seen`).
    At { parent: Arc<File>, name: OsString, seen: FileStat },
}

/// Directories held open while they wait to be listed, at most this many per scan: each is a
/// descriptor, and a directory of thousands of subdirectories must not exhaust them (the rest
/// are opened by name when listed, as before; see `Walk::list`).
pub(super) const MAX_HELD_OPEN: usize = 128;

/// A directory's descriptor waiting in the walk, counted in the scan's [`Walk::held`].
struct Held<'p> {
    dir: Option<File>,
    count: &'p AtomicUsize,
}

impl<'p> Held<'p> {
    /// Holds `dir` if fewer than [`MAX_HELD_OPEN`] are held; else gives it back.
    fn hold(dir: File, count: &'p AtomicUsize) -> Result<Self, File> {
        match count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_HELD_OPEN).then_some(n + 1))
        {
            Ok(_) => Ok(Self { dir: Some(dir), count }),
            Err(_) => Err(dir),
        }
    }

    fn take(mut self) -> Option<File> {
        self.dir.take()
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How a scan walks: the same for every directory and thread.
#[derive(Clone, Copy)]
pub(super) struct Walk<'a> {
    pub policy: &'a Policy,
    pub root: &'a HostRoot,
    /// Entries getdents says are not directories are examined by the thread that takes them.
    pub defer_stat: bool,
    /// Regular files are opened first by the hashing thread (a full scan).
    pub open_regular_first: bool,
    pub counters: &'a Counters,
    /// Directories the scan holds open while they wait to be listed (see [`MAX_HELD_OPEN`]).
    pub held: &'a AtomicUsize,
    pub cancel: Option<&'a AtomicBool>,
    /// Where listings longer than a sorted chunk are sorted (see `crate::listing`).
    pub state_dir: &'a Path,
}

impl<'a> Walk<'a> {
    fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// Examines the top of `target` and hands it on; its directory to list, if it is one.
    fn start<'p>(&self, target: &Target, out: &mut Out<'_>) -> Option<PendingDir<'p>>
    where
        'a: 'p,
    {
        let policy = self.policy;
        let rule = policy.rules.get(target.rule)?;
        // A target is governed by its own rule unless it is excluded by it (or by a more
        // specific rule covering the same path, which then walks it itself).
        if policy.governing(&target.host).map(|r| r.index) != Some(rule.index) {
            return None;
        }
        let read_opts = ReadOptions::of_rule(rule);
        // The target is reached from the rule's trusted prefix through directory descriptors,
        // so a scoped rescan deep inside a tree cannot be steered outside it either.
        let (parent, name, stat) = match dirfd::locate(self.root, rule, &target.host)
            .and_then(|at| dirfd::stat_at(&at.dir, &at.name).map(|st| (at.dir, at.name, st)))
        {
            Ok(found) => found,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    self.counters.problem(problem(&target.host, &e));
                    out.carry_over(target.host.clone());
                }
                return None;
            }
        };
        let parent = Arc::new(parent);
        let job = Job {
            host: target.host.clone(),
            dir: Arc::clone(&parent),
            name: name.clone(),
            stat: Some(stat),
            open_first: false,
            opts: read_opts,
            xattrs: None,
        };
        self.submit(job, out);
        if !dirfd::is_dir(&stat) {
            return None;
        }
        // Rules nested below this target are walked on their own; only then is the
        // per-entry governing check needed.
        let nested =
            policy.rules.iter().any(|r| r.index != rule.index && is_below(&r.pattern, &rule.pattern));
        Some(PendingDir {
            host: target.host.clone(),
            reach: Reach::At { parent, name, seen: stat },
            depth: 0,
            rule,
            nested,
        })
    }

    /// Lists `pending` and hands on each entry, in name order; its subdirectories (to list
    /// next, in name order) go to `subdirs`. `dirents` is the thread's getdents buffer.
    fn list<'p>(
        &self,
        pending: PendingDir<'p>,
        out: &mut Out<'_>,
        dirents: &mut [std::mem::MaybeUninit<u8>],
        subdirs: &mut Vec<PendingDir<'p>>,
    ) where
        'a: 'p,
    {
        let PendingDir { host: host_dir, reach, depth, rule, nested } = pending;
        let counters = self.counters;
        let read_opts = ReadOptions::of_rule(rule);
        // Opened relative to its parent without following a symlink, and checked to be the
        // very directory examined: swapped since (for a symlink to `/root`, say), it is
        // reported and its baseline records are kept, never listed from elsewhere.
        let opened = match reach {
            Reach::Opened(held) => held.take().ok_or_else(|| std::io::Error::other("no descriptor held")),
            Reach::At { parent, name, seen } => dirfd::descend(&parent, &name, &seen),
        };
        let dir = match opened {
            Ok(d) => Arc::new(d),
            Err(e) => {
                counters.problem(problem(&host_dir, &e));
                out.carry_over(host_dir);
                return;
            }
        };
        // Entries are handed on in name order: they then reach the store in path order, so
        // each baseline lookup and each staged insert lands next to the last one. In getdents
        // order (a hash order on ext4) the lookups of one `check --fast` of /usr jumped across
        // the B-tree: 38,724 page reads. The listing is read a chunk at a time, a bound on the
        // memory a planted directory of millions of entries can cost; a directory of more
        // than one chunk is sorted through a temporary file in the state directory
        // (`listing`). Read from a freshly opened descriptor (at offset 0), into the walk's
        // one buffer.
        let mut entries = rustix::fs::RawDir::new(&*dir, dirents);
        let first_subdir = subdirs.len();
        let mut listed_any = false;
        let mut failed = false;
        let mut next_chunk = |names: &mut Vec<(OsString, rustix::fs::FileType)>| -> bool {
            while let Some(entry) = entries.next() {
                match entry {
                    Ok(e) => {
                        listed_any = true;
                        let bytes = e.file_name().to_bytes();
                        if bytes != b"." && bytes != b".." {
                            names.push((OsStr::from_bytes(bytes).to_os_string(), e.file_type()));
                        }
                    }
                    Err(e) => {
                        // readdir failed part-way: what was listed is recorded, the rest of
                        // this directory is reported.
                        counters.problem(problem(&host_dir, &std::io::Error::from(e)));
                        failed = true;
                        return false;
                    }
                }
                if names.len() >= super::SORTED_CHUNK {
                    return true;
                }
            }
            false
        };
        let mut each = |name: OsString, listed_as: rustix::fs::FileType| {
            let host = host_dir.join(&name);
            if rule.excludes(&host) {
                return;
            }
            if nested && self.policy.governing(&host).map(|r| r.index) != Some(rule.index) {
                return;
            }
            // A metadata-first scan is bound by the `fstatat` of every entry: what getdents
            // says is not a directory is examined by the thread that takes it (which stats it
            // there, as the walk would). Directories, and entries of unknown type, are
            // examined here: the walk descends from that.
            // A full scan reads every regular file: one that getdents lists as such is
            // opened first by its hashing thread, which then `fstat`s the descriptor (the
            // same examination, one path lookup instead of two). The descriptor is checked
            // to be a regular file before anything is read, as after an `fstatat`.
            let open_first = self.open_regular_first
                && listed_as == rustix::fs::FileType::RegularFile
                && read_opts.attributes.hashes();
            if open_first
                || (self.defer_stat
                    && !matches!(listed_as, rustix::fs::FileType::Directory | rustix::fs::FileType::Unknown))
            {
                let job = Job {
                    host,
                    dir: Arc::clone(&dir),
                    name,
                    stat: None,
                    open_first,
                    opts: read_opts,
                    xattrs: None,
                };
                self.submit(job, out);
                return;
            }
            // A directory to descend into is opened now, while fewer than `MAX_HELD_OPEN` wait,
            // and examined through its descriptor: one path lookup instead of two (the
            // `fstatat`, then the open when it is listed). Anything else is `fstatat`ed, and
            // so is a directory that cannot be opened (unreadable: reported when listed), or
            // that is no directory any more (swapped since getdents: recorded as it is now).
            let mut held = None;
            if listed_as == rustix::fs::FileType::Directory
                && rule.recursive
                && depth < dirfd::MAX_DEPTH
                && self.held.load(Ordering::Relaxed) < MAX_HELD_OPEN
                && let Ok(opened) = dirfd::open_dir_at(&dir, &name)
                && let Ok(h) = Held::hold(opened, self.held)
            {
                held = h.dir.as_ref().map(dirfd::stat_fd).and_then(Result::ok).map(|st| (h, st));
            }
            let examined = match &held {
                Some((_, st)) => Ok(*st),
                None => dirfd::stat_at(&dir, &name),
            };
            // A full scan reads a held directory's extended attributes here, through the
            // descriptor its `fstat` came from: the very directory examined, and no path to
            // resolve (by `/proc/self/fd/N/name` that cost about 5 us more a directory, 16k of
            // them in /usr). A metadata-first scan reads them only of a directory whose stat
            // changed: left to the thread that finds it so.
            let xattrs = match &held {
                Some((h, _)) if self.open_regular_first && read_opts.attributes.has(Attribute::Xattrs) => {
                    h.dir.as_ref().map(crate::record::read_xattrs_fd)
                }
                _ => None,
            };
            let stat = match examined {
                Ok(st) => st,
                // Deleted between readdir and fstatat: it is simply not there.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(e) => {
                    counters.problem(problem(&host, &e));
                    return;
                }
            };
            if dirfd::is_dir(&stat) && rule.recursive {
                if depth + 1 > dirfd::MAX_DEPTH {
                    // Recorded, not descended: its records below are kept and it is reported.
                    counters.problem(
                        Problem::new(
                            "too_deep",
                            format!(
                                "{}: nested more than {} directories below the tree root; not descended",
                                crate::events::escape_path(&host),
                                dirfd::MAX_DEPTH
                            ),
                        )
                        .with_path(crate::events::escape_path(&host)),
                    );
                    out.carry_over(host.clone());
                } else {
                    let reach = match held {
                        Some((h, _)) => Reach::Opened(h),
                        None => Reach::At { parent: Arc::clone(&dir), name: name.clone(), seen: stat },
                    };
                    subdirs.push(PendingDir { host: host.clone(), reach, depth: depth + 1, rule, nested });
                }
            }
            let job = Job {
                host,
                dir: Arc::clone(&dir),
                name,
                stat: Some(stat),
                open_first: false,
                opts: read_opts,
                xattrs,
            };
            self.submit(job, out);
        };
        let spill =
            crate::listing::SpillTo { dir: self.state_dir, max_bytes: crate::listing::MAX_SPILL_BYTES };
        match crate::listing::each_in_order(Some(spill), &mut next_chunk, &mut each) {
            crate::listing::Listed::InOrder => {}
            // Every entry was still handed on, some out of name order: slower to store, not
            // less checked.
            crate::listing::Listed::Unsorted(e) => tracing::warn!(
                directory = %crate::events::escape_path(&host_dir),
                error = %e,
                "cannot sort this large directory's entries through a temporary file in the state directory; they are scanned in chunks"
            ),
            // Entries not handed on: reported as a listing that failed part-way.
            crate::listing::Listed::Incomplete(e) => counters.problem(problem(&host_dir, &e)),
        }
        if failed && !listed_any {
            // Nothing could be listed: its baseline records are kept, as for a directory that
            // cannot be opened.
            out.carry_over(host_dir);
        }
        // Taken from the end of a stack: last to first, so that they are listed in name order.
        subdirs[first_subdir..].reverse();
    }

    /// Hands `job` on: to the hashing threads, or recorded here when there is nothing to read
    /// and nothing to look up.
    fn submit(&self, mut job: Job, out: &mut Out<'_>) {
        let counters = self.counters;
        counters.seen.fetch_add(1, Ordering::Relaxed);
        let Some(stat) = job.stat else {
            // Examined by the hashing thread that takes it.
            out.job(job);
            return;
        };
        if let Some(reader) = out.resume {
            // Same inode, size, mtime and ctime as when this interrupted scan recorded it:
            // ctime cannot be set from user space, so the content is what was hashed then.
            if let Ok(Some(staged)) = reader.resumable(&job.host) {
                let now = crate::record::FileRecord::from_stat(&stat);
                if staged.unchanged_in(&now) {
                    counters.resumed.fetch_add(1, Ordering::Relaxed);
                    // Staged again (counted done when flushed): only what this run's walk
                    // found is staged, so a file deleted since the interrupted run is reported
                    // removed (issue 9, item 8) instead of kept by its stale row.
                    out.record(job.host, staged);
                    return;
                }
            }
        }
        // With lookups every entry goes to the hashing threads, which look its baseline
        // record up (in parallel), read only what changed (metadata first) and stage only
        // what differs.
        if out.lookups
            || (FileKind::from_mode(stat.st_mode) == FileKind::File && job.opts.attributes.hashes())
        {
            out.job(job);
        } else {
            // No content to read: record here, sparing the workers a round trip. FIFOs,
            // devices and sockets are recorded from their fstatat alone and never opened.
            let mut buf = guestward_core::ReadBuffer::new(crate::record::READ_BUFFER_BYTES);
            let (rec, err) = read_record_opened(
                &job.dir,
                &job.name,
                None,
                job.xattrs.take(),
                &stat,
                job.opts,
                None,
                &mut buf,
                &mut |_| {},
                Hashing::Read(None),
            );
            if let Some(e) = err {
                counters.problem(problem(&job.host, &e));
            }
            out.record(job.host, rec);
        }
    }
}

/// Walks `target` on this thread, depth first, each directory's entries in name order.
pub(super) fn walk_target(walk: &Walk<'_>, target: &Target, out: &mut Out<'_>) {
    let Some(top) = walk.start(target, out) else {
        return;
    };
    let mut dirents = vec![std::mem::MaybeUninit::<u8>::uninit(); super::DIRENT_BUFFER_BYTES];
    let mut stack = vec![top];
    while let Some(pending) = stack.pop() {
        if out.gone || walk.cancelled() {
            return;
        }
        walk.list(pending, out, &mut dirents, &mut stack);
    }
}

/// What the threads of [`walk_shared`] take their work from: the targets not yet started and
/// the directories not yet listed, and how many threads are busy with one (and may add more).
pub(super) struct SharedStack<'p> {
    state: Mutex<Stacked<'p>>,
    changed: Condvar,
}

struct Stacked<'p> {
    work: Vec<Work<'p>>,
    busy: usize,
    /// Threads waiting for work: only then is anyone told of a change (a wake-up is a system
    /// call even with nobody to wake, and the walk makes two changes per directory).
    waiting: usize,
    /// The walk stops early (cancelled, or the writer is gone): nothing more is taken.
    stop: bool,
}

// Nearly every item is a directory (a target is one per tree): boxing them would cost an
// allocation each for nothing.
#[allow(clippy::large_enum_variant)]
enum Work<'p> {
    Target(&'p Target),
    Dir(PendingDir<'p>),
}

/// A thread's claim on the stack while it works on what it took: released (and the waiting
/// threads told) when dropped, also when the thread unwinds, so that the others never wait
/// for a thread that is gone.
struct Busy<'s, 'p>(&'s SharedStack<'p>);

impl Drop for Busy<'_, '_> {
    fn drop(&mut self) {
        let waiting = match self.0.state.lock() {
            Ok(mut s) => {
                s.busy -= 1;
                s.waiting
            }
            Err(_) => 1,
        };
        if waiting > 0 {
            self.0.changed.notify_all();
        }
    }
}

impl<'p> SharedStack<'p> {
    /// A stack holding `targets`, to be started in their order.
    pub fn new(targets: &'p [Target]) -> Self {
        let work = targets.iter().rev().map(Work::Target).collect();
        Self {
            state: Mutex::new(Stacked { work, busy: 0, waiting: 0, stop: false }),
            changed: Condvar::new(),
        }
    }

    /// The next work, with the claim that covers it; `None` once there is none left and no
    /// thread can add any (or the walk stopped). `idle` runs before this thread waits.
    fn take(&self, idle: &mut dyn FnMut()) -> Option<(Work<'p>, Busy<'_, 'p>)> {
        let mut idled = false;
        let mut s = self.state.lock().ok()?;
        loop {
            if s.stop {
                return None;
            }
            if let Some(w) = s.work.pop() {
                s.busy += 1;
                return Some((w, Busy(self)));
            }
            if s.busy == 0 {
                return None;
            }
            if !idled {
                // What this thread holds is handed on before it waits (it may be long).
                drop(s);
                idle();
                idled = true;
                s = self.state.lock().ok()?;
                continue;
            }
            s.waiting += 1;
            s = self.changed.wait(s).ok()?;
            s.waiting -= 1;
        }
    }

    /// Adds `dirs` (the last taken first).
    fn give(&self, dirs: &mut Vec<PendingDir<'p>>) {
        if dirs.is_empty() {
            return;
        }
        let waiting = match self.state.lock() {
            Ok(mut s) => {
                s.work.extend(dirs.drain(..).map(Work::Dir));
                s.waiting
            }
            Err(_) => 1,
        };
        if waiting > 0 {
            self.changed.notify_all();
        }
    }

    pub fn stop(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.stop = true;
        }
        self.changed.notify_all();
    }
}

/// One of the threads walking `stack` together: every directory it takes is listed here and
/// its entries handed to `out` (which examines them on this thread too).
pub(super) fn walk_shared<'p>(walk: &Walk<'p>, stack: &SharedStack<'p>, out: &mut Out<'_>) {
    let mut dirents = vec![std::mem::MaybeUninit::<u8>::uninit(); super::DIRENT_BUFFER_BYTES];
    let mut subdirs = Vec::new();
    while let Some((work, busy)) = stack.take(&mut || out.flush()) {
        if out.gone || walk.cancelled() {
            stack.stop();
            break;
        }
        match work {
            Work::Target(target) => subdirs.extend(walk.start(target, out)),
            Work::Dir(pending) => walk.list(pending, out, &mut dirents, &mut subdirs),
        }
        stack.give(&mut subdirs);
        drop(busy);
    }
    out.flush();
    if out.gone {
        stack.stop();
    }
}

fn is_below(child: &Path, parent: &Path) -> bool {
    child != parent && child.starts_with(parent)
}

/// Where the jobs of a walk go.
pub(super) enum JobsTo<'a> {
    /// To the hashing threads.
    Queue(&'a SyncSender<Vec<Job>>),
    /// Examined (and read, if they changed) on the walking thread itself, a batch at a time:
    /// false when the writer is gone.
    Here(&'a mut dyn FnMut(Vec<Job>) -> bool),
}

/// What the walk hands on, batched: files to the hashing threads, records to the writer.
pub(super) struct Out<'a> {
    jobs: JobsTo<'a>,
    writes: &'a SyncSender<Write>,
    /// Every entry goes to the hashing threads, which look its baseline record up.
    lookups: bool,
    /// A resumed scan's connection: each entry's stat is compared with its staged row.
    resume: Option<&'a Store>,
    pending_jobs: Vec<Job>,
    pending_bytes: u64,
    pending_records: Vec<(PathBuf, crate::record::FileRecord)>,
    /// The hashing threads or the writer are gone (the writer failed: a full disk, say): the
    /// scan has failed, and the walk stops.
    pub gone: bool,
}

impl<'a> Out<'a> {
    pub fn new(
        jobs: JobsTo<'a>,
        writes: &'a SyncSender<Write>,
        lookups: bool,
        resume: Option<&'a Store>,
    ) -> Self {
        Self {
            jobs,
            writes,
            lookups,
            resume,
            pending_jobs: Vec::with_capacity(super::JOB_BATCH),
            pending_bytes: 0,
            pending_records: Vec::new(),
            gone: false,
        }
    }

    fn job(&mut self, job: Job) {
        let size = job.stat.map_or(0, |st| st.st_size);
        self.pending_bytes = self.pending_bytes.saturating_add(u64::try_from(size).unwrap_or(0));
        self.pending_jobs.push(job);
        if self.pending_jobs.len() >= super::JOB_BATCH || self.pending_bytes >= super::JOB_BATCH_BYTES {
            self.flush();
        }
    }

    fn record(&mut self, host: PathBuf, rec: crate::record::FileRecord) {
        self.pending_records.push((host, rec));
        if self.pending_records.len() >= super::JOB_BATCH {
            self.flush_records();
        }
    }

    fn carry_over(&mut self, dir: PathBuf) {
        self.flush_records();
        self.gone |= self.writes.send(Write::CarryOver(dir)).is_err();
    }

    fn flush_records(&mut self) {
        if !self.pending_records.is_empty() {
            let batch = std::mem::replace(&mut self.pending_records, Vec::with_capacity(super::JOB_BATCH));
            self.gone |= self.writes.send(Write::Records(batch)).is_err();
        }
    }

    /// Hands on everything pending. Records first: the job send may block for long (a
    /// rate-limited or paced scan), and what the walk recorded must not wait for it to be
    /// staged (and kept by a resume).
    pub fn flush(&mut self) {
        self.flush_records();
        if !self.pending_jobs.is_empty() {
            let batch = std::mem::replace(&mut self.pending_jobs, Vec::with_capacity(super::JOB_BATCH));
            self.pending_bytes = 0;
            self.gone |= match &mut self.jobs {
                JobsTo::Queue(tx) => tx.send(batch).is_err(),
                JobsTo::Here(examine) => !examine(batch),
            };
        }
    }
}
