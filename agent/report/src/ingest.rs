//! The reporting protocol between an agent's shipper and a collector (HTTPS with mutual TLS).
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | POST | `/v1/reports` | [`IngestRequest`] (JSON; `Content-Encoding: zstd` allowed) | [`IngestResponse`] |
//! | GET | `/v1/hosts` | | [`HostList`] |
//! | GET | `/v1/hosts/{host_id}` | | [`HostDetail`] |
//! | GET | `/v1/findings[?id=GW-FIM-006&id=GW-PKG-*&min_severity=high]` | | [`FleetFindings`] |
//! | GET | `/healthz` | | [`Health`] |
//!
//! Every error is an [`ErrorBody`] with a status that says what to do:
//! 400 (unreadable request), 401 (no usable client identity), 403 (a report for another host
//! id, or a client that may not read), 413 (body or decompressed body over the limit),
//! 415 (unsupported `Content-Encoding`), 422 (malformed JSON, schema mismatch, unknown
//! `schema_version`), 429 and 503 (retry after the `Retry-After` header's seconds).
//!
//! A request is all or nothing: one refused report refuses the request and stores nothing.
//! Storage is idempotent on `batch_id`: a batch sent again (its acknowledgement was lost) is
//! answered [`BatchStatus::Duplicate`] and not stored twice, so at-least-once delivery becomes
//! exactly-once storage. `sequence` lets the collector count gaps per host.

use crate::Report;
use guestward_core::{Event, Finding, Timestamp};
use serde::{Deserialize, Serialize};

/// The path reports are posted to.
pub const REPORTS_PATH: &str = "/v1/reports";
/// The path of the fleet's findings ([`FleetFindings`]).
pub const FINDINGS_PATH: &str = "/v1/findings";
/// The most findings one [`FleetFindings`] answer lists.
pub const MAX_FLEET_FINDINGS: usize = 10_000;
/// The most bytes of findings (as JSON) one [`FleetFindings`] answer holds.
pub const MAX_FLEET_FINDINGS_BYTES: u64 = 8 * 1024 * 1024;
/// The `schema_version`s a collector of this build accepts.
pub const ACCEPTED_SCHEMA_VERSIONS: &[u32] = &[crate::SCHEMA_VERSION];

/// `POST /v1/reports`: one or more spooled reports of one host, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestRequest {
    /// The reports, each with its own `batch_id` and `sequence`.
    pub reports: Vec<Report>,
}

/// The answer to an accepted [`IngestRequest`]: one result per report, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestResponse {
    /// What became of each report.
    pub results: Vec<BatchResult>,
}

/// What became of one report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResult {
    /// The report's `batch_id`.
    pub batch_id: String,
    /// The report's `sequence`.
    pub sequence: Option<u64>,
    /// Stored now, or already stored by an earlier delivery.
    pub status: BatchStatus,
}

/// Whether a batch was new. Either way the agent may delete it from its spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    /// Stored by this request.
    Stored,
    /// Already stored (same `batch_id`); nothing changed.
    Duplicate,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable code: `bad_request`, `unauthenticated`, `forbidden`, `too_large`,
    /// `unsupported_encoding`, `invalid_report`, `rate_limited`, `unavailable`, `not_found`.
    pub error: String,
    /// What was wrong, for a human (names the report's `batch_id` and field when it can).
    pub message: String,
}

/// `GET /v1/hosts`: every host that has reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostList {
    /// Ordered by host id.
    pub hosts: Vec<HostSummary>,
}

/// One host's delivery record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSummary {
    /// The host id (bound to the client certificate that delivered its reports).
    pub host_id: String,
    /// Reports stored (duplicates not counted).
    pub reports_stored: u64,
    /// The highest `sequence` stored.
    pub last_sequence: Option<u64>,
    /// Sequence numbers below `last_sequence` never received (reports lost or dropped by the
    /// agent's spool), counted from the first sequence stored.
    pub missing_sequences: u64,
    /// When the host last delivered reports (stored or duplicate).
    pub last_seen: Timestamp,
    /// Seconds from `last_seen` to when the collector answered, by the collector's clock: how
    /// long the host has been silent, on the clock its retention measures it with (a host silent
    /// longer than `[retention] forget_idle_hosts_after_days` is deleted). 0 from a collector
    /// that predates the field.
    #[serde(default)]
    pub secs_since_last_seen: u64,
    /// What the host's reports, findings, events and tombstones take in the collector's store,
    /// as counted against `[retention] max_bytes_per_host`. 0 from a collector that predates
    /// the field.
    #[serde(default)]
    pub stored_bytes: u64,
    /// `collected_at` of the latest report.
    pub last_collected_at: Timestamp,
    /// The agent version of the latest report.
    pub agent_version: String,
    /// The client certificate of the latest delivery.
    pub client_certificate: Option<CertificateInfo>,
}

/// A certificate as the collector saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateInfo {
    /// Serial number, hexadecimal.
    pub serial: String,
    /// SHA-256 of the DER certificate, hexadecimal.
    pub sha256: String,
    /// End of validity.
    pub not_after: Timestamp,
}

/// `GET /v1/hosts/{host_id}`: the host's latest state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostDetail {
    /// The delivery record.
    pub summary: HostSummary,
    /// The latest report with every section (the newest report that carried each section
    /// is not merged: this is the latest report as sent).
    pub latest_report: Option<Report>,
    /// The latest report's findings.
    pub findings: Vec<Finding>,
    /// The most recent events across reports, newest last: at most 100, and at most 1 MiB of
    /// them as JSON (a host, or whoever holds its certificate, decides how large its events
    /// are; the answer stays bounded).
    pub recent_events: Vec<Event>,
    /// Recent events left out of `recent_events` by its size bound.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recent_events_omitted: u64,
}

/// `GET /v1/findings`: which hosts have which findings now, across the fleet. The findings
/// are those of each host's latest report, as `GET /v1/hosts/{host_id}` shows them, filtered
/// by the query: `id` (repeatable; an exact id, or a prefix ending in `*`: `GW-FIM-*`) and
/// `min_severity` (`info`, `low`, `medium`, `high`, `critical`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetFindings {
    /// Hosts whose latest report was searched (every stored host).
    pub hosts_searched: u64,
    /// The findings that match, by host id, then in their report's order: at most
    /// [`MAX_FLEET_FINDINGS`], and at most [`MAX_FLEET_FINDINGS_BYTES`] of them as JSON.
    pub findings: Vec<HostFinding>,
    /// Findings that match but were left out by those bounds: narrow the query to see them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: u64,
}

/// A finding of a host's latest report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostFinding {
    /// The host.
    pub host_id: String,
    /// The `sequence` of the report that carries it (the host's latest).
    pub sequence: u64,
    /// `collected_at` of that report.
    pub collected_at: Timestamp,
    /// The finding as the agent sent it.
    pub finding: Finding,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok` when the store answers.
    pub status: String,
}
