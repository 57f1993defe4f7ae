//! What is recorded about one file, and how it is read without trusting the file.
//!
//! Security: the scanned tree may be hostile (an attacker who changed a file also controls its
//! name, type and timing). So we never resolve a path below the tree's root (every entry is
//! reached through its directory's descriptor, see [`crate::dirfd`]), never follow a symlink
//! (`AT_SYMLINK_NOFOLLOW`, `O_NOFOLLOW`), never open anything but a regular file (a FIFO would
//! block us, a device could have side effects on open), open with `O_NONBLOCK` in case a FIFO
//! is swapped in after the `fstatat`, check with `fstat` that the opened descriptor is the
//! inode we examined (same device and inode), and re-hash a file that changed while we read
//! it instead of recording a hash that matches no version of it.

use crate::config::{Attribute, AttributeSet};
pub use crate::model::{FLAG_HASH_SKIPPED, FLAG_UNREADABLE, FLAG_UNSTABLE, FileKind, hex};
use guestward_core::ReadBuffer;
use guestward_digest::{Digests, Hashers, Wanted};
use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, Mode};
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

impl FileKind {
    /// From the `st_mode` of a `stat`.
    pub fn from_mode(mode: u32) -> Self {
        use nix::libc::{S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG};
        match mode & S_IFMT {
            S_IFLNK => Self::Symlink,
            S_IFDIR => Self::Dir,
            S_IFREG => Self::File,
            S_IFCHR => Self::CharDevice,
            S_IFBLK => Self::BlockDevice,
            S_IFIFO => Self::Fifo,
            _ => Self::Socket,
        }
    }
}

impl From<&FileRecord> for crate::events::Attributes {
    fn from(r: &FileRecord) -> Self {
        Self {
            kind: r.kind,
            mode: format!("{:04o}", r.mode),
            uid: r.uid,
            gid: r.gid,
            size: r.size,
            mtime_ns: r.mtime_ns,
            ctime_ns: r.ctime_ns,
            inode: r.inode,
            link_target: r
                .link_target
                .as_ref()
                .map(|t| crate::events::escape_path(Path::new(std::ffi::OsStr::from_bytes(t)))),
            sha256: r.sha256.map(|h| hex(&h)),
            blake3: r.blake3.map(|h| hex(&h)),
            xattrs: r
                .xattrs
                .as_ref()
                .map(|x| x.iter().map(|(n, v)| (String::from_utf8_lossy(n).into_owned(), hex(v))).collect()),
            hash_skipped: r.flags & FLAG_HASH_SKIPPED != 0,
            unstable: r.flags & FLAG_UNSTABLE != 0,
            unreadable: r.flags & FLAG_UNREADABLE != 0,
        }
    }
}

/// Re-reads of a file that changes while being hashed before it is flagged unstable.
pub const MAX_HASH_ATTEMPTS: u32 = 3;
/// Bytes read from a file at a time, into each hashing thread's one buffer. Larger reads save
/// few system calls (a 128 KiB read of a cached file costs far more in its copy and hash than
/// in the call), and every thread's buffer is resident for the whole scan.
pub const READ_BUFFER_BYTES: usize = 128 * 1024;
/// Bytes read from a file in a [`Lane`] at a time: a quarter of a read buffer, since a hashing
/// thread holds up to two lanes beside its buffer, all resident for the whole scan (the peak
/// RSS of a first `fim init` of /usr is close to its 16 MB budget). Smaller reads cost more
/// calls, which measured no slower than 64 KiB ones (docs/benchmarks.md).
pub const LANE_BUFFER_BYTES: usize = 32 * 1024;
/// Bytes read from a file in an MD5 lane at a time. A hashing thread holds 16 of them (see
/// `guestward_digest::MD5_LANES`) for the whole of a first `fim init`, whose peak RSS is close
/// to its 16 MB budget: half a lane buffer each saves 0.5 MiB on two threads. MD5 in SIMD lanes
/// ran as fast in rounds of 16 KiB as of 32 KiB (6.7 GB/s over this machine's dpkg files).
pub const MD5_LANE_BUFFER_BYTES: usize = 16 * 1024;

/// Largest extended attribute value kept (the kernel's own limit is 64 KiB).
pub(crate) const MAX_XATTR_VALUE: usize = 64 * 1024;
/// Most extended attributes kept per file, name and value: the first by name. The others are
/// folded into one entry, [`XATTRS_BEYOND`].
const MAX_XATTRS: usize = 64;
/// The name of the entry that stands for the attributes after the first [`MAX_XATTRS`]: its
/// value says how many there are and gives the SHA-256 of their names and values. No real
/// attribute can have this name: the kernel accepts only the `user.`, `trusted.`, `security.`
/// and `system.` namespaces.
pub const XATTRS_BEYOND: &[u8] = b"guestward.beyond";
/// Entries a record's attributes may hold: [`MAX_XATTRS`] and [`XATTRS_BEYOND`] (the store
/// takes a row with more for damage).
pub(crate) const MAX_XATTR_ENTRIES: usize = MAX_XATTRS + 1;
/// Bytes of values read for the attributes beyond the first [`MAX_XATTRS`]: past them only
/// their names are hashed. A file planted with thousands of large attributes costs a scan
/// this much more, no more.
const MAX_XATTR_BYTES_BEYOND: usize = 1 << 20;
/// Names listed at most: all a kernel list can hold (64 KiB, 9,362 names of the shortest
/// form, `user.x`), so that none escapes the sort and the hash.
const MAX_XATTR_NAMES: usize = 10_000;

/// Everything recorded about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// Type.
    pub kind: FileKind,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Change time, ns since the epoch.
    pub ctime_ns: i64,
    /// Inode number.
    pub inode: u64,
    /// Symlink target bytes.
    pub link_target: Option<Vec<u8>>,
    /// Extended attributes (name, value), sorted by name; `None` when not collected.
    pub xattrs: Option<Vec<(Vec<u8>, Vec<u8>)>>,
    /// SHA-256 of the content.
    pub sha256: Option<[u8; 32]>,
    /// BLAKE3 of the content.
    pub blake3: Option<[u8; 32]>,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// MD5 of the content, kept for package files dpkg lists with an MD5 (`.md5sums`) only:
    /// the baseline's trust anchor compares it with the package's instead of reading the file
    /// a second time. Not a FIM attribute (SHA-256 or BLAKE3 covers the content), never
    /// reported, and always taken from the same read as those (or carried over with them, see
    /// [`Self::carry_md5`]), so it describes the content they do.
    pub md5: Option<[u8; 16]>,
}

impl FileRecord {
    /// Attributes from `lstat` alone (no content, no xattrs).
    pub fn from_metadata(meta: &Metadata) -> Self {
        Self {
            kind: FileKind::of(meta),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.size(),
            mtime_ns: meta.mtime().saturating_mul(1_000_000_000).saturating_add(meta.mtime_nsec()),
            ctime_ns: meta.ctime().saturating_mul(1_000_000_000).saturating_add(meta.ctime_nsec()),
            inode: meta.ino(),
            link_target: None,
            xattrs: None,
            sha256: None,
            blake3: None,
            flags: 0,
            md5: None,
        }
    }

    /// Attributes from a `stat` alone (no content, no xattrs).
    pub fn from_stat(st: &FileStat) -> Self {
        Self {
            kind: FileKind::from_mode(st.st_mode),
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime_ns: st.st_mtime.saturating_mul(1_000_000_000).saturating_add(st.st_mtime_nsec),
            ctime_ns: st.st_ctime.saturating_mul(1_000_000_000).saturating_add(st.st_ctime_nsec),
            inode: st.st_ino,
            link_target: None,
            xattrs: None,
            sha256: None,
            blake3: None,
            flags: 0,
            md5: None,
        }
    }

    /// Whether the stat-level identity (what changes whenever content or inode changes) is the
    /// same: used to reuse a hash computed moments ago by an interrupted scan.
    pub fn same_stat(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.size == other.size
            && self.mtime_ns == other.mtime_ns
            && self.ctime_ns == other.ctime_ns
            && self.inode == other.inode
    }

    /// Whether `now` (an entry's `fstatat`) is the entry this record was taken of, unchanged:
    /// [`Self::same_stat`] and the same mode and owner (see [`Self::reused`] for why ctime
    /// makes that the content too).
    pub fn unchanged_in(&self, now: &Self) -> bool {
        self.same_stat(now) && self.mode == now.mode && self.uid == now.uid && self.gid == now.gid
    }

    /// The record of an entry whose `fstatat` gave `st`, taken from `prev` (its baseline
    /// record) without reading anything, when the entry cannot have changed since: same type,
    /// size, mtime, ctime and inode, same mode and owner. The kernel moves ctime on every write,
    /// truncate, chmod, chown, rename, link count and extended attribute change, and user
    /// space cannot set it back (`utimensat` sets it to now), so content, attributes and link
    /// target are those `prev` recorded. `None` when anything differs, when `prev` lacks
    /// something `opts` asks for (recorded under another policy), or when `prev` was
    /// unreadable or not fully hashed: such an entry is read again.
    pub fn reused(prev: &Self, st: &FileStat, opts: ReadOptions) -> Option<Self> {
        let now = Self::from_stat(st);
        if !prev.unchanged_in(&now) {
            return None;
        }
        if prev.flags & (FLAG_UNREADABLE | FLAG_UNSTABLE) != 0 {
            return None;
        }
        let a = opts.attributes;
        let mut rec = now;
        if rec.kind == FileKind::File && a.hashes() {
            if rec.size > opts.max_file_size_bytes {
                rec.flags |= FLAG_HASH_SKIPPED;
            } else {
                if prev.flags & FLAG_HASH_SKIPPED != 0
                    || (a.has(Attribute::Sha256) && prev.sha256.is_none())
                    || (a.has(Attribute::Blake3) && prev.blake3.is_none())
                {
                    return None;
                }
                rec.sha256 = prev.sha256.filter(|_| a.has(Attribute::Sha256));
                rec.blake3 = prev.blake3.filter(|_| a.has(Attribute::Blake3));
                rec.md5 = prev.md5;
            }
        }
        if rec.kind == FileKind::Symlink && a.has(Attribute::LinkTarget) {
            rec.link_target = Some(prev.link_target.clone()?);
        }
        if a.has(Attribute::Xattrs) {
            rec.xattrs = Some(prev.xattrs.clone()?);
        }
        Some(rec)
    }

    /// Takes `prev`'s MD5 when this record has none and its content digests are `prev`'s: the
    /// same content, so the same MD5 (see [`FileRecord::md5`]).
    pub fn carry_md5(&mut self, prev: Option<&Self>) {
        if let Some(prev) = prev
            && self.md5.is_none()
            && self.kind == FileKind::File
            && self.same_content(prev)
            && self.flags & FLAG_UNSTABLE == 0
        {
            self.md5 = prev.md5;
        }
    }

    /// Whether the content digests both records took (SHA-256, BLAKE3: at least one, as a
    /// policy may take either or both) are all equal.
    fn same_content(&self, other: &Self) -> bool {
        let mut compared = [(self.sha256, other.sha256), (self.blake3, other.blake3)]
            .into_iter()
            .filter_map(|(a, b)| Some(a? == b?))
            .peekable();
        compared.peek().is_some() && compared.all(|equal| equal)
    }

    /// The attributes in `attrs` that differ between `self` (old) and `new`.
    pub fn diff(&self, new: &Self, attrs: AttributeSet) -> Vec<Attribute> {
        let mut out = Vec::new();
        if self.kind != new.kind {
            out.push(Attribute::Type);
        }
        let mut check = |a: Attribute, differs: bool| {
            if attrs.has(a) && differs {
                out.push(a);
            }
        };
        check(Attribute::Sha256, self.sha256 != new.sha256 && both_hashed(self, new));
        check(Attribute::Blake3, self.blake3 != new.blake3 && both_hashed(self, new));
        check(Attribute::Mode, self.mode != new.mode);
        check(Attribute::Uid, self.uid != new.uid);
        check(Attribute::Gid, self.gid != new.gid);
        // A directory's size is the filesystem's business (it grows and never shrinks on ext4).
        check(Attribute::Size, self.size != new.size && new.kind != FileKind::Dir);
        check(Attribute::Mtime, self.mtime_ns != new.mtime_ns);
        check(Attribute::Ctime, self.ctime_ns != new.ctime_ns);
        check(Attribute::Inode, self.inode != new.inode);
        check(Attribute::LinkTarget, self.link_target != new.link_target);
        check(Attribute::Xattrs, self.xattrs.is_some() && new.xattrs.is_some() && self.xattrs != new.xattrs);
        out
    }
}

// Content is compared only when both sides were actually hashed: a file that became
// unreadable or too large shows up through its flags and other attributes instead of as a
// fake hash change. A type change is reported on its own.
fn both_hashed(a: &FileRecord, b: &FileRecord) -> bool {
    (a.kind == FileKind::File && b.kind == FileKind::File)
        && (a.sha256.is_some() || a.blake3.is_some())
        && (b.sha256.is_some() || b.blake3.is_some())
}

/// What reading one path needs to know.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    /// Attributes to collect.
    pub attributes: AttributeSet,
    /// Files larger than this are not hashed.
    pub max_file_size_bytes: u64,
    /// Also take the MD5 of a hashed file, in the same read (a dpkg package file whose MD5 is
    /// not known yet: see [`FileRecord::md5`]).
    pub md5: bool,
}

impl ReadOptions {
    /// What `rule` asks for, without an MD5.
    pub fn of_rule(rule: &crate::config::Rule) -> Self {
        Self { attributes: rule.attributes, max_file_size_bytes: rule.max_file_size_bytes, md5: false }
    }
}

/// Reads the record of the entry `name` of the open directory `dir`, whose
/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)` gave `st`. Nothing is resolved by path (see
/// [`crate::dirfd`]): a file is opened relative to `dir`, and only if `st` says it is a
/// regular file; FIFOs, devices and sockets are recorded from `st` alone and never opened.
/// `on_bytes` is told how many bytes are about to be read (rate limiting).
///
/// `reuse`: a record of the same path taken moments ago; when its stat identity (inode, size,
/// mtime, ctime) is unchanged its hashes are kept instead of reading the file again.
///
/// Never fails: what could not be read is flagged, with the error returned beside the record.
/// A file replaced between `st` and the open is not hashed at all: the error then satisfies
/// [`crate::dirfd::is_changed_during_scan`] and the caller decides what to keep.
pub fn read_record_at(
    dir: &File,
    name: &OsStr,
    st: &FileStat,
    opts: ReadOptions,
    reuse: Option<&FileRecord>,
    buf: &mut ReadBuffer,
    on_bytes: &mut dyn FnMut(u64),
) -> (FileRecord, Option<io::Error>) {
    read_record_opened(dir, name, None, None, st, opts, reuse, buf, on_bytes, Hashing::Read(None))
}

/// Opens `name` in `dir` for hashing and `fstat`s the descriptor, when it is a regular file:
/// the examination of an entry that getdents listed as one, in a scan that reads every
/// regular file (one path lookup instead of an `fstatat` and then an `openat`). `None`: not
/// opened (gone, a symlink or something else now, unreadable); examine it with `fstatat`.
pub(crate) fn open_regular(dir: &File, name: &OsStr) -> Option<(File, FileStat)> {
    let file = open_for_hash(dir, name).ok()?;
    let st = crate::dirfd::stat_fd(&file).ok()?;
    (FileKind::from_mode(st.st_mode) == FileKind::File).then_some((file, st))
}

/// [`read_record_at`] with the file already open when `open` is given: `st` is then the
/// `fstat` of that descriptor ([`open_regular`]); with its extended attributes read already
/// when `xattrs` is given (a directory the walk opened to list, through that descriptor, whose
/// `fstat` `st` is); `hashing`: how its content is hashed.
#[allow(clippy::too_many_arguments)]
pub(crate) fn read_record_opened(
    dir: &File,
    name: &OsStr,
    open: Option<File>,
    xattrs: Option<io::Result<Option<Xattrs>>>,
    st: &FileStat,
    opts: ReadOptions,
    reuse: Option<&FileRecord>,
    buf: &mut ReadBuffer,
    on_bytes: &mut dyn FnMut(u64),
    hashing: Hashing<'_>,
) -> (FileRecord, Option<io::Error>) {
    let mut rec = FileRecord::from_stat(st);
    let mut problem = None;
    let mut opened: Option<File> = None;
    match rec.kind {
        FileKind::Symlink if opts.attributes.has(Attribute::LinkTarget) => {
            match nix::fcntl::readlinkat(dir.as_fd(), name) {
                Ok(t) => rec.link_target = Some(t.into_encoded_bytes()),
                Err(e) => problem = Some(io::Error::from_raw_os_error(e as i32)),
            }
        }
        FileKind::File if opts.attributes.hashes() => {
            if rec.size > opts.max_file_size_bytes {
                rec.flags |= FLAG_HASH_SKIPPED;
            } else if let Some(prev) =
                reuse.filter(|r| r.same_stat(&rec) && (r.sha256.is_some() || r.blake3.is_some()))
            {
                rec.sha256 = prev.sha256.filter(|_| opts.attributes.has(Attribute::Sha256));
                rec.blake3 = prev.blake3.filter(|_| opts.attributes.has(Attribute::Blake3));
                rec.md5 = prev.md5;
                rec.flags |= prev.flags & FLAG_UNSTABLE;
            } else {
                match hash_file(dir, name, open, st, opts, buf, on_bytes, hashing) {
                    Ok((hashed, file)) => {
                        rec = hashed;
                        opened = Some(file);
                    }
                    Err(e) if crate::dirfd::is_changed_during_scan(&e) => return (rec, Some(e)),
                    Err(e) => {
                        rec.flags |= FLAG_UNREADABLE;
                        problem = Some(e);
                    }
                }
            }
        }
        _ => {}
    }
    if opts.attributes.has(Attribute::Xattrs) {
        let xattrs = match (xattrs, &opened) {
            // Read through the entry's own descriptor already.
            (Some(read), _) => read,
            // The file we hashed: its own descriptor (flistxattr), nothing to resolve.
            (None, Some(f)) => read_xattrs_fd(f),
            // Everything else through the directory's descriptor (see `dirfd::proc_path`);
            // without procfs they are not collected rather than read by a path that could
            // lead outside the tree.
            (None, None) => match crate::dirfd::proc_path(dir, name) {
                Some(p) => read_xattrs(&p).map(Some),
                None => Ok(None),
            },
        };
        match xattrs {
            Ok(x) => rec.xattrs = x,
            // Filesystems without xattr support simply have none.
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOTSUP) => rec.xattrs = Some(Vec::new()),
            Err(e) => problem = problem.or(Some(e)),
        }
    }
    (rec, problem)
}

/// Opens a regular file for hashing. `O_NONBLOCK`: if a FIFO was swapped in after the
/// `fstatat`, the open returns at once instead of waiting for a writer (the `fstat` below
/// then refuses it before any read); `O_NOCTTY`: a terminal swapped in never becomes ours.
/// Public for `guestward-pkgfiles` (verify-packages opens package files the same way).
pub fn open_for_hash(dir: &File, name: &OsStr) -> io::Result<File> {
    let base = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    // O_NOATIME keeps our reads from touching atime (and from looking like user activity);
    // the kernel allows it only to the owner or CAP_FOWNER, so fall back without it on EPERM.
    let open = |flags: OFlag| {
        nix::fcntl::openat(dir.as_fd(), name, flags, Mode::empty())
            .map(File::from)
            .map_err(|e| io::Error::from_raw_os_error(e as i32))
    };
    match open(base | OFlag::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(nix::libc::EPERM) => open(base),
        // A symlink swapped in after the fstatat (O_NOFOLLOW).
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => Err(crate::dirfd::changed_during_scan()),
        other => other,
    }
}

#[allow(clippy::too_many_arguments)]
fn hash_file(
    dir: &File,
    name: &OsStr,
    open: Option<File>,
    st: &FileStat,
    opts: ReadOptions,
    buf: &mut ReadBuffer,
    on_bytes: &mut dyn FnMut(u64),
    hashing: Hashing<'_>,
) -> io::Result<(FileRecord, File)> {
    // Opened by the caller: `st` is this descriptor's own fstat, taken just now.
    let (file, mut fresh) = match open {
        Some(f) => (f, Some(*st)),
        None => (open_for_hash(dir, name)?, None),
    };
    let (mut lane, mut first) = match hashing {
        Hashing::Read(lane) => (lane, None),
        Hashing::Done(digests) => (None, Some(digests)),
    };
    let mut last = None;
    for attempt in 0..MAX_HASH_ATTEMPTS {
        let now = match fresh.take() {
            Some(st) => st,
            None => crate::dirfd::stat_fd(&file)?,
        };
        let before = FileRecord::from_stat(&now);
        // The descriptor must be the regular file we examined: a rename between fstatat and
        // openat could have put a FIFO, a device or another file (from anywhere on the same
        // filesystem) there. Such a file is never read.
        if before.kind != FileKind::File || !crate::dirfd::same_inode(&now, st) {
            return Err(crate::dirfd::changed_during_scan());
        }
        // Read exactly the size seen before: a file appended to faster than we read would
        // otherwise keep the hasher chasing its tail forever. Growth shows in the second fstat.
        // A new descriptor reads from offset 0; a retry starts over. A first read done in a
        // lane (`Hashing::Done`) was counted when the lane began.
        let digests = match first.take() {
            Some(done) => done?,
            None => {
                on_bytes(before.size);
                digest(&file, attempt > 0, before.size, opts, buf, lane.as_deref_mut())?
            }
        };
        let after = FileRecord::from_stat(&crate::dirfd::stat_fd(&file)?);
        let mut rec = after.clone();
        rec.sha256 = digests.sha256;
        rec.blake3 = digests.blake3;
        rec.md5 = digests.md5;
        if before.same_stat(&after) {
            return Ok((rec, file));
        }
        last = Some(rec);
    }
    let mut rec = last.ok_or_else(|| io::Error::other("no hash attempt made"))?;
    rec.flags |= FLAG_UNSTABLE;
    Ok((rec, file))
}

/// How a file's content is hashed by [`read_record_opened`].
pub(crate) enum Hashing<'a> {
    /// Read now; with a [`Lane`], that file is hashed along with it.
    Read(Option<&'a mut Lane>),
    /// The first read was done in a [`Lane`]: these are its digests (or what failed). The
    /// file is read again only if it changed meanwhile.
    Done(io::Result<Digests>),
}

/// The digests one read takes: those `opts` asks for.
fn hashers(opts: ReadOptions) -> Hashers {
    let attrs = opts.attributes;
    Hashers::new(Wanted {
        sha256: attrs.has(Attribute::Sha256),
        blake3: attrs.has(Attribute::Blake3),
        md5: opts.md5,
    })
}

/// A regular file hashed alongside the files its hashing thread reads next: each read of
/// theirs feeds as many of this file's bytes, in turns (see [`guestward_digest`]), so that one
/// thread runs two SHA-256 chains at once. A scan keeps one large file in a lane while it
/// hashes the next files; when the lane has read the whole file, the scan completes its record
/// with [`Hashing::Done`] (which checks, as every read does, that the file did not change).
///
/// The file is read exactly as [`hash_file`] reads one: from offset 0 of its own descriptor,
/// exactly the size seen when it was opened, in reads of a whole buffer.
pub(crate) struct Lane {
    file: File,
    hashers: Hashers,
    /// Bytes still to read.
    left: u64,
    buf: ReadBuffer,
    /// What of `buf` was read and not yet hashed: `buf[at..filled]`.
    at: usize,
    filled: usize,
    failed: Option<io::Error>,
}

impl Lane {
    /// A lane over `file` (just opened: at offset 0), `size` bytes long, read into `buf` (a
    /// thread's lanes hand their buffers on: [`Self::into_digests`]).
    pub(crate) fn new(file: File, size: u64, opts: ReadOptions, buf: ReadBuffer) -> Self {
        // BLAKE3 takes each buffer whole as it is read; the other chains, the pieces that
        // `read_many` cuts to keep MD5's SIMD lanes equal.
        let hashers = hashers(opts).with_blake3_apart();
        Self { file, hashers, left: size, buf, at: 0, filled: 0, failed: None }
    }

    /// Bytes not hashed yet: those still to read and those read and not yet hashed.
    pub(crate) fn left(&self) -> u64 {
        self.left + (self.filled - self.at) as u64
    }

    /// Everything read and hashed, or a read failed.
    pub(crate) fn done(&self) -> bool {
        self.failed.is_some() || (self.left == 0 && self.at == self.filled)
    }

    /// Bytes read and not yet hashed, after a read if there were none; 0 when done.
    fn fill(&mut self) -> usize {
        self.fill_at_most(usize::MAX)
    }

    /// As [`Self::fill`], reading at most `limit` bytes (at least one) if it reads.
    fn fill_at_most(&mut self, limit: usize) -> usize {
        if self.at == self.filled && self.left > 0 && self.failed.is_none() {
            let buf = self.buf.as_mut_slice();
            let len = buf.len().min(limit.max(1)).min(usize::try_from(self.left).unwrap_or(usize::MAX));
            loop {
                match (&self.file).read(&mut buf[..len]) {
                    // Shorter than it was: the second fstat tells, and the file is read again.
                    Ok(0) => self.left = 0,
                    Ok(n) => {
                        self.hashers.feed_blake3(&buf[..n]);
                        self.left -= n as u64;
                        (self.at, self.filled) = (0, n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => self.failed = Some(e),
                }
                break;
            }
        }
        match self.failed {
            Some(_) => 0,
            None => self.filled - self.at,
        }
    }

    /// Up to `want` bytes read and not yet hashed (read first if there are none), with the
    /// digests they are for. Empty when done.
    fn next(&mut self, want: usize) -> (&mut Hashers, &[u8]) {
        // `fill` may read, which starts the buffer over: the position is taken after it.
        let n = self.fill().min(want);
        let from = self.at;
        self.at += n;
        // In bounds: `fill` keeps `at <= filled <= buf.len()` and gave `n <= filled - at`.
        (&mut self.hashers, &self.buf.as_mut_slice()[from..from + n])
    }

    /// Reads and hashes what is left, on its own.
    pub(crate) fn finish_alone(&mut self) {
        while !self.done() {
            let (hashers, bytes) = self.next(usize::MAX);
            Hashers::feed(&mut [(hashers, bytes)]);
        }
    }

    /// Reads and hashes `lanes` together until one of them is done. Each round feeds every
    /// lane the same number of whole 64-byte blocks: as many as the lane with the fewest bytes
    /// read has. MD5's SIMD lanes take equal lengths of whole blocks fastest (measured over
    /// this machine's dpkg files: 6.1 GB/s, against 4.5 when rounds ended mid-block and left
    /// every chain a partial block). Fewer bytes than a block are only a file's last (reads
    /// fill whole buffers until the end): those go alone, and the others wait.
    pub(crate) fn read_many(lanes: &mut [&mut Lane]) {
        Self::read_many_at_most(lanes, usize::MAX);
    }

    /// As [`Self::read_many`], returning after `rounds` rounds at most even if no lane is
    /// done, so that the caller can look around now and then (a thread out of jobs, whether
    /// another waits with nothing to read).
    pub(crate) fn read_many_at_most(lanes: &mut [&mut Lane], rounds: usize) {
        const BLOCK: usize = 64;
        for _ in 0..rounds {
            // A lane that has hashed all it read reads only as much as the others hold, which
            // keeps the lanes in step: their buffers then run out in the same round, and the
            // rounds after stop only where a file ends. Each refilling a whole buffer instead, as
            // files join mid-buffer, the lanes' ends scatter and each round stops at the
            // nearest: over a first baseline of /usr, 16 MD5 lanes were fed 1.0 KiB each a
            // round (3.5 KiB in step, docs/benchmarks.md), and BLAKE3 hashes such short pieces
            // one block at a time.
            let held = lanes.iter().filter(|l| l.left > 0).map(|l| l.filled - l.at).filter(|&b| b > 0).min();
            let n = lanes.iter_mut().map(|l| l.fill_at_most(held.unwrap_or(usize::MAX))).min().unwrap_or(0);
            if n == 0 {
                return;
            }
            let whole = n / BLOCK * BLOCK;
            let mut feeds: Vec<(&mut Hashers, &[u8])> = lanes
                .iter_mut()
                .map(|l| {
                    let want = match l.fill() {
                        _ if whole > 0 => whole,
                        tail if tail < BLOCK => tail,
                        _ => 0,
                    };
                    l.next(want)
                })
                .collect();
            Hashers::feed(&mut feeds);
        }
    }

    /// The descriptor, the digests of the read (what failed, if it did) and the buffer. Call
    /// when [`Self::done`].
    pub(crate) fn into_digests(self) -> (File, io::Result<Digests>, ReadBuffer) {
        let digests = match self.failed {
            Some(e) => Err(e),
            None => Ok(self.hashers.finish()),
        };
        (self.file, digests, self.buf)
    }
}

fn digest(
    mut file: &File,
    rewind: bool,
    size: u64,
    opts: ReadOptions,
    buf: &mut ReadBuffer,
    mut lane: Option<&mut Lane>,
) -> io::Result<Digests> {
    use std::io::Seek;
    if rewind {
        file.seek(io::SeekFrom::Start(0))?;
    }
    let mut file = file.take(size);
    let buf = buf.as_mut_slice();
    let mut hashers = hashers(opts);
    loop {
        let n = match file.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &buf[..n];
        match lane.as_deref_mut().filter(|l| !l.done()) {
            Some(lane) => {
                let (theirs, bytes) = lane.next(n);
                Hashers::feed(&mut [(&mut hashers, chunk), (theirs, bytes)]);
            }
            None => Hashers::feed(&mut [(&mut hashers, chunk)]),
        }
    }
    Ok(hashers.finish())
}

/// Extended attributes as recorded: (name, value), sorted by name.
pub(crate) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// The extended attributes of an entry, read through a descriptor of its own.
pub(crate) fn read_xattrs_fd(file: &File) -> io::Result<Option<Xattrs>> {
    use xattr::FileExt;
    collect_xattrs(file.list_xattr()?, |name| file.get_xattr(name)).map(Some)
}

fn read_xattrs(real: &Path) -> io::Result<Xattrs> {
    // `xattr::list`/`get` use llistxattr/lgetxattr: a symlink's own attributes, never its
    // target's.
    collect_xattrs(xattr::list(real)?, |name| xattr::get(real, name))
}

/// The attributes named by `names`, their values read with `get`: the first [`MAX_XATTRS`] by
/// name as they are, the rest folded into one [`XATTRS_BEYOND`] entry. Keeping only the first
/// 64 the kernel listed left a change to any other seen through the ctime alone, and which 64
/// were kept depended on the kernel's order.
fn collect_xattrs(
    names: impl Iterator<Item = std::ffi::OsString>,
    get: impl Fn(&OsStr) -> io::Result<Option<Vec<u8>>>,
) -> io::Result<Xattrs> {
    let mut names: Vec<std::ffi::OsString> = names.take(MAX_XATTR_NAMES).collect();
    names.sort_unstable();
    let beyond = names.split_off(names.len().min(MAX_XATTRS));
    // Most files have no attributes: no allocation for them.
    let mut out = Vec::with_capacity(names.len() + usize::from(!beyond.is_empty()));
    for name in names {
        let mut value = get(&name)?.unwrap_or_default();
        value.truncate(MAX_XATTR_VALUE);
        out.push((name.into_encoded_bytes(), value));
    }
    if !beyond.is_empty() {
        use sha2::Digest as _;
        let mut digest = sha2::Sha256::new();
        let (mut budget, mut unread) = (MAX_XATTR_BYTES_BEYOND, 0usize);
        for name in &beyond {
            // Each name and value with its length, so that no two lists hash alike.
            let name = name.as_encoded_bytes();
            digest.update((name.len() as u64).to_le_bytes());
            digest.update(name);
            let value = match budget {
                0 => None,
                _ => get(OsStr::from_bytes(name))?,
            };
            match value {
                Some(mut v) => {
                    v.truncate(MAX_XATTR_VALUE.min(budget));
                    budget -= v.len();
                    digest.update((v.len() as u64).to_le_bytes());
                    digest.update(&v);
                }
                None if budget == 0 => unread += 1,
                None => digest.update(u64::MAX.to_le_bytes()),
            }
        }
        let mut summary = format!("{} more, sha256 {}", beyond.len(), hex(&digest.finalize()));
        if unread > 0 {
            summary.push_str(&format!(" (the values of {unread} not read: names only)"));
        }
        out.push((XATTRS_BEYOND.to_vec(), summary.into_bytes()));
        out.sort_unstable();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// More attributes than are kept one by one: the first 64 by name whatever order they are
    /// listed in, the rest folded into one entry that changes with any of their values, and
    /// reading their values stops at the byte budget.
    #[test]
    fn attributes_beyond_the_first_64_are_folded_into_one_entry_that_any_change_moves() {
        use std::collections::BTreeMap;
        use std::ffi::OsString;
        let attrs: BTreeMap<OsString, Vec<u8>> = (0..70)
            .map(|i| (OsString::from(format!("user.a{i:03}")), format!("v{i}").into_bytes()))
            .collect();
        let collect = |attrs: &BTreeMap<OsString, Vec<u8>>, reversed: bool| {
            let mut names: Vec<OsString> = attrs.keys().cloned().collect();
            if reversed {
                names.reverse();
            }
            collect_xattrs(names.into_iter(), |n| Ok(attrs.get(n).cloned())).unwrap()
        };
        let got = collect(&attrs, false);
        assert_eq!(got.len(), 65);
        assert_eq!(got, collect(&attrs, true), "the kernel's order does not matter");
        let beyond = &got.iter().find(|(n, _)| n == XATTRS_BEYOND).unwrap().1;
        assert!(String::from_utf8_lossy(beyond).starts_with("6 more, sha256 "), "{beyond:?}");
        let kept: Vec<&[u8]> =
            got.iter().map(|(n, _)| n.as_slice()).filter(|n| *n != XATTRS_BEYOND).collect();
        assert_eq!(kept.first(), Some(&&b"user.a000"[..]));
        assert_eq!(kept.last(), Some(&&b"user.a063"[..]));
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(got, sorted, "sorted by name, the folded entry among them");
        // A value beyond the first 64 changed, one added, one removed: each moves the entry.
        let mut changed = attrs.clone();
        changed.insert("user.a067".into(), b"changed".to_vec());
        let mut added = attrs.clone();
        added.insert("user.a070".into(), Vec::new());
        let mut removed = attrs.clone();
        removed.remove(OsStr::new("user.a069"));
        for other in [&changed, &added, &removed] {
            assert_ne!(collect(other, false), got);
        }
        // Within 64: nothing folded.
        let few: BTreeMap<OsString, Vec<u8>> =
            attrs.iter().take(64).map(|(k, v)| (k.clone(), v.clone())).collect();
        assert!(collect(&few, false).iter().all(|(n, _)| n != XATTRS_BEYOND));

        // Large values beyond the first 64: read up to the budget, then names only.
        let big: BTreeMap<OsString, Vec<u8>> = (0..100)
            .map(|i| (OsString::from(format!("user.b{i:03}")), vec![i as u8; MAX_XATTR_VALUE]))
            .collect();
        let read = std::cell::Cell::new(0usize);
        let got = collect_xattrs(big.keys().cloned(), |n| {
            let v = big.get(n).cloned();
            read.set(read.get() + v.as_ref().map_or(0, Vec::len));
            Ok(v)
        })
        .unwrap();
        let beyond =
            String::from_utf8_lossy(&got.iter().find(|(n, _)| n == XATTRS_BEYOND).unwrap().1).into_owned();
        assert!(
            beyond.starts_with("36 more, sha256 ")
                && beyond.ends_with("(the values of 20 not read: names only)"),
            "{beyond}"
        );
        assert!(read.get() <= 64 * MAX_XATTR_VALUE + MAX_XATTR_BYTES_BEYOND, "{} bytes read", read.get());
    }

    /// The same through a real file's attributes, read from its descriptor.
    #[test]
    fn a_real_file_with_more_than_64_attributes_records_the_rest_folded() {
        use std::os::unix::ffi::OsStrExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        for i in 0..80 {
            if let Err(e) = xattr::set(&path, format!("user.x{i:02}"), b"1") {
                guestward_core::testing::skip_or_fail(
                    "a_real_file_with_more_than_64_attributes_records_the_rest_folded",
                    &format!("user attributes on {}: {e}", dir.path().display()),
                );
                return;
            }
        }
        let before = read_xattrs_fd(&File::open(&path).unwrap()).unwrap().unwrap();
        assert_eq!(before.len(), 65);
        xattr::set(&path, "user.x75", b"2").unwrap();
        let after = read_xattrs_fd(&File::open(&path).unwrap()).unwrap().unwrap();
        let beyond = |x: &Xattrs| x.iter().find(|(n, _)| n.as_slice() == XATTRS_BEYOND).cloned().unwrap();
        assert_ne!(beyond(&before), beyond(&after), "the 76th attribute's change is seen");
        assert_eq!(
            before.iter().filter(|(n, _)| OsStr::from_bytes(n) != OsStr::from_bytes(XATTRS_BEYOND)).count(),
            64
        );
    }

    /// The record of `name` in `d`, completed from a lane's read of `file` with `digests`.
    fn completed(
        d: &File,
        name: &str,
        file: File,
        st: &FileStat,
        o: ReadOptions,
        digests: io::Result<Digests>,
        on_bytes: &mut dyn FnMut(u64),
    ) -> (FileRecord, Option<io::Error>) {
        let mut buf = ReadBuffer::new(READ_BUFFER_BYTES);
        read_record_opened(
            d,
            OsStr::new(name),
            Some(file),
            None,
            st,
            o,
            None,
            &mut buf,
            on_bytes,
            Hashing::Done(digests),
        )
    }

    /// A scratch directory, its descriptor, and the default attributes and BLAKE3 (which a
    /// lane feeds apart) without a size cap.
    fn lane_test_dir(md5: bool) -> (tempfile::TempDir, File, ReadOptions) {
        let dir = tempfile::tempdir().unwrap();
        let d = crate::dirfd::open_dir_path(dir.path()).unwrap();
        (
            dir,
            d,
            ReadOptions {
                attributes: AttributeSet::of(&[Attribute::DEFAULT, &[Attribute::Blake3]].concat()),
                max_file_size_bytes: u64::MAX,
                md5,
            },
        )
    }

    /// A file read in a lane (alongside another lane, alongside a file read in the ordinary
    /// way, or alone) gets exactly the record an ordinary read gives: its completion with
    /// `Hashing::Done` checks the file as every read does. The file beside it is unaffected.
    #[test]
    fn a_file_read_in_a_lane_is_recorded_as_an_ordinary_read_records_it() {
        let (dir, d, o) = lane_test_dir(true);
        let root = dir.path();
        let sizes = [
            0,
            1,
            64,
            LANE_BUFFER_BYTES - 1,
            LANE_BUFFER_BYTES,
            LANE_BUFFER_BYTES + 1,
            3 * READ_BUFFER_BYTES + 5,
        ];
        for (i, size) in sizes.iter().enumerate() {
            std::fs::write(
                root.join(format!("f{i}")),
                (0..*size).map(|k| (k % 253) as u8 ^ i as u8).collect::<Vec<u8>>(),
            )
            .unwrap();
        }
        let in_lane = |name: &str| {
            let (file, st) = open_regular(&d, OsStr::new(name)).unwrap();
            (Lane::new(file, st.st_size as u64, o, ReadBuffer::new(LANE_BUFFER_BYTES)), st)
        };
        let complete = |name: &str, lane: Lane, st: &FileStat| {
            assert!(lane.done());
            let (file, digests, _) = lane.into_digests();
            completed(&d, name, file, st, o, digests, &mut |_| {})
        };
        let ordinary = |name: &str| read(&root.join(name), o, &mut |_| {}).0;
        for i in 0..sizes.len() {
            for j in 0..sizes.len() {
                let (a, b) = (format!("f{i}"), format!("f{j}"));
                // Two lanes together, then each alone to its end.
                let (mut la, sa) = in_lane(&a);
                let (mut lb, sb) = in_lane(&b);
                Lane::read_many(&mut [&mut la, &mut lb]);
                assert!(la.done() || lb.done(), "{a} {b}: read together until one is done");
                la.finish_alone();
                lb.finish_alone();
                let (ra, ea) = complete(&a, la, &sa);
                let (rb, eb) = complete(&b, lb, &sb);
                assert!(ea.is_none() && eb.is_none());
                assert_eq!((ra, rb), (ordinary(&a), ordinary(&b)), "{a} with {b}");
                // A lane fed by an ordinary read of another file.
                let (mut la, sa) = in_lane(&a);
                let (file, st) = open_regular(&d, OsStr::new(&b)).unwrap();
                let mut buf = ReadBuffer::new(READ_BUFFER_BYTES);
                let (rb, eb) = read_record_opened(
                    &d,
                    OsStr::new(&b),
                    Some(file),
                    None,
                    &st,
                    o,
                    None,
                    &mut buf,
                    &mut |_| {},
                    Hashing::Read(Some(&mut la)),
                );
                assert!(eb.is_none());
                assert_eq!(rb, ordinary(&b), "{b} read with {a} in a lane");
                la.finish_alone();
                assert_eq!(complete(&a, la, &sa).0, ordinary(&a), "{a} in a lane beside {b}");
            }
        }
        // Many lanes together (their MD5s in SIMD lanes, more than one group of them): each
        // file three times, read until one is done, that one completed, and so on to the last.
        let mut lanes: Vec<_> = (0..3 * sizes.len())
            .map(|k| {
                let name = format!("f{}", k % sizes.len());
                let (lane, st) = in_lane(&name);
                (name, lane, st)
            })
            .collect();
        while !lanes.is_empty() {
            let mut reading: Vec<&mut Lane> = lanes.iter_mut().map(|(_, lane, _)| lane).collect();
            Lane::read_many(&mut reading);
            let before = lanes.len();
            for (name, lane, st) in lanes.extract_if(.., |(_, lane, _)| lane.done()) {
                assert_eq!(complete(&name, lane, &st).0, ordinary(&name), "{name} among {before} lanes");
            }
            assert!(lanes.len() < before, "read together until one is done");
        }
    }

    /// A lane that joins others mid-buffer first reads only what they still hold, so that from
    /// then on their buffers run out in the same round; its file still gets the digests of its
    /// own bytes.
    #[test]
    fn a_lane_joining_mid_buffer_reads_in_step_with_the_others() {
        let (dir, d, o) = lane_test_dir(true);
        let root = dir.path();
        let content = |len: usize, seed: u8| (0..len).map(|k| (k % 251) as u8 ^ seed).collect::<Vec<u8>>();
        let big = 4 * MD5_LANE_BUFFER_BYTES + 640;
        let short = MD5_LANE_BUFFER_BYTES / 3 + 1;
        for (name, len, seed) in [("a", big, 1), ("b", short, 2), ("c", big, 3)] {
            std::fs::write(root.join(name), content(len, seed)).unwrap();
        }
        let in_lane = |name: &str| {
            let (file, st) = open_regular(&d, OsStr::new(name)).unwrap();
            (Lane::new(file, st.st_size as u64, o, ReadBuffer::new(MD5_LANE_BUFFER_BYTES)), st)
        };
        let (mut a, sa) = in_lane("a");
        let (mut b, _) = in_lane("b");
        // `b` is done after a third of a buffer: `a` holds the rest of its first one.
        Lane::read_many(&mut [&mut a, &mut b]);
        assert!(b.done() && !a.done());
        let held = a.filled - a.at;
        assert_eq!(held, MD5_LANE_BUFFER_BYTES - short / 64 * 64, "rounds feed whole blocks of the shortest");
        // `c` reads what `a` holds, then both read whole buffers together (three), then `a` its
        // last 640 bytes and `c` the rest of its file. Read a whole buffer on joining instead,
        // `c` would end every round a buffer's length minus `held` away from `a`.
        let (mut c, sc) = in_lane("c");
        Lane::read_many(&mut [&mut a, &mut c]);
        assert!(a.done());
        assert_eq!((c.left, c.at, c.filled), (0, 640, big - held - 3 * MD5_LANE_BUFFER_BYTES));
        c.finish_alone();
        let ordinary = |name: &str| read(&root.join(name), o, &mut |_| {}).0;
        for (name, lane, st) in [("a", a, sa), ("c", c, sc)] {
            let (file, digests, _) = lane.into_digests();
            assert_eq!(completed(&d, name, file, &st, o, digests, &mut |_| {}).0, ordinary(name), "{name}");
        }
    }

    /// A file written after its lane read it is read again when its record is completed (its
    /// stat moved): the record holds what is there, not what the lane saw. A lane whose read
    /// fails leaves the file unreadable, with the error, not a digest of what it did read.
    #[test]
    fn a_lane_s_file_changed_since_is_read_again_and_a_failed_read_is_no_digest() {
        let (dir, d, o) = lane_test_dir(false);
        let root = dir.path();
        std::fs::write(root.join("f"), vec![1u8; 200_000]).unwrap();
        let (file, st) = open_regular(&d, OsStr::new("f")).unwrap();
        let mut lane = Lane::new(file, st.st_size as u64, o, ReadBuffer::new(LANE_BUFFER_BYTES));
        lane.finish_alone();
        std::fs::write(root.join("f"), vec![2u8; 150_000]).unwrap();
        let (file, digests, _) = lane.into_digests();
        let mut counted = 0;
        let (rec, err) = completed(&d, "f", file, &st, o, digests, &mut |n| counted += n);
        assert!(err.is_none());
        assert_eq!(rec, read(&root.join("f"), o, &mut |_| {}).0);
        assert_eq!(rec.size, 150_000);
        assert_eq!(counted, 150_000, "the second read is counted, the lane's was counted when it began");

        // A directory's descriptor: its read fails (EISDIR).
        let lane_dir = File::open(root).unwrap();
        let mut lane = Lane::new(lane_dir, 4096, o, ReadBuffer::new(LANE_BUFFER_BYTES));
        lane.finish_alone();
        assert!(lane.done());
        let (_, digests, _) = lane.into_digests();
        assert!(digests.is_err());
        let (file, st) = open_regular(&d, OsStr::new("f")).unwrap();
        let failed = Err(io::Error::from_raw_os_error(nix::libc::EIO));
        let (rec, err) = completed(&d, "f", file, &st, o, failed, &mut |_| {});
        assert_eq!((rec.sha256, rec.flags & FLAG_UNREADABLE), (None, FLAG_UNREADABLE));
        assert_eq!(err.map(|e| e.raw_os_error()), Some(Some(nix::libc::EIO)));
    }

    /// A full scan opens what getdents calls a regular file before examining it: only a
    /// regular file comes back open (with its descriptor's own stat), and hashing through
    /// that descriptor gives the record an `fstatat` and a fresh open give. A FIFO swapped in
    /// is opened without blocking and refused; a symlink, a directory or nothing at all is
    /// left to `fstatat`.
    #[test]
    fn open_regular_opens_regular_files_only_and_reads_as_the_walk_does() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("file"), b"contents\n").unwrap();
        nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        std::os::unix::fs::symlink("file", root.join("link")).unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        let d = crate::dirfd::open_dir_path(root).unwrap();
        for name in ["fifo", "link", "sub", "missing"] {
            assert!(open_regular(&d, OsStr::new(name)).is_none(), "{name}");
        }
        let (file, st) = open_regular(&d, OsStr::new("file")).expect("a regular file");
        let o = ReadOptions {
            attributes: AttributeSet::of(Attribute::DEFAULT),
            max_file_size_bytes: u64::MAX,
            md5: true,
        };
        let (opened, err) = read_record_opened(
            &d,
            OsStr::new("file"),
            Some(file),
            None,
            &st,
            o,
            None,
            &mut ReadBuffer::new(READ_BUFFER_BYTES),
            &mut |_| {},
            Hashing::Read(None),
        );
        assert!(err.is_none());
        let (walked, _) = read(&root.join("file"), o, &mut |_| {});
        assert_eq!(opened, walked);
        assert!(opened.sha256.is_some() && opened.md5.is_some());
    }

    /// Reads `path` the way the walk does: through its directory's descriptor.
    fn read(path: &Path, o: ReadOptions, on_bytes: &mut dyn FnMut(u64)) -> (FileRecord, Option<io::Error>) {
        let dir = crate::dirfd::open_dir_path(path.parent().unwrap()).unwrap();
        let name = path.file_name().unwrap();
        let st = crate::dirfd::stat_at(&dir, name).unwrap();
        read_record_at(&dir, name, &st, o, None, &mut ReadBuffer::new(READ_BUFFER_BYTES), on_bytes)
    }

    /// The entry `f` of `d` read as a scan reads it, `st` being what its `fstatat` said.
    fn read_f(d: &File, st: &FileStat) -> (FileRecord, Option<io::Error>) {
        read_record_at(
            d,
            OsStr::new("f"),
            st,
            opts(),
            None,
            &mut ReadBuffer::new(READ_BUFFER_BYTES),
            &mut |_| {},
        )
    }

    fn opts() -> ReadOptions {
        ReadOptions {
            attributes: AttributeSet::of(Attribute::DEFAULT),
            max_file_size_bytes: 1 << 20,
            md5: false,
        }
    }

    #[test]
    fn hashes_regular_files_and_records_symlinks_without_following() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"abc").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", dir.path().join("l")).unwrap();
        let (rec, err) = read(&f, opts(), &mut |_| {});
        assert!(err.is_none());
        assert_eq!(
            hex(&rec.sha256.unwrap()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let l = dir.path().join("l");
        let (rec, _) = read(&l, opts(), &mut |_| {});
        assert_eq!(rec.kind, FileKind::Symlink);
        assert_eq!(rec.link_target.as_deref(), Some(&b"/etc/shadow"[..]));
        assert!(rec.sha256.is_none());
    }

    #[test]
    fn an_md5_is_taken_in_the_same_read_and_carried_only_to_the_same_content() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"abc").unwrap();
        let mut read_bytes = 0;
        let (with, err) = read(&f, ReadOptions { md5: true, ..opts() }, &mut |n| read_bytes += n);
        assert!(err.is_none());
        assert_eq!(read_bytes, 3, "one read for both digests");
        // RFC 1321's test vector for "abc".
        assert_eq!(hex(&with.md5.unwrap()), "900150983cd24fb0d6963f7d28e17f72");
        let (mut without, _) = read(&f, opts(), &mut |_| {});
        assert_eq!(without.md5, None, "only when asked");
        without.carry_md5(Some(&with));
        assert_eq!(without, with, "same SHA-256: the same content, so the same MD5");
        std::fs::write(&f, b"abd").unwrap();
        let (mut other, _) = read(&f, opts(), &mut |_| {});
        other.carry_md5(Some(&with));
        assert_eq!(other.md5, None, "another content never gets the old MD5");
        let mut unstable = with.clone();
        unstable.md5 = None;
        unstable.flags |= FLAG_UNSTABLE;
        unstable.carry_md5(Some(&with));
        assert_eq!(unstable.md5, None, "nor one that changed while read");
        // Under a policy that takes BLAKE3 instead of SHA-256, the same by BLAKE3. Were it
        // not, every read of a package file whose MD5 is known (`fim check`, an init over a
        // baseline) would lose it, and the next scan would take it again.
        let b3 = ReadOptions {
            attributes: AttributeSet::of(&[Attribute::Blake3, Attribute::Mode, Attribute::Size]),
            ..opts()
        };
        let (b3_with, _) = read(&f, ReadOptions { md5: true, ..b3 }, &mut |_| {});
        let (mut b3_without, _) = read(&f, b3, &mut |_| {});
        assert!(b3_with.sha256.is_none() && b3_with.blake3.is_some() && b3_with.md5.is_some());
        b3_without.carry_md5(Some(&b3_with));
        assert_eq!(b3_without.md5, b3_with.md5, "same BLAKE3: the same content");
        b3_without.md5 = None;
        b3_without.blake3 = Some([0; 32]);
        b3_without.carry_md5(Some(&b3_with));
        assert_eq!(b3_without.md5, None, "another BLAKE3");
        // Digests of different kinds compare nothing: no MD5 carried between them.
        let (mut sha_only, _) = read(&f, opts(), &mut |_| {});
        sha_only.carry_md5(Some(&b3_with));
        assert_eq!(sha_only.md5, None, "no digest in common");
        // A record reused from its metadata keeps it (the content is the one it was taken of).
        let st = crate::dirfd::stat_at(&crate::dirfd::open_dir_path(dir.path()).unwrap(), OsStr::new("f"))
            .unwrap();
        let (now, _) = read(&f, ReadOptions { md5: true, ..opts() }, &mut |_| {});
        assert_eq!(FileRecord::reused(&now, &st, opts()).unwrap().md5, now.md5);
    }

    #[test]
    fn fifo_is_recorded_by_type_and_never_opened() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pipe");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (rec, err) = read(&p, opts(), &mut |_| {});
        assert!(err.is_none());
        assert_eq!(rec.kind, FileKind::Fifo);
        assert!(rec.sha256.is_none());
    }

    #[test]
    fn a_file_replaced_after_its_fstatat_is_reported_changed_not_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"examined").unwrap();
        let d = crate::dirfd::open_dir_path(dir.path()).unwrap();
        let st = crate::dirfd::stat_at(&d, OsStr::new("f")).unwrap();
        // Another file renamed over it, then a FIFO: neither may be hashed as `f`, and the
        // FIFO must not block the open.
        std::fs::write(dir.path().join("other"), b"secret from elsewhere").unwrap();
        std::fs::rename(dir.path().join("other"), &f).unwrap();
        let (rec, err) = read_f(&d, &st);
        assert!(crate::dirfd::is_changed_during_scan(err.as_ref().unwrap()), "{err:?}");
        assert!(rec.sha256.is_none());
        std::fs::remove_file(&f).unwrap();
        nix::unistd::mkfifo(&f, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (rec, err) = read_f(&d, &st);
            let _ = tx.send((rec, err.map(|e| crate::dirfd::is_changed_during_scan(&e))));
        });
        let (rec, changed) =
            rx.recv_timeout(std::time::Duration::from_secs(10)).expect("the read hung on a FIFO");
        assert_eq!(changed, Some(true));
        assert!(rec.sha256.is_none());
    }

    #[test]
    fn too_large_files_are_flagged_not_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("big");
        std::fs::write(&f, vec![0u8; 100]).unwrap();
        let o = ReadOptions { max_file_size_bytes: 10, ..opts() };
        let (rec, _) = read(&f, o, &mut |_| {});
        assert_eq!(rec.flags & FLAG_HASH_SKIPPED, FLAG_HASH_SKIPPED);
        assert!(rec.sha256.is_none());
    }

    #[test]
    fn a_file_changing_while_hashed_is_retried_then_flagged_unstable() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("growing");
        std::fs::write(&f, vec![1u8; 32 << 20]).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (f, stop) = (f.clone(), std::sync::Arc::clone(&stop));
            std::thread::spawn(move || {
                use std::io::Write;
                let mut out = std::fs::OpenOptions::new().append(true).open(f).unwrap();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    out.write_all(&[2u8; 4096]).unwrap();
                    std::thread::yield_now();
                }
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut reads = 0;
        let o = ReadOptions { max_file_size_bytes: 1 << 30, ..opts() };
        let (rec, err) = read(&f, o, &mut |_| reads += 1);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
        assert!(err.is_none(), "{err:?}");
        assert_eq!(reads, MAX_HASH_ATTEMPTS, "re-hashed on every change");
        assert_eq!(rec.flags & FLAG_UNSTABLE, FLAG_UNSTABLE);
        assert!(rec.sha256.is_some());
    }

    #[test]
    fn a_record_is_reused_only_while_its_metadata_and_policy_match() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"abc").unwrap();
        let (prev, _) = read(&f, opts(), &mut |_| {});
        let d = crate::dirfd::open_dir_path(dir.path()).unwrap();
        let st = crate::dirfd::stat_at(&d, OsStr::new("f")).unwrap();
        let reused = FileRecord::reused(&prev, &st, opts()).unwrap();
        assert_eq!(reused, prev, "hashes and xattrs carried over, nothing read");
        // Recorded without BLAKE3: a policy asking for it reads the file.
        let with_b3 = ReadOptions {
            attributes: AttributeSet::of(&[Attribute::Sha256, Attribute::Blake3, Attribute::Xattrs]),
            ..opts()
        };
        assert!(FileRecord::reused(&prev, &st, with_b3).is_none());
        // Any metadata moved (a chmod moves ctime and mode): read again.
        let mut moved = prev.clone();
        moved.ctime_ns += 1;
        assert!(FileRecord::reused(&moved, &st, opts()).is_none());
        let mut unreadable = prev.clone();
        unreadable.flags |= FLAG_UNREADABLE;
        assert!(FileRecord::reused(&unreadable, &st, opts()).is_none());
        // Over the size cap now: flagged, not hashed, whatever was recorded.
        let capped = ReadOptions { max_file_size_bytes: 1, ..opts() };
        let rec = FileRecord::reused(&prev, &st, capped).unwrap();
        assert_eq!((rec.sha256, rec.flags & FLAG_HASH_SKIPPED), (None, FLAG_HASH_SKIPPED));
    }

    #[test]
    fn diff_names_changed_attributes_only_when_selected() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"abc").unwrap();
        let (a, _) = read(&f, opts(), &mut |_| {});
        let mut b = a.clone();
        b.mode = 0o4755;
        b.sha256 = Some([0; 32]);
        assert_eq!(
            a.diff(&b, AttributeSet::of(Attribute::DEFAULT)),
            vec![Attribute::Sha256, Attribute::Mode]
        );
        assert_eq!(a.diff(&b, AttributeSet::of(&[Attribute::Uid])), vec![]);
    }
}
