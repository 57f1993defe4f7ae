//! `agent.toml`: one file configures every part of the agent.
//!
//! Each collector crate owns its own section type (`guestward_packages::Config` is
//! `[packages]`...), so a collector's options live next to the code that uses them; this module
//! only assembles them and turns parse errors into messages that name the file, line, column
//! and key. Every key has a default, so the agent runs with no file at all.

use guestward_core::AbsolutePath;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the daemon and `scan` look when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/guestward/agent.toml";

/// Config files are small; anything larger is a mistake (or an attack on the parser).
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
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
    /// `[history]`: the event history in the state directory (bounds, storm coalescing).
    pub history: guestward_history::HistoryConfig,
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
    /// `/etc/machine-id`, is used and the source recorded.
    pub host_id: Option<String>,
    /// Seconds between full scans in daemon mode (the first runs at start).
    pub scan_interval_secs: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            state_dir: AbsolutePath::from_static("/var/lib/guestward"),
            host_id: None,
            scan_interval_secs: 900,
        }
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

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read config: {source}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is larger than any real config.
    #[error("{}: config is larger than {MAX_CONFIG_BYTES} bytes", path.display())]
    TooLarge {
        /// The config file.
        path: PathBuf,
    },
    /// The TOML is invalid, or a key is unknown, has the wrong type or a bad value.
    #[error("{}:{line}:{column}: {}{message}", path.display(), key.as_ref().map(|k| format!("key `{k}`: ")).unwrap_or_default())]
    Parse {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the offending text.
        line: usize,
        /// 1-based column of the offending text.
        column: usize,
        /// The dotted key concerned, when it can be told.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{}: key `{key}`: {message}", path.display())]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The dotted key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Loads `explicit` (which must exist), or the default path when present, or defaults.
    pub fn load(explicit: Option<&Path>) -> Result<(Self, ConfigSource), ConfigError> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => {
                let default = PathBuf::from(DEFAULT_CONFIG_PATH);
                if !default.exists() {
                    return Ok((Self::default(), ConfigSource::Defaults));
                }
                default
            }
        };
        let text = read_config_file(&path)?;
        let config = Self::parse(&text, &path)?;
        Ok((config, ConfigSource::File(path)))
    }

    /// Checks that cannot be expressed in types. Runs after parsing; the key is named.
    fn validate(self, path: &Path) -> Result<Self, ConfigError> {
        if self.agent.scan_interval_secs < 10 {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                key: "agent.scan_interval_secs".into(),
                message: format!("{} is too short; use at least 10 seconds", self.agent.scan_interval_secs),
            });
        }
        let c = &self.control;
        for (key, value, range) in [
            ("control.max_connections", u64::from(c.max_connections), 1..=1024),
            ("control.max_connections_per_user", u64::from(c.max_connections_per_user), 1..=1024),
            ("control.request_read_timeout_ms", c.request_read_timeout_ms, 100..=60_000),
            ("control.write_timeout_ms", c.write_timeout_ms, 100..=600_000),
        ] {
            if !range.contains(&value) {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    key: key.into(),
                    message: format!("must be {}..={}, got {value}", range.start(), range.end()),
                });
            }
        }
        if let Some(issue) = self.history.validate().into_iter().next() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                key: format!("history.{}", issue.key),
                message: issue.message,
            });
        }
        if let Err(e) = self.imds.validate() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                key: format!("imds.{}", e.field),
                message: e.message,
            });
        }
        // `[fim]` is compiled here too, so `agentctl check-config` and every command reject
        // `fim.threads = 3000` or a key inside the state dir with the file and key named.
        if let Err(e) = self.fim.validate(self.agent.state_dir.as_path()) {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                key: e.key().into(),
                message: e.to_string(),
            });
        }
        if let Err(e) = self.packages.language.validate() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                key: format!("packages.language.{}", e.field),
                message: e.message,
            });
        }
        Ok(self)
    }

    /// Parses TOML text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| {
            let (line, column, key) = match e.span() {
                Some(span) => locate(text, span.start),
                None => (1, 1, None),
            };
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                key,
                // toml quotes the offending value, which may be a line of any length.
                message: guestward_core::text::truncate_chars(e.message().trim(), 512).into_owned(),
            }
        })?;
        config.validate(path)
    }
}

fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    if u64::try_from(text.len()).unwrap_or(u64::MAX) > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge { path: path.to_path_buf() });
    }
    Ok(text)
}

/// Line, column and the dotted key at byte `offset`. The key is read off the source line
/// (`key = value` under the nearest `[table]` header) only to make the message clearer; the
/// TOML itself was parsed by the `toml` crate.
fn locate(text: &str, offset: usize) -> (usize, usize, Option<String>) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let line_text = text[line_start..].lines().next().unwrap_or("");
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let key = line_text
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .filter(|k| !k.is_empty() && !k.starts_with('['))
        .map(|k| match &table {
            Some(t) => format!("{t}.{k}"),
            None => k,
        });
    (line, column, key)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const EXAMPLE: &str = include_str!("../../../packaging/agent.toml");

    fn err(text: &str) -> String {
        Config::parse(text, Path::new("/etc/guestward/agent.toml")).unwrap_err().to_string()
    }

    #[test]
    fn annotated_example_equals_the_built_in_defaults() {
        let parsed = Config::parse(EXAMPLE, Path::new("packaging/agent.toml")).unwrap();
        assert_eq!(parsed, Config::default());
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
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        let mut missing = Vec::new();
        for (table, value) in &defaults {
            let toml::Value::Table(inner) = value else { continue };
            check(table, inner, &mut missing);
        }
        assert!(missing.is_empty(), "packaging/agent.toml does not document {missing:?}");
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(Config::parse("", Path::new("x")).unwrap(), Config::default());
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
        assert!(msg.starts_with("/etc/guestward/agent.toml: key `fim.threads`"), "{msg}");
        assert!(msg.contains("3000") && msg.contains("64"), "{msg}");
    }

    #[test]
    fn unknown_table_is_rejected() {
        let msg = err("[agnet]\nstate_dir = \"/x\"\n");
        assert!(msg.contains(":1:") && msg.contains("unknown field `agnet`"), "{msg}");
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
        assert!(msg.contains("key `imds.token_ttl_secs`") && msg.contains("1..=21600"), "{msg}");
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
        assert!(msg.contains("key `agent.scan_interval_secs`: 1 is too short"), "{msg}");
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
    }
}
