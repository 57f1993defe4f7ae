//! The daemon side of the control socket.
//!
//! Security: the socket is the agent's only local interface and it can trigger scans and read
//! everything the agent knows (open ports with process command lines, file hashes). Access is
//! decided per connection from the kernel's `SO_PEERCRED` credentials, which the peer cannot
//! forge: root, the daemon's own user, or members of the configured group (`guestward`). The
//! socket file is also created 0660 inside a 0750 directory, so the check is defence in depth,
//! not the only barrier.

use super::protocol::{
    Counters, ErrorBody, FimEventsRequest, MAX_FIM_EVENTS, MAX_REQUEST_BYTES, ScanRequest, ScanSummary,
    Status,
};
use crate::config::Config;
use crate::report::Report;
use crate::scan::{self, Collector, ScanOptions};
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use axum::{Json, Router};
use guestward_core::{HostRoot, Timestamp};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;
use tokio::net::UnixListener;

/// Events kept between two full reports before the oldest are dropped (and counted).
pub const MAX_PENDING_EVENTS: usize = 10_000;

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

impl Connected<IncomingStream<'_, UnixListener>> for PeerInfo {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        Self(stream.io().peer_cred().ok().map(|c| PeerCred { uid: c.uid(), gid: c.gid(), pid: c.pid() }))
    }
}

/// State shared by the scheduler and the request handlers.
#[derive(Debug)]
pub struct Shared {
    /// The configuration the daemon runs with.
    pub config: Arc<Config>,
    /// Where it came from, for `status`.
    pub config_source: String,
    /// Wall-clock start.
    pub started_at: Timestamp,
    /// Monotonic start.
    pub started: Instant,
    /// The latest full report.
    pub latest: RwLock<Option<Arc<Report>>>,
    /// When the scheduler will scan next.
    pub next_scan_at: RwLock<Option<Timestamp>>,
    /// Scans run one at a time, whether scheduled or requested.
    pub scan_gate: tokio::sync::Mutex<()>,
    /// Who may connect.
    pub access: AccessPolicy,
    /// The file integrity monitor, once started (absent when `[fim] enabled = false`).
    pub fim: std::sync::OnceLock<guestward_fim::Monitor>,
    /// Events observed between scans (file changes, lifecycle notices), carried by the next
    /// full report. Bounded: see [`MAX_PENDING_EVENTS`].
    pending_events: std::sync::Mutex<std::collections::VecDeque<guestward_core::Event>>,
    /// The instance's lifecycle as instance metadata last announced it (`terminating`...).
    lifecycle_state: RwLock<Option<String>>,
    events_dropped: AtomicU64,
    scan_runs: AtomicU64,
    scan_degraded_runs: AtomicU64,
    control_requests: AtomicU64,
    control_denied: AtomicU64,
}

impl Shared {
    /// New state before the first scan.
    pub fn new(config: Arc<Config>, config_source: String, access: AccessPolicy) -> Self {
        Self {
            config,
            config_source,
            started_at: Timestamp::now(),
            started: Instant::now(),
            latest: RwLock::new(None),
            next_scan_at: RwLock::new(None),
            scan_gate: tokio::sync::Mutex::new(()),
            access,
            fim: std::sync::OnceLock::new(),
            pending_events: std::sync::Mutex::new(std::collections::VecDeque::new()),
            lifecycle_state: RwLock::new(None),
            events_dropped: AtomicU64::new(0),
            scan_runs: AtomicU64::new(0),
            scan_degraded_runs: AtomicU64::new(0),
            control_requests: AtomicU64::new(0),
            control_denied: AtomicU64::new(0),
        }
    }

    /// Runs the given collectors on the live system (one scan at a time) and, when all of them
    /// ran, keeps the result as the latest report.
    pub async fn scan(self: &Arc<Self>, only: BTreeSet<Collector>) -> Arc<Report> {
        let _gate = self.scan_gate.lock().await;
        let full = only == Collector::all();
        let config = Arc::clone(&self.config);
        let options = ScanOptions { root: HostRoot::live(), only };
        // Events observed since the last full report (file changes, lifecycle notices) travel
        // with the next full one; partial scans (`agentctl ports`) leave them queued.
        let pending = if full { self.take_pending_events() } else { Vec::new() };
        let report = match tokio::task::spawn_blocking(move || {
            let mut report = scan::run(&config, &options);
            report.events.extend(pending);
            // Only full scans move the stored inventory forward: a partial one has no packages
            // section to compare, and must not make the next delta skip changes.
            if full {
                crate::collect::packages::track_changes(&config, &mut report);
                crate::collect::network::track_changes(&config, &mut report);
            }
            report.events.sort_by_key(|e| e.time);
            report
        })
        .await
        {
            Ok(r) => Arc::new(r),
            Err(e) => {
                // scan::run already turns collector panics into error sections; reaching this
                // means the scan thread itself died. Keep serving the previous report.
                tracing::error!(error = %e, "scan task failed");
                return self.latest().unwrap_or_else(|| Arc::new(scan::empty_report()));
            }
        };
        self.scan_runs.fetch_add(1, Ordering::Relaxed);
        if report.any_degraded() {
            self.scan_degraded_runs.fetch_add(1, Ordering::Relaxed);
        }
        if full && let Ok(mut latest) = self.latest.write() {
            *latest = Some(Arc::clone(&report));
        }
        report
    }

    /// Queues an event for the next full report. When the queue is full the oldest event is
    /// dropped and counted (`events_dropped_total` in `agentctl status`): memory stays bounded
    /// however noisy the host, and the loss is visible rather than silent. FIM changes are also
    /// kept in `fim.db`, so `agentctl fim events` still lists them.
    pub fn push_event(&self, event: guestward_core::Event) {
        if event.kind == guestward_cloud::TERMINATING
            && let Ok(mut state) = self.lifecycle_state.write()
        {
            *state = Some("terminating".to_string());
        }
        let Ok(mut queue) = self.pending_events.lock() else { return };
        if queue.len() >= MAX_PENDING_EVENTS {
            queue.pop_front();
            self.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
        queue.push_back(event);
    }

    fn take_pending_events(&self) -> Vec<guestward_core::Event> {
        self.pending_events.lock().map(|mut q| q.drain(..).collect()).unwrap_or_default()
    }

    /// The instance's announced lifecycle state, if any.
    pub fn lifecycle_state(&self) -> Option<String> {
        self.lifecycle_state.read().ok().and_then(|s| s.clone())
    }

    /// The latest full report.
    pub fn latest(&self) -> Option<Arc<Report>> {
        self.latest.read().ok().and_then(|l| l.clone())
    }

    fn status(&self) -> Status {
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            started_at: self.started_at,
            uptime_secs: self.started.elapsed().as_secs(),
            config_source: self.config_source.clone(),
            state_dir: self.config.agent.state_dir.as_path().display().to_string(),
            scan_interval_secs: self.config.agent.scan_interval_secs,
            last_scan: self.latest().map(|r| ScanSummary::of(&r)),
            next_scan_at: self.next_scan_at.read().ok().and_then(|n| *n),
            lifecycle_state: self.lifecycle_state(),
            counters: Counters {
                scan_runs_total: self.scan_runs.load(Ordering::Relaxed),
                scan_degraded_runs_total: self.scan_degraded_runs.load(Ordering::Relaxed),
                control_requests_total: self.control_requests.load(Ordering::Relaxed),
                control_denied_connections_total: self.control_denied.load(Ordering::Relaxed),
                events_dropped_total: self.events_dropped.load(Ordering::Relaxed),
            },
        }
    }
}

/// The control API.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/report", get(report))
        .route("/v1/findings", get(findings))
        .route("/v1/scan", post(scan_now))
        .route("/v1/fim/status", get(fim_status))
        .route("/v1/fim/events", post(fim_events))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint; see agentctl --help") })
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&shared), authorize))
        .with_state(shared)
}

/// Serves the control API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: UnixListener,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(shared).into_make_service_with_connect_info::<PeerInfo>())
        .with_graceful_shutdown(shutdown)
        .await
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

async fn status(State(shared): State<Arc<Shared>>) -> Json<Status> {
    Json(shared.status())
}

async fn report(State(shared): State<Arc<Shared>>) -> Response {
    match shared.latest() {
        Some(r) => Json(&*r).into_response(),
        None => error(StatusCode::NOT_FOUND, "no scan has completed yet; try again in a moment"),
    }
}

async fn findings(State(shared): State<Arc<Shared>>) -> Response {
    match shared.latest() {
        Some(r) => Json(&r.findings).into_response(),
        None => error(StatusCode::NOT_FOUND, "no scan has completed yet; try again in a moment"),
    }
}

async fn scan_now(State(shared): State<Arc<Shared>>, Json(request): Json<ScanRequest>) -> Response {
    let only: BTreeSet<Collector> =
        if request.only.is_empty() { Collector::all() } else { request.only.into_iter().collect() };
    let report = shared.scan(only).await;
    Json(&*report).into_response()
}

const FIM_OFF: &str = "file integrity monitoring is not running ([fim] enabled = false, or it failed to start: see the agent's log)";

async fn fim_status(State(shared): State<Arc<Shared>>) -> Response {
    match shared.fim.get() {
        Some(monitor) => Json(monitor.status()).into_response(),
        None => error(StatusCode::NOT_FOUND, FIM_OFF),
    }
}

async fn fim_events(State(shared): State<Arc<Shared>>, Json(request): Json<FimEventsRequest>) -> Response {
    if shared.fim.get().is_none() {
        return error(StatusCode::NOT_FOUND, FIM_OFF);
    }
    let since = request.since.or_else(|| Timestamp::from_unix_secs(0)).unwrap_or_else(Timestamp::now);
    let limit = request.limit.unwrap_or(MAX_FIM_EVENTS).min(MAX_FIM_EVENTS);
    // The event log is read from SQLite: keep it off the async workers.
    let read =
        tokio::task::spawn_blocking(move || shared.fim.get().map(|m| m.events_since(since, limit))).await;
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
