//! Any bytes as the repository caches dnf and yum leave on an Amazon Linux or RHEL host, in a
//! scratch root over a fixed rpm database: the input is cut into a dnf cache's `repomd.xml`,
//! `primary.xml` and `updateinfo.xml`, and a yum cache's `repomd.xml` with its `primary` and
//! `updateinfo` gzipped, or not (`guestward_core::testing::write_fuzz_dnf_tree`). Then the
//! updates collector reads the tree, with every bound it has. A mirror serves these files, and
//! unless the repository's metadata is signed (`repo_gpgcheck`) dnf caches what it is served.
#![no_main]

use guestward_core::testing::write_fuzz_dnf_tree;
use libfuzzer_sys::fuzz_target;

mod scratch;

fuzz_target!(|data: &[u8]| {
    let (dir, root) = scratch::tree();
    write_fuzz_dnf_tree(dir.path(), data).expect("write the tree");
    let updates =
        guestward_updates::Config { check_processes: false, ..guestward_updates::Config::default() };
    let _ = guestward_updates::collect(&updates, root);
});
