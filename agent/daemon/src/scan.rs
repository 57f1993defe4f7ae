//! One pass of every selected collector, assembled into a [`Report`].

use crate::collect;
use crate::config::Config;
use guestward_core::{HostRoot, Timestamp};
use guestward_report::protocol::Collector;
use guestward_report::{AgentInfo, HostIdSource, Report};
use std::collections::BTreeSet;

/// What to scan.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// The filesystem to read (`/`, or `--root DIR`).
    pub root: HostRoot,
    /// The collectors to run.
    pub only: BTreeSet<Collector>,
}

/// Runs the selected collectors, each on its own thread so a slow one does not delay the others,
/// and assembles the report.
pub fn run(config: &Config, options: &ScanOptions) -> Report {
    let collected_at = Timestamp::now();
    let root = &options.root;
    let wants = |c: Collector| options.only.contains(&c);

    // All collectors start before any is joined, so the scan takes as long as the slowest one.
    let (host, packages, network, cloud) = std::thread::scope(|s| {
        let host = wants(Collector::Host).then(|| s.spawn(|| collect::host::collect(root)));
        let packages =
            wants(Collector::Packages).then(|| s.spawn(|| collect::packages::collect(root, config)));
        let network = wants(Collector::Network).then(|| s.spawn(|| collect::network::collect(root, config)));
        let cloud = wants(Collector::Cloud).then(|| s.spawn(|| collect::cloud::collect(root, config)));
        (
            join(host, || crashed_section("host")),
            join(packages, || crashed_section("packages")),
            join(network, || crashed_section("network")),
            join(cloud, collect::cloud::crashed),
        )
    });

    // Cross-collector rule: listeners reachable on the instance's public addresses (known only
    // from instance metadata) are marked before the network findings are drawn, so a risky
    // service exposed to the internet is reported as such.
    let mut network = network;
    if let (Some(net), Some(cloud_data)) =
        (network.as_mut().and_then(|s| s.data.as_mut()), cloud.as_ref().and_then(|c| c.section.data.as_ref()))
    {
        guestward_network::mark_public_reachability(net, &collect::network::public_addresses(cloud_data));
    }
    let network_findings = network
        .as_ref()
        .and_then(|s| s.data.as_ref())
        .map(|data| guestward_network::findings(data, &config.network))
        .unwrap_or_default();

    let mut report = Report::new(AgentInfo::unidentified(), collected_at);
    report.scanned_root = (!root.is_live()).then(|| root.dir().display().to_string());
    report.host = host;
    report.packages = packages;
    report.cloud = cloud.as_ref().map(|c| c.section.clone());
    report.network = network;
    report.findings = network_findings;
    let instance_id = cloud
        .as_ref()
        .and_then(|c| c.instance_id.clone())
        .or_else(|| collect::cloud::firmware_instance_id(root));
    if let Some(c) = cloud {
        report.findings.extend(c.findings);
    }
    report.agent = identify(config, root, &report, instance_id);
    if let Some(data) = report.packages.as_ref().and_then(|s| s.data.as_ref()) {
        report.findings.extend(guestward_packages::findings(data));
    }
    report.findings.sort_by(|a, b| b.severity.cmp(&a.severity).then_with(|| a.id.cmp(&b.id)));
    report
}

/// A report with no sections (used only when a scan could not run at all).
pub fn empty_report() -> Report {
    Report::new(AgentInfo::unidentified(), Timestamp::now())
}

/// Joins a collector thread; one that panicked becomes `on_panic()` (an error section) instead
/// of taking the scan down.
fn join<T>(handle: Option<std::thread::ScopedJoinHandle<'_, T>>, on_panic: impl FnOnce() -> T) -> Option<T> {
    Some(handle?.join().unwrap_or_else(|_| on_panic()))
}

fn crashed_section<T>(name: &str) -> guestward_core::Section<T> {
    guestward_core::Section::failed(
        guestward_core::Problem::new(
            "internal",
            format!("the {name} collector crashed; this is a bug, please report it"),
        ),
        std::time::Instant::now(),
    )
}

/// Host identity: config override, then the EC2 instance id, then machine-id.
fn identify(config: &Config, root: &HostRoot, report: &Report, instance_id: Option<String>) -> AgentInfo {
    let version = env!("CARGO_PKG_VERSION").to_string();
    if let Some(id) = &config.agent.host_id {
        return AgentInfo { version, host_id: Some(id.clone()), host_id_source: HostIdSource::Config };
    }
    if let Some(id) = instance_id {
        return AgentInfo { version, host_id: Some(id), host_id_source: HostIdSource::Ec2InstanceId };
    }
    // The host section already read machine-id; when it did not run, read it (it is tiny).
    let machine_id = match report.host.as_ref().and_then(|s| s.data.as_ref()) {
        Some(h) => h.machine_id.clone(),
        None => guestward_host::read_machine_id(root).ok().flatten(),
    };
    match machine_id {
        Some(id) => AgentInfo { version, host_id: Some(id), host_id_source: HostIdSource::MachineId },
        None => AgentInfo { version, host_id: None, host_id_source: HostIdSource::None },
    }
}
