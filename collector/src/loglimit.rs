//! Rate-limited logging for events a remote peer can trigger at will (a spoofed report, a forged
//! header): at most a few lines per second per call site, then one line saying how many were
//! suppressed, so a hostile client cannot flood the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Lines per second allowed at one call site.
const PER_SECOND: u64 = 5;

/// One call site's budget.
#[derive(Debug, Default)]
pub(crate) struct LogLimit {
    /// The current second (Unix time).
    second: AtomicU64,
    /// Lines in the current second.
    count: AtomicU64,
    /// Lines suppressed since the last one logged.
    suppressed: AtomicU64,
}

impl LogLimit {
    /// A call site's budget (a `static`).
    pub(crate) const fn new() -> Self {
        Self { second: AtomicU64::new(0), count: AtomicU64::new(0), suppressed: AtomicU64::new(0) }
    }

    /// `Some(suppressed so far)` when this line may be logged, `None` when it is suppressed.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        if self.second.swap(now, Ordering::Relaxed) != now {
            self.count.store(0, Ordering::Relaxed);
        }
        if self.count.fetch_add(1, Ordering::Relaxed) < PER_SECOND {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_to_the_budget_and_the_rest_counted() {
        static SITE: LogLimit = LogLimit::new();
        let allowed = (0..100).filter(|_| SITE.allow().is_some()).count();
        // The loop may straddle a second boundary: at most two seconds' budget.
        assert!((PER_SECOND as usize..=2 * PER_SECOND as usize).contains(&allowed), "{allowed}");
    }
}
