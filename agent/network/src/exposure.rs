//! How far a listener can be reached from: loopback, one interface, all interfaces, and (with
//! cloud metadata) which of the instance's public addresses.

use crate::model::{Exposure, ExposureScope, Family, Interface, NetworkReport, Socket};
#[cfg(feature = "collect")]
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The address as IPv4 when it is an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), which is how
/// a dual-stack socket bound to an IPv4 address shows up.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// Classifies a listener bound to `addr` (and optionally to a device with `SO_BINDTODEVICE`).
pub fn classify(addr: IpAddr, bound_device: Option<&str>, interfaces: &[Interface]) -> Exposure {
    let addr = canonical(addr);
    let (scope, interface) = if addr.is_loopback() {
        (ExposureScope::Loopback, None)
    } else if addr.is_unspecified() {
        match bound_device {
            // A wildcard socket tied to one device only receives traffic from that device.
            Some(dev) if !dev.is_empty() => {
                let scope = if is_loopback_device(dev, interfaces) {
                    ExposureScope::Loopback
                } else {
                    ExposureScope::Interface
                };
                (scope, Some(dev.to_string()))
            }
            _ => (ExposureScope::AllInterfaces, None),
        }
    } else {
        let owner = interfaces
            .iter()
            .find(|i| i.addresses.iter().any(|a| canonical(*a) == addr))
            .map(|i| i.name.clone())
            .or_else(|| bound_device.map(str::to_string));
        (ExposureScope::Interface, owner)
    };
    Exposure { scope, interface, dual_stack: None, public_addresses: Vec::new() }
}

fn is_loopback_device(dev: &str, interfaces: &[Interface]) -> bool {
    interfaces
        .iter()
        .find(|i| i.name == dev)
        .is_some_and(|i| !i.addresses.is_empty() && i.addresses.iter().all(|a| a.is_loopback()))
}

#[cfg(feature = "collect")]
/// The host's interfaces and their addresses (`getifaddrs`), sorted by name.
pub fn host_interfaces() -> std::io::Result<Vec<Interface>> {
    let mut by_name: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)? {
        let addresses = by_name.entry(ifa.interface_name.clone()).or_default();
        let Some(address) = ifa.address else { continue };
        if let Some(v4) = address.as_sockaddr_in() {
            addresses.push(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = address.as_sockaddr_in6() {
            addresses.push(IpAddr::V6(v6.ip()));
        }
    }
    Ok(by_name.into_iter().map(|(name, addresses)| Interface { name, addresses }).collect())
}

#[cfg(feature = "collect")]
/// Interface index -> name, for sockets bound with `SO_BINDTODEVICE`.
pub(crate) fn interface_names() -> BTreeMap<u32, String> {
    let mut map = BTreeMap::new();
    if let Ok(list) = nix::net::if_::if_nameindex() {
        for i in list.iter() {
            map.insert(i.index(), i.name().to_string_lossy().into_owned());
        }
    }
    map
}

/// One of the instance's public addresses, as cloud metadata describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicAddress {
    /// The public address (an Elastic or auto-assigned public IPv4, or a global IPv6).
    pub public: IpAddr,
    /// The private address the cloud translates it to, when it is NAT-ed (EC2 public IPv4 is:
    /// the instance only ever sees its private address). `None` for addresses configured on the
    /// interface itself (EC2 IPv6).
    pub local: Option<IpAddr>,
}

impl From<IpAddr> for PublicAddress {
    fn from(public: IpAddr) -> Self {
        Self { public, local: None }
    }
}

/// The public addresses on which `socket` (a listener) accepts connections.
pub fn reachable_public_addresses(socket: &Socket, public: &[PublicAddress]) -> Vec<IpAddr> {
    let Some(exposure) = &socket.exposure else {
        return Vec::new();
    };
    let bound = canonical(socket.local_address);
    let mut out: Vec<IpAddr> = public
        .iter()
        .filter(|p| match exposure.scope {
            ExposureScope::Loopback => false,
            ExposureScope::AllInterfaces => {
                let wants_v4 = p.public.is_ipv4();
                match socket.family {
                    Family::Ipv4 => wants_v4,
                    // `::ffff:0.0.0.0` is an IPv4-only wildcard on an IPv6 socket.
                    Family::Ipv6 if bound.is_ipv4() => wants_v4,
                    // `::` takes IPv4 too unless IPV6_V6ONLY is set (unknown -> assume it does).
                    Family::Ipv6 => !wants_v4 || exposure.dual_stack != Some(false),
                }
            }
            ExposureScope::Interface => canonical(p.public) == bound || p.local.map(canonical) == Some(bound),
        })
        .map(|p| p.public)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Marks every listener in `report` with the instance's public addresses it can be reached on
/// (the hook the cloud-metadata collector calls once it knows them).
pub fn mark_public_reachability(report: &mut NetworkReport, public: &[PublicAddress]) {
    for socket in &mut report.listeners {
        let reachable = reachable_public_addresses(socket, public);
        if let Some(exposure) = &mut socket.exposure {
            exposure.public_addresses = reachable;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn ifs() -> Vec<Interface> {
        vec![
            Interface {
                name: "lo".into(),
                addresses: vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
            },
            Interface {
                name: "eth0".into(),
                addresses: vec!["10.0.0.5".parse().unwrap(), "2600:1f18::5".parse().unwrap()],
            },
        ]
    }

    fn scope(addr: &str) -> (ExposureScope, Option<String>) {
        let e = classify(addr.parse().unwrap(), None, &ifs());
        (e.scope, e.interface)
    }

    #[test]
    fn loopback_wildcard_and_interface() {
        assert_eq!(scope("127.0.0.53").0, ExposureScope::Loopback);
        assert_eq!(scope("::1").0, ExposureScope::Loopback);
        assert_eq!(scope("::ffff:127.0.0.1").0, ExposureScope::Loopback);
        assert_eq!(scope("0.0.0.0").0, ExposureScope::AllInterfaces);
        assert_eq!(scope("::").0, ExposureScope::AllInterfaces);
        assert_eq!(scope("::ffff:0.0.0.0").0, ExposureScope::AllInterfaces);
        assert_eq!(scope("10.0.0.5"), (ExposureScope::Interface, Some("eth0".into())));
        assert_eq!(scope("::ffff:10.0.0.5"), (ExposureScope::Interface, Some("eth0".into())));
        assert_eq!(scope("2600:1f18::5"), (ExposureScope::Interface, Some("eth0".into())));
        assert_eq!(scope("192.0.2.1"), (ExposureScope::Interface, None));
        let bound = classify("0.0.0.0".parse().unwrap(), Some("eth0"), &ifs());
        assert_eq!((bound.scope, bound.interface.as_deref()), (ExposureScope::Interface, Some("eth0")));
    }

    fn listener(family: Family, addr: &str, dual: Option<bool>) -> Socket {
        let local_address: IpAddr = addr.parse().unwrap();
        let mut exposure = classify(local_address, None, &ifs());
        exposure.dual_stack = dual;
        Socket {
            protocol: crate::model::Protocol::Tcp,
            family,
            local_address,
            local_port: 5432,
            remote_address: local_address,
            remote_port: 0,
            state: crate::model::SocketState::Listen,
            inode: 1,
            uid: 0,
            bound_device: None,
            listening: true,
            exposure: Some(exposure),
            owners: vec![],
            owner_unknown: None,
        }
    }

    #[test]
    fn public_reachability_follows_family_binding_and_nat() {
        let public = [
            PublicAddress { public: "54.1.2.3".parse().unwrap(), local: Some("10.0.0.5".parse().unwrap()) },
            PublicAddress::from("2600:1f18::5".parse::<IpAddr>().unwrap()),
        ];
        let v4: IpAddr = "54.1.2.3".parse().unwrap();
        let v6: IpAddr = "2600:1f18::5".parse().unwrap();
        let r = |s: &Socket| reachable_public_addresses(s, &public);
        assert_eq!(r(&listener(Family::Ipv4, "0.0.0.0", None)), vec![v4]);
        // dual_stack = Some(false): IPV6_V6ONLY is set, IPv4 clients cannot connect.
        assert_eq!(r(&listener(Family::Ipv6, "::", Some(false))), vec![v6]);
        assert_eq!(r(&listener(Family::Ipv6, "::", Some(true))), vec![v4, v6]);
        assert_eq!(r(&listener(Family::Ipv6, "::", None)), vec![v4, v6]);
        assert_eq!(r(&listener(Family::Ipv6, "::ffff:0.0.0.0", None)), vec![v4]);
        assert_eq!(r(&listener(Family::Ipv4, "10.0.0.5", None)), vec![v4]);
        assert_eq!(r(&listener(Family::Ipv6, "2600:1f18::5", None)), vec![v6]);
        assert!(r(&listener(Family::Ipv4, "127.0.0.1", None)).is_empty());
        assert!(r(&listener(Family::Ipv4, "10.9.9.9", None)).is_empty());
    }
}
