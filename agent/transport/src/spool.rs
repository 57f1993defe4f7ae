//! The durable spool: reports on disk until the collector acknowledged them.
//!
//! SKELETON (issue 11): the public API below is fixed; the bodies are being written.

use guestward_core::{Event, Timestamp};
use guestward_report::Report;
use std::path::{Path, PathBuf};

/// Why the spool could not do what was asked. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool directory or an entry could not be read or written.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A report larger than the whole spool.
    #[error("report {batch_id} is {bytes} bytes compressed, more than spool_max_bytes ({max_bytes})")]
    TooLarge {
        /// The report.
        batch_id: String,
        /// Its compressed size.
        bytes: u64,
        /// The bound.
        max_bytes: u64,
    },
}

/// The durable spool. See the module documentation.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
}

/// One spooled report, ready to send.
#[derive(Debug, Clone)]
pub struct SpooledBatch {
    /// The report's `batch_id`.
    pub batch_id: String,
    /// The report's `sequence`.
    pub sequence: Option<u64>,
    /// The report's `collected_at`.
    pub collected_at: Timestamp,
    /// The report's JSON, zstd-compressed.
    pub compressed: Vec<u8>,
}

/// What a push did besides storing the report.
#[derive(Debug, Clone, Default)]
pub struct PushOutcome {
    /// What the size bound made the spool drop to make room, in drop order.
    pub dropped: Vec<DropRecord>,
}

/// One drop forced by `spool_max_bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropRecord {
    /// The report that lost something.
    pub batch_id: String,
    /// Its sequence.
    pub sequence: Option<u64>,
    /// What it lost.
    pub what: DropClass,
    /// How many events went with it.
    pub events: u64,
    /// How many findings went with it.
    pub findings: u64,
}

/// What is dropped, in the order it is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropClass {
    /// 1. The inventory sections of a report that a newer spooled report supersedes (its
    ///    events and findings stay).
    SupersededSnapshot,
    /// 2. Events other than FIM changes and coverage gaps, oldest report first.
    NonFimEvents,
    /// 3. A whole report: its FIM events and findings, oldest first.
    Report,
}

impl DropRecord {
    /// The `transport.spool_dropped` event that reports this drop.
    pub fn to_event(&self, time: Timestamp) -> Event {
        Event {
            kind: "transport.spool_dropped".to_string(),
            time,
            data: serde_json::json!({
                "batch_id": self.batch_id,
                "sequence": self.sequence,
                "what": self.what,
                "events": self.events,
                "findings": self.findings,
            }),
        }
    }
}

impl Spool {
    /// Opens (creating, mode 0700) the spool in `dir`.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        Ok(Self { dir: dir.to_path_buf(), max_bytes })
    }

    /// Stores `report` durably; returns once it is on disk (fsync'd).
    pub fn push(&self, report: &Report) -> Result<PushOutcome, SpoolError> {
        let _ = (report, &self.dir, self.max_bytes);
        Ok(PushOutcome::default())
    }

    /// The spooled reports, oldest (lowest sequence) first, up to `max_bytes` compressed (at
    /// least one, however large).
    pub fn pending(&self, max_bytes: u64) -> Result<Vec<SpooledBatch>, SpoolError> {
        let _ = max_bytes;
        Ok(Vec::new())
    }

    /// Deletes acknowledged reports (durably). Unknown ids are ignored.
    pub fn acknowledge(&self, batch_ids: &[String]) -> Result<(), SpoolError> {
        let _ = batch_ids;
        Ok(())
    }

    /// Depth, size, oldest report and drop counters.
    pub fn stats(&self) -> guestward_report::protocol::SpoolStatus {
        guestward_report::protocol::SpoolStatus { max_bytes: self.max_bytes, ..Default::default() }
    }
}
