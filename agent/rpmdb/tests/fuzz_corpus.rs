//! Replays the committed fuzz corpus (and any crash found by fuzzing, kept under
//! `fuzz/regressions/`) through the same entry points as the fuzz targets, so a parser
//! change that reintroduces a panic or hang fails the ordinary test suite.

use guestward_rpmdb::{Backend, Limits, package_from_blob, read_page_format};
use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz"));
    let mut files = Vec::new();
    for dir in [fuzz.join("corpus").join(target), fuzz.join("regressions").join(target)] {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            files.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    files.sort();
    files
}

#[test]
fn header_corpus_replays_without_panics() {
    let files = inputs("rpm_header");
    assert!(!files.is_empty(), "fuzz/corpus/rpm_header is missing");
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
        assert!(!files.is_empty(), "fuzz/corpus/{target} is missing");
        for f in files {
            let data = std::fs::read(&f).unwrap();
            let _ = read_page_format(&data[..], backend, Path::new("/fuzz"), &limits);
        }
    }
}
