//! Room kept on the state directory's filesystem for the agent's own databases.
//!
//! Why: a local user can fill the filesystem that holds the state directory (it is often the
//! root filesystem, shared with `/tmp` and `/home`; the agent runs as its own user, so root's
//! reserved blocks are not its). An open database needs a little room of its own: SQLite sizes
//! a 32 KiB shared-memory file (`-shm`) beside every WAL database it opens, and fails with
//! `SQLITE_IOERR_SHMSIZE` when it cannot. Without room the agent could not start again after a
//! reboot or a crash, which is what an intruder who filled the disk would wait for.
//!
//! So the agent keeps [`RESERVE_BYTES`] allocated in `<state_dir>/reserve` while there is
//! room ([`ensure`]) and frees it when a database cannot be opened for lack of space
//! ([`release`]), then opens again. Writes that still fail are the callers' to survive: the
//! daemon holds events and reports in memory, and the FIM opens coverage gaps.
//!
//! This is room for opening, not for running on a full disk: a user who keeps filling the
//! disk takes the freed space back. A separate filesystem (or a quota) for the state
//! directory is the real fix, as `docs/hardening.md` says.

use std::io;
use std::path::{Path, PathBuf};

/// The reserve's name in the state directory.
pub const RESERVE_FILE: &str = "reserve";
/// Its size: room to open every database of the agent a few times over (each `-shm` is 32 KiB).
pub const RESERVE_BYTES: u64 = 1 << 20;
/// The reserve is made only when at least this much is free, so that making it never fills
/// a filesystem that is nearly full already.
const ROOM_TO_MAKE_IT: u64 = 16 * RESERVE_BYTES;

fn reserve_path(state_dir: &Path) -> PathBuf {
    state_dir.join(RESERVE_FILE)
}

/// What the agent's user may still allocate on `dir`'s filesystem (`f_bavail`: root's reserve
/// is not ours).
// `fsblkcnt_t` and `c_ulong` are `u64` here, 32 bits on other targets.
#[allow(clippy::useless_conversion)]
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(io::Error::from)?;
    Ok(u64::from(st.blocks_available()).saturating_mul(u64::from(st.fragment_size())))
}

/// Makes the reserve when it is missing and there is room for it. Returns whether it made one.
/// The file is written under a temporary name (`O_EXCL`, never following a symlink, 0600),
/// allocated with `posix_fallocate` (no zeros are written), then renamed into place.
pub fn ensure(state_dir: &Path) -> io::Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = reserve_path(state_dir);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_file() && meta.len() >= RESERVE_BYTES => return Ok(false),
        // Short (a crash while making it) or not a file (planted): made again below.
        Ok(_) => remove(&path)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if free_bytes(state_dir)? < ROOM_TO_MAKE_IT {
        return Ok(false);
    }
    let temp = state_dir.join(format!(".{RESERVE_FILE}.tmp"));
    match std::fs::symlink_metadata(&temp) {
        Ok(_) => remove(&temp)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(&temp)?;
    let len = i64::try_from(RESERVE_BYTES).map_err(io::Error::other)?;
    let allocated = nix::fcntl::posix_fallocate(&file, 0, len).map_err(io::Error::from);
    drop(file);
    if let Err(e) = allocated.and_then(|()| std::fs::rename(&temp, &path)) {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    Ok(true)
}

/// Frees the reserve. Returns whether there was one to free.
pub fn release(state_dir: &Path) -> io::Result<bool> {
    match std::fs::remove_file(reserve_path(state_dir)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Runs `open` (of a database in `state_dir`); when it fails for lack of room (`out_of_space`
/// says so of the error, and less than [`RESERVE_BYTES`] is free) and there was a reserve,
/// frees it and runs `open` again. Returns the last result and whether the reserve was freed,
/// for the caller's log: the filesystem is full.
pub fn open_with_room<T, E>(
    state_dir: &Path,
    mut open: impl FnMut() -> Result<T, E>,
    out_of_space: impl Fn(&E) -> bool,
) -> (Result<T, E>, bool) {
    match open() {
        Err(e)
            if out_of_space(&e)
                && free_bytes(state_dir).is_ok_and(|free| free < RESERVE_BYTES)
                && release(state_dir).unwrap_or(false) =>
        {
            (open(), true)
        }
        other => (other, false),
    }
}

/// Removes a file, or a directory planted in a file's place.
fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.raw_os_error() == Some(nix::libc::EISDIR) => std::fs::remove_dir_all(path),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensure_makes_a_private_allocated_reserve_once_and_release_frees_it() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        assert!(ensure(dir.path()).unwrap());
        let meta = std::fs::metadata(dir.path().join(RESERVE_FILE)).unwrap();
        assert_eq!(meta.len(), RESERVE_BYTES);
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // Allocated, not a sparse file: its blocks are taken from the filesystem.
        assert!(meta.blocks() * 512 >= RESERVE_BYTES, "{} blocks", meta.blocks());
        assert!(!ensure(dir.path()).unwrap(), "made twice");
        assert!(release(dir.path()).unwrap());
        assert!(!release(dir.path()).unwrap());
        assert!(!dir.path().join(RESERVE_FILE).exists());
    }

    #[test]
    fn a_short_or_planted_reserve_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(RESERVE_FILE), b"short").unwrap();
        assert!(ensure(dir.path()).unwrap());
        assert_eq!(std::fs::metadata(dir.path().join(RESERVE_FILE)).unwrap().len(), RESERVE_BYTES);
        let outside = tempfile::tempdir().unwrap();
        std::fs::remove_file(dir.path().join(RESERVE_FILE)).unwrap();
        std::os::unix::fs::symlink(outside.path().join("x"), dir.path().join(RESERVE_FILE)).unwrap();
        assert!(ensure(dir.path()).unwrap());
        assert!(!outside.path().join("x").exists(), "the planted symlink was followed");
        assert!(std::fs::symlink_metadata(dir.path().join(RESERVE_FILE)).unwrap().is_file());
    }
}
