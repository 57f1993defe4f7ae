//! Compaction of a database made by an earlier version (`guestward-collector db compact`): its
//! plain findings and events compressed, each host's bytes counted again, and the file
//! converted to incremental `auto_vacuum`, so that retention hands deleted space back to the
//! file system instead of keeping it in the file for good.
//!
//! Why offline: the conversion is a `VACUUM`, which rewrites the whole file and needs the
//! database to itself. The compaction holds SQLite's exclusive lock from its first statement to
//! its last (`locking_mode = EXCLUSIVE`), so a running collector makes it refuse at once, and a
//! collector started meanwhile cannot open the database (it waits, then says it is locked)
//! instead of writing beside it.
//!
//! Every step is a transaction of its own: a compaction killed half-way leaves a database the
//! collector reads as it is, and the next run goes on where it stopped (the rows it rewrote
//! have their length recorded, and are not read again).

use super::schema;
use super::stored_json::{Encoder, value_bytes};
use super::{StoreError, to_i64, to_u64};
use nix::unistd::AccessFlags;
use rusqlite::{Connection, OpenFlags, params};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Most rows rewritten in one transaction.
const BATCH_ROWS: usize = 256;
/// Most bytes of values read for one transaction: memory holds one batch, however large the
/// database (one value still comes whole, as the collector's readers take it).
const BATCH_BYTES: usize = 16 << 20;
/// Room asked beyond the estimate before a `VACUUM` ([`live_bytes`]): the rewrite does not fill
/// every page to the last byte, and the write-ahead log adds a header to each. Measured: a
/// file of 5,687,077 bytes used came out at 5.77 MB (1.5 % more).
pub(super) const VACUUM_ROOM_MARGIN_PERCENT: u64 = 25;

/// What to do.
#[derive(Debug, Clone, Copy)]
pub struct CompactOptions {
    /// Convert to incremental `auto_vacuum` (a rewrite of the whole file), or hand the free
    /// pages back when the file has it already. `false` (`--no-vacuum`): rows only.
    pub vacuum: bool,
}

/// What a compaction did.
#[derive(Debug, Clone, Serialize)]
pub struct CompactSummary {
    /// The database file.
    pub path: PathBuf,
    /// The database and its write-ahead log, before.
    pub file_bytes_before: u64,
    /// The database and its write-ahead log, after.
    pub file_bytes_after: u64,
    /// Findings and events written before compression, rewritten: their length recorded, and
    /// compressed when that pays (as new rows are).
    pub rows_rewritten: u64,
    /// Of those, how many are now compressed.
    pub rows_compressed: u64,
    /// What the rewritten rows' values took before.
    pub value_bytes_before: u64,
    /// What they take now.
    pub value_bytes_after: u64,
    /// Hosts whose `stored_bytes` (what `max_bytes_per_host` caps) was counted again.
    pub hosts_recounted: u64,
    /// What became of the file's free space.
    pub vacuum: VacuumOutcome,
}

/// What became of the file's free space.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum VacuumOutcome {
    /// `--no-vacuum`: the free pages stay in the file, for new rows.
    NotAsked,
    /// The file had incremental `auto_vacuum` already: its free pages were handed back.
    FreePagesReleased {
        /// Pages handed back.
        pages: u64,
    },
    /// The file was rewritten with incremental `auto_vacuum`: it holds no free page now, and
    /// retention hands back what it deletes from here on.
    Converted,
    /// Not done: too little room for the rewrite.
    Skipped {
        /// Why, with the room needed and where.
        reason: String,
    },
}

/// Compacts the database at `path` (see the module's documentation). Refuses when another
/// process has it open.
pub fn compact(path: &Path, options: CompactOptions) -> Result<CompactSummary, StoreError> {
    let open_err = |reason: String| StoreError::Open { path: path.to_path_buf(), reason };
    // A path that is not a regular file is refused as `SqliteStore::open` refuses it: a FIFO
    // would hang the open, a symlink could point the rewrite elsewhere.
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(open_err("it is a symlink; give the real path".into()));
        }
        Ok(meta) if !meta.is_file() => return Err(open_err("not a regular file".into())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(open_err(
                "no such file: give the collector's database (`--db`, or `--config` and its `db`)".into(),
            ));
        }
        Err(e) => return Err(open_err(e.to_string())),
    }
    // SQLite reports a database it may read but not write, or whose directory it may not
    // write its write-ahead log into, as a bare "disk I/O error": say it in words.
    let dir = parent_dir(path);
    let writable = |p: &Path, mode| nix::unistd::access(p, mode).is_ok();
    if !writable(path, AccessFlags::R_OK | AccessFlags::W_OK)
        || !writable(&dir, AccessFlags::W_OK | AccessFlags::X_OK)
    {
        return Err(open_err(format!(
            "this user may not write it, or its directory {} (where SQLite keeps the write-ahead log): \
             run this as the collector's user (`sudo -u guestward-collector ...`)",
            dir.display()
        )));
    }
    let file_bytes_before = file_bytes(path);
    let mut conn = open_alone(path).map_err(open_err)?;
    schema::prepare(&conn).map_err(|e| open_err(format!("cannot create or update the schema: {e}")))?;

    let mut summary = CompactSummary {
        path: path.to_path_buf(),
        file_bytes_before,
        file_bytes_after: file_bytes_before,
        rows_rewritten: 0,
        rows_compressed: 0,
        value_bytes_before: 0,
        value_bytes_after: 0,
        hosts_recounted: 0,
        vacuum: VacuumOutcome::NotAsked,
    };
    let db_err = |e: rusqlite::Error| StoreError::Database(e.to_string());
    for (table, column) in [("findings", "finding"), ("events", "event")] {
        rewrite_plain_rows(&mut conn, table, column, &mut summary)?;
    }
    // Exact, and in one statement: nothing else writes while the lock is held.
    let recounted = conn
        .execute(
            &format!("UPDATE hosts SET stored_bytes = {}", schema::host_bytes_recount_sql("hosts.host_id")),
            [],
        )
        .map_err(db_err)?;
    summary.hosts_recounted = u64::try_from(recounted).unwrap_or(u64::MAX);
    if options.vacuum {
        summary.vacuum = vacuum(&conn, path)?;
    }
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).map_err(db_err)?;
    drop(conn);
    summary.file_bytes_after = file_bytes(path);
    Ok(summary)
}

/// Opens `path` (never creating it) and takes SQLite's exclusive lock, held until the
/// connection closes. `Err` says why, in words for the operator.
fn open_alone(path: &Path) -> Result<Connection, String> {
    // No `SQLITE_OPEN_CREATE` (a mistyped path is an error, not a new empty database) and no
    // URI names (a path is a path).
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| e.to_string())?;
    let setup = |conn: &Connection| -> rusqlite::Result<()> {
        // Refuse at once rather than wait: a collector holds its connections for its lifetime.
        conn.busy_timeout(Duration::ZERO)?;
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "journal_size_limit", super::WAL_KEPT_BYTES)?;
        // The lock is taken by the first write transaction and kept after its commit.
        conn.execute_batch("BEGIN EXCLUSIVE; COMMIT;")
    };
    setup(&conn).map_err(|e| {
        if schema::held_by_another(&e) {
            "another process has it open (a running collector?): stop the collector, then compact".to_string()
        } else {
            e.to_string()
        }
    })?;
    Ok(conn)
}

/// Rewrites the rows of `table` written before compression (`json_bytes` NULL), a batch per
/// transaction, in rowid order.
fn rewrite_plain_rows(
    conn: &mut Connection,
    table: &str,
    column: &str,
    summary: &mut CompactSummary,
) -> Result<(), StoreError> {
    let db_err = |e: rusqlite::Error| {
        let advice = match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => "free some room, then run it again to go on",
            _ => "run it again to go on",
        };
        StoreError::Database(format!(
            "rewriting the {table}: {e} (the rows rewritten before, in committed batches, are kept: {advice})"
        ))
    };
    let total: i64 = conn
        .query_row(&format!("SELECT COUNT(*) FROM {table} WHERE json_bytes IS NULL"), [], |r| r.get(0))
        .map_err(db_err)?;
    if total == 0 {
        return Ok(());
    }
    tracing::info!(table, rows = total, "rewriting the rows written before compression");
    let select = format!(
        "SELECT rowid, {column} FROM {table} WHERE json_bytes IS NULL AND rowid > ?1 ORDER BY rowid LIMIT {BATCH_ROWS}"
    );
    let update =
        format!("UPDATE {table} SET {column} = ?1, compressed = ?2, json_bytes = ?3 WHERE rowid = ?4");
    let mut encoder = Encoder::default();
    let mut after_rowid = i64::MIN;
    let mut done: i64 = 0;
    let mut last_told = 0;
    loop {
        let tx = conn.transaction().map_err(db_err)?;
        let mut batch = Vec::new();
        {
            let mut stmt = tx.prepare_cached(&select).map_err(db_err)?;
            let mut rows = stmt.query([after_rowid]).map_err(db_err)?;
            let mut bytes = 0usize;
            while let Some(row) = rows.next().map_err(db_err)? {
                let rowid: i64 = row.get(0).map_err(db_err)?;
                let value = value_bytes(row, 1).map_err(db_err)?.unwrap_or_default();
                bytes = bytes.saturating_add(value.len());
                batch.push((rowid, value));
                if bytes >= BATCH_BYTES {
                    break;
                }
            }
        }
        let Some(&(last_rowid, _)) = batch.last() else { break };
        {
            let mut stmt = tx.prepare_cached(&update).map_err(db_err)?;
            for (rowid, value) in batch {
                summary.value_bytes_before += value.len() as u64;
                let stored = encoder.encode(value)?;
                summary.value_bytes_after += stored.bytes.len() as u64;
                summary.rows_compressed += u64::from(stored.compressed);
                stmt.execute(params![stored.bytes, stored.compressed, to_i64(stored.json_len as u64), rowid])
                    .map_err(db_err)?;
                summary.rows_rewritten += 1;
                done += 1;
            }
        }
        tx.commit().map_err(db_err)?;
        after_rowid = last_rowid;
        // A line per tenth: a large database takes minutes.
        if done * 10 / total > last_told {
            last_told = done * 10 / total;
            tracing::info!(table, done, of = total, "rewritten");
        }
    }
    Ok(())
}

/// Hands free pages back (incremental `auto_vacuum`), or converts the file to it when there is
/// room for the rewrite.
fn vacuum(conn: &Connection, path: &Path) -> Result<VacuumOutcome, StoreError> {
    let db_err = |e: rusqlite::Error| StoreError::Database(format!("vacuum: {e}"));
    if schema::has_incremental_vacuum(conn).map_err(db_err)? {
        let pages = to_u64(schema::pragma_i64(conn, "freelist_count").map_err(db_err)?);
        schema::incremental_vacuum(conn, None).map_err(db_err)?;
        return Ok(VacuumOutcome::FreePagesReleased { pages });
    }
    // The rewrite copies the live data into a temporary database, then back through the
    // write-ahead log: room for it twice, in the temporary directory and beside the file.
    let live = live_bytes(conn).map_err(db_err)?;
    let needed = live.saturating_add(live * VACUUM_ROOM_MARGIN_PERCENT / 100);
    let db_dir = parent_dir(path);
    let temp_dir = sqlite_temp_dir();
    if let Some(reason) = too_little_room(&db_dir, &temp_dir, needed) {
        return Ok(VacuumOutcome::Skipped { reason });
    }
    tracing::info!(bytes = live, "converting to incremental auto_vacuum: rewriting the whole file");
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;").map_err(|e| {
        StoreError::Database(format!(
            "vacuum: {e} (the rows rewritten before are kept; the file keeps its free pages)"
        ))
    })?;
    Ok(VacuumOutcome::Converted)
}

/// What the database holds, as the rewrite will pack it: the bytes used in its pages (SQLite's
/// `dbstat`, which reads every page). Rows shrunk in place by the rewrite of step 1 leave
/// half-empty pages, so counting whole pages asked for several times the room needed (43 MiB
/// for a file that came out at 5.5 MiB). Whole pages are counted when `dbstat` is missing.
pub(super) fn live_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let used =
        conn.query_row("SELECT COALESCE(SUM(pgsize - unused), 0) FROM dbstat", [], |r| r.get::<_, i64>(0));
    let pragma = |name: &str| schema::pragma_i64(conn, name);
    let page_size = pragma("page_size")?;
    match used {
        // Plus a page for each of the schema's b-trees (tables, indexes, the schema's own),
        // which the rewrite starts whatever they hold.
        Ok(used) => {
            let trees: i64 =
                conn.query_row("SELECT COUNT(*) + 1 FROM sqlite_master WHERE rootpage > 0", [], |r| {
                    r.get(0)
                })?;
            Ok(to_u64(used.saturating_add(page_size.saturating_mul(trees))))
        }
        Err(_) => Ok(to_u64(pragma("page_count")?.saturating_sub(pragma("freelist_count")?))
            .saturating_mul(to_u64(page_size))),
    }
}

/// Why `needed` bytes do not fit both beside the database (in `db_dir`) and in `temp_dir`
/// (twice when they share a file system); `None` when they do or the room cannot be read (the
/// `VACUUM` then fails cleanly if it runs out).
fn too_little_room(db_dir: &Path, temp_dir: &Path, needed: u64) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let free = |dir: &Path| {
        nix::sys::statvfs::statvfs(dir).ok().map(|s| s.blocks_available().saturating_mul(s.fragment_size()))
    };
    let device = |dir: &Path| std::fs::metadata(dir).ok().map(|m| m.dev());
    let human = guestward_core::human::bytes;
    let shared = device(db_dir).is_some() && device(db_dir) == device(temp_dir);
    if shared {
        let free = free(db_dir)?;
        let twice = needed.saturating_mul(2);
        return (free < twice).then(|| {
            format!(
                "the rewrite needs about {} free in {} (the temporary copy and the write-ahead log, \
                 on the same file system), and {} is free; free some room, or set SQLITE_TMPDIR to \
                 a directory on another file system",
                human(twice),
                db_dir.display(),
                human(free)
            )
        });
    }
    for (dir, what) in
        [(db_dir, "beside the database (its write-ahead log)"), (temp_dir, "for the temporary copy")]
    {
        let free = free(dir)?;
        if free < needed {
            return Some(format!(
                "the rewrite needs about {} free in {} {what}, and {} is free; free some room{}",
                human(needed),
                dir.display(),
                human(free),
                if dir == temp_dir { ", or set SQLITE_TMPDIR to a directory with more" } else { "" }
            ));
        }
    }
    None
}

/// The directory SQLite puts its temporary files in, chosen as its Unix layer chooses: the
/// first of `SQLITE_TMPDIR`, `TMPDIR`, `/var/tmp`, `/usr/tmp`, `/tmp` that is a directory it
/// may write into, else the working directory.
fn sqlite_temp_dir() -> PathBuf {
    let candidates = [std::env::var_os("SQLITE_TMPDIR"), std::env::var_os("TMPDIR")]
        .into_iter()
        .flatten()
        .map(PathBuf::from)
        .chain(["/var/tmp", "/usr/tmp", "/tmp"].map(PathBuf::from));
    for dir in candidates {
        if std::fs::metadata(&dir).is_ok_and(|m| m.is_dir())
            && nix::unistd::access(&dir, AccessFlags::W_OK | AccessFlags::X_OK).is_ok()
        {
            return dir;
        }
    }
    PathBuf::from(".")
}

/// The directory `path` is in (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The database file and its write-ahead log, in bytes (what a missing one takes: nothing).
fn file_bytes(path: &Path) -> u64 {
    let size = |p: &Path| std::fs::symlink_metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    size(path) + size(Path::new(&wal))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The room check reads the real file systems: nothing is needed for nothing, and what
    /// no disk has is refused, naming the room needed and the directory.
    #[test]
    fn a_rewrite_without_room_for_it_is_skipped_naming_the_room_and_where() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(too_little_room(dir.path(), &sqlite_temp_dir(), 0), None);
        let reason = too_little_room(dir.path(), &sqlite_temp_dir(), 1 << 60).unwrap();
        assert!(reason.contains("needs about") && reason.contains("is free"), "{reason}");
        assert!(
            reason.contains(&dir.path().display().to_string()) || reason.contains("SQLITE_TMPDIR"),
            "{reason}"
        );
    }
}
