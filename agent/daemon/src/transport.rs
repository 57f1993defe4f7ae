//! The daemon's end of delivery: the spool and the shipper (`guestward-transport`), built once
//! from `[transport]`, shared by the pipeline (which pushes every full report into the spool),
//! the shipper's task (which drains it) and the control server (`agentctl status`).

use crate::config::Config;
use guestward_report::Report;
use guestward_transport::{DeliverySummary, PushOutcome, Shipper, ShipperError, Spool, SpoolError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The spool's directory inside `agent.state_dir`.
pub const SPOOL_DIR: &str = "spool";

/// Why delivery cannot be set up. The daemon does not start, and `run --once` stops, with it:
/// `[transport] enabled = true` is a promise that reports leave the host.
#[derive(Debug, thiserror::Error)]
pub enum TransportSetupError {
    /// The spool directory cannot be opened or created.
    #[error("[transport]: the spool cannot be used: {0}")]
    Spool(SpoolError),
    /// The CA, certificate or key cannot be loaded (missing, unreadable, not PEM, a key
    /// readable by others).
    #[error(
        "[transport]: the TLS credentials cannot be loaded: {0} (check transport.ca_file, \
         transport.cert_file and transport.key_file; the key must be mode 0600 or 0400)"
    )]
    Credentials(ShipperError),
}

// Not `#[from]`: that would also make the inner error the `source()`, and a chain printed with
// `{:#}` would then name the file and its problem twice (the message already includes it).
impl From<SpoolError> for TransportSetupError {
    fn from(e: SpoolError) -> Self {
        Self::Spool(e)
    }
}

impl From<ShipperError> for TransportSetupError {
    fn from(e: ShipperError) -> Self {
        Self::Credentials(e)
    }
}

/// The spool, the shipper and the bell that wakes the shipper when a report arrives.
#[derive(Debug)]
pub struct Transport {
    /// Reports on disk until the collector acknowledged them.
    pub spool: Arc<Spool>,
    /// Delivers what the spool holds.
    pub shipper: Arc<Shipper>,
    /// Notified after every push, so a new report goes out at once, not at the next flush.
    pub wake: Arc<tokio::sync::Notify>,
    /// Reports that could not be written to the spool (disk full, a damaged spool): counted
    /// and logged; their events stay unreported in the history, so the next report carries
    /// them.
    push_failures: AtomicU64,
}

impl Transport {
    /// The spool and shipper for `config`'s `[transport]`; `None` when it is not enabled.
    /// Opens the spool (`<state_dir>/spool`, created 0700) and loads the CA, certificate and
    /// key now, so a daemon that cannot deliver refuses to start instead of spooling forever.
    pub fn open(config: &Config) -> Result<Option<Arc<Self>>, TransportSetupError> {
        if !config.transport.enabled {
            return Ok(None);
        }
        let spool = Arc::new(Spool::open(
            &Self::spool_dir(config.agent.state_dir.as_path()),
            config.transport.spool_max_bytes,
        )?);
        let shipper = Arc::new(Shipper::new(&config.transport, Arc::clone(&spool))?);
        Ok(Some(Arc::new(Self::from_parts(spool, shipper))))
    }

    /// A transport over an opened spool and shipper (tests pick their own spool bound).
    pub fn from_parts(spool: Arc<Spool>, shipper: Arc<Shipper>) -> Self {
        Self { spool, shipper, wake: Arc::new(tokio::sync::Notify::new()), push_failures: AtomicU64::new(0) }
    }

    /// `<state_dir>/spool`.
    pub fn spool_dir(state_dir: &Path) -> PathBuf {
        state_dir.join(SPOOL_DIR)
    }

    /// Writes `report` to the spool (blocking: fsync), then wakes the shipper. `on_spooled`
    /// runs once the report is in the spool and before the shipper can see it (see
    /// [`Spool::push_then`]). A failure is counted and logged here; the caller leaves the
    /// report's events unreported.
    pub fn push(&self, report: &Report, on_spooled: impl FnOnce()) -> Result<PushOutcome, SpoolError> {
        match self.spool.push_then(report, on_spooled) {
            Ok(outcome) => {
                for drop in &outcome.dropped {
                    tracing::warn!(
                        batch_id = %drop.batch_id,
                        sequence = drop.sequence,
                        what = ?drop.what,
                        events = drop.events,
                        findings = drop.findings,
                        "the spool is full (transport.spool_max_bytes): data of an undelivered report was dropped"
                    );
                }
                self.wake.notify_one();
                Ok(outcome)
            }
            Err(e) => {
                self.count_push_failure();
                tracing::error!(
                    batch_id = %report.batch_id,
                    error = %e,
                    "the report could not be spooled; its events stay in the history for the next report"
                );
                Err(e)
            }
        }
    }

    /// Delivers everything the spool holds (reports of earlier runs included), retrying until
    /// `deadline`: `Ok` once the spool is empty, else why not (what was not delivered stays
    /// spooled). `run --once` and `POST /v1/flush` (`agentctl flush`) both wait this way. A
    /// pass of the daemon's own shipper task running at the same time takes turns with this
    /// one (the shipper sends one batch at a time), never sends a report twice at once.
    pub async fn deliver_within(&self, deadline: Duration) -> Result<DeliverySummary, Undelivered> {
        // The shipper's own deadline, and ours around it in case it overran: past either, what
        // is left stays spooled.
        match tokio::time::timeout(
            deadline.saturating_add(Duration::from_secs(5)),
            self.shipper.deliver_all(deadline),
        )
        .await
        {
            Ok(Ok(summary)) => Ok(summary),
            Ok(Err(ShipperError::Undelivered { undelivered, last_error })) => {
                Err(Undelivered::after(format!(
                    "{undelivered} report(s) not acknowledged within {}s: {last_error}",
                    deadline.as_secs()
                )))
            }
            Ok(Err(e @ ShipperError::CredentialsRefused { .. })) => {
                Err(Undelivered { message: e.to_string(), credentials_refused: true })
            }
            Ok(Err(e)) => Err(Undelivered::after(e.to_string())),
            Err(_) => {
                Err(Undelivered::after(format!("delivery did not finish within {}s", deadline.as_secs())))
            }
        }
    }

    /// Counts a push that did not complete.
    pub(crate) fn count_push_failure(&self) {
        self.push_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Pushes that failed since start.
    pub fn push_failures_total(&self) -> u64 {
        self.push_failures.load(Ordering::Relaxed)
    }
}

/// Why [`Transport::deliver_within`] left reports spooled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undelivered {
    /// For a person: how many, and the last failure.
    pub message: String,
    /// The collector refused this host's credentials: asking again will not help until the
    /// certificate, key or host id is fixed (`run --once` exits 2 at once instead of waiting
    /// out its timeout).
    pub credentials_refused: bool,
}

impl Undelivered {
    fn after(message: String) -> Self {
        Self { message, credentials_refused: false }
    }
}

impl std::fmt::Display for Undelivered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    /// The shipper's finding id is in the catalogue (which cannot name the transport crate:
    /// it depends on the report crate), under the source the shipper gives it.
    #[test]
    fn the_certificate_expiry_finding_is_catalogued() {
        let rule = guestward_report::catalogue::rule(guestward_transport::shipper::CERT_EXPIRY_FINDING);
        assert_eq!(rule.map(|r| r.source), Some("transport"));
    }
}
