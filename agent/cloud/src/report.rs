//! The `cloud` section of the report.

use crate::config::EndpointSource;
use guestward_core::{Finding, Section, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the agent learned about the cloud it runs in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CloudReport {
    /// Where the agent stands with IMDS.
    pub state: CloudState,
    /// Why the state is what it is, in words (pre-check verdict, disabling setting...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How IMDS was reached; absent when it was not asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imds: Option<ImdsAccess>,
    /// Identity and placement; present when `state` is `ec2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<InstanceFacts>,
    /// Network interfaces, one per MAC address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<NetworkInterface>,
    /// The IAM instance profile, from `iam/info` (credentials are never read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam: Option<IamInfo>,
    /// Instance tags, if `instance-metadata-tags` is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    /// Lifecycle signals at collection time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<LifecycleSnapshot>,
    /// The signed instance identity document, kept for enrollment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityDocument>,
}

impl CloudReport {
    /// A report for a state where nothing was collected.
    pub fn without_facts(state: CloudState, reason: impl Into<String>) -> Self {
        Self {
            state,
            reason: Some(reason.into()),
            imds: None,
            instance: None,
            interfaces: Vec::new(),
            iam: None,
            tags: None,
            lifecycle: None,
            identity: None,
        }
    }

    /// The instance id, when known.
    pub fn instance_id(&self) -> Option<&str> {
        self.instance.as_ref().and_then(|i| i.instance_id.as_deref())
    }
}

/// One run of the cloud collector: what goes into a report.
#[derive(Debug, Clone)]
pub struct CloudScan {
    /// The section (skipped under a mounted root).
    pub section: Section<CloudReport>,
    /// Posture findings (`GW-IMDS-*`) drawn from the section's data.
    pub findings: Vec<Finding>,
    /// The instance id, when IMDS or the firmware told it (never under a mounted root).
    pub instance_id: Option<String>,
}

/// How requests are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccessMode {
    /// IMDSv2 session tokens.
    V2,
    /// Token-less IMDSv1 GETs because the token PUT was refused (403/404/405).
    V1Fallback,
}

/// Where the agent stands with IMDS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CloudState {
    /// IMDS answered: facts below.
    Ec2,
    /// The local pre-check says this is not an EC2 instance; IMDS was not asked.
    NotEc2,
    /// IMDS answered 403 to everything: it is turned off for this instance.
    ImdsDisabled,
    /// IMDS should be there but did not answer within the timeouts.
    Unreachable,
    /// IMDS is turned off in the agent's config or by `AWS_EC2_METADATA_DISABLED`.
    DisabledByConfig,
}

impl CloudState {
    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ec2 => "ec2",
            Self::NotEc2 => "not_ec2",
            Self::ImdsDisabled => "imds_disabled",
            Self::Unreachable => "unreachable",
            Self::DisabledByConfig => "disabled_by_config",
        }
    }
}

/// How IMDS was reached and how it behaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ImdsAccess {
    /// Base URL asked, e.g. `http://169.254.169.254`.
    pub endpoint: String,
    /// Where the endpoint came from.
    pub endpoint_source: EndpointSource,
    /// IMDSv2 tokens, or the IMDSv1 fallback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_mode: Option<AccessMode>,
    /// The status the token PUT was refused with, when the fallback was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_refused_status: Option<u16>,
    /// Whether a token-less GET is answered (IMDSv1 enabled). `None` when not probed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imdsv1_answers: Option<bool>,
    /// Lifetime of the session token in use, seconds (the token itself is never reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ttl_secs: Option<u64>,
    /// The PUT response hop limit as configured by the owner (`imds.http_put_response_hop_limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_hop_limit: Option<u8>,
    /// Whether a container runtime was found on the host (its socket exists).
    pub container_runtime_present: bool,
}

/// Identity and placement of the instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InstanceFacts {
    /// `i-0123456789abcdef0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// `m7g.large`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// AMI id the instance was launched from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ami_id: Option<String>,
    /// `eu-west-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// `eu-west-1a` (differs between accounts for the same zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// `euw1-az1` (the same in every account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone_id: Option<String>,
    /// Owning AWS account, from the identity document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// `x86_64` or `arm64`, from the identity document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// `on-demand`, `spot` or `scheduled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<String>,
    /// Primary private IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_ipv4: Option<String>,
    /// Public IPv4 address, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ipv4: Option<String>,
    /// IPv6 addresses of the primary interface.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipv6: Vec<String>,
    /// Private DNS name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_hostname: Option<String>,
    /// When the instance was launched (identity document `pendingTime`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_time: Option<String>,
}

/// One elastic network interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NetworkInterface {
    /// MAC address, the key IMDS lists interfaces by.
    pub mac: String,
    /// `eni-...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_id: Option<String>,
    /// Device index (0 is the primary interface).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_number: Option<u32>,
    /// `subnet-...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    /// `vpc-...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,
    /// `sg-...` ids attached to the interface.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_group_ids: Vec<String>,
    /// Private IPv4 addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub private_ipv4s: Vec<String>,
    /// Public IPv4 addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_ipv4s: Vec<String>,
    /// IPv6 addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipv6s: Vec<String>,
}

/// The instance profile, as `iam/info` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IamInfo {
    /// `arn:aws:iam::123456789012:instance-profile/name`.
    pub instance_profile_arn: String,
    /// The profile's name (the ARN's last path component).
    pub instance_profile_name: String,
    /// `AIPA...` id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_profile_id: Option<String>,
    /// When IMDS last refreshed this information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<String>,
}

/// Instance tags from IMDS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Tags {
    /// Tags in metadata are enabled; key to value.
    Enabled {
        /// Key to value (at most 50 tags, as EC2 allows).
        values: BTreeMap<String, String>,
    },
    /// `instance-metadata-tags` is disabled on the instance (IMDS answered 404).
    NotEnabled,
    /// The agent's config says not to read tags.
    NotCollected,
}

/// A scheduled maintenance event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MaintenanceEvent {
    /// `system-reboot`, `instance-stop`, `instance-retirement`...
    pub code: String,
    /// `instance-event-...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// AWS's description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Earliest start, as IMDS writes it (`21 Jan 2019 09:00:43 GMT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// Latest end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// `active`, `completed`, `canceled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// A spot interruption notice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SpotInstanceAction {
    /// `terminate`, `stop` or `hibernate`.
    pub action: String,
    /// When it will happen (RFC 3339, UTC).
    pub time: String,
}

/// Lifecycle signals: what is about to happen to the instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LifecycleSnapshot {
    /// Scheduled maintenance events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub maintenance_events: Vec<MaintenanceEvent>,
    /// A pending spot interruption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot_instance_action: Option<SpotInstanceAction>,
    /// When EC2 recommended rebalancing this spot instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalance_notice_time: Option<String>,
    /// Auto Scaling target lifecycle state (`InService`, `Terminated`, `Warmed:Stopped`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling_target_state: Option<String>,
}

impl LifecycleSnapshot {
    /// Whether the instance is about to stop or terminate.
    pub fn terminating(&self) -> bool {
        self.spot_instance_action.is_some()
            || self
                .autoscaling_target_state
                .as_deref()
                .is_some_and(|s| s == "Terminated" || s.starts_with("Warmed:"))
    }
}

/// The signed instance identity document, kept verbatim for enrollment (a collector verifies
/// the signature against AWS's public certificate for the region).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IdentityDocument {
    /// The document exactly as served (its bytes are what is signed).
    pub document: String,
    /// `rsa2048`: base64 PKCS#7 (CMS SignedData, RSA-2048/SHA-256) with the document inside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsa2048: Option<String>,
    /// `signature`: base64 RSA-SHA256 signature over the document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// When it was fetched.
    pub fetched_at: Timestamp,
}
