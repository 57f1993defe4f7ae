//! Forgetting a host that stopped reporting (`[retention] forget_idle_hosts_after_days`).
//!
//! In an autoscaling fleet thousands of instances a month are terminated and never report
//! again. Age and the cap keep each host's row and latest report for good (a full inventory),
//! so without this the store and `GET /v1/hosts` would grow with every instance ever started.
//! A host whose `last_seen` (its latest delivery) is older than the limit is deleted whole.
//!
//! It is done in the pruner's bounded steps, like everything else it deletes, in this order:
//! 1. its reports other than the latest, oldest received first, each with its findings and
//!    events, leaving no tombstone (the host is going; see below for a retry);
//! 2. its tombstones;
//! 3. its latest report's findings and events;
//! 4. its package inventory and its listeners (the fleet searches' indexes);
//! 5. its latest report and its row, in one transaction: the row is what `last_seen` and
//!    `stored_bytes` live in, and the latest report is what the summary joins to, so neither is
//!    ever left without the other (a host re-created meanwhile would otherwise point at a
//!    deleted report, and its counts would start from a row that is not there).
//!
//! Between steps `stored_bytes` is exact (each step charges what it deleted), and every step
//! first reads `last_seen` again in its own transaction: a host that delivered since it was
//! picked (a stopped instance started again) is kept, having lost only its oldest data, the same
//! state the age limit leaves.
//!
//! A host that reports after being forgotten is a new host: its reports are stored and counted
//! from zero. That includes a batch it retries whose tombstone went with it (an acknowledgement
//! lost just before the instance stopped, retried when it starts again months later). Storing
//! that batch is the right answer, and counts stay exact:
//! - nothing of the host is stored any more, so the batch is counted once, not twice;
//! - an agent sends its spool in order and retries its oldest unacknowledged batch first, so the
//!   batch's sequence runs on into the reports that follow it and `missing_sequences` stays
//!   honest (the span starts at that batch);
//! - it is the host's state when it went silent, which the operator no longer has;
//! - answering `duplicate` would need the tombstones of every host ever forgotten, kept for
//!   good: the unbounded growth this removes.

use super::{Budget, Removed, Victim, Why, delete_report_rows, drop_oldest_tombstones, oldest_report};
use crate::store::Retention;
use rusqlite::{Connection, OptionalExtension, params};
use tracing::info;

/// A silent host being deleted, over as many steps as it takes.
#[derive(Debug)]
pub(super) struct Forgetting {
    host_id: String,
    /// Its `last_seen` when the pass picked it (stored time text).
    last_seen: String,
    /// `last_seen` before this: forgotten; at or after it, the host reported again.
    forget_before: String,
    /// The report whose rows a step is deleting.
    report: Option<Victim>,
    /// Whether the latest report's findings and events are gone (step 3 done).
    latest_emptied: bool,
    /// What was deleted so far: what the host took, once it is forgotten.
    pub(super) removed: Removed,
}

/// How forgetting a host ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The host and everything it had are deleted.
    Forgotten,
    /// It delivered since it was picked: kept, with what was not yet deleted.
    ReportedAgain,
}

impl Forgetting {
    pub(super) fn new(host_id: String, last_seen: String, forget_before: String) -> Self {
        Self {
            host_id,
            last_seen,
            forget_before,
            report: None,
            latest_emptied: false,
            removed: Removed::default(),
        }
    }

    /// Deletes what `budget` allows, inside the step's transaction `tx`. `None` when the budget
    /// is spent and more is left; else how it ended.
    pub(super) fn step(
        &mut self,
        tx: &Connection,
        budget: &mut Budget,
        now: &str,
    ) -> Result<Option<Outcome>, rusqlite::Error> {
        let last_seen: Option<String> = tx
            .prepare_cached("SELECT last_seen FROM hosts WHERE host_id = ?1")?
            .query_row([&self.host_id], |r| r.get(0))
            .optional()?;
        match last_seen {
            // Only this thread deletes hosts; a row removed by hand is gone all the same.
            None => return Ok(Some(Outcome::Forgotten)),
            // Stored time text compares in time order (`ts_text`).
            Some(seen) if seen >= self.forget_before => return Ok(Some(Outcome::ReportedAgain)),
            Some(_) => {}
        }
        loop {
            if budget.spent() {
                return Ok(None);
            }
            if let Some(victim) = self.report.take() {
                let rows_before = budget.rows;
                let (removed, finished) = delete_report_rows(tx, &victim, budget, now)?;
                if budget.rows == rows_before {
                    // At least one turn of the budget, so the step ends whatever the database
                    // says.
                    budget.take(1, 0);
                }
                self.removed.add(removed);
                if !finished {
                    self.report = Some(victim);
                }
                continue;
            }
            // 1. The oldest report that is not the latest.
            if let Some(batch_id) = oldest_report(tx, &self.host_id)? {
                self.report = Some(self.victim(batch_id));
                continue;
            }
            // 2. Tombstones: fewer than asked for means none is left.
            let dropped = drop_oldest_tombstones(tx, &self.host_id, budget.rows)?;
            if dropped.tombstones > 0 {
                budget.take(usize::try_from(dropped.tombstones).unwrap_or(budget.rows), 0);
                self.removed.add(dropped);
                continue;
            }
            // 3. The latest report's findings and events (`delete_report_rows` never deletes
            //    the latest report itself).
            if !self.latest_emptied {
                self.latest_emptied = true;
                let latest: Option<String> = tx
                    .prepare_cached("SELECT latest_batch_id FROM hosts WHERE host_id = ?1")?
                    .query_row([&self.host_id], |r| r.get(0))
                    .optional()?;
                if let Some(batch_id) = latest {
                    self.report = Some(self.victim(batch_id));
                }
                continue;
            }
            // 4. Its package inventory, the rows the budget allows at a time.
            let (rows, bytes) = super::super::inventory::drop_rows(tx, &self.host_id, budget.rows)?;
            self.removed.bytes = self.removed.bytes.saturating_add(bytes);
            if rows > 0 {
                budget.take(rows, 0);
                continue;
            }
            // 5. Its listeners, the same way.
            let (rows, bytes) = super::super::listeners::drop_rows(tx, &self.host_id, budget.rows)?;
            self.removed.bytes = self.removed.bytes.saturating_add(bytes);
            if rows > 0 {
                budget.take(rows, 0);
                continue;
            }
            // 6. The latest report and the row, together.
            let mut latest = tx.prepare_cached(
                "DELETE FROM reports WHERE host_id = ?1 RETURNING batch_id, length(report_zstd)",
            )?;
            let rows =
                latest.query_map([&self.host_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for row in rows {
                let (batch_id, len) = row?;
                let len = u64::try_from(len).unwrap_or(0);
                budget.take(1, len);
                self.removed.reports += 1;
                let cost =
                    super::row_cost(usize::try_from(len).unwrap_or(usize::MAX), &batch_id, &self.host_id);
                self.removed.bytes = self.removed.bytes.saturating_add(cost);
            }
            tx.prepare_cached("DELETE FROM hosts WHERE host_id = ?1")?.execute(params![self.host_id])?;
            return Ok(Some(Outcome::Forgotten));
        }
    }

    fn victim(&self, batch_id: String) -> Victim {
        Victim { batch_id, host_id: self.host_id.clone(), why: Why::Forget }
    }
}

/// One line per host: a host is forgotten once, and only after it was silent for days, so no
/// peer can make these lines come faster than hosts go silent.
pub(super) fn log(forgetting: &Forgetting, outcome: Outcome, retention: Retention) {
    let Forgetting { host_id, last_seen, removed, .. } = forgetting;
    match outcome {
        Outcome::Forgotten => info!(
            host = %host_id,
            last_seen = %last_seen,
            reports_removed = removed.reports,
            tombstones_removed = removed.tombstones,
            bytes_freed = removed.bytes,
            forget_idle_hosts_after_days = retention.forget_idle_hosts_after_days,
            "retention: host forgotten: it sent nothing for longer than the limit, and its row, reports, \
             findings, events and tombstones are deleted (should it report again, it is a new host)"
        ),
        Outcome::ReportedAgain => info!(
            host = %host_id,
            last_seen_before = %last_seen,
            reports_removed = removed.reports,
            bytes_freed = removed.bytes,
            "retention: host reported again while it was being forgotten, and is kept; its oldest \
             reports deleted by then stay deleted"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Pruner, STEP_ROWS};
    use crate::store::sqlite::tests::*;
    use crate::store::{NewReport, Retention, Store};
    use guestward_core::testing::letters;
    use guestward_core::{Event, Timestamp};
    use guestward_report::ingest::BatchStatus;
    use rusqlite::Connection;

    fn retention(max_age_days: u32, forget_idle_hosts_after_days: u32) -> Retention {
        Retention { max_age_days, max_bytes_per_host: 0, forget_idle_hosts_after_days }
    }

    /// Every row `host` has, in each table that holds one of its rows.
    fn rows_of(conn: &Connection, host: &str) -> [i64; 5] {
        [
            count(conn, "SELECT COUNT(*) FROM hosts WHERE host_id = ?1", host),
            count(conn, "SELECT COUNT(*) FROM reports WHERE host_id = ?1", host),
            count(
                conn,
                "SELECT COUNT(*) FROM findings f JOIN reports r ON r.batch_id = f.batch_id WHERE r.host_id = ?1",
                host,
            ),
            count(conn, "SELECT COUNT(*) FROM events WHERE host_id = ?1", host),
            count(conn, "SELECT COUNT(*) FROM pruned_batches WHERE host_id = ?1", host),
        ]
    }

    /// Host `gone`: reports g1-g5, g1 and g2 pruned to tombstones, last delivery 100 days ago.
    fn store_a_silent_host(conn: &mut Connection) {
        let old: Vec<NewReport> = (1..=2).map(|i| report_with("gone", &format!("g{i}"), i, "x")).collect();
        store_at(conn, "gone", &old, days_ago(200));
        let rest: Vec<NewReport> =
            (3..=5).map(|i| report_with("gone", &format!("g{i}"), i, &letters(3_000, i as u32))).collect();
        store_at(conn, "gone", &rest, days_ago(100));
        Pruner::new(retention(150, 0), true).run_until_idle(conn, Timestamp::now());
        assert_eq!(batches(conn, "gone"), ["g3", "g4", "g5"]);
        assert_eq!(rows_of(conn, "gone"), [1, 3, 3, 6, 2], "the host's rows before it is forgotten");
    }

    #[test]
    fn a_host_silent_past_the_limit_is_deleted_whole_and_the_others_keep_every_byte() {
        let Fixture { mut conn, store, _dir, .. } = fixture();
        store_a_silent_host(&mut conn);
        // Host `alive` reported 10 days ago and today; `quiet` last 89 days ago, inside the limit.
        store_at(&mut conn, "alive", &[report_with("alive", "a1", 1, &letters(2_000, 7))], days_ago(10));
        store_at(&mut conn, "alive", &[report_with("alive", "a2", 2, "x")], Timestamp::now());
        store_at(&mut conn, "quiet", &[report_with("quiet", "q1", 1, "x")], days_ago(89));
        let others = [("alive", stored_bytes(&conn, "alive")), ("quiet", stored_bytes(&conn, "quiet"))];

        Pruner::new(retention(90, 90), true).run_until_idle(&mut conn, Timestamp::now());

        assert_eq!(rows_of(&conn, "gone"), [0; 5], "row, reports, findings, events, tombstones");
        for batch in ["g1", "g2", "g3", "g4", "g5"] {
            assert_eq!(children(&conn, batch), (0, 0), "{batch}'s findings and events");
        }
        assert_eq!(store.host("gone").unwrap(), None);
        let listed: Vec<String> = store.hosts().unwrap().into_iter().map(|h| h.host_id).collect();
        assert_eq!(listed, ["alive", "quiet"]);
        for (host, bytes) in others {
            assert_eq!(stored_bytes(&conn, host), bytes, "{host} lost nothing");
        }
        assert_eq!(batches(&conn, "alive"), ["a1", "a2"]);
        assert_eq!(batches(&conn, "quiet"), ["q1"]);
        assert_accounting_exact(&conn, "after a host was forgotten");
    }

    #[test]
    fn with_0_no_host_is_forgotten_and_the_age_limit_keeps_each_latest_report() {
        for kept in [retention(90, 0), retention(0, 0), Retention::KEEP_EVERYTHING] {
            let Fixture { mut conn, store, _dir, .. } = fixture();
            store_a_silent_host(&mut conn);
            Pruner::new(kept, true).run_until_idle(&mut conn, Timestamp::now());
            let expected: &[&str] = if kept.max_age_days == 90 { &["g5"] } else { &["g3", "g4", "g5"] };
            assert_eq!(batches(&conn, "gone"), expected, "{kept:?}");
            assert_eq!(store.hosts().unwrap().len(), 1, "{kept:?}");
            assert_accounting_exact(&conn, "with forgetting off");
        }
    }

    /// However many rows a host has, each step deletes at most one budget of them, in its own
    /// transaction; the host's row goes in the last one, and its counts are exact in between.
    #[test]
    fn a_host_with_many_rows_is_forgotten_in_bounded_steps() {
        let Fixture { mut conn, store, _dir, .. } = fixture();
        store_a_silent_host(&mut conn);
        let mut many: Vec<NewReport> = Vec::new();
        for i in 6..=8u64 {
            let mut r = report_with("gone", &format!("g{i}"), i, "x");
            for n in 0..3_000 {
                r.events.push(Event {
                    kind: "tiny".into(),
                    time: Timestamp::now(),
                    data: serde_json::json!(n),
                });
            }
            many.push(r);
        }
        store_at(&mut conn, "gone", &many, days_ago(100));
        store_at(&mut conn, "alive", &[report_with("alive", "a1", 1, "x")], Timestamp::now());
        let total = |rows: [i64; 5]| rows[1..].iter().sum::<i64>();
        let before = total(rows_of(&conn, "gone"));
        assert!(before > 9_000, "{before}");

        let mut pruner = Pruner::new(retention(90, 90), true);
        let mut steps = 0;
        while rows_of(&conn, "gone")[0] == 1 {
            let rows_before = total(rows_of(&conn, "gone"));
            pruner.step(&mut conn, Timestamp::now());
            steps += 1;
            let deleted = rows_before - total(rows_of(&conn, "gone"));
            assert!(deleted <= STEP_ROWS as i64, "step {steps} deleted {deleted} rows");
            assert!(deleted > 0 || steps == 1, "step {steps} deleted nothing");
            // The listing never shows a host without its latest report, nor fails.
            let listed = store.hosts().unwrap();
            assert!(listed.iter().any(|h| h.host_id == "alive"));
            assert_accounting_exact(&conn, "between steps");
            assert!(steps < 100, "forgetting did not end");
        }
        assert_eq!(rows_of(&conn, "gone"), [0; 5]);
        // 9,000 events and more at 2,048 rows a step.
        assert!(steps >= 5, "{steps} steps");
        assert_eq!(batches(&conn, "alive"), ["a1"]);
    }

    /// A forgotten host that reports again is a new host, counted from zero; a batch it
    /// retries after its tombstone went with it is stored (once: nothing else of it is left).
    #[test]
    fn a_host_that_reports_after_being_forgotten_is_a_new_host_counted_from_zero() {
        let Fixture { mut conn, store, _dir, .. } = fixture();
        store_a_silent_host(&mut conn);
        Pruner::new(retention(90, 90), true).run_until_idle(&mut conn, Timestamp::now());
        assert_eq!(rows_of(&conn, "gone"), [0; 5]);

        let retried = report_with("gone", "g5", 5, &letters(3_000, 5));
        let statuses =
            store_at(&mut conn, "gone", &[retried, report_with("gone", "g6", 6, "x")], Timestamp::now());
        assert_eq!(statuses, [BatchStatus::Stored, BatchStatus::Stored]);
        let host = store.host("gone").unwrap().unwrap();
        assert_eq!(host.summary.reports_stored, 2);
        assert_eq!((host.summary.last_sequence, host.summary.missing_sequences), (Some(6), 0));
        assert_eq!(host.latest_report.unwrap().batch_id, report_with("gone", "g6", 6, "x").batch_id);
        assert_eq!(host.summary.stored_bytes, u64::try_from(recount(&conn, "gone")).unwrap());
        assert_eq!(rows_of(&conn, "gone"), [1, 2, 2, 4, 0]);
        assert_accounting_exact(&conn, "after the host came back");
        // And a retry of that retry is a duplicate again.
        let again = store_at(&mut conn, "gone", &[report_with("gone", "g5", 5, "x")], Timestamp::now());
        assert_eq!(again, [BatchStatus::Duplicate]);
    }

    /// A host that delivers while it is being forgotten (a stopped instance started again) is
    /// kept with its new report; what was deleted by then is gone, and the counts are exact.
    #[test]
    fn a_host_that_reports_while_being_forgotten_is_kept() {
        let Fixture { mut conn, store, _dir, .. } = fixture();
        store_a_silent_host(&mut conn);
        let mut many = report_with("gone", "g6", 6, "x");
        for n in 0..5_000 {
            many.events.push(Event {
                kind: "tiny".into(),
                time: Timestamp::now(),
                data: serde_json::json!(n),
            });
        }
        store_at(&mut conn, "gone", &[many, report_with("gone", "g7", 7, "x")], days_ago(100));
        let mut pruner = Pruner::new(retention(90, 90), true);
        pruner.step(&mut conn, Timestamp::now());
        assert_eq!(rows_of(&conn, "gone")[0], 1, "one step is not the whole host");
        // Forgetting, not the age limit, deleted its oldest reports: no tombstone was made for
        // them (its two older tombstones go after its reports).
        assert!(batches(&conn, "gone").len() < 5, "the first step deleted its oldest reports");
        assert_eq!(rows_of(&conn, "gone")[4], 2, "tombstones after the first step");

        store_at(&mut conn, "gone", &[report_with("gone", "g8", 8, "x")], Timestamp::now());
        pruner.run_until_idle(&mut conn, Timestamp::now());

        let left = batches(&conn, "gone");
        assert_eq!(left.last().map(String::as_str), Some("g8"), "{left:?}");
        let host = store.host("gone").unwrap().unwrap();
        assert_eq!(host.latest_report.unwrap().batch_id, report_with("gone", "g8", 8, "x").batch_id);
        assert_eq!(host.summary.missing_sequences, 0);
        assert_accounting_exact(&conn, "after forgetting was called off");
    }
}
