//! Errors, each naming the database file and, for page formats, the byte offset.

use crate::header::HeaderError;
use guestward_core::{HostFsError, Problem};
use std::path::PathBuf;

/// A problem inside a Berkeley DB or NDB file, found by a page reader that knows only bytes
/// (the caller adds the path). `offset` is the byte offset in the file where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte offset {offset}: {reason}")]
pub struct FormatError {
    /// Byte offset in the file.
    pub offset: u64,
    /// What is wrong, in words.
    pub reason: String,
}

impl FormatError {
    /// A problem at `offset`.
    pub fn new(offset: u64, reason: impl Into<String>) -> Self {
        Self { offset, reason: reason.into() }
    }
}

/// Why an rpm database (or part of it) could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RpmdbError {
    /// None of the rpm directories holds a database file.
    #[error("no rpm database (rpmdb.sqlite, Packages.db or Packages) in {dirs}")]
    NotFound {
        /// The directories looked at, comma-separated.
        dirs: String,
    },
    /// The file could not be opened or read through the host root.
    #[error(transparent)]
    Host(#[from] HostFsError),
    /// The file exists but is none of the three formats.
    #[error("{}: not an rpm database this reader knows ({detail})", path.display())]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        detail: String,
    },
    /// SQLite refused the file or the query.
    #[error("{}: sqlite: {source}", path.display())]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// A Berkeley DB or NDB structure is damaged or unsupported.
    #[error("{}: {backend} {source}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// `bdb` or `ndb`.
        backend: &'static str,
        /// Where and what.
        source: FormatError,
    },
    /// One header blob is not a valid rpm header or failed its digest check.
    #[error("{}: header record {record}{}: {source}", path.display(), offset.map(|o| format!(" at byte offset {o}")).unwrap_or_default())]
    Header {
        /// The file.
        path: PathBuf,
        /// The record number (sqlite `hnum`, bdb key, ndb package index).
        record: u32,
        /// Byte offset of the blob in the file, when the format gives one.
        offset: Option<u64>,
        /// What is wrong with it.
        source: HeaderError,
    },
    /// One record of `rpmdb.sqlite` could not be read (a damaged row or overflow page, a
    /// blob column holding something else); the other records were still read.
    #[error("{}: sqlite record hnum {hnum}: {reason}", path.display())]
    SqliteRecord {
        /// The file.
        path: PathBuf,
        /// The record's `hnum`.
        hnum: i64,
        /// What is wrong with it.
        reason: String,
    },
    /// More unreadable records than are reported one by one.
    #[error("{}: {count} more sqlite records could not be read (not reported one by one)", path.display())]
    SqliteRecords {
        /// The file.
        path: PathBuf,
        /// How many.
        count: usize,
    },
    /// A damaged stretch of the `Packages` b-tree (a corrupt page): the records in it could
    /// not be listed; reading went on after it.
    #[error(
        "{}: sqlite records after {} could not be listed ({reason}); {}",
        path.display(),
        after.map(|h| format!("hnum {h}")).unwrap_or_else(|| "the start of the table".into()),
        resumed_at.map(|h| format!("reading resumed at hnum {h}")).unwrap_or_else(|| "nothing readable after them".into())
    )]
    SqliteGap {
        /// The last `hnum` read before the damage, if any.
        after: Option<i64>,
        /// The first `hnum` read after it, if any.
        resumed_at: Option<i64>,
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        reason: String,
    },
    /// Reading the database took longer than [`crate::Limits::sqlite_time_limit`]; what was
    /// read before is kept.
    #[error(
        "{}: stopped after the {limit:?} time limit for reading one rpm database; {read} records read{}, the rest not listed",
        path.display(),
        known.map(|k| format!(" of {k}")).unwrap_or_default()
    )]
    TimeLimit {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: std::time::Duration,
        /// Records read (blobs fetched) before the limit.
        read: usize,
        /// Records listed, when the listing finished.
        known: Option<usize>,
    },
    /// Under a non-live root the database is copied before SQLite opens it, and this one
    /// (with its `-wal` and `-journal`) is over the copy limit.
    #[error(
        "{}: {size} bytes with its -wal and -journal, over the {limit}-byte limit for copying a snapshot's rpm database before reading it; not read",
        path.display()
    )]
    SnapshotTooLarge {
        /// The file.
        path: PathBuf,
        /// Database plus sidecars, in bytes.
        size: u64,
        /// [`crate::Limits::max_snapshot_copy_bytes`].
        limit: u64,
    },
    /// The private copy of a snapshot's database could not be made.
    #[error("{}: could not copy into a private temporary directory ({}): {source}", path.display(), scratch.display())]
    Scratch {
        /// The database file.
        path: PathBuf,
        /// Where the copy was being written.
        scratch: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// More header records than the configured limit; the rest were not read.
    #[error("{}: more than {limit} header records; stopped reading", path.display())]
    TooManyHeaders {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: usize,
    },
}

impl RpmdbError {
    /// A stable machine-readable code for reports.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::Host(e) => e.code(),
            Self::UnknownFormat { .. } => "unknown_format",
            Self::Sqlite { .. } => "sqlite",
            Self::SqliteRecord { .. } | Self::SqliteRecords { .. } | Self::SqliteGap { .. } => "malformed",
            Self::TimeLimit { .. } => "limit_reached",
            Self::SnapshotTooLarge { .. } => "too_large",
            Self::Scratch { .. } => "io",
            Self::Format { .. } => "malformed",
            Self::Header { source: HeaderError::DigestMismatch { .. }, .. } => "digest_mismatch",
            Self::Header { .. } => "malformed_header",
            Self::TooManyHeaders { .. } => "limit_reached",
        }
    }

    /// The file concerned, when there is one.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Self::NotFound { .. } => None,
            Self::Host(e) => Some(e.path()),
            Self::UnknownFormat { path, .. }
            | Self::Sqlite { path, .. }
            | Self::Format { path, .. }
            | Self::Header { path, .. }
            | Self::SqliteRecord { path, .. }
            | Self::SqliteRecords { path, .. }
            | Self::SqliteGap { path, .. }
            | Self::TimeLimit { path, .. }
            | Self::SnapshotTooLarge { path, .. }
            | Self::Scratch { path, .. }
            | Self::TooManyHeaders { path, .. } => Some(path),
        }
    }

    /// The report form.
    pub fn to_problem(&self) -> Problem {
        let p = Problem::new(self.code(), self.to_string());
        match self.path() {
            Some(path) => p.with_path(path.display().to_string()),
            None => p,
        }
    }
}
