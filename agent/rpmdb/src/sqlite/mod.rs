//! `rpmdb.sqlite`: the `Packages` table (`hnum INTEGER PRIMARY KEY, blob BLOB`) holds one
//! header blob per installed package.
//!
//! The file is untrusted: it is opened as described in [`open`] (never in place under a
//! non-live root, bounded in time, memory and disk), its schema must be rpm's ([`schema`]),
//! and it is read record by record so that damage costs only what it touches (issue 9,
//! item 6: one bad row or page used to drop the whole inventory):
//! 1. the `hnum`s are listed in order; when a damaged page stops the listing, the first
//!    readable `hnum` after it is found by seeking (each seek descends from the root, past the
//!    damaged page) and the listing resumes there, the gap reported;
//! 2. each blob is fetched by its `hnum`; a record that fails is reported with its `hnum`.

mod open;
mod schema;

use crate::error::RpmdbError;
use crate::header::HeaderError;
use crate::{Limits, RawBlob};
use guestward_core::HostRoot;
use rusqlite::{Connection, ErrorCode, Statement};
use std::path::Path;
use std::time::{Duration, Instant};

/// Damaged stretches skipped before giving up on the rest of the table.
const MAX_GAPS: usize = 100;

/// Unreadable records reported one by one; beyond this they are counted in one problem.
const MAX_RECORD_PROBLEMS: usize = 50;

/// Streams every header blob to `sink`, in `hnum` order. Blobs above `max_header_bytes` are
/// reported as [`HeaderError::TooLarge`] without being loaded. The error is for a database
/// that cannot be read at all; damage inside it comes back as problems.
pub(crate) fn read_blobs(
    root: &HostRoot,
    host_path: &Path,
    limits: &Limits,
    sink: &mut dyn FnMut(RawBlob),
) -> Result<Vec<RpmdbError>, RpmdbError> {
    let started = Instant::now();
    // A limit too large to add is no limit (an hour is as good as for ever here).
    let deadline =
        started.checked_add(limits.sqlite_time_limit).unwrap_or_else(|| started + Duration::from_secs(3600));
    let timed_out = |e: &rusqlite::Error| is_interrupt(e) && Instant::now() >= deadline;
    let fail = |source: RpmdbError| match source {
        RpmdbError::Sqlite { ref source, .. } if timed_out(source) => RpmdbError::TimeLimit {
            path: host_path.to_owned(),
            limit: limits.sqlite_time_limit,
            read: 0,
            known: None,
        },
        other => other,
    };
    let opened = open::open(root, host_path, limits, deadline).map_err(fail)?;
    schema::check(&opened.conn, host_path).map_err(fail)?;
    let mut reader = Reader::new(&opened.conn, host_path, limits, deadline).map_err(fail)?;
    let hnums = reader.list();
    reader.fetch_all(&hnums, sink);
    Ok(reader.finish())
}

fn is_interrupt(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::OperationInterrupted)
}

/// The outcome of one step that SQLite may cut off.
enum Step<T> {
    Done(T),
    Failed(rusqlite::Error),
    /// The deadline passed.
    OutOfTime,
}

struct Reader<'c> {
    path: &'c Path,
    limits: &'c Limits,
    deadline: Instant,
    list: Statement<'c>,
    fetch: Statement<'c>,
    problems: Vec<RpmdbError>,
    record_problems: usize,
    out_of_time: bool,
}

impl<'c> Reader<'c> {
    fn new(
        conn: &'c Connection,
        path: &'c Path,
        limits: &'c Limits,
        deadline: Instant,
    ) -> Result<Self, RpmdbError> {
        let sql_err = |source| RpmdbError::Sqlite { path: path.to_owned(), source };
        Ok(Self {
            path,
            limits,
            deadline,
            list: conn.prepare(schema::LIST).map_err(sql_err)?,
            fetch: conn.prepare(schema::FETCH).map_err(sql_err)?,
            problems: Vec::new(),
            record_problems: 0,
            out_of_time: false,
        })
    }

    fn step<T>(&self, r: Result<T, rusqlite::Error>) -> Step<T> {
        match r {
            Ok(v) => Step::Done(v),
            // After the deadline every statement fails (interrupted); whatever the error, we
            // stop here.
            Err(_) if Instant::now() >= self.deadline => Step::OutOfTime,
            Err(e) => Step::Failed(e),
        }
    }

    fn time_limit(&mut self, read: usize, known: Option<usize>) {
        if !self.out_of_time {
            self.out_of_time = true;
            self.problems.push(RpmdbError::TimeLimit {
                path: self.path.to_owned(),
                limit: self.limits.sqlite_time_limit,
                read,
                known,
            });
        }
    }

    /// Appends to `out` the `hnum`s from `from` on, in order, until the end of the table,
    /// `max` of them, or an error.
    fn scan(&mut self, from: i64, max: usize, out: &mut Vec<i64>) -> Result<(), rusqlite::Error> {
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let mut rows = self.list.query([from, limit])?;
        while let Some(row) = rows.next()? {
            out.push(row.get(0)?);
        }
        Ok(())
    }

    /// The first `hnum` at or after `from`, or `None` at the end of the table.
    fn first_from(&mut self, from: i64) -> Step<Option<i64>> {
        let mut found = Vec::with_capacity(1);
        let r = self.scan(from, 1, &mut found);
        self.step(r.map(|()| found.first().copied()))
    }

    /// Every `hnum`, in order, up to one more than `max_headers`; damaged stretches are
    /// skipped and reported.
    fn list(&mut self) -> Vec<i64> {
        let cap = self.limits.max_headers.saturating_add(1);
        let mut hnums: Vec<i64> = Vec::new();
        let mut from = i64::MIN;
        let mut gaps = 0usize;
        loop {
            let before = hnums.len();
            let r = self.scan(from, cap - hnums.len(), &mut hnums);
            let e = match self.step(r) {
                Step::Done(()) => break,
                Step::OutOfTime => {
                    self.time_limit(0, None);
                    break;
                }
                Step::Failed(e) => e,
            };
            // Restart after the last record read in this pass, or at `from` if none was.
            let gap_start = match hnums[before..].last() {
                Some(&h) => match h.checked_add(1) {
                    Some(s) => s,
                    None => break,
                },
                None => from,
            };
            gaps += 1;
            if gaps > MAX_GAPS {
                self.problems.push(RpmdbError::SqliteGap {
                    path: self.path.to_owned(),
                    after: hnums.last().copied(),
                    resumed_at: None,
                    reason: format!("{e}; more than {MAX_GAPS} damaged stretches, stopped listing"),
                });
                break;
            }
            let resumed_at = match self.resume_after(gap_start) {
                Step::Done(r) => r,
                Step::OutOfTime => {
                    self.time_limit(0, None);
                    break;
                }
                Step::Failed(_) => None,
            };
            self.problems.push(RpmdbError::SqliteGap {
                path: self.path.to_owned(),
                after: hnums.last().copied(),
                resumed_at,
                reason: e.to_string(),
            });
            match resumed_at {
                Some(next) => from = next,
                None => break,
            }
            if hnums.len() >= cap {
                break;
            }
        }
        if hnums.len() > self.limits.max_headers {
            hnums.truncate(self.limits.max_headers);
            self.problems.push(RpmdbError::TooManyHeaders {
                path: self.path.to_owned(),
                limit: self.limits.max_headers,
            });
        }
        hnums
    }

    /// The first readable `hnum` after damage that starts at `start`: seek forward in growing
    /// steps until a seek succeeds, then narrow down between the last failing and the first
    /// succeeding seek. At most about 128 seeks.
    fn resume_after(&mut self, start: i64) -> Step<Option<i64>> {
        let mut bad = start;
        match self.first_from(start) {
            Step::Failed(_) => {}
            done_or_out => return done_or_out,
        }
        let mut step: i64 = 1;
        let (mut good, mut found) = loop {
            if bad == i64::MAX {
                return Step::Done(None);
            }
            let probe = bad.checked_add(step).unwrap_or(i64::MAX);
            match self.first_from(probe) {
                Step::Done(r) => break (probe, r),
                Step::OutOfTime => return Step::OutOfTime,
                Step::Failed(_) => {
                    bad = probe;
                    step = step.saturating_mul(2);
                }
            }
        };
        while good.abs_diff(bad) > 1 {
            let mid = bad.midpoint(good);
            match self.first_from(mid) {
                Step::Done(r) => {
                    good = mid;
                    found = r;
                }
                Step::OutOfTime => return Step::OutOfTime,
                Step::Failed(_) => bad = mid,
            }
        }
        Step::Done(found)
    }

    fn record_problem(&mut self, hnum: i64, reason: String) {
        self.record_problems += 1;
        if self.record_problems <= MAX_RECORD_PROBLEMS {
            self.problems.push(RpmdbError::SqliteRecord { path: self.path.to_owned(), hnum, reason });
        }
    }

    /// Fetches each record's blob by `hnum`.
    fn fetch_all(&mut self, hnums: &[i64], sink: &mut dyn FnMut(RawBlob)) {
        if self.out_of_time {
            return;
        }
        let limit = i64::try_from(self.limits.max_header_bytes).unwrap_or(i64::MAX);
        for (i, &hnum) in hnums.iter().enumerate() {
            if Instant::now() >= self.deadline {
                self.time_limit(i, Some(hnums.len()));
                return;
            }
            let r = self.fetch.query_row([hnum, limit], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Option<i64>>(1)?,
                    row.get::<_, Option<Vec<u8>>>(2)?,
                ))
            });
            let (kind, len, bytes) = match self.step(r) {
                Step::Done(v) => v,
                Step::OutOfTime => {
                    self.time_limit(i, Some(hnums.len()));
                    return;
                }
                Step::Failed(e) => {
                    self.record_problem(hnum, e.to_string());
                    continue;
                }
            };
            // rpm's header numbers are unsigned 32-bit.
            let Ok(record) = u32::try_from(hnum) else {
                self.record_problem(hnum, "hnum is outside rpm's header numbers (0 to 4294967295)".into());
                continue;
            };
            if kind != "blob" {
                self.record_problem(
                    hnum,
                    format!("the blob column holds {}, not a header blob", truncate(&kind)),
                );
                continue;
            }
            let data = match bytes {
                Some(b) => Ok(b),
                None => Err(HeaderError::TooLarge {
                    len: len.and_then(|l| u64::try_from(l).ok()).unwrap_or(0),
                    limit: self.limits.max_header_bytes,
                }),
            };
            sink(RawBlob { record, offset: None, data });
        }
    }

    fn finish(mut self) -> Vec<RpmdbError> {
        if self.record_problems > MAX_RECORD_PROBLEMS {
            let more = self.record_problems - MAX_RECORD_PROBLEMS;
            self.problems.push(RpmdbError::SqliteRecords { path: self.path.to_owned(), count: more });
        }
        self.problems
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(20).collect()
}
