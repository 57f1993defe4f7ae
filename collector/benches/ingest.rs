//! Collector ingest benchmark (issue 11): an in-process collector on 127.0.0.1 and, in the same
//! process, 500 simulated agents, each with its own client certificate and its own reused
//! connection (connected first, then timed), each posting 20 batches (one report per batch, zstd-compressed as the shipper
//! sends them), all agents at once. Prints batches/s and latency percentiles, then how long the
//! operators' fleet searches take: `GET /v1/findings` over every host's latest report and
//! `GET /v1/packages` over every host's package inventory.
//!
//!     cargo bench -p guestward-collector --bench ingest
//!
//! `GW_BENCH_AGENTS` and `GW_BENCH_BATCHES` change the 500 x 20. With `GW_BENCH_PACKAGES=N`
//! (default 0: the reports of issue 11's target, about 3 KiB) each report also carries a package
//! inventory of N rpm packages (700: a small server), the same in every report of a host except
//! that halfway through each host upgrades openssl: the collector indexes each host's inventory
//! once, keeps it while it does not change and rewrites the changed rows once; the package
//! searches are then timed too. With `GW_BENCH_LISTENERS=N` each report also carries a network
//! scan of N listeners and Redis (process ids new in every report, the listeners the same), and
//! the listener searches are timed. `GW_BENCH_DISTINCT=1` gives each host a package of its own, so
//! that no two hosts share a package list (the index's worst case). The database is a real SQLite file (synchronous = FULL, group
//! commit) in a temporary directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use guestward_collector::config::{self, Overrides, RawConfig};
use guestward_collector::pki::{self, IssueOptions};
use guestward_core::{Event, Finding, Severity, Timestamp};
use guestward_report::ingest::{
    BatchStatus, FleetFindings, FleetListeners, FleetPackages, HostList, IngestRequest, IngestResponse,
};
use guestward_report::{AgentInfo, HostIdSource, Report};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The openssl versions of the fleet: host `i` runs `OPENSSL[i % 3]` until its upgrade.
const OPENSSL: [&str; 3] = ["3.0.8", "3.0.2", "3.0.7"];

/// `packages` rpm packages (plus openssl at `openssl`, and `own` when given), as a host's
/// packages collector sends them.
fn inventory(
    packages: usize,
    openssl: &str,
    own: Option<String>,
) -> guestward_core::Section<guestward_packages::PackagesReport> {
    let package = |name: String, version: &str| guestward_rpmdb::RpmPackage {
        record: 0,
        name,
        epoch: None,
        version: version.into(),
        release: "1.amzn2023.0.1".into(),
        arch: Some("x86_64".into()),
        source_rpm: None,
        size_bytes: Some(1 << 20),
        vendor: Some("Amazon Linux".into()),
        license: Some("MIT".into()),
        install_time: None,
        digests: Default::default(),
    };
    let mut list: Vec<_> = (0..packages).map(|i| package(format!("package-{i:04}"), "1.2.3")).collect();
    list.push(package("openssl-libs".into(), openssl));
    list.extend(own.map(|name| package(name, "1.0")));
    let rpm = guestward_rpmdb::RpmInventory {
        db_path: "/var/lib/rpm/rpmdb.sqlite".into(),
        backend: guestward_rpmdb::Backend::Sqlite,
        packages: list,
        corrupt: Vec::new(),
        problems: Vec::new(),
    };
    let data = guestward_packages::PackagesReport { dpkg: None, rpm: Some(rpm), language: None };
    guestward_core::Section::from_parts(Some(data), Vec::new(), Instant::now())
}

/// `listeners` TCP listeners on every interface (ports 1000 and up, owned by ten services), and
/// Redis on 6379, on every interface for even hosts and on loopback for odd ones, as a host's
/// network collector sends them; the process ids change with every report (`sequence`), as
/// after a restart, and are not what the collector indexes.
fn network(
    listeners: usize,
    host: usize,
    sequence: u64,
) -> guestward_core::Section<guestward_network::NetworkReport> {
    use guestward_network::{Exposure, ExposureScope, ProcessInfo, Socket, SocketOwner};
    let pid = |service: usize| (sequence as u32) * 100 + service as u32;
    let socket = |port: u16, scope: ExposureScope, service: usize| Socket {
        protocol: guestward_network::Protocol::Tcp,
        family: guestward_network::Family::Ipv4,
        local_address: if scope == ExposureScope::Loopback {
            [127, 0, 0, 1].into()
        } else {
            [0, 0, 0, 0].into()
        },
        local_port: port,
        remote_address: [0, 0, 0, 0].into(),
        remote_port: 0,
        state: guestward_network::SocketState::Listen,
        inode: u64::from(port),
        uid: 0,
        bound_device: None,
        listening: true,
        exposure: Some(Exposure { scope, interface: None, dual_stack: None, public_addresses: Vec::new() }),
        owners: vec![SocketOwner { pid: pid(service), name: format!("svc-{service}") }],
        owner_unknown: None,
    };
    let mut sockets: Vec<Socket> =
        (0..listeners).map(|i| socket(1000 + i as u16, ExposureScope::AllInterfaces, i % 10)).collect();
    let redis = if host.is_multiple_of(2) { ExposureScope::AllInterfaces } else { ExposureScope::Loopback };
    sockets.push(socket(6379, redis, 10));
    let processes = (0..=10)
        .map(|service| ProcessInfo {
            pid: pid(service),
            name: format!("svc-{service}"),
            exe: Some(format!("/usr/bin/svc-{service}")),
            cmdline: vec![format!("/usr/bin/svc-{service}"), "--port".into(), "1000".into()],
            uid: Some(998),
            user: Some("svc".into()),
            systemd_unit: Some(format!("svc-{service}.service")),
            start_time_ticks: Some(sequence),
        })
        .collect();
    let data = guestward_network::NetworkReport {
        backend: guestward_network::Backend::Netlink,
        fallback_reason: None,
        listeners: sockets,
        connections: Vec::new(),
        unix_listeners: Vec::new(),
        processes,
        interfaces: Vec::new(),
        owner_scan: Default::default(),
        truncated: false,
    };
    guestward_core::Section::from_parts(Some(data), Vec::new(), Instant::now())
}

/// A report of the size a daemon cycle sends: a few findings and events (about 3 KiB of
/// JSON) and, with `packages`, the package inventory.
fn report(host: &str, sequence: u64) -> Report {
    let agent = AgentInfo {
        version: "0.1.0".into(),
        host_id: Some(host.into()),
        host_id_source: HostIdSource::Config,
    };
    let mut r = Report::new(agent, Timestamp::now());
    r.sequence = Some(sequence);
    for i in 0..5 {
        r.findings.push(Finding {
            id: format!("GW-NET-00{i}"),
            severity: Severity::Medium,
            title: format!("port {} listens on 0.0.0.0", 8000 + i),
            evidence: serde_json::json!({"port": 8000 + i, "process": "python3", "pid": 4242 + i}),
            remediation: "bind to 127.0.0.1 or close the port".into(),
            source: "network".into(),
        });
        r.events.push(Event {
            kind: "fim.change".into(),
            time: Timestamp::now(),
            data: serde_json::json!({"path": format!("/etc/app/conf.d/{i}.conf"), "change": "modified",
                "sha256": "5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"}),
        });
    }
    r
}

fn agent_identity(issuer: &rcgen::Issuer<'_, KeyPair>, host: &str) -> reqwest::Identity {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, host);
    p.subject_alt_names =
        vec![SanType::URI(format!("urn:guestward:host:{host}").as_str().try_into().unwrap())];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, issuer).unwrap();
    reqwest::Identity::from_pem(format!("{}{}", cert.pem(), key.serialize_pem()).as_bytes()).unwrap()
}

fn client(ca: &[u8], identity: reqwest::Identity, addr: std::net::SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca).unwrap()])
        .identity(identity)
        .resolve("localhost", addr)
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(120))
        .no_proxy()
        .build()
        .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn main() {
    let agents = env_num("GW_BENCH_AGENTS", 500);
    let batches = env_num("GW_BENCH_BATCHES", 20);
    let packages = env_num("GW_BENCH_PACKAGES", 0);
    // 1: each host also runs a package of its own, so that no two hosts list the same packages
    // (the index's worst case: nothing shared, every host's list written once).
    let distinct = env_num("GW_BENCH_DISTINCT", 0) == 1;
    let listeners = env_num("GW_BENCH_LISTENERS", 0);
    let with_inventory = |mut r: Report, host: usize, seq: u64| {
        if listeners > 0 {
            r.network = Some(network(listeners, host, seq));
        }
        if packages > 0 {
            let openssl = if seq as usize > batches / 2 { "3.0.8" } else { OPENSSL[host % 3] };
            let own = distinct.then(|| format!("host-agent-{host:04}"));
            r.packages = Some(inventory(packages, openssl, own));
        }
        r
    };
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    pki::init(&pki_dir, IssueOptions::default()).unwrap();
    pki::issue_operator(&pki_dir, "bench", IssueOptions::default()).unwrap();
    let ca = std::fs::read(pki_dir.join("ca.pem")).unwrap();

    let setup = Instant::now();
    let issuer = pki::load_issuer(&pki_dir).unwrap();
    let hosts: Vec<String> = (0..agents).map(|i| format!("bench-{i:04}")).collect();
    let identities: Vec<reqwest::Identity> = hosts.iter().map(|h| agent_identity(&issuer, h)).collect();
    // Bodies as the shipper sends them: zstd, compressed before the clock starts (compression
    // is the agents' cost, not the collector's).
    let bodies: Vec<Vec<Vec<u8>>> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            (1..=batches as u64)
                .map(|seq| {
                    let r = with_inventory(report(h, seq), i, seq);
                    let json = serde_json::to_vec(&IngestRequest { reports: vec![r] }).unwrap();
                    zstd::bulk::compress(&json, 3).unwrap()
                })
                .collect()
        })
        .collect();
    let raw_len = serde_json::to_vec(&with_inventory(report("bench-0000", 1), 0, 1)).unwrap().len();
    eprintln!(
        "setup: {agents} certificates and {} bodies ({packages} packages, {} B JSON, {} B zstd each) in {:.1?}",
        agents * batches,
        raw_len,
        bodies[0][0].len(),
        setup.elapsed()
    );

    let overrides = Overrides {
        listen: Some("127.0.0.1:0".into()),
        pki_dir: Some(pki_dir.clone()),
        db: Some(dir.path().join("bench.db")),
    };
    let mut cfg = config::validate(RawConfig::default(), Path::new(""), &overrides).unwrap();
    cfg.limits.requests_per_sec_per_client = 1_000_000.0;
    cfg.limits.burst = 1_000_000;
    cfg.limits.max_connections_per_ip = 100_000;
    cfg.limits.max_connections = 100_000;

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let server = guestward_collector::bind(&cfg).await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move { server.run(std::future::pending()).await.unwrap() });

        let clients: Vec<reqwest::Client> = identities.into_iter().map(|id| client(&ca, id, addr)).collect();
        let url = Arc::new(format!("https://localhost:{}/v1/reports", addr.port()));
        let health = Arc::new(format!("https://localhost:{}/healthz", addr.port()));
        let connected = Arc::new(tokio::sync::Barrier::new(agents + 1));
        let start = Arc::new(tokio::sync::Barrier::new(agents + 1));
        let mut tasks = Vec::new();
        let handshakes = Instant::now();
        for (client, bodies) in clients.into_iter().zip(bodies) {
            let (url, health, connected, start) =
                (url.clone(), health.clone(), connected.clone(), start.clone());
            tasks.push(tokio::spawn(async move {
                // Connect first (TLS handshake with the agent's certificate), so the timed part
                // is ingest over reused connections, as agents do between flushes.
                let resp = client.get(health.as_str()).send().await.unwrap();
                assert_eq!(resp.status(), 200);
                resp.bytes().await.unwrap();
                connected.wait().await;
                start.wait().await;
                let mut latencies = Vec::with_capacity(bodies.len());
                for body in bodies {
                    let t = Instant::now();
                    let resp = client
                        .post(url.as_str())
                        .header("content-type", "application/json")
                        .header("content-encoding", "zstd")
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 200);
                    let ack: IngestResponse = resp.json().await.unwrap();
                    assert_eq!(ack.results[0].status, BatchStatus::Stored);
                    latencies.push(t.elapsed());
                }
                latencies
            }));
        }
        connected.wait().await;
        let handshakes = handshakes.elapsed();
        start.wait().await;
        let t0 = Instant::now();
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.unwrap());
        }
        let elapsed = t0.elapsed();
        latencies.sort();
        let n = latencies.len();

        // Check what was stored: every batch exactly once.
        let op = pki_dir.join("operators/bench");
        let mut pem = std::fs::read(op.join("cert.pem")).unwrap();
        pem.extend(std::fs::read(op.join("key.pem")).unwrap());
        let operator = client(&ca, reqwest::Identity::from_pem(&pem).unwrap(), addr);
        let list: HostList = operator
            .get(format!("https://localhost:{}/v1/hosts", addr.port()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let stored: u64 = list.hosts.iter().map(|h| h.reports_stored).sum();
        assert_eq!(list.hosts.len(), agents);
        assert_eq!(stored, n as u64);

        println!(
            "connect: {agents} agents, TLS 1.3 handshakes with client certificates, in {handshakes:.2?}"
        );
        println!(
            "collector ingest: {agents} agents x {batches} batches ({packages} packages each) = {n} batches in {elapsed:.2?}"
        );
        println!("  throughput: {:.0} batches/s", n as f64 / elapsed.as_secs_f64());
        println!(
            "  latency: p50 {:.1?}, p90 {:.1?}, p99 {:.1?}, max {:.1?}",
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.90),
            percentile(&latencies, 0.99),
            latencies[n - 1]
        );
        println!("  stored: {stored} reports for {} hosts (each exactly once)", list.hosts.len());

        // The operators' fleet search over every host's latest report (5 findings each): the
        // median of 5 answers, read whole, each query's count checked.
        for (query, expected) in [("", agents * 5), ("?id=GW-NET-003", agents), ("?min_severity=high", 0)] {
            let url = format!("https://localhost:{}/v1/findings{query}", addr.port());
            let mut times = Vec::new();
            for _ in 0..5 {
                let t = Instant::now();
                let answer: FleetFindings = operator.get(&url).send().await.unwrap().json().await.unwrap();
                times.push(t.elapsed());
                assert_eq!(answer.findings.len() + answer.omitted as usize, expected, "{query}");
            }
            times.sort();
            println!(
                "  GET /v1/findings{query}: {expected} of {} findings match, median {:.1?}",
                agents * 5,
                times[2]
            );
        }

        // The fleet's listener search over every host's latest network scan.
        if listeners > 0 {
            let all = agents * (listeners + 1);
            let svc_1 = (0..listeners).filter(|i| i % 10 == 1).count();
            let searches = [
                ("?port=6379", agents, 2),
                ("?port=6379&scope=all-interfaces", agents.div_ceil(2), 1),
                ("?process=svc-1", agents * svc_1, svc_1),
                ("", all, (listeners + 2).min(10_000)),
                ("?port=1", 0, 0),
            ];
            for (query, rows, services) in searches {
                let url = format!("https://localhost:{}/v1/listeners{query}", addr.port());
                let mut times = Vec::new();
                for _ in 0..5 {
                    let t = Instant::now();
                    let answer: FleetListeners = operator.get(&url).send().await.unwrap().json().await.unwrap();
                    times.push(t.elapsed());
                    assert_eq!(answer.listeners.len() + answer.omitted as usize, rows, "{query}");
                    assert_eq!(answer.services.len(), services, "{query}");
                }
                times.sort();
                println!(
                    "  GET /v1/listeners{query}: {rows} (host, listener) rows of {all} match, median {:.1?}",
                    times[2]
                );
            }
        }

        // The fleet's package search over every host's inventory (after the upgrade, every
        // host runs openssl-libs 3.0.8): the median of 5 answers, each count checked.
        if packages == 0 {
            return;
        }
        let all_pairs = agents * (packages + 1 + usize::from(distinct));
        let searches = [
            ("?name=openssl-libs", agents, 1),
            ("?name=openssl-libs&below=3.0.8-1.amzn2023.0.1", 0, 0),
            ("?name=openssl-libs&version=3.0.8-1.amzn2023.0.1", agents, 1),
            ("?name=package-00*", agents * packages.min(100), packages.min(100)),
            // No literal prefix: every distinct package's name is matched, every pair of the
            // one that matches read (and only its hosts sorted).
            ("?name=*ssl*", agents, 1),
            // Every pair of the fleet, answered up to the bound, every version counted.
            ("?name=*", all_pairs, (packages + 1 + if distinct { agents } else { 0 }).min(10_000)),
            ("?name=no-such-package", 0, 0),
        ];
        for (query, rows, versions) in searches {
            let url = format!("https://localhost:{}/v1/packages{query}", addr.port());
            let mut times = Vec::new();
            for _ in 0..5 {
                let t = Instant::now();
                let answer: FleetPackages = operator.get(&url).send().await.unwrap().json().await.unwrap();
                times.push(t.elapsed());
                assert_eq!(answer.packages.len() + answer.omitted as usize, rows, "{query}");
                assert_eq!(answer.versions.len(), versions, "{query}");
            }
            times.sort();
            println!(
                "  GET /v1/packages{query}: {rows} (host, package) rows of {all_pairs} match, median {:.1?}",
                times[2]
            );
        }
    });
}
