//! `events.db`: the event history, bounded by age and count.
//!
//! Tables:
//! - `events (id, time_ns, kind, data)`: one row per stored event. `id` is `AUTOINCREMENT`, so
//!   an id is never handed out twice, not even after the newest rows were pruned and the agent
//!   restarted: a reader that remembers "I have seen up to id N" (the spool, `agentctl events
//!   --follow`) never skips or repeats an event.
//! - `meta (key, value)`: the persisted counters and the readers' high-water mark.
//! - `open_gaps (id)`: the ids of history-overflow `coverage.gap` events not closed yet.
//!
//! Why a file of its own rather than a table in `fim.db` or `state.db`: the history is written
//! on every drain (about once a second during a storm); a long FIM baseline transaction must
//! never hold it up, and the other way round.
//!
//! The file is a target: it is opened only if it is a regular file (a FIFO would hang the
//! daemon at start, a symlink could point it at any file to overwrite), created 0600 (events
//! name every watched file that changed), and an SQLite file of another program or a damaged
//! one is refused with its name instead of being written over or crashing the agent.

use crate::model::{AppendOutcome, Bounds, HistoryError, HistoryStats, KindPattern, Query, StoredEvent};
use crate::{GAP_CAUSE_OVERFLOW, KIND_GAP, overflow_gap_data};
use guestward_core::{Event, HostFsError, Timestamp};
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// File name of the history inside the state directory.
pub const DB_FILE: &str = "events.db";

/// `PRAGMA application_id` of an event history ("GWH1"): tells our file from another
/// program's SQLite database.
const APPLICATION_ID: i32 = 0x4757_4831;
/// `PRAGMA user_version`: the schema this code writes.
const SCHEMA_VERSION: i32 = 1;
/// How long a writer waits for another connection's lock (agentctl reading, say) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// `PRAGMA journal_size_limit`: the write-ahead log is cut back to this once it starts over.
/// SQLite never shrinks it otherwise, so the high-water mark of one storm of events would stay
/// on disk for as long as the daemon runs.
pub const WAL_KEPT_BYTES: i64 = 4 << 20;
/// Page cache, KiB (SQLite's default is 2,000). Events are appended at the end of the table
/// and read back in id order, so a few pages serve both; the default's 2 MB, filled by one
/// storm, stayed in the daemon's memory.
const CACHE_KIB: i64 = 512;

const META_DROPPED: &str = "dropped_total";
const META_DROPPED_UNSEEN: &str = "dropped_unseen_total";
const META_COALESCED: &str = "coalesced_total";
const META_OVERFLOW: &str = "overflow_dropped_total";
const META_SEEN: &str = "seen_through_id";

/// The open event history (one connection; the daemon owns it).
pub struct EventStore {
    conn: Connection,
    path: PathBuf,
    bounds: Bounds,
}

impl std::fmt::Debug for EventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStore").field("path", &self.path).field("bounds", &self.bounds).finish()
    }
}

/// Maps an SQLite error on `path`, telling damage apart from other failures.
fn sql_err(path: &Path, source: rusqlite::Error) -> HistoryError {
    match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            HistoryError::Corrupt { path: path.to_path_buf(), detail: source.to_string() }
        }
        _ => HistoryError::Sqlite { path: path.to_path_buf(), source },
    }
}

/// Nanoseconds since the epoch, clamped to what an `i64` holds (years 1677 to 2262).
fn to_ns(t: Timestamp) -> i64 {
    let ns = t.0.as_nanosecond();
    i64::try_from(ns).unwrap_or(if ns < 0 { i64::MIN } else { i64::MAX })
}

fn from_ns(ns: i64) -> Timestamp {
    // Every i64 of nanoseconds is inside jiff's range (years -9999 to 9999).
    Timestamp(jiff::Timestamp::from_nanosecond(i128::from(ns)).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Refuses anything but a regular file at `path` (when something is there). Goes through
/// core's door: `lstat` first, so a device node is never opened, then an `O_NONBLOCK |
/// O_NOFOLLOW` open (a FIFO swapped in cannot block us) and `fstat` on the descriptor.
fn check_regular(path: &Path) -> Result<Option<std::fs::File>, HistoryError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(HistoryError::Io { path: path.to_path_buf(), source }),
        Ok(_) => {}
    }
    match guestward_core::open_regular_file(path, false) {
        Ok(file) => Ok(Some(file)),
        Err(HostFsError::NotRegularFile { path, kind }) => Err(HistoryError::NotRegular { path, kind }),
        Err(e) => Err(HistoryError::File(e)),
    }
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

impl EventStore {
    /// Opens (creating if needed) the history at `path`, usually `<state dir>/events.db`. The
    /// parent directory is created 0700 if missing; the file is created 0600.
    ///
    /// Fails, naming the file, when it is not a regular file (FIFO, symlink, device...), when
    /// it is damaged or not SQLite, when it is another program's database, or when a newer
    /// agent wrote it.
    ///
    /// On a full filesystem, the state directory's reserve is freed so that it still opens
    /// (see [`guestward_core::reserve`]).
    pub fn open(path: &Path, bounds: Bounds) -> Result<Self, HistoryError> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let (opened, released) = guestward_core::reserve::open_with_room(
            dir,
            || Self::open_once(path, bounds),
            |e| match e {
                HistoryError::Sqlite { source, .. } => {
                    matches!(
                        source.sqlite_error_code(),
                        Some(ErrorCode::DiskFull | ErrorCode::SystemIoFailure)
                    )
                }
                HistoryError::Io { source, .. } => source.kind() == std::io::ErrorKind::StorageFull,
                _ => false,
            },
        );
        if released {
            tracing::warn!(path = %path.display(), "the filesystem of the state directory is full: its reserve was freed to open the event history");
        }
        opened
    }

    fn open_once(path: &Path, bounds: Bounds) -> Result<Self, HistoryError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| HistoryError::Io { path: dir.to_path_buf(), source })?;
        }
        // SQLite would open (and block on) a FIFO, follow a symlink, or adopt a stale -wal
        // that is not a file: all three are checked before SQLite sees the path.
        for side in [sidecar(path, "-wal"), sidecar(path, "-shm")] {
            check_regular(&side)?;
        }
        let file = match check_regular(path)? {
            Some(file) => file,
            // O_CREAT|O_EXCL never follows a symlink: a link planted after the check makes
            // this fail rather than create a file elsewhere. 0600 from the start: events name
            // every watched file that changed. SQLite gives -wal and -shm the same mode.
            None => match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => check_regular(path)?
                    .ok_or_else(|| HistoryError::Io { path: path.to_path_buf(), source: e })?,
                Err(source) => return Err(HistoryError::Io { path: path.to_path_buf(), source }),
            },
        };
        // On the descriptor, so a path swapped since the check cannot redirect the chmod. A
        // history left 0644 by hand is closed again.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|source| HistoryError::Io { path: path.to_path_buf(), source })?;
        drop(file);

        let err = |e| sql_err(path, e);
        // No CREATE (the file exists by now), no URI parsing of the path, no final symlink.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NOFOLLOW
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let real = guestward_core::state_file::sqlite_path(path)
            .map_err(|source| HistoryError::Io { path: path.to_path_buf(), source })?;
        let mut conn = Connection::open_with_flags(real, flags).map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;

        // The header is read here: a file that is not SQLite fails with NotADatabase.
        let app_id: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0)).map_err(err)?;
        let version: i32 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(err)?;
        if app_id == 0 {
            let objects: i64 =
                conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0)).map_err(err)?;
            if objects > 0 {
                return Err(HistoryError::Foreign {
                    path: path.to_path_buf(),
                    detail: format!(
                        "an SQLite database with {objects} tables or indexes and no guestward mark"
                    ),
                });
            }
        } else if app_id != APPLICATION_ID {
            return Err(HistoryError::Foreign {
                path: path.to_path_buf(),
                detail: format!("SQLite application id {app_id:#010x}"),
            });
        } else if version > SCHEMA_VERSION {
            return Err(HistoryError::NewerSchema {
                path: path.to_path_buf(),
                found: version,
                known: SCHEMA_VERSION,
            });
        }

        // WAL: `agentctl events` reading never blocks the daemon's writes. FULL: a committed
        // batch survives a power cut too (one fsync per batch, about one a second at most);
        // the spool reads from here, so a "stored" event must stay stored.
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(err)?;
        conn.pragma_update(None, "journal_size_limit", WAL_KEPT_BYTES).map_err(err)?;
        conn.pragma_update(None, "cache_size", -CACHE_KIB).map_err(err)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        tx.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT,
                 time_ns INTEGER NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS events_time ON events(time_ns);
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS open_gaps (id INTEGER PRIMARY KEY);
             PRAGMA application_id = {APPLICATION_ID};
             PRAGMA user_version = {SCHEMA_VERSION};"
        ))
        .map_err(err)?;
        tx.commit().map_err(err)?;
        let bounds = Bounds { max_age: bounds.max_age, max_events: bounds.max_events.max(2) };
        Ok(Self { conn, path: path.to_path_buf(), bounds })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bounds in force.
    pub fn bounds(&self) -> Bounds {
        self.bounds
    }

    /// Puts new bounds in force (a configuration reload); they apply from the next write or
    /// [`Self::prune`].
    pub fn set_bounds(&mut self, bounds: Bounds) {
        self.bounds = Bounds { max_age: bounds.max_age, max_events: bounds.max_events.max(2) };
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> HistoryError + '_ {
        |e| sql_err(&self.path, e)
    }

    /// Stores `events` in one transaction, in order, each with a new id, then applies the
    /// bounds (also in that transaction).
    pub fn append(&mut self, events: &[Event]) -> Result<AppendOutcome, HistoryError> {
        self.write(events, 0, 0)
    }

    /// Stores what the coalescer drained (its events, and its counts of coalesced and dropped
    /// events into the persisted counters), in one transaction.
    pub fn append_batch(&mut self, batch: &crate::Batch) -> Result<AppendOutcome, HistoryError> {
        self.write(&batch.events, batch.coalesced, batch.dropped)
    }

    /// Applies the bounds without writing events (for a quiet host: age still expires).
    pub fn prune(&mut self) -> Result<AppendOutcome, HistoryError> {
        self.write(&[], 0, 0)
    }

    fn write(
        &mut self,
        events: &[Event],
        coalesced: u64,
        overflow: u64,
    ) -> Result<AppendOutcome, HistoryError> {
        let path = self.path.clone();
        let err = |e| sql_err(&path, e);
        let bounds = self.bounds;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let mut outcome = AppendOutcome { appended: events.len(), ..AppendOutcome::default() };
        let ids = insert(&tx, events).map_err(err)?;
        outcome.first_id = ids.first().copied();
        outcome.last_id = ids.last().copied();
        add_counter(&tx, META_COALESCED, coalesced).map_err(err)?;
        add_counter(&tx, META_OVERFLOW, overflow).map_err(err)?;
        prune(&tx, &path, bounds, &mut outcome)?;
        tx.commit().map_err(err)?;
        if outcome.dropped_unseen > 0 {
            tracing::warn!(
                path = %self.path.display(),
                dropped = outcome.dropped_unseen,
                "events dropped from the history before any reader saw them; a coverage gap records it"
            );
        }
        Ok(outcome)
    }

    /// Events matching `query`, oldest first.
    pub fn query(&self, query: &Query) -> Result<Vec<StoredEvent>, HistoryError> {
        let mut out = Vec::new();
        self.for_each_row(query, |id, kind, time_ns, text| {
            let data = serde_json::from_str(text).map_err(|e| self.not_json(id, &e))?;
            out.push(StoredEvent { id, event: Event { kind, time: from_ns(time_ns), data } });
            Ok(())
        })?;
        Ok(out)
    }

    /// [`Self::query`] as the JSON text of the `Vec<StoredEvent>` it returns, written straight
    /// from the rows: each event's data stays the text it is stored as (checked to be JSON,
    /// never parsed into a tree). The control socket answers with this: a page of 1,000
    /// `fim.change` events is about 1 MB of text but 4 MB as `serde_json::Value`s.
    pub fn query_json(&self, query: &Query) -> Result<String, HistoryError> {
        let mut out = String::from("[");
        self.for_each_row(query, |id, kind, time_ns, text| {
            serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|e| self.not_json(id, &e))?;
            let head = serde_json::json!({"id": id, "kind": kind, "time": from_ns(time_ns)}).to_string();
            if out.len() > 1 {
                out.push(',');
            }
            // `{"id":..,"kind":..,"time":..}` with `,"data":<text>` put before its closing brace.
            out.push_str(head.strip_suffix('}').unwrap_or(&head));
            out.push_str(",\"data\":");
            out.push_str(text);
            out.push('}');
            Ok(())
        })?;
        out.push(']');
        Ok(out)
    }

    fn not_json(&self, id: i64, e: &serde_json::Error) -> HistoryError {
        HistoryError::Row { path: self.path.clone(), id, detail: format!("data is not JSON: {e}") }
    }

    /// Calls `row(id, kind, time_ns, data_text)` for each event matching `query`, oldest first.
    fn for_each_row(
        &self,
        query: &Query,
        mut row: impl FnMut(i64, String, i64, &str) -> Result<(), HistoryError>,
    ) -> Result<(), HistoryError> {
        let (exact, prefix) = match &query.kind {
            None => (None, None),
            Some(KindPattern::Exact(k)) => (Some(k.as_str()), None),
            Some(KindPattern::Prefix(p)) => (None, Some(p.as_str())),
        };
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, time_ns, kind, data FROM events
                 WHERE id > ?1 AND time_ns >= ?2
                   AND (?3 IS NULL OR kind = ?3)
                   AND (?4 IS NULL OR substr(kind, 1, length(?4)) = ?4)
                 ORDER BY id LIMIT ?5",
            )
            .map_err(self.err())?;
        let after = query.after_id.unwrap_or(i64::MIN);
        let since = query.since.map_or(i64::MIN, to_ns);
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![after, since, exact, prefix, limit]).map_err(self.err())?;
        while let Some(r) = rows.next().map_err(self.err())? {
            let id: i64 = r.get(0).map_err(self.err())?;
            let time_ns: i64 = r.get(1).map_err(self.err())?;
            let kind: String = r.get(2).map_err(|e| HistoryError::Row {
                path: self.path.clone(),
                id,
                detail: format!("kind: {e}"),
            })?;
            let text: String = r.get(3).map_err(|e| HistoryError::Row {
                path: self.path.clone(),
                id,
                detail: format!("data: {e}"),
            })?;
            row(id, kind, time_ns, &text)?;
        }
        Ok(())
    }

    /// The largest id stored (or ever handed out, if the newest rows were pruned); 0 when
    /// nothing was ever stored. `--follow` starts after it.
    pub fn last_id(&self) -> Result<i64, HistoryError> {
        last_id(&self.conn).map_err(self.err())
    }

    /// Records that a reader (the spool, or the report that carried them) has taken every
    /// event up to `through_id`: dropping those later is counted but opens no coverage gap.
    /// Never moves backwards.
    pub fn mark_seen(&mut self, through_id: i64) -> Result<(), HistoryError> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
                params![META_SEEN, through_id],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Closes every open history-overflow gap: appends, for each, a `coverage.gap` event with
    /// the same `id` and `end` set to `at`. The daemon calls this when a verification rescan
    /// finished after the gap opened (the rescan re-reports what the dropped events would have
    /// said). Returns the ids of the gaps closed.
    pub fn close_overflow_gaps(&mut self, at: Timestamp) -> Result<Vec<i64>, HistoryError> {
        let path = self.path.clone();
        let err = |e| sql_err(&path, e);
        let bounds = self.bounds;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let open: Vec<(i64, Option<String>)> = {
            let mut stmt = tx
                .prepare(
                    "SELECT g.id, e.data FROM open_gaps g LEFT JOIN events e ON e.id = g.id ORDER BY g.id",
                )
                .map_err(err)?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(err)?;
            rows.collect::<Result<_, _>>().map_err(err)?
        };
        let mut closing = Vec::new();
        let mut closed = Vec::new();
        for (id, data) in open {
            let Some(mut data) = data.and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok()) else {
                continue;
            };
            if let Some(obj) = data.as_object_mut() {
                obj.insert("end".into(), serde_json::json!(at));
                obj.insert(
                    "detail".into(),
                    serde_json::json!(
                        "closed: a verification rescan re-read what the dropped events covered"
                    ),
                );
            }
            closing.push(Event { kind: KIND_GAP.into(), time: at, data });
            closed.push(id);
        }
        tx.execute("DELETE FROM open_gaps", []).map_err(err)?;
        let mut outcome = AppendOutcome::default();
        insert(&tx, &closing).map_err(err)?;
        prune(&tx, &path, bounds, &mut outcome)?;
        tx.commit().map_err(err)?;
        Ok(closed)
    }

    /// Counters and extent of the history.
    pub fn stats(&self) -> Result<HistoryStats, HistoryError> {
        let err = self.err();
        let (stored, oldest_id, newest_id, oldest, newest) = self
            .conn
            .query_row("SELECT count(*), min(id), max(id), min(time_ns), max(time_ns) FROM events", [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            })
            .map_err(&err)?;
        let open_gaps: i64 =
            self.conn.query_row("SELECT count(*) FROM open_gaps", [], |r| r.get(0)).map_err(&err)?;
        Ok(HistoryStats {
            stored: to_u64(stored),
            oldest_id,
            newest_id,
            oldest: oldest.map(from_ns),
            newest: newest.map(from_ns),
            dropped_total: to_u64(counter(&self.conn, META_DROPPED).map_err(&err)?),
            dropped_unseen_total: to_u64(counter(&self.conn, META_DROPPED_UNSEEN).map_err(&err)?),
            coalesced_total: to_u64(counter(&self.conn, META_COALESCED).map_err(&err)?),
            overflow_dropped_total: to_u64(counter(&self.conn, META_OVERFLOW).map_err(&err)?),
            open_gaps: to_u64(open_gaps),
            seen_through_id: counter(&self.conn, META_SEEN).map_err(&err)?,
        })
    }
}

fn counter(conn: &Connection, key: &str) -> rusqlite::Result<i64> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get::<_, i64>(0))
        .optional()?
        .unwrap_or(0))
}

fn add_counter(tx: &Transaction<'_>, key: &str, by: u64) -> rusqlite::Result<()> {
    if by > 0 {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
            params![key, to_i64(by)],
        )?;
    }
    Ok(())
}

fn last_id(conn: &Connection) -> rusqlite::Result<i64> {
    // sqlite_sequence keeps the largest id ever given, even once its row is pruned.
    conn.query_row(
        "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),
                    coalesce((SELECT max(id) FROM events), 0))",
        [],
        |r| r.get(0),
    )
}

/// An overflow gap that is still open and not yet numbered: the store gives it its row id as
/// gap id and tracks it until a rescan closes it.
fn is_open_overflow_gap(e: &Event) -> bool {
    e.kind == KIND_GAP
        && e.data.get("cause").and_then(|c| c.as_str()) == Some(GAP_CAUSE_OVERFLOW)
        && e.data.get("end").is_none_or(|v| v.is_null())
}

/// Inserts `events` with consecutive new ids (the write transaction excludes other writers,
/// so the ids read here are ours); returns them.
fn insert(tx: &Transaction<'_>, events: &[Event]) -> rusqlite::Result<Vec<i64>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut next = last_id(tx)?.saturating_add(1);
    let mut stmt =
        tx.prepare_cached("INSERT INTO events (id, time_ns, kind, data) VALUES (?1, ?2, ?3, ?4)")?;
    let mut gap_stmt = tx.prepare_cached("INSERT OR IGNORE INTO open_gaps (id) VALUES (?1)")?;
    let mut ids = Vec::with_capacity(events.len());
    for e in events {
        let id = next;
        next = next.saturating_add(1);
        let text = if is_open_overflow_gap(e) {
            let mut data = e.data.clone();
            if let Some(obj) = data.as_object_mut()
                && obj.get("id").is_none_or(|v| v.is_null())
            {
                obj.insert("id".into(), serde_json::json!(id));
            }
            gap_stmt.execute([id])?;
            data.to_string()
        } else {
            e.data.to_string()
        };
        stmt.execute(params![id, to_ns(e.time), e.kind, text])?;
        ids.push(id);
    }
    Ok(ids)
}

/// What the bounds dropped in one write, gathered over the age and count passes so that one
/// write opens at most one gap.
#[derive(Debug, Default)]
struct Dropped {
    rows: u64,
    /// Events (not gap rows) above the readers' mark.
    unseen: u64,
    unseen_first_ns: Option<i64>,
    unseen_last_ns: Option<i64>,
    /// Open overflow gaps that were themselves dropped: folded into the new gap.
    folded_ids: Vec<i64>,
    folded_dropped: u64,
}

impl Dropped {
    fn needs_gap(&self) -> bool {
        self.unseen > 0 || !self.folded_ids.is_empty()
    }

    fn widen(&mut self, first: Option<i64>, last: Option<i64>) {
        if let Some(f) = first {
            self.unseen_first_ns = Some(self.unseen_first_ns.map_or(f, |x| x.min(f)));
        }
        if let Some(l) = last {
            self.unseen_last_ns = Some(self.unseen_last_ns.map_or(l, |x| x.max(l)));
        }
    }

    /// Gathers then deletes the rows matching `cond` (a WHERE clause on `events` with `?1`).
    fn take(&mut self, tx: &Transaction<'_>, cond: &str, param: i64, seen: i64) -> rusqlite::Result<()> {
        let (rows, unseen, first, last): (i64, i64, Option<i64>, Option<i64>) = tx.query_row(
            &format!(
                "SELECT count(*),
                        coalesce(sum(id > ?2 AND id NOT IN (SELECT id FROM open_gaps)), 0),
                        min(CASE WHEN id > ?2 AND id NOT IN (SELECT id FROM open_gaps) THEN time_ns END),
                        max(CASE WHEN id > ?2 AND id NOT IN (SELECT id FROM open_gaps) THEN time_ns END)
                 FROM events WHERE {cond}"
            ),
            params![param, seen],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        if rows == 0 {
            return Ok(());
        }
        self.rows += to_u64(rows);
        self.unseen += to_u64(unseen);
        self.widen(first, last);
        let folded: Vec<(i64, String)> = {
            let mut stmt = tx.prepare(&format!(
                "SELECT id, data FROM events WHERE {cond} AND id IN (SELECT id FROM open_gaps)"
            ))?;
            let rows = stmt.query_map([param], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for (id, data) in folded {
            self.folded_ids.push(id);
            let data: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
            self.folded_dropped += data.get("dropped").and_then(|d| d.as_u64()).unwrap_or(0);
            let time = |k: &str| {
                data.get(k).and_then(|v| serde_json::from_value::<Timestamp>(v.clone()).ok()).map(to_ns)
            };
            self.widen(time("first_time"), time("last_time"));
        }
        tx.execute(
            &format!("DELETE FROM open_gaps WHERE id IN (SELECT id FROM events WHERE {cond})"),
            [param],
        )?;
        tx.execute(&format!("DELETE FROM events WHERE {cond}"), [param])?;
        Ok(())
    }
}

/// Applies the age bound, then the count bound, dropping oldest first; counts what went and
/// opens one coverage gap for what went unseen.
fn prune(
    tx: &Transaction<'_>,
    path: &Path,
    bounds: Bounds,
    outcome: &mut AppendOutcome,
) -> Result<(), HistoryError> {
    let err = |e| sql_err(path, e);
    let seen = counter(tx, META_SEEN).map_err(err)?;
    let mut dropped = Dropped::default();
    let now = Timestamp::now();
    let max_age_ns = i64::try_from(bounds.max_age.as_nanos()).unwrap_or(i64::MAX);
    let cutoff = to_ns(now).saturating_sub(max_age_ns);
    dropped.take(tx, "time_ns < ?1", cutoff, seen).map_err(err)?;
    // Count: at most three passes. The first drops the excess; if that opened a gap, the
    // second drops one more to make room for the gap row; after that the room is fixed.
    let max = to_i64(bounds.max_events);
    for _ in 0..3 {
        let stored: i64 = tx.query_row("SELECT count(*) FROM events", [], |r| r.get(0)).map_err(err)?;
        let room = if dropped.needs_gap() { max - 1 } else { max };
        if stored <= room {
            break;
        }
        let excess = stored - room;
        let threshold: Option<i64> = tx
            .query_row("SELECT id FROM events ORDER BY id LIMIT 1 OFFSET ?1", [excess - 1], |r| r.get(0))
            .optional()
            .map_err(err)?;
        let Some(threshold) = threshold else { break };
        dropped.take(tx, "id <= ?1", threshold, seen).map_err(err)?;
    }
    outcome.dropped += dropped.rows;
    outcome.dropped_unseen += dropped.unseen;
    add_counter(tx, META_DROPPED, dropped.rows).map_err(err)?;
    add_counter(tx, META_DROPPED_UNSEEN, dropped.unseen).map_err(err)?;
    if dropped.needs_gap() {
        let first = from_ns(dropped.unseen_first_ns.unwrap_or_else(|| to_ns(now)));
        let last = from_ns(dropped.unseen_last_ns.unwrap_or_else(|| to_ns(now)));
        let lost = dropped.unseen + dropped.folded_dropped;
        let mut data = overflow_gap_data(
            lost,
            first,
            last,
            &format!(
                "{lost} events were dropped from the history (bounds: {} events, {} s) before any reader saw them",
                bounds.max_events,
                bounds.max_age.as_secs()
            ),
        );
        if !dropped.folded_ids.is_empty()
            && let Some(obj) = data.as_object_mut()
        {
            obj.insert("supersedes".into(), serde_json::json!(dropped.folded_ids));
        }
        let gap = Event { kind: KIND_GAP.into(), time: now, data };
        let ids = insert(tx, std::slice::from_ref(&gap)).map_err(err)?;
        outcome.gap_id = ids.first().copied();
    }
    Ok(())
}
