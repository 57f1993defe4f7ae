//! Human-readable table of an inventory, for `guestward-agent scan` and `agentctl`.

use crate::RpmInventory;
use std::io::{self, Write};

/// Writes one line per package (`NAME  EPOCH:VERSION-RELEASE  ARCH`), then corrupt headers
/// and problems, so a person sees damage next to the list it affects.
///
/// Names, versions and reasons come from the scanned database: shown with control characters
/// escaped, so a crafted header cannot drive the terminal.
pub fn render_table(report: &RpmInventory, out: &mut dyn Write) -> io::Result<()> {
    use guestward_core::text::escape_control;
    let out = &mut guestward_core::text::TerminalSafe::new(out);
    writeln!(
        out,
        "rpm database {} ({}): {} packages, {} corrupt headers",
        report.db_path,
        report.backend,
        report.packages.len(),
        report.corrupt.len()
    )?;
    let width = report.packages.iter().map(|p| p.name.len()).max().unwrap_or(4).clamp(4, 48);
    for p in &report.packages {
        let epoch = p.epoch.map(|e| format!("{e}:")).unwrap_or_default();
        let evr = format!("{epoch}{}-{}", p.version, p.release);
        writeln!(
            out,
            "  {:<width$}  {:<40}  {}",
            escape_control(&p.name),
            escape_control(&evr),
            escape_control(p.arch.as_deref().unwrap_or("-"))
        )?;
    }
    for c in &report.corrupt {
        writeln!(out, "  CORRUPT record {}: {}", c.record, escape_control(&c.reason))?;
    }
    for pr in &report.problems {
        writeln!(out, "  problem: {pr}")?;
    }
    Ok(())
}
