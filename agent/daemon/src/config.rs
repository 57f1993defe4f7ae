//! `agent.toml`: one file configures every part of the agent.
//!
//! Each collector crate owns its own section type (`guestward_packages::Config` is
//! `[packages]`...) and checks it itself, returning every problem as a
//! [`guestward_core::ConfigIssue`] (a key relative to its section and a message); this module
//! parses the file, deserializes and checks each section, and points every problem at the file,
//! line and column of its key. Every key has a default, so the agent runs with no file at all.
//!
//! Loading yields a validated [`Config`]: there is no later step that could still refuse a
//! setting, so `check-config`, `scan`, `fim` and the daemon accept exactly the same files.
//! In particular `[fim]` is compiled here (globs, paths, attributes) and the monitor runs on that
//! compiled policy ([`guestward_fim::Fim::from_validated`]).
//!
//! Problems are collected, not returned one at a time: a syntax error stops at parsing (the
//! document is not trustworthy past it; every syntax error found is listed), otherwise each key
//! of each section is deserialized on its own, so a wrong type in `[fim]` does not hide a bad
//! endpoint in `[imds]`, and every section that deserialized is then checked in full.

use guestward_core::{AbsolutePath, ConfigIssue};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

/// Where the daemon and `scan` look when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/guestward/agent.toml";

/// Config files are small; anything larger is a mistake (or an attack on the parser).
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// `agent.toml` as written: every section with its defaults. Only its shape is checked by
/// serde; [`Config::parse`] checks the values and yields a [`Config`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigFile {
    /// `[agent]`: identity and state.
    pub agent: AgentConfig,
    /// `[control]`: the local control socket used by `agentctl`.
    pub control: ControlConfig,
    /// `[packages]`: software inventory sources.
    pub packages: guestward_packages::Config,
    /// `[imds]`: the EC2 Instance Metadata Service (cloud identity, posture, lifecycle signals).
    pub imds: guestward_cloud::ImdsConfig,
    /// `[fim]`: file integrity monitoring (baseline, realtime inotify, verification rescans).
    pub fim: guestward_fim::Config,
    /// `[network]`: listening sockets, their owners and exposure.
    pub network: guestward_network::Config,
    /// `[updates]`: pending security updates from the cached apt/dnf metadata, reboot required.
    pub updates: guestward_updates::Config,
    /// `[access]`: accounts, SSH keys and sshd settings, sudo grants, static cloud keys.
    pub access: guestward_access::Config,
    /// `[history]`: the event history in the state directory (bounds, storm coalescing).
    pub history: guestward_history::HistoryConfig,
    /// `[transport]`: delivery of reports to a collector over mutual TLS (the spool, the
    /// shipper). Off by default.
    pub transport: guestward_transport::TransportConfig,
    /// `[limits]`: the agent's own CPU and memory budgets (self-limits).
    pub limits: LimitsConfig,
}

/// `[control]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    /// The Unix socket `agentctl` talks to. Created mode 0660.
    pub socket_path: AbsolutePath,
    /// Members of this group may use `agentctl` without being root. Ignored when the group
    /// does not exist.
    pub socket_group: String,
    /// Connections served at once; further ones wait in the kernel's listen queue (no file
    /// descriptor of the agent is spent on them). 1..=1024.
    pub max_connections: u32,
    /// Connections one user may hold at once, for users other than root and the agent's own
    /// user (members of `socket_group`): one of them cannot take every slot. Further ones are
    /// closed at once. 1..=1024 (no more than `max_connections` take effect).
    pub max_connections_per_user: u32,
    /// A connection must deliver its whole request (headers and body) within this time after
    /// it is accepted, or it is closed. 100..=60000.
    pub request_read_timeout_ms: u64,
    /// A peer that reads nothing of its answer for this long is disconnected. 100..=600000.
    pub write_timeout_ms: u64,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            socket_path: AbsolutePath::from_static("/run/guestward/agent.sock"),
            socket_group: "guestward".into(),
            max_connections: 64,
            max_connections_per_user: 8,
            request_read_timeout_ms: 5_000,
            write_timeout_ms: 30_000,
        }
    }
}

/// `[agent]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Where the agent keeps its state (FIM baseline, last inventory, spool). Created 0700.
    pub state_dir: AbsolutePath,
    /// Overrides the host id in reports. Leave unset: the EC2 instance id, else
    /// `/etc/machine-id`, is used and the source recorded. 1 to 255 characters; with
    /// `[transport]` enabled, only what the collector accepts as an identity: letters, digits,
    /// `.`, `_` and `-`, at most 253, not starting with `.` or `-`.
    pub host_id: Option<String>,
    /// Seconds between full scans in daemon mode (the first runs at start). Each wait is spread
    /// by ±10 % so a fleet does not scan in step; a collector that failed or degraded is retried
    /// on its own sooner (see `guestward_agent::collect::book`).
    pub scan_interval_secs: u64,
    /// The daemon's log level: `error`, `warn`, `info` (start, stop, reload, configuration and
    /// one line per file change), `debug`, `trace`, or a filter such as
    /// `info,guestward_fim=debug`. Unset: `info,notify=error` ([`crate::cli::DAEMON_LOG_LEVEL`]).
    /// `RUST_LOG` set in the environment wins. At `trace`, notify logs every file event: a log
    /// file inside a realtime-watched tree then feeds itself (each line written is an event
    /// logged again).
    pub log_level: Option<String>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            state_dir: AbsolutePath::from_static("/var/lib/guestward"),
            host_id: None,
            scan_interval_secs: 900,
            log_level: None,
        }
    }
}

/// The validated configuration: every section checked, `[fim]` compiled. Made by
/// [`Config::load`] or [`Config::parse`]; what they accept is what every command runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[agent]`: identity and state.
    pub agent: AgentConfig,
    /// `[control]`: the local control socket used by `agentctl`.
    pub control: ControlConfig,
    /// `[packages]`: software inventory sources.
    pub packages: guestward_packages::Config,
    /// `[imds]`: the EC2 Instance Metadata Service (cloud identity, posture, lifecycle signals).
    pub imds: guestward_cloud::ImdsConfig,
    /// `[fim]`: file integrity monitoring, with its policy compiled (derefs to the section as
    /// written, [`guestward_fim::Config`]).
    pub fim: guestward_fim::config::Validated,
    /// `[network]`: listening sockets, their owners and exposure.
    pub network: guestward_network::Config,
    /// `[updates]`: pending security updates from the cached apt/dnf metadata, reboot required.
    pub updates: guestward_updates::Config,
    /// `[access]`: accounts, SSH keys and sshd settings, sudo grants, static cloud keys.
    pub access: guestward_access::Config,
    /// `[history]`: the event history in the state directory (bounds, storm coalescing).
    pub history: guestward_history::HistoryConfig,
    /// `[transport]`: delivery of reports to a collector over mutual TLS. Checked, not yet
    /// opened: the daemon and `run --once` read its files at start (`Shipper::new`).
    pub transport: guestward_transport::TransportConfig,
    /// `[limits]`: the agent's own CPU and memory budgets (self-limits).
    pub limits: LimitsConfig,
}

/// The top-level tables, in the order problems about a missing one are reported.
const SECTIONS: &[&str] = &[
    "agent",
    "control",
    "packages",
    "imds",
    "fim",
    "network",
    "updates",
    "access",
    "history",
    "transport",
    "limits",
];

/// Accepted `agent.scan_interval_secs`: at least 10 s (a full scan reads every package
/// database), at most a week (a report older than that says little about the host).
pub const SCAN_INTERVAL_RANGE_SECS: std::ops::RangeInclusive<u64> = 10..=7 * 86_400;

impl AgentConfig {
    /// Every problem of `[agent]`, keys relative to it.
    pub fn issues(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        guestward_core::config::check_range(
            &mut issues,
            "scan_interval_secs",
            self.scan_interval_secs,
            SCAN_INTERVAL_RANGE_SECS,
        );
        if let Some(id) = &self.host_id
            && (id.trim().is_empty() || id.len() > 255 || id.chars().any(char::is_control))
        {
            issues.push(ConfigIssue::new(
                "host_id",
                "must be 1 to 255 characters without control characters (or left unset)",
            ));
        }
        if let Some(level) = &self.log_level
            && let Err(e) = guestward_core::logging::parse_level(level)
        {
            issues.push(ConfigIssue::new("log_level", e.to_string()));
        }
        issues
    }
}

impl ControlConfig {
    /// Every problem of `[control]`, keys relative to it.
    pub fn issues(&self) -> Vec<ConfigIssue> {
        use guestward_core::config::check_range;
        let mut issues = Vec::new();
        check_range(&mut issues, "max_connections", self.max_connections, 1..=1024);
        check_range(&mut issues, "max_connections_per_user", self.max_connections_per_user, 1..=1024);
        check_range(&mut issues, "request_read_timeout_ms", self.request_read_timeout_ms, 100..=60_000);
        check_range(&mut issues, "write_timeout_ms", self.write_timeout_ms, 100..=600_000);
        issues
    }
}

/// Every problem of `[transport]`, keys relative to it: the crate's own checks, and (as every
/// path in `agent.toml`) its files must be absolute: the daemon's working directory is `/`
/// under systemd, so a relative path would name a different file there than in a shell.
fn transport_issues(transport: &guestward_transport::TransportConfig) -> Vec<ConfigIssue> {
    let mut issues = transport.validate();
    let files = [
        ("ca_file", &transport.ca_file),
        ("cert_file", &transport.cert_file),
        ("key_file", &transport.key_file),
    ];
    for (key, path) in files {
        if let Some(path) = path
            && !path.is_absolute()
        {
            issues.push(ConfigIssue::new(
                key,
                format!(
                    "must be an absolute path, got `{}`",
                    guestward_core::text::truncate_chars(&path.display().to_string(), 256)
                ),
            ));
        }
    }
    issues
}

/// A configured host id that the collector could never accept, when reports are shipped: the
/// collector refuses a certificate naming it (401), and a report whose host id differs from
/// its certificate's (403), so every report would be refused, in the collector's log only.
/// The collector's rule is `client_identity::check_name`, used here as is. A scan-only agent
/// (`[transport]` off) may name itself as it likes.
fn shipped_host_id_issue(
    agent: &AgentConfig,
    transport: &guestward_transport::TransportConfig,
) -> Option<ConfigIssue> {
    let id = agent.host_id.as_deref()?;
    if !transport.enabled || !agent.issues().iter().all(|i| i.key != "host_id") {
        return None;
    }
    let reason = guestward_report::client_identity::check_name(id).err()?;
    Some(ConfigIssue::new(
        "agent.host_id",
        format!(
            "not an identity the collector accepts ({reason}), and `[transport]` is enabled: it would refuse every report"
        ),
    ))
}

/// `[limits]`: budgets for the agent's own resource use. Above them the daemon slows itself
/// down gently (FIM scan hashing is paced, a scheduled full scan waits a bounded time); it
/// never slows the control socket or the delivery of events. See `selflimit.rs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Whether the agent measures itself and throttles above the budgets. With `false` it
    /// still measures (for `agentctl status`) but never slows down.
    pub enabled: bool,
    /// CPU budget: percent of one core, averaged over the last minute. 0.1..=400.
    pub cpu_percent: f64,
    /// Resident memory budget, bytes. 16 MiB..=16 GiB.
    pub rss_max_bytes: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self { enabled: true, cpu_percent: 5.0, rss_max_bytes: 64 * 1024 * 1024 }
    }
}

/// Accepted `limits.cpu_percent`: a tenth of a percent of one core (the agent's idle use
/// is below that) to four whole cores.
pub const CPU_PERCENT_RANGE: std::ops::RangeInclusive<f64> = 0.1..=400.0;

/// Accepted `limits.rss_max_bytes`: 16 MiB (below the agent's own floor, which would keep it
/// throttled forever) to 16 GiB.
pub const RSS_MAX_BYTES_RANGE: std::ops::RangeInclusive<u64> = 16 * 1024 * 1024..=16 * 1024 * 1024 * 1024;

impl LimitsConfig {
    /// Every problem of `[limits]`, keys relative to it.
    pub fn issues(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        // NaN is outside every range (`contains` is false), so it is refused here too.
        guestward_core::config::check_range(&mut issues, "cpu_percent", self.cpu_percent, CPU_PERCENT_RANGE);
        guestward_core::config::check_range(
            &mut issues,
            "rss_max_bytes",
            self.rss_max_bytes,
            RSS_MAX_BYTES_RANGE,
        );
        issues
    }
}

/// Where the configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// No file: built-in defaults.
    Defaults,
    /// This file.
    File(PathBuf),
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Defaults => write!(f, "built-in defaults ({DEFAULT_CONFIG_PATH} not present)"),
            Self::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// One problem in a config file, located at the key or value concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigProblem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The dotted key (`fim.paths[1].exclude[0]`), when the problem concerns one (a syntax
    /// error may not).
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ConfigProblem {
    /// `PATH:LINE:COLUMN: key `KEY`: MESSAGE`, the form every command prints.
    /// Key and message quote the file, whose author may not be the reader: they are escaped
    /// (`\x1b`), so that a key written as an escape sequence cannot retitle or recolour the
    /// terminal of whoever runs `check-config`. JSON keeps them exact.
    pub fn render(&self, path: &Path) -> String {
        use guestward_core::text::escape_control;
        let key = self.key.as_ref().map(|k| format!("key `{}`: ", escape_control(k))).unwrap_or_default();
        format!(
            "{}:{}:{}: {key}{}",
            guestward_core::text::escape_path(path),
            self.line,
            self.column,
            escape_control(&self.message)
        )
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    // `error`, not `source`: the message says it already, and as the error's source it was
    // said twice (`cannot read config: Is a directory: Is a directory`).
    #[error("{}: cannot read config: {error}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is larger than any real config.
    #[error("{}: config is larger than {MAX_CONFIG_BYTES} bytes", path.display())]
    TooLarge {
        /// The config file.
        path: PathBuf,
    },
    /// The TOML is invalid, or keys are unknown, have the wrong type or a bad value: every
    /// problem found, in file order, one per line.
    #[error("{}", problems.iter().map(|p| p.render(path)).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// Every problem, in file order.
        problems: Vec<ConfigProblem>,
    },
}

impl ConfigError {
    /// The located problems, when the file was read (none for an unreadable file).
    pub fn problems(&self) -> &[ConfigProblem] {
        match self {
            Self::Invalid { problems, .. } => problems,
            Self::Read { .. } | Self::TooLarge { .. } => &[],
        }
    }
}

impl Config {
    /// Loads `explicit` (which must exist), or the default path when present, or defaults.
    pub fn load(explicit: Option<&Path>) -> Result<(Self, ConfigSource), ConfigError> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => {
                let default = PathBuf::from(DEFAULT_CONFIG_PATH);
                if !default.exists() {
                    // The defaults go through the same checks (and the FIM compilation).
                    return Ok((Self::parse("", Path::new("<built-in defaults>"))?, ConfigSource::Defaults));
                }
                default
            }
        };
        let text = read_config_file(&path)?;
        let config = Self::parse(&text, &path)?;
        Ok((config, ConfigSource::File(path)))
    }

    /// Parses and checks TOML text; `path` names it in errors. Every problem is reported.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |mut problems: Vec<ConfigProblem>| {
            problems.sort_by_key(|p| (p.line, p.column));
            ConfigError::Invalid { path: path.to_path_buf(), problems }
        };
        let (doc, syntax) = DeTable::parse_recoverable(text);
        if !syntax.is_empty() {
            let problems = syntax
                .iter()
                .map(|e| {
                    let (line, column) = line_column(text, e.span().map_or(0, |s| s.start));
                    ConfigProblem {
                        line,
                        column,
                        key: key_on_line(text, e.span().map_or(0, |s| s.start)),
                        message: clean(e.message()),
                    }
                })
                .collect();
            return Err(invalid(problems));
        }
        let doc = doc.into_inner();
        let mut problems = Vec::new();
        for (key, _) in doc.iter() {
            if !SECTIONS.contains(&key.get_ref().as_ref()) {
                let (line, column) = line_column(text, key.span().start);
                let expected: Vec<String> = SECTIONS.iter().map(|s| format!("`{s}`")).collect();
                problems.push(ConfigProblem {
                    line,
                    column,
                    key: Some(key.get_ref().to_string()),
                    message: format!(
                        "unknown field `{}`, expected one of {}",
                        guestward_core::text::truncate_chars(key.get_ref(), 64),
                        expected.join(", ")
                    ),
                });
            }
        }
        let mut sections = Sections { doc: &doc, text, problems: &mut problems };
        let agent: Option<AgentConfig> = sections.deserialize("agent");
        let control: Option<ControlConfig> = sections.deserialize("control");
        let packages: Option<guestward_packages::Config> = sections.deserialize("packages");
        let imds: Option<guestward_cloud::ImdsConfig> = sections.deserialize("imds");
        let fim: Option<guestward_fim::Config> = sections.deserialize("fim");
        let network: Option<guestward_network::Config> = sections.deserialize("network");
        let updates: Option<guestward_updates::Config> = sections.deserialize("updates");
        let access: Option<guestward_access::Config> = sections.deserialize("access");
        let history: Option<guestward_history::HistoryConfig> = sections.deserialize("history");
        let transport: Option<guestward_transport::TransportConfig> = sections.deserialize("transport");
        let limits: Option<LimitsConfig> = sections.deserialize("limits");

        // Each section that deserialized is checked by its own crate; keys come back relative
        // to the section and are located in the document here.
        let mut issues = Vec::new();
        let mut section_issues = |name: &str, found: Option<Vec<ConfigIssue>>| {
            issues.extend(guestward_core::config::within(name, found.unwrap_or_default()));
        };
        section_issues("agent", agent.as_ref().map(AgentConfig::issues));
        section_issues("control", control.as_ref().map(ControlConfig::issues));
        section_issues("packages", packages.as_ref().map(guestward_packages::Config::issues));
        section_issues("imds", imds.as_ref().map(guestward_cloud::ImdsConfig::issues));
        section_issues("network", network.as_ref().map(guestward_network::Config::issues));
        section_issues("updates", updates.as_ref().map(guestward_updates::Config::issues));
        section_issues("access", access.as_ref().map(guestward_access::Config::issues));
        section_issues(
            "history",
            history
                .as_ref()
                .map(|h| h.validate().into_iter().map(|i| ConfigIssue::new(i.key, i.message)).collect()),
        );
        section_issues("transport", transport.as_ref().map(transport_issues));
        section_issues("limits", limits.as_ref().map(LimitsConfig::issues));
        if let (Some(agent), Some(transport)) = (&agent, &transport) {
            issues.extend(shipped_host_id_issue(agent, transport));
        }
        // The baseline key is checked against the state directory configured (or its default
        // when `[agent]` itself is broken: that error is already listed).
        let state_dir =
            agent.as_ref().map(|a| a.state_dir.clone()).unwrap_or_else(|| AgentConfig::default().state_dir);
        let fim = match fim.map(|f| f.check(state_dir.as_path())) {
            Some(Ok(validated)) => Some(validated),
            Some(Err(e)) => {
                issues.extend(guestward_core::config::within("fim", e.issues));
                None
            }
            None => None,
        };
        for issue in issues {
            let offset = value_offset(&doc, &issue.key);
            let (line, column) = line_column(text, offset);
            problems.push(ConfigProblem {
                line,
                column,
                key: Some(issue.key),
                message: clean(&issue.message),
            });
        }
        // `[limits]` apart from the tuple below, so that its line stays its own.
        let Some(limits) = limits else { return Err(invalid(problems)) };
        let Some(updates) = updates else { return Err(invalid(problems)) };
        let Some(access) = access else { return Err(invalid(problems)) };
        match (agent, control, packages, imds, fim, network, history, transport) {
            (
                Some(agent),
                Some(control),
                Some(packages),
                Some(imds),
                Some(fim),
                Some(network),
                Some(history),
                Some(transport),
            ) if problems.is_empty() => Ok(Self {
                agent,
                control,
                packages,
                imds,
                fim,
                network,
                updates,
                access,
                history,
                transport,
                limits,
            }),
            _ => Err(invalid(problems)),
        }
    }
}

/// Deserializes sections of one parsed document, recording problems.
struct Sections<'a, 'i> {
    doc: &'a DeTable<'i>,
    text: &'a str,
    problems: &'a mut Vec<ConfigProblem>,
}

impl<'i> Sections<'_, 'i> {
    /// The section `name`, or its defaults when absent. Each key is first deserialized alone
    /// (the sections are `#[serde(default)]`, so one key is a whole section), so every bad key
    /// is reported, not only the first. When some are bad (each recorded), the section of the
    /// good keys alone is returned, so that their own checks (ranges) are listed in the same
    /// run: a typo once hid `scan_interval_secs = 0` until it was fixed. `None` when not even
    /// that deserializes.
    fn deserialize<T: serde::de::DeserializeOwned + Default>(&mut self, name: &str) -> Option<T> {
        let Some((_, value)) = self.doc.iter().find(|(k, _)| k.get_ref() == name) else {
            return Some(T::default());
        };
        let before = self.problems.len();
        if let DeValue::Table(table) = value.get_ref() {
            let parses =
                |v: Spanned<DeValue<'i>>| T::deserialize(toml::de::ValueDeserializer::from(v)).map(|_| ());
            let mut good = DeTable::new();
            for (key, item) in table.iter() {
                if self.deserialize_key(&parses, value.span(), key, item) {
                    good.insert(key.clone(), item.clone());
                }
            }
            if self.problems.len() > before {
                let good = Spanned::new(value.span(), DeValue::Table(good));
                return T::deserialize(toml::de::ValueDeserializer::from(good)).ok();
            }
        }
        if self.problems.len() > before {
            return None;
        }
        match T::deserialize(toml::de::ValueDeserializer::from(value.clone())) {
            Ok(section) => Some(section),
            Err(e) => {
                self.record(&e);
                None
            }
        }
    }

    /// Records the problems of `key = item` deserialized as the only key of its section (true
    /// when it has none). When
    /// `item` is an array, serde stops at its first bad element; each element is then tried as
    /// the array's only one, so that every bad element of `fim.paths` is listed, not the first.
    ///
    /// `parses` deserializes a section: the one piece that depends on the section's type, so
    /// that this function is compiled once, not once per section (the binary has a budget).
    fn deserialize_key(
        &mut self,
        parses: &dyn Fn(Spanned<DeValue<'i>>) -> Result<(), toml::de::Error>,
        section_span: std::ops::Range<usize>,
        key: &Spanned<std::borrow::Cow<'i, str>>,
        item: &Spanned<DeValue<'i>>,
    ) -> bool {
        let alone = |item: Spanned<DeValue<'i>>| {
            let mut one = DeTable::new();
            one.insert(key.clone(), item);
            parses(Spanned::new(section_span.clone(), DeValue::Table(one)))
        };
        let Err(whole) = alone(item.clone()) else { return true };
        let before = self.problems.len();
        if let DeValue::Array(elements) = item.get_ref()
            && elements.len() > 1
        {
            for element in elements.iter() {
                let mut only = DeArray::new();
                only.push(element.clone());
                if let Err(e) = alone(Spanned::new(item.span(), DeValue::Array(only))) {
                    self.record(&e);
                }
            }
        }
        // No element fails alone (or it is no array): the error is about the whole value.
        if self.problems.len() == before {
            self.record(&whole);
        }
        false
    }

    fn record(&mut self, e: &toml::de::Error) {
        let offset = e.span().map_or(0, |s| s.start);
        let (line, column) = line_column(self.text, offset);
        let key = key_at(self.doc, offset, "").or_else(|| key_on_line(self.text, offset));
        self.problems.push(ConfigProblem { line, column, key, message: clean(e.message()) });
    }
}

/// A message fit for one line: trimmed, newlines folded, bounded (toml quotes the offending
/// value, which may be a line of any length).
fn clean(message: &str) -> String {
    let one_line = message.trim().replace('\n', " ");
    guestward_core::text::truncate_chars(&one_line, 512).into_owned()
}

/// The dotted key whose key or value holds byte `offset` (the deepest one).
fn key_at(table: &DeTable<'_>, offset: usize, prefix: &str) -> Option<String> {
    for (key, value) in table.iter() {
        let name =
            if prefix.is_empty() { key.get_ref().to_string() } else { format!("{prefix}.{}", key.get_ref()) };
        if let Some(deeper) = key_in_value(value, offset, &name) {
            return Some(deeper);
        }
        if key.span().contains(&offset) || value.span().contains(&offset) {
            return Some(name);
        }
    }
    None
}

fn key_in_value(value: &Spanned<DeValue<'_>>, offset: usize, name: &str) -> Option<String> {
    match value.get_ref() {
        DeValue::Table(t) => key_at(t, offset, name),
        DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            let indexed = format!("{name}[{i}]");
            key_in_value(item, offset, &indexed).or_else(|| item.span().contains(&offset).then_some(indexed))
        }),
        _ => None,
    }
}

/// Byte offset of the value of dotted `key` (`fim.paths[1].exclude[0]`) in the document. When
/// the key is not written (a problem with a default value), the nearest enclosing key that is,
/// else the start of the file.
fn value_offset(doc: &DeTable<'_>, key: &str) -> usize {
    let mut offset = 0;
    let mut current: Option<&Spanned<DeValue<'_>>> = None;
    for part in key.split('.') {
        let (name, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        let table = match current.map(Spanned::get_ref) {
            None => doc,
            Some(DeValue::Table(t)) => t,
            Some(_) => return offset,
        };
        let Some((_, value)) = table.iter().find(|(k, _)| k.get_ref() == name) else { return offset };
        offset = value.span().start;
        current = Some(value);
        for index in indexes.split(['[', ']']).filter(|s| !s.is_empty()) {
            let Some(DeValue::Array(items)) = current.map(Spanned::get_ref) else { return offset };
            let Some(item) = index.parse::<usize>().ok().and_then(|i| items.get(i)) else { return offset };
            offset = item.span().start;
            current = Some(item);
        }
    }
    offset
}

fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let read_error = |error| ConfigError::Read { path: path.to_path_buf(), error };
    // Only a regular file is read (a symlink to one is fine: configuration management makes
    // those). A FIFO put where the config belongs once hung every command that reads it, and a
    // SIGHUP reload with it the daemon's reloads for good; opening a device runs its driver. So
    // the type is checked before the open, the open does not block, and the type is checked
    // again on the descriptor. A directory is left to the read, which names it.
    let special = |meta: &std::fs::Metadata| !meta.is_file() && !meta.is_dir();
    let not_regular = || {
        read_error(std::io::Error::other(
            "not a regular file (a FIFO, a socket or a device): a config file must be one",
        ))
    };
    if special(&std::fs::metadata(path).map_err(read_error)?) {
        return Err(not_regular());
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(read_error)?;
    if special(&file.metadata().map_err(read_error)?) {
        return Err(not_regular());
    }
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text).map_err(read_error)?;
    if u64::try_from(text.len()).unwrap_or(u64::MAX) > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge { path: path.to_path_buf() });
    }
    Ok(text)
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// For a syntax error, where no parsed document can say: the dotted key read off the source line
/// (`key = value` under the nearest `[table]` header), only to make the message clearer.
fn key_on_line(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_text = text[line_start..].lines().next().unwrap_or("");
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    line_text
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .filter(|k| !k.is_empty() && !k.starts_with('['))
        .map(|k| match &table {
            Some(t) => format!("{t}.{k}"),
            None => k,
        })
}

/// The outcome of `check-config` for one file.
#[derive(Debug)]
pub struct CheckOutcome {
    /// The file checked.
    pub path: PathBuf,
    /// `Ok` when valid; the error otherwise (located problems, or why the file was unreadable).
    pub result: Result<(), ConfigError>,
}

impl CheckOutcome {
    /// Checks `path` exactly as the daemon loads it.
    pub fn of(path: &Path) -> Self {
        Self { path: path.to_path_buf(), result: Config::load(Some(path)).map(|_| ()) }
    }

    /// The documented exit code: 0 valid, 1 invalid, 2 unreadable.
    pub fn exit_code(&self) -> u8 {
        match &self.result {
            Ok(()) => crate::exit::OK,
            Err(ConfigError::Invalid { .. }) => crate::exit::DEGRADED,
            Err(ConfigError::Read { .. } | ConfigError::TooLarge { .. }) => crate::exit::USAGE,
        }
    }

    /// `{"path", "valid", "errors": [{line, column, key, message}]}`; an unreadable file has
    /// one error without line or column.
    pub fn to_json(&self) -> serde_json::Value {
        let errors = match &self.result {
            Ok(()) => serde_json::json!([]),
            Err(ConfigError::Invalid { problems, .. }) => serde_json::json!(problems),
            Err(e) => {
                serde_json::json!([{ "line": null, "column": null, "key": null, "message": e.to_string() }])
            }
        };
        serde_json::json!({
            "path": self.path.display().to_string(),
            "valid": self.result.is_ok(),
            "errors": errors,
        })
    }

    /// Prints the result: `PATH: ok` on `out`, or every problem on `err`, one per line
    /// (`PATH:LINE:COLUMN: key `KEY`: MESSAGE`), the same lines `guestward-agent run` prints
    /// when it refuses the file. With `json`, the JSON document on `out` instead.
    pub fn print(
        &self,
        json: bool,
        out: &mut dyn std::io::Write,
        err: &mut dyn std::io::Write,
    ) -> std::io::Result<()> {
        if json {
            guestward_core::json::write_json(
                &mut *out,
                &self.to_json(),
                guestward_core::json::stdout_wants_pretty(),
            )?;
        } else {
            match &self.result {
                Ok(()) => writeln!(out, "{}: ok", self.path.display())?,
                // A stderr that cannot be written (a log on a full disk) must not turn the
                // documented exit code into another: the code still says the file is invalid.
                Err(e) => {
                    let _ = writeln!(err, "{e}").and_then(|()| err.flush());
                }
            }
        }
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const EXAMPLE: &str = include_str!("../../../packaging/agent.toml");

    fn err(text: &str) -> String {
        Config::parse(text, Path::new("/etc/guestward/agent.toml")).unwrap_err().to_string()
    }

    fn problems(text: &str) -> Vec<ConfigProblem> {
        Config::parse(text, Path::new("/etc/guestward/agent.toml")).unwrap_err().problems().to_vec()
    }

    #[test]
    fn annotated_example_equals_the_built_in_defaults() {
        let file: ConfigFile = toml::from_str(EXAMPLE).unwrap();
        assert_eq!(file, ConfigFile::default());
        Config::parse(EXAMPLE, Path::new("packaging/agent.toml")).unwrap();
    }

    #[test]
    fn annotated_example_names_every_key() {
        // Serialize the defaults and check each leaf key appears in the example file, so a new
        // option cannot be added without documenting it there.
        // Nested tables (`[packages.language]`) are checked the same way, recursively.
        fn check(table: &str, inner: &toml::Table, missing: &mut Vec<String>) {
            assert!(EXAMPLE.contains(&format!("[{table}]")), "packaging/agent.toml lacks [{table}]");
            for (key, value) in inner {
                match value {
                    toml::Value::Table(nested) => check(&format!("{table}.{key}"), nested, missing),
                    _ if !EXAMPLE.contains(&format!("{key} =")) => missing.push(format!("{table}.{key}")),
                    _ => {}
                }
            }
        }
        let defaults = toml::Table::try_from(ConfigFile::default()).unwrap();
        let mut missing = Vec::new();
        for (table, value) in &defaults {
            let toml::Value::Table(inner) = value else { continue };
            check(table, inner, &mut missing);
        }
        assert!(missing.is_empty(), "packaging/agent.toml does not document {missing:?}");
    }

    #[test]
    fn log_level_takes_a_level_or_a_filter_and_refuses_a_misspelt_one() {
        for ok in ["info", "debug", "warn,guestward_fim=debug"] {
            let c = Config::parse(&format!("[agent]\nlog_level = {ok:?}\n"), Path::new("x")).unwrap();
            assert_eq!(c.agent.log_level.as_deref(), Some(ok));
        }
        let msg = err("[agent]\nlog_level = \"inof\"\n");
        assert!(msg.contains("log_level") && msg.contains("`inof`"), "{msg}");
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let c = Config::parse("", Path::new("x")).unwrap();
        let d = ConfigFile::default();
        assert_eq!(
            (&c.agent, &c.control, &c.packages, &c.imds, &c.network, &c.access),
            (&d.agent, &d.control, &d.packages, &d.imds, &d.network, &d.access)
        );
        assert_eq!(c.fim.config(), &d.fim);
        assert_eq!(c.fim.policy().rules.len(), d.fim.paths.len());
    }

    #[test]
    fn unknown_key_names_file_line_column_and_key() {
        let msg = err("[agent]\nstate_dir = \"/var/lib/guestward\"\nstate_dri = \"/tmp\"\n");
        assert!(msg.starts_with("/etc/guestward/agent.toml:3:1: key `agent.state_dri`"), "{msg}");
        assert!(msg.contains("unknown field `state_dri`"), "{msg}");
    }

    #[test]
    fn fim_threads_without_bound_is_refused_at_load_naming_the_key() {
        let msg = err("[fim]\nthreads = 3000\n");
        assert!(msg.starts_with("/etc/guestward/agent.toml:2:11: key `fim.threads`"), "{msg}");
        assert!(msg.contains("3000") && msg.contains("64"), "{msg}");
    }

    #[test]
    fn unknown_table_is_rejected() {
        let msg = err("[agnet]\nstate_dir = \"/x\"\n");
        assert!(
            msg.starts_with("/etc/guestward/agent.toml:1:2: key `agnet`: unknown field `agnet`"),
            "{msg}"
        );
    }

    #[test]
    fn huge_value_in_a_config_error_is_quoted_truncated() {
        let msg = err(&format!("[packages]\nmax_status_file_bytes = \"{}\"\n", "x".repeat(500_000)));
        assert!(msg.len() < 2048, "a {}-byte error", msg.len());
        assert!(msg.contains("more bytes)"), "{msg}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let msg = err("[packages]\nmax_status_file_bytes = \"lots\"\n");
        assert!(
            msg.starts_with("/etc/guestward/agent.toml:2:25: key `packages.max_status_file_bytes`"),
            "{msg}"
        );
        assert!(msg.contains("invalid type"), "{msg}");
    }

    #[test]
    fn imds_out_of_range_names_the_key() {
        let msg = err("[imds]\ntoken_ttl_secs = 0\n");
        assert!(msg.starts_with("/etc/guestward/agent.toml:2:18: key `imds.token_ttl_secs`"), "{msg}");
        assert!(msg.contains("1..=21600"), "{msg}");
    }

    #[test]
    fn language_walk_out_of_range_names_the_key() {
        let msg = err("[packages.language]\nmax_depth = 1000\n");
        assert!(msg.contains("key `packages.language.max_depth`") && msg.contains("at most 64"), "{msg}");
    }

    #[test]
    fn relative_path_is_rejected_where_it_is_written() {
        let msg = err("[packages]\ndpkg_admin_dir = \"var/lib/dpkg\"\n");
        assert!(msg.starts_with("/etc/guestward/agent.toml:2:18: key `packages.dpkg_admin_dir`"), "{msg}");
        assert!(msg.contains("must be an absolute path"), "{msg}");
    }

    #[test]
    fn out_of_range_value_names_the_key() {
        let msg = err("[agent]\nscan_interval_secs = 1\n");
        assert_eq!(
            msg,
            "/etc/guestward/agent.toml:2:22: key `agent.scan_interval_secs`: must be 10..=604800, got 1"
        );
    }

    #[test]
    fn self_limits_are_range_checked_and_located() {
        let msg = err("[limits]\ncpu_percent = 0.01\nrss_max_bytes = 1024\n");
        assert!(
            msg.contains(
                "/etc/guestward/agent.toml:2:15: key `limits.cpu_percent`: must be 0.1..=400, got 0.01"
            ),
            "{msg}"
        );
        assert!(msg.contains("/etc/guestward/agent.toml:3:17: key `limits.rss_max_bytes`: must be"), "{msg}");
        let msg = err("[limits]\ncpu_percent = nan\n");
        assert!(msg.contains("key `limits.cpu_percent`: must be 0.1..=400, got NaN"), "{msg}");
        let msg = err("[limits]\ncpu_percnt = 1.0\n");
        assert!(msg.contains("key `limits.cpu_percnt`") && msg.contains("unknown field"), "{msg}");
        let c = Config::parse("[limits]\ncpu_percent = 0.1\nenabled = false\n", Path::new("x")).unwrap();
        assert_eq!((c.limits.cpu_percent, c.limits.enabled), (0.1, false));
    }

    #[test]
    fn control_limits_are_range_checked() {
        let msg = err("[control]\nmax_connections = 0\n");
        assert!(msg.contains("key `control.max_connections`: must be 1..=1024, got 0"), "{msg}");
        let msg = err("[control]\nmax_connections_per_user = 0\n");
        assert!(msg.contains("key `control.max_connections_per_user`: must be 1..=1024, got 0"), "{msg}");
        let msg = err("[control]\nrequest_read_timeout_ms = 10\n");
        assert!(msg.contains("key `control.request_read_timeout_ms`"), "{msg}");
    }

    #[test]
    fn syntax_error_is_located() {
        let msg = err("[agent\n");
        assert!(msg.starts_with("/etc/guestward/agent.toml:1:"), "{msg}");
    }

    #[test]
    fn missing_explicit_file_is_an_error_naming_it() {
        let e = Config::load(Some(Path::new("/nonexistent/agent.toml"))).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/agent.toml: cannot read config"), "{e}");
        let outcome = CheckOutcome::of(Path::new("/nonexistent/agent.toml"));
        assert_eq!(outcome.exit_code(), crate::exit::USAGE);
    }

    #[test]
    fn semantic_errors_point_at_the_value_in_nested_arrays() {
        let text = "[fim]\npaths = [\n  \"/usr/bin\",\n  { path = \"/etc\", exclude = [\"/etc/ok\", \"/etc/[\"] },\n]\n";
        let p = problems(text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!((p[0].line, p[0].column), (4, 42), "{p:?}");
        assert_eq!(p[0].key.as_deref(), Some("fim.paths[1].exclude[1]"));
        assert!(p[0].message.contains("`/etc/[` is not a valid glob"), "{p:?}");
    }

    #[test]
    fn every_bad_element_of_an_array_is_listed_not_only_the_first() {
        // serde stops at an array's first bad element; an operator fixing `fim.paths` one
        // element per `check-config` run was told of one at a time.
        let text = "[fim]\npaths = [\"rel/a\", \"/ok\", \"/x/../y\", { path = \"b\" }]\n";
        let p = problems(text);
        let keys: Vec<_> = p.iter().map(|p| (p.key.as_deref().unwrap_or(""), p.line, p.column)).collect();
        assert_eq!(
            keys,
            [("fim.paths[0]", 2, 10), ("fim.paths[2]", 2, 26), ("fim.paths[3].path", 2, 46)],
            "{p:?}"
        );
        assert!(p[1].message.contains("must not contain `..`"), "{p:?}");
        // A section of that one key alone is checked the same way.
        assert_eq!(problems("[fim]\npaths = [\"a\", \"b\"]\n").len(), 2);
        // A valid array still loads, and an error about the whole array is still reported.
        Config::parse("[fim]\npaths = [\"/a\", \"/b\"]\n", Path::new("x")).unwrap();
        assert_eq!(problems("[fim]\npaths = \"/a\"\n").len(), 1);
    }

    #[test]
    fn a_bad_key_does_not_hide_the_range_checks_of_the_good_ones() {
        let p = problems("[agent]\nscan_interval_secs = 0\ntypo = 1\n");
        let keys: Vec<_> = p.iter().map(|p| p.key.as_deref().unwrap_or("")).collect();
        assert_eq!(keys, ["agent.scan_interval_secs", "agent.typo"], "{p:?}");
        assert!(p[0].message.contains("must be 10..=604800"), "{p:?}");
    }

    #[test]
    fn attribute_typo_names_the_attribute_the_valid_ones_and_its_place() {
        let text = "[fim]\npaths = [{ path = \"/etc\", attributes = [\"mode\", \"sha265\"] }]\n";
        let msg = err(text);
        assert!(
            msg.starts_with("/etc/guestward/agent.toml:2:49: key `fim.paths[0].attributes[1]`: unknown attribute `sha265`; valid attributes: sha256, blake3, mode"),
            "{msg}"
        );
        assert!(!msg.contains("untagged"), "{msg}");
    }

    #[test]
    fn every_problem_in_every_section_is_listed_in_file_order() {
        let text = r#"[agent]
scan_interval_secs = 0
state_dri = "/x"

[imds]
endpoint = "ftp://169.254.169.254"
token_ttl_secs = "long"
retries = 9

[fim]
debounce_ms = 0
paths = ["/etc", "/etc", { path = "/usr", exclude = ["/usr/["] }]

[network]
max_sockets = 0
"#;
        let p = problems(text);
        let found: Vec<(usize, &str)> = p.iter().map(|p| (p.line, p.key.as_deref().unwrap_or("?"))).collect();
        // `[agent]` and `[imds]` have keys that do not deserialize: each bad key is listed,
        // and the range checks of their good keys too; the other sections are checked in full.
        assert_eq!(
            found,
            [
                (2, "agent.scan_interval_secs"),
                (3, "agent.state_dri"),
                (6, "imds.endpoint"),
                (7, "imds.token_ttl_secs"),
                (8, "imds.retries"),
                (11, "fim.debounce_ms"),
                (12, "fim.paths[1]"),
                (12, "fim.paths[2].exclude[0]"),
                (15, "network.max_sockets"),
            ],
            "{p:?}"
        );
        let rendered = Config::parse(text, Path::new("agent.toml")).unwrap_err().to_string();
        assert_eq!(rendered.lines().count(), 9, "{rendered}");
        assert!(rendered.lines().all(|l| l.starts_with("agent.toml:")), "{rendered}");
    }

    #[test]
    fn range_errors_of_a_deserialized_section_are_all_listed() {
        let p = problems(
            "[imds]\nendpoint = \"ftp://x\"\nretries = 9\n[control]\nmax_connections = 0\nwrite_timeout_ms = 1\n",
        );
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_deref().unwrap_or("?")).collect();
        assert_eq!(
            keys,
            ["imds.endpoint", "imds.retries", "control.max_connections", "control.write_timeout_ms"]
        );
    }

    #[test]
    fn transport_problems_are_located_at_their_keys() {
        let p = problems(
            "[transport]\nenabled = true\nurl = \"http://c:1\"\nca_file = \"ca.pem\"\ncert_file = \"/a.pem\"\nkey_file = \"/k.pem\"\n",
        );
        let found: Vec<(usize, usize, &str)> =
            p.iter().map(|p| (p.line, p.column, p.key.as_deref().unwrap_or("?"))).collect();
        assert_eq!(found, [(3, 7, "transport.url"), (4, 11, "transport.ca_file")], "{p:?}");
        assert!(p[0].message.contains("https://") && p[1].message.contains("absolute"), "{p:?}");
        let ok = Config::parse(
            "[transport]\nenabled = true\nurl = \"https://c:1\"\nca_file = \"/ca.pem\"\ncert_file = \"/a.pem\"\nkey_file = \"/k.pem\"\n",
            Path::new("agent.toml"),
        )
        .unwrap();
        assert!(ok.transport.enabled);
    }

    #[test]
    fn a_host_id_the_collector_would_refuse_is_refused_only_when_reports_are_shipped() {
        const TRANSPORT: &str = "[transport]\nenabled = true\nurl = \"https://c:1\"\nca_file = \"/ca.pem\"\ncert_file = \"/a.pem\"\nkey_file = \"/k.pem\"\n";
        let shipped = |id: &str| problems(&format!("[agent]\nhost_id = \"{id}\"\n{TRANSPORT}"));
        for bad in ["web 1", "web/1", "-web", "web:1"] {
            let p = shipped(bad);
            let found: Vec<(usize, usize, &str)> =
                p.iter().map(|p| (p.line, p.column, p.key.as_deref().unwrap_or("?"))).collect();
            assert_eq!(found, [(2, 11, "agent.host_id")], "{bad:?}: {p:?}");
            assert!(p[0].message.contains("not an identity the collector accepts"), "{p:?}");
        }
        // The agent's own rule comes first, and alone: one problem per key.
        let p = shipped("\\u0007");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].message.contains("control characters"), "{p:?}");
        for good in ["i-0123456789abcdef0", "web-1.prod_eu"] {
            let text = format!("[agent]\nhost_id = \"{good}\"\n{TRANSPORT}");
            let config = Config::parse(&text, Path::new("agent.toml")).unwrap();
            assert_eq!(config.agent.host_id.as_deref(), Some(good));
        }
        // Without [transport], any name of 1 to 255 characters is the agent's own business.
        let scan_only = Config::parse("[agent]\nhost_id = \"web 1\"\n", Path::new("agent.toml")).unwrap();
        assert_eq!(scan_only.agent.host_id.as_deref(), Some("web 1"));
    }

    #[test]
    fn every_syntax_error_is_listed() {
        let p = problems("[agent\nscan_interval_secs = = 5\n");
        assert!(!p.is_empty());
        assert_eq!(p[0].line, 1, "{p:?}");
    }

    #[test]
    fn json_outcome_lists_line_column_key_and_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "[fim]\ndebounce_ms = 0\n").unwrap();
        let outcome = CheckOutcome::of(&path);
        assert_eq!(outcome.exit_code(), crate::exit::DEGRADED);
        let json = outcome.to_json();
        assert_eq!(json["valid"], false);
        assert_eq!(json["path"], path.display().to_string());
        assert_eq!(json["errors"][0]["line"], 2);
        assert_eq!(json["errors"][0]["column"], 15);
        assert_eq!(json["errors"][0]["key"], "fim.debounce_ms");
        std::fs::write(&path, "").unwrap();
        let ok = CheckOutcome::of(&path);
        assert_eq!(
            (ok.exit_code(), ok.to_json()["valid"].clone()),
            (crate::exit::OK, serde_json::json!(true))
        );
    }
}
