//! The human summary of a report, shared by `guestward-agent scan` and `agentctl report`.

use crate::Report;

/// Writes the human summary of a report.
///
/// Everything is written through [`guestward_core::text::TerminalSafe`]: values from scanned
/// files (hostnames, package names, paths in problems) are shown with control characters
/// escaped, never as terminal sequences (issue 9, item 15). JSON output is not filtered.
pub fn render_human(report: &Report, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let out: &mut dyn std::io::Write = &mut guestward_core::text::TerminalSafe::new(out);
    writeln!(
        out,
        "guestward {} scan at {}{}",
        report.agent.version,
        report.collected_at,
        report.scanned_root.as_ref().map(|r| format!(" of {r}")).unwrap_or_default()
    )?;
    writeln!(
        out,
        "host id   {} (from {})",
        report.agent.host_id.as_deref().unwrap_or("unknown"),
        report.agent.host_id_source.as_str()
    )?;
    writeln!(out)?;
    // Findings first: they are what a reader (or a gate: `scan --fail-on`) acts on; the
    // sections below are the evidence.
    render_findings(&report.findings, out)?;
    writeln!(out)?;
    if let Some(section) = &report.host {
        section_header(out, "host", section)?;
        if let Some(facts) = &section.data {
            guestward_host::render_summary(facts, out)?;
        }
    }
    if let Some(section) = &report.packages {
        section_header(out, "packages", section)?;
        if let Some(data) = &section.data {
            guestward_packages::render_summary(data, out)?;
        }
    }
    if let Some(section) = &report.cloud {
        section_header(out, "cloud", section)?;
        if let Some(data) = &section.data {
            guestward_cloud::render_table(data, out)?;
        }
    }
    if let Some(section) = &report.network {
        section_header(out, "network", section)?;
        if let Some(data) = &section.data {
            guestward_network::render_summary(data, out)?;
        }
    }
    if let Some(section) = &report.fim {
        section_header(out, "fim", section)?;
        if let Some(data) = &section.data {
            guestward_fim::render_summary(data, out)?;
        }
    }
    if let Some(section) = &report.updates {
        section_header(out, "updates", section)?;
        if let Some(data) = &section.data {
            guestward_updates::render_summary(data, out)?;
        }
    }
    if let Some(section) = &report.access {
        section_header(out, "access", section)?;
        if let Some(data) = &section.data {
            guestward_access::render_summary(data, out)?;
        }
    }
    if !report.events.is_empty() {
        const SHOWN: usize = 20;
        writeln!(out, "\nevents ({}, newest last):", report.events.len())?;
        let skip = report.events.len().saturating_sub(SHOWN);
        if skip > 0 {
            writeln!(out, "  ... {skip} earlier events (see --json or `agentctl events`)")?;
        }
        for e in report.events.iter().skip(skip) {
            writeln!(out, "  {}", event_line(e))?;
        }
    }
    Ok(())
}

/// The findings block: the count by severity, then each finding, most severe first, with
/// where it is (path, port and process, or package) on the line below its title.
pub fn render_findings(
    findings: &[guestward_core::Finding],
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    use guestward_core::Severity;
    if findings.is_empty() {
        return writeln!(out, "findings: none");
    }
    let counts: Vec<String> =
        [Severity::Critical, Severity::High, Severity::Medium, Severity::Low, Severity::Info]
            .iter()
            .filter_map(|sev| {
                let n = findings.iter().filter(|f| f.severity == *sev).count();
                (n > 0).then(|| format!("{n} {sev}"))
            })
            .collect();
    writeln!(out, "findings: {} ({})", findings.len(), counts.join(", "))?;
    let mut sorted: Vec<&guestward_core::Finding> = findings.iter().collect();
    sorted.sort_by_key(|f| std::cmp::Reverse(f.severity));
    for f in sorted {
        writeln!(out, "  {:<8}  {}  {}", f.severity, f.id, guestward_core::text::escape_control(&f.title))?;
        if let Some(at) = finding_location(f) {
            writeln!(out, "  {:<8}  at {}", "", guestward_core::text::escape_control(&at))?;
        }
    }
    Ok(())
}

/// Where a finding is, from its evidence: a path (inside an archive: the entry too), a port
/// with its processes, or a package; `None` for host-wide findings (instance metadata
/// settings).
pub fn finding_location(finding: &guestward_core::Finding) -> Option<String> {
    let e = &finding.evidence;
    let text = |key: &str| e.get(key).and_then(serde_json::Value::as_str);
    if let Some(path) = text("path") {
        let mut at = path.to_string();
        // A place in a configuration file (sudoers, authorized_keys, sshd_config).
        if let Some(line) = e.get("line").and_then(serde_json::Value::as_u64) {
            at.push_str(&format!(":{line}"));
        }
        if let Some(inner) = text("path_in_archive") {
            at.push_str(&format!(" (inside: {inner})"));
        }
        if let (Some(name), Some(version)) = (text("name"), text("version")) {
            at.push_str(&format!(" (package {name} {version})"));
        }
        return Some(at);
    }
    if let Some(port) = e.get("port").and_then(serde_json::Value::as_u64) {
        let mut at = format!("{} port {port}", text("protocol").unwrap_or("tcp"));
        let addresses: Vec<&str> = e
            .get("addresses")
            .and_then(serde_json::Value::as_array)
            .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
            .unwrap_or_default();
        if !addresses.is_empty() {
            at.push_str(&format!(" on {}", addresses.join(", ")));
        }
        let processes: Vec<String> = e
            .get("processes")
            .and_then(serde_json::Value::as_array)
            .map(|list| {
                list.iter()
                    .map(|p| {
                        let pid = p.get("pid").and_then(serde_json::Value::as_u64).unwrap_or(0);
                        let name = p.get("name").and_then(serde_json::Value::as_str).unwrap_or("?");
                        let unit = p
                            .get("systemd_unit")
                            .and_then(serde_json::Value::as_str)
                            .map(|u| format!(", {u}"))
                            .unwrap_or_default();
                        format!("{name} (pid {pid}{unit})")
                    })
                    .collect()
            })
            .unwrap_or_default();
        at.push_str(&match processes.is_empty() {
            true => ", process unknown".to_string(),
            false => format!(", process {}", processes.join(", ")),
        });
        return Some(at);
    }
    if let (Some(name), Some(version)) = (text("name"), text("version")) {
        return Some(format!("package {name} {version}"));
    }
    let trees: Vec<&str> = ["rescan_only_trees", "trees"]
        .iter()
        .filter_map(|k| e.get(*k).and_then(serde_json::Value::as_array))
        .flat_map(|a| a.iter().filter_map(serde_json::Value::as_str))
        .collect();
    if !trees.is_empty() {
        return Some(format!("trees {}", trees.join(", ")));
    }
    None
}

fn section_header<T>(
    out: &mut dyn std::io::Write,
    name: &str,
    section: &guestward_core::Section<T>,
) -> std::io::Result<()> {
    use guestward_core::SectionStatus as S;
    let status = match section.status {
        S::Ok => "ok",
        S::Degraded => "DEGRADED",
        S::Error => "ERROR",
        S::Skipped => "skipped",
    };
    writeln!(out, "== {name}: {status} ({} ms)", section.duration_ms)?;
    if let Some(note) = &section.note {
        writeln!(out, "   note: {note}")?;
    }
    const SHOWN: usize = 10;
    for p in section.problems.iter().take(SHOWN) {
        writeln!(out, "   problem: {p}")?;
    }
    if section.problems.len() > SHOWN {
        writeln!(out, "   ... and {} more problems (see --json)", section.problems.len() - SHOWN)?;
    }
    Ok(())
}

/// One line for an event: time, kind, and what it is about (the path, listener or package),
/// with the storm summary when events were coalesced. Quotes scanned data: callers write it
/// through [`guestward_core::text::TerminalSafe`] or escape it.
pub fn event_line(event: &guestward_core::Event) -> String {
    let data = &event.data;
    let text = |key: &str| data.get(key).and_then(|v| v.as_str()).map(str::to_string);
    let subject = text("path")
        .or_else(|| {
            let port = data.get("local_port").and_then(serde_json::Value::as_u64)?;
            let addr = text("local_address").unwrap_or_default();
            Some(format!("{} {addr}:{port}", text("protocol").unwrap_or_default()))
        })
        .or_else(|| {
            let name = text("name")?;
            let versions = match (text("old_version"), text("new_version")) {
                (Some(old), Some(new)) => format!(" {old} -> {new}"),
                (None, Some(v)) | (Some(v), None) => format!(" {v}"),
                (None, None) => String::new(),
            };
            Some(format!("{name}{versions}"))
        })
        .or_else(|| text("cause").map(|c| format!("cause {c}")))
        .or_else(|| text("action"))
        .unwrap_or_default();
    let change = text("change").map(|c| format!(" ({c})")).unwrap_or_default();
    let storm = data
        .get("coalesced")
        .and_then(|c| c.get("count"))
        .and_then(serde_json::Value::as_u64)
        .map(|n| format!(" [{n} events coalesced]"))
        .unwrap_or_default();
    format!("{} {} {subject}{change}{storm}", event.time, event.kind)
}
