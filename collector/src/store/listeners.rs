//! A host's listening sockets as the fleet's listener search (`GET /v1/listeners`) indexes
//! them, and the search's query.
//!
//! A report's network scan names each listener with its process ids, inodes and the full
//! process table; the index keeps what an operator asks the fleet about ("which hosts expose
//! Redis on every interface, as which user?") and nothing that changes between two scans of
//! an unchanged host. So a host's rows are the same scan after scan and the store rewrites
//! them only when the host's listeners change (found by [`ListenerIndex::digest`]).

use guestward_network::{ExposureScope, NetworkReport, Protocol};
use serde::Serialize;
use std::net::IpAddr;

/// The most listeners of one host indexed; the rest are counted (`left_out`). A server has
/// tens; a host with thousands of unconnected UDP sockets is the reason for the bound.
pub const MAX_INDEXED_LISTENERS: usize = 4_096;

/// One listener, as indexed: its service (port, protocol, scope, owning process) and where.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ListenerRow {
    /// The port.
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// How far it can be reached from; `None` when the agent did not say.
    pub scope: Option<ExposureScope>,
    /// `comm` of the lowest process id holding the socket (the parent of forked workers).
    pub process: Option<String>,
    /// The bound address.
    pub address: IpAddr,
    /// The interface that owns a specific address.
    pub interface: Option<String>,
    /// The instance's public addresses it can be reached on.
    pub public_addresses: Vec<IpAddr>,
    /// That process's executable.
    pub exe: Option<String>,
    /// The user it runs as.
    pub user: Option<String>,
    /// Its systemd unit.
    pub systemd_unit: Option<String>,
}

/// A host's listeners from one report, sorted and without repeats (the sockets of
/// `SO_REUSEPORT` workers on one port are one row), at most [`MAX_INDEXED_LISTENERS`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ListenerIndex {
    rows: Vec<ListenerRow>,
    /// Listeners past the bound.
    left_out: u64,
}

impl ListenerIndex {
    /// The listeners of a report's network section.
    pub fn from_report(network: &NetworkReport) -> Self {
        let rows = network.listeners.iter().map(|socket| {
            // `owners` is sorted by pid: the first is the lowest (the parent of forked workers).
            let owner = socket.owners.first();
            let process = owner.and_then(|o| network.process(o.pid));
            let exposure = socket.exposure.as_ref();
            ListenerRow {
                port: socket.local_port,
                protocol: socket.protocol,
                scope: exposure.map(|e| e.scope),
                process: owner.map(|o| o.name.clone()),
                address: socket.local_address,
                interface: exposure.and_then(|e| e.interface.clone()),
                public_addresses: exposure.map(|e| e.public_addresses.clone()).unwrap_or_default(),
                exe: process.and_then(|p| p.exe.clone()),
                user: process.and_then(|p| p.user.clone()),
                systemd_unit: process.and_then(|p| p.systemd_unit.clone()),
            }
        });
        Self::from_rows(rows.collect())
    }

    /// These listeners (sorted, repeats dropped, bounded).
    pub fn from_rows(mut rows: Vec<ListenerRow>) -> Self {
        rows.sort_unstable();
        rows.dedup();
        let left_out = rows.len().saturating_sub(MAX_INDEXED_LISTENERS) as u64;
        rows.truncate(MAX_INDEXED_LISTENERS);
        Self { rows, left_out }
    }

    /// The rows indexed.
    pub fn rows(&self) -> &[ListenerRow] {
        &self.rows
    }

    /// How many listeners the bound left out.
    pub fn left_out(&self) -> u64 {
        self.left_out
    }

    /// SHA-256 of the rows: equal for equal listeners, whatever their process ids.
    pub fn digest(&self) -> [u8; 32] {
        use sha2::Digest;
        // Serializing plain strings, numbers and addresses cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        sha2::Sha256::digest(&json).into()
    }
}

/// Which listeners `GET /v1/listeners` lists (its query); every part optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerQuery {
    /// Only these ports (none: any).
    pub ports: Vec<u16>,
    /// Only this protocol.
    pub protocol: Option<Protocol>,
    /// Only these scopes (none: any).
    pub scopes: Vec<ExposureScope>,
    /// The owning process's name: exact, or with `*` standing for any characters.
    pub process: Option<String>,
    /// Only listeners reachable on one of the instance's public addresses.
    pub public_only: bool,
}

/// The longest process name pattern a query takes.
pub const MAX_PROCESS_PATTERN_LEN: usize = 256;

/// Checks a process name pattern of a query: 1 to [`MAX_PROCESS_PATTERN_LEN`] bytes, no
/// control characters. A clap `value_parser`; the error quotes the value, bounded and escaped.
pub fn parse_process_pattern(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > MAX_PROCESS_PATTERN_LEN || text.chars().any(char::is_control) {
        return Err(format!(
            "{} is not a process name (1 to {MAX_PROCESS_PATTERN_LEN} bytes, no control characters)",
            guestward_core::text::quote_truncated(text, 64)
        ));
    }
    Ok(text.to_string())
}

/// `tcp` or `udp`, as the report writes them. A clap `value_parser`.
pub fn parse_protocol(text: &str) -> Result<Protocol, String> {
    match text {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        other => Err(format!(
            "{} is not a protocol (tcp or udp)",
            guestward_core::text::quote_truncated(other, 64)
        )),
    }
}

/// `loopback`, `interface` or `all-interfaces`, as the report writes them. A clap
/// `value_parser`.
pub fn parse_scope(text: &str) -> Result<ExposureScope, String> {
    match text {
        "loopback" => Ok(ExposureScope::Loopback),
        "interface" => Ok(ExposureScope::Interface),
        "all-interfaces" => Ok(ExposureScope::AllInterfaces),
        other => Err(format!(
            "{} is not a scope (loopback, interface or all-interfaces)",
            guestward_core::text::quote_truncated(other, 64)
        )),
    }
}
