//! Replays the committed fuzz corpus (and any crash found by fuzzing, kept under
//! `fuzz/regressions/`) through the same entry points as the fuzz targets, so a parser
//! change that reintroduces a panic or hang fails the ordinary test suite.

use guestward_core::testing::fuzz_inputs as inputs;
use guestward_rpmdb::{Backend, Limits, package_from_blob, read_database, read_page_format};
use std::path::Path;
use std::time::Duration;

#[test]
fn header_corpus_replays_without_panics() {
    let files = inputs("rpm_header");
    for f in files {
        let data = std::fs::read(&f).unwrap();
        let _ = package_from_blob(1, &data);
    }
}

#[test]
fn page_corpora_replay_without_panics() {
    let limits = Limits { max_header_bytes: 1 << 20, max_headers: 10_000, ..Limits::default() };
    for (target, backend) in [("bdb_pages", Backend::Bdb), ("ndb_pages", Backend::Ndb)] {
        let files = inputs(target);
        for f in files {
            let data = std::fs::read(&f).unwrap();
            let _ = read_page_format(&data[..], backend, Path::new("/fuzz"), &limits);
        }
    }
}

#[test]
fn sqlite_corpus_replays_without_panics() {
    let dir = tempfile::tempdir().unwrap();
    let root = guestward_core::HostRoot::new(dir.path()).unwrap();
    let limits = Limits {
        max_header_bytes: 1 << 20,
        max_headers: 10_000,
        sqlite_time_limit: Duration::from_secs(2),
        ..Limits::default()
    };
    let mut packages = 0;
    for f in inputs("rpm_sqlite") {
        std::fs::write(dir.path().join("rpmdb.sqlite"), std::fs::read(&f).unwrap()).unwrap();
        let started = std::time::Instant::now();
        if let Ok(inv) = read_database(&root, Path::new("/rpmdb.sqlite"), Backend::Sqlite, &limits) {
            packages += inv.packages.len();
        }
        // The time budget holds for whatever the file is (2 s, and the private copy).
        assert!(started.elapsed() < Duration::from_secs(10), "{}: {:?}", f.display(), started.elapsed());
    }
    // The corpus reaches past the schema check into the records (the seed holds a package).
    assert!(packages > 0, "no input of the corpus was read as a database with a package");
}
