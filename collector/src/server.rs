//! The accept loop: TLS over TCP with HTTP/1.1 on top, written out (not a framework's) so that
//! every connection is bounded before it costs anything:
//! - a global and a per-IP connection cap, checked before the handshake;
//! - a handshake timeout;
//! - the TLS configuration chosen by peer address: a client certificate is mandatory for
//!   everyone except configured trusted proxies, which may connect without one and forward the
//!   client's certificate in a header (verified again by the API layer);
//! - one deadline per request, from its first byte to the end of its body (headers trickled
//!   byte by byte or a stalled body are cut off), and an idle timeout between requests.

use crate::api;
use crate::config::{Limits, ProxyConfig, ServeConfig};
use crate::identity::{ClientIdentity, IdentityError, identity_from_cert};
use crate::memory::MemoryBudget;
use crate::ratelimit::RateLimiter;
use crate::store::Store;
use crate::tls::{TlsError, TlsSetup};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

/// Largest request head (request line and headers): a forwarded certificate chain fits.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long shutdown waits for open requests to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// TLS files.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Binding the listen address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// Accepting connections failed for good.
    #[error("accepting connections failed: {0}")]
    Accept(std::io::Error),
}

/// What every request handler shares.
pub struct AppState {
    /// Where reports go.
    pub store: Arc<dyn Store>,
    /// TLS configurations and the CA verifier.
    pub tls: TlsSetup,
    /// Limits.
    pub limits: Limits,
    /// Trusted proxies.
    pub proxy: ProxyConfig,
    /// Per-client rate limit.
    pub limiter: RateLimiter,
    /// What requests and responses hold in memory, all together and per client.
    pub(crate) memory: MemoryBudget,
    /// Requests being decompressed and parsed at once.
    pub(crate) parse_slots: Arc<Semaphore>,
    /// Host details are built (decoded, serialized) one at a time: each can be as large as a
    /// report, and its memory is reserved only once its size is known.
    pub(crate) detail_gate: Arc<std::sync::Mutex<()>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// What the handler knows about the connection a request came on.
#[derive(Debug)]
pub struct ConnInfo {
    /// The peer.
    pub peer: SocketAddr,
    /// The peer is in `[proxy] trusted`.
    pub trusted_proxy: bool,
    /// The identity in the verified TLS client certificate, if one was presented.
    pub tls_identity: Option<Result<ClientIdentity, IdentityError>>,
}

/// A bound server, not yet accepting.
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("local_addr", &self.listener.local_addr().ok()).finish_non_exhaustive()
    }
}

impl Server {
    /// Loads TLS files and binds `config.listen` (port 0 picks a free port).
    pub async fn bind(config: &ServeConfig, store: Arc<dyn Store>) -> Result<Self, ServeError> {
        let tls = TlsSetup::load(config)?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServeError::Bind { addr: config.listen, source })?;
        let limiter = RateLimiter::new(config.limits.requests_per_sec_per_client, config.limits.burst);
        let parse_slots = std::thread::available_parallelism().map(usize::from).unwrap_or(2).max(2);
        let state = AppState {
            store,
            tls,
            limits: config.limits.clone(),
            proxy: config.proxy.clone(),
            limiter,
            memory: MemoryBudget::new(config.limits.max_buffered_bytes, config.limits.max_body_bytes),
            parse_slots: Arc::new(Semaphore::new(parse_slots)),
            detail_gate: Arc::new(std::sync::Mutex::new(())),
        };
        Ok(Self { listener, state: Arc::new(state) })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until `shutdown` completes, then waits up to 10 s for open
    /// connections to finish their requests.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let limits = self.state.limits.clone();
        let total = Arc::new(Semaphore::new(limits.max_connections));
        let per_ip: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) if is_transient(&e) => {
                        // Out of file descriptors or a connection reset before accept: wait
                        // a moment instead of spinning, and keep serving.
                        warn!(error = %e, "accept failed; retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    Err(e) => return Err(ServeError::Accept(e)),
                },
            };
            let ip = peer.ip().to_canonical();
            // Caps before the handshake: a flood of connections costs an accept and a close.
            let Ok(permit) = total.clone().try_acquire_owned() else {
                debug!(peer = %peer, "connection refused: limits.max_connections reached");
                continue;
            };
            // A trusted proxy carries many clients on one address: only the global cap applies.
            let trusted_proxy = self.state.proxy.trusted.iter().any(|net| net.contains(&ip));
            let ip_guard = if trusted_proxy {
                None
            } else {
                let Some(guard) = IpGuard::acquire(&per_ip, ip, limits.max_connections_per_ip) else {
                    debug!(peer = %peer, "connection refused: limits.max_connections_per_ip reached");
                    continue;
                };
                Some(guard)
            };
            let state = self.state.clone();
            let stop = stop_rx.clone();
            tokio::spawn(async move {
                serve_connection(state, tcp, peer, trusted_proxy, stop).await;
                drop(ip_guard);
                drop(permit);
            });
        }
        info!("shutting down: no new connections; waiting for open requests");
        let _ = stop_tx.send(true);
        let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, total.acquire_many(all)).await;
        Ok(())
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted | WouldBlock)
        || matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12)) // ENFILE, EMFILE, ENOBUFS, ENOMEM
}

/// Counts one connection against its IP; released on drop.
struct IpGuard {
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl IpGuard {
    fn acquire(map: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, max: usize) -> Option<Self> {
        let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Self { map: map.clone(), ip })
    }
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// A connection's clock: when the current request's first byte arrived, requests in flight,
/// when the last one ended. Fed by [`Tracked`] (reads) and the service (request start and end);
/// read by the connection's watchdog, which enforces the request and idle timeouts.
///
/// Times are milliseconds since the connection was accepted; 0 in `first_byte_ms` means "no
/// request started" (stored values are offset by one).
struct Activity {
    origin: Instant,
    in_flight: AtomicUsize,
    first_byte_ms: AtomicU64,
    last_end_ms: AtomicU64,
    busy_since_ms: AtomicU64,
}

/// What the watchdog should do with a connection.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Fine,
    /// No request for `idle_timeout`: close politely.
    Idle,
    /// Request headers not complete within `request_timeout`, or a request stuck: drop.
    Slow,
}

impl Activity {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            in_flight: AtomicUsize::new(0),
            first_byte_ms: AtomicU64::new(0),
            last_end_ms: AtomicU64::new(0),
            busy_since_ms: AtomicU64::new(0),
        }
    }
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
    /// Bytes arrived: the first ones after an idle period start a request's clock.
    fn on_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0 && self.first_byte_ms.load(Ordering::Relaxed) == 0 {
            self.first_byte_ms.store(self.now_ms() + 1, Ordering::Relaxed);
        }
    }
    /// The service got a request; returns when its first byte arrived (its deadline's origin).
    fn begin(&self) -> Instant {
        let now = self.now_ms();
        self.busy_since_ms.store(now, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let first = self.first_byte_ms.swap(0, Ordering::Relaxed);
        let started_ms = if first == 0 { now } else { first - 1 };
        self.origin + Duration::from_millis(started_ms)
    }
    fn end(&self) {
        self.last_end_ms.store(self.now_ms(), Ordering::Relaxed);
        self.first_byte_ms.store(0, Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
    fn verdict(&self, limits: &Limits) -> Verdict {
        let now = self.now_ms();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            // The handler bounds the body by the request deadline; this catches a client
            // that never reads its response (or anything else that hangs a request).
            let stuck = limits.request_timeout * 2 + Duration::from_secs(30);
            if now.saturating_sub(self.busy_since_ms.load(Ordering::Relaxed)) > ms(stuck) {
                return Verdict::Slow;
            }
            return Verdict::Fine;
        }
        let first = self.first_byte_ms.load(Ordering::Relaxed);
        if first != 0 {
            if now.saturating_sub(first - 1) > ms(limits.request_timeout) {
                return Verdict::Slow;
            }
            return Verdict::Fine;
        }
        if now.saturating_sub(self.last_end_ms.load(Ordering::Relaxed)) > ms(limits.idle_timeout) {
            return Verdict::Idle;
        }
        Verdict::Fine
    }
}

/// The TLS stream, reporting reads to the connection's [`Activity`].
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.on_read();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

async fn serve_connection(
    state: Arc<AppState>,
    tcp: TcpStream,
    peer: SocketAddr,
    trusted_proxy: bool,
    mut stop: watch::Receiver<bool>,
) {
    let limits = &state.limits;
    let _ = tcp.set_nodelay(true);
    // The configuration is chosen before the handshake, by address: only a trusted proxy may
    // connect without a client certificate. Everyone else fails the handshake without one.
    let config = if trusted_proxy { state.tls.proxy.clone() } else { state.tls.strict.clone() };
    let tls =
        match tokio::time::timeout(limits.handshake_timeout, TlsAcceptor::from(config).accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                debug!(peer = %peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                debug!(peer = %peer, "TLS handshake timed out");
                return;
            }
        };
    let tls_identity = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|leaf| identity_from_cert(leaf, false));
    let conn = Arc::new(ConnInfo { peer, trusted_proxy, tls_identity });
    let activity = Arc::new(Activity::new());
    let service = {
        let (state, conn, activity) = (state.clone(), conn.clone(), activity.clone());
        hyper::service::service_fn(move |req| {
            let (state, conn, activity) = (state.clone(), conn.clone(), activity.clone());
            async move {
                let started = activity.begin();
                let resp = api::handle(state, conn, req, started).await;
                activity.end();
                Ok::<_, Infallible>(resp)
            }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // hyper's header timer also runs while a kept-alive connection waits for its next
        // request, so it cannot be the request timeout; the watchdog below is. This is only a
        // backstop.
        .header_read_timeout(limits.request_timeout + limits.idle_timeout)
        .keep_alive(true)
        .max_buf_size(MAX_HEAD_BYTES);
    let io = Tracked { inner: tls, activity: activity.clone() };
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let tick = (limits.request_timeout.min(limits.idle_timeout) / 8)
        .clamp(Duration::from_millis(50), Duration::from_secs(5));
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    debug!(peer = %peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep(tick) => match activity.verdict(limits) {
                Verdict::Fine => {}
                Verdict::Slow => {
                    debug!(peer = %peer, "connection dropped: request not received within limits.request_timeout_secs");
                    return;
                }
                Verdict::Idle if closing => return,
                Verdict::Idle => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            },
            _ = stop.changed(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}
