//! The collector contract: each collector is a long-lived object, built once from the
//! validated configuration and owned by whoever runs scans (the daemon's pipeline, or a
//! one-shot `scan`), with one call, `collect`, that yields its [`Collected`] result: the
//! section, the findings drawn from it, and the events it observed.
//!
//! The collector crates know nothing of the envelope; this module is the only glue between
//! them and [`crate::pipeline`], which assembles the report. Cross-collector rules (a listener
//! is internet-facing only if instance metadata says the address is public) are the
//! pipeline's, applied after every collector returned.

/// Credentials and access.
pub mod access;
/// Each collector's last run and retry backoff, for `agentctl status`.
pub mod book;
/// Cloud identity (EC2 instance metadata).
pub mod cloud;
/// File integrity monitoring.
pub mod fim;
/// Network exposure.
pub mod network;
/// Software inventory.
pub mod packages;
/// Patch posture.
pub mod updates;

use crate::config::Config;
use guestward_core::{Event, Finding, HostRoot, Section};

/// What one collector yields for one scan.
#[derive(Debug, Clone)]
pub struct Collected<T> {
    /// The section: data and the problems met, with a status.
    pub section: Section<T>,
    /// Findings drawn from this section alone.
    pub findings: Vec<Finding>,
    /// Events this collector observed (change tracking adds its own in the pipeline).
    pub events: Vec<Event>,
}

impl<T> Collected<T> {
    /// A section with no findings or events.
    pub fn section(section: Section<T>) -> Self {
        Self { section, findings: Vec::new(), events: Vec::new() }
    }

    /// What a collector that panicked leaves behind: an error section, so the others still
    /// report.
    pub fn crashed(name: &str) -> Self {
        Self::section(Section::failed(
            guestward_core::Problem::new(
                "internal",
                format!("the {name} collector crashed; this is a bug, please report it"),
            ),
            std::time::Instant::now(),
        ))
    }
}

/// Host facts: OS, kernel, CPU, memory, machine-id. Never skipped: file facts work under any
/// root.
#[derive(Debug, Clone)]
pub struct HostCollector {
    root: HostRoot,
}

impl HostCollector {
    /// A collector reading `root`.
    pub fn new(root: HostRoot) -> Self {
        Self { root }
    }

    /// One collection.
    pub fn collect(&self) -> Collected<guestward_host::HostFacts> {
        Collected::section(guestward_host::collect(&self.root))
    }
}

/// Every collector, built once. The daemon keeps one set until a reload (SIGHUP) changes a
/// collector's section ([`Self::reconfigured`]); a one-shot scan builds one set and drops it.
#[derive(Debug, Clone)]
pub struct Collectors {
    /// The filesystem read (`/`, or `--root DIR`).
    pub root: HostRoot,
    /// Host facts.
    pub host: HostCollector,
    /// Software inventory.
    pub packages: packages::PackagesCollector,
    /// Listening sockets.
    pub network: network::NetworkCollector,
    /// Cloud identity.
    pub cloud: cloud::CloudCollector,
    /// File integrity.
    pub fim: fim::FimCollector,
    /// Pending updates, reboot required.
    pub updates: updates::UpdatesCollector,
    /// Credentials and access.
    pub access: access::AccessCollector,
}

impl Collectors {
    /// The collectors for `root`, configured by `config`, with two built by the caller: `cloud`
    /// (the daemon's shares the IMDS client its identity check used; a one-shot scan's drives
    /// its requests on a runtime of each collection's own), and `fim` (the daemon's running
    /// monitor, or the stored baseline read-only).
    pub fn new(
        config: &Config,
        root: HostRoot,
        cloud: cloud::CloudCollector,
        fim: fim::FimCollector,
    ) -> Self {
        Self {
            host: HostCollector::new(root.clone()),
            packages: packages::PackagesCollector::new(root.clone(), config.packages.clone()),
            network: network::NetworkCollector::new(root.clone(), config.network.clone()),
            cloud,
            access: access::AccessCollector::new(root.clone(), config.access.clone()),
            fim,
            updates: updates::UpdatesCollector::new(root.clone(), config.updates.clone()),
            root,
        }
    }

    /// The collectors for a reloaded `new` configuration: a collector whose section changed
    /// from `old` is built again from `new`, the others are kept as they are. Keeping the
    /// cloud collector when `[imds]` did not change keeps its IMDS session token (one client
    /// per process), and the file integrity collector is always kept: `[fim]` changes need a
    /// restart (the running monitor is not swapped).
    pub fn reconfigured(&self, old: &Config, new: &Config) -> Self {
        let mut next = self.clone();
        if old.packages != new.packages {
            next.packages = packages::PackagesCollector::new(self.root.clone(), new.packages.clone());
        }
        if old.network != new.network {
            next.network = network::NetworkCollector::new(self.root.clone(), new.network.clone());
        }
        if old.updates != new.updates {
            next.updates = updates::UpdatesCollector::new(self.root.clone(), new.updates.clone());
        }
        if old.access != new.access {
            next.access = access::AccessCollector::new(self.root.clone(), new.access.clone());
        }
        if old.imds != new.imds {
            next.cloud = cloud::CloudCollector::new(&new.imds, self.root.clone(), self.cloud.runtime());
        }
        next
    }
}
