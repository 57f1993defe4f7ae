//! Glue from configuration to each collector crate: one file per collector, each turning
//! `(HostRoot, its config)` into its report section. The collector crates know nothing of the
//! envelope; this is the only place that does.

/// Cloud identity (EC2 instance metadata).
pub mod cloud;
/// Host facts.
pub mod host;
/// Network exposure.
pub mod network;
/// Software inventory.
pub mod packages;
