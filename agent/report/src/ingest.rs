//! The reporting protocol between an agent's shipper and a collector (HTTPS with mutual TLS).
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | POST | `/v1/reports` | [`IngestRequest`] (JSON; `Content-Encoding: zstd` allowed) | [`IngestResponse`] |
//! | GET | `/v1/hosts` | | [`HostList`] |
//! | GET | `/v1/hosts/{host_id}` | | [`HostDetail`] |
//! | GET | `/v1/findings[?id=GW-FIM-006&id=GW-PKG-*&min_severity=high]` | | [`FleetFindings`] |
//! | GET | `/v1/packages?name=xz-utils[&version=5.6.0&version=5.6.1][&below=5.6.2][&source=dpkg]` | | [`FleetPackages`] |
//! | GET | `/v1/listeners[?port=6379&port=6380][&protocol=tcp][&scope=all-interfaces][&process=redis*][&public=true]` | | [`FleetListeners`] |
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
/// The path of the fleet's package search ([`FleetPackages`]).
pub const PACKAGES_PATH: &str = "/v1/packages";
/// The most (host, package) rows one [`FleetPackages`] answer lists.
pub const MAX_FLEET_PACKAGES: usize = 10_000;
/// The most distinct package versions one [`FleetPackages`] answer counts hosts for.
pub const MAX_FLEET_PACKAGE_VERSIONS: usize = 10_000;
/// The path of the fleet's listener search ([`FleetListeners`]).
pub const LISTENERS_PATH: &str = "/v1/listeners";
/// The most (host, listener) rows one [`FleetListeners`] answer lists.
pub const MAX_FLEET_LISTENERS: usize = 10_000;
/// The most distinct services (protocol, port, scope, process) one [`FleetListeners`] answer
/// counts hosts for.
pub const MAX_FLEET_SERVICES: usize = 10_000;
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

/// `GET /v1/packages`: which hosts have which versions of a package now, across the fleet
/// ("which hosts still run xz-utils 5.6.0?"). Each host's packages are those of its newest
/// report that carried a package inventory, as the agent read them (dpkg, rpm and language
/// packages); a host indexed by no report yet (stored before this search existed, or whose
/// reports carry no inventory) is counted in `hosts_without_inventory`. The query:
/// `name` (required; exact, or with `*` standing for any characters: `openssl*`,
/// `*log4j-core`), `version` (repeatable; exact versions), `below` (versions lower than this one
/// in the package manager's own order: dpkg's for dpkg, `rpmvercmp` for rpm, rpm's segment
/// order for language packages) and `source` (`dpkg`, `rpm`, `pypi`, `maven`, `npm`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetPackages {
    /// Hosts stored.
    pub hosts_searched: u64,
    /// Hosts with no package inventory indexed: they cannot be answered for.
    pub hosts_without_inventory: u64,
    /// Hosts with at least one matching package.
    pub hosts_matching: u64,
    /// Each matching version and how many hosts have it, by name, source and version: at
    /// most [`MAX_FLEET_PACKAGE_VERSIONS`].
    pub versions: Vec<PackageVersionCount>,
    /// Each matching package of each host, in the same order, then by host id: at most
    /// [`MAX_FLEET_PACKAGES`].
    pub packages: Vec<HostPackage>,
    /// Matching (host, package) rows left out of `packages` by its bound: narrow the query
    /// (`version`, `below`, `source`) or read `versions`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: u64,
    /// Matching versions left out of `versions` by its bound (their hosts are still in
    /// `hosts_matching`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub versions_omitted: u64,
}

/// A package as the fleet search names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PackageKey {
    /// `dpkg`, `rpm`, `pypi`, `maven` or `npm`.
    pub source: String,
    /// The name as the agent reported it.
    pub name: String,
    /// The version (`[epoch:]version[-release]` for rpm).
    pub version: String,
    /// Architecture (dpkg, rpm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// `below` was asked and this version cannot be ordered against it (a version string the
    /// package manager's rule does not parse): listed, so that nothing is hidden, and marked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub order_unknown: bool,
}

/// One version of a package and how many hosts have it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageVersionCount {
    /// The package.
    #[serde(flatten)]
    pub package: PackageKey,
    /// Hosts that have it (a host with it in several places counts once).
    pub hosts: u64,
}

/// One package of one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPackage {
    /// The host.
    pub host_id: String,
    /// The package.
    #[serde(flatten)]
    pub package: PackageKey,
    /// Where it is installed (language packages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// `sequence` of the report the host's inventory comes from.
    pub sequence: u64,
    /// `collected_at` of that report: how old the answer is for this host.
    pub collected_at: Timestamp,
}

/// `GET /v1/listeners`: which hosts listen on which ports, from each host's latest report
/// that carried a network scan ("which hosts expose Redis on every interface?").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetListeners {
    /// Hosts stored.
    pub hosts_searched: u64,
    /// Hosts with no network scan indexed: they cannot be answered for.
    pub hosts_without_scan: u64,
    /// Hosts with at least one matching listener.
    pub hosts_matching: u64,
    /// Each matching service and how many hosts run it, by port, protocol, scope and process:
    /// at most [`MAX_FLEET_SERVICES`].
    pub services: Vec<ServiceCount>,
    /// Each matching listener of each host, in the same order, then by host id and address:
    /// at most [`MAX_FLEET_LISTENERS`].
    pub listeners: Vec<HostListener>,
    /// Matching (host, listener) rows left out of `listeners` by its bound: narrow the query
    /// or read `services`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: u64,
    /// Matching services left out of `services` by its bound (their hosts are still in
    /// `hosts_matching`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub services_omitted: u64,
}

/// A listening service as the fleet search groups it: what a host exposes, whatever its
/// addresses and process ids.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceKey {
    /// The port.
    pub port: u16,
    /// TCP or UDP.
    pub protocol: guestward_network::Protocol,
    /// How far it can be reached from (absent when the agent could not tell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<guestward_network::ExposureScope>,
    /// The owning process's short name (`comm`) of the lowest process id holding the socket;
    /// absent when the agent could not see the owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
}

/// One service and how many hosts run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceCount {
    /// The service.
    #[serde(flatten)]
    pub service: ServiceKey,
    /// Hosts running it (a host listening on several addresses counts once).
    pub hosts: u64,
}

/// One listener of one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostListener {
    /// The host.
    pub host_id: String,
    /// The service.
    #[serde(flatten)]
    pub service: ServiceKey,
    /// The bound address (`0.0.0.0` or `::` for every interface).
    pub address: std::net::IpAddr,
    /// The interface that owns the address, for a specific address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The instance's public addresses it can be reached on (when the agent knew them from
    /// the instance metadata).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_addresses: Vec<std::net::IpAddr>,
    /// The owning process's executable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// The user it runs as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Its systemd unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd_unit: Option<String>,
    /// `sequence` of the report the host's scan comes from.
    pub sequence: u64,
    /// `collected_at` of that report: how old the answer is for this host.
    pub collected_at: Timestamp,
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
