//! Findings and events: what a report concludes and what happened; the severity scale and the
//! filter every findings listing applies.

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

impl Severity {
    /// Every severity, lowest first.
    pub const ALL: [Severity; 5] = [Self::Info, Self::Low, Self::Medium, Self::High, Self::Critical];
}

/// A severity named as in reports (`info`, `low`, `medium`, `high`, `critical`): a clap
/// `value_parser` for `--min-severity`, and the collector's query. The error names the choices.
pub fn parse_severity(text: &str) -> Result<Severity, String> {
    Severity::ALL.into_iter().find(|s| s.to_string() == text).ok_or_else(|| {
        format!("{} is not one of info, low, medium, high, critical", crate::text::quote_truncated(text, 64))
    })
}

/// The longest finding id or id pattern a filter takes.
pub const MAX_FINDING_PATTERN_LEN: usize = 128;

/// Which findings to list: by id (exact, or a prefix ending in `*`) and lowest severity. The
/// one rule for `agentctl findings`, `guestward-collector findings` and the collector's
/// `GET /v1/findings`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FindingFilter {
    /// Finding ids: exact (`GW-FIM-006`), or a prefix ending in `*` (`GW-FIM-*`). Empty: any.
    pub ids: Vec<String>,
    /// The lowest severity listed. `None`: any.
    pub min_severity: Option<Severity>,
}

impl FindingFilter {
    /// Whether `finding` is listed.
    pub fn matches(&self, finding: &Finding) -> bool {
        let id_matches = |pattern: &String| match pattern.strip_suffix('*') {
            Some(prefix) => finding.id.starts_with(prefix),
            None => finding.id == *pattern,
        };
        (self.ids.is_empty() || self.ids.iter().any(id_matches))
            && self.min_severity.is_none_or(|min| finding.severity >= min)
    }

    /// Whether no finding is left out.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.min_severity.is_none()
    }
}

/// Checks an `--id` / `id=` value: 1 to [`MAX_FINDING_PATTERN_LEN`] characters, no control
/// characters. A clap `value_parser`; the error quotes the value, bounded and escaped.
pub fn parse_finding_pattern(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > MAX_FINDING_PATTERN_LEN || text.chars().any(char::is_control) {
        return Err(format!(
            "{} is not a finding id (1 to {MAX_FINDING_PATTERN_LEN} characters, e.g. GW-FIM-006 or GW-FIM-*)",
            crate::text::quote_truncated(text, 64)
        ));
    }
    Ok(text.to_string())
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn finding(id: &str, severity: Severity) -> Finding {
        Finding {
            id: id.into(),
            severity,
            title: String::new(),
            evidence: serde_json::Value::Null,
            remediation: String::new(),
            source: String::new(),
        }
    }

    #[test]
    fn a_filter_takes_exact_ids_prefixes_and_a_severity_floor() {
        let filter = |ids: &[&str], min_severity| FindingFilter {
            ids: ids.iter().map(|s| s.to_string()).collect(),
            min_severity,
        };
        let fim6 = finding("GW-FIM-006", Severity::High);
        let net2 = finding("GW-NET-002", Severity::Low);
        assert!(filter(&[], None).is_empty() && filter(&[], None).matches(&net2));
        assert!(filter(&["GW-FIM-*"], None).matches(&fim6) && !filter(&["GW-FIM-*"], None).matches(&net2));
        assert!(!filter(&["GW-FIM-00"], None).matches(&fim6), "an exact id is not a prefix");
        assert!(filter(&["GW-X-1", "GW-NET-002"], None).matches(&net2));
        assert!(filter(&["*"], Some(Severity::High)).matches(&fim6));
        assert!(!filter(&["*"], Some(Severity::Critical)).matches(&fim6));
        assert!(!filter(&[], Some(Severity::Medium)).matches(&net2));
    }

    #[test]
    fn severities_and_patterns_given_as_text_are_checked_naming_the_choices() {
        assert_eq!(Severity::ALL.map(|s| parse_severity(&s.to_string()).unwrap()), Severity::ALL);
        assert_eq!(
            parse_severity("High").unwrap_err(),
            "\"High\" is not one of info, low, medium, high, critical"
        );
        assert_eq!(parse_finding_pattern("GW-FIM-*").unwrap(), "GW-FIM-*");
        for bad in ["", "GW\n", &"x".repeat(129)] {
            assert!(
                parse_finding_pattern(bad).unwrap_err().contains("is not a finding id (1 to 128 characters"),
                "{bad:?}"
            );
        }
    }
}
