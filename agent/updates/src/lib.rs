//! Patch posture for guestward: what security updates the host is missing and whether it needs
//! a reboot, answered offline from the package managers' own metadata already on the host.
//!
//! - Debian/Ubuntu ([`apt`](crate#modules)): the apt lists (`/var/lib/apt/lists/*_Packages`,
//!   plain, gz, lz4 or xz) with their `InRelease`, against the dpkg database, in dpkg's version
//!   order and apt's default pin priorities.
//! - Amazon Linux / RHEL family: the dnf/yum caches (`repomd.xml` -> `primary`, `updateinfo`)
//!   against the rpm database, in rpm's version order, with advisory ids, severities and CVEs.
//! - Reboot: `/var/run/reboot-required(.pkgs)`, the running kernel against the newest
//!   installed kernel package, and (live system) processes mapping deleted shared libraries.
//!
//! Nothing is downloaded and no package manager is run: the answer is as fresh as the cached
//! metadata, whose age is reported (stale metadata is a finding of its own). Every file is
//! read through [`HostRoot`](guestward_core::HostRoot), so `--root` scans of snapshots work.
//!
//! Reading is the default feature `collect`. Without it the crate is the model
//! ([`UpdatesReport`]...), [`Config`], the findings ([`FINDING_IDS`]) and the renderers.

// Output goes through `guestward_core::stdio`: the print macros panic when a write fails.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]
#![warn(missing_docs)]

#[cfg(feature = "collect")]
mod apt;
mod config;
#[cfg(feature = "collect")]
mod dnf;
mod error;
mod findings;
mod model;
#[cfg(feature = "collect")]
mod primary_db;
#[cfg(feature = "collect")]
mod read;
#[cfg(feature = "collect")]
mod reboot;
mod render;
#[cfg(feature = "collect")]
mod sources;

pub use config::Config;
pub use error::UpdatesError;
pub use findings::{
    FINDING_IDS, REBOOT_REQUIRED, SECURITY_UPDATES_PENDING, STALE_PACKAGE_LISTS, findings, severity_of,
};
pub use model::{
    Advisory, KernelPackage, Manager, PackageUpdates, PendingUpdate, RebootStatus, StaleProcess,
    UpdateSource, UpdatesReport,
};
#[cfg(feature = "collect")]
pub use read::{MAX_ADVISORIES_PER_NAME, MAX_OFFERS_PER_NAME};
#[cfg(feature = "collect")]
pub use reboot::{deleted_libraries, stale_processes};
pub use render::{render_summary, render_table};

#[cfg(feature = "collect")]
use guestward_core::{HostRoot, Section, Timestamp};

#[cfg(feature = "collect")]
/// The daemon's entry point: the `updates` section for `root`, as of `now`.
pub fn collect_at(config: &Config, root: &HostRoot, now: Timestamp) -> Section<UpdatesReport> {
    if !config.enabled {
        return Section::skipped("updates collection is disabled ([updates] enabled = false)");
    }
    let started = std::time::Instant::now();
    let mut problems = Vec::new();
    // The apt lists (tens of MB to decompress) and the rpm side are independent.
    let ((apt, apt_problems), (rpm, rpm_problems)) = std::thread::scope(|s| {
        let rpm = guestward_core::threads::spawn_or_run(s, "gw-updates-rpm", || {
            let mut p = Vec::new();
            (dnf::collect(root, config, now, &mut p), p)
        });
        let mut p = Vec::new();
        let apt = (apt::collect(root, config, now, &mut p), p);
        let rpm = rpm.join().unwrap_or_else(|_| {
            (
                None,
                vec![guestward_core::Problem::new(
                    "internal",
                    "reading the rpm caches crashed; this is a bug, please report it",
                )],
            )
        });
        (apt, rpm)
    });
    problems.extend(apt_problems);
    problems.extend(rpm_problems);
    let mut kernels = Vec::new();
    if let Some(a) = &apt {
        kernels.extend(a.kernels.iter().cloned());
    }
    if let Some(r) = &rpm {
        kernels.extend(r.kernels.iter().cloned());
    }
    let reboot = reboot::check(root, config, &kernels, &mut problems);
    let report = UpdatesReport { apt: apt.map(|a| a.updates), rpm: rpm.map(|r| r.updates), reboot };
    let none = report.apt.is_none() && report.rpm.is_none();
    let section = Section::from_parts(Some(report), problems, started);
    if none {
        section.with_note("no dpkg or rpm database found: no pending updates to compute")
    } else {
        section
    }
}

#[cfg(feature = "collect")]
/// [`collect_at`] now.
pub fn collect(config: &Config, root: &HostRoot) -> Section<UpdatesReport> {
    collect_at(config, root, Timestamp::now())
}
