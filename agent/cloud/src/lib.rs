//! Cloud identity for guestward: which EC2 instance the agent runs on, whether the Instance
//! Metadata Service itself is a risk, and what is about to happen to the instance.
//!
//! - [`ImdsClient`]: IMDSv2 the way the AWS SDKs do it (token PUT, cached token refreshed
//!   before expiry and on 401, 1 s timeouts and one retry, no proxy, capped bodies, IMDSv1
//!   fallback only when allowed), plus the SDKs' `AWS_EC2_METADATA_*` environment variables.
//! - [`CloudCollector`]: config + [`guestward_core::HostRoot`] to the report's `cloud`
//!   section ([`CloudReport`]), with a local DMI pre-check so an off-EC2 host never waits on
//!   169.254.169.254.
//! - [`findings`]: posture findings (`GW-IMDS-*`).
//! - [`LifecycleWatcher`]: spot/maintenance/rebalance/Auto Scaling polling into
//!   `lifecycle.*` events for the daemon.
//! - [`render_table`]: the human view.
//! - [`verify_rsa2048`] / [`verify_signature`]: check the signed identity document with a
//!   region's public key (for enrollment).
//!
//! Credentials are never requested (`iam/security-credentials` is refused by the client) and
//! the IMDSv2 token never leaves the client.

mod client;
mod collect;
mod config;
mod findings;
mod lifecycle;
mod precheck;
mod render;
mod report;
mod verify;

pub use client::{AccessMode, ClientStats, Fetched, ImdsClient, ImdsError, ImdsToken};
pub use collect::{
    CloudCollector, CloudOutcome, CloudScan, CollectorError, container_runtime_present, fetch_lifecycle,
    fetch_spot_action, scan_blocking,
};
pub use config::{
    ClientSettings, ConfigError, EndpointMode, EndpointSource, IPV4_ENDPOINT, IPV6_ENDPOINT, ImdsConfig,
    MAX_TOKEN_TTL_SECS, Resolved, ResolvedEndpoint, process_env, resolve,
};
pub use findings::{
    HOP_LIMIT_ABOVE_ONE, IMDSV1_ENABLED, IMDSV2_UNAVAILABLE, INSTANCE_PROFILE_ATTACHED, findings,
};
pub use lifecycle::{
    AUTOSCALING_STATE_CHANGED, LifecycleWatcher, MAINTENANCE_SCHEDULED, REBALANCE_RECOMMENDED, TERMINATING,
};
pub use precheck::{Ec2Hint, ec2_hint, instance_id_from_firmware, looks_like_instance_id};
pub use render::render_table;
pub use report::{
    CloudReport, CloudState, IamInfo, IdentityDocument, ImdsAccess, InstanceFacts, LifecycleSnapshot,
    MaintenanceEvent, NetworkInterface, SpotInstanceAction, Tags,
};
pub use verify::{VerifyError, verify_rsa2048, verify_signature};
