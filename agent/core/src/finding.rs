use crate::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How urgently a finding needs attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing, no action implied.
    Info,
    /// Should be reviewed.
    Low,
    /// Should be fixed.
    Medium,
    /// Should be fixed soon: an exposure an attacker can use.
    High,
    /// Should be fixed now: known exploitation.
    Critical,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Info => "info",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        })
    }
}

/// A conclusion drawn from collected data, with the evidence and what to do about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Finding {
    /// Stable rule identifier, e.g. `GW-IMDS-001`; the same problem keeps the same id.
    pub id: String,
    /// How urgent.
    pub severity: Severity,
    /// One line saying what is wrong.
    pub title: String,
    /// The facts that triggered the rule (paths, versions, ports, pids...).
    pub evidence: serde_json::Value,
    /// What to do about it, as a sentence or a command.
    pub remediation: String,
    /// The collector that raised it (`packages`, `network`, `fim`, `cloud`).
    pub source: String,
}

/// Something that happened between two observations (a file changed, a listener opened...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Event {
    /// Dotted kind, e.g. `fim.change`, `network.listener_opened`, `coverage.gap`.
    pub kind: String,
    /// When it was observed.
    pub time: Timestamp,
    /// Kind-specific payload.
    pub data: serde_json::Value,
}
