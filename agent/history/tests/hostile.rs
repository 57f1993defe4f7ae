//! What is found where `events.db` goes: FIFOs, symlinks, damaged files, other programs'
//! databases. Each is refused with an error naming the file, fast, and never a panic.

use crate::common::{open, roomy, simple};
use guestward_core::testing::within;
use guestward_history::{DB_FILE, EventStore, HistoryError};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

fn mkfifo(path: &std::path::Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

#[test]
fn a_fifo_in_place_of_events_db_is_refused_fast() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DB_FILE);
    mkfifo(&db);
    let err = within(Duration::from_secs(10), "open a FIFO as the history", move || {
        EventStore::open(&db, roomy()).map(|_| ()).unwrap_err()
    });
    assert!(matches!(err, HistoryError::NotRegular { kind: "fifo", .. }), "{err:?}");
    assert!(err.to_string().contains(DB_FILE), "{err}");
}

#[test]
fn a_fifo_in_place_of_the_write_ahead_log_is_refused_fast() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join(format!("{DB_FILE}-wal"));
    mkfifo(&wal);
    let db = dir.path().join(DB_FILE);
    let err = within(Duration::from_secs(10), "open with a FIFO as the WAL", move || {
        EventStore::open(&db, roomy()).map(|_| ()).unwrap_err()
    });
    assert!(matches!(err, HistoryError::NotRegular { kind: "fifo", .. }), "{err:?}");
    assert!(err.to_string().contains("-wal"), "{err}");
}

#[test]
fn a_symlink_in_place_of_events_db_is_refused_and_its_target_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("precious");
    std::fs::write(&target, b"not yours").unwrap();
    let db = dir.path().join(DB_FILE);
    std::os::unix::fs::symlink(&target, &db).unwrap();
    let err = EventStore::open(&db, roomy()).unwrap_err();
    assert!(matches!(err, HistoryError::NotRegular { kind: "symlink", .. }), "{err:?}");
    assert_eq!(std::fs::read(&target).unwrap(), b"not yours");
    // A dangling link is refused too, rather than creating its target.
    std::fs::remove_file(&target).unwrap();
    let err = EventStore::open(&db, roomy()).unwrap_err();
    assert!(matches!(err, HistoryError::NotRegular { kind: "symlink", .. }), "{err:?}");
    assert!(!target.exists());
}

/// A state directory reached through a symlink (moved to a larger volume and linked back) is
/// the agent's own: the history opens there. Only a link in place of `events.db` is refused.
/// SQLite's NOFOLLOW refuses a link anywhere in the path, and once stopped the daemon.
#[test]
fn a_state_directory_reached_through_a_symlink_opens() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("volume/guestward");
    std::fs::create_dir_all(&real).unwrap();
    let link = dir.path().join("state");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let store = open(&link, roomy());
    drop(store);
    assert!(real.join(DB_FILE).is_file());
    // Again, through the link, with the database there.
    drop(open(&link, roomy()));
}

#[test]
fn a_file_that_is_not_sqlite_yields_a_clear_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DB_FILE);
    std::fs::write(&db, vec![0x5a; 8192]).unwrap();
    let err = EventStore::open(&db, roomy()).unwrap_err();
    assert!(matches!(err, HistoryError::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    eprintln!("not SQLite: {msg}");
    assert!(msg.contains(&db.display().to_string()) && msg.contains("damaged"), "{msg}");
}

#[test]
fn a_damaged_history_yields_errors_naming_it_and_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DB_FILE);
    {
        let mut store = open(dir.path(), roomy());
        let events: Vec<_> =
            (0..2000).map(|i| simple("fim.change", i, guestward_core::Timestamp::now())).collect();
        store.append(&events).unwrap();
    }
    // Keep the header, overwrite every page after the first two (schema and root pages survive
    // in some layouts, not in others: either way, errors only).
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 3 * 4096, "{} bytes", bytes.len());
    for b in &mut bytes[2 * 4096..] {
        *b = 0xa5;
    }
    std::fs::write(&db, &bytes).unwrap();
    let _ = std::fs::remove_file(dir.path().join(format!("{DB_FILE}-wal")));
    let _ = std::fs::remove_file(dir.path().join(format!("{DB_FILE}-shm")));
    let result = EventStore::open(&db, roomy()).and_then(|mut s| {
        s.query(&guestward_history::Query { limit: usize::MAX, ..Default::default() })?;
        s.append(&[simple("fim.change", 1, guestward_core::Timestamp::now())])?;
        s.stats()
    });
    let err = result.unwrap_err();
    eprintln!("damaged history: {err}");
    assert!(err.to_string().contains(&db.display().to_string()), "{err}");
}

#[test]
fn another_programs_sqlite_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DB_FILE);
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE accounts (name TEXT); INSERT INTO accounts VALUES ('x');").unwrap();
    }
    let err = EventStore::open(&db, roomy()).unwrap_err();
    assert!(matches!(err, HistoryError::Foreign { .. }), "{err:?}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let n: i64 = conn.query_row("SELECT count(*) FROM accounts", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 1, "left untouched");
}

#[test]
fn the_history_is_created_0600_in_a_0700_directory() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let db = state.join(DB_FILE);
    let mut store = EventStore::open(&db, roomy()).unwrap();
    store.append(&[simple("fim.change", 1, guestward_core::Timestamp::now())]).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&db), 0o600);
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join(format!("{DB_FILE}-wal"))), 0o600);
    // A history opened up by hand is closed again at the next start.
    drop(store);
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _store = EventStore::open(&db, roomy()).unwrap();
    assert_eq!(mode(&db), 0o600);
}
