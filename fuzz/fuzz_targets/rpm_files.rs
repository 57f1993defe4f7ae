//! Any bytes as an rpm header blob read for its file list (package-aware FIM and
//! `fim verify-packages`): names, digests and their algorithm, modes, sizes, owners, flags.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = guestward_pkgfiles::rpm::decode(1, data);
});
