//! Reading the scanned tree: every file through [`HostRoot::open`] (regular files only, capped,
//! symlinks resolved inside the root), directory listings of resolved paths.
//!
//! Listings: a directory is resolved inside the root ([`HostRoot::resolve`]) and then listed by
//! that path. A directory swapped for a symlink between the two could only make us see names
//! from elsewhere: every file is then opened by its host path through the door, which resolves
//! it inside the root again, so nothing outside the root is ever read. Subdirectories are
//! entered only when their directory entry says "directory" (never through a symlink).

use crate::model::Location;
use guestward_core::{HostFsError, HostRoot, Problem};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Configuration files (sshd_config, sudoers, unit files, passwd...) larger than this are not
/// read: real ones are a few KiB.
pub(crate) const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;
/// Entries read from one directory listing.
pub(crate) const MAX_DIR_ENTRIES: usize = 100_000;

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DirEntry {
    /// The name as the directory holds it: bytes, not necessarily UTF-8. A name made lossy
    /// (`bob\xff` read as `bob\u{fffd}`) would name a file that does not exist, and whatever
    /// it holds would be silently missed; so names stay bytes until they are shown ([`show`]).
    pub name: OsString,
    pub is_dir: bool,
}

impl DirEntry {
    /// The name's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.name.as_bytes()
    }
}

/// A host path as report text, as the file integrity events show paths
/// ([`guestward_core::text::escape_path`]): two names never show alike and nothing of a name
/// is lost.
pub(crate) fn show(path: &Path) -> String {
    guestward_core::text::escape_path(path)
}

/// A file name as report text ([`show`]).
pub(crate) fn show_name(name: &OsStr) -> String {
    show(Path::new(name))
}

/// Reads a text file through the door. Invalid UTF-8 is replaced.
pub(crate) fn read_text(root: &HostRoot, host_path: &Path, cap: u64) -> Result<String, HostFsError> {
    root.read_string_capped(host_path, cap)
}

/// A file's identity (device and inode): the same file reached by two names (a symlink, a
/// hard link, `..`, another include spelling) is one file. Include loops and files counted
/// twice are recognised by this, never by the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

/// A file opened through the door, with its identity, not read yet: a caller that has seen the
/// file already can skip it without reading a byte.
pub(crate) struct Opened {
    file: File,
    real: PathBuf,
    pub id: FileId,
}

/// Opens `host_path` through the door (regular files only) and takes its identity from the
/// open descriptor.
pub(crate) fn open_identified(root: &HostRoot, host_path: &Path) -> Result<Opened, HostFsError> {
    let (file, real) = root.open(host_path)?;
    let meta = file.metadata().map_err(|e| HostFsError::from_io(&real, e))?;
    Ok(Opened { file, real, id: FileId { dev: meta.dev(), ino: meta.ino() } })
}

impl Opened {
    /// Reads the whole file as text (invalid UTF-8 replaced), refusing more than `cap` bytes:
    /// checked while reading, so a file that grows cannot exhaust memory.
    pub(crate) fn read_text(self, cap: u64) -> Result<String, HostFsError> {
        let too_large = || HostFsError::TooLarge { path: self.real.clone(), limit: cap };
        let size_hint = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        if size_hint > cap {
            return Err(too_large());
        }
        let mut buf = Vec::with_capacity(usize::try_from(size_hint).unwrap_or(0));
        let read = (&self.file)
            .take(cap.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| HostFsError::from_io(&self.real, e))?;
        if u64::try_from(read).unwrap_or(u64::MAX) > cap {
            return Err(too_large());
        }
        Ok(match String::from_utf8(buf) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }
}

/// The entries of `host_dir`, sorted by name, at most [`MAX_DIR_ENTRIES`] (the flag says when
/// more were left out).
pub(crate) fn list_dir(root: &HostRoot, host_dir: &Path) -> Result<(Vec<DirEntry>, bool), HostFsError> {
    let real = root.resolve(host_dir)?;
    let shown = root.display(host_dir);
    let entries = std::fs::read_dir(&real).map_err(|e| HostFsError::from_io(&shown, e))?;
    let mut out = Vec::new();
    let mut truncated = false;
    for entry in entries {
        if out.len() >= MAX_DIR_ENTRIES {
            truncated = true;
            break;
        }
        let Ok(entry) = entry else { continue };
        // The entry's own type (d_type, else lstat): a symlink is never taken for a directory.
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        out.push(DirEntry { name: entry.file_name(), is_dir });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((out, truncated))
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// `problem` at a line of a configuration file: it names the file on this machine, as
/// everywhere in the report (under `--root`, inside it: [`HostRoot::locate_problem`]); `at`
/// keeps the scanned system's own path, the one its configuration names.
pub(crate) fn located(problem: Problem, at: &Location, root: &HostRoot) -> Problem {
    root.locate_problem(problem, &at.file).with_line(u64::from(at.line))
}

/// Expands a glob(3) pattern (absolute host path; wildcards in any component) against the
/// root, sorted as glob sorts, at most `cap` results. Names starting with `.` only match a
/// pattern component that starts with `.`, as in glob(3). Directories that cannot be listed
/// add a problem; a pattern matching nothing yields nothing.
pub(crate) fn glob(root: &HostRoot, pattern: &str, cap: usize, problems: &mut Vec<Problem>) -> Vec<PathBuf> {
    if !has_wildcard(pattern) {
        return vec![PathBuf::from(pattern)];
    }
    let mut current: Vec<PathBuf> = vec![PathBuf::from("/")];
    for part in pattern.split('/').filter(|p| !p.is_empty()) {
        let mut next = Vec::new();
        if !has_wildcard(part) {
            next.extend(current.iter().map(|base| base.join(part)));
        } else {
            let matcher = match globset::GlobBuilder::new(part).literal_separator(true).build() {
                Ok(g) => g.compile_matcher(),
                Err(e) => {
                    problems.push(Problem::new("malformed", format!("bad pattern `{pattern}`: {e}")));
                    return Vec::new();
                }
            };
            for base in &current {
                let entries = match list_dir(root, base) {
                    Ok((entries, _)) => entries,
                    Err(HostFsError::NotFound { .. }) => continue,
                    Err(e) => {
                        problems.push(e.to_problem());
                        continue;
                    }
                };
                for e in entries {
                    if e.bytes().starts_with(b".") && !part.starts_with('.') {
                        continue;
                    }
                    // Matched as bytes (globset does on Unix), as glob(3) matches.
                    if matcher.is_match(Path::new(&e.name)) {
                        next.push(base.join(&e.name));
                    }
                }
            }
        }
        if next.len() > cap {
            next.truncate(cap);
        }
        current = next;
    }
    current.sort_unstable();
    current
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn glob_expands_inside_the_root_sorted_and_skips_dot_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("etc/ssh/sshd_config.d");
        std::fs::create_dir_all(&d).unwrap();
        for name in ["20-b.conf", "10-a.conf", ".hidden.conf", "x.txt"] {
            std::fs::write(d.join(name), "").unwrap();
        }
        let root = HostRoot::new(dir.path()).unwrap();
        let mut problems = Vec::new();
        let got = glob(&root, "/etc/ssh/sshd_config.d/*.conf", 100, &mut problems);
        assert_eq!(
            got,
            vec![
                PathBuf::from("/etc/ssh/sshd_config.d/10-a.conf"),
                PathBuf::from("/etc/ssh/sshd_config.d/20-b.conf")
            ]
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert!(glob(&root, "/nope/*.conf", 100, &mut problems).is_empty());
    }

    #[test]
    fn names_are_shown_escaped_and_distinct() {
        use std::os::unix::ffi::OsStrExt;
        let shown = |b: &[u8]| show(Path::new(OsStr::from_bytes(b)));
        assert_eq!(shown(b"/etc/sudoers.d/bob\xff"), "/etc/sudoers.d/bob\\xff");
        // A name that is literally `\xff` does not show as the byte does.
        assert_eq!(shown(b"/a\\xff\n"), "/a\\\\xff\\x0a");
        assert_eq!(shown("/home/zoé".as_bytes()), "/home/zoé");
    }
}
