//! Session tokens: reuse, refresh before expiry, refresh on 401, secrecy.

use crate::{config_for, no_env, not_ec2_root};
use guestward_cloud::{ClientSettings, CloudCollector, ImdsClient, ImdsConfig};
use guestward_core::{HostRoot, SectionStatus};
use guestward_imds_emulator::{Emulator, EmulatorConfig, TokenUse};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[tokio::test]
async fn one_token_serves_a_whole_collection_and_the_next_one() {
    let emu = Emulator::start(EmulatorConfig::default()).await;
    let collector = CloudCollector::with_env(&config_for(&emu), &no_env).unwrap();
    let (_d, root) = not_ec2_root();
    let first = collector.collect(&root).await;
    assert!(first.problems.is_empty(), "{:?}", first.problems);
    collector.collect(&root).await;
    assert_eq!(emu.token_puts(), 1, "the cached token must be reused across collections");
    let records = emu.records();
    let gets: Vec<_> = records.iter().filter(|r| r.method == "GET").collect();
    assert!(gets.len() > 20, "expected a full walk, got {}", gets.len());
    // Every GET carried the valid token except the single deliberate token-less v1 probe
    // per collection.
    let tokenless = gets.iter().filter(|r| r.token == TokenUse::None).count();
    assert_eq!(tokenless, 2, "{records:?}");
    assert!(gets.iter().all(|r| r.token != TokenUse::Invalid));
}

#[tokio::test]
async fn token_is_refreshed_before_it_expires() {
    let emu = Emulator::start(EmulatorConfig::default()).await;
    let settings = ClientSettings { token_ttl: Duration::from_secs(2), ..Default::default() };
    let client = ImdsClient::new(&emu.url(), settings).unwrap();
    client.get("/latest/meta-data/instance-id").await.unwrap().unwrap();
    assert_eq!(emu.token_puts(), 1);
    client.get("/latest/meta-data/ami-id").await.unwrap().unwrap();
    assert_eq!(emu.token_puts(), 1, "a young token is reused");
    // Past three quarters of a 2 s life: replaced before use, so IMDS never sees it expire.
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    client.get("/latest/meta-data/instance-type").await.unwrap().unwrap();
    assert_eq!(emu.token_puts(), 2);
    assert!(emu.records().iter().all(|r| r.status != 401), "no request may hit an expired token");
    assert_eq!(client.token_ttl_secs().await, Some(2));
}

#[tokio::test]
async fn token_expiring_mid_run_is_replaced_after_one_401() {
    let emu = Emulator::start(EmulatorConfig::default()).await;
    let client = ImdsClient::new(&emu.url(), ClientSettings::default()).unwrap();
    assert_eq!(
        client.get("/latest/meta-data/instance-id").await.unwrap().as_deref(),
        Some("i-0123456789abcdef0")
    );
    // As after a stop/start: IMDS forgets every token it issued.
    emu.expire_all_tokens();
    assert_eq!(client.get("/latest/meta-data/instance-type").await.unwrap().as_deref(), Some("m7i.large"));
    assert_eq!(emu.token_puts(), 2);
    assert_eq!(client.stats().token_rejections.load(Ordering::Relaxed), 1);
    let statuses: Vec<u16> = emu.records().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![200, 200, 401, 200, 200], "PUT, GET, GET(401), PUT, GET");
}

#[tokio::test]
async fn a_collection_survives_token_expiry_midway() {
    let emu = Emulator::start(EmulatorConfig::default()).await;
    // The emulator answers this path slowly; tokens are revoked while the client waits.
    emu.update(|c| {
        c.delays.insert("/latest/meta-data/placement/region".into(), Duration::from_millis(300));
    });
    let collector = CloudCollector::with_env(&config_for(&emu), &no_env).unwrap();
    let (_d, root) = not_ec2_root();
    let revoke = async {
        // After the first token exists, while the client waits on the slow item.
        while emu.token_puts() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        emu.expire_all_tokens();
    };
    let (outcome, ()) = tokio::join!(collector.collect(&root), revoke);
    assert!(outcome.problems.is_empty(), "{:?}", outcome.problems);
    let i = outcome.report.instance.unwrap();
    assert_eq!(i.region.as_deref(), Some("eu-west-1"));
    assert_eq!(i.availability_zone_id.as_deref(), Some("euw1-az2"));
    assert_eq!(emu.token_puts(), 2);
}

#[tokio::test]
async fn the_token_never_appears_in_reports_debug_output_or_tables() {
    let emu = Emulator::start(EmulatorConfig::default()).await;
    let collector = CloudCollector::with_env(&config_for(&emu), &no_env).unwrap();
    let (_d, root) = not_ec2_root();
    let outcome = collector.collect(&root).await;
    let json = serde_json::to_string(&outcome.report).unwrap();
    let debug = format!("{collector:?} {outcome:?}");
    let mut table = Vec::new();
    guestward_cloud::render_table(&outcome.report, &mut table).unwrap();
    let table = String::from_utf8(table).unwrap();
    // Every token the emulator issues contains this marker.
    for (what, text) in [("json", &json), ("debug", &debug), ("table", &table)] {
        assert!(!text.contains("emulatedTOKEN"), "token leaked into {what}");
    }
    assert!(debug.contains("<redacted>"), "the cached token should show as redacted in Debug");
}

#[tokio::test]
async fn ttl_outside_the_documented_range_is_a_config_error() {
    for ttl in [0, 21_601] {
        let c = ImdsConfig {
            token_ttl_secs: ttl,
            endpoint: Some("http://127.0.0.1:9".into()),
            ..Default::default()
        };
        let err = CloudCollector::with_env(&c, &no_env).unwrap_err();
        assert!(err.to_string().contains("imds.token_ttl_secs"), "{err}");
    }
}

/// Scans and lifecycle polls, interleaved and concurrent, on one collector and the watcher it
/// hands out: the daemon's whole IMDS traffic.
async fn scans_and_polls(collector: &CloudCollector, watcher: &mut guestward_cloud::LifecycleWatcher) {
    let live = HostRoot::live();
    for _ in 0..3 {
        let (scan, (_, spot_problems)) = tokio::join!(collector.scan(&live), watcher.poll_spot());
        assert_eq!(scan.section.status, SectionStatus::Ok, "{:?}", scan.section.problems);
        assert!(spot_problems.is_empty(), "{spot_problems:?}");
        let (_, problems) = watcher.poll_all().await;
        assert!(problems.is_empty(), "{problems:?}");
    }
}

#[tokio::test]
async fn a_process_makes_exactly_one_imds_token_per_ttl() {
    // A 4 s token is replaced once past three quarters of its life (3 s): each phase below
    // must end before that point for "one token per TTL" to be what is counted.
    const TTL: Duration = Duration::from_secs(4);
    const PHASE_LIMIT: Duration = Duration::from_millis(2_500);
    let emu = Emulator::start(EmulatorConfig::default()).await;
    let config = ImdsConfig { token_ttl_secs: 4, ..config_for(&emu) };
    let collector = CloudCollector::with_env(&config, &no_env).unwrap();
    // The daemon's way to get a watcher: on the collector's own client.
    let mut watcher =
        collector.lifecycle_watcher(&HostRoot::live()).expect("an explicit endpoint is watched");
    let body = async {
        let started = Instant::now();
        scans_and_polls(&collector, &mut watcher).await;
        let took = started.elapsed();
        assert!(took < PHASE_LIMIT, "the first phase took {took:?}, past the token's refresh point");
        let first = emu.counters();
        assert_eq!(first.token_put_requests, 1, "three scans and six polls within one TTL: {first:?}");
        assert_eq!(first.tokens_issued, 1);
        // Every scan and poll was asked: 3 collections of a few dozen items, 6 polls.
        assert!(first.get_requests > 60, "{first:?}");

        // Past the TTL: the same traffic takes exactly one new token.
        tokio::time::sleep(
            (started + TTL + Duration::from_millis(200)).saturating_duration_since(Instant::now()),
        )
        .await;
        let second_started = Instant::now();
        scans_and_polls(&collector, &mut watcher).await;
        let took = second_started.elapsed();
        assert!(took < PHASE_LIMIT, "the second phase took {took:?}, past the new token's refresh point");
        let second = emu.counters();
        assert_eq!(second.token_put_requests, 2, "one more token after the TTL passed: {second:?}");
        assert_eq!(second.tokens_issued, 2);
        assert!(second.get_requests > 2 * 60, "{second:?}");
    };
    tokio::time::timeout(Duration::from_secs(30), body).await.expect("scans and polls hung");
    // The old token was replaced before use, never presented expired, and every GET but the
    // deliberate token-less IMDSv1 probe (one per scan) carried the current token.
    let records = emu.records();
    assert!(records.iter().all(|r| r.token != TokenUse::Invalid), "a request carried an expired token");
    let tokenless = records.iter().filter(|r| r.method == "GET" && r.token == TokenUse::None).count();
    assert_eq!(tokenless, 6, "one token-less probe per scan");
    assert_eq!(records.iter().filter(|r| r.method == "GET").count() as u64, emu.counters().get_requests);
}

#[tokio::test]
async fn no_lifecycle_watcher_when_imds_is_turned_off() {
    let c = ImdsConfig { enabled: false, endpoint: Some("http://127.0.0.1:9".into()), ..Default::default() };
    let collector = CloudCollector::with_env(&c, &no_env).unwrap();
    assert!(collector.lifecycle_watcher(&HostRoot::live()).is_none());
}
