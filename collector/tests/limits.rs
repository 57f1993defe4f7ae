//! Connection limits and the handshake timeout.

use crate::common::*;
use crate::slow::{read_until_closed, try_connect};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn connections_over_the_per_ip_cap_are_closed_before_the_handshake() {
    run(LIMIT, "per-IP cap", || async {
        let h = Harness::start(|c| c.limits.max_connections_per_ip = 2).await;
        let first = try_connect(&h, HOST_A).await.unwrap();
        let _second = try_connect(&h, HOST_A).await.unwrap();
        let third = try_connect(&h, HOST_A).await;
        assert!(third.is_err(), "a third connection from 127.0.0.1 was accepted");
        // A closed connection frees its slot.
        drop(first);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match try_connect(&h, HOST_A).await {
                Ok(mut tls) => {
                    tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
                        .await
                        .unwrap();
                    let answer = read_until_closed(&mut tls).await;
                    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
                    break;
                }
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("the freed slot was never reusable: {e}"),
            }
        }
    });
}

#[test]
fn connections_over_the_global_cap_are_closed_before_the_handshake() {
    run(LIMIT, "global cap", || async {
        let h = Harness::start(|c| c.limits.max_connections = 1).await;
        let _first = try_connect(&h, HOST_A).await.unwrap();
        assert!(try_connect(&h, HOST_B).await.is_err(), "a second connection was accepted");
    });
}

#[test]
fn a_peer_that_never_completes_the_handshake_is_dropped_after_the_timeout() {
    run(LIMIT, "handshake timeout", || async {
        let h = Harness::start(|c| c.limits.handshake_timeout = Duration::from_secs(1)).await;
        let mut tcp = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 16];
        let n = tokio::io::AsyncReadExt::read(&mut tcp, &mut buf).await.unwrap_or(0);
        let took = started.elapsed();
        assert_eq!(n, 0, "the server sent data to a peer that never said hello");
        assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "closed after {took:?}");
    });
}

#[test]
fn requests_beyond_the_memory_budget_wait_then_get_503_and_succeed_once_it_frees() {
    run(LIMIT, "memory budget", || async {
        let h = Harness::start(|c| {
            c.limits.max_body_bytes = 1 << 20;
            c.limits.max_decompressed_bytes = 1 << 20;
            c.limits.max_buffered_bytes = 1 << 20;
            c.limits.request_timeout = Duration::from_secs(2);
        })
        .await;
        // A client announces a 1 MiB body (the whole budget) and stalls.
        let mut hog = try_connect(&h, HOST_B).await.unwrap();
        hog.write_all(b"POST /v1/reports HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 1048576\r\n\r\n{")
            .await
            .unwrap();
        hog.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let agent = h.client(Who::Agent(HOST_A));
        let resp = post(&h, &agent, body(&[report(HOST_A, 1)])).await;
        assert_eq!(resp.status(), 503);
        assert!(resp.headers().contains_key("retry-after"));
        // The hog is cut off at its deadline and its reservation returns to the budget.
        let _ = read_until_closed(&mut hog).await;
        let resp = post(&h, &agent, body(&[report(HOST_A, 1)])).await;
        assert_eq!(resp.status(), 200);
    });
}
