//! Any bytes as an rpm header blob: parse, read every field, verify digests.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = guestward_rpmdb::package_from_blob(1, data);
    if let Ok(h) = guestward_rpmdb::header::Header::parse(data) {
        for tag in [1000, 1001, 1003, 1009, 5009, 261, 273, 5092] {
            let _ = h.string(tag);
            let _ = h.integer(tag);
            let _ = h.binary(tag);
        }
    }
});
