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
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::unix::nlas::UnixDiagName;
use netlink_packet_sock_diag::unix::{ShowFlags, StateFlags as UnixStateFlags, UnixRequest};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
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

/// `struct nlmsghdr`: length, type, flags, sequence, port id.
const NLMSG_HEADER_BYTES: usize = 16;
/// `nlmsghdr.nlmsg_type` values (linux/netlink.h, linux/sock_diag.h).
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `struct inet_diag_msg` (linux/inet_diag.h), before its attributes.
const INET_DIAG_MSG_BYTES: usize = 72;
/// The `INET_DIAG_SKV6ONLY` attribute (u8).
const INET_DIAG_SKV6ONLY: u16 = 11;
/// `NLA_F_NESTED | NLA_F_NET_BYTEORDER`, not part of an attribute's type.
const NLA_TYPE_MASK: u16 = 0x3fff;
/// `AF_INET` and `AF_INET6` as `inet_diag_msg.idiag_family` carries them.
const FAMILY_INET: u8 = 2;
const FAMILY_INET6: u8 = 10;

fn ne_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

fn ne_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn be_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(bytes.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

fn address(bytes: &[u8], at: usize, family: Family) -> Option<IpAddr> {
    let raw: [u8; 16] = bytes.get(at..at.checked_add(16)?)?.try_into().ok()?;
    Some(match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3])),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(raw)),
    })
}

/// Decodes one `inet_diag_msg` and its attributes (the payload of a `SOCK_DIAG_BY_FAMILY`
/// message). Read by hand, in place: a 20,000-socket dump is 20,000 of these, and the generic
/// decoder built a message tree (and an allocation per unknown attribute) for each.
/// Every read is bounds-checked: a short or odd record is an error, never a panic.
fn parse_inet(payload: &[u8], protocol: Protocol) -> Result<RawInet, String> {
    let msg = payload
        .get(..INET_DIAG_MSG_BYTES)
        .ok_or_else(|| format!("a {}-byte inet_diag_msg (expected {INET_DIAG_MSG_BYTES})", payload.len()))?;
    let family = match msg.first() {
        Some(&FAMILY_INET) => Family::Ipv4,
        Some(&FAMILY_INET6) => Family::Ipv6,
        other => return Err(format!("unsupported address family {other:?}")),
    };
    let field = |v: Option<u32>, name: &str| v.ok_or_else(|| format!("inet_diag_msg.{name} unreadable"));
    let sport = be_u16(msg, 4).ok_or("inet_diag_msg.id.sport unreadable")?;
    let dport = be_u16(msg, 6).ok_or("inet_diag_msg.id.dport unreadable")?;
    let src = address(msg, 8, family).ok_or("inet_diag_msg.id.src unreadable")?;
    let dst = address(msg, 24, family).ok_or("inet_diag_msg.id.dst unreadable")?;
    let interface_index = field(ne_u32(msg, 40), "id.if")?;
    let uid = field(ne_u32(msg, 64), "uid")?;
    let inode = field(ne_u32(msg, 68), "inode")?;
    let mut v6_only = None;
    // Attributes: `struct nlattr` (length u16 including its 4-byte header, type u16), each
    // padded to 4 bytes. A malformed one ends the attribute list; the record itself is sound.
    let mut rest = payload.get(INET_DIAG_MSG_BYTES..).unwrap_or_default();
    while let (Some(len), Some(kind)) = (ne_u16(rest, 0), ne_u16(rest, 2)) {
        let len = usize::from(len);
        if len < 4 || len > rest.len() {
            break;
        }
        if kind & NLA_TYPE_MASK == INET_DIAG_SKV6ONLY {
            v6_only = rest.get(4).map(|b| *b != 0);
        }
        rest = rest.get(align4(len)..).unwrap_or_default();
    }
    Ok(RawInet {
        protocol,
        family,
        local: std::net::SocketAddr::new(src, sport),
        remote: std::net::SocketAddr::new(dst, dport),
        state: msg.get(1).copied().unwrap_or_default(),
        inode: u64::from(inode),
        uid,
        interface_index,
        v6_only,
    })
}

/// Sends one dump request and feeds every `SOCK_DIAG_BY_FAMILY` record (the whole message and
/// its payload) to `each` until the kernel says done. `each` returns `false` to stop early (the
/// socket is then dropped, which abandons the dump).
fn dump(
    what: &str,
    request: SockDiagMessage,
    mut each: impl FnMut(&[u8], &[u8]) -> Result<bool, NetworkError>,
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
        if walk_batch(what, buf.get(..size).unwrap_or_default(), &mut each)? == Batch::Ended {
            return Ok(());
        }
    }
}

/// Whether a dump goes on after one batch.
#[derive(Debug, PartialEq, Eq)]
enum Batch {
    /// Read whole: the next batch follows.
    More,
    /// The kernel said done, or `each` asked to stop.
    Ended,
}

/// Feeds every `SOCK_DIAG_BY_FAMILY` record of one received batch to `each` (see [`dump`]).
fn walk_batch(
    what: &str,
    mut batch: &[u8],
    each: &mut impl FnMut(&[u8], &[u8]) -> Result<bool, NetworkError>,
) -> Result<Batch, NetworkError> {
    let decode = |message: String| NetworkError::NetlinkDecode { what: what.to_string(), message };
    while !batch.is_empty() {
        let (Some(length), Some(kind)) = (ne_u32(batch, 0), ne_u16(batch, 4)) else {
            return Err(decode(format!("a truncated netlink header ({} bytes)", batch.len())));
        };
        let length = usize::try_from(length).unwrap_or(usize::MAX);
        // Also what stops a zero-length header from looping forever.
        if length < NLMSG_HEADER_BYTES {
            return Err(decode(format!("a {length}-byte netlink message (shorter than its header)")));
        }
        let message = batch.get(..length).ok_or_else(|| {
            decode(format!("a {length}-byte netlink message in a {}-byte batch", batch.len()))
        })?;
        let payload = message.get(NLMSG_HEADER_BYTES..).unwrap_or_default();
        match kind {
            NLMSG_DONE => return Ok(Batch::Ended),
            NLMSG_ERROR => {
                // `struct nlmsgerr`: a negative errno, 0 for an acknowledgement.
                let code = ne_u32(payload, 0).map_or(0, |c| c.cast_signed());
                if code != 0 {
                    return Err(NetworkError::NetlinkRefused {
                        what: what.to_string(),
                        source: std::io::Error::from_raw_os_error(code.saturating_neg()),
                    });
                }
            }
            SOCK_DIAG_BY_FAMILY if !each(message, payload)? => return Ok(Batch::Ended),
            // NLMSG_NOOP and anything we did not ask for.
            _ => {}
        }
        batch = batch.get(align4(length)..).unwrap_or_default();
    }
    Ok(Batch::More)
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
        dump(&what, request, |_, payload| {
            if out.len() >= cap {
                full = true;
                return Ok(false);
            }
            let socket = parse_inet(payload, protocol)
                .map_err(|message| NetworkError::NetlinkDecode { what: what.clone(), message })?;
            out.push(socket);
            Ok(true)
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
    dump("unix", request, |message, _| {
        let Some(listener) = parse_unix_stream(message)
            .map_err(|message| NetworkError::NetlinkDecode { what: "unix".to_string(), message })?
        else {
            return Ok(true);
        };
        if out.len() >= cap {
            full = true;
            return Ok(false);
        }
        out.push(listener);
        Ok(true)
    })?;
    Ok(full)
}

/// A Unix stream socket from a whole `SOCK_DIAG_BY_FAMILY` message; `None` for another kind.
fn parse_unix_stream(message: &[u8]) -> Result<Option<RawUnix>, String> {
    // Few records (one per listening Unix socket): the generic decoder is fine here.
    let message = NetlinkMessage::<SockDiagMessage>::deserialize(message).map_err(|e| e.to_string())?;
    let NetlinkPayload::InnerMessage(SockDiagMessage::UnixResponse(r)) = message.payload else {
        return Ok(None);
    };
    if r.header.kind != SOCK_STREAM {
        return Ok(None);
    }
    let path = r.name().map(|n| match n {
        UnixDiagName::Pathname(p) => String::from_utf8_lossy(p.as_bytes()).into_owned(),
        UnixDiagName::Abstract(a) => format!("@{}", String::from_utf8_lossy(a)),
    });
    Ok(Some(RawUnix { path, inode: u64::from(r.header.inode) }))
}

/// Any bytes as one received batch of a dump: each record read as a TCP socket and as a Unix
/// listener, as the scan reads them (the fuzz target `network_records`). Returns how many of
/// each were read.
#[doc(hidden)]
pub fn fuzz_batch(batch: &[u8]) -> (usize, usize) {
    let (mut inet, mut unix) = (0, 0);
    let _ = walk_batch("fuzz", batch, &mut |message, payload| {
        inet += usize::from(parse_inet(payload, Protocol::Tcp).is_ok());
        unix += usize::from(matches!(parse_unix_stream(message), Ok(Some(_))));
        Ok(true)
    });
    (inet, unix)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// An `inet_diag_msg` as the kernel lays it out, then `attrs` (type, value) padded to 4.
    fn record(
        family: u8,
        state: u8,
        src: &[u8],
        sport: u16,
        dst: &[u8],
        dport: u16,
        attrs: &[(u16, &[u8])],
    ) -> Vec<u8> {
        let mut m = vec![family, state, 0, 0];
        m.extend(sport.to_be_bytes());
        m.extend(dport.to_be_bytes());
        let addr = |a: &[u8]| {
            let mut raw = [0u8; 16];
            raw[..a.len()].copy_from_slice(a);
            raw
        };
        m.extend(addr(src));
        m.extend(addr(dst));
        m.extend(3u32.to_ne_bytes()); // id.if
        m.extend([0u8; 8]); // id.cookie
        m.extend(0u32.to_ne_bytes()); // expires
        m.extend(0u32.to_ne_bytes()); // rqueue
        m.extend(0u32.to_ne_bytes()); // wqueue
        m.extend(1000u32.to_ne_bytes()); // uid
        m.extend(424_242u32.to_ne_bytes()); // inode
        assert_eq!(m.len(), INET_DIAG_MSG_BYTES);
        for (kind, value) in attrs {
            let len = u16::try_from(4 + value.len()).unwrap();
            m.extend(len.to_ne_bytes());
            m.extend(kind.to_ne_bytes());
            m.extend(*value);
            m.resize(align4(m.len()), 0);
        }
        m
    }

    #[test]
    fn an_inet_record_is_read_in_place_with_its_v6only_attribute() {
        let v6 = Ipv6Addr::LOCALHOST.octets();
        // INET_DIAG_SHUTDOWN (8) and a cgroup id (21) first; v6only with the byte-order flag set.
        let r = record(
            FAMILY_INET6,
            10,
            &v6,
            8443,
            &[0; 16],
            0,
            &[(8, &[0]), (21, &7u64.to_ne_bytes()), (INET_DIAG_SKV6ONLY | 0x4000, &[1])],
        );
        let s = parse_inet(&r, Protocol::Tcp).unwrap();
        assert_eq!(s.family, Family::Ipv6);
        assert_eq!(s.local, "[::1]:8443".parse().unwrap());
        assert_eq!(s.remote, "[::]:0".parse().unwrap());
        assert_eq!(
            (s.state, s.inode, s.uid, s.interface_index, s.v6_only),
            (10, 424_242, 1000, 3, Some(true))
        );

        let r = record(FAMILY_INET, 1, &[127, 0, 0, 1], 40000, &[10, 0, 0, 2], 22, &[]);
        let s = parse_inet(&r, Protocol::Tcp).unwrap();
        assert_eq!((s.family, s.v6_only), (Family::Ipv4, None));
        assert_eq!(s.local, "127.0.0.1:40000".parse().unwrap());
        assert_eq!(s.remote, "10.0.0.2:22".parse().unwrap());
    }

    #[test]
    fn short_odd_or_foreign_inet_records_are_errors_not_panics() {
        let good = record(FAMILY_INET, 10, &[0; 4], 80, &[0; 4], 0, &[]);
        assert!(parse_inet(&good[..INET_DIAG_MSG_BYTES - 1], Protocol::Tcp).unwrap_err().contains("71-byte"));
        let mut foreign = good.clone();
        foreign[0] = 1; // AF_UNIX
        assert!(parse_inet(&foreign, Protocol::Tcp).unwrap_err().contains("address family"));
        // An attribute claiming more bytes than there are ends the list; the record stands.
        let mut odd = good.clone();
        odd.extend(200u16.to_ne_bytes());
        odd.extend(INET_DIAG_SKV6ONLY.to_ne_bytes());
        odd.push(1);
        let s = parse_inet(&odd, Protocol::Udp).unwrap();
        assert_eq!((s.local.port(), s.v6_only, s.protocol), (80, None, Protocol::Udp));
        // A zero-length attribute does not loop.
        let mut zero = good;
        zero.extend([0u8; 8]);
        assert_eq!(parse_inet(&zero, Protocol::Tcp).unwrap().v6_only, None);
    }
}
