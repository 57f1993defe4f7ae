//! What is recorded about one file, and how it is read without trusting the file.
//!
//! Security: the scanned tree may be hostile (an attacker who changed a file also controls its
//! name, type and timing). So we never follow a symlink (`lstat`, `O_NOFOLLOW`), never open
//! anything but a regular file (a FIFO would block us, a device could have side effects on
//! open), open with `O_NONBLOCK` in case a FIFO is swapped in after the `lstat`, check with
//! `fstat` that the opened fd is the inode we examined, and re-hash a file that changed while
//! we read it instead of recording a hash that matches no version of it.

use crate::config::{Attribute, AttributeSet};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// File type as recorded. Devices, FIFOs and sockets are recorded by type only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link (never followed).
    Symlink,
    /// Character device.
    CharDevice,
    /// Block device.
    BlockDevice,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
}

impl FileKind {
    /// From a `lstat` result.
    pub fn of(meta: &Metadata) -> Self {
        let t = meta.file_type();
        if t.is_symlink() {
            Self::Symlink
        } else if t.is_dir() {
            Self::Dir
        } else if t.is_file() {
            Self::File
        } else if t.is_char_device() {
            Self::CharDevice
        } else if t.is_block_device() {
            Self::BlockDevice
        } else if t.is_fifo() {
            Self::Fifo
        } else {
            Self::Socket
        }
    }

    /// Stable small integer for the store.
    pub fn code(self) -> i64 {
        self as i64
    }

    /// Inverse of [`Self::code`].
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => Self::File,
            1 => Self::Dir,
            2 => Self::Symlink,
            3 => Self::CharDevice,
            4 => Self::BlockDevice,
            5 => Self::Fifo,
            6 => Self::Socket,
            _ => return None,
        })
    }
}

/// The content was larger than the rule's `max_file_size_bytes`: attributes only.
pub const FLAG_HASH_SKIPPED: u8 = 1;
/// The file kept changing while hashed; the hash is of the last read.
pub const FLAG_UNSTABLE: u8 = 2;
/// The content could not be read (permission, I/O error); attributes only.
pub const FLAG_UNREADABLE: u8 = 4;

/// Re-reads of a file that changes while being hashed before it is flagged unstable.
pub const MAX_HASH_ATTEMPTS: u32 = 3;

/// Largest extended attribute value kept (the kernel's own limit is 64 KiB).
const MAX_XATTR_VALUE: usize = 64 * 1024;
/// Most extended attributes kept per file.
const MAX_XATTRS: usize = 64;

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
}

/// Reads the record of `real` (a path on this machine) whose `lstat` gave `meta`.
/// `on_bytes` is told how many bytes are about to be read (rate limiting).
///
/// Never fails: what could not be read is flagged, with the error returned beside the record.
pub fn read_record(
    real: &Path,
    meta: &Metadata,
    opts: ReadOptions,
    buf: &mut Vec<u8>,
    on_bytes: &mut dyn FnMut(u64),
) -> (FileRecord, Option<io::Error>) {
    let mut rec = FileRecord::from_metadata(meta);
    let mut problem = None;
    match rec.kind {
        FileKind::Symlink if opts.attributes.has(Attribute::LinkTarget) => match std::fs::read_link(real) {
            Ok(t) => rec.link_target = Some(t.into_os_string().into_encoded_bytes()),
            Err(e) => problem = Some(e),
        },
        FileKind::File if opts.attributes.hashes() => {
            if rec.size > opts.max_file_size_bytes {
                rec.flags |= FLAG_HASH_SKIPPED;
            } else {
                match hash_file(real, &rec, opts, buf, on_bytes) {
                    Ok(hashed) => rec = hashed,
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
        match read_xattrs(real) {
            Ok(x) => rec.xattrs = Some(x),
            // Filesystems without xattr support simply have none.
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOTSUP) => rec.xattrs = Some(Vec::new()),
            Err(e) => problem = problem.or(Some(e)),
        }
    }
    (rec, problem)
}

fn open_no_follow(real: &Path) -> io::Result<File> {
    use nix::fcntl::OFlag;
    let base = OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    // O_NOATIME keeps our reads from touching atime (and from looking like user activity);
    // the kernel allows it only to the owner or CAP_FOWNER, so fall back without it on EPERM.
    options.custom_flags((base | OFlag::O_NOATIME).bits());
    match options.open(real) {
        Err(e) if e.raw_os_error() == Some(nix::libc::EPERM) => {
            options.custom_flags(base.bits());
            options.open(real)
        }
        other => other,
    }
}

fn hash_file(
    real: &Path,
    lstat: &FileRecord,
    opts: ReadOptions,
    buf: &mut Vec<u8>,
    on_bytes: &mut dyn FnMut(u64),
) -> io::Result<FileRecord> {
    let file = open_no_follow(real)?;
    let mut last = None;
    for _ in 0..MAX_HASH_ATTEMPTS {
        let before = FileRecord::from_metadata(&file.metadata()?);
        // The fd must be the regular file we examined: a rename between lstat and open could
        // have put a FIFO, device or another file there.
        if before.kind != FileKind::File || before.inode != lstat.inode {
            return Err(io::Error::other("file was replaced while being opened; it will be re-examined"));
        }
        on_bytes(before.size);
        // Read exactly the size seen before: a file appended to faster than we read would
        // otherwise keep the hasher chasing its tail forever. Growth shows in the second fstat.
        let (sha, b3) = digest(&file, before.size, opts.attributes, buf)?;
        let after = FileRecord::from_metadata(&file.metadata()?);
        let mut rec = after.clone();
        rec.sha256 = sha;
        rec.blake3 = b3;
        if before.same_stat(&after) {
            return Ok(rec);
        }
        last = Some(rec);
    }
    let mut rec = last.ok_or_else(|| io::Error::other("no hash attempt made"))?;
    rec.flags |= FLAG_UNSTABLE;
    Ok(rec)
}

type Digests = (Option<[u8; 32]>, Option<[u8; 32]>);

fn digest(mut file: &File, size: u64, attrs: AttributeSet, buf: &mut Vec<u8>) -> io::Result<Digests> {
    use std::io::Seek;
    file.seek(io::SeekFrom::Start(0))?;
    let mut file = file.take(size);
    buf.resize(256 * 1024, 0);
    let mut sha = attrs.has(Attribute::Sha256).then(sha2::Sha256::new);
    let mut b3 = attrs.has(Attribute::Blake3).then(blake3::Hasher::new);
    loop {
        let n = match file.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &buf[..n];
        if let Some(h) = sha.as_mut() {
            h.update(chunk);
        }
        if let Some(h) = b3.as_mut() {
            h.update(chunk);
        }
    }
    Ok((sha.map(|h| h.finalize().into()), b3.map(|h| *h.finalize().as_bytes())))
}

fn read_xattrs(real: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    // `xattr::list`/`get` use llistxattr/lgetxattr: a symlink's own attributes, never its
    // target's.
    let mut out = Vec::new();
    for name in xattr::list(real)?.take(MAX_XATTRS) {
        let mut value = xattr::get(real, &name)?.unwrap_or_default();
        value.truncate(MAX_XATTR_VALUE);
        out.push((name.into_encoded_bytes(), value));
    }
    out.sort();
    Ok(out)
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn opts() -> ReadOptions {
        ReadOptions { attributes: AttributeSet::of(Attribute::DEFAULT), max_file_size_bytes: 1 << 20 }
    }

    #[test]
    fn hashes_regular_files_and_records_symlinks_without_following() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"abc").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", dir.path().join("l")).unwrap();
        let mut buf = Vec::new();
        let meta = std::fs::symlink_metadata(&f).unwrap();
        let (rec, err) = read_record(&f, &meta, opts(), &mut buf, &mut |_| {});
        assert!(err.is_none());
        assert_eq!(
            hex(&rec.sha256.unwrap()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let l = dir.path().join("l");
        let meta = std::fs::symlink_metadata(&l).unwrap();
        let (rec, _) = read_record(&l, &meta, opts(), &mut buf, &mut |_| {});
        assert_eq!(rec.kind, FileKind::Symlink);
        assert_eq!(rec.link_target.as_deref(), Some(&b"/etc/shadow"[..]));
        assert!(rec.sha256.is_none());
    }

    #[test]
    fn fifo_is_recorded_by_type_and_never_opened() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pipe");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let (rec, err) = read_record(&p, &meta, opts(), &mut Vec::new(), &mut |_| {});
        assert!(err.is_none());
        assert_eq!(rec.kind, FileKind::Fifo);
        assert!(rec.sha256.is_none());
    }

    #[test]
    fn too_large_files_are_flagged_not_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("big");
        std::fs::write(&f, vec![0u8; 100]).unwrap();
        let meta = std::fs::symlink_metadata(&f).unwrap();
        let o = ReadOptions { max_file_size_bytes: 10, ..opts() };
        let (rec, _) = read_record(&f, &meta, o, &mut Vec::new(), &mut |_| {});
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
        let meta = std::fs::symlink_metadata(&f).unwrap();
        let mut reads = 0;
        let o = ReadOptions { max_file_size_bytes: 1 << 30, ..opts() };
        let (rec, err) = read_record(&f, &meta, o, &mut Vec::new(), &mut |_| reads += 1);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
        assert!(err.is_none(), "{err:?}");
        assert_eq!(reads, MAX_HASH_ATTEMPTS, "re-hashed on every change");
        assert_eq!(rec.flags & FLAG_UNSTABLE, FLAG_UNSTABLE);
        assert!(rec.sha256.is_some());
    }

    #[test]
    fn diff_names_changed_attributes_only_when_selected() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"abc").unwrap();
        let meta = std::fs::symlink_metadata(&f).unwrap();
        let (a, _) = read_record(&f, &meta, opts(), &mut Vec::new(), &mut |_| {});
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
