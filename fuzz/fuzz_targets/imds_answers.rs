//! Any bytes as the metadata service's answers (cut at each `\n\x1e\n` line, in the order of
//! `guestward_cloud::fuzzing::PARTS`): the identity document and its signatures, `iam/info`,
//! the lifecycle documents, the interface list and the tag keys, read by the collector's own
//! readers into a report that is then drawn into findings, rendered and written as JSON. An
//! endpoint can be pointed elsewhere, and anyone allowed to tag the instance writes its tags.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = guestward_cloud::fuzzing::imds_answers(&guestward_core::testing::fuzz_parts(data));
});
