//! Descriptor-relative access to the monitored trees.
//!
//! Security: the trees we walk may be writable by the people we watch (`/home/*/.ssh`, `/tmp`
//! style rules, a hostile `--root` snapshot). A walk that checks a directory with `lstat` and
//! then lists or opens it *by path* can be steered: swap the directory for a symlink to
//! `/root` between the two calls and the walk hashes files outside the tree (one run in 80
//! did, in review). So below the configured part of a rule's path nothing is ever resolved
//! by path: each directory is opened with `openat(parent_fd, name, O_DIRECTORY|O_NOFOLLOW)`,
//! listed from that descriptor, each entry examined with
//! `fstatat(dir_fd, name, AT_SYMLINK_NOFOLLOW)`, and files opened with
//! `openat(dir_fd, name, O_NOFOLLOW|O_NONBLOCK)`. A component swapped for a symlink then fails
//! the open (`ELOOP`/`ENOTDIR`) instead of being followed, and a directory or file swapped for
//! another one is caught by comparing the device and inode of the open descriptor with what
//! the examination saw. A full scan opens an entry that getdents lists as a regular file
//! first (`record::open_regular`) and examines the descriptor itself with `fstat`: nothing is
//! read unless that says regular file, so a FIFO or device swapped in after the listing is
//! refused exactly as one swapped in between an `fstatat` and the open would be.
//!
//! The configured part of a rule's path above its tree (`/` for `/etc`, `/home` for
//! `/home/*/.ssh`) is trusted and opened by path: whoever can swap `/home` already owns the
//! machine.

use crate::config::Rule;
use crate::scan::normal_parts;
use guestward_core::HostRoot;
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// Directory levels below a tree root that a walk descends. Each level of the walk may hold
/// one open directory descriptor (a parent with subdirectories still to visit), so the depth
/// bounds the descriptors a hostile tree can make us hold; real trees are a few dozen deep.
pub const MAX_DEPTH: usize = 256;

/// A directory changed (was replaced, became a symlink) between its examination and its
/// use: the walk neither follows nor reads it, and says so.
#[derive(Debug, thiserror::Error)]
#[error("it was replaced while being scanned; it will be examined again by the next scan or event")]
pub struct ChangedDuringScan;

/// The error for an entry replaced between its examination and its opening.
pub fn changed_during_scan() -> io::Error {
    io::Error::other(ChangedDuringScan)
}

/// Whether `e` says the entry was replaced while being scanned.
pub fn is_changed_during_scan(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<ChangedDuringScan>())
}

fn io_err(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Opens a trusted directory by path (the configured part of a rule's path; see the module
/// documentation). The final component is not followed: if it was swapped for a symlink since
/// it was resolved, the open fails.
pub fn open_dir_path(path: &Path) -> io::Result<File> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    nix::fcntl::open(path, flags, Mode::empty()).map(File::from).map_err(io_err)
}

/// Opens the trusted part of a rule's path. On the live system it is followed like any
/// configured path (`/var/run` is a symlink to `/run` on most systems); inside another root
/// [`HostRoot::resolve`] has already resolved every symlink (inside the root), so one found
/// now was swapped in since and is refused.
fn open_anchor(root: &HostRoot, real: &Path) -> io::Result<File> {
    if root.is_live() {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        nix::fcntl::open(real, flags, Mode::empty()).map(File::from).map_err(io_err)
    } else {
        open_dir_path(real)
    }
}

/// Opens the directory `name` inside `dir` without following a symlink.
pub fn open_dir_at(dir: &File, name: &OsStr) -> io::Result<File> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    nix::fcntl::openat(dir.as_fd(), name, flags, Mode::empty()).map(File::from).map_err(io_err)
}

/// `lstat` of `name` inside `dir`.
pub fn stat_at(dir: &File, name: &OsStr) -> io::Result<FileStat> {
    nix::sys::stat::fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(io_err)
}

/// `fstat` of an open descriptor.
pub fn stat_fd(f: &File) -> io::Result<FileStat> {
    nix::sys::stat::fstat(f.as_fd()).map_err(io_err)
}

/// Whether two stats name the same inode.
pub fn same_inode(a: &FileStat, b: &FileStat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

/// Whether a stat is a directory's.
pub fn is_dir(st: &FileStat) -> bool {
    st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFDIR
}

/// Lists an open directory. The listing reads through its own duplicate of the descriptor, so
/// `dir` stays usable for `openat`/`fstatat` while (and after) it is listed.
pub fn list(dir: &File) -> io::Result<Dir> {
    let dup = dir.as_fd().try_clone_to_owned()?;
    Dir::from_fd(dup).map_err(io_err)
}

/// Opens the directory `name` inside `parent` for a walk, checking that it is still the
/// directory examined as `seen` (same device and inode).
pub fn descend(parent: &File, name: &OsStr, seen: &FileStat) -> io::Result<File> {
    let dir = match open_dir_at(parent, name) {
        Ok(d) => d,
        // Now a symlink (ELOOP) or something else (ENOTDIR): it changed since we examined it.
        Err(e) if matches!(e.raw_os_error(), Some(nix::libc::ELOOP | nix::libc::ENOTDIR)) => {
            return Err(changed_during_scan());
        }
        Err(e) => return Err(e),
    };
    if !same_inode(&stat_fd(&dir)?, seen) {
        return Err(changed_during_scan());
    }
    Ok(dir)
}

/// How many leading components of a host path under `rule` are trusted (opened by path).
/// Without a wildcard, all but the last component of the rule's path: the last one is the
/// tree root, examined like everything below it (for `/etc`, `etc` itself is never followed:
/// a symlink there is recorded as one, as `lstat` did). With a wildcard, the components
/// before it (`/home` for `/home/*/.ssh`): the part we match ourselves, and below, is walked
/// through descriptors like the rest.
fn anchor_len(rule: &Rule) -> usize {
    let parts = normal_parts(&rule.pattern);
    match parts.iter().position(|c| *c == "*") {
        Some(wildcard) => wildcard,
        None => parts.len().saturating_sub(1),
    }
}

/// Where one entry of a tree is: the open directory holding it and its name there.
#[derive(Debug)]
pub struct Located {
    /// The directory holding the entry.
    pub dir: File,
    /// The entry's name in `dir` (`.` for the root directory itself).
    pub name: OsString,
    /// The real path of `dir`, for messages and inotify watches only (never for reads).
    pub dir_real: PathBuf,
}

/// Opens the directory holding `host` (a path governed by `rule`) without following a symlink
/// anywhere below the rule's trusted prefix. A missing component, or one that is a symlink or
/// not a directory, is `NotFound`: then `host` does not exist inside the tree.
pub fn locate(root: &HostRoot, rule: &Rule, host: &Path) -> io::Result<Located> {
    let parts = normal_parts(host);
    let Some((last, dirs)) = parts.split_last() else {
        // The root of the host itself: open it and name it `.`.
        let dir_real = root.dir().to_path_buf();
        return Ok(Located { dir: open_dir_path(&dir_real)?, name: OsString::from("."), dir_real });
    };
    let trusted = anchor_len(rule).min(dirs.len());
    let mut anchor = PathBuf::from("/");
    anchor.extend(&dirs[..trusted]);
    let mut dir_real = root.resolve(&anchor).map_err(guestward_core::HostFsError::into_io)?;
    let mut dir = open_anchor(root, &dir_real)?;
    for part in &dirs[trusted..] {
        dir = match open_dir_at(&dir, part) {
            Ok(d) => d,
            Err(e) if matches!(e.raw_os_error(), Some(nix::libc::ELOOP | nix::libc::ENOTDIR)) => {
                return Err(io::Error::from(io::ErrorKind::NotFound));
            }
            Err(e) => return Err(e),
        };
        dir_real.push(part);
    }
    Ok(Located { dir, name: last.to_os_string(), dir_real })
}

/// The path through which the entry `name` of the open directory `dir` is reached without
/// resolving anything but the descriptor itself (`/proc/self/fd/N/name`), for the few calls
/// that have no descriptor-relative form (`lgetxattr`/`llistxattr` on entries we do not
/// open). `None` without procfs.
pub fn proc_path(dir: &File, name: &OsStr) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    static HAVE_PROC: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*HAVE_PROC.get_or_init(|| Path::new("/proc/self/fd").is_dir()) {
        return None;
    }
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    p.push(name);
    Some(p)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn descend_refuses_a_directory_swapped_for_a_symlink() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::create_dir(d.path().join("outside")).unwrap();
        let top = open_dir_path(d.path()).unwrap();
        let seen = stat_at(&top, OsStr::new("sub")).unwrap();
        std::fs::remove_dir(d.path().join("sub")).unwrap();
        std::os::unix::fs::symlink(d.path().join("outside"), d.path().join("sub")).unwrap();
        let e = descend(&top, OsStr::new("sub"), &seen).unwrap_err();
        assert!(is_changed_during_scan(&e), "{e}");
        // Another directory put in its place is caught by its inode.
        std::fs::remove_file(d.path().join("sub")).unwrap();
        std::fs::rename(d.path().join("outside"), d.path().join("sub")).unwrap();
        let e = descend(&top, OsStr::new("sub"), &seen).unwrap_err();
        assert!(is_changed_during_scan(&e), "{e}");
    }
}
