//! POST /v1/reports and the read endpoints: identity binding, idempotency, validation, limits.

use crate::common::*;
use guestward_report::ingest::{BatchStatus, ErrorBody, FleetFindings, HostDetail, IngestResponse};
use std::io::Write;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(90);

async fn error_of(resp: reqwest::Response) -> (u16, ErrorBody) {
    let status = resp.status().as_u16();
    (status, resp.json::<ErrorBody>().await.unwrap())
}

#[test]
fn reports_are_stored_and_the_host_reads_its_own_state() {
    run(LIMIT, "store and read", || async {
        let h = Harness::start(|_| {}).await;
        let agent = h.client(Who::Agent(HOST_A));
        let reports = [report(HOST_A, 1), report(HOST_A, 2), report(HOST_A, 4)];
        let resp = post(&h, &agent, body(&reports)).await;
        assert_eq!(resp.status(), 200);
        let ack: IngestResponse = resp.json().await.unwrap();
        assert_eq!(ack.results.len(), 3);
        assert!(ack.results.iter().all(|r| r.status == BatchStatus::Stored));
        assert_eq!(ack.results[2].batch_id, reports[2].batch_id);
        let detail: HostDetail =
            agent.get(h.url("/v1/hosts/host-a")).send().await.unwrap().json().await.unwrap();
        assert_eq!(detail.summary.reports_stored, 3);
        assert_eq!(detail.summary.last_sequence, Some(4));
        assert_eq!(detail.summary.missing_sequences, 1);
        assert_eq!(detail.latest_report.as_ref().unwrap().batch_id, reports[2].batch_id);
        assert_eq!(detail.findings, reports[2].findings);
        assert_eq!(detail.recent_events.len(), 3);
        assert_eq!(detail.recent_events[2], reports[2].events[0]);
        // Another host's state is not for this agent; GET /v1/hosts is for operators only.
        let (status, err) = error_of(agent.get(h.url("/v1/hosts/host-b")).send().await.unwrap()).await;
        assert_eq!((status, err.error.as_str()), (403, "forbidden"));
        let (status, err) = error_of(agent.get(h.url("/v1/hosts")).send().await.unwrap()).await;
        assert_eq!(status, 403, "{}", err.message);
        assert!(err.message.contains("operator"), "{}", err.message);
        let hosts = h.stored_hosts().await;
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].host_id, HOST_A);
        assert_eq!(hosts[0].agent_version, "9.9.9");
        // Operators read but may not post.
        let op = h.client(Who::Operator(OPERATOR));
        let (status, _) = error_of(post(&h, &op, body(&[report(HOST_A, 9)])).await).await;
        assert_eq!(status, 403);
        let missing = op.get(h.url("/v1/hosts/nobody")).send().await.unwrap();
        assert_eq!(missing.status(), 404);
    });
}

#[test]
fn report_for_another_host_is_refused_and_nothing_is_stored() {
    run(LIMIT, "spoof", || async {
        let h = Harness::start(|_| {}).await;
        let agent = h.client(Who::Agent(HOST_A));
        // One honest report and one posing as host B: the whole request is refused.
        let (status, err) =
            error_of(post(&h, &agent, body(&[report(HOST_A, 1), report(HOST_B, 1)])).await).await;
        assert_eq!(status, 403);
        let expected = format!("is for host \"{HOST_B}\", but the client certificate is host \"{HOST_A}\"'s");
        assert!(err.message.contains(&expected), "{}", err.message);
        assert!(!err.message.contains("Some("), "a Debug form leaked: {}", err.message);
        assert!(h.stored_hosts().await.is_empty());
    });
}

#[test]
fn a_batch_sent_twice_is_stored_once() {
    run(LIMIT, "duplicate", || async {
        let h = Harness::start(|_| {}).await;
        let agent = h.client(Who::Agent(HOST_A));
        let r = report(HOST_A, 1);
        let first: IngestResponse =
            post(&h, &agent, body(std::slice::from_ref(&r))).await.json().await.unwrap();
        assert_eq!(first.results[0].status, BatchStatus::Stored);
        let again: IngestResponse =
            post(&h, &agent, body(&[r.clone(), report(HOST_A, 2)])).await.json().await.unwrap();
        assert_eq!(again.results[0].status, BatchStatus::Duplicate);
        assert_eq!(again.results[1].status, BatchStatus::Stored);
        // The same batch twice in one request.
        let r3 = report(HOST_A, 3);
        let twice: IngestResponse = post(&h, &agent, body(&[r3.clone(), r3])).await.json().await.unwrap();
        assert_eq!(
            twice.results.iter().map(|r| r.status).collect::<Vec<_>>(),
            [BatchStatus::Stored, BatchStatus::Duplicate]
        );
        let hosts = h.stored_hosts().await;
        assert_eq!(hosts[0].reports_stored, 3);
        assert_eq!(hosts[0].missing_sequences, 0);
    });
}

/// An agent whose state directory was reset (a restored backup, a re-initialised identity, a
/// sequence file lost on a full disk) numbers its reports from 1 again. Those reports were
/// acknowledged as stored while their events were dropped, and the host's latest report stayed
/// the old one.
#[test]
fn a_reset_agent_counting_from_one_again_keeps_its_events_and_is_the_latest() {
    run(LIMIT, "sequence restarted", || async {
        let h = Harness::start(|_| {}).await;
        let agent = h.client(Who::Agent(HOST_A));
        let before = [report(HOST_A, 1), report(HOST_A, 2)];
        let ack: IngestResponse = post(&h, &agent, body(&before)).await.json().await.unwrap();
        assert!(ack.results.iter().all(|r| r.status == BatchStatus::Stored));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let mut again = report(HOST_A, 1);
        again.events[0].data = serde_json::json!({"after": "the reset"});
        let ack: IngestResponse =
            post(&h, &agent, body(std::slice::from_ref(&again))).await.json().await.unwrap();
        assert_eq!(ack.results[0].status, BatchStatus::Stored);
        let detail: HostDetail =
            agent.get(h.url("/v1/hosts/host-a")).send().await.unwrap().json().await.unwrap();
        assert_eq!(detail.summary.reports_stored, 3);
        assert!(detail.recent_events.contains(&again.events[0]), "{:?}", detail.recent_events);
        assert_eq!(detail.recent_events.len(), 3);
        assert_eq!(detail.latest_report.as_ref().unwrap().batch_id, again.batch_id);
    });
}

#[test]
fn malformed_json_schema_mismatch_and_unknown_schema_version_get_422() {
    run(LIMIT, "422", || async {
        let h = Harness::start(|_| {}).await;
        let agent = h.client(Who::Agent(HOST_A));
        let (status, err) = error_of(post(&h, &agent, b"{\"reports\": [".to_vec()).await).await;
        assert_eq!((status, err.error.as_str()), (422, "invalid_report"));
        assert!(err.message.contains("malformed JSON"), "{}", err.message);

        let good = report(HOST_A, 1);
        let mut v = serde_json::to_value(&good).unwrap();
        v["collected_at"] = serde_json::json!(12);
        let wrong = serde_json::to_vec(&serde_json::json!({ "reports": [v] })).unwrap();
        let (status, err) = error_of(post(&h, &agent, wrong).await).await;
        assert_eq!(status, 422);
        assert!(err.message.contains(&good.batch_id), "{}", err.message);

        let mut future = report(HOST_A, 2);
        future.schema_version = 99;
        let (status, err) = error_of(post(&h, &agent, body(&[good.clone(), future])).await).await;
        assert_eq!(status, 422);
        assert!(err.message.contains("schema_version 99"), "{}", err.message);

        let mut unsequenced = report(HOST_A, 3);
        unsequenced.sequence = None;
        let (status, err) = error_of(post(&h, &agent, body(std::slice::from_ref(&unsequenced))).await).await;
        assert_eq!(status, 422);
        assert!(
            err.message.contains("`sequence`") && err.message.contains(&unsequenced.batch_id),
            "{}",
            err.message
        );

        let mut bad_id = report(HOST_A, 4);
        bad_id.batch_id = "../../etc".into();
        let (status, err) = error_of(post(&h, &agent, body(&[bad_id])).await).await;
        assert_eq!(status, 422);
        assert!(err.message.contains("batch_id"), "{}", err.message);
        // Nothing of the refused requests was stored (the good report went with a bad one).
        assert!(h.stored_hosts().await.is_empty());
    });
}

#[test]
fn wrong_content_encoding_or_type_gets_415() {
    run(LIMIT, "415", || async {
        let h = Harness::start(|_| {}).await;
        let agent = h.client(Who::Agent(HOST_A));
        let resp = agent
            .post(h.url("/v1/reports"))
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(body(&[report(HOST_A, 1)]))
            .send()
            .await
            .unwrap();
        let (status, err) = error_of(resp).await;
        assert_eq!((status, err.error.as_str()), (415, "unsupported_encoding"));
        let resp = agent
            .post(h.url("/v1/reports"))
            .header("content-type", "text/plain")
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 415);
    });
}

#[test]
fn oversized_body_gets_413_and_nothing_is_stored() {
    run(LIMIT, "413", || async {
        let h = Harness::start(|c| c.limits.max_body_bytes = 64 * 1024).await;
        let agent = h.client(Who::Agent(HOST_A));
        let mut big = report(HOST_A, 1);
        big.events[0].data = serde_json::json!({ "pad": "x".repeat(100 * 1024) });
        let (status, err) = error_of(post(&h, &agent, body(&[big])).await).await;
        assert_eq!((status, err.error.as_str()), (413, "too_large"));
        assert!(err.message.contains("max_body_bytes"), "{}", err.message);
        // Too many reports in one request.
        let h2 = Harness::start(|c| c.limits.max_reports_per_request = 2).await;
        let agent2 = h2.client(Who::Agent(HOST_A));
        let three = [report(HOST_A, 1), report(HOST_A, 2), report(HOST_A, 3)];
        assert_eq!(post(&h2, &agent2, body(&three)).await.status(), 413);
        assert!(h.stored_hosts().await.is_empty());
        assert!(h2.stored_hosts().await.is_empty());
    });
}

fn zstd_frame(bytes: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(bytes, 3).unwrap()
}

async fn post_zstd(h: &Harness, client: &reqwest::Client, body: Vec<u8>) -> reqwest::Response {
    client
        .post(h.url("/v1/reports"))
        .header("content-type", "application/json")
        .header("content-encoding", "zstd")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[test]
fn zstd_body_of_several_concatenated_frames_is_accepted() {
    run(LIMIT, "multi-frame zstd", || async {
        let h = Harness::start(|_| {}).await;
        let agent = h.client(Who::Agent(HOST_A));
        // What the shipper streams: `{"reports":[` + report + `,` + report + `]}`, a frame each.
        let (r1, r2) = (report(HOST_A, 1), report(HOST_A, 2));
        let mut body = zstd_frame(b"{\"reports\":[");
        body.extend(zstd_frame(&serde_json::to_vec(&r1).unwrap()));
        body.extend(zstd_frame(b","));
        body.extend(zstd_frame(&serde_json::to_vec(&r2).unwrap()));
        body.extend(zstd_frame(b"]}"));
        let resp = post_zstd(&h, &agent, body).await;
        assert_eq!(resp.status(), 200);
        let ack: IngestResponse = resp.json().await.unwrap();
        assert_eq!(ack.results.len(), 2);
        assert_eq!(h.stored_hosts().await[0].reports_stored, 2);
        // Not zstd at all: 400, not a crash or a hang.
        assert_eq!(post_zstd(&h, &agent, b"definitely not zstd".to_vec()).await.status(), 400);
    });
}

#[test]
fn zstd_bomb_gets_413_quickly_without_inflating() {
    run(LIMIT, "zstd bomb", || async {
        let h = Harness::start(|c| c.limits.max_decompressed_bytes = 4 * 1024 * 1024).await;
        let agent = h.client(Who::Agent(HOST_A));
        // 1 GiB of zeros, compressed to a few tens of KiB.
        let bomb = tokio::task::spawn_blocking(|| {
            let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
            let chunk = vec![0u8; 1 << 20];
            for _ in 0..1024 {
                enc.write_all(&chunk).unwrap();
            }
            enc.finish().unwrap()
        })
        .await
        .unwrap();
        assert!(bomb.len() < 1 << 20, "bomb is {} bytes", bomb.len());
        let started = Instant::now();
        let (status, err) = error_of(post_zstd(&h, &agent, bomb).await).await;
        let took = started.elapsed();
        assert_eq!(status, 413, "{}", err.message);
        assert!(err.message.contains("max_decompressed_bytes"), "{}", err.message);
        // Decompressing 1 GiB would take seconds; stopping at the 4 MiB cap takes milliseconds.
        assert!(took < Duration::from_secs(3), "took {took:?}");
    });
}

#[test]
fn client_over_its_rate_gets_429_with_retry_after() {
    run(LIMIT, "429", || async {
        let h = Harness::start(|c| {
            c.limits.requests_per_sec_per_client = 0.5;
            c.limits.burst = 2;
        })
        .await;
        let agent = h.client(Who::Agent(HOST_A));
        for _ in 0..2 {
            assert_eq!(agent.get(h.url("/healthz")).send().await.unwrap().status(), 200);
        }
        let resp = agent.get(h.url("/healthz")).send().await.unwrap();
        assert_eq!(resp.status(), 429);
        let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=2).contains(&retry), "Retry-After {retry}");
        // The limit is per client: host B is not affected.
        assert_eq!(h.client(Who::Agent(HOST_B)).get(h.url("/healthz")).send().await.unwrap().status(), 200);
    });
}

#[test]
fn latest_client_certificate_is_recorded_per_host_across_rotation() {
    run(LIMIT, "rotation", || async {
        let h = Harness::start(|_| {}).await;
        let agent = h.client(Who::Agent(HOST_A));
        assert_eq!(post(&h, &agent, body(&[report(HOST_A, 1)])).await.status(), 200);
        let first = h.stored_hosts().await[0].client_certificate.clone().unwrap();
        // A new certificate for the same host (rotation).
        let (c, k) =
            crate::handshake::issue_with_validity(&h.pki(), HOST_A, -1, 90, &h.dir.path().join("rotated"));
        let rotated = h.builder(Who::Nobody).identity(identity(&c, &k)).build().unwrap();
        assert_eq!(post(&h, &rotated, body(&[report(HOST_A, 2)])).await.status(), 200);
        let second = h.stored_hosts().await[0].client_certificate.clone().unwrap();
        assert_ne!(first.sha256, second.sha256);
        assert_ne!(first.serial, second.serial);
        assert!(second.not_after < first.not_after, "the rotated cert expires in 90 days");
    });
}

/// A few KB of zstd that expand to a body of small JSON objects would parse into a tree dozens
/// of times the body's size (6.4 GB from 64 MiB of `{"":0},`): the request is refused (413,
/// saying why) from an estimate made before the parse, and nothing is stored.
#[test]
fn a_body_that_would_parse_into_a_huge_tree_is_refused_before_the_parse() {
    run(LIMIT, "JSON tree bomb", || async {
        let h = Harness::start(|_| {}).await;
        let agent = h.client(Who::Agent(HOST_A));
        let mut json = serde_json::to_vec(&serde_json::json!({ "reports": [report(HOST_A, 1)] })).unwrap();
        json.pop();
        json.extend_from_slice(br#","junk":["#);
        json.extend(br#"{"":0},"#.repeat((16 << 20) / 7));
        json.extend_from_slice(b"0]}");
        let compressed = zstd::bulk::compress(&json, 19).unwrap();
        assert!(compressed.len() < 64 << 10, "{} bytes", compressed.len());
        let (status, err) = error_of(post_zstd(&h, &agent, compressed).await).await;
        assert_eq!((status, err.error.as_str()), (413, "too_large"), "{}", err.message);
        assert!(
            err.message.contains("once parsed") && err.message.contains("max_buffered_bytes"),
            "{}",
            err.message
        );
        assert!(h.stored_hosts().await.is_empty());
        assert_eq!(post(&h, &agent, body(&[report(HOST_A, 1)])).await.status(), 200);
    });
}

/// A frame asking for a window over 8 MiB (`zstd --long`, levels above 19) is refused 400 with
/// a message that says so (the zstd library's own text is stripped from the build).
#[test]
fn a_zstd_frame_with_a_window_over_8_mib_is_refused_saying_why() {
    run(LIMIT, "zstd window", || async {
        let h = Harness::start(|_| {}).await;
        let agent = h.client(Who::Agent(HOST_A));
        let mut json = serde_json::to_vec(&serde_json::json!({ "reports": [report(HOST_A, 1)] })).unwrap();
        json.pop();
        json.extend_from_slice(br#","pad":""#);
        json.extend((0..(9u32 << 20)).map(|i| b'a' + (i.wrapping_mul(2_654_435_761) >> 27) as u8 % 26));
        json.extend_from_slice(b"\"}");
        let mut compressor = zstd::bulk::Compressor::new(3).unwrap();
        compressor.set_parameter(zstd::zstd_safe::CParameter::WindowLog(27)).unwrap();
        let compressed = compressor.compress(&json).unwrap();
        let (status, err) = error_of(post_zstd(&h, &agent, compressed).await).await;
        assert_eq!(status, 400, "{}", err.message);
        assert!(err.message.contains("window over 8 MiB"), "{}", err.message);
        assert!(!err.message.contains("stripped"), "{}", err.message);
    });
}

/// A host decides how large its events are; its detail stays bounded: at most 1 MiB of recent
/// events, newest first, the rest counted as left out (a compromised host once made one
/// `GET /v1/hosts/{id}` answer 692 MB).
#[test]
fn a_hosts_detail_carries_at_most_1_mib_of_recent_events_and_counts_the_rest() {
    run(LIMIT, "detail bound", || async {
        let h = Harness::start(|_| {}).await;
        let agent = h.client(Who::Agent(HOST_A));
        let mut big = report(HOST_A, 1);
        for i in 0..3 {
            big.events.push(guestward_core::Event {
                kind: "test.large".into(),
                time: guestward_core::Timestamp::now(),
                data: serde_json::json!({ "i": i, "x": "A".repeat(600 << 10) }),
            });
        }
        assert_eq!(post(&h, &agent, body(&[big])).await.status(), 200);
        let small = report(HOST_A, 2);
        assert_eq!(post(&h, &agent, body(std::slice::from_ref(&small))).await.status(), 200);
        let resp = agent.get(h.url("/v1/hosts/host-a")).send().await.unwrap();
        let bytes = resp.bytes().await.unwrap();
        assert!(bytes.len() < 2 << 20, "{} bytes", bytes.len());
        let detail: HostDetail = serde_json::from_slice(&bytes).unwrap();
        // Newest last: the newest large event fits with the small ones; the two older large
        // ones do not, and are skipped (older small ones still fit).
        let kinds: Vec<&str> = detail.recent_events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["test.event", "test.large", "test.event"], "{kinds:?}");
        assert_eq!(detail.recent_events[1].data["i"], 2);
        assert_eq!(detail.recent_events[2], small.events[0]);
        assert_eq!(detail.recent_events_omitted, 2);
    });
}

/// `GET /v1/findings` over mutual TLS: an operator searches the fleet's current findings by id
/// and severity; an agent may not; a filter that is not understood is refused by name.
#[test]
fn operators_search_the_fleets_current_findings() {
    run(LIMIT, "fleet findings", || async {
        let h = Harness::start(|_| {}).await;
        let with = |host: &str, sequence: u64, findings: &[(&str, guestward_core::Severity)]| {
            let mut r = report(host, sequence);
            r.findings = findings
                .iter()
                .map(|(id, severity)| guestward_core::Finding {
                    id: id.to_string(),
                    severity: *severity,
                    title: format!("{id} on {host}"),
                    evidence: serde_json::json!({}),
                    remediation: "-".into(),
                    source: "test".into(),
                })
                .collect();
            r
        };
        use guestward_core::Severity::{Critical, High, Low};
        let a = [
            with(HOST_A, 1, &[("GW-FIM-006", Critical)]),
            with(HOST_A, 2, &[("GW-FIM-006", High), ("GW-NET-002", Low)]),
        ];
        assert_eq!(post(&h, &h.client(Who::Agent(HOST_A)), body(&a)).await.status(), 200);
        let b = [with(HOST_B, 1, &[("GW-FIM-007", Critical)])];
        assert_eq!(post(&h, &h.client(Who::Agent(HOST_B)), body(&b)).await.status(), 200);

        let op = h.client(Who::Operator(OPERATOR));
        let search = |query: &'static str| {
            let op = op.clone();
            let url = h.url(&format!("/v1/findings{query}"));
            async move { op.get(url).send().await.unwrap() }
        };
        let found = |resp: reqwest::Response| async move {
            assert_eq!(resp.status(), 200);
            let answer: FleetFindings = resp.json().await.unwrap();
            let rows: Vec<(String, u64, String)> = answer
                .findings
                .iter()
                .map(|f| (f.host_id.clone(), f.sequence, f.finding.id.clone()))
                .collect();
            (answer.hosts_searched, rows)
        };
        let row = |host: &str, sequence: u64, id: &str| (host.to_string(), sequence, id.to_string());
        // Every host's latest report: host-a's first report (a critical finding since resolved)
        // is not current.
        assert_eq!(
            found(search("").await).await,
            (
                2,
                vec![
                    row(HOST_A, 2, "GW-FIM-006"),
                    row(HOST_A, 2, "GW-NET-002"),
                    row(HOST_B, 1, "GW-FIM-007")
                ]
            )
        );
        assert_eq!(
            found(search("?min_severity=high").await).await.1,
            [row(HOST_A, 2, "GW-FIM-006"), row(HOST_B, 1, "GW-FIM-007")]
        );
        // A prefix (`*` percent-encoded, as a client may send it), ids repeated, both filters.
        assert_eq!(
            found(search("?id=GW-FIM-%2A&min_severity=critical").await).await.1,
            [row(HOST_B, 1, "GW-FIM-007")]
        );
        assert_eq!(
            found(search("?id=GW-NET-002&id=GW-FIM-007").await).await.1,
            [row(HOST_A, 2, "GW-NET-002"), row(HOST_B, 1, "GW-FIM-007")]
        );

        for (query, names) in [
            ("?min_severity=urgent", "\"min_severity\": \"urgent\""),
            ("?severity=high", "unknown query parameter \"severity\""),
            ("?id=", "\"id\": \"\""),
        ] {
            let (status, err) = error_of(search(query).await).await;
            assert_eq!((status, err.error.as_str()), (400, "bad_request"), "{query}: {}", err.message);
            assert!(err.message.contains(names), "{query}: {}", err.message);
        }
        let (status, err) =
            error_of(h.client(Who::Agent(HOST_A)).get(h.url("/v1/findings")).send().await.unwrap()).await;
        assert_eq!(status, 403, "{}", err.message);
        assert!(err.message.contains("operator"), "{}", err.message);
    });
}
