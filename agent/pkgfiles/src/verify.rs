//! Verification of installed package files against their package manager, like `debsums -c`
//! (dpkg) and `rpm -V` (rpm): `guestward-agent fim verify-packages`.
//!
//! What is compared:
//! - dpkg: the MD5 of each file listed in `.md5sums` and of each conffile (`Conffiles:` in the
//!   status file; `remove-on-upgrade` ones skipped, `newconffile` ones have no digest yet), for
//!   packages `installed` or `half-configured` (debsums' choice). A diverted file is checked
//!   where the diversion put it. A file several packages own matches if it matches any of them.
//! - rpm: what `rpm -V` checks, per file and within the file's FILEVERIFYFLAGS: digest (in the
//!   header's FILEDIGESTALGO), size, mode (type and permissions), symlink target, owner and
//!   group (by name, through the root's own /etc/passwd and /etc/group, `root` being 0 as in
//!   rpm), and mtime (not for files several packages share, as rpm). `%ghost` files: no content
//!   checks; missing `%ghost` and `%missingok` files are not reported; files rpm did not install
//!   (FILESTATES not-installed, net-shared) are skipped, replaced ones only checked for
//!   existence. Not compared: device numbers, file capabilities, ACLs (rpm's `D`, `P`, and the
//!   ACL part of `M`).
//! - Conffiles (dpkg) and `%config` files (rpm) that differ are conffile changes (low
//!   severity: administrators edit them); other differences are changes (high); missing
//!   files are reported as missing (medium).
//!
//! How files are read (the tree may be hostile, a `--root` snapshot especially): every path is
//! resolved inside the [`HostRoot`]; the directory holding a file is opened once (symlinks in
//! it resolved inside the root, and checked to be the directory the root's door sees), then
//! the file is examined with `fstatat(AT_SYMLINK_NOFOLLOW)` and opened relative to that
//! directory with `O_NOFOLLOW | O_NONBLOCK` ([`guestward_fim::record::open_for_hash`]): a
//! symlink is never followed (it is reported as a type change), a FIFO or device never opened,
//! the open descriptor must be the inode examined, exactly its size is read, and a file that
//! changes while it is read is read again (then reported as unstable). Files over a size cap
//! are not hashed (a problem). Hashing runs on every core: one thread lists the packages'
//! files into a bounded queue, one worker per core hashes.

use crate::index::Index;
use crate::rpm::{self, RpmFile, flags, states, verify_flags as vf};
use guestward_core::{HostFsError, HostRoot, Problem, Severity};
use guestward_fim::dirfd;
use guestward_fim::package::{DigestAlgo, PackageDigest, PackageManager, PackageOwner};
use nix::sys::stat::FileStat;
use serde::Serialize;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

/// Default [`Options::max_file_bytes`]: larger package files are not hashed (reported).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 16 << 30;
/// Files queued ahead of the hashing workers.
const QUEUE_DEPTH: usize = 1024;
/// Re-reads of a file that changes while it is hashed.
const MAX_ATTEMPTS: u32 = 3;
/// Largest /etc/passwd or /etc/group read (for rpm's owner names).
const MAX_ACCOUNTS_BYTES: u64 = 16 << 20;

/// What to verify and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only these packages (by name, or `name:arch`); empty: every package.
    pub packages: Vec<String>,
    /// Hashing threads; 0: one per core.
    pub threads: usize,
    /// Files larger than this are not hashed.
    pub max_file_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self { packages: Vec::new(), threads: 0, max_file_bytes: DEFAULT_MAX_FILE_BYTES }
    }
}

/// What kind of difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MismatchKind {
    /// A package file differs from its package.
    Changed,
    /// A conffile / `%config` file differs (administrators edit those).
    ConffileChanged,
    /// A package file is not there.
    Missing,
}

impl MismatchKind {
    /// How urgent.
    pub fn severity(self) -> Severity {
        match self {
            Self::Changed => Severity::High,
            Self::ConffileChanged => Severity::Low,
            Self::Missing => Severity::Medium,
        }
    }
}

/// One attribute that differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Attribute {
    /// Content digest (`5`).
    Digest,
    /// Size (`S`).
    Size,
    /// Mode (`M`).
    Mode,
    /// Symlink target (`L`).
    LinkTarget,
    /// Owner (`U`).
    User,
    /// Group (`G`).
    Group,
    /// Modification time (`T`).
    Mtime,
    /// Not the type of file the package installed (a symlink where dpkg put a regular file).
    Type,
}

impl Attribute {
    /// rpm -V's letter.
    pub fn rpm_letter(self) -> char {
        match self {
            Self::Digest => '5',
            Self::Size => 'S',
            Self::Mode | Self::Type => 'M',
            Self::LinkTarget => 'L',
            Self::User => 'U',
            Self::Group => 'G',
            Self::Mtime => 'T',
        }
    }
}

/// A package file that does not match its package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// The path checked (host path; where a diversion put it for dpkg).
    pub path: String,
    /// The owning package.
    pub package: PackageOwner,
    /// Changed, conffile changed, or missing.
    pub kind: MismatchKind,
    /// A conffile (dpkg) or `%config` file (rpm), also when missing.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub conffile: bool,
    /// `kind`'s severity.
    pub severity: Severity,
    /// What differs (empty for a missing file).
    pub attributes: Vec<Attribute>,
    /// The digest the package records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<PackageDigest>,
    /// The digest of the file on disk, same algorithm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<PackageDigest>,
    /// What differs, as words (`size 120 != 118`, `now a symlink`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// The result of a verification.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The root checked.
    pub root: String,
    /// Package managers found.
    pub managers: Vec<PackageManager>,
    /// Packages checked.
    pub packages_checked: usize,
    /// Files checked.
    pub files_checked: u64,
    /// Bytes hashed.
    pub bytes_hashed: u64,
    /// Files that do not match, most severe first, then by path: at most
    /// [`MAX_LISTED_MISMATCHES`], the first in that order.
    pub mismatches: Vec<Mismatch>,
    /// Mismatches found beyond those listed.
    #[serde(skip_serializing_if = "is_zero")]
    pub unlisted_mismatches: u64,
    /// What could not be read or checked (unreadable files, damaged databases): at most
    /// [`MAX_LISTED_PROBLEMS`].
    pub problems: Vec<Problem>,
    /// Problems found beyond those listed.
    #[serde(skip_serializing_if = "is_zero")]
    pub unlisted_problems: u64,
    /// Wall time.
    pub duration_ms: u64,
    /// Unlisted mismatches by kind (changed, conffile changed, missing), for [`Self::count`]
    /// (`unlisted_mismatches` is their sum).
    #[serde(skip)]
    pub unlisted_by_kind: [u64; 3],
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Mismatches listed at most. A hostile image can list millions of files its packages do not
/// have (every one missing): each is a few hundred bytes, so beyond this they are counted,
/// not kept, and memory stays bounded (1.5 million once took 1.2 GB).
pub const MAX_LISTED_MISMATCHES: usize = 100_000;

/// Problems listed at most; the rest are counted.
pub const MAX_LISTED_PROBLEMS: usize = 10_000;

impl Report {
    /// Mismatches of one kind, listed or not.
    pub fn count(&self, kind: MismatchKind) -> u64 {
        let listed = self.mismatches.iter().filter(|m| m.kind == kind).count() as u64;
        listed + self.unlisted_by_kind[kind_index(kind)]
    }
}

fn kind_index(kind: MismatchKind) -> usize {
    match kind {
        MismatchKind::Changed => 0,
        MismatchKind::ConffileChanged => 1,
        MismatchKind::Missing => 2,
    }
}

/// The order mismatches are listed in: most severe first (changed, missing, conffiles), then
/// by path.
fn listing_order(a: &Mismatch, b: &Mismatch) -> std::cmp::Ordering {
    (std::cmp::Reverse(a.severity), &a.path, &a.package.name).cmp(&(
        std::cmp::Reverse(b.severity),
        &b.path,
        &b.package.name,
    ))
}

/// What the workers found, kept bounded as it arrives: the first [`MAX_LISTED_MISMATCHES`] in
/// listing order (trimmed each time twice that many are held), the rest counted by kind.
#[derive(Default)]
struct Outcomes {
    mismatches: Vec<Mismatch>,
    unlisted_by_kind: [u64; 3],
    problems: guestward_core::capped::Capped<Problem, MAX_LISTED_PROBLEMS>,
}

impl Outcomes {
    fn take(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Mismatch(m) => {
                self.mismatches.push(*m);
                if self.mismatches.len() >= 2 * MAX_LISTED_MISMATCHES {
                    self.trim();
                }
            }
            Outcome::Problem(p) => self.problems.push(p),
        }
    }

    fn trim(&mut self) {
        self.mismatches.sort_by(listing_order);
        for m in self.mismatches.drain(MAX_LISTED_MISMATCHES.min(self.mismatches.len())..) {
            self.unlisted_by_kind[kind_index(m.kind)] += 1;
        }
    }
}

/// Live counters, for a progress bar.
#[derive(Debug, Default)]
pub struct Progress {
    /// Packages whose files have all been queued.
    pub packages_done: AtomicU64,
    /// Packages to check.
    pub packages_total: AtomicU64,
    /// Files checked.
    pub files_done: AtomicU64,
    /// Bytes hashed.
    pub bytes_done: AtomicU64,
}

/// Why verification could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// No dpkg or rpm database under the root.
    #[error(
        "no package database under {root} (looked for /var/lib/dpkg/status, /var/lib/rpm, /usr/lib/sysimage/rpm)"
    )]
    NoDatabase {
        /// The root.
        root: String,
    },
    /// A package database is there, but none of its packages could be read.
    #[error("no package of the database under {root} could be read: {}", problems.join("; "))]
    Unreadable {
        /// The root.
        root: String,
        /// What the load met, the first few.
        problems: Vec<String>,
    },
    /// The threads the check needs could not be started, or one failed.
    #[error("{0}")]
    Threads(String),
    /// `--package` named packages that are not installed.
    #[error("not installed: {0}")]
    UnknownPackages(String),
}

/// One file to check.
enum Check {
    Dpkg { path: PathBuf, md5: [u8; 16], conffile: bool },
    Rpm { file: Box<RpmFile>, shared: bool },
}

struct Job {
    pkg: u32,
    check: Check,
}

enum Outcome {
    Mismatch(Box<Mismatch>),
    Problem(Problem),
}

/// Loads the index of `root` and verifies it (see the module documentation).
pub fn verify_root(root: &HostRoot, opts: &Options, progress: &Progress) -> Result<Report, VerifyError> {
    let started = Instant::now();
    let (index, problems) = Index::load(root);
    let mut report = match verify(&index, opts, progress) {
        Ok(r) => r,
        // Say why, not only that there is nothing: a database whose every file list was refused
        // (over its size cap, unreadable) is not an absent one.
        Err(VerifyError::NoDatabase { root }) if !problems.is_empty() => {
            const SHOWN: usize = 3;
            let mut shown: Vec<String> = problems.iter().take(SHOWN).map(|p| p.message.clone()).collect();
            if problems.len() > SHOWN {
                shown.push(format!("and {} more", problems.len() - SHOWN));
            }
            return Err(VerifyError::Unreadable { root, problems: shown });
        }
        Err(e) => return Err(e),
    };
    let mut all = problems;
    all.append(&mut report.problems);
    report.problems = all;
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}

/// Verifies the packages of `index` (see the module documentation).
pub fn verify(index: &Index, opts: &Options, progress: &Progress) -> Result<Report, VerifyError> {
    let started = Instant::now();
    let root = index.root();
    let mut managers: Vec<PackageManager> = index.packages().iter().map(|p| p.owner.manager).collect();
    managers.sort_unstable();
    managers.dedup();
    if managers.is_empty() {
        return Err(VerifyError::NoDatabase { root: root.dir().display().to_string() });
    }
    let selected = select(index, &opts.packages)?;
    progress.packages_total.store(selected.len() as u64, Ordering::Relaxed);
    let accounts = Accounts::read(root);
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
    } else {
        opts.threads
    };
    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(QUEUE_DEPTH);
    let job_rx = Arc::new(std::sync::Mutex::new(job_rx));
    let (out_tx, out_rx) = mpsc::channel::<Outcome>();
    let mut found = Outcomes::default();
    // The listing's senders wait in a slot it empties: they are dropped when it is done (the
    // hashers then end), wherever it ran.
    let listing_senders = std::sync::Mutex::new(Some((job_tx, out_tx.clone())));
    std::thread::scope(|s| {
        let mut hashers = 0usize;
        for i in 0..threads {
            let rx = Arc::clone(&job_rx);
            let tx = out_tx.clone();
            let accounts = &accounts;
            let spawned =
                std::thread::Builder::new().name(format!("gw-verify-{i}")).spawn_scoped(s, move || {
                    let mut worker = Worker::new(index, opts.max_file_bytes, accounts);
                    loop {
                        // The lock is held only to take one job.
                        let job = match rx.lock() {
                            Ok(guard) => guard.recv(),
                            Err(_) => break,
                        };
                        let Ok(job) = job else { break };
                        for o in worker.check(&job) {
                            let _ = tx.send(o);
                        }
                        progress.files_done.fetch_add(1, Ordering::Relaxed);
                    }
                    progress.bytes_done.fetch_add(worker.bytes, Ordering::Relaxed);
                });
            // A thread the kernel refuses (`ulimit -u`, the unit's `TasksMax`) is one hasher
            // fewer; the work is the same.
            hashers += usize::from(spawned.is_ok());
        }
        if hashers == 0 {
            return Err(VerifyError::Threads(
                "no thread could be started to hash the files: the process limit (`ulimit -u`, the \
                 unit's TasksMax) is reached; try again with --threads 1 or a higher limit"
                    .into(),
            ));
        }
        let sel = &selected;
        let senders = &listing_senders;
        // Without a thread of its own, the listing runs here while the hashers take what it
        // queues (the outcomes' channel is unbounded, so nobody waits on this thread).
        let listing = guestward_core::threads::spawn_or_run(s, "gw-verify-list", move || {
            if let Some((jobs, outcomes)) = senders.lock().ok().and_then(|mut s| s.take()) {
                produce(index, sel, &jobs, &outcomes, progress);
            }
        });
        drop(out_tx);
        for outcome in out_rx.iter() {
            found.take(outcome);
        }
        // A listing that stopped half-way would present half the packages as all of them.
        listing
            .join()
            .map_err(|_| VerifyError::Threads("listing the packages' files crashed (internal error)".into()))
    })?;
    found.trim();
    let Outcomes { mismatches, unlisted_by_kind, problems } = found;
    let unlisted_problems = problems.left_out();
    let mut problems = problems.into_vec();
    problems.sort_by(|a, b| (&a.path, &a.message).cmp(&(&b.path, &b.message)));
    Ok(Report {
        root: root.dir().display().to_string(),
        managers,
        packages_checked: selected.len(),
        files_checked: progress.files_done.load(Ordering::Relaxed),
        bytes_hashed: progress.bytes_done.load(Ordering::Relaxed),
        mismatches,
        unlisted_mismatches: unlisted_by_kind.iter().sum(),
        problems,
        unlisted_problems,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        unlisted_by_kind,
    })
}

/// The package numbers to check: those `debsums`/`rpm -V` would, filtered by name.
fn select(index: &Index, names: &[String]) -> Result<Vec<u32>, VerifyError> {
    let matches = |p: &PackageOwner, n: &str| {
        p.name == n || p.arch.as_ref().is_some_and(|a| format!("{}:{a}", p.name) == n)
    };
    let unknown: Vec<&str> = names
        .iter()
        .filter(|n| !index.packages().iter().any(|p| matches(&p.owner, n)))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(VerifyError::UnknownPackages(unknown.join(", ")));
    }
    Ok(index
        .packages()
        .iter()
        .enumerate()
        .filter(|(_, p)| p.is_verified() && (names.is_empty() || names.iter().any(|n| matches(&p.owner, n))))
        .filter_map(|(i, _)| u32::try_from(i).ok())
        .collect())
}

/// Lists the files of every selected package into the queue.
fn produce(
    index: &Index,
    selected: &[u32],
    jobs: &mpsc::SyncSender<Job>,
    out: &mpsc::Sender<Outcome>,
    progress: &Progress,
) {
    let mut rpm_records = HashMap::new();
    for &id in selected {
        let Some(pkg) = index.packages().get(id as usize) else { continue };
        if let Some((info_name, conffiles)) = index.dpkg_source(id) {
            let mut queued = true;
            let read = index.dpkg_checked_files(
                &pkg.owner.name,
                info_name,
                conffiles,
                |_| Some(()),
                |f, ()| {
                    let Some(md5) = f.checked_md5() else { return true };
                    let check = Check::Dpkg { path: f.on_disk, md5, conffile: f.conffile };
                    queued = jobs.send(Job { pkg: id, check }).is_ok();
                    queued
                },
            );
            match read {
                Ok(problems) => {
                    for p in problems {
                        let _ = out.send(Outcome::Problem(p));
                    }
                }
                Err(e) => {
                    let _ = out.send(Outcome::Problem(e.to_problem()));
                }
            }
            if !queued {
                return;
            }
            progress.packages_done.fetch_add(1, Ordering::Relaxed);
        } else if let Some(record) = index.rpm_record(id) {
            rpm_records.insert(record, id);
        }
    }
    if rpm_records.is_empty() {
        return;
    }
    let Some(found) = index.rpm_database() else { return };
    let want: Vec<u32> = rpm_records.keys().copied().collect();
    let problems = rpm::read_headers(index.root(), found, Some(&want), &mut |p| {
        let Some(&id) = rpm_records.get(&p.record) else { return };
        for file in p.files() {
            if !file.installed() {
                continue;
            }
            let shared = index.owner_count(&file.path) > 1;
            if jobs.send(Job { pkg: id, check: Check::Rpm { file: Box::new(file), shared } }).is_err() {
                return;
            }
        }
        progress.packages_done.fetch_add(1, Ordering::Relaxed);
    });
    for p in problems {
        let _ = out.send(Outcome::Problem(p));
    }
}

/// Owner and group names as the root's own account files give them (rpm compares names).
#[derive(Debug, Default)]
struct Accounts {
    users: HashMap<u32, String>,
    uids: HashMap<String, u32>,
    groups: HashMap<u32, String>,
    gids: HashMap<String, u32>,
}

impl Accounts {
    fn read(root: &HostRoot) -> Self {
        let mut a = Self::default();
        let parse = |path: &str, by_id: &mut HashMap<u32, String>, by_name: &mut HashMap<String, u32>| {
            let Ok(text) = root.read_string_capped(path, MAX_ACCOUNTS_BYTES) else { return };
            for line in text.lines() {
                let mut f = line.split(':');
                let (Some(name), Some(_), Some(id)) = (f.next(), f.next(), f.next()) else { continue };
                let Ok(id) = id.parse::<u32>() else { continue };
                by_id.entry(id).or_insert_with(|| name.to_owned());
                by_name.entry(name.to_owned()).or_insert(id);
            }
        };
        parse("/etc/passwd", &mut a.users, &mut a.uids);
        parse("/etc/group", &mut a.groups, &mut a.gids);
        a
    }

    /// rpm's `rpmugUname`/`rpmugUid` (0 is always `root`), and its rule: the owner matches
    /// when the file's uid has the package's name, or the package's name has the file's uid.
    fn user_matches(&self, uid: u32, name: &str) -> bool {
        let uname = if uid == 0 { Some("root") } else { self.users.get(&uid).map(String::as_str) };
        let nuid = if name == "root" { Some(0) } else { self.uids.get(name).copied() };
        uname == Some(name) || nuid == Some(uid)
    }

    fn group_matches(&self, gid: u32, name: &str) -> bool {
        let gname = if gid == 0 { Some("root") } else { self.groups.get(&gid).map(String::as_str) };
        let ngid = if name == "root" { Some(0) } else { self.gids.get(name).copied() };
        gname == Some(name) || ngid == Some(gid)
    }

    fn user_name(&self, uid: u32) -> String {
        if uid == 0 {
            "root".into()
        } else {
            self.users.get(&uid).cloned().unwrap_or_else(|| uid.to_string())
        }
    }

    fn group_name(&self, gid: u32) -> String {
        if gid == 0 {
            "root".into()
        } else {
            self.groups.get(&gid).cloned().unwrap_or_else(|| gid.to_string())
        }
    }
}

/// One hashing thread's state: its buffer and the directories it has open.
struct Worker<'a> {
    index: &'a Index,
    max_file_bytes: u64,
    accounts: &'a Accounts,
    buf: guestward_core::ReadBuffer,
    dirs: Vec<(PathBuf, Option<File>)>,
    bytes: u64,
}

/// What `lstat` found where a package file should be.
enum Found {
    Missing,
    Present { dir: File, name: std::ffi::OsString, st: FileStat },
}

fn is_type(st: &FileStat, t: u32) -> bool {
    st.st_mode & nix::libc::S_IFMT == t
}

impl<'a> Worker<'a> {
    fn new(index: &'a Index, max_file_bytes: u64, accounts: &'a Accounts) -> Self {
        Self {
            index,
            max_file_bytes,
            accounts,
            buf: guestward_core::ReadBuffer::new(256 * 1024),
            dirs: Vec::new(),
            bytes: 0,
        }
    }

    fn root(&self) -> &'a HostRoot {
        self.index.root()
    }

    /// The directory holding `host` opened (see the module documentation), or `None` when it
    /// does not exist. A few are kept open: a package's files come directory by directory.
    fn dir(&mut self, parent: &Path) -> io::Result<Option<File>> {
        if let Some(pos) = self.dirs.iter().position(|(p, _)| p == parent) {
            let entry = self.dirs.remove(pos);
            let f = match &entry.1 {
                Some(f) => Some(f.try_clone()?),
                None => None,
            };
            self.dirs.insert(0, entry);
            return Ok(f);
        }
        let opened = match open_dir_in_root(self.root(), parent) {
            Ok(f) => Some(f),
            // The path leads to nothing: a component is gone, is no directory, or its symlinks
            // loop. Its files are missing, as `debsums` and `rpm -V` say, not unreadable.
            Err(e) if guestward_core::leads_to_nothing(&e) => None,
            Err(e) => return Err(e),
        };
        let keep = match &opened {
            Some(f) => Some(f.try_clone()?),
            None => None,
        };
        self.dirs.insert(0, (parent.to_path_buf(), keep));
        self.dirs.truncate(8);
        Ok(opened)
    }

    fn lstat(&mut self, host: &Path) -> io::Result<Found> {
        let (Some(parent), Some(name)) = (host.parent(), host.file_name()) else {
            // `/` itself (rpm's filesystem package owns it): examined as `.` of itself.
            let dir = open_dir_in_root(self.root(), Path::new("/"))?;
            let st = dirfd::stat_fd(&dir)?;
            return Ok(Found::Present { dir, name: ".".into(), st });
        };
        let Some(dir) = self.dir(parent)? else { return Ok(Found::Missing) };
        match dirfd::stat_at(&dir, name) {
            Ok(st) => Ok(Found::Present { dir, name: name.to_os_string(), st }),
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => Ok(Found::Missing),
            Err(e) => Err(e),
        }
    }

    fn unreadable(&self, host: &Path, e: &io::Error) -> Outcome {
        if e.kind() == io::ErrorKind::PermissionDenied {
            return self.problem(
                host,
                "permission_denied",
                "permission denied (verify-packages reads every package file: run it as root, or with CAP_DAC_READ_SEARCH)",
            );
        }
        if dirfd::is_changed_during_scan(e) {
            return self.problem(
                host,
                "changed_during_check",
                "it was replaced while being checked; not verified",
            );
        }
        self.problem(host, "unreadable", e)
    }

    fn problem(&self, host: &Path, code: &str, what: impl std::fmt::Display) -> Outcome {
        let shown = self.root().display(host);
        Outcome::Problem(Problem::new(code, format!("{shown}: {what}")).with_path(shown))
    }

    fn check(&mut self, job: &Job) -> Vec<Outcome> {
        let Some(pkg) = self.index.packages().get(job.pkg as usize) else { return Vec::new() };
        let owner = pkg.owner.clone();
        match &job.check {
            Check::Dpkg { path, md5, conffile } => self.check_dpkg(owner, path, md5, *conffile),
            Check::Rpm { file, shared } => self.check_rpm(owner, file, *shared),
        }
    }

    fn check_dpkg(
        &mut self,
        owner: PackageOwner,
        path: &Path,
        md5: &[u8; 16],
        conffile: bool,
    ) -> Vec<Outcome> {
        let expected = PackageDigest { algo: DigestAlgo::Md5, hex: crate::hex(md5) };
        let mismatch =
            |kind, attributes: Vec<Attribute>, actual: Option<PackageDigest>, details: Vec<String>| {
                vec![Outcome::Mismatch(Box::new(Mismatch {
                    // Escaped as FIM shows paths (`\xff`): a lossy form would show two files
                    // differing in one invalid byte as the same name.
                    path: guestward_fim::events::escape_path(path),
                    package: owner.clone(),
                    kind,
                    conffile,
                    severity: MismatchKind::severity(kind),
                    attributes,
                    expected: Some(expected.clone()),
                    actual,
                    details,
                }))]
            };
        let changed = if conffile { MismatchKind::ConffileChanged } else { MismatchKind::Changed };
        let (dir, name, st) = match self.lstat(path) {
            // dpkg was told not to unpack it (path-exclude): absent on purpose, as debsums says.
            Ok(Found::Missing) if self.index.dpkg_path_excluded(path) => return Vec::new(),
            Ok(Found::Missing) => return mismatch(MismatchKind::Missing, Vec::new(), None, Vec::new()),
            Ok(Found::Present { dir, name, st }) => (dir, name, st),
            Err(e) => return vec![self.unreadable(path, &e)],
        };
        if !is_type(&st, nix::libc::S_IFREG) {
            let kind = guestward_fim::record::FileKind::from_mode(st.st_mode);
            return mismatch(
                changed,
                vec![Attribute::Type],
                None,
                vec![format!("now a {kind:?}, not a regular file")],
            );
        }
        let actual = match self.hash(&dir, &name, &st, DigestAlgo::Md5) {
            Ok(Some((hex, _))) => PackageDigest { algo: DigestAlgo::Md5, hex },
            Ok(None) => {
                return vec![self.problem(
                    path,
                    "too_large",
                    format!("over the {}-byte limit; not hashed", self.max_file_bytes),
                )];
            }
            Err(e) => return vec![self.unreadable(path, &e)],
        };
        if actual.hex == expected.hex {
            return Vec::new();
        }
        // A file several packages own (multi-arch, one package replacing another's file)
        // matches if it is what any of them shipped.
        let others = self.index.expected(path);
        if others.iter().any(|e| e.digest.as_ref().is_some_and(|d| d == &actual)) {
            return Vec::new();
        }
        mismatch(changed, vec![Attribute::Digest], Some(actual), Vec::new())
    }

    /// `rpm -V`'s `rpmfilesVerify` and the filters of `verifyHeader` (see the module docs).
    fn check_rpm(&mut self, owner: PackageOwner, f: &RpmFile, shared: bool) -> Vec<Outcome> {
        let mut want = f.verify_flags;
        match f.state {
            Some(states::REPLACED) => want = 0,
            Some(states::WRONG_COLOR) => want &= !(vf::DIGEST | vf::SIZE | vf::MTIME),
            _ => {}
        }
        let conffile = f.flags & flags::CONFIG != 0;
        let mut m = Mismatch {
            path: guestward_fim::events::escape_path(&f.path),
            package: owner,
            kind: if conffile { MismatchKind::ConffileChanged } else { MismatchKind::Changed },
            conffile,
            severity: Severity::Info,
            attributes: Vec::new(),
            expected: f.digest.clone(),
            actual: None,
            details: Vec::new(),
        };
        let finish = |mut m: Mismatch| {
            m.severity = m.kind.severity();
            vec![Outcome::Mismatch(Box::new(m))]
        };
        let (dir, name, mut st) = match self.lstat(&f.path) {
            Ok(Found::Missing) => {
                if f.flags & (flags::MISSINGOK | flags::GHOST) != 0 {
                    return Vec::new();
                }
                m.kind = MismatchKind::Missing;
                m.expected = None;
                return finish(m);
            }
            Ok(Found::Present { dir, name, st }) => (dir, name, st),
            Err(e) => return vec![self.unreadable(&f.path, &e)],
        };
        let fmode = f.mode & 0xffff;
        // rpm follows a symlink where it expected a directory, when the link is root's or
        // the directory's owner's (and the target is a directory).
        if fmode & nix::libc::S_IFMT == nix::libc::S_IFDIR
            && is_type(&st, nix::libc::S_IFLNK)
            && let Some(target) = self.follow_dir_link(&f.path)
            && (st.st_uid == 0 || self.accounts.uids.get(&f.user) == Some(&st.st_uid))
        {
            st = target;
        }
        if is_type(&st, nix::libc::S_IFLNK) {
            want &= !vf::MODE;
        } else {
            want &= !vf::LINKTO;
        }
        let regular = is_type(&st, nix::libc::S_IFREG);
        if !regular {
            want &= !(vf::DIGEST | vf::SIZE | vf::MTIME);
        }
        if f.flags & flags::GHOST != 0 {
            want &= !(vf::DIGEST | vf::SIZE | vf::MTIME | vf::LINKTO);
        }
        let mut size = u64::try_from(st.st_size).unwrap_or(0);
        if want & vf::DIGEST != 0 {
            match &f.digest {
                Some(expected) => match self.hash(&dir, &name, &st, expected.algo) {
                    Ok(Some((hex, read))) => {
                        size = read;
                        if hex != expected.hex {
                            m.attributes.push(Attribute::Digest);
                        }
                        m.actual = Some(PackageDigest { algo: expected.algo, hex });
                    }
                    Ok(None) => {
                        return vec![self.problem(
                            &f.path,
                            "too_large",
                            format!("over the {}-byte limit; not hashed", self.max_file_bytes),
                        )];
                    }
                    Err(e) => return vec![self.unreadable(&f.path, &e)],
                },
                None => {
                    m.attributes.push(Attribute::Digest);
                    m.details.push("the package records no digest for this regular file".into());
                }
            }
        }
        if want & vf::LINKTO != 0 {
            let target = nix::fcntl::readlinkat(&dir, name.as_os_str()).map(|t| t.into_encoded_bytes());
            if target.as_deref().ok() != Some(f.link_to.as_slice()) {
                m.attributes.push(Attribute::LinkTarget);
                m.details.push(format!(
                    "link target {} != {}",
                    target.map_or_else(|e| e.to_string(), |t| String::from_utf8_lossy(&t).into_owned()),
                    String::from_utf8_lossy(&f.link_to)
                ));
            }
        }
        if want & vf::SIZE != 0 && size != f.size {
            m.attributes.push(Attribute::Size);
            m.details.push(format!("size {size} != {}", f.size));
        }
        if want & vf::MODE != 0 {
            let (mut meta, mut file) = (fmode, st.st_mode & 0xffff);
            if f.flags & flags::GHOST != 0 {
                meta &= !0xf000;
                file &= !0xf000;
            }
            if meta != file {
                m.attributes.push(Attribute::Mode);
                m.details.push(format!("mode {file:o} != {meta:o}"));
            }
        }
        if want & vf::MTIME != 0 && !shared && st.st_mtime != i64::from(f.mtime) {
            m.attributes.push(Attribute::Mtime);
            m.details.push(format!("mtime {} != {}", st.st_mtime, f.mtime));
        }
        if want & vf::USER != 0 && !self.accounts.user_matches(st.st_uid, &f.user) {
            m.attributes.push(Attribute::User);
            m.details.push(format!("owner {} != {}", self.accounts.user_name(st.st_uid), f.user));
        }
        if want & vf::GROUP != 0 && !self.accounts.group_matches(st.st_gid, &f.group) {
            m.attributes.push(Attribute::Group);
            m.details.push(format!("group {} != {}", self.accounts.group_name(st.st_gid), f.group));
        }
        if m.attributes.is_empty() {
            return Vec::new();
        }
        finish(m)
    }

    /// The stat of the directory a symlink at `host` leads to, inside the root.
    fn follow_dir_link(&mut self, host: &Path) -> Option<FileStat> {
        let target = crate::index::resolve_dir(self.root(), host)?;
        let dir = open_dir_in_root(self.root(), &target).ok()?;
        dirfd::stat_fd(&dir).ok()
    }

    /// Hashes the regular file `name` of `dir` (examined as `st`) with `algo`: `(hex, bytes
    /// read)`, or `None` when it is over the size cap.
    fn hash(
        &mut self,
        dir: &File,
        name: &OsStr,
        st: &FileStat,
        algo: DigestAlgo,
    ) -> io::Result<Option<(String, u64)>> {
        let size = u64::try_from(st.st_size).unwrap_or(0);
        if size > self.max_file_bytes {
            return Ok(None);
        }
        let file = guestward_fim::record::open_for_hash(dir, name)?;
        for _ in 0..MAX_ATTEMPTS {
            let before = dirfd::stat_fd(&file)?;
            // The descriptor must be the regular file examined: a rename in between could
            // have put anything there.
            if !is_type(&before, nix::libc::S_IFREG) || !dirfd::same_inode(&before, st) {
                return Err(dirfd::changed_during_scan());
            }
            let len = u64::try_from(before.st_size).unwrap_or(0);
            if len > self.max_file_bytes {
                return Ok(None);
            }
            let hex = digest_file(&file, len, algo, self.buf.as_mut_slice())?;
            self.bytes += len;
            let after = dirfd::stat_fd(&file)?;
            if after.st_size == before.st_size
                && after.st_mtime == before.st_mtime
                && after.st_mtime_nsec == before.st_mtime_nsec
                && after.st_ctime == before.st_ctime
                && after.st_ctime_nsec == before.st_ctime_nsec
            {
                return Ok(Some((hex, len)));
            }
        }
        Err(io::Error::other(format!("it changed each of the {MAX_ATTEMPTS} times it was read")))
    }
}

/// Opens the directory `host` (a host path) for descriptor-relative access. On the live root
/// the path is opened as it is (its directories are the system's own); inside another root it
/// is resolved inside the root, opened without following a final symlink, and must be the
/// directory the root's own door sees (same device and inode), so a component swapped for a
/// symlink between the two cannot lead outside the root.
pub fn open_dir_in_root(root: &HostRoot, host: &Path) -> io::Result<File> {
    if root.is_live() {
        return open_dir_follow(host);
    }
    let real = root.resolve(host).map_err(HostFsError::into_io)?;
    let dir = dirfd::open_dir_path(&real)?;
    let rel = real.strip_prefix(root.dir()).map_err(|_| io::Error::other("resolved outside the root"))?;
    let seen = root.symlink_metadata(Path::new("/").join(rel)).map_err(HostFsError::into_io)?;
    let st = dirfd::stat_fd(&dir)?;
    use std::os::unix::fs::MetadataExt;
    if seen.dev() != st.st_dev || seen.ino() != st.st_ino {
        return Err(dirfd::changed_during_scan());
    }
    Ok(dir)
}

fn open_dir_follow(path: &Path) -> io::Result<File> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    nix::fcntl::open(path, flags, nix::sys::stat::Mode::empty())
        .map(File::from)
        .map_err(|e| io::Error::from_raw_os_error(e as i32))
}

enum Hasher {
    Md5(md5_many::Md5State),
    Sha1(sha1::Sha1),
    Sha224(sha2::Sha224),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn new(algo: DigestAlgo) -> Self {
        use sha2::Digest;
        match algo {
            DigestAlgo::Md5 => Self::Md5(md5_many::Md5State::new()),
            DigestAlgo::Sha1 => Self::Sha1(sha1::Sha1::new()),
            DigestAlgo::Sha224 => Self::Sha224(sha2::Sha224::new()),
            DigestAlgo::Sha256 => Self::Sha256(sha2::Sha256::new()),
            DigestAlgo::Sha384 => Self::Sha384(sha2::Sha384::new()),
            DigestAlgo::Sha512 => Self::Sha512(sha2::Sha512::new()),
        }
    }

    fn update(&mut self, b: &[u8]) {
        use sha2::Digest;
        match self {
            Self::Md5(h) => h.update(b),
            Self::Sha1(h) => h.update(b),
            Self::Sha224(h) => h.update(b),
            Self::Sha256(h) => h.update(b),
            Self::Sha384(h) => h.update(b),
            Self::Sha512(h) => h.update(b),
        }
    }

    fn finish(self) -> String {
        use sha2::Digest;
        match self {
            Self::Md5(h) => crate::hex(&h.finalize()),
            Self::Sha1(h) => crate::hex(&h.finalize()),
            Self::Sha224(h) => crate::hex(&h.finalize()),
            Self::Sha256(h) => crate::hex(&h.finalize()),
            Self::Sha384(h) => crate::hex(&h.finalize()),
            Self::Sha512(h) => crate::hex(&h.finalize()),
        }
    }
}

/// Digest of exactly the first `len` bytes of `file` (a file appended to while it is read
/// cannot keep the hasher going; the caller's second `fstat` sees the growth).
fn digest_file(mut file: &File, len: u64, algo: DigestAlgo, buf: &mut [u8]) -> io::Result<String> {
    use std::io::Seek;
    file.seek(io::SeekFrom::Start(0))?;
    let mut h = Hasher::new(algo);
    let mut reader = file.take(len);
    loop {
        let n = match reader.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
    }
    Ok(h.finish())
}

/// For a path shown to a person: the bytes as they are, control characters escaped.
pub fn shown_path(path: &str) -> String {
    guestward_core::text::escape_control(path).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn missing(path: String, severity: Severity, kind: MismatchKind) -> Outcome {
        Outcome::Mismatch(Box::new(Mismatch {
            path,
            package: PackageOwner {
                manager: PackageManager::Dpkg,
                name: "p".into(),
                version: "1".into(),
                arch: None,
            },
            kind,
            conffile: kind == MismatchKind::ConffileChanged,
            severity,
            attributes: Vec::new(),
            expected: None,
            actual: None,
            details: Vec::new(),
        }))
    }

    /// Past the cap, what is kept is the first in listing order (the most severe, then by
    /// path), whatever order the workers found them in, and the rest are counted by kind.
    #[test]
    fn mismatches_past_the_cap_are_counted_and_the_most_severe_kept() {
        let mut found = Outcomes::default();
        let total = 2 * MAX_LISTED_MISMATCHES + 10;
        // Conffiles (low) first, then missing files (high) in reverse path order.
        for i in 0..10 {
            found.take(missing(format!("/etc/c{i}"), Severity::Low, MismatchKind::ConffileChanged));
        }
        for i in (0..total - 10).rev() {
            found.take(missing(format!("/usr/f{i:07}"), Severity::High, MismatchKind::Missing));
        }
        found.trim();
        assert_eq!(found.mismatches.len(), MAX_LISTED_MISMATCHES);
        assert!(found.mismatches.iter().all(|m| m.kind == MismatchKind::Missing));
        assert_eq!(found.mismatches[0].path, "/usr/f0000000");
        assert_eq!(
            found.unlisted_by_kind,
            [0, 10, (total - 10 - MAX_LISTED_MISMATCHES) as u64],
            "the low ones are the first dropped"
        );
        for i in 0..MAX_LISTED_PROBLEMS + 3 {
            found.take(Outcome::Problem(Problem::new("x", format!("{i}"))));
        }
        assert_eq!((found.problems.len(), found.problems.left_out()), (MAX_LISTED_PROBLEMS, 3));
    }
}
