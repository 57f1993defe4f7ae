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
    if !report.findings.is_empty() {
        writeln!(out, "\nfindings ({}):", report.findings.len())?;
        for f in &report.findings {
            writeln!(
                out,
                "  [{:<8}] {} {}",
                f.severity,
                f.id,
                guestward_core::text::escape_control(&f.title)
            )?;
        }
    }
    Ok(())
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
