//! The handshake matrix from the agent's side: each wrong collector is refused with an error
//! that says why (a valid pair is accepted: see `shipper::delivered_reports_...`).

use crate::shipper::setup;
use crate::support::pki::Ca;
use crate::support::server::{Server, ServerOptions};
use crate::support::{agent_config, fast, rt, small};
use guestward_core::testing::within;
use guestward_transport::{Shipper, TlsVersion, TransportConfig};
use std::time::Duration;

fn refused(config: &TransportConfig, dir: &std::path::Path) -> String {
    let spool = std::sync::Arc::new(guestward_transport::Spool::open(&dir.join("spool2"), 64 << 20).unwrap());
    spool.push(&small(1)).unwrap();
    let shipper = Shipper::with_tuning(config, spool.clone(), fast()).unwrap();
    let err = rt().block_on(shipper.deliver_all(Duration::from_secs(1))).unwrap_err().to_string();
    assert_eq!(spool.len(), 1, "kept");
    err
}

#[test]
fn a_collector_certificate_not_for_the_server_name_is_refused() {
    within(Duration::from_secs(30), "wrong name", || {
        let s = setup();
        let server = Server::start(&s.ca, &s.ca.server(&["collector.example"]));
        let config = TransportConfig { url: Some(server.url()), ..s.config.clone() };
        let err = refused(&config, s.dir.path());
        eprintln!("{err}");
        assert!(err.contains("not valid for name"), "{err}");
    });
}

#[test]
fn a_collector_certificate_from_an_unpinned_ca_is_refused() {
    within(Duration::from_secs(30), "unpinned CA", || {
        let s = setup();
        let other = Ca::new("some other CA");
        let server = Server::start(&s.ca, &other.server(&["127.0.0.1"]));
        let config = TransportConfig { url: Some(server.url()), ..s.config.clone() };
        let err = refused(&config, s.dir.path());
        eprintln!("{err}");
        assert!(err.contains("UnknownIssuer"), "{err}");
    });
}

#[test]
fn a_collector_offering_only_tls_1_2_is_refused_when_1_3_is_required() {
    within(Duration::from_secs(30), "TLS 1.2", || {
        let s = setup();
        let server =
            Server::start_with(&s.ca, &s.ca.server(&["127.0.0.1"]), ServerOptions { tls12_only: true });
        let config = TransportConfig { url: Some(server.url()), ..s.config.clone() };
        let err = refused(&config, s.dir.path());
        eprintln!("{err}");
        assert!(err.to_lowercase().contains("protocol") || err.contains("incompatible"), "{err}");
        // Allowed with tls_min_version = "1.2".
        let dir = tempfile::tempdir().unwrap();
        let config = agent_config(dir.path(), &server.url(), &s.ca.pem(), &s.agent);
        let config = TransportConfig { tls_min_version: TlsVersion::Tls12, ..config };
        let spool = std::sync::Arc::new(
            guestward_transport::Spool::open(&dir.path().join("spool"), 64 << 20).unwrap(),
        );
        spool.push(&small(1)).unwrap();
        let shipper = Shipper::with_tuning(&config, spool.clone(), fast()).unwrap();
        rt().block_on(shipper.deliver_all(Duration::from_secs(10))).unwrap();
        assert!(spool.is_empty());
    });
}

#[test]
fn a_client_certificate_from_another_ca_is_refused_by_the_collector() {
    within(Duration::from_secs(30), "foreign client cert", || {
        let s = setup();
        let other = Ca::new("some other CA");
        let dir = tempfile::tempdir().unwrap();
        let config = agent_config(dir.path(), &s.server.url(), &s.ca.pem(), &other.agent("x", 5));
        let err = refused(&config, dir.path());
        eprintln!("{err}");
        assert!(err.contains("UnknownCA"), "{err}");
        assert!(!s.server.handshake_errors().is_empty());
    });
}
