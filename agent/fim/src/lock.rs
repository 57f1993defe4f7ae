//! One process at a time per baseline: every scan stages its rows in `fim.db`'s shared
//! `staging` and `resume` tables, so two processes scanning one state directory take each
//! other's rows for an interrupted run, and the baseline they leave is neither's (two
//! concurrent `fim update`s of 200,000 files once left an empty baseline, both reporting
//! success). The daemon's monitor holds the lock for its whole life, a one-shot `fim
//! init|check|update` for its run; a second one is refused at once, naming the holder
//! ([`guestward_core::lock`]: `flock` on `fim.lock` in the state directory).

use std::path::{Path, PathBuf};

/// The lock file, in the state directory beside `fim.db`.
pub const LOCK_FILE: &str = "fim.lock";

/// Why the baseline could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "the FIM baseline in {} is in use by {holder}: one process at a time may scan or change it. \
         Wait for that one to finish; while the agent's daemon runs, ask it instead \
         (`agentctl fim status`, `agentctl fim baseline`), or give this command a baseline of its \
         own with --state-dir",
        state_dir.display()
    )]
    Busy {
        /// The state directory.
        state_dir: PathBuf,
        /// Who holds it, as that process wrote it (`pid 1234: guestward-agent run`).
        holder: String,
    },
    /// The lock file could not be created, opened or locked.
    #[error(transparent)]
    Io(guestward_core::lock::LockError),
}

/// The baseline's lock, held until dropped.
#[derive(Debug)]
pub struct StateLock {
    _lock: guestward_core::lock::DirLock,
}

impl StateLock {
    /// Takes the lock of `state_dir`'s baseline without waiting, creating the directory (mode
    /// 0700, as the store does) and the lock file (0600) when missing.
    pub fn acquire(state_dir: &Path) -> Result<Self, LockError> {
        match guestward_core::lock::DirLock::acquire(state_dir, LOCK_FILE) {
            Ok(lock) => Ok(Self { _lock: lock }),
            Err(guestward_core::lock::LockError::Busy { holder, .. }) => {
                Err(LockError::Busy { state_dir: state_dir.to_path_buf(), holder })
            }
            Err(e) => Err(LockError::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_second_holder_is_refused_naming_the_baseline_and_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = StateLock::acquire(&state).unwrap();
        let err = StateLock::acquire(&state).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, LockError::Busy { .. }), "{text}");
        assert!(text.contains(&format!("pid {}", std::process::id())), "{text}");
        assert!(text.contains(&format!("the FIM baseline in {}", state.display())), "{text}");
        drop(first);
        StateLock::acquire(&state).unwrap();
    }
}
