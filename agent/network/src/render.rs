//! The human table for `agentctl ports` and the scan summary: like `ss -tulpn`, plus exposure,
//! user and systemd unit.

use crate::model::{ExposureScope, NetworkReport, Socket};
use guestward_core::text::escape_control;
use std::io::Write;
use std::net::IpAddr;

/// `addr:port`, with IPv6 in brackets (as `ss` prints it).
pub fn endpoint(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

fn exposure_cell(s: &Socket) -> String {
    let Some(e) = &s.exposure else {
        return "-".into();
    };
    let mut text = match (&e.scope, &e.interface) {
        (ExposureScope::Interface, Some(i)) => format!("interface {i}"),
        (scope, _) => scope.to_string(),
    };
    if !e.public_addresses.is_empty() {
        let list: Vec<String> = e.public_addresses.iter().map(ToString::to_string).collect();
        text.push_str(&format!(" PUBLIC {}", list.join(",")));
    }
    text
}

fn process_cells(report: &NetworkReport, s: &Socket) -> (String, String, String) {
    if s.owners.is_empty() {
        let why = s.owner_unknown.as_ref().map_or("unknown".to_string(), |u| {
            format!(
                "? ({})",
                serde_json::to_value(u.reason)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            )
        });
        return (why, "-".into(), "-".into());
    }
    // Process names, users and unit names are chosen by whoever runs the process: escaped so
    // that they cannot carry terminal control sequences (and widths count what is shown).
    let procs: Vec<String> =
        s.owners.iter().map(|o| format!("{}/{}", escape_control(&o.name), o.pid)).collect();
    let mut users: Vec<String> = Vec::new();
    let mut units: Vec<String> = Vec::new();
    for o in &s.owners {
        if let Some(p) = report.process(o.pid) {
            let user = p.user.clone().or(p.uid.map(|u| u.to_string())).unwrap_or_else(|| "-".into());
            let user = escape_control(&user).into_owned();
            if !users.contains(&user) {
                users.push(user);
            }
            if let Some(u) = &p.systemd_unit {
                let u = escape_control(u).into_owned();
                if !units.contains(&u) {
                    units.push(u);
                }
            }
        }
    }
    let join = |v: Vec<String>| {
        if v.is_empty() { "-".to_string() } else { v.join(",") }
    };
    (procs.join(","), join(users), join(units))
}

/// Writes the listener table (and Unix listeners, when collected) for people.
pub fn render_table(report: &NetworkReport, out: &mut dyn Write) -> std::io::Result<()> {
    let out = &mut guestward_core::text::TerminalSafe::new(out);
    let header = ["Proto", "State", "Local Address:Port", "Exposure", "Process", "User", "Unit"];
    let mut rows: Vec<[String; 7]> = Vec::with_capacity(report.listeners.len());
    for s in &report.listeners {
        let (process, user, unit) = process_cells(report, s);
        rows.push([
            s.protocol.to_string(),
            s.state.ss_name(s.protocol).to_string(),
            endpoint(s.local_address, s.local_port),
            exposure_cell(s),
            process,
            user,
            unit,
        ]);
    }
    guestward_core::text::write_columns(out, header, &rows)?;
    let wide = report
        .listeners
        .iter()
        .filter(|s| s.exposure.as_ref().is_some_and(|e| e.scope == ExposureScope::AllInterfaces))
        .count();
    writeln!(
        out,
        "{} listeners ({} on all interfaces), {} other sockets; source: {}{}",
        report.listeners.len(),
        wide,
        report.connections.len(),
        report.backend,
        if report.truncated { "; TRUNCATED at max_sockets" } else { "" }
    )?;
    if !report.unix_listeners.is_empty() {
        writeln!(out)?;
        writeln!(out, "Unix stream listeners:")?;
        for u in &report.unix_listeners {
            let owners: Vec<String> =
                u.owners.iter().map(|o| format!("{}/{}", escape_control(&o.name), o.pid)).collect();
            let owners = if owners.is_empty() { "?".to_string() } else { owners.join(",") };
            writeln!(out, "  {:<50}  {owners}", escape_control(u.path.as_deref().unwrap_or("(unnamed)")))?;
        }
    }
    // Processes that could not be inspected are the section's problem, printed above the
    // table by every command that shows it: not repeated here.
    Ok(())
}

/// The `network` part of the `guestward-agent scan` summary: the same listener table.
pub fn render_summary(report: &NetworkReport, out: &mut dyn Write) -> std::io::Result<()> {
    render_table(report, out)
}

/// The table as a string.
pub fn table_string(report: &NetworkReport) -> String {
    let mut buf = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = render_table(report, &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}
