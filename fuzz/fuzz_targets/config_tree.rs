//! Any bytes as the account, privilege and package-index files one scan reads together, in a
//! scratch root: the input is cut into `/etc/passwd`, `/etc/shadow`, `/etc/sudoers`,
//! `/root/.aws/credentials`, an apt `InRelease`, its plain `Packages` list, dpkg's `status`,
//! and three more lists compressed (or not: any bytes) as gzip, lz4 and xz
//! (`guestward_core::testing::write_fuzz_config_tree`). Then the access collector and the
//! updates collector read the tree, with every bound they have.
#![no_main]

use guestward_core::testing::write_fuzz_config_tree;
use libfuzzer_sys::fuzz_target;

mod scratch;

fuzz_target!(|data: &[u8]| {
    let (dir, root) = scratch::tree();
    write_fuzz_config_tree(dir.path(), data).expect("write the tree");
    let _ = guestward_access::scan(&guestward_access::Config::default(), root);
    let updates =
        guestward_updates::Config { check_processes: false, ..guestward_updates::Config::default() };
    let _ = guestward_updates::collect(&updates, root);
});
