//! Cloud identity: the `cloud` section, its `GW-IMDS-*` findings and the EC2 instance id.
//!
//! IMDS describes the machine the agent runs on, so under `--root` the section is skipped and
//! no request is made; off EC2 a local DMI pre-check answers `not_ec2` without any request.
//!
//! One [`guestward_cloud::CloudCollector`] per process: scans and the daemon's lifecycle
//! watcher share its IMDS client, so the process holds one session token per TTL.

use super::Collected;
use guestward_cloud::CloudReport;
use guestward_core::{HostRoot, Problem, Section};
use std::sync::Arc;

/// What drives the IMDS client's requests.
#[derive(Debug, Clone)]
pub enum ImdsRuntime {
    /// A runtime running already (the daemon's, `run --once`'s): the collecting thread blocks
    /// on it. It must be a multi-thread runtime, or one driven by another thread.
    Shared(tokio::runtime::Handle),
    /// A current-thread runtime made for each collection, on the collecting thread itself.
    /// Why: a one-shot `scan` then starts no thread for IMDS at all. Under a process limit
    /// (the unit's `TasksMax`, `ulimit -u`) tokio's multi-thread runtime panics when the kernel
    /// refuses its worker; this cannot, so the scan keeps every section.
    PerCollection,
}

/// The cloud collector: the IMDS client (or why there is none) and the runtime that drives it.
/// A clone shares the IMDS client (and its session token).
#[derive(Debug, Clone)]
pub struct CloudCollector {
    root: HostRoot,
    runtime: ImdsRuntime,
    /// `Err` when the `[imds]` section or an `AWS_EC2_METADATA_*` variable is unusable: every
    /// collection then reports it as an error section.
    inner: Result<Arc<guestward_cloud::CloudCollector>, String>,
}

/// One collection, with the instance id learned (or read from the firmware).
#[derive(Debug, Clone)]
pub struct CloudCollected {
    /// Section, findings, events.
    pub collected: Collected<CloudReport>,
    /// The EC2 instance id, when IMDS or the firmware told it.
    pub instance_id: Option<String>,
}

impl CloudCollector {
    /// Builds the IMDS client once; `runtime` drives its requests.
    pub fn new(config: &guestward_cloud::ImdsConfig, root: HostRoot, runtime: ImdsRuntime) -> Self {
        let inner = guestward_cloud::CloudCollector::new(config).map(Arc::new).map_err(|e| e.to_string());
        Self { root, runtime, inner }
    }

    /// A collector over an IMDS collector built already (or why it could not be), so the
    /// process keeps one IMDS client: the daemon's identity check at start used it first.
    pub fn with_shared(
        inner: Result<Arc<guestward_cloud::CloudCollector>, String>,
        root: HostRoot,
        runtime: ImdsRuntime,
    ) -> Self {
        Self { root, runtime, inner }
    }

    /// The shared collector (for the lifecycle watcher), or why the `[imds]` configuration
    /// (or an `AWS_EC2_METADATA_*` variable) is unusable.
    pub fn shared(&self) -> Result<Arc<guestward_cloud::CloudCollector>, String> {
        self.inner.clone()
    }

    /// What drives the IMDS client.
    pub fn runtime(&self) -> ImdsRuntime {
        self.runtime.clone()
    }

    /// One collection. Called from a blocking thread, never from async code.
    pub fn collect(&self) -> CloudCollected {
        let started = std::time::Instant::now();
        let firmware_id = firmware_instance_id(&self.root);
        let collector = match &self.inner {
            Ok(c) => c,
            Err(e) => {
                return CloudCollected {
                    collected: Collected::section(Section::failed(
                        Problem::new("config", e.clone()),
                        started,
                    )),
                    instance_id: firmware_id,
                };
            }
        };
        let scan = match &self.runtime {
            ImdsRuntime::Shared(handle) => collector.scan_blocking(handle, &self.root),
            // Never inside a runtime: a one-shot scan's collectors run on plain threads.
            ImdsRuntime::PerCollection => {
                match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => {
                        let scan = runtime.block_on(collector.scan(&self.root));
                        // Not waiting for a resolver thread still in a hung lookup: the scan
                        // ended at its deadline.
                        runtime.shutdown_background();
                        scan
                    }
                    Err(e) => {
                        return CloudCollected {
                            collected: Collected::section(Section::failed(
                                Problem::new("io", format!("cannot start the IMDS client's runtime: {e}")),
                                started,
                            )),
                            instance_id: firmware_id,
                        };
                    }
                }
            }
        };
        CloudCollected {
            collected: Collected { section: scan.section, findings: scan.findings, events: Vec::new() },
            instance_id: scan.instance_id.or(firmware_id),
        }
    }
}

/// The EC2 instance id written in the firmware (Nitro), without any network request: the host
/// identity when the cloud collector did not run. `None` under `--root`.
pub fn firmware_instance_id(root: &HostRoot) -> Option<String> {
    root.is_live().then(|| guestward_cloud::instance_id_from_firmware(root)).flatten()
}
