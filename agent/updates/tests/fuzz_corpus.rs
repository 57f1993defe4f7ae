//! Replays the `config_tree` fuzz corpus (an apt suite, dpkg's status and lists compressed, or
//! not, as gzip, lz4 and xz) through the collector, as the fuzz target calls it, so a change
//! that brings a panic or a hang back fails here.

use guestward_core::HostRoot;
use guestward_core::testing::{fuzz_inputs, write_fuzz_config_tree};
use guestward_updates::Config;

#[test]
fn config_tree_corpus_replays_through_the_collector() {
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot::new(dir.path()).unwrap();
    let config = Config { check_processes: false, ..Config::default() };
    let mut pending = 0;
    for f in fuzz_inputs("config_tree") {
        write_fuzz_config_tree(dir.path(), &std::fs::read(&f).unwrap()).unwrap();
        let section = guestward_updates::collect(&config, &root);
        pending += section.data.as_ref().map_or(0, |r| r.pending().count());
    }
    // The seed's three packages are installed at 0.1 with newer versions in every list.
    assert!(pending > 0, "no input of the corpus has a pending update");
}
