//! Slow clients are cut off: headers trickled byte by byte, a body that stalls.

use crate::common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

const LIMIT: Duration = Duration::from_secs(60);

async fn connect(h: &Harness, host: &str) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    try_connect(h, host).await.unwrap()
}

/// A raw TLS connection presenting `host`'s agent certificate.
pub async fn try_connect(
    h: &Harness,
    host: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(h.pki().join("ca.pem")).unwrap()).unwrap();
    let dir = h.pki().join("agents").join(host);
    let chain = vec![CertificateDer::from_pem_file(dir.join("cert.pem")).unwrap()];
    let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(rustls::crypto::aws_lc_rs::default_provider().into())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
    let tcp = tokio::net::TcpStream::connect(h.addr).await?;
    TlsConnector::from(Arc::new(config)).connect(ServerName::try_from("localhost").unwrap(), tcp).await
}

/// Reads until the server closes; returns what it sent.
pub async fn read_until_closed(tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tls.read(&mut buf).await {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&out).into_owned(),
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn client_trickling_its_headers_is_cut_off_within_the_request_timeout() {
    run(LIMIT, "slow headers", || async {
        let h = Harness::start(|c| c.limits.request_timeout = Duration::from_secs(2)).await;
        let mut tls = connect(&h, HOST_A).await;
        let started = Instant::now();
        let request = b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let mut cut_off = false;
        for byte in request {
            if tls.write_all(&[*byte]).await.is_err() || tls.flush().await.is_err() {
                cut_off = true;
                break;
            }
            // Still trickling after the limit: the server must have closed by now.
            tokio::time::sleep(Duration::from_millis(200)).await;
            if started.elapsed() > Duration::from_secs(6) {
                break;
            }
        }
        let answer = read_until_closed(&mut tls).await;
        let took = started.elapsed();
        assert!(cut_off || !answer.contains("200 OK"), "the slow request was served: {answer}");
        assert!(took < Duration::from_secs(8), "connection held for {took:?}");
        assert!(took >= Duration::from_secs(2), "cut off before the limit: {took:?}");
    });
}

#[test]
fn client_stalling_its_body_is_cut_off_within_the_request_timeout() {
    run(LIMIT, "stalled body", || async {
        let h = Harness::start(|c| c.limits.request_timeout = Duration::from_secs(2)).await;
        let mut tls = connect(&h, HOST_A).await;
        let started = Instant::now();
        tls.write_all(
            b"POST /v1/reports HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 5000\r\n\r\n{\"reports\":[",
        )
        .await
        .unwrap();
        tls.flush().await.unwrap();
        // ...and nothing more.
        let answer = read_until_closed(&mut tls).await;
        let took = started.elapsed();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(took < Duration::from_secs(6), "connection held for {took:?}");
        assert!(h.stored_hosts().await.is_empty());
    });
}

#[test]
fn one_deadline_covers_headers_and_body_together() {
    run(LIMIT, "whole request deadline", || async {
        let h = Harness::start(|c| c.limits.request_timeout = Duration::from_secs(3)).await;
        let mut tls = connect(&h, HOST_A).await;
        let started = Instant::now();
        // Headers in about 2.2 s (within the 3 s limit on their own)...
        let head = b"POST /v1/reports HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 60\r\n\r\n";
        for chunk in head.chunks(5) {
            tls.write_all(chunk).await.unwrap();
            tls.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(110)).await;
        }
        // ...then the body, slowly: the request as a whole passes 3 s and is cut off there,
        // not 3 s after the headers (about 5.2 s).
        for _ in 0..60 {
            if tls.write_all(b" ").await.is_err() || tls.flush().await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if started.elapsed() > Duration::from_secs(7) {
                break;
            }
        }
        let answer = read_until_closed(&mut tls).await;
        let took = started.elapsed();
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(took < Duration::from_millis(4500), "cut off after {took:?}, not at the 3 s deadline");
    });
}

#[test]
fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    run(LIMIT, "idle timeout", || async {
        let h = Harness::start(|c| c.limits.idle_timeout = Duration::from_secs(1)).await;
        let mut tls = connect(&h, HOST_A).await;
        tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n").await.unwrap();
        tls.flush().await.unwrap();
        let started = Instant::now();
        let answer = read_until_closed(&mut tls).await;
        let took = started.elapsed();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(4), "closed after {took:?}");
    });
}
