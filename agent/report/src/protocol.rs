//! Control protocol types, shared by the daemon and `agentctl`.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/v1/status` | | [`Status`] |
//! | GET | `/v1/report` | | the latest full [`Report`](crate::Report) (404 before the first scan) |
//! | GET | `/v1/findings` | | the latest findings |
//! | GET | `/v1/sbom` | | the latest full report's inventory as a CycloneDX 1.6 SBOM (404 before the first scan) |
//! | POST | `/v1/scan` | [`ScanRequest`] | a fresh [`Report`](crate::Report) of the requested collectors |
//! | POST | `/v1/events` | `guestward_history::Query` | stored events (`guestward_history::StoredEvent`), oldest first |
//! | GET | `/v1/fim/status` | | `guestward_fim::FimStatus` (404 when FIM is off) |
//! | POST | `/v1/fim/events` | [`FimEventsRequest`] | `fim.change` / `coverage.gap` events, oldest first |
//! | POST | `/v1/flush` | [`FlushRequest`] | [`FlushOutcome`]: the shipper sent what the spool holds (409 when `[transport]` is off) |

use guestward_core::{SectionStatus, Timestamp};
use serde::{Deserialize, Serialize};

/// The collectors a scan can run (`--only`, `POST /v1/scan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Collector {
    /// OS, kernel, CPU, memory, machine-id.
    Host,
    /// dpkg, rpm and language packages.
    Packages,
    /// EC2 instance identity and metadata-service posture (live only; skipped with --root).
    Cloud,
    /// Listening sockets, owners, exposure (live system only).
    Network,
    /// File integrity: baseline state, realtime coverage, open gaps (the daemon's monitor; a
    /// one-shot scan reads the stored baseline without changing it).
    Fim,
    /// Pending (security) updates from the cached apt/dnf metadata, reboot required.
    Updates,
    /// Accounts that can log in, SSH keys and sshd settings, sudo grants, static cloud keys.
    Access,
}

impl Collector {
    /// Every collector, in report order.
    pub const ALL: [Self; 7] =
        [Self::Host, Self::Packages, Self::Network, Self::Cloud, Self::Fim, Self::Updates, Self::Access];

    /// Every collector.
    pub fn all() -> std::collections::BTreeSet<Self> {
        Self::ALL.into_iter().collect()
    }

    /// The name used on command lines and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Packages => "packages",
            Self::Cloud => "cloud",
            Self::Network => "network",
            Self::Fim => "fim",
            Self::Updates => "updates",
            Self::Access => "access",
        }
    }

    /// What it collects, for `--help`.
    pub fn about(self) -> &'static str {
        match self {
            Self::Host => "OS, kernel, CPU, memory, machine-id",
            Self::Packages => "dpkg, rpm and language packages",
            Self::Cloud => "EC2 instance identity and metadata-service posture (live only)",
            Self::Network => "listening sockets, owners, exposure (live only)",
            Self::Fim => "file integrity: baseline state, realtime coverage, open gaps",
            Self::Updates => "pending security updates (apt lists, dnf/yum caches), reboot required",
            Self::Access => "accounts, SSH keys and sshd settings, sudo grants, static cloud keys",
        }
    }
}

impl std::fmt::Display for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A collector name that is not one of [`Collector::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown collector `{0}`; expected one of: host, packages, cloud, network, fim, updates, access")]
pub struct UnknownCollector(pub String);

impl std::str::FromStr for Collector {
    type Err = UnknownCollector;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|c| c.name() == s).ok_or_else(|| UnknownCollector(s.to_string()))
    }
}

/// Prefix of every path; bumped on incompatible changes.
pub const API_V1: &str = "/v1";

/// Largest request body the daemon accepts (requests are tiny JSON objects).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Largest response body `agentctl` accepts (a full report of a big host is a few MiB).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Agent version.
    pub version: String,
    /// Daemon process id.
    pub pid: u32,
    /// When the daemon started.
    pub started_at: Timestamp,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Where the configuration came from.
    pub config_source: String,
    /// The state directory.
    pub state_dir: String,
    /// Seconds between scheduled scans.
    pub scan_interval_secs: u64,
    /// The last completed scheduled scan, if any.
    pub last_scan: Option<ScanSummary>,
    /// When the next scheduled scan starts.
    pub next_scan_at: Option<Timestamp>,
    /// The instance's lifecycle as instance metadata announced it (`terminating` after a spot
    /// interruption or stop notice), so a fleet view can tell a planned exit from a lost host.
    #[serde(default)]
    pub lifecycle_state: Option<String>,
    /// Internal counters (`<area>_<noun>_<unit>_total`).
    pub counters: Counters,
    /// Delivery to the collector; absent when `[transport] enabled = false`.
    #[serde(default)]
    pub transport: Option<TransportStatus>,
    /// The verdict `agentctl status` leads with (and its exit code: 0 `ok`, 1 `degraded`).
    #[serde(default)]
    pub health: HealthStatus,
    /// The configuration file as an absolute path (`None`: built-in defaults, no file).
    #[serde(default)]
    pub config_path: Option<String>,
    /// Who this host is, and whether it is an EC2 instance.
    #[serde(default)]
    pub identity: IdentityStatus,
    /// Each collector's last run, result and next run, in [`Collector::ALL`] order.
    #[serde(default)]
    pub collectors: Vec<CollectorStatus>,
    /// File integrity at a glance (`agentctl fim status` has the detail); absent when FIM is
    /// off.
    #[serde(default)]
    pub fim: Option<FimSummary>,
    /// The agent's own CPU and memory against its budgets, and whether it throttles itself.
    #[serde(default)]
    pub self_limits: SelfLimitStatus,
    /// The last configuration reload (SIGHUP); absent until the first.
    #[serde(default)]
    pub reload: Option<ReloadStatus>,
}

/// The words every status section prints, the same everywhere (`ok`, never `Ok`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Everything the agent is configured to do, it does.
    #[default]
    Ok,
    /// It runs, but some part does not do its whole job (the reasons say which).
    Degraded,
}

impl Health {
    /// The word printed in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Degraded => "degraded",
        }
    }
}

/// The health verdict and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthStatus {
    /// `ok` or `degraded`.
    pub verdict: Health,
    /// One sentence per reason it is not `ok`, most important first (empty when `ok`).
    #[serde(default)]
    pub reasons: Vec<String>,
}

/// Who this host is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityStatus {
    /// The host id reports carry (`None` before the first scan when nothing identifies it).
    pub host_id: Option<String>,
    /// Where the host id came from: `config`, `ec2_instance_id`, `machine_id`, `none`.
    pub host_id_source: Option<crate::HostIdSource>,
    /// The EC2 instance id, when this is an EC2 instance.
    pub instance_id: Option<String>,
    /// Why this host is not treated as an EC2 instance (`None` on EC2, or before the cloud
    /// collector ran).
    pub not_ec2_reason: Option<String>,
    /// This agent installation's id (`identity.json`): random, new for every identity, so a
    /// cloned disk is told apart from its source.
    #[serde(default)]
    pub installation_id: Option<String>,
    /// When this identity was created.
    #[serde(default)]
    pub created_at: Option<Timestamp>,
    /// `pendingTime` of the instance when the identity was last checked (changes at every
    /// stop and start).
    #[serde(default)]
    pub pending_time: Option<String>,
    /// When the agent last discarded the identity it found (a disk cloned into a new instance,
    /// or an unreadable `identity.json`); `None` when it never did.
    #[serde(default)]
    pub reinitialised_at: Option<Timestamp>,
    /// Why it did, in one sentence (old and new instance or machine id).
    #[serde(default)]
    pub reinitialised_reason: Option<String>,
    /// The client certificate: `in_use`, `waiting` (the certificate files still hold the
    /// certificate of the instance this disk was cloned from: nothing is sent until they are
    /// replaced) or `none` (no `[transport]`).
    #[serde(default)]
    pub credentials: Option<String>,
    /// What to do, when `credentials` is `waiting`.
    #[serde(default)]
    pub credentials_action: Option<String>,
}

/// How a collector fared, as `agentctl status` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectorState {
    /// Not run yet since start.
    Pending,
    /// Its last run read everything it meant to.
    Ok,
    /// Its last run produced data, with problems.
    Degraded,
    /// Its last run produced nothing (an error, or it panicked); retried with backoff.
    Failed,
    /// Not applicable or turned off in the configuration.
    Skipped,
}

impl CollectorState {
    /// The word printed in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ok => "ok",
            Self::Degraded => "degraded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
}

/// One collector in `agentctl status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectorStatus {
    /// Which collector.
    pub name: Collector,
    /// Its last result.
    pub state: CollectorState,
    /// When its last run started.
    pub last_run_at: Option<Timestamp>,
    /// How long its last run took, in milliseconds.
    pub last_duration_ms: Option<u64>,
    /// The first problem (or the crash) of its last run, for a person.
    pub last_error: Option<String>,
    /// Runs in a row that failed (reset by a run that did not).
    #[serde(default)]
    pub consecutive_failures: u32,
    /// When it runs next (the next scheduled scan, or its backoff after failures).
    pub next_run_at: Option<Timestamp>,
}

/// File integrity at a glance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FimSummary {
    /// What the monitor is doing (`baselining`, `watching`, `rescanning`, `stopped`...).
    pub state: String,
    /// Whether a complete baseline exists (the first one may still be running).
    pub baseline_complete: bool,
    /// Entries in the baseline.
    pub entries: u64,
    /// Inotify watches placed.
    pub watches_granted: u64,
    /// Inotify watches realtime coverage of every configured tree needs.
    pub watches_wanted: u64,
    /// When the last verification rescan (or baseline scan) completed.
    pub last_verification_at: Option<Timestamp>,
    /// Coverage gaps not yet closed by a verification rescan.
    pub open_gaps: u64,
    /// Change events since the daemon started.
    pub changes_since_start: u64,
}

/// The agent's own resource use against its budgets (`[limits]`). Also carried by daemon
/// reports (`Report::self_limits`), hence its JSON Schema.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SelfLimitStatus {
    /// CPU budget, percent of one core, averaged over a minute.
    pub cpu_budget_percent: f64,
    /// Resident memory budget, bytes.
    pub rss_budget_bytes: u64,
    /// CPU used, percent of one core, averaged over the last minute (`None` until measured).
    pub cpu_percent: Option<f64>,
    /// Resident memory now, bytes (`None` until measured).
    pub rss_bytes: Option<u64>,
    /// Whether FIM hashing and full scans are slowed down now.
    pub throttled: bool,
    /// Why, for a person (which budget is exceeded, by how much).
    pub throttle_reason: Option<String>,
    /// Since when (while throttled).
    pub throttled_since: Option<Timestamp>,
    /// Times the agent started throttling itself since start.
    #[serde(default)]
    pub throttle_episodes_total: u64,
    /// Seconds spent throttled since start.
    #[serde(default)]
    pub throttled_secs_total: u64,
    /// The rest FIM's scan hashing takes now, microseconds per MiB hashed (0: not paced).
    #[serde(default)]
    pub fim_pace_micros_per_mib: u64,
}

/// The last configuration reload (SIGHUP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadStatus {
    /// When it was asked for.
    pub at: Timestamp,
    /// Whether the new configuration was applied (`false`: the old one keeps running).
    pub applied: bool,
    /// Why it was not applied: every problem, as `check-config` lists them.
    pub error: Option<String>,
    /// Reloads applied since start.
    #[serde(default)]
    pub applied_total: u64,
    /// Reloads refused since start.
    #[serde(default)]
    pub rejected_total: u64,
    /// Settings the applied reload changed that take effect only after a restart (they keep
    /// their running values): `agent.state_dir`, `control.*` keys, `[fim]`, `[transport]`.
    #[serde(default)]
    pub needs_restart: Vec<String>,
}

/// `POST /v1/flush`: send what the spool holds now, and wait for the collector's answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlushRequest {
    /// How long to wait for delivery, in seconds (default 30, at most 600).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// The answer to `POST /v1/flush`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushOutcome {
    /// Reports the collector acknowledged during the flush.
    pub delivered_reports: u64,
    /// Reports still spooled when it ended.
    pub remaining_reports: u64,
    /// Why not everything was delivered (the collector's or the TLS error).
    pub error: Option<String>,
}

/// Delivery to the collector, for `agentctl status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportStatus {
    /// The collector's URL.
    pub url: String,
    /// Whether the last request reached the collector and was answered 2xx.
    pub connected: bool,
    /// When the last request was sent.
    pub last_attempt_at: Option<Timestamp>,
    /// When the collector last acknowledged a batch.
    pub last_success_at: Option<Timestamp>,
    /// Why the last request failed, when it did.
    pub last_error: Option<String>,
    /// Failed requests since the last success.
    pub consecutive_failures: u64,
    /// When the next attempt is due (backoff).
    pub next_attempt_at: Option<Timestamp>,
    /// Reports the collector acknowledged since the daemon started (duplicates included).
    pub delivered_reports_total: u64,
    /// Requests that failed since the daemon started.
    pub failed_requests_total: u64,
    /// The spool.
    pub spool: SpoolStatus,
    /// The client certificate in use.
    pub certificate: Option<CertificateStatus>,
    /// Set while the shipper holds every report (sends nothing): the certificate loaded was
    /// issued to the instance this disk was cloned from. Says what to do.
    #[serde(default)]
    pub held: Option<String>,
}

/// The spool's depth and losses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolStatus {
    /// Reports waiting for an acknowledgement.
    pub reports: u64,
    /// Their size on disk (compressed).
    pub bytes: u64,
    /// `spool_max_bytes`.
    pub max_bytes: u64,
    /// `collected_at` of the oldest waiting report.
    pub oldest_collected_at: Option<Timestamp>,
    /// Snapshots thinned because a newer report superseded them (first drop class).
    pub superseded_snapshots_dropped_total: u64,
    /// Non-FIM events dropped (second drop class).
    pub events_dropped_total: u64,
    /// Whole reports dropped: their FIM events and findings (last drop class).
    pub reports_dropped_total: u64,
    /// Reports moved to `spool/rejected/` (kept for a human, the newest few) because the
    /// collector refused them for good: malformed, or made as a host this agent no longer
    /// reports as.
    #[serde(default)]
    pub rejected_total: u64,
    /// Of `reports`, those held in memory because the disk refused them (full, read-only):
    /// sent like the others, but lost if the agent stops before they are delivered.
    #[serde(default)]
    pub held_in_memory: u64,
}

/// The client certificate the shipper presents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateStatus {
    /// Its file.
    pub path: String,
    /// Subject common name (the host id it was issued for).
    pub subject: String,
    /// End of validity.
    pub not_after: Option<Timestamp>,
    /// Whole days until `not_after` (negative once expired).
    pub days_left: Option<i64>,
    /// SHA-256 of the certificate's DER (lowercase hex): what `identity.json` records.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Who the collector reads it as (`crate::client_identity`): `host ID (SAN URI)`,
    /// `host ID (CN)`, `operator NAME (SAN URI)`, or `nobody: WHY`.
    #[serde(default)]
    pub names: Option<String>,
    /// Why the collector will refuse the reports this agent makes with it (it names another
    /// host than the agent reports as, an operator, or nobody): GW-TLS-002.
    #[serde(default)]
    pub identity_problem: Option<String>,
}

/// Internal counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Scans completed (scheduled and on request).
    pub scan_runs_total: u64,
    /// Scans in which some section degraded or failed.
    pub scan_degraded_runs_total: u64,
    /// Scans that produced no report at all (the previous report was kept, and the events it
    /// would have carried wait for the next).
    #[serde(default)]
    pub scan_failures_total: u64,
    /// Control requests served.
    pub control_requests_total: u64,
    /// Control connections refused by the peer-credential check.
    pub control_denied_connections_total: u64,
    /// Connections closed at once because their user already held
    /// `control.max_connections_per_user` connections.
    #[serde(default)]
    pub control_refused_connections_total: u64,
    /// Events dropped: pruned by the history's age and count bounds, or at the coalescing
    /// stage's memory cap during a storm (a coverage gap records each loss).
    #[serde(default)]
    pub events_dropped_total: u64,
    /// Events kept in the history now.
    #[serde(default)]
    pub events_stored: u64,
    /// Events folded into per-path summaries during storms (none lost: each summary carries
    /// the count, first and last time).
    #[serde(default)]
    pub events_coalesced_total: u64,
    /// Writes to the history that failed (full disk, damaged file).
    #[serde(default)]
    pub events_store_failures_total: u64,
    /// Events the history could not store, held in memory and carried by the reports until
    /// it can (see `docs/hardening.md`, a full state disk).
    #[serde(default)]
    pub events_held_in_memory: u64,
    /// Held events dropped at the memory bound since start.
    #[serde(default)]
    pub events_held_dropped_total: u64,
    /// Full reports that could not be written to the transport spool (full disk, a damaged
    /// spool); their events stay unreported in the history and go with the next report.
    #[serde(default)]
    pub spool_push_failures_total: u64,
}

/// One scan, summarized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanSummary {
    /// When it started.
    pub collected_at: Timestamp,
    /// Host id it reported.
    pub host_id: Option<String>,
    /// Per-section outcome.
    pub sections: Vec<SectionSummary>,
    /// Number of findings.
    pub findings: usize,
}

/// One section's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SectionSummary {
    /// Collector name.
    pub name: String,
    /// Its status.
    pub status: SectionStatus,
    /// How many problems it met.
    pub problems: usize,
}

/// `POST /v1/scan`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanRequest {
    /// Collectors to run; empty means all.
    #[serde(default)]
    pub only: Vec<Collector>,
}

/// Most events one `/v1/events` answer carries: each is parsed from the history into memory
/// before it is sent, so an answer costs the daemon about 3 KiB per event; `agentctl events`
/// pages through larger requests.
pub const MAX_EVENTS_PER_ANSWER: usize = 1_000;

/// Most events one `/v1/fim/events` answer carries.
pub const MAX_FIM_EVENTS: usize = 10_000;

/// `POST /v1/fim/events`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FimEventsRequest {
    /// Only events at or after this instant (default: every event kept).
    #[serde(default)]
    pub since: Option<Timestamp>,
    /// At most this many, oldest first (default and cap: [`MAX_FIM_EVENTS`]).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// The body of every non-2xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, as a sentence.
    pub error: String,
}

impl ScanSummary {
    /// Summarizes a report.
    pub fn of(report: &crate::Report) -> Self {
        Self {
            collected_at: report.collected_at,
            host_id: report.agent.host_id.clone(),
            sections: report
                .section_summaries()
                .into_iter()
                .map(|(name, status, problems)| SectionSummary { name: name.to_string(), status, problems })
                .collect(),
            findings: report.findings.len(),
        }
    }
}
