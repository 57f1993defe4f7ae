//! Any bytes as yum's SQLite `primary_db`, the repository metadata Amazon Linux 2 caches
//! (`/var/cache/yum/<arch>/<releasever>/<repo>/<hash>-primary.sqlite`), under a fixed
//! `repomd.xml` naming it and over a fixed rpm database
//! (`guestward_core::testing::write_fuzz_yum_db_tree`), read by the whole updates collector in
//! a scratch root: copied privately, opened read-only and `immutable` with views and triggers
//! off, SQLite's limits lowered, every statement under a deadline, the rows counted. A mirror
//! serves this file, and unless the repository's metadata is signed (`repo_gpgcheck`) yum
//! caches what it is served; whoever can write the scanned volume chooses it too.
#![no_main]

use guestward_core::testing::write_fuzz_yum_db_tree;
use libfuzzer_sys::fuzz_target;

mod scratch;

fuzz_target!(|data: &[u8]| {
    let (dir, root) = scratch::tree();
    write_fuzz_yum_db_tree(dir.path(), data).expect("write the tree");
    let updates =
        guestward_updates::Config { check_processes: false, ..guestward_updates::Config::default() };
    let _ = guestward_updates::collect(&updates, root);
});
