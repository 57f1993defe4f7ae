//! Shared test helpers: a dev PKI, an in-test HTTPS collector, report builders.

pub mod pki;
pub mod server;

use guestward_core::{Event, Finding, Severity, Timestamp};
use guestward_report::{AgentInfo, HostIdSource, Report};
use guestward_transport::TransportConfig;
use std::path::Path;
use std::time::Duration;

pub const HOST: &str = "i-0123456789abcdef0";

/// `n` random alphanumeric characters: compresses like real identifiers, not like zeros.
pub fn noise(n: usize) -> String {
    std::iter::repeat_with(fastrand::alphanumeric).take(n).collect()
}

/// A report of `HOST` with sequence `seq`, a host section carrying `snapshot_bytes` of noise,
/// `other_events` non-FIM events, `fim_events` FIM change events and one finding.
pub fn report(seq: u64, snapshot_bytes: usize, other_events: usize, fim_events: usize) -> Report {
    let agent = AgentInfo {
        version: "test".into(),
        host_id: Some(HOST.into()),
        host_id_source: HostIdSource::Config,
    };
    let mut r = Report::new(agent, Timestamp::now());
    r.sequence = Some(seq);
    if snapshot_bytes > 0 {
        r.host = Some(
            serde_json::from_value(serde_json::json!({
                "status": "ok",
                "data": {"hostname": "web-1", "machine_id": "0123456789abcdef0123456789abcdef"},
                "note": noise(snapshot_bytes),
                "duration_ms": 3,
            }))
            .unwrap(),
        );
    }
    for i in 0..other_events {
        r.events.push(Event {
            kind: "network.listener_opened".into(),
            time: Timestamp::now(),
            data: serde_json::json!({"port": i, "process": noise(120)}),
        });
    }
    for i in 0..fim_events {
        r.events.push(Event {
            kind: "fim.change".into(),
            time: Timestamp::now(),
            data: serde_json::json!({"path": format!("/etc/file{i}"), "sha256": noise(64)}),
        });
    }
    r.events.push(Event {
        kind: "coverage.gap".into(),
        time: Timestamp::now(),
        data: serde_json::json!({"n": seq}),
    });
    r.findings.push(Finding {
        id: "GW-TEST-001".into(),
        severity: Severity::Low,
        title: format!("finding of report {seq}"),
        evidence: serde_json::json!({}),
        remediation: "none".into(),
        source: "test".into(),
    });
    r
}

/// A small report (no snapshot).
pub fn small(seq: u64) -> Report {
    report(seq, 0, 1, 1)
}

/// A small report made as `host` (another host id than `HOST`, whose certificate the tests'
/// agent holds).
pub fn small_as(seq: u64, host: &str) -> Report {
    let mut r = small(seq);
    r.agent.host_id = Some(host.to_string());
    r
}

/// Writes `cert_pem`/`key_pem` (0600) and `ca_pem` into `dir` and returns an enabled config.
pub fn agent_config(dir: &Path, url: &str, ca_pem: &str, id: &pki::Identity) -> TransportConfig {
    std::fs::write(dir.join("ca.pem"), ca_pem).unwrap();
    id.install(dir);
    TransportConfig {
        enabled: true,
        url: Some(url.to_string()),
        ca_file: Some(dir.join("ca.pem")),
        cert_file: Some(dir.join("agent.pem")),
        key_file: Some(dir.join("agent-key.pem")),
        ..Default::default()
    }
}

/// Fast retries for tests; the documented defaults are unit-tested.
pub fn fast() -> guestward_transport::shipper::ShipperTuning {
    guestward_transport::shipper::ShipperTuning {
        backoff_base: Duration::from_millis(50),
        backoff_cap: Duration::from_millis(300),
        connect_timeout: Duration::from_secs(3),
        request_timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

/// A current-thread tokio runtime for one test.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}
