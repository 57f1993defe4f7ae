//! Behind a load balancer: identity from a forwarded certificate header, only from trusted
//! proxies, and only after the certificate verifies against the CA.

use crate::common::*;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);
/// AWS ALB: URL-encoded PEM with `+`, `=` and `/` left as they are.
const ALB_SAFE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'+').remove(b'=').remove(b'/');

fn header_value(pem: &str, alb: bool) -> String {
    if alb {
        utf8_percent_encode(pem, ALB_SAFE).to_string()
    } else {
        utf8_percent_encode(pem, NON_ALPHANUMERIC).to_string()
    }
}

fn cert_pem(h: &Harness, host: &str) -> String {
    std::fs::read_to_string(h.pki().join("agents").join(host).join("cert.pem")).unwrap()
}

const HEADER: &str = "x-amzn-mtls-clientcert";

async fn trusted_harness() -> Harness {
    Harness::start(|c| c.proxy.trusted = vec!["127.0.0.2/32".parse().unwrap()]).await
}

/// A client connecting from 127.0.0.2 (a socket bound before connect), without a certificate.
fn proxy_client(h: &Harness) -> reqwest::Client {
    h.builder(Who::Nobody).local_address(localhost2()).build().unwrap()
}

#[test]
fn trusted_proxy_forwarding_a_valid_certificate_posts_as_that_host() {
    run(LIMIT, "trusted proxy", || async {
        let h = trusted_harness().await;
        let proxy = proxy_client(&h);
        for (seq, alb) in [(1, false), (2, true)] {
            let resp = proxy
                .post(h.url("/v1/reports"))
                .header("content-type", "application/json")
                .header(HEADER, header_value(&cert_pem(&h, HOST_A), alb))
                .body(body(&[report(HOST_A, seq)]))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "alb={alb}: {}", resp.text().await.unwrap());
        }
        let hosts = h.stored_hosts().await;
        assert_eq!(hosts[0].reports_stored, 2);
        // The identity is still bound: the forwarded host A may not post host B's report.
        let resp = proxy
            .post(h.url("/v1/reports"))
            .header("content-type", "application/json")
            .header(HEADER, header_value(&cert_pem(&h, HOST_A), false))
            .body(body(&[report(HOST_B, 1)]))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
        assert_eq!(h.stored_hosts().await.len(), 1);
    });
}

#[test]
fn certificate_header_from_a_peer_that_is_not_a_trusted_proxy_is_refused() {
    run(LIMIT, "untrusted header", || async {
        let h = trusted_harness().await;
        // Host A (a real client certificate, from 127.0.0.1) claims to be host B by header.
        let agent = h.client(Who::Agent(HOST_A));
        let resp = agent
            .post(h.url("/v1/reports"))
            .header("content-type", "application/json")
            .header(HEADER, header_value(&cert_pem(&h, HOST_B), false))
            .body(body(&[report(HOST_B, 1)]))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
        let err: guestward_report::ingest::ErrorBody = resp.json().await.unwrap();
        assert!(err.message.contains("trusted prox"), "{}", err.message);
        // Even with its own, matching identity, the header is refused rather than ignored.
        let resp = agent
            .get(h.url("/healthz"))
            .header(HEADER, header_value(&cert_pem(&h, HOST_A), false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
        assert!(h.stored_hosts().await.is_empty());
        // A collector that trusts no proxy: 127.0.0.2 without a certificate fails the handshake.
        let plain = Harness::start(|_| {}).await;
        // (The alert itself is checked in handshake::handshake_without_client_certificate_is_rejected.)
        proxy_client(&plain).get(plain.url("/healthz")).send().await.unwrap_err();
    });
}

#[test]
fn trusted_proxy_without_a_certificate_or_with_a_foreign_one_gets_401() {
    run(LIMIT, "proxy 401", || async {
        let h = trusted_harness().await;
        let proxy = proxy_client(&h);
        let resp = proxy.get(h.url("/healthz")).send().await.unwrap();
        assert_eq!(resp.status(), 401);
        // A certificate from another CA, forwarded: verified here, refused.
        let other = tempfile::tempdir().unwrap();
        let other_pki = new_pki(other.path());
        let foreign =
            std::fs::read_to_string(other_pki.join("agents").join(HOST_A).join("cert.pem")).unwrap();
        let resp = proxy
            .post(h.url("/v1/reports"))
            .header("content-type", "application/json")
            .header(HEADER, header_value(&foreign, false))
            .body(body(&[report(HOST_A, 1)]))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        let err: guestward_report::ingest::ErrorBody = resp.json().await.unwrap();
        assert!(err.message.contains("does not verify"), "{}", err.message);
        // An expired certificate from the right CA, forwarded: refused too.
        let (c, _) =
            crate::handshake::issue_with_validity(&h.pki(), HOST_A, -30, -1, &h.dir.path().join("old"));
        let expired = std::fs::read_to_string(c).unwrap();
        let resp =
            proxy.get(h.url("/healthz")).header(HEADER, header_value(&expired, true)).send().await.unwrap();
        assert_eq!(resp.status(), 401);
        // Garbage in the header.
        let resp = proxy.get(h.url("/healthz")).header(HEADER, "not%20a%20cert").send().await.unwrap();
        assert_eq!(resp.status(), 401);
        assert!(h.stored_hosts().await.is_empty());
    });
}

#[test]
fn a_trusted_proxy_is_exempt_from_the_per_ip_connection_cap() {
    run(LIMIT, "proxy per-IP cap", || async {
        let h = Harness::start(|c| {
            c.proxy.trusted = vec!["127.0.0.2/32".parse().unwrap()];
            c.limits.max_connections_per_ip = 1;
        })
        .await;
        // Three clients, three kept-alive connections from the proxy's one address.
        let clients: Vec<_> = (0..3).map(|_| proxy_client(&h)).collect();
        for client in &clients {
            let resp = client
                .get(h.url("/healthz"))
                .header(HEADER, header_value(&cert_pem(&h, HOST_A), false))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
        }
        // An ordinary client is still held to one connection per address.
        let _first = crate::slow::try_connect(&h, HOST_A).await.unwrap();
        assert!(crate::slow::try_connect(&h, HOST_B).await.is_err());
    });
}
