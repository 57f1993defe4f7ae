//! `guestward-agent run --once`: one full report, spooled and delivered, then exit.
//!
//! The daemon's pipeline without the daemon: the same cycle (change tracking, the event
//! history, the report sequence, the spool before anything is marked reported), with FIM read
//! from the stored baseline as `scan` does (no realtime monitor). Then everything the spool
//! holds is delivered, reports left by earlier runs (or a stopped daemon) included, until the
//! collector acknowledged all of them or the deadline passed. What was not delivered stays
//! spooled for the next run: exit 3 says so, with the reason.
//!
//! A run that cannot make its own report (a full disk under the event history, a damaged
//! state file) still delivers what earlier runs spooled, which is also what frees the disk,
//! and then exits 3 naming why this run's report is missing.
//!
//! Refused while a daemon answers on the configured control socket: both would take report
//! sequence numbers and drain the same spool (the daemon ships on its own anyway).

use crate::cli::RunArgs;
use crate::collect::Collectors;
use crate::collect::cloud::ImdsRuntime;
use crate::collect::fim::FimCollector;
use crate::config::{Config, ConfigSource};
use crate::exit;
use crate::pipeline::{Cycle, EventLog, Pipeline, Spooled};
use crate::transport::Transport;
use anyhow::Context;
use guestward_report::protocol::{Collector, SpoolStatus};
use guestward_transport::DeliverySummary;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

/// Runs `run --once` and returns the exit code. Errors are usage/setup errors (exit 2).
pub fn run(config: Config, source: &ConfigSource, args: &RunArgs) -> anyhow::Result<u8> {
    if !config.transport.enabled {
        guestward_core::stdio::error_line(format_args!(
            "guestward-agent: run --once delivers a report to a collector, but `[transport] enabled` is \
             not true in {source}: set `[transport] enabled = true` with url, ca_file, cert_file and \
             key_file (see packaging/agent.toml), or use `guestward-agent scan` to print a report here"
        ));
        return Ok(exit::USAGE);
    }
    let socket = config.control.socket_path.as_path();
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        // A daemon on this configuration already ships every report; a second writer would take
        // the same report sequence numbers and drain the same spool.
        guestward_core::stdio::error_line(format_args!(
            "guestward-agent: a daemon is running on this configuration (its control socket {} \
             answers) and delivers reports itself: `agentctl scan` asks it for a report now, \
             `agentctl status` shows its transport",
            socket.display()
        ));
        return Ok(exit::USAGE);
    }
    crate::daemon::prepare_state_dir(config.agent.state_dir.as_path())?;
    // Held until the delivery is over: a daemon on another socket path, or another `run
    // --once`, on this state directory would take the same sequence numbers and spool.
    let _state_lock = crate::daemon::lock_state_dir(config.agent.state_dir.as_path())?;
    // As the daemon: two workers; the scan runs on blocking threads.
    let runtime = crate::cli::start_runtime(2)?;
    let deadline = Duration::from_secs(args.timeout_secs);
    let outcome = runtime.block_on(once(config, deadline));
    // A collector stuck in a read (a hung mount) must not hold the exit past the deadline.
    runtime.shutdown_timeout(Duration::from_secs(5));
    let outcome = outcome?;
    let mut out = guestward_core::stdio::stdout();
    if args.json {
        guestward_core::json::write_json(
            &mut out,
            &outcome.to_json(),
            guestward_core::json::stdout_wants_pretty(),
        )?;
    } else if outcome.delivered() {
        writeln!(out, "{}", outcome.summary())?;
    } else {
        guestward_core::stdio::error_line(format_args!("guestward-agent: {}", outcome.summary()));
    }
    out.flush()?;
    Ok(if outcome.delivered() {
        exit::OK
    } else if outcome.credentials_refused {
        exit::USAGE
    } else {
        exit::NOT_DELIVERED
    })
}

/// What one `run --once` did.
#[derive(Debug)]
pub struct Outcome {
    /// The collector's URL.
    pub url: String,
    /// The spool's directory.
    pub spool_dir: String,
    /// This run's report and whether it reached the spool, or why there is no report.
    pub cycle: Result<Cycle, String>,
    /// Delivery of what the spool held.
    pub delivery: Result<DeliverySummary, String>,
    /// The collector refused this host's credentials (exit 2: no retry within the run helps).
    pub credentials_refused: bool,
    /// The spool after delivery (`held_in_memory`: reports lost as this run ends).
    pub spool: SpoolStatus,
}

impl Outcome {
    /// Whether this run's report was spooled and the spool was emptied. Reports the collector
    /// refused for good (made as a former host id, or malformed) are set aside in
    /// `spool/rejected/`, counted in the summary and `set_aside`: sending them again could
    /// never succeed, and they must not hold up the reports behind them.
    pub fn delivered(&self) -> bool {
        matches!(&self.cycle, Ok(c) if !matches!(c.spooled, Spooled::Failed(_))) && self.delivery.is_ok()
    }

    /// One line for a person.
    pub fn summary(&self) -> String {
        let cycle = match &self.cycle {
            Ok(cycle) => cycle,
            Err(e) => {
                let delivery = match &self.delivery {
                    Ok(d) => format!(
                        "the {} report(s) spooled by earlier runs were delivered to {} ({} stored, {} already stored)",
                        d.stored + d.duplicates,
                        self.url,
                        d.stored,
                        d.duplicates
                    ),
                    Err(e) => format!(
                        "not delivered to {}: {e}; {} report(s) stay spooled in {}",
                        self.url, self.spool.reports, self.spool_dir
                    ),
                };
                return format!("this run made no report: {e}; {delivery}");
            }
        };
        let report = &cycle.report;
        let this_run = format!(
            "this run's report: sequence {}, {} findings, {} events{}",
            report.sequence.map_or_else(|| "-".to_string(), |s| s.to_string()),
            report.findings.len(),
            report.events.len(),
            if report.any_degraded() { ", some collector degraded (see the report)" } else { "" },
        );
        let spool_failure = match &cycle.spooled {
            Spooled::Failed(e) => {
                format!("this run's report could not be spooled ({e}); its events wait in the history; ")
            }
            Spooled::Held { why, .. } if self.delivery.is_err() => format!(
                "this run's report could not be written to the spool ({why}) and is lost as this run ends; its events wait in the history; "
            ),
            Spooled::Held { why, .. } => {
                format!(
                    "this run's report could not be written to the spool ({why}) and was sent from memory; "
                )
            }
            Spooled::Yes(dropped) if !dropped.is_empty() => {
                format!("the spool was full and dropped data of {} undelivered report(s); ", dropped.len())
            }
            _ => String::new(),
        };
        match &self.delivery {
            Ok(d) if self.delivered() => format!(
                "delivered to {}: {} report(s) stored, {} already stored, {} request(s); {}{spool_failure}{this_run}",
                self.url,
                d.stored,
                d.duplicates,
                d.requests,
                if d.set_aside > 0 {
                    format!(
                        "{} report(s) refused by the collector for good, set aside in {}/rejected/ with its reason; ",
                        d.set_aside, self.spool_dir
                    )
                } else {
                    String::new()
                }
            ),
            Ok(_) => format!("not delivered: {spool_failure}{this_run}"),
            Err(e) => format!(
                "not delivered to {}: {e}; {} report(s) stay spooled in {} for the next run; \
                 {spool_failure}{this_run}",
                self.url,
                self.spool.reports.saturating_sub(self.spool.held_in_memory),
                self.spool_dir
            ),
        }
    }

    /// The outcome for scripts.
    pub fn to_json(&self) -> serde_json::Value {
        let this_run = match &self.cycle {
            Ok(cycle) => {
                let report = &cycle.report;
                let (spooled, spool_error, dropped) = match &cycle.spooled {
                    Spooled::Yes(d) => (true, None, d.len()),
                    // Not on disk: sent from memory, or lost as the run ends.
                    Spooled::Held { why, dropped } => (false, Some(why.clone()), dropped.len()),
                    Spooled::Failed(e) => (false, Some(e.clone()), 0),
                    Spooled::No => (false, None, 0),
                };
                serde_json::json!({
                    "batch_id": report.batch_id,
                    "sequence": report.sequence,
                    "collected_at": report.collected_at,
                    "findings": report.findings.len(),
                    "events": report.events.len(),
                    "degraded": report.any_degraded(),
                    "spooled": spooled,
                    "spool_error": spool_error,
                    "spool_drops": dropped,
                })
            }
            Err(e) => serde_json::json!({ "spooled": false, "error": e }),
        };
        let (summary, error) = match &self.delivery {
            Ok(d) => (d.clone(), None),
            Err(e) => (DeliverySummary::default(), Some(e.clone())),
        };
        serde_json::json!({
            "delivered": self.delivered(),
            "url": self.url,
            "report": this_run,
            "stored": summary.stored,
            "duplicates": summary.duplicates,
            "requests": summary.requests,
            "set_aside": summary.set_aside,
            "credentials_refused": self.credentials_refused,
            "error": error,
            "spool": {
                "dir": self.spool_dir,
                "reports": self.spool.reports,
                "held_in_memory": self.spool.held_in_memory,
                "bytes": self.spool.bytes,
                "max_bytes": self.spool.max_bytes,
                "oldest_collected_at": self.spool.oldest_collected_at,
            },
        })
    }
}

async fn once(config: Config, deadline: Duration) -> anyhow::Result<Outcome> {
    let config = Arc::new(config);
    let state_dir = config.agent.state_dir.as_path().to_path_buf();
    let url = config.transport.url.clone().unwrap_or_default();
    // As the daemon: state of another instance (a cloned disk) is discarded before anything
    // is spooled or sent, and its certificate is never presented.
    let established = crate::identity::establish_for(&config, None).await?;
    let transport = Transport::open(&config)?
        .context("[transport] enabled = true was checked above; the transport must exist")?;
    transport.shipper.retire_certificates(established.identity.retired_certificates.clone());
    let cycle = collect_and_spool(&config, &transport, established.event).await.map_err(|e| format!("{e:#}"));
    if let Err(e) = &cycle {
        tracing::error!(error = %e, "this run made no report; delivering what earlier runs spooled");
    }
    let delivery = transport.deliver_within(deadline).await;
    let credentials_refused = delivery.as_ref().err().is_some_and(|e| e.credentials_refused);
    let delivery = delivery.map_err(|e| e.message);
    let spool_dir = Transport::spool_dir(&state_dir).display().to_string();
    let stats_of = Arc::clone(&transport);
    let spool = tokio::task::spawn_blocking(move || stats_of.spool.stats()).await.unwrap_or_default();
    Ok(Outcome { url, spool_dir, cycle, delivery, credentials_refused, spool })
}

/// This run's cycle: the report, through the history and into the spool.
async fn collect_and_spool(
    config: &Arc<Config>,
    transport: &Arc<Transport>,
    identity_event: Option<guestward_core::Event>,
) -> anyhow::Result<Cycle> {
    let state_dir = config.agent.state_dir.as_path().to_path_buf();
    let events = Arc::new(
        EventLog::open(&state_dir, &config.history)
            .context("the event history (events.db in agent.state_dir) cannot be used")?,
    );
    if let Some(event) = identity_event {
        events.append(&[event]);
    }
    let fim = if config.fim.enabled {
        FimCollector::Stored(state_dir.clone())
    } else {
        FimCollector::Off("file integrity monitoring is off ([fim] enabled = false)")
    };
    let runtime = ImdsRuntime::Shared(tokio::runtime::Handle::current());
    let cloud =
        crate::collect::cloud::CloudCollector::new(&config.imds, guestward_core::HostRoot::live(), runtime);
    let collectors = Collectors::new(config, guestward_core::HostRoot::live(), cloud, fim);
    let pipeline = Arc::new(
        Pipeline::new(Arc::clone(config), collectors, Arc::clone(&events))
            .with_transport(Some(Arc::clone(transport)))
            .ending_after_delivery(),
    );
    let cycle = pipeline.cycle_spooled(Collector::all()).await?;
    // Whatever the coalescer still holds (drop events included) goes to the history now: this
    // process ends after delivery.
    let flushed = Arc::clone(&events);
    if let Err(e) = tokio::task::spawn_blocking(move || flushed.flush()).await {
        tracing::error!(error = %e, "events still held could not be stored");
    }
    Ok(cycle)
}
