//! Cloud identity: the `cloud` section, its `GW-IMDS-*` findings and the EC2 instance id.
//!
//! IMDS describes the machine the agent runs on, so under `--root` the section is skipped and
//! no request is made; off EC2 a local DMI pre-check answers `not_ec2` without any request.

use guestward_core::{HostRoot, Problem, Section};

/// Runs the process's one IMDS collector once, on the caller's runtime (a blocking call: scan
/// threads only).
pub fn collect(
    root: &HostRoot,
    cloud: &guestward_cloud::CloudCollector,
    runtime: &tokio::runtime::Handle,
) -> guestward_cloud::CloudScan {
    cloud.scan_blocking(runtime, root)
}

/// The EC2 instance id written in the firmware (Nitro), without any network request: the host
/// identity when the cloud collector did not run. `None` under `--root`.
pub fn firmware_instance_id(root: &HostRoot) -> Option<String> {
    root.is_live().then(|| guestward_cloud::instance_id_from_firmware(root)).flatten()
}

/// What a crashed cloud collector thread leaves behind.
pub fn crashed() -> guestward_cloud::CloudScan {
    guestward_cloud::CloudScan {
        section: Section::failed(
            Problem::new("internal", "the cloud collector crashed; this is a bug, please report it"),
            std::time::Instant::now(),
        ),
        findings: Vec::new(),
        instance_id: None,
    }
}
