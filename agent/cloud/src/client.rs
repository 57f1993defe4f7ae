//! The IMDS HTTP client: IMDSv2 session tokens, timeouts, one retry, capped bodies.
//!
//! Security:
//! - Never through a proxy (`no_proxy()`): an `HTTP_PROXY` in the environment must not see
//!   the token or the instance identity, and a proxy would break the hop-limit protection.
//! - The session token is held in [`ImdsToken`], whose `Debug` is redacted and which has no
//!   `Display`/`Serialize`; the header carrying it is marked sensitive. It is never logged,
//!   stored on disk or put in a report.
//! - Paths under `iam/security-credentials` and `identity-credentials` are refused by the
//!   client itself: the agent has no business holding the instance's AWS credentials.

use crate::config::ClientSettings;
use crate::report::AccessMode;
use reqwest::StatusCode;
use reqwest::header::{HeaderName, HeaderValue};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_PATH: &str = "/latest/api/token";
/// A token is a short opaque string (56 characters today); anything longer is not one.
const MAX_TOKEN_BYTES: u64 = 4 * 1024;

/// Why an IMDS request failed. Every variant names the path asked for; none carries the token.
#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    /// The HTTP client could not be built.
    #[error("building the IMDS HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    /// No connection, or no answer within the timeouts, after the retries.
    #[error("{url}: no answer from IMDS ({detail})")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// Timeout, refused, reset...
        detail: String,
    },
    /// 403: the request is not allowed or IMDS is turned off for this instance.
    #[error("{path}: 403 Forbidden (IMDS is turned off for this instance, or the request is not allowed)")]
    Forbidden {
        /// The path asked.
        path: String,
    },
    /// 401 even with a fresh token.
    #[error("{path}: 401 Unauthorized even with a fresh token")]
    Unauthorized {
        /// The path asked.
        path: String,
    },
    /// 429 after the retries.
    #[error("{path}: throttled by IMDS (429) after retrying")]
    Throttled {
        /// The path asked.
        path: String,
    },
    /// A 5xx answer, still failing after the retries: the service answered, but with an error
    /// (not the same as no answer at all, which is [`Self::Unreachable`]).
    #[error("HTTP {status} from {path} (the metadata service failed; retried {retries} time(s))")]
    ServerError {
        /// The path asked.
        path: String,
        /// The last status received (500..=599).
        status: u16,
        /// Extra attempts made.
        retries: u32,
    },
    /// Another unexpected status.
    #[error("{path}: unexpected HTTP status {status}")]
    Status {
        /// The path asked.
        path: String,
        /// The status received.
        status: u16,
    },
    /// The token PUT was refused in a way that means IMDSv2 is unavailable (403/404/405) and
    /// the config forbids IMDSv1.
    #[error("IMDSv2 token refused with HTTP {status} and imds.allow_imdsv1_fallback = false")]
    TokenRefused {
        /// 403, 404 or 405.
        status: u16,
    },
    /// The token answer was malformed (bad characters, too long).
    #[error("IMDS returned an unusable session token: {0}")]
    BadToken(&'static str),
    /// The body exceeded `imds.max_body_bytes`.
    #[error("{path}: response larger than {limit} bytes; not read")]
    TooLarge {
        /// The path asked.
        path: String,
        /// The cap.
        limit: u64,
    },
    /// The body is not UTF-8 text.
    #[error("{path}: response is not UTF-8 text")]
    NotText {
        /// The path asked.
        path: String,
    },
    /// The body is not the JSON expected.
    #[error("{path}: malformed JSON: {detail}")]
    Malformed {
        /// The path asked.
        path: String,
        /// The parser's message.
        detail: String,
    },
    /// A path the agent must never request (credentials).
    #[error("{path}: refused by the agent: it never reads instance credentials")]
    ForbiddenPath {
        /// The path asked.
        path: String,
    },
}

impl ImdsError {
    /// A stable machine-readable code for report problems.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Build(_) => "client_build",
            Self::Unreachable { .. } => "imds_unreachable",
            Self::Forbidden { .. } => "imds_forbidden",
            Self::Unauthorized { .. } => "imds_unauthorized",
            Self::Throttled { .. } => "imds_throttled",
            Self::ServerError { .. } => "imds_server_error",
            Self::Status { .. } => "imds_status",
            Self::TokenRefused { .. } => "imds_token_refused",
            Self::BadToken(_) => "imds_bad_token",
            Self::TooLarge { .. } => "too_large",
            Self::NotText { .. } => "malformed",
            Self::Malformed { .. } => "malformed",
            Self::ForbiddenPath { .. } => "forbidden_path",
        }
    }

    /// Whether the service itself failed to answer (as opposed to answering with an error).
    pub fn is_transport(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }
}

/// An IMDSv2 session token. Deliberately not `Display`, `Serialize` or `Clone`-able into
/// strings: the only way out is as a sensitive header value.
pub struct ImdsToken {
    header: HeaderValue,
    expires_at: Instant,
    ttl: Duration,
}

impl std::fmt::Debug for ImdsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImdsToken").field("value", &"<redacted>").field("ttl", &self.ttl).finish()
    }
}

impl ImdsToken {
    fn new(raw: &[u8], ttl: Duration) -> Result<Self, ImdsError> {
        let trimmed = raw.trim_ascii();
        if trimmed.is_empty() {
            return Err(ImdsError::BadToken("empty"));
        }
        // Printable ASCII only: anything else could smuggle header syntax.
        if !trimmed.iter().all(|b| b.is_ascii_graphic()) {
            return Err(ImdsError::BadToken("non-printable characters"));
        }
        let mut header =
            HeaderValue::from_bytes(trimmed).map_err(|_| ImdsError::BadToken("not a header value"))?;
        header.set_sensitive(true);
        Ok(Self { header, expires_at: Instant::now() + ttl, ttl })
    }

    /// Whether the token should be replaced now: past 3/4 of its life, or within a minute of
    /// expiry, so a request never races the expiry.
    fn needs_refresh(&self, now: Instant) -> bool {
        let margin = (self.ttl / 4).min(Duration::from_secs(60));
        now + margin >= self.expires_at
    }
}

#[derive(Debug)]
enum TokenState {
    Unknown,
    Token(ImdsToken),
    V1Fallback { put_status: u16 },
}

/// Counters, for tests and `agentctl status`.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Token PUTs sent.
    pub token_requests: AtomicU64,
    /// GETs sent (attempts, retries included).
    pub get_requests: AtomicU64,
    /// Tokens discarded after a 401.
    pub token_rejections: AtomicU64,
}

/// An outcome of a GET that is not an error: the body, or nothing (404).
pub type Fetched = Option<String>;

/// The IMDS client. Cheap to share behind an `Arc`; the token is cached inside.
#[derive(Debug)]
pub struct ImdsClient {
    http: reqwest::Client,
    base_url: String,
    settings: ClientSettings,
    token: Mutex<TokenState>,
    stats: ClientStats,
}

enum Attempt {
    Done(reqwest::Response),
    /// Worth another try: the HTTP status when there was an answer (429, 5xx), and what failed.
    Retry(Option<u16>, String),
}

impl ImdsClient {
    /// A client for `base_url` (no trailing slash needed).
    pub fn new(base_url: &str, settings: ClientSettings) -> Result<Self, ImdsError> {
        let mut http = reqwest::Client::builder()
            .no_proxy()
            .http1_only()
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.read_timeout)
            .timeout(settings.request_timeout)
            // IMDS never redirects; following one could carry the token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(2)
            // A host name as `imds.endpoint` resolves even when the kernel refuses threads.
            .dns_resolver(guestward_core::dns::ThreadOrInlineResolver)
            .user_agent(concat!("guestward-agent/", env!("CARGO_PKG_VERSION")));
        if plain_http(base_url) {
            // IMDS speaks plain HTTP on its link-local address, and redirects are refused
            // above, so a client of an http:// endpoint never makes a TLS connection: it gets
            // an empty set of trust anchors instead of the system's. Loading those (the 147
            // files of /etc/ssl/certs here) was about 2 ms of every scan, half of a `scan
            // --only host` (docs/benchmarks.md). Verification stays on: were TLS ever attempted,
            // nothing would be trusted. An https:// endpoint (`imds.endpoint`) keeps the
            // system's roots.
            http = http.tls_certs_only(std::iter::empty());
        }
        let http = http.build().map_err(ImdsError::Build)?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            settings,
            token: Mutex::new(TokenState::Unknown),
            stats: ClientStats::default(),
        })
    }

    /// The endpoint's base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Time allowed for one whole collection (`imds.collection_deadline_ms`).
    pub fn collection_deadline(&self) -> Duration {
        self.settings.collection_deadline
    }

    /// Request counters.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// The access mode established so far (`None` before the first request).
    pub async fn access_mode(&self) -> Option<AccessMode> {
        match &*self.token.lock().await {
            TokenState::Unknown => None,
            TokenState::Token(_) => Some(AccessMode::V2),
            TokenState::V1Fallback { .. } => Some(AccessMode::V1Fallback),
        }
    }

    /// The status with which the token PUT was refused, when running on IMDSv1 fallback.
    pub async fn token_refusal_status(&self) -> Option<u16> {
        match &*self.token.lock().await {
            TokenState::V1Fallback { put_status } => Some(*put_status),
            _ => None,
        }
    }

    /// The TTL (seconds) of the cached token, if any.
    pub async fn token_ttl_secs(&self) -> Option<u64> {
        match &*self.token.lock().await {
            TokenState::Token(t) => Some(t.ttl.as_secs()),
            _ => None,
        }
    }

    /// Sends one request with retries on transport errors, 429 and 5xx.
    async fn send(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
        url: &str,
    ) -> Result<reqwest::Response, ImdsError> {
        let mut last = (None, String::new());
        for attempt in 0..=self.settings.retries {
            if attempt > 0 {
                // A short pause: IMDS throttles per instance; hammering it makes it worse.
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
            match self.attempt(&build).await {
                Attempt::Done(r) => return Ok(r),
                Attempt::Retry(status, detail) => {
                    tracing::debug!(url, attempt, detail = %detail, "IMDS request failed; retrying if allowed");
                    last = (status, detail);
                }
            }
        }
        // The last attempt decides how the failure is reported: an answer with an error status
        // is not silence, and saying "no answer" for a 500 sends the reader the wrong way.
        match last {
            (Some(429), _) => Err(ImdsError::Throttled { path: path_of(url) }),
            (Some(status), _) => {
                Err(ImdsError::ServerError { path: path_of(url), status, retries: self.settings.retries })
            }
            (None, detail) => Err(ImdsError::Unreachable { url: url.to_string(), detail }),
        }
    }

    async fn attempt(&self, build: &impl Fn() -> reqwest::RequestBuilder) -> Attempt {
        match build().send().await {
            Ok(r) if r.status() == StatusCode::TOO_MANY_REQUESTS || r.status().is_server_error() => {
                let status = r.status().as_u16();
                Attempt::Retry(Some(status), format!("HTTP {status}"))
            }
            Ok(r) => Attempt::Done(r),
            Err(e) => Attempt::Retry(None, describe(&e)),
        }
    }

    /// Gets a token, or establishes the IMDSv1 fallback.
    async fn ensure_token(&self, state: &mut TokenState) -> Result<(), ImdsError> {
        let now = Instant::now();
        match state {
            TokenState::Token(t) if !t.needs_refresh(now) => return Ok(()),
            TokenState::V1Fallback { .. } => return Ok(()),
            _ => {}
        }
        let url = format!("{}{TOKEN_PATH}", self.base_url);
        let ttl = self.settings.token_ttl.as_secs().to_string();
        self.stats.token_requests.fetch_add(1, Ordering::Relaxed);
        let resp = self.send(|| self.http.put(&url).header(TTL_HEADER, &ttl), &url).await?;
        let status = resp.status();
        match status.as_u16() {
            200 => {
                // IMDS echoes the granted TTL; trust the smaller of it and what we asked.
                let granted = resp
                    .headers()
                    .get(TTL_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs)
                    .unwrap_or(self.settings.token_ttl)
                    .min(self.settings.token_ttl);
                let body = read_capped(resp, TOKEN_PATH, MAX_TOKEN_BYTES).await?;
                *state = TokenState::Token(ImdsToken::new(&body, granted)?);
                Ok(())
            }
            // botocore's rule: these mean "this IMDS does not do IMDSv2" (or it is off; a
            // token-less GET then tells the two apart).
            403..=405 => {
                if self.settings.allow_imdsv1_fallback {
                    tracing::warn!(
                        status = status.as_u16(),
                        "IMDSv2 token refused; falling back to IMDSv1 as allowed by config"
                    );
                    *state = TokenState::V1Fallback { put_status: status.as_u16() };
                    Ok(())
                } else if status == StatusCode::FORBIDDEN {
                    Err(ImdsError::Forbidden { path: TOKEN_PATH.to_string() })
                } else {
                    Err(ImdsError::TokenRefused { status: status.as_u16() })
                }
            }
            other => Err(ImdsError::Status { path: TOKEN_PATH.to_string(), status: other }),
        }
    }

    /// GETs `path` (e.g. `/latest/meta-data/instance-id`) with the cached token. `Ok(None)`
    /// means 404: the item does not exist on this instance.
    pub async fn get(&self, path: &str) -> Result<Fetched, ImdsError> {
        refuse_credentials(path)?;
        let url = format!("{}{path}", self.base_url);
        let mut state = self.token.lock().await;
        self.ensure_token(&mut state).await?;
        let mut resp = self.get_once(&url, &state).await?;
        if resp.status() == StatusCode::UNAUTHORIZED && matches!(*state, TokenState::Token(_)) {
            // Expired or revoked early (e.g. the instance was stopped and started): one fresh
            // token, one more try.
            self.stats.token_rejections.fetch_add(1, Ordering::Relaxed);
            *state = TokenState::Unknown;
            self.ensure_token(&mut state).await?;
            resp = self.get_once(&url, &state).await?;
        }
        drop(state);
        match resp.status().as_u16() {
            200 => {
                let body = read_capped(resp, path, self.settings.max_body_bytes).await?;
                String::from_utf8(body).map(Some).map_err(|_| ImdsError::NotText { path: path.to_string() })
            }
            404 => Ok(None),
            401 => Err(ImdsError::Unauthorized { path: path.to_string() }),
            403 => Err(ImdsError::Forbidden { path: path.to_string() }),
            other => Err(ImdsError::Status { path: path.to_string(), status: other }),
        }
    }

    async fn get_once(&self, url: &str, state: &TokenState) -> Result<reqwest::Response, ImdsError> {
        let token = match state {
            TokenState::Token(t) => Some(t.header.clone()),
            _ => None,
        };
        self.stats.get_requests.fetch_add(1, Ordering::Relaxed);
        self.send(
            || {
                let req = self.http.get(url);
                match &token {
                    Some(t) => req.header(HeaderName::from_static(TOKEN_HEADER), t.clone()),
                    None => req,
                }
            },
            url,
        )
        .await
    }

    /// Sends one token-less GET of `path` and returns the status (no retry on 4xx). Used to
    /// learn whether IMDSv1 still answers.
    pub async fn probe_without_token(&self, path: &str) -> Result<u16, ImdsError> {
        refuse_credentials(path)?;
        let url = format!("{}{path}", self.base_url);
        self.stats.get_requests.fetch_add(1, Ordering::Relaxed);
        let resp = self.send(|| self.http.get(&url), &url).await?;
        Ok(resp.status().as_u16())
    }

    /// Forgets the cached token and access mode (after a long pause, or for tests).
    pub async fn reset(&self) {
        *self.token.lock().await = TokenState::Unknown;
    }
}

fn refuse_credentials(path: &str) -> Result<(), ImdsError> {
    let lower = path.to_ascii_lowercase();
    if lower.contains("security-credentials")
        || lower.contains("identity-credentials")
        || lower.contains("..")
    {
        return Err(ImdsError::ForbiddenPath { path: path.to_string() });
    }
    Ok(())
}

fn path_of(url: &str) -> String {
    reqwest::Url::parse(url).map(|u| u.path().to_string()).unwrap_or_else(|_| url.to_string())
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else if e.is_body() || e.is_decode() {
        "response body failed".to_string()
    } else {
        // reqwest's messages carry the URL but never headers, so the token cannot leak here.
        e.to_string()
    }
}

/// Reads a body chunk by chunk, stopping as soon as it exceeds `limit`.
async fn read_capped(mut resp: reqwest::Response, path: &str, limit: u64) -> Result<Vec<u8>, ImdsError> {
    let too_large = || ImdsError::TooLarge { path: path.to_string(), limit };
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if u64::try_from(out.len() + chunk.len()).unwrap_or(u64::MAX) > limit {
                    return Err(too_large());
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(out),
            Err(e) => {
                return Err(ImdsError::Unreachable { url: path.to_string(), detail: describe(&e) });
            }
        }
    }
}

/// Whether `base_url` is plain HTTP, whose client never needs trust anchors (see
/// [`ImdsClient::new`]).
fn plain_http(base_url: &str) -> bool {
    url::Url::parse(base_url.trim()).is_ok_and(|u| u.scheme() == "http")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn only_a_plain_http_endpoint_goes_without_trust_anchors() {
        for url in
            ["http://169.254.169.254", "http://[fd00:ec2::254]/", "HTTP://127.0.0.1:8080", " http://x "]
        {
            assert!(plain_http(url), "{url}");
        }
        for url in ["https://imds.example", "HTTPS://169.254.169.254", "httpx://a", "169.254.169.254", ""] {
            assert!(!plain_http(url), "{url}");
        }
        // Both kinds build: an https endpoint with the system's roots, an http one without.
        for url in ["http://127.0.0.1:1", "https://127.0.0.1:1"] {
            assert!(ImdsClient::new(url, ClientSettings::default()).is_ok(), "{url}");
        }
    }

    #[test]
    fn token_debug_is_redacted() {
        let t = ImdsToken::new(b"AQAEAsecretTOKENvalue==", Duration::from_secs(60)).unwrap();
        let shown = format!("{t:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(t.header.is_sensitive());
    }

    #[test]
    fn tokens_with_header_syntax_are_refused() {
        assert!(matches!(
            ImdsToken::new(b"abc\r\nX-Evil: 1", Duration::from_secs(1)),
            Err(ImdsError::BadToken(_))
        ));
        assert!(matches!(ImdsToken::new(b"  ", Duration::from_secs(1)), Err(ImdsError::BadToken(_))));
    }

    #[test]
    fn refresh_happens_before_expiry() {
        let t = ImdsToken::new(b"tok", Duration::from_secs(21_600)).unwrap();
        let now = Instant::now();
        assert!(!t.needs_refresh(now));
        assert!(t.needs_refresh(now + Duration::from_secs(21_600 - 59)));
        let short = ImdsToken::new(b"tok", Duration::from_secs(4)).unwrap();
        assert!(!short.needs_refresh(now + Duration::from_millis(2_500)));
        assert!(short.needs_refresh(now + Duration::from_millis(3_100)));
    }

    #[test]
    fn credential_paths_are_refused() {
        for p in [
            "/latest/meta-data/iam/security-credentials/",
            "/latest/meta-data/iam/Security-Credentials/role",
            "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance",
            "/latest/meta-data/iam/../iam/security-credentials",
        ] {
            assert!(matches!(refuse_credentials(p), Err(ImdsError::ForbiddenPath { .. })), "{p}");
        }
        refuse_credentials("/latest/meta-data/iam/info").unwrap();
    }
}
