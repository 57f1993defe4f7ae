//! Fast path: socket dumps over `NETLINK_SOCK_DIAG` (what `ss` itself uses).
//!
//! The kernel fills binary records directly, so a 20,000-socket host is listed in a few
//! milliseconds, where `/proc/net/tcp` makes the kernel format (and us parse) text.

use crate::error::NetworkError;
use crate::model::{Family, Protocol};
use crate::raw::{RawInet, RawUnix};
use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};
use netlink_packet_sock_diag::inet::nlas::Nla as InetNla;
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::unix::nlas::UnixDiagName;
use netlink_packet_sock_diag::unix::{ShowFlags, StateFlags as UnixStateFlags, UnixRequest};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};
use std::os::unix::ffi::OsStrExt;

/// Receive buffer: the kernel builds dump batches of up to 32 KiB; a smaller buffer would
/// truncate them (DEPENDENCIES.md).
const RECV_BUFFER_BYTES: usize = 64 * 1024;
/// Kernel-side socket receive buffer, so bursts of batches are not dropped.
const SO_RCVBUF_BYTES: usize = 1024 * 1024;
/// A stuck dump (should never happen) ends after this long instead of hanging a scan.
const RECV_TIMEOUT_SECS: i64 = 5;
/// `SOCK_STREAM` as reported in `unix_diag_msg.udiag_type`.
const SOCK_STREAM: u8 = 1;

fn open(what: &str) -> Result<Socket, NetworkError> {
    let err = |operation: &str, source| NetworkError::Netlink {
        operation: format!("{operation} ({what})"),
        source,
    };
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(|e| err("socket", e))?;
    socket.bind_auto().map_err(|e| err("bind", e))?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(|e| err("connect", e))?;
    // Best effort: a smaller kernel buffer only costs retries inside the kernel.
    let _ = socket.set_rx_buf_sz(SO_RCVBUF_BYTES);
    let timeout = nix::sys::time::TimeVal::new(RECV_TIMEOUT_SECS, 0);
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)
        .map_err(|e| err("setsockopt SO_RCVTIMEO", std::io::Error::from(e)))?;
    Ok(socket)
}

/// Sends one dump request and feeds every decoded record to `each` until the kernel says done.
/// `each` returns `false` to stop early (the socket is then dropped, which abandons the dump).
fn dump(
    what: &str,
    request: SockDiagMessage,
    mut each: impl FnMut(&SockDiagMessage) -> bool,
) -> Result<(), NetworkError> {
    let socket = open(what)?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = 1;
    let mut packet = NetlinkMessage::new(header, request.into());
    packet.finalize();
    let mut out = vec![0u8; packet.buffer_len()];
    // `serialize` panics when the buffer is too small; it was sized with `buffer_len` above.
    packet.serialize(&mut out[..]);
    socket
        .send(&out, 0)
        .map_err(|source| NetworkError::Netlink { operation: format!("send ({what})"), source })?;

    let mut buf = vec![0u8; RECV_BUFFER_BYTES];
    // Each recv carries at least one record or the final DONE, so this loop is bounded by the
    // number of sockets in the kernel; the receive timeout bounds a kernel that stops answering.
    loop {
        let size = socket
            .recv(&mut &mut buf[..], 0)
            .map_err(|source| NetworkError::Netlink { operation: format!("recv ({what})"), source })?;
        if size == 0 {
            return Ok(());
        }
        if size > buf.len() {
            return Err(NetworkError::NetlinkDecode {
                what: what.to_string(),
                message: format!("a {size}-byte batch exceeded the {}-byte buffer", buf.len()),
            });
        }
        let mut offset = 0usize;
        while offset < size {
            let bytes = buf.get(offset..size).unwrap_or_default();
            let message = NetlinkMessage::<SockDiagMessage>::deserialize(bytes).map_err(|e| {
                NetworkError::NetlinkDecode { what: what.to_string(), message: e.to_string() }
            })?;
            let length = usize::try_from(message.header.length).unwrap_or(0);
            match message.payload {
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(NetworkError::NetlinkRefused { what: what.to_string(), source: e.to_io() });
                }
                NetlinkPayload::InnerMessage(inner) if !each(&inner) => return Ok(()),
                // ACKs, no-ops and records we did not ask for.
                _ => {}
            }
            if length == 0 {
                // A zero-length header would loop forever; the kernel never sends one.
                return Err(NetworkError::NetlinkDecode {
                    what: what.to_string(),
                    message: "zero-length netlink message".to_string(),
                });
            }
            offset = offset.saturating_add(align4(length));
        }
    }
}

fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

/// Lists TCP and UDP sockets of both families. Stops after `cap` sockets and returns whether it
/// had to.
pub(crate) fn inet_sockets(cap: usize, out: &mut Vec<RawInet>) -> Result<bool, NetworkError> {
    for (protocol, family) in [
        (Protocol::Tcp, Family::Ipv4),
        (Protocol::Tcp, Family::Ipv6),
        (Protocol::Udp, Family::Ipv4),
        (Protocol::Udp, Family::Ipv6),
    ] {
        let what = format!("{protocol}/{}", if family == Family::Ipv4 { "ipv4" } else { "ipv6" });
        let request = SockDiagMessage::InetRequest(InetRequest {
            family: if family == Family::Ipv4 { AF_INET } else { AF_INET6 },
            protocol: if protocol == Protocol::Tcp { IPPROTO_TCP } else { IPPROTO_UDP },
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: if family == Family::Ipv4 { SocketId::new_v4() } else { SocketId::new_v6() },
        });
        let mut full = false;
        dump(&what, request, |message| {
            if let SockDiagMessage::InetResponse(r) = message {
                if out.len() >= cap {
                    full = true;
                    return false;
                }
                let id = &r.header.socket_id;
                let v6_only = r.nlas.iter().find_map(|n| match n {
                    InetNla::SkV6Only(v) => Some(*v),
                    _ => None,
                });
                out.push(RawInet {
                    protocol,
                    family,
                    local: std::net::SocketAddr::new(id.source_address, id.source_port),
                    remote: std::net::SocketAddr::new(id.destination_address, id.destination_port),
                    state: r.header.state,
                    inode: u64::from(r.header.inode),
                    uid: r.header.uid,
                    interface_index: id.interface_id,
                    v6_only,
                });
            }
            true
        })?;
        if full {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Lists listening Unix stream sockets.
pub(crate) fn unix_listeners(cap: usize, out: &mut Vec<RawUnix>) -> Result<bool, NetworkError> {
    let request = SockDiagMessage::UnixRequest(UnixRequest {
        state_flags: UnixStateFlags::LISTEN,
        inode: 0,
        show_flags: ShowFlags::NAME,
        cookie: [0; 8],
    });
    let mut full = false;
    dump("unix", request, |message| {
        if let SockDiagMessage::UnixResponse(r) = message {
            if r.header.kind != SOCK_STREAM {
                return true;
            }
            if out.len() >= cap {
                full = true;
                return false;
            }
            let path = r.name().map(|n| match n {
                UnixDiagName::Pathname(p) => String::from_utf8_lossy(p.as_bytes()).into_owned(),
                UnixDiagName::Abstract(a) => format!("@{}", String::from_utf8_lossy(a)),
            });
            out.push(RawUnix { path, inode: u64::from(r.header.inode) });
        }
        true
    })?;
    Ok(full)
}
