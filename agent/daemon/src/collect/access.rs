use super::Collected;
use guestward_access::AccessReport;
use guestward_core::HostRoot;

/// Accounts, SSH keys and sshd settings, sudo grants, static cloud keys. File facts: works on
/// any root (`--root` included).
#[derive(Debug, Clone)]
pub struct AccessCollector {
    root: HostRoot,
    config: guestward_access::Config,
}

impl AccessCollector {
    /// A collector of the host behind `root` with `[access]`.
    pub fn new(root: HostRoot, config: guestward_access::Config) -> Self {
        Self { root, config }
    }

    /// One collection, with its findings.
    pub fn collect(&self) -> Collected<AccessReport> {
        let section = guestward_access::collect(&self.config, &self.root);
        let findings = section.data.as_ref().map(guestward_access::findings).unwrap_or_default();
        Collected { section, findings, events: Vec::new() }
    }
}
