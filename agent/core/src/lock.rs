//! One process at a time: an exclusive `flock(2)` on a file in a directory, held until
//! dropped. The kernel drops it when the holder exits or is killed, so a crash never leaves a
//! stale lock. The file's text (the holder's pid and command line) only explains a refusal; it
//! is never trusted. Used for the daemon's state directory (`agent.lock`: two daemons on one
//! spool and history would ship every report twice under one sequence) and the FIM baseline
//! (`fim.lock`).

use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The most of a holder's description read back or written (a planted file cannot make a
/// refusal print megabytes).
const MAX_HOLDER_TEXT: usize = 512;

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("{} is held by {holder}", path.display())]
    Busy {
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as that process wrote it (`pid 1234: guestward-agent run`).
        holder: String,
    },
    /// The lock file could not be created, opened or locked.
    #[error("{}: {reason}", path.display())]
    Io {
        /// The lock file (or the directory it goes in).
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// A lock, held until dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: Flock<File>,
}

impl DirLock {
    /// Takes the lock `dir/name` without waiting, creating the directory (mode 0700) and the
    /// lock file (0600) when missing.
    pub fn acquire(dir: &Path, name: &str) -> Result<Self, LockError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        if !dir.exists() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| {
                LockError::Io { path: dir.to_path_buf(), reason: format!("cannot create it: {e}") }
            })?;
        }
        let path = dir.join(name);
        let io = |reason: String| LockError::Io { path: path.clone(), reason };
        // Security: the directory is the agent's own (0700), but a link planted there must not
        // make the agent create or truncate a file elsewhere, nor a FIFO block it.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| match e.raw_os_error() {
                Some(nix::libc::ELOOP) => {
                    io("is a symbolic link; the lock file must be a regular file".into())
                }
                _ => io(format!("cannot open the lock file: {e}")),
            })?;
        let meta = file.metadata().map_err(|e| io(format!("cannot stat the lock file: {e}")))?;
        if !meta.file_type().is_file() {
            return Err(io("is not a regular file; remove it (the agent creates it again)".into()));
        }
        let mut locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(LockError::Busy { path, holder: holder_of(&mut file) });
            }
            Err((_, errno)) => return Err(io(format!("cannot lock the lock file: {errno}"))),
        };
        // Who holds it, for the next process's refusal. Failing to say so does not make the
        // lock any less held.
        let _ = locked.set_len(0).and_then(|()| locked.write_all(describe_self().as_bytes()));
        Ok(Self { _file: locked })
    }
}

/// What the holder wrote into the lock file, kept to printable ASCII and a bounded length.
fn holder_of(file: &mut File) -> String {
    let mut text = Vec::new();
    let _ = file.take(MAX_HOLDER_TEXT as u64).read_to_end(&mut text);
    let shown: String = String::from_utf8_lossy(&text)
        .trim()
        .chars()
        .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' })
        .collect();
    if shown.is_empty() { "another process".to_string() } else { shown }
}

/// `pid 1234: guestward-agent fim update --state-dir /x`: this process, for a refusal.
fn describe_self() -> String {
    let mut args = std::env::args_os().map(|a| a.to_string_lossy().into_owned());
    let program =
        args.next().map(|p| p.rsplit('/').next().unwrap_or_default().to_string()).unwrap_or_default();
    let mut text = format!(
        "pid {}: {}",
        std::process::id(),
        std::iter::once(program).chain(args).collect::<Vec<_>>().join(" ")
    );
    if text.len() > MAX_HOLDER_TEXT - 1 {
        let mut end = MAX_HOLDER_TEXT - 4;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_and_the_lock_returns_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = DirLock::acquire(&state, "x.lock").unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(state.join("x.lock")).unwrap().permissions().mode() & 0o777, 0o600);
        // flock(2) locks belong to the open file: a second open in this process conflicts as
        // another process's would.
        let err = DirLock::acquire(&state, "x.lock").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, LockError::Busy { .. }), "{text}");
        assert!(text.contains(&format!("pid {}", std::process::id())), "{text}");
        assert!(text.contains(&state.join("x.lock").display().to_string()), "{text}");
        drop(first);
        DirLock::acquire(&state, "x.lock").unwrap();
    }

    #[test]
    fn a_planted_link_or_fifo_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::os::unix::fs::symlink(&victim, state.join("x.lock")).unwrap();
        let text = DirLock::acquire(&state, "x.lock").unwrap_err().to_string();
        assert!(text.contains("symbolic link"), "{text}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        std::fs::remove_file(state.join("x.lock")).unwrap();
        nix::unistd::mkfifo(&state.join("x.lock"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let text = DirLock::acquire(&state, "x.lock").unwrap_err().to_string();
        assert!(text.contains("not a regular file"), "{text}");
    }

    #[test]
    fn a_holder_text_is_shown_printable_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut planted = b"pid 1: evil\x1b[2J".to_vec();
        planted.extend(std::iter::repeat_n(b'x', 10_000));
        std::fs::write(&path, planted).unwrap();
        let shown = holder_of(&mut File::open(&path).unwrap());
        assert!(shown.starts_with("pid 1: evil?[2J"), "{shown}");
        assert!(shown.len() <= MAX_HOLDER_TEXT, "{}", shown.len());
    }
}
