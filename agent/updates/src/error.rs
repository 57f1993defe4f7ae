//! Why one input of the updates collector could not be read.

use guestward_core::{HostFsError, Problem};
use std::path::PathBuf;

/// One index, release file or database that could not be (fully) read. Each costs only
/// itself: the other inputs are still read.
#[derive(Debug, thiserror::Error)]
pub enum UpdatesError {
    /// The file could not be opened or read through the root.
    #[error(transparent)]
    Host(#[from] HostFsError),
    /// Decompression or reading failed part-way (a truncated or corrupt archive, a file over
    /// `max_index_bytes`). What was read before the failure is kept.
    #[error("{}: {source}", path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        source: std::io::Error,
    },
    /// An entry (a line, a stanza, an XML element) over `max_entry_bytes`; it was skipped.
    #[error("{}: {what} longer than {cap} bytes skipped (at entry {entry})", path.display())]
    EntryTooLong {
        /// The file.
        path: PathBuf,
        /// `line`, `stanza`, `XML element`.
        what: &'static str,
        /// Which entry (1-based stanza or element count).
        entry: u64,
        /// The cap.
        cap: u64,
    },
    /// The XML is not well formed; what was read before is kept.
    #[error("{}: malformed XML: {message}", path.display())]
    Xml {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A SQLite database (yum's `primary_db`) could not be opened or queried: damaged, not a
    /// database, or not yum's schema. Rows read before the failure are kept.
    #[error("{}: {message}", path.display())]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// SQLite's message.
        message: String,
    },
}

impl UpdatesError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Host(e) => e.code(),
            Self::Decode { source, .. } if source.kind() == std::io::ErrorKind::FileTooLarge => "too_large",
            Self::Decode { .. } => "corrupt",
            Self::EntryTooLong { .. } => "too_large",
            Self::Xml { .. } | Self::Sqlite { .. } => "malformed",
        }
    }

    /// The file concerned.
    pub fn path(&self) -> PathBuf {
        match self {
            Self::Host(e) => e.path().to_path_buf(),
            Self::Decode { path, .. }
            | Self::EntryTooLong { path, .. }
            | Self::Xml { path, .. }
            | Self::Sqlite { path, .. } => path.clone(),
        }
    }

    /// This error as a report problem.
    pub fn to_problem(&self) -> Problem {
        Problem::new(self.code(), self.to_string()).with_path(self.path().display().to_string())
    }
}
