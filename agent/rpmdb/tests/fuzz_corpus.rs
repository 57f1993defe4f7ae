//! Replays the committed fuzz corpus (and any crash found by fuzzing, kept under
//! `fuzz/regressions/`) through the same entry points as the fuzz targets, so a parser
//! change that reintroduces a panic or hang fails the ordinary test suite.

use guestward_core::testing::fuzz_inputs as inputs;
use guestward_rpmdb::{Backend, Limits, package_from_blob, read_page_format};
use std::path::Path;

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
