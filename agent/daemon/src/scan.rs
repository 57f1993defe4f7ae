//! One pass of every selected collector, assembled into a [`Report`].

use crate::collect;
use crate::config::Config;
use crate::report::{AgentInfo, HostIdSource, Report, SCHEMA_VERSION};
use guestward_core::{HostRoot, Timestamp};
use std::collections::BTreeSet;

/// The collectors `--only` can name.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Collector {
    /// OS, kernel, CPU, memory, machine-id.
    Host,
    /// dpkg (and later rpm, language) packages.
    Packages,
    /// EC2 instance identity and metadata-service posture (live only; skipped with --root).
    Cloud,
    /// Listening sockets, owners, exposure (live system only).
    Network,
}

impl Collector {
    /// Every collector.
    pub fn all() -> BTreeSet<Self> {
        [Self::Host, Self::Packages, Self::Network, Self::Cloud].into_iter().collect()
    }
}

/// What to scan.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// The filesystem to read (`/`, or `--root DIR`).
    pub root: HostRoot,
    /// The collectors to run.
    pub only: BTreeSet<Collector>,
}

/// Runs the selected collectors, each on its own thread so a slow one does not delay the others,
/// and assembles the report. `cloud` is the process's one IMDS collector (one client, one
/// token); its requests run on `runtime`, which must be driven while this blocks.
pub fn run(
    config: &Config,
    options: &ScanOptions,
    cloud: &guestward_cloud::CloudCollector,
    runtime: &tokio::runtime::Handle,
) -> Report {
    let collected_at = Timestamp::now();
    let root = &options.root;
    let wants = |c: Collector| options.only.contains(&c);

    // All collectors start before any is joined, so the scan takes as long as the slowest one.
    let (host, packages, network, cloud) = std::thread::scope(|s| {
        let host = wants(Collector::Host).then(|| s.spawn(|| collect::host::collect(root)));
        let packages =
            wants(Collector::Packages).then(|| s.spawn(|| collect::packages::collect(root, config)));
        let network = wants(Collector::Network).then(|| s.spawn(|| collect::network::collect(root, config)));
        let cloud =
            wants(Collector::Cloud).then(|| s.spawn(|| collect::cloud::collect(root, cloud, runtime)));
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

    let mut report = Report {
        schema_version: SCHEMA_VERSION,
        agent: AgentInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            host_id: None,
            host_id_source: HostIdSource::None,
        },
        collected_at,
        scanned_root: (!root.is_live()).then(|| root.dir().display().to_string()),
        host,
        packages,
        cloud: cloud.as_ref().map(|c| c.section.clone()),
        network,
        findings: network_findings,
        events: Vec::new(),
    };
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
    Report {
        schema_version: SCHEMA_VERSION,
        agent: AgentInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            host_id: None,
            host_id_source: HostIdSource::None,
        },
        collected_at: Timestamp::now(),
        scanned_root: None,
        host: None,
        packages: None,
        cloud: None,
        network: None,
        findings: Vec::new(),
        events: Vec::new(),
    }
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

/// Writes the human summary of a report.
///
/// Everything is written through [`guestward_core::text::TerminalSafe`]: values from scanned
/// files (hostnames, package names, paths in problems) are shown with control characters
/// escaped, never as terminal sequences (issue 9, item 15). JSON output is not filtered.
pub fn render_human(report: &Report, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let out: &mut dyn std::io::Write = &mut guestward_core::text::TerminalSafe::new(out);
    writeln!(
        out,
        "guestward {} scan at {}{}",
        report.agent.version,
        report.collected_at,
        report.scanned_root.as_ref().map(|r| format!(" of {r}")).unwrap_or_default()
    )?;
    writeln!(
        out,
        "host id   {} (from {})",
        report.agent.host_id.as_deref().unwrap_or("unknown"),
        report.agent.host_id_source.as_str()
    )?;
    writeln!(out)?;
    if let Some(section) = &report.host {
        section_header(out, "host", section)?;
        if let Some(facts) = &section.data {
            guestward_host::render_summary(facts, out)?;
        }
    }
    if let Some(section) = &report.packages {
        section_header(out, "packages", section)?;
        if let Some(data) = &section.data {
            guestward_packages::render_summary(data, out)?;
        }
    }
    if let Some(section) = &report.cloud {
        section_header(out, "cloud", section)?;
        if let Some(data) = &section.data {
            guestward_cloud::render_table(data, out)?;
        }
    }
    if let Some(section) = &report.network {
        section_header(out, "network", section)?;
        if let Some(data) = &section.data {
            guestward_network::render_summary(data, out)?;
        }
    }
    if !report.findings.is_empty() {
        writeln!(out, "\nfindings ({}):", report.findings.len())?;
        for f in &report.findings {
            writeln!(
                out,
                "  [{:<8}] {} {}",
                f.severity,
                f.id,
                guestward_core::text::escape_control(&f.title)
            )?;
        }
    }
    Ok(())
}

fn section_header<T>(
    out: &mut dyn std::io::Write,
    name: &str,
    section: &guestward_core::Section<T>,
) -> std::io::Result<()> {
    use guestward_core::SectionStatus as S;
    let status = match section.status {
        S::Ok => "ok",
        S::Degraded => "DEGRADED",
        S::Error => "ERROR",
        S::Skipped => "skipped",
    };
    writeln!(out, "== {name}: {status} ({} ms)", section.duration_ms)?;
    if let Some(note) = &section.note {
        writeln!(out, "   note: {note}")?;
    }
    const SHOWN: usize = 10;
    for p in section.problems.iter().take(SHOWN) {
        writeln!(out, "   problem: {p}")?;
    }
    if section.problems.len() > SHOWN {
        writeln!(out, "   ... and {} more problems (see --json)", section.problems.len() - SHOWN)?;
    }
    Ok(())
}
