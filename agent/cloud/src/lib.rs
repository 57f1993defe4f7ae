//! Cloud identity for guestward: which EC2 instance the agent runs on, whether the Instance
//! Metadata Service itself is a risk, and what is about to happen to the instance.
//!
//! Always available (no I/O):
//! - [`CloudReport`] and the other model types of the report's `cloud` section, and
//!   [`CloudScan`], one collection's output.
//! - [`ImdsConfig`]: the `[imds]` config section, its validation and how it combines with the
//!   SDKs' `AWS_EC2_METADATA_*` environment variables ([`resolve`]).
//! - [`findings`]: posture findings (`GW-IMDS-*`, every id in [`FINDING_IDS`]) drawn from a
//!   report.
//! - [`render_table`]: the human view.
//! - The `lifecycle.*` event kinds ([`TERMINATING`] and the others).
//!
//! With the default `collect` feature (the I/O):
//! - [`ImdsClient`]: IMDSv2 the way the AWS SDKs do it (token PUT, cached token refreshed
//!   before expiry and on 401, 1 s timeouts and one retry, no proxy, capped bodies, IMDSv1
//!   fallback only when allowed).
//! - [`CloudCollector`]: the long-lived collector, built once from the validated config and
//!   owned by the caller; [`CloudCollector::scan`] yields the section, its findings and the
//!   instance id. A local DMI pre-check keeps an off-EC2 host from ever waiting on
//!   169.254.169.254. The crate runs no runtime of its own: callers bring theirs.
//! - [`LifecycleWatcher`]: spot/maintenance/rebalance/Auto Scaling polling into `lifecycle.*`
//!   events, on the collector's own client ([`CloudCollector::lifecycle_watcher`]) so a
//!   process holds one IMDS client and one token.
//! - [`verify_rsa2048`] / [`verify_signature`]: check the signed identity document with a
//!   region's public key (for enrollment).
//!
//! Credentials are never requested (`iam/security-credentials` is refused by the client) and
//! the IMDSv2 token never leaves the client.

// Output goes through `guestward_core::stdio`: the print macros panic when a write fails.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

#[cfg(feature = "collect")]
mod client;
#[cfg(feature = "collect")]
mod collect;
mod config;
#[cfg(feature = "collect")]
mod documents;
mod findings;
mod lifecycle;
mod precheck;
mod render;
mod report;
#[cfg(feature = "collect")]
mod verify;

/// The `imds_answers` fuzz target's entry (`fuzz/`), also replayed by the crate's tests.
#[cfg(feature = "collect")]
#[doc(hidden)]
pub mod fuzzing;

#[cfg(feature = "collect")]
pub use client::{ClientStats, Fetched, ImdsClient, ImdsError, ImdsToken};
#[cfg(feature = "collect")]
pub use collect::{CloudCollector, CloudOutcome, CollectorError, fetch_lifecycle, fetch_spot_action};
pub use config::{
    ClientSettings, ConfigError, EndpointMode, EndpointSource, IPV4_ENDPOINT, IPV6_ENDPOINT, ImdsConfig,
    MAX_TOKEN_TTL_SECS, Resolved, ResolvedEndpoint, process_env, resolve,
};
pub use findings::{
    FINDING_IDS, HOP_LIMIT_ABOVE_ONE, IMDSV1_ENABLED, IMDSV2_UNAVAILABLE, INSTANCE_PROFILE_ATTACHED, findings,
};
#[cfg(feature = "collect")]
pub use lifecycle::LifecycleWatcher;
pub use lifecycle::{
    AUTOSCALING_STATE_CHANGED, EVENT_KINDS, MAINTENANCE_SCHEDULED, REBALANCE_RECOMMENDED, TERMINATING,
};
pub use precheck::{Ec2Hint, looks_like_instance_id};
#[cfg(feature = "collect")]
pub use precheck::{container_runtime_present, ec2_hint, instance_id_from_firmware};
pub use render::render_table;
pub use report::{
    AccessMode, CloudReport, CloudScan, CloudState, IamInfo, IdentityDocument, ImdsAccess, InstanceFacts,
    LifecycleSnapshot, MaintenanceEvent, NetworkInterface, SpotInstanceAction, Tags,
};
#[cfg(feature = "collect")]
pub use verify::{VerifyError, verify_rsa2048, verify_signature};
