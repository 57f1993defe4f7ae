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
        // The file arrays (verify-packages): every accessor on every tag type it may meet.
        for tag in [1027, 1028, 1029, 1030, 1034, 1035, 1036, 1037, 1039, 1040, 1045, 1116, 1117, 1118, 5008, 5011] {
            let _ = h.string_array_bytes(tag);
            let _ = h.string_array(tag);
            let _ = h.int16_array(tag);
            let _ = h.int32_array(tag);
            let _ = h.int64_array(tag);
            let _ = h.int8_array(tag);
            let _ = h.int_array(tag);
        }
    }
});
