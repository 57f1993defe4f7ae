//! One pass of every selected collector, assembled into a [`Report`].

use crate::collect::{self, Collected, Collectors, cloud::CloudCollected};
use crate::config::Config;
use guestward_core::threads::{Started, spawn_or_run};
use guestward_core::{HostRoot, Timestamp};
use guestward_report::protocol::Collector;
use guestward_report::{AgentInfo, HostIdSource, Report};
use std::collections::BTreeSet;

/// Runs the selected collectors, each on its own thread so a slow one does not delay the others,
/// and assembles the report: sections, findings most severe first, the host identity. Events
/// and the report's sequence are the pipeline's business.
pub fn run(config: &Config, collectors: &Collectors, only: &BTreeSet<Collector>) -> Report {
    let collected_at = Timestamp::now();
    let refused_before = guestward_core::threads::refused_so_far();
    let root = &collectors.root;
    let wants = |c: Collector| only.contains(&c);

    // All collectors start before any is joined, so the scan takes as long as the slowest one.
    // A collector whose thread the kernel refuses (`TasksMax`) runs on this one, in turn.
    let (host, packages, network, cloud, fim, updates, access) = std::thread::scope(|s| {
        let host =
            wants(Collector::Host).then(|| spawn_or_run(s, "gw-scan-host", || collectors.host.collect()));
        let packages = wants(Collector::Packages)
            .then(|| spawn_or_run(s, "gw-scan-packages", || collectors.packages.collect()));
        let network = wants(Collector::Network)
            .then(|| spawn_or_run(s, "gw-scan-network", || collectors.network.collect()));
        let cloud =
            wants(Collector::Cloud).then(|| spawn_or_run(s, "gw-scan-cloud", || collectors.cloud.collect()));
        let fim = wants(Collector::Fim).then(|| spawn_or_run(s, "gw-scan-fim", || collectors.fim.collect()));
        let updates = wants(Collector::Updates)
            .then(|| spawn_or_run(s, "gw-scan-updates", || collectors.updates.collect()));
        let access = wants(Collector::Access)
            .then(|| spawn_or_run(s, "gw-scan-access", || collectors.access.collect()));
        (
            join(host, || Collected::crashed("host")),
            join(packages, || Collected::crashed("packages")),
            join(network, || Collected::crashed("network")),
            join(cloud, || CloudCollected { collected: Collected::crashed("cloud"), instance_id: None }),
            join(fim, || Collected::crashed("fim")),
            join(updates, || Collected::crashed("updates")),
            join(access, || Collected::crashed("access")),
        )
    });

    // Nothing was lost, but a scan without its threads is slower, and the operator can act.
    let refused = guestward_core::threads::refused_so_far().saturating_sub(refused_before);
    if refused > 0 {
        tracing::warn!(
            threads = refused,
            "the kernel refused threads while this scan ran, so their work waited for the threads \
             it had: the process limit is likely reached (systemd's TasksMax, `ulimit -u`)"
        );
    }
    let mut report = Report::new(AgentInfo::unidentified(), collected_at);
    report.scanned_root = (!root.is_live()).then(|| root.dir().display().to_string());
    // Cross-collector rule: listeners reachable on the instance's public addresses (known only
    // from instance metadata) are marked before the network findings are drawn, so a risky
    // service exposed to the internet is reported as such.
    let public = cloud
        .as_ref()
        .and_then(|c| c.collected.section.data.as_ref())
        .map(collect::network::public_addresses)
        .unwrap_or_default();
    if let Some(mut network) = network {
        if let Some(data) = network.section.data.as_mut() {
            network.findings = collectors.network.findings(data, &public);
        }
        report.network = Some(absorb(&mut report, network));
    }
    let instance_id = cloud.as_ref().and_then(|c| c.instance_id.clone());
    report.host = host.map(|c| absorb(&mut report, c));
    report.packages = packages.map(|c| absorb(&mut report, c));
    report.cloud = cloud.map(|c| absorb(&mut report, c.collected));
    report.fim = fim.map(|c| absorb(&mut report, c));
    report.updates = updates.map(|c| absorb(&mut report, c));
    report.access = access.map(|c| absorb(&mut report, c));
    let instance_id = instance_id.or_else(|| collect::cloud::firmware_instance_id(root));
    report.agent = identify(config, root, &report, instance_id);
    report.sort_findings();
    report
}

/// Moves a collector's findings and events into the report and returns its section.
fn absorb<T>(report: &mut Report, collected: Collected<T>) -> guestward_core::Section<T> {
    report.findings.extend(collected.findings);
    report.events.extend(collected.events);
    collected.section
}

/// A report with no sections (used only when a scan could not run at all).
pub fn empty_report() -> Report {
    Report::new(AgentInfo::unidentified(), Timestamp::now())
}

/// Joins a collector; one that panicked becomes `on_panic()` (an error section) instead of
/// taking the scan down.
fn join<T>(started: Option<Started<'_, T>>, on_panic: impl FnOnce() -> T) -> Option<T> {
    Some(started?.join().unwrap_or_else(|_| on_panic()))
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
