//! Cloud identity: the `cloud` section, its `GW-IMDS-*` findings and the EC2 instance id.
//!
//! IMDS describes the machine the agent runs on, so under `--root` the section is skipped and
//! no request is made; off EC2 a local DMI pre-check answers `not_ec2` without any request.

use crate::config::Config;
use guestward_core::{HostRoot, Problem, Section};

/// Runs the IMDS collector once.
pub fn collect(root: &HostRoot, config: &Config) -> guestward_cloud::CloudScan {
    guestward_cloud::scan_blocking(&config.imds, root)
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
