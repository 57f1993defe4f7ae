//! Any bytes as an rpm SQLite database (`rpmdb.sqlite`: Amazon Linux 2023, RHEL 9, Fedora) in
//! a scratch root, read as `scan --root` reads a mounted volume's: copied privately, the
//! schema checked before any statement runs on it, every query under the time budget, each
//! blob bounded. Whoever can write the scanned volume (or a container image's layers) chooses
//! these bytes.
#![no_main]

use guestward_rpmdb::{Backend, Limits, read_database};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::time::Duration;

mod scratch;

fuzz_target!(|data: &[u8]| {
    let (dir, root) = scratch::tree();
    std::fs::write(dir.path().join("rpmdb.sqlite"), data).expect("write the database");
    // A shorter budget than a scan's: a statement the budget cuts off is what is being
    // checked, and libFuzzer counts a run over its own timeout as a failure.
    let limits = Limits {
        max_header_bytes: 1 << 20,
        max_headers: 10_000,
        sqlite_time_limit: Duration::from_secs(2),
        ..Limits::default()
    };
    let _ = read_database(root, Path::new("/rpmdb.sqlite"), Backend::Sqlite, &limits);
});
