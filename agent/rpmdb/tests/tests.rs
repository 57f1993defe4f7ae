//! Integration tests for guestward-rpmdb (one test binary; modules per concern).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod corruption;
mod dirs;
mod fixtures;
mod fuzz_corpus;
mod sqlite;
mod vercmp_oracle;

use std::path::PathBuf;

/// The shared rpm database fixtures (see tests/fixtures/rpmdb/README.md).
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/rpmdb"))
}

/// Runs `f` on another thread and fails the test if it has not returned after `limit`, so
/// that a regression to a hang (a FIFO opened, a query that never ends) fails instead of
/// blocking the test suite. A thread still blocked is left behind; the test process ends.
pub fn within<T: Send + 'static>(
    limit: std::time::Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: still running after {limit:?} (a hang)")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: panicked"),
    }
}
