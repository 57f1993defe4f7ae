//! [`PackageOracle`] over the package [`Index`] and the [`transaction`](crate::transaction)
//! detector: what the FIM engine asks about each changed file.
//!
//! The index is re-read when the FIM engine asks (a transaction ended), and on its own when
//! the package databases changed while no transaction was seen (one was missed: a short
//! `dpkg -i` between two looks), checked at most every [`STALE_CHECK`]. Never while a
//! transaction runs: the engine asks for the owners *before* the transaction then.

use crate::index::Index;
use crate::transaction;
use guestward_core::{HostRoot, Problem, Timestamp};
use guestward_fim::package::{
    ChangeOrigin, DigestAlgo, ExpectedFile, KnownContent, PackageAttribution, PackageDigest, PackageOracle,
    PackageTransaction, PackageVerification,
};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How often the databases' modification times are compared with those of the last load.
pub const STALE_CHECK: Duration = Duration::from_secs(2);

/// Files whose change means the index is stale.
const DATABASES: &[&str] = &[
    "/var/lib/dpkg/status",
    "/var/lib/rpm/rpmdb.sqlite",
    "/var/lib/rpm/Packages",
    "/var/lib/rpm/Packages.db",
    "/usr/lib/sysimage/rpm/rpmdb.sqlite",
    "/usr/lib/sysimage/rpm/Packages.db",
];

/// (size, mtime in ns, inode) of each database file present.
type Stamp = Vec<(u64, i128, u64)>;

fn stamp(root: &HostRoot) -> Stamp {
    DATABASES
        .iter()
        .map(|p| match root.symlink_metadata(p) {
            Ok(m) => (m.len(), i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()), m.ino()),
            Err(_) => (0, 0, 0),
        })
        .collect()
}

/// Entries of one database directory examined for [`databases_stamp`]; beyond, it is not
/// stamped (a FIM verdict is then never reused: see `PackageOracle::databases_stamp`).
const MAX_STAMPED_ENTRIES: usize = 100_000;

/// A digest of the identity (device, inode, mode, size, mtime, ctime) of every file the
/// package expectations are read from: dpkg's `status`, `diversions` and every entry of
/// `info/` (`.md5sums`, `.list`, `.conffiles`...), its `path-exclude` settings
/// (`/etc/dpkg/dpkg.cfg` and `dpkg.cfg.d/`), every entry of the rpm database directories, the
/// owner names rpm's are resolved through (`/etc/passwd`, `/etc/group`), and `/` itself (its
/// top-level symlinks, `/bin` to `usr/bin`, decide the paths a package's files are found at).
/// A file absent counts as such.
///
/// Why ctime: it is set by the kernel on every change to a file's content or inode and
/// cannot be set from user space (only by changing the clock), so a `.md5sums` rewritten with
/// its mtime restored still changes the digest. Left out: rpm's `*-shm` (SQLite's shared
/// memory index, written by every reader) and lock files, which hold no package data.
/// `None`: a directory that cannot be listed, or holds more than [`MAX_STAMPED_ENTRIES`].
pub fn databases_stamp(root: &HostRoot) -> Option<[u8; 32]> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"guestward-package-databases-v1\0");
    let admin = Path::new(crate::dpkg::DEFAULT_ADMIN_DIR);
    let mut files = vec![PathBuf::from("/"), admin.join("status"), admin.join("diversions")];
    files.extend(["/etc/dpkg/dpkg.cfg", "/etc/passwd", "/etc/group"].map(PathBuf::from));
    for f in &files {
        let id = root.symlink_metadata(f).ok().as_ref().map(identity);
        stamp_entry(&mut h, f.as_os_str().as_encoded_bytes(), id.as_ref());
    }
    let mut dirs = vec![admin.join("info"), PathBuf::from("/etc/dpkg/dpkg.cfg.d")];
    dirs.extend(crate::rpm::default_dirs());
    for dir in dirs {
        // A directory is its entries: its own times move with every lock file and every `-shm`
        // created in it, which the listing leaves out.
        h.update((dir.as_os_str().len() as u64).to_be_bytes());
        h.update(dir.as_os_str().as_encoded_bytes());
        let Some(meta) = root.symlink_metadata(&dir).ok().filter(std::fs::Metadata::is_dir) else {
            h.update([0u8]);
            continue;
        };
        h.update([1u8]);
        h.update(meta.dev().to_be_bytes());
        h.update(meta.ino().to_be_bytes());
        let real = root.resolve(&dir).ok()?;
        let mut listed = Vec::new();
        for e in std::fs::read_dir(&real).ok()? {
            let e = e.ok()?;
            if listed.len() >= MAX_STAMPED_ENTRIES {
                return None;
            }
            let name = e.file_name();
            let bytes = name.as_encoded_bytes();
            if bytes.ends_with(b"-shm") || bytes.ends_with(b".lock") {
                continue;
            }
            // `DirEntry::metadata` does not follow a symlink: a link is stamped as a link. Only
            // the identity is kept (a `Metadata` is four times its size, times 3,000 entries
            // on a Debian host, during a scan).
            listed.push((name, e.metadata().ok().as_ref().map(identity)));
        }
        listed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        h.update((listed.len() as u64).to_be_bytes());
        for (name, id) in &listed {
            stamp_entry(&mut h, name.as_encoded_bytes(), id.as_ref());
        }
    }
    Some(h.finalize().into())
}

/// What [`databases_stamp`] keeps of a file: device, inode, mode, size, mtime and ctime (s, ns).
type Identity = [u64; 8];

fn identity(m: &std::fs::Metadata) -> Identity {
    // Two's complement for the signed times: the bits, not their order, are what is hashed.
    let [mtime, mtime_ns, ctime, ctime_ns] =
        [m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()].map(|t| t as u64);
    [m.dev(), m.ino(), u64::from(m.mode()), m.size(), mtime, mtime_ns, ctime, ctime_ns]
}

/// One file's part of [`databases_stamp`]: its name, then its identity or that it is absent.
fn stamp_entry(h: &mut sha2::Sha256, name: &[u8], id: Option<&Identity>) {
    use sha2::Digest;
    h.update((name.len() as u64).to_be_bytes());
    h.update(name);
    let Some(id) = id else {
        h.update([0u8]);
        return;
    };
    h.update([1u8]);
    for n in id {
        h.update(n.to_be_bytes());
    }
}

struct Tracked {
    transaction: Option<PackageTransaction>,
    /// The last `INSTALLTIME` read: the databases' stamp then, when, and what it found.
    rpm_installs: Option<(Stamp, Instant, Vec<String>)>,
}

impl Tracked {
    /// The rpm packages installed since `since` (see [`transaction::rpm_recent_installs`]),
    /// re-read only when the rpm database changed since the last read and at most every
    /// [`STALE_CHECK`]: the look runs every 250 ms during a transaction, while rpm writes.
    fn rpm_installs(&mut self, root: &HostRoot, since: Timestamp) -> Vec<String> {
        let now = stamp(root);
        let fresh = match &self.rpm_installs {
            Some((s, at, _)) => *s == now || at.elapsed() < STALE_CHECK,
            None => false,
        };
        if !fresh {
            self.rpm_installs = Some((now, Instant::now(), transaction::rpm_recent_installs(root, since)));
        }
        self.rpm_installs.as_ref().map(|(_, _, found)| found.clone()).unwrap_or_default()
    }
}

/// The package manager of one root, as FIM sees it.
pub struct Oracle {
    root: HostRoot,
    /// `None` until first needed (see [`Oracle::lazy`]).
    index: RwLock<Option<Arc<Index>>>,
    stamp: Mutex<(Stamp, Instant)>,
    /// [`databases_stamp`] when the index in use was read (taken just before).
    loaded_from: Mutex<Option<[u8; 32]>>,
    tracked: Mutex<Tracked>,
}

impl std::fmt::Debug for Oracle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oracle").field("root", &self.root).finish_non_exhaustive()
    }
}

impl Oracle {
    /// Loads the index of `root`; what could not be read is returned as problems (the rest is
    /// indexed: a damaged `.md5sums` leaves that package's files unverified, not the others).
    pub fn load(root: HostRoot) -> (Self, Vec<Problem>) {
        let s = stamp(&root);
        let from = databases_stamp(&root);
        let (index, problems) = Index::load(&root);
        let oracle = Self {
            root,
            index: RwLock::new(Some(Arc::new(index))),
            stamp: Mutex::new((s, Instant::now())),
            loaded_from: Mutex::new(from),
            tracked: Mutex::new(Tracked { transaction: None, rpm_installs: None }),
        };
        (oracle, problems)
    }

    /// An oracle that reads the index when first asked about a file, for one-shot commands
    /// that may never ask (`fim check --fast` of an unchanged tree: the index of 97k package
    /// files took a quarter of its time). What the load could not read is not reported here;
    /// `fim verify-packages` names it.
    pub fn lazy(root: HostRoot) -> Self {
        Self {
            root,
            index: RwLock::new(None),
            stamp: Mutex::new((Stamp::default(), Instant::now())),
            loaded_from: Mutex::new(None),
            tracked: Mutex::new(Tracked { transaction: None, rpm_installs: None }),
        }
    }

    /// The index in use now (read now if it never was).
    pub fn index(&self) -> Arc<Index> {
        if let Some(index) = self.index.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            return Arc::clone(index);
        }
        let mut slot = self.index.write().unwrap_or_else(|e| e.into_inner());
        if let Some(index) = slot.as_ref() {
            return Arc::clone(index);
        }
        let s = stamp(&self.root);
        let from = databases_stamp(&self.root);
        let index = Arc::new(Index::load(&self.root).0);
        *self.stamp.lock().unwrap_or_else(|e| e.into_inner()) = (s, Instant::now());
        *self.loaded_from.lock().unwrap_or_else(|e| e.into_inner()) = from;
        *slot = Some(Arc::clone(&index));
        index
    }

    fn reload(&self) -> Vec<Problem> {
        let s = stamp(&self.root);
        let from = databases_stamp(&self.root);
        let (index, problems) = Index::load(&self.root);
        let mut slot = self.index.write().unwrap_or_else(|e| e.into_inner());
        *self.loaded_from.lock().unwrap_or_else(|e| e.into_inner()) = from;
        *slot = Some(Arc::new(index));
        drop(slot);
        *self.stamp.lock().unwrap_or_else(|e| e.into_inner()) = (s, Instant::now());
        problems
    }

    /// Reloads when the databases changed and no transaction is being tracked.
    fn reload_if_stale(&self) {
        if self.tracked.lock().unwrap_or_else(|e| e.into_inner()).transaction.is_some() {
            return;
        }
        let stale = {
            let mut st = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
            if st.1.elapsed() < STALE_CHECK {
                return;
            }
            st.1 = Instant::now();
            stamp(&self.root) != st.0
        };
        if stale {
            let problems = self.reload();
            tracing::info!(problems = problems.len(), "package databases changed: package index re-read");
        }
    }
}

impl PackageOracle for Oracle {
    fn expected(&self, path: &Path) -> Vec<ExpectedFile> {
        self.reload_if_stale();
        self.index().expected(path)
    }

    fn refresh(&self) -> Result<(), String> {
        let problems = self.reload();
        match problems.first() {
            // Partial: what could be read is indexed; the first problem says what was not.
            Some(p) if problems.len() > 1 => Err(format!("{} (and {} more)", p.message, problems.len() - 1)),
            Some(p) => Err(p.message.clone()),
            None => Ok(()),
        }
    }

    fn wants_md5(&self, path: &Path) -> bool {
        self.index().dpkg_owns(path)
    }

    fn forget_lookups(&self) {
        // Only an index already read: forgetting must not read one.
        if let Some(index) = self.index.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            index.forget_lookups();
        }
    }

    /// [`databases_stamp`] now, unless the index in use was read from databases that differ
    /// from those now on disk (its verdicts are then not theirs). An index not read yet
    /// ([`Oracle::lazy`]) would be read from those on disk now.
    fn databases_stamp(&self) -> Option<[u8; 32]> {
        let now = databases_stamp(&self.root)?;
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        let loaded_from = *self.loaded_from.lock().unwrap_or_else(|e| e.into_inner());
        match index.as_ref() {
            Some(_) if loaded_from != Some(now) => None,
            _ => Some(now),
        }
    }

    fn verify_under(
        &self,
        roots: &[PathBuf],
        known: &dyn KnownContent,
    ) -> Result<PackageVerification, String> {
        let index = self.index();
        if index.packages().is_empty() {
            return Err(match index.load_problems() {
                0 => "no dpkg or rpm database under the root".to_string(),
                n => format!(
                    "no package of the dpkg or rpm database under the root could be read ({n} problem(s): `guestward-agent fim verify-packages` names them)"
                ),
            });
        }
        let threads = std::thread::available_parallelism().map_or(2, std::num::NonZero::get).clamp(1, 8);
        let root = &self.root;
        let index = &index;
        let listed = Listed::default();
        // What the index could not read at load leaves those packages out of the listing.
        listed.unread.add_counted(index.load_problems() as u64, index.first_load_problems());
        // dpkg's packages: each thread lists and judges packages of its own, taken in turn.
        // Once the scan's MD5s judge most files without a lookup, listing them is most of the
        // pass, and one thread listing for the others left those waiting (docs/benchmarks.md).
        let next = std::sync::atomic::AtomicUsize::new(0);
        let mut found: Vec<(PathBuf, PackageAttribution)> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    let (next, listed) = (&next, &listed);
                    guestward_core::threads::spawn_or_run(scope, "gw-anchor", move || {
                        let mut found = Vec::new();
                        let mut batch = Vec::with_capacity(VERIFY_BATCH);
                        while let Ok(id) =
                            u32::try_from(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                            && (id as usize) < index.packages().len()
                        {
                            list_package(index, roots, id, listed, &mut |job| {
                                batch.push(job);
                                if batch.len() >= VERIFY_BATCH {
                                    found.extend(verify_batch(
                                        root,
                                        index,
                                        known,
                                        std::mem::take(&mut batch),
                                    ));
                                }
                            });
                        }
                        found.extend(verify_batch(root, index, known, batch));
                        Ok(found)
                    })
                })
                .collect();
            joined(workers.into_iter().map(guestward_core::threads::Started::join))
        })?;
        // rpm's packages and the paths several packages list: one thread lists them (every rpm
        // header in one pass over the database), the others judge.
        let (jobs, job_rx) = std::sync::mpsc::sync_channel::<Vec<VerifyJob>>(VERIFY_QUEUE / VERIFY_BATCH);
        let job_rx = Mutex::new(job_rx);
        let mut unread = Unread::default();
        let rest: Vec<(PathBuf, PackageAttribution)> = std::thread::scope(|scope| {
            // The sender belongs to this closure: were the listing to panic, the unwinding
            // drops it, and the threads waiting on it end instead of holding the scope open.
            let jobs = jobs;
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    let job_rx = &job_rx;
                    // A thread the kernel refuses (`TasksMax`) is one judge fewer; with none at
                    // all, the listing below would wait for room forever, so that fails.
                    std::thread::Builder::new().name("gw-anchor-judge".into()).spawn_scoped(
                        scope,
                        move || {
                            let mut found = Vec::new();
                            let mut failed = None;
                            loop {
                                // The lock is held only to take one batch.
                                let batch = match job_rx.lock() {
                                    Ok(rx) => rx.recv(),
                                    Err(_) => break,
                                };
                                let Ok(batch) = batch else { break };
                                // After a failure the thread still takes what is queued: the
                                // listing would otherwise wait for room that no thread makes.
                                if failed.is_some() {
                                    continue;
                                }
                                let judged = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    verify_batch(root, index, known, batch)
                                }));
                                match judged {
                                    Ok(theirs) => found.extend(theirs),
                                    Err(panic) => failed = Some(panic_message(panic.as_ref())),
                                }
                            }
                            match failed {
                                Some(why) => Err(why),
                                None => Ok(found),
                            }
                        },
                    )
                })
                .filter_map(Result::ok)
                .collect();
            if workers.is_empty() {
                return Err("no thread could be started to verify the packages' files".to_string());
            }
            let mut batcher = Batcher { jobs: &jobs, pending: Vec::with_capacity(VERIFY_BATCH) };
            unread = list_rest(index, roots, listed, &mut batcher);
            batcher.flush();
            drop(batcher);
            drop(jobs);
            joined(workers.into_iter().map(std::thread::ScopedJoinHandle::join))
        })?;
        found.extend(rest);
        let (unread_count, unread) = unread.into_parts();
        Ok(PackageVerification { mismatches: found, unread, unread_count })
    }

    fn running_transaction(&self) -> Option<PackageTransaction> {
        let observed = transaction::observe(&self.root);
        let mut tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
        match observed {
            None => {
                tracked.transaction = None;
                None
            }
            Some(o) => {
                // One id for as long as it is seen: the FIM groups its changes by it.
                let t = match tracked.transaction.take() {
                    Some(mut t) if t.manager == o.manager => {
                        for e in o.evidence {
                            if t.evidence.len() < 16 && !t.evidence.contains(&e) {
                                t.evidence.push(e);
                            }
                        }
                        t
                    }
                    _ => o.to_transaction(Timestamp::now()),
                };
                let mut t = t;
                if t.manager == guestward_fim::package::PackageManager::Rpm {
                    // From a little before it was first seen: rpm stamps a package when it is
                    // installed, which may be just before the lock or process was noticed.
                    let since = Timestamp::from_unix_secs(
                        t.started.unix_secs() - i64::try_from(transaction::RECENT.as_secs()).unwrap_or(0),
                    )
                    .unwrap_or(t.started);
                    for e in tracked.rpm_installs(&self.root, since) {
                        if t.evidence.len() < 16 && !t.evidence.contains(&e) {
                            t.evidence.push(e);
                        }
                    }
                }
                tracked.transaction = Some(t.clone());
                Some(t)
            }
        }
    }
}

/// Findings judged by one thread of the trust anchor, or why they are not all there.
type ThreadFound = Result<Vec<(PathBuf, PackageAttribution)>, String>;

/// The findings of every thread of the trust anchor, or why there are none: a thread that
/// panicked took the files it had judged with it, and a verdict short of them would pass those
/// files as matching their packages. The caller reports the baseline's packages as not
/// verified instead.
fn joined(workers: impl IntoIterator<Item = std::thread::Result<ThreadFound>>) -> ThreadFound {
    let mut found = Vec::new();
    let mut failed = None;
    for worker in workers {
        match worker {
            Ok(Ok(theirs)) => found.extend(theirs),
            Ok(Err(why)) => {
                failed.get_or_insert(why);
            }
            Err(panic) => {
                failed.get_or_insert(panic_message(panic.as_ref()));
            }
        }
    }
    match failed {
        Some(why) => Err(format!("a thread of the package verification failed (internal error: {why})")),
        None => Ok(found),
    }
}

/// What a panic said, when it said it with a string.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_string())
}

/// Files queued for the trust anchor's hashing threads: the pass holds at most this many
/// (plus one rpm header's file list and the shared paths; dpkg's files are streamed) however
/// many files are in scope. It
/// once gathered every in-scope file with its expected entries first: 14 MB resident and
/// 24 MB at peak in the daemon for the default scope.
const VERIFY_QUEUE: usize = 256;
/// Files handed to a thread at once: most are judged from what the scan read, a lookup of a
/// few microseconds, which a wake-up per file would cost more than.
const VERIFY_BATCH: usize = 64;

/// A package file and what its package(s) say about it.
type VerifyJob = (PathBuf, Expected);

/// What the trust anchor checks a file against.
enum Expected {
    /// One dpkg package's MD5 (nearly every file on a Debian host): its [`ExpectedFile`], with
    /// an owner copied out of the index, is built only for a file that does not match it.
    DpkgMd5 { package: u32, md5: [u8; 16], conffile: bool },
    /// Every owner's entry (rpm, and paths more than one package lists).
    Listed(Vec<ExpectedFile>),
}

impl Expected {
    fn algos(&self) -> Vec<DigestAlgo> {
        match self {
            Expected::DpkgMd5 { .. } => vec![DigestAlgo::Md5],
            Expected::Listed(expected) => guestward_fim::attribution::algos_of(expected),
        }
    }

    /// Whether `content` has exactly the digest expected, for the common case that needs no
    /// [`classify`](guestward_fim::attribution::classify): such a file is judged a match by it.
    fn matches_outright(&self, content: &guestward_fim::attribution::Content) -> bool {
        match self {
            Expected::DpkgMd5 { md5, .. } => {
                content.present
                    && content
                        .digests
                        .iter()
                        .any(|d| d.algo == DigestAlgo::Md5 && d.hex.as_bytes() == crate::hex(md5).as_bytes())
            }
            Expected::Listed(_) => false,
        }
    }

    fn listed(&self, index: &Index) -> std::borrow::Cow<'_, [ExpectedFile]> {
        match *self {
            Expected::DpkgMd5 { package, md5, conffile } => std::borrow::Cow::Owned(
                index
                    .packages()
                    .get(package as usize)
                    .map(|p| ExpectedFile {
                        owner: p.owner.clone(),
                        digest: Some(PackageDigest { algo: DigestAlgo::Md5, hex: crate::hex(&md5) }),
                        conffile,
                        mode: None,
                        size: None,
                        user: None,
                        group: None,
                    })
                    .into_iter()
                    .collect(),
            ),
            Expected::Listed(ref expected) => std::borrow::Cow::Borrowed(expected),
        }
    }
}

/// Queues jobs for the trust anchor's threads in batches.
struct Batcher<'a> {
    jobs: &'a std::sync::mpsc::SyncSender<Vec<VerifyJob>>,
    pending: Vec<VerifyJob>,
}

impl Batcher<'_> {
    /// Queues one; false when the threads are gone.
    fn send(&mut self, job: VerifyJob) -> bool {
        self.pending.push(job);
        self.pending.len() < VERIFY_BATCH || self.flush()
    }

    fn flush(&mut self) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(VERIFY_BATCH));
        self.jobs.send(batch).is_ok()
    }
}

/// What the threads listing dpkg's packages leave for [`list_rest`].
#[derive(Default)]
struct Listed {
    /// Paths more than one package lists: judged once, at the end, with every owner's entry
    /// (such a file matches if it matches any of them).
    shared: Mutex<std::collections::BTreeSet<PathBuf>>,
    /// rpm packages: header record -> package number.
    rpm_records: Mutex<std::collections::HashMap<u32, u32>>,
    /// What could not be read of the databases: those files are not verified.
    unread: Unread,
}

/// What of the package databases the trust anchor could not read: counted, the first named.
#[derive(Default)]
struct Unread(Mutex<(u64, Vec<Problem>)>);

impl Unread {
    fn add_counted(&self, count: u64, first: &[Problem]) {
        let mut unread = self.0.lock().unwrap_or_else(|e| e.into_inner());
        unread.0 += count;
        let room = guestward_fim::package::MAX_UNREAD_LISTED.saturating_sub(unread.1.len());
        unread.1.extend(first.iter().take(room).cloned());
    }

    fn add(&self, problems: &[Problem]) {
        self.add_counted(problems.len() as u64, problems);
    }

    fn into_parts(self) -> (u64, Vec<Problem>) {
        self.0.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

/// Hands `queue` each file under `roots` of package `id` that has a recorded digest, when it
/// is a dpkg package that one package alone lists; a shared path, and an rpm package, is left
/// in `listed` for [`list_rest`].
fn list_package(
    index: &Index,
    roots: &[PathBuf],
    id: u32,
    listed: &Listed,
    queue: &mut dyn FnMut(VerifyJob),
) {
    let Some(pkg) = index.packages().get(id as usize) else { return };
    if !pkg.is_verified() {
        return;
    }
    let under = |p: &Path| roots.iter().any(|r| p.starts_with(r));
    let Some((info_name, conffiles)) = index.dpkg_source(id) else {
        if let Some(record) = index.rpm_record(id) {
            listed.rpm_records.lock().unwrap_or_else(|e| e.into_inner()).insert(record, id);
        }
        return;
    };
    // The canonical path `keep` computed is handed to `emit`, not computed again.
    let read = index.dpkg_checked_files(
        &pkg.owner.name,
        info_name,
        conffiles,
        |on_disk| {
            // dpkg was told not to unpack it (path-exclude): absent on purpose.
            let path = index.canon(on_disk).into_owned();
            let keep = under(&path)
                && !(index.dpkg_path_excluded(on_disk) && index.root().symlink_metadata(&path).is_err());
            keep.then_some(path)
        },
        |f, path| {
            let Some(md5) = f.checked_md5() else { return true };
            if index.is_shared_canon(&path) {
                listed.shared.lock().unwrap_or_else(|e| e.into_inner()).insert(path);
            } else {
                queue((path, Expected::DpkgMd5 { package: id, md5, conffile: f.conffile }));
            }
            true
        },
    );
    // An unreadable package, or lines of its `.md5sums`, leave its files unverified: said.
    match read {
        Ok(problems) => listed.unread.add(&problems),
        Err(e) => listed.unread.add(&[e.to_problem()]),
    }
}

/// Queues the files of the rpm packages [`list_package`] left under `roots` that have a
/// recorded digest, then the shared paths with every owner's entry.
fn list_rest(index: &Index, roots: &[PathBuf], listed: Listed, jobs: &mut Batcher<'_>) -> Unread {
    let under = |p: &Path| roots.iter().any(|r| p.starts_with(r));
    let Listed { shared, rpm_records, unread } = listed;
    let mut shared = shared.into_inner().unwrap_or_else(|e| e.into_inner());
    let rpm_records = rpm_records.into_inner().unwrap_or_else(|e| e.into_inner());
    // rpm: every wanted header in one pass over the database (reading it once per package
    // would read a 100 MB `Packages` file hundreds of times).
    if let (false, Some(found)) = (rpm_records.is_empty(), index.rpm_database()) {
        let want: Vec<u32> = rpm_records.keys().copied().collect();
        let mut more = true;
        // An unreadable header leaves its package's files unverified: said.
        let problems = crate::rpm::read_headers(index.root(), found, Some(&want), &mut |p| {
            let Some(pkg) = rpm_records.get(&p.record).and_then(|id| index.packages().get(*id as usize))
            else {
                return;
            };
            for f in p.files().filter(|f| f.installed() && f.digest.is_some()) {
                let path = index.canon(&f.path).into_owned();
                if !more || !under(&path) {
                    continue;
                }
                if index.is_shared_canon(&path) {
                    shared.insert(path);
                    continue;
                }
                let expected = ExpectedFile {
                    owner: pkg.owner.clone(),
                    conffile: f.flags & crate::rpm::flags::CONFIG != 0,
                    mode: Some(f.mode),
                    size: Some(f.size),
                    digest: f.digest,
                    user: Some(f.user),
                    group: Some(f.group),
                };
                more = jobs.send((path, Expected::Listed(vec![expected])));
            }
        });
        unread.add(&problems);
        if !more {
            return unread;
        }
    }
    for path in shared {
        let expected: Vec<ExpectedFile> =
            index.expected(&path).into_iter().filter(|e| e.digest.is_some()).collect();
        if !expected.is_empty() && !jobs.send((path, Expected::Listed(expected))) {
            return unread;
        }
    }
    unread
}

/// Each file of `batch` against what its package(s) say: an attribution for each that does
/// not match (changed outside the package manager, or an edited conffile). What the scan that
/// just ran read of a file is used when it still describes it (see `KnownContent`); otherwise
/// the file is read here.
fn verify_batch(
    root: &HostRoot,
    index: &Index,
    known: &dyn KnownContent,
    batch: Vec<VerifyJob>,
) -> Vec<(PathBuf, PackageAttribution)> {
    // A file whose MD5 the scan took (or carried over from a baseline row of the same content)
    // and found to be the one its package lists matches: no lookup of what the scan recorded
    // (most of a Debian host's package files).
    let batch: Vec<VerifyJob> = batch
        .into_iter()
        .filter(|(path, expected)| match expected {
            Expected::DpkgMd5 { md5, .. } => !known.took_md5(path, md5),
            Expected::Listed(_) => true,
        })
        .collect();
    let asked: Vec<(&Path, Vec<DigestAlgo>)> =
        batch.iter().map(|(path, expected)| (path.as_path(), expected.algos())).collect();
    let mut contents = match asked.is_empty() {
        true => Vec::new(),
        false => known.contents(&asked),
    }
    .into_iter();
    let mut found = Vec::new();
    for ((_, algos), (path, expected)) in asked.iter().zip(batch.iter()) {
        let content = contents
            .next()
            .flatten()
            .unwrap_or_else(|| guestward_fim::attribution::read_content(root, path, algos));
        if expected.matches_outright(&content) {
            continue;
        }
        let judged =
            guestward_fim::attribution::classify(&expected.listed(index), &content, true, false, None)
                .filter(|a| {
                    matches!(a.origin, ChangeOrigin::OutsidePackageManager | ChangeOrigin::ConffileEdit)
                });
        if let Some(a) = judged {
            found.push((path.clone(), a));
        }
    }
    found
}
