//! `rpmdb.sqlite` from a hostile or damaged tree (issue 9, items 2, 3, 6 and 16): a schema
//! that is not rpm's is refused without running it, every query is bounded in time, damage
//! costs only the records it touches, a snapshot is read without writing under its root, and
//! no FIFO or device is ever opened by SQLite. Every risky call runs under `within`, so a
//! regression fails instead of hanging.

use crate::fixtures::qf;
use crate::{fixture_dir, within};
use guestward_core::HostRoot;
use guestward_rpmdb::{DirScan, Limits, RpmInventory, RpmdbError, read_rpm_dirs};
use rusqlite::Connection;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

const RPM_DIR: &str = "/var/lib/rpm";
const BOUND: Duration = Duration::from_secs(20);

fn fixture_db() -> PathBuf {
    fixture_dir().join("amazonlinux2023-plain/rpmdb.sqlite")
}

/// A root with an empty `/var/lib/rpm`.
fn tree() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("var/lib/rpm");
    std::fs::create_dir_all(&dir).unwrap();
    (tmp, dir)
}

/// Scans the root's `/var/lib/rpm` on another thread, failing after `BOUND`.
fn scan(root: &Path, limits: Limits) -> DirScan {
    let root = HostRoot::new(root).unwrap();
    within(BOUND, "read_rpm_dirs", move || read_rpm_dirs(&root, &[PathBuf::from(RPM_DIR)], &limits))
}

/// rpm's own list, in hnum order (hnum n is line n, the fixture's records being 1..=103).
fn expected_by_hnum() -> Vec<String> {
    std::fs::read_to_string(fixture_dir().join("amazonlinux2023-plain/expected.rpm-qa.tsv"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Every package listed is rpm's package of that hnum; returns the hnums listed.
fn assert_packages_match_rpm(inv: &RpmInventory) -> Vec<u32> {
    let expected = expected_by_hnum();
    for p in &inv.packages {
        assert_eq!(qf(p), expected[p.record as usize - 1], "record {}", p.record);
    }
    inv.packages.iter().map(|p| p.record).collect()
}

fn problem_text(inv: &RpmInventory) -> String {
    inv.problems.iter().map(|p| format!("[{}] {}", p.code, p.message)).collect::<Vec<_>>().join("\n")
}

/// Creates a database at `path` with the given SQL.
fn sqlite_db(path: &Path, sql: &str) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(sql).unwrap();
}

// ---- item 3: hostile schemas and unbounded queries -------------------------------------

#[test]
fn a_packages_view_over_an_endless_recursive_query_is_refused_quickly() {
    let (tmp, dir) = tree();
    // What the review planted: selecting from Packages never ends, and its ORDER BY spills
    // into temporary files until /var/tmp is full.
    sqlite_db(
        &dir.join("rpmdb.sqlite"),
        "CREATE VIEW Packages AS WITH RECURSIVE r(hnum, blob) AS \
           (SELECT 1, zeroblob(4096) UNION ALL SELECT hnum + 1, blob FROM r) \
         SELECT hnum, blob FROM r ORDER BY hnum DESC;",
    );
    let started = Instant::now();
    let scan = scan(tmp.path(), Limits::default());
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(scan.inventory.is_none());
    let [RpmdbError::UnknownFormat { path, detail }] = scan.errors.as_slice() else {
        panic!("{:?}", scan.errors)
    };
    assert_eq!(path, Path::new("/var/lib/rpm/rpmdb.sqlite"));
    assert!(detail.contains("a view") && detail.contains("Packages"), "{detail}");
    let problem = scan.errors[0].to_problem();
    assert_eq!(problem.path.as_deref(), Some("/var/lib/rpm/rpmdb.sqlite"));
    assert_eq!(problem.code, "unknown_format");
}

#[test]
fn hostile_packages_schemas_are_refused_without_running_them() {
    let cases: [(&str, &str, &str); 7] = [
        (
            "a view whose schema entry claims to be a table",
            "CREATE VIEW Packages AS WITH RECURSIVE r(hnum, blob) AS \
               (SELECT 1, x'00' UNION ALL SELECT hnum + 1, blob FROM r) SELECT hnum, blob FROM r; \
             PRAGMA writable_schema = ON; \
             UPDATE sqlite_master SET type = 'table' WHERE name = 'Packages';",
            // SQLite itself refuses this one while loading the schema.
            "malformed database schema",
        ),
        (
            "a real table next to a view under a decoy name",
            "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob BLOB); \
             CREATE VIEW Decoy AS SELECT 1;",
            "a view",
        ),
        (
            // Planted as a SQLite with FTS5 would write it: ours has no FTS5 to create it with
            // (see the next test), and loads the schema entry without running the module.
            "a virtual table",
            "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob BLOB); \
             PRAGMA writable_schema = ON; \
             UPDATE sqlite_master SET sql = 'CREATE VIRTUAL TABLE Packages USING fts5(hnum, blob)', \
               rootpage = 0 WHERE name = 'Packages';",
            "a virtual table",
        ),
        (
            "a generated blob column",
            "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, seed INTEGER, \
               blob BLOB AS (zeroblob(seed)) VIRTUAL);",
            "columns",
        ),
        (
            "a blob column with a default",
            "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob BLOB DEFAULT (zeroblob(1000000)));",
            "with a default",
        ),
        (
            "hnum not the rowid (DESC): listing sorts, every lookup scans",
            "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY DESC, blob BLOB);",
            "not a plain table keyed by hnum",
        ),
        ("no Packages at all", "CREATE TABLE Other (x);", "no Packages table"),
    ];
    for (what, sql, why) in cases {
        let (tmp, dir) = tree();
        sqlite_db(&dir.join("rpmdb.sqlite"), sql);
        let scan = scan(tmp.path(), Limits::default());
        assert!(scan.inventory.is_none(), "{what}");
        let [e] = scan.errors.as_slice() else { panic!("{what}: {:?}", scan.errors) };
        assert!(e.to_string().contains(why), "{what}: {e}");
        assert!(e.to_string().contains("/var/lib/rpm/rpmdb.sqlite"), "{what}: {e}");
    }
}

/// The bundled SQLite is built without the full-text and R-Tree modules, JSON and extension
/// loading (`.cargo/config.toml`, `LIBSQLITE3_FLAGS`): a planted database cannot reach that
/// code, even past the schema check above.
#[test]
fn the_bundled_sqlite_has_no_fts_rtree_json_or_extension_loading() {
    let conn = Connection::open_in_memory().unwrap();
    for module in ["fts3", "fts4", "fts5", "rtree"] {
        let e = conn.execute_batch(&format!("CREATE VIRTUAL TABLE t USING {module}(a, b, c);")).unwrap_err();
        assert!(e.to_string().contains(&format!("no such module: {module}")), "{module}: {e}");
    }
    for (call, function) in [("load_extension('/nonexistent')", "load_extension"), ("json('{}')", "json")] {
        let e = conn.query_row(&format!("SELECT {call}"), [], |r| r.get::<_, String>(0)).unwrap_err();
        assert!(e.to_string().contains(&format!("no such function: {function}")), "{call}: {e}");
    }
    // Kept: dbstat, which the page-layout tests below read.
    conn.execute_batch("CREATE TABLE kept (x); INSERT INTO kept VALUES (1);").unwrap();
    let pages: i64 =
        conn.query_row("SELECT count(*) FROM dbstat WHERE name = 'kept'", [], |r| r.get(0)).unwrap();
    assert_eq!(pages, 1);
}

#[test]
fn a_real_table_too_slow_to_read_is_cut_off_by_the_time_limit() {
    let (tmp, dir) = tree();
    // rpm's schema, rows SQLite reads without complaint, just far too many of them for the
    // time allowed.
    sqlite_db(
        &dir.join("rpmdb.sqlite"),
        "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL); \
         INSERT INTO Packages (hnum, blob) \
           WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 300000) \
           SELECT n, x'00' FROM c;",
    );
    let limits =
        Limits { sqlite_time_limit: Duration::from_millis(100), max_headers: 1_000_000, ..Limits::default() };
    let started = Instant::now();
    let scan = scan(tmp.path(), limits);
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    // Cut off while opening (a slow machine) or, usually, while reading: either way the time
    // limit is named, and what was read before it is kept.
    match (&scan.inventory, scan.errors.as_slice()) {
        (None, [RpmdbError::TimeLimit { .. }]) => {}
        (Some(inv), []) => {
            let cut: Vec<_> = inv.problems.iter().filter(|p| p.code == "limit_reached").collect();
            assert_eq!(cut.len(), 1, "{}", problem_text(inv));
            assert!(cut[0].message.contains("time limit"), "{}", cut[0].message);
            assert!(inv.packages.len() + inv.corrupt.len() < 300_000);
        }
        other => panic!("{other:?}"),
    }
}

// ---- item 6: damage costs only what it touches ----------------------------------------

/// Copies the fixture into a new tree, lets `damage` change the copy, and reads it.
fn read_damaged(damage: impl FnOnce(&Path)) -> RpmInventory {
    let (tmp, dir) = tree();
    let db = dir.join("rpmdb.sqlite");
    std::fs::copy(fixture_db(), &db).unwrap();
    damage(&db);
    let scan = scan(tmp.path(), Limits::default());
    assert!(scan.errors.is_empty(), "{:?}", scan.errors);
    scan.inventory.unwrap()
}

/// `(pageno, hnums on it, overflow pages of each cell)` for every leaf of the fixture's
/// `Packages` b-tree, in key order, from SQLite's own `dbstat`.
struct Leaf {
    pageno: i64,
    first_hnum: i64,
    cells: i64,
}

fn packages_layout() -> (Vec<Leaf>, Vec<(i64, i64, i64)>) {
    let conn = Connection::open_with_flags(
        format!("file:{}?mode=ro&immutable=1", fixture_db().display()),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap();
    let mut stmt = conn
        .prepare("SELECT pageno, ncell, path FROM dbstat WHERE name = 'Packages' AND pagetype = 'leaf' ORDER BY path")
        .unwrap();
    let mut leaves = Vec::new();
    let mut by_path = BTreeMap::new();
    let mut next = 1i64;
    for row in stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)))
        .unwrap()
    {
        let (pageno, cells, path) = row.unwrap();
        by_path.insert(path, next);
        leaves.push(Leaf { pageno, first_hnum: next, cells });
        next += cells;
    }
    assert_eq!(next - 1, 103, "the fixture's hnums are 1..=103");
    // Overflow pages are named `<leaf path><cell, hex>+<index, hex>`.
    let mut stmt = conn
        .prepare(
            "SELECT pageno, path FROM dbstat WHERE name = 'Packages' AND pagetype = 'overflow' ORDER BY path",
        )
        .unwrap();
    let mut overflow = Vec::new();
    for row in stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))).unwrap() {
        let (pageno, path) = row.unwrap();
        let (cell_path, index) = path.split_once('+').unwrap();
        let (leaf_path, cell) = cell_path.split_at(cell_path.len() - 3);
        let hnum = by_path[leaf_path] + i64::from_str_radix(cell, 16).unwrap();
        overflow.push((pageno, hnum, i64::from_str_radix(index, 16).unwrap()));
    }
    (leaves, overflow)
}

fn patch_page(db: &Path, pageno: i64, at: usize, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(db).unwrap();
    f.write_all_at(bytes, (pageno as u64 - 1) * 4096 + at as u64).unwrap();
}

#[test]
fn one_row_whose_blob_is_not_a_blob_costs_only_that_package() {
    // Used to drop the whole inventory: the row's value did not convert and the one query
    // over the table failed.
    let inv = read_damaged(|db| {
        let conn = Connection::open(db).unwrap();
        conn.execute("UPDATE Packages SET blob = 'not a header' WHERE hnum = 42", []).unwrap();
    });
    let listed = assert_packages_match_rpm(&inv);
    assert_eq!(listed, (1..=103).filter(|h| *h != 42).collect::<Vec<_>>());
    assert_eq!(inv.problems.len(), 1, "{}", problem_text(&inv));
    let p = &inv.problems[0];
    assert_eq!(p.code, "malformed");
    assert!(p.message.contains("hnum 42") && p.message.contains("text"), "{}", p.message);
    assert_eq!(p.path.as_deref(), Some("/var/lib/rpm/rpmdb.sqlite"));
}

#[test]
fn a_broken_overflow_chain_costs_only_that_package() {
    // A blob spread over at least two overflow pages: point its first page's link far past
    // the end of the file, so SQLite reports corruption when that one blob is read.
    let (_, overflow) = packages_layout();
    let &(pageno, hnum, _) = overflow
        .iter()
        .find(|(_, h, index)| {
            *index == 0 && overflow.iter().any(|(_, h2, i2)| h2 == h && *i2 == 1) && *h > 10
        })
        .unwrap();
    let inv = read_damaged(|db| patch_page(db, pageno, 0, &0x00ff_fff0u32.to_be_bytes()));
    let listed = assert_packages_match_rpm(&inv);
    let hnum = u32::try_from(hnum).unwrap();
    assert_eq!(listed, (1..=103).filter(|h| *h != hnum).collect::<Vec<_>>(), "{}", problem_text(&inv));
    assert_eq!(inv.problems.len(), 1, "{}", problem_text(&inv));
    assert!(inv.problems[0].message.contains(&format!("hnum {hnum}:")), "{}", problem_text(&inv));
    assert_eq!(inv.problems[0].code, "malformed");
}

#[test]
fn a_corrupt_btree_leaf_keeps_the_packages_before_and_after_it() {
    let (leaves, _) = packages_layout();
    assert!(leaves.len() >= 3, "the fixture's Packages table has several leaves");
    let victim = &leaves[leaves.len() / 2];
    let lost: Vec<u32> = (victim.first_hnum..victim.first_hnum + victim.cells).map(|h| h as u32).collect();
    // Byte 0 of a b-tree page is its type (13 for a table leaf); 0 is no page type at all.
    let inv = read_damaged(|db| patch_page(db, victim.pageno, 0, &[0]));
    let listed = assert_packages_match_rpm(&inv);
    assert_eq!(listed, (1..=103).filter(|h| !lost.contains(h)).collect::<Vec<_>>(), "{}", problem_text(&inv));
    assert!(
        listed.first() == Some(&1) && listed.last() == Some(&103),
        "rows before and after the page are read"
    );
    assert_eq!(inv.problems.len(), 1, "{}", problem_text(&inv));
    let p = &inv.problems[0];
    assert_eq!(p.code, "malformed");
    let before = lost[0] - 1;
    let after = lost[lost.len() - 1] + 1;
    assert!(
        p.message.contains(&format!("after hnum {before}"))
            && p.message.contains(&format!("resumed at hnum {after}")),
        "{}",
        p.message
    );
}

// ---- item 16: a snapshot is read without writing under its root ------------------------

/// Every entry under `dir`: relative path, type, size, modification time.
fn listing(dir: &Path) -> BTreeMap<PathBuf, (String, u64, SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.path().symlink_metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            }
            let rel = e.path().strip_prefix(dir).unwrap().to_path_buf();
            out.insert(rel, (format!("{:?}", m.file_type()), m.len(), m.modified().unwrap()));
        }
    }
    out
}

/// A tree whose `rpmdb.sqlite` has a `-wal` holding one committed transaction (hnum 7
/// deleted), as in a snapshot of a host where rpm had not checkpointed yet.
fn tree_with_wal() -> (tempfile::TempDir, PathBuf) {
    let (tmp, dir) = tree();
    let staging = tempfile::tempdir().unwrap();
    let db = staging.path().join("rpmdb.sqlite");
    std::fs::copy(fixture_db(), &db).unwrap();
    let conn = Connection::open(&db).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    // rpm's index tables refer to Packages; rpm removes their rows first, this test need not.
    conn.execute_batch(
        "PRAGMA foreign_keys = OFF; PRAGMA wal_autocheckpoint = 0; DELETE FROM Packages WHERE hnum = 7;",
    )
    .unwrap();
    // Copied while the writer is still open: the transaction lives only in the -wal.
    std::fs::copy(&db, dir.join("rpmdb.sqlite")).unwrap();
    std::fs::copy(staging.path().join("rpmdb.sqlite-wal"), dir.join("rpmdb.sqlite-wal")).unwrap();
    drop(conn);
    assert!(std::fs::metadata(dir.join("rpmdb.sqlite-wal")).unwrap().len() > 0);
    (tmp, dir)
}

#[test]
fn a_snapshot_with_a_wal_is_read_with_its_wal_and_nothing_is_written_under_the_root() {
    use std::os::unix::fs::PermissionsExt;
    let (tmp, dir) = tree_with_wal();
    // Read-only as a mounted snapshot would be (root ignores this; the listing below is what
    // the test relies on).
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let before = listing(tmp.path());
    let scan = scan(tmp.path(), Limits::default());
    let after = listing(tmp.path());
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(before, after, "nothing created or changed under the root (no -shm next to the -wal)");
    assert!(scan.errors.is_empty(), "{:?}", scan.errors);
    let inv = scan.inventory.unwrap();
    assert!(inv.problems.is_empty(), "{}", problem_text(&inv));
    // The committed transaction in the -wal is applied, as rpm would see it.
    let listed = assert_packages_match_rpm(&inv);
    assert_eq!(listed, (1..=103).filter(|h| *h != 7).collect::<Vec<_>>());
}

#[test]
fn a_snapshot_over_the_copy_limit_is_refused_not_read_in_place() {
    let (tmp, _dir) = tree_with_wal();
    let limits = Limits { max_snapshot_copy_bytes: 1 << 20, ..Limits::default() };
    let before = listing(tmp.path());
    let scan = scan(tmp.path(), limits);
    assert_eq!(before, listing(tmp.path()));
    assert!(scan.inventory.is_none());
    let [e @ RpmdbError::SnapshotTooLarge { limit: 1_048_576, .. }] = scan.errors.as_slice() else {
        panic!("{:?}", scan.errors)
    };
    assert_eq!(e.to_problem().code, "too_large");
}

#[test]
fn the_live_root_reads_rpmdb_in_place_with_its_wal() {
    // On the live root the database is rpm's own and is read where it is (a -shm next to a
    // live -wal is what rpm itself keeps); the WAL's transaction is seen, and the same
    // schema, time and record-by-record rules apply.
    let (_tmp, dir) = tree_with_wal();
    let db = dir.join("rpmdb.sqlite");
    let inv = within(BOUND, "read_database", move || {
        guestward_rpmdb::read_database(
            &HostRoot::live(),
            &db,
            guestward_rpmdb::Backend::Sqlite,
            &Limits::default(),
        )
    })
    .unwrap();
    assert!(inv.problems.is_empty(), "{}", problem_text(&inv));
    assert_eq!(assert_packages_match_rpm(&inv), (1..=103).filter(|h| *h != 7).collect::<Vec<_>>());
}

// ---- item 2: no FIFO or device is ever opened -----------------------------------------

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
}

/// The one error of a scan that found nothing else (besides "no database found"), as a
/// report problem.
fn only_error(scan: &DirScan) -> guestward_core::Problem {
    assert!(scan.inventory.is_none(), "{:?}", scan.inventory.as_ref().map(|i| i.packages.len()));
    let errors: Vec<_> = scan.errors.iter().filter(|e| !matches!(e, RpmdbError::NotFound { .. })).collect();
    assert_eq!(errors.len(), 1, "{:?}", scan.errors);
    errors[0].to_problem()
}

#[test]
fn fifo_in_place_of_rpmdb_sqlite_is_refused_not_opened() {
    let (tmp, dir) = tree();
    mkfifo(&dir.join("rpmdb.sqlite"));
    let p = only_error(&scan(tmp.path(), Limits::default()));
    assert!(p.message.contains("rpmdb.sqlite") && p.message.contains("fifo"), "{p:?}");
}

#[test]
fn fifo_in_place_of_an_sqlite_wal_shm_or_journal_is_refused_before_sqlite_opens_it() {
    for suffix in ["-wal", "-shm", "-journal"] {
        let (tmp, dir) = tree();
        std::fs::copy(fixture_db(), dir.join("rpmdb.sqlite")).unwrap();
        mkfifo(&dir.join(format!("rpmdb.sqlite{suffix}")));
        let p = only_error(&scan(tmp.path(), Limits::default()));
        assert!(
            p.message.contains(&format!("rpmdb.sqlite{suffix}")) && p.message.contains("fifo"),
            "{suffix}: {p:?}"
        );
    }
}

#[test]
fn fifo_in_place_of_bdb_packages_is_refused_not_read() {
    let (tmp, dir) = tree();
    mkfifo(&dir.join("Packages"));
    let p = only_error(&scan(tmp.path(), Limits::default()));
    assert!(p.message.contains("Packages") && p.message.contains("fifo"), "{p:?}");
}

#[test]
fn fifo_in_place_of_ndb_packages_db_is_refused_not_read() {
    let (tmp, dir) = tree();
    mkfifo(&dir.join("Packages.db"));
    let p = only_error(&scan(tmp.path(), Limits::default()));
    assert!(p.message.contains("Packages.db") && p.message.contains("fifo"), "{p:?}");
}

#[test]
fn device_nodes_in_place_of_rpm_database_files_are_refused_not_read() {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    if !nix::unistd::geteuid().is_root() {
        guestward_core::testing::skip_or_fail(
            "device_nodes_in_place_of_rpm_database_files_are_refused_not_read",
            "creating device nodes needs root",
        );
        return;
    }
    // A /dev/zero look-alike: reading it never ends.
    let zero = |p: &Path| mknod(p, SFlag::S_IFCHR, Mode::from_bits_truncate(0o644), makedev(1, 5)).unwrap();
    for name in ["rpmdb.sqlite", "Packages.db", "Packages"] {
        let (tmp, dir) = tree();
        zero(&dir.join(name));
        let p = only_error(&scan(tmp.path(), Limits::default()));
        assert!(p.message.contains(name) && p.message.contains("device"), "{name}: {p:?}");
    }
    let (tmp, dir) = tree();
    std::fs::copy(fixture_db(), dir.join("rpmdb.sqlite")).unwrap();
    zero(&dir.join("rpmdb.sqlite-wal"));
    let p = only_error(&scan(tmp.path(), Limits::default()));
    assert!(p.message.contains("rpmdb.sqlite-wal") && p.message.contains("device"), "{p:?}");
}
