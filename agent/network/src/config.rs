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
}
