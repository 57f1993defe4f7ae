//! The store's bounds, through the real binary: against a compromised host, event text that
//! compresses to almost nothing on the wire stays about that small on disk, and
//! `[retention] max_bytes_per_host` holds the host to its cap without touching other hosts; and
//! a host that stopped reporting is forgotten after `forget_idle_hosts_after_days`.

use crate::common::*;
use guestward_core::testing::letters;
use guestward_report::ingest::{BatchStatus, HostDetail, HostList, IngestResponse};
use std::path::Path;
use std::time::{Duration, Instant};

const CAP: u64 = 1 << 20;

fn with_text_event(host: &str, sequence: u64, text: String) -> guestward_report::Report {
    let mut r = report(host, sequence);
    r.events.push(guestward_core::Event {
        kind: "test.text".into(),
        time: guestward_core::Timestamp::now(),
        data: serde_json::json!({ "text": text }),
    });
    r
}

/// The database file and its WAL.
fn on_disk(dir: &Path) -> u64 {
    ["c.db", "c.db-wal"].iter().filter_map(|f| std::fs::metadata(dir.join(f)).ok()).map(|m| m.len()).sum()
}

/// `hosts.stored_bytes` of `host`, read from the live database (WAL: readers do not block the
/// collector).
fn stored_bytes(dir: &Path, host: &str) -> u64 {
    let conn = rusqlite::Connection::open(dir.join("c.db")).unwrap();
    let bytes: i64 =
        conn.query_row("SELECT stored_bytes FROM hosts WHERE host_id = ?1", [host], |r| r.get(0)).unwrap();
    u64::try_from(bytes).unwrap()
}

#[test]
fn a_compromised_host_cannot_amplify_its_requests_on_disk_nor_pass_its_cap() {
    guestward_core::testing::within(Duration::from_secs(300), "retention attack", || {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        new_pki(d);
        std::fs::write(
            d.join("collector.toml"),
            format!("listen = \"127.0.0.1:0\"\ndb = \"c.db\"\n[limits]\nburst = 200\n[retention]\nmax_bytes_per_host = {CAP}\n"),
        )
        .unwrap();
        let log = d.join("collector.log");
        let (mut child, addr) =
            serve_binary(&d.join("collector.toml"), std::fs::File::create(&log).unwrap().into());

        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let ca = std::fs::read(d.join("pki/ca.pem")).unwrap();
            let client = |dir: std::path::PathBuf| {
                reqwest::Client::builder()
                    .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
                    .identity(identity(&dir.join("cert.pem"), &dir.join("key.pem")))
                    .resolve("localhost", addr)
                    .timeout(Duration::from_secs(60))
                    .no_proxy()
                    .build()
                    .unwrap()
            };
            let (a, b) =
                (client(d.join("pki/agents").join(HOST_A)), client(d.join("pki/agents").join(HOST_B)));
            let url = |path: &str| format!("https://localhost:{}{path}", addr.port());
            // What the shipper sends: a zstd body.
            let post = |client: &reqwest::Client, reports: &[guestward_report::Report]| {
                let wire = zstd::bulk::compress(&body(reports), 3).unwrap();
                let len = wire.len();
                let request = client
                    .post(url("/v1/reports"))
                    .header("content-type", "application/json")
                    .header("content-encoding", "zstd")
                    .body(wire)
                    .send();
                async move {
                    let resp = request.await.unwrap();
                    assert_eq!(resp.status(), 200);
                    (len, resp.json::<IngestResponse>().await.unwrap())
                }
            };

            // Host B: an ordinary history.
            for seq in 1..=3 {
                post(&b, &[with_text_event(HOST_B, seq, letters(20_000, seq as u32))]).await;
            }
            let b_bytes = stored_bytes(d, HOST_B);
            let b_before: HostDetail =
                b.get(url("/v1/hosts/host-b")).send().await.unwrap().json().await.unwrap();

            // Host A, compromised: events of 24 MiB of one repeated phrase, a few KB on the wire.
            let base = on_disk(d);
            let mut sent_text = 0u64;
            let mut sent_wire = 0u64;
            for seq in 1..=4u64 {
                let text = "all work and no play ".repeat((24 << 20) / 21);
                sent_text += text.len() as u64;
                let (wire, ack) = post(&a, &[with_text_event(HOST_A, seq, text)]).await;
                assert_eq!(ack.results[0].status, BatchStatus::Stored);
                sent_wire += wire as u64;
            }
            assert!(sent_wire < 64 << 10, "{sent_wire} bytes on the wire");
            let grown = on_disk(d).saturating_sub(base);
            // 96 MiB of event text (stored whole as the event before, besides the compressed
            // report) takes about what it took on the wire, give or take pages and WAL frames
            // (270 KB when this test was written).
            assert!(
                grown < 1 << 20,
                "{sent_text} bytes of text ({sent_wire} on the wire) grew the database by {grown}"
            );

            // Host A keeps sending reports that do not compress well: ~2.4 MB stored, over its cap.
            let mut first = None;
            for seq in 5..=34u64 {
                let r = with_text_event(HOST_A, seq, letters(64 << 10, seq as u32));
                first.get_or_insert_with(|| r.clone());
                post(&a, std::slice::from_ref(&r)).await;
            }
            // Pruning runs right after each commit; give the last one a moment.
            let deadline = Instant::now() + Duration::from_secs(20);
            while stored_bytes(d, HOST_A) > CAP && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let a_bytes = stored_bytes(d, HOST_A);
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(a_bytes <= CAP, "host A takes {a_bytes} bytes over its cap of {CAP}; log:\n{log_text}");
            assert!(a_bytes > CAP / 2, "pruning went further than the cap: {a_bytes}");
            assert!(
                log_text.contains("retention: host over its byte cap lost its oldest reports")
                    && log_text.contains("host-a"),
                "{log_text}"
            );
            // Its summary still stands: the latest report, nothing counted as missing.
            let detail: HostDetail =
                a.get(url("/v1/hosts/host-a")).send().await.unwrap().json().await.unwrap();
            assert!(detail.summary.reports_stored < 34, "{}", detail.summary.reports_stored);
            assert_eq!((detail.summary.last_sequence, detail.summary.missing_sequences), (Some(34), 0));
            // A retry of a pruned report is a duplicate, not a new row.
            let first = first.unwrap();
            let (_, ack) = post(&a, &[first]).await;
            assert_eq!(ack.results[0].status, BatchStatus::Duplicate);

            // Host B was not touched.
            assert_eq!(stored_bytes(d, HOST_B), b_bytes);
            let b_after: HostDetail =
                b.get(url("/v1/hosts/host-b")).send().await.unwrap().json().await.unwrap();
            assert_eq!(b_after.summary.reports_stored, 3);
            assert_eq!(b_after.recent_events, b_before.recent_events);
            // The files follow: host A's cap, host B's reports, free pages kept for reuse and
            // the WAL (5.5 MB in all when this test was written).
            let total = on_disk(d);
            assert!(total < 8 << 20, "database and WAL take {total} bytes");
        });

        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        assert!(child.wait().unwrap().success());
    });
}

/// SIGTERM, and the collector exits 0 (the database is closed before it is edited).
fn stop(mut child: std::process::Child) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    assert!(child.wait().unwrap().success());
}

/// Host A stopped reporting 61 days ago (its reports and last delivery moved back in the file
/// while the collector is stopped: the binary has no clock to turn), host B reports today. With
/// `forget_idle_hosts_after_days = 60`, the collector's pass at start forgets A whole; B stays,
/// its stored bytes shown to the operator; A reporting again is a new host.
#[test]
fn a_host_silent_past_the_limit_disappears_from_the_listing_and_a_reporting_one_stays() {
    guestward_core::testing::within(Duration::from_secs(120), "forget idle hosts", || {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        new_pki(d);
        let config = d.join("collector.toml");
        std::fs::write(
            &config,
            "listen = \"127.0.0.1:0\"\ndb = \"c.db\"\n[retention]\nmax_age_days = 30\nforget_idle_hosts_after_days = 60\n",
        )
        .unwrap();
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let ca = std::fs::read(d.join("pki/ca.pem")).unwrap();
        let client = |addr: std::net::SocketAddr, who: std::path::PathBuf| {
            reqwest::Client::builder()
                .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
                .identity(identity(&who.join("cert.pem"), &who.join("key.pem")))
                .resolve("localhost", addr)
                .timeout(Duration::from_secs(20))
                .no_proxy()
                .build()
                .unwrap()
        };
        let agent = |addr, host: &str| client(addr, d.join("pki/agents").join(host));
        let operator = |addr| client(addr, d.join("pki/operators").join(OPERATOR));
        let url = |addr: std::net::SocketAddr, path: &str| format!("https://localhost:{}{path}", addr.port());
        let post = |addr, host: &'static str, sequence: u64| {
            let request = agent(addr, host)
                .post(url(addr, "/v1/reports"))
                .header("content-type", "application/json")
                .body(body(&[with_text_event(host, sequence, letters(5_000, sequence as u32))]))
                .send();
            async move {
                let resp = request.await.unwrap();
                assert_eq!(resp.status(), 200);
                resp.json::<IngestResponse>().await.unwrap().results[0].status
            }
        };
        let hosts = |addr| {
            let request = operator(addr).get(url(addr, "/v1/hosts")).send();
            async move {
                let resp = request.await.unwrap();
                assert_eq!(resp.status(), 200);
                resp.json::<HostList>().await.unwrap().hosts
            }
        };

        let (child, addr) = serve_binary(&config, std::process::Stdio::null());
        rt.block_on(async {
            for sequence in 1..=3 {
                assert_eq!(post(addr, HOST_A, sequence).await, BatchStatus::Stored);
            }
            assert_eq!(post(addr, HOST_B, 1).await, BatchStatus::Stored);
            let listed = hosts(addr).await;
            assert_eq!(listed.len(), 2);
            for host in &listed {
                assert_eq!(host.stored_bytes, stored_bytes(d, &host.host_id), "{}", host.host_id);
                assert!(host.stored_bytes > 5_000, "{}: {}", host.host_id, host.stored_bytes);
                assert!(host.secs_since_last_seen < 60, "{}: {}", host.host_id, host.secs_since_last_seen);
            }
        });
        stop(child);

        {
            let conn = rusqlite::Connection::open(d.join("c.db")).unwrap();
            let ago = jiff::Timestamp::now().checked_sub(jiff::SignedDuration::from_hours(61 * 24)).unwrap();
            // As the store writes times: all nine fractional digits (text order is time order).
            let ago = format!("{ago:.9}");
            let moved = conn
                .execute("UPDATE reports SET received_at = ?1 WHERE host_id = ?2", [&ago, HOST_A])
                .unwrap();
            assert_eq!(moved, 3);
            conn.execute("UPDATE hosts SET last_seen = ?1 WHERE host_id = ?2", [&ago, HOST_A]).unwrap();
        }

        let log = d.join("collector.log");
        let (child, addr) = serve_binary(&config, std::fs::File::create(&log).unwrap().into());
        rt.block_on(async {
            // The first pass runs as the collector starts.
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut listed = hosts(addr).await;
            while listed.len() > 1 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
                listed = hosts(addr).await;
            }
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            let ids: Vec<&str> = listed.iter().map(|h| h.host_id.as_str()).collect();
            assert_eq!(ids, [HOST_B], "log:\n{log_text}");
            assert!(listed[0].stored_bytes > 5_000 && listed[0].stored_bytes == stored_bytes(d, HOST_B));
            assert!(
                log_text.contains("retention: host forgotten") && log_text.contains(HOST_A),
                "{log_text}"
            );
            let gone = operator(addr).get(url(addr, "/v1/hosts/host-a")).send().await.unwrap();
            assert_eq!(gone.status(), 404);
            {
                let conn = rusqlite::Connection::open(d.join("c.db")).unwrap();
                for table in ["reports", "events", "pruned_batches", "hosts"] {
                    let left: i64 = conn
                        .query_row(
                            &format!("SELECT COUNT(*) FROM {table} WHERE host_id = ?1"),
                            [HOST_A],
                            |r| r.get(0),
                        )
                        .unwrap();
                    assert_eq!(left, 0, "{table}");
                }
            }

            // Host A's instance starts again: a new host, counted from zero.
            assert_eq!(post(addr, HOST_A, 4).await, BatchStatus::Stored);
            let listed = hosts(addr).await;
            let a = listed.iter().find(|h| h.host_id == HOST_A).unwrap();
            assert_eq!((a.reports_stored, a.missing_sequences), (1, 0));
            assert_eq!(a.stored_bytes, stored_bytes(d, HOST_A));
        });
        stop(child);
    });
}
