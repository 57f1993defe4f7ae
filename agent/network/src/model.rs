//! The typed network report: what `agentctl ports --json` prints and the `network` section of a
//! scan carries.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Transport protocol of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

/// Address family of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// `AF_INET`.
    Ipv4,
    /// `AF_INET6` (which may also carry IPv4 traffic unless the socket is v6-only).
    Ipv6,
}

/// Kernel socket state (the TCP state machine; UDP uses `established` when connected and
/// `close` when not, which `ss` shows as `UNCONN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SocketState {
    /// `TCP_ESTABLISHED` (1); a connected UDP socket.
    Established,
    /// `TCP_SYN_SENT` (2).
    SynSent,
    /// `TCP_SYN_RECV` (3).
    SynRecv,
    /// `TCP_FIN_WAIT1` (4).
    FinWait1,
    /// `TCP_FIN_WAIT2` (5).
    FinWait2,
    /// `TCP_TIME_WAIT` (6).
    TimeWait,
    /// `TCP_CLOSE` (7); an unconnected UDP socket (`UNCONN`).
    Close,
    /// `TCP_CLOSE_WAIT` (8).
    CloseWait,
    /// `TCP_LAST_ACK` (9).
    LastAck,
    /// `TCP_LISTEN` (10).
    Listen,
    /// `TCP_CLOSING` (11).
    Closing,
    /// `TCP_NEW_SYN_RECV` (12).
    NewSynRecv,
    /// A state number this agent does not know.
    Unknown,
}

impl SocketState {
    /// From the kernel's state number.
    pub fn from_kernel(n: u8) -> Self {
        match n {
            1 => Self::Established,
            2 => Self::SynSent,
            3 => Self::SynRecv,
            4 => Self::FinWait1,
            5 => Self::FinWait2,
            6 => Self::TimeWait,
            7 => Self::Close,
            8 => Self::CloseWait,
            9 => Self::LastAck,
            10 => Self::Listen,
            11 => Self::Closing,
            12 => Self::NewSynRecv,
            _ => Self::Unknown,
        }
    }

    /// The short name `ss` prints.
    pub fn ss_name(&self, protocol: Protocol) -> &'static str {
        match self {
            Self::Established => "ESTAB",
            Self::SynSent => "SYN-SENT",
            Self::SynRecv => "SYN-RECV",
            Self::FinWait1 => "FIN-WAIT-1",
            Self::FinWait2 => "FIN-WAIT-2",
            Self::TimeWait => "TIME-WAIT",
            Self::Close if protocol == Protocol::Udp => "UNCONN",
            Self::Close => "CLOSE",
            Self::CloseWait => "CLOSE-WAIT",
            Self::LastAck => "LAST-ACK",
            Self::Listen => "LISTEN",
            Self::Closing => "CLOSING",
            Self::NewSynRecv => "NEW-SYN-RECV",
            Self::Unknown => "UNKNOWN",
        }
    }
}

/// How far a listener can be reached from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ExposureScope {
    /// Bound to a loopback address (127.0.0.0/8, `::1`, or their IPv4-mapped forms): only local
    /// processes can connect.
    Loopback,
    /// Bound to a specific non-loopback address: reachable by whoever can route to that
    /// interface.
    Interface,
    /// Bound to the wildcard (`0.0.0.0`, `::`, `::ffff:0.0.0.0`): reachable on every interface,
    /// including ones added later.
    AllInterfaces,
}

impl std::fmt::Display for ExposureScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Loopback => "loopback",
            Self::Interface => "interface",
            Self::AllInterfaces => "all-interfaces",
        })
    }
}

/// The exposure of one listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Exposure {
    /// Loopback, one interface, or all of them.
    pub scope: ExposureScope,
    /// For `interface` scope: the interface that owns the bound address (from the host's
    /// interface list), or the device the socket is bound to with `SO_BINDTODEVICE`. Absent when
    /// the address belongs to no current interface (e.g. a `IP_FREEBIND` listener).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Whether an IPv6 wildcard listener also accepts IPv4 connections (`IPV6_V6ONLY` off).
    /// Known only from the netlink backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dual_stack: Option<bool>,
    /// The instance's public addresses this listener can be reached on, filled in by
    /// [`crate::mark_public_reachability`] when cloud metadata is known. Empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_addresses: Vec<IpAddr>,
}

/// A process that holds a socket open, in short form (full details are in
/// [`NetworkReport::processes`] under the same `pid`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
pub struct SocketOwner {
    /// Process id (in the agent's pid namespace).
    pub pid: u32,
    /// Short process name (`/proc/<pid>/comm`).
    pub name: String,
}

/// Why the owner of a socket is not known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OwnerUnknownReason {
    /// The kernel reported inode 0: the socket belongs to no file descriptor any more (e.g.
    /// `TIME_WAIT`, orphaned, or a kernel-internal socket).
    NoInode,
    /// No inspected process holds it: it was closed after the socket list was taken, it is held
    /// by a process in another pid namespace, or by the kernel (e.g. NFS, WireGuard).
    NotFound,
    /// Some processes could not be inspected (the agent is not root or lacks
    /// `CAP_SYS_PTRACE`), so the owner may be one of them.
    PermissionDenied,
    /// The owning process exited (or its pid was reused) while it was being inspected.
    Vanished,
    /// Owner lookup was turned off (`resolve_owners = false`).
    NotResolved,
}

/// A socket whose owner is unknown says why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OwnerUnknown {
    /// Machine-readable reason.
    pub reason: OwnerUnknownReason,
    /// A sentence for people.
    pub detail: String,
}

/// One TCP or UDP socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Socket {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// IPv4 or IPv6 socket.
    pub family: Family,
    /// Local (bound) address; unspecified (`0.0.0.0`/`::`) for a wildcard bind.
    pub local_address: IpAddr,
    /// Local port.
    pub local_port: u16,
    /// Remote address; unspecified for listeners and unconnected UDP sockets.
    pub remote_address: IpAddr,
    /// Remote port; 0 for listeners and unconnected UDP sockets.
    pub remote_port: u16,
    /// Kernel state.
    pub state: SocketState,
    /// Socket inode (the `socket:[N]` link target in `/proc/<pid>/fd`); 0 when none.
    pub inode: u64,
    /// Uid that created the socket.
    pub uid: u32,
    /// Device the socket is bound to with `SO_BINDTODEVICE` (netlink backend only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_device: Option<String>,
    /// Whether this is a listener: TCP `LISTEN`, or an unconnected UDP socket (what
    /// `ss -l` shows).
    pub listening: bool,
    /// Exposure, for listeners only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<Exposure>,
    /// Every process holding the socket open (a socket inherited across `fork` has several),
    /// sorted by pid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<SocketOwner>,
    /// Present when `owners` is empty: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_unknown: Option<OwnerUnknown>,
}

/// A listening Unix stream socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UnixListener {
    /// Bound path, or `@name` for an abstract socket; absent for an unnamed socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Socket inode.
    pub inode: u64,
    /// Processes holding it open, sorted by pid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<SocketOwner>,
    /// Present when `owners` is empty: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_unknown: Option<OwnerUnknown>,
}

/// Details of a process that owns at least one reported socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProcessInfo {
    /// Process id.
    pub pid: u32,
    /// Short name (`comm`, at most 15 bytes).
    pub name: String,
    /// Executable path (`/proc/<pid>/exe`); absent when unreadable (kernel threads, permission).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Command line arguments (capped: see [`crate::MAX_CMDLINE_BYTES`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmdline: Vec<String>,
    /// Real uid of the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// User name for `uid` from the host's `/etc/passwd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The systemd unit (service or scope) the process runs in, from its cgroup. A unit of a
    /// user's own service manager is given as `user@UID.service/NAME` (the user names those).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd_unit: Option<String>,
    /// Process start time in clock ticks since boot; with `pid` it identifies the process even
    /// across pid reuse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time_ticks: Option<u64>,
}

/// One network interface and its addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Interface {
    /// Name, e.g. `eth0`.
    pub name: String,
    /// Addresses assigned to it.
    pub addresses: Vec<IpAddr>,
}

/// Which socket source produced the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// `NETLINK_SOCK_DIAG` dumps.
    Netlink,
    /// `/proc/net/{tcp,tcp6,udp,udp6,unix}`.
    Procfs,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Netlink => "netlink",
            Self::Procfs => "procfs",
        })
    }
}

/// Counters from the `/proc/*/fd` pass, so a reader can judge how complete owners are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OwnerScanStats {
    /// Processes whose descriptors were read.
    pub processes_scanned: u64,
    /// Processes that could not be inspected for lack of permission.
    pub processes_denied: u64,
    /// Processes that exited while being inspected.
    pub processes_vanished: u64,
    /// Socket descriptors seen.
    pub socket_fds_seen: u64,
}

/// The network section of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NetworkReport {
    /// The socket source used.
    pub backend: Backend,
    /// Why the configured or preferred backend was not used, when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    /// TCP listeners and unconnected UDP sockets, sorted by protocol, port and address.
    pub listeners: Vec<Socket>,
    /// Every other TCP/UDP socket (connections), when `include_connections` is on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connections: Vec<Socket>,
    /// Listening Unix stream sockets, when `include_unix_listeners` is on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unix_listeners: Vec<UnixListener>,
    /// Every process that owns a reported socket, sorted by pid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<ProcessInfo>,
    /// The host's interfaces, used to name the interface of specific-address listeners.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// How complete the owner lookup was.
    pub owner_scan: OwnerScanStats,
    /// True when more sockets existed than `max_sockets`; the rest were not reported.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl NetworkReport {
    /// The details of `pid`, when it owns a reported socket.
    pub fn process(&self, pid: u32) -> Option<&ProcessInfo> {
        self.processes.binary_search_by_key(&pid, |p| p.pid).ok().and_then(|i| self.processes.get(i))
    }
}
