//! Off EC2: decide quickly from local data, never wait on the network.

use crate::{no_env, not_ec2_root, root_with};
use guestward_cloud::{CloudCollector, CloudState, ImdsConfig, ec2_hint, instance_id_from_firmware};
use std::time::{Duration, Instant};

#[tokio::test]
async fn off_ec2_is_decided_from_dmi_without_a_request() {
    let (_d, root) = not_ec2_root();
    let collector = CloudCollector::with_env(&ImdsConfig::default(), &no_env).unwrap();
    let started = Instant::now();
    let out = collector.collect(&root).await;
    let took = started.elapsed();
    assert_eq!(out.report.state, CloudState::NotEc2);
    assert!(out.report.reason.as_deref().unwrap().contains("QEMU"), "{:?}", out.report.reason);
    assert!(out.problems.is_empty());
    // Local files only: far below one connect timeout. (No request can have gone out: the
    // client's counters stay at zero.)
    assert!(took < Duration::from_millis(500), "took {took:?}");
    let stats = collector.client().unwrap();
    assert_eq!(stats.stats().token_requests.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_eq!(stats.stats().get_requests.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_silent_endpoint_is_decided_within_about_two_seconds() {
    // A listener that accepts connections and never answers: what a blackholed IMDS looks like
    // from the client once the connection is up.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let config = ImdsConfig { endpoint: Some(format!("http://{addr}")), ..Default::default() };
    let collector = CloudCollector::with_env(&config, &no_env).unwrap();
    let (_d, root) = not_ec2_root();
    let started = Instant::now();
    let out = collector.collect(&root).await;
    let took = started.elapsed();
    hold.abort();
    assert_eq!(out.report.state, CloudState::Unreachable);
    // 1 s read timeout, 100 ms pause, 1 s again: about 2.1 s; the margin absorbs a loaded CI machine.
    assert!(took < Duration::from_millis(3_500), "took {took:?}");
}

#[tokio::test]
async fn a_closed_port_is_decided_at_once() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = ImdsConfig { endpoint: Some(format!("http://127.0.0.1:{port}")), ..Default::default() };
    let started = Instant::now();
    let out = CloudCollector::with_env(&config, &no_env).unwrap().collect(&not_ec2_root().1).await;
    assert_eq!(out.report.state, CloudState::Unreachable);
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
}

#[test]
fn nitro_firmware_gives_the_instance_id_cheaply() {
    let (_d, root) = root_with(&[
        ("/sys/class/dmi/id/board_asset_tag", "i-0fedcba9876543210\n"),
        ("/sys/class/dmi/id/sys_vendor", "Amazon EC2\n"),
    ]);
    assert_eq!(instance_id_from_firmware(&root).as_deref(), Some("i-0fedcba9876543210"));
    let hint = ec2_hint(&root);
    assert!(hint.is_ec2);
    let collector = CloudCollector::with_env(&ImdsConfig::default(), &no_env).unwrap();
    assert_eq!(collector.known_instance_id(&root).as_deref(), Some("i-0fedcba9876543210"));
}

#[test]
fn this_machine_is_judged_without_error() {
    // Whatever this machine is, the live pre-check must answer quickly and give a reason.
    let started = Instant::now();
    let hint = ec2_hint(&guestward_core::HostRoot::live());
    assert!(!hint.reason.is_empty());
    assert!(started.elapsed() < Duration::from_millis(500));
    eprintln!("live pre-check: is_ec2={} ({})", hint.is_ec2, hint.reason);
}

#[tokio::test]
async fn scan_under_a_mounted_root_is_skipped_and_claims_no_identity() {
    let (_d, root) = root_with(&[("/sys/class/dmi/id/board_asset_tag", "i-0fedcba9876543210\n")]);
    let collector = CloudCollector::with_env(&ImdsConfig::default(), &no_env).unwrap();
    let scan = collector.scan(&root).await;
    assert_eq!(scan.section.status, guestward_core::SectionStatus::Skipped);
    assert!(scan.findings.is_empty());
    assert_eq!(scan.instance_id, None, "a mounted root's firmware files do not identify this host");
}

#[test]
fn scan_blocking_runs_on_the_callers_runtime() {
    // The caller owns the runtime (the crate starts none); a multi-thread one drives the
    // client's I/O on its worker while this thread blocks. The emulator runs on it too.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let emu = rt.block_on(guestward_imds_emulator::Emulator::start(Default::default()));
    let config = ImdsConfig { endpoint: Some(emu.url()), ..Default::default() };
    let collector = CloudCollector::with_env(&config, &no_env).unwrap();
    let scan = guestward_core::testing::within(Duration::from_secs(30), "scan_blocking", move || {
        collector.scan_blocking(rt.handle(), &guestward_core::HostRoot::live())
    });
    assert_eq!(scan.section.status, guestward_core::SectionStatus::Ok, "{:?}", scan.section.problems);
    assert_eq!(scan.instance_id.as_deref(), Some(guestward_imds_emulator::INSTANCE_ID));
    assert!(scan.findings.iter().any(|f| f.id == guestward_cloud::INSTANCE_PROFILE_ATTACHED));
}

fn fixture(name: &str) -> guestward_core::HostRoot {
    guestward_core::HostRoot::new(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/cloud").to_string() + "/" + name,
    )
    .unwrap()
}

#[test]
fn fixture_platforms_are_told_apart() {
    let nitro = ec2_hint(&fixture("nitro"));
    assert!(nitro.is_ec2);
    assert_eq!(nitro.instance_id.as_deref(), Some("i-0fedcba9876543210"));
    let xen = ec2_hint(&fixture("xen"));
    assert!(xen.is_ec2 && xen.instance_id.is_none());
    assert!(xen.reason.contains("/sys/hypervisor/uuid"), "{}", xen.reason);
    let swapped = ec2_hint(&fixture("xen-swapped"));
    assert!(swapped.is_ec2, "{}", swapped.reason);
    let kvm = ec2_hint(&fixture("kvm"));
    assert!(!kvm.is_ec2);
    assert!(kvm.reason.contains("QEMU"), "{}", kvm.reason);
}

#[test]
fn blocking_scans_on_one_collector_reuse_its_token() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let emu = rt.block_on(guestward_imds_emulator::Emulator::start(Default::default()));
    let config = ImdsConfig { endpoint: Some(emu.url()), collect_tags: false, ..Default::default() };
    let collector = CloudCollector::with_env(&config, &no_env).unwrap();
    let handle = rt.handle().clone();
    guestward_core::testing::within(Duration::from_secs(30), "three blocking scans", move || {
        for _ in 0..3 {
            let scan = collector.scan_blocking(&handle, &guestward_core::HostRoot::live());
            assert_eq!(scan.section.status, guestward_core::SectionStatus::Ok, "{:?}", scan.section.problems);
        }
    });
    assert_eq!(emu.token_puts(), 1, "one token for three scans by one collector");
}
