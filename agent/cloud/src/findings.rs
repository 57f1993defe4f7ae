//! Posture findings about the metadata service itself.

use crate::report::{AccessMode, CloudReport, CloudState};
use guestward_core::{Finding, Severity};
use serde_json::json;

/// IMDSv1 (token-less GETs) still answers.
pub const IMDSV1_ENABLED: &str = "GW-IMDS-001";
/// IMDSv2 is unavailable: the token PUT was refused and the agent fell back to IMDSv1.
pub const IMDSV2_UNAVAILABLE: &str = "GW-IMDS-002";
/// PUT response hop limit above 1 with no container runtime on the host.
pub const HOP_LIMIT_ABOVE_ONE: &str = "GW-IMDS-003";
/// An instance profile is attached: its role's permissions deserve a review.
pub const INSTANCE_PROFILE_ATTACHED: &str = "GW-IMDS-004";
/// Every finding id [`findings`] can raise (for the finding catalogue).
pub const FINDING_IDS: &[&str] =
    &[IMDSV1_ENABLED, IMDSV2_UNAVAILABLE, HOP_LIMIT_ABOVE_ONE, INSTANCE_PROFILE_ATTACHED];

const SOURCE: &str = "cloud";

fn instance_arg(report: &CloudReport) -> String {
    // Only an id of an instance id's shape goes into a command an operator pastes.
    report
        .instance_id()
        .filter(|id| crate::precheck::looks_like_instance_id(id))
        .map(|id| format!("--instance-id {id}"))
        .unwrap_or_else(|| "--instance-id <instance-id>".to_string())
}

/// The findings a report supports. Only an `ec2` report can raise any.
pub fn findings(report: &CloudReport) -> Vec<Finding> {
    let mut out = Vec::new();
    if report.state != CloudState::Ec2 {
        return out;
    }
    let Some(imds) = &report.imds else { return out };
    let instance = instance_arg(report);
    if imds.imdsv1_answers == Some(true) {
        out.push(Finding {
            id: IMDSV1_ENABLED.to_string(),
            severity: Severity::High,
            title: "IMDSv1 is enabled: instance metadata answers requests without a session token".to_string(),
            evidence: json!({
                "endpoint": imds.endpoint,
                "tokenless_get_status": 200,
                "access_mode": imds.access_mode,
            }),
            remediation: format!(
                "Require IMDSv2 session tokens (an SSRF bug in any local service can otherwise read metadata and \
                 role credentials): aws ec2 modify-instance-metadata-options {instance} --http-tokens required \
                 --http-endpoint enabled"
            ),
            source: SOURCE.to_string(),
        });
    }
    if imds.access_mode == Some(AccessMode::V1Fallback) {
        out.push(Finding {
            id: IMDSV2_UNAVAILABLE.to_string(),
            severity: Severity::Medium,
            title: "IMDSv2 is unavailable: the token request was refused and the agent used IMDSv1".to_string(),
            evidence: json!({
                "endpoint": imds.endpoint,
                "token_put_status": imds.token_refused_status,
            }),
            remediation: format!(
                "Check that nothing between the instance and 169.254.169.254 (proxy, firewall, iptables rule) blocks \
                 PUT /latest/api/token, then require tokens: aws ec2 modify-instance-metadata-options {instance} \
                 --http-tokens required"
            ),
            source: SOURCE.to_string(),
        });
    }
    if let Some(hops) = imds.declared_hop_limit.filter(|h| *h > 1)
        && !imds.container_runtime_present
    {
        out.push(Finding {
            id: HOP_LIMIT_ABOVE_ONE.to_string(),
            severity: Severity::Info,
            title: format!("IMDS PUT response hop limit is {hops} while no container runtime runs on the host"),
            evidence: json!({ "http_put_response_hop_limit": hops, "container_runtime_present": false }),
            remediation: format!(
                "Without containers a hop limit of 1 is enough and keeps tokens from being forwarded beyond the \
                 instance: aws ec2 modify-instance-metadata-options {instance} --http-put-response-hop-limit 1"
            ),
            source: SOURCE.to_string(),
        });
    }
    if let Some(iam) = &report.iam {
        out.push(Finding {
            id: INSTANCE_PROFILE_ATTACHED.to_string(),
            severity: Severity::Info,
            title: format!("Instance profile `{}` is attached; review its role's permissions", iam.instance_profile_name),
            evidence: json!({
                "instance_profile_name": iam.instance_profile_name,
                "instance_profile_arn": iam.instance_profile_arn,
            }),
            remediation: format!(
                "Every process on this host that can reach IMDS can act with this role. Review it (aws iam \
                 get-instance-profile --instance-profile-name {}) and keep its policies to what the workload needs.",
                iam.instance_profile_name
            ),
            source: SOURCE.to_string(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EndpointSource;
    use crate::report::{IamInfo, ImdsAccess};
    use std::collections::BTreeSet;

    #[test]
    fn finding_ids_lists_every_id_the_findings_raise() {
        // A report with every risk at once: each finding fires.
        let mut report = CloudReport::without_facts(CloudState::Ec2, "fixture");
        report.imds = Some(ImdsAccess {
            endpoint: "http://169.254.169.254".to_string(),
            endpoint_source: EndpointSource::Default,
            access_mode: Some(AccessMode::V1Fallback),
            token_refused_status: Some(403),
            imdsv1_answers: Some(true),
            token_ttl_secs: None,
            declared_hop_limit: Some(2),
            container_runtime_present: false,
        });
        report.iam = Some(IamInfo {
            instance_profile_arn: "arn:aws:iam::123456789012:instance-profile/web".to_string(),
            instance_profile_name: "web".to_string(),
            instance_profile_id: None,
            last_updated: None,
        });
        let raised: BTreeSet<String> = findings(&report).into_iter().map(|f| f.id).collect();
        let listed: BTreeSet<String> = FINDING_IDS.iter().map(|s| s.to_string()).collect();
        assert_eq!(raised, listed);
        assert_eq!(listed.len(), FINDING_IDS.len(), "no id listed twice");
    }
}
