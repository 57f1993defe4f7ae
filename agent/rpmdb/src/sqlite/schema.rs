//! The schema an `rpmdb.sqlite` must have before any of our queries runs on it.
//!
//! Security: SQLite builds a table, view or virtual table from whatever `CREATE` text the
//! file's `sqlite_schema` holds, and the `type` and `name` columns next to that text are not
//! what SQLite goes by (a hostile file can say `table` and `Packages` beside a
//! `CREATE VIEW`). A `Packages` view over an endless recursive query ran for ever and filled
//! `/var/tmp` (issue 9, item 3). So before reading we require what rpm itself creates:
//! - every schema entry is, by its own SQL text, a `CREATE TABLE` or `CREATE [UNIQUE] INDEX`
//!   (rpm creates nothing else); views and virtual tables anywhere are refused, since one of
//!   them could be the real `Packages` under a decoy name. Triggers are tolerated: they only
//!   fire on writes, our connection cannot write and has triggers disabled;
//! - `Packages` has exactly rpm's columns, `hnum INTEGER PRIMARY KEY` and `blob BLOB`, none
//!   generated and none with a default (a default is computed for short rows);
//! - our three statements compile to plain b-tree reads: no temporary b-tree (a sort or
//!   materialisation that could spill), no full scan for a lookup by `hnum`, no
//!   co-routine or virtual table. This is the check that does not depend on reading the
//!   schema right.
//!
//! Every statement here already runs under the connection's deadline and limits.

use crate::RpmdbError;
use rusqlite::Connection;
use std::path::Path;

/// Lists `hnum`s in order from `?1`, at most `?2` of them. `NOT INDEXED` keeps the query on
/// the table's own b-tree, whose order is `hnum`: no sort, no index a hostile file chose.
pub(super) const LIST: &str = "SELECT hnum FROM Packages NOT INDEXED WHERE hnum >= ?1 ORDER BY hnum LIMIT ?2";

/// One record: the blob's type and length, and the blob itself only when it is a blob no
/// larger than `?2` (`length` of a blob does not load it).
pub(super) const FETCH: &str = "SELECT typeof(blob), length(blob), \
     CASE WHEN typeof(blob) = 'blob' AND length(blob) <= ?2 THEN blob END \
     FROM Packages NOT INDEXED WHERE hnum = ?1";

/// rpm's `Packages` columns: name, declared type, primary-key position.
const EXPECTED_COLUMNS: [(&str, &str, i64); 2] = [("hnum", "INTEGER", 1), ("blob", "BLOB", 0)];

/// Refuses a database whose schema is not rpm's; see the module documentation.
pub(super) fn check(conn: &Connection, path: &Path) -> Result<(), RpmdbError> {
    let refuse = |detail: String| RpmdbError::UnknownFormat { path: path.to_owned(), detail };
    let sql_err = |source| RpmdbError::Sqlite { path: path.to_owned(), source };

    let mut stmt = conn.prepare("SELECT name, sql FROM sqlite_master").map_err(sql_err)?;
    let mut rows = stmt.query([]).map_err(sql_err)?;
    let mut has_packages = false;
    while let Some(row) = rows.next().map_err(sql_err)? {
        let name: Option<String> = row.get(0).map_err(sql_err)?;
        let name = name.unwrap_or_default();
        // Automatic indexes have no SQL text.
        let Some(sql): Option<String> = row.get(1).map_err(sql_err)? else { continue };
        match creates(&sql) {
            Creates::Table | Creates::Index | Creates::Trigger => {}
            Creates::Other(what) => {
                return Err(refuse(format!(
                    "its schema defines {what} {name:?}; rpm databases hold only tables and indexes \
                     (refused without running it)"
                )));
            }
        }
        has_packages |= name.eq_ignore_ascii_case("Packages");
    }
    drop(rows);
    drop(stmt);
    if !has_packages {
        return Err(refuse("no Packages table".into()));
    }

    let mut stmt = conn
        .prepare(
            "SELECT name, upper(type), pk, hidden, dflt_value IS NULL FROM pragma_table_xinfo('Packages')",
        )
        .map_err(sql_err)?;
    let columns = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, bool>(4)?,
            ))
        })
        .map_err(sql_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql_err)?;
    let as_expected = columns.len() == EXPECTED_COLUMNS.len()
        && columns.iter().zip(EXPECTED_COLUMNS).all(|((name, ty, pk, hidden, no_default), (n, t, p))| {
            name.eq_ignore_ascii_case(n) && ty == t && *pk == p && *hidden == 0 && *no_default
        });
    if !as_expected {
        let shown: Vec<String> = columns
            .iter()
            .take(10)
            .map(|(name, ty, pk, hidden, no_default)| {
                let mut c = format!("{name} {ty}");
                if *pk > 0 {
                    c.push_str(" PRIMARY KEY");
                }
                if *hidden != 0 {
                    c.push_str(" (generated or hidden)");
                }
                if !no_default {
                    c.push_str(" (with a default)");
                }
                c
            })
            .collect();
        return Err(refuse(format!(
            "Packages has columns ({}), not rpm's (hnum INTEGER PRIMARY KEY, blob BLOB)",
            shown.join(", ")
        )));
    }

    for (query, lookup) in [(LIST, false), (FETCH, true)] {
        let plan = query_plan(conn, query).map_err(sql_err)?;
        if let Some(why) = plan_problem(&plan, lookup) {
            return Err(refuse(format!(
                "Packages is not a plain table keyed by hnum ({why}; plan: {})",
                plan.join("; ")
            )));
        }
    }
    Ok(())
}

/// What a schema entry's SQL creates, read the way SQLite reads it: the text starts with
/// `create ` (SQLite ignores entries that do not), then comes the kind, after any spaces and
/// comments.
#[derive(Debug, PartialEq, Eq)]
enum Creates {
    Table,
    Index,
    Trigger,
    Other(String),
}

fn creates(sql: &str) -> Creates {
    let mut words = Words { rest: sql };
    let first = words.next().unwrap_or_default();
    if !first.eq_ignore_ascii_case("create") {
        return Creates::Other(format!("an entry starting {:?}", truncate(&first)));
    }
    let kind = words.next().unwrap_or_default().to_ascii_uppercase();
    match kind.as_str() {
        "TABLE" => Creates::Table,
        "INDEX" => Creates::Index,
        "UNIQUE" if words.next().is_some_and(|w| w.eq_ignore_ascii_case("index")) => Creates::Index,
        "TRIGGER" => Creates::Trigger,
        "VIEW" => Creates::Other("a view".into()),
        "VIRTUAL" => Creates::Other("a virtual table".into()),
        "TEMP" | "TEMPORARY" => Creates::Other("a temporary object".into()),
        _ => Creates::Other(format!("\"CREATE {}\"", truncate(&kind))),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(20).collect()
}

/// Words of SQL text, skipping whitespace and `--` / `/* */` comments as SQLite's tokenizer
/// does. Anything that is not a letter ends a word.
struct Words<'a> {
    rest: &'a str,
}

impl Iterator for Words<'_> {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        loop {
            let trimmed = self.rest.trim_start_matches(|c: char| c.is_ascii_whitespace());
            if let Some(after) = trimmed.strip_prefix("--") {
                self.rest = after.split_once('\n').map_or("", |(_, r)| r);
            } else if let Some(after) = trimmed.strip_prefix("/*") {
                self.rest = after.split_once("*/").map_or("", |(_, r)| r);
            } else {
                self.rest = trimmed;
                break;
            }
        }
        let end = self.rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(self.rest.len());
        if end == 0 {
            // A symbol: return it alone so the caller sees something that is not a keyword.
            let c = self.rest.chars().next()?;
            self.rest = &self.rest[c.len_utf8()..];
            return Some(c.to_string());
        }
        let (word, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(word.to_owned())
    }
}

/// `EXPLAIN QUERY PLAN` of `query`, one line per step.
fn query_plan(conn: &Connection, query: &str) -> Result<Vec<String>, rusqlite::Error> {
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {query}"))?;
    // The plan does not depend on the parameters; unbound ones are NULL.
    let mut rows = stmt.raw_query();
    let mut plan = Vec::new();
    while let Some(row) = rows.next()? {
        plan.push(row.get::<_, String>(3)?);
    }
    Ok(plan)
}

/// Why a plan is not a plain b-tree read (for a lookup: a search, not a scan).
fn plan_problem(plan: &[String], lookup: bool) -> Option<&'static str> {
    for step in plan {
        let step = step.to_ascii_uppercase();
        if step.contains("TEMP B-TREE") {
            return Some("it needs a temporary b-tree");
        }
        if step.contains("VIRTUAL TABLE") {
            return Some("it is a virtual table");
        }
        if step.contains("CO-ROUTINE") || step.contains("MATERIALIZE") || step.contains("COMPOUND") {
            return Some("it is computed, not stored");
        }
        if lookup && step.starts_with("SCAN") {
            return Some("a lookup by hnum scans the whole table");
        }
    }
    if plan.is_empty() {
        return Some("no plan");
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn schema_entries_are_classified_by_their_sql_text() {
        assert_eq!(
            creates("CREATE TABLE 'Packages' (hnum INTEGER PRIMARY KEY AUTOINCREMENT,blob BLOB NOT NULL)"),
            Creates::Table
        );
        assert_eq!(creates("CREATE INDEX 'Name_key_idx' ON 'Name'(key ASC)"), Creates::Index);
        assert_eq!(creates("create unique index x on t(a)"), Creates::Index);
        assert_eq!(creates("create /* hidden */ view Packages as select 1"), Creates::Other("a view".into()));
        assert_eq!(
            creates("CREATE -- note\n VIRTUAL TABLE Packages USING fts5(a)"),
            Creates::Other("a virtual table".into())
        );
        assert_eq!(creates("create temp table x(a)"), Creates::Other("a temporary object".into()));
        assert!(matches!(creates("create unique view"), Creates::Other(_)));
        assert!(matches!(creates(""), Creates::Other(_)));
        assert_eq!(creates("CREATE TRIGGER t AFTER INSERT ON x BEGIN SELECT 1; END"), Creates::Trigger);
    }

    #[test]
    fn rpm_fixture_passes_and_its_plans_are_plain_btree_reads() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/rpmdb/amazonlinux2023-plain/rpmdb.sqlite"
        ));
        let uri = format!("file:{}?mode=ro&immutable=1", path.display());
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(uri, flags).unwrap();
        check(&conn, path).unwrap();
        for q in [LIST, FETCH] {
            let plan = query_plan(&conn, q).unwrap();
            assert!(plan.iter().all(|s| !s.contains("TEMP")), "{plan:?}");
        }
    }

    #[test]
    fn a_sort_or_a_scan_for_a_lookup_is_a_plan_problem() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(plan_problem(&s(&["SCAN Packages", "USE TEMP B-TREE FOR ORDER BY"]), false).is_some());
        assert!(plan_problem(&s(&["SCAN Packages"]), true).is_some());
        assert!(plan_problem(&s(&["SEARCH Packages USING INTEGER PRIMARY KEY (rowid=?)"]), true).is_none());
        assert!(plan_problem(&s(&["SCAN Packages"]), false).is_none());
    }
}
