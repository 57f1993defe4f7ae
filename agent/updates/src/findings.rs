//! Pending security updates, reboot required, stale package lists.

use crate::Config;
use crate::model::{PackageUpdates, UpdatesReport};
use guestward_core::{Finding, Severity};
use serde_json::json;

/// Rule id: security updates are pending.
pub const SECURITY_UPDATES_PENDING: &str = "GW-UPD-001";
/// Rule id: a reboot (or process restarts) is needed to run what is installed.
pub const REBOOT_REQUIRED: &str = "GW-UPD-002";
/// Rule id: the package lists are too old (or absent) to tell what is pending.
pub const STALE_PACKAGE_LISTS: &str = "GW-UPD-003";

/// Every finding id this crate can raise (the finding catalogue checks it is complete).
pub const FINDING_IDS: &[&str] = &[SECURITY_UPDATES_PENDING, REBOOT_REQUIRED, STALE_PACKAGE_LISTS];

/// Packages named in a finding's title.
const NAMED_IN_TITLE: usize = 5;

/// The finding severity of an advisory severity word (`critical`, `important`, `moderate`,
/// `low`); a security update without one is `high`.
pub fn severity_of(advisory: Option<&str>) -> Severity {
    match advisory {
        Some("critical") => Severity::Critical,
        Some("moderate") => Severity::Medium,
        Some("low") => Severity::Low,
        _ => Severity::High,
    }
}

/// The findings of a finished report.
pub fn findings(report: &UpdatesReport, _config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    for m in report.apt.iter().chain(&report.rpm) {
        security_finding(m, &mut out);
        stale_finding(m, &mut out);
    }
    let r = &report.reboot;
    if r.required || !r.stale_processes.is_empty() {
        let kernel_behind = r.running_kernel_package.is_some()
            && r.newest_kernel.as_ref().map(|k| &k.release) != r.running_kernel.as_ref();
        let what = if r.required { "A reboot is required" } else { "Processes need a restart" };
        out.push(Finding {
            id: REBOOT_REQUIRED.to_string(),
            severity: if kernel_behind { Severity::High } else { Severity::Medium },
            title: format!("{what}: {}", r.reasons.join("; ")),
            evidence: json!({
                "reasons": r.reasons,
                "flag_packages": r.flag_packages,
                "running_kernel": r.running_kernel,
                "newest_kernel": r.newest_kernel,
                "stale_processes": r.stale_processes,
                "stale_processes_truncated": r.stale_processes_truncated,
            }),
            remediation: if r.required {
                "Reboot the instance in a maintenance window (or replace it from an updated image), so the installed \
                 kernel and libraries are the ones running."
                    .to_string()
            } else {
                "Restart the named services (`systemctl restart <unit>`), or reboot, so they load the updated libraries."
                    .to_string()
            },
            source: "updates".to_string(),
        });
    }
    out
}

fn security_finding(m: &PackageUpdates, out: &mut Vec<Finding>) {
    let security: Vec<_> = m.pending.iter().filter(|p| p.security).collect();
    if security.is_empty() {
        return;
    }
    let severity =
        security.iter().map(|p| severity_of(p.severity.as_deref())).max().unwrap_or(Severity::High);
    let mut names: Vec<&str> = security.iter().take(NAMED_IN_TITLE).map(|p| p.name.as_str()).collect();
    if security.len() > NAMED_IN_TITLE {
        names.push("...");
    }
    let mut advisories: Vec<&str> =
        security.iter().flat_map(|p| p.advisories.iter().map(|a| a.id.as_str())).collect();
    advisories.sort_unstable();
    advisories.dedup();
    let mut cves: Vec<&str> = security
        .iter()
        .flat_map(|p| p.advisories.iter().flat_map(|a| a.cves.iter().map(String::as_str)))
        .collect();
    cves.sort_unstable();
    cves.dedup();
    let command = match m.manager {
        crate::model::Manager::Apt => "apt-get update && apt-get upgrade",
        crate::model::Manager::Rpm => "dnf upgrade --security (yum update --security on Amazon Linux 2)",
    };
    out.push(Finding {
        id: SECURITY_UPDATES_PENDING.to_string(),
        severity,
        title: format!(
            "{} security update{} pending ({}): {}",
            security.len(),
            if security.len() == 1 { "" } else { "s" },
            m.manager,
            names.join(", ")
        ),
        evidence: json!({
            "manager": m.manager,
            "packages": security.iter().map(|p| json!({
                "name": p.name, "arch": p.arch, "installed": p.installed, "candidate": p.candidate,
                "from": p.from, "severity": p.severity,
                "advisories": p.advisories.iter().map(|a| &a.id).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "advisories": advisories,
            "cves": cves,
            "lists_age_secs": m.age_secs,
        }),
        remediation: format!(
            "Install the security updates ({command}), then reboot if a kernel or core library was updated."
        ),
        source: "updates".to_string(),
    });
}

fn stale_finding(m: &PackageUpdates, out: &mut Vec<Finding>) {
    if !m.stale {
        return;
    }
    let (title, command) = match m.manager {
        crate::model::Manager::Apt => ("apt lists", "apt-get update"),
        crate::model::Manager::Rpm => {
            ("dnf/yum repository metadata", "dnf makecache (yum makecache on Amazon Linux 2)")
        }
    };
    let title = match m.age_secs {
        Some(age) if !m.sources.is_empty() => {
            format!(
                "The {title} are {} days old: pending updates are computed against old metadata",
                age / 86_400
            )
        }
        _ => format!("No {title} are cached: pending updates cannot be computed"),
    };
    out.push(Finding {
        id: STALE_PACKAGE_LISTS.to_string(),
        severity: Severity::Medium,
        title,
        evidence: json!({
            "manager": m.manager,
            "metadata_dirs": m.metadata_dirs,
            "refreshed_at": m.refreshed_at,
            "age_secs": m.age_secs,
            "sources": m.sources.len(),
        }),
        remediation: format!(
            "Refresh the package metadata ({command}) regularly, e.g. with unattended-upgrades, dnf-automatic or a \
             scheduled job, so security updates are seen when they are published."
        ),
        source: "updates".to_string(),
    });
}
