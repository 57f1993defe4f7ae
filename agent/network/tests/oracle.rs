//! Oracle: the listener set equals what `ss -H -tulpn` prints at the same moment.

use crate::util::{live_lock, live_scan};
use guestward_network::{BackendChoice, NetworkReport, Protocol};
use std::collections::BTreeSet;
use std::net::{IpAddr, TcpListener, UdpSocket};
use std::process::Command;

/// (protocol, local address, port, pid); the wildcard address is `*` (`ss` prints `*`, `0.0.0.0`
/// or `[::]` depending on version), a socket without a visible owner has pid 0.
type Key = (String, String, u16, u32);

fn normalize_host(host: &str) -> String {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    // `127.0.0.53%lo`: ss appends the bound device.
    let host = host.split('%').next().unwrap_or(host);
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() => "*".to_string(),
        Ok(ip) => ip.to_string(),
        Err(_) => host.to_string(),
    }
}

fn ss_listeners() -> Option<BTreeSet<Key>> {
    let out = match Command::new("ss").args(["-H", "-tulpn"]).output() {
        Ok(out) if out.status.success() => out,
        Ok(out) => panic!("ss -H -tulpn failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => {
            guestward_core::testing::skip_or_fail(
                "ss oracle",
                &format!("`ss` (iproute2) cannot be run: {e}"),
            );
            return None;
        }
    };
    let mut set = BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(proto), Some(local)) = (fields.first(), fields.get(4)) else {
            continue;
        };
        let Some((host, port)) = local.rsplit_once(':') else { panic!("unexpected ss line: {line}") };
        let port: u16 = port.parse().unwrap_or_else(|_| panic!("unexpected ss port in: {line}"));
        let host = normalize_host(host);
        let users = fields.get(6..).map(|f| f.join(" ")).unwrap_or_default();
        let pids: Vec<u32> = users
            .split("pid=")
            .skip(1)
            .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .collect();
        if pids.is_empty() {
            set.insert((proto.to_string(), host.clone(), port, 0));
        }
        for pid in pids {
            set.insert((proto.to_string(), host.clone(), port, pid));
        }
    }
    Some(set)
}

fn our_listeners(report: &NetworkReport) -> BTreeSet<Key> {
    let mut set = BTreeSet::new();
    for s in &report.listeners {
        let proto = match s.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        let host = normalize_host(&s.local_address.to_string());
        if s.owners.is_empty() {
            set.insert((proto.to_string(), host.clone(), s.local_port, 0));
        }
        for o in &s.owners {
            set.insert((proto.to_string(), host.clone(), s.local_port, o.pid));
        }
    }
    set
}

fn compare(backend: BackendChoice) {
    let _guard = live_lock();
    // Our own listeners must be in both, every time.
    let tcp = TcpListener::bind("0.0.0.0:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = std::process::id();
    let mine: Vec<Key> = vec![
        ("tcp".into(), "*".into(), tcp.local_addr().unwrap().port(), me),
        ("udp".into(), "127.0.0.1".into(), udp.local_addr().unwrap().port(), me),
    ];
    let mut mismatch = None;
    for attempt in 0..10 {
        let Some(before) = ss_listeners() else { return };
        let ours = our_listeners(&live_scan(backend));
        let Some(after) = ss_listeners() else { return };
        for k in &mine {
            assert!(
                before.contains(k) && ours.contains(k),
                "{backend:?}: {k:?} missing (ss: {}, ours: {})",
                before.contains(k),
                ours.contains(k)
            );
        }
        if before != after {
            eprintln!("attempt {attempt}: host listeners changed during the comparison; retrying");
            continue;
        }
        if ours == before {
            return;
        }
        let only_ss: Vec<_> = before.difference(&ours).cloned().collect();
        let only_ours: Vec<_> = ours.difference(&before).cloned().collect();
        mismatch = Some(format!("only in ss: {only_ss:#?}\nonly in ours: {only_ours:#?}"));
    }
    match mismatch {
        Some(m) => panic!("{backend:?} disagrees with `ss -H -tulpn` on a stable host:\n{m}"),
        None => guestward_core::testing::skip_or_fail(
            &format!("ss oracle, {backend:?} backend (whole host)"),
            "listeners never held still for 10 attempts (own sockets matched)",
        ),
    }
}

#[test]
fn netlink_listeners_equal_ss_tulpn() {
    compare(BackendChoice::Netlink);
}

#[test]
fn procfs_listeners_equal_ss_tulpn() {
    compare(BackendChoice::Procfs);
}
