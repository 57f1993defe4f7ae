//! What a config section reports when it is checked: every problem, each under its dotted key.
//!
//! Each crate validates its own section of `agent.toml` and returns a list of
//! [`ConfigIssue`]s whose keys are relative to that section (`paths[2].exclude[0]`,
//! `debounce_ms`); the daemon prefixes the section name and turns each key into the file, line
//! and column where it is written. Collecting instead of returning the first problem means a
//! user fixing a config sees every mistake at once, not one per restart.

use std::fmt::Display;
use std::ops::RangeInclusive;

/// One problem with a config value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The dotted key, relative to the section that reported it: `debounce_ms`,
    /// `paths[1].exclude[0]`. Array elements are written `[index]`, 0-based.
    pub key: String,
    /// What is wrong, as a sentence fragment naming the value and what is accepted.
    pub message: String,
}

impl ConfigIssue {
    /// An issue with `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { key: key.into(), message: message.into() }
    }

    /// The same issue seen from the enclosing table: `prefix` is prepended to the key
    /// (`imds` + `endpoint` = `imds.endpoint`).
    pub fn within(mut self, prefix: &str) -> Self {
        self.key = if self.key.is_empty() {
            prefix.to_string()
        } else if self.key.starts_with('[') {
            format!("{prefix}{}", self.key)
        } else {
            format!("{prefix}.{}", self.key)
        };
        self
    }
}

impl Display for ConfigIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "key `{}`: {}", self.key, self.message)
    }
}

/// Records an issue when `value` is outside `range` (`must be 1..=60000, got 0`).
pub fn check_range<T: PartialOrd + Display>(
    issues: &mut Vec<ConfigIssue>,
    key: &str,
    value: T,
    range: RangeInclusive<T>,
) {
    if !range.contains(&value) {
        issues
            .push(ConfigIssue::new(key, format!("must be {}..={}, got {value}", range.start(), range.end())));
    }
}

/// What to say about a URL in a config that did not parse (`error` is the parser's reason).
/// The workspace's `url` has no Unicode back end for internationalised names (idna_adapter 1.0,
/// the workspace Cargo.toml says why): a host name with non-ASCII letters is refused, and the
/// user is told the ASCII (`xn--`) form that is accepted. Other faults get no such advice.
pub fn url_parse_issue(url: &str, error: url::ParseError) -> String {
    let message = format!("is not a URL ({error}): `{url}`");
    if error == url::ParseError::IdnaError && !url.is_ascii() {
        format!("{message}; host names must be ASCII: write an internationalised name in its `xn--` form")
    } else {
        message
    }
}

/// Prefixes every issue's key with `prefix` (see [`ConfigIssue::within`]).
pub fn within(prefix: &str, issues: Vec<ConfigIssue>) -> Vec<ConfigIssue> {
    issues.into_iter().map(|i| i.within(prefix)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_unicode_host_name_gets_the_ascii_advice() {
        let issue = |u: &str| url::Url::parse(u).err().map(|e| url_parse_issue(u, e));
        let advice = "write an internationalised name in its `xn--` form";
        let unicode_host = issue("https://bücher.example:8443").unwrap_or_default();
        assert!(unicode_host.contains(advice), "{unicode_host}");
        // Non-ASCII (in the path), but the fault is the port: the advice would mislead.
        let bad_port = issue("https://collector.example:99999/bücher").unwrap_or_default();
        assert!(bad_port.starts_with("is not a URL (invalid port number)"), "{bad_port}");
        assert!(!bad_port.contains(advice), "{bad_port}");
        // Non-ASCII outside the host is percent-encoded: a URL.
        assert_eq!(issue("https://collector.example/bücher"), None);
    }

    #[test]
    fn range_issue_names_the_bounds_and_the_value() {
        let mut issues = Vec::new();
        check_range(&mut issues, "debounce_ms", 0u64, 1..=60_000);
        check_range(&mut issues, "threads", 4u64, 0..=64);
        assert_eq!(issues, vec![ConfigIssue::new("debounce_ms", "must be 1..=60000, got 0")]);
    }

    #[test]
    fn keys_nest_under_their_table() {
        let issue = ConfigIssue::new("paths[1].exclude[0]", "bad").within("fim");
        assert_eq!(issue.key, "fim.paths[1].exclude[0]");
        assert_eq!(ConfigIssue::new("[2]", "x").within("fim.paths").key, "fim.paths[2]");
        assert_eq!(issue.to_string(), "key `fim.paths[1].exclude[0]`: bad");
    }
}
