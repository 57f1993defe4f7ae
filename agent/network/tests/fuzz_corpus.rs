//! Replays the `network_records` fuzz corpus through the target's own calls, so a change that
//! brings a panic or a hang back to the netlink or `/proc` readers fails here.

use guestward_core::testing::fuzz_inputs;

#[test]
fn records_corpus_replays_through_the_netlink_and_proc_readers() {
    let (mut inet, mut unix) = (0, 0);
    for f in fuzz_inputs("network_records") {
        let data = std::fs::read(&f).unwrap();
        let (i, u) = guestward_network::fuzzing::netlink_batch(&data);
        (inet, unix) = (inet + i, unix + u);
        guestward_network::fuzzing::proc_text(&data);
    }
    // The seeds hold three TCP records and two Unix stream listeners (and a datagram socket,
    // which is not one): the corpus still exercises the readers past their first checks.
    assert!(inet >= 3 && unix >= 2, "{inet} TCP records and {unix} Unix listeners read");
}
