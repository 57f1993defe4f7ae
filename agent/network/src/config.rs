//! The `[network]` section of the agent configuration.

use crate::model::Protocol;
use guestward_core::Severity;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which socket source to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackendChoice {
    /// Netlink `sock_diag`, falling back to `/proc/net` when netlink is unavailable (e.g. the
    /// `inet_diag` module is missing or a seccomp/LSM policy forbids `NETLINK_SOCK_DIAG`).
    #[default]
    Auto,
    /// Netlink only; an error when unavailable.
    Netlink,
    /// `/proc/net/{tcp,tcp6,udp,udp6,unix}` only (slower on busy hosts: the kernel formats text).
    Procfs,
}

/// An extra port to treat as a risky service when it listens on all interfaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RiskyPort {
    /// Port number.
    pub port: u16,
    /// Protocol (default `tcp`).
    #[serde(default = "default_protocol")]
    pub protocol: Protocol,
    /// Service name shown in the finding, e.g. `admin UI`.
    pub service: String,
    /// Finding severity (default `high`).
    #[serde(default = "default_severity")]
    pub severity: Severity,
}

fn default_protocol() -> Protocol {
    Protocol::Tcp
}

fn default_severity() -> Severity {
    Severity::High
}

/// Network collector settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Collect the network section at all.
    pub enabled: bool,
    /// Socket source: `auto` (netlink, else /proc/net), `netlink` or `procfs`.
    pub backend: BackendChoice,
    /// Report established and other non-listening sockets too (listeners are always reported).
    pub include_connections: bool,
    /// Report listening Unix stream sockets.
    pub include_unix_listeners: bool,
    /// Map sockets to processes through `/proc/*/fd` (needs root to see every process).
    pub resolve_owners: bool,
    /// At most this many TCP/UDP sockets are kept (memory bound); `truncated` is set beyond.
    pub max_sockets: u32,
    /// Ports added to the built-in risky-service list (databases, Docker, kubelet, etcd,
    /// memcached), e.g. `[{ port = 8080, service = "admin UI", severity = "medium" }]`.
    pub risky_ports: Vec<RiskyPort>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enabled: true,
            backend: BackendChoice::Auto,
            include_connections: true,
            include_unix_listeners: true,
            resolve_owners: true,
            max_sockets: 200_000,
            risky_ports: Vec::new(),
        }
    }
}

/// Largest accepted `max_sockets`; each kept socket costs a few hundred bytes.
pub const MAX_SOCKETS_LIMIT: u32 = 10_000_000;

impl Config {
    /// Every problem of the section, each under its key relative to `[network]`.
    pub fn issues(&self) -> Vec<guestward_core::ConfigIssue> {
        let mut issues = Vec::new();
        guestward_core::config::check_range(
            &mut issues,
            "max_sockets",
            self.max_sockets,
            1..=MAX_SOCKETS_LIMIT,
        );
        for (i, r) in self.risky_ports.iter().enumerate() {
            if r.port == 0 {
                issues.push(guestward_core::ConfigIssue::new(
                    format!("risky_ports[{i}].port"),
                    "must be 1..=65535, got 0",
                ));
            }
            if r.service.trim().is_empty() {
                issues.push(guestward_core::ConfigIssue::new(
                    format!("risky_ports[{i}].service"),
                    "must name the service (it is shown in the finding)",
                ));
            }
        }
        issues
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn risky_port_defaults_and_unknown_keys() {
        let c: Config = serde_json::from_value(serde_json::json!({
            "risky_ports": [{"port": 8080, "service": "admin UI"}]
        }))
        .unwrap();
        assert_eq!(c.risky_ports[0].protocol, Protocol::Tcp);
        assert_eq!(c.risky_ports[0].severity, Severity::High);
        assert!(c.enabled);
        let err = serde_json::from_value::<Config>(serde_json::json!({"bogus": 1})).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn out_of_range_values_are_all_named() {
        assert!(Config::default().issues().is_empty());
        let c: Config = serde_json::from_value(serde_json::json!({
            "max_sockets": 0,
            "risky_ports": [{"port": 0, "service": " "}]
        }))
        .unwrap();
        let keys: Vec<String> = c.issues().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["max_sockets", "risky_ports[0].port", "risky_ports[0].service"]);
    }
}
