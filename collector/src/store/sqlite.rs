//! The embedded store: one SQLite file in WAL mode.
//!
//! Reports are kept whole (zstd-compressed JSON) with their findings and events extracted into
//! their own tables, compressed too when that pays (`stored_json`): what a request costs on disk
//! stays close to what it cost on the wire. `synchronous = FULL`: a batch acknowledged to an
//! agent is on disk, since the agent deletes it from its spool on that acknowledgement.
//!
//! Group commit: one fsync costs milliseconds (about 130 commits/s on the build machine), far
//! below what a fleet sends. Requests are therefore handed to one writer thread, which takes
//! every request waiting, applies each inside its own SAVEPOINT (a failing request is rolled
//! back alone: still all or nothing per request) and commits them with one fsync. A request is
//! answered only after that commit.
//!
//! Retention (`prune`): the same thread deletes what `[retention]` no longer keeps, in short
//! transactions between commit groups. What each host takes is kept in `hosts.stored_bytes`
//! (`schema::row_cost`), updated by the transactions that insert and delete, never by a scan.

mod compact;
mod inventory;
mod listeners;
mod prune;
mod schema;
mod stored_json;

pub use compact::{CompactOptions, CompactSummary, VacuumOutcome, compact};

use super::{
    Delivery, FindingFilter, ListenerQuery, NewReport, PackageQuery, RECENT_EVENTS, RECENT_EVENTS_MAX_BYTES,
    Retention, Store, StoreError,
};
use guestward_core::{Event, Finding, Timestamp};
use guestward_report::Report;
use guestward_report::ingest::{
    BatchStatus, CertificateInfo, FleetFindings, FleetListeners, FleetPackages, HostDetail, HostFinding,
    HostSummary, MAX_FLEET_FINDINGS, MAX_FLEET_FINDINGS_BYTES,
};
use prune::Pruner;
use rusqlite::{Connection, OptionalExtension, params};
use schema::row_cost;
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, sync_channel};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use stored_json::StoredJson;

const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// `PRAGMA journal_size_limit`: the write-ahead log is cut back to this when it starts over
/// after a checkpoint. SQLite never shrinks it otherwise: a flood's high-water mark (a long
/// reader holds the checkpoint back while writes go on) would stay on disk for good.
const WAL_KEPT_BYTES: i64 = 64 << 20;
/// A stored report read back is decompressed up to this size (it was at most the ingest limit).
const MAX_STORED_REPORT_BYTES: u64 = 1 << 30;
/// zstd level for stored reports: fast, and scan JSON still compresses about 7x.
const ZSTD_LEVEL: i32 = 3;
/// Requests waiting for the writer before submitters block (back-pressure).
const QUEUE: usize = 1024;
/// Most requests committed together.
const MAX_GROUP: usize = 512;

/// The SQLite [`Store`].
pub struct SqliteStore {
    path: PathBuf,
    jobs: Mutex<Option<SyncSender<Job>>>,
    reader: Mutex<Connection>,
    /// Joined on drop, so that the database is closed once the store is gone (`db compact`
    /// refuses a database another connection still has open).
    writer: Option<std::thread::JoinHandle<()>>,
}

/// One request's reports on their way to the writer thread.
struct Job {
    delivery: Delivery,
    reports: Vec<Prepared>,
    reply: SyncSender<Result<Vec<BatchStatus>, StoreError>>,
}

/// A report with its compressed JSON and its findings and events as they will be stored.
struct Prepared {
    batch_id: String,
    host_id: String,
    sequence: i64,
    collected_at: String,
    agent_version: String,
    blob: Vec<u8>,
    findings: Vec<StoredJson>,
    events: Vec<StoredJson>,
    inventory: Option<inventory::PreparedInventory>,
    listeners: Option<listeners::PreparedListeners>,
}

impl Drop for SqliteStore {
    /// Stops the writer thread and waits for it: it ends once the queue is closed, after the
    /// group or pruning step it is in (each a short transaction).
    fn drop(&mut self) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = self.writer.take() {
            // A writer that panicked has nothing left to close.
            let _ = writer.join();
        }
    }
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
    /// Opens (creating, mode 0600) the database at `path`, keeping what `retention` says.
    pub fn open(path: &Path, retention: Retention) -> Result<Self, StoreError> {
        Self::open_waiting(path, retention, BUSY_TIMEOUT)
    }

    /// [`Self::open`], waiting at most `wait` for a lock another process holds.
    fn open_waiting(path: &Path, retention: Retention, wait: Duration) -> Result<Self, StoreError> {
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
        // A lock held past the wait is most likely `db compact`'s (it holds the file alone).
        let failed = |doing: &str, e: rusqlite::Error| {
            let hint = if schema::held_by_another(&e) {
                " (another process holds it alone: is `db compact` running?)"
            } else {
                ""
            };
            open_err(format!("{doing}{e}{hint}"))
        };
        let writer = Self::connect_waiting(path, wait).map_err(|e| failed("", e))?;
        schema::prepare(&writer).map_err(|e| failed("cannot create or update the schema: ", e))?;
        let incremental_vacuum = schema::has_incremental_vacuum(&writer).map_err(|e| failed("", e))?;
        let reader = Self::connect_waiting(path, wait).map_err(|e| failed("", e))?;
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        let mut pruner = Pruner::new(retention, incremental_vacuum);
        pruner.check_every_host(&writer).map_err(|e| failed("", e))?;
        let writer = std::thread::Builder::new()
            .name("collector-db-writer".into())
            .spawn(move || writer_loop(writer, rx, pruner))
            .map_err(|e| open_err(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            jobs: Mutex::new(Some(tx)),
            reader: Mutex::new(reader),
            writer: Some(writer),
        })
    }

    /// A connection as the store's own (the tests store and prune through one).
    #[cfg(test)]
    fn connect(path: &Path) -> Result<Connection, rusqlite::Error> {
        Self::connect_waiting(path, BUSY_TIMEOUT)
    }

    fn connect_waiting(path: &Path, wait: Duration) -> Result<Connection, rusqlite::Error> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(wait)?;
        // Pages freed by retention can then be handed back to the file system. SQLite takes
        // this only for a database with no table yet, and only before it is put in WAL mode;
        // on an older database it is a no-op, and its freed pages are reused by new rows.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "journal_size_limit", WAL_KEPT_BYTES)?;
        Ok(conn)
    }

    fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-done transaction behind (rusqlite
        // rolls back on drop), so the connection is still usable.
        m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A time as stored: RFC 3339 in UTC with all nine fractional digits, so that comparing the
/// text compares the times (retention orders and cuts reports by `received_at`; with the
/// digits trimmed, `…:10.5Z` sorted after `…:10.55Z`).
/// Hosts per group (a package version, a service) of a fleet search, counted as its rows come:
/// ordered by group, then by host, a host in several rows of a group (several places, several
/// addresses) one after the other. Groups past the answer's bound are counted as left out;
/// their hosts still count in [`GroupCounter::hosts`].
struct GroupCounter<K> {
    /// Every host matched (by its index row's id).
    hosts: std::collections::BTreeSet<i64>,
    /// The group being counted, the last host counted for it, and whether it is listed.
    current: Option<(K, i64, bool)>,
    /// The most groups listed.
    max: usize,
}

impl<K: PartialEq + Clone> GroupCounter<K> {
    /// A counter listing at most `max` groups.
    fn new(max: usize) -> Self {
        Self { hosts: std::collections::BTreeSet::new(), current: None, max }
    }

    /// Counts `host`'s row of group `key`: a new group is pushed to `groups` (made by
    /// `new_group`, with one host) while they are fewer than the counter's most, else counted
    /// in `omitted`;
    /// a new host of the listed group adds one to its count (`hosts_of`).
    fn count<G>(
        &mut self,
        key: &K,
        host: i64,
        groups: &mut Vec<G>,
        omitted: &mut u64,
        new_group: impl FnOnce(K) -> G,
        hosts_of: impl FnOnce(&mut G) -> &mut u64,
    ) {
        self.hosts.insert(host);
        match &mut self.current {
            Some((counted, last_host, listed)) if counted == key => {
                if *last_host != host {
                    *last_host = host;
                    if let (true, Some(group)) = (*listed, groups.last_mut()) {
                        *hosts_of(group) += 1;
                    }
                }
            }
            _ => {
                let listed = groups.len() < self.max;
                if listed {
                    groups.push(new_group(key.clone()));
                } else {
                    *omitted += 1;
                }
                self.current = Some((key.clone(), host, listed));
            }
        }
    }

    /// How many hosts had a row counted.
    fn hosts(&self) -> u64 {
        self.hosts.len() as u64
    }
}

/// Inside a fleet search's read transaction: the hosts stored, and how many of them have no
/// row in `index` (the table of a search's per-host index), which the search cannot answer for.
fn hosts_not_indexed(tx: &Connection, index: &str) -> Result<(u64, u64), StoreError> {
    let (hosts, indexed): (i64, i64) = tx
        .query_row(
            &format!(
                "SELECT (SELECT COUNT(*) FROM hosts),
                        (SELECT COUNT(*) FROM {index} x JOIN hosts h ON h.host_id = x.host_id)"
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(db_err)?;
    Ok((to_u64(hosts), to_u64(hosts.saturating_sub(indexed))))
}

/// A query's name pattern as a GLOB pattern: `*` stays a wildcard; `?` and `[`, which GLOB
/// would read as wildcards too, match themselves.
fn glob_pattern(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '?' => out.push_str("[?]"),
            '[' => out.push_str("[[]"),
            c => out.push(c),
        }
    }
    out
}

fn ts_text(t: &Timestamp) -> String {
    format!("{:.9}", t.0)
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
        let prepared = prepare(reports)?;
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
        let now = Timestamp::now();
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(db_err)?.into_summary(now)?);
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
        let summary = row.into_summary(Timestamp::now())?;
        let blob: Option<Vec<u8>> = tx
            .query_row("SELECT report_zstd FROM reports WHERE batch_id = ?1", [&latest_batch], |r| r.get(0))
            .optional()
            .map_err(db_err)?;
        let latest_report = match blob {
            Some(blob) => Some(decode_report(&blob, &latest_batch)?),
            None => None,
        };
        // A finding's JSON length comes from its row (or, written before compression, from
        // its text); the findings of one report were at most the size of that report.
        let mut findings = Vec::new();
        let mut stmt = tx
            .prepare_cached(
                "SELECT finding, compressed, COALESCE(json_bytes, length(CAST(finding AS BLOB)))
                 FROM findings WHERE batch_id = ?1 ORDER BY position",
            )
            .map_err(db_err)?;
        let rows = stmt.query_map([&latest_batch], StoredRow::from_row).map_err(db_err)?;
        for row in rows {
            let row = row.map_err(db_err)?;
            let json = row.json(MAX_STORED_REPORT_BYTES, "a finding")?;
            findings.push(parse_json::<Finding>(&json, "a finding")?);
        }
        // Newest first, while they fit in the size bound; the value of one that does not fit
        // is never read (its JSON length comes from the row), let alone inflated.
        let mut events = Vec::new();
        let mut omitted = 0u64;
        let mut room = RECENT_EVENTS_MAX_BYTES;
        let mut stmt = tx
            .prepare_cached(
                "SELECT CASE WHEN COALESCE(json_bytes, length(CAST(event AS BLOB))) <= ?3 THEN event END,
                        compressed, COALESCE(json_bytes, length(CAST(event AS BLOB)))
                 FROM events WHERE host_id = ?1 ORDER BY rowid DESC LIMIT ?2",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map(
                params![host_id, to_i64(RECENT_EVENTS as u64), to_i64(RECENT_EVENTS_MAX_BYTES)],
                StoredRow::from_row,
            )
            .map_err(db_err)?;
        for row in rows {
            let row = row.map_err(db_err)?;
            match row.value {
                Some(_) if row.json_len <= room => {
                    room -= row.json_len;
                    let json = row.json(RECENT_EVENTS_MAX_BYTES, "an event")?;
                    events.push(parse_json::<Event>(&json, "an event")?);
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

    fn findings(&self, filter: &FindingFilter) -> Result<FleetFindings, StoreError> {
        let conn = Self::lock(&self.reader);
        let tx = conn.unchecked_transaction().map_err(db_err)?;
        let hosts_searched: i64 =
            tx.query_row("SELECT COUNT(*) FROM hosts", [], |r| r.get(0)).map_err(db_err)?;
        // Every finding of every latest report is read to be matched (id and severity are in
        // its JSON), one row at a time: the answer, not the search, is what is bounded.
        let mut stmt = tx
            .prepare_cached(
                "SELECT f.finding, f.compressed, COALESCE(f.json_bytes, length(CAST(f.finding AS BLOB))),
                        h.host_id, r.sequence, r.collected_at
                 FROM hosts h
                 JOIN reports r ON r.batch_id = h.latest_batch_id
                 JOIN findings f ON f.batch_id = h.latest_batch_id
                 ORDER BY h.host_id, f.position",
            )
            .map_err(db_err)?;
        let mut rows = stmt.query([]).map_err(db_err)?;
        let mut answer = FleetFindings {
            hosts_searched: u64::try_from(hosts_searched).unwrap_or(0),
            findings: Vec::new(),
            omitted: 0,
        };
        let mut room = MAX_FLEET_FINDINGS_BYTES;
        while let Some(row) = rows.next().map_err(db_err)? {
            let stored = StoredRow::from_row(row).map_err(db_err)?;
            let json_len = stored.json_len;
            let host_id: String = row.get(3).map_err(db_err)?;
            let json = stored.json(MAX_STORED_REPORT_BYTES, &format!("a finding of host {host_id}"))?;
            let finding = parse_json::<Finding>(&json, "a finding")?;
            if !filter.matches(&finding) {
                continue;
            }
            if answer.findings.len() >= MAX_FLEET_FINDINGS || json_len > room {
                answer.omitted += 1;
                continue;
            }
            room -= json_len;
            let collected_at: String = row.get(5).map_err(db_err)?;
            answer.findings.push(HostFinding {
                sequence: u64::try_from(row.get::<_, i64>(4).map_err(db_err)?).unwrap_or(0),
                collected_at: ts_parse(&collected_at, &host_id)?,
                host_id,
                finding,
            });
        }
        Ok(answer)
    }

    fn packages(&self, query: &PackageQuery) -> Result<FleetPackages, StoreError> {
        inventory::search(&Self::lock(&self.reader), query)
    }

    fn listeners(&self, query: &ListenerQuery) -> Result<FleetListeners, StoreError> {
        listeners::search(&Self::lock(&self.reader), query)
    }

    fn health(&self) -> Result<(), StoreError> {
        let conn = Self::lock(&self.reader);
        conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).map_err(db_err)?;
        Ok(())
    }
}

/// Reports as they will be stored: the report compressed, its findings and events serialized
/// and compressed when that pays.
fn prepare(reports: &[NewReport]) -> Result<Vec<Prepared>, StoreError> {
    let mut encoder = stored_json::Encoder::default();
    let mut prepared = Vec::with_capacity(reports.len());
    for r in reports {
        let json_err = |e: serde_json::Error| StoreError::Database(format!("report {}: {e}", r.batch_id));
        let mut findings = Vec::with_capacity(r.findings.len());
        for finding in &r.findings {
            findings.push(encoder.encode(serde_json::to_vec(finding).map_err(json_err)?)?);
        }
        let mut events = Vec::with_capacity(r.events.len());
        for event in &r.events {
            events.push(encoder.encode(serde_json::to_vec(event).map_err(json_err)?)?);
        }
        prepared.push(Prepared {
            batch_id: r.batch_id.clone(),
            host_id: r.host_id.clone(),
            sequence: to_i64(r.sequence),
            collected_at: ts_text(&r.collected_at),
            agent_version: r.agent_version.clone(),
            blob: zstd::bulk::compress(&r.json, ZSTD_LEVEL)
                .map_err(|e| StoreError::Database(format!("cannot compress a report: {e}")))?,
            findings,
            events,
            inventory: r.packages.clone().map(inventory::PreparedInventory::new),
            listeners: r.listeners.clone().map(listeners::PreparedListeners::new),
        });
    }
    Ok(prepared)
}

/// The writer thread: commits waiting requests in groups (see the module doc) and, between
/// groups, takes one retention step at a time while there is pruning to do. Requests come
/// first: a step runs after a group is answered, and a request arriving meanwhile waits for
/// that one step only.
fn writer_loop(mut conn: Connection, jobs: Receiver<Job>, mut pruner: Pruner) {
    loop {
        let first = if pruner.has_work() {
            match jobs.try_recv() {
                Ok(job) => Some(job),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return,
            }
        } else {
            match jobs.recv_timeout(pruner.idle_wait()) {
                Ok(job) => Some(job),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        };
        if let Some(first) = first {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match jobs.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            let mut stored = Vec::new();
            let results = commit_group(&mut conn, &group, &mut stored);
            for (host_id, stored_bytes) in stored {
                pruner.stored(&host_id, stored_bytes);
            }
            for (job, result) in group.into_iter().zip(results) {
                // The requester may have given up (connection closed); its reports are stored
                // anyway and a retry will be answered `duplicate`.
                let _ = job.reply.send(result);
            }
        }
        pruner.step(&mut conn, Timestamp::now());
    }
}

/// Commits `group` (see the module doc). `stored` gets, for each host that stored reports in
/// a request that was committed, what it takes now (`hosts.stored_bytes`).
fn commit_group(
    conn: &mut Connection,
    group: &[Job],
    stored: &mut Vec<(String, u64)>,
) -> Vec<Result<Vec<BatchStatus>, StoreError>> {
    let fail_all =
        |e: rusqlite::Error| group.iter().map(|_| Err(StoreError::Database(e.to_string()))).collect();
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        return fail_all(e);
    }
    let mut results = Vec::with_capacity(group.len());
    for job in group {
        let mark = stored.len();
        let applied = conn
            .execute_batch("SAVEPOINT request")
            .map_err(db_err)
            .and_then(|()| apply(conn, job, stored))
            .and_then(|statuses| conn.execute_batch("RELEASE request").map_err(db_err).map(|()| statuses));
        if applied.is_err() {
            stored.truncate(mark);
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
        stored.clear();
        return fail_all(e);
    }
    results
}

/// One request's writes, inside the open transaction. Each stored report adds what its rows
/// cost (`row_cost`) to its host's `stored_bytes`, in the same savepoint: a request rolled
/// back takes its bytes with it. The host's new total goes to `stored`, so the writer knows
/// without another read whether it is over its cap.
fn apply(
    conn: &Connection,
    job: &Job,
    stored: &mut Vec<(String, u64)>,
) -> Result<Vec<BatchStatus>, StoreError> {
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO reports (batch_id, host_id, sequence, collected_at, received_at, agent_version, report_zstd)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(db_err)?;
    // A batch stored before, or stored and since pruned by retention (its tombstone): either
    // way the agent is retrying it, and it must not be stored (and counted) again.
    let mut owner = conn
        .prepare_cached(
            "SELECT host_id FROM reports WHERE batch_id = ?1
             UNION ALL SELECT host_id FROM pruned_batches WHERE batch_id = ?1 LIMIT 1",
        )
        .map_err(db_err)?;
    let mut finding = conn
        .prepare_cached(
            "INSERT INTO findings (batch_id, position, finding, compressed, json_bytes) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(db_err)?;
    let mut event = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO events (host_id, sequence, position, batch_id, event, compressed, json_bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(db_err)?;
    let mut charge = conn
        .prepare_cached(
            "UPDATE hosts SET stored_bytes = stored_bytes + ?2 WHERE host_id = ?1 RETURNING stored_bytes",
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
    // What the delivering host's stored reports cost, when it stored any.
    let mut delivery_bytes: Option<u64> = None;
    for r in &job.reports {
        let stored_for: Option<String> =
            owner.query_row([&r.batch_id], |row| row.get(0)).optional().map_err(db_err)?;
        if let Some(stored_for) = stored_for {
            if stored_for != r.host_id {
                return Err(StoreError::ForeignBatch { batch_id: r.batch_id.clone() });
            }
            statuses.push(BatchStatus::Duplicate);
            continue;
        }
        insert
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
        let cost = |value: usize| row_cost(value, &r.batch_id, &r.host_id);
        let mut bytes = cost(r.blob.len());
        for (i, f) in r.findings.iter().enumerate() {
            finding
                .execute(params![
                    r.batch_id,
                    to_i64(i as u64),
                    f.bytes,
                    f.compressed,
                    to_i64(f.json_len as u64)
                ])
                .map_err(db_err)?;
            bytes = bytes.saturating_add(cost(f.bytes.len()));
        }
        for (i, e) in r.events.iter().enumerate() {
            let added = event
                .execute(params![
                    r.host_id,
                    r.sequence,
                    to_i64(i as u64),
                    r.batch_id,
                    e.bytes,
                    e.compressed,
                    to_i64(e.json_len as u64)
                ])
                .map_err(db_err)?;
            if added == 1 {
                bytes = bytes.saturating_add(cost(e.bytes.len()));
            }
        }
        let became_latest = latest
            .execute(params![r.host_id, r.batch_id, r.sequence, received, r.collected_at])
            .map_err(db_err)?
            == 1;
        if became_latest && (r.inventory.is_some() || r.listeners.is_some()) {
            let mut change = 0i64;
            if let Some(packages) = &r.inventory {
                change +=
                    inventory::replace(conn, &r.host_id, &r.batch_id, r.sequence, &r.collected_at, packages)?;
            }
            if let Some(scan) = &r.listeners {
                change +=
                    listeners::replace(conn, &r.host_id, &r.batch_id, r.sequence, &r.collected_at, scan)?;
            }
            conn.prepare_cached(
                "UPDATE hosts SET stored_bytes = MAX(stored_bytes + ?2, 0) WHERE host_id = ?1",
            )
            .map_err(db_err)?
            .execute(params![r.host_id, change])
            .map_err(db_err)?;
        }
        if r.host_id == job.delivery.host_id {
            // Added below with the delivery, one update of the host row per request.
            delivery_bytes = Some(delivery_bytes.unwrap_or(0).saturating_add(bytes));
        } else {
            // Not a request the API lets through (every report is of the client's host);
            // counted all the same.
            let total: i64 =
                charge.query_row(params![r.host_id, to_i64(bytes)], |row| row.get(0)).map_err(db_err)?;
            stored.push((r.host_id.clone(), to_u64(total)));
        }
        statuses.push(BatchStatus::Stored);
    }
    if !job.reports.is_empty() {
        let cert = &job.delivery.certificate;
        let total: Option<i64> = conn
            .prepare_cached(
                "UPDATE hosts SET last_seen = ?2, cert_serial = ?3, cert_sha256 = ?4, cert_not_after = ?5,
                     stored_bytes = stored_bytes + ?6
                 WHERE host_id = ?1 RETURNING stored_bytes",
            )
            .map_err(db_err)?
            .query_row(
                params![
                    job.delivery.host_id,
                    received,
                    cert.serial,
                    cert.sha256,
                    ts_text(&cert.not_after),
                    to_i64(delivery_bytes.unwrap_or(0))
                ],
                |row| row.get(0),
            )
            .optional()
            .map_err(db_err)?;
        if let (Some(_), Some(total)) = (delivery_bytes, total) {
            stored.push((job.delivery.host_id.clone(), to_u64(total)));
        }
    }
    Ok(statuses)
}

/// Host statistics as SQL aggregates over `reports` (what a PostgreSQL backend would run too).
/// `missing_sequences` = the span of sequences stored minus the distinct sequences stored.
fn summary_query(filter: &str) -> String {
    format!(
        "SELECT h.host_id, h.latest_batch_id, h.last_seen, h.cert_serial, h.cert_sha256, h.cert_not_after,
                s.stored, s.max_seq, s.min_seq, s.distinct_seq, r.collected_at, r.agent_version, h.stored_bytes
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
    stored_bytes: i64,
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
            stored_bytes: r.get(12)?,
        })
    }

    /// The summary as answered at `now` (the collector's clock, which retention measures a
    /// host's silence with too).
    fn into_summary(self, now: Timestamp) -> Result<HostSummary, StoreError> {
        let client_certificate = match self.cert {
            (Some(serial), Some(sha256), Some(not_after)) => {
                Some(CertificateInfo { serial, sha256, not_after: ts_parse(&not_after, "a certificate")? })
            }
            _ => None,
        };
        let span = self.max_seq.saturating_sub(self.min_seq).saturating_add(1);
        let last_seen = ts_parse(&self.last_seen, &self.host_id)?;
        // A clock set back since the host was seen gives 0, not a negative age.
        let silent = now.0.duration_since(last_seen.0).as_secs();
        Ok(HostSummary {
            last_seen,
            secs_since_last_seen: u64::try_from(silent).unwrap_or(0),
            stored_bytes: to_u64(self.stored_bytes),
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

fn parse_json<T: serde::de::DeserializeOwned>(json: &[u8], what: &str) -> Result<T, StoreError> {
    serde_json::from_slice(json)
        .map_err(|e| StoreError::Corrupt { what: what.to_string(), reason: e.to_string() })
}

/// A finding or event as read: `(value or NULL, compressed, JSON length)`.
struct StoredRow {
    value: Option<Vec<u8>>,
    compressed: bool,
    json_len: u64,
}

impl StoredRow {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            value: stored_json::value_bytes(r, 0)?,
            compressed: r.get::<_, i64>(1)? != 0,
            json_len: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(u64::MAX),
        })
    }

    /// Its JSON, refused when its recorded length is over `limit`.
    fn json(self, limit: u64, what: &str) -> Result<Vec<u8>, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt { what: what.to_string(), reason };
        if self.json_len > limit {
            return Err(corrupt(format!("its recorded length {} is over {limit} bytes", self.json_len)));
        }
        let stored = self.value.ok_or_else(|| corrupt("no value".into()))?;
        stored_json::decode(stored, self.compressed, self.json_len, what)
    }
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
        let agent = guestward_report::AgentInfo {
            version: "1".into(),
            host_id: Some(host.into()),
            host_id_source: guestward_report::HostIdSource::Config,
        };
        let mut report = Report::new(agent, Timestamp::now());
        report.batch_id = batch.into();
        report.sequence = Some(sequence);
        NewReport {
            batch_id: batch.into(),
            host_id: host.into(),
            sequence,
            collected_at: report.collected_at,
            agent_version: "1".into(),
            json: serde_json::to_vec(&report).unwrap(),
            findings: Vec::new(),
            events: Vec::new(),
            packages: None,
            listeners: None,
        }
    }

    fn job(host: &str, reports: &[NewReport]) -> (Job, Receiver<Result<Vec<BatchStatus>, StoreError>>) {
        job_at(host, reports, Timestamp::now())
    }

    fn job_at(
        host: &str,
        reports: &[NewReport],
        received_at: Timestamp,
    ) -> (Job, Receiver<Result<Vec<BatchStatus>, StoreError>>) {
        let (reply, rx) = sync_channel(1);
        (Job { delivery: delivery(host, received_at), reports: prepare(reports).unwrap(), reply }, rx)
    }

    /// A delivery by `host`'s certificate, received at `received_at`.
    fn delivery(host: &str, received_at: Timestamp) -> Delivery {
        Delivery {
            host_id: host.into(),
            certificate: CertificateInfo {
                serial: "01".into(),
                sha256: "00".into(),
                not_after: Timestamp::now(),
            },
            received_at,
        }
    }

    /// `GET /v1/findings`: the findings of each host's latest report only, filtered by id
    /// (exact or prefix) and severity, and bounded by count and by bytes with the rest counted.
    #[test]
    fn the_fleets_findings_are_the_latest_reports_filtered_and_bounded() {
        use guestward_core::Severity::{Critical, High, Medium};
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("c.db"), Retention::KEEP_EVERYTHING).unwrap();
        let finding = |id: &str, severity, evidence: &str| Finding {
            id: id.into(),
            severity,
            title: format!("{id} on this host"),
            evidence: serde_json::json!({ "detail": evidence }),
            remediation: "-".into(),
            source: "test".into(),
        };
        let deliver = |host: &str, reports: &[NewReport]| {
            let statuses = store.ingest(&delivery(host, Timestamp::now()), reports).unwrap();
            assert!(statuses.iter().all(|s| *s == BatchStatus::Stored));
        };
        let mut a_old = new_report("a", "a1", 1);
        a_old.findings = vec![finding("GW-OLD-001", Critical, "")];
        let mut a = new_report("a", "a2", 2);
        a.findings = vec![finding("GW-FIM-006", High, ""), finding("GW-ACCESS-004", Medium, "")];
        deliver("a", &[a_old, a]);
        let mut b = new_report("b", "b1", 1);
        b.findings = (0..MAX_FLEET_FINDINGS + 5).map(|_| finding("GW-FIM-006", Critical, "")).collect();
        deliver("b", &[b]);
        let mut c = new_report("c", "c1", 7);
        let mib = "x".repeat(1 << 20);
        c.findings = (0..10).map(|_| finding("GW-BIG-001", Medium, &mib)).collect();
        deliver("c", &[c]);

        let ask = |ids: &[&str], min_severity| {
            let filter = FindingFilter { ids: ids.iter().map(|s| s.to_string()).collect(), min_severity };
            store.findings(&filter).unwrap()
        };
        let hosts_of = |found: &FleetFindings| {
            let mut hosts: Vec<String> = found.findings.iter().map(|f| f.host_id.clone()).collect();
            hosts.dedup();
            hosts
        };

        let one = ask(&["GW-ACCESS-004"], None);
        assert_eq!(one.hosts_searched, 3);
        assert_eq!((one.findings.len(), one.omitted), (1, 0));
        assert_eq!((one.findings[0].host_id.as_str(), one.findings[0].sequence), ("a", 2));
        assert_eq!(one.findings[0].finding, finding("GW-ACCESS-004", Medium, ""));
        // Only the latest report counts: what the host reported before is history.
        let old = ask(&["GW-OLD-001"], None);
        assert_eq!((old.findings.len(), old.omitted), (0, 0));
        assert_eq!(ask(&["GW-ACCESS-004"], Some(High)).findings.len(), 0);
        // A prefix, and a severity floor; by host id, bounded by count with the rest counted.
        let fim = ask(&["GW-FIM-*"], Some(High));
        assert_eq!(hosts_of(&fim), ["a", "b"]);
        assert_eq!((fim.findings.len(), fim.omitted), (MAX_FLEET_FINDINGS, 6));
        let critical = ask(&[], Some(Critical));
        assert_eq!((critical.findings.len(), critical.omitted), (MAX_FLEET_FINDINGS, 5));
        // Bounded by bytes: ten findings of 1 MiB each do not fit in 8 MiB.
        let big = ask(&["GW-BIG-001", "GW-NONE"], None);
        assert_eq!(hosts_of(&big), ["c"]);
        assert!((5..10).contains(&big.findings.len()), "{} listed", big.findings.len());
        assert_eq!(big.findings.len() as u64 + big.omitted, 10);
        assert_eq!(big.findings[0].finding.evidence["detail"].as_str().map(str::len), Some(1 << 20));
    }

    /// In one group commit, a failing request is undone alone and the others are stored.
    /// Every connection cuts the write-ahead log back once it starts over (the agent's stores
    /// show SQLite doing so after a burst; here, that the collector's connections ask for it).
    #[test]
    fn connections_keep_the_write_ahead_log_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let conn = SqliteStore::connect(&dir.path().join("c.db")).unwrap();
        let limit: i64 = conn.query_row("PRAGMA journal_size_limit", [], |r| r.get(0)).unwrap();
        assert_eq!(limit, WAL_KEPT_BYTES);
    }

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
                move || {
                    SqliteStore::open(&path, Retention::KEEP_EVERYTHING).map(|_| ()).unwrap_err().to_string()
                }
            });
            assert!(e.contains(why), "{}: {e}", path.display());
        }
    }

    #[test]
    fn a_failing_request_in_a_group_is_rolled_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        SqliteStore::open(&path, Retention::KEEP_EVERYTHING).unwrap();
        let mut conn = SqliteStore::connect(&path).unwrap();
        let (a1, _) = job("a", &[new_report("a", "batch-1", 1)]);
        // Host b reuses host a's batch id after a first report of its own.
        let (b, _) = job("b", &[new_report("b", "batch-2", 1), new_report("b", "batch-1", 2)]);
        let (a2, _) = job("a", &[new_report("a", "batch-3", 2), new_report("a", "batch-1", 1)]);
        let results = commit_group(&mut conn, &[a1, b, a2], &mut Vec::new());
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
        drop(SqliteStore::open(&path, Retention::KEEP_EVERYTHING).unwrap());
        let conn = Connection::open(&path).unwrap();
        let sql: String =
            conn.query_row("SELECT sql FROM sqlite_master WHERE name = 'events'", [], |r| r.get(0)).unwrap();
        assert!(sql.contains("PRIMARY KEY (batch_id, position)"), "{sql}");
        let kept: i64 =
            conn.query_row("SELECT COUNT(*) FROM events WHERE batch_id = 'b1'", [], |r| r.get(0)).unwrap();
        assert_eq!(kept, 1);
        // Opened again: nothing more to do.
        drop(SqliteStore::open(&path, Retention::KEEP_EVERYTHING).unwrap());
    }

    // Retention, compressed text and byte accounting.

    use super::schema::ROW_FIXED_BYTES;

    use guestward_core::testing::letters as noise;

    /// A report with one finding and two events, one of them holding `text`.
    pub(super) fn report_with(host: &str, batch: &str, sequence: u64, text: &str) -> NewReport {
        let mut r = new_report(host, batch, sequence);
        r.findings.push(Finding {
            id: "GW-TEST-001".into(),
            severity: guestward_core::Severity::High,
            title: format!("finding of {batch}"),
            evidence: serde_json::json!({ "batch": batch }),
            remediation: "none".into(),
            source: "test".into(),
        });
        r.events.push(Event {
            kind: "test.small".into(),
            time: Timestamp::now(),
            data: serde_json::json!(batch),
        });
        r.events.push(Event {
            kind: "test.text".into(),
            time: Timestamp::now(),
            data: serde_json::json!(text),
        });
        r
    }

    pub(super) fn days_ago(days: i64) -> Timestamp {
        Timestamp(jiff::Timestamp::now().checked_sub(jiff::SignedDuration::from_hours(days * 24)).unwrap())
    }

    /// Stores one request of `host` received at `at`, as the writer thread would.
    pub(super) fn store_at(
        conn: &mut Connection,
        host: &str,
        reports: &[NewReport],
        at: Timestamp,
    ) -> Vec<BatchStatus> {
        let (job, _) = job_at(host, reports, at);
        commit_group(conn, &[job], &mut Vec::new()).pop().unwrap().unwrap()
    }

    /// A store (whose own writer keeps everything) and a second connection that stores and
    /// prunes as the writer thread does, with the retention under test.
    pub(super) struct Fixture {
        pub(super) _dir: tempfile::TempDir,
        pub(super) path: PathBuf,
        pub(super) store: SqliteStore,
        pub(super) conn: Connection,
    }

    pub(super) fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let store = SqliteStore::open(&path, Retention::KEEP_EVERYTHING).unwrap();
        let conn = SqliteStore::connect(&path).unwrap();
        Fixture { _dir: dir, path, store, conn }
    }

    pub(super) fn batches(conn: &Connection, host: &str) -> Vec<String> {
        conn.prepare("SELECT batch_id FROM reports WHERE host_id = ?1 ORDER BY received_at, rowid")
            .unwrap()
            .query_map([host], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    pub(super) fn count(conn: &Connection, sql: &str, arg: &str) -> i64 {
        conn.query_row(sql, [arg], |r| r.get(0)).unwrap()
    }

    pub(super) fn stored_bytes(conn: &Connection, host: &str) -> i64 {
        count(conn, "SELECT stored_bytes FROM hosts WHERE host_id = ?1", host)
    }

    /// What `host` takes, counted from scratch from the bytes of every row it has (the
    /// independent check of `hosts.stored_bytes`, which is kept incrementally).
    pub(super) fn recount(conn: &Connection, host: &str) -> i64 {
        let fixed = ROW_FIXED_BYTES;
        count(
            conn,
            &format!(
                "SELECT
                   (SELECT COALESCE(SUM(length(report_zstd) + {fixed} + 2 * (length(batch_id) + length(host_id))), 0)
                      FROM reports WHERE host_id = ?1)
                 + (SELECT COALESCE(SUM(length(CAST(f.finding AS BLOB)) + {fixed} + 2 * (length(f.batch_id) + length(r.host_id))), 0)
                      FROM findings f JOIN reports r ON r.batch_id = f.batch_id WHERE r.host_id = ?1)
                 + (SELECT COALESCE(SUM(length(CAST(event AS BLOB)) + {fixed} + 2 * (length(batch_id) + length(host_id))), 0)
                      FROM events WHERE host_id = ?1)
                 + (SELECT COALESCE(SUM({fixed} + 2 * (length(batch_id) + length(host_id))), 0)
                      FROM pruned_batches WHERE host_id = ?1)
                 + (SELECT COALESCE(SUM(32 + {fixed} + 2 * (length(batch_id) + length(host_id))), 0)
                      FROM inventories WHERE host_id = ?1)
                 + (SELECT COALESCE(SUM(length(CAST(p.name AS BLOB)) + length(p.source) + length(CAST(p.version AS BLOB))
                                        + length(CAST(p.arch AS BLOB)) + length(CAST(p.location AS BLOB)) + 64), 0)
                      FROM inventories i JOIN set_packages sp ON sp.set_id = i.set_id
                      JOIN packages p ON p.package_id = sp.package_id WHERE i.host_id = ?1)
                 + (SELECT COALESCE(SUM(32 + {fixed} + 2 * (length(batch_id) + length(host_id))), 0)
                      FROM listener_scans WHERE host_id = ?1)
                 + (SELECT COALESCE(SUM(length(protocol) + length(scope) + length(CAST(process AS BLOB))
                                        + length(address) + length(CAST(interface AS BLOB)) + length(public)
                                        + length(CAST(exe AS BLOB)) + length(CAST(user AS BLOB))
                                        + length(CAST(unit AS BLOB)) + 64), 0)
                      FROM listeners WHERE host_id = ?1)"
            ),
            host,
        )
    }

    pub(super) fn assert_accounting_exact(conn: &Connection, when: &str) {
        let hosts: Vec<String> = conn
            .prepare("SELECT host_id FROM hosts")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for host in hosts {
            assert_eq!(stored_bytes(conn, &host), recount(conn, &host), "host {host} {when}");
        }
    }

    pub(super) fn children(conn: &Connection, batch: &str) -> (i64, i64) {
        (
            count(conn, "SELECT COUNT(*) FROM findings WHERE batch_id = ?1", batch),
            count(conn, "SELECT COUNT(*) FROM events WHERE batch_id = ?1", batch),
        )
    }

    #[test]
    fn age_pruning_deletes_old_reports_with_findings_and_events_and_keeps_each_latest() {
        let Fixture { mut conn, store, _dir, .. } = fixture();
        let old = days_ago(100);
        // Host a: everything old; a4 is its latest. Host b: b1 old, b2 new. Host c: recent.
        let a: Vec<NewReport> = (1..=4).map(|i| report_with("a", &format!("a{i}"), i, "x")).collect();
        store_at(&mut conn, "a", &a, old);
        store_at(&mut conn, "b", &[report_with("b", "b1", 1, "x")], old);
        store_at(&mut conn, "b", &[report_with("b", "b2", 2, "x")], Timestamp::now());
        store_at(&mut conn, "c", &[report_with("c", "c1", 1, "x")], days_ago(10));
        store_at(&mut conn, "c", &[report_with("c", "c2", 2, "x")], Timestamp::now());

        let mut pruner = Pruner::new(
            Retention { max_age_days: 90, max_bytes_per_host: 0, forget_idle_hosts_after_days: 0 },
            true,
        );
        pruner.run_until_idle(&mut conn, Timestamp::now());

        assert_eq!(batches(&conn, "a"), ["a4"]);
        assert_eq!(batches(&conn, "b"), ["b2"]);
        assert_eq!(batches(&conn, "c"), ["c1", "c2"]);
        for gone in ["a1", "a2", "a3", "b1"] {
            assert_eq!(children(&conn, gone), (0, 0), "{gone}'s findings and events");
            assert_eq!(count(&conn, "SELECT COUNT(*) FROM pruned_batches WHERE batch_id = ?1", gone), 1);
        }
        for kept in ["a4", "b2", "c1", "c2"] {
            assert_eq!(children(&conn, kept), (1, 2), "{kept}'s findings and events");
        }
        // Every host still answers, from its latest report.
        let hosts = store.hosts().unwrap();
        assert_eq!(
            hosts.iter().map(|h| (h.host_id.as_str(), h.reports_stored)).collect::<Vec<_>>(),
            [("a", 1), ("b", 1), ("c", 2)]
        );
        let a = store.host("a").unwrap().unwrap();
        assert_eq!(a.latest_report.unwrap().batch_id, "a4");
        assert_eq!(a.findings.len(), 1);
        assert_eq!(a.recent_events.len(), 2);
        assert_accounting_exact(&conn, "after age pruning");
    }

    #[test]
    fn a_host_over_its_cap_loses_its_oldest_reports_until_it_is_under_and_others_keep_theirs() {
        let Fixture { mut conn, _dir, .. } = fixture();
        let start = days_ago(1);
        for i in 1..=10u64 {
            let at = Timestamp(start.0.checked_add(jiff::SignedDuration::from_secs(i as i64)).unwrap());
            store_at(
                &mut conn,
                "a",
                &[report_with("a", &format!("a{i:02}"), i, &noise(10_000, i as u32))],
                at,
            );
        }
        store_at(&mut conn, "b", &[report_with("b", "b1", 1, &noise(10_000, 99))], start);
        let b_bytes = stored_bytes(&conn, "b");
        let per_report = stored_bytes(&conn, "a") / 10;
        // Room for three and a half reports.
        let cap = u64::try_from(per_report * 7 / 2).unwrap();
        let mut pruner = Pruner::new(
            Retention { max_age_days: 0, max_bytes_per_host: cap, forget_idle_hosts_after_days: 0 },
            true,
        );
        pruner.check_every_host(&conn).unwrap();
        pruner.run_until_idle(&mut conn, Timestamp::now());

        assert_eq!(batches(&conn, "a"), ["a08", "a09", "a10"], "the oldest received went first");
        assert!(u64::try_from(stored_bytes(&conn, "a")).unwrap() <= cap);
        assert_eq!(batches(&conn, "b"), ["b1"]);
        assert_eq!(stored_bytes(&conn, "b"), b_bytes);
        assert_accounting_exact(&conn, "after cap pruning");

        // The latest report is kept even when it alone is over the cap; tombstones go first.
        let mut pruner = Pruner::new(
            Retention { max_age_days: 0, max_bytes_per_host: 1, forget_idle_hosts_after_days: 0 },
            true,
        );
        pruner.check_every_host(&conn).unwrap();
        pruner.run_until_idle(&mut conn, Timestamp::now());
        assert_eq!(batches(&conn, "a"), ["a10"]);
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM pruned_batches WHERE host_id = ?1", "a"), 0);
        assert_eq!(children(&conn, "a10"), (1, 2));
        assert_accounting_exact(&conn, "with only the latest report left");
    }

    #[test]
    fn a_retried_batch_that_retention_pruned_is_answered_duplicate_and_not_stored_again() {
        let Fixture { mut conn, store, _dir, .. } = fixture();
        let old: Vec<NewReport> = (1..=3).map(|i| report_with("a", &format!("a{i}"), i, "x")).collect();
        store_at(&mut conn, "a", &old, days_ago(100));
        store_at(&mut conn, "a", &[report_with("a", "a4", 4, "x")], Timestamp::now());
        let mut pruner = Pruner::new(
            Retention { max_age_days: 90, max_bytes_per_host: 0, forget_idle_hosts_after_days: 0 },
            true,
        );
        pruner.run_until_idle(&mut conn, Timestamp::now());
        assert_eq!(batches(&conn, "a"), ["a4"]);
        let before = stored_bytes(&conn, "a");

        // The agent retries a1 (its acknowledgement was lost), alone and with a new report.
        let statuses =
            store_at(&mut conn, "a", &[old[0].clone(), report_with("a", "a5", 5, "x")], Timestamp::now());
        assert_eq!(statuses, [BatchStatus::Duplicate, BatchStatus::Stored]);
        assert_eq!(batches(&conn, "a"), ["a4", "a5"]);
        assert_eq!(store.hosts().unwrap()[0].reports_stored, 2);
        assert!(stored_bytes(&conn, "a") > before);
        assert_accounting_exact(&conn, "after the retry");
        // Another host naming a pruned batch id is refused as before.
        let (b, _) = job("b", &[report_with("b", "a2", 1, "x")]);
        let results = commit_group(&mut conn, &[b], &mut Vec::new());
        assert!(matches!(results[0], Err(StoreError::ForeignBatch { .. })), "{:?}", results[0]);
    }

    /// Pruning removes a host's oldest reports, so its span of sequences shrinks from below:
    /// a host that lost no report shows none missing, however many were pruned.
    #[test]
    fn missing_sequences_stays_0_for_a_gap_free_host_after_pruning() {
        let Fixture { mut conn, store, _dir, .. } = fixture();
        let start = days_ago(100);
        for i in 1..=20u64 {
            // Received a day apart, report i 100 - i - 0.5 days ago: 1-9 are past 90 days.
            let at =
                Timestamp(start.0.checked_add(jiff::SignedDuration::from_hours(i as i64 * 24 + 12)).unwrap());
            store_at(
                &mut conn,
                "a",
                &[report_with("a", &format!("a{i:02}"), i, &noise(2_000, i as u32))],
                at,
            );
        }
        store_at(&mut conn, "b", &[report_with("b", "b1", 1, "x"), report_with("b", "b3", 3, "x")], start);
        let before = store.hosts().unwrap();
        assert_eq!((before[0].reports_stored, before[0].missing_sequences), (20, 0));
        assert_eq!(before[1].missing_sequences, 1, "b really lost report 2");

        let mut pruner = Pruner::new(
            Retention { max_age_days: 90, max_bytes_per_host: 0, forget_idle_hosts_after_days: 0 },
            true,
        );
        pruner.run_until_idle(&mut conn, Timestamp::now());
        let a = &store.hosts().unwrap()[0];
        assert_eq!((a.reports_stored, a.last_sequence, a.missing_sequences), (11, Some(20), 0));

        let cap = u64::try_from(stored_bytes(&conn, "a") / 2).unwrap();
        let mut pruner = Pruner::new(
            Retention { max_age_days: 0, max_bytes_per_host: cap, forget_idle_hosts_after_days: 0 },
            true,
        );
        pruner.check_every_host(&conn).unwrap();
        pruner.run_until_idle(&mut conn, Timestamp::now());
        let after = store.hosts().unwrap();
        assert!(after[0].reports_stored < 11, "{}", after[0].reports_stored);
        assert_eq!((after[0].last_sequence, after[0].missing_sequences), (Some(20), 0));
        // b's latest (b3) is kept, b1 pruned by age: nothing is missing from what is left.
        assert_eq!((after[1].reports_stored, after[1].missing_sequences), (1, 0));
    }

    #[test]
    fn stored_bytes_equals_a_full_recount_after_inserts_duplicates_a_rollback_and_prunes() {
        let Fixture { mut conn, _dir, .. } = fixture();
        let long = "A".repeat(100_000); // compressed
        let old: Vec<NewReport> =
            (1..=5).map(|i| report_with("a", &format!("a{i}"), i, &noise(3_000, i as u32))).collect();
        store_at(&mut conn, "a", &old, days_ago(100));
        store_at(&mut conn, "a", &[report_with("a", "a6", 6, &long), old[1].clone()], Timestamp::now());
        store_at(&mut conn, "b", &[report_with("b", "b1", 1, &long)], days_ago(100));
        assert_accounting_exact(&conn, "after inserts and a duplicate");
        // One group: b stores b2, then reuses a's batch id and is rolled back whole; a goes on.
        let (a7, _) = job("a", &[report_with("a", "a7", 7, "x")]);
        let (b, _) = job("b", &[report_with("b", "b2", 2, &long), report_with("b", "a1", 3, "x")]);
        let (a8, _) = job("a", &[report_with("a", "a8", 8, &noise(500, 8))]);
        let results = commit_group(&mut conn, &[a7, b, a8], &mut Vec::new());
        assert!(matches!(results[1], Err(StoreError::ForeignBatch { .. })), "{:?}", results[1]);
        assert_eq!(batches(&conn, "b"), ["b1"]);
        assert_accounting_exact(&conn, "after a rolled-back request");

        let mut pruner = Pruner::new(
            Retention { max_age_days: 90, max_bytes_per_host: 0, forget_idle_hosts_after_days: 0 },
            true,
        );
        pruner.run_until_idle(&mut conn, Timestamp::now());
        assert_eq!(batches(&conn, "a"), ["a6", "a7", "a8"]);
        assert_accounting_exact(&conn, "after age pruning");
        let cap = u64::try_from(stored_bytes(&conn, "a") - 1).unwrap();
        let mut pruner = Pruner::new(
            Retention { max_age_days: 0, max_bytes_per_host: cap, forget_idle_hosts_after_days: 0 },
            true,
        );
        pruner.check_every_host(&conn).unwrap();
        pruner.run_until_idle(&mut conn, Timestamp::now());
        assert_eq!(batches(&conn, "a"), ["a7", "a8"]);
        assert_accounting_exact(&conn, "after cap pruning");
        // 200 days on, the tombstones of the first pass are past the age limit too.
        let later = Timestamp(
            jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_hours(200 * 24)).unwrap(),
        );
        let mut pruner = Pruner::new(
            Retention { max_age_days: 90, max_bytes_per_host: 0, forget_idle_hosts_after_days: 0 },
            true,
        );
        pruner.run_until_idle(&mut conn, later);
        let tombstones: Vec<String> = conn
            .prepare("SELECT batch_id FROM pruned_batches WHERE host_id = 'a'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(tombstones, ["a7"], "only the tombstone this pass made is left");
        assert_eq!(batches(&conn, "a"), ["a8"], "the rest is 200 days old now; a8 is the latest");
        assert_accounting_exact(&conn, "after tombstones expired");
    }

    /// The writer thread itself prunes: at start, an age pass (a collector started after a
    /// long stop catches up) and every host over the cap (a cap lowered since the last run);
    /// then a host over its cap right after the commit that put it there.
    #[test]
    fn the_writer_thread_prunes_at_start_and_by_cap_after_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        {
            let _store = SqliteStore::open(&path, Retention::KEEP_EVERYTHING).unwrap();
            let mut conn = SqliteStore::connect(&path).unwrap();
            let old: Vec<NewReport> = (1..=3).map(|i| report_with("a", &format!("a{i}"), i, "x")).collect();
            store_at(&mut conn, "a", &old, days_ago(100));
            store_at(&mut conn, "a", &[report_with("a", "a4", 4, "x")], Timestamp::now());
            // Host b, recent, over the cap the store is opened with next.
            let b: Vec<NewReport> =
                (1..=5).map(|i| report_with("b", &format!("b{i}"), i, &noise(100_000, i as u32))).collect();
            store_at(&mut conn, "b", &b, Timestamp::now());
        }
        let store = SqliteStore::open(
            &path,
            Retention { max_age_days: 90, max_bytes_per_host: 200_000, forget_idle_hosts_after_days: 0 },
        )
        .unwrap();
        let conn = SqliteStore::connect(&path).unwrap();
        let wait_for = |what: &str, done: &dyn Fn() -> bool| {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while !done() {
                assert!(std::time::Instant::now() < deadline, "the writer thread did not prune: {what}");
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        wait_for("age", &|| batches(&conn, "a") == ["a4"]);
        wait_for("cap at start", &|| stored_bytes(&conn, "b") <= 200_000);
        assert_eq!(batches(&conn, "b").last().map(String::as_str), Some("b5"));
        // Four reports of about 60 KB each, through the store as requests: over the cap by the last.
        for i in 5..=8u64 {
            let r = report_with("a", &format!("a{i}"), i, &noise(100_000, i as u32));
            assert_eq!(store.ingest(&delivery("a", Timestamp::now()), &[r]).unwrap(), [BatchStatus::Stored]);
        }
        wait_for("cap", &|| stored_bytes(&conn, "a") <= 200_000);
        let left = batches(&conn, "a");
        assert_eq!(left.last().map(String::as_str), Some("a8"), "{left:?}");
        assert!(!left.contains(&"a5".to_string()), "{left:?}");
        assert_accounting_exact(&conn, "after the writer pruned");
    }

    /// An operator sees in the listing and the detail what each host takes against its cap
    /// and how long it has been silent (before retention forgets it).
    #[test]
    fn a_host_summary_shows_its_stored_bytes_and_how_long_ago_it_was_seen() {
        let Fixture { mut conn, store, _dir, .. } = fixture();
        store_at(&mut conn, "a", &[report_with("a", "a1", 1, &noise(5_000, 1))], days_ago(10));
        store_at(&mut conn, "b", &[report_with("b", "b1", 1, "x")], Timestamp::now());
        let hosts = store.hosts().unwrap();
        let (a, b) = (&hosts[0], &hosts[1]);
        assert_eq!(a.stored_bytes, u64::try_from(stored_bytes(&conn, "a")).unwrap());
        assert_eq!(b.stored_bytes, u64::try_from(stored_bytes(&conn, "b")).unwrap());
        assert!(
            a.stored_bytes > b.stored_bytes && b.stored_bytes > 0,
            "{} {}",
            a.stored_bytes,
            b.stored_bytes
        );
        let ten_days = 10 * 86_400;
        assert!((ten_days..ten_days + 60).contains(&a.secs_since_last_seen), "{}", a.secs_since_last_seen);
        assert!(b.secs_since_last_seen < 60, "{}", b.secs_since_last_seen);
        let detail = store.host("a").unwrap().unwrap();
        assert_eq!(detail.summary.stored_bytes, a.stored_bytes);
        assert!(detail.summary.secs_since_last_seen >= ten_days);
    }

    #[test]
    fn stored_times_compare_as_text_in_time_order() {
        let at = |nanos: i32| Timestamp(jiff::Timestamp::new(1_765_000_000, nanos).unwrap());
        let times = [at(0), at(500_000_000), at(550_000_000), at(550_000_001)];
        for pair in times.windows(2) {
            let (a, b) = (ts_text(&pair[0]), ts_text(&pair[1]));
            assert!(a < b, "{a} sorts after {b}");
            assert_eq!(ts_parse(&a, "t").unwrap(), pair[0]);
        }
        assert_eq!(ts_text(&at(500_000_000)), "2025-12-06T05:46:40.500000000Z");
    }

    /// One step deletes a bounded part (rows, and stored bytes) in its transaction, however
    /// large the report, and the counts are exact between steps.
    #[test]
    fn a_pruning_step_deletes_a_bounded_part_and_the_counts_stay_exact_between_steps() {
        let Fixture { mut conn, _dir, .. } = fixture();
        let mut many = report_with("a", "a1", 1, "x");
        for i in 0..5_000 {
            many.events.push(Event {
                kind: "tiny".into(),
                time: Timestamp::now(),
                data: serde_json::json!(i),
            });
        }
        let mut large = report_with("a", "a2", 2, "x");
        for i in 0..40 {
            large.events.push(Event {
                kind: "large".into(),
                time: Timestamp::now(),
                data: serde_json::json!(noise(1 << 20, i + 1)),
            });
        }
        store_at(&mut conn, "a", &[many, large, report_with("a", "a3", 3, "x")], Timestamp::now());
        let events = |conn: &Connection| count(conn, "SELECT COUNT(*) FROM events WHERE host_id = ?1", "a");
        let before = events(&conn);
        let mut pruner = Pruner::new(
            Retention { max_age_days: 0, max_bytes_per_host: 1, forget_idle_hosts_after_days: 0 },
            true,
        );
        pruner.check_every_host(&conn).unwrap();
        pruner.step(&mut conn, Timestamp::now());
        assert_eq!(before - events(&conn), 2048, "the first step deletes one budget of rows");
        assert_eq!(batches(&conn, "a"), ["a1", "a2", "a3"]);
        assert_accounting_exact(&conn, "after one step");
        let mut steps = 1;
        while batches(&conn, "a").len() > 1 {
            let (events_before, bytes_before) = (events(&conn), stored_bytes(&conn, "a"));
            pruner.step(&mut conn, Timestamp::now());
            steps += 1;
            assert!(events_before - events(&conn) <= 2048);
            // 16 MiB of stored bytes, and the row that crosses the line.
            assert!(bytes_before - stored_bytes(&conn, "a") < (16 << 20) + (2 << 20));
            assert_accounting_exact(&conn, "between steps");
            assert!(steps < 100, "pruning did not end");
        }
        assert_eq!(batches(&conn, "a"), ["a3"]);
        // 5,003 small rows in steps of 2,048, then 40 large events (about 25 MiB stored) at
        // 16 MiB a step.
        assert!(steps >= 4, "{steps} steps");
    }

    /// A long repetitive string (what a compromised host can send for almost nothing) takes
    /// about its compressed size on disk, and reads back whole.
    #[test]
    fn a_long_event_is_stored_compressed_and_read_back_whole() {
        let Fixture { mut conn, store, path, _dir } = fixture();
        let long = "attack ".repeat(4 << 20); // 28 MiB
        let r = report_with("a", "a1", 1, &long);
        // The report itself is stored compressed too (as before); `json` is what the agent sent.
        store_at(&mut conn, "a", &[r], Timestamp::now());
        let (stored, json, compressed): (i64, i64, bool) = conn
            .query_row(
                "SELECT length(event), json_bytes, compressed FROM events WHERE batch_id = 'a1' AND position = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert!(compressed);
        assert!(stored < 64 << 10, "{stored} bytes stored");
        assert!(json > 28 << 20, "{json}");
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
        let file = std::fs::metadata(&path).unwrap().len();
        assert!(file < 1 << 20, "the database is {file} bytes");
        // Over the 1 MiB of a host's detail: left out, unread. A shorter one reads back whole.
        let detail = store.host("a").unwrap().unwrap();
        assert_eq!((detail.recent_events.len(), detail.recent_events_omitted), (1, 1));
        let medium = "attack ".repeat(100_000);
        store_at(&mut conn, "a", &[report_with("a", "a2", 2, &medium)], Timestamp::now());
        let detail = store.host("a").unwrap().unwrap();
        assert_eq!(detail.recent_events.last().unwrap().data, serde_json::json!(medium));
        assert_accounting_exact(&conn, "with compressed events");
    }

    #[test]
    fn a_new_database_hands_the_pages_retention_freed_back_to_the_file_system() {
        let Fixture { mut conn, path, _dir, .. } = fixture();
        assert!(schema::has_incremental_vacuum(&conn).unwrap(), "auto_vacuum is not INCREMENTAL");
        // Random letters: zstd takes them to about 60 %, so 40 reports are about 25 MB.
        for i in 1..=40u64 {
            store_at(
                &mut conn,
                "a",
                &[report_with("a", &format!("a{i:02}"), i, &noise(1 << 20, i as u32))],
                Timestamp::now(),
            );
        }
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
        let full = std::fs::metadata(&path).unwrap().len();
        assert!(full > 20 << 20, "{full}");
        let mut pruner = Pruner::new(
            Retention { max_age_days: 0, max_bytes_per_host: 4 << 20, forget_idle_hosts_after_days: 0 },
            true,
        );
        pruner.check_every_host(&conn).unwrap();
        pruner.run_until_idle(&mut conn, Timestamp::now());
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
        let after = std::fs::metadata(&path).unwrap().len();
        // 4 MiB of data, free pages up to a quarter of the file kept for reuse, the rest handed back.
        assert!(after < 10 << 20, "{full} bytes before pruning, {after} after");
    }

    /// A database written before compression and byte accounting (TEXT findings and events, no
    /// `stored_bytes`) is updated in place at open: its rows stay readable as they are, its
    /// hosts' bytes are counted once, and retention deletes its rows with exact accounting.
    #[test]
    fn an_old_database_gets_compression_and_byte_accounting_and_keeps_its_events_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let report = old_database(&path);
        let store = SqliteStore::open(&path, Retention::KEEP_EVERYTHING).unwrap();
        let mut conn = SqliteStore::connect(&path).unwrap();
        assert_accounting_exact(&conn, "after the update");
        assert!(
            stored_bytes(&conn, "h") > 2 * (600 << 10),
            "the large event is counted in bytes, not characters"
        );
        let detail = store.host("h").unwrap().unwrap();
        assert_eq!(detail.latest_report.unwrap().batch_id, report.batch_id);
        assert_eq!(detail.findings.len(), 1);
        // The large event is 1.2 MB in UTF-8 (600 Ki characters): over the detail's 1 MiB.
        let kinds: Vec<_> = detail.recent_events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!((kinds, detail.recent_events_omitted), (vec!["test.old", "test.old"], 1));
        assert_eq!(detail.recent_events[0].data, serde_json::json!("überall ✓"));
        // New reports are stored compressed beside the old rows.
        let long = "é".repeat(300 << 10);
        store_at(&mut conn, "h", &[report_with("h", "new3", 3, &long)], Timestamp::now());
        assert_eq!(
            count(&conn, "SELECT compressed FROM events WHERE batch_id = ?1 AND position = 1", "new3"),
            1
        );
        let detail = store.host("h").unwrap().unwrap();
        assert_eq!(detail.recent_events.last().unwrap().data, serde_json::json!(long));
        // Retention deletes the old rows (old1, and old2 now that new3 is the latest).
        let mut pruner = Pruner::new(Retention::default(), false);
        pruner.run_until_idle(&mut conn, Timestamp::now());
        assert_eq!(batches(&conn, "h"), ["new3"]);
        assert_accounting_exact(&conn, "after pruning the old rows");
        // Its auto_vacuum cannot be changed: freed pages are reused instead.
        assert!(!schema::has_incremental_vacuum(&conn).unwrap());
        drop(store);
        drop(SqliteStore::open(&path, Retention::KEEP_EVERYTHING).unwrap());
    }

    /// `db compact` on such a database: refused while a store has it open; then its plain rows
    /// rewritten (the long event compressed), its hosts' bytes exact, and, asked in a second
    /// run, the file converted to incremental auto_vacuum and shrunk; every finding and event
    /// read back as before. A third run has nothing left to rewrite and hands free pages back.
    #[test]
    fn an_old_database_is_compacted_in_place_and_reads_back_the_same() {
        use compact::{CompactOptions, VacuumOutcome};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        old_database(&path);
        let store = SqliteStore::open(&path, Retention::KEEP_EVERYTHING).unwrap();
        let before = store.host("h").unwrap().unwrap();
        let e = compact(&path, CompactOptions { vacuum: true }).unwrap_err().to_string();
        assert!(e.contains("c.db") && e.contains("stop the collector"), "{e}");
        drop(store);

        // A collector started while the database is held alone says what holds it.
        let alone = Connection::open(&path).unwrap();
        alone.execute_batch("PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; COMMIT;").unwrap();
        let e = SqliteStore::open_waiting(&path, Retention::KEEP_EVERYTHING, Duration::from_millis(100))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is `db compact` running?"), "{e}");
        drop(alone);

        let rows = compact(&path, CompactOptions { vacuum: false }).unwrap();
        // Two findings and three events; only the long event pays to compress.
        assert_eq!((rows.rows_rewritten, rows.rows_compressed, rows.hosts_recounted), (5, 1, 1), "{rows:?}");
        assert!(rows.value_bytes_before > 2 * (600 << 10), "{rows:?}");
        assert!(rows.value_bytes_after < 64 << 10, "{rows:?}");
        assert_eq!(rows.vacuum, VacuumOutcome::NotAsked);
        let conn = SqliteStore::connect(&path).unwrap();
        assert_accounting_exact(&conn, "after the rewrite");
        for table in ["findings", "events"] {
            let sql = format!("SELECT COUNT(*) FROM {table} WHERE json_bytes IS NULL AND ?1 = ?1");
            assert_eq!(count(&conn, &sql, ""), 0, "{table}");
        }
        assert!(!schema::has_incremental_vacuum(&conn).unwrap());
        // The room asked for the rewrite is what the pages use, not the pages: the long event
        // shrank in place and left its pages nearly empty.
        let live = compact::live_bytes(&conn).unwrap();
        assert!(live < rows.file_bytes_before / 4, "{live} of {rows:?}");
        drop(conn);

        let converted = compact(&path, CompactOptions { vacuum: true }).unwrap();
        assert_eq!((converted.rows_rewritten, converted.vacuum.clone()), (0, VacuumOutcome::Converted));
        // The 1.2 MB event was the file's bulk; the file came out within the room asked for.
        assert!(converted.file_bytes_after < rows.file_bytes_before - (1 << 20), "{rows:?} {converted:?}");
        let asked = live + live * compact::VACUUM_ROOM_MARGIN_PERCENT / 100;
        assert!(converted.file_bytes_after <= asked, "{asked} asked, {converted:?}");
        let conn = SqliteStore::connect(&path).unwrap();
        assert!(schema::has_incremental_vacuum(&conn).unwrap());
        assert_accounting_exact(&conn, "after the vacuum");
        drop(conn);

        let store = SqliteStore::open(&path, Retention::KEEP_EVERYTHING).unwrap();
        let after = store.host("h").unwrap().unwrap();
        assert_eq!(
            (&after.findings, &after.recent_events, after.recent_events_omitted, &after.latest_report),
            (&before.findings, &before.recent_events, before.recent_events_omitted, &before.latest_report)
        );
        drop(store);
        let again = compact(&path, CompactOptions { vacuum: true }).unwrap();
        assert_eq!(again.rows_rewritten, 0);
        assert!(matches!(again.vacuum, VacuumOutcome::FreePagesReleased { .. }), "{again:?}");
    }

    /// Writes at `path` a database as it was before compression and byte accounting (TEXT
    /// findings and events, no `stored_bytes`): host `h`, two reports of 100 days ago (`old1`,
    /// `old2`), a finding each, a short event each (`"überall ✓"`), and a long one in `old2`
    /// (600 Ki `é`: 1.2 MB of UTF-8). Returns the report stored in both.
    fn old_database(path: &Path) -> guestward_report::Report {
        let report = guestward_report::Report::new(
            guestward_report::AgentInfo {
                version: "1".into(),
                host_id: Some("h".into()),
                host_id_source: guestward_report::HostIdSource::Config,
            },
            Timestamp::now(),
        );
        let report_json = serde_json::to_vec(&report).unwrap();
        let finding = serde_json::to_string(&report_with("h", "x", 1, "x").findings[0]).unwrap();
        let small = serde_json::to_string(&Event {
            kind: "test.old".into(),
            time: Timestamp::now(),
            data: serde_json::json!("überall ✓"),
        })
        .unwrap();
        let large = serde_json::to_string(&Event {
            kind: "test.large".into(),
            time: Timestamp::now(),
            data: serde_json::json!("é".repeat(600 << 10)),
        })
        .unwrap();
        {
            // The schema as it was before this change.
            let conn = Connection::open(path).unwrap();
            conn.execute_batch(
                "CREATE TABLE reports (batch_id TEXT PRIMARY KEY, host_id TEXT NOT NULL, sequence INTEGER NOT NULL,
                     collected_at TEXT NOT NULL, received_at TEXT NOT NULL, agent_version TEXT NOT NULL,
                     report_zstd BLOB NOT NULL);
                 CREATE INDEX reports_by_host ON reports (host_id, sequence);
                 CREATE TABLE findings (batch_id TEXT NOT NULL, position INTEGER NOT NULL, finding TEXT NOT NULL,
                     PRIMARY KEY (batch_id, position));
                 CREATE TABLE events (host_id TEXT NOT NULL, sequence INTEGER NOT NULL, position INTEGER NOT NULL,
                     batch_id TEXT NOT NULL, event TEXT NOT NULL, PRIMARY KEY (batch_id, position));
                 CREATE INDEX events_by_host ON events (host_id, sequence, position);
                 CREATE TABLE hosts (host_id TEXT PRIMARY KEY, latest_batch_id TEXT NOT NULL,
                     latest_sequence INTEGER NOT NULL, last_seen TEXT NOT NULL, cert_serial TEXT,
                     cert_sha256 TEXT, cert_not_after TEXT);",
            )
            .unwrap();
            let old = ts_text(&days_ago(100));
            let blob = zstd::bulk::compress(&report_json, 3).unwrap();
            for (batch, seq) in [("old1", 1), ("old2", 2)] {
                conn.execute(
                    "INSERT INTO reports VALUES (?1, 'h', ?2, ?3, ?3, '1', ?4)",
                    params![batch, seq, old, blob],
                )
                .unwrap();
                conn.execute("INSERT INTO findings VALUES (?1, 0, ?2)", params![batch, finding]).unwrap();
                conn.execute("INSERT INTO events VALUES ('h', ?1, 0, ?2, ?3)", params![seq, batch, small])
                    .unwrap();
            }
            conn.execute("INSERT INTO events VALUES ('h', 2, 1, 'old2', ?1)", [&large]).unwrap();
            conn.execute("INSERT INTO hosts VALUES ('h', 'old2', 2, ?1, NULL, NULL, NULL)", [&old]).unwrap();
        }
        report
    }
}
