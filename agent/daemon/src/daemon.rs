//! Daemon mode (`guestward-agent run`): scheduled scans, the control socket, systemd readiness.

use crate::config::{Config, ConfigSource, ControlConfig};
use crate::control::server::{self, AccessPolicy, Shared};
use crate::scan::Collector;
use anyhow::{Context, bail};
use guestward_core::Timestamp;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;

/// Runs until SIGTERM or SIGINT.
pub async fn run(config: Config, source: ConfigSource) -> anyhow::Result<()> {
    prepare_state_dir(config.agent.state_dir.as_path())?;
    let socket_path = config.control.socket_path.as_path().to_path_buf();
    let (listener, allowed_gid) = bind_control_socket(&config.control)?;
    let access = AccessPolicy { own_uid: nix::unistd::geteuid().as_raw(), allowed_gid };
    let shared = Arc::new(Shared::new(Arc::new(config), source.to_string(), access));
    if shared.config.fim.enabled {
        match start_fim(&shared) {
            Ok(monitor) => {
                let _ = shared.fim.set(monitor);
            }
            // The rest of the agent keeps working; `agentctl fim status` says FIM is not running.
            Err(e) => tracing::error!(error = %e, "file integrity monitoring could not start"),
        }
    }

    let scheduler = tokio::spawn(schedule_scans(Arc::clone(&shared)));
    let (stop_lifecycle, lifecycle) = start_lifecycle_watch(&shared);
    // Readiness: the socket accepts connections from here on. Outside systemd this is a no-op.
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
    tracing::info!(socket = %socket_path.display(), "guestward-agent running");

    let served = server::serve(listener, Arc::clone(&shared), shutdown_signal()).await;
    scheduler.abort();
    let _ = stop_lifecycle.send(true);
    if let Some(task) = lifecycle {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    if let Some(monitor) = shared.fim.get() {
        monitor.request_stop();
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    if let Err(e) = std::fs::remove_file(&socket_path) {
        tracing::warn!(socket = %socket_path.display(), error = %e, "could not remove the control socket");
    }
    served.context("control socket server failed")
}

/// Starts realtime file integrity monitoring. Its first run builds the baseline (progress in
/// `agentctl fim status`); later starts rescan what changed while the agent was stopped.
fn start_fim(shared: &Arc<Shared>) -> anyhow::Result<guestward_fim::Monitor> {
    let config = &shared.config;
    let fim = guestward_fim::Fim::new(
        config.fim.clone(),
        guestward_core::HostRoot::live(),
        config.agent.state_dir.as_path(),
    )?;
    let events = Arc::clone(shared);
    let sink = Box::new(move |event: &guestward_core::Event| {
        // Kept in fim.db (`agentctl fim events`), carried by the next full report, and logged
        // so journald forwards file changes even before a collector exists to ship them.
        tracing::warn!(kind = %event.kind, data = %event.data, "file integrity event");
        events.push_event(event.clone());
    });
    Ok(guestward_fim::Monitor::start(fim, sink)?)
}

/// Polls instance metadata for spot interruptions, scheduled maintenance and rebalance
/// recommendations. A termination notice sets the lifecycle state to `terminating` and triggers
/// an immediate full report, so the last word about this host is out before it disappears.
/// Off EC2 (or with IMDS disabled) nothing runs.
fn start_lifecycle_watch(
    shared: &Arc<Shared>,
) -> (tokio::sync::watch::Sender<bool>, Option<tokio::task::JoinHandle<()>>) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let imds = &shared.config.imds;
    let collector = match guestward_cloud::CloudCollector::new(imds) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "instance metadata lifecycle watch not started");
            return (stop_tx, None);
        }
    };
    if !collector.should_watch(&guestward_core::HostRoot::live()) {
        return (stop_tx, None);
    }
    let Some(client) = collector.client() else { return (stop_tx, None) };
    let watcher = guestward_cloud::LifecycleWatcher::new(
        client,
        Duration::from_secs(imds.spot_poll_interval_secs),
        Duration::from_secs(imds.events_poll_interval_secs),
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let shared = Arc::clone(shared);
    let task = tokio::spawn(async move {
        let poller = tokio::spawn(watcher.run(tx, stop_rx));
        while let Some(event) = rx.recv().await {
            let terminating = event.kind == guestward_cloud::TERMINATING;
            tracing::warn!(kind = %event.kind, data = %event.data, "instance lifecycle event");
            shared.push_event(event);
            if terminating {
                // Flush: a full report now carries the notice and the final state.
                shared.scan(Collector::all()).await;
            }
        }
        let _ = poller.await;
    });
    (stop_tx, Some(task))
}

async fn schedule_scans(shared: Arc<Shared>) {
    let interval = Duration::from_secs(shared.config.agent.scan_interval_secs);
    loop {
        let report = shared.scan(Collector::all()).await;
        tracing::info!(degraded = report.any_degraded(), findings = report.findings.len(), "scan complete");
        let next = Timestamp::now()
            .unix_secs()
            .saturating_add(i64::try_from(interval.as_secs()).unwrap_or(i64::MAX));
        if let Ok(mut n) = shared.next_scan_at.write() {
            *n = Timestamp::from_unix_secs(next);
        }
        tokio::time::sleep(interval).await;
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
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

/// The state directory holds baselines and inventories: readable by the agent only (0700).
fn prepare_state_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating state directory {}", dir.display()))?;
    let meta = std::fs::symlink_metadata(dir).with_context(|| format!("{}", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {} to 0700", dir.display()))?;
    }
    Ok(())
}

/// Binds the control socket: directory 0750, socket 0660, group `socket_group` when it exists.
/// A stale socket left by a crash is replaced; a live one (another daemon) is an error.
fn bind_control_socket(control: &ControlConfig) -> anyhow::Result<(UnixListener, Option<u32>)> {
    let path = control.socket_path.as_path();
    if let Some(parent) = path.parent()
        && !parent.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
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
    let gid = match nix::unistd::Group::from_name(&control.socket_group) {
        Ok(Some(group)) => {
            if let Err(e) = nix::unistd::chown(path, None, Some(group.gid)) {
                tracing::warn!(group = %control.socket_group, error = %e, "cannot give the control socket to its group");
            }
            Some(group.gid.as_raw())
        }
        _ => None,
    };
    Ok((listener, gid))
}
