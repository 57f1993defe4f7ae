//! The baseline store: `fim.db` (SQLite, WAL) in the state directory.
//!
//! Why SQLite (rusqlite, bundled) rather than redb: the workspace already carries one bundled
//! SQLite (the state database, and reading `rpmdb.sqlite`), so the FIM adds no second storage
//! engine to audit or to build; WAL gives crash safety (a killed scan loses at most its
//! uncommitted batch, never corrupts the baseline); and the diff between a finished scan and
//! the baseline is two streaming SQL joins over indexed paths, so a baseline of a million
//! files is compared without holding it in memory. redb measured faster on bulk insert here
//! (1.9 s vs 5.1 s per million rows) but our scans are bound by hashing, not by inserts.
//!
//! The FIM has its own file rather than a table in `state.db` so that a long baseline write
//! transaction never blocks the other collectors' state updates.
//!
//! Tables:
//! - `files`: the accepted baseline, one row per path (path bytes as BLOB: non-UTF-8 names are
//!   kept exactly).
//! - `staging`: what the scan in progress has seen. A scan writes here only; the baseline is
//!   replaced (or diffed) only once the scan finished, so an interrupted scan never shows
//!   partial state as changes.
//! - `resume`: when an interrupted scan is restarted, its staged rows move here; the new walk
//!   stages again each entry it finds unchanged (without re-hashing it), so the staging table
//!   ends up holding exactly what *this* run saw, and a file deleted in between is reported
//!   removed like in a fresh scan.
//! - `meta`: key/value (scan in progress, last scan, baseline time, baseline seal).
//! - `events`: the change and gap events for `agentctl fim events --since`.
//!
//! Every row read is validated (type code, permission bits, uid/gid/size ranges, hash lengths
//! for their algorithm, xattr encoding): a damaged row is reported naming its path and column
//! ([`RowFault::Damaged`]) instead of silently disabling a comparison (a truncated hash used to
//! turn the content check off) or failing the whole diff with an SQLite conversion message.
//! With a baseline key, rows and the row set are sealed ([`crate::integrity`]).

use crate::integrity::{BaselineKey, canonical_row};
use crate::record::{FLAG_HASH_SKIPPED, FLAG_UNREADABLE, FLAG_UNSTABLE, FileKind, FileRecord};
use guestward_core::{Event, Timestamp};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite error on the database file.
    #[error("{}: {source}{}", path.display(), space_hint(path, source))]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The error.
        source: rusqlite::Error,
    },
    /// Could not create the state directory.
    #[error("{}: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// One stored row cannot be used.
    #[error("{}: {table} row for {path} {fault}", db.display())]
    Row {
        /// The database file.
        db: PathBuf,
        /// `files` (the baseline), `staging` or `resume`.
        table: &'static str,
        /// The host path of the row (escaped).
        path: String,
        /// What is wrong with it.
        fault: RowFault,
    },
}

/// Below this much room on the state directory's filesystem, a failed write says so.
const LOW_SPACE_BYTES: u64 = 16 << 20;

/// When SQLite failed to write (full, or an I/O error, which is how some writes to a full
/// filesystem come back: `fim check` on a full disk said only "disk I/O error"), how little
/// room the filesystem holding `db` has left, read now. Empty for any other error, or when
/// there is room.
fn space_hint(db: &Path, e: &rusqlite::Error) -> String {
    if !write_refused(e) {
        return String::new();
    }
    let dir = db.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    low_space_words(guestward_core::reserve::free_bytes(dir).ok())
}

/// Whether SQLite failed for want of room: `SQLITE_FULL`, or an I/O error, which is how a
/// full filesystem refuses some writes and the `-shm` file an open needs.
fn write_refused(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure)
    )
}

/// [`space_hint`]'s words for `free` bytes left (`None`: not known).
fn low_space_words(free: Option<u64>) -> String {
    match free {
        Some(free) if free < LOW_SPACE_BYTES => {
            format!(
                " (the filesystem holding it has {} KiB left: free some space, then run it again)",
                free >> 10
            )
        }
        _ => String::new(),
    }
}

/// Why one stored row cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowFault {
    /// A column holds a value the agent never writes (disk damage, an interrupted write by a
    /// buggy version, or an edit).
    #[error("is damaged: column `{column}`: {detail}")]
    Damaged {
        /// The column.
        column: &'static str,
        /// What is wrong with its value.
        detail: String,
    },
    /// The row's seal does not match it: it was written outside the agent.
    #[error("does not match its seal: it was rewritten or inserted outside the agent")]
    Tampered,
}

impl RowFault {
    fn damaged(column: &'static str, detail: impl Into<String>) -> Self {
        Self::Damaged { column, detail: detail.into() }
    }
}

/// File name of the FIM database inside the state directory.
pub const DB_FILE: &str = "fim.db";

/// `PRAGMA journal_size_limit`: what the write-ahead log keeps on disk once it starts over.
/// SQLite reuses the file from its start after each checkpoint but never shrinks it, so one
/// storm of changes (300,000 new files wrote a 175 MB `fim.db-wal`) would keep its high-water
/// mark on disk for as long as the daemon runs.
const WAL_KEPT_BYTES: i64 = 4 << 20;

/// The record columns, in the order [`Store::record`] decodes them (a macro so that whole
/// statements can be `concat!`ed at compile time: see [`select_by_path`]).
macro_rules! cols {
    () => {
        "kind, mode, uid, gid, size, mtime_ns, ctime_ns, inode, link_target, xattrs, sha256, blake3, flags, md5"
    };
}
const COLS: &str = cols!();

/// The statement that reads one row of `table` by path. The two tables looked up once per
/// file (100k times in a scan of /usr) get theirs without formatting it each time.
fn select_by_path(table: &'static str) -> std::borrow::Cow<'static, str> {
    match table {
        "files" => concat!("SELECT ", cols!(), ", mac FROM files WHERE path = ?1").into(),
        "staging" => concat!("SELECT ", cols!(), ", mac FROM staging WHERE path = ?1").into(),
        other => format!("SELECT {COLS}, mac FROM {other} WHERE path = ?1").into(),
    }
}

/// The rows of `table` from `?1` to `?2`, with their paths ([`Store::baseline_records`]).
fn select_range(table: &'static str) -> std::borrow::Cow<'static, str> {
    match table {
        "files" => concat!(
            "SELECT path, ",
            cols!(),
            ", mac FROM files WHERE path >= ?1 AND path <= ?2 ORDER BY path"
        )
        .into(),
        "staging" => concat!(
            "SELECT path, ",
            cols!(),
            ", mac FROM staging WHERE path >= ?1 AND path <= ?2 ORDER BY path"
        )
        .into(),
        other => {
            format!("SELECT path, {COLS}, mac FROM {other} WHERE path >= ?1 AND path <= ?2 ORDER BY path")
                .into()
        }
    }
}

/// The statement that writes one row (the scan's writer runs it once per entry).
fn insert(conflict: &str, table: &str) -> std::borrow::Cow<'static, str> {
    macro_rules! insert {
        ($conflict:literal, $table:literal) => {
            concat!(
                "INSERT ",
                $conflict,
                " INTO ",
                $table,
                " (path, ",
                cols!(),
                ", mac) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16)"
            )
        };
    }
    match (conflict, table) {
        ("OR REPLACE", "staging") => insert!("OR REPLACE", "staging").into(),
        ("OR IGNORE", "staging") => insert!("OR IGNORE", "staging").into(),
        _ => format!(
            "INSERT {conflict} INTO {table} (path, {COLS}, mac) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16)"
        )
        .into(),
    }
}

/// Number of columns in [`COLS`]; the row MAC follows them in every `SELECT`.
const NCOLS: usize = 14;
/// Rows not wanted that a merged lookup steps over before it seeks again (see
/// [`Store::baseline_records`]): a seek costs about what a few steps do, and a subdirectory met
/// in a run may hold thousands of rows.
const MAX_ROWS_STEPPED_OVER: usize = 4;
/// Meta key of the row-set seal.
const META_SEAL: &str = "baseline.seal";
/// Meta key of the baseline's generation: a number every write of baseline rows raises (see
/// [`Store::generation`]).
const META_GENERATION: &str = "baseline.generation";
/// Meta key of the trust anchor's verdict kept with the baseline (see [`crate::verdict`]).
const META_VERDICT: &str = "anchor.verdict";

/// One open connection to `fim.db`.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    key: Option<Arc<BaselineKey>>,
    /// The generation this connection's last write of baseline rows set.
    written: std::cell::Cell<Option<u64>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).field("key", &self.key).finish()
    }
}

/// One item of a diff between a finished scan and the baseline.
#[derive(Debug)]
pub struct DiffItem {
    /// The host path.
    pub path: PathBuf,
    /// Baseline record (`None` when absent or unusable: see `old_fault`).
    pub old: Option<FileRecord>,
    /// Scanned record (`None` when absent or unusable: see `new_fault`).
    pub new: Option<FileRecord>,
    /// The baseline row exists but is damaged or does not match its seal.
    pub old_fault: Option<RowFault>,
    /// The staged row exists but is damaged or does not match its seal.
    pub new_fault: Option<RowFault>,
}

/// What the row-set seal says, as found by [`Store::verify_seal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealVerdict {
    /// This store has no key.
    NoKey,
    /// The baseline carries no seal.
    Absent,
    /// Sealed with another key.
    Foreign {
        /// The id of the key that sealed it.
        key_id: String,
    },
    /// The seal record itself is not authentic (its tag does not verify).
    BadTag,
    /// The rows are not the rows that were sealed (added, removed or replaced).
    Mismatch {
        /// Rows now.
        rows_now: u64,
        /// Rows when sealed.
        rows_sealed: u64,
    },
    /// The rows are the sealed ones.
    Valid {
        /// Rows sealed.
        rows: u64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct SealRecord {
    key_id: String,
    rows: u64,
    xor: String,
    tag: String,
}

/// A set of `files` rows whose MACs a write changes: the seal is updated by XOR-ing them out
/// before the write and back in after it.
#[derive(Debug, Clone, Copy)]
enum Span<'a> {
    /// One path.
    Exact(&'a Path),
    /// Everything strictly below a path.
    Below(&'a Path),
    /// A path and everything below it.
    Tree(&'a Path),
}

#[derive(Debug, Default, Clone, Copy)]
struct Aggregate {
    rows: u64,
    xor: [u8; 32],
}

fn xor_into(acc: &mut [u8; 32], mac: &[u8]) {
    if mac.len() == 32 {
        for (a, b) in acc.iter_mut().zip(mac) {
            *a ^= b;
        }
    }
}

/// `[lo, hi)` byte range holding every path strictly below `root`, plus `root` itself.
fn prefix_bounds(root: &Path) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let exact = root.as_os_str().as_bytes().to_vec();
    let mut lo = exact.clone();
    if lo.last() != Some(&b'/') {
        lo.push(b'/');
    }
    let mut hi = lo.clone();
    // '/' (0x2f) + 1 = '0': every path starting with `root/` sorts below `root0`.
    if let Some(last) = hi.last_mut() {
        *last = b'0';
    }
    (exact, lo, hi)
}

/// The ranges of paths `roots` cover, each half-open (start included, end not), sorted and
/// merged: a root itself (up to the root followed by a NUL byte, which no path holds: only the
/// root sorts in between) and everything below it (see [`prefix_bounds`]).
fn covered_ranges(roots: &[PathBuf]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut ranges = Vec::with_capacity(roots.len() * 2);
    for root in roots {
        let (exact, lo, hi) = prefix_bounds(root);
        let mut after = exact.clone();
        after.push(0);
        ranges.push((exact, after));
        ranges.push((lo, hi));
    }
    ranges.sort_unstable();
    let mut merged: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some((_, last_end)) if start <= *last_end => {
                if end > *last_end {
                    *last_end = end;
                }
            }
            _ => merged.push((start, end)),
        }
    }
    merged
}

impl Store {
    /// Opens (creating if needed) `state_dir/fim.db` without a baseline key: rows are neither
    /// sealed nor verified, and a write to the baseline drops its seal (a later check with the
    /// key then says "unsealed" rather than pretend).
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        Self::open_keyed(state_dir, None)
    }

    /// Opens (creating if needed) `state_dir/fim.db`. The directory is created with mode 0700:
    /// the baseline tells an attacker which files are watched and how. With `key`, every row
    /// written is sealed and every row read from a sealed baseline is verified.
    ///
    /// On a full filesystem, the state directory's reserve is freed so that it still opens
    /// (see [`guestward_core::reserve`]).
    pub fn open_keyed(state_dir: &Path, key: Option<Arc<BaselineKey>>) -> Result<Self, StoreError> {
        let (opened, released) = guestward_core::reserve::open_with_room(
            state_dir,
            || Self::open_keyed_once(state_dir, key.clone()),
            |e| match e {
                StoreError::Sqlite { source, .. } => write_refused(source),
                StoreError::Io { source, .. } => source.kind() == std::io::ErrorKind::StorageFull,
                StoreError::Row { .. } => false,
            },
        );
        if released {
            tracing::warn!(state_dir = %state_dir.display(), "the filesystem of the state directory is full: its reserve was freed to open the FIM baseline");
        }
        opened
    }

    fn open_keyed_once(state_dir: &Path, key: Option<Arc<BaselineKey>>) -> Result<Self, StoreError> {
        use std::os::unix::fs::DirBuilderExt;
        if !state_dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(state_dir)
                .map_err(|source| StoreError::Io { path: state_dir.to_path_buf(), source })?;
        }
        let path = state_dir.join(DB_FILE);
        let err = |source| StoreError::Sqlite { path: path.clone(), source };
        let refuse = |kind: std::io::ErrorKind, why: String| StoreError::Io {
            path: path.clone(),
            source: std::io::Error::new(kind, why),
        };
        // Security: the state directory is the agent's own (0700), yet a link planted there
        // must not make the agent write a database into, or change the mode of, a file
        // elsewhere. SQLite refuses a link too (NOFOLLOW); this says why in words.
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refuse(
                    std::io::ErrorKind::InvalidInput,
                    "is a symbolic link; the baseline must be a regular file (remove the link)".into(),
                ));
            }
            Ok(m) if !m.is_file() => {
                return Err(refuse(
                    std::io::ErrorKind::InvalidInput,
                    "is not a regular file; the baseline must be one (remove it, then `fim init`)".into(),
                ));
            }
            _ => {}
        }
        use rusqlite::OpenFlags;
        let real = guestward_core::state_file::sqlite_path(&path)
            .map_err(|source| StoreError::Io { path: path.clone(), source })?;
        let conn = Connection::open_with_flags(
            &real,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )
        .map_err(err)?;
        // SQLite opens a file it may not write read-only without a word, and fails at the
        // first write; every scan, a check's too, stages rows in the baseline.
        if conn.is_readonly(rusqlite::MAIN_DB).map_err(err)? {
            return Err(refuse(
                std::io::ErrorKind::PermissionDenied,
                "is not writable by this user; every scan (a check's too) stages its rows in the \
                 baseline: run as the user that owns it, or give that user write access"
                    .into(),
            ));
        }
        // At most 0600: the baseline maps every watched file, and SQLite gives its -wal and
        // -shm files the mode of the database file. Only group and other bits are taken away,
        // through the descriptor (never a path that could have been swapped), and only when set.
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            let restrict = || -> std::io::Result<()> {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
                    .open(&path)?;
                let mode = file.metadata()?.permissions().mode() & 0o7777;
                if mode & 0o077 != 0 {
                    file.set_permissions(std::fs::Permissions::from_mode(mode & 0o700))?;
                }
                Ok(())
            };
            restrict().map_err(|source| StoreError::Io { path: path.clone(), source })?;
        }
        conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(err)?;
        // WAL: readers (status queries) never block the scan's writer, and a crash leaves the
        // last committed transaction intact. NORMAL sync is durable against process crashes,
        // which is what a mid-scan kill is.
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        conn.pragma_update(None, "journal_size_limit", WAL_KEPT_BYTES).map_err(err)?;
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS files (path BLOB PRIMARY KEY, {COLS}, mac BLOB) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS staging (path BLOB PRIMARY KEY, {COLS}, mac BLOB) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS resume (path BLOB PRIMARY KEY, {COLS}, mac BLOB) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT,
                 time_ns INTEGER NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS events_time ON events(time_ns);"
        ))
        .map_err(err)?;
        // Databases written before rows were sealed lack the `mac` column, and those written
        // before package files kept their MD5 the `md5` column (NULL: not known, read again).
        for (table, column) in
            [("files", "mac"), ("staging", "mac"), ("files", "md5"), ("staging", "md5"), ("resume", "md5")]
        {
            let present: i64 = conn
                .query_row(
                    "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2",
                    [table, column],
                    |r| r.get(0),
                )
                .map_err(err)?;
            if present == 0 {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} BLOB")).map_err(err)?;
            }
        }
        Ok(Self { conn, path, key, written: std::cell::Cell::new(None) })
    }

    /// Opens `state_dir/fim.db` read-only, for a reader with no monitor running (the report's
    /// FIM section): never creates the directory or the database, and writes nothing. `None`
    /// when there is no database.
    pub fn open_read_only(state_dir: &Path) -> Result<Option<Self>, StoreError> {
        use rusqlite::OpenFlags;
        let path = state_dir.join(DB_FILE);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                let why = "is not a regular file (a link, a FIFO?): not read; the baseline must be one";
                return Err(StoreError::Io { path, source: std::io::Error::other(why) });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Io { path, source }),
        }
        let err = |source| StoreError::Sqlite { path: path.clone(), source };
        let real = guestward_core::state_file::sqlite_path(&path)
            .map_err(|source| StoreError::Io { path: path.clone(), source })?;
        let conn = Connection::open_with_flags(
            &real,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )
        .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        Ok(Some(Self { conn, path, key: None, written: std::cell::Cell::new(None) }))
    }

    /// The baseline key this store seals and verifies with.
    pub fn key(&self) -> Option<&Arc<BaselineKey>> {
        self.key.as_ref()
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Sqlite { path: self.path.clone(), source }
    }

    fn row_err(&self, table: &'static str, path: &[u8], fault: RowFault) -> StoreError {
        StoreError::Row {
            db: self.path.clone(),
            table,
            path: crate::events::escape_path(&path_of(path.to_vec())),
            fault,
        }
    }

    /// Whether rows of `table` must carry a valid MAC to be used: staged rows whenever there
    /// is a key (they were written with it moments ago, or are not resumable); baseline rows
    /// when the baseline was sealed with this key (an unsealed baseline is reported once, as a
    /// whole, by [`Self::verify_seal`]).
    fn must_verify(&self, table: &str) -> Result<bool, StoreError> {
        let Some(key) = &self.key else { return Ok(false) };
        if table != "files" {
            return Ok(true);
        }
        Ok(self.seal_record()?.is_some_and(|s| s.key_id == key.id()))
    }

    /// Decodes the record at `at` (13 columns then the MAC) and checks its MAC if `verify`.
    fn record(&self, row: &Row<'_>, at: usize, path: &[u8], verify: bool) -> Result<FileRecord, RowFault> {
        let rec = decode_row(row, at)?;
        if verify && let Some(key) = &self.key {
            let ok = match row.get_ref(at + NCOLS) {
                Ok(ValueRef::Blob(mac)) => key.verify_row(path, &rec, mac),
                _ => false,
            };
            if !ok {
                return Err(RowFault::Tampered);
            }
        }
        Ok(rec)
    }

    fn mac_of(&self, path: &Path, rec: &FileRecord) -> Option<[u8; 32]> {
        self.key.as_ref().map(|k| k.row_mac(path.as_os_str().as_bytes(), rec))
    }

    /// The baseline record of `path`. A damaged or tampered row is an error naming the path
    /// and the column ([`StoreError::Row`]).
    pub fn get(&self, path: &Path) -> Result<Option<FileRecord>, StoreError> {
        self.get_in("files", path)
    }

    /// The record of `path` seen by the scan in progress.
    pub fn staged(&self, path: &Path) -> Result<Option<FileRecord>, StoreError> {
        self.get_in("staging", path)
    }

    /// The record of `path` staged by the interrupted run of the scan being resumed: reusable
    /// when the file's `lstat` is unchanged (see [`Self::begin_resume`]).
    pub fn resumable(&self, path: &Path) -> Result<Option<FileRecord>, StoreError> {
        self.get_in("resume", path)
    }

    /// Runs `f` in one read transaction: many lookups then share one snapshot and one set of
    /// locks instead of taking them per statement.
    pub fn in_read_transaction<T>(&self, f: impl FnOnce(&Self) -> T) -> Result<T, StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        let out = f(self);
        tx.commit().map_err(self.err())?;
        Ok(out)
    }

    /// Sets this connection's SQLite page cache, in KiB.
    pub fn set_cache_kib(&self, kib: u32) -> Result<(), StoreError> {
        self.conn.pragma_update(None, "cache_size", -i64::from(kib)).map_err(self.err())
    }

    /// Baseline rows within `roots` (disjoint trees): each root and everything below it,
    /// stepped through row by row. For a few small trees (a scoped rescan); for every tree
    /// the baseline holds, [`Self::count_within_most`].
    pub fn count_within(&self, roots: &[PathBuf]) -> Result<u64, StoreError> {
        let mut n = 0u64;
        for root in roots {
            let (exact, lo, hi) = prefix_bounds(root);
            let c: i64 = self
                .conn
                .query_row(
                    "SELECT count(*) FROM files WHERE path = ?1 OR (path >= ?2 AND path < ?3)",
                    params![exact, lo, hi],
                    |r| r.get(0),
                )
                .map_err(self.err())?;
            n += u64::try_from(c).unwrap_or(0);
        }
        Ok(n)
    }

    /// [`Self::count_within`] for trees that hold most of the baseline (every configured
    /// tree): every row less the rows in the gaps between the roots' ranges of the path index.
    /// SQLite counts a whole table from its pages' cell counts, without stepping through the
    /// rows, and the gaps are usually empty (an `init` leaves only the trees it covers). For
    /// /usr's 139k rows: 11 ms instead of 32, on the thread that runs beside a check's walk
    /// (see `Fim::scan`). Both counts are taken in one read transaction: of the same rows.
    pub fn count_within_most(&self, roots: &[PathBuf]) -> Result<u64, StoreError> {
        let covered = covered_ranges(roots);
        self.in_read_transaction(|store| -> Result<u64, StoreError> {
            let count = |sql: &str, args: &[&[u8]]| -> Result<i64, StoreError> {
                store.conn.query_row(sql, rusqlite::params_from_iter(args), |r| r.get(0)).map_err(store.err())
            };
            let all = count("SELECT count(*) FROM files", &[])?;
            let mut outside = 0i64;
            // The gap before each covered range (from the end of the one before), then the
            // gap after the last.
            let mut from: Option<&[u8]> = None;
            for (start, end) in &covered {
                outside += match from {
                    None => count("SELECT count(*) FROM files WHERE path < ?1", &[start])?,
                    Some(f) => {
                        count("SELECT count(*) FROM files WHERE path >= ?1 AND path < ?2", &[f, start])?
                    }
                };
                from = Some(end);
            }
            outside += match from {
                None => all,
                Some(f) => count("SELECT count(*) FROM files WHERE path >= ?1", &[f])?,
            };
            Ok(u64::try_from(all - outside).unwrap_or(0))
        })?
    }

    /// Whether baseline rows read now must match their seal (see [`Self::get`]): asked once
    /// by a reader about to look up many rows with [`Self::baseline_record`].
    pub fn baseline_verified(&self) -> Result<bool, StoreError> {
        self.must_verify("files")
    }

    /// [`Self::get`] without reading the seal record again for every row: `verify` is what
    /// [`Self::baseline_verified`] said. The lookup of metadata-first scans.
    pub fn baseline_record(&self, path: &Path, verify: bool) -> Result<Option<FileRecord>, StoreError> {
        self.record_in("files", path, verify)
    }

    /// [`Self::baseline_record`] of each of `paths` (their bytes), in their order. Each run of
    /// ascending paths is read as one range of the path index, merged with the run, instead of
    /// one lookup per path: a scan's batches are a directory's entries in name order, and a
    /// package's file list is sorted, so most of 100k lookups become steps to the next row.
    /// The range is sought again at the next wanted path once [`MAX_ROWS_STEPPED_OVER`] rows
    /// in a row were not wanted (a subdirectory's contents, which sort between its siblings).
    pub fn baseline_records(
        &self,
        paths: &[&[u8]],
        verify: bool,
    ) -> Vec<Result<Option<FileRecord>, StoreError>> {
        self.records_in("files", paths, verify)
    }

    /// [`Self::baseline_records`] of the staging table: the records a scan that stages every
    /// entry (`init`) wrote, each verified whenever there is a key (as in
    /// [`Self::scanned_record`]).
    pub fn staged_records(&self, paths: &[&[u8]]) -> Vec<Result<Option<FileRecord>, StoreError>> {
        self.records_in("staging", paths, self.key.is_some())
    }

    fn records_in(
        &self,
        table: &'static str,
        paths: &[&[u8]],
        verify: bool,
    ) -> Vec<Result<Option<FileRecord>, StoreError>> {
        let mut out = Vec::with_capacity(paths.len());
        let mut start = 0;
        while start < paths.len() {
            let mut end = start + 1;
            while end < paths.len() && paths[end - 1] < paths[end] {
                end += 1;
            }
            match &paths[start..end] {
                [one] => out.push(self.record_in(table, Path::new(OsStr::from_bytes(one)), verify)),
                run => self.merge_run(table, run, verify, &mut out),
            }
            start = end;
        }
        out
    }

    /// Appends the record in `table` of each path of `run` (strictly ascending) to `out`.
    fn merge_run(
        &self,
        table: &'static str,
        run: &[&[u8]],
        verify: bool,
        out: &mut Vec<Result<Option<FileRecord>, StoreError>>,
    ) {
        let Some(last) = run.last() else { return };
        let mut next = 0;
        let sql = select_range(table);
        // Each pass of this loop seeks once: at the first path not yet answered.
        'seek: while next < run.len() {
            let mut stmt = match self.conn.prepare_cached(&sql) {
                Ok(stmt) => stmt,
                Err(e) => {
                    out.push(Err(self.err()(e)));
                    next += 1;
                    continue;
                }
            };
            let mut rows = match stmt.query(params![run[next], last]) {
                Ok(rows) => rows,
                Err(e) => {
                    out.push(Err(self.err()(e)));
                    next += 1;
                    continue;
                }
            };
            let mut stepped_over = 0;
            loop {
                let row = match rows.next() {
                    Ok(Some(row)) => row,
                    // Past the last row of the range: the paths left have none.
                    Ok(None) => break 'seek,
                    // Answered for the path at hand; the rest are sought afresh.
                    Err(e) => {
                        out.push(Err(self.err()(e)));
                        next += 1;
                        continue 'seek;
                    }
                };
                let Ok(ValueRef::Blob(at)) = row.get_ref(0) else {
                    // Not a path this store writes (a path is a blob): no wanted path is equal to it.
                    continue;
                };
                while next < run.len() && run[next] < at {
                    out.push(Ok(None));
                    next += 1;
                }
                match run.get(next) {
                    None => return,
                    Some(&want) if want == at => {
                        out.push(
                            self.record(row, 1, want, verify)
                                .map(Some)
                                .map_err(|f| self.row_err(table, want, f)),
                        );
                        next += 1;
                        stepped_over = 0;
                    }
                    Some(_) => {
                        stepped_over += 1;
                        if stepped_over > MAX_ROWS_STEPPED_OVER {
                            continue 'seek;
                        }
                    }
                }
            }
        }
        out.extend((next..run.len()).map(|_| Ok(None)));
    }

    /// The record the scan in progress staged for `path`, else, with `baseline` `Some(verify)`,
    /// its baseline record (its MAC checked when `verify`): what the scan found, for a scan
    /// that leaves entries identical to their baseline row unstaged (see
    /// `scan::Staging::Changes`). Staged rows are verified whenever there is a key.
    pub fn scanned_record(
        &self,
        path: &Path,
        baseline: Option<bool>,
    ) -> Result<Option<FileRecord>, StoreError> {
        match self.record_in("staging", path, self.key.is_some())? {
            Some(r) => Ok(Some(r)),
            None => match baseline {
                Some(verify) => self.record_in("files", path, verify),
                None => Ok(None),
            },
        }
    }

    fn record_in(
        &self,
        table: &'static str,
        path: &Path,
        verify: bool,
    ) -> Result<Option<FileRecord>, StoreError> {
        let bytes = path.as_os_str().as_bytes();
        let mut stmt = self.conn.prepare_cached(&select_by_path(table)).map_err(self.err())?;
        let mut rows = stmt.query([bytes]).map_err(self.err())?;
        match rows.next().map_err(self.err())? {
            None => Ok(None),
            Some(row) => {
                self.record(row, 0, bytes, verify).map(Some).map_err(|f| self.row_err(table, bytes, f))
            }
        }
    }

    fn get_in(&self, table: &'static str, path: &Path) -> Result<Option<FileRecord>, StoreError> {
        let verify = self.must_verify(table)?;
        self.record_in(table, path, verify)
    }

    /// Sets the baseline record of `path` (sealed with the key; the row-set seal follows).
    pub fn put(&self, path: &Path, rec: &FileRecord) -> Result<(), StoreError> {
        self.mutate(&[Span::Exact(path)], || self.put_in("files", path, rec))
    }

    fn put_in(&self, table: &str, path: &Path, rec: &FileRecord) -> Result<(), StoreError> {
        self.put_with("OR REPLACE", table, path, rec)
    }

    fn put_with(&self, conflict: &str, table: &str, path: &Path, rec: &FileRecord) -> Result<(), StoreError> {
        let mac = self.mac_of(path, rec);
        let mut stmt = self.conn.prepare_cached(&insert(conflict, table)).map_err(self.err())?;
        stmt.execute(params![
            path.as_os_str().as_bytes(),
            rec.kind.code(),
            rec.mode,
            rec.uid,
            rec.gid,
            i64::try_from(rec.size).unwrap_or(i64::MAX),
            rec.mtime_ns,
            rec.ctime_ns,
            // SQLite integers are signed 64-bit; inode numbers use the full u64 range on some
            // filesystems, so store the bit pattern.
            rec.inode as i64,
            rec.link_target.as_deref(),
            rec.xattrs.as_ref().map(|x| encode_xattrs(x)),
            rec.sha256.as_ref().map(|h| &h[..]),
            rec.blake3.as_ref().map(|h| &h[..]),
            rec.flags,
            rec.md5.as_ref().map(|h| &h[..]),
            mac.as_ref().map(|m| &m[..]),
        ])
        .map_err(self.err())?;
        Ok(())
    }

    /// Adds a batch of scanned records to the staging table in one transaction.
    pub fn stage_batch(&mut self, batch: &[(PathBuf, FileRecord)]) -> Result<(), StoreError> {
        self.stage_batch_with(batch, false)
    }

    /// [`Self::stage_batch`]; with `keep_staged`, a path already staged keeps its row.
    pub fn stage_batch_with(
        &mut self,
        batch: &[(PathBuf, FileRecord)],
        keep_staged: bool,
    ) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        for (p, r) in batch {
            self.put_with(if keep_staged { "OR IGNORE" } else { "OR REPLACE" }, "staging", p, r)?;
        }
        tx.commit().map_err(self.err())
    }

    /// Removes the baseline record of `path`.
    pub fn delete(&self, path: &Path) -> Result<(), StoreError> {
        self.mutate(&[Span::Exact(path)], || {
            self.conn
                .execute("DELETE FROM files WHERE path = ?1", [path.as_os_str().as_bytes()])
                .map_err(self.err())
                .map(drop)
        })
    }

    /// Baseline records strictly below `root`, streamed to `f` in path order. Damaged or
    /// tampered rows are skipped and counted (the return value): a diff over the same tree
    /// reports each of them by path and column.
    pub fn for_each_below(
        &self,
        root: &Path,
        mut f: impl FnMut(PathBuf, FileRecord),
    ) -> Result<u64, StoreError> {
        let verify = self.must_verify("files")?;
        let (_, lo, hi) = prefix_bounds(root);
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT path, {COLS}, mac FROM files WHERE path >= ?1 AND path < ?2 ORDER BY path"
            ))
            .map_err(self.err())?;
        let mut rows = stmt.query(params![lo, hi]).map_err(self.err())?;
        let mut skipped = 0;
        while let Some(row) = rows.next().map_err(self.err())? {
            let path = path_bytes(row, 0);
            match self.record(row, 1, &path, verify) {
                Ok(rec) => f(path_of(path), rec),
                Err(fault) => {
                    skipped += 1;
                    tracing::warn!(error = %self.row_err("files", &path, fault), "FIM baseline row skipped");
                }
            }
        }
        Ok(skipped)
    }

    /// Deletes the baseline records strictly below `root`.
    pub fn delete_below(&self, root: &Path) -> Result<usize, StoreError> {
        let (_, lo, hi) = prefix_bounds(root);
        self.mutate(&[Span::Below(root)], || {
            self.conn
                .execute("DELETE FROM files WHERE path >= ?1 AND path < ?2", params![lo, hi])
                .map_err(self.err())
        })
    }

    /// Moves baseline records below `from` to below `to` (a directory renamed). Each moved
    /// row is sealed again under its new path, but only if it verified under the old one: a
    /// tampered row keeps its (now doubly wrong) MAC, so it is still reported.
    pub fn move_below(&mut self, from: &Path, to: &Path) -> Result<(), StoreError> {
        let verify = self.must_verify("files")?;
        let (_, lo, hi) = prefix_bounds(from);
        let (_, to_prefix, _) = prefix_bounds(to);
        self.mutate(&[Span::Below(from), Span::Below(to)], || {
            let mut last: Vec<u8> = Vec::new();
            loop {
                // Pages of 1000 rows: a renamed /usr moves without holding the subtree in
                // memory. `to` is never below `from` (a directory cannot move into itself),
                // so the rows written are outside the range being paged through.
                let page: Vec<(Vec<u8>, Result<FileRecord, RowFault>)> = {
                    let mut stmt = self
                        .conn
                        .prepare_cached(&format!(
                            "SELECT path, {COLS}, mac FROM files WHERE path >= ?1 AND path < ?2 AND path > ?3
                             ORDER BY path LIMIT 1000"
                        ))
                        .map_err(self.err())?;
                    let mut rows = stmt.query(params![lo, hi, last]).map_err(self.err())?;
                    let mut page = Vec::new();
                    while let Some(row) = rows.next().map_err(self.err())? {
                        let path = path_bytes(row, 0);
                        let rec = self.record(row, 1, &path, verify);
                        page.push((path, rec));
                    }
                    page
                };
                let Some((tail, _)) = page.last() else { break };
                last = tail.clone();
                for (old, rec) in page {
                    let mut new = to_prefix.clone();
                    new.extend_from_slice(old.get(lo.len()..).unwrap_or_default());
                    self.conn
                        .execute(
                            &format!(
                                "INSERT OR REPLACE INTO files (path, {COLS}, mac)
                                 SELECT ?2, {COLS}, mac FROM files WHERE path = ?1"
                            ),
                            params![old, new],
                        )
                        .map_err(self.err())?;
                    if let (Ok(rec), Some(key)) = (rec, &self.key) {
                        let mac = key.row_mac(&new, &rec);
                        self.conn
                            .execute("UPDATE files SET mac = ?2 WHERE path = ?1", params![new, &mac[..]])
                            .map_err(self.err())?;
                    }
                }
            }
            self.conn
                .execute("DELETE FROM files WHERE path >= ?1 AND path < ?2", params![lo, hi])
                .map_err(self.err())
                .map(drop)
        })
    }

    /// Number of records in the baseline.
    pub fn file_count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT count(*) FROM files", [], |r| r.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(self.err())
    }

    /// Number of records staged by the scan in progress.
    pub fn staged_count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT count(*) FROM staging", [], |r| r.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(self.err())
    }

    /// The paths of the staged rows (their bytes), when there are at most `limit`; `None`
    /// when there are more. Lets a reader that asks about many paths skip the staging lookup
    /// of each path it knows is not there (the trust anchor after a check, where only what
    /// changed is staged: usually nothing).
    pub fn staged_paths(&self, limit: usize) -> Result<Option<BTreeSet<Vec<u8>>>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT path FROM staging LIMIT ?1").map_err(self.err())?;
        let over = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
        let mut rows = stmt.query([over]).map_err(self.err())?;
        let mut paths = BTreeSet::new();
        while let Some(row) = rows.next().map_err(self.err())? {
            if paths.len() == limit {
                return Ok(None);
            }
            paths.insert(row.get::<_, Vec<u8>>(0).map_err(self.err())?);
        }
        Ok(Some(paths))
    }

    /// Forgets everything staged, including what a resumed scan could have reused.
    pub fn clear_staging(&self) -> Result<(), StoreError> {
        self.conn.execute_batch("DELETE FROM staging; DELETE FROM resume;").map_err(self.err())
    }

    /// Starts resuming an interrupted scan: its staged rows (merged with those of any earlier
    /// interrupted attempt, the newer winning) move to `resume`, and staging starts empty. The
    /// walk then stages again, from `resume`, each entry it finds with an unchanged `lstat`
    /// ([`Self::resumable`]); what it does not find (deleted since) is not staged, so the diff
    /// reports it removed exactly as a fresh scan would.
    pub fn begin_resume(&mut self) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        self.conn
            .execute_batch(&format!(
                "INSERT OR REPLACE INTO resume (path, {COLS}, mac) SELECT path, {COLS}, mac FROM staging;
                 DELETE FROM staging;"
            ))
            .map_err(self.err())?;
        tx.commit().map_err(self.err())
    }

    /// Forgets the rows of an interrupted run once the resumed scan is complete.
    pub fn clear_resume(&self) -> Result<(), StoreError> {
        self.conn.execute("DELETE FROM resume", []).map_err(self.err()).map(drop)
    }

    /// Streams the differences between the staging table and the baseline within `roots`
    /// (disjoint trees). Unchanged pairs are passed too when both exist; the caller decides
    /// with the rule's attribute set. Rows that cannot be used come with their fault.
    pub fn diff(&self, roots: &[PathBuf], f: impl FnMut(DiffItem)) -> Result<(), StoreError> {
        self.diff_with(roots, true, f)
    }

    /// [`Self::diff`]; without `removed`, only the staged rows are compared (the pass over
    /// baseline rows that were not staged is skipped: the caller knows there are none to
    /// report, see `scan::stage_with`).
    pub fn diff_with(
        &self,
        roots: &[PathBuf],
        removed: bool,
        mut f: impl FnMut(DiffItem),
    ) -> Result<(), StoreError> {
        let verify_old = self.must_verify("files")?;
        let verify_new = self.must_verify("staging")?;
        let s_cols = COLS.split(", ").map(|c| format!("s.{c}")).collect::<Vec<_>>().join(", ");
        let f_cols = COLS.split(", ").map(|c| format!("f.{c}")).collect::<Vec<_>>().join(", ");
        for root in roots {
            let (exact, lo, hi) = prefix_bounds(root);
            let scope = "(s.path = ?1 OR (s.path >= ?2 AND s.path < ?3))";
            let mut stmt = self
                .conn
                .prepare_cached(&format!(
                    "SELECT s.path, {s_cols}, s.mac, {f_cols}, f.mac, f.path IS NOT NULL
                     FROM staging s LEFT JOIN files f ON f.path = s.path WHERE {scope} ORDER BY s.path"
                ))
                .map_err(self.err())?;
            let mut rows = stmt.query(params![exact, lo, hi]).map_err(self.err())?;
            let old_at = 1 + NCOLS + 1;
            let present_at = old_at + NCOLS + 1;
            while let Some(row) = rows.next().map_err(self.err())? {
                let path = path_bytes(row, 0);
                let (new, new_fault) = split(self.record(row, 1, &path, verify_new));
                let in_baseline = matches!(row.get_ref(present_at), Ok(ValueRef::Integer(1)));
                let (old, old_fault) = if in_baseline {
                    split(self.record(row, old_at, &path, verify_old))
                } else {
                    (None, None)
                };
                f(DiffItem { path: path_of(path), old, new, old_fault, new_fault });
            }
            if !removed {
                continue;
            }
            let scope = scope.replace("s.path", "f.path");
            let mut stmt = self
                .conn
                .prepare_cached(&format!(
                    "SELECT f.path, {f_cols}, f.mac FROM files f WHERE {scope}
                     AND NOT EXISTS (SELECT 1 FROM staging s WHERE s.path = f.path) ORDER BY f.path"
                ))
                .map_err(self.err())?;
            let mut rows = stmt.query(params![exact, lo, hi]).map_err(self.err())?;
            while let Some(row) = rows.next().map_err(self.err())? {
                let path = path_bytes(row, 0);
                let (old, old_fault) = split(self.record(row, 1, &path, verify_old));
                f(DiffItem { path: path_of(path), old, new: None, old_fault, new_fault: None });
            }
        }
        Ok(())
    }

    /// Makes the staged records within `roots` the baseline (records of vanished paths are
    /// dropped) and clears them from staging, atomically, keeping the row-set seal.
    pub fn apply(&mut self, roots: &[PathBuf]) -> Result<(), StoreError> {
        self.apply_with(roots, true)
    }

    /// [`Self::apply`]; without `prune`, baseline rows that were not staged are kept (a
    /// metadata-first scan stages only what changed, see `scan::stage_with`).
    pub fn apply_with(&mut self, roots: &[PathBuf], prune: bool) -> Result<(), StoreError> {
        let spans: Vec<Span<'_>> = roots.iter().map(|r| Span::Tree(r)).collect();
        self.mutate(&spans, || self.apply_rows(roots, prune))
    }

    /// The row writes of [`Self::apply_with`], within the caller's transaction.
    fn apply_rows(&self, roots: &[PathBuf], prune: bool) -> Result<(), StoreError> {
        for root in roots {
            let (exact, lo, hi) = prefix_bounds(root);
            let p = params![exact, lo, hi];
            if prune {
                self.conn
                    .execute(
                        "DELETE FROM files WHERE (path = ?1 OR (path >= ?2 AND path < ?3))
                         AND NOT EXISTS (SELECT 1 FROM staging s WHERE s.path = files.path)",
                        p,
                    )
                    .map_err(self.err())?;
            }
            self.conn
                .execute(
                    &format!(
                        "INSERT OR REPLACE INTO files (path, {COLS}, mac) SELECT path, {COLS}, mac FROM staging
                         WHERE (path = ?1 OR (path >= ?2 AND path < ?3))"
                    ),
                    p,
                )
                .map_err(self.err())?;
            self.conn
                .execute("DELETE FROM staging WHERE (path = ?1 OR (path >= ?2 AND path < ?3))", p)
                .map_err(self.err())?;
        }
        Ok(())
    }

    /// [`Self::replace_all`] for a scan of `roots` that staged only what differs from the
    /// baseline (`fim init` over a baseline already there): the staged rows are applied as
    /// [`Self::apply_with`] does (with `prune`, rows of the trees that were not staged are
    /// dropped), rows outside every root are dropped, and the baseline is sealed anew, in one
    /// transaction. The result is the baseline a full replacement would give, row for row;
    /// only the rows that changed are written.
    pub fn replace_changed(&mut self, roots: &[PathBuf], prune: bool) -> Result<(), StoreError> {
        let tx =
            Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate).map_err(self.err())?;
        self.apply_rows(roots, prune)?;
        // Rows of trees no longer configured: a new baseline holds only what this scan covers.
        let mut within = String::from("0");
        let mut args: Vec<Vec<u8>> = Vec::with_capacity(roots.len() * 3);
        for root in roots {
            let (exact, lo, hi) = prefix_bounds(root);
            let n = args.len();
            within.push_str(&format!(" OR path = ?{} OR (path >= ?{} AND path < ?{})", n + 1, n + 2, n + 3));
            args.extend([exact, lo, hi]);
        }
        for table in ["files", "staging"] {
            self.conn
                .execute(
                    &format!("DELETE FROM {table} WHERE NOT ({within})"),
                    rusqlite::params_from_iter(&args),
                )
                .map_err(self.err())?;
        }
        self.reseal_in_tx()?;
        self.next_generation()?;
        tx.commit().map_err(self.err())
    }

    /// Replaces the whole baseline with the staging table (`fim init`) and seals it anew.
    pub fn replace_all(&mut self) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        // The staging table becomes the baseline by name (same columns, same key), instead of
        // its rows being copied one by one: a baseline of /usr is 133k rows, and the copy was a
        // second single-threaded pass over all of them after the scan.
        self.conn
            .execute_batch(&format!(
                "DROP TABLE files; ALTER TABLE staging RENAME TO files;
                 CREATE TABLE staging (path BLOB PRIMARY KEY, {COLS}, mac BLOB) WITHOUT ROWID;"
            ))
            .map_err(self.err())?;
        self.reseal_in_tx()?;
        self.next_generation()?;
        tx.commit().map_err(self.err())
    }

    /// Seals the baseline as it is now (`fim update` of every tree accepts the current state,
    /// and with it a baseline built before the key existed). Without a key, drops the seal.
    pub fn reseal(&self) -> Result<(), StoreError> {
        let tx =
            Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate).map_err(self.err())?;
        self.reseal_in_tx()?;
        tx.commit().map_err(self.err())
    }

    fn reseal_in_tx(&self) -> Result<(), StoreError> {
        match &self.key {
            Some(key) => {
                let all = self.aggregate_all()?;
                self.write_seal(key, all)
            }
            None => self.clear_meta(META_SEAL),
        }
    }

    /// Checks the row-set seal against the rows now in the baseline (one read transaction, so
    /// a concurrent writer, which updates rows and seal together, is seen before or after).
    pub fn verify_seal(&self) -> Result<SealVerdict, StoreError> {
        self.seal_verdict(true)
    }

    /// [`Self::verify_seal`] without the pass over the rows: only whether the seal record is
    /// present, made with this key and authentic (for scoped rescans, whose rows are verified
    /// one by one as they are compared).
    pub fn verify_seal_record(&self) -> Result<SealVerdict, StoreError> {
        self.seal_verdict(false)
    }

    fn seal_verdict(&self, with_rows: bool) -> Result<SealVerdict, StoreError> {
        let Some(key) = &self.key else { return Ok(SealVerdict::NoKey) };
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        let verdict = match self.seal_record()? {
            None => SealVerdict::Absent,
            Some(s) if s.key_id != key.id() => SealVerdict::Foreign { key_id: s.key_id },
            Some(s) => match parse_seal(&s) {
                Some((xor, tag)) if key.verify_seal(s.rows, &xor, &tag) => {
                    let now = if with_rows { self.aggregate_all()? } else { Aggregate { rows: s.rows, xor } };
                    if now.rows == s.rows && now.xor == xor {
                        SealVerdict::Valid { rows: s.rows }
                    } else {
                        SealVerdict::Mismatch { rows_now: now.rows, rows_sealed: s.rows }
                    }
                }
                _ => SealVerdict::BadTag,
            },
        };
        tx.commit().map_err(self.err())?;
        Ok(verdict)
    }

    /// The root digest of the baseline: SHA-256 over the canonical encoding of every row in
    /// path order (unkeyed; a damaged row contributes its path and its fault). It is what the
    /// transport will have the collector acknowledge in place of the local key (see
    /// [`crate::integrity`]); O(rows), streamed.
    pub fn root_digest(&self) -> Result<[u8; 32], StoreError> {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"guestward-fim-root-v1\0");
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT path, {COLS}, mac FROM files ORDER BY path"))
            .map_err(self.err())?;
        let mut rows = stmt.query([]).map_err(self.err())?;
        let mut buf = Vec::new();
        while let Some(row) = rows.next().map_err(self.err())? {
            let path = path_bytes(row, 0);
            buf.clear();
            match decode_row(row, 1) {
                Ok(rec) => canonical_row(&path, &rec, &mut buf),
                Err(fault) => {
                    buf.extend_from_slice(b"damaged\0");
                    buf.extend_from_slice(&(path.len() as u64).to_be_bytes());
                    buf.extend_from_slice(&path);
                    buf.extend_from_slice(fault.to_string().as_bytes());
                }
            }
            h.update(&buf);
        }
        Ok(h.finalize().into())
    }

    fn seal_record(&self) -> Result<Option<SealRecord>, StoreError> {
        Ok(self.meta(META_SEAL)?.map(|text| {
            // An unparsable seal is kept as one that cannot verify (reported as tampering).
            serde_json::from_str(&text).unwrap_or(SealRecord {
                key_id: self.key.as_ref().map(|k| k.id().to_string()).unwrap_or_default(),
                rows: 0,
                xor: String::new(),
                tag: String::new(),
            })
        }))
    }

    fn write_seal(&self, key: &BaselineKey, agg: Aggregate) -> Result<(), StoreError> {
        let tag = key.seal_tag(agg.rows, &agg.xor);
        let record = SealRecord {
            key_id: key.id().to_string(),
            rows: agg.rows,
            xor: crate::record::hex(&agg.xor),
            tag: crate::record::hex(&tag),
        };
        self.set_meta(META_SEAL, &serde_json::to_string(&record).unwrap_or_default())
    }

    /// Runs the write `f` in one IMMEDIATE transaction (writers are serialized: the daemon and
    /// a one-shot `fim update` may share the database) and carries the row-set seal across it:
    /// the MACs of the rows in `spans` are XOR-ed out before and back in after. A seal that is
    /// absent, foreign or invalid is left as found, so the next check still reports it.
    fn mutate<T>(
        &self,
        spans: &[Span<'_>],
        f: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let tx =
            Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate).map_err(self.err())?;
        let carried = match &self.key {
            None => {
                self.clear_meta(META_SEAL)?;
                None
            }
            Some(key) => match self.seal_record()? {
                Some(s) if s.key_id == key.id() => match parse_seal(&s) {
                    Some((xor, tag)) if key.verify_seal(s.rows, &xor, &tag) => {
                        Some((key, Aggregate { rows: s.rows, xor }, self.aggregate(spans)?))
                    }
                    _ => None,
                },
                _ => None,
            },
        };
        let out = f()?;
        self.next_generation()?;
        if let Some((key, sealed, before)) = carried {
            let after = self.aggregate(spans)?;
            let mut xor = sealed.xor;
            xor_into(&mut xor, &before.xor);
            xor_into(&mut xor, &after.xor);
            let rows = sealed.rows.saturating_sub(before.rows).saturating_add(after.rows);
            self.write_seal(key, Aggregate { rows, xor })?;
        }
        tx.commit().map_err(self.err())?;
        Ok(out)
    }

    fn aggregate(&self, spans: &[Span<'_>]) -> Result<Aggregate, StoreError> {
        let mut agg = Aggregate::default();
        for span in spans {
            let (sql, args): (&str, Vec<Vec<u8>>) = match span {
                Span::Exact(p) => {
                    ("SELECT mac FROM files WHERE path = ?1", vec![p.as_os_str().as_bytes().to_vec()])
                }
                Span::Below(p) => {
                    let (_, lo, hi) = prefix_bounds(p);
                    ("SELECT mac FROM files WHERE path >= ?1 AND path < ?2", vec![lo, hi])
                }
                Span::Tree(p) => {
                    let (exact, lo, hi) = prefix_bounds(p);
                    (
                        "SELECT mac FROM files WHERE path = ?1 OR (path >= ?2 AND path < ?3)",
                        vec![exact, lo, hi],
                    )
                }
            };
            let mut stmt = self.conn.prepare_cached(sql).map_err(self.err())?;
            let mut rows = stmt.query(rusqlite::params_from_iter(args.iter())).map_err(self.err())?;
            while let Some(row) = rows.next().map_err(self.err())? {
                agg.rows += 1;
                if let Ok(ValueRef::Blob(mac)) = row.get_ref(0) {
                    xor_into(&mut agg.xor, mac);
                }
            }
        }
        Ok(agg)
    }

    fn aggregate_all(&self) -> Result<Aggregate, StoreError> {
        let mut agg = Aggregate::default();
        let mut stmt = self.conn.prepare_cached("SELECT mac FROM files").map_err(self.err())?;
        let mut rows = stmt.query([]).map_err(self.err())?;
        while let Some(row) = rows.next().map_err(self.err())? {
            agg.rows += 1;
            if let Ok(ValueRef::Blob(mac)) = row.get_ref(0) {
                xor_into(&mut agg.xor, mac);
            }
        }
        Ok(agg)
    }

    /// The baseline's generation: raised, in the same transaction, by every write of baseline
    /// rows through this module (`init`'s replacement, `update`, the daemon's accepted changes).
    /// What was derived from the rows at one generation holds while it is the same. `0`: never
    /// written since generations were kept.
    pub fn generation(&self) -> Result<u64, StoreError> {
        Ok(self.meta(META_GENERATION)?.and_then(|g| g.parse().ok()).unwrap_or(0))
    }

    /// The generation this connection's last write of baseline rows set (`None`: it wrote none).
    pub fn generation_written(&self) -> Option<u64> {
        self.written.get()
    }

    fn next_generation(&self) -> Result<(), StoreError> {
        let next = self.generation()?.wrapping_add(1);
        self.set_meta(META_GENERATION, &next.to_string())?;
        self.written.set(Some(next));
        Ok(())
    }

    /// The trust anchor's kept verdict, as stored (see [`crate::verdict`]).
    pub fn kept_verdict(&self) -> Result<Option<String>, StoreError> {
        self.meta(META_VERDICT)
    }

    /// Keeps the trust anchor's verdict `text`, if the baseline is still at `generation`
    /// (checked in the same transaction: a verdict about rows another writer has changed
    /// since is not kept). Returns whether it was kept.
    pub fn keep_verdict(&self, generation: u64, text: &str) -> Result<bool, StoreError> {
        let tx =
            Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate).map_err(self.err())?;
        let current = self.generation()?;
        if current == generation {
            self.set_meta(META_VERDICT, text)?;
        }
        tx.commit().map_err(self.err())?;
        Ok(current == generation)
    }

    /// The row-set seal as stored (`None`: none), for binding what is derived from the rows.
    pub fn seal_text(&self) -> Result<Option<String>, StoreError> {
        self.meta(META_SEAL)
    }

    /// A metadata value.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(self.err())
    }

    /// Sets a metadata value.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn
            .execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)", [key, value])
            .map_err(self.err())?;
        Ok(())
    }

    /// Removes a metadata value.
    pub fn clear_meta(&self, key: &str) -> Result<(), StoreError> {
        self.conn.execute("DELETE FROM meta WHERE key = ?1", [key]).map_err(self.err())?;
        Ok(())
    }

    /// Appends an event to the log, keeping at most `keep` events.
    pub fn append_event(&self, event: &Event, keep: u64) -> Result<(), StoreError> {
        self.append_events(std::slice::from_ref(event), keep)
    }

    /// Appends events to the log in one transaction, keeping at most `keep` events.
    ///
    /// One commit for many: a scan reports its changes while its own read of the baseline is
    /// open, and no checkpoint can pass that read, so every commit meanwhile stays in the WAL.
    /// One commit per change grew `fim.db-wal` to 2.2 GB during the rescan after a storm of
    /// 300,000 new files (anyone who can write to a watched directory can make one).
    pub fn append_events(&self, events: &[Event], keep: u64) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        let keep = i64::try_from(keep.max(1)).unwrap_or(i64::MAX);
        for event in events {
            let ns = i64::try_from(event.time.0.as_nanosecond()).unwrap_or(i64::MAX);
            let data = serde_json::to_string(&event.data).unwrap_or_default();
            let id = {
                let mut stmt = tx
                    .prepare_cached("INSERT INTO events (time_ns, kind, data) VALUES (?1, ?2, ?3)")
                    .map_err(self.err())?;
                stmt.insert(params![ns, event.kind, data]).map_err(self.err())?
            };
            // Trim in steps rather than on every insert.
            if id % 1000 == 0 {
                tx.execute("DELETE FROM events WHERE id <= ?1", [id - keep]).map_err(self.err())?;
            }
        }
        tx.commit().map_err(self.err())
    }

    /// Events at or after `since`, oldest first, at most `limit`.
    pub fn events_since(&self, since: Timestamp, limit: usize) -> Result<Vec<Event>, StoreError> {
        let ns = i64::try_from(since.0.as_nanosecond()).unwrap_or(i64::MIN);
        let mut stmt = self
            .conn
            .prepare_cached("SELECT time_ns, kind, data FROM events WHERE time_ns >= ?1 ORDER BY id LIMIT ?2")
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![ns, i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                let ns: i64 = r.get(0)?;
                let kind: String = r.get(1)?;
                let data: String = r.get(2)?;
                Ok((ns, kind, data))
            })
            .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            let (ns, kind, data) = row.map_err(self.err())?;
            let time = jiff::Timestamp::from_nanosecond(i128::from(ns))
                .map(Timestamp)
                .unwrap_or_else(|_| Timestamp::now());
            out.push(Event { kind, time, data: serde_json::from_str(&data).unwrap_or_default() });
        }
        Ok(out)
    }
}

fn path_of(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(bytes))
}

/// The path column (always a BLOB written by us; anything else reads as its bytes or empty).
fn path_bytes(row: &Row<'_>, at: usize) -> Vec<u8> {
    match row.get_ref(at) {
        Ok(ValueRef::Blob(b)) | Ok(ValueRef::Text(b)) => b.to_vec(),
        _ => Vec::new(),
    }
}

fn split(r: Result<FileRecord, RowFault>) -> (Option<FileRecord>, Option<RowFault>) {
    match r {
        Ok(rec) => (Some(rec), None),
        Err(fault) => (None, Some(fault)),
    }
}

fn parse_seal(s: &SealRecord) -> Option<([u8; 32], Vec<u8>)> {
    let xor: [u8; 32] = unhex(&s.xor)?.try_into().ok()?;
    Some((xor, unhex(&s.tag)?))
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks_exact(2)
        .map(|p| std::str::from_utf8(p).ok().and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

// Limits the record reader applies (`record.rs`): a stored row beyond them was not written by
// the agent.
use crate::record::{MAX_XATTR_ENTRIES, MAX_XATTR_VALUE};
/// Longest attribute name: the kernel's `XATTR_NAME_MAX`.
const MAX_XATTR_NAME: usize = 255;
/// `PATH_MAX`: the longest symlink target the kernel returns.
const MAX_LINK_TARGET: usize = 4096;
const KNOWN_FLAGS: i64 = (FLAG_HASH_SKIPPED | FLAG_UNSTABLE | FLAG_UNREADABLE) as i64;

fn type_name(v: ValueRef<'_>) -> &'static str {
    match v {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "an integer",
        ValueRef::Real(_) => "a real number",
        ValueRef::Text(_) => "text",
        ValueRef::Blob(_) => "a blob",
    }
}

/// Reads the 13 record columns starting at `at`, validating every value: what the agent
/// would never have written is a [`RowFault::Damaged`] naming the column, never a silently
/// different record (a short hash used to switch the content comparison off) nor an SQLite
/// conversion error that stops the whole diff.
fn decode_row(row: &Row<'_>, at: usize) -> Result<FileRecord, RowFault> {
    let value = |i: usize, column: &'static str| {
        row.get_ref(at + i).map_err(|e| RowFault::damaged(column, format!("unreadable: {e}")))
    };
    let int = |i: usize, column: &'static str, what: &str, lo: i64, hi: i64| -> Result<i64, RowFault> {
        match value(i, column)? {
            ValueRef::Integer(v) if (lo..=hi).contains(&v) => Ok(v),
            ValueRef::Integer(v) => {
                Err(RowFault::damaged(column, format!("{v} is out of range for {what} ({lo}..={hi})")))
            }
            other => {
                Err(RowFault::damaged(column, format!("expected an integer, found {}", type_name(other))))
            }
        }
    };
    let blob = |i: usize, column: &'static str| -> Result<Option<&[u8]>, RowFault> {
        match value(i, column)? {
            ValueRef::Null => Ok(None),
            ValueRef::Blob(b) => Ok(Some(b)),
            other => Err(RowFault::damaged(column, format!("expected bytes, found {}", type_name(other)))),
        }
    };
    let code = int(0, "kind", "a file type code", 0, 6)?;
    let kind = FileKind::from_code(code)
        .ok_or_else(|| RowFault::damaged("kind", format!("{code} is not a file type code")))?;
    let mode = int(1, "mode", "permission bits", 0, 0o7777)?;
    let uid = int(2, "uid", "a user id", 0, i64::from(u32::MAX))?;
    let gid = int(3, "gid", "a group id", 0, i64::from(u32::MAX))?;
    let size = int(4, "size", "a size", 0, i64::MAX)?;
    let mtime_ns = int(5, "mtime_ns", "a time", i64::MIN, i64::MAX)?;
    let ctime_ns = int(6, "ctime_ns", "a time", i64::MIN, i64::MAX)?;
    let inode = int(7, "inode", "an inode number", i64::MIN, i64::MAX)?;
    let link_target = blob(8, "link_target")?.map(<[u8]>::to_vec);
    if let Some(t) = &link_target {
        if kind != FileKind::Symlink {
            return Err(RowFault::damaged("link_target", format!("a link target on a {}", kind_name(kind))));
        }
        if t.len() > MAX_LINK_TARGET {
            return Err(RowFault::damaged("link_target", format!("{} bytes, longer than PATH_MAX", t.len())));
        }
    }
    let xattrs = match blob(9, "xattrs")? {
        None => None,
        Some(b) => Some(decode_xattrs(b).map_err(|d| RowFault::damaged("xattrs", d))?),
    };
    fn digest<const N: usize>(
        b: Option<&[u8]>,
        column: &'static str,
        algorithm: &str,
    ) -> Result<Option<[u8; N]>, RowFault> {
        match b {
            None => Ok(None),
            Some(b) => <[u8; N]>::try_from(b).map(Some).map_err(|_| {
                RowFault::damaged(
                    column,
                    format!(
                        "{} bytes where {algorithm} digests have {N}, so the content cannot be compared",
                        b.len()
                    ),
                )
            }),
        }
    }
    let hash =
        |i: usize, column: &'static str, algorithm: &str| digest::<32>(blob(i, column)?, column, algorithm);
    let sha256 = hash(10, "sha256", "SHA-256")?;
    let blake3 = hash(11, "blake3", "BLAKE3")?;
    if kind != FileKind::File && (sha256.is_some() || blake3.is_some()) {
        let column = if sha256.is_some() { "sha256" } else { "blake3" };
        return Err(RowFault::damaged(column, format!("a content hash on a {}", kind_name(kind))));
    }
    let flags = int(12, "flags", "flags", 0, 255)?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(RowFault::damaged("flags", format!("unknown flag bits {:#x}", flags & !KNOWN_FLAGS)));
    }
    let md5 = digest::<16>(blob(13, "md5")?, "md5", "MD5")?;
    if md5.is_some() && sha256.is_none() && blake3.is_none() {
        // Taken only with a content hash, from the same read (see `FileRecord::md5`).
        return Err(RowFault::damaged("md5", "an MD5 without the content hash it was read with"));
    }
    // Every conversion below is within the range checked above.
    Ok(FileRecord {
        kind,
        mode: u32::try_from(mode).unwrap_or(0),
        uid: u32::try_from(uid).unwrap_or(0),
        gid: u32::try_from(gid).unwrap_or(0),
        size: u64::try_from(size).unwrap_or(0),
        mtime_ns,
        ctime_ns,
        inode: inode as u64,
        link_target,
        xattrs,
        sha256,
        blake3,
        flags: u8::try_from(flags).unwrap_or(0),
        md5,
    })
}

fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::File => "regular file",
        FileKind::Dir => "directory",
        FileKind::Symlink => "symbolic link",
        FileKind::CharDevice => "character device",
        FileKind::BlockDevice => "block device",
        FileKind::Fifo => "fifo",
        FileKind::Socket => "socket",
    }
}

/// Extended attributes as recorded: (name, value) pairs.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

fn encode_xattrs(x: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in x {
        for part in [n, v] {
            out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(0).to_le_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

/// Inverse of [`encode_xattrs`], strict: a length running past the end, or more or larger
/// attributes than the reader ever records, is damage (a silently shortened list would hide
/// an attribute change).
fn decode_xattrs(mut b: &[u8]) -> Result<Xattrs, String> {
    let mut out = Vec::new();
    let take = |b: &mut &[u8], what: &str, max: usize| -> Result<Vec<u8>, String> {
        let len = b
            .get(..4)
            .and_then(|l| <[u8; 4]>::try_from(l).ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| format!("truncated before the length of an attribute {what}"))?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > max {
            return Err(format!("an attribute {what} of {len} bytes (at most {max} are recorded)"));
        }
        let v = b.get(4..4 + len).ok_or_else(|| format!("an attribute {what} runs past the end"))?.to_vec();
        *b = b.get(4 + len..).unwrap_or_default();
        Ok(v)
    };
    while !b.is_empty() {
        if out.len() >= MAX_XATTR_ENTRIES {
            return Err(format!("more than {MAX_XATTR_ENTRIES} attribute entries"));
        }
        let n = take(&mut b, "name", MAX_XATTR_NAME)?;
        let v = take(&mut b, "value", MAX_XATTR_VALUE)?;
        out.push((n, v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A write that failed for want of room says how little is left; other errors, and a
    /// filesystem with room, add nothing to SQLite's words.
    #[test]
    fn a_failed_write_on_a_full_filesystem_says_how_little_room_is_left() {
        assert_eq!(
            low_space_words(Some(4096)),
            " (the filesystem holding it has 4 KiB left: free some space, then run it again)"
        );
        assert_eq!(low_space_words(Some(LOW_SPACE_BYTES)), "");
        assert_eq!(low_space_words(None), "");
        let failure =
            |code| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error { code, extended_code: 0 }, None);
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("fim.db");
        // Whatever this machine's free space, a constraint failure is no matter of room.
        assert_eq!(space_hint(&db, &failure(rusqlite::ErrorCode::ConstraintViolation)), "");
        assert_eq!(space_hint(&db, &rusqlite::Error::InvalidQuery), "");
        // The words come with the error itself.
        let left = guestward_core::reserve::free_bytes(dir.path()).unwrap();
        let e = StoreError::Sqlite { path: db.clone(), source: failure(rusqlite::ErrorCode::DiskFull) };
        assert_eq!(
            e.to_string().contains("KiB left: free some space"),
            left < LOW_SPACE_BYTES,
            "{e} ({left} bytes free)"
        );
        assert!(e.to_string().starts_with(&format!("{}: ", db.display())), "{e}");
    }

    /// The baseline is opened as the regular file it must be: a planted link or FIFO is
    /// refused, naming it, and neither the link's target nor its mode is touched; a baseline
    /// readable by others is closed to them, one stricter than 0600 is not widened.
    #[test]
    fn a_planted_link_or_fifo_is_refused_and_modes_are_only_ever_narrowed() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&victim, state.join(DB_FILE)).unwrap();
        let e = Store::open(&state).unwrap_err().to_string();
        assert!(e.contains("fim.db: is a symbolic link"), "{e}");
        assert_eq!((mode(&victim), std::fs::metadata(&victim).unwrap().len()), (0o644, 0), "untouched");
        std::fs::remove_file(state.join(DB_FILE)).unwrap();
        nix::unistd::mkfifo(&state.join(DB_FILE), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = Store::open(&state).unwrap_err().to_string();
        assert!(e.contains("fim.db: is not a regular file"), "{e}");
        std::fs::remove_file(state.join(DB_FILE)).unwrap();
        drop(Store::open(&state).unwrap());
        let db = state.join(DB_FILE);
        assert_eq!(mode(&db), 0o600, "a new baseline");
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(Store::open(&state).unwrap());
        assert_eq!(mode(&db), 0o600, "closed to others");
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o400)).unwrap();
        // As root the file is still writable and opens; as another user it is refused (the
        // agent's CLI test covers that as `nobody`). Either way its mode stays.
        let _ = Store::open(&state);
        assert_eq!(mode(&db), 0o400, "never widened");
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
        // A state directory reached through a symlink (a larger volume linked back) is the
        // agent's own: it opens, read-write and read-only (SQLite's NOFOLLOW alone refused a
        // link anywhere in the path).
        let link = dir.path().join("linked-state");
        std::os::unix::fs::symlink(&state, &link).unwrap();
        drop(Store::open(&link).unwrap());
        assert!(Store::open_read_only(&link).unwrap().is_some());
    }

    fn rec(size: u64) -> FileRecord {
        FileRecord {
            kind: FileKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size,
            mtime_ns: 1,
            ctime_ns: 2,
            inode: u64::MAX,
            link_target: None,
            xattrs: Some(vec![(b"security.selinux".to_vec(), b"x".to_vec())]),
            sha256: Some([7; 32]),
            blake3: None,
            flags: 0,
            md5: None,
        }
    }

    /// A record with as many attribute entries as the reader makes (64 and the folded rest)
    /// is stored and read back as it was; one with more was not written by the agent.
    #[test]
    fn a_record_with_the_folded_attribute_entry_round_trips_and_one_more_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut full = rec(1);
        let mut xattrs: Xattrs =
            (0..64).map(|i| (format!("user.a{i:02}").into_bytes(), b"v".to_vec())).collect();
        xattrs.push((crate::record::XATTRS_BEYOND.to_vec(), b"9 more, sha256 00".to_vec()));
        full.xattrs = Some(xattrs.clone());
        store.put(Path::new("/full"), &full).unwrap();
        assert_eq!(store.get(Path::new("/full")).unwrap(), Some(full.clone()));
        xattrs.push((b"user.zz".to_vec(), Vec::new()));
        full.xattrs = Some(xattrs);
        store.put(Path::new("/over"), &full).unwrap();
        let e = store.get(Path::new("/over")).unwrap_err().to_string();
        assert!(e.contains("more than 65 attribute entries"), "{e}");
    }

    /// The rows within some roots, counted as all rows less the gaps between the roots
    /// (`count_within_most`), are the rows each root's own range holds, stepped through one by
    /// one (`count_within`): for roots nested in each other's names (`/usr` and `/usr-local`,
    /// whose rows sort between `/usr` and `/usr/`), for `/`, and for none.
    #[test]
    fn the_write_ahead_log_shrinks_back_after_a_burst_of_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let wal = dir.path().join(format!("{DB_FILE}-wal"));
        let event = |i: usize| Event {
            kind: "fim.change".into(),
            time: Timestamp::now(),
            data: serde_json::json!({ "path": format!("/storm/f{i:07}"), "pad": "x".repeat(2000) }),
        };
        // One transaction: the log cannot start over inside it (nor while a scan's read is
        // open, which is how a storm grows it).
        let burst: Vec<Event> = (0..8_000).map(event).collect();
        store.append_events(&burst, 1_000_000).unwrap();
        let high = std::fs::metadata(&wal).unwrap().len();
        assert!(high > 4 * WAL_KEPT_BYTES as u64, "the burst should outgrow the limit: {high} B");
        // What the daemon's next write does after SQLite's automatic checkpoint: the log
        // starts over, and is cut back to the limit.
        store.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())).unwrap();
        store.append_event(&event(0), 1_000_000).unwrap();
        let after = std::fs::metadata(&wal).unwrap().len();
        assert!(after <= WAL_KEPT_BYTES as u64, "{after} B of WAL kept after a {high} B burst");
    }

    #[test]
    fn rows_within_roots_are_counted_as_every_row_less_the_gaps_between_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for p in [
            "/",
            "/a",
            "/etc",
            "/etc/x",
            "/usr",
            "/usr!",
            "/usr-local",
            "/usr-local/bin",
            "/usr.d/x",
            "/usr/",
            "/usr/bin",
            "/usr/bin/ls",
            "/usr0",
            "/usr0/y",
            "/var/lib/z",
            "/z",
        ] {
            store.put(Path::new(p), &rec(1)).unwrap();
        }
        for roots in [
            vec!["/usr"],
            vec!["/usr", "/usr-local"],
            vec!["/usr-local", "/etc", "/usr"],
            vec!["/usr0", "/var"],
            vec!["/"],
            vec!["/z"],
            vec!["/nothing"],
            vec![],
        ] {
            let paths: Vec<PathBuf> = roots.iter().map(PathBuf::from).collect();
            assert_eq!(
                store.count_within_most(&paths).unwrap(),
                store.count_within(&paths).unwrap(),
                "{roots:?}"
            );
        }
        assert_eq!(
            store.count_within_most(&[PathBuf::from("/usr")]).unwrap(),
            4,
            "/usr, /usr/, /usr/bin, /usr/bin/ls"
        );
        assert_eq!(store.count_within_most(&[PathBuf::from("/")]).unwrap(), 16);
    }

    /// The statements spelled out at compile time are the ones the general form would build.
    #[test]
    fn the_per_row_statements_are_the_general_ones_without_formatting() {
        for table in ["files", "staging"] {
            let sql = select_by_path(table);
            assert!(matches!(sql, std::borrow::Cow::Borrowed(_)), "{table}");
            assert_eq!(sql, format!("SELECT {COLS}, mac FROM {table} WHERE path = ?1"));
        }
        for conflict in ["OR REPLACE", "OR IGNORE"] {
            let sql = insert(conflict, "staging");
            assert!(matches!(sql, std::borrow::Cow::Borrowed(_)), "{conflict}");
            assert_eq!(
                sql,
                format!(
                    "INSERT {conflict} INTO staging (path, {COLS}, mac) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16)"
                )
            );
        }
        assert_eq!(COLS.split(", ").count(), NCOLS);
    }

    #[test]
    fn round_trip_diff_apply_and_move() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let weird = PathBuf::from(std::ffi::OsStr::from_bytes(b"/t/\xff"));
        s.put(Path::new("/t/a"), &rec(1)).unwrap();
        s.put(Path::new("/t/gone"), &rec(1)).unwrap();
        s.put(Path::new("/t0"), &rec(1)).unwrap();
        assert_eq!(s.get(Path::new("/t/a")).unwrap().unwrap(), rec(1));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(DB_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        s.stage_batch(&[(PathBuf::from("/t/a"), rec(2)), (weird.clone(), rec(3))]).unwrap();
        // The staged paths, as the bytes they are keyed by, only up to the limit asked for.
        let staged = s.staged_paths(2).unwrap().expect("two staged, two allowed");
        assert_eq!(staged.into_iter().collect::<Vec<_>>(), vec![b"/t/a".to_vec(), b"/t/\xff".to_vec()]);
        assert_eq!(s.staged_paths(1).unwrap(), None, "more than one staged");
        let mut items = Vec::new();
        s.diff(&[PathBuf::from("/t")], |d| items.push(d)).unwrap();
        let paths: Vec<_> =
            items.iter().map(|d| (d.path.clone(), d.old.is_some(), d.new.is_some())).collect();
        assert_eq!(
            paths,
            vec![
                (PathBuf::from("/t/a"), true, true),
                (weird.clone(), false, true),
                (PathBuf::from("/t/gone"), true, false)
            ]
        );
        s.apply(&[PathBuf::from("/t")]).unwrap();
        assert_eq!(s.file_count().unwrap(), 3);
        assert!(s.get(Path::new("/t0")).unwrap().is_some(), "/t0 is outside /t");
        assert_eq!(s.get(&weird).unwrap().unwrap().size, 3);
        s.move_below(Path::new("/t"), Path::new("/u")).unwrap();
        assert!(s.get(Path::new("/u/a")).unwrap().is_some());
        assert!(s.get(Path::new("/t/a")).unwrap().is_none());
        let moved = PathBuf::from(std::ffi::OsStr::from_bytes(b"/u/\xff"));
        assert!(s.get(&moved).unwrap().is_some());
    }

    /// A merged read answers exactly what one lookup per path does, in the order asked: across
    /// runs, past a subdirectory's rows (more than are stepped over before seeking again),
    /// names that sort around `/` (`a-b`, `a.c`, `a0` against `a/...`), absent paths, a path
    /// asked twice, a damaged row (an error for its own path only), and a path that is not
    /// UTF-8.
    #[test]
    fn merged_baseline_reads_answer_as_one_lookup_per_path() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let weird: &[u8] = b"/t/\xff";
        let mut stored: Vec<Vec<u8>> =
            ["/t", "/t/a", "/t/a-b", "/t/a.c", "/t/a0", "/t/b", "/t/d", "/t/damaged", "/u"]
                .iter()
                .map(|p| p.as_bytes().to_vec())
                .collect();
        stored.extend((0..3 * MAX_ROWS_STEPPED_OVER).map(|i| format!("/t/a/{i:02}").into_bytes()));
        stored.push(weird.to_vec());
        for (i, p) in stored.iter().enumerate() {
            s.put(Path::new(OsStr::from_bytes(p)), &rec(i as u64)).unwrap();
        }
        s.conn.execute("UPDATE files SET kind = 99 WHERE path = ?1", [b"/t/damaged".as_slice()]).unwrap();
        let asked: Vec<&[u8]> = vec![
            b"/t",
            b"/t/a",
            b"/t/a-b",
            b"/t/a.c",
            b"/t/a0",
            b"/t/b",
            b"/t/c",
            b"/t/d",
            b"/t/damaged",
            b"/t/e",
            weird, // one ascending run so far
            b"/t/a/03",
            b"/t/a/07",
            b"/t/a/07",
            b"/t/a/08",
            b"/t/zz",
            b"/u",
            b"/v",
            b"/a", // a run of one
        ];
        let one_by_one = |p: &[u8]| s.baseline_record(Path::new(OsStr::from_bytes(p)), false);
        let merged = s.baseline_records(&asked, false);
        assert_eq!(merged.len(), asked.len());
        for (p, got) in asked.iter().zip(merged) {
            let want = one_by_one(p);
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{}", String::from_utf8_lossy(p)),
                (Err(got), Err(want)) => assert_eq!(got.to_string(), want.to_string()),
                (got, want) => panic!("{}: merged {got:?}, looked up {want:?}", String::from_utf8_lossy(p)),
            }
        }
        assert!(s.baseline_records(&[b"/t/damaged"], false)[0].is_err());
        assert_eq!(
            s.baseline_records(&[b"/t/a", b"/t/a/00"], false)[1].as_ref().unwrap().as_ref().unwrap().size,
            9
        );
        assert!(s.baseline_records(&[], false).is_empty());

        // The staging table (what `init` staged) is read the same way.
        s.conn.execute_batch("DELETE FROM staging; INSERT INTO staging SELECT * FROM files").unwrap();
        let staged = s.staged_records(&asked);
        assert_eq!(staged.len(), asked.len());
        for (p, got) in asked.iter().zip(staged) {
            match (got, s.scanned_record(Path::new(OsStr::from_bytes(p)), None)) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{}", String::from_utf8_lossy(p)),
                (Err(got), Err(want)) => assert_eq!(got.to_string(), want.to_string()),
                (got, want) => panic!("{}: merged {got:?}, looked up {want:?}", String::from_utf8_lossy(p)),
            }
        }
        assert!(s.staged_records(&[b"/t/damaged"])[0].as_ref().unwrap_err().to_string().contains("staging"));
    }

    #[test]
    fn an_md5_round_trips_and_a_damaged_one_names_its_column() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let mut r = rec(1);
        r.md5 = Some([9; 16]);
        s.put(Path::new("/a"), &r).unwrap();
        assert_eq!(s.get(Path::new("/a")).unwrap().unwrap(), r);
        for (bytes, sha, what) in [
            (vec![9u8; 15], Some(vec![7u8; 32]), "15 bytes where MD5 digests have 16"),
            (vec![9u8; 16], None, "an MD5 without the content hash"),
        ] {
            s.conn
                .execute(
                    "UPDATE files SET md5 = ?1, sha256 = ?2 WHERE path = ?3",
                    params![bytes, sha, b"/a".as_slice()],
                )
                .unwrap();
            let e = s.get(Path::new("/a")).unwrap_err().to_string();
            assert!(e.contains("md5") && e.contains(what), "{e}");
        }
    }

    #[test]
    fn a_database_from_before_md5s_opens_and_reads_none() {
        let dir = tempfile::tempdir().unwrap();
        {
            // The schema as it was: no `md5` column.
            let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            let old = COLS.trim_end_matches(", md5");
            conn.execute_batch(&format!(
                "CREATE TABLE files (path BLOB PRIMARY KEY, {old}, mac BLOB) WITHOUT ROWID;
                 CREATE TABLE staging (path BLOB PRIMARY KEY, {old}, mac BLOB) WITHOUT ROWID;
                 CREATE TABLE resume (path BLOB PRIMARY KEY, {old}, mac BLOB) WITHOUT ROWID;
                 INSERT INTO files (path, {old}) VALUES (X'2F61', 0, 420, 0, 0, 1, 1, 2, 3, NULL, NULL, NULL, NULL, 0);"
            ))
            .unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let got = s.get(Path::new("/a")).unwrap().unwrap();
        assert_eq!((got.size, got.md5), (1, None));
        let mut r = rec(2);
        r.md5 = Some([1; 16]);
        s.put(Path::new("/b"), &r).unwrap();
        assert_eq!(s.get(Path::new("/b")).unwrap().unwrap(), r);
    }
}
