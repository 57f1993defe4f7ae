//! Any bytes as each file of dpkg's admin directory that package-aware FIM and
//! `fim verify-packages` read (`status`, `info/*.md5sums`, `info/*.list`, `diversions`), as
//! `dpkg.log` lines and as `/proc/locks` (the package-transaction evidence).
#![no_main]

use guestward_pkgfiles::{dpkg, transaction};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let shown = Path::new("/fuzz");
    let _ = dpkg::parse_status(data, shown);
    let _ = dpkg::parse_md5sums(data, shown);
    let _ = dpkg::parse_list(data);
    let _ = dpkg::parse_diversions(data, shown);
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        let _ = transaction::parse_log_line(line);
    }
    // Device 08:01 (0x801) inode 131090, as in the seed, and an inode no line names.
    let _ = transaction::holder_in_proc_locks(&text, 0x801, 131_090);
    let _ = transaction::holder_in_proc_locks(&text, u64::MAX, u64::MAX);
});
