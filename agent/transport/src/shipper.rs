//! The shipper: delivers spooled reports to the collector over mutual TLS.
//!
//! SKELETON (issue 11): the public API below is fixed; the bodies are being written.

use crate::{Spool, TransportConfig};
use guestward_core::Finding;
use guestward_report::protocol::TransportStatus;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
}

/// The shipper. See the module documentation.
#[derive(Debug)]
pub struct Shipper {
    spool: Arc<Spool>,
}

impl Shipper {
    /// A shipper for `config` (must be enabled and valid) draining `spool`. Reads the CA,
    /// certificate and key now: a missing file or a key readable by others is an error here.
    pub fn new(config: &TransportConfig, spool: Arc<Spool>) -> Result<Self, ShipperError> {
        let _ = config;
        Ok(Self { spool })
    }

    /// Delivers everything the spool holds (reports left by earlier runs included), retrying
    /// with backoff until `deadline`; `Ok` only when the spool is empty.
    pub async fn deliver_all(&self, deadline: Duration) -> Result<DeliverySummary, ShipperError> {
        let _ = (deadline, &self.spool);
        Ok(DeliverySummary::default())
    }

    /// Runs until the process stops: sends every `flush_interval_secs`, or at once when `wake`
    /// is notified (a new report); on failure backs off (full jitter, cap 5 minutes, honouring
    /// `Retry-After`).
    pub async fn run(self: Arc<Self>, wake: Arc<tokio::sync::Notify>) {
        wake.notified().await;
    }

    /// Transport state for `agentctl status`.
    pub fn status(&self) -> TransportStatus {
        TransportStatus { spool: self.spool.stats(), ..Default::default() }
    }

    /// `GW-TLS-001` when the client certificate expires within 7 days (or has expired).
    pub fn certificate_findings(&self) -> Vec<Finding> {
        Vec::new()
    }
}
