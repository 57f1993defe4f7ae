//! Integration tests of guestward-cloud against the IMDS emulator on 127.0.0.1.
//!
//! Nothing here sends a packet to 169.254.169.254: every test either points the client at
//! the emulator (an explicit endpoint) or uses a fixture root whose DMI data says "not EC2".

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod collect;
mod emulator;
mod env;
mod fuzz_corpus;
mod lifecycle;
mod offec2;
mod token;

use guestward_cloud::ImdsConfig;
use guestward_core::HostRoot;
use guestward_imds_emulator::Emulator;

/// A config pointing at the emulator.
pub fn config_for(emu: &Emulator) -> ImdsConfig {
    ImdsConfig { endpoint: Some(emu.url()), ..Default::default() }
}

/// A host root from `files` (host path, content).
pub fn root_with(files: &[(&str, &str)]) -> (tempfile::TempDir, HostRoot) {
    let dir = tempfile::tempdir().unwrap();
    for (p, c) in files {
        let full = dir.path().join(p.trim_start_matches('/'));
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, c).unwrap();
    }
    let root = HostRoot::new(dir.path()).unwrap();
    (dir, root)
}

/// A root that looks like a KVM laptop VM: not EC2.
pub fn not_ec2_root() -> (tempfile::TempDir, HostRoot) {
    root_with(&[
        ("/sys/class/dmi/id/sys_vendor", "QEMU\n"),
        ("/sys/class/dmi/id/product_uuid", "4c4c4544-0042-3510-8052-b4c04f4e3732\n"),
        ("/sys/class/dmi/id/board_asset_tag", "\n"),
    ])
}

/// An environment with no AWS variables.
pub fn no_env(_: &str) -> Option<String> {
    None
}
