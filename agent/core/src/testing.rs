//! Test support shared by every crate's tests (feature `testing`, never in a release build).

use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::Duration;

/// Runs `f` on its own thread and panics if it has not returned within `limit`, so that a
/// regression that blocks (a FIFO opened for reading, an endless query, a lock never released)
/// fails the test instead of hanging the whole test run.
pub fn within<T: Send + 'static>(limit: Duration, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(RecvTimeoutError::Timeout) => panic!("{what}: still running after {limit:?} (a hang)"),
        Err(RecvTimeoutError::Disconnected) => panic!("{what}: panicked (see its message above)"),
    }
}
