//! Any bytes as a Berkeley DB hash `Packages` file.
#![no_main]

use guestward_rpmdb::{Backend, Limits, read_page_format};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_header_bytes: 1 << 20, max_headers: 10_000, ..Limits::default() };
    let _ = read_page_format(data, Backend::Bdb, Path::new("/fuzz/Packages"), &limits);
});
