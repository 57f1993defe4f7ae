//! What the metadata service's answers say, read without I/O: its JSON documents (the identity
//! document, `iam/info`, the maintenance events, the spot notice, the rebalance
//! recommendation), its newline lists, and the MACs and tag keys that become parts of later
//! request paths.
//!
//! The answers are the service's, but an endpoint can be pointed elsewhere (`imds.endpoint`,
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT`), and tags are written by whoever may tag the instance:
//! every reader here takes any text, bounded by the client's body cap, and is fuzzed
//! (`fuzz/fuzz_targets/imds_answers.rs`).

use crate::report::{IamInfo, InstanceFacts, MaintenanceEvent, SpotInstanceAction};
use serde::Deserialize;

/// The most entries kept from a list or from the maintenance events.
pub(crate) const MAX_LIST_ITEMS: usize = 256;

/// The identity document's fields the report uses (the document itself is kept whole).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IdentityFields {
    account_id: Option<String>,
    architecture: Option<String>,
    region: Option<String>,
    availability_zone: Option<String>,
    image_id: Option<String>,
    instance_id: Option<String>,
    instance_type: Option<String>,
    pending_time: Option<String>,
    private_ip: Option<String>,
}

impl IdentityFields {
    /// Reads `/latest/dynamic/instance-identity/document`.
    pub(crate) fn read(document: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(document)
    }

    /// Adds what only the document carries (account, architecture, pending time) to
    /// `instance`, and fills the items a single request failed to read.
    pub(crate) fn fill(self, instance: &mut InstanceFacts) {
        instance.account_id = self.account_id;
        instance.architecture = self.architecture;
        instance.pending_time = self.pending_time;
        instance.instance_id = instance.instance_id.take().or(self.instance_id);
        instance.instance_type = instance.instance_type.take().or(self.instance_type);
        instance.ami_id = instance.ami_id.take().or(self.image_id);
        instance.region = instance.region.take().or(self.region);
        instance.availability_zone = instance.availability_zone.take().or(self.availability_zone);
        instance.private_ipv4 = instance.private_ipv4.take().or(self.private_ip);
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawIamInfo {
    instance_profile_arn: String,
    instance_profile_id: Option<String>,
    last_updated: Option<String>,
}

/// Reads `/latest/meta-data/iam/info` (it names the profile without handing out credentials).
pub(crate) fn iam_info(body: &str) -> Result<IamInfo, serde_json::Error> {
    let r: RawIamInfo = serde_json::from_str(body)?;
    Ok(IamInfo {
        instance_profile_name: r.instance_profile_arn.rsplit('/').next().unwrap_or_default().to_string(),
        instance_profile_arn: r.instance_profile_arn,
        instance_profile_id: r.instance_profile_id,
        last_updated: r.last_updated,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawMaintenance {
    code: String,
    event_id: Option<String>,
    description: Option<String>,
    not_before: Option<String>,
    not_after: Option<String>,
    state: Option<String>,
}

/// Reads `/latest/meta-data/events/maintenance/scheduled`: the first [`MAX_LIST_ITEMS`].
pub(crate) fn maintenance_events(body: &str) -> Result<Vec<MaintenanceEvent>, serde_json::Error> {
    let list: Vec<RawMaintenance> = serde_json::from_str(body)?;
    Ok(list
        .into_iter()
        .take(MAX_LIST_ITEMS)
        .map(|m| MaintenanceEvent {
            code: m.code,
            event_id: m.event_id,
            description: m.description,
            not_before: m.not_before,
            not_after: m.not_after,
            state: m.state,
        })
        .collect())
}

#[derive(Deserialize)]
struct RawSpot {
    action: String,
    time: String,
}

/// Reads `/latest/meta-data/spot/instance-action`.
pub(crate) fn spot_action(body: &str) -> Result<SpotInstanceAction, serde_json::Error> {
    let r: RawSpot = serde_json::from_str(body)?;
    Ok(SpotInstanceAction { action: r.action, time: r.time })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRebalance {
    notice_time: String,
}

/// Reads `/latest/meta-data/events/recommendations/rebalance`: its notice time.
pub(crate) fn rebalance_notice_time(body: &str) -> Result<String, serde_json::Error> {
    let r: RawRebalance = serde_json::from_str(body)?;
    Ok(r.notice_time)
}

/// An item's answer as the report keeps it: trimmed, `None` when nothing is left.
pub(crate) fn answer_text(body: &str) -> Option<String> {
    Some(body.trim()).filter(|s| !s.is_empty()).map(str::to_string)
}

/// A newline list's entries, trimmed, without empty lines: the first [`MAX_LIST_ITEMS`].
pub(crate) fn split_lines(s: &str) -> Vec<String> {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).take(MAX_LIST_ITEMS).map(str::to_string).collect()
}

/// An entry of `network/interfaces/macs/` as the MAC it names (`0e:..:ff/` without its
/// slash), or `None` when it is anything else: the MAC becomes part of the next request's
/// path, so only hex digits and colons may.
pub(crate) fn interface_mac(entry: &str) -> Option<&str> {
    let mac = entry.trim_end_matches('/');
    (!mac.is_empty() && mac.bytes().all(|b| b.is_ascii_hexdigit() || b == b':')).then_some(mac)
}

/// Percent-encodes one path segment (tag keys may contain spaces, `/`, `?` and `%`).
pub(crate) fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("Name"), "Name");
        assert_eq!(encode_segment("cost center"), "cost%20center");
        assert_eq!(encode_segment("a/b?c"), "a%2Fb%3Fc");
    }
}
