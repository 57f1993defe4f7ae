//! Replays the `imds_answers` fuzz corpus through the target's own call, so a change to the
//! readers of the metadata service's answers that brings back a panic, a table that could
//! drive a terminal or a report whose JSON reads back otherwise fails here.

use guestward_core::testing::{fuzz_inputs, fuzz_parts};

#[test]
fn imds_answers_corpus_replays_through_the_readers_the_table_and_the_json() {
    let mut documents = 0;
    for f in fuzz_inputs("imds_answers") {
        let data = std::fs::read(&f).unwrap();
        documents += guestward_cloud::fuzzing::imds_answers(&fuzz_parts(&data));
    }
    // The seeds hold every kind of document (the identity document, `iam/info`, maintenance
    // events, a spot notice, a rebalance recommendation): the corpus still reaches past the
    // JSON parse.
    assert!(documents >= 5, "{documents} documents read");
}

#[test]
fn a_hostile_seed_reaches_every_reader_with_what_it_must_refuse_or_escape() {
    let data =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/imds_answers/seed-hostile"))
            .unwrap();
    let parts = fuzz_parts(&data);
    assert_eq!(parts.len(), guestward_cloud::fuzzing::PARTS.len());
    // An escape sequence in the instance id, in the profile ARN and a tag key; a path in the
    // MAC list; a newline that once forged a table row in the spot notice.
    assert!(parts[0].contains(&0x1b) && parts[9].contains(&0x1b));
    assert!(parts[8].windows(3).any(|w| w == b"../"));
    let read = guestward_cloud::fuzzing::imds_answers(&parts);
    assert_eq!(read, 4, "the identity document, iam/info, the (empty) maintenance list and the spot notice");
}
