//! `agentctl`: the local CLI of the guestward agent. It talks to the daemon over the control
//! socket with the typed [`client::Client`] and renders what the daemon answers; it collects
//! nothing itself. One-shot work (`check-config`) is done by `guestward-agent`, which it runs,
//! so the two can never disagree.

pub mod client;

use clap::builder::TypedValueParser;
use clap::{Parser, Subcommand, ValueEnum};
use client::{Client, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, SCAN_REQUEST_TIMEOUT};
use guestward_core::exit;
use guestward_core::{Finding, Timestamp};
use guestward_report::Report;
use guestward_report::protocol::{Collector, ScanRequest, Status, TransportStatus};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the daemon reads its configuration (and so where its socket path is written).
pub const DEFAULT_CONFIG_PATH: &str = "/etc/guestward/agent.toml";
/// The control socket when the configuration does not name one.
pub const DEFAULT_SOCKET_PATH: &str = "/run/guestward/agent.sock";

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
        /// Run only these collectors (comma-separated): host, packages, cloud, network.
        #[arg(long, value_delimiter = ',', value_name = "COLLECTORS", value_parser = collector_parser())]
        only: Vec<Collector>,
    },
    /// The event history, oldest first: file changes, listener and package changes,
    /// lifecycle notices, coverage gaps. Storms appear as one summary per path
    /// (`data.coalesced`: count, first and last time).
    Events {
        /// Only events at or after this time: an RFC 3339 time (2026-11-29T17:00:00Z) or an
        /// age (30s, 15m, 1h, 2d, 1w; combined: 1h30m).
        #[arg(long, value_name = "TIME|AGE", value_parser = guestward_core::parse_time_arg)]
        since: Option<guestward_core::Timestamp>,
        /// Only events of this kind (`fim.change`), or of a family (`network.*`).
        #[arg(long, value_name = "KIND")]
        kind: Option<String>,
        /// At most this many events (the oldest that match; narrow with --since).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        limit: u64,
        /// Only events stored after the event with this id (each event's `id`): resume where
        /// an earlier run stopped.
        #[arg(long, value_name = "ID")]
        after: Option<i64>,
        /// Keep printing new events as they are stored (like `tail -f`; without --since or
        /// --after it starts now); stop with Ctrl-C.
        #[arg(long)]
        follow: bool,
    },
    /// File integrity monitoring: coverage status, or the change and coverage-gap events.
    Fim {
        /// What to show.
        #[command(subcommand)]
        command: FimCtl,
    },
    /// Validate a configuration file (default: /etc/guestward/agent.toml), listing every
    /// error with file:line:column and key. Needs no daemon: runs `guestward-agent
    /// check-config`, the daemon's own validation.
    CheckConfig {
        /// The file to check.
        path: Option<PathBuf>,
    },
    /// Ask the agent to query the EC2 Instance Metadata Service now and show this instance's
    /// identity and metadata-service posture. Off EC2 it answers `not_ec2` from local firmware
    /// data without sending any request. Without a running agent, use
    /// `guestward-agent scan --only cloud`.
    Imds,
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
        /// Only events at or after this time: an RFC 3339 time (2026-11-29T17:00:00Z) or an
        /// age (30s, 15m, 1h, 2d, 1w; combined: 1h30m).
        #[arg(long, value_name = "TIME|AGE", value_parser = guestward_core::parse_time_arg)]
        since: Option<guestward_core::Timestamp>,
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
        Err(e) if e.chain().any(exit::is_broken_pipe) => exit::OK,
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
    let socket = match cli.socket.clone() {
        Some(s) => s,
        None => configured_socket(Path::new(DEFAULT_CONFIG_PATH)),
    };
    let request_timeout = match (cli.timeout, &cli.command) {
        (Some(secs), _) => Duration::from_secs(secs),
        (None, Command::Scan { .. } | Command::Ports | Command::Imds) => SCAN_REQUEST_TIMEOUT,
        (None, _) => DEFAULT_REQUEST_TIMEOUT,
    };
    let client = Client::new(socket).with_timeouts(DEFAULT_CONNECT_TIMEOUT, request_timeout);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut out = std::io::stdout().lock();
    let code: anyhow::Result<u8> = match cli.command {
        Command::Status => {
            let status: Status = match runtime.block_on(client.get("/v1/status")) {
                Ok(s) => s,
                Err(e @ client::ClientError::NotRunning { .. }) => {
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
        Command::Inventory { format: InventoryFormat::Cyclonedx } => {
            // Built by the daemon from its latest report: the CLI links no SBOM builder.
            let bom: serde_json::Value = runtime.block_on(client.get("/v1/sbom"))?;
            serde_json::to_writer_pretty(&mut out, &bom)?;
            writeln!(out)?;
            Ok(exit::OK)
        }
        Command::Inventory { format: InventoryFormat::Human } => {
            let report: Report = runtime.block_on(client.get("/v1/report"))?;
            if cli.json {
                serde_json::to_writer_pretty(&mut out, &report.packages)?;
                writeln!(out)?;
            } else {
                match report.packages.as_ref().and_then(|s| s.data.as_ref()) {
                    Some(data) => guestward_packages::render_summary(data, &mut out)?,
                    None => writeln!(out, "the latest report has no package inventory")?,
                }
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
        Command::Events { since, kind, limit, after, follow } => {
            let since = match since {
                Some(time) => Some(time),
                None if follow && after.is_none() => Some(guestward_core::Timestamp::now()),
                None => None,
            };
            let mut query = guestward_history::Query {
                since,
                kind: kind
                    .as_deref()
                    .map(guestward_history::KindPattern::parse)
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("--kind: {e}"))?,
                after_id: after,
                limit: usize::try_from(limit).unwrap_or(1000),
            };
            // The daemon answers at most MAX_EVENTS_PER_ANSWER events at a time (its memory);
            // larger requests are paged by id.
            let wanted = query.limit;
            let page = wanted.min(guestward_report::protocol::MAX_EVENTS_PER_ANSWER);
            query.limit = page;
            let mut printed = 0usize;
            loop {
                let events: Vec<guestward_history::StoredEvent> =
                    runtime.block_on(client.post("/v1/events", &query))?;
                if let Some(last) = events.last() {
                    query.after_id = Some(last.id);
                }
                for e in &events {
                    if cli.json {
                        // One JSON object per line when following, so a reader can stream it.
                        if follow {
                            serde_json::to_writer(&mut out, e)?;
                        } else {
                            serde_json::to_writer_pretty(&mut out, e)?;
                        }
                        writeln!(out)?;
                    } else {
                        let line = guestward_report::render::event_line(&e.event);
                        writeln!(out, "{:>8} {}", e.id, guestward_core::text::escape_control(&line))?;
                    }
                }
                printed += events.len();
                out.flush()?;
                let short = events.len() < page;
                if !follow {
                    if short || printed >= wanted {
                        break;
                    }
                    query.limit = page.min(wanted - printed);
                    continue;
                }
                if short {
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            if printed == 0 && !cli.json {
                writeln!(out, "no events")?;
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
            let request = guestward_report::protocol::FimEventsRequest { since, limit: Some(limit) };
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
                writeln!(out, "{}", guestward_fim::events::render_events_summary(&events))?;
            }
            Ok(exit::OK)
        }
        Command::Imds => {
            let request = ScanRequest { only: vec![Collector::Cloud] };
            let report: Report = runtime.block_on(client.post("/v1/scan", &request))?;
            let Some(section) = report.cloud else {
                anyhow::bail!("the agent returned no cloud section");
            };
            let findings: Vec<Finding> =
                report.findings.into_iter().filter(|f| f.source == "cloud").collect();
            render_imds(&section, &findings, cli.json, &mut out)
        }
        Command::CheckConfig { .. } => Ok(exit::USAGE),
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
        guestward_report::render::render_human(report, out)?;
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
        "counters    scans {} (degraded {}, failed {}), control requests {}, denied {}, refused {}",
        c.scan_runs_total,
        c.scan_degraded_runs_total,
        c.scan_failures_total,
        c.control_requests_total,
        c.control_denied_connections_total,
        c.control_refused_connections_total,
    )?;
    writeln!(
        out,
        "events      {} stored, {} coalesced in storms, {} dropped, {} store failures (agentctl events)",
        c.events_stored, c.events_coalesced_total, c.events_dropped_total, c.events_store_failures_total
    )?;
    match &status.transport {
        Some(t) => render_transport(t, c.spool_push_failures_total, Timestamp::now(), out),
        None => writeln!(out, "transport   off: reports stay on this host ([transport] enabled = false)"),
    }
}

/// The `transport` block of `agentctl status`: where reports go, whether they get there, what
/// waits in the spool, what the spool had to drop and when the client certificate expires.
/// `now` is a parameter so the ages can be tested.
fn render_transport(
    t: &TransportStatus,
    spool_push_failures: u64,
    now: Timestamp,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let ago = |at: Timestamp| human_duration(now.unix_secs().saturating_sub(at.unix_secs()));
    let state = if t.connected {
        "connected".to_string()
    } else if t.consecutive_failures > 0 {
        format!("NOT CONNECTED ({} failed attempt(s) in a row)", t.consecutive_failures)
    } else {
        "not connected yet".to_string()
    };
    writeln!(out, "transport   {} {state}", t.url)?;
    let last = match t.last_success_at {
        Some(at) => format!("last {at} ({} ago)", ago(at)),
        None => "none yet".to_string(),
    };
    writeln!(
        out,
        "  delivery  {last}; {} report(s) delivered, {} failed request(s) since start",
        t.delivered_reports_total, t.failed_requests_total
    )?;
    if let Some(next) = t.next_attempt_at
        && !t.connected
    {
        writeln!(out, "  retry     {next}")?;
    }
    let s = &t.spool;
    let oldest = match s.oldest_collected_at {
        Some(at) => format!(", oldest {at} ({} old)", ago(at)),
        None => String::new(),
    };
    writeln!(
        out,
        "  spool     {} report(s), {} of {}{oldest}",
        s.reports,
        human_bytes(s.bytes),
        human_bytes(s.max_bytes)
    )?;
    writeln!(
        out,
        "  drops     superseded snapshots {}, events {}, whole reports {}; reports not spooled {}",
        s.superseded_snapshots_dropped_total,
        s.events_dropped_total,
        s.reports_dropped_total,
        spool_push_failures
    )?;
    match &t.certificate {
        Some(cert) => {
            let expiry = match (cert.not_after, cert.days_left) {
                (Some(at), Some(days)) if days < 0 => format!("EXPIRED {at} ({} days ago)", -days),
                (Some(at), Some(days)) if days <= 7 => format!("expires {at} (ONLY {days} days left)"),
                (Some(at), Some(days)) => format!("expires {at} ({days} days left)"),
                (Some(at), None) => format!("expires {at}"),
                (None, _) => "expiry unknown".to_string(),
            };
            writeln!(out, "  cert      CN={} ({}), {expiry}", cert.subject, cert.path)?;
        }
        None => writeln!(out, "  cert      not loaded")?,
    }
    if let Some(e) = &t.last_error {
        writeln!(out, "  error     {e}")?;
    }
    Ok(())
}

/// `90s`, `5m`, `3h 20m`, `2d 4h`: an age at a glance.
fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m", secs / 60),
        3_600..86_400 => format!("{}h {}m", secs / 3_600, secs % 3_600 / 60),
        _ => format!("{}d {}h", secs / 86_400, secs % 86_400 / 3_600),
    }
}

/// Bytes in binary units, one decimal.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// `check-config` is the daemon's own validation, run as `guestward-agent check-config`: the
/// file the daemon would refuse is exactly the file reported here. The agent binary installed
/// beside `agentctl` is used, else the one on `PATH`. Its exit code is passed through.
fn check_config(path: Option<PathBuf>, json: bool) -> anyhow::Result<u8> {
    let path = path.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("guestward-agent")))
        .filter(|p| p.is_file());
    let agent = beside.unwrap_or_else(|| PathBuf::from("guestward-agent"));
    let mut command = std::process::Command::new(&agent);
    command.arg("check-config").arg(&path);
    if json {
        command.arg("--json");
    }
    let status = command.status().map_err(|e| {
        anyhow::anyhow!(
            "cannot run {} to check the configuration ({e}); is guestward-agent installed?",
            agent.display()
        )
    })?;
    Ok(status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(exit::USAGE))
}

/// The socket named by `[control] socket_path` in the daemon's config file, else the default.
/// Only that key is read: a config with errors elsewhere must not stop `agentctl status`,
/// which is how an operator finds out what is wrong (check-config reports the errors).
pub fn configured_socket(config_path: &Path) -> PathBuf {
    #[derive(serde::Deserialize, Default)]
    struct Partial {
        #[serde(default)]
        control: PartialControl,
    }
    #[derive(serde::Deserialize, Default)]
    struct PartialControl {
        socket_path: Option<PathBuf>,
    }
    // Config files are small; anything larger is not the daemon's (it refuses over 1 MiB).
    const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
    let text = guestward_core::open_regular_file(config_path, true).ok().and_then(|f| {
        use std::io::Read;
        let mut text = String::new();
        f.take(MAX_CONFIG_BYTES).read_to_string(&mut text).ok().map(|_| text)
    });
    text.and_then(|t| toml::from_str::<Partial>(&t).ok())
        .and_then(|p| p.control.socket_path)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET_PATH))
}

/// The `--only` parser: the collector names of the wire protocol.
fn collector_parser() -> impl TypedValueParser<Value = Collector> {
    clap::builder::PossibleValuesParser::new(
        Collector::ALL.map(|c| clap::builder::PossibleValue::new(c.name()).help(c.about())),
    )
    .try_map(|name| name.parse::<Collector>())
}

/// `agentctl imds`: the cloud section of a fresh scan by the daemon. Exit 0 when the section is
/// ok or skipped, 1 when it degraded or failed.
fn render_imds(
    section: &guestward_core::Section<guestward_cloud::CloudReport>,
    findings: &[Finding],
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<u8> {
    if json {
        let value = serde_json::json!({ "cloud": section, "findings": findings });
        serde_json::to_writer_pretty(&mut *out, &value)?;
        writeln!(out)?;
    } else {
        {
            let mut safe = guestward_core::text::TerminalSafe::new(&mut *out);
            if let Some(data) = &section.data {
                guestward_cloud::render_table(data, &mut safe)?;
            } else if let Some(note) = &section.note {
                writeln!(safe, "Cloud (IMDS): {note}")?;
            }
            for p in &section.problems {
                writeln!(safe, "  problem: {p}")?;
            }
            safe.flush()?;
        }
        if !findings.is_empty() {
            writeln!(out)?;
            render_findings(findings, out)?;
        }
    }
    use guestward_core::SectionStatus as S;
    Ok(match section.status {
        S::Ok | S::Skipped => exit::OK,
        S::Degraded | S::Error => exit::DEGRADED,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use guestward_report::protocol::{CertificateStatus, SpoolStatus};

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix_secs(secs).unwrap()
    }

    fn rendered(t: &TransportStatus, push_failures: u64, now: Timestamp) -> String {
        let mut out = Vec::new();
        render_transport(t, push_failures, now, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn transport_block_shows_url_state_delivery_age_spool_drops_certificate_and_error() {
        let now = at(1_800_000_000);
        let t = TransportStatus {
            url: "https://collector.internal:8443".into(),
            connected: false,
            last_success_at: Some(at(1_800_000_000 - 300)),
            last_error: Some("connection refused".into()),
            consecutive_failures: 4,
            delivered_reports_total: 12,
            failed_requests_total: 4,
            spool: SpoolStatus {
                reports: 3,
                bytes: 3 * 1024 * 1024 / 2,
                max_bytes: 256 * 1024 * 1024,
                oldest_collected_at: Some(at(1_800_000_000 - 7_260)),
                superseded_snapshots_dropped_total: 2,
                events_dropped_total: 5,
                reports_dropped_total: 1,
            },
            certificate: Some(CertificateStatus {
                path: "/etc/guestward/tls/agent.pem".into(),
                subject: "i-0123456789abcdef0".into(),
                not_after: Some(at(1_800_000_000 + 3 * 86_400)),
                days_left: Some(3),
            }),
            ..TransportStatus::default()
        };
        let out = rendered(&t, 1, now);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "transport   https://collector.internal:8443 NOT CONNECTED (4 failed attempt(s) in a row)"
        );
        assert!(lines[1].contains("(5m ago); 12 report(s) delivered, 4 failed request(s)"), "{out}");
        assert!(
            out.contains("spool     3 report(s), 1.5 MiB of 256.0 MiB, oldest")
                && out.contains("(2h 1m old)"),
            "{out}"
        );
        assert!(
            out.contains("superseded snapshots 2, events 5, whole reports 1; reports not spooled 1"),
            "{out}"
        );
        assert!(out.contains("CN=i-0123456789abcdef0") && out.contains("(ONLY 3 days left)"), "{out}");
        assert!(out.contains("error     connection refused"), "{out}");
    }

    #[test]
    fn transport_block_says_connected_and_flags_an_expired_certificate() {
        let now = at(1_800_000_000);
        let t = TransportStatus {
            url: "https://c:1".into(),
            connected: true,
            certificate: Some(CertificateStatus {
                path: "a.pem".into(),
                subject: "h".into(),
                not_after: Some(at(1_800_000_000 - 2 * 86_400)),
                days_left: Some(-2),
            }),
            ..TransportStatus::default()
        };
        let out = rendered(&t, 0, now);
        assert!(out.starts_with("transport   https://c:1 connected\n"), "{out}");
        assert!(out.contains("last none yet") || out.contains("none yet"), "{out}");
        assert!(out.contains("EXPIRED") && out.contains("(2 days ago)"), "{out}");
        assert!(!out.contains("error "), "{out}");
    }

    #[test]
    fn ages_and_sizes_read_at_a_glance() {
        assert_eq!(
            [
                human_duration(-5),
                human_duration(59),
                human_duration(61),
                human_duration(3_660),
                human_duration(90_000)
            ],
            ["0s", "59s", "1m", "1h 1m", "1d 1h"]
        );
        assert_eq!(
            [human_bytes(512), human_bytes(1536), human_bytes(1 << 30)],
            ["512 B", "1.5 KiB", "1.0 GiB"]
        );
    }
}
