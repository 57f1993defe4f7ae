//! Reading host files through a root directory without escaping it.
//!
//! Security: with `--root /mnt/snapshot` the tree under the root is untrusted (it may come from
//! a compromised instance's volume). An absolute symlink such as `etc/os-release ->
//! /etc/shadow` must resolve to `/mnt/snapshot/etc/shadow`, never to the scanning host's file,
//! and `..` must stop at the root. On the live root the tree is partly untrusted too: any user
//! can plant files in their home directory that the agent, running as root, later reads.
//!
//! Every read therefore goes through one door, [`HostRoot::open`]:
//! - Paths are resolved relative to a descriptor of the root, never re-resolved by name: with
//!   `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` where the kernel has it (Linux 5.6),
//!   else by walking one component at a time with `openat(dirfd, name, O_PATH | O_NOFOLLOW)`
//!   and re-interpreting each symlink inside the root ourselves. A component swapped for a
//!   symlink between two steps can therefore never lead outside the root (issue 9, item 9: the
//!   old code checked the components by path and then opened by path).
//! - A symlink in the final component is followed by us (readlink, re-rooted), never by the
//!   kernel: the file is finally opened with `O_NOFOLLOW`, on the live root as well.
//! - Only regular files are read. The type is checked on an `O_PATH` descriptor before the
//!   file is opened for reading (so a device node's driver is never even opened), and again on
//!   the open descriptor, which is the check that counts. The open uses `O_NONBLOCK`, so a FIFO
//!   swapped in between the two cannot block the open either (issue 9, item 2: a FIFO in place
//!   of dpkg `status` hung the scan forever, `/dev/zero` style nodes were read for 256 MiB).

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

/// Symlinks followed while resolving one path before giving up (Linux's own limit is 40).
pub const MAX_SYMLINK_HOPS: usize = 40;

/// `openat2` answers `EAGAIN` when a rename or mount raced with a `..` step; it is retried this
/// many times before the component walk (which keeps its own chain of directories) takes over.
const OPENAT2_RETRIES: usize = 8;

/// What to do about a file the agent may not read: said with every permission problem, since
/// nothing under such a path is inventoried or checked.
pub const READ_PERMISSION_ADVICE: &str =
    "the agent needs CAP_DAC_READ_SEARCH, which guestward-agent.service grants, or root";

/// Whether a failed open or `lstat` says the path leads to nothing: a component is gone, is no
/// directory, or its symlinks loop. That is the tree's shape (what a removal or a replacement
/// leaves: the file is missing), not a limit of the agent's (the file is unreadable).
pub fn leads_to_nothing(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::ENOENT | nix::libc::ENOTDIR | nix::libc::ELOOP | nix::libc::ENAMETOOLONG)
    )
}

/// Why a host file could not be read. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum HostFsError {
    /// The file does not exist.
    #[error("{}: not found", path.display())]
    NotFound {
        /// The file, as seen on the scanning machine.
        path: PathBuf,
    },
    /// The agent lacks permission: it reads root-only files through `CAP_DAC_READ_SEARCH`.
    #[error("{}: permission denied ({READ_PERMISSION_ADVICE})", path.display())]
    PermissionDenied {
        /// The file, as seen on the scanning machine.
        path: PathBuf,
    },
    /// The file is over the size cap for its kind.
    #[error("{}: larger than the {limit}-byte limit for this file; not read", path.display())]
    TooLarge {
        /// The file, as seen on the scanning machine.
        path: PathBuf,
        /// The cap that was exceeded.
        limit: u64,
    },
    /// A symlink loop, or a chain longer than [`MAX_SYMLINK_HOPS`].
    #[error("{}: too many levels of symbolic links", path.display())]
    SymlinkLoop {
        /// The file, as seen on the scanning machine.
        path: PathBuf,
    },
    /// Not a regular file (a FIFO, device node, socket or directory where a file was expected):
    /// refused without reading, since reading it could block forever or never end.
    #[error("{}: is a {kind}, not a regular file; not read", path.display())]
    NotRegularFile {
        /// The file, as seen on the scanning machine.
        path: PathBuf,
        /// What it is instead, as [`file_kind`] names it ("fifo", "character device", ...).
        kind: &'static str,
    },
    /// Any other I/O error.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file, as seen on the scanning machine.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

impl HostFsError {
    /// Classifies an I/O error on `path`.
    pub fn from_io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        match source.kind() {
            io::ErrorKind::NotFound => Self::NotFound { path },
            io::ErrorKind::PermissionDenied => Self::PermissionDenied { path },
            _ if source.raw_os_error() == Some(Errno::ELOOP as i32) => Self::SymlinkLoop { path },
            _ => Self::Io { path, source },
        }
    }

    /// This error as an [`io::Error`] that keeps its errno (`ENOENT`, `EACCES`, `ELOOP`, or the
    /// underlying error), for callers that decide by it. The message is then the kernel's:
    /// the caller names the file.
    pub fn into_io(self) -> io::Error {
        match self {
            Self::NotFound { .. } => io::Error::from_raw_os_error(Errno::ENOENT as i32),
            Self::PermissionDenied { .. } => io::Error::from_raw_os_error(Errno::EACCES as i32),
            Self::SymlinkLoop { .. } => io::Error::from_raw_os_error(Errno::ELOOP as i32),
            Self::Io { source, .. } => source,
            e @ (Self::TooLarge { .. } | Self::NotRegularFile { .. }) => io::Error::other(e.to_string()),
        }
    }

    /// Whether the path leads to nothing ([`leads_to_nothing`]).
    pub fn leads_to_nothing(&self) -> bool {
        match self {
            Self::NotFound { .. } | Self::SymlinkLoop { .. } => true,
            Self::Io { source, .. } => leads_to_nothing(source),
            Self::PermissionDenied { .. } | Self::TooLarge { .. } | Self::NotRegularFile { .. } => false,
        }
    }

    /// A stable machine-readable code for reports.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::PermissionDenied { .. } => "permission_denied",
            Self::TooLarge { .. } => "too_large",
            Self::SymlinkLoop { .. } => "symlink_loop",
            Self::NotRegularFile { .. } => "not_regular_file",
            Self::Io { .. } => "io",
        }
    }

    /// The file concerned.
    pub fn path(&self) -> &Path {
        match self {
            Self::NotFound { path }
            | Self::PermissionDenied { path }
            | Self::TooLarge { path, .. }
            | Self::SymlinkLoop { path }
            | Self::NotRegularFile { path, .. }
            | Self::Io { path, .. } => path,
        }
    }

    /// What went wrong, without the path and without the agent's advice on permissions
    /// (`permission denied`, `not found`, ...): for a caller that names the file itself (in an
    /// error of its own that holds the path), and for a program other than the agent, the
    /// collector, whose advice differs.
    pub fn reason(&self) -> String {
        match self {
            Self::NotFound { .. } => "not found".to_string(),
            Self::PermissionDenied { .. } => "permission denied".to_string(),
            Self::TooLarge { limit, .. } => {
                format!("larger than the {limit}-byte limit for this file; not read")
            }
            Self::SymlinkLoop { .. } => "too many levels of symbolic links".to_string(),
            Self::NotRegularFile { kind, .. } => format!("is a {kind}, not a regular file; not read"),
            Self::Io { source, .. } => source.to_string(),
        }
    }

    /// This error as a report [`crate::Problem`].
    pub fn to_problem(&self) -> crate::Problem {
        crate::Problem::new(self.code(), self.to_string()).with_path(self.path().display().to_string())
    }
}

/// How a file type is named in [`HostFsError::NotRegularFile`]: "regular file", "directory",
/// "symlink", "fifo", "socket", "character device", "block device".
pub fn file_kind(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_file() {
        "regular file"
    } else if file_type.is_dir() {
        "directory"
    } else if file_type.is_symlink() {
        "symlink"
    } else if file_type.is_fifo() {
        "fifo"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_block_device() {
        "block device"
    } else {
        "file of unknown type"
    }
}

fn kind_of_stat(st: &FileStat) -> &'static str {
    let ifmt = st.st_mode & SFlag::S_IFMT.bits();
    [
        (SFlag::S_IFREG, "regular file"),
        (SFlag::S_IFDIR, "directory"),
        (SFlag::S_IFLNK, "symlink"),
        (SFlag::S_IFIFO, "fifo"),
        (SFlag::S_IFSOCK, "socket"),
        (SFlag::S_IFCHR, "character device"),
        (SFlag::S_IFBLK, "block device"),
    ]
    .into_iter()
    .find(|(flag, _)| flag.bits() == ifmt)
    .map_or("file of unknown type", |(_, name)| name)
}

fn is_symlink(st: &FileStat) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFLNK.bits()
}

fn is_dir(st: &FileStat) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits()
}

fn refuse_unless_regular(st: &FileStat, path: &Path) -> Result<(), HostFsError> {
    let ifmt = st.st_mode & SFlag::S_IFMT.bits();
    if ifmt == SFlag::S_IFREG.bits() {
        Ok(())
    } else {
        Err(HostFsError::NotRegularFile { path: path.to_path_buf(), kind: kind_of_stat(st) })
    }
}

/// Refuses `file` unless it is a regular file, checked on the open descriptor (`fstat`), so
/// the answer is about the object that will be read, not about whatever the path names now.
/// For files opened outside a [`HostRoot`] (agent state, config); returns the metadata.
pub fn ensure_regular(file: &File, path: &Path) -> Result<Metadata, HostFsError> {
    let meta = file.metadata().map_err(|e| HostFsError::from_io(path, e))?;
    if meta.file_type().is_file() {
        Ok(meta)
    } else {
        Err(HostFsError::NotRegularFile { path: path.to_path_buf(), kind: file_kind(meta.file_type()) })
    }
}

/// Opens a file that is not under a scanned root (agent state, config, a path named on the
/// command line) the way the door does: `O_NONBLOCK` so a FIFO cannot block the open, a
/// final symlink refused when `follow_symlinks` is false, and anything but a regular file
/// refused on the open descriptor. Opening a device node runs its driver, so a path whose
/// `lstat`/`stat` already says it is not a regular file is refused before it is opened.
pub fn open_regular_file(path: &Path, follow_symlinks: bool) -> Result<File, HostFsError> {
    let pre = if follow_symlinks { std::fs::metadata(path) } else { std::fs::symlink_metadata(path) };
    let pre = pre.map_err(|e| HostFsError::from_io(path, e))?;
    if !pre.file_type().is_file() {
        return Err(HostFsError::NotRegularFile {
            path: path.to_path_buf(),
            kind: file_kind(pre.file_type()),
        });
    }
    let mut flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    if !follow_symlinks {
        flags |= OFlag::O_NOFOLLOW;
    }
    let fd =
        nix::fcntl::open(path, flags, Mode::empty()).map_err(|e| HostFsError::from_io(path, e.into()))?;
    let file = File::from(fd);
    ensure_regular(&file, path)?;
    Ok(file)
}

/// Reads a whole file from `reader`, refusing more than `limit` bytes (checked while reading,
/// so a file that grows or lies about its size cannot exhaust memory).
fn read_to_cap(file: File, path: &Path, limit: u64) -> Result<Vec<u8>, HostFsError> {
    let size_hint = file.metadata().map(|m| m.len()).unwrap_or(0);
    if size_hint > limit {
        return Err(HostFsError::TooLarge { path: path.to_path_buf(), limit });
    }
    let mut buf = Vec::with_capacity(usize::try_from(size_hint).unwrap_or(0));
    let read = file
        .take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| HostFsError::from_io(path, e))?;
    if u64::try_from(read).unwrap_or(u64::MAX) > limit {
        return Err(HostFsError::TooLarge { path: path.to_path_buf(), limit });
    }
    Ok(buf)
}

/// Reads a regular file outside any [`HostRoot`] (see [`open_regular_file`]), at most `limit`
/// bytes.
pub fn read_regular_file_capped(
    path: &Path,
    limit: u64,
    follow_symlinks: bool,
) -> Result<Vec<u8>, HostFsError> {
    let file = open_regular_file(path, follow_symlinks)?;
    read_to_cap(file, path, limit)
}

/// How paths are resolved inside the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Resolver {
    /// `openat2(RESOLVE_IN_ROOT)` when the kernel has it, else the component walk.
    #[default]
    Auto,
    /// Always the component walk (kernels before 5.6, seccomp profiles that deny `openat2`,
    /// and the tests of the walk itself).
    Walk,
}

/// The directory through which every host file is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot {
    dir: PathBuf,
    resolver: Resolver,
}

impl Default for HostRoot {
    fn default() -> Self {
        Self::live()
    }
}

impl HostRoot {
    /// The running system (`/`).
    pub fn live() -> Self {
        Self { dir: PathBuf::from("/"), resolver: Resolver::Auto }
    }

    /// A mounted filesystem, container rootfs or fixture tree. It must be an existing directory.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, HostFsError> {
        let dir = dir.into();
        let canonical = dir.canonicalize().map_err(|e| HostFsError::from_io(&dir, e))?;
        if !canonical.is_dir() {
            return Err(HostFsError::Io {
                path: dir,
                source: io::Error::new(io::ErrorKind::NotADirectory, "the root must be a directory"),
            });
        }
        Ok(Self { dir: canonical, resolver: Resolver::Auto })
    }

    /// The same root, resolving paths with the component-by-component walk even where the
    /// kernel has `openat2`. The results are the same; this exists so that tests exercise the
    /// fallback used on older kernels.
    #[doc(hidden)]
    pub fn with_component_walk(mut self) -> Self {
        self.resolver = Resolver::Walk;
        self
    }

    /// Whether this is the running system, where live-only sources (/proc, sockets, IMDS) mean
    /// something.
    pub fn is_live(&self) -> bool {
        self.dir == Path::new("/")
    }

    /// The root directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `host_path` (an absolute path as seen by the scanned system) lives on this
    /// machine, with every symlink resolved inside the root. Missing trailing components are
    /// kept as they are (opening them then fails with `NotFound`).
    ///
    /// The answer is a name, good for showing and comparing; to read, use [`Self::open`] (the
    /// tree may change between this call and any later use of the path).
    pub fn resolve(&self, host_path: impl AsRef<Path>) -> Result<PathBuf, HostFsError> {
        let host_path = host_path.as_ref();
        if self.is_live() {
            return Ok(Path::new("/").join(host_path));
        }
        self.resolve_inside(host_path, true)
    }

    /// Like [`Self::resolve`] but leaves the final component unresolved, for callers that must
    /// see a symlink itself (file integrity, `lstat`).
    pub fn resolve_parent(&self, host_path: impl AsRef<Path>) -> Result<PathBuf, HostFsError> {
        let host_path = host_path.as_ref();
        if self.is_live() {
            return Ok(Path::new("/").join(host_path));
        }
        self.resolve_inside(host_path, false)
    }

    fn resolve_inside(&self, host_path: &Path, follow_last: bool) -> Result<PathBuf, HostFsError> {
        // Pending components, reversed so pop() yields the next one.
        let mut pending: Vec<OsString> = components_of(host_path);
        pending.reverse();
        let mut resolved: Vec<OsString> = Vec::new();
        let mut hops = 0usize;
        while let Some(part) = pending.pop() {
            if part == ".." {
                resolved.pop();
                continue;
            }
            let is_last = pending.is_empty();
            let mut candidate = self.dir.clone();
            candidate.extend(&resolved);
            candidate.push(&part);
            let meta = match std::fs::symlink_metadata(&candidate) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // Nothing more to resolve: keep the rest verbatim (still clamped by `..`).
                    resolved.push(part);
                    while let Some(rest) = pending.pop() {
                        if rest == ".." {
                            resolved.pop();
                        } else {
                            resolved.push(rest);
                        }
                    }
                    break;
                }
                Err(e) => return Err(HostFsError::from_io(candidate, e)),
            };
            if meta.file_type().is_symlink() && (follow_last || !is_last) {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(HostFsError::SymlinkLoop { path: self.dir.join(host_path_rel(host_path)) });
                }
                let target =
                    std::fs::read_link(&candidate).map_err(|e| HostFsError::from_io(&candidate, e))?;
                if target.is_absolute() {
                    resolved.clear();
                }
                let mut target_parts = components_of(&target);
                target_parts.reverse();
                pending.extend(target_parts);
            } else {
                resolved.push(part);
            }
        }
        let mut out = self.dir.clone();
        out.extend(&resolved);
        Ok(out)
    }

    /// A descriptor of the root directory, from which every path is resolved.
    fn root_fd(&self) -> Result<OwnedFd, HostFsError> {
        nix::fcntl::open(&self.dir, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| HostFsError::from_io(&self.dir, e.into()))
    }

    /// Opens `comps` (relative to the root) with `flags | O_NOFOLLOW`: every symlink before the
    /// final component is followed inside the root, the final one never.
    fn open_in_root(&self, root: &OwnedFd, comps: &[OsString], flags: OFlag) -> Result<OwnedFd, Errno> {
        let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        if self.resolver == Resolver::Auto && openat2_available() {
            let rel: PathBuf = if comps.is_empty() { PathBuf::from(".") } else { comps.iter().collect() };
            // RESOLVE_IN_ROOT: the kernel treats the root descriptor as `/` for `..` and
            // absolute symlinks, atomically for the whole walk. RESOLVE_NO_MAGICLINKS: no
            // /proc/<pid>/fd style jump to an object outside the root.
            let how = OpenHow::new()
                .flags(flags)
                .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
            for _ in 0..OPENAT2_RETRIES {
                match nix::fcntl::openat2(root, &rel, how) {
                    Err(Errno::EAGAIN) => continue,
                    other => return other,
                }
            }
        }
        walk_open(root.as_fd(), comps, flags)
    }

    /// Finds the object `host_path` names, following symlinks inside the root (in the final
    /// component too when `follow_last`). Returns an `O_PATH` descriptor (which cannot read and
    /// whose opening runs no driver), its `fstat`, and the path it was finally reached by.
    fn locate(
        &self,
        root: &OwnedFd,
        host_path: &Path,
        follow_last: bool,
    ) -> Result<(OwnedFd, FileStat, Vec<OsString>), Errno> {
        let mut comps = components_of(host_path);
        for _ in 0..=MAX_SYMLINK_HOPS {
            let fd = self.open_in_root(root, &comps, OFlag::O_PATH)?;
            let st = nix::sys::stat::fstat(&fd)?;
            if !follow_last || !is_symlink(&st) {
                return Ok((fd, st, comps));
            }
            // Read from the descriptor of the link we just looked at, so the target is that
            // link's even if the name was replaced since.
            let target = PathBuf::from(nix::fcntl::readlinkat(&fd, "")?);
            // The link lives in the directory named by all but the last component (a path
            // ending in `..` names a directory, never a link). An absolute target starts again
            // from the root, a relative one from that directory; `..` is clamped either way.
            comps.pop();
            if target.is_absolute() {
                comps.clear();
            }
            comps.extend(components_of(&target));
        }
        Err(Errno::ELOOP)
    }

    /// The path shown for `comps` (after following final symlinks): under the root, `..`
    /// folded by name. For messages only.
    fn shown_path(&self, comps: &[OsString]) -> PathBuf {
        let mut parts: Vec<&OsString> = Vec::new();
        for c in comps {
            if c == ".." {
                parts.pop();
            } else {
                parts.push(c);
            }
        }
        let mut out = self.dir.clone();
        out.extend(parts);
        out
    }

    /// How `host_path` is named in errors: the real path on this machine, unresolved.
    fn error_path(&self, host_path: &Path) -> PathBuf {
        if self.is_live() { Path::new("/").join(host_path) } else { self.dir.join(host_path_rel(host_path)) }
    }

    /// Metadata of `host_path` without following a final symlink.
    pub fn symlink_metadata(&self, host_path: impl AsRef<Path>) -> Result<Metadata, HostFsError> {
        let host_path = host_path.as_ref();
        let shown = self.error_path(host_path);
        let root = self.root_fd()?;
        let (fd, _, _) =
            self.locate(&root, host_path, false).map_err(|e| HostFsError::from_io(&shown, e.into()))?;
        File::from(fd).metadata().map_err(|e| HostFsError::from_io(shown, e))
    }

    /// Opens `host_path` for reading: the door every host file goes through.
    ///
    /// The path is resolved from a descriptor of the root (symlinks followed inside it, the
    /// final component opened with `O_NOFOLLOW`), and anything but a regular file is refused
    /// with [`HostFsError::NotRegularFile`] without being read. The returned path names the
    /// file for messages.
    pub fn open(&self, host_path: impl AsRef<Path>) -> Result<(File, PathBuf), HostFsError> {
        let host_path = host_path.as_ref();
        let shown = self.error_path(host_path);
        let root = self.root_fd()?;
        let (probe, st, comps) =
            self.locate(&root, host_path, true).map_err(|e| HostFsError::from_io(&shown, e.into()))?;
        drop(probe);
        let real = self.shown_path(&comps);
        // Security: decided before opening for reading, because opening a device node runs its
        // driver (a tape rewinds, a watchdog arms) even if we never read from it.
        refuse_unless_regular(&st, &real)?;
        // O_NONBLOCK: if a FIFO was swapped in since the check, the open returns at once
        // instead of waiting for a writer (and the check below refuses it). On a regular file
        // the flag changes nothing.
        let fd = self
            .open_in_root(&root, &comps, OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY)
            .map_err(|e| HostFsError::from_io(&real, e.into()))?;
        let st = nix::sys::stat::fstat(&fd).map_err(|e| HostFsError::from_io(&real, e.into()))?;
        // The check that counts: on the descriptor we are about to read from.
        refuse_unless_regular(&st, &real)?;
        Ok((File::from(fd), real))
    }

    /// Reads a whole file, refusing files larger than `limit` bytes (checked while reading, so
    /// a file that grows or lies about its size cannot exhaust memory).
    pub fn read_capped(&self, host_path: impl AsRef<Path>, limit: u64) -> Result<Vec<u8>, HostFsError> {
        let (file, real) = self.open(host_path)?;
        read_to_cap(file, &real, limit)
    }

    /// Reads a small text file; invalid UTF-8 is replaced rather than rejected.
    pub fn read_string_capped(&self, host_path: impl AsRef<Path>, limit: u64) -> Result<String, HostFsError> {
        let bytes = self.read_capped(host_path, limit)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// Whether `host_path` exists (after resolution, following symlinks inside the root). Any
    /// type counts (a socket too); nothing is opened for reading.
    pub fn exists(&self, host_path: impl AsRef<Path>) -> bool {
        let Ok(root) = self.root_fd() else {
            return false;
        };
        self.locate(&root, host_path.as_ref(), true).is_ok()
    }

    /// `problem` about the file at `host_path`, which the scanned system names so (and so may
    /// the message): a report's problems name files on the machine that ran the scan, so its
    /// `path` becomes [`HostRoot::display`]'s, and the message's first mention of `host_path`
    /// too, or a person would read two names for one file. The same problem on the live root.
    pub fn locate_problem(&self, mut problem: crate::Problem, host_path: &str) -> crate::Problem {
        let here = self.display(host_path);
        if here != host_path {
            problem.message = problem.message.replacen(host_path, &here, 1);
        }
        problem.with_path(here)
    }

    /// How `host_path` is shown to a person: the real path on this machine.
    pub fn display(&self, host_path: impl AsRef<Path>) -> String {
        let host_path = host_path.as_ref();
        if self.is_live() {
            host_path.display().to_string()
        } else {
            self.dir.join(host_path_rel(host_path)).display().to_string()
        }
    }
}

/// Whether this kernel (and seccomp profile) lets us call `openat2` with `RESOLVE_IN_ROOT`;
/// asked once per process.
fn openat2_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        nix::fcntl::openat2(nix::fcntl::AT_FDCWD, "/", how).is_ok()
    })
}

/// The fallback resolver: one component at a time from the root descriptor, each directory
/// opened `O_PATH | O_NOFOLLOW` relative to the previous one, so the kernel never follows a
/// symlink by itself. A symlink met on the way is read from its own descriptor and its target
/// walked again inside the root (absolute: from the root; `..`: back along the chain of
/// directories we came through, never above the root, and never through the parent the kernel
/// would give if a directory was moved meanwhile). The final component is opened with `flags`
/// (which include `O_NOFOLLOW`): a symlink there is the caller's to follow.
fn walk_open(root: BorrowedFd<'_>, comps: &[OsString], flags: OFlag) -> Result<OwnedFd, Errno> {
    let mut chain: Vec<OwnedFd> = Vec::new();
    let mut pending: Vec<OsString> = comps.iter().rev().cloned().collect();
    let mut hops = 0usize;
    loop {
        let cur = chain.last().map_or(root, |fd| fd.as_fd());
        let Some(part) = pending.pop() else {
            // The path named the root or ended in `..`: open the directory reached.
            return nix::fcntl::openat(cur, ".", flags, Mode::empty());
        };
        if part == ".." {
            chain.pop();
            continue;
        }
        if pending.is_empty() {
            return nix::fcntl::openat(cur, part.as_os_str(), flags, Mode::empty());
        }
        let fd = nix::fcntl::openat(
            cur,
            part.as_os_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let st = nix::sys::stat::fstat(&fd)?;
        if is_dir(&st) {
            chain.push(fd);
        } else if is_symlink(&st) {
            hops += 1;
            if hops > MAX_SYMLINK_HOPS {
                return Err(Errno::ELOOP);
            }
            let target = PathBuf::from(nix::fcntl::readlinkat(&fd, "")?);
            if target.is_absolute() {
                chain.clear();
            }
            pending.extend(components_of(&target).into_iter().rev());
        } else {
            return Err(Errno::ENOTDIR);
        }
    }
}

fn host_path_rel(p: &Path) -> PathBuf {
    p.components().filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir)).collect()
}

fn components_of(p: &Path) -> Vec<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::within;
    use std::os::unix::fs::symlink;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    #[test]
    fn a_problem_names_the_file_on_this_machine_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path()).unwrap();
        let p = crate::Problem::new("malformed", "/etc/x: bad; see /etc/x again");
        let located = root.locate_problem(p.clone(), "/etc/x");
        let here = format!("{}/etc/x", dir.path().display());
        assert_eq!(located.path.as_deref(), Some(here.as_str()));
        assert_eq!(located.message, format!("{here}: bad; see /etc/x again"));
        assert_eq!(located.to_string(), located.message);
        // The live root: nothing to rewrite.
        let live = HostRoot::live().locate_problem(p, "/etc/x");
        assert_eq!(
            (live.path.as_deref(), live.message.as_str()),
            (Some("/etc/x"), "/etc/x: bad; see /etc/x again")
        );
    }

    fn tree() -> (tempfile::TempDir, HostRoot) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::create_dir_all(dir.path().join("usr/lib")).unwrap();
        std::fs::write(dir.path().join("usr/lib/os-release"), "ID=inside\n").unwrap();
        let root = HostRoot::new(dir.path()).unwrap();
        (dir, root)
    }

    /// The same root through both resolvers: `openat2` (where the kernel has it) and the
    /// component walk used on older kernels.
    fn both(root: &HostRoot) -> [HostRoot; 2] {
        [root.clone(), root.clone().with_component_walk()]
    }

    #[test]
    fn a_reason_is_the_message_without_the_path_and_without_the_agent_s_advice() {
        let path = PathBuf::from("/x/ca.pem");
        let errors = [
            HostFsError::NotFound { path: path.clone() },
            HostFsError::TooLarge { path: path.clone(), limit: 9 },
            HostFsError::SymlinkLoop { path: path.clone() },
            HostFsError::NotRegularFile { path: path.clone(), kind: "directory" },
            HostFsError::Io { path: path.clone(), source: io::Error::other("disk on fire") },
        ];
        for e in errors {
            assert_eq!(e.to_string(), format!("/x/ca.pem: {}", e.reason()));
        }
        let denied = HostFsError::PermissionDenied { path };
        assert_eq!(denied.reason(), "permission denied");
        assert_eq!(denied.to_string(), format!("/x/ca.pem: permission denied ({READ_PERMISSION_ADVICE})"));
    }

    #[test]
    fn relative_symlinks_resolve_inside_the_root() {
        let (dir, root) = tree();
        symlink("../usr/lib/os-release", dir.path().join("etc/os-release")).unwrap();
        for root in both(&root) {
            assert_eq!(root.read_string_capped("/etc/os-release", 1024).unwrap(), "ID=inside\n");
        }
    }

    #[test]
    fn absolute_symlinks_are_reinterpreted_under_the_root() {
        let (dir, root) = tree();
        // On the scanning host /usr/lib/os-release exists too; we must read the root's copy.
        symlink("/usr/lib/os-release", dir.path().join("etc/os-release")).unwrap();
        for root in both(&root) {
            assert_eq!(root.read_string_capped("/etc/os-release", 1024).unwrap(), "ID=inside\n");
        }
    }

    #[test]
    fn absolute_symlinked_directories_are_reinterpreted_under_the_root() {
        let (dir, root) = tree();
        // `etc` itself points at an absolute directory: on the scanning host /usr/lib holds
        // its own os-release, which must not be read.
        std::fs::remove_dir(dir.path().join("etc")).unwrap();
        symlink("/usr/lib", dir.path().join("etc")).unwrap();
        for root in both(&root) {
            assert_eq!(root.read_string_capped("/etc/os-release", 1024).unwrap(), "ID=inside\n");
        }
    }

    #[test]
    fn dotdot_cannot_climb_out_of_the_root() {
        let (dir, root) = tree();
        symlink("../../../../../../etc/hostname", dir.path().join("etc/escape")).unwrap();
        let resolved = root.resolve("/etc/escape").unwrap();
        assert!(resolved.starts_with(root.dir()), "{}", resolved.display());
        for root in both(&root) {
            assert!(matches!(root.read_capped("/etc/escape", 10), Err(HostFsError::NotFound { .. })));
            assert!(matches!(root.read_capped("/../../etc/passwd", 10), Err(HostFsError::NotFound { .. })));
        }
        let direct = root.resolve("/../../etc/passwd").unwrap();
        assert_eq!(direct, root.dir().join("etc/passwd"));
    }

    #[test]
    fn symlink_loops_are_reported_not_followed_forever() {
        let (dir, root) = tree();
        symlink("b", dir.path().join("etc/a")).unwrap();
        symlink("a", dir.path().join("etc/b")).unwrap();
        symlink("loopdir", dir.path().join("etc/loopdir")).unwrap();
        assert!(matches!(root.resolve("/etc/a"), Err(HostFsError::SymlinkLoop { .. })));
        for root in both(&root) {
            let err = root.read_capped("/etc/a", 10).unwrap_err();
            assert_eq!(err.code(), "symlink_loop", "{err}");
            let err = root.read_capped("/etc/loopdir/x", 10).unwrap_err();
            assert_eq!(err.code(), "symlink_loop", "{err}");
            assert!(!root.exists("/etc/a"));
        }
    }

    #[test]
    fn size_cap_is_enforced() {
        let (dir, root) = tree();
        std::fs::write(dir.path().join("etc/big"), vec![b'x'; 100]).unwrap();
        for root in both(&root) {
            let err = root.read_capped("/etc/big", 99).unwrap_err();
            assert!(matches!(err, HostFsError::TooLarge { limit: 99, .. }), "{err}");
            assert_eq!(root.read_capped("/etc/big", 100).unwrap().len(), 100);
        }
    }

    #[test]
    fn missing_file_error_names_the_real_path() {
        let (_dir, root) = tree();
        for root in both(&root) {
            let err = root.read_capped("/etc/nope", 10).unwrap_err();
            assert_eq!(err.code(), "not_found");
            assert!(err.to_string().contains(&root.dir().join("etc/nope").display().to_string()), "{err}");
        }
    }

    #[test]
    fn live_root_is_identity() {
        let live = HostRoot::live();
        assert!(live.is_live());
        assert_eq!(live.resolve("/etc/hostname").unwrap(), Path::new("/etc/hostname"));
    }

    #[test]
    fn open_names_the_file_reached_through_a_final_symlink() {
        let (dir, root) = tree();
        symlink("../usr/lib/os-release", dir.path().join("etc/os-release")).unwrap();
        for root in both(&root) {
            let (_, real) = root.open("/etc/os-release").unwrap();
            assert_eq!(real, root.dir().join("usr/lib/os-release"));
        }
    }

    #[test]
    fn live_root_follows_a_final_symlink_like_etc_os_release() {
        // /etc/os-release -> ../usr/lib/os-release on most distributions: the door opens the
        // final component with O_NOFOLLOW, so it must follow such a link itself.
        let (dir, _) = tree();
        symlink("../usr/lib/os-release", dir.path().join("etc/os-release")).unwrap();
        let canonical = dir.path().canonicalize().unwrap();
        let host_path = canonical.join("etc/os-release");
        for root in both(&HostRoot::live()) {
            assert_eq!(root.read_string_capped(&host_path, 1024).unwrap(), "ID=inside\n");
            assert!(root.exists(&host_path));
        }
        // And the real one, wherever this machine keeps it.
        if Path::new("/etc/os-release").exists() {
            for root in both(&HostRoot::live()) {
                assert!(!root.read_string_capped("/etc/os-release", 1 << 20).unwrap().is_empty());
            }
        }
    }

    #[test]
    fn fifo_in_place_of_os_release_is_refused_fast_not_read() {
        let (dir, root) = tree();
        nix::unistd::mkfifo(&dir.path().join("etc/os-release"), Mode::from_bits_truncate(0o644)).unwrap();
        // A symlink to the FIFO is refused too, as is the FIFO on the live root.
        symlink("os-release", dir.path().join("etc/link-to-fifo")).unwrap();
        let live_path = dir.path().canonicalize().unwrap().join("etc/os-release");
        let mut cases: Vec<(HostRoot, PathBuf)> = Vec::new();
        for r in both(&root) {
            cases.push((r.clone(), PathBuf::from("/etc/os-release")));
            cases.push((r, PathBuf::from("/etc/link-to-fifo")));
        }
        for r in both(&HostRoot::live()) {
            cases.push((r, live_path.clone()));
        }
        for (root, path) in cases {
            let err =
                within(std::time::Duration::from_secs(10), "reading a FIFO through the root", move || {
                    root.read_capped(&path, 1 << 20).unwrap_err()
                });
            assert!(matches!(err, HostFsError::NotRegularFile { kind: "fifo", .. }), "{err}");
            assert_eq!(err.code(), "not_regular_file");
            let msg = err.to_problem().message;
            assert!(msg.contains("os-release") && msg.contains("fifo"), "{msg}");
        }
    }

    #[test]
    fn char_device_node_in_place_of_a_file_is_refused_without_reading() {
        if !nix::unistd::geteuid().is_root() {
            crate::testing::skip_or_fail(
                "char_device_node_in_place_of_a_file_is_refused_without_reading",
                "creating a device node needs root",
            );
            return;
        }
        let (dir, root) = tree();
        // The same device as /dev/zero: reading it would never end on its own.
        let node = dir.path().join("etc/machine-id");
        nix::sys::stat::mknod(
            &node,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o644),
            nix::sys::stat::makedev(1, 5),
        )
        .unwrap();
        for root in both(&root) {
            let err = within(
                std::time::Duration::from_secs(10),
                "reading a device node through the root",
                move || root.read_capped("/etc/machine-id", u64::MAX).unwrap_err(),
            );
            assert!(matches!(err, HostFsError::NotRegularFile { kind: "character device", .. }), "{err}");
            assert!(err.to_string().contains("machine-id"), "{err}");
        }
    }

    #[test]
    fn directories_and_sockets_are_refused_but_exist() {
        let (dir, root) = tree();
        let _listener = std::os::unix::net::UnixListener::bind(dir.path().join("etc/sock")).unwrap();
        for root in both(&root) {
            let err = root.read_capped("/etc", 10).unwrap_err();
            assert!(matches!(err, HostFsError::NotRegularFile { kind: "directory", .. }), "{err}");
            let err = root.read_capped("/etc/sock", 10).unwrap_err();
            assert!(matches!(err, HostFsError::NotRegularFile { kind: "socket", .. }), "{err}");
            assert!(
                root.exists("/etc/sock"),
                "a socket exists (the cloud collector looks for runtime sockets)"
            );
            assert!(root.exists("/"));
            assert!(!root.exists("/etc/nope"));
        }
    }

    #[test]
    fn symlink_metadata_sees_the_link_and_resolves_its_parents() {
        let (dir, root) = tree();
        symlink("../usr/lib/os-release", dir.path().join("etc/os-release")).unwrap();
        symlink("/usr", dir.path().join("u")).unwrap();
        for root in both(&root) {
            assert!(root.symlink_metadata("/etc/os-release").unwrap().file_type().is_symlink());
            assert!(root.symlink_metadata("/u/lib/os-release").unwrap().is_file());
            assert_eq!(root.symlink_metadata("/etc/nope").unwrap_err().code(), "not_found");
        }
    }

    #[test]
    fn open_regular_file_refuses_a_fifo_outside_any_root() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("state.json");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        let err = within(std::time::Duration::from_secs(10), "opening a FIFO as a state file", move || {
            read_regular_file_capped(&fifo, 1024, true).unwrap_err()
        });
        assert!(matches!(err, HostFsError::NotRegularFile { kind: "fifo", .. }), "{err}");
        let file = dir.path().join("ok");
        std::fs::write(&file, "x").unwrap();
        assert_eq!(read_regular_file_capped(&file, 1024, false).unwrap(), b"x");
        symlink(&file, dir.path().join("link")).unwrap();
        assert_eq!(
            read_regular_file_capped(&dir.path().join("link"), 1024, false).unwrap_err().code(),
            "not_regular_file"
        );
        assert_eq!(read_regular_file_capped(&dir.path().join("link"), 1024, true).unwrap(), b"x");
    }

    /// One thread keeps exchanging the directory `etc` with a symlink to a directory outside
    /// the root holding another os-release, while reads go through the root. Resolving by
    /// name (check the components, then open the path) read the outside file now and then;
    /// resolving from descriptors never may.
    fn swapped_directory_never_leads_outside(root: HostRoot, dir: &Path, reads: usize) {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("os-release"), "ID=outside\n").unwrap();
        std::fs::write(dir.join("etc/os-release"), "ID=inside\n").unwrap();
        symlink(outside.path(), dir.join("etc.swap")).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicUsize::new(0));
        let swapper = {
            let (stop, swaps) = (Arc::clone(&stop), Arc::clone(&swaps));
            let (a, b) = (dir.join("etc"), dir.join("etc.swap"));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    nix::fcntl::renameat2(
                        nix::fcntl::AT_FDCWD,
                        &a,
                        nix::fcntl::AT_FDCWD,
                        &b,
                        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                    )
                    .unwrap();
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let (inside, outside_reads, naive_escapes) =
            within(std::time::Duration::from_secs(120), "racing reads", move || {
                let (mut inside, mut outside_reads, mut naive_escapes) = (0usize, 0usize, 0usize);
                for _ in 0..reads {
                    match root.read_string_capped("/etc/os-release", 1024) {
                        Ok(s) if s.contains("outside") => outside_reads += 1,
                        Ok(_) => inside += 1,
                        Err(_) => {}
                    }
                    // What the old door did, for comparison: resolve by name, then open the path.
                    if let Ok(p) = root.resolve("/etc/os-release")
                        && std::fs::read_to_string(&p).is_ok_and(|s| s.contains("outside"))
                    {
                        naive_escapes += 1;
                    }
                }
                (inside, outside_reads, naive_escapes)
            });
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();
        eprintln!(
            "{reads} reads: {inside} inside, {outside_reads} outside; resolve-then-open by name escaped \
             {naive_escapes} times; {} swaps",
            swaps.load(Ordering::Relaxed)
        );
        assert_eq!(outside_reads, 0, "read the os-release outside the root");
        assert!(swaps.load(Ordering::Relaxed) > 0, "the swapper never ran");
    }

    #[test]
    fn directory_swapped_for_outside_symlink_never_reads_outside_with_openat2() {
        let (dir, root) = tree();
        if !openat2_available() {
            eprintln!("openat2 is not available here: this run exercises the component walk only");
        }
        swapped_directory_never_leads_outside(root, dir.path(), 3000);
    }

    #[test]
    fn directory_swapped_for_outside_symlink_never_reads_outside_with_component_walk() {
        let (dir, root) = tree();
        swapped_directory_never_leads_outside(root.with_component_walk(), dir.path(), 3000);
    }
}
