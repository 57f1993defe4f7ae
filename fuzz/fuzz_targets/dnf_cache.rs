//! Any bytes as the repository caches dnf and yum leave on an Amazon Linux or RHEL host, in a
//! scratch root over a fixed rpm database: the input is cut into a dnf cache's `repomd.xml`,
//! `primary.xml` and `updateinfo.xml`, and a yum cache's `repomd.xml` with its `primary` and
//! `updateinfo` gzipped, or not (`guestward_core::testing::write_fuzz_dnf_tree`). Then the
//! updates collector reads the tree, with every bound it has. A mirror serves these files, and
//! unless the repository's metadata is signed (`repo_gpgcheck`) dnf caches what it is served.
#![no_main]

use guestward_core::HostRoot;
use guestward_core::testing::write_fuzz_dnf_tree;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// One scratch root for the whole run; each input rewrites every file.
fn tree() -> &'static (tempfile::TempDir, HostRoot) {
    static TREE: OnceLock<(tempfile::TempDir, HostRoot)> = OnceLock::new();
    TREE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("scratch directory");
        let root = HostRoot::new(dir.path()).expect("root");
        (dir, root)
    })
}

fuzz_target!(|data: &[u8]| {
    let (dir, root) = tree();
    write_fuzz_dnf_tree(dir.path(), data).expect("write the tree");
    let updates =
        guestward_updates::Config { check_processes: false, ..guestward_updates::Config::default() };
    let _ = guestward_updates::collect(&updates, root);
});
