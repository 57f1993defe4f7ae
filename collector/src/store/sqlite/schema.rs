//! The database's tables, how an older file is brought up to them, and what a row costs its
//! host (`hosts.stored_bytes`, the figure `[retention] max_bytes_per_host` caps).

use rusqlite::{Connection, OptionalExtension};

pub(super) const SCHEMA: &str = "
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
-- Retention: a host over its cap, or past the age limit, loses its oldest received first.
CREATE INDEX IF NOT EXISTS reports_by_host_received ON reports (host_id, received_at);
-- Findings and events hold their JSON, zstd-compressed when `compressed` (see stored_json.rs);
-- `json_bytes` is the JSON's length, so a reader can skip one too large without reading it.
-- Rows written before compression have plain text and no `json_bytes`.
CREATE TABLE IF NOT EXISTS findings (
    batch_id   TEXT NOT NULL,
    position   INTEGER NOT NULL,
    finding    BLOB NOT NULL,
    compressed INTEGER NOT NULL DEFAULT 0,
    json_bytes INTEGER,
    PRIMARY KEY (batch_id, position)
);
-- Keyed by report, not by (host, sequence): an agent whose state directory was reset or
-- restored numbers its reports from 1 again, and those reports' events were once dropped
-- while the reports were acknowledged as stored.
CREATE TABLE IF NOT EXISTS events (
    host_id    TEXT NOT NULL,
    sequence   INTEGER NOT NULL,
    position   INTEGER NOT NULL,
    batch_id   TEXT NOT NULL,
    event      BLOB NOT NULL,
    compressed INTEGER NOT NULL DEFAULT 0,
    json_bytes INTEGER,
    PRIMARY KEY (batch_id, position)
);
CREATE INDEX IF NOT EXISTS events_by_host ON events (host_id, sequence, position);
-- The latest report (highest sequence, or collected later: a reset agent counts from 1 again)
-- and the latest delivery of each host. `stored_bytes`: what the host's reports, findings,
-- events and tombstones take (`row_cost`), kept by the transactions that insert and delete.
CREATE TABLE IF NOT EXISTS hosts (
    host_id          TEXT PRIMARY KEY,
    latest_batch_id  TEXT NOT NULL,
    latest_sequence  INTEGER NOT NULL,
    last_seen        TEXT NOT NULL,
    cert_serial      TEXT,
    cert_sha256      TEXT,
    cert_not_after   TEXT,
    stored_bytes     INTEGER NOT NULL DEFAULT 0
);
-- Tombstones of reports deleted by retention, so that an agent's retry of one is answered
-- `duplicate` rather than stored again (see prune.rs).
CREATE TABLE IF NOT EXISTS pruned_batches (
    batch_id   TEXT PRIMARY KEY,
    host_id    TEXT NOT NULL,
    pruned_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS pruned_batches_by_host ON pruned_batches (host_id, pruned_at);
CREATE INDEX IF NOT EXISTS pruned_batches_by_time ON pruned_batches (pruned_at);
-- The fleet's package search (inventory.rs): each host's packages, from its newest report that
-- carried an inventory. A fleet runs few distinct packages, and many hosts run the same list
-- (an image's instances): each distinct package is one `packages` row, each distinct list one
-- `package_sets` row (found by its digest) with its members in `set_packages`, and a host's
-- inventory names its set.
CREATE TABLE IF NOT EXISTS inventories (
    host_id      TEXT PRIMARY KEY,
    set_id       INTEGER NOT NULL,
    batch_id     TEXT NOT NULL,        -- the report it comes from
    sequence     INTEGER NOT NULL,
    collected_at TEXT NOT NULL,
    stored_bytes INTEGER NOT NULL      -- what it costs its host (its set's cost and its own row)
);
CREATE INDEX IF NOT EXISTS inventories_by_set ON inventories (set_id);
CREATE TABLE IF NOT EXISTS package_sets (
    set_id    INTEGER PRIMARY KEY,
    digest    BLOB UNIQUE,             -- SHA-256 of the list as sent; NULL once being taken apart
    packages  INTEGER NOT NULL,        -- rows in set_packages
    left_out  INTEGER NOT NULL,        -- packages over MAX_INDEXED_PACKAGES, not indexed
    cost      INTEGER NOT NULL,        -- what a host listing it is charged (inventory.rs)
    hosts     INTEGER NOT NULL         -- inventories naming it
);
CREATE TABLE IF NOT EXISTS packages (
    package_id INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    source     TEXT NOT NULL,
    version    TEXT NOT NULL,
    arch       TEXT NOT NULL,          -- '' when none
    location   TEXT NOT NULL,          -- '' when none
    UNIQUE (name, source, version, arch, location)
);
CREATE TABLE IF NOT EXISTS set_packages (
    package_id INTEGER NOT NULL,
    set_id     INTEGER NOT NULL,
    PRIMARY KEY (package_id, set_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS set_packages_by_set ON set_packages (set_id, package_id);
-- The fleet's listener search (listeners.rs): each host's listening sockets, from its newest
-- report that carried a network scan, rewritten only when they change (`digest`).
CREATE TABLE IF NOT EXISTS listener_scans (
    host_id      TEXT PRIMARY KEY,
    digest       BLOB NOT NULL,        -- SHA-256 of the rows as indexed; empty while being deleted
    batch_id     TEXT NOT NULL,        -- the report it comes from
    sequence     INTEGER NOT NULL,
    collected_at TEXT NOT NULL,
    listeners    INTEGER NOT NULL,     -- rows in listeners
    left_out     INTEGER NOT NULL,     -- listeners over MAX_INDEXED_LISTENERS, not indexed
    rows_cost    INTEGER NOT NULL,     -- what its rows cost the host
    stored_bytes INTEGER NOT NULL      -- rows_cost and its own row's
);
CREATE TABLE IF NOT EXISTS listeners (
    host_id   TEXT NOT NULL,
    port      INTEGER NOT NULL,
    protocol  TEXT NOT NULL,           -- tcp, udp
    scope     TEXT NOT NULL,           -- loopback, interface, all-interfaces; '' unknown
    process   TEXT NOT NULL,           -- '' when the owner is unknown (and so below)
    address   TEXT NOT NULL,
    interface TEXT NOT NULL,
    public    TEXT NOT NULL,           -- public addresses it is reachable on, space-separated
    exe       TEXT NOT NULL,
    user      TEXT NOT NULL,
    unit      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS listeners_in_order ON listeners (port, protocol, scope, process, host_id, address);
CREATE INDEX IF NOT EXISTS listeners_by_host ON listeners (host_id);
";

/// What a row costs beyond its value and its keys: the integer and time fields, the record
/// header, the rowid and the b-tree cells of the row and of its index entries. Checked against
/// the file (4 KiB pages, after a checkpoint, free pages left out): one report of 100,000
/// one-letter events took 0.99 times the sum of `row_cost` over its rows with 36-character
/// batch ids and 1.05 times with 128-character ones; 20,000 events of 1 KB, 1.03 times; 2,000
/// reports of five 120-letter events, 1.10 times.
pub(super) const ROW_FIXED_BYTES: u64 = 64;

/// What one row of a host's data costs against its cap: its value as stored (compressed), its
/// keys twice (each row and one of its indexes hold the batch id and the host id), and the
/// fixed part. Counting the keys matters for the bound: an event of 10 bytes with a batch id of
/// 128 costs far more than 10 bytes, and one request can carry a million of them.
pub(super) fn row_cost(value_bytes: usize, batch_id: &str, host_id: &str) -> u64 {
    let keys = batch_id.len().saturating_add(host_id.len());
    u64::try_from(value_bytes.saturating_add(keys.saturating_mul(2)))
        .unwrap_or(u64::MAX)
        .saturating_add(ROW_FIXED_BYTES)
}

/// [`row_cost`] in SQL, over columns or expressions of the row.
pub(super) fn row_cost_sql(value_bytes: &str, batch_id: &str, host_id: &str) -> String {
    format!(
        "({value_bytes} + {ROW_FIXED_BYTES} + 2 * (length(CAST({batch_id} AS BLOB)) + length(CAST({host_id} AS BLOB))))"
    )
}

/// The stored length of a finding's or event's value (`column`): a blob's length is in its
/// header; a plain value's is its `json_bytes`, or, in rows written before compression, the
/// length of the text's bytes.
pub(super) fn stored_len_sql(column: &str) -> String {
    format!(
        "(CASE WHEN compressed THEN length({column}) ELSE COALESCE(json_bytes, length(CAST({column} AS BLOB))) END)"
    )
}

/// Brings the database at `conn` to [`SCHEMA`], keeping what it holds: each step checks what
/// the file has and does nothing when it is already there.
pub(super) fn prepare(conn: &Connection) -> Result<(), rusqlite::Error> {
    migrate_events_key(conn)?;
    conn.execute_batch(SCHEMA)?;
    migrate_stored_sizes(conn)
}

/// Whether freed pages can be handed back to the file system (`auto_vacuum = INCREMENTAL`,
/// which only a database created with it has).
pub(super) fn has_incremental_vacuum(conn: &Connection) -> Result<bool, rusqlite::Error> {
    Ok(conn.query_row("PRAGMA auto_vacuum", [], |r| r.get::<_, i64>(0))? == 2)
}

/// An integer pragma of the database (`page_count`, `freelist_count`, `page_size`...).
pub(super) fn pragma_i64(conn: &Connection, name: &str) -> Result<i64, rusqlite::Error> {
    conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
}

/// Hands `pages` free pages back to the file system (every free page with `None`), on a
/// database with incremental `auto_vacuum`. The pragma frees one page per row it returns: every
/// row must be stepped through.
pub(super) fn incremental_vacuum(conn: &Connection, pages: Option<i64>) -> Result<(), rusqlite::Error> {
    let sql = match pages {
        Some(pages) => format!("PRAGMA incremental_vacuum({pages})"),
        None => "PRAGMA incremental_vacuum".to_string(),
    };
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {}
    Ok(())
}

/// Whether an error is SQLite's "busy" or "locked": another connection holds the database.
pub(super) fn held_by_another(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
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
    // The events keep their plain text (`compressed` 0, `json_bytes` NULL, as
    // `migrate_stored_sizes` leaves older rows).
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE;
         ALTER TABLE events RENAME TO events_by_sequence;
         {SCHEMA}
         INSERT OR IGNORE INTO events (host_id, sequence, position, batch_id, event)
             SELECT host_id, sequence, position, batch_id, event FROM events_by_sequence;
         DROP TABLE events_by_sequence;
         COMMIT;"
    ))
}

fn has_column(conn: &Connection, table: &str, column: &str) -> Result<bool, rusqlite::Error> {
    conn.query_row("SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2", [table, column], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n > 0)
}

/// A database made before findings and events were compressed and hosts' bytes were counted
/// gets the columns, in one transaction. Its rows are not rewritten: they keep their plain
/// text, which the readers take as it is (`compressed` 0, `json_bytes` NULL), so the update
/// costs one read of the file, not a copy of it through the WAL; retention deletes them in
/// time. Each host's `stored_bytes` is counted once from what it holds.
fn migrate_stored_sizes(conn: &Connection) -> Result<(), rusqlite::Error> {
    if has_column(conn, "hosts", "stored_bytes")? {
        return Ok(());
    }
    let mut sql = String::from("BEGIN IMMEDIATE;\n");
    for table in ["findings", "events"] {
        if !has_column(conn, table, "compressed")? {
            sql.push_str(&format!(
                "ALTER TABLE {table} ADD COLUMN compressed INTEGER NOT NULL DEFAULT 0;
                 ALTER TABLE {table} ADD COLUMN json_bytes INTEGER;\n"
            ));
        }
    }
    sql.push_str("ALTER TABLE hosts ADD COLUMN stored_bytes INTEGER NOT NULL DEFAULT 0;\n");
    sql.push_str(&format!(
        "UPDATE hosts SET stored_bytes = {};\nCOMMIT;",
        host_bytes_recount_sql("hosts.host_id")
    ));
    conn.execute_batch(&sql)
}

/// What the host `host_id` (an SQL expression) takes, counted from its rows.
pub(super) fn host_bytes_recount_sql(host_id: &str) -> String {
    let report = row_cost_sql("length(report_zstd)", "batch_id", "host_id");
    let finding = row_cost_sql(&stored_len_sql("f.finding"), "f.batch_id", "r.host_id");
    let event = row_cost_sql(&stored_len_sql("event"), "batch_id", "host_id");
    let tombstone = row_cost_sql("0", "batch_id", "host_id");
    // An inventory's and a listener scan's cost are computed when written (inventory.rs,
    // listeners.rs).
    format!(
        "(COALESCE((SELECT SUM({report}) FROM reports WHERE host_id = {host_id}), 0)
          + COALESCE((SELECT SUM({finding}) FROM findings f JOIN reports r ON r.batch_id = f.batch_id
                      WHERE r.host_id = {host_id}), 0)
          + COALESCE((SELECT SUM({event}) FROM events WHERE host_id = {host_id}), 0)
          + COALESCE((SELECT SUM({tombstone}) FROM pruned_batches WHERE host_id = {host_id}), 0)
          + COALESCE((SELECT stored_bytes FROM inventories WHERE host_id = {host_id}), 0)
          + COALESCE((SELECT stored_bytes FROM listener_scans WHERE host_id = {host_id}), 0))"
    )
}
