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
