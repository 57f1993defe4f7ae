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
        report.collected_at.human(),
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
    if findings.is_empty() {
        return writeln!(out, "findings: none");
    }
    writeln!(out, "findings: {} ({})", findings.len(), severity_counts(findings.iter().map(|f| f.severity)))?;
    let mut sorted: Vec<&guestward_core::Finding> = findings.iter().collect();
    sorted.sort_by_key(|f| std::cmp::Reverse(f.severity));
    // Columns: severity (`Severity`'s Display ignores width, so it is padded as text), id.
    let id_width = sorted.iter().map(|f| f.id.chars().count()).max().unwrap_or(0);
    for f in sorted {
        writeln!(
            out,
            "  {:<8}  {:<id_width$}  {}",
            f.severity.to_string(),
            f.id,
            guestward_core::text::escape_control(&f.title)
        )?;
        if let Some(at) = finding_location(f) {
            writeln!(
                out,
                "  {:<8}  {:<id_width$}  at {}",
                "",
                "",
                guestward_core::text::escape_control(&at)
            )?;
        }
    }
    Ok(())
}

/// How many of each severity, most severe first, those with none left out:
/// `1 critical, 2 high` (empty for no severities).
pub fn severity_counts(severities: impl IntoIterator<Item = guestward_core::Severity>) -> String {
    let mut counts = [0usize; guestward_core::Severity::ALL.len()];
    for severity in severities {
        if let Some(i) = guestward_core::Severity::ALL.iter().position(|s| *s == severity) {
            counts[i] += 1;
        }
    }
    guestward_core::Severity::ALL
        .iter()
        .zip(counts)
        .rev()
        .filter(|(_, n)| *n > 0)
        .map(|(severity, n)| format!("{n} {severity}"))
        .collect::<Vec<_>>()
        .join(", ")
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
        .or_else(|| {
            // Read as the type it was written from, so the line follows the event's fields.
            (event.kind == guestward_fim::events::KIND_PACKAGE_TRANSACTION)
                .then(|| {
                    serde_json::from_value::<guestward_fim::package::TransactionEvent>(data.clone()).ok()
                })
                .flatten()
                .map(|t| t.subject())
        })
        .or_else(|| text("cause").map(|c| format!("cause {c}")))
        .or_else(|| text("action"))
        .or_else(|| spool_drop_subject(data))
        .or_else(|| text("reason"))
        .unwrap_or_default();
    let change = text("change").map(|c| format!(" ({c})")).unwrap_or_default();
    let storm = data
        .get("coalesced")
        .and_then(|c| c.get("count"))
        .and_then(serde_json::Value::as_u64)
        .map(|n| format!(" [{n} events coalesced]"))
        .unwrap_or_default();
    format!("{} {} {subject}{change}{storm}", event.time.human(), event.kind)
}

/// A `transport.spool_dropped`'s subject: what was dropped from the full spool (the
/// classes of `guestward_transport::spool::DropClass`).
fn spool_drop_subject(data: &serde_json::Value) -> Option<String> {
    let what = data.get("what")?.as_str()?;
    let count = |key: &str| data.get(key).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let events = || guestward_core::text::counted(count("events"), "event", "events");
    let dropped = match what {
        "superseded_snapshot" => "the inventory of a report a newer one supersedes".to_string(),
        "non_fim_events" => format!("{} other than file changes", events()),
        "report" => format!(
            "a whole report ({}, {})",
            events(),
            guestward_core::text::counted(count("findings"), "finding", "findings")
        ),
        other => other.to_string(),
    };
    Some(format!("{dropped} dropped from the full spool"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use guestward_core::{Event, Timestamp};

    fn line(kind: &str, data: serde_json::Value) -> String {
        let time = Timestamp::from_unix_secs(0).unwrap();
        let rendered = event_line(&Event { kind: kind.into(), time, data });
        rendered.split_once(' ').map(|(_, rest)| rest.to_string()).unwrap_or(rendered)
    }

    #[test]
    fn findings_line_up_in_columns_with_their_place_below() {
        let finding = |id: &str, severity, evidence| guestward_core::Finding {
            id: id.into(),
            severity,
            title: format!("title of {id}"),
            evidence,
            remediation: String::new(),
            source: "test".into(),
        };
        let findings = [
            finding("GW-UPD-001", guestward_core::Severity::High, serde_json::json!({})),
            finding(
                "GW-ACCESS-004",
                guestward_core::Severity::Medium,
                serde_json::json!({"path": "/etc/ssh/sshd_config"}),
            ),
        ];
        let mut out = Vec::new();
        render_findings(&findings, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "findings: 2 (1 high, 1 medium)\n\
             \x20 high      GW-UPD-001     title of GW-UPD-001\n\
             \x20 medium    GW-ACCESS-004  title of GW-ACCESS-004\n\
             \x20                          at /etc/ssh/sshd_config\n"
        );
    }

    #[test]
    fn a_package_transaction_names_its_packages_and_verified_changes() {
        let package = |name: &str, old: Option<&str>, new: Option<&str>| serde_json::json!({"manager": "dpkg", "name": name, "old_version": old, "new_version": new, "files": 1});
        let data = serde_json::json!({
            "transaction": {"id": "dpkg-2026-12-06T03:08:11Z", "manager": "dpkg", "started": "2026-12-06T03:08:11Z"},
            "ended": "2026-12-06T03:08:17Z",
            "packages": [
                package("gwqa", Some("1.0"), Some("2.0")),
                package("newpkg", None, Some("3")),
                package("gone", Some("4"), None),
                package("fourth", Some("5"), Some("6")),
            ],
            "verified": 1,
            "outside_package_manager": 0,
            "conffile_edits": 0,
            "unverified": 0,
            "not_package_files": 0,
            "temporaries": 0,
            "sample_paths": [],
        });
        assert_eq!(
            line("fim.package_transaction", data),
            "fim.package_transaction dpkg-2026-12-06T03:08:11Z: gwqa 1.0 -> 2.0, newpkg 3 (installed), \
             gone 4 (removed), and 1 more, 1 file change matching the new packages"
        );
    }

    #[test]
    fn a_spool_drop_and_an_identity_reset_say_what_happened() {
        let drop = serde_json::json!({"what": "report", "events": 12, "findings": 1, "batch_id": "b"});
        assert_eq!(
            line("transport.spool_dropped", drop),
            "transport.spool_dropped a whole report (12 events, 1 finding) dropped from the full spool"
        );
        let drop = serde_json::json!({"what": "superseded_snapshot", "events": 0, "findings": 0});
        assert_eq!(
            line("transport.spool_dropped", drop),
            "transport.spool_dropped the inventory of a report a newer one supersedes dropped from the full spool"
        );
        let reset = serde_json::json!({"reason": "the instance id changed: this disk was cloned"});
        assert_eq!(
            line("identity.reinitialised", reset),
            "identity.reinitialised the instance id changed: this disk was cloned"
        );
    }
}
