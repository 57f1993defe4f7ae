//! Reading host files through a root directory without escaping it.
//!
//! Security: with `--root /mnt/snapshot` the tree under the root is untrusted (it may come from
//! a compromised instance's volume). An absolute symlink such as `etc/os-release ->
//! /etc/shadow` must resolve to `/mnt/snapshot/etc/shadow`, never to the scanning host's file,
//! and `..` must stop at the root. We therefore resolve every component ourselves, the way the
//! kernel resolves paths inside a chroot, and open the final component with `O_NOFOLLOW`.
//! For the live root (`/`) the kernel's own resolution is already correct.

use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// Symlinks followed while resolving one path before giving up (Linux's own limit is 40).
pub const MAX_SYMLINK_HOPS: usize = 40;

/// Why a host file could not be read. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum HostFsError {
    /// The file does not exist.
    #[error("{}: not found", path.display())]
    NotFound {
        /// The file, as seen on the scanning machine.
        path: PathBuf,
    },
    /// The agent lacks permission; run as root or grant read access.
    #[error("{}: permission denied (run as root, or grant the guestward user read access)", path.display())]
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
            _ if source.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) => Self::SymlinkLoop { path },
            _ => Self::Io { path, source },
        }
    }

    /// A stable machine-readable code for reports.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::PermissionDenied { .. } => "permission_denied",
            Self::TooLarge { .. } => "too_large",
            Self::SymlinkLoop { .. } => "symlink_loop",
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
            | Self::Io { path, .. } => path,
        }
    }

    /// This error as a report [`crate::Problem`].
    pub fn to_problem(&self) -> crate::Problem {
        crate::Problem::new(self.code(), self.to_string()).with_path(self.path().display().to_string())
    }
}

/// The directory through which every host file is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot {
    dir: PathBuf,
}

impl Default for HostRoot {
    fn default() -> Self {
        Self::live()
    }
}

impl HostRoot {
    /// The running system (`/`).
    pub fn live() -> Self {
        Self { dir: PathBuf::from("/") }
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
        Ok(Self { dir: canonical })
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

    /// Metadata of `host_path` without following a final symlink.
    pub fn symlink_metadata(&self, host_path: impl AsRef<Path>) -> Result<Metadata, HostFsError> {
        let real = self.resolve_parent(host_path)?;
        std::fs::symlink_metadata(&real).map_err(|e| HostFsError::from_io(real, e))
    }

    /// Opens `host_path` for reading. The final component is opened with `O_NOFOLLOW` after
    /// resolution, so a symlink swapped in after we resolved it is refused, not followed.
    pub fn open(&self, host_path: impl AsRef<Path>) -> Result<(File, PathBuf), HostFsError> {
        let real = self.resolve(host_path)?;
        let mut options = std::fs::OpenOptions::new();
        options.read(true);
        if !self.is_live() {
            options.custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits());
        }
        let file = options.open(&real).map_err(|e| HostFsError::from_io(&real, e))?;
        Ok((file, real))
    }

    /// Reads a whole file, refusing files larger than `limit` bytes (checked while reading, so
    /// a file that grows or lies about its size cannot exhaust memory).
    pub fn read_capped(&self, host_path: impl AsRef<Path>, limit: u64) -> Result<Vec<u8>, HostFsError> {
        let (file, real) = self.open(host_path)?;
        let mut buf = Vec::new();
        let size_hint = file.metadata().map(|m| m.len()).unwrap_or(0);
        if size_hint > limit {
            return Err(HostFsError::TooLarge { path: real, limit });
        }
        buf.reserve(usize::try_from(size_hint).unwrap_or(0));
        let read = file
            .take(limit.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| HostFsError::from_io(&real, e))?;
        if u64::try_from(read).unwrap_or(u64::MAX) > limit {
            return Err(HostFsError::TooLarge { path: real, limit });
        }
        Ok(buf)
    }

    /// Reads a small text file; invalid UTF-8 is replaced rather than rejected.
    pub fn read_string_capped(&self, host_path: impl AsRef<Path>, limit: u64) -> Result<String, HostFsError> {
        let bytes = self.read_capped(host_path, limit)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// Whether `host_path` exists (after resolution, following symlinks inside the root).
    pub fn exists(&self, host_path: impl AsRef<Path>) -> bool {
        self.resolve(host_path).map(|p| p.exists()).unwrap_or(false)
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
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, HostRoot) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::create_dir_all(dir.path().join("usr/lib")).unwrap();
        std::fs::write(dir.path().join("usr/lib/os-release"), "ID=inside\n").unwrap();
        let root = HostRoot::new(dir.path()).unwrap();
        (dir, root)
    }

    #[test]
    fn relative_symlinks_resolve_inside_the_root() {
        let (dir, root) = tree();
        symlink("../usr/lib/os-release", dir.path().join("etc/os-release")).unwrap();
        assert_eq!(root.read_string_capped("/etc/os-release", 1024).unwrap(), "ID=inside\n");
    }

    #[test]
    fn absolute_symlinks_are_reinterpreted_under_the_root() {
        let (dir, root) = tree();
        // On the scanning host /usr/lib/os-release exists too; we must read the root's copy.
        symlink("/usr/lib/os-release", dir.path().join("etc/os-release")).unwrap();
        assert_eq!(root.read_string_capped("/etc/os-release", 1024).unwrap(), "ID=inside\n");
    }

    #[test]
    fn dotdot_cannot_climb_out_of_the_root() {
        let (dir, root) = tree();
        symlink("../../../../../../etc/hostname", dir.path().join("etc/escape")).unwrap();
        let resolved = root.resolve("/etc/escape").unwrap();
        assert!(resolved.starts_with(root.dir()), "{}", resolved.display());
        assert!(matches!(root.read_capped("/etc/escape", 10), Err(HostFsError::NotFound { .. })));
        let direct = root.resolve("/../../etc/passwd").unwrap();
        assert_eq!(direct, root.dir().join("etc/passwd"));
    }

    #[test]
    fn symlink_loops_are_reported_not_followed_forever() {
        let (dir, root) = tree();
        symlink("b", dir.path().join("etc/a")).unwrap();
        symlink("a", dir.path().join("etc/b")).unwrap();
        assert!(matches!(root.resolve("/etc/a"), Err(HostFsError::SymlinkLoop { .. })));
    }

    #[test]
    fn size_cap_is_enforced() {
        let (dir, root) = tree();
        std::fs::write(dir.path().join("etc/big"), vec![b'x'; 100]).unwrap();
        let err = root.read_capped("/etc/big", 99).unwrap_err();
        assert!(matches!(err, HostFsError::TooLarge { limit: 99, .. }), "{err}");
        assert_eq!(root.read_capped("/etc/big", 100).unwrap().len(), 100);
    }

    #[test]
    fn missing_file_error_names_the_real_path() {
        let (_dir, root) = tree();
        let err = root.read_capped("/etc/nope", 10).unwrap_err();
        assert_eq!(err.code(), "not_found");
        assert!(err.to_string().contains(&root.dir().join("etc/nope").display().to_string()), "{err}");
    }

    #[test]
    fn live_root_is_identity() {
        let live = HostRoot::live();
        assert!(live.is_live());
        assert_eq!(live.resolve("/etc/hostname").unwrap(), Path::new("/etc/hostname"));
    }
}
