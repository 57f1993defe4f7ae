//! Opening `rpmdb.sqlite` without trusting it.
//!
//! Security: the database may come from a hostile tree (`scan --root` over a compromised
//! instance's volume or a container's rootfs). Three things go wrong when SQLite is simply
//! pointed at it:
//! - SQLite opens files by path, with a blocking `open(2)`: a FIFO named `rpmdb.sqlite` (or
//!   `-wal`, `-shm`, `-journal`) hangs the scan for ever, a device node is read without end.
//!   SQLite cannot be handed a descriptor we verified: given `/proc/self/fd/N` its unix VFS
//!   resolves every symlink in the name itself (`appendOnePathElement`) and opens the
//!   textual target again, so the check and the open would still be two lookups.
//! - A database in WAL mode makes SQLite create `-shm` next to it (issue 9, item 16: a
//!   `scan --root` wrote into the scanned tree), and `immutable=1`, which writes nothing,
//!   ignores the transactions still sitting in a `-wal`.
//! - Queries over a hostile schema can run for ever or spill into temporary files
//!   (see `configure` and `schema.rs`).
//!
//! So under a non-live root SQLite never sees the tree: the database and its `-wal` and
//! `-journal` are read through the [`HostRoot`] door (regular files only, checked on the
//! open descriptor, symlinks resolved inside the root) and copied into a private directory
//! of ours (0700, deleted afterwards, bounded by [`Limits::max_snapshot_copy_bytes`]);
//! SQLite opens the copy, replays the WAL and rolls back a hot journal there exactly as rpm
//! would, and writes its `-shm` there. No check-then-open race is left, and nothing is
//! written under the root. The price is a temporary copy as large as the database; a
//! database over the limit is refused, not read in place (reading it in place would bring the
//! race back, and padding the file is all an attacker would need to force that path).
//!
//! On the live root the files are rpm's own, in a directory only root can write; they are
//! checked through the door and then opened by path. The residual race (a file swapped for a
//! FIFO between our check and SQLite's `open`) needs root on that host, which already owns
//! the agent.

use crate::{Limits, RpmdbError};
use guestward_core::{HostFsError, HostRoot};
use rusqlite::config::DbConfig;
use rusqlite::limits::Limit;
use rusqlite::{Connection, OpenFlags};
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Files SQLite may open next to the database.
pub(super) const SIDECARS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Virtual-machine instructions between two checks of the deadline (a check is a clock read;
/// a thousand instructions take microseconds).
const PROGRESS_OPS: i32 = 1000;

/// An open, configured connection, with the private copy it reads from when there is one.
pub(super) struct Opened {
    /// The connection (declared first: it closes before the directory below is removed).
    pub conn: Connection,
    _scratch: Option<tempfile::TempDir>,
}

/// A sidecar file found next to the database, open through the door.
struct Sidecar {
    suffix: &'static str,
    file: File,
    len: u64,
}

/// Opens `host_path` (an `rpmdb.sqlite` as seen by the scanned system) and configures the
/// connection; see the module documentation.
pub(super) fn open(
    root: &HostRoot,
    host_path: &Path,
    limits: &Limits,
    deadline: Instant,
) -> Result<Opened, RpmdbError> {
    // The door refuses FIFOs, devices and sockets on the open descriptor, before any read.
    let (db, real) = root.open(host_path)?;
    let mut sidecars = Vec::new();
    for suffix in SIDECARS {
        if let Some(s) = sidecar(root, host_path, suffix)? {
            sidecars.push(s);
        }
    }
    let sql_err = |source| RpmdbError::Sqlite { path: host_path.to_owned(), source };
    if root.is_live() {
        drop(db);
        let wal_in_use = sidecars.iter().any(|s| s.suffix == "-wal" && s.len > 0);
        let conn = open_live(&real, wal_in_use, limits, deadline).map_err(sql_err)?;
        return Ok(Opened { conn, _scratch: None });
    }
    let (scratch, copy) = copy_snapshot(host_path, db, sidecars, limits)?;
    let uri = format!("file:{}?mode=rw", uri_path(&copy));
    // Read-write on our own copy only, so that SQLite can replay the WAL and roll back a hot
    // journal as rpm would; `query_only` (set in `configure`) keeps our statements from
    // writing.
    let flags =
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = connect(&uri, flags, limits, deadline).map_err(sql_err)?;
    Ok(Opened { conn, _scratch: Some(scratch) })
}

/// The live root: rpm's own files, opened in place read-only.
///
/// `immutable=1` tells SQLite the file cannot change: no locks, no `-shm`/`-wal` files are
/// created. That would ignore committed transactions still sitting in a non-empty `-wal`
/// file, so when one exists we first open plainly read-only (rpm itself keeps the `-shm`
/// there), and fall back to `immutable` only if that fails.
fn open_live(
    real: &Path,
    wal_in_use: bool,
    limits: &Limits,
    deadline: Instant,
) -> Result<Connection, rusqlite::Error> {
    let flags =
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let uri = uri_path(real);
    if wal_in_use
        && let Ok(c) = connect(&format!("file:{uri}?mode=ro"), flags, limits, deadline)
        // Opening is lazy: make sure the schema is readable before trusting this path.
        && c.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)).is_ok()
    {
        return Ok(c);
    }
    connect(&format!("file:{uri}?mode=ro&immutable=1"), flags, limits, deadline)
}

/// Opens `uri` and bounds what any statement on it may cost, before the first statement runs
/// (the schema is loaded lazily by the first one).
fn connect(
    uri: &str,
    flags: OpenFlags,
    limits: &Limits,
    deadline: Instant,
) -> Result<Connection, rusqlite::Error> {
    let mut conn = Connection::open_with_flags(uri, flags)?;
    configure(&mut conn, limits, deadline)?;
    Ok(conn)
}

/// Bounds time, memory and disk for every statement on `conn`.
///
/// - Time: the progress handler interrupts any statement once `deadline` has passed, including
///   the schema load and anything a hostile schema makes SQLite do.
/// - Disk: `temp_store=MEMORY`, so no statement ever creates a temporary file (a query that
///   needed one would otherwise fill `/var/tmp`); our own statements need none (checked in
///   `schema.rs`). `mmap_size=0`: a file mapped and then truncated under us would be SIGBUS.
/// - Memory: a 2 MiB page cache, values no larger than the header limit, at most
///   [`MAX_SCHEMA_OBJECTS`] schema objects of at most [`MAX_SQL_BYTES`] each. SQLite's heap
///   limit (`hard_heap_limit`) is process-wide and would also cap the FIM baseline's
///   connections in the daemon, so it is not used; the per-connection bounds above and the
///   fixed query plans are what bound memory.
/// - Behaviour: read-only statements (`query_only`), no triggers, no views, no schema
///   functions with side effects (`trusted_schema=OFF`), `DEFENSIVE`, nothing attached.
fn configure(conn: &mut Connection, limits: &Limits, deadline: Instant) -> Result<(), rusqlite::Error> {
    let max_value = i32::try_from(limits.max_header_bytes.saturating_add(1)).unwrap_or(i32::MAX).max(1 << 20);
    for (limit, value) in [
        (Limit::SQLITE_LIMIT_LENGTH, max_value),
        (Limit::SQLITE_LIMIT_SQL_LENGTH, MAX_SQL_BYTES),
        (Limit::SQLITE_LIMIT_SCHEMA, MAX_SCHEMA_OBJECTS),
        (Limit::SQLITE_LIMIT_COLUMN, 100),
        (Limit::SQLITE_LIMIT_EXPR_DEPTH, 100),
        (Limit::SQLITE_LIMIT_COMPOUND_SELECT, 10),
        (Limit::SQLITE_LIMIT_ATTACHED, 0),
        (Limit::SQLITE_LIMIT_WORKER_THREADS, 0),
        (Limit::SQLITE_LIMIT_TRIGGER_DEPTH, 1),
    ] {
        conn.set_limit(limit, value)?;
    }
    conn.progress_handler(PROGRESS_OPS, Some(move || Instant::now() >= deadline))?;
    for (config, on) in [
        (DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true),
        (DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false),
        (DbConfig::SQLITE_DBCONFIG_ENABLE_VIEW, false),
        (DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false),
    ] {
        conn.set_db_config(config, on)?;
    }
    conn.execute_batch(
        "PRAGMA query_only = 1; PRAGMA temp_store = 2; PRAGMA cache_size = -2048; PRAGMA mmap_size = 0;",
    )?;
    Ok(())
}

/// Most objects (tables, indexes, ...) a database schema may define. rpm's has about 50.
pub(super) const MAX_SCHEMA_OBJECTS: i32 = 1000;

/// Longest SQL statement, including each `CREATE` statement of the schema. rpm's are under
/// 300 bytes.
pub(super) const MAX_SQL_BYTES: i32 = 64 << 10;

/// Opens a sidecar through the door: missing is fine; anything but a regular file is refused
/// (the door decides on the file's type before opening it, so a FIFO never blocks and a
/// device's driver is never run), and SQLite never gets to open it.
fn sidecar(root: &HostRoot, host_path: &Path, suffix: &'static str) -> Result<Option<Sidecar>, RpmdbError> {
    let mut name = OsString::from(host_path.as_os_str());
    name.push(suffix);
    match root.open(PathBuf::from(name)) {
        Ok((file, real)) => {
            let len = file.metadata().map_err(|e| HostFsError::from_io(real, e))?.len();
            Ok(Some(Sidecar { suffix, file, len }))
        }
        Err(HostFsError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Copies the database and its `-wal`/`-journal` (not `-shm`, a cache SQLite rebuilds from
/// the WAL) into a new private directory, each read from its descriptor opened by the door.
fn copy_snapshot(
    host_path: &Path,
    db: File,
    sidecars: Vec<Sidecar>,
    limits: &Limits,
) -> Result<(tempfile::TempDir, PathBuf), RpmdbError> {
    let to_copy: Vec<Sidecar> = sidecars.into_iter().filter(|s| s.suffix != "-shm" && s.len > 0).collect();
    let db_len = db.metadata().map(|m| m.len()).unwrap_or(0);
    let size = to_copy.iter().fold(db_len, |acc, s| acc.saturating_add(s.len));
    let limit = limits.max_snapshot_copy_bytes;
    let too_large = || RpmdbError::SnapshotTooLarge { path: host_path.to_owned(), size, limit };
    if size > limit {
        return Err(too_large());
    }
    let scratch_err = |scratch: &Path, source| RpmdbError::Scratch {
        path: host_path.to_owned(),
        scratch: scratch.to_owned(),
        source,
    };
    let dir = tempfile::Builder::new()
        .prefix("guestward-rpmdb-")
        .tempdir()
        .map_err(|e| scratch_err(&std::env::temp_dir(), e))?;
    let copy = dir.path().join("rpmdb.sqlite");
    // The budget is re-checked while copying: a file may grow after we sized it.
    let mut budget = limit;
    copy_capped(db, &copy, &mut budget).map_err(|e| match e {
        CopyError::TooLarge => too_large(),
        CopyError::Io(source) => scratch_err(&copy, source),
    })?;
    for s in to_copy {
        let mut dest = copy.clone().into_os_string();
        dest.push(s.suffix);
        let dest = PathBuf::from(dest);
        copy_capped(s.file, &dest, &mut budget).map_err(|e| match e {
            CopyError::TooLarge => too_large(),
            CopyError::Io(source) => scratch_err(&dest, source),
        })?;
    }
    Ok((dir, copy))
}

enum CopyError {
    TooLarge,
    Io(std::io::Error),
}

fn copy_capped(from: File, to: &Path, budget: &mut u64) -> Result<(), CopyError> {
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(CopyError::Io)?;
    let copied = std::io::copy(&mut from.take(budget.saturating_add(1)), &mut out).map_err(CopyError::Io)?;
    if copied > *budget {
        return Err(CopyError::TooLarge);
    }
    *budget -= copied;
    out.flush().map_err(CopyError::Io)
}

/// Percent-encodes the characters that would change the meaning of a `file:` URI.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for b in path.as_os_str().as_encoded_bytes() {
        match b {
            b'%' | b'?' | b'#' => out.push_str(&format!("%{b:02X}")),
            // Non-ASCII bytes are escaped too so a non-UTF-8 path survives intact.
            0x80..=0xff => out.push_str(&format!("%{b:02X}")),
            _ => out.push(char::from(*b)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::Duration;

    #[test]
    fn uri_escapes_query_characters() {
        assert_eq!(uri_path(Path::new("/a b/x?y#z%")), "/a b/x%3Fy%23z%25");
    }

    fn configured_memory_db(deadline: Instant) -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        configure(&mut conn, &Limits::default(), deadline).unwrap();
        conn
    }

    #[test]
    fn an_endless_query_is_interrupted_at_the_deadline() {
        // The mechanism that bounds every statement, schema load included: without it this
        // recursive query never returns.
        let conn = configured_memory_db(Instant::now() + Duration::from_millis(200));
        let started = Instant::now();
        let err = conn
            .query_row(
                "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap_err();
        assert_eq!(err.sqlite_error_code(), Some(rusqlite::ErrorCode::OperationInterrupted), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }

    /// SQLite's temporary files this process holds open: unlinked files named `etilqs_*`, or
    /// made with `O_TMPFILE` (which `/proc` shows as `#<inode> (deleted)`).
    fn sqlite_temp_files_open() -> Vec<PathBuf> {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|t| {
                let name = t.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                name.ends_with(" (deleted)") && (name.starts_with("etilqs_") || name.starts_with('#'))
            })
            .collect()
    }

    #[test]
    fn a_sort_too_large_for_the_cache_creates_no_temporary_file() {
        // What a hostile `ORDER BY` over an endless view did to /var/tmp, on a small scale: a
        // sort larger than the page cache. Checked while the statement holds its first row,
        // when the sorter's storage is in use.
        const SORT: &str = "SELECT x FROM t ORDER BY x";
        let holding_first_row = |conn: &Connection| {
            let mut stmt = conn.prepare(SORT).unwrap();
            let mut rows = stmt.query([]).unwrap();
            assert!(rows.next().unwrap().is_some());
            sqlite_temp_files_open()
        };
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db.sqlite");
        Connection::open(&db)
            .unwrap()
            .execute_batch(
                "CREATE TABLE t(x); INSERT INTO t(x) WITH RECURSIVE r(n) AS \
                   (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 20000) SELECT randomblob(500) FROM r;",
            )
            .unwrap();
        // Control: SQLite's defaults spill this sort into a temporary file (so the probe works).
        let plain = Connection::open(&db).unwrap();
        plain.execute_batch("PRAGMA cache_size = 10;").unwrap();
        assert!(!holding_first_row(&plain).is_empty(), "control: the default settings should spill");
        drop(plain);
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI;
        let conn = connect(
            &format!("file:{}?mode=ro", uri_path(&db)),
            flags,
            &Limits::default(),
            Instant::now() + Duration::from_secs(60),
        )
        .unwrap();
        conn.execute_batch("PRAGMA cache_size = 10;").unwrap();
        assert_eq!(holding_first_row(&conn), Vec::<PathBuf>::new());
    }

    #[test]
    fn temporary_storage_stays_in_memory_and_nothing_is_attached() {
        let conn = configured_memory_db(Instant::now() + Duration::from_secs(60));
        let temp_store: i64 = conn.query_row("PRAGMA temp_store", [], |r| r.get(0)).unwrap();
        assert_eq!(temp_store, 2, "temp_store must be MEMORY: no temporary files in /var/tmp");
        assert!(conn.execute_batch("ATTACH DATABASE ':memory:' AS other").is_err());
        assert!(conn.execute_batch("CREATE TABLE t(x)").is_err(), "query_only");
    }
}
