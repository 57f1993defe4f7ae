use crate::config::Config;
use guestward_core::{HostRoot, Section};
use guestward_packages::PackagesReport;

/// Software inventory from every package database present under the root.
pub fn collect(root: &HostRoot, config: &Config) -> Section<PackagesReport> {
    guestward_packages::collect(root, &config.packages)
}
