use super::Collected;
use guestward_core::HostRoot;
use guestward_packages::PackagesReport;
use guestward_packages::delta::{Observation, Snapshot, Tracker};
use guestward_report::Report;
use std::path::Path;

/// Software inventory from every package database present under the root.
#[derive(Debug, Clone)]
pub struct PackagesCollector {
    root: HostRoot,
    config: guestward_packages::Config,
}

impl PackagesCollector {
    /// A collector reading `root` with `[packages]`.
    pub fn new(root: HostRoot, config: guestward_packages::Config) -> Self {
        Self { root, config }
    }

    /// One collection: the inventory and the findings drawn from it (language packages with
    /// known-bad versions).
    pub fn collect(&self) -> Collected<PackagesReport> {
        let section = guestward_packages::collect(&self.root, &self.config);
        let findings = section.data.as_ref().map(guestward_packages::findings).unwrap_or_default();
        Collected { section, findings, events: Vec::new() }
    }
}

/// Change tracking in daemon mode: compares the report's inventory with the one stored under
/// `agent.state_dir` (`packages-inventory.json`) and adds one `package.added` / `removed` /
/// `upgraded` / `downgraded` / `changed` event per difference. The first run, and every
/// `packages.full_snapshot_interval_secs` after the last full snapshot, is a full snapshot
/// (no events: the section itself is the inventory).
pub fn track_changes(state_dir: &Path, full_snapshot_interval_secs: u64, report: &mut Report) {
    let Some(data) = report.packages.as_ref().and_then(|s| s.data.as_ref()) else { return };
    let snapshot = Snapshot::from_inventory(
        report.collected_at,
        data.dpkg.as_ref(),
        data.rpm.as_slice(),
        data.language.as_ref(),
    );
    let tracker = Tracker::new(state_dir, full_snapshot_interval_secs);
    let observation = tracker.observe(&snapshot, report.collected_at);
    match &observation {
        Observation::Delta { changes, .. } => {
            report.events.extend(changes.iter().map(|c| c.to_event(report.collected_at)));
        }
        Observation::Full { reason, problem, .. } => {
            tracing::info!(reason = ?reason, "package inventory: full snapshot");
            if let Some(p) = problem {
                tracing::warn!(problem = %p, "stored package inventory unreadable");
            }
        }
    }
    if let Err(e) = tracker.commit(&snapshot, &observation) {
        tracing::warn!(error = %e, "package inventory not saved; the next scan reports these changes again");
    }
}
