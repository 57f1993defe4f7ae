//! The bounded directory walk shared by the three ecosystems.
//!
//! One walk per root (after glob expansion and merging roots that are the same directory).
//! Bounds and defences:
//! - Memory stays proportional to the depth, not to the tree: the walk streams. It keeps one
//!   open directory per level (`max_depth`, itself at most [`crate::config::MAX_DEPTH_LIMIT`])
//!   and reads entries one at a time from it; no list of a directory's entries, no queue of
//!   paths still to visit, no set of every directory seen (issue 9, item 5: a user's tree of a
//!   million entries must not become a million paths in our memory). What is recorded is
//!   bounded in [`crate::sink`].
//! - `max_depth` levels below each root, `max_entries` entries over the whole scan; where either
//!   stops the walk, a problem says where and the report is marked truncated.
//! - Directories are entered with `openat(parent, name, O_DIRECTORY | O_NOFOLLOW)`, relative to
//!   the descriptor of the directory just listed, so a directory swapped for a symlink after it
//!   was listed is refused, not followed out of the tree.
//! - Symlinks are never followed. A link to somewhere under the root being walked leads to what
//!   the walk reaches anyway by its real path (and is counted as already seen); a link anywhere
//!   else (`/`, another tree, outside a `--root` snapshot) is not ours to walk.
//! - Loops (bind mounts of an ancestor) end: a directory that is one of its own ancestors, by
//!   `(st_dev, st_ino)`, is not entered again. A root met inside another root is left to its own
//!   walk for the ecosystems it is a root for, so overlapping roots are walked once.
//! - Roots owned by root are walked before the others (home directories): a user who fills
//!   their tree can use up the scan-wide bounds only after the system trees are inventoried.
//! - Only regular files are handed to the ecosystems to read; a FIFO, device node or socket
//!   where a package file is expected is reported by name and type, never opened (the type
//!   comes from the directory entry, or `fstatat` without following when the filesystem does
//!   not give it). Files are then read through [`HostRoot::open`], which checks again on the
//!   descriptor.
//! - Filesystem types: when a directory's `st_dev` differs from its parent's we are at a mount
//!   point, and `fstatfs(2)` on it gives the filesystem magic. Pseudo filesystems (proc, sysfs,
//!   cgroup, debugfs...) are always skipped, network ones (NFS, SMB/CIFS, AFS, Ceph, 9p,
//!   FUSE) unless configured otherwise. `fstatfs` runs once per device, not per directory; it
//!   needs no /proc, so it also works in containers without /proc/self/mountinfo.

use crate::config::Config;
use crate::model::WalkStats;
use crate::sink::Sink;
use guestward_core::{HostFsError, HostRoot, Problem};
use nix::dir::{Dir, OwningIter, Type};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use std::collections::HashMap;
use std::ffi::{CStr, OsStr};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Ecosystem bits: which visitors care about a subtree.
pub(crate) type Mask = u8;
/// Python.
pub(crate) const PY: Mask = 1;
/// Java.
pub(crate) const JAVA: Mask = 2;
/// Node.js.
pub(crate) const NODE: Mask = 4;

/// Roots one glob pattern may expand to (`/home/*/.local` on a host with very many users, or
/// a hostile snapshot with a million entries in `/home`).
const MAX_EXPANDED_ROOTS: usize = 10_000;

/// What a non-directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// A regular file: the only kind ever read.
    Regular,
    /// Anything else (FIFO, socket, device node), named as the door names it.
    Other(&'static str),
}

/// What a walk reports to the ecosystem code.
pub(crate) trait Visitor {
    /// A directory (already known not to be excluded). Return `false` to not descend into it
    /// (e.g. a `*.dist-info` directory the visitor has fully handled).
    fn dir(&mut self, walker: &mut Walker<'_>, real: &Path, name: &OsStr, mask: Mask) -> bool;
    /// Anything that is neither a directory nor a symlink. Only [`FileKind::Regular`] files may
    /// be read; for the others the visitor may report a problem if the name is one it reads.
    fn file(&mut self, walker: &mut Walker<'_>, real: &Path, name: &OsStr, mask: Mask, kind: FileKind);
}

/// Filesystems never walked: their files are not installed software.
const PSEUDO_FS: &[(i64, &str)] = &[
    (0x9fa0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x2724_4e54, "cgroup"),
    (0x6367_7270, "cgroup2"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x7363_6673, "securityfs"),
    (0xcafe_4a11, "bpf"),
    (0x1cd1, "devpts"),
    (0xf97c_ff8c, "selinuxfs"),
    (0x6e73_6673, "nsfs"),
    (0x6165_6c6f, "pstore"),
    (0x0187, "autofs"),
];

/// Network (and FUSE, which on EC2 is mostly s3fs, mountpoint-s3, sshfs) filesystems.
const NETWORK_FS: &[(i64, &str)] = &[
    (0x6969, "nfs"),
    (0x517b, "smb"),
    (0xff53_4d42, "cifs"),
    (0xfe53_4d42, "smb2"),
    (0x5346_414f, "afs"),
    (0x6b41_4653, "afs"),
    (0x00c3_6400, "ceph"),
    (0x0102_1997, "9p"),
    (0x7366_636a, "coda"),
    (0x564c, "ncp"),
    (0x0bd0_0bd0, "lustre"),
    (0x0116_1970, "gfs2"),
    (0x6573_5546, "fuse"),
];

/// A directory identity: `(st_dev, st_ino)`.
type DirId = (u64, u64);

/// A root to walk, after glob expansion and resolution.
pub(crate) struct PlannedRoot {
    /// The real directory (inside the [`HostRoot`]).
    real: PathBuf,
    id: DirId,
    owner_uid: u32,
    mask: Mask,
}

/// One open directory of the walk.
struct Frame {
    /// For `openat`/`fstatat` of the entries.
    fd: OwnedFd,
    /// The listing, on a duplicate of `fd` (the stream owns its descriptor).
    entries: OwningIter,
    path: PathBuf,
    depth: u32,
    mask: Mask,
    id: DirId,
}

/// A listing of the directory open on `fd`, on a duplicate of it.
fn listing(fd: &OwnedFd) -> std::io::Result<OwningIter> {
    let dup = fd.try_clone()?;
    Ok(Dir::from_fd(dup).map_err(errno_io)?.into_iter())
}

/// Directory flags: never a symlink, never a FIFO (O_DIRECTORY fails on anything but a
/// directory), never inherited by a child process.
fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK
}

fn id_of(st: &FileStat) -> DirId {
    // st_dev/st_ino are u64 on Linux; the conversion only widens where they are narrower.
    #[allow(clippy::useless_conversion)]
    (u64::from(st.st_dev), u64::from(st.st_ino))
}

/// The type of a stat'ed object, for entries whose directory entry did not say.
fn type_of_stat(st: &FileStat) -> Type {
    let ifmt = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    match ifmt {
        SFlag::S_IFDIR => Type::Directory,
        SFlag::S_IFREG => Type::File,
        SFlag::S_IFLNK => Type::Symlink,
        SFlag::S_IFIFO => Type::Fifo,
        SFlag::S_IFSOCK => Type::Socket,
        SFlag::S_IFCHR => Type::CharacterDevice,
        _ => Type::BlockDevice,
    }
}

fn kind_name(t: Type) -> &'static str {
    match t {
        Type::Fifo => "fifo",
        Type::CharacterDevice => "character device",
        Type::BlockDevice => "block device",
        Type::Socket => "socket",
        Type::Directory => "directory",
        Type::Symlink => "symlink",
        Type::File => "regular file",
    }
}

fn errno_io(e: Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e as i32)
}

/// The walk's state: bounds, counters, results, and the roots of this scan.
pub(crate) struct Walker<'a> {
    pub root: &'a HostRoot,
    pub config: &'a Config,
    pub stats: WalkStats,
    /// Results and their bounds.
    pub out: Sink,
    fs_verdict: HashMap<u64, Option<&'static str>>,
    excluded: Vec<PathBuf>,
    /// Every root of the scan, so a root met inside another is left to its own walk.
    roots: Vec<(DirId, Mask)>,
}

impl<'a> Walker<'a> {
    pub fn new(root: &'a HostRoot, config: &'a Config) -> Self {
        Self {
            root,
            config,
            stats: WalkStats::default(),
            out: Sink::new(
                config.max_packages_per_root,
                config.max_packages_per_scan,
                config.max_inflated_bytes_per_scan,
            ),
            fs_verdict: HashMap::new(),
            excluded: config.exclude.iter().map(|p| p.as_path().to_path_buf()).collect(),
            roots: Vec::new(),
        }
    }

    /// The host path (as the scanned system sees it) of a real path under the root.
    pub fn host_of(&self, real: &Path) -> PathBuf {
        match real.strip_prefix(self.root.dir()) {
            Ok(rel) => Path::new("/").join(rel),
            // Unreachable for paths this walker produced; show the real path rather than lie.
            Err(_) => real.to_path_buf(),
        }
    }

    /// How a host path is shown in the report (`/opt/app.jar`), for the live root and for
    /// `--root` scans alike: the scanned system's own path.
    pub fn shown(&self, real: &Path) -> String {
        self.host_of(real).display().to_string()
    }

    /// Records a problem about `real`.
    pub fn problem(&mut self, code: &str, message: String, real: &Path) {
        let p = Problem::new(code, message).with_path(self.shown(real));
        self.out.problem(p);
    }

    /// Records a host-file error, named by its path in the scanned system.
    pub fn fs_problem(&mut self, err: &HostFsError, real: &Path) {
        let mut p = err.to_problem();
        p.path = Some(self.shown(real));
        self.out.problem(p);
    }

    /// A file we would have read is not a regular file: reported, never opened.
    pub fn not_regular(&mut self, real: &Path, kind: &'static str) {
        let err = HostFsError::NotRegularFile { path: self.host_of(real), kind };
        self.fs_problem(&err, real);
    }

    /// Expands `*` in the components of `pattern` against the root; returns host paths that exist.
    fn expand(&mut self, pattern: &Path) -> Vec<PathBuf> {
        let mut current: Vec<PathBuf> = vec![PathBuf::from("/")];
        for component in pattern.components() {
            let Component::Normal(part) = component else {
                continue;
            };
            let part = part.to_string_lossy();
            let mut next = Vec::new();
            for base in &current {
                if !part.contains('*') {
                    next.push(base.join(part.as_ref()));
                    continue;
                }
                let Ok(real) = self.root.resolve(base) else {
                    continue;
                };
                let Ok(entries) = std::fs::read_dir(&real) else {
                    continue;
                };
                let mut names: Vec<String> = Vec::new();
                // Bounded like the walk itself: entries read count against max_entries, and
                // at most MAX_EXPANDED_ROOTS matches are kept.
                for entry in entries {
                    self.stats.entries += 1;
                    if self.stats.entries > self.config.max_entries || names.len() >= MAX_EXPANDED_ROOTS {
                        self.out.truncation(
                            Problem::new(
                                "limit_reached",
                                format!(
                                    "{}: expanding `{}` stopped after {} roots or packages.language.max_entries ({}) entries; the language inventory is incomplete",
                                    self.shown(&real),
                                    pattern.display(),
                                    MAX_EXPANDED_ROOTS,
                                    self.config.max_entries
                                ),
                            )
                            .with_path(self.shown(&real)),
                        );
                        break;
                    }
                    let Ok(entry) = entry else { continue };
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if wildcard_match(&part, &name) {
                        names.push(name);
                    }
                }
                names.sort_unstable();
                next.extend(names.into_iter().map(|n| base.join(n)));
            }
            current = next;
        }
        current
    }

    /// Resolves a host path to the real directory it names, inside the root.
    fn canonical(&self, host: &Path) -> Result<PathBuf, HostFsError> {
        if self.root.is_live() {
            std::fs::canonicalize(host).map_err(|e| HostFsError::from_io(host, e))
        } else {
            self.root.resolve(host)
        }
    }

    fn is_excluded(&self, host: &Path) -> bool {
        self.excluded.iter().any(|e| host.starts_with(e))
    }

    /// Why the filesystem holding `dir` (device `dev`) is skipped, if it is.
    fn filesystem_skip(&mut self, dir: &OwnedFd, dev: u64) -> Option<&'static str> {
        if let Some(verdict) = self.fs_verdict.get(&dev) {
            return *verdict;
        }
        let verdict = match nix::sys::statfs::fstatfs(dir) {
            Ok(st) => {
                // The field is i64 on glibc x86_64 and aarch64 but narrower or unsigned on other libcs.
                #[allow(clippy::useless_conversion)]
                let magic = i64::try_from(st.filesystem_type().0).unwrap_or(-1);
                let find =
                    |list: &[(i64, &'static str)]| list.iter().find(|(m, _)| *m == magic).map(|(_, n)| *n);
                find(PSEUDO_FS)
                    .or_else(|| if self.config.skip_network_filesystems { find(NETWORK_FS) } else { None })
            }
            // fstatfs failing on a directory we could open is unusual; walking it is the safe
            // default for an inventory (missing software is worse than a slow walk).
            Err(_) => None,
        };
        self.fs_verdict.insert(dev, verdict);
        verdict
    }

    /// The configured roots: globs expanded, resolved inside the root, roots that are the same
    /// directory merged (`/opt` listed for several ecosystems is walked once), and ordered so
    /// that directories owned by root come first (stable otherwise: config order).
    pub fn plan(&mut self) -> Vec<PlannedRoot> {
        let config = self.config;
        let mut planned: Vec<PlannedRoot> = Vec::new();
        for (list, mask) in
            [(&config.python_roots, PY), (&config.java_roots, JAVA), (&config.node_roots, NODE)]
        {
            for pattern in list {
                for host in self.expand(pattern.as_path()) {
                    if self.is_excluded(&host) {
                        continue;
                    }
                    let real = match self.canonical(&host) {
                        Ok(p) => p,
                        Err(HostFsError::NotFound { .. }) => continue,
                        Err(e) => {
                            let mut p = e.to_problem();
                            p.path = Some(host.display().to_string());
                            self.out.problem(p);
                            continue;
                        }
                    };
                    let meta = match std::fs::metadata(&real) {
                        Ok(m) if m.is_dir() => m,
                        Ok(_) => continue,
                        Err(e) => {
                            let err = HostFsError::from_io(&real, e);
                            if !matches!(err, HostFsError::NotFound { .. }) {
                                self.fs_problem(&err, &real);
                            }
                            continue;
                        }
                    };
                    if self.is_excluded(&self.host_of(&real)) {
                        self.stats.mounts_skipped += 1;
                        continue;
                    }
                    let id = (meta.dev(), meta.ino());
                    match planned.iter_mut().find(|r| r.id == id) {
                        Some(r) => r.mask |= mask,
                        None => planned.push(PlannedRoot { real, id, owner_uid: meta.uid(), mask }),
                    }
                }
            }
        }
        planned.sort_by_key(|r| r.owner_uid != 0);
        self.roots = planned.iter().map(|r| (r.id, r.mask)).collect();
        planned
    }

    /// Ecosystem bits another root of this scan walks itself from `id` (0 if `id` is no root
    /// or the one being walked).
    fn claimed_by_other_root(&self, id: DirId, walking: DirId) -> Mask {
        if id == walking {
            return 0;
        }
        self.roots.iter().filter(|(r, _)| *r == id).fold(0, |acc, (_, m)| acc | m)
    }

    /// Walks one planned root for its ecosystems.
    pub fn walk(&mut self, plan: &PlannedRoot, visitor: &mut dyn Visitor) {
        if self.out.scan_halted() {
            return;
        }
        let start = &plan.real;
        let fd = match nix::fcntl::open(start, dir_flags(), Mode::empty()) {
            Ok(fd) => fd,
            Err(e) => {
                let err = HostFsError::from_io(start, errno_io(e));
                if !matches!(err, HostFsError::NotFound { .. }) {
                    self.fs_problem(&err, start);
                }
                return;
            }
        };
        let id = match nix::sys::stat::fstat(&fd) {
            Ok(st) => id_of(&st),
            Err(e) => return self.fs_problem(&HostFsError::from_io(start, errno_io(e)), start),
        };
        if self.filesystem_skip(&fd, id.0).is_some() {
            self.stats.mounts_skipped += 1;
            return;
        }
        let entries = match listing(&fd) {
            Ok(l) => l,
            Err(e) => return self.fs_problem(&HostFsError::from_io(start, e), start),
        };
        let frame = Frame { fd, entries, path: start.clone(), depth: 0, mask: plan.mask, id };
        self.stats.roots_walked += 1;
        self.stats.directories += 1;
        self.out.begin_root(self.shown(start));
        // Where max_depth ran out: the first directory not entered, and how many in all.
        let mut depth_cut: Option<(PathBuf, u64)> = None;
        let mut stack = vec![frame];
        loop {
            if self.out.halted() {
                break;
            }
            let next = match stack.last_mut() {
                Some(frame) => frame.entries.next(),
                None => break,
            };
            let Some(frame) = stack.last() else { break };
            let entry = match next {
                None => {
                    stack.pop();
                    continue;
                }
                Some(Err(e)) => {
                    let path = frame.path.clone();
                    self.fs_problem(&HostFsError::from_io(&path, errno_io(e)), &path);
                    stack.pop();
                    continue;
                }
                Some(Ok(entry)) => entry,
            };
            let cname = entry.file_name();
            if cname.to_bytes() == b"." || cname.to_bytes() == b".." {
                continue;
            }
            self.stats.entries += 1;
            if self.stats.entries > self.config.max_entries {
                self.out.stop_scan(Problem::new(
                    "limit_reached",
                    format!(
                        "stopped after {} directory entries (packages.language.max_entries); the language inventory is incomplete",
                        self.config.max_entries
                    ),
                ));
                break;
            }
            let name = OsStr::from_bytes(cname.to_bytes());
            let path = frame.path.join(name);
            let kind = match entry.file_type() {
                Some(t) => t,
                None => match nix::sys::stat::fstatat(&frame.fd, cname, AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) => type_of_stat(&st),
                    // Gone since it was listed.
                    Err(_) => continue,
                },
            };
            let (depth, mask) = (frame.depth, frame.mask);
            match kind {
                Type::Symlink => self.note_symlink(&path, start),
                Type::Directory => {
                    if depth + 1 > self.config.max_depth {
                        self.stats.depth_limited += 1;
                        match &mut depth_cut {
                            Some((_, n)) => *n += 1,
                            None => depth_cut = Some((path, 1)),
                        }
                        continue;
                    }
                    if self.is_excluded(&self.host_of(&path)) {
                        self.stats.mounts_skipped += 1;
                        continue;
                    }
                    if !visitor.dir(self, &path, name, mask) {
                        continue;
                    }
                    if let Some(child) = self.enter(&stack, cname, path, depth + 1, mask, id) {
                        self.stats.directories += 1;
                        stack.push(child);
                    }
                }
                Type::File => visitor.file(self, &path, name, mask, FileKind::Regular),
                other => visitor.file(self, &path, name, mask, FileKind::Other(kind_name(other))),
            }
        }
        if let Some((first, count)) = depth_cut {
            let more =
                if count > 1 { format!(" and {} other directories", count - 1) } else { String::new() };
            let msg = format!(
                "{}{more}: below packages.language.max_depth ({}) levels under {}, not entered; the language inventory is incomplete",
                self.shown(&first),
                self.config.max_depth,
                self.shown(start)
            );
            let p = Problem::new("limit_reached", msg).with_path(self.shown(&first));
            self.out.truncation(p);
        }
    }

    /// Opens directory `name` of the innermost frame for walking, or says why not.
    fn enter(
        &mut self,
        stack: &[Frame],
        name: &CStr,
        path: PathBuf,
        depth: u32,
        mask: Mask,
        walking: DirId,
    ) -> Option<Frame> {
        let parent = stack.last()?;
        let fd = match nix::fcntl::openat(parent.fd.as_fd(), name, dir_flags(), Mode::empty()) {
            Ok(fd) => fd,
            // Replaced since it was listed (by a symlink: ELOOP; by a file: ENOTDIR) or gone:
            // the tree changed under us, and a symlink is never followed.
            Err(Errno::ELOOP | Errno::ENOTDIR | Errno::ENOENT) => return None,
            Err(e) => {
                self.fs_problem(&HostFsError::from_io(&path, errno_io(e)), &path);
                return None;
            }
        };
        let id = match nix::sys::stat::fstat(&fd) {
            Ok(st) => id_of(&st),
            Err(e) => {
                self.fs_problem(&HostFsError::from_io(&path, errno_io(e)), &path);
                return None;
            }
        };
        if id.0 != parent.id.0 && self.filesystem_skip(&fd, id.0).is_some() {
            self.stats.mounts_skipped += 1;
            return None;
        }
        // A bind mount of an ancestor would otherwise be walked forever.
        if stack.iter().any(|f| f.id == id) {
            self.stats.directories_already_seen += 1;
            return None;
        }
        let mask = mask & !self.claimed_by_other_root(id, walking);
        if mask == 0 {
            self.stats.directories_already_seen += 1;
            return None;
        }
        match listing(&fd) {
            Ok(entries) => Some(Frame { fd, entries, path, depth, mask, id }),
            Err(e) => {
                self.fs_problem(&HostFsError::from_io(&path, e), &path);
                None
            }
        }
    }

    /// Counts a symlink met in the walk (never followed; see the module docs).
    fn note_symlink(&mut self, link: &Path, walk_root: &Path) {
        let within = self.canonical(&self.host_of(link)).ok().filter(|t| t.starts_with(walk_root));
        match within {
            Some(target) => {
                if std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
                    self.stats.directories_already_seen += 1;
                }
            }
            None => self.stats.symlinks_not_followed += 1,
        }
    }
}

/// `*` matches any run of characters (including none); everything else matches itself.
pub(crate) fn wildcard_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let Some((first, rest)) = parts.split_first() else {
        return pattern == name;
    };
    let Some(mut remaining) = name.strip_prefix(first) else {
        return false;
    };
    if rest.is_empty() {
        return remaining.is_empty();
    }
    for (i, part) in rest.iter().enumerate() {
        let last = i + 1 == rest.len();
        if last {
            return remaining.ends_with(part);
        }
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_within_a_component() {
        assert!(wildcard_match("python3*", "python3.11"));
        assert!(wildcard_match("python3*", "python3"));
        assert!(!wildcard_match("python3*", "python2.7"));
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match("a*b*c", "aXXbYYc"));
        assert!(!wildcard_match("a*b*c", "aXXbYY"));
        assert!(wildcard_match("exact", "exact"));
        assert!(!wildcard_match("exact", "exactly"));
    }
}
