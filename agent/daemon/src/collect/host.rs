use guestward_core::{HostRoot, Section};
use guestward_host::HostFacts;

/// Host facts; never skipped (file facts work under any root).
pub fn collect(root: &HostRoot) -> Section<HostFacts> {
    guestward_host::collect(root)
}
