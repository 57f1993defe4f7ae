//! `agentctl`: the local CLI. Talks to the daemon over the control socket with the typed
//! [`crate::control::client::Client`]; `check-config` works without a daemon.

use crate::config::{CheckOutcome, Config, ControlConfig, DEFAULT_CONFIG_PATH};
use crate::control::client::{
    Client, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, SCAN_REQUEST_TIMEOUT,
};
use crate::control::protocol::{ScanRequest, Status};
use crate::exit;
use crate::report::Report;
use crate::scan::Collector;
use clap::{Parser, Subcommand, ValueEnum};
use guestward_core::Finding;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

const EXIT_CODES: &str = "\
Exit codes:
  0  success (check-config: the file is valid)
  1  the check failed (check-config: invalid file; status: the agent is not running or the
     last scan degraded)
  2  usage error, or the agent could not be reached or did not answer in time (--timeout)
A closed standard output (`agentctl report --json | head`) stops the output quietly, exit 0.";

/// Local control of the guestward agent. Start with `agentctl status`.
#[derive(Debug, Parser)]
#[command(name = "agentctl", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// The agent's control socket [default: control.socket_path from the config, else
    /// /run/guestward/agent.sock]
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up waiting for the agent's answer after SECS seconds [default: 30; `scan` and
    /// `ports`, which run a scan (after any scan in progress), 600]. Connecting has its own
    /// 5 s limit.
    #[arg(long, global = true, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: Option<u64>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Is the agent running, when did it last scan, did anything degrade?
    Status,
    /// The latest full report (same shape as `guestward-agent scan --json`).
    Report,
    /// The findings of the latest scan, most severe first.
    Findings,
    /// The software inventory of the latest full report: a summary, the packages section as
    /// JSON (`--json`), or a CycloneDX 1.6 SBOM (`--format cyclonedx`) for grype, trivy or
    /// Dependency-Track.
    Inventory {
        /// Output format.
        #[arg(long, value_enum, default_value_t = InventoryFormat::Human)]
        format: InventoryFormat,
    },
    /// Listening sockets right now (the agent runs a fresh network scan): like `ss -tulpn`, plus
    /// exposure, user and systemd unit. `--json` prints the network section.
    Ports,
    /// Ask the agent to scan now and print the result.
    Scan {
        /// Run only these collectors (comma-separated).
        #[arg(long, value_enum, value_delimiter = ',', value_name = "COLLECTORS")]
        only: Vec<Collector>,
    },
    /// File integrity monitoring: coverage status, or the change and coverage-gap events.
    Fim {
        /// What to show.
        #[command(subcommand)]
        command: FimCtl,
    },
    /// Validate a configuration file (default: /etc/guestward/agent.toml). Needs no daemon.
    CheckConfig {
        /// The file to check.
        path: Option<PathBuf>,
    },
    /// Ask the EC2 Instance Metadata Service about this instance now (needs no daemon). Off EC2
    /// it answers `not_ec2` from local firmware data without sending any request.
    Imds {
        /// Configuration file whose `[imds]` section is used [default: /etc/guestward/agent.toml
        /// if present, else built-in defaults].
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
}

/// `agentctl fim ...`
#[derive(Debug, Subcommand)]
pub enum FimCtl {
    /// Watched trees, baseline size, last scan, degraded coverage (exit 1 when degraded).
    Status,
    /// Baseline progress: entries recorded and bytes hashed while the daemon builds or verifies
    /// its baseline (exit 0 once a baseline is complete, 1 while none is).
    Baseline {
        /// Keep printing progress until the running scan finishes.
        #[arg(long)]
        wait: bool,
    },
    /// Change and coverage-gap events, oldest first.
    Events {
        /// Only events at or after this time (RFC 3339, e.g. 2026-11-29T17:00:00Z).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// At most this many events.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

/// Output formats of `agentctl inventory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InventoryFormat {
    /// A summary per package source (`--json`: the packages section).
    Human,
    /// A CycloneDX 1.6 JSON SBOM.
    Cyclonedx,
}

/// Runs a parsed command line and returns the exit code.
pub fn run(cli: Cli) -> u8 {
    match execute(cli) {
        Ok(code) => code,
        // `agentctl report --json | head`: the reader has what it wanted; as other Unix tools
        // do, stop without a message (exit 0, as ripgrep does).
        Err(e) if exit::is_broken_pipe(&e) => exit::OK,
        Err(e) => {
            eprintln!("agentctl: {e:#}");
            exit::USAGE
        }
    }
}

fn execute(cli: Cli) -> anyhow::Result<u8> {
    if let Command::CheckConfig { path } = &cli.command {
        return check_config(path.clone(), cli.json);
    }
    if let Command::Imds { config } = &cli.command {
        return imds(config.as_deref(), cli.json);
    }
    let socket = match cli.socket.clone() {
        Some(s) => s,
        None => {
            // The daemon's own config says where its socket is; a broken config is not our
            // problem here (check-config reports it), so fall back to the default path.
            Config::load(None)
                .map_or_else(|_| ControlConfig::default().socket_path, |(c, _)| c.control.socket_path)
                .as_path()
                .to_path_buf()
        }
    };
    let request_timeout = match (cli.timeout, &cli.command) {
        (Some(secs), _) => Duration::from_secs(secs),
        (None, Command::Scan { .. } | Command::Ports) => SCAN_REQUEST_TIMEOUT,
        (None, _) => DEFAULT_REQUEST_TIMEOUT,
    };
    let client = Client::new(socket).with_timeouts(DEFAULT_CONNECT_TIMEOUT, request_timeout);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut out = std::io::stdout().lock();
    let code: anyhow::Result<u8> = match cli.command {
        Command::Status => {
            let status: Status = match runtime.block_on(client.get("/v1/status")) {
                Ok(s) => s,
                Err(e @ crate::control::client::ClientError::NotRunning { .. }) => {
                    eprintln!("agentctl: {e}");
                    return Ok(exit::DEGRADED);
                }
                Err(e) => return Err(e.into()),
            };
            if cli.json {
                serde_json::to_writer_pretty(&mut out, &status)?;
                writeln!(out)?;
            } else {
                render_status(&status, &mut out)?;
            }
            let degraded = status.last_scan.as_ref().is_some_and(|s| {
                s.sections.iter().any(|x| {
                    matches!(
                        x.status,
                        guestward_core::SectionStatus::Degraded | guestward_core::SectionStatus::Error
                    )
                })
            });
            Ok(if degraded { exit::DEGRADED } else { exit::OK })
        }
        Command::Report => {
            let report: Report = runtime.block_on(client.get("/v1/report"))?;
            print_report(&report, cli.json, &mut out)?;
            Ok(exit::OK)
        }
        Command::Scan { only } => {
            let report: Report = runtime.block_on(client.post("/v1/scan", &ScanRequest { only }))?;
            print_report(&report, cli.json, &mut out)?;
            Ok(if report.any_degraded() { exit::DEGRADED } else { exit::OK })
        }
        Command::Ports => {
            let request = ScanRequest { only: vec![Collector::Network] };
            let report: Report = runtime.block_on(client.post("/v1/scan", &request))?;
            let Some(section) = report.network else {
                anyhow::bail!("the agent returned no network section");
            };
            if cli.json {
                serde_json::to_writer_pretty(&mut out, &section)?;
                writeln!(out)?;
            } else {
                if let Some(note) = &section.note {
                    writeln!(out, "note: {note}")?;
                }
                for p in &section.problems {
                    writeln!(out, "problem: {p}")?;
                }
                if let Some(data) = &section.data {
                    guestward_network::render_table(data, &mut out)?;
                }
            }
            let degraded = matches!(
                section.status,
                guestward_core::SectionStatus::Degraded | guestward_core::SectionStatus::Error
            );
            Ok(if degraded { exit::DEGRADED } else { exit::OK })
        }
        Command::Inventory { format } => {
            let report: Report = runtime.block_on(client.get("/v1/report"))?;
            match format {
                InventoryFormat::Cyclonedx => {
                    out.write_all(crate::collect::packages::cyclonedx(&report)?.as_bytes())?;
                    writeln!(out)?;
                }
                InventoryFormat::Human if cli.json => {
                    serde_json::to_writer_pretty(&mut out, &report.packages)?;
                    writeln!(out)?;
                }
                InventoryFormat::Human => match report.packages.as_ref().and_then(|s| s.data.as_ref()) {
                    Some(data) => guestward_packages::render_summary(data, &mut out)?,
                    None => writeln!(out, "the latest report has no package inventory")?,
                },
            }
            Ok(exit::OK)
        }
        Command::Findings => {
            let findings: Vec<Finding> = runtime.block_on(client.get("/v1/findings"))?;
            if cli.json {
                serde_json::to_writer_pretty(&mut out, &findings)?;
                writeln!(out)?;
            } else if findings.is_empty() {
                writeln!(out, "no findings")?;
            } else {
                render_findings(&findings, &mut out)?;
            }
            Ok(exit::OK)
        }
        Command::Fim { command: FimCtl::Status } => {
            let status: guestward_fim::FimStatus = runtime.block_on(client.get("/v1/fim/status"))?;
            if cli.json {
                serde_json::to_writer_pretty(&mut out, &status)?;
                writeln!(out)?;
            } else {
                status.render_human(&mut out)?;
            }
            Ok(if status.degraded { exit::DEGRADED } else { exit::OK })
        }
        Command::Fim { command: FimCtl::Baseline { wait } } => {
            let fetch = || -> anyhow::Result<guestward_fim::FimStatus> {
                Ok(runtime.block_on(client.get("/v1/fim/status"))?)
            };
            let mut status = fetch()?;
            // Bounded: a baseline of a large tree on a gentle rate limit can take a while, but
            // not forever; give up waiting (the scan goes on in the daemon) after 24 h.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(24 * 3600);
            while wait && status.scan_progress.is_some() && std::time::Instant::now() < deadline {
                if !cli.json
                    && let Some(p) = &status.scan_progress
                {
                    writeln!(
                        out,
                        "scanning: {}/{} entries, {} MiB hashed, {} s",
                        p.entries_done,
                        p.entries_seen.max(p.baseline_entries),
                        p.bytes_hashed >> 20,
                        p.elapsed_ms / 1000
                    )?;
                    out.flush()?;
                }
                std::thread::sleep(std::time::Duration::from_millis(500));
                status = fetch()?;
            }
            let complete = status.baseline_completed_at.is_some();
            if cli.json {
                let view = serde_json::json!({
                    "complete": complete,
                    "files_in_baseline": status.files_in_baseline,
                    "baseline_completed_at": status.baseline_completed_at,
                    "scan_progress": status.scan_progress,
                });
                serde_json::to_writer_pretty(&mut out, &view)?;
                writeln!(out)?;
            } else if let Some(at) = status.baseline_completed_at {
                writeln!(out, "baseline complete: {} entries, completed {at}", status.files_in_baseline)?;
            } else {
                writeln!(
                    out,
                    "no complete baseline yet ({} entries recorded so far)",
                    status.files_in_baseline
                )?;
            }
            Ok(if complete { exit::OK } else { exit::DEGRADED })
        }
        Command::Fim { command: FimCtl::Events { since, limit } } => {
            let since = match since {
                Some(s) => Some(
                    serde_json::from_value::<guestward_core::Timestamp>(serde_json::Value::String(s.clone()))
                        .map_err(|e| anyhow::anyhow!("--since {s}: not an RFC 3339 time ({e})"))?,
                ),
                None => None,
            };
            let request = crate::control::protocol::FimEventsRequest { since, limit: Some(limit) };
            let events: Vec<guestward_core::Event> =
                runtime.block_on(client.post("/v1/fim/events", &request))?;
            if cli.json {
                serde_json::to_writer_pretty(&mut out, &events)?;
                writeln!(out)?;
            } else if events.is_empty() {
                writeln!(out, "no events")?;
            } else {
                for e in &events {
                    writeln!(out, "{}", guestward_fim::events::render_event_line(e))?;
                }
            }
            Ok(exit::OK)
        }
        Command::CheckConfig { .. } | Command::Imds { .. } => Ok(exit::USAGE),
    };
    let code = code?;
    // A write error (a closed pipe) must surface here, not be lost when stdout is flushed at
    // exit.
    out.flush()?;
    Ok(code)
}

fn print_report(report: &Report, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, report)?;
        writeln!(out)?;
    } else {
        crate::scan::render_human(report, out)?;
    }
    Ok(())
}

/// The findings table. Titles and remediations quote scanned data (paths, package names,
/// process names), so the whole table goes through the terminal-escaping writer.
fn render_findings(findings: &[Finding], out: &mut dyn Write) -> std::io::Result<()> {
    let mut out = guestward_core::text::TerminalSafe::new(out);
    writeln!(out, "{:<9} {:<14} TITLE", "SEVERITY", "ID")?;
    for f in findings {
        writeln!(out, "{:<9} {:<14} {}", f.severity.to_string(), f.id, f.title)?;
        writeln!(out, "{:<24} fix: {}", "", f.remediation)?;
    }
    out.flush()
}

fn render_status(status: &Status, out: &mut dyn Write) -> std::io::Result<()> {
    // The host id and section names can come from scanned files (machine-id, hostname).
    let mut out = guestward_core::text::TerminalSafe::new(out);
    let out = &mut out;
    writeln!(
        out,
        "guestward-agent {} running (pid {}), up {}s",
        status.version, status.pid, status.uptime_secs
    )?;
    writeln!(out, "config      {}", status.config_source)?;
    writeln!(out, "state dir   {}", status.state_dir)?;
    match &status.last_scan {
        Some(scan) => {
            writeln!(
                out,
                "last scan   {} (host id {}), {} findings",
                scan.collected_at,
                scan.host_id.as_deref().unwrap_or("unknown"),
                scan.findings
            )?;
            for s in &scan.sections {
                let problems =
                    if s.problems > 0 { format!(", {} problems", s.problems) } else { String::new() };
                writeln!(out, "  {:<10} {:?}{problems}", s.name, s.status)?;
            }
        }
        None => writeln!(out, "last scan   none yet (the first scan is running)")?,
    }
    if let Some(next) = status.next_scan_at {
        writeln!(out, "next scan   {next} (every {}s)", status.scan_interval_secs)?;
    }
    if let Some(state) = &status.lifecycle_state {
        writeln!(out, "lifecycle   {state} (announced by instance metadata)")?;
    }
    let c = &status.counters;
    writeln!(
        out,
        "counters    scans {} (degraded {}), control requests {}, denied {}, refused {}, events dropped {}",
        c.scan_runs_total,
        c.scan_degraded_runs_total,
        c.control_requests_total,
        c.control_denied_connections_total,
        c.control_refused_connections_total,
        c.events_dropped_total
    )
}

/// The same check as `guestward-agent check-config` (one function, so the two cannot disagree).
fn check_config(path: Option<PathBuf>, json: bool) -> anyhow::Result<u8> {
    let path = path.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    let outcome = CheckOutcome::of(&path);
    outcome.print(json, &mut std::io::stdout().lock(), &mut std::io::stderr().lock())?;
    Ok(outcome.exit_code())
}

/// `agentctl imds`: one live IMDS query with the `[imds]` config. Exit 0 when the section is ok
/// or skipped, 1 when it degraded or failed; a bad config is an error (exit 2).
fn imds(path: Option<&std::path::Path>, json: bool) -> anyhow::Result<u8> {
    let (config, _) = Config::load(path)?;
    let scan = guestward_cloud::scan_blocking(&config.imds, &guestward_core::HostRoot::live());
    let mut out = std::io::stdout().lock();
    if json {
        let value = serde_json::json!({ "cloud": scan.section, "findings": scan.findings });
        serde_json::to_writer_pretty(&mut out, &value)?;
        writeln!(out)?;
    } else {
        if let Some(data) = &scan.section.data {
            guestward_cloud::render_table(data, &mut out)?;
        } else if let Some(note) = &scan.section.note {
            writeln!(out, "Cloud (IMDS): {note}")?;
        }
        for p in &scan.section.problems {
            writeln!(out, "  problem: {p}")?;
        }
        if !scan.findings.is_empty() {
            writeln!(out)?;
            render_findings(&scan.findings, &mut out)?;
        }
    }
    out.flush()?;
    use guestward_core::SectionStatus as S;
    Ok(match scan.section.status {
        S::Ok | S::Skipped => exit::OK,
        S::Degraded | S::Error => exit::DEGRADED,
    })
}
