//! The `[access]` section of the agent configuration.

use guestward_core::AbsolutePath;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Access collector settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Collect the access section at all.
    pub enabled: bool,
    /// Directories searched for `.env` and `.env.*` files holding AWS access keys. Symlinks
    /// are not followed; `node_modules`, `.git` and cache directories are skipped.
    pub env_file_roots: Vec<AbsolutePath>,
    /// How many directory levels below each of `env_file_roots` are searched. 0..=16.
    pub env_file_max_depth: u32,
    /// Directory entries looked at over the whole `.env` search (a bound on its time). Shared:
    /// each root, and each subdirectory within its parent, gets an equal share of what is left,
    /// so that one user's home cannot use it all. 1..=10_000_000.
    pub env_file_max_entries: u64,
    /// Accounts reported at most (a bound on memory). 1..=1_000_000.
    pub max_accounts: u32,
    /// Authorized keys reported at most, over all accounts. 1..=1_000_000.
    pub max_authorized_keys: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enabled: true,
            env_file_roots: ["/home", "/root", "/srv", "/opt", "/var/www"]
                .into_iter()
                .map(AbsolutePath::from_static)
                .collect(),
            env_file_max_depth: 4,
            env_file_max_entries: 50_000,
            max_accounts: 10_000,
            max_authorized_keys: 10_000,
        }
    }
}

impl Config {
    /// Every problem of the section, each under its key relative to `[access]`.
    pub fn issues(&self) -> Vec<guestward_core::ConfigIssue> {
        use guestward_core::config::check_range;
        let mut issues = Vec::new();
        check_range(&mut issues, "env_file_max_depth", self.env_file_max_depth, 0..=16);
        check_range(&mut issues, "env_file_max_entries", self.env_file_max_entries, 1..=10_000_000);
        check_range(&mut issues, "max_accounts", self.max_accounts, 1..=1_000_000);
        check_range(&mut issues, "max_authorized_keys", self.max_authorized_keys, 1..=1_000_000);
        issues
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(Config::default().issues().is_empty());
        let c: Config = serde_json::from_value(serde_json::json!({
            "env_file_max_depth": 17, "max_accounts": 0
        }))
        .unwrap();
        let keys: Vec<String> = c.issues().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["env_file_max_depth", "max_accounts"]);
        let err =
            serde_json::from_value::<Config>(serde_json::json!({"env_file_roots": ["rel"]})).unwrap_err();
        assert!(err.to_string().contains("absolute"), "{err}");
    }
}
