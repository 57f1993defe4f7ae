//! Retention: deleting what `[retention]` no longer keeps, on the writer thread's connection
//! (the one writer: pruning never competes with ingest for the write lock, it takes turns).
//!
//! Two triggers. After a commit group, each host that stored reports is checked against its cap
//! (`hosts.stored_bytes`, kept exact by the transactions that insert and delete, so checking
//! is one row read). On a timer, a pass goes over the hosts: one silent for longer than
//! `forget_idle_hosts_after_days` is forgotten whole (`forget`), the others lose the reports
//! received before the age limit. Either
//! way the work is done in steps of at most [`STEP_ROWS`] rows and [`STEP_BYTES`] deleted, one
//! transaction each,
//! taken between commit groups: a request waits for at most one step, never for a whole pass
//! (a host over its cap by 60 MB of tiny events is a million rows).
//!
//! What the age limit and the cap delete is a report with its findings and events, oldest
//! received first; never a host's latest report (`hosts.latest_batch_id`) nor the host's row,
//! so every host still reporting keeps its summary and detail (only forgetting a silent host
//! deletes those). Pruning from the oldest also keeps
//! `missing_sequences` honest: the span of a host's stored sequences shrinks from below with
//! the reports, so what was pruned is not counted as missing.
//!
//! Each deleted report leaves a tombstone (`pruned_batches`: batch id, host, when). Agents
//! retry a batch until it is acknowledged (an acknowledgement lost on the way is retried), and
//! a retry of a batch already pruned must be answered `duplicate`: stored again, it would be
//! counted twice and would widen the host's span again. Tombstones are small (two ids and a
//! time) and bounded twice: they are dropped once they are `max_age_days` old (a retry comes
//! within minutes or hours; a batch held longer than the age limit would be pruned again at
//! once anyway) or when their host is forgotten (`forget`, which says why a retry after that
//! is stored), and they count against their host's cap like its reports, so a host at its
//! cap sending tiny reports by the thousand cannot grow the tombstones instead.

use super::schema::{self, row_cost, stored_len_sql};
use super::{to_i64, ts_text};
use crate::loglimit::LogLimit;
use crate::store::Retention;
use guestward_core::Timestamp;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

mod forget;

use forget::{Forgetting, Outcome};

/// Most rows one step deletes, in one transaction.
const STEP_ROWS: usize = 2048;
/// Most stored bytes one step deletes (each freed overflow page is read to find the next):
/// together with [`STEP_ROWS`], what keeps a step to milliseconds of the write lock. A single
/// report row larger than this is deleted alone in its own step (a row cannot be split).
const STEP_BYTES: u64 = 16 << 20;
/// How often the store looks for reports past the age limit.
const AGE_PASS_EVERY: Duration = Duration::from_secs(300);
/// After a failed step (a full disk, an I/O error) pruning rests this long before it tries
/// again, rather than spinning on the writer thread.
const PAUSE_AFTER_ERROR: Duration = Duration::from_secs(30);
/// Free pages (4 KiB each) always left for new rows to reuse, and the share of the file: up to
/// a quarter of it stays free. A host held at its cap frees about what its next reports take;
/// handing those pages back only for the file to grow again wrote each page twice, and slowed
/// other hosts' requests under such a flood. What pruning frees beyond that (an age pass, a
/// lowered cap) goes back to the file system.
const KEEP_FREE_PAGES: i64 = 1024;
const KEEP_FREE_SHARE: i64 = 4;
/// Most pages handed back to the file system in one step (`PRAGMA incremental_vacuum` moves
/// pages from the end of the file into free ones: bounded like a deletion step).
const VACUUM_PAGES_PER_STEP: i64 = 1024;
/// Tombstones deleted at once when only they are left over a host's cap.
const TOMBSTONES_AT_ONCE: usize = 64;

/// What one step may still delete.
#[derive(Debug)]
struct Budget {
    rows: usize,
    bytes: u64,
}

impl Budget {
    fn spent(&self) -> bool {
        self.rows == 0 || self.bytes == 0
    }

    fn take(&mut self, rows: usize, bytes: u64) {
        self.rows = self.rows.saturating_sub(rows);
        self.bytes = self.bytes.saturating_sub(bytes);
    }
}

/// What pruning removed.
#[derive(Debug, Default, Clone, Copy)]
struct Removed {
    /// Reports (with their findings and events).
    reports: u64,
    /// Tombstones.
    tombstones: u64,
    /// What it all counted against the hosts' caps.
    bytes: u64,
}

impl Removed {
    fn add(&mut self, other: Removed) {
        self.reports += other.reports;
        self.tombstones += other.tombstones;
        self.bytes = self.bytes.saturating_add(other.bytes);
    }
}

/// Why a report is being deleted.
#[derive(Debug, Clone, Copy)]
enum Why {
    Cap,
    Age,
    /// Its host is being forgotten: no tombstone is left (see `forget`).
    Forget,
}

/// A report being deleted, when a step ended before all of its rows were.
#[derive(Debug)]
struct Victim {
    batch_id: String,
    host_id: String,
    why: Why,
}

/// A host being brought under its cap.
#[derive(Debug)]
struct Capping {
    host_id: String,
    removed: Removed,
}

/// A pass over the hosts, in host order: each one silent since before `forget_before` is
/// forgotten, the others lose their reports received before `cutoff` (through the index every
/// host's cap also uses: one index fewer to write with each report than a pass in time order).
/// Either cutoff may be off; the pass runs when one is on.
#[derive(Debug)]
struct AgePass {
    /// The age limit as stored time text.
    cutoff: Option<String>,
    /// The silence limit as stored time text (`hosts.last_seen` before it: forgotten).
    forget_before: Option<String>,
    /// The host being looked at, or the last one done (the pass goes on after it in host order).
    host: String,
    host_done: bool,
    per_host: BTreeMap<String, Removed>,
    tombstones: Removed,
    /// Hosts forgotten, and what they took.
    forgotten: u64,
    forgotten_removed: Removed,
}

/// A finished piece of work, logged once its transaction committed.
enum Done {
    Cap { host_id: String, removed: Removed, stored_bytes: u64, cap: u64 },
    Age(AgePass),
    Forgot(Forgetting, Outcome),
}

/// The retention state of the writer thread.
#[derive(Debug)]
pub(super) struct Pruner {
    retention: Retention,
    incremental_vacuum: bool,
    /// Hosts that stored reports since they were last held against the cap.
    to_check: BTreeSet<String>,
    capping: Option<Capping>,
    current: Option<Victim>,
    /// A silent host being deleted, over as many steps as it takes.
    forgetting: Option<Forgetting>,
    age: Option<AgePass>,
    next_age_pass: Instant,
    paused_until: Option<Instant>,
    vacuum_due: bool,
}

impl Pruner {
    /// The first age pass is due at once (a collector started after a long stop has catching
    /// up to do).
    pub(super) fn new(retention: Retention, incremental_vacuum: bool) -> Self {
        Self {
            retention,
            incremental_vacuum,
            to_check: BTreeSet::new(),
            capping: None,
            current: None,
            forgetting: None,
            age: None,
            next_age_pass: Instant::now(),
            paused_until: None,
            vacuum_due: false,
        }
    }

    /// Every host already over the cap is held against it: at start, for a cap lowered since
    /// the last run or hosts that stopped reporting while over it (one read of the hosts).
    pub(super) fn check_every_host(&mut self, conn: &Connection) -> Result<(), rusqlite::Error> {
        let Some(cap) = self.retention.cap() else { return Ok(()) };
        let mut stmt = conn.prepare("SELECT host_id FROM hosts WHERE stored_bytes > ?1")?;
        for host_id in stmt.query_map([to_i64(cap)], |r| r.get::<_, String>(0))? {
            self.to_check.insert(host_id?);
        }
        Ok(())
    }

    /// `host_id` stored reports and now takes `stored_bytes`: over the cap, it is pruned.
    pub(super) fn stored(&mut self, host_id: &str, stored_bytes: u64) {
        if self.retention.cap().is_some_and(|cap| stored_bytes > cap) && !self.to_check.contains(host_id) {
            self.to_check.insert(host_id.to_owned());
        }
    }

    fn paused(&self) -> bool {
        self.paused_until.is_some_and(|until| Instant::now() < until)
    }

    /// Whether the timer's pass has anything to look for.
    fn has_age_pass(&self) -> bool {
        self.retention.max_age().is_some() || self.retention.forget_after().is_some()
    }

    fn age_pass_due(&self) -> bool {
        self.has_age_pass() && self.age.is_none() && Instant::now() >= self.next_age_pass
    }

    /// Whether a step has something to do now.
    pub(super) fn has_work(&self) -> bool {
        !self.paused()
            && (self.current.is_some()
                || self.forgetting.is_some()
                || self.capping.is_some()
                || self.age.is_some()
                || !self.to_check.is_empty()
                || self.vacuum_due
                || self.age_pass_due())
    }

    /// How long the writer may wait for requests before a step is due.
    pub(super) fn idle_wait(&self) -> Duration {
        let now = Instant::now();
        let mut wait = Duration::from_secs(3600);
        if let Some(until) = self.paused_until {
            wait = wait.min(until.saturating_duration_since(now));
        }
        if self.has_age_pass() {
            wait = wait.min(self.next_age_pass.saturating_duration_since(now));
        }
        wait
    }

    /// One bounded piece of work: a deletion step (one transaction), or when none is left, a
    /// step of handing free pages back. Errors are logged and pause pruning; ingest goes on.
    pub(super) fn step(&mut self, conn: &mut Connection, now: Timestamp) {
        if self.paused() {
            return;
        }
        self.paused_until = None;
        if self.age_pass_due() {
            self.next_age_pass = Instant::now() + AGE_PASS_EVERY;
            let before = |limit: Option<jiff::SignedDuration>| {
                limit.and_then(|limit| now.0.checked_sub(limit).ok()).map(|t| ts_text(&Timestamp(t)))
            };
            let (cutoff, forget_before) =
                (before(self.retention.max_age()), before(self.retention.forget_after()));
            self.age = (cutoff.is_some() || forget_before.is_some()).then(|| AgePass {
                cutoff,
                forget_before,
                host: String::new(),
                host_done: true,
                per_host: BTreeMap::new(),
                tombstones: Removed::default(),
                forgotten: 0,
                forgotten_removed: Removed::default(),
            });
        }
        let result = match self.delete_step(conn, &ts_text(&now)) {
            Ok(Some(deleted)) => {
                self.vacuum_due |= deleted && self.incremental_vacuum;
                Ok(())
            }
            Ok(None) if self.vacuum_due => vacuum_step(conn).map(|more| self.vacuum_due = more),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            static SITE: LogLimit = LogLimit::new();
            if let Some(suppressed) = SITE.allow() {
                warn!(error = %e, suppressed, "retention: pruning the database failed; it is tried again in 30 s");
            }
            self.paused_until = Some(Instant::now() + PAUSE_AFTER_ERROR);
            // What was in progress is found again from the database: the host is held against
            // its cap anew, and the age pass starts over after the pause.
            if let Some(capping) = self.capping.take() {
                self.to_check.insert(capping.host_id);
            }
            self.current = None;
            // A host half forgotten is found again by the next pass (its counts are exact
            // after every step, so what is left is deleted as if nothing had been).
            self.forgetting = None;
            self.age = None;
            self.next_age_pass = Instant::now() + PAUSE_AFTER_ERROR;
            self.vacuum_due = false;
        }
    }

    /// Deletes up to [`STEP_ROWS`] rows in one transaction. `None` when there was nothing to
    /// do (no transaction was opened), else whether anything was deleted.
    fn delete_step(&mut self, conn: &mut Connection, now: &str) -> Result<Option<bool>, rusqlite::Error> {
        if self.current.is_none() && self.capping.is_none() {
            self.capping = next_over_cap(conn, &mut self.to_check, self.retention)?;
        }
        if self.current.is_none() && self.forgetting.is_none() && self.capping.is_none() && self.age.is_none()
        {
            return Ok(None);
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut budget = Budget { rows: STEP_ROWS, bytes: STEP_BYTES };
        let mut deleted = false;
        let mut done = Vec::new();
        while !budget.spent() {
            if let Some(victim) = self.current.take() {
                let rows_before = budget.rows;
                let (removed, finished) = delete_report_rows(&tx, &victim, &mut budget, now)?;
                if budget.rows == rows_before {
                    // At least one turn of the budget, so the loop ends whatever the database
                    // says.
                    budget.take(1, 0);
                } else {
                    deleted = true;
                }
                match victim.why {
                    Why::Cap => {
                        if let Some(capping) = self.capping.as_mut() {
                            capping.removed.add(removed);
                        }
                    }
                    Why::Age => {
                        if let Some(age) = self.age.as_mut() {
                            age.per_host.entry(victim.host_id.clone()).or_default().add(removed);
                        }
                    }
                    // Deleted by `Forgetting::step`, which keeps its own victim.
                    Why::Forget => {}
                }
                if !finished {
                    self.current = Some(victim);
                }
                continue;
            }
            if let Some(mut forgetting) = self.forgetting.take() {
                let rows_before = budget.rows;
                let outcome = forgetting.step(&tx, &mut budget, now)?;
                deleted |= budget.rows < rows_before;
                match outcome {
                    // The budget is spent: the next step goes on.
                    None => self.forgetting = Some(forgetting),
                    Some(outcome) => {
                        if let (Outcome::Forgotten, Some(age)) = (outcome, self.age.as_mut()) {
                            age.forgotten += 1;
                            age.forgotten_removed.add(forgetting.removed);
                        }
                        done.push(Done::Forgot(forgetting, outcome));
                    }
                }
                continue;
            }
            if let Some(mut capping) = self.capping.take() {
                let cap = self.retention.cap().unwrap_or(u64::MAX);
                let stored_bytes = host_bytes(&tx, &capping.host_id)?;
                if stored_bytes > cap {
                    if let Some(batch_id) = oldest_report(&tx, &capping.host_id)? {
                        self.current =
                            Some(Victim { batch_id, host_id: capping.host_id.clone(), why: Why::Cap });
                        self.capping = Some(capping);
                        continue;
                    }
                    // Only the latest report and tombstones are left.
                    let removed =
                        drop_oldest_tombstones(&tx, &capping.host_id, budget.rows.min(TOMBSTONES_AT_ONCE))?;
                    if removed.tombstones > 0 {
                        budget.take(usize::try_from(removed.tombstones).unwrap_or(budget.rows), 0);
                        deleted = true;
                        capping.removed.add(removed);
                        self.capping = Some(capping);
                        continue;
                    }
                }
                // Under the cap, or the latest report alone is over it (and stays).
                let stored_bytes = host_bytes(&tx, &capping.host_id)?;
                done.push(Done::Cap {
                    host_id: capping.host_id,
                    removed: capping.removed,
                    stored_bytes,
                    cap,
                });
                self.capping = next_over_cap(&tx, &mut self.to_check, self.retention)?;
                continue;
            }
            if let Some(age) = self.age.as_mut() {
                if age.host_done {
                    if let Some((host_id, last_seen)) = next_host(&tx, &age.host)? {
                        age.host.clone_from(&host_id);
                        // A host looked at is a turn of the budget: a step over many hosts
                        // with nothing to delete stays bounded too.
                        budget.take(1, 0);
                        match &age.forget_before {
                            // Silent for too long: deleted whole, its age pruning with it.
                            Some(before) if last_seen < *before => {
                                self.forgetting = Some(Forgetting::new(host_id, last_seen, before.clone()));
                            }
                            _ => age.host_done = false,
                        }
                        continue;
                    }
                } else {
                    let victim = match &age.cutoff {
                        Some(cutoff) => oldest_report_before(&tx, &age.host, cutoff)?,
                        None => None,
                    };
                    if let Some(batch_id) = victim {
                        self.current = Some(Victim { batch_id, host_id: age.host.clone(), why: Why::Age });
                    } else {
                        age.host_done = true;
                    }
                    continue;
                }
                // Every host is done: the tombstones past the age limit go too.
                let Some(cutoff) = age.cutoff.as_deref() else {
                    if let Some(age) = self.age.take() {
                        done.push(Done::Age(age));
                    }
                    continue;
                };
                let expired = expire_tombstones(&tx, cutoff, budget.rows)?;
                let rows = usize::try_from(expired.tombstones).unwrap_or(budget.rows);
                budget.take(rows, 0);
                deleted |= rows > 0;
                age.tombstones.add(expired);
                if !budget.spent() {
                    // Fewer than asked for: none is left; the pass is over.
                    if let Some(age) = self.age.take() {
                        done.push(Done::Age(age));
                    }
                }
                continue;
            }
            break;
        }
        tx.commit()?;
        for d in done {
            log_done(d, self.retention);
        }
        Ok(Some(deleted))
    }

    /// Runs steps until nothing is left to do (tests: the writer thread interleaves them with
    /// commit groups instead).
    #[cfg(test)]
    pub(super) fn run_until_idle(&mut self, conn: &mut Connection, now: Timestamp) {
        for _ in 0..100_000 {
            if !self.has_work() {
                return;
            }
            self.step(conn, now);
            assert!(self.paused_until.is_none(), "a pruning step failed (see the log)");
        }
        panic!("pruning did not finish in 100000 steps");
    }
}

fn log_done(done: Done, retention: Retention) {
    match done {
        Done::Cap { host_id, removed, stored_bytes, cap } => {
            // A compromised host keeps its collector at this line: one per request it sends.
            static SITE: LogLimit = LogLimit::new();
            if let Some(suppressed) = SITE.allow() {
                if stored_bytes > cap {
                    info!(host = %host_id, reports_removed = removed.reports, tombstones_removed = removed.tombstones,
                          bytes_removed = removed.bytes, stored_bytes, max_bytes_per_host = cap, suppressed,
                          "retention: host over its byte cap lost its oldest reports; its latest report alone is over the cap and is kept");
                } else {
                    info!(host = %host_id, reports_removed = removed.reports, tombstones_removed = removed.tombstones,
                          bytes_removed = removed.bytes, stored_bytes, max_bytes_per_host = cap, suppressed,
                          "retention: host over its byte cap lost its oldest reports");
                }
            }
        }
        Done::Age(pass) => {
            let mut total = Removed::default();
            for (host, removed) in &pass.per_host {
                debug!(host = %host, reports_removed = removed.reports, bytes_removed = removed.bytes,
                       "retention: reports past the age limit deleted");
                total.add(*removed);
            }
            // One line per pass: in a large fleet every pass touches most hosts.
            if total.reports > 0 || pass.tombstones.tombstones > 0 {
                info!(
                    hosts = pass.per_host.len(),
                    reports_removed = total.reports,
                    bytes_removed = total.bytes,
                    tombstones_expired = pass.tombstones.tombstones,
                    max_age_days = retention.max_age_days,
                    "retention: reports past the age limit deleted"
                );
            }
            if pass.forgotten > 0 {
                info!(
                    hosts_forgotten = pass.forgotten,
                    reports_removed = pass.forgotten_removed.reports,
                    bytes_freed = pass.forgotten_removed.bytes,
                    forget_idle_hosts_after_days = retention.forget_idle_hosts_after_days,
                    "retention: hosts silent past the limit forgotten"
                );
            }
        }
        Done::Forgot(forgetting, outcome) => forget::log(&forgetting, outcome, retention),
    }
}

/// The first host of `to_check` over its cap, taken out of it with those under it.
fn next_over_cap(
    conn: &Connection,
    to_check: &mut BTreeSet<String>,
    retention: Retention,
) -> Result<Option<Capping>, rusqlite::Error> {
    let Some(cap) = retention.cap() else {
        to_check.clear();
        return Ok(None);
    };
    while let Some(host_id) = to_check.pop_first() {
        if host_bytes(conn, &host_id)? > cap {
            return Ok(Some(Capping { host_id, removed: Removed::default() }));
        }
    }
    Ok(None)
}

fn host_bytes(conn: &Connection, host_id: &str) -> Result<u64, rusqlite::Error> {
    let bytes: Option<i64> = conn
        .prepare_cached("SELECT stored_bytes FROM hosts WHERE host_id = ?1")?
        .query_row([host_id], |r| r.get(0))
        .optional()?;
    Ok(bytes.map_or(0, |b| u64::try_from(b).unwrap_or(0)))
}

/// The host's oldest received report that is not its latest.
fn oldest_report(conn: &Connection, host_id: &str) -> Result<Option<String>, rusqlite::Error> {
    conn.prepare_cached(
        "SELECT batch_id FROM reports
         WHERE host_id = ?1 AND batch_id <> (SELECT latest_batch_id FROM hosts WHERE host_id = ?1)
         ORDER BY received_at, rowid LIMIT 1",
    )?
    .query_row([host_id], |r| r.get(0))
    .optional()
}

/// The host's oldest report received before `cutoff` (stored time text) that is not its latest.
fn oldest_report_before(
    conn: &Connection,
    host_id: &str,
    cutoff: &str,
) -> Result<Option<String>, rusqlite::Error> {
    conn.prepare_cached(
        "SELECT batch_id FROM reports
         WHERE host_id = ?1 AND received_at < ?2
           AND batch_id <> (SELECT latest_batch_id FROM hosts WHERE host_id = ?1)
         ORDER BY received_at, rowid LIMIT 1",
    )?
    .query_row([host_id, cutoff], |r| r.get(0))
    .optional()
}

/// The first host after `after` in host order, with its `last_seen`.
fn next_host(conn: &Connection, after: &str) -> Result<Option<(String, String)>, rusqlite::Error> {
    conn.prepare_cached("SELECT host_id, last_seen FROM hosts WHERE host_id > ?1 ORDER BY host_id LIMIT 1")?
        .query_row([after], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

/// Deletes what `budget` allows of `victim`: its events, then its findings, then (once they
/// are all gone) the report itself, leaving its tombstone. Its host's `stored_bytes` loses what
/// they cost. Returns what was deleted and whether the report is gone.
fn delete_report_rows(
    tx: &Connection,
    victim: &Victim,
    budget: &mut Budget,
    now: &str,
) -> Result<(Removed, bool), rusqlite::Error> {
    let cost = |len: i64| row_cost(usize::try_from(len).unwrap_or(0), &victim.batch_id, &victim.host_id);
    let mut removed = Removed::default();
    let mut finished = true;
    'tables: for (table, column) in [("events", "event"), ("findings", "finding")] {
        let mut select = tx.prepare_cached(&format!(
            "SELECT rowid, {} FROM {table} WHERE batch_id = ?1 LIMIT ?2",
            stored_len_sql(column)
        ))?;
        let mut delete = tx.prepare_cached(&format!("DELETE FROM {table} WHERE rowid = ?1"))?;
        loop {
            if budget.spent() {
                finished = false;
                break 'tables;
            }
            let rows: Vec<(i64, i64)> = select
                .query_map(params![victim.batch_id, to_i64(budget.rows as u64)], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<Result<_, _>>()?;
            if rows.is_empty() {
                break;
            }
            for (rowid, len) in rows {
                if budget.spent() {
                    finished = false;
                    break 'tables;
                }
                delete.execute([rowid])?;
                budget.take(1, u64::try_from(len).unwrap_or(0));
                removed.bytes = removed.bytes.saturating_add(cost(len));
            }
        }
    }
    let mut tombstone = 0u64;
    // No finding or event is left. The report row goes while the step has room left; it may
    // alone be over the bytes (a row cannot be split), and otherwise goes first in the next.
    if finished && !budget.spent() {
        // The latest report is never a victim; checked again here, where it counts.
        let report: Option<i64> = tx
            .prepare_cached(
                "DELETE FROM reports WHERE batch_id = ?1
                   AND batch_id NOT IN (SELECT latest_batch_id FROM hosts WHERE host_id = ?2)
                 RETURNING length(report_zstd)",
            )?
            .query_row(params![victim.batch_id, victim.host_id], |r| r.get(0))
            .optional()?;
        if let Some(len) = report {
            budget.take(1, u64::try_from(len).unwrap_or(0));
            removed.reports = 1;
            removed.bytes = removed.bytes.saturating_add(cost(len));
            // A host being forgotten loses its tombstones next: none is made for it.
            if !matches!(victim.why, Why::Forget) {
                let added = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO pruned_batches (batch_id, host_id, pruned_at) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![victim.batch_id, victim.host_id, now])?;
                if added == 1 {
                    tombstone = row_cost(0, &victim.batch_id, &victim.host_id);
                }
            }
        }
    } else {
        finished = false;
    }
    charge(tx, &victim.host_id, removed.bytes, tombstone)?;
    Ok((removed, finished))
}

/// `host_id`'s `stored_bytes` loses `removed` and gains `added`.
fn charge(tx: &Connection, host_id: &str, removed: u64, added: u64) -> Result<(), rusqlite::Error> {
    tx.prepare_cached("UPDATE hosts SET stored_bytes = MAX(stored_bytes - ?2 + ?3, 0) WHERE host_id = ?1")?
        .execute(params![host_id, to_i64(removed), to_i64(added)])?;
    Ok(())
}

/// Deletes up to `limit` of the host's oldest tombstones.
fn drop_oldest_tombstones(tx: &Connection, host_id: &str, limit: usize) -> Result<Removed, rusqlite::Error> {
    let mut removed = Removed::default();
    let mut stmt = tx.prepare_cached(
        "DELETE FROM pruned_batches WHERE rowid IN
             (SELECT rowid FROM pruned_batches WHERE host_id = ?1 ORDER BY pruned_at, rowid LIMIT ?2)
         RETURNING batch_id",
    )?;
    for batch_id in stmt.query_map(params![host_id, to_i64(limit as u64)], |r| r.get::<_, String>(0))? {
        removed.tombstones += 1;
        removed.bytes = removed.bytes.saturating_add(row_cost(0, &batch_id?, host_id));
    }
    charge(tx, host_id, removed.bytes, 0)?;
    Ok(removed)
}

/// Deletes up to `limit` tombstones made before `cutoff`.
fn expire_tombstones(tx: &Connection, cutoff: &str, limit: usize) -> Result<Removed, rusqlite::Error> {
    let mut per_host: BTreeMap<String, u64> = BTreeMap::new();
    let mut removed = Removed::default();
    let mut stmt = tx.prepare_cached(
        "DELETE FROM pruned_batches WHERE rowid IN
             (SELECT rowid FROM pruned_batches WHERE pruned_at < ?1 LIMIT ?2)
         RETURNING host_id, batch_id",
    )?;
    let rows = stmt.query_map(params![cutoff, to_i64(limit as u64)], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    for row in rows {
        let (host_id, batch_id) = row?;
        let cost = row_cost(0, &batch_id, &host_id);
        removed.tombstones += 1;
        removed.bytes = removed.bytes.saturating_add(cost);
        let entry = per_host.entry(host_id).or_default();
        *entry = entry.saturating_add(cost);
    }
    for (host_id, bytes) in per_host {
        charge(tx, &host_id, bytes, 0)?;
    }
    Ok(removed)
}

/// Hands up to [`VACUUM_PAGES_PER_STEP`] free pages back to the file system, keeping
/// [`KEEP_FREE_PAGES`] or a [`KEEP_FREE_SHARE`]th of the file for new rows. Whether more are
/// left to hand back (never when this step handed back nothing: the writer must not spin on a
/// freelist that does not shrink).
fn vacuum_step(conn: &Connection) -> Result<bool, rusqlite::Error> {
    let pragma = |name: &str| schema::pragma_i64(conn, name);
    let excess = |free: i64, pages: i64| free - KEEP_FREE_PAGES.max(pages / KEEP_FREE_SHARE);
    let before = pragma("freelist_count")?;
    let excess_before = excess(before, pragma("page_count")?);
    if excess_before <= 0 {
        return Ok(false);
    }
    schema::incremental_vacuum(conn, Some(excess_before.min(VACUUM_PAGES_PER_STEP)))?;
    let after = pragma("freelist_count")?;
    Ok(after < before && excess(after, pragma("page_count")?) > 0)
}
