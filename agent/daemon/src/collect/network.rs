use crate::config::Config;
use guestward_cloud::CloudReport;
use guestward_core::{HostRoot, Section};
use guestward_network::{NetworkReport, PublicAddress};
use std::net::IpAddr;

/// Listening sockets with owners and exposure. Live-only: on an offline root the section is
/// skipped with a note. Findings are drawn in `scan.rs`, after cloud facts are known.
pub fn collect(root: &HostRoot, config: &Config) -> Section<NetworkReport> {
    guestward_network::collect(&config.network, root)
}

/// The instance's public addresses as instance metadata describes them. EC2 public IPv4 is
/// 1:1 NAT: the instance only sees the private address, so each public address is paired with
/// the interface's private address in the same position (the primary private IPv4 carries the
/// first public one); IPv6 addresses are configured on the interface itself.
pub fn public_addresses(cloud: &CloudReport) -> Vec<PublicAddress> {
    let parse = |s: &String| s.parse::<IpAddr>().ok();
    let mut out = Vec::new();
    for nic in &cloud.interfaces {
        for (i, public) in nic.public_ipv4s.iter().filter_map(parse).enumerate() {
            out.push(PublicAddress { public, local: nic.private_ipv4s.get(i).and_then(parse) });
        }
        out.extend(nic.ipv6s.iter().filter_map(parse).filter(is_global_v6).map(PublicAddress::from));
    }
    if out.is_empty()
        && let Some(public) = cloud.instance.as_ref().and_then(|i| i.public_ipv4.as_ref()).and_then(parse)
    {
        let local = cloud.instance.as_ref().and_then(|i| i.private_ipv4.as_ref()).and_then(parse);
        out.push(PublicAddress { public, local });
    }
    out
}

/// Global unicast IPv6 (2000::/3): link-local and unique-local addresses are not reachable from
/// the internet.
fn is_global_v6(addr: &IpAddr) -> bool {
    matches!(addr, IpAddr::V6(v6) if (v6.segments()[0] & 0xe000) == 0x2000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use guestward_cloud::NetworkInterface;

    #[test]
    fn public_ipv4_pairs_with_the_private_address_and_global_ipv6_stands_alone() {
        let cloud = CloudReport {
            interfaces: vec![NetworkInterface {
                mac: "0e:00:00:00:00:01".into(),
                private_ipv4s: vec!["172.31.5.10".into(), "172.31.5.11".into()],
                public_ipv4s: vec!["3.91.0.10".into()],
                ipv6s: vec!["2600:1f18::10".into(), "fd00::1".into()],
                ..Default::default()
            }],
            ..serde_json::from_value(serde_json::json!({"state": "not_ec2"})).unwrap()
        };
        let got = public_addresses(&cloud);
        assert_eq!(
            got,
            vec![
                PublicAddress {
                    public: "3.91.0.10".parse().unwrap(),
                    local: Some("172.31.5.10".parse().unwrap())
                },
                PublicAddress { public: "2600:1f18::10".parse().unwrap(), local: None },
            ]
        );
    }
}
