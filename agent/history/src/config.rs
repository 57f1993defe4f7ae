//! The `[history]` table of `agent.toml`.
//!
//! ```toml
//! [history]
//! max_age_secs = 604800              # 7 days
//! max_events = 100000
//! coalesce_window_secs = 10
//! coalesce_per_path_events = 3
//! coalesce_max_pending_events = 1000
//! coalesce_max_memory_bytes = 16777216   # 16 MiB
//! coalesce_max_hold_secs = 60
//! ```
//!
//! Every field is optional; the values above are the defaults.

use crate::{Bounds, CoalesceLimits};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How much event history is kept and when event storms are coalesced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Events older than this are dropped (oldest first, counted). Default 604800 (7 days);
    /// 60 to 31622400 (366 days).
    pub max_age_secs: u64,
    /// At most this many events are kept (oldest dropped first, counted). Default 100000;
    /// 100 to 10000000.
    pub max_events: u64,
    /// Rate window of the storm coalescer, and how long a path must stay quiet before its
    /// summary is stored. Default 10; 1 to 3600.
    pub coalesce_window_secs: u64,
    /// Events of one path (or listener, package...) within a window stored one by one; past
    /// that they fold into one summary. Default 3; 0 (always fold) to 10000.
    pub coalesce_per_path_events: u32,
    /// Events waiting to be stored beyond which every new event folds into its path's
    /// summary. Default 1000; 1 to 1000000.
    pub coalesce_max_pending_events: u64,
    /// Approximate memory the coalescer may hold; past it the oldest summaries are dropped,
    /// counted and recorded as a coverage gap. Default 16777216 (16 MiB); 1048576 (1 MiB) to
    /// 1073741824 (1 GiB).
    pub coalesce_max_memory_bytes: u64,
    /// A summary is stored at the latest this long after its first event, even while its path
    /// is still busy. Default 60; at least `coalesce_window_secs`, at most 3600.
    pub coalesce_max_hold_secs: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        let b = Bounds::default();
        let c = CoalesceLimits::default();
        Self {
            max_age_secs: b.max_age.as_secs(),
            max_events: b.max_events,
            coalesce_window_secs: c.window.as_secs(),
            coalesce_per_path_events: c.per_key_events,
            coalesce_max_pending_events: c.max_pending_events as u64,
            coalesce_max_memory_bytes: c.max_memory_bytes as u64,
            coalesce_max_hold_secs: c.max_hold.as_secs(),
        }
    }
}

/// One rejected setting: the key (a field of `[history]`, e.g. `max_events`) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigIssue {
    /// The field name inside `[history]`.
    pub key: &'static str,
    /// What is wrong, as a sentence naming the accepted range.
    pub message: String,
}

fn range<T: PartialOrd + std::fmt::Display>(
    issues: &mut Vec<ConfigIssue>,
    key: &'static str,
    value: T,
    min: T,
    max: T,
    unit: &str,
) {
    if value < min || value > max {
        issues.push(ConfigIssue { key, message: format!("{value} is out of range: {min} to {max} {unit}") });
    }
}

impl HistoryConfig {
    /// Every problem (not only the first), each naming its key; empty when valid.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        range(&mut issues, "max_age_secs", self.max_age_secs, 60, 366 * 24 * 3600, "seconds");
        range(&mut issues, "max_events", self.max_events, 100, 10_000_000, "events");
        range(&mut issues, "coalesce_window_secs", self.coalesce_window_secs, 1, 3600, "seconds");
        range(&mut issues, "coalesce_per_path_events", self.coalesce_per_path_events, 0, 10_000, "events");
        range(
            &mut issues,
            "coalesce_max_pending_events",
            self.coalesce_max_pending_events,
            1,
            1_000_000,
            "events",
        );
        range(
            &mut issues,
            "coalesce_max_memory_bytes",
            self.coalesce_max_memory_bytes,
            1 << 20,
            1 << 30,
            "bytes",
        );
        range(&mut issues, "coalesce_max_hold_secs", self.coalesce_max_hold_secs, 1, 3600, "seconds");
        if self.coalesce_max_hold_secs < self.coalesce_window_secs {
            issues.push(ConfigIssue {
                key: "coalesce_max_hold_secs",
                message: format!(
                    "{} is shorter than coalesce_window_secs ({}): a summary would be stored before its path could go quiet",
                    self.coalesce_max_hold_secs, self.coalesce_window_secs
                ),
            });
        }
        issues
    }

    /// The store's bounds (use after [`Self::validate`] returned nothing).
    pub fn bounds(&self) -> Bounds {
        Bounds { max_age: Duration::from_secs(self.max_age_secs), max_events: self.max_events }
    }

    /// The coalescer's limits (use after [`Self::validate`] returned nothing).
    pub fn coalesce_limits(&self) -> CoalesceLimits {
        CoalesceLimits {
            window: Duration::from_secs(self.coalesce_window_secs),
            per_key_events: self.coalesce_per_path_events,
            max_pending_events: usize::try_from(self.coalesce_max_pending_events).unwrap_or(usize::MAX),
            max_memory_bytes: usize::try_from(self.coalesce_max_memory_bytes).unwrap_or(usize::MAX),
            max_hold: Duration::from_secs(self.coalesce_max_hold_secs),
        }
    }

    /// Both, or every problem.
    pub fn validated(&self) -> Result<(Bounds, CoalesceLimits), Vec<ConfigIssue>> {
        let issues = self.validate();
        if issues.is_empty() { Ok((self.bounds(), self.coalesce_limits())) } else { Err(issues) }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_library_defaults() {
        let c = HistoryConfig::default();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        assert_eq!(c.bounds(), Bounds::default());
        assert_eq!(c.coalesce_limits(), CoalesceLimits::default());
    }

    #[test]
    fn every_bad_setting_is_listed_with_its_key() {
        let c = HistoryConfig {
            max_age_secs: 0,
            max_events: 5,
            coalesce_window_secs: 120,
            coalesce_max_hold_secs: 60,
            coalesce_max_memory_bytes: 10,
            ..HistoryConfig::default()
        };
        let keys: Vec<&str> = c.validate().iter().map(|i| i.key).collect();
        assert_eq!(
            keys,
            ["max_age_secs", "max_events", "coalesce_max_memory_bytes", "coalesce_max_hold_secs"],
            "{:?}",
            c.validate()
        );
    }

    #[test]
    fn a_history_table_parses_and_unknown_keys_are_refused_by_name() {
        #[derive(Deserialize)]
        struct File {
            history: HistoryConfig,
        }
        let ok: File = toml::from_str("[history]\nmax_events = 5000\n").unwrap();
        assert_eq!(ok.history.max_events, 5000);
        assert_eq!(ok.history.max_age_secs, HistoryConfig::default().max_age_secs, "the rest defaults");
        let err = toml::from_str::<File>("[history]\nmax_event = 5000\n").err().unwrap();
        assert!(err.to_string().contains("max_event"), "{err}");
    }

    #[test]
    fn schema_generates() {
        let schema = serde_json::to_value(schemars::schema_for!(HistoryConfig)).unwrap();
        assert!(schema["properties"]["max_events"].is_object(), "{schema}");
    }
}
