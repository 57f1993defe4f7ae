//! The embedded store: one SQLite file in WAL mode.
//!
//! Reports are kept whole (zstd-compressed JSON) with their findings and events extracted into
//! their own tables. `synchronous = FULL`: a batch acknowledged to an agent is on disk, since
//! the agent deletes it from its spool on that acknowledgement.
//!
//! Group commit: one fsync costs milliseconds (about 130 commits/s on the build machine), far
//! below what a fleet sends. Requests are therefore handed to one writer thread, which takes
//! every request waiting, applies each inside its own SAVEPOINT (a failing request is rolled
//! back alone: still all or nothing per request) and commits them with one fsync. A request is
//! answered only after that commit.

use super::{Delivery, NewReport, RECENT_EVENTS, RECENT_EVENTS_MAX_BYTES, Store, StoreError};
use guestward_core::{Event, Finding, Timestamp};
use guestward_report::Report;
use guestward_report::ingest::{BatchStatus, CertificateInfo, HostDetail, HostSummary};
use rusqlite::{Connection, OptionalExtension, params};
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// A stored report read back is decompressed up to this size (it was at most the ingest limit).
const MAX_STORED_REPORT_BYTES: u64 = 1 << 30;
/// zstd level for stored reports: fast, and scan JSON still compresses about 7x.
const ZSTD_LEVEL: i32 = 3;
/// Requests waiting for the writer before submitters block (back-pressure).
const QUEUE: usize = 1024;
/// Most requests committed together.
const MAX_GROUP: usize = 512;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS reports (
    batch_id      TEXT PRIMARY KEY,   -- the idempotency key
    host_id       TEXT NOT NULL,
    sequence      INTEGER NOT NULL,
    collected_at  TEXT NOT NULL,
    received_at   TEXT NOT NULL,
    agent_version TEXT NOT NULL,
    report_zstd   BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_by_host ON reports (host_id, sequence);
CREATE TABLE IF NOT EXISTS findings (
    batch_id  TEXT NOT NULL,
    position  INTEGER NOT NULL,
    finding   TEXT NOT NULL,
    PRIMARY KEY (batch_id, position)
);
-- Keyed by report, not by (host, sequence): an agent whose state directory was reset or
-- restored numbers its reports from 1 again, and those reports' events were once dropped
-- while the reports were acknowledged as stored.
CREATE TABLE IF NOT EXISTS events (
    host_id   TEXT NOT NULL,
    sequence  INTEGER NOT NULL,
    position  INTEGER NOT NULL,
    batch_id  TEXT NOT NULL,
    event     TEXT NOT NULL,
    PRIMARY KEY (batch_id, position)
);
CREATE INDEX IF NOT EXISTS events_by_host ON events (host_id, sequence, position);
-- The latest report (highest sequence, or collected later: a reset agent counts from 1 again)
-- and the latest delivery of each host.
CREATE TABLE IF NOT EXISTS hosts (
    host_id          TEXT PRIMARY KEY,
    latest_batch_id  TEXT NOT NULL,
    latest_sequence  INTEGER NOT NULL,
    last_seen        TEXT NOT NULL,
    cert_serial      TEXT,
    cert_sha256      TEXT,
    cert_not_after   TEXT
);
";

/// The SQLite [`Store`].
pub struct SqliteStore {
    path: PathBuf,
    jobs: Mutex<Option<SyncSender<Job>>>,
    reader: Mutex<Connection>,
}

/// One request's reports on their way to the writer thread.
struct Job {
    delivery: Delivery,
    reports: Vec<Prepared>,
    reply: SyncSender<Result<Vec<BatchStatus>, StoreError>>,
}

/// A report with its compressed JSON and serialized findings and events.
struct Prepared {
    batch_id: String,
    host_id: String,
    sequence: i64,
    collected_at: String,
    agent_version: String,
    blob: Vec<u8>,
    findings: Vec<String>,
    events: Vec<String>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish_non_exhaustive()
    }
}

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

impl SqliteStore {
    /// Opens (creating, mode 0600) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err = |reason: String| StoreError::Open { path: path.to_path_buf(), reason };
        // Create the file ourselves, 0600, before SQLite does with the umask's mode: the
        // reports name packages, ports and file changes of every host. SQLite gives its -wal
        // and -shm files the database file's mode.
        // What is there already must be a regular file: a FIFO would hang the open, and
        // opening a device runs its driver.
        if let Ok(meta) = std::fs::symlink_metadata(path)
            && !meta.is_file()
            && !meta.file_type().is_symlink()
        {
            return Err(open_err("not a regular file".into()));
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            // Non-blocking: a FIFO at `--db` must be refused below, not hang the open.
            .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits())
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(code) if code == nix::errno::Errno::ELOOP as i32 => {
                    open_err("it is a symlink; give the real path".into())
                }
                _ => open_err(format!("{e} (does its directory exist?)")),
            })?;
        let meta = file.metadata().map_err(|e| open_err(e.to_string()))?;
        if !meta.is_file() {
            return Err(open_err("not a regular file".into()));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| open_err(e.to_string()))?;
        }
        drop(file);
        let writer = Self::connect(path).map_err(|e| open_err(e.to_string()))?;
        migrate_events_key(&writer).map_err(|e| open_err(format!("cannot update the schema: {e}")))?;
        writer.execute_batch(SCHEMA).map_err(|e| open_err(format!("cannot create the schema: {e}")))?;
        let reader = Self::connect(path).map_err(|e| open_err(e.to_string()))?;
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("collector-db-writer".into())
            .spawn(move || writer_loop(writer, rx))
            .map_err(|e| open_err(format!("cannot start the writer thread: {e}")))?;
        Ok(Self { path: path.to_path_buf(), jobs: Mutex::new(Some(tx)), reader: Mutex::new(reader) })
    }

    fn connect(path: &Path) -> Result<Connection, rusqlite::Error> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(conn)
    }

    fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-done transaction behind (rusqlite
        // rolls back on drop), so the connection is still usable.
        m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A database made before events were keyed by report (`PRIMARY KEY (host_id, sequence,
/// position)`) gets the new key, its events kept, in one transaction.
fn migrate_events_key(conn: &Connection) -> Result<(), rusqlite::Error> {
    let old: Option<String> = conn
        .query_row("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'", [], |r| r.get(0))
        .optional()?;
    if !old.is_some_and(|sql| sql.contains("PRIMARY KEY (host_id, sequence, position)")) {
        return Ok(());
    }
    // The schema makes the new table; its other statements are `IF NOT EXISTS`, and no-ops.
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE;
         ALTER TABLE events RENAME TO events_by_sequence;
         {SCHEMA}
         INSERT OR IGNORE INTO events SELECT host_id, sequence, position, batch_id, event FROM events_by_sequence;
         DROP TABLE events_by_sequence;
         COMMIT;"
    ))
}

fn ts_text(t: &Timestamp) -> String {
    t.to_string()
}

fn ts_parse(s: &str, what: &str) -> Result<Timestamp, StoreError> {
    s.parse::<jiff::Timestamp>()
        .map(Timestamp)
        .map_err(|e| StoreError::Corrupt { what: what.to_string(), reason: e.to_string() })
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Store for SqliteStore {
    fn ingest(&self, delivery: &Delivery, reports: &[NewReport]) -> Result<Vec<BatchStatus>, StoreError> {
        // Compress and serialize on the caller's thread: the writer thread only writes.
        let mut prepared = Vec::with_capacity(reports.len());
        for r in reports {
            let json_err = |e: serde_json::Error| StoreError::Database(format!("report {}: {e}", r.batch_id));
            prepared.push(Prepared {
                batch_id: r.batch_id.clone(),
                host_id: r.host_id.clone(),
                sequence: to_i64(r.sequence),
                collected_at: ts_text(&r.collected_at),
                agent_version: r.agent_version.clone(),
                blob: zstd::bulk::compress(&r.json, ZSTD_LEVEL)
                    .map_err(|e| StoreError::Database(format!("cannot compress a report: {e}")))?,
                findings: r
                    .findings
                    .iter()
                    .map(serde_json::to_string)
                    .collect::<Result<_, _>>()
                    .map_err(json_err)?,
                events: r
                    .events
                    .iter()
                    .map(serde_json::to_string)
                    .collect::<Result<_, _>>()
                    .map_err(json_err)?,
            });
        }
        let (reply, answer) = sync_channel(1);
        let sender = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let gone = || StoreError::Database("the database writer has stopped; restart the collector".into());
        let sender = sender.ok_or_else(gone)?;
        sender.send(Job { delivery: delivery.clone(), reports: prepared, reply }).map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }

    fn hosts(&self) -> Result<Vec<HostSummary>, StoreError> {
        let conn = Self::lock(&self.reader);
        let mut stmt = conn.prepare_cached(&summary_query("")).map_err(db_err)?;
        let rows = stmt.query_map([], SummaryRow::from_row).map_err(db_err)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(db_err)?.into_summary()?);
        }
        Ok(out)
    }

    fn host(&self, host_id: &str) -> Result<Option<HostDetail>, StoreError> {
        let conn = Self::lock(&self.reader);
        let tx = conn.unchecked_transaction().map_err(db_err)?;
        let row = tx
            .prepare_cached(&summary_query("WHERE h.host_id = ?1"))
            .map_err(db_err)?
            .query_row([host_id], SummaryRow::from_row)
            .optional()
            .map_err(db_err)?;
        let Some(row) = row else { return Ok(None) };
        let latest_batch = row.latest_batch_id.clone();
        let summary = row.into_summary()?;
        let blob: Option<Vec<u8>> = tx
            .query_row("SELECT report_zstd FROM reports WHERE batch_id = ?1", [&latest_batch], |r| r.get(0))
            .optional()
            .map_err(db_err)?;
        let latest_report = match blob {
            Some(blob) => Some(decode_report(&blob, &latest_batch)?),
            None => None,
        };
        let mut findings = Vec::new();
        let mut stmt = tx
            .prepare_cached("SELECT finding FROM findings WHERE batch_id = ?1 ORDER BY position")
            .map_err(db_err)?;
        for text in stmt.query_map([&latest_batch], |r| r.get::<_, String>(0)).map_err(db_err)? {
            let text = text.map_err(db_err)?;
            findings.push(parse_json::<Finding>(&text, "a finding")?);
        }
        // Newest first, while they fit in the size bound; the text of one that does not fit
        // is never read (its length comes from the row).
        let mut events = Vec::new();
        let mut omitted = 0u64;
        let mut room = RECENT_EVENTS_MAX_BYTES;
        let mut stmt = tx
            .prepare_cached(
                "SELECT length(CAST(event AS BLOB)), \
                 CASE WHEN length(CAST(event AS BLOB)) <= ?3 THEN event END \
                 FROM events WHERE host_id = ?1 ORDER BY rowid DESC LIMIT ?2",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![host_id, to_i64(RECENT_EVENTS as u64), to_i64(RECENT_EVENTS_MAX_BYTES)], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?))
            })
            .map_err(db_err)?;
        for row in rows {
            let (length, text) = row.map_err(db_err)?;
            let length = u64::try_from(length).unwrap_or(u64::MAX);
            match text {
                Some(text) if length <= room => {
                    room -= length;
                    events.push(parse_json::<Event>(&text, "an event")?);
                }
                _ => omitted += 1,
            }
        }
        events.reverse();
        Ok(Some(HostDetail {
            summary,
            latest_report,
            findings,
            recent_events: events,
            recent_events_omitted: omitted,
        }))
    }

    fn health(&self) -> Result<(), StoreError> {
        let conn = Self::lock(&self.reader);
        conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).map_err(db_err)?;
        Ok(())
    }
}

/// The writer thread: commits waiting requests in groups (see the module doc).
fn writer_loop(mut conn: Connection, jobs: Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let results = commit_group(&mut conn, &group);
        for (job, result) in group.into_iter().zip(results) {
            // The requester may have given up (connection closed); its reports are stored
            // anyway and a retry will be answered `duplicate`.
            let _ = job.reply.send(result);
        }
    }
}

fn commit_group(conn: &mut Connection, group: &[Job]) -> Vec<Result<Vec<BatchStatus>, StoreError>> {
    let fail_all =
        |e: rusqlite::Error| group.iter().map(|_| Err(StoreError::Database(e.to_string()))).collect();
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        return fail_all(e);
    }
    let mut results = Vec::with_capacity(group.len());
    for job in group {
        let applied =
            conn.execute_batch("SAVEPOINT request").map_err(db_err).and_then(|()| apply(conn, job)).and_then(
                |statuses| conn.execute_batch("RELEASE request").map_err(db_err).map(|()| statuses),
            );
        if applied.is_err() {
            // This request alone is undone; the others in the group stand.
            if let Err(e) = conn.execute_batch("ROLLBACK TO request; RELEASE request") {
                let _ = conn.execute_batch("ROLLBACK");
                return fail_all(e);
            }
        }
        results.push(applied);
    }
    if let Err(e) = conn.execute_batch("COMMIT") {
        let _ = conn.execute_batch("ROLLBACK");
        return fail_all(e);
    }
    results
}

/// One request's writes, inside the open transaction.
fn apply(conn: &Connection, job: &Job) -> Result<Vec<BatchStatus>, StoreError> {
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO reports (batch_id, host_id, sequence, collected_at, received_at, agent_version, report_zstd)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (batch_id) DO NOTHING",
        )
        .map_err(db_err)?;
    let mut owner = conn.prepare_cached("SELECT host_id FROM reports WHERE batch_id = ?1").map_err(db_err)?;
    let mut finding = conn
        .prepare_cached("INSERT INTO findings (batch_id, position, finding) VALUES (?1, ?2, ?3)")
        .map_err(db_err)?;
    let mut event = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO events (host_id, sequence, position, batch_id, event) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(db_err)?;
    let mut latest = conn
        .prepare_cached(
            "INSERT INTO hosts (host_id, latest_batch_id, latest_sequence, last_seen) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (host_id) DO UPDATE SET latest_batch_id = excluded.latest_batch_id,
                 latest_sequence = excluded.latest_sequence
             WHERE excluded.latest_sequence > hosts.latest_sequence
                OR julianday(?5) > (SELECT julianday(collected_at) FROM reports
                                    WHERE batch_id = hosts.latest_batch_id)",
        )
        .map_err(db_err)?;
    let received = ts_text(&job.delivery.received_at);
    let mut statuses = Vec::with_capacity(job.reports.len());
    for r in &job.reports {
        let inserted = insert
            .execute(params![
                r.batch_id,
                r.host_id,
                r.sequence,
                r.collected_at,
                received,
                r.agent_version,
                r.blob
            ])
            .map_err(db_err)?;
        if inserted == 0 {
            let stored_for: String = owner.query_row([&r.batch_id], |row| row.get(0)).map_err(db_err)?;
            if stored_for != r.host_id {
                return Err(StoreError::ForeignBatch { batch_id: r.batch_id.clone() });
            }
            statuses.push(BatchStatus::Duplicate);
            continue;
        }
        for (i, text) in r.findings.iter().enumerate() {
            finding.execute(params![r.batch_id, to_i64(i as u64), text]).map_err(db_err)?;
        }
        for (i, text) in r.events.iter().enumerate() {
            event
                .execute(params![r.host_id, r.sequence, to_i64(i as u64), r.batch_id, text])
                .map_err(db_err)?;
        }
        latest
            .execute(params![r.host_id, r.batch_id, r.sequence, received, r.collected_at])
            .map_err(db_err)?;
        statuses.push(BatchStatus::Stored);
    }
    if !job.reports.is_empty() {
        let cert = &job.delivery.certificate;
        conn.execute(
            "UPDATE hosts SET last_seen = ?2, cert_serial = ?3, cert_sha256 = ?4, cert_not_after = ?5 WHERE host_id = ?1",
            params![job.delivery.host_id, received, cert.serial, cert.sha256, ts_text(&cert.not_after)],
        )
        .map_err(db_err)?;
    }
    Ok(statuses)
}

/// Host statistics as SQL aggregates over `reports` (what a PostgreSQL backend would run too).
/// `missing_sequences` = the span of sequences stored minus the distinct sequences stored.
fn summary_query(filter: &str) -> String {
    format!(
        "SELECT h.host_id, h.latest_batch_id, h.last_seen, h.cert_serial, h.cert_sha256, h.cert_not_after,
                s.stored, s.max_seq, s.min_seq, s.distinct_seq, r.collected_at, r.agent_version
         FROM hosts h
         JOIN (SELECT host_id, COUNT(*) AS stored, MAX(sequence) AS max_seq, MIN(sequence) AS min_seq,
                      COUNT(DISTINCT sequence) AS distinct_seq
               FROM reports GROUP BY host_id) s ON s.host_id = h.host_id
         JOIN reports r ON r.batch_id = h.latest_batch_id
         {filter}
         ORDER BY h.host_id"
    )
}

struct SummaryRow {
    host_id: String,
    latest_batch_id: String,
    last_seen: String,
    cert: (Option<String>, Option<String>, Option<String>),
    stored: i64,
    max_seq: i64,
    min_seq: i64,
    distinct_seq: i64,
    collected_at: String,
    agent_version: String,
}

impl SummaryRow {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            host_id: r.get(0)?,
            latest_batch_id: r.get(1)?,
            last_seen: r.get(2)?,
            cert: (r.get(3)?, r.get(4)?, r.get(5)?),
            stored: r.get(6)?,
            max_seq: r.get(7)?,
            min_seq: r.get(8)?,
            distinct_seq: r.get(9)?,
            collected_at: r.get(10)?,
            agent_version: r.get(11)?,
        })
    }

    fn into_summary(self) -> Result<HostSummary, StoreError> {
        let client_certificate = match self.cert {
            (Some(serial), Some(sha256), Some(not_after)) => {
                Some(CertificateInfo { serial, sha256, not_after: ts_parse(&not_after, "a certificate")? })
            }
            _ => None,
        };
        let span = self.max_seq.saturating_sub(self.min_seq).saturating_add(1);
        Ok(HostSummary {
            last_seen: ts_parse(&self.last_seen, &self.host_id)?,
            last_collected_at: ts_parse(&self.collected_at, &self.host_id)?,
            host_id: self.host_id,
            reports_stored: to_u64(self.stored),
            last_sequence: Some(to_u64(self.max_seq)),
            missing_sequences: to_u64(span.saturating_sub(self.distinct_seq)),
            agent_version: self.agent_version,
            client_certificate,
        })
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt { what: what.to_string(), reason: e.to_string() })
}

fn decode_report(blob: &[u8], batch_id: &str) -> Result<Report, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { what: format!("report {batch_id}"), reason };
    let decoder = zstd::stream::read::Decoder::new(blob).map_err(|e| corrupt(e.to_string()))?;
    let mut json = Vec::new();
    decoder.take(MAX_STORED_REPORT_BYTES).read_to_end(&mut json).map_err(|e| corrupt(e.to_string()))?;
    serde_json::from_slice(&json).map_err(|e| corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewReport;

    fn new_report(host: &str, batch: &str, sequence: u64) -> NewReport {
        NewReport {
            batch_id: batch.into(),
            host_id: host.into(),
            sequence,
            collected_at: Timestamp::now(),
            agent_version: "1".into(),
            json: b"{}".to_vec(),
            findings: Vec::new(),
            events: Vec::new(),
        }
    }

    fn job(host: &str, reports: &[NewReport]) -> (Job, Receiver<Result<Vec<BatchStatus>, StoreError>>) {
        let (reply, rx) = sync_channel(1);
        let delivery = Delivery {
            host_id: host.into(),
            certificate: CertificateInfo {
                serial: "01".into(),
                sha256: "00".into(),
                not_after: Timestamp::now(),
            },
            received_at: Timestamp::now(),
        };
        let reports = reports
            .iter()
            .map(|r| Prepared {
                batch_id: r.batch_id.clone(),
                host_id: r.host_id.clone(),
                sequence: to_i64(r.sequence),
                collected_at: ts_text(&r.collected_at),
                agent_version: r.agent_version.clone(),
                blob: zstd::bulk::compress(&r.json, 1).unwrap(),
                findings: Vec::new(),
                events: Vec::new(),
            })
            .collect();
        (Job { delivery, reports, reply }, rx)
    }

    /// In one group commit, a failing request is undone alone and the others are stored.
    /// `--db` naming a FIFO, a device or a symlink is refused at once, saying why (a FIFO once
    /// hung `serve`).
    #[test]
    fn a_database_path_that_is_not_a_regular_file_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.db");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(dir.path().join("real.db"), &link).unwrap();
        for (path, why) in [
            (fifo.as_path(), "not a regular file"),
            (Path::new("/dev/zero"), "not a regular file"),
            (link.as_path(), "it is a symlink"),
        ] {
            let e = guestward_core::testing::within(std::time::Duration::from_secs(20), "open", {
                let path = path.to_path_buf();
                move || SqliteStore::open(&path).map(|_| ()).unwrap_err().to_string()
            });
            assert!(e.contains(why), "{}: {e}", path.display());
        }
    }

    #[test]
    fn a_failing_request_in_a_group_is_rolled_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        SqliteStore::open(&path).unwrap();
        let mut conn = SqliteStore::connect(&path).unwrap();
        let (a1, _) = job("a", &[new_report("a", "batch-1", 1)]);
        // Host b reuses host a's batch id after a first report of its own.
        let (b, _) = job("b", &[new_report("b", "batch-2", 1), new_report("b", "batch-1", 2)]);
        let (a2, _) = job("a", &[new_report("a", "batch-3", 2), new_report("a", "batch-1", 1)]);
        let results = commit_group(&mut conn, &[a1, b, a2]);
        assert_eq!(results[0].as_ref().unwrap(), &[BatchStatus::Stored]);
        assert!(matches!(results[1], Err(StoreError::ForeignBatch { .. })), "{:?}", results[1]);
        assert_eq!(results[2].as_ref().unwrap(), &[BatchStatus::Stored, BatchStatus::Duplicate]);
        let stored: Vec<String> = conn
            .prepare("SELECT batch_id FROM reports ORDER BY batch_id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(stored, ["batch-1", "batch-3"], "batch-2 went with its failed request");
    }

    /// A database made with events keyed by (host, sequence, position) gets the key by report
    /// at open, its events kept.
    #[test]
    fn an_old_database_gets_events_keyed_by_report_and_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE events (host_id TEXT NOT NULL, sequence INTEGER NOT NULL, position INTEGER NOT NULL,
                     batch_id TEXT NOT NULL, event TEXT NOT NULL, PRIMARY KEY (host_id, sequence, position));
                 INSERT INTO events VALUES ('h', 1, 0, 'b1', '{\"kind\":\"x\"}');",
            )
            .unwrap();
        }
        drop(SqliteStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        let sql: String =
            conn.query_row("SELECT sql FROM sqlite_master WHERE name = 'events'", [], |r| r.get(0)).unwrap();
        assert!(sql.contains("PRIMARY KEY (batch_id, position)"), "{sql}");
        let kept: i64 =
            conn.query_row("SELECT COUNT(*) FROM events WHERE batch_id = 'b1'", [], |r| r.get(0)).unwrap();
        assert_eq!(kept, 1);
        // Opened again: nothing more to do.
        drop(SqliteStore::open(&path).unwrap());
    }
}
