//! The daemon side of the control socket.
//!
//! Security: the socket is the agent's only local interface and it can trigger scans and read
//! everything the agent knows (open ports with process command lines, file hashes). Access is
//! decided per connection from the kernel's `SO_PEERCRED` credentials, which the peer cannot
//! forge: root, the daemon's own user, or members of the configured group (`guestward`). The
//! socket file is also created 0660 inside a 0750 directory, so the check is defence in depth,
//! not the only barrier.
//!
//! Availability: whoever can connect must not be able to wedge the socket for everyone else
//! (`agentctl status` is how an operator finds out what is wrong). So the accept loop here, not
//! `axum::serve`, bounds every connection: at most `max_connections` are served at once (the
//! rest wait in the kernel's listen queue, costing us no file descriptor), one user other than
//! root and our own user holds at most `max_connections_per_user`, a request must arrive
//! within `request_read_timeout_ms` of the accept, a peer that stops reading its answer is
//! dropped after `write_timeout_ms`, one request per connection (no idle keep-alive), headers
//! and bodies are size-capped.

use crate::config::Config;
use crate::config::ControlConfig;
use crate::pipeline::Pipeline;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use guestward_core::Timestamp;
use guestward_report::Report;
use guestward_report::protocol::Collector;
use guestward_report::protocol::{
    CollectorState, Counters, ErrorBody, FimEventsRequest, FimSummary, FlushOutcome, FlushRequest, Health,
    HealthStatus, IdentityStatus, MAX_EVENTS_PER_ANSWER, MAX_FIM_EVENTS, MAX_REQUEST_BYTES, ReloadStatus,
    ScanRequest, ScanSummary, Status,
};
use std::collections::{BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};

/// Who may use the socket besides root and the daemon's own user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessPolicy {
    /// The daemon's own uid.
    pub own_uid: u32,
    /// Members of this group (primary or supplementary) are allowed.
    pub allowed_gid: Option<u32>,
}

impl AccessPolicy {
    /// Whether a peer with these credentials may talk to the daemon.
    pub fn allows(&self, peer: &PeerCred) -> bool {
        if peer.uid == 0 || peer.uid == self.own_uid {
            return true;
        }
        let Some(gid) = self.allowed_gid else { return false };
        peer.gid == gid || peer.pid.is_some_and(|pid| supplementary_groups(pid).contains(&gid))
    }
}

/// Supplementary groups of a process, from `/proc/<pid>/status`. Empty when unreadable: the
/// peer may have exited, and then it is denied, which is the safe side.
fn supplementary_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Groups:"))
                .map(|rest| rest.split_whitespace().filter_map(|g| g.parse().ok()).collect())
        })
        .unwrap_or_default()
}

/// The kernel's view of the connecting process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Effective uid.
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
    /// Process id, when the kernel reports it.
    pub pid: Option<i32>,
}

/// Connection info captured when a connection is accepted.
#[derive(Debug, Clone, Copy)]
pub struct PeerInfo(pub Option<PeerCred>);

impl PeerInfo {
    fn of(stream: &UnixStream) -> Self {
        Self(stream.peer_cred().ok().map(|c| PeerCred { uid: c.uid(), gid: c.gid(), pid: c.pid() }))
    }
}

/// State shared by the request handlers: the pipeline (whose products the handlers serve) and
/// the control socket's own counters.
#[derive(Debug)]
pub struct Shared {
    /// The cycle's owner: collectors, events, the latest report.
    pub pipeline: Arc<Pipeline>,
    /// Where the configuration came from, for `status`.
    pub config_source: String,
    /// Wall-clock start.
    pub started_at: Timestamp,
    /// Monotonic start.
    pub started: Instant,
    /// When the scheduler will scan next.
    pub next_scan_at: RwLock<Option<Timestamp>>,
    /// Who may connect.
    pub access: AccessPolicy,
    /// The configuration file as an absolute path (`None`: built-in defaults).
    pub config_path: Option<std::path::PathBuf>,
    /// The agent's identity (`identity.json`), for `status`.
    pub identity: Option<Arc<crate::identity::IdentityState>>,
    /// The last configuration reload (SIGHUP).
    reload: RwLock<Option<ReloadStatus>>,
    /// Rung after a reload, so the scheduler picks up a changed scan interval.
    pub reschedule: tokio::sync::Notify,
    /// The spool's drop counters when the daemon started: they are kept on disk across
    /// restarts, and health counts only the drops of this run.
    spool_drops_at_start: SpoolDrops,
    control_requests: AtomicU64,
    control_denied: AtomicU64,
    control_refused: AtomicU64,
}

impl Shared {
    /// New state before the first scan.
    pub fn new(pipeline: Arc<Pipeline>, config_source: String, access: AccessPolicy) -> Self {
        let spool_drops_at_start =
            pipeline.transport().map(|t| SpoolDrops::of(&t.shipper.status().spool)).unwrap_or_default();
        Self {
            spool_drops_at_start,
            pipeline,
            config_source,
            started_at: Timestamp::now(),
            started: Instant::now(),
            next_scan_at: RwLock::new(None),
            access,
            config_path: None,
            identity: None,
            reload: RwLock::new(None),
            reschedule: tokio::sync::Notify::new(),
            control_requests: AtomicU64::new(0),
            control_denied: AtomicU64::new(0),
            control_refused: AtomicU64::new(0),
        }
    }

    /// The same state, naming the configuration file (absolute) in `status`.
    pub fn with_config_path(mut self, path: Option<std::path::PathBuf>) -> Self {
        self.config_path = path;
        self
    }

    /// The same state, `status` showing the agent's identity.
    pub fn with_identity(mut self, identity: Arc<crate::identity::IdentityState>) -> Self {
        self.identity = Some(identity);
        self
    }

    /// The configuration the daemon runs with (a reload may replace it).
    pub fn config(&self) -> Arc<Config> {
        self.pipeline.config()
    }

    /// Sets when the next full scan starts, from the scheduler's monotonic deadline.
    pub fn set_next_scan_at(&self, at: Instant) {
        let wait = at.saturating_duration_since(Instant::now());
        let next = crate::collect::book::add(Timestamp::now(), wait);
        *self.next_scan_at.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(next);
    }

    /// Records a reload: `Ok(settings that need a restart)` when applied, `Err(every problem)`
    /// when refused (the old configuration keeps running).
    pub fn record_reload(&self, outcome: Result<Vec<String>, String>) {
        let mut reload = self.reload.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (applied_total, rejected_total) =
            reload.as_ref().map_or((0, 0), |r| (r.applied_total, r.rejected_total));
        *reload = Some(match outcome {
            Ok(needs_restart) => ReloadStatus {
                at: Timestamp::now(),
                applied: true,
                error: None,
                applied_total: applied_total + 1,
                rejected_total,
                needs_restart,
            },
            Err(error) => ReloadStatus {
                at: Timestamp::now(),
                applied: false,
                error: Some(error),
                applied_total,
                rejected_total: rejected_total + 1,
                needs_restart: Vec::new(),
            },
        });
    }

    /// The last reload, if any.
    pub fn reload(&self) -> Option<ReloadStatus> {
        self.reload.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The latest full report.
    pub fn latest(&self) -> Option<Arc<Report>> {
        self.pipeline.latest()
    }

    /// The running file integrity monitor, if any.
    fn fim(&self) -> Option<Arc<guestward_fim::Monitor>> {
        self.pipeline.collectors().fim.monitor().cloned()
    }

    /// `GET /v1/status`. Cheap: counters, copies of small state, and the history's counters
    /// (one indexed query); nothing here scans the host or reads the history's events.
    pub fn status(&self) -> Status {
        let config = self.config();
        let pipeline = self.pipeline.counters();
        let history = self.pipeline.events.stats().ok();
        let latest = self.latest();
        let next_scan_at = self.next_scan_at.read().ok().and_then(|n| *n);
        let fim = self.fim().map(|m| m.status());
        let mut status = Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            started_at: self.started_at,
            uptime_secs: self.started.elapsed().as_secs(),
            config_source: self.config_source.clone(),
            state_dir: config.agent.state_dir.as_path().display().to_string(),
            scan_interval_secs: config.agent.scan_interval_secs,
            last_scan: latest.as_deref().map(ScanSummary::of),
            next_scan_at,
            lifecycle_state: self.pipeline.events.lifecycle_state(),
            counters: Counters {
                scan_runs_total: pipeline.scan_runs_total,
                scan_degraded_runs_total: pipeline.scan_degraded_runs_total,
                scan_failures_total: pipeline.scan_failures_total,
                events_stored: history.as_ref().map_or(0, |h| h.stored),
                events_coalesced_total: history.as_ref().map_or(0, |h| h.coalesced_total),
                events_store_failures_total: pipeline.events_store_failures_total,
                events_held_in_memory: pipeline.events_held_in_memory,
                events_held_dropped_total: pipeline.events_held_dropped_total,
                spool_push_failures_total: pipeline.spool_push_failures_total,
                control_requests_total: self.control_requests.load(Ordering::Relaxed),
                control_denied_connections_total: self.control_denied.load(Ordering::Relaxed),
                control_refused_connections_total: self.control_refused.load(Ordering::Relaxed),
                events_dropped_total: history
                    .as_ref()
                    .map_or(0, |h| h.dropped_total + h.overflow_dropped_total),
            },
            // Delivery to the collector (`[transport]`): the shipper's own view, with the
            // spool's depth and the client certificate's expiry.
            transport: self.pipeline.transport().map(|t| t.shipper.status()),
            // Issue 12: each line below is filled by the part of the daemon that knows it.
            health: HealthStatus::default(),
            config_path: self.config_path.as_ref().map(|p| p.display().to_string()),
            identity: identity(latest.as_deref()),
            collectors: self.pipeline.book().statuses(next_scan_at),
            fim: fim.as_ref().map(fim_summary),
            self_limits: self.pipeline.self_limits().map(|l| l.status()).unwrap_or_default(),
            reload: self.reload(),
        };
        if let Some(id) = &self.identity {
            let shipper = self.pipeline.transport().map(|t| &t.shipper);
            let held = status.transport.as_ref().and_then(|t| t.held.clone());
            let certificate = shipper.map(|s| s.certificate_sha256());
            id.fill(&mut status.identity, held.as_deref(), certificate.as_deref());
        }
        // Last: the verdict reads every part above (the self-limits included).
        status.health = health(&status, fim.as_ref(), self.spool_drops_at_start);
        status
    }
}

/// Who this host is, from the latest full report: the host id and where it came from, and the
/// cloud section's instance id, or why this is not treated as an EC2 instance.
fn identity(latest: Option<&Report>) -> IdentityStatus {
    let Some(report) = latest else { return IdentityStatus::default() };
    let cloud = report.cloud.as_ref().and_then(|s| s.data.as_ref());
    let instance_id = cloud.and_then(|c| c.instance_id()).map(str::to_string);
    let not_ec2_reason = cloud
        .filter(|c| c.state != guestward_cloud::CloudState::Ec2)
        .map(|c| c.reason.clone().unwrap_or_else(|| c.state.as_str().to_string()));
    IdentityStatus {
        host_id: report.agent.host_id.clone(),
        host_id_source: Some(report.agent.host_id_source),
        instance_id,
        not_ec2_reason,
        ..IdentityStatus::default()
    }
}

/// File integrity at a glance, from the monitor's status.
fn fim_summary(s: &guestward_fim::FimStatus) -> FimSummary {
    use guestward_fim::MonitorState;
    let state = match s.state {
        MonitorState::Starting => "starting",
        MonitorState::Baselining => "baselining",
        MonitorState::Verifying => "verifying",
        MonitorState::Watching => "watching",
        MonitorState::Stopped => "stopped",
    };
    FimSummary {
        state: state.to_string(),
        baseline_complete: s.baseline_completed_at.is_some(),
        entries: s.files_in_baseline,
        watches_granted: s.watches_used,
        // What realtime coverage of every configured tree needs: the watches placed and those
        // the rescan-only trees would need.
        watches_wanted: s.watches_wanted(),
        last_verification_at: s
            .last_verification
            .as_ref()
            .filter(|v| v.outcome == guestward_fim::ScanOutcome::Completed)
            .map(|v| v.finished),
        open_gaps: u64::try_from(s.open_gaps.len()).unwrap_or(u64::MAX),
        changes_since_start: s.changes_reported,
    }
}

/// A client certificate this close to its end makes the agent `degraded`: time to renew it
/// before delivery stops.
const CERT_EXPIRY_DEGRADED_DAYS: i64 = 14;

/// The verdict and one reason per part that does not do its whole job, most important first:
/// collectors, file integrity, delivery, the event history, the last reload, self-limits.
/// What the spool dropped to stay within `transport.spool_max_bytes` (counters kept on disk).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct SpoolDrops {
    superseded_snapshots: u64,
    events: u64,
    reports: u64,
}

impl SpoolDrops {
    fn of(spool: &guestward_report::protocol::SpoolStatus) -> Self {
        Self {
            superseded_snapshots: spool.superseded_snapshots_dropped_total,
            events: spool.events_dropped_total,
            reports: spool.reports_dropped_total,
        }
    }

    /// The drops since `start`.
    fn since(self, start: Self) -> Self {
        Self {
            superseded_snapshots: self.superseded_snapshots.saturating_sub(start.superseded_snapshots),
            events: self.events.saturating_sub(start.events),
            reports: self.reports.saturating_sub(start.reports),
        }
    }
}

fn health(
    status: &Status,
    fim: Option<&guestward_fim::FimStatus>,
    spool_drops_at_start: SpoolDrops,
) -> HealthStatus {
    let mut reasons = Vec::new();
    for c in &status.collectors {
        // FIM's section mirrors the monitor, which has its own line below.
        if c.name == Collector::Fim && fim.is_some() {
            continue;
        }
        let word = match c.state {
            CollectorState::Failed => "failed",
            CollectorState::Degraded => "degraded",
            _ => continue,
        };
        let error = c.last_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
        let runs = if c.consecutive_failures > 1 {
            format!(" ({} runs in a row)", c.consecutive_failures)
        } else {
            String::new()
        };
        reasons.push(format!("collector {} {word}{runs}{error}", c.name));
    }
    if let Some(fim) = fim {
        let mut parts = Vec::new();
        if fim.baseline_completed_at.is_none() {
            parts.push("the baseline is not complete yet (changes are not reported until it is)".to_string());
        }
        parts.extend(fim.degraded_reasons.iter().cloned());
        if !fim.open_gaps.is_empty() && !fim.degraded {
            parts.push(format!("{} coverage gap(s) open", fim.open_gaps.len()));
        }
        if fim.state == guestward_fim::MonitorState::Stopped {
            parts.push("the monitor stopped".to_string());
        }
        if !parts.is_empty() {
            reasons.push(format!("file integrity: {}", parts.join("; ")));
        }
    }
    if let Some(t) = &status.transport {
        if let Some(held) = &t.held {
            reasons.push(format!("transport: {held}"));
        }
        if !t.connected && t.consecutive_failures > 0 {
            reasons.push(format!(
                "transport: not connected to {} ({} failed attempt(s) in a row){}",
                t.url,
                t.consecutive_failures,
                t.last_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
            ));
        }
        let dropped = SpoolDrops::of(&t.spool).since(spool_drops_at_start);
        if dropped != SpoolDrops::default() {
            reasons.push(format!(
                "transport: the spool is full (transport.spool_max_bytes) and dropped data since start: \
                 {} superseded snapshot(s), {} event(s), {} whole report(s)",
                dropped.superseded_snapshots, dropped.events, dropped.reports
            ));
        }
        if let Some(cert) = &t.certificate
            && let Some(days) = cert.days_left
            && days <= CERT_EXPIRY_DEGRADED_DAYS
        {
            reasons.push(if days < 0 {
                format!("transport: the client certificate {} has expired", cert.path)
            } else {
                format!("transport: the client certificate {} expires in {days} day(s)", cert.path)
            });
        }
        if let Some(cert) = &t.certificate
            && let Some(problem) = &cert.identity_problem
        {
            reasons.push(format!("transport: the client certificate {} {problem}", cert.path));
        }
    }
    if status.counters.spool_push_failures_total > 0 {
        reasons.push(format!(
            "transport: {} report(s) could not be written to the spool since start (see the log)",
            status.counters.spool_push_failures_total
        ));
    }
    if status.counters.events_store_failures_total > 0 {
        reasons.push(format!(
            "event history: {} write(s) to events.db failed since start (see the log)",
            status.counters.events_store_failures_total
        ));
    }
    if let Some(reload) = status.reload.as_ref().filter(|r| !r.applied) {
        let first = reload.error.as_deref().and_then(|e| e.lines().next()).unwrap_or("see the log");
        reasons.push(format!(
            "the configuration reload at {} was rejected, the previous configuration keeps running: {first}",
            reload.at.human()
        ));
    }
    if status.self_limits.throttled {
        reasons.push(format!(
            "self-limits: throttling{}",
            status.self_limits.throttle_reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
        ));
    }
    let verdict = if reasons.is_empty() { Health::Ok } else { Health::Degraded };
    HealthStatus { verdict, reasons }
}

/// The control API. A request's body must arrive by the connection's [`ReadDeadline`] (set
/// per connection by [`serve`]).
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/report", get(report))
        .route("/v1/findings", get(findings))
        .route("/v1/sbom", get(sbom))
        .route("/v1/scan", post(scan_now))
        .route("/v1/events", post(events))
        .route("/v1/fim/status", get(fim_status))
        .route("/v1/fim/events", post(fim_events))
        .route("/v1/flush", post(flush))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint; see agentctl --help") })
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(axum::middleware::from_fn(read_body_in_time))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&shared), authorize))
        .with_state(shared)
}

/// Limits of the control socket server (`[control]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections one user (other than root and the daemon's own user) may hold at once.
    pub max_connections_per_user: usize,
    /// Time from accept to the whole request (headers and body) having arrived.
    pub request_read_timeout: Duration,
    /// Time a write of the answer may make no progress.
    pub write_timeout: Duration,
}

impl ServerLimits {
    /// From a validated `[control]` section.
    pub fn from_config(c: &ControlConfig) -> Self {
        Self {
            max_connections: usize::try_from(c.max_connections.max(1)).unwrap_or(64),
            max_connections_per_user: usize::try_from(
                c.max_connections_per_user.clamp(1, c.max_connections.max(1)),
            )
            .unwrap_or(8),
            request_read_timeout: Duration::from_millis(c.request_read_timeout_ms.max(1)),
            write_timeout: Duration::from_millis(c.write_timeout_ms.max(1)),
        }
    }
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self::from_config(&ControlConfig::default())
    }
}

/// Largest request head (request line and headers) read: `agentctl` sends a few hundred bytes.
/// hyper's minimum is 8 KiB.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// How long shutdown waits for requests in progress before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// When the request of this connection must have fully arrived (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct ReadDeadline(pub tokio::time::Instant);

/// Serves the control API on `listener` until `shutdown` resolves, within `limits`.
pub async fn serve(
    listener: UnixListener,
    shared: Arc<Shared>,
    limits: ServerLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(Arc::clone(&shared));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let per_user = Arc::new(PerUser::new(limits.max_connections_per_user));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut refusals = RateLimitedLog::default();
    let mut accept_errors = RateLimitedLog::default();
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        // At the cap, stop accepting: further connections wait in the kernel's listen queue
        // (bounded by the backlog, no descriptor of ours) until a slot frees up.
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; the slot is released.
                    if accept_errors.should_log().is_some() {
                        tracing::warn!(error = %e, "control socket: accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let peer = PeerInfo::of(&stream);
        let user_slot = match per_user.claim(peer.0, &shared.access) {
            Ok(user_slot) => user_slot,
            Err(uid) => {
                shared.control_refused.fetch_add(1, Ordering::Relaxed);
                if let Some(skipped) = refusals.should_log() {
                    tracing::warn!(
                        uid,
                        limit = limits.max_connections_per_user,
                        similar_since_last_message = skipped,
                        "control connection refused: this user already holds the most connections allowed \
                         (control.max_connections_per_user)"
                    );
                }
                continue;
            }
        };
        let deadline = tokio::time::Instant::now() + limits.request_read_timeout;
        let service = hyper_util::service::TowerToHyperService::new(
            app.clone().layer(Extension(ConnectInfo(peer))).layer(Extension(ReadDeadline(deadline))),
        );
        let io = hyper_util::rt::TokioIo::new(WriteTimeout::new(stream, limits.write_timeout));
        let mut stopped = stopped.clone();
        connections.spawn(async move {
            let _held = (slot, user_slot);
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                // From the first read of the connection to the end of the request head.
                .header_read_timeout(limits.request_read_timeout)
                // One request per connection (`agentctl` opens one per request): no idle
                // keep-alive connection can sit on a slot.
                .keep_alive(false)
                .max_buf_size(MAX_HEAD_BYTES)
                .max_headers(64)
                .serve_connection(io, service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "control connection ended with an error");
                    }
                }
                _ = stopped.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
                }
            }
        });
    }
    let _ = stop.send(true);
    // Bounded: a request stuck in a scan must not hold up the daemon's exit.
    let drained =
        tokio::time::timeout(SHUTDOWN_GRACE, async { while connections.join_next().await.is_some() {} })
            .await;
    if drained.is_err() {
        tracing::warn!(left = connections.len(), "control connections still open at shutdown were dropped");
        connections.abort_all();
    }
    Ok(())
}

/// At most one message per interval for events a peer can repeat at will.
#[derive(Debug, Default)]
struct RateLimitedLog {
    last: Option<Instant>,
    skipped: u64,
}

impl RateLimitedLog {
    const INTERVAL: Duration = Duration::from_secs(10);

    /// `Some(number of events not logged since the last message)` when this one should be.
    fn should_log(&mut self) -> Option<u64> {
        if self.last.is_some_and(|t| t.elapsed() < Self::INTERVAL) {
            self.skipped += 1;
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.skipped))
    }
}

/// Connections held per user, for the per-user cap.
#[derive(Debug)]
struct PerUser {
    limit: usize,
    held: std::sync::Mutex<HashMap<u32, usize>>,
}

/// One counted connection; released when dropped (when the connection task ends).
#[derive(Debug)]
struct UserSlot {
    owner: Arc<PerUser>,
    uid: u32,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut held = self.owner.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = held.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.uid);
            }
        }
    }
}

impl PerUser {
    fn new(limit: usize) -> Self {
        Self { limit, held: std::sync::Mutex::new(HashMap::new()) }
    }

    /// Counts a new connection of `peer`. `Ok(None)`: not counted (root and the daemon's own
    /// user are trusted with the whole daemon already). `Err(uid)`: that user is at the cap.
    /// A peer without credentials is counted under one shared id (and denied by `authorize`).
    fn claim(
        self: &Arc<Self>,
        peer: Option<PeerCred>,
        access: &AccessPolicy,
    ) -> Result<Option<UserSlot>, u32> {
        let uid = peer.map_or(u32::MAX, |p| p.uid);
        if uid == 0 || uid == access.own_uid {
            return Ok(None);
        }
        let mut held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = held.entry(uid).or_insert(0);
        if *n >= self.limit {
            return Err(uid);
        }
        *n += 1;
        Ok(Some(UserSlot { owner: Arc::clone(self), uid }))
    }
}

/// The connection's stream, failing a write that makes no progress for `timeout`: a peer that
/// stops reading its answer cannot hold the connection (and its slot) forever.
struct WriteTimeout {
    inner: UnixStream,
    timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WriteTimeout {
    fn new(inner: UnixStream, timeout: Duration) -> Self {
        Self { inner, timeout, stalled: None }
    }

    /// After the inner write returned `Pending`: `Pending` until the stall lasts `timeout`.
    fn stall<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        let timeout = self.timeout;
        let sleep = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the peer stopped reading its answer",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(
        &mut self,
        result: Poll<std::io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<T>> {
        match result {
            Poll::Pending => self.stall(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl AsyncRead for WriteTimeout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteTimeout {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(result, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(result, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progress(result, cx)
    }
}

/// Reads the request body before the handler runs, by the connection's [`ReadDeadline`]: the
/// head is bounded by hyper's header-read timeout, the body by this (a peer that sends a
/// `Content-Length` and then nothing would otherwise hold the connection).
async fn read_body_in_time(request: Request, next: Next) -> Response {
    let deadline = request
        .extensions()
        .get::<ReadDeadline>()
        .map_or_else(|| tokio::time::Instant::now() + ServerLimits::default().request_read_timeout, |d| d.0);
    let (parts, body) = request.into_parts();
    match tokio::time::timeout_at(deadline, axum::body::to_bytes(body, MAX_REQUEST_BYTES)).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await,
        Ok(Err(_)) => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request body is larger than {MAX_REQUEST_BYTES} bytes, or broken"),
        ),
        Err(_) => error(StatusCode::REQUEST_TIMEOUT, "the request did not arrive in time"),
    }
}

async fn authorize(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<ConnectInfo<PeerInfo>>().and_then(|c| c.0.0);
    match peer {
        Some(cred) if shared.access.allows(&cred) => {
            shared.control_requests.fetch_add(1, Ordering::Relaxed);
            next.run(request).await
        }
        _ => {
            shared.control_denied.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                uid = peer.map(|p| p.uid),
                pid = peer.and_then(|p| p.pid),
                "control connection denied"
            );
            error(
                StatusCode::FORBIDDEN,
                "permission denied: run as root or as a member of the guestward group",
            )
        }
    }
}

fn error(code: StatusCode, message: &str) -> Response {
    (code, Json(ErrorBody { error: message.to_string() })).into_response()
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    // Off the async workers (two): the history's counters are SQLite queries behind the store's
    // lock, and the spool's stats wait for a push in progress (which fsyncs).
    match tokio::task::spawn_blocking(move || shared.status()).await {
        Ok(status) => Json(status).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("status failed: {e}")),
    }
}

async fn report(State(shared): State<Arc<Shared>>) -> Response {
    match shared.latest() {
        Some(r) => stream_json(r),
        None => error(StatusCode::NOT_FOUND, "no scan has completed yet; try again in a moment"),
    }
}

async fn findings(State(shared): State<Arc<Shared>>) -> Response {
    match shared.latest() {
        Some(r) => Json(&r.findings).into_response(),
        None => error(StatusCode::NOT_FOUND, "no scan has completed yet; try again in a moment"),
    }
}

/// The event history, oldest first (`agentctl events`).
async fn events(
    State(shared): State<Arc<Shared>>,
    Json(mut query): Json<guestward_history::Query>,
) -> Response {
    query.limit = query.limit.min(MAX_EVENTS_PER_ANSWER);
    let log = Arc::clone(&shared.pipeline.events);
    match tokio::task::spawn_blocking(move || log.query_json(&query)).await {
        Ok(Ok(events)) => Response::builder()
            .header(axum::http::header::CONTENT_TYPE, "application/json")
            .body(axum::body::Body::from(events))
            .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "building the answer failed")),
        Ok(Err(e)) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, &format!("reading the event history failed: {e}"))
        }
        Err(_) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, "reading the event history failed: the task crashed")
        }
    }
}

/// The latest full report's software inventory as a CycloneDX 1.6 SBOM, built here so that
/// `agentctl` links no SBOM builder.
async fn sbom(State(shared): State<Arc<Shared>>) -> Response {
    let Some(report) = shared.latest() else {
        return error(StatusCode::NOT_FOUND, "no scan has completed yet; try again in a moment");
    };
    let built =
        tokio::task::spawn_blocking(move || guestward_report::cyclonedx::report_to_json(&report)).await;
    match built {
        Ok(Ok((bom, left_out))) => {
            for p in left_out {
                tracing::warn!(problem = %p, "package left out of the SBOM");
            }
            Response::builder()
                .header(axum::http::header::CONTENT_TYPE, "application/json")
                .body(axum::body::Body::from(bom))
                .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "building the answer failed"))
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("building the SBOM failed: {e}")),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "building the SBOM failed: the task crashed"),
    }
}

/// Longest `POST /v1/flush` wait, and the default.
const FLUSH_TIMEOUT_SECS: (u64, u64) = (600, 30);

/// `POST /v1/flush`: delivers everything the spool holds now and waits for the collector's
/// acknowledgements, up to `timeout_secs`. 409 when `[transport]` is off (nothing to deliver
/// to). The answer is 200 whether or not everything went: `error` and `remaining_reports` say.
async fn flush(State(shared): State<Arc<Shared>>, Json(request): Json<FlushRequest>) -> Response {
    let Some(transport) = shared.pipeline.transport().cloned() else {
        return error(
            StatusCode::CONFLICT,
            "reports are not delivered anywhere: [transport] enabled = false in the agent's \
             configuration, so there is nothing to flush",
        );
    };
    let secs = request.timeout_secs.unwrap_or(FLUSH_TIMEOUT_SECS.1);
    if !(1..=FLUSH_TIMEOUT_SECS.0).contains(&secs) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("timeout_secs must be 1..={}, got {secs}", FLUSH_TIMEOUT_SECS.0),
        );
    }
    let before = transport.shipper.status().delivered_reports_total;
    let delivery = transport.deliver_within(Duration::from_secs(secs)).await;
    // What the shipper's own task delivered meanwhile counts too: the spool was emptied either way.
    let delivered = transport.shipper.status().delivered_reports_total.saturating_sub(before);
    let remaining = u64::try_from(transport.spool.len()).unwrap_or(u64::MAX);
    Json(FlushOutcome {
        delivered_reports: delivered,
        remaining_reports: remaining,
        error: delivery.err().map(|e| e.message),
    })
    .into_response()
}

async fn scan_now(State(shared): State<Arc<Shared>>, Json(request): Json<ScanRequest>) -> Response {
    let only: BTreeSet<Collector> =
        if request.only.is_empty() { Collector::all() } else { request.only.into_iter().collect() };
    match shared.pipeline.cycle(only).await {
        Ok(report) => stream_json(report),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// Bytes per chunk of a streamed answer.
const STREAM_CHUNK_BYTES: usize = 64 * 1024;

/// A report as a JSON answer, serialized on a blocking thread while it is sent, a few chunks
/// ahead at most. A big host's report is tens of MiB of JSON: built whole in memory (and
/// re-allocated as it grows) it would double the daemon's footprint for every `agentctl
/// report` running at once, and block an async worker while it is written.
fn stream_json(report: Arc<Report>) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut out = ChunkWriter { tx, buf: Vec::with_capacity(STREAM_CHUNK_BYTES) };
        // An error means the peer went away (the channel closed): nothing left to do.
        if serde_json::to_writer(&mut out, &*report).is_ok() {
            let _ = out.send();
        }
    });
    Response::builder()
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::new(ChannelBody { rx }))
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "building the answer failed"))
}

/// Collects serialized bytes into chunks and hands them to the connection.
struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<hyper::body::Bytes>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(STREAM_CHUNK_BYTES));
        self.tx
            .blocking_send(hyper::body::Bytes::from(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the peer went away"))
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= STREAM_CHUNK_BYTES {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// The receiving end of a [`ChunkWriter`] as an HTTP body.
struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<hyper::body::Bytes>,
}

impl hyper::body::Body for ChannelBody {
    type Data = hyper::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        self.rx.poll_recv(cx).map(|chunk| chunk.map(|c| Ok(hyper::body::Frame::data(c))))
    }
}

const FIM_OFF: &str = "file integrity monitoring is not running ([fim] enabled = false, or it failed to start: see the agent's log)";

async fn fim_status(State(shared): State<Arc<Shared>>) -> Response {
    match shared.fim() {
        Some(monitor) => Json(monitor.status()).into_response(),
        None => error(StatusCode::NOT_FOUND, FIM_OFF),
    }
}

async fn fim_events(State(shared): State<Arc<Shared>>, Json(request): Json<FimEventsRequest>) -> Response {
    if shared.fim().is_none() {
        return error(StatusCode::NOT_FOUND, FIM_OFF);
    }
    let since = request.since.or_else(|| Timestamp::from_unix_secs(0)).unwrap_or_else(Timestamp::now);
    let limit = request.limit.unwrap_or(MAX_FIM_EVENTS).min(MAX_FIM_EVENTS);
    // The event log is read from SQLite: keep it off the async workers.
    let read = tokio::task::spawn_blocking(move || shared.fim().map(|m| m.events_since(since, limit))).await;
    match read {
        Ok(Some(Ok(events))) => Json(events).into_response(),
        Ok(Some(Err(e))) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, "reading the FIM event log failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_policy() {
        let policy = AccessPolicy { own_uid: 990, allowed_gid: Some(990) };
        let peer = |uid, gid| PeerCred { uid, gid, pid: None };
        assert!(policy.allows(&peer(0, 0)), "root");
        assert!(policy.allows(&peer(990, 100)), "the daemon's own user");
        assert!(policy.allows(&peer(1000, 990)), "primary group member");
        assert!(!policy.allows(&peer(1000, 1000)), "anyone else");
        let no_group = AccessPolicy { own_uid: 0, allowed_gid: None };
        assert!(!no_group.allows(&peer(1000, 990)));
    }
}
