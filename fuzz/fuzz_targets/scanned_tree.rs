//! Any bytes as files the scan reads through a root, with the walks and bounds around the
//! parser: a jar under a Java root (the zip reader, nested archives, the inflate budget, the
//! entry and overlap checks that refuse zip bombs) and `/etc/ssh/sshd_config` (the effective
//! settings, with `Include` and `Match`).
#![no_main]

use guestward_core::{AbsolutePath, HostRoot};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::OnceLock;

/// One scratch root for the whole run; each input overwrites its two files.
fn tree() -> &'static (tempfile::TempDir, HostRoot) {
    static TREE: OnceLock<(tempfile::TempDir, HostRoot)> = OnceLock::new();
    TREE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("scratch directory");
        std::fs::create_dir_all(dir.path().join("opt")).expect("opt");
        std::fs::create_dir_all(dir.path().join("etc/ssh")).expect("etc/ssh");
        let root = HostRoot::new(dir.path()).expect("root");
        (dir, root)
    })
}

fuzz_target!(|data: &[u8]| {
    let (dir, root) = tree();
    std::fs::write(dir.path().join("opt/app-1.0.jar"), data).expect("write the jar");
    std::fs::write(dir.path().join("etc/ssh/sshd_config"), data).expect("write sshd_config");
    let config = guestward_lang::Config {
        java_roots: vec![AbsolutePath::new("/opt").expect("absolute")],
        ..guestward_lang::Config::without_roots()
    };
    let _ = guestward_lang::scan(root, &config);
    let _ = guestward_access::sshd::effective(root, Path::new("/etc/ssh/sshd_config"));
});
