//! The history's types that readers need too (`agentctl`, the control protocol, the report):
//! queries, stored events, statistics, bounds and errors. Nothing here opens a file, so they
//! build without the `store` feature (and without SQLite).

use guestward_core::{Event, HostFsError, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Why the history failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// SQLite failed on the database file.
    #[cfg(feature = "store")]
    #[error("{}: {source}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The error.
        source: rusqlite::Error,
    },
    /// A file system operation failed (creating the state directory or the file).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Something other than a regular file is where the database (or its `-wal`/`-shm`) goes.
    #[error("{}: is a {kind}, not a regular file; refusing to use it for the event history", path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is instead ("fifo", "symlink", ...).
        kind: &'static str,
    },
    /// The file could not be opened through the regular-file door.
    #[error(transparent)]
    File(HostFsError),
    /// The file is damaged or is not an SQLite database at all.
    #[error(
        "{}: the event history is damaged or not an SQLite database ({detail}); move it aside and the agent starts a new one",
        path.display()
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// SQLite's words.
        detail: String,
    },
    /// The file is an SQLite database of another program.
    #[error("{}: not a guestward event history ({detail}); refusing to write into it", path.display())]
    Foreign {
        /// The database file.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// The file was written by a newer agent with a schema this one does not know.
    #[error("{}: event history schema {found} is newer than this agent's ({known}); upgrade the agent", path.display())]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Schema version in the file.
        found: i32,
        /// Schema version of this agent.
        known: i32,
    },
    /// One stored row cannot be read back.
    #[error("{}: event {id} is damaged: {detail}", path.display())]
    Row {
        /// The database file.
        path: PathBuf,
        /// The event id.
        id: i64,
        /// What is wrong with it.
        detail: String,
    },
    /// A `--kind` pattern is not a kind or a `prefix.*` glob.
    #[error("kind pattern {pattern:?}: {reason}")]
    BadKindPattern {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// How much history is kept. Both bounds apply; whichever is hit first drops the oldest events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Events whose time is older than this (against the wall clock at the time of the write)
    /// are dropped.
    pub max_age: Duration,
    /// At most this many events are kept (raised to 2 if lower: a drop needs room for the
    /// coverage gap that records it).
    pub max_events: u64,
}

impl Default for Bounds {
    /// 7 days, 100,000 events (see [`crate::HistoryConfig`]).
    fn default() -> Self {
        Self { max_age: Duration::from_secs(7 * 24 * 3600), max_events: 100_000 }
    }
}

/// Which kinds a query returns: one kind, or every kind under a prefix. In JSON and on the
/// command line it is the pattern text (`fim.change`, `network.*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String")]
pub enum KindPattern {
    /// Exactly this kind (`fim.change`).
    Exact(String),
    /// Every kind that starts with this text (`network.*` is `Prefix("network.")`; `*` is
    /// `Prefix("")`).
    Prefix(String),
}

impl KindPattern {
    /// Parses `fim.change` (exact) or `network.*` (prefix glob). Kinds are lower-case ASCII
    /// letters, digits, `_`, `-` and `.`; a `*` is allowed only at the end.
    pub fn parse(pattern: &str) -> Result<Self, HistoryError> {
        let bad = |reason| HistoryError::BadKindPattern { pattern: pattern.to_string(), reason };
        let (body, prefix) = match pattern.strip_suffix('*') {
            Some(body) => (body, true),
            None => (pattern, false),
        };
        if body.contains('*') {
            return Err(bad("`*` is allowed only at the end, as in `network.*`"));
        }
        if !body.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)) {
            return Err(bad("kinds are lower-case letters, digits, `_`, `-` and `.`, as in `fim.change`"));
        }
        if prefix {
            Ok(Self::Prefix(body.to_string()))
        } else if body.is_empty() {
            Err(bad("empty; give a kind (`fim.change`) or a prefix (`network.*`)"))
        } else {
            Ok(Self::Exact(body.to_string()))
        }
    }

    /// Whether `kind` matches.
    pub fn matches(&self, kind: &str) -> bool {
        match self {
            Self::Exact(k) => kind == k,
            Self::Prefix(p) => kind.starts_with(p.as_str()),
        }
    }
}

impl std::fmt::Display for KindPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(k) => f.write_str(k),
            Self::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

impl From<KindPattern> for String {
    fn from(p: KindPattern) -> Self {
        p.to_string()
    }
}

impl TryFrom<String> for KindPattern {
    type Error = HistoryError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl std::str::FromStr for KindPattern {
    type Err = HistoryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// What to read. All filters combine (AND); results come oldest first (by id). Absent fields
/// in JSON take the [`Default`] values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Query {
    /// Only events whose time is at or after this.
    pub since: Option<Timestamp>,
    /// Only events of these kinds.
    pub kind: Option<KindPattern>,
    /// Only events with an id greater than this (`--follow` polls with the last id it printed).
    pub after_id: Option<i64>,
    /// At most this many events (the oldest that match).
    pub limit: usize,
}

impl Default for Query {
    /// Everything, up to 1,000 events.
    fn default() -> Self {
        Self { since: None, kind: None, after_id: None, limit: 1000 }
    }
}

/// An event as stored: its id, then the event itself (flattened in JSON: `{"id", "kind",
/// "time", "data"}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StoredEvent {
    /// Monotonically increasing, never reused.
    pub id: i64,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

/// What one write did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AppendOutcome {
    /// Events written (the batch; the coverage gap a drop adds is not counted here).
    pub appended: usize,
    /// Id of the first event of the batch.
    pub first_id: Option<i64>,
    /// Id of the last event of the batch.
    pub last_id: Option<i64>,
    /// Events the bounds dropped in this write.
    pub dropped: u64,
    /// Of those, events no reader had seen (see `EventStore::mark_seen`).
    pub dropped_unseen: u64,
    /// The coverage gap this write opened for unseen drops, if any.
    pub gap_id: Option<i64>,
}

/// The state of the history, for `agentctl status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryStats {
    /// Events stored now.
    pub stored: u64,
    /// Smallest id stored.
    pub oldest_id: Option<i64>,
    /// Largest id stored.
    pub newest_id: Option<i64>,
    /// Earliest event time stored.
    pub oldest: Option<Timestamp>,
    /// Latest event time stored.
    pub newest: Option<Timestamp>,
    /// Events dropped by the age and count bounds, ever (persisted).
    pub dropped_total: u64,
    /// Of those, events no reader had seen: each such drop left a coverage gap.
    pub dropped_unseen_total: u64,
    /// Events folded into storm summaries by the coalescer, ever (a summary of `count` events
    /// adds `count - 1`).
    pub coalesced_total: u64,
    /// Events the coalescer dropped at its memory cap, ever (each drop left a coverage gap).
    pub overflow_dropped_total: u64,
    /// History-overflow coverage gaps not closed yet by a verification rescan.
    pub open_gaps: u64,
    /// The highest id a reader has marked as seen.
    pub seen_through_id: i64,
}
