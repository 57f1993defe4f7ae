//! Risky services listening on all interfaces.

use crate::config::RiskyPort;
use crate::model::{ExposureScope, NetworkReport, Protocol, Socket};
use guestward_core::{Finding, Severity};
use serde_json::json;
use std::collections::BTreeMap;

/// Rule id: a well-known risky service listens on all interfaces.
pub const RISKY_SERVICE_ALL_INTERFACES: &str = "GW-NET-001";

/// Every finding id this crate can raise (the finding catalogue checks it is complete).
pub const FINDING_IDS: &[&str] = &[RISKY_SERVICE_ALL_INTERFACES];

/// The built-in risky services: data stores and control planes that are routinely found open to
/// the internet and give an attacker data or code execution.
pub fn builtin_risky_ports() -> Vec<RiskyPort> {
    let p = |port, protocol, service: &str, severity| RiskyPort {
        port,
        protocol,
        service: service.into(),
        severity,
    };
    vec![
        p(3306, Protocol::Tcp, "MySQL/MariaDB", Severity::High),
        p(5432, Protocol::Tcp, "PostgreSQL", Severity::High),
        p(6379, Protocol::Tcp, "Redis", Severity::High),
        p(27017, Protocol::Tcp, "MongoDB", Severity::High),
        p(9200, Protocol::Tcp, "Elasticsearch", Severity::High),
        // The plain-text Docker API is unauthenticated root on the host.
        p(2375, Protocol::Tcp, "Docker API (plain text)", Severity::Critical),
        p(2376, Protocol::Tcp, "Docker API (TLS)", Severity::High),
        p(10250, Protocol::Tcp, "Kubelet API", Severity::High),
        p(2379, Protocol::Tcp, "etcd client API", Severity::High),
        p(11211, Protocol::Tcp, "memcached", Severity::High),
        // UDP memcached is a well-known DDoS amplifier.
        p(11211, Protocol::Udp, "memcached", Severity::High),
    ]
}

/// One finding per risky (protocol, port) listening on all interfaces, naming every socket and
/// owning process. `extra` comes from the `risky_ports` config and overrides built-in entries
/// for the same protocol and port. A listener reachable on a public address is `critical`.
pub fn risky_listener_findings(report: &NetworkReport, extra: &[RiskyPort]) -> Vec<Finding> {
    let mut rules: BTreeMap<(Protocol, u16), RiskyPort> = BTreeMap::new();
    for r in builtin_risky_ports().into_iter().chain(extra.iter().cloned()) {
        rules.insert((r.protocol, r.port), r);
    }
    let mut hits: BTreeMap<(Protocol, u16), Vec<&Socket>> = BTreeMap::new();
    for s in &report.listeners {
        let wide = s.exposure.as_ref().is_some_and(|e| e.scope == ExposureScope::AllInterfaces);
        if wide && rules.contains_key(&(s.protocol, s.local_port)) {
            hits.entry((s.protocol, s.local_port)).or_default().push(s);
        }
    }
    let mut findings = Vec::new();
    for (key, sockets) in hits {
        let Some(rule) = rules.get(&key) else {
            continue;
        };
        let mut public: Vec<_> = sockets
            .iter()
            .filter_map(|s| s.exposure.as_ref())
            .flat_map(|e| e.public_addresses.iter().copied())
            .collect();
        public.sort_unstable();
        public.dedup();
        let severity = if public.is_empty() { rule.severity } else { Severity::Critical };
        let mut pids: Vec<u32> = sockets.iter().flat_map(|s| s.owners.iter().map(|o| o.pid)).collect();
        pids.sort_unstable();
        pids.dedup();
        let processes: Vec<_> = pids
            .iter()
            .map(|pid| match report.process(*pid) {
                Some(p) => json!({
                    "pid": p.pid, "name": p.name, "exe": p.exe, "cmdline": p.cmdline,
                    "user": p.user, "uid": p.uid, "systemd_unit": p.systemd_unit,
                }),
                None => json!({ "pid": pid }),
            })
            .collect();
        let names: Vec<&str> =
            pids.iter().filter_map(|p| report.process(*p)).map(|p| p.name.as_str()).collect();
        let who = if names.is_empty() { String::new() } else { format!(" ({})", names.join(", ")) };
        let addresses: Vec<String> =
            sockets.iter().map(|s| crate::render::endpoint(s.local_address, s.local_port)).collect();
        findings.push(Finding {
            id: RISKY_SERVICE_ALL_INTERFACES.to_string(),
            severity,
            title: format!("{} listens on all interfaces on {}/{}{who}", rule.service, key.0, key.1),
            evidence: json!({
                "service": rule.service,
                "protocol": key.0,
                "port": key.1,
                "addresses": addresses,
                "public_addresses": public,
                "processes": processes,
                "owner_unknown": sockets.iter().filter_map(|s| s.owner_unknown.as_ref()).map(|u| u.reason).collect::<Vec<_>>(),
            }),
            remediation: format!(
                "Bind {} to 127.0.0.1 or a private interface address in its configuration, or restrict port {} with a \
                 host firewall and the instance's security group.",
                rule.service, key.1
            ),
            source: "network".to_string(),
        });
    }
    findings
}
