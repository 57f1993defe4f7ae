//! The report envelope: what one scan (or one daemon cycle) produced.
//!
//! Every collector has its own optional section: absent when not selected, and otherwise a
//! [`Section`] whose status says whether it succeeded, degraded, failed or was skipped. A
//! consumer can therefore always tell "no open ports" from "could not look".
//! The JSON Schema at `docs/report.schema.json` is generated from these types
//! (`guestward-agent schema`); a test fails when it is stale.

use guestward_core::{Event, Finding, Section, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change to the report's shape. 2: `batch_id` and `sequence`.
pub const SCHEMA_VERSION: u32 = 2;

/// One report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    /// [`SCHEMA_VERSION`] of the agent that wrote it.
    pub schema_version: u32,
    /// Who wrote it.
    pub agent: AgentInfo,
    /// This report's own id: a UUIDv7 (time-ordered), so a collector that receives the same
    /// report twice (a retry after a lost acknowledgement) keeps one copy.
    pub batch_id: String,
    /// Per-host position of this report among the reports the daemon produced: 1, 2, 3...
    /// across restarts (kept in the state directory), so a receiver can tell a gap from a
    /// duplicate. Absent in one-shot `guestward-agent scan` output, which is never shipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// When the collection started.
    pub collected_at: Timestamp,
    /// The filesystem scanned when it was not the running system (`--root`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanned_root: Option<String>,
    /// Host facts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Section<guestward_host::HostFacts>>,
    /// Installed software.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages: Option<Section<guestward_packages::PackagesReport>>,
    /// Cloud identity: the EC2 instance and its metadata service (live only; skipped with `--root`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<Section<guestward_cloud::CloudReport>>,
    /// Listening sockets, their owning processes and exposure (live system only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Section<guestward_network::NetworkReport>>,
    /// File integrity: the baseline's state, realtime coverage (watches granted / wanted), the
    /// last verification and the open coverage gaps. The changes themselves are `events`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fim: Option<Section<guestward_fim::FimReport>>,
    /// Patch posture: pending updates (security ones marked, with advisories on rpm hosts)
    /// from the package metadata cached on the host, its age, and whether a reboot is needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updates: Option<Section<guestward_updates::UpdatesReport>>,
    /// Credentials and access: accounts that can log in, SSH keys and the effective sshd
    /// settings, sudo grants, static cloud keys on disk (masked; never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Section<guestward_access::AccessReport>>,
    /// The agent's own CPU and memory against its budgets (`[limits]`), and whether it was
    /// slowing its FIM hashing and full scans down when the report was made. Daemon reports
    /// only; absent in one-shot `scan` output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_limits: Option<crate::protocol::SelfLimitStatus>,
    /// Conclusions drawn from the sections, most severe first.
    pub findings: Vec<Finding>,
    /// Changes observed since the previous report.
    pub events: Vec<Event>,
}

/// The agent and host that wrote a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentInfo {
    /// Agent version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// Stable host identity; absent only when nothing identifies the host.
    pub host_id: Option<String>,
    /// Where `host_id` came from.
    pub host_id_source: HostIdSource,
}

/// Where the host id came from, in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostIdSource {
    /// `agent.host_id` in the config.
    Config,
    /// The EC2 instance id from instance metadata.
    Ec2InstanceId,
    /// `/etc/machine-id`.
    MachineId,
    /// Nothing identifies this host.
    None,
}

impl AgentInfo {
    /// This build of the agent, before the host is identified.
    pub fn unidentified() -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_string(),
            host_id: None,
            host_id_source: HostIdSource::None,
        }
    }
}

impl HostIdSource {
    /// The name used in JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Ec2InstanceId => "ec2_instance_id",
            Self::MachineId => "machine_id",
            Self::None => "none",
        }
    }
}

/// A new report id: a UUIDv7 (milliseconds since the epoch, then random bits), hyphenated.
pub fn new_batch_id() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}

impl Report {
    /// Puts the findings in the order every reader shows them: most severe first, then by id.
    /// Called again by whoever adds findings after the scan (the shipper's certificate checks).
    pub fn sort_findings(&mut self) {
        self.findings.sort_by(|a, b| b.severity.cmp(&a.severity).then_with(|| a.id.cmp(&b.id)));
    }

    /// A report with no sections yet, stamped now with a fresh [`Report::batch_id`].
    pub fn new(agent: AgentInfo, collected_at: Timestamp) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            agent,
            batch_id: new_batch_id(),
            sequence: None,
            collected_at,
            scanned_root: None,
            host: None,
            packages: None,
            cloud: None,
            network: None,
            fim: None,
            updates: None,
            access: None,
            self_limits: None,
            findings: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Name, status and problem count of every section that ran, for exit codes and summaries.
    pub fn section_summaries(&self) -> Vec<(&'static str, guestward_core::SectionStatus, usize)> {
        self.section_problems()
            .into_iter()
            .map(|(name, status, problems)| (name, status, problems.len()))
            .collect()
    }

    /// Each section present: its name, status and problems (what a format without a place for
    /// them, a CycloneDX SBOM, must still say).
    pub fn section_problems(
        &self,
    ) -> Vec<(&'static str, guestward_core::SectionStatus, &[guestward_core::Problem])> {
        fn add<'a, T>(
            out: &mut Vec<(&'static str, guestward_core::SectionStatus, &'a [guestward_core::Problem])>,
            name: &'static str,
            s: &'a Option<Section<T>>,
        ) {
            if let Some(s) = s {
                out.push((name, s.status, &s.problems));
            }
        }
        let mut out = Vec::new();
        add(&mut out, "host", &self.host);
        add(&mut out, "packages", &self.packages);
        add(&mut out, "cloud", &self.cloud);
        add(&mut out, "network", &self.network);
        add(&mut out, "fim", &self.fim);
        add(&mut out, "updates", &self.updates);
        add(&mut out, "access", &self.access);
        out
    }

    /// For a run without root (`uid`: the effective uid): in every section, the paths that
    /// could not be read for lack of permission and that `expected` accepts become a note
    /// instead of a problem ([`Section::excuse_permission_denied`]). Never for a run as root.
    pub fn excuse_permission_denied(&mut self, uid: u32, expected: &dyn Fn(&str) -> bool) {
        fn excuse<T>(
            section: &mut Option<Section<T>>,
            uid: u32,
            root: Option<&str>,
            expected: &dyn Fn(&str) -> bool,
        ) {
            if let Some(s) = section {
                s.excuse_permission_denied(uid, root, expected);
            }
        }
        let root = self.scanned_root.as_deref();
        excuse(&mut self.host, uid, root, expected);
        excuse(&mut self.packages, uid, root, expected);
        excuse(&mut self.cloud, uid, root, expected);
        excuse(&mut self.network, uid, root, expected);
        excuse(&mut self.fim, uid, root, expected);
        excuse(&mut self.updates, uid, root, expected);
        excuse(&mut self.access, uid, root, expected);
    }

    /// Whether any section degraded or failed.
    pub fn any_degraded(&self) -> bool {
        use guestward_core::SectionStatus::{Degraded, Error};
        self.section_summaries().iter().any(|(_, s, _)| matches!(s, Degraded | Error))
    }
}

/// The checked-in schema, deflated by `build.rs`.
const JSON_SCHEMA_DEFLATED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/report.schema.json.deflate"));

/// The JSON Schema of [`Report`] as checked in at `docs/report.schema.json`, which a test keeps
/// equal to [`json_schema`]: what `guestward-agent schema` prints. Generating it at run time
/// put schemars' generator and a JSON value of the whole schema into the agent binary, and
/// embedding the text as it is, 139 KB; it is embedded deflated (about a sixth) and inflated
/// here. An error is a build that embedded something else, never the host's doing.
pub fn checked_in_json_schema() -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    flate2::read::DeflateDecoder::new(JSON_SCHEMA_DEFLATED)
        .read_to_string(&mut text)
        .map_err(|e| std::io::Error::other(format!("the schema built into this binary is damaged: {e}")))?;
    Ok(text)
}

/// The JSON Schema of [`Report`] generated from the types, pretty-printed with a trailing
/// newline (as checked in).
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Report);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// Writes `report` as JSON (indented when `pretty`, then a newline) to `out`.
///
/// Not generic on purpose: every `Serialize` impl a report reaches (each collector's section,
/// 20,000 sockets on a busy host) is compiled here, in a crate the release profile builds for
/// speed (`[profile.release.package.guestward-report]`), rather than in the size-optimised
/// binary that calls it. At `opt-level = "z"` writing the JSON of a 20,000-socket scan took
/// longer than a third of the scan.
pub fn write_report_json(report: &Report, out: &mut dyn std::io::Write, pretty: bool) -> std::io::Result<()> {
    guestward_core::json::write_json(out, report, pretty)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// The checked-in schema (which `guestward-agent schema` prints) must match the types.
    /// `scripts/gen-schema` regenerates it: it runs this test with `GUESTWARD_WRITE_SCHEMA=1`.
    #[test]
    fn checked_in_schema_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/report.schema.json");
        let generated = super::json_schema();
        if std::env::var_os("GUESTWARD_WRITE_SCHEMA").is_some() {
            // Beside it first, then renamed: never seen half-written. The next build embeds it
            // (`build.rs` names the file as an input of this crate).
            let tmp = format!("{path}.tmp");
            std::fs::write(&tmp, &generated).unwrap();
            std::fs::rename(&tmp, path).unwrap();
            return;
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "docs/report.schema.json is stale: run scripts/gen-schema and commit the result"
        );
        // What the binary prints: the file as it was when this crate was built.
        assert!(super::checked_in_json_schema().unwrap() == generated);
    }
}
