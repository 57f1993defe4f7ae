//! `ports [--backend auto|netlink|procfs] [--format table|json|count] [--listeners-only]`:
//! one full socket + owner scan of the running system, as `agentctl ports` shows it. Used by
//! `scripts/bench-network.sh` (against `ss -tanp`) and for manual checks.

use guestward_core::HostRoot;
use guestward_network::{BackendChoice, Config, ScanContext, render_table, scan};
use std::io::Write;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::default();
    let mut format = "table".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--backend" => {
                config.backend = match args.next().as_deref() {
                    Some("netlink") => BackendChoice::Netlink,
                    Some("procfs") => BackendChoice::Procfs,
                    _ => BackendChoice::Auto,
                }
            }
            "--format" => format = args.next().unwrap_or_default(),
            "--listeners-only" => config.include_connections = false,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let out = scan(&config, &ScanContext::live(&HostRoot::live()))?;
    let stdout = std::io::stdout();
    let mut lock = std::io::BufWriter::new(stdout.lock());
    match format.as_str() {
        "json" => serde_json::to_writer(&mut lock, &out.report)?,
        "count" => writeln!(
            lock,
            "{} listeners, {} connections, {} with owners",
            out.report.listeners.len(),
            out.report.connections.len(),
            out.report
                .listeners
                .iter()
                .chain(&out.report.connections)
                .filter(|s| !s.owners.is_empty())
                .count()
        )?,
        _ => render_table(&out.report, &mut lock)?,
    }
    for p in &out.problems {
        eprintln!("problem: {p}");
    }
    lock.flush()?;
    Ok(())
}
