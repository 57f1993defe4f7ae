//! Pacing of hashing: a knob the host process turns to slow FIM scans down.
//!
//! The agent measures its own CPU use and, above its budget (`[limits]` in `agent.toml`), asks
//! FIM to hash more slowly (see `guestward-agent`'s `selflimit` module). FIM knows nothing of
//! budgets or measurements: it only obeys a [`Pace`], a shared value saying how long a
//! hashing thread rests for each MiB it is about to read. Zero (the default) means no pacing.
//!
//! Where it applies: the hashing threads of every scan ([`crate::scan::stage`]: baselines,
//! startup and periodic verification rescans, overflow rescans), before each file's content
//! is read, in proportion to its size. Not paced: the realtime re-read of a single changed
//! file after an inotify event. Its latency is the time from a change to its report, and
//! slowing it would hand an attacker a window; a storm of such events is already bounded by
//! the event queue (an overflow becomes a paced rescan).
//!
//! A rest is taken in slices of at most [`SLICE`], re-reading the pace between slices, so a
//! lifted throttle takes effect within a slice, and a scan being cancelled (shutdown) never
//! waits for a long rest to end.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Every file costs at least this much pacing, as if it were this large: opening, stat'ing
/// and recording a file costs CPU even when it is empty, and a tree of many small files
/// must slow down too.
pub const MIN_CHARGE_BYTES: u64 = 64 * 1024;

/// The longest single sleep; the pace and the cancel flag are re-read between slices.
pub const SLICE: Duration = Duration::from_millis(100);

/// The longest rest one file can cost (about a 64 MiB file at the highest pace the agent
/// sets): bounds how long a hashing thread is away even when the pace is extreme.
pub const MAX_REST: Duration = Duration::from_secs(300);

const MIB: u64 = 1024 * 1024;

/// How slowly scans hash: microseconds of rest per MiB about to be hashed, shared between the
/// process that sets it and the hashing threads that obey it. Cheap to read (one atomic).
#[derive(Debug, Default)]
pub struct Pace {
    micros_per_mib: AtomicU64,
}

impl Pace {
    /// No pacing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the rest per MiB hashed, in microseconds (0: no pacing). Takes effect for the
    /// next file, and for rests in progress at their next slice.
    pub fn set_micros_per_mib(&self, micros: u64) {
        self.micros_per_mib.store(micros, Ordering::Relaxed);
    }

    /// The rest per MiB hashed, in microseconds (0: no pacing).
    pub fn micros_per_mib(&self) -> u64 {
        self.micros_per_mib.load(Ordering::Relaxed)
    }

    /// The rest owed before hashing `bytes` (a file's size) at the current pace: at least
    /// [`MIN_CHARGE_BYTES`] are charged, at most [`MAX_REST`] is owed.
    pub fn rest_for(&self, bytes: u64) -> Duration {
        rest(self.micros_per_mib(), bytes)
    }

    /// Rests before hashing `bytes` as the pace says, in slices of [`SLICE`]. The rest owed is
    /// worked out again before each slice, so a pace lowered (or lifted: 0) meanwhile shortens
    /// a rest in progress; `cancel` ends it. Returns at once when not paced.
    pub fn pause(&self, bytes: u64, cancel: Option<&AtomicBool>) {
        let mut slept = Duration::ZERO;
        loop {
            let owed = self.rest_for(bytes).saturating_sub(slept);
            if owed.is_zero() || cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return;
            }
            let slice = owed.min(SLICE);
            std::thread::sleep(slice);
            slept = slept.saturating_add(slice);
        }
    }
}

/// `micros_per_mib` × `bytes` (at least [`MIN_CHARGE_BYTES`]) / 1 MiB, capped at [`MAX_REST`].
fn rest(micros_per_mib: u64, bytes: u64) -> Duration {
    if micros_per_mib == 0 {
        return Duration::ZERO;
    }
    let charged = u128::from(bytes.max(MIN_CHARGE_BYTES));
    let micros = u128::from(micros_per_mib) * charged / u128::from(MIB);
    let max = MAX_REST.as_micros();
    Duration::from_micros(u64::try_from(micros.min(max)).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_pace_costs_nothing() {
        let pace = Pace::new();
        assert_eq!(pace.rest_for(1 << 30), Duration::ZERO);
        // Nothing owed: a regression that slept would hang here and fail, not pass slowly.
        guestward_core::testing::within(Duration::from_secs(30), "an unpaced pause", move || {
            pace.pause(1 << 30, None)
        });
    }

    #[test]
    fn rest_is_proportional_to_size_with_a_floor_and_a_cap() {
        let pace = Pace::new();
        pace.set_micros_per_mib(10_000);
        assert_eq!(pace.rest_for(4 * MIB), Duration::from_millis(40));
        // An empty file costs as much as MIN_CHARGE_BYTES (1/16 MiB).
        assert_eq!(pace.rest_for(0), Duration::from_micros(625));
        pace.set_micros_per_mib(u64::MAX);
        assert_eq!(pace.rest_for(u64::MAX), MAX_REST);
    }

    #[test]
    fn a_cancelled_scan_does_not_rest() {
        let pace = Pace::new();
        pace.set_micros_per_mib(u64::MAX);
        assert_eq!(pace.rest_for(1 << 30), MAX_REST);
        // Owes MAX_REST, but the scan is cancelled: returns before the first slice.
        guestward_core::testing::within(Duration::from_secs(30), "a cancelled pause", move || {
            pace.pause(1 << 30, Some(&AtomicBool::new(true)))
        });
    }
}
