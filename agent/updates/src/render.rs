//! Human output: the scan summary and the `agentctl updates` table.

use crate::model::{PackageUpdates, UpdatesReport};
use guestward_core::text::{TerminalSafe, counted};
use std::io::Write;

fn age(m: &PackageUpdates) -> String {
    match m.age_secs {
        Some(a) if a >= 2 * 86_400 => format!("{} days old", a / 86_400),
        Some(a) if a >= 3600 => format!("{} hours old", a / 3600),
        Some(a) => format!("{} minutes old", a / 60),
        None => "none cached".to_string(),
    }
}

fn manager_line(m: &PackageUpdates, out: &mut dyn Write) -> std::io::Result<()> {
    let security = m.pending.iter().filter(|p| p.security).count();
    writeln!(
        out,
        "{:<9} {} updates pending ({} security) for {} installed; metadata {}{} ({} indexes)",
        m.manager.to_string(),
        m.pending.len(),
        security,
        m.installed,
        age(m),
        if m.stale { ", STALE" } else { "" },
        m.sources.len()
    )
}

fn reboot_lines(report: &UpdatesReport, out: &mut dyn Write) -> std::io::Result<()> {
    let r = &report.reboot;
    if r.required {
        writeln!(out, "reboot    REQUIRED")?;
    } else {
        writeln!(
            out,
            "reboot    not required{}",
            r.running_kernel.as_ref().map(|k| format!(" (running kernel {k})")).unwrap_or_default()
        )?;
    }
    for reason in &r.reasons {
        writeln!(out, "          {reason}")?;
    }
    if r.processes_denied > 0 {
        writeln!(
            out,
            "          note: the memory maps of {} could not be read, so a deleted library they still map is not seen (permission denied: other users' processes need root; some stay unreadable even to root)",
            counted(r.processes_denied, "process", "processes")
        )?;
    }
    Ok(())
}

/// The `updates` part of the `guestward-agent scan` summary: counts, age, the security
/// updates by name, and the reboot status.
pub fn render_summary(report: &UpdatesReport, out: &mut dyn Write) -> std::io::Result<()> {
    // Names and versions come from files on the host: escaped, never terminal sequences.
    let out = &mut TerminalSafe::new(out);
    for m in report.apt.iter().chain(&report.rpm) {
        manager_line(m, out)?;
        let security: Vec<String> =
            m.pending.iter().filter(|p| p.security).map(|p| format!("{} {}", p.name, p.candidate)).collect();
        const SHOWN: usize = 10;
        if !security.is_empty() {
            let more = security.len().saturating_sub(SHOWN);
            writeln!(
                out,
                "          security: {}{}",
                security.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", "),
                if more > 0 { format!(" and {more} more (agentctl updates)") } else { String::new() }
            )?;
        }
    }
    if report.apt.is_none() && report.rpm.is_none() {
        writeln!(out, "packages  no dpkg or rpm database")?;
    }
    reboot_lines(report, out)
}

/// Every pending update as a table (`agentctl updates`), security updates first.
pub fn render_table(report: &UpdatesReport, out: &mut dyn Write) -> std::io::Result<()> {
    let out = &mut TerminalSafe::new(out);
    let header = ["Package", "Installed", "Candidate", "From", "Security", "Advisories"];
    let mut rows: Vec<[String; 6]> = Vec::new();
    for m in report.apt.iter().chain(&report.rpm) {
        let mut pending: Vec<_> = m.pending.iter().collect();
        pending.sort_by_key(|p| !p.security);
        for p in pending {
            let name = match &p.arch {
                Some(a) => format!("{}:{a}", p.name),
                None => p.name.clone(),
            };
            let security = match (&p.security, &p.severity) {
                (true, Some(s)) => format!("yes ({s})"),
                (true, None) => "yes".into(),
                (false, _) => "-".into(),
            };
            let advisories: Vec<String> = p
                .advisories
                .iter()
                .map(|a| {
                    if a.cves.is_empty() { a.id.clone() } else { format!("{} ({})", a.id, a.cves.join(" ")) }
                })
                .collect();
            rows.push([
                name,
                p.installed.clone(),
                p.candidate.clone(),
                p.from.join(","),
                security,
                if advisories.is_empty() { "-".into() } else { advisories.join(", ") },
            ]);
        }
    }
    if !rows.is_empty() {
        guestward_core::text::write_columns(out, header, &rows)?;
        writeln!(out)?;
    }
    for m in report.apt.iter().chain(&report.rpm) {
        manager_line(m, out)?;
    }
    reboot_lines(report, out)
}
