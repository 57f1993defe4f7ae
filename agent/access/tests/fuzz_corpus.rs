//! Replays the fuzz corpora that reach this crate (`scanned_text`: each line as an
//! authorized_keys line; `scanned_tree`: any bytes as `/etc/ssh/sshd_config`; `config_tree`:
//! accounts, sudoers and cloud keys read by the whole collector) the way the fuzz targets call
//! it, so a change that brings a panic or a hang back fails here.

use guestward_access::{Location, keys, sshd};
use guestward_core::HostRoot;
use guestward_core::testing::fuzz_inputs;
use std::path::Path;

#[test]
fn text_corpus_replays_as_authorized_keys_lines() {
    let mut keys_read = 0;
    for f in fuzz_inputs("scanned_text") {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        for (i, line) in text.lines().enumerate() {
            let at = Location { file: "/fuzz".into(), line: u32::try_from(i + 1).unwrap() };
            keys_read += usize::from(matches!(keys::parse_line("fuzz", at, line), Ok(Some(_))));
        }
    }
    assert!(keys_read > 0, "no line of the corpus is a key");
}

#[test]
fn tree_corpus_replays_as_sshd_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("etc/ssh")).unwrap();
    let root = HostRoot::new(dir.path()).unwrap();
    let mut read = 0;
    for f in fuzz_inputs("scanned_tree") {
        std::fs::write(dir.path().join("etc/ssh/sshd_config"), std::fs::read(&f).unwrap()).unwrap();
        read += usize::from(matches!(sshd::effective(&root, Path::new("/etc/ssh/sshd_config")), Ok(Some(_))));
    }
    assert!(read > 0, "no input of the corpus was read as sshd_config");
}

#[test]
fn config_tree_corpus_replays_through_the_collector() {
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot::new(dir.path()).unwrap();
    let mut accounts = 0;
    for f in fuzz_inputs("config_tree") {
        guestward_core::testing::write_fuzz_config_tree(dir.path(), &std::fs::read(&f).unwrap()).unwrap();
        let (report, _) = guestward_access::scan(&guestward_access::Config::default(), &root);
        accounts += report.accounts.len();
    }
    assert!(accounts > 0, "no input of the corpus holds an account");
}
