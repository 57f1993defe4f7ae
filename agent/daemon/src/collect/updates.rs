use super::Collected;
use guestward_core::HostRoot;
use guestward_updates::UpdatesReport;

/// Pending updates from the package metadata cached on the host, and whether a reboot is
/// needed. Works under any root (the process check is live-only).
#[derive(Debug, Clone)]
pub struct UpdatesCollector {
    root: HostRoot,
    config: guestward_updates::Config,
}

impl UpdatesCollector {
    /// A collector of the host behind `root` with `[updates]`.
    pub fn new(root: HostRoot, config: guestward_updates::Config) -> Self {
        Self { root, config }
    }

    /// One collection: the section and its findings (pending security updates, reboot
    /// required, stale lists).
    pub fn collect(&self) -> Collected<UpdatesReport> {
        let section = guestward_updates::collect(&self.config, &self.root);
        let findings =
            section.data.as_ref().map(|d| guestward_updates::findings(d, &self.config)).unwrap_or_default();
        Collected { section, findings, events: Vec::new() }
    }
}
