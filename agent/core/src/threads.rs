//! Scoped threads that degrade instead of panicking when no thread can be made.
//!
//! Why: `std::thread::Scope::spawn` panics when the kernel refuses a thread (the unit's
//! `TasksMax`, `ulimit -u`, memory short). Under such a limit one `scan` lost its network and
//! updates sections and the next run crashed outright. [`spawn_or_run`] runs the work on the
//! calling thread instead: slower, never lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{Scope, ScopedJoinHandle};

/// Threads the kernel refused to [`spawn_or_run`] (and to [`count_refused`]'s callers) in this
/// process so far.
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// How many threads the kernel has refused [`spawn_or_run`] (and [`count_refused`]'s callers)
/// in this process. The work ran anyway, so nothing shows in a report: a caller compares this
/// before and after its work to tell the operator why it was slow, and which limit to raise.
pub fn refused_so_far() -> u64 {
    REFUSED.load(Ordering::Relaxed)
}

/// Counts one thread the kernel refused, for work that then ran on the calling thread
/// anyway (as [`spawn_or_run`] does, for threads it cannot scope).
pub fn count_refused() {
    REFUSED.fetch_add(1, Ordering::Relaxed);
}

/// Work started by [`spawn_or_run`]: on a thread of its own, or already done here.
pub enum Started<'scope, T> {
    /// Running on its own thread.
    Thread(ScopedJoinHandle<'scope, T>),
    /// No thread could be made: it ran on the caller's thread (`Err`: it panicked).
    Ran(std::thread::Result<T>),
}

impl<T> Started<'_, T> {
    /// Waits for the work; `Err` when it panicked, as [`ScopedJoinHandle::join`].
    pub fn join(self) -> std::thread::Result<T> {
        match self {
            Self::Thread(handle) => handle.join(),
            Self::Ran(result) => result,
        }
    }

    /// Whether the work is over (work run here always is).
    pub fn is_finished(&self) -> bool {
        match self {
            Self::Thread(handle) => handle.is_finished(),
            Self::Ran(_) => true,
        }
    }

    /// Whether the work runs on a thread of its own.
    pub fn on_own_thread(&self) -> bool {
        matches!(self, Self::Thread(_))
    }
}

/// Starts `work` on a scoped thread named `name`, or, when the kernel refuses the thread, runs
/// it right here (a panic in it is caught and returned by [`Started::join`], as a thread's
/// would be).
///
/// `work` is `Copy` (a closure that only borrows, as work on a scope's threads does): one copy
/// goes to the thread, and the other is run here if there is none. Moving it through a shared
/// slot instead cost about 1.5 kB of the agent binary per call site, which has a budget.
pub fn spawn_or_run<'scope, 'env, T, F>(
    scope: &'scope Scope<'scope, 'env>,
    name: &str,
    work: F,
) -> Started<'scope, T>
where
    F: FnOnce() -> T + Send + Copy + 'scope,
    T: Send + 'scope,
{
    match std::thread::Builder::new().name(name.to_string()).spawn_scoped(scope, work) {
        Ok(handle) => Started::Thread(handle),
        Err(_) => {
            count_refused();
            Started::Ran(std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_runs_once_and_a_panic_comes_back_as_an_error() {
        let counter = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            let a = spawn_or_run(s, "t-a", || counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 10);
            let b = spawn_or_run(s, "t-b", || -> usize { panic!("boom") });
            assert!(a.on_own_thread());
            assert!(a.join().is_ok_and(|v| v >= 10));
            assert!(b.join().is_err());
        });
        assert_eq!(counter.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
    // The fallback (no thread could be made) is tested through the agent binary run under
    // `ulimit -u` (the daemon crate's integration tests).
}
