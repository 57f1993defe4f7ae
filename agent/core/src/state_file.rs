//! Atomic state files: the one way the agent replaces a file in its state directory.
//!
//! A crash or power loss at any instant leaves either the previous file or the new one, never
//! a torn mix: the content goes to a temporary file beside the target, is flushed to disk
//! (`fsync`), renamed over the target, and the directory is flushed so the rename itself is
//! durable. Writing is streamed through a size cap, so a state that grew past what the agent
//! would read back is refused while it is written, not after it filled the disk.
//!
//! Security: the temporary file is created fresh (`O_EXCL`, `O_NOFOLLOW`, mode 0600): a symlink
//! planted under its name is never followed and nothing of another user's is truncated. State
//! files name processes, paths and hashes, so they are private to the agent's user.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why a state file was not replaced. The previous file, if any, is untouched.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// Creating, writing, syncing or renaming failed.
    #[error("{}: cannot write state file: {source}", path.display())]
    Io {
        /// The state file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The content grew past the cap.
    #[error("{}: state is larger than {limit} bytes; not written", path.display())]
    TooLarge {
        /// The state file.
        path: PathBuf,
        /// The cap in bytes.
        limit: u64,
    },
}

/// The path to give SQLite for the database `path` in a state directory, opened with
/// `SQLITE_OPEN_NOFOLLOW`: the directory as its real path, the file name as it is. SQLite then
/// refuses a symlink planted as the database itself, while a state directory reached through a
/// symlink (`/var/lib/guestward` moved to a larger volume and linked back) still works: with
/// NOFOLLOW SQLite refuses a link anywhere in the path it is given, and once stopped the daemon
/// with "unable to open database file" there.
pub fn sqlite_path(path: &Path) -> std::io::Result<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(path.to_path_buf());
    };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    Ok(std::fs::canonicalize(dir)?.join(name))
}

/// Replaces `path` atomically with what `write` produces, at most `max_bytes` bytes, mode 0600.
///
/// `write` receives a buffered writer; an error it returns (or the cap being passed) leaves the
/// old file in place and removes the temporary one.
pub fn write_atomic(
    path: &Path,
    max_bytes: u64,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), StateFileError> {
    let io = |source| StateFileError::Io { path: path.to_path_buf(), source };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Some(name) = path.file_name() else {
        return Err(io(std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name")));
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    // A leftover from a crash is ours to remove; anything else there (a directory) fails below.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits() | nix::fcntl::OFlag::O_CLOEXEC.bits())
        .open(&tmp)
        .map_err(io)?;
    let mut capped = std::io::BufWriter::new(Capped { inner: file, written: 0, cap: max_bytes, over: false });
    let written = write(&mut capped).and_then(|()| capped.flush());
    let over = capped.get_ref().over;
    let finished = match (written, over) {
        (_, true) => Err(StateFileError::TooLarge { path: path.to_path_buf(), limit: max_bytes }),
        (Err(e), false) => Err(io(e)),
        (Ok(()), false) => match capped.into_inner() {
            Ok(c) => c.inner.sync_all().map_err(io),
            Err(e) => Err(io(e.into_error())),
        },
    };
    if let Err(e) = finished {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    // The rename is durable only once the directory entry is.
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

/// Stops writing at the cap (the error surfaces as `TooLarge`, not as a short file).
struct Capped {
    inner: std::fs::File,
    written: u64,
    cap: u64,
    over: bool,
}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        if self.written.saturating_add(len) > self.cap {
            self.over = true;
            return Err(std::io::Error::new(std::io::ErrorKind::FileTooLarge, "state file cap reached"));
        }
        let n = self.inner.write(buf)?;
        self.written = self.written.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_the_file_privately_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "old").unwrap();
        write_atomic(&path, 1024, |w| w.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn content_over_the_cap_is_refused_and_the_old_file_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "old").unwrap();
        let err = write_atomic(&path, 10, |w| w.write_all(&[b'x'; 100_000])).unwrap_err();
        assert!(matches!(err, StateFileError::TooLarge { limit: 10, .. }), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert!(!dir.path().join(".state.json.tmp").exists());
    }

    #[test]
    fn a_symlink_planted_as_the_temporary_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(".state.json.tmp")).unwrap();
        write_atomic(&dir.path().join("state.json"), 1024, |w| w.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(dir.path().join("state.json")).unwrap(), "new");
    }

    #[test]
    fn a_failing_writer_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "old").unwrap();
        let err = write_atomic(&path, 1024, |_| Err(std::io::Error::other("serializer failed"))).unwrap_err();
        assert!(err.to_string().contains("serializer failed"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
    }
}
