//! Real sockets on this machine, found by both backends with the right pid and exposure.

use crate::util::{find, inode_of, ipv6_available, live_lock, live_scan};
use guestward_network::{BackendChoice, ExposureScope, Family, Protocol, SocketState, host_interfaces};
use std::collections::BTreeSet;
use std::net::{IpAddr, TcpListener, UdpSocket};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};

struct Expect {
    what: &'static str,
    inode: u64,
    protocol: Protocol,
    family: Family,
    address: IpAddr,
    port: u16,
    scope: ExposureScope,
    interface: Option<String>,
    pids: Vec<u32>,
}

/// Sockets we keep open for the duration of a test.
type Held = OwnedFd;

/// A child holding a copy of one of our sockets as its stdin: the kernel then lists two owners.
struct Sharer(Child);

impl Drop for Sharer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn share_with_child(listener: &TcpListener) -> Sharer {
    let copy: OwnedFd = listener.try_clone().unwrap().into();
    // `sleep` never reads stdin; it just keeps the inherited descriptor. 60 s bounds a leak if
    // the test process is killed before Drop runs.
    let child = Command::new("sleep").arg("60").stdin(Stdio::from(copy)).spawn().unwrap();
    Sharer(child)
}

fn open_all() -> (Vec<Held>, Vec<Expect>, Option<Sharer>) {
    let me = std::process::id();
    let mut held = Vec::new();
    let mut expect = Vec::new();
    let mut tcp = |what, addr: &str, family, scope, interface: Option<String>| {
        let l = TcpListener::bind(addr).unwrap();
        let local = l.local_addr().unwrap();
        expect.push(Expect {
            what,
            inode: inode_of(&l),
            protocol: Protocol::Tcp,
            family,
            address: local.ip(),
            port: local.port(),
            scope,
            interface,
            pids: vec![me],
        });
        held.push(OwnedFd::from(l));
    };
    tcp("tcp4 wildcard", "0.0.0.0:0", Family::Ipv4, ExposureScope::AllInterfaces, None);
    tcp("tcp4 loopback", "127.0.0.1:0", Family::Ipv4, ExposureScope::Loopback, None);
    if ipv6_available() {
        tcp("tcp6 wildcard", "[::]:0", Family::Ipv6, ExposureScope::AllInterfaces, None);
        tcp("tcp6 loopback", "[::1]:0", Family::Ipv6, ExposureScope::Loopback, None);
    } else {
        guestward_core::testing::skip_or_fail(
            "live listeners: IPv6 TCP listeners",
            "IPv6 is not available on this machine",
        );
    }
    // A specific non-loopback address, named with its interface.
    let specific = host_interfaces().unwrap().into_iter().find_map(|i| {
        i.addresses.iter().find(|a| a.is_ipv4() && !a.is_loopback()).map(|a| (i.name.clone(), *a))
    });
    match specific {
        Some((name, addr)) => {
            tcp("tcp4 interface", &format!("{addr}:0"), Family::Ipv4, ExposureScope::Interface, Some(name))
        }
        None => guestward_core::testing::skip_or_fail(
            "live listeners: interface-bound listener",
            "no non-loopback IPv4 address on this machine",
        ),
    }
    let mut udp = |what, addr: &str, family, scope| {
        let s = UdpSocket::bind(addr).unwrap();
        let local = s.local_addr().unwrap();
        expect.push(Expect {
            what,
            inode: inode_of(&s),
            protocol: Protocol::Udp,
            family,
            address: local.ip(),
            port: local.port(),
            scope,
            interface: None,
            pids: vec![me],
        });
        held.push(OwnedFd::from(s));
    };
    udp("udp4 wildcard", "0.0.0.0:0", Family::Ipv4, ExposureScope::AllInterfaces);
    udp("udp4 loopback", "127.0.0.1:0", Family::Ipv4, ExposureScope::Loopback);
    if ipv6_available() {
        udp("udp6 wildcard", "[::]:0", Family::Ipv6, ExposureScope::AllInterfaces);
        udp("udp6 loopback", "[::1]:0", Family::Ipv6, ExposureScope::Loopback);
    }
    // Shared with a child process.
    let shared = TcpListener::bind("127.0.0.1:0").unwrap();
    let sharer = share_with_child(&shared);
    let local = shared.local_addr().unwrap();
    let mut pids = vec![me, sharer.0.id()];
    pids.sort_unstable();
    expect.push(Expect {
        what: "tcp4 shared with a child",
        inode: inode_of(&shared),
        protocol: Protocol::Tcp,
        family: Family::Ipv4,
        address: local.ip(),
        port: local.port(),
        scope: ExposureScope::Loopback,
        interface: None,
        pids,
    });
    held.push(OwnedFd::from(shared));
    (held, expect, Some(sharer))
}

fn check(backend: BackendChoice) {
    let _guard = live_lock();
    let (held, expect, sharer) = open_all();
    let report = live_scan(backend);
    for e in &expect {
        let s = find(&report, e.inode)
            .unwrap_or_else(|| panic!("{backend:?}: {} (inode {}) not found", e.what, e.inode));
        assert!(s.listening, "{backend:?}: {} not a listener: {s:?}", e.what);
        let state = if e.protocol == Protocol::Tcp { SocketState::Listen } else { SocketState::Close };
        assert_eq!(
            (s.protocol, s.family, s.local_address, s.local_port, s.state),
            (e.protocol, e.family, e.address, e.port, state),
            "{backend:?}: {}",
            e.what
        );
        let exposure = s.exposure.as_ref().unwrap();
        assert_eq!(exposure.scope, e.scope, "{backend:?}: {}", e.what);
        if e.interface.is_some() {
            assert_eq!(exposure.interface, e.interface, "{backend:?}: {}", e.what);
        }
        let pids: Vec<u32> = s.owners.iter().map(|o| o.pid).collect();
        assert_eq!(pids, e.pids, "{backend:?}: owners of {}: {s:?}", e.what);
        for pid in &pids {
            let p = report.process(*pid).unwrap();
            assert!(!p.name.is_empty() && p.start_time_ticks.is_some(), "{p:?}");
        }
        assert_eq!(s.owner_unknown, None, "{backend:?}: {}", e.what);
    }
    // Our own process's details are right.
    let me = report.process(std::process::id()).unwrap();
    assert_eq!(me.exe.as_deref(), std::env::current_exe().ok().map(|p| p.display().to_string()).as_deref());
    assert_eq!(me.uid, Some(nix::unistd::geteuid().as_raw()));
    assert!(!me.cmdline.is_empty());
    if backend == BackendChoice::Netlink && ipv6_available() {
        // std does not set IPV6_V6ONLY, so with the default sysctl a `::` listener is dual-stack.
        let e = expect.iter().find(|e| e.what == "tcp6 wildcard").unwrap();
        let s = find(&report, e.inode).unwrap();
        let v6only_sysctl = std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").unwrap_or_default();
        let expected = v6only_sysctl.trim() == "0";
        assert_eq!(s.exposure.as_ref().unwrap().dual_stack, Some(expected));
    }

    // Closed sockets (and the child's copy) disappear.
    let inodes: BTreeSet<u64> = expect.iter().map(|e| e.inode).collect();
    drop(held);
    drop(sharer);
    let after = live_scan(backend);
    for s in after.listeners.iter().chain(&after.connections) {
        assert!(!inodes.contains(&s.inode), "{backend:?}: closed socket still listed: {s:?}");
    }
}

#[test]
fn netlink_finds_real_listeners_with_pid_and_exposure_and_forgets_closed_ones() {
    check(BackendChoice::Netlink);
}

#[test]
fn procfs_finds_real_listeners_with_pid_and_exposure_and_forgets_closed_ones() {
    check(BackendChoice::Procfs);
}

#[test]
fn a_connection_is_reported_with_its_peer_and_owner() {
    let _guard = live_lock();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    for backend in [BackendChoice::Netlink, BackendChoice::Procfs] {
        let report = live_scan(backend);
        let c = find(&report, inode_of(&client)).unwrap();
        assert_eq!(c.state, SocketState::Established);
        assert!(!c.listening && c.exposure.is_none());
        assert_eq!(
            (c.remote_address, c.remote_port),
            (listener.local_addr().unwrap().ip(), listener.local_addr().unwrap().port())
        );
        assert_eq!(c.owners.iter().map(|o| o.pid).collect::<Vec<_>>(), vec![std::process::id()]);
        let s = find(&report, inode_of(&server)).unwrap();
        assert_eq!(s.remote_port, client.local_addr().unwrap().port());
    }
}

#[test]
fn unix_stream_listeners_are_listed_with_owner() {
    let _guard = live_lock();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw-test.sock");
    let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let inode = inode_of(&l);
    for backend in [BackendChoice::Netlink, BackendChoice::Procfs] {
        let report = live_scan(backend);
        let u =
            report.unix_listeners.iter().find(|u| u.inode == inode).unwrap_or_else(|| panic!("{backend:?}"));
        assert_eq!(u.path.as_deref(), Some(path.to_str().unwrap()));
        assert_eq!(u.owners.iter().map(|o| o.pid).collect::<Vec<_>>(), vec![std::process::id()]);
    }
}

/// Both backends list the same listeners. The whole-host comparison retries because other
/// programs (parallel test runs) open and close sockets between the two dumps; our own
/// listeners must match every time.
#[test]
fn netlink_and_procfs_backends_return_the_same_set() {
    let _guard = live_lock();
    let (_held, expect, _sharer) = open_all();
    let key = |s: &guestward_network::Socket| {
        let pids: Vec<u32> = s.owners.iter().map(|o| o.pid).collect();
        (s.protocol, s.family, s.local_address, s.local_port, s.inode, s.state, pids)
    };
    let mut last = None;
    for attempt in 0..10 {
        let a = live_scan(BackendChoice::Netlink);
        let b = live_scan(BackendChoice::Procfs);
        let c = live_scan(BackendChoice::Netlink);
        for e in &expect {
            let (x, y) = (find(&a, e.inode).unwrap(), find(&b, e.inode).unwrap());
            assert_eq!(key(x), key(y), "{}", e.what);
            assert_eq!(
                x.exposure.as_ref().map(|e| (e.scope, &e.interface)),
                y.exposure.as_ref().map(|e| (e.scope, &e.interface))
            );
        }
        let set = |r: &guestward_network::NetworkReport| r.listeners.iter().map(key).collect::<BTreeSet<_>>();
        let (sa, sb, sc) = (set(&a), set(&b), set(&c));
        if sa != sc {
            eprintln!("attempt {attempt}: listeners changed during the comparison; retrying");
            continue;
        }
        if sa == sb {
            return;
        }
        last = Some((sa.symmetric_difference(&sb).cloned().collect::<Vec<_>>(), attempt));
    }
    match last {
        Some((difference, _)) => {
            panic!("netlink and procfs disagree on a stable host: {difference:#?}")
        }
        None => guestward_core::testing::skip_or_fail(
            "netlink_and_procfs_backends_return_the_same_set (whole host)",
            "the host's listeners never held still for 10 attempts (own sockets matched)",
        ),
    }
}
