//! yum's SQLite `primary_db` (Amazon Linux 2 caches it instead of the XML `primary`).
//!
//! SQLite needs a file, and the cached one is compressed (`.sqlite.bz2`, `.xz`, `.gz`, `.zst`)
//! or may have been planted: it is decompressed through the [`HostRoot`] door with the same
//! size cap as the XML path into a new private directory (0700, file 0600, removed when done),
//! and SQLite only ever opens that copy, read-only and `immutable` (no lock, no `-wal`/`-shm`
//! written, no journal replayed). Statements are bounded in time by a deadline and in memory
//! by SQLite's limits; a damaged database is a problem naming the cached file.

use crate::dnf::Evr;
use crate::error::UpdatesError;
use crate::read::open_index;
use crate::{Config, Timestamp};
use guestward_core::HostRoot;
use rusqlite::limits::Limit;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Rows of `packages` read at most (Amazon Linux 2's core repository has about 60 000).
const MAX_ROWS: u64 = 2_000_000;
/// Time one database may take, from opening to the last row.
const DEADLINE: Duration = Duration::from_secs(60);
/// Virtual-machine instructions between two deadline checks.
const PROGRESS_OPS: i32 = 1000;

/// Reads `packages` (name, arch, epoch, version, release) of the `primary_db` at `path`:
/// `keep(name, arch, evr)` for packages with wanted names. Returns the row count, the cached
/// file's modification time and an error met part-way (earlier rows kept), like
/// `dnf::read_primary`.
pub(crate) fn read_primary_db(
    root: &HostRoot,
    path: &Path,
    config: &Config,
    wanted: &HashSet<&str>,
    mut keep: impl FnMut(String, String, Evr),
) -> Result<(u64, Option<Timestamp>, Option<UpdatesError>), UpdatesError> {
    let mut index = open_index(root, path, config.max_index_bytes)?;
    let shown = index.shown.clone();
    let modified = index.modified;
    let scratch_err = |source: std::io::Error| UpdatesError::Decode { path: shown.clone(), source };
    let dir = tempfile::Builder::new().prefix("guestward-primary-").tempdir().map_err(scratch_err)?;
    let copy = dir.path().join("primary.sqlite");
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&copy)
        .map_err(scratch_err)?;
    // The decompressed stream is capped by `open_index`: a bomb fails here, not in SQLite.
    std::io::copy(&mut index.reader, &mut out).map_err(scratch_err)?;
    out.flush().map_err(scratch_err)?;
    drop(out);

    let sql_err = |e: rusqlite::Error| UpdatesError::Sqlite { path: shown.clone(), message: e.to_string() };
    let conn = open(&copy).map_err(sql_err)?;
    let mut stmt =
        conn.prepare("SELECT name, arch, epoch, version, release FROM packages").map_err(sql_err)?;
    let mut rows = stmt.query([]).map_err(sql_err)?;
    let mut entries = 0u64;
    loop {
        let row = match rows.next() {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => return Ok((entries, modified, Some(sql_err(e)))),
        };
        if entries == MAX_ROWS {
            let message = format!("more than {MAX_ROWS} packages; the rest were not read");
            return Ok((entries, modified, Some(UpdatesError::Sqlite { path: shown.clone(), message })));
        }
        entries += 1;
        let text = |i: usize| row.get_ref(i).ok().and_then(value_text);
        let (Some(name), Some(arch)) = (text(0), text(1)) else { continue };
        if arch == "src" || !wanted.contains(name.as_str()) {
            continue;
        }
        let (Some(version), Some(release)) = (text(3), text(4)) else { continue };
        let epoch = text(2).and_then(|e| e.trim().parse().ok());
        keep(name, arch, Evr { epoch, version, release });
    }
    Ok((entries, modified, None))
}

/// yum writes text columns; an integer epoch is accepted too. Blobs and NULLs are not text.
fn value_text(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Text(t) => std::str::from_utf8(t).ok().map(str::to_string),
        ValueRef::Integer(i) => Some(i.to_string()),
        _ => None,
    }
}

/// Opens our private copy read-only and `immutable`, with every statement bounded.
fn open(copy: &Path) -> Result<Connection, rusqlite::Error> {
    let flags =
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn =
        Connection::open_with_flags(format!("file:{}?mode=ro&immutable=1", uri_path(copy)), flags)?;
    for (limit, value) in [
        (Limit::SQLITE_LIMIT_LENGTH, 1 << 20),
        (Limit::SQLITE_LIMIT_SQL_LENGTH, 1 << 20),
        (Limit::SQLITE_LIMIT_COLUMN, 200),
        (Limit::SQLITE_LIMIT_EXPR_DEPTH, 100),
        (Limit::SQLITE_LIMIT_ATTACHED, 0),
        (Limit::SQLITE_LIMIT_WORKER_THREADS, 0),
        (Limit::SQLITE_LIMIT_TRIGGER_DEPTH, 1),
    ] {
        conn.set_limit(limit, value)?;
    }
    let deadline = Instant::now() + DEADLINE;
    conn.progress_handler(PROGRESS_OPS, Some(move || Instant::now() >= deadline))?;
    for (config, on) in [
        (rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true),
        (rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false),
        (rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_VIEW, false),
        (rusqlite::config::DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false),
    ] {
        conn.set_db_config(config, on)?;
    }
    // No temporary files, no mapping (a copy is ours, but a page cache of 2 MiB is plenty).
    conn.execute_batch(
        "PRAGMA query_only = 1; PRAGMA temp_store = 2; PRAGMA cache_size = -2048; PRAGMA mmap_size = 0;",
    )?;
    Ok(conn)
}

/// Percent-encodes what would change the meaning of a `file:` URI (the temporary directory
/// comes from `TMPDIR`).
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for b in path.as_os_str().as_encoded_bytes() {
        match b {
            b'%' | b'?' | b'#' | 0x80..=0xff => out.push_str(&format!("%{b:02X}")),
            _ => out.push(char::from(*b)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn uri_escapes_query_characters() {
        assert_eq!(uri_path(Path::new("/a b/x?y#z%")), "/a b/x%3Fy%23z%25");
    }

    #[test]
    fn a_file_that_is_not_a_database_is_a_problem_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x-primary.sqlite"), vec![b'x'; 8192]).unwrap();
        let root = HostRoot::new(dir.path()).unwrap();
        let got = read_primary_db(
            &root,
            Path::new("/x-primary.sqlite"),
            &Config::default(),
            &HashSet::from(["a"]),
            |_, _, _| {},
        );
        let err = match got {
            Err(e) | Ok((_, _, Some(e))) => e,
            Ok(_) => panic!("read as a database"),
        };
        assert_eq!(err.code(), "malformed");
        assert!(err.to_string().contains("x-primary.sqlite"), "{err}");
    }
}
