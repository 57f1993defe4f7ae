//! Replays the `config_tree` fuzz corpus (an apt suite, dpkg's status and lists compressed, or
//! not, as gzip, lz4 and xz) and the `dnf_cache` one (dnf and yum repository caches over an rpm
//! database) and the `yum_primary_db` one (yum's SQLite `primary_db`) through the collector,
//! as the fuzz targets call it, so a change that brings a panic or a hang back fails here.

use guestward_core::HostRoot;
use guestward_core::testing::{
    fuzz_inputs, write_fuzz_config_tree, write_fuzz_dnf_tree, write_fuzz_yum_db_tree,
};
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

#[test]
fn dnf_cache_corpus_replays_through_the_collector() {
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot::new(dir.path()).unwrap();
    let config = Config { check_processes: false, ..Config::default() };
    let (mut pending, mut advised) = (0, 0);
    for f in fuzz_inputs("dnf_cache") {
        write_fuzz_dnf_tree(dir.path(), &std::fs::read(&f).unwrap()).unwrap();
        let section = guestward_updates::collect(&config, &root);
        let rpm = section.data.as_ref().and_then(|r| r.rpm.as_ref());
        pending += rpm.map_or(0, |r| r.pending.len());
        advised += rpm.map_or(0, |r| r.pending.iter().filter(|p| !p.advisories.is_empty()).count());
    }
    // The seeds (createrepo_c's and modifyrepo_c's output, as dnf caches it and as yum does,
    // gzipped) offer the installed libuuid a newer release with a security advisory: the
    // corpus still reaches past the XML into the comparison.
    assert!(pending > 0 && advised > 0, "{pending} pending updates, {advised} with an advisory");
}

#[test]
fn yum_primary_db_corpus_replays_through_the_collector() {
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot::new(dir.path()).unwrap();
    let config = Config { check_processes: false, ..Config::default() };
    let (mut pending, mut sqlite_problems) = (0, 0);
    for f in fuzz_inputs("yum_primary_db") {
        write_fuzz_yum_db_tree(dir.path(), &std::fs::read(&f).unwrap()).unwrap();
        let section = guestward_updates::collect(&config, &root);
        let rpm = section.data.as_ref().and_then(|r| r.rpm.as_ref());
        pending += rpm.map_or(0, |r| r.pending.len());
        sqlite_problems +=
            section.problems.iter().filter(|p| p.message.contains("fuzz-primary.sqlite")).count();
    }
    // The seed (createrepo_c's database offering libuuid 2.32.1-44.el8_9) reaches the
    // comparison with the installed 2.32.1-42.el8_8; the corpus's damaged databases are
    // problems naming the cached file.
    assert!(pending > 0 && sqlite_problems > 0, "{pending} pending updates, {sqlite_problems} problems");
}
