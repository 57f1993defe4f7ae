//! The entry of the `imds_answers` fuzz target (`fuzz/`) and of the test that replays its
//! corpus: any bytes as the metadata service's answers, read by the collector's own readers
//! ([`crate::documents`]) into a report, which is then drawn into findings, rendered for a
//! terminal, written as JSON, and its signed document checked. Not part of the crate's API.

use crate::documents::{
    IdentityFields, answer_text, encode_segment, iam_info, interface_mac, maintenance_events,
    rebalance_notice_time, split_lines, spot_action,
};
use crate::report::{
    AccessMode, CloudReport, CloudState, IdentityDocument, ImdsAccess, InstanceFacts, LifecycleSnapshot,
    NetworkInterface, Tags,
};
use crate::{EndpointSource, findings, render_table, verify_rsa2048, verify_signature};
use guestward_core::Timestamp;
use std::collections::BTreeMap;

/// The answers an input is cut into, in this order (the fuzz target and the replay test cut
/// at each `\n\x1e\n` line with `guestward_core::testing::fuzz_parts`).
pub const PARTS: [&str; 10] = [
    "meta-data/instance-id",
    "dynamic/instance-identity/document",
    "dynamic/instance-identity/rsa2048",
    "dynamic/instance-identity/signature",
    "meta-data/iam/info",
    "meta-data/events/maintenance/scheduled",
    "meta-data/spot/instance-action",
    "meta-data/events/recommendations/rebalance",
    "meta-data/network/interfaces/macs/",
    "meta-data/tags/instance",
];

/// Reads `parts` (see [`PARTS`]; missing ones are 404s, text that is not UTF-8 is refused as
/// the client refuses it) and returns how many of the JSON documents were read.
///
/// Panics when the report breaks a promise: a MAC or an encoded tag key that could change a
/// request's path, a rendered table that could drive a terminal, JSON that does not read back
/// as the same report.
pub fn imds_answers(parts: &[&[u8]]) -> usize {
    let answer = |i: usize| parts.get(i).and_then(|p| std::str::from_utf8(p).ok());
    let text = |i: usize| answer(i).and_then(answer_text);
    let mut read = 0;

    let mut instance = InstanceFacts { instance_id: text(0), ..Default::default() };
    let _ = instance.instance_id.as_deref().map(crate::looks_like_instance_id);
    let document = text(1);
    if let Some(fields) = document.as_deref().and_then(|d| IdentityFields::read(d).ok()) {
        fields.fill(&mut instance);
        read += 1;
    }
    let identity = document.map(|document| IdentityDocument {
        document,
        rsa2048: text(2),
        signature: text(3),
        fetched_at: Timestamp::now(),
    });
    if let Some(id) = &identity {
        // No key can be right: the signed content is parsed all the way to the signature.
        if let Some(rsa2048) = &id.rsa2048 {
            let _ = verify_rsa2048(rsa2048, &[]);
        }
        if let Some(signature) = &id.signature {
            let _ = verify_signature(&id.document, signature, &[]);
        }
    }
    let iam = text(4).and_then(|b| iam_info(&b).ok());
    read += usize::from(iam.is_some());
    let maintenance = text(5).and_then(|b| maintenance_events(&b).ok());
    read += usize::from(maintenance.is_some());
    let spot = text(6).and_then(|b| spot_action(&b).ok());
    read += usize::from(spot.is_some());
    let rebalance = text(7).and_then(|b| rebalance_notice_time(&b).ok());
    read += usize::from(rebalance.is_some());

    let interfaces = text(8)
        .map(|list| split_lines(&list))
        .unwrap_or_default()
        .iter()
        .filter_map(|entry| interface_mac(entry))
        .map(|mac| {
            assert!(mac.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'), "{mac:?} taken for a MAC");
            NetworkInterface { mac: mac.to_string(), ..Default::default() }
        })
        .collect();
    let mut values = BTreeMap::new();
    for key in answer(9).map(split_lines).unwrap_or_default() {
        let segment = encode_segment(&key);
        assert!(
            segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)),
            "tag key {key:?} encoded as {segment:?}"
        );
        values.insert(key.clone(), key);
    }

    let report = CloudReport {
        state: CloudState::Ec2,
        reason: None,
        imds: Some(ImdsAccess {
            endpoint: "http://169.254.169.254".to_string(),
            endpoint_source: EndpointSource::Default,
            access_mode: Some(AccessMode::V2),
            token_refused_status: None,
            imdsv1_answers: Some(false),
            token_ttl_secs: Some(21_600),
            declared_hop_limit: None,
            container_runtime_present: false,
        }),
        instance: Some(instance),
        interfaces,
        iam,
        tags: Some(Tags::Enabled { values }),
        lifecycle: Some(LifecycleSnapshot {
            maintenance_events: maintenance.unwrap_or_default(),
            spot_instance_action: spot,
            rebalance_notice_time: rebalance,
            autoscaling_target_state: None,
        }),
        identity,
    };
    let _ = findings(&report);

    let mut table = Vec::new();
    if render_table(&report, &mut table).is_ok() {
        let table = String::from_utf8(table).unwrap_or_else(|e| panic!("the table is not UTF-8: {e}"));
        if let Some(c) = table.chars().find(|&c| drives_a_terminal(c)) {
            panic!("the table holds {c:?}:\n{table}");
        }
    }
    let json =
        serde_json::to_string(&report).unwrap_or_else(|e| panic!("the report does not serialise: {e}"));
    let back: CloudReport = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("the report's JSON does not read back: {e}\n{json}"));
    assert!(back == report, "the report's JSON reads back as another report:\n{json}");
    read
}

/// A character a table must never hold raw: controls other than newline and tab, and the
/// bidi marks, embeddings, overrides and isolates. Written here rather than taken from
/// `guestward_core::text`, so that the oracle does not share the code it checks.
fn drives_a_terminal(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}
