//! Fixture `/proc` trees: owners, unknown-owner reasons, findings, rendering, malformed lines.

use guestward_core::{HostRoot, SectionStatus, Severity};
use guestward_network::{
    Config, ExposureScope, NetworkError, NetworkReport, OwnerUnknownReason, Protocol, PublicAddress,
    RiskyPort, ScanContext, ScanOutput, collect, findings, mark_public_reachability, scan, table_string,
};
use std::net::IpAddr;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/network")).join(name)
}

fn basic() -> ScanOutput {
    let mut ctx = ScanContext::fixture(fixture("proc-basic"));
    ctx.users.insert(999, "redis".into());
    ctx.users.insert(0, "root".into());
    scan(&Config::default(), &ctx).unwrap()
}

fn listener(report: &NetworkReport, protocol: Protocol, port: u16) -> &guestward_network::Socket {
    report.listeners.iter().find(|s| s.protocol == protocol && s.local_port == port).unwrap()
}

#[test]
fn owners_shared_sockets_and_process_details() {
    let out = basic();
    let r = &out.report;
    assert_eq!(r.backend, guestward_network::Backend::Procfs);
    let redis = listener(r, Protocol::Tcp, 6379);
    assert_eq!(redis.local_address, "0.0.0.0".parse::<IpAddr>().unwrap());
    assert_eq!(redis.exposure.as_ref().unwrap().scope, ExposureScope::AllInterfaces);
    assert_eq!(
        redis.owners.iter().map(|o| (o.pid, o.name.as_str())).collect::<Vec<_>>(),
        vec![(100, "redis-server"), (200, "redis-server")]
    );
    assert_eq!(redis.uid, 999);
    let p = r.process(100).unwrap();
    assert_eq!(p.exe.as_deref(), Some("/usr/bin/redis-server"));
    assert_eq!(p.cmdline, vec!["/usr/bin/redis-server", "*:6379"]);
    assert_eq!((p.uid, p.user.as_deref()), (Some(999), Some("redis")));
    assert_eq!(p.systemd_unit.as_deref(), Some("redis-server.service"));
    assert_eq!(p.start_time_ticks, Some(1100));

    let sshd = listener(r, Protocol::Tcp, 22);
    assert_eq!(sshd.local_address, "::".parse::<IpAddr>().unwrap());
    assert_eq!(sshd.owners.iter().map(|o| o.pid).collect::<Vec<_>>(), vec![300]);
    assert_eq!(r.process(300).unwrap().systemd_unit.as_deref(), Some("ssh.service"));

    let conn = r.connections.iter().find(|s| s.inode == 1003).unwrap();
    assert_eq!(conn.owners.iter().map(|o| o.pid).collect::<Vec<_>>(), vec![100]);
    assert_eq!(conn.remote_port, 54321);

    let unix: Vec<_> = r.unix_listeners.iter().map(|u| (u.path.as_deref(), u.inode)).collect();
    assert_eq!(unix, vec![(Some("/run/redis/redis.sock"), 1006)]);
    assert_eq!(r.unix_listeners[0].owners[0].pid, 100);
    assert_eq!(r.owner_scan.processes_scanned, 4);
    assert_eq!(r.owner_scan.processes_vanished, 1);
    assert!(out.problems.is_empty(), "{:?}", out.problems);
}

#[test]
fn unknown_owners_say_why() {
    let r = basic().report;
    let reason = |s: &guestward_network::Socket| s.owner_unknown.as_ref().map(|u| u.reason);
    // Held by nobody.
    assert_eq!(reason(listener(&r, Protocol::Tcp, 5432)), Some(OwnerUnknownReason::NotFound));
    // Its only holder (pid 400) exited while being inspected.
    let dns = listener(&r, Protocol::Udp, 53);
    assert!(dns.owners.is_empty());
    assert_eq!(reason(dns), Some(OwnerUnknownReason::Vanished));
    // TIME_WAIT: no inode.
    let tw = r.connections.iter().find(|s| s.state == guestward_network::SocketState::TimeWait).unwrap();
    assert_eq!(reason(tw), Some(OwnerUnknownReason::NoInode));
    // Sockets with owners carry no reason.
    assert_eq!(reason(listener(&r, Protocol::Tcp, 6379)), None);
}

#[test]
fn owner_lookup_can_be_turned_off() {
    let config = Config { resolve_owners: false, include_connections: false, ..Config::default() };
    let out = scan(&config, &ScanContext::fixture(fixture("proc-basic"))).unwrap();
    assert!(out.report.connections.is_empty());
    assert!(out.report.processes.is_empty());
    assert!(
        out.report
            .listeners
            .iter()
            .all(|s| s.owner_unknown.as_ref().unwrap().reason == OwnerUnknownReason::NotResolved)
    );
}

#[test]
fn risky_service_on_all_interfaces_is_a_finding_with_process_and_evidence() {
    let mut report = basic().report;
    let f = findings(&report, &Config::default());
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].id, "GW-NET-001");
    assert_eq!(f[0].severity, Severity::High);
    assert!(f[0].title.contains("Redis") && f[0].title.contains("6379"), "{}", f[0].title);
    assert_eq!(f[0].evidence["port"], 6379);
    assert_eq!(f[0].evidence["addresses"][0], "0.0.0.0:6379");
    assert_eq!(f[0].evidence["processes"][0]["systemd_unit"], "redis-server.service");
    assert_eq!(f[0].evidence["processes"][1]["pid"], 200);
    // 5432 listens on loopback only: no finding.
    assert!(f.iter().all(|f| f.evidence["port"] != 5432));

    // Configurable list: sshd on 22 becomes a finding too.
    let config = Config {
        risky_ports: vec![RiskyPort {
            port: 22,
            protocol: Protocol::Tcp,
            service: "SSH".into(),
            severity: Severity::Low,
        }],
        ..Config::default()
    };
    let f = findings(&report, &config);
    let ssh = f.iter().find(|f| f.evidence["port"] == 22).unwrap();
    assert_eq!((ssh.severity, ssh.evidence["processes"][0]["name"].as_str()), (Severity::Low, Some("sshd")));

    // Reachable on the instance's public IPv4 (NAT-ed to a private address): critical.
    mark_public_reachability(
        &mut report,
        &[PublicAddress { public: "54.1.2.3".parse().unwrap(), local: Some("10.0.0.5".parse().unwrap()) }],
    );
    assert_eq!(
        listener(&report, Protocol::Tcp, 6379).exposure.as_ref().unwrap().public_addresses,
        vec!["54.1.2.3".parse::<IpAddr>().unwrap()]
    );
    assert!(listener(&report, Protocol::Tcp, 5432).exposure.as_ref().unwrap().public_addresses.is_empty());
    let f = findings(&report, &Config::default());
    assert_eq!(f[0].severity, Severity::Critical);
    assert_eq!(f[0].evidence["public_addresses"][0], "54.1.2.3");
}

#[test]
fn table_shows_exposure_processes_users_and_units() {
    let table = table_string(&basic().report);
    let redis = table.lines().find(|l| l.contains(":6379")).unwrap();
    for want in [
        "tcp",
        "LISTEN",
        "0.0.0.0:6379",
        "all-interfaces",
        "redis-server/100,redis-server/200",
        "redis",
        "redis-server.service",
    ] {
        assert!(redis.contains(want), "{want:?} missing from {redis:?}\n{table}");
    }
    let dns = table.lines().find(|l| l.contains("127.0.0.53:53")).unwrap();
    assert!(dns.contains("UNCONN") && dns.contains("loopback") && dns.contains("vanished"), "{dns}");
    assert!(table.contains("[::]:22"), "{table}");
    assert!(table.contains("/run/redis/redis.sock"), "{table}");
    assert!(table.contains("4 listeners (2 on all interfaces)"), "{table}");
}

#[test]
fn report_matches_its_json_schema() {
    let report = basic().report;
    let schema = serde_json::to_value(schemars::schema_for!(NetworkReport)).unwrap();
    let instance = serde_json::to_value(&report).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&instance).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let back: NetworkReport = serde_json::from_value(instance).unwrap();
    assert_eq!(back, report);
    // Field documentation reaches the schema.
    assert!(schema.to_string().contains("Every process holding the socket open"), "missing docs in schema");
}

#[test]
fn malformed_proc_net_lines_are_reported_by_line_and_the_rest_is_kept() {
    let out = scan(&Config::default(), &ScanContext::fixture(fixture("proc-malformed"))).unwrap();
    let ports: Vec<(Protocol, u16)> =
        out.report.listeners.iter().map(|s| (s.protocol, s.local_port)).collect();
    assert_eq!(ports, vec![(Protocol::Tcp, 22), (Protocol::Tcp, 8080), (Protocol::Udp, 68)]);
    assert_eq!(out.report.unix_listeners.len(), 1);
    let mut located: Vec<(String, u64)> = out
        .problems
        .iter()
        .map(|p| {
            assert_eq!(p.code, "malformed", "{p}");
            assert!(!p.message.contains("procfs bug") && !p.message.contains('\n'), "{p}");
            let path = p.path.clone().unwrap();
            let file = path.rsplit('/').next().unwrap().to_string();
            let line = p.line.unwrap();
            // The message names the file and line, and quotes the line.
            assert!(p.message.contains(&format!("{path}:{line}:")), "{p}");
            (file, line)
        })
        .collect();
    located.sort();
    let want: Vec<(String, u64)> = [("tcp", 3), ("tcp", 4), ("tcp", 5), ("tcp", 7), ("udp", 3), ("unix", 3)]
        .iter()
        .map(|(f, l)| (f.to_string(), *l))
        .collect();
    assert_eq!(located, want, "{:#?}", out.problems);
    let bad_hex = out
        .problems
        .iter()
        .find(|p| p.line == Some(3) && p.path.as_deref().unwrap().ends_with("/tcp"))
        .unwrap();
    assert!(bad_hex.message.contains("ZZ00007F:1538"), "{bad_hex}");
    let short = out
        .problems
        .iter()
        .find(|p| p.line == Some(4) && p.path.as_deref().unwrap().ends_with("/tcp"))
        .unwrap();
    assert!(short.message.contains("missing or invalid tcp::st"), "{short}");
}

#[test]
fn missing_proc_net_is_a_typed_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let err = scan(&Config::default(), &ScanContext::fixture(dir.path())).unwrap_err();
    assert!(matches!(err, NetworkError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains(&dir.path().join("net/tcp").display().to_string()), "{err}");
    assert_eq!(err.to_problem().code, "not_found");
}

#[test]
fn collect_is_live_only_and_respects_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let section = collect(&Config::default(), &HostRoot::new(dir.path()).unwrap());
    assert_eq!(section.status, SectionStatus::Skipped);
    assert!(section.note.unwrap().contains("live-only"));
    let off = collect(&Config { enabled: false, ..Config::default() }, &HostRoot::live());
    assert_eq!(off.status, SectionStatus::Skipped);
    let live = collect(&Config::default(), &HostRoot::live());
    assert!(matches!(live.status, SectionStatus::Ok | SectionStatus::Degraded), "{live:?}");
    assert!(live.data.is_some());
}
