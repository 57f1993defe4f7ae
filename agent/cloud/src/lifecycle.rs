//! Lifecycle signals: spot interruptions, scheduled maintenance, rebalance recommendations and
//! the Auto Scaling target state, turned into report events while the daemon runs.
//!
//! On `lifecycle.terminating` the daemon flushes its spool at once and reports the
//! `terminating` state, so the collector does not alert when the host disappears.
//!
//! The event kinds are always available; the watcher that polls IMDS is part of `collect`.

#[cfg(feature = "collect")]
mod watcher;
#[cfg(feature = "collect")]
pub use watcher::LifecycleWatcher;

/// The instance will stop, hibernate or terminate soon (spot notice or Auto Scaling).
pub const TERMINATING: &str = "lifecycle.terminating";
/// EC2 recommends moving work off this spot instance.
pub const REBALANCE_RECOMMENDED: &str = "lifecycle.rebalance_recommended";
/// A maintenance event was scheduled (reboot, stop, retirement).
pub const MAINTENANCE_SCHEDULED: &str = "lifecycle.maintenance_scheduled";
/// The Auto Scaling target lifecycle state changed.
pub const AUTOSCALING_STATE_CHANGED: &str = "lifecycle.autoscaling_state_changed";
/// Every event kind the watcher emits.
pub const EVENT_KINDS: &[&str] =
    &[TERMINATING, REBALANCE_RECOMMENDED, MAINTENANCE_SCHEDULED, AUTOSCALING_STATE_CHANGED];
