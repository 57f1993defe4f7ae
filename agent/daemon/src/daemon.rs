//! Daemon mode (`guestward-agent run`): scheduled scans, the control socket, systemd readiness,
//! configuration reloads on SIGHUP.
//!
//! Schedule: the first full scan runs at start; each next one `scan_interval_secs` after the
//! previous one ended, spread by ±10 % (uniform) so hosts started together (an Auto Scaling
//! group, a fleet rebooted at once) do not all scan and report at the same moment. A collector
//! whose run failed or degraded is run again on its own after a backoff
//! ([`crate::collect::book`]); when such a retry comes back healthy, a full scan follows at
//! once so the latest report (and the collector) see the recovery.
//!
//! Reload (SIGHUP): the same file is read again and checked exactly as at start
//! ([`Config::load`], then the `run --state-dir` / `--socket` flags on top). An invalid file
//! changes nothing: the old configuration keeps running, every problem is logged (as
//! `check-config` lists them) and `agentctl status` shows the rejected reload. A valid one is
//! put in force at once for `[agent] scan_interval_secs` and `host_id`, `[packages]`,
//! `[network]`, `[imds]` (the lifecycle watcher restarts on it) and `[history]`. Settings
//! bound to what the process set up at start, `[agent] state_dir`, `[control]` (the socket,
//! its group and limits), `[fim]` (the running monitor and its baseline) and `[transport]`
//! (the spool and the TLS client), keep their running values until a restart: the log and
//! `status.reload.needs_restart` name each one that changed.

use crate::collect::Collectors;
use crate::collect::book;
use crate::collect::cloud::ImdsRuntime;
use crate::collect::fim::FimCollector;
use crate::config::{Config, ConfigSource, ControlConfig};
use crate::control::server::{self, AccessPolicy, Shared};
use crate::pipeline::{EventLog, Pipeline};
use crate::transport::Transport;
use anyhow::{Context, bail};
use guestward_core::{AbsolutePath, Timestamp};
use guestward_report::protocol::{Collector, CollectorState};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UnixListener;

/// Settings given on the command line (`run --state-dir`, `run --socket`): they win over the
/// configuration file, at start and at every reload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--state-dir`: replaces `[agent] state_dir`.
    pub state_dir: Option<AbsolutePath>,
    /// `--socket`: replaces `[control] socket_path`.
    pub socket_path: Option<AbsolutePath>,
}

impl Overrides {
    /// Puts the command-line settings into `config`.
    pub fn apply(&self, config: &mut Config) {
        if let Some(dir) = &self.state_dir {
            config.agent.state_dir = dir.clone();
        }
        if let Some(socket) = &self.socket_path {
            config.control.socket_path = socket.clone();
        }
    }
}

/// Runs until SIGTERM or SIGINT. A configuration the daemon cannot fully apply (FIM enabled
/// but unable to start, a state directory it may not use) stops it here, with the reason:
/// it never runs with part of its job silently off.
///
/// `config` already carries `overrides` (the same ones are applied again to every reload).
pub async fn run(config: Config, source: ConfigSource, overrides: Overrides) -> anyhow::Result<()> {
    prepare_state_dir(config.agent.state_dir.as_path())?;
    // Held until the daemon exits: one agent per state directory.
    let _state_lock = lock_state_dir(config.agent.state_dir.as_path())?;
    // Before anything reads the state (history, spool, FIM baseline): state that belongs to
    // another instance (a cloned disk) is discarded here, and its certificate retired.
    // One IMDS client per process: the identity check asks through the one the cloud collector
    // and the lifecycle watcher use afterwards (one session token).
    let imds = guestward_cloud::CloudCollector::new(&config.imds).map(Arc::new).map_err(|e| e.to_string());
    let established = crate::identity::establish_for(&config, imds.as_deref().ok()).await?;
    let limits = server::ServerLimits::from_config(&config.control);
    let socket_path = config.control.socket_path.as_path().to_path_buf();
    let config = Arc::new(config);
    let events = Arc::new(
        EventLog::open(config.agent.state_dir.as_path(), &config.history)
            .context("the event history (events.db in agent.state_dir) cannot be used")?,
    );
    // Before FIM (whose first start builds a baseline): a daemon told to deliver reports
    // (`[transport] enabled = true`) that cannot load its credentials stops here, with the
    // file and what is wrong, rather than spooling reports nobody will receive.
    let transport = Transport::open(&config).context("not starting: reports cannot be sent")?;
    if let Some(event) = established.event {
        // Carried by the next report (the first under the new identity).
        events.append(&[event]);
    }
    let identity =
        Arc::new(crate::identity::IdentityState::new(config.agent.state_dir.as_path(), established.identity));
    if let Some(t) = &transport {
        // Never two instances under one identity: the certificate of the instance this disk
        // was cloned from is never presented again (the shipper holds until it is replaced).
        t.shipper.retire_certificates(identity.retired_certificates());
        // A certificate rotated in place is this identity's from its first use, so that a
        // disk cloned at any moment after knows it for the original's.
        let recorder = Arc::clone(&identity);
        t.shipper.on_certificate_loaded(move |sha256| recorder.observe_certificate(sha256));
    }
    let golden = Arc::new(std::sync::atomic::AtomicBool::new(
        config.fim.enabled && crate::identity::is_golden(config.agent.state_dir.as_path()),
    ));
    // Self-limits (`[limits]`): measured from the start; FIM's scans obey its pace.
    let limiter = Arc::new(crate::selflimit::SelfLimiter::new(&config.limits));
    // Taken before FIM starts: its startup rescan of a small tree can finish before the golden
    // watch below is spawned, and that rescan is the verification the watch waits for.
    let fim_started_at = Timestamp::now();
    let fim = if config.fim.enabled {
        // Security: a daemon that runs with FIM silently off looks, from outside, like one that
        // watches files and sees no change. `[fim] enabled = true` is a promise the agent must
        // keep or refuse loudly: stop here, with the reason, so systemd and the owner see the
        // failure (set `enabled = false` to run without FIM on purpose).
        let monitor = start_fim(&config, &events, limiter.pace(), Arc::clone(&golden)).context(
            "file integrity monitoring could not start ([fim] enabled = true); not starting without it",
        )?;
        FimCollector::Monitor(Arc::new(monitor))
    } else {
        FimCollector::Off("file integrity monitoring is off ([fim] enabled = false)")
    };
    let runtime = ImdsRuntime::Shared(tokio::runtime::Handle::current());
    let cloud =
        crate::collect::cloud::CloudCollector::with_shared(imds, guestward_core::HostRoot::live(), runtime);
    let collectors = Collectors::new(&config, guestward_core::HostRoot::live(), cloud, fim);
    // The daemon applies all of its configuration or none: an unusable IMDS setting stops it
    // here rather than leaving every report with an error section.
    if let Err(e) = collectors.cloud.shared() {
        anyhow::bail!("instance metadata ([imds] or AWS_EC2_METADATA_*): {e}");
    }
    let pipeline = Arc::new(
        Pipeline::new(Arc::clone(&config), collectors, events)
            .with_transport(transport.clone())
            .with_self_limits(Arc::clone(&limiter)),
    );
    let sampler = tokio::spawn(Arc::clone(&limiter).run());

    // Before the socket exists: a client (or a test, or `systemctl stop`) that sees the socket
    // may send SIGTERM at once, and the default action would kill the process uncleanly.
    let stop_signals = stop_signals();
    let (listener, allowed_gid) = bind_control_socket(&config.control)?;
    let access = AccessPolicy { own_uid: nix::unistd::geteuid().as_raw(), allowed_gid };
    let config_path = match &source {
        ConfigSource::File(p) => Some(std::path::absolute(p).unwrap_or_else(|_| p.clone())),
        ConfigSource::Defaults => None,
    };
    let shared = Arc::new(
        Shared::new(Arc::clone(&pipeline), source.to_string(), access)
            .with_config_path(config_path.clone())
            .with_identity(Arc::clone(&identity)),
    );
    let golden_watch = golden
        .load(std::sync::atomic::Ordering::Relaxed)
        .then(|| tokio::spawn(watch_golden(Arc::clone(&pipeline), golden, fim_started_at)));
    // Before readiness: SIGHUP's default action ends the process, so a reload asked for right
    // after start must find the handler in place.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    let scheduler = tokio::spawn(schedule_scans(Arc::clone(&shared)));
    let drainer = tokio::spawn(Arc::clone(&pipeline).drain_events());
    // The shipper sends what the spool holds (reports left by an earlier run included) on its
    // own schedule, and at once when the pipeline rings `wake` after a push.
    let shipper = transport.as_ref().map(|t| tokio::spawn(Arc::clone(&t.shipper).run(Arc::clone(&t.wake))));
    let lifecycle = Arc::new(tokio::sync::Mutex::new(LifecycleWatch::start(&pipeline)));
    let reloader = match hangup {
        Ok(hangup) => {
            let reload = Reload {
                shared: Arc::clone(&shared),
                path: config_path,
                overrides,
                lifecycle: Arc::clone(&lifecycle),
            };
            Some(tokio::spawn(reload.run(hangup)))
        }
        Err(e) => {
            tracing::warn!(error = %e, "SIGHUP cannot be handled: a configuration change needs a restart");
            None
        }
    };
    // Readiness: the socket accepts connections from here on. Outside systemd this is a no-op.
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %source,
        state_dir = %config.agent.state_dir.as_path().display(),
        socket = %socket_path.display(),
        "guestward-agent running"
    );

    let served = server::serve(listener, Arc::clone(&shared), limits, shutdown_signal(stop_signals)).await;
    scheduler.abort();
    drainer.abort();
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    sampler.abort();
    if let Some(watch) = golden_watch {
        watch.abort();
    }
    if let Some(shipper) = shipper {
        // Anything not yet acknowledged stays in the spool for the next start.
        shipper.abort();
    }
    if let Some(watch) = lifecycle.lock().await.take() {
        watch.stop().await;
    }
    if let Some(monitor) = pipeline.collectors().fim.monitor() {
        monitor.request_stop();
    }
    // What the coalescer still holds goes to the history before the process ends.
    let events = Arc::clone(&pipeline.events);
    if let Err(e) = tokio::task::spawn_blocking(move || events.flush()).await {
        tracing::error!(error = %e, "events still held at shutdown could not be stored");
    }
    // What only memory holds (the disk refused it) is written now if the disk takes it, and
    // otherwise said to be lost: a full state disk at shutdown.
    let (events_held, _) = pipeline.events.held_counts();
    if events_held > 0 {
        tracing::error!(
            events = events_held,
            "events the history could not store are lost as the agent stops (the state disk refuses them); the next start rescans the file trees"
        );
    }
    if let Some(transport) = pipeline.transport().map(Arc::clone) {
        match tokio::task::spawn_blocking(move || transport.spool.write_held()).await {
            Ok(0) => {}
            Ok(reports) => tracing::error!(
                reports,
                "reports held in memory are lost as the agent stops (the state disk refuses them)"
            ),
            Err(e) => tracing::error!(error = %e, "reports held in memory could not be written at shutdown"),
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    if let Err(e) = std::fs::remove_file(&socket_path) {
        tracing::warn!(socket = %socket_path.display(), error = %e, "could not remove the control socket");
    }
    served.context("control socket server failed")
}

/// Starts realtime file integrity monitoring. Its first run builds the baseline (progress in
/// `agentctl fim status`); later starts rescan what changed while the agent was stopped.
fn start_fim(
    config: &Config,
    events: &Arc<EventLog>,
    pace: Arc<guestward_fim::Pace>,
    golden: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<guestward_fim::Monitor> {
    // The policy compiled when the config was loaded (and accepted by `check-config`), not a
    // second compilation that could disagree with it.
    let root = guestward_core::HostRoot::live();
    // Changes to package files are attributed to package transactions (or flagged as made
    // outside the package manager): the oracle reads dpkg/rpm through the same root.
    let (oracle, problems) = guestward_pkgfiles::Oracle::load(root.clone());
    for p in problems.iter().take(5) {
        tracing::warn!(problem = %p.message, "package database: part of it could not be read; those files are not attributed");
    }
    let fim = guestward_fim::Fim::from_validated(config.fim.clone(), root, config.agent.state_dir.as_path())
        .with_packages(std::sync::Arc::new(oracle));
    // The log, not the pipeline: see `EventLog` for why the monitor's thread must not own it.
    let events = Arc::clone(events);
    let sink = Box::new(move |event: &guestward_core::Event| {
        // Kept in the history (`agentctl events`) and in fim.db (`agentctl fim events`), and
        // carried by the next full report. Logged as one rate-limited info line per change
        // (see `crate::logs`: a line per change once turned a storm into 62,600 lines).
        crate::logs::fim_event(event);
        let mut event = event.clone();
        if golden.load(std::sync::atomic::Ordering::Relaxed)
            && let Some(data) = event.data.as_object_mut()
        {
            // The baseline came from an image (or a disk cloned from another instance): until
            // the first verification here has finished, differences are the image's drift
            // from its bake, not changes made on this instance. Marked, not hidden.
            data.insert("golden_baseline".to_string(), serde_json::Value::Bool(true));
        }
        events.push(event);
    });
    Ok(guestward_fim::Monitor::start_paced(fim, sink, Some(pace))?)
}

/// Waits for the first verification of a golden FIM baseline on this instance (the startup
/// rescan), then ends the marking of its events and removes the marker: from then on every
/// difference is a change on this instance.
async fn watch_golden(pipeline: Arc<Pipeline>, golden: Arc<std::sync::atomic::AtomicBool>, since: Timestamp) {
    let state_dir = pipeline.config().agent.state_dir.as_path().to_path_buf();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let Some(monitor) = pipeline.collectors().fim.monitor().cloned() else { return };
        let verified = tokio::task::spawn_blocking(move || monitor.status().last_verification)
            .await
            .ok()
            .flatten()
            .filter(|v| {
                v.purpose == guestward_fim::Purpose::Rescan
                    && v.finished >= since
                    && v.outcome != guestward_fim::ScanOutcome::Failed
            });
        if let Some(v) = verified {
            golden.store(false, std::sync::atomic::Ordering::Relaxed);
            if let Err(e) = crate::identity::remove_path(&state_dir.join(crate::identity::GOLDEN_FILE)) {
                tracing::warn!(error = %e, "the golden baseline marker could not be removed");
            }
            tracing::info!(
                changes = v.changes,
                "file integrity: the golden baseline was verified on this instance; its differences \
                 were reported with golden_baseline = true (the image's drift, not changes here)"
            );
            return;
        }
    }
}

/// Polls instance metadata for spot interruptions, scheduled maintenance and rebalance
/// recommendations, with the cloud collector's own IMDS client (one client, one token). A
/// termination notice sets the lifecycle state to `terminating` and triggers an immediate full
/// report, so the last word about this host is out before it disappears. Off EC2 (or with
/// IMDS disabled) nothing runs.
struct LifecycleWatch {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl LifecycleWatch {
    /// Starts the watcher with the pipeline's cloud collector; `None` when there is nothing to
    /// watch.
    fn start(pipeline: &Arc<Pipeline>) -> Option<Self> {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let collector = pipeline.collectors().cloud.shared().ok()?;
        let watcher = collector.lifecycle_watcher(&guestward_core::HostRoot::live())?;
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let pipeline = Arc::clone(pipeline);
        let task = tokio::spawn(async move {
            let poller = tokio::spawn(watcher.run(tx, stop_rx));
            while let Some(event) = rx.recv().await {
                let terminating = event.kind == guestward_cloud::TERMINATING;
                tracing::warn!(kind = %event.kind, data = %event.data, "instance lifecycle event");
                pipeline.events.push(event);
                if terminating && let Err(e) = pipeline.cycle(Collector::all()).await {
                    // Flush: a full report now carries the notice and the final state.
                    tracing::error!(error = %e, "the final report after a termination notice failed");
                }
            }
            let _ = poller.await;
        });
        Some(Self { stop, task })
    }

    /// Stops the watcher (bounded: a poll in flight is not waited for long).
    async fn stop(self) {
        let _ = self.stop.send(true);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), self.task).await.is_err() {
            // Not left running beside its replacement (it holds the pipeline and could still
            // start a termination report).
            abort.abort();
            tracing::debug!("the lifecycle watcher did not stop within 2 s; aborted");
        }
    }
}

/// Runs the scheduled full scans and the collectors' retries until the process stops. See the
/// module documentation for the schedule.
async fn schedule_scans(shared: Arc<Shared>) {
    let pipeline = Arc::clone(&shared.pipeline);
    let interval = || Duration::from_secs(pipeline.config().agent.scan_interval_secs);
    // The first full scan at once; `last_full_end` is when the previous one ended.
    let mut next_full = Instant::now();
    let mut last_full_end: Option<Instant> = None;
    loop {
        if Instant::now() >= next_full {
            // Self-limits: a scheduled scan (not the first) waits while the agent is over its
            // budget (bounded: see `selflimit`); `agentctl scan` does not come through here.
            if last_full_end.is_some()
                && let Some(limiter) = pipeline.self_limits()
            {
                limiter.wait_for_budget(interval()).await;
            }
            full_scan(&pipeline).await;
            if let (Some(identity), Some(t)) = (&shared.identity, pipeline.transport())
                && t.shipper.held().is_none()
            {
                // New certificate files (after a clone, a rotation) belong to this identity.
                identity.observe_certificate(&t.shipper.certificate_sha256());
            }
            let end = Instant::now();
            last_full_end = Some(end);
            next_full = end + book::jittered(interval());
            shared.set_next_scan_at(next_full);
        } else {
            let due = pipeline.book().due(Instant::now());
            if !due.is_empty() {
                retry(&pipeline, due).await;
            }
        }
        let wake = pipeline.book().next_retry().map_or(next_full, |r| r.min(next_full));
        tokio::select! {
            () = tokio::time::sleep_until(wake.into()) => {}
            () = shared.reschedule.notified() => {
                // A reload may have changed the interval: the next scan is due that long after
                // the last one ended (at once when that is past).
                if let Some(end) = last_full_end {
                    next_full = end + book::jittered(interval());
                    shared.set_next_scan_at(next_full);
                }
            }
        }
    }
}

async fn full_scan(pipeline: &Arc<Pipeline>) {
    match pipeline.cycle(Collector::all()).await {
        Ok(report) => tracing::info!(
            degraded = report.any_degraded(),
            findings = report.findings.len(),
            sequence = report.sequence,
            "scan complete"
        ),
        Err(e) => tracing::error!(error = %e, "scheduled scan failed"),
    }
}

/// Runs the collectors in `due` again on their own (a partial cycle: nothing is spooled, the
/// stored inventories do not move). Those that come back healthy are followed by a full scan
/// at once, so the latest report carries their recovery; the full-scan schedule is unchanged.
async fn retry(pipeline: &Arc<Pipeline>, due: std::collections::BTreeSet<Collector>) {
    let names: Vec<&str> = due.iter().map(|c| c.name()).collect();
    tracing::info!(collectors = ?names, "retrying collectors whose last run failed or degraded");
    if let Err(e) = pipeline.cycle(due.clone()).await {
        tracing::error!(error = %e, collectors = ?names, "collector retry failed");
        return;
    }
    let statuses = pipeline.book().statuses(None);
    let mut recovered = Vec::new();
    for s in statuses.iter().filter(|s| due.contains(&s.name)) {
        if matches!(s.state, CollectorState::Ok | CollectorState::Skipped) {
            recovered.push(s.name.name());
        } else {
            tracing::warn!(
                collector = s.name.name(),
                state = s.state.as_str(),
                failures = s.consecutive_failures,
                error = s.last_error.as_deref().unwrap_or(""),
                next_retry_at = ?s.next_run_at.map(|t| t.to_string()),
                "collector still not healthy after a retry"
            );
        }
    }
    if !recovered.is_empty() {
        tracing::info!(collectors = ?recovered, "collectors recovered; running a full scan for a complete report");
        full_scan(pipeline).await;
    }
}

/// What a SIGHUP reloads, and with which command-line settings on top.
struct Reload {
    shared: Arc<Shared>,
    /// The configuration file (absolute); `None`: built-in defaults (the default path is
    /// looked at again, as at start).
    path: Option<PathBuf>,
    overrides: Overrides,
    lifecycle: Arc<tokio::sync::Mutex<Option<LifecycleWatch>>>,
}

impl Reload {
    async fn run(self, mut hangup: tokio::signal::unix::Signal) {
        while hangup.recv().await.is_some() {
            let outcome = self.once().await;
            self.shared.record_reload(outcome);
        }
    }

    /// One reload: `Ok(settings that changed but need a restart)` when applied, else why not.
    async fn once(&self) -> Result<Vec<String>, String> {
        let shown = self.path.as_ref().map_or_else(
            || format!("built-in defaults ({} if present)", crate::config::DEFAULT_CONFIG_PATH),
            |p| p.display().to_string(),
        );
        tracing::info!(config = %shown, "SIGHUP: reloading the configuration");
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || Config::load(path.as_deref()))
            .await
            .map_err(|e| format!("reading the configuration failed: {e}"));
        let mut new = match loaded {
            Ok(Ok((config, _))) => config,
            Ok(Err(e)) => return Err(self.rejected(&shown, &e.to_string())),
            Err(e) => return Err(self.rejected(&shown, &e)),
        };
        self.overrides.apply(&mut new);
        let pipeline = &self.shared.pipeline;
        let old = pipeline.config();
        let needs_restart = restart_only_changes(&old, &new);
        // What cannot change without a restart keeps its running value, so status and every
        // part of the daemon agree on what is in force.
        new.agent.state_dir = old.agent.state_dir.clone();
        new.control = old.control.clone();
        new.fim = old.fim.clone();
        new.transport = old.transport.clone();
        new.limits = old.limits.clone();
        let collectors = pipeline.collectors().reconfigured(&old, &new);
        if old.imds != new.imds
            && let Err(e) = collectors.cloud.shared()
        {
            return Err(
                self.rejected(&shown, &format!("instance metadata ([imds] or AWS_EC2_METADATA_*): {e}"))
            );
        }
        // The last check that can refuse, before the first change to the running daemon.
        if old.agent.log_level != new.agent.log_level {
            // Validated by `Config::load`; `RUST_LOG` in the environment still wins.
            if let Err(e) = guestward_core::logging::apply_config_level(
                new.agent.log_level.as_deref(),
                crate::cli::DAEMON_LOG_LEVEL,
            ) {
                return Err(self.rejected(&shown, &format!("agent.log_level: {e}")));
            }
        }
        if old.history != new.history {
            let events = Arc::clone(&pipeline.events);
            let history = new.history.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || events.reconfigure(&history)).await {
                return Err(self.rejected(&shown, &format!("[history] could not be applied: {e}")));
            }
        }
        let imds_changed = old.imds != new.imds;
        let interval = new.agent.scan_interval_secs;
        pipeline.reconfigure(Arc::new(new), collectors);
        self.shared.reschedule.notify_one();
        if imds_changed {
            let mut watch = self.lifecycle.lock().await;
            if let Some(old) = watch.take() {
                old.stop().await;
            }
            *watch = LifecycleWatch::start(pipeline);
        }
        if !needs_restart.is_empty() {
            tracing::warn!(
                config = %shown,
                settings = %needs_restart.join(", "),
                "configuration reloaded, but these settings changed and take effect only after a \
                 restart (systemctl restart guestward-agent); they keep their running values until then"
            );
        }
        tracing::info!(config = %shown, scan_interval_secs = interval, "configuration reloaded");
        Ok(needs_restart)
    }

    /// Logs a rejected reload (every problem, one line each, as `check-config` prints them)
    /// and returns the text for `status`.
    fn rejected(&self, shown: &str, problems: &str) -> String {
        tracing::error!(
            config = %shown,
            "configuration reload rejected: the previous configuration keeps running; fix the file \
             (guestward-agent check-config) and send SIGHUP again"
        );
        for line in problems.lines() {
            tracing::warn!("{line}");
        }
        problems.to_string()
    }
}

/// The settings that differ between `old` and `new` and only take effect at a restart.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if old.agent.state_dir != new.agent.state_dir {
        out.push("agent.state_dir".to_string());
    }
    let (a, b) = (&old.control, &new.control);
    for (key, changed) in [
        ("control.socket_path", a.socket_path != b.socket_path),
        ("control.socket_group", a.socket_group != b.socket_group),
        ("control.max_connections", a.max_connections != b.max_connections),
        ("control.max_connections_per_user", a.max_connections_per_user != b.max_connections_per_user),
        ("control.request_read_timeout_ms", a.request_read_timeout_ms != b.request_read_timeout_ms),
        ("control.write_timeout_ms", a.write_timeout_ms != b.write_timeout_ms),
    ] {
        if changed {
            out.push(key.to_string());
        }
    }
    if *old.fim != *new.fim {
        out.push("[fim]".to_string());
    }
    if old.transport != new.transport {
        out.push("[transport]".to_string());
    }
    // The self-limiter keeps the budgets it was started with.
    if old.limits != new.limits {
        out.push("[limits]".to_string());
    }
    out
}

/// SIGTERM and SIGINT handlers, installed now (see [`shutdown_signal`]).
fn stop_signals() -> std::io::Result<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)> {
    use tokio::signal::unix::{SignalKind, signal};
    Ok((signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?))
}

/// Resolves on SIGTERM or SIGINT (handlers from [`stop_signals`]).
async fn shutdown_signal(
    signals: std::io::Result<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
) {
    match signals {
        Ok((mut term, mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Without signal handlers we can still be killed; just never shut down gracefully.
            std::future::pending::<()>().await;
        }
    }
    tracing::info!("shutting down");
}

/// Why the state directory cannot be used. Names the key and the path.
#[derive(Debug, thiserror::Error)]
#[error("agent.state_dir = {}: {reason}", path.display())]
pub struct StateDirError {
    /// The configured directory.
    pub path: PathBuf,
    /// What is wrong, and what to do.
    pub reason: String,
}

/// The lock file of the state directory (see [`lock_state_dir`]).
pub const AGENT_LOCK_FILE: &str = "agent.lock";

/// Takes the state directory for this process (the daemon, or `run --once`). Two agents on one
/// state directory (another socket path, another config naming the same directory) once both
/// ran: each change was recorded twice and the collector stored two different reports under
/// each sequence number, both agents draining the same spool.
pub fn lock_state_dir(dir: &Path) -> anyhow::Result<guestward_core::lock::DirLock> {
    guestward_core::lock::DirLock::acquire(dir, AGENT_LOCK_FILE).map_err(|e| match e {
        guestward_core::lock::LockError::Busy { holder, .. } => anyhow::anyhow!(
            "another guestward-agent uses the state directory {} ({holder}): two agents on one \
             state directory would record every change twice and ship two reports under each \
             sequence number; stop that one first, or give this one its own [agent] state_dir",
            dir.display()
        ),
        other => anyhow::anyhow!("the state directory's lock: {other}"),
    })
}

/// Makes sure the state directory exists and is private (0700, owned by the agent's user).
///
/// Security: the directory holds the FIM baseline (which files are watched, their hashes) and
/// the inventories. A missing directory is created 0700. An existing one is never taken over:
/// pointing `state_dir` at `/var/lib` or `/tmp` once chmod'ed the shared directory 0700,
/// breaking the host, and a directory others can write to would let them plant or swap our
/// files. So an existing directory must belong to the agent's user and be writable by nobody
/// else; its mode is tightened only when it is empty (so nothing of anyone else's is in it),
/// and otherwise it is refused with the reason, unchanged.
///
/// Then it keeps the reserve of room for the agent's databases (see
/// [`guestward_core::reserve`]) when there is room for it.
pub fn prepare_state_dir(dir: &Path) -> Result<(), StateDirError> {
    make_private_dir(dir)?;
    keep_reserve(dir);
    Ok(())
}

/// Makes the state directory's reserve again when it is missing (freed on a full disk) and
/// there is room now. A failure is logged: the agent runs without it.
pub fn keep_reserve(dir: &Path) {
    match guestward_core::reserve::ensure(dir) {
        Ok(true) => tracing::debug!(dir = %dir.display(), "reserve of room for the databases made"),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot keep the reserve of room for the databases in the state directory")
        }
    }
}

fn make_private_dir(dir: &Path) -> Result<(), StateDirError> {
    let fail = |reason: String| StateDirError { path: dir.to_path_buf(), reason };
    if let Some(parent) = dir.parent()
        && !parent.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| fail(format!("cannot create {}: {e}", parent.display())))?;
    }
    // Not recursive: only when *this* call creates the directory is it known to be ours.
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return check_private(dir, &fail, true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(fail(format!("cannot create it: {e}"))),
    }
    check_private(dir, &fail, false)
}

/// Checks (and for an empty directory of ours, fixes) the state directory's owner and mode.
fn check_private(
    dir: &Path,
    fail: &dyn Fn(String) -> StateDirError,
    created: bool,
) -> Result<(), StateDirError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir).map_err(|e| fail(e.to_string()))?;
    if !meta.is_dir() {
        return Err(fail("exists and is not a directory".into()));
    }
    let own = nix::unistd::geteuid().as_raw();
    if meta.uid() != own {
        return Err(fail(format!(
            "is owned by uid {}, not by the agent's user (uid {own}); use a directory of the agent's own",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o1022 != 0 {
        return Err(fail(format!(
            "other users can write to it (mode {mode:04o}): a shared directory such as /tmp cannot hold \
             the agent's state; use a dedicated directory (created 0700 when missing)"
        )));
    }
    if mode & 0o077 == 0 {
        return Ok(());
    }
    let empty = std::fs::read_dir(dir).map_err(|e| fail(e.to_string()))?.next().is_none();
    if !created && !empty {
        return Err(fail(format!(
            "other users can read it (mode {mode:04o}) and it is not empty: it may be a shared \
             directory (such as /var/lib), so its mode is left alone; use a dedicated directory \
             (created 0700 when missing), or make this one 0700 yourself"
        )));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| fail(format!("cannot restrict it to 0700: {e}")))
}

/// Binds the control socket: socket 0660 and directory 0750, both given to `socket_group`
/// when it exists, so that the group's members can reach the socket and nobody else can.
/// A stale socket left by a crash is replaced; a live one (another daemon) is an error.
fn bind_control_socket(control: &ControlConfig) -> anyhow::Result<(UnixListener, Option<u32>)> {
    use std::os::unix::fs::MetadataExt;
    let path = control.socket_path.as_path();
    let group = match nix::unistd::Group::from_name(&control.socket_group) {
        Ok(group) => group,
        Err(e) => {
            tracing::warn!(group = %control.socket_group, error = %e, "cannot look up the control socket's group");
            None
        }
    };
    let gid = group.as_ref().map(|g| g.gid.as_raw());
    if let Some(dir) = path.parent() {
        prepare_socket_dir(dir, path, control, gid)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!("another guestward-agent is already listening on {}", path.display());
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))?;
        }
        Ok(_) => bail!("{} exists and is not a socket; refusing to replace it", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("{}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod 0660 {}", path.display()))?;
    // Under the unit (User=guestward, Group=guestward) the socket is born in its group: no
    // chown is made, so the agent needs neither CAP_CHOWN nor chown in its syscall filter
    // (docs/hardening.md). Another `socket_group` needs the agent's user to be a member.
    let born_in_group = |gid: u32| std::fs::symlink_metadata(path).is_ok_and(|m| m.gid() == gid);
    if let Some(gid) = gid
        && !born_in_group(gid)
        && let Err(e) = std::os::unix::fs::lchown(path, None, Some(gid))
    {
        tracing::warn!(group = %control.socket_group, error = %e, "cannot give the control socket to its group");
    }
    Ok((listener, gid))
}

/// The socket's directory: 0750, group `gid` (when the group exists), so that group members
/// can traverse it to the 0660 socket. Connecting needs search permission on the directory:
/// with the directory `root:root 0750` (systemd's `RuntimeDirectory=` creates it so),
/// `socket_group` could never work.
///
/// Security: only a directory dedicated to the socket is changed: one this call creates, or an
/// existing one owned by us that nobody else can write to and that holds nothing but (a stale
/// copy of) the socket. A socket placed directly in a shared directory (`/run/agent.sock`)
/// must not hand `/run` to the group; that directory is left alone, with a warning.
fn prepare_socket_dir(
    dir: &Path,
    socket: &Path,
    control: &ControlConfig,
    gid: Option<u32>,
) -> anyhow::Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let created = if dir.exists() {
        false
    } else {
        if let Some(parent) = dir.parent() {
            // Parents stay traversable (0755): the socket directory itself is the gate.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        match std::fs::DirBuilder::new().mode(0o750).create(dir) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    };
    // Opened without following a symlink; owner and mode are then changed on this descriptor,
    // so a directory swapped after the checks is not the one changed.
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_NOFOLLOW).bits())
        .open(dir)
        .with_context(|| format!("opening the control socket's directory {}", dir.display()))?;
    let meta = handle.metadata().with_context(|| format!("{}", dir.display()))?;
    let own = nix::unistd::geteuid().as_raw();
    let dedicated = created || {
        let foreign = std::fs::read_dir(dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .filter_map(Result::ok)
            .any(|entry| Some(entry.file_name().as_os_str()) != socket.file_name());
        meta.uid() == own && meta.mode() & 0o1022 == 0 && !foreign
    };
    if !dedicated {
        tracing::warn!(
            dir = %dir.display(),
            group = %control.socket_group,
            "the control socket's directory is not dedicated to the agent (it holds other files, or \
             others can write to it), so its owner and mode are left alone and socket_group members \
             may not reach the socket; put control.socket_path in a directory of its own, such as \
             /run/guestward/agent.sock"
        );
        return Ok(());
    }
    if let Some(gid) = gid
        && meta.gid() != gid
        && let Err(e) = std::os::unix::fs::fchown(&handle, None, Some(gid))
    {
        // Not fatal: root and the agent's own user still get in.
        tracing::warn!(dir = %dir.display(), group = %control.socket_group, error = %e,
            "cannot give the control socket's directory to its group; its members cannot reach the socket");
    }
    if meta.mode() & 0o7777 != 0o750 {
        handle
            .set_permissions(std::fs::Permissions::from_mode(0o750))
            .with_context(|| format!("chmod 0750 {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn control_with_group(group: &str) -> ControlConfig {
        ControlConfig { socket_group: group.to_string(), ..ControlConfig::default() }
    }

    /// systemd's `RuntimeDirectory=` creates the socket directory `root:root 0750` before the
    /// agent starts: the agent must still hand it to `socket_group`, or the group cannot work.
    #[test]
    fn existing_empty_socket_dir_like_systemds_is_given_to_the_group() {
        if !nix::unistd::geteuid().is_root() {
            guestward_core::testing::skip_or_fail(
                "existing_empty_socket_dir_like_systemds_is_given_to_the_group",
                "needs root to chown",
            );
            return;
        }
        let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(65534)).unwrap().unwrap();
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("guestward");
        std::fs::DirBuilder::new().mode(0o750).create(&dir).unwrap();
        // A stale socket from a crash is not a foreign file.
        std::fs::write(dir.join("agent.sock"), "").unwrap();
        prepare_socket_dir(&dir, &dir.join("agent.sock"), &control_with_group(&group.name), Some(65534))
            .unwrap();
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!((meta.gid(), meta.mode() & 0o7777), (65534, 0o750));
    }

    /// A socket placed directly in a shared directory must not hand that directory over.
    #[test]
    fn shared_socket_dir_is_left_alone() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("run");
        std::fs::DirBuilder::new().mode(0o755).create(&dir).unwrap();
        std::fs::write(dir.join("someone-elses.pid"), "1").unwrap();
        let before = std::fs::metadata(&dir).unwrap();
        prepare_socket_dir(&dir, &dir.join("agent.sock"), &control_with_group("nogroup"), Some(65534))
            .unwrap();
        let after = std::fs::metadata(&dir).unwrap();
        assert_eq!((after.gid(), after.mode()), (before.gid(), before.mode()));
    }
}
