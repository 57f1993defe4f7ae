//! Backend-neutral socket records, before owners and exposure are added.

use crate::model::{Family, Protocol};
use std::net::SocketAddr;

/// One TCP/UDP socket as a backend reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawInet {
    pub protocol: Protocol,
    pub family: Family,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Kernel state number (`TCP_*`).
    pub state: u8,
    pub inode: u64,
    pub uid: u32,
    /// `SO_BINDTODEVICE` interface index, 0 when unbound (netlink only).
    pub interface_index: u32,
    /// `IPV6_V6ONLY` (netlink only).
    pub v6_only: Option<bool>,
}

/// One listening Unix stream socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawUnix {
    pub path: Option<String>,
    pub inode: u64,
}
