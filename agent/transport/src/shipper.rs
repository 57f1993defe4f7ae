//! The shipper: delivers spooled reports to the collector over mutual TLS.
//!
//! One request carries the oldest spooled reports of one host id up to `batch_max_bytes` as `POST
//! {url}/v1/reports` with `Content-Encoding: zstd`. The body is never recompressed: each spooled
//! entry already is one zstd frame of a report's JSON, and concatenated zstd frames decode as
//! the concatenation of their contents, so the body is frame(`{"reports":[`) + entry +
//! frame(`,`) + entry ... + frame(`]}`).
//!
//! What the answer does to the spool:
//!
//! | answer | spool | next attempt |
//! |---|---|---|
//! | 2xx with an `IngestResponse` | the `batch_id`s answered are deleted | at once while reports wait |
//! | 429, 503 | kept | after `Retry-After` (seconds or HTTP date, at most 1 h), else backoff |
//! | 413, or 400/415/422 for several reports | kept | at once, one report per request |
//! | 400, 413, 415, 422 for one report (poison) | moved to `spool/rejected/` | at once |
//! | 400, 415, 422, or 413 for one report, not in the collector's `ErrorBody` (a proxy's) | kept | backoff |
//! | 401, 403 for reports made as another host than the newest report's | moved to `spool/rejected/` | at once |
//! | 401, 403 otherwise (credentials refused) | kept | backoff; `status()` says so |
//! | other status, connection error, timeout, unreadable answer | kept | backoff |
//!
//! Backoff is exponential with full jitter: a uniform delay in `[0, min(5 min, 1 s × 2^n))`
//! after the n-th consecutive failure, so a fleet that lost its collector does not come back in
//! lock step.
//!
//! TLS (rustls, built here and handed to reqwest): the roots are the certificates of `ca_file`
//! only (the collector's CA is pinned; the system store is added only with `use_system_roots`),
//! the server name is always verified, TLS 1.3 only unless `tls_min_version = "1.2"`. The
//! client certificate chain and key come from PEM files; the key file is refused when its mode
//! lets group or others read it. Before each request the three files are stat'ed (device,
//! inode, mtime, size); on a change they are read again and the client rebuilt, which also drops
//! pooled connections, so the next request presents the new certificate. A reload that fails
//! (a half-written pair) keeps the old client and shows the error in `status()`.
//!
//! Retired certificates ([`Shipper::retire_certificates`]): after the agent's identity was
//! re-initialised (a disk cloned into a new instance), the certificate issued to the instance
//! the disk came from must never be presented again, or two instances would report under one
//! identity. While the certificate loaded is one of those (by the SHA-256 of its DER), the
//! shipper holds: nothing is sent, reports stay spooled, `status().held` says why and what to
//! do. New certificate files (a different certificate) end the hold at the next pass.
//!
//! The identity a certificate names (`guestward_report::client_identity`, the collector's own
//! rule) is checked against the host this agent reports as ([`Shipper::certificate_findings`]):
//! a certificate for another host, an operator's, or one that names nobody gets every report
//! refused, so it is a finding (GW-TLS-002), a warning and a line of `status()` before the
//! collector's 401 or 403 says it less precisely.

use crate::config::TlsVersion;
use crate::spool::SpooledBatch;
use crate::{Spool, TransportConfig};
use guestward_core::{Finding, Severity, Timestamp};
use guestward_report::client_identity::{NamedIn, NamingError, Role};
use guestward_report::ingest::{ErrorBody, IngestResponse, REPORTS_PATH};
use guestward_report::protocol::{CertificateStatus, TransportStatus};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Largest CA or certificate PEM file read.
const PEM_MAX_BYTES: u64 = 1 << 20;
/// Largest key PEM file read.
const KEY_MAX_BYTES: u64 = 64 << 10;
/// A client certificate this close to its end is a finding (and a daily warning).
const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 86_400);
/// The finding raised for an expiring client certificate.
pub const CERT_EXPIRY_FINDING: &str = "GW-TLS-001";
/// The finding raised for a client certificate that does not name the host the agent reports as.
pub const CERT_IDENTITY_FINDING: &str = "GW-TLS-002";

/// Why the shipper could not start or deliver.
#[derive(Debug, thiserror::Error)]
pub enum ShipperError {
    /// A certificate, key or CA file is missing, unreadable or not PEM.
    #[error("{path}: {message}")]
    Credentials {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Delivery did not finish before the deadline; what was not delivered stays spooled.
    #[error("{undelivered} report(s) not delivered: {last_error}")]
    Undelivered {
        /// Reports still spooled.
        undelivered: u64,
        /// The last failure.
        last_error: String,
    },
    /// The collector refused this host's credentials (401/403 for the newest reports' host):
    /// an answer that will not change by asking again, so delivery stops at once.
    #[error("{undelivered} report(s) not delivered: {error}")]
    CredentialsRefused {
        /// Reports still spooled.
        undelivered: u64,
        /// The collector's answer, with what to check.
        error: String,
    },
    /// A `[transport]` setting the shipper cannot use (`url`, `proxy`).
    #[error("[transport] {key}: {message}")]
    Config {
        /// The key under `[transport]`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

fn credentials(path: &Path, message: impl Into<String>) -> ShipperError {
    ShipperError::Credentials { path: path.to_path_buf(), message: message.into() }
}

/// A credential file that could not be opened or read: the error already names the file, so the
/// message keeps only the reason (the path is printed once, by `Credentials`).
fn credentials_fs(e: guestward_core::HostFsError) -> ShipperError {
    let path = e.path().to_path_buf();
    let full = e.to_string();
    let reason = full.strip_prefix(&format!("{}: ", path.display())).unwrap_or(&full).to_string();
    ShipperError::Credentials { path, message: reason }
}

/// What [`Shipper::deliver_all`] delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliverySummary {
    /// Reports the collector stored now.
    pub stored: u64,
    /// Reports the collector already had.
    pub duplicates: u64,
    /// Requests sent (retries included).
    pub requests: u64,
    /// Reports the collector refused for good (malformed, or made as another host): moved to
    /// `spool/rejected/`, not delivered.
    pub set_aside: u64,
}

/// Timing knobs. The defaults are the documented behaviour; tests shorten them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipperTuning {
    /// First backoff ceiling (doubles per consecutive failure). Default 1 s.
    pub backoff_base: Duration,
    /// Largest backoff ceiling. Default 5 minutes.
    pub backoff_cap: Duration,
    /// TCP + TLS connection timeout. Default 10 s.
    pub connect_timeout: Duration,
    /// Whole-request timeout (answer body included). Default 60 s.
    pub request_timeout: Duration,
    /// Longest `Retry-After` honoured. Default 1 hour.
    pub retry_after_cap: Duration,
    /// Largest answer body read. Default 1 MiB.
    pub response_max_bytes: u64,
}

impl Default for ShipperTuning {
    fn default() -> Self {
        Self {
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            retry_after_cap: Duration::from_secs(3600),
            response_max_bytes: 1 << 20,
        }
    }
}

/// The files the client identity comes from.
#[derive(Debug, Clone)]
struct Files {
    ca: Option<PathBuf>,
    cert: PathBuf,
    key: PathBuf,
}

/// (device, inode, mtime seconds, mtime nanoseconds, size) of each file; `None` when missing.
type Stamps = Vec<Option<(u64, u64, i64, i64, u64)>>;

impl Files {
    fn stamps(&self) -> Stamps {
        let stamp = |p: &Path, follow: bool| {
            let m = if follow { std::fs::metadata(p) } else { std::fs::symlink_metadata(p) };
            m.ok().map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size()))
        };
        vec![
            self.ca.as_deref().and_then(|p| stamp(p, true)),
            stamp(&self.cert, true),
            stamp(&self.key, false),
        ]
    }
}

/// The client certificate's facts, for status and findings.
#[derive(Debug, Clone)]
struct CertInfo {
    path: PathBuf,
    subject: String,
    not_after: Option<Timestamp>,
    /// SHA-256 of the leaf certificate's DER, lowercase hex.
    sha256: String,
    /// Who the collector reads it as.
    names: Result<(Role, NamedIn), NamingError>,
}

#[derive(Debug)]
struct Tls {
    client: reqwest::Client,
    stamps: Stamps,
    /// Stamps of the last reload that failed: not retried until the files change again.
    failed: Option<Stamps>,
    cert: CertInfo,
}

#[derive(Debug, Default)]
struct State {
    connected: bool,
    last_attempt_at: Option<Timestamp>,
    last_success_at: Option<Timestamp>,
    last_error: Option<String>,
    reload_error: Option<String>,
    consecutive_failures: u64,
    next_attempt_at: Option<Timestamp>,
    delivered_total: u64,
    failed_total: u64,
    rejected_total: u64,
    /// Unix day of the last expiry warning logged.
    expiry_warned_day: Option<i64>,
    /// The host id of the newest report the pipeline or the spool has shown (the host this
    /// agent reports as), kept for `status()` once the spool is empty.
    reporting_as: Option<String>,
    /// The identity problem last warned about (certificate SHA-256 and problem): warned again
    /// only when either changes.
    identity_warned: Option<(String, String)>,
}

/// The shipper. See the module documentation.
#[derive(Debug)]
pub struct Shipper {
    spool: Arc<Spool>,
    url: String,
    endpoint: reqwest::Url,
    spec: ClientSpec,
    batch_max_bytes: u64,
    flush_interval: Duration,
    tuning: ShipperTuning,
    tls: Mutex<Tls>,
    state: Mutex<State>,
    /// One shipping pass at a time (`run` and `deliver_all` may overlap).
    sending: tokio::sync::Mutex<()>,
    /// SHA-256 fingerprints of certificates that must not be presented (see the module
    /// documentation).
    retired: Mutex<Vec<String>>,
    /// Told of each certificate loaded anew, before it is presented.
    certificate_loaded: Mutex<Option<CertificateObserver>>,
}

/// See [`Shipper::on_certificate_loaded`].
#[derive(Clone)]
struct CertificateObserver(Arc<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for CertificateObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertificateObserver")
    }
}

/// What one pass did.
enum Step {
    /// Nothing to send.
    Empty,
    /// Reports were acknowledged or quarantined.
    Progress { stored: u64, duplicates: u64, requests: u64, set_aside: u64 },
    /// The pass failed; wait this long.
    Failed { requests: u64, wait: Duration },
    /// The collector refused this host's credentials; wait this long (asking again soon
    /// will not change its answer, but new certificate files may).
    Refused { wait: Duration, error: String },
    /// Nothing may be sent with the certificate loaded (it is retired): why.
    Held(String),
}

/// How the collector answered one request.
enum Answer {
    Acked {
        stored: u64,
        duplicates: u64,
    },
    /// Refused as too large or malformed: split, or quarantine when alone.
    Refused {
        status: u16,
        message: String,
    },
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    /// 401 or 403: these credentials may not deliver these reports.
    Forbidden {
        error: String,
    },
}

impl Shipper {
    /// A shipper for `config` (must be enabled and valid) draining `spool`. Reads the CA,
    /// certificate and key now: a missing file or a key readable by others is an error here.
    pub fn new(config: &TransportConfig, spool: Arc<Spool>) -> Result<Self, ShipperError> {
        Self::with_tuning(config, spool, ShipperTuning::default())
    }

    /// [`Shipper::new`] with other timings (tests).
    pub fn with_tuning(
        config: &TransportConfig,
        spool: Arc<Spool>,
        tuning: ShipperTuning,
    ) -> Result<Self, ShipperError> {
        let missing = |key: &str| ShipperError::Config { key: key.into(), message: "is required".into() };
        let url = config.url.clone().ok_or_else(|| missing("url"))?;
        let base = reqwest::Url::parse(&url).map_err(|e| ShipperError::Config {
            key: "url".into(),
            message: format!("is not a URL ({e}): `{url}`"),
        })?;
        if base.scheme() != "https" {
            return Err(ShipperError::Config {
                key: "url".into(),
                message: format!("must be an https:// URL (reports travel over mutual TLS), got `{url}`"),
            });
        }
        let endpoint = reqwest::Url::parse(&format!("{}{REPORTS_PATH}", url.trim_end_matches('/')))
            .map_err(|e| ShipperError::Config { key: "url".into(), message: format!("{e}: `{url}`") })?;
        if config.ca_file.is_none() && !config.use_system_roots {
            return Err(ShipperError::Config {
                key: "ca_file".into(),
                message: "is required unless `use_system_roots = true`".into(),
            });
        }
        let files = Files {
            ca: config.ca_file.clone(),
            cert: config.cert_file.clone().ok_or_else(|| missing("cert_file"))?,
            key: config.key_file.clone().ok_or_else(|| missing("key_file"))?,
        };
        let spec = ClientSpec {
            files,
            tls_min_version: config.tls_min_version,
            use_system_roots: config.use_system_roots,
            proxy: config.proxy.clone(),
            connect_timeout: tuning.connect_timeout,
            request_timeout: tuning.request_timeout,
        };
        let stamps = spec.files.stamps();
        let (client, cert) = spec.build_client()?;
        Ok(Self {
            spool,
            url,
            endpoint,
            spec,
            batch_max_bytes: config.batch_max_bytes,
            flush_interval: Duration::from_secs(config.flush_interval_secs.max(1)),
            tuning,
            tls: Mutex::new(Tls { client, stamps, failed: None, cert }),
            state: Mutex::new(State::default()),
            sending: tokio::sync::Mutex::new(()),
            retired: Mutex::new(Vec::new()),
            certificate_loaded: Mutex::new(None),
        })
    }

    /// Never presents these certificates (SHA-256 of the DER, hex; case ignored): while the
    /// certificate files hold one of them, the shipper holds. Replaces the previous list.
    pub fn retire_certificates(&self, fingerprints: Vec<String>) {
        let list = fingerprints.into_iter().map(|f| f.to_ascii_lowercase()).collect();
        *self.retired.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = list;
    }

    /// Calls `observer` with the SHA-256 (hex) of every certificate loaded from changed files,
    /// before the first request presents it. The daemon records it as its identity's at once:
    /// recorded only after the next full scan, a disk cloned in between (up to
    /// `scan_interval_secs`) did not know the rotated certificate for the original's, and
    /// presented it.
    pub fn on_certificate_loaded(&self, observer: impl Fn(&str) + Send + Sync + 'static) {
        *self.certificate_loaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(CertificateObserver(Arc::new(observer)));
    }

    /// SHA-256 (hex) of the client certificate loaded now.
    pub fn certificate_sha256(&self) -> String {
        self.tls().cert.sha256.clone()
    }

    /// Why nothing may be sent now, when the certificate loaded is retired.
    pub fn held(&self) -> Option<String> {
        let cert = self.tls().cert.clone();
        let retired = self.retired.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        retired.contains(&cert.sha256).then(|| {
            format!(
                "holding reports: the client certificate {} (sha256 {}) was issued to the instance \
                 this disk was cloned from and is never presented again; install a certificate and \
                 key issued to this instance in its place (cert_file, key_file): delivery resumes \
                 at once, without a restart",
                cert.path.display(),
                cert.sha256
            )
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn tls(&self) -> MutexGuard<'_, Tls> {
        self.tls.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Rebuilds the client when a credential file changed since it was built.
    fn reload_if_changed(&self) -> reqwest::Client {
        let now = self.spec.files.stamps();
        {
            let tls = self.tls();
            if tls.stamps == now || tls.failed.as_ref() == Some(&now) {
                return tls.client.clone();
            }
        }
        match self.spec.build_client() {
            Ok((client, cert)) => {
                tracing::info!(cert = %cert.path.display(), subject = %cert.subject, "transport: client certificate reloaded (files changed)");
                let observer =
                    self.certificate_loaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
                if let Some(CertificateObserver(observe)) = observer {
                    observe(&cert.sha256);
                }
                self.state().reload_error = None;
                let mut tls = self.tls();
                *tls = Tls { client: client.clone(), stamps: now, failed: None, cert };
                client
            }
            Err(e) => {
                tracing::warn!(error = %e, "transport: certificate files changed but cannot be loaded; keeping the previous certificate");
                self.state().reload_error =
                    Some(format!("certificate reload failed (previous certificate kept): {e}"));
                let mut tls = self.tls();
                tls.failed = Some(now);
                tls.client.clone()
            }
        }
    }

    /// Delivers everything the spool holds (reports left by earlier runs included), retrying
    /// with backoff until `deadline`; `Ok` only when the spool is empty. A refusal of this
    /// host's credentials ends it at once ([`ShipperError::CredentialsRefused`]).
    pub async fn deliver_all(&self, deadline: Duration) -> Result<DeliverySummary, ShipperError> {
        let end = Instant::now() + deadline;
        let mut summary = DeliverySummary::default();
        loop {
            let remaining = end.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(self.undelivered("the deadline passed"));
            }
            match tokio::time::timeout(remaining, self.step()).await {
                Err(_) => return Err(self.undelivered("the deadline passed during a request")),
                Ok(Step::Empty) => return Ok(summary),
                Ok(Step::Progress { stored, duplicates, requests, set_aside }) => {
                    summary.stored += stored;
                    summary.duplicates += duplicates;
                    summary.requests += requests;
                    summary.set_aside += set_aside;
                }
                Ok(Step::Held(why)) => {
                    return Err(ShipperError::Undelivered {
                        undelivered: u64::try_from(self.spool.len()).unwrap_or(u64::MAX),
                        last_error: why,
                    });
                }
                Ok(Step::Refused { error, .. }) => {
                    return Err(ShipperError::CredentialsRefused {
                        undelivered: u64::try_from(self.spool.len()).unwrap_or(u64::MAX),
                        error,
                    });
                }
                Ok(Step::Failed { requests, wait }) => {
                    summary.requests += requests;
                    let remaining = end.saturating_duration_since(Instant::now());
                    if wait >= remaining {
                        tokio::time::sleep(remaining).await;
                        return Err(self.undelivered("the deadline passed"));
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    fn undelivered(&self, fallback: &str) -> ShipperError {
        let state = self.state();
        let last_error = match (&state.reload_error, &state.last_error) {
            (Some(r), Some(e)) => format!("{e}; {r}"),
            (None, Some(e)) => e.clone(),
            (Some(r), None) => r.clone(),
            (None, None) => fallback.to_string(),
        };
        ShipperError::Undelivered {
            undelivered: u64::try_from(self.spool.len()).unwrap_or(u64::MAX),
            last_error,
        }
    }

    /// Runs until the process stops: sends every `flush_interval_secs` (±10 %), or at once when `wake`
    /// is notified (a new report); on failure backs off (full jitter, cap 5 minutes, honouring
    /// `Retry-After`).
    pub async fn run(self: Arc<Self>, wake: Arc<tokio::sync::Notify>) {
        loop {
            let _ = self.certificate_findings(None); // logs the warnings (expiry, identity)
            match self.step().await {
                Step::Progress { .. } => continue,
                // Held: checked again at every flush interval and at every new report, so new
                // certificate files end the hold within one interval.
                Step::Empty | Step::Held(_) => {
                    tokio::select! {
                        // ±10 % (uniform): hosts started together drift apart instead of
                        // calling the collector in step.
                        () = tokio::time::sleep(self.flush_interval.mul_f64(0.9 + 0.2 * fastrand::f64())) => {}
                        () = wake.notified() => {}
                    }
                }
                // A report pushed during the backoff does not cut it short (the collector is
                // struggling); `Notify` keeps the wake-up for after it.
                Step::Failed { wait, .. } | Step::Refused { wait, .. } => tokio::time::sleep(wait).await,
            }
        }
    }

    /// One pass: reload the credentials if changed, send one batch, act on the answer.
    async fn step(&self) -> Step {
        let _one = self.sending.lock().await;
        let client = self.reload_if_changed();
        if let Some(why) = self.held() {
            return Step::Held(why);
        }
        let batch = match self.next_batch() {
            Ok(b) => b,
            Err(e) => {
                let error = format!("spool: {e}");
                return Step::Failed { requests: 0, wait: self.record_failure(error, None) };
            }
        };
        if batch.is_empty() {
            return Step::Empty;
        }
        let mut requests = 1;
        match self.send(&client, &batch).await {
            Answer::Acked { stored, duplicates } => {
                Step::Progress { stored, duplicates, requests, set_aside: 0 }
            }
            Answer::Retry { error, retry_after } => {
                Step::Failed { requests, wait: self.record_failure(error, retry_after) }
            }
            Answer::Forbidden { error } => match self.made_as_another_host(&batch) {
                Some(now) => {
                    self.set_aside(&batch, &now, &error);
                    let set_aside = u64::try_from(batch.len()).unwrap_or(u64::MAX);
                    Step::Progress { stored: 0, duplicates: 0, requests, set_aside }
                }
                None => {
                    let error = credentials_refused(&error);
                    Step::Refused { wait: self.record_failure(error.clone(), None), error }
                }
            },
            Answer::Refused { status, message } if batch.len() == 1 => {
                self.quarantine(&batch[0], status, &message);
                Step::Progress { stored: 0, duplicates: 0, requests, set_aside: 1 }
            }
            Answer::Refused { status, message } => {
                // Which report the collector minds is unknown: send them one per request.
                tracing::info!(status, reports = batch.len(), message = %message, "transport: batch refused; sending its reports one per request");
                let (mut stored, mut duplicates, mut set_aside) = (0, 0, 0);
                for one in batch.chunks(1) {
                    requests += 1;
                    match self.send(&client, one).await {
                        Answer::Acked { stored: s, duplicates: d } => {
                            stored += s;
                            duplicates += d;
                        }
                        Answer::Refused { status, message } => {
                            self.quarantine(&one[0], status, &message);
                            set_aside += 1;
                        }
                        Answer::Retry { error, retry_after } => {
                            return Step::Failed { requests, wait: self.record_failure(error, retry_after) };
                        }
                        Answer::Forbidden { error } => {
                            let error = credentials_refused(&error);
                            return Step::Refused { wait: self.record_failure(error.clone(), None), error };
                        }
                    }
                }
                Step::Progress { stored, duplicates, requests, set_aside }
            }
        }
    }

    /// The oldest reports whose body fits in `batch_max_bytes` (at least one).
    fn next_batch(&self) -> Result<Vec<SpooledBatch>, crate::SpoolError> {
        let f = frames();
        let fixed = u64::try_from(f.open.len() + f.close.len()).unwrap_or(u64::MAX);
        let comma = u64::try_from(f.comma.len()).unwrap_or(u64::MAX);
        let mut batch = self.spool.pending(self.batch_max_bytes.saturating_sub(fixed))?;
        while batch.len() > 1 {
            let n = u64::try_from(batch.len()).unwrap_or(u64::MAX);
            let body: u64 = batch.iter().map(|b| u64::try_from(b.compressed.len()).unwrap_or(u64::MAX)).sum();
            if body + fixed + comma * (n - 1) <= self.batch_max_bytes {
                break;
            }
            batch.pop();
        }
        Ok(batch)
    }

    /// Sends one request and classifies the answer; acknowledges what the collector stored.
    async fn send(&self, client: &reqwest::Client, batch: &[SpooledBatch]) -> Answer {
        let body = request_body(batch);
        self.state().last_attempt_at = Some(Timestamp::now());
        let response = client
            .post(self.endpoint.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::CONTENT_ENCODING, "zstd")
            .body(body)
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                return Answer::Retry {
                    error: format!("POST {}: {}", self.endpoint, chain_text(&e)),
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, jiff::Timestamp::now()))
            .map(|d| d.min(self.tuning.retry_after_cap));
        let body = match read_capped(response, self.tuning.response_max_bytes).await {
            Ok(b) => b,
            Err(e) => {
                return Answer::Retry {
                    error: format!("POST {}: answer {status}: {e}", self.endpoint),
                    retry_after: None,
                };
            }
        };
        let code = status.as_u16();
        if status.is_success() {
            return match serde_json::from_slice::<IngestResponse>(&body) {
                Ok(answer) => self.acknowledge(batch, &answer),
                Err(e) => Answer::Retry {
                    error: format!(
                        "POST {}: answer {status} is not an IngestResponse ({e}): {}",
                        self.endpoint,
                        snippet(&body)
                    ),
                    retry_after: None,
                },
            };
        }
        let message = error_message(&body);
        let error = format!("POST {}: collector answered {status}: {message}", self.endpoint);
        // Security of the spool: a refusal sets reports aside for good, so it is believed only
        // from the collector itself, which always answers with its `ErrorBody`. A proxy or load
        // balancer in front (nginx answers 400 to a client certificate it does not accept, and
        // 413 above its `client_max_body_size`) said nothing about the reports: once every
        // report of the spool went to `rejected/` that way while status said "ok".
        let from_collector = serde_json::from_slice::<ErrorBody>(&body).is_ok();
        match code {
            400 | 413 | 415 | 422 if from_collector => Answer::Refused { status: code, message: error },
            // Several reports too large for the proxy: smaller requests may pass.
            413 if batch.len() > 1 => Answer::Refused { status: code, message: error },
            400 | 413 | 415 | 422 => Answer::Retry {
                error: format!(
                    "{error}; the answer is not the collector's (a proxy or load balancer in the \
                     way refused the request: its client-certificate or size settings?), so the \
                     reports stay spooled"
                ),
                retry_after: None,
            },
            429 | 503 => Answer::Retry { error, retry_after },
            401 | 403 => Answer::Forbidden { error },
            _ => Answer::Retry { error, retry_after: None },
        }
    }

    /// Deletes exactly the batches the collector answered for.
    fn acknowledge(&self, batch: &[SpooledBatch], answer: &IngestResponse) -> Answer {
        use guestward_report::ingest::BatchStatus;
        let sent: Vec<&str> = batch.iter().map(|b| b.batch_id.as_str()).collect();
        let answered: Vec<_> =
            answer.results.iter().filter(|r| sent.contains(&r.batch_id.as_str())).collect();
        if answered.is_empty() {
            return Answer::Retry {
                error: format!(
                    "POST {}: the collector's answer acknowledged none of the {} report(s) sent",
                    self.endpoint,
                    batch.len()
                ),
                retry_after: None,
            };
        }
        let ids: Vec<String> = answered.iter().map(|r| r.batch_id.clone()).collect();
        if let Err(e) = self.spool.acknowledge(&ids) {
            // Delivered but still spooled: sent again later, stored once by the collector.
            return Answer::Retry {
                error: format!("acknowledged but not removed from the spool: {e}"),
                retry_after: None,
            };
        }
        let stored = answered.iter().filter(|r| r.status == BatchStatus::Stored).count();
        let stored = u64::try_from(stored).unwrap_or(u64::MAX);
        let total = u64::try_from(ids.len()).unwrap_or(u64::MAX);
        let mut state = self.state();
        state.connected = true;
        state.last_success_at = Some(Timestamp::now());
        state.last_error = None;
        state.consecutive_failures = 0;
        state.next_attempt_at = None;
        state.delivered_total += total;
        Answer::Acked { stored, duplicates: total - stored }
    }

    /// The host this agent reports as now, when `batch` (one host's reports, see
    /// [`Spool::pending`]) was made as another: the host id changed (`[agent] host_id` edited,
    /// the agent first started before it was set). A certificate delivers only its own host's
    /// reports, so once the collector refused them these never can be, and keeping them at the
    /// head of the queue would block every newer report behind them. The newest report says
    /// which host the agent is now; while the refused reports are the newest, they wait (the
    /// certificate may be what is wrong).
    fn made_as_another_host(&self, batch: &[SpooledBatch]) -> Option<Option<String>> {
        let made_as = &batch.first()?.host_id;
        self.spool.newest_host_id().filter(|now| now != made_as)
    }

    /// Moves `batch` (refused as `error`, made as another host than `now`) to `spool/rejected/`.
    fn set_aside(&self, batch: &[SpooledBatch], now: &Option<String>, error: &str) {
        let shown = |id: &Option<String>| {
            id.as_deref().map_or_else(|| "no host id".to_string(), |h| format!("host {h:?}"))
        };
        let made_as = shown(&batch.first().and_then(|b| b.host_id.clone()));
        let now = shown(now);
        let reason = format!(
            "made as {made_as}, but this agent reports as {now} now (its host id changed), and the \
             collector refused it: {error}"
        );
        tracing::warn!(
            reports = batch.len(),
            made_as = %made_as,
            now = %now,
            "transport: reports made as another host than this agent is now were refused by the collector; moved to spool/rejected/ so newer reports go through"
        );
        let mut moved = 0u64;
        for b in batch {
            match self.spool.reject(&b.batch_id, &reason) {
                Ok(()) => moved += 1,
                Err(e) => {
                    tracing::warn!(batch_id = %b.batch_id, error = %e, "transport: cannot move a refused report aside")
                }
            }
        }
        let mut state = self.state();
        state.connected = true;
        state.rejected_total += moved;
        state.last_error = Some(format!("{moved} report(s) moved to spool/rejected/: {reason}"));
    }

    fn quarantine(&self, batch: &SpooledBatch, status: u16, message: &str) {
        tracing::warn!(batch_id = %batch.batch_id, status, collector = %message, "transport: the collector refused a report as malformed; moved to spool/rejected/");
        if let Err(e) = self.spool.reject(&batch.batch_id, message) {
            tracing::warn!(batch_id = %batch.batch_id, error = %e, "transport: cannot move a refused report aside");
        }
        let mut state = self.state();
        state.connected = true;
        state.rejected_total += 1;
        state.last_error = Some(format!("report {} moved to spool/rejected/: {message}", batch.batch_id));
    }

    /// Records a failed request; returns how long to wait.
    fn record_failure(&self, error: String, retry_after: Option<Duration>) -> Duration {
        let mut state = self.state();
        state.connected = false;
        state.consecutive_failures += 1;
        state.failed_total += 1;
        let wait = retry_after.unwrap_or_else(|| full_jitter(&self.tuning, state.consecutive_failures));
        tracing::warn!(error = %error, retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), "transport: delivery failed; reports stay spooled");
        state.last_error = Some(error);
        state.next_attempt_at = jiff::SignedDuration::try_from(wait)
            .ok()
            .and_then(|d| jiff::Timestamp::now().checked_add(d).ok())
            .map(Timestamp);
        wait
    }

    /// Transport state for `agentctl status`.
    pub fn status(&self) -> TransportStatus {
        let held = self.held();
        let cert = self.tls().cert.clone();
        let state = self.state();
        let identity_problem = identity_problem(&cert, state.reporting_as.as_deref());
        let last_error = match (&state.reload_error, &state.last_error) {
            (Some(r), Some(e)) => Some(format!("{r}; {e}")),
            (r, e) => r.clone().or_else(|| e.clone()),
        };
        TransportStatus {
            url: self.url.clone(),
            connected: state.connected,
            last_attempt_at: state.last_attempt_at,
            last_success_at: state.last_success_at,
            last_error,
            consecutive_failures: state.consecutive_failures,
            next_attempt_at: state.next_attempt_at,
            delivered_reports_total: state.delivered_total,
            failed_requests_total: state.failed_total,
            spool: self.spool.stats(),
            certificate: Some(CertificateStatus {
                path: cert.path.display().to_string(),
                subject: cert.subject.clone(),
                not_after: cert.not_after,
                days_left: cert.not_after.map(|t| days_left(t, jiff::Timestamp::now())),
                sha256: Some(cert.sha256.clone()),
                names: Some(describe_names(&cert.names)),
                identity_problem,
            }),
            held,
        }
    }

    /// Reports the collector refused as malformed and that were moved to `spool/rejected/`
    /// since the shipper started.
    pub fn rejected_total(&self) -> u64 {
        self.state().rejected_total
    }

    /// `GW-TLS-001` when the client certificate expires within 7 days (or has expired), and
    /// `GW-TLS-002` when it does not name `reporting_as` (the host id of the report being made;
    /// `None`: the newest spooled report's, or the last one seen). Each is also logged as a
    /// warning: expiry once a day, an identity problem once per certificate and problem.
    pub fn certificate_findings(&self, reporting_as: Option<&str>) -> Vec<Finding> {
        let cert = self.tls().cert.clone();
        let now = jiff::Timestamp::now();
        let mut findings = Vec::new();
        // The spool's lock is taken before the state's, never inside it.
        let seen = reporting_as.map(str::to_string).or_else(|| self.spool.newest_host_id().flatten());
        let mut state = self.state();
        if seen.is_some() {
            state.reporting_as = seen;
        }
        if let Some(finding) = expiry_finding(&cert, now) {
            let today = now.as_second().div_euclid(86_400);
            if state.expiry_warned_day != Some(today) {
                state.expiry_warned_day = Some(today);
                tracing::warn!(cert = %cert.path.display(), subject = %cert.subject, not_after = ?cert.not_after, "transport: {}", finding.title);
            }
            findings.push(finding);
        }
        if let Some(problem) = identity_problem(&cert, state.reporting_as.as_deref()) {
            let warned = (cert.sha256.clone(), problem.clone());
            if state.identity_warned.as_ref() != Some(&warned) {
                tracing::warn!(cert = %cert.path.display(), "transport: the client certificate {problem}");
                state.identity_warned = Some(warned);
            }
            findings.push(identity_finding(&cert, state.reporting_as.as_deref(), problem));
        }
        findings
    }
}

/// What the HTTPS client is built from (again on every credential change).
#[derive(Debug)]
struct ClientSpec {
    files: Files,
    tls_min_version: TlsVersion,
    use_system_roots: bool,
    proxy: Option<String>,
    connect_timeout: Duration,
    request_timeout: Duration,
}

impl ClientSpec {
    /// Reads the three files and builds a client that presents the certificate and trusts only
    /// the pinned roots.
    fn build_client(&self) -> Result<(reqwest::Client, CertInfo), ShipperError> {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = &self.files.ca {
            let pem = read_pem(ca, PEM_MAX_BYTES)?;
            let mut found = 0;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert =
                    cert.map_err(|e| credentials(ca, format!("is not a PEM certificate file: {e}")))?;
                roots.add(cert).map_err(|e| {
                    credentials(ca, format!("holds a certificate rustls refuses as a root: {e}"))
                })?;
                found += 1;
            }
            if found == 0 {
                return Err(credentials(ca, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
            }
        }
        if self.use_system_roots {
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                tracing::warn!(error = %e, "transport: part of the system trust store is unreadable");
            }
            let (added, ignored) = roots.add_parsable_certificates(native.certs);
            tracing::debug!(added, ignored, "transport: system roots added (use_system_roots)");
        }
        if roots.is_empty() {
            return Err(ShipperError::Config {
                key: "use_system_roots".into(),
                message: "the system trust store holds no usable certificate and no ca_file is set: nothing to verify the collector with".into(),
            });
        }

        let cert_pem = read_pem(&self.files.cert, PEM_MAX_BYTES)?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| credentials(&self.files.cert, format!("is not a PEM certificate file: {e}")))?;
        let Some(leaf) = chain.first() else {
            return Err(credentials(
                &self.files.cert,
                "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            ));
        };
        let cert = cert_info(&self.files.cert, leaf)?;
        let key = read_private_key(&self.files.key)?;

        // aws-lc-rs named here rather than the process default: the shipper works whether or
        // not the binary installed a default provider.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let versions: &[&'static rustls::SupportedProtocolVersion] = match self.tls_min_version {
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
            TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        };
        // Server certificate and name verification is rustls' WebPki verifier over `roots`:
        // nothing here can turn it off.
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| ShipperError::Config { key: "tls_min_version".into(), message: e.to_string() })?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| {
                credentials(
                    &self.files.key,
                    format!(
                        "cannot be used with {} ({e}): is it the key of that certificate?",
                        self.files.cert.display()
                    ),
                )
            })?;
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .https_only(true)
            // A redirect would carry the reports (and present the client certificate) to
            // another address: a 3xx is a failure like any other.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout)
            // The collector's name resolves even when the kernel refuses threads.
            .dns_resolver(guestward_core::dns::ThreadOrInlineResolver)
            .user_agent(concat!("guestward-agent/", env!("CARGO_PKG_VERSION")));
        // Without `proxy`, reqwest reads HTTPS_PROXY / NO_PROXY itself.
        if let Some(proxy) = &self.proxy {
            let p = reqwest::Proxy::https(proxy).map_err(|e| ShipperError::Config {
                key: "proxy".into(),
                message: format!("{e}: `{proxy}`"),
            })?;
            builder = builder.proxy(p);
        }
        let client = builder.build().map_err(|e| ShipperError::Config {
            key: "url".into(),
            message: format!("cannot build the HTTPS client: {}", chain_text(&e)),
        })?;
        Ok((client, cert))
    }
}

/// A 401/403 that is not about a changed host id: the credentials are what is wrong.
fn credentials_refused(error: &str) -> String {
    format!(
        "{error} (the collector refused this host's credentials: check cert_file, key_file and the host id)"
    )
}

/// Whole days from `now` to `not_after`, rounded down (negative once expired).
fn days_left(not_after: Timestamp, now: jiff::Timestamp) -> i64 {
    (not_after.0.as_second() - now.as_second()).div_euclid(86_400)
}

fn expiry_finding(cert: &CertInfo, now: jiff::Timestamp) -> Option<Finding> {
    let not_after = cert.not_after?;
    let left = not_after.0.as_second() - now.as_second();
    let warn = i64::try_from(EXPIRY_WARNING.as_secs()).unwrap_or(i64::MAX);
    if left >= warn {
        return None;
    }
    let days = days_left(not_after, now);
    let (severity, title) = if left <= 0 {
        (
            Severity::Critical,
            "The agent's client certificate has expired: the collector refuses its reports".to_string(),
        )
    } else {
        (Severity::High, format!("The agent's client certificate expires in {days} day(s)"))
    };
    Some(Finding {
        id: CERT_EXPIRY_FINDING.to_string(),
        severity,
        title,
        evidence: serde_json::json!({
            "path": cert.path.display().to_string(),
            "subject": cert.subject,
            "not_after": not_after,
            "days_left": days,
        }),
        remediation: "Issue a new certificate and key for this host (dev PKI: `guestward-collector pki issue-agent --dir D --host-id ID --force`) and replace cert_file and key_file; the shipper picks them up without a restart.".to_string(),
        source: "transport".to_string(),
    })
}

/// Who the collector reads `names` as: `host ID (SAN URI)`, `host ID (CN)`, `operator NAME`, or
/// why nobody.
fn describe_names(names: &Result<(Role, NamedIn), NamingError>) -> String {
    match names {
        Ok((role, NamedIn::SanUri)) => format!("{role} (SAN URI)"),
        Ok((role, NamedIn::CommonName)) => format!("{role} (CN)"),
        Err(e) => format!("nobody: {e}"),
    }
}

/// Why the collector will refuse every report made with `cert` by an agent reporting as
/// `reporting_as`, completing "the client certificate ...", or `None` when it accepts them or
/// the agent cannot tell (no host id yet: every certificate naming a host is given the benefit).
fn identity_problem(cert: &CertInfo, reporting_as: Option<&str>) -> Option<String> {
    match (&cert.names, reporting_as) {
        (Ok((Role::Host(id), _)), Some(now)) if id == now => None,
        (Ok((Role::Host(_), _)), None) => None,
        (Ok((Role::Host(_), _)), Some(now)) => Some(format!(
            "names {}, but this agent reports as host {now}: the collector refuses its reports (403)",
            describe_names(&cert.names)
        )),
        (Ok((Role::Operator(_), _)), _) => Some(format!(
            "names {}, not a host: the collector refuses reports made with it (403)",
            describe_names(&cert.names)
        )),
        (Err(e), _) => Some(format!("names nobody ({e}): the collector refuses it (401)")),
    }
}

/// `GW-TLS-002` for `problem` (from [`identity_problem`]).
fn identity_finding(cert: &CertInfo, reporting_as: Option<&str>, problem: String) -> Finding {
    Finding {
        id: CERT_IDENTITY_FINDING.to_string(),
        severity: Severity::High,
        title: format!("The agent's client certificate {problem}"),
        evidence: serde_json::json!({
            "path": cert.path.display().to_string(),
            "subject": cert.subject,
            "names": describe_names(&cert.names),
            "reporting_as": reporting_as,
            "sha256": cert.sha256,
        }),
        remediation: "Issue this host's certificate for the host id it reports as (dev PKI: `guestward-collector pki issue-agent --dir D --host-id ID --force`) and replace cert_file and key_file, or set `[agent] host_id` to the id the certificate names if that is the right one; the shipper picks new files up without a restart.".to_string(),
        source: "transport".to_string(),
    }
}

/// Full jitter: uniform in `[0, min(cap, base × 2^(failures-1))]`.
fn full_jitter(tuning: &ShipperTuning, failures: u64) -> Duration {
    let exp = u32::try_from(failures.saturating_sub(1).min(30)).unwrap_or(30);
    let ceiling = tuning.backoff_base.saturating_mul(2u32.saturating_pow(exp)).min(tuning.backoff_cap);
    let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(fastrand::u64(0..=ms))
}

/// `Retry-After`: delay-seconds or an HTTP date; a date in the past is 0.
pub fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new().parse_timestamp(value).ok()?;
    let secs = at.as_second().saturating_sub(now.as_second()).max(0);
    Some(Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

/// The fixed zstd frames of a request body.
struct Frames {
    open: Vec<u8>,
    comma: Vec<u8>,
    close: Vec<u8>,
}

fn frames() -> Frames {
    let frame = |s: &[u8]| zstd::bulk::compress(s, crate::spool::ZSTD_LEVEL).unwrap_or_default();
    Frames { open: frame(b"{\"reports\":["), comma: frame(b","), close: frame(b"]}") }
}

/// The request body: concatenated zstd frames decoding to `{"reports":[r1,r2,...]}`.
pub fn request_body(batch: &[SpooledBatch]) -> Vec<u8> {
    let f = frames();
    let size: usize = batch.iter().map(|b| b.compressed.len() + f.comma.len()).sum::<usize>()
        + f.open.len()
        + f.close.len();
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(&f.open);
    for (i, b) in batch.iter().enumerate() {
        if i > 0 {
            body.extend_from_slice(&f.comma);
        }
        body.extend_from_slice(&b.compressed);
    }
    body.extend_from_slice(&f.close);
    body
}

/// Reads an answer body, at most `cap` bytes.
async fn read_capped(mut response: reqwest::Response, cap: u64) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if u64::try_from(body.len() + chunk.len()).unwrap_or(u64::MAX) > cap {
                    return Err(format!("answer body larger than {cap} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(format!("reading the answer: {}", chain_text(&e))),
        }
    }
}

/// The collector's `ErrorBody.message`, else the start of the body.
fn error_message(body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => format!("{} ({})", e.message, e.error),
        Err(_) if body.is_empty() => "no message".to_string(),
        Err(_) => snippet(body),
    }
}

/// At most 300 characters of `body`, control characters escaped (it goes into logs).
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.chars().flat_map(char::escape_default).take(600).collect()
}

/// An error and its causes, joined: reqwest's own message hides the TLS reason in its sources.
fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let message = s.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = s.source();
    }
    text
}

/// A CA or certificate file: a regular file (a FIFO never blocks), at most `cap` bytes.
fn read_pem(path: &Path, cap: u64) -> Result<Vec<u8>, ShipperError> {
    guestward_core::read_regular_file_capped(path, cap, true).map_err(credentials_fs)
}

/// The client key. Refused when group or others may access it (a key others can read is no
/// longer this host's secret), when it is a symlink (`O_NOFOLLOW`: the mode checked must be
/// the key's own), not a regular file, or larger than 64 KiB.
fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, ShipperError> {
    let file = guestward_core::open_regular_file(path, false).map_err(credentials_fs)?;
    let meta = file.metadata().map_err(|e| credentials(path, e.to_string()))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(credentials(
            path,
            format!(
                "private key file has mode {mode:04o}: group or others may read it; refused. Run `chmod 600 {}` (and consider the key compromised if others could read it)",
                path.display()
            ),
        ));
    }
    let mut pem = Vec::new();
    file.take(KEY_MAX_BYTES + 1).read_to_end(&mut pem).map_err(|e| credentials(path, e.to_string()))?;
    if u64::try_from(pem.len()).unwrap_or(u64::MAX) > KEY_MAX_BYTES {
        return Err(credentials(path, format!("larger than {KEY_MAX_BYTES} bytes: not a key file")));
    }
    // The error names the PEM problem only, never key material.
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        credentials(path, format!("holds no usable PEM private key (PKCS#8, SEC1 or PKCS#1): {e}"))
    })
}

/// Subject CN and end of validity of the leaf certificate.
fn cert_info(path: &Path, der: &CertificateDer<'_>) -> Result<CertInfo, ShipperError> {
    use x509_cert::der::Decode;
    const CN: x509_cert::der::asn1::ObjectIdentifier =
        x509_cert::der::asn1::ObjectIdentifier::new_unwrap("2.5.4.3");
    let cert = x509_cert::Certificate::from_der(der.as_ref())
        .map_err(|e| credentials(path, format!("the first certificate is not valid X.509: {e}")))?;
    let tbs = &cert.tbs_certificate;
    let subject = tbs
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == CN)
        .map(|atv| String::from_utf8_lossy(atv.value.value()).into_owned())
        .unwrap_or_default();
    let secs = tbs.validity.not_after.to_unix_duration().as_secs();
    let not_after = i64::try_from(secs).ok().and_then(Timestamp::from_unix_secs);
    let names = guestward_report::client_identity::named_by(&cert);
    Ok(CertInfo { path: path.to_path_buf(), subject, not_after, sha256: sha256_hex(der.as_ref()), names })
}

/// Lowercase hex SHA-256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    guestward_core::text::hex(&sha2::Sha256::digest(bytes))
}

/// SHA-256 (lowercase hex) of the first certificate in the PEM file `path` (the leaf the
/// shipper presents): what the agent's identity records (`identity.json`). The file is read
/// as the shipper reads it (a regular file, at most 1 MiB).
pub fn certificate_sha256(path: &Path) -> Result<String, ShipperError> {
    let pem = read_pem(path, PEM_MAX_BYTES)?;
    let leaf = CertificateDer::pem_slice_iter(&pem)
        .next()
        .ok_or_else(|| credentials(path, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"))?
        .map_err(|e| credentials(path, format!("is not a PEM certificate file: {e}")))?;
    Ok(sha256_hex(leaf.as_ref()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let later = jiff::Timestamp::from_second(1_700_000_120).unwrap();
        let date = jiff::fmt::rfc2822::DateTimePrinter::new().timestamp_to_rfc9110_string(&later).unwrap();
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Thu, 01 Jan 1970 00:00:01 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn full_jitter_stays_under_the_doubling_ceiling_and_the_cap() {
        let t = ShipperTuning::default();
        for failures in 1..40 {
            let ceiling = Duration::from_secs(1 << (failures - 1).min(20)).min(Duration::from_secs(300));
            for _ in 0..50 {
                assert!(full_jitter(&t, failures) <= ceiling);
            }
        }
        // Full jitter: spread over the whole range, not bunched at the ceiling.
        let samples: Vec<_> = (0..200).map(|_| full_jitter(&t, 10)).collect();
        assert!(samples.iter().any(|d| *d < Duration::from_secs(100)));
        assert!(samples.iter().any(|d| *d > Duration::from_secs(200)));
    }

    #[test]
    fn concatenated_frames_decode_to_one_request() {
        let a = SpooledBatch {
            batch_id: "a".into(),
            host_id: Some("h".into()),
            sequence: Some(1),
            collected_at: Timestamp::now(),
            compressed: zstd::bulk::compress(br#"{"x":1}"#, 3).unwrap(),
        };
        let b = SpooledBatch { compressed: zstd::bulk::compress(br#"{"y":2}"#, 3).unwrap(), ..a.clone() };
        let body = request_body(&[a, b]);
        let json = zstd::stream::decode_all(&body[..]).unwrap();
        assert_eq!(String::from_utf8(json).unwrap(), r#"{"reports":[{"x":1},{"y":2}]}"#);
    }

    #[test]
    fn only_a_certificate_naming_the_host_reported_as_is_without_an_identity_problem() {
        let named = |names| CertInfo {
            path: "/c.pem".into(),
            subject: "cn".into(),
            not_after: None,
            sha256: String::new(),
            names,
        };
        let host = |id: &str, how| named(Ok((Role::Host(id.into()), how)));
        assert_eq!(identity_problem(&host("i-1", NamedIn::SanUri), Some("i-1")), None);
        assert_eq!(identity_problem(&host("i-1", NamedIn::CommonName), Some("i-1")), None);
        // No host id known yet: nothing says the certificate is wrong.
        assert_eq!(identity_problem(&host("i-1", NamedIn::SanUri), None), None);
        let p = identity_problem(&host("i-1", NamedIn::CommonName), Some("i-2")).unwrap();
        assert_eq!(
            p,
            "names host i-1 (CN), but this agent reports as host i-2: the collector refuses its reports (403)"
        );
        let operator = named(Ok((Role::Operator("alice".into()), NamedIn::SanUri)));
        let p = identity_problem(&operator, Some("i-1")).unwrap();
        assert!(p.starts_with("names operator alice (SAN URI), not a host") && p.contains("403"), "{p}");
        assert!(
            identity_problem(&operator, None).is_some(),
            "an operator's certificate is wrong for any host"
        );
        let nobody = named(Err(NamingError::Ambiguous));
        let p = identity_problem(&nobody, Some("i-1")).unwrap();
        assert!(p.starts_with("names nobody (") && p.contains("ambiguous") && p.ends_with("(401)"), "{p}");
        let f = identity_finding(&nobody, Some("i-1"), p);
        assert_eq!(
            (f.id.as_str(), f.severity, f.evidence["reporting_as"].as_str()),
            ("GW-TLS-002", Severity::High, Some("i-1"))
        );
    }

    #[test]
    fn expiry_is_high_within_a_week_and_critical_once_past() {
        let now = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let cert = |secs: i64| CertInfo {
            path: "/c.pem".into(),
            subject: "h".into(),
            not_after: Timestamp::from_unix_secs(1_700_000_000 + secs),
            sha256: String::new(),
            names: Ok((Role::Host("h".into()), NamedIn::SanUri)),
        };
        assert!(expiry_finding(&cert(8 * 86_400), now).is_none());
        let f = expiry_finding(&cert(3 * 86_400), now).unwrap();
        assert_eq!((f.id.as_str(), f.severity), ("GW-TLS-001", Severity::High));
        assert_eq!(f.evidence["days_left"], 3);
        assert_eq!(expiry_finding(&cert(-5), now).unwrap().severity, Severity::Critical);
        assert_eq!(days_left(Timestamp::from_unix_secs(1_700_000_000 - 5).unwrap(), now), -1);
    }
}
