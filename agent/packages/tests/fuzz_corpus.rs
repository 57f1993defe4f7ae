//! Replays the `scanned_text` fuzz corpus through dpkg's status parser, as the fuzz target
//! calls it, so a change that brings a panic or a hang back fails here.

use guestward_core::testing::fuzz_inputs;

#[test]
fn text_corpus_replays_as_dpkg_status() {
    let mut packages = 0;
    for f in fuzz_inputs("scanned_text") {
        let (inventory, _) = guestward_packages::dpkg::parse_status(&std::fs::read(&f).unwrap(), "/fuzz");
        packages += inventory.installed.len();
    }
    assert!(packages > 0, "no input of the corpus holds a package");
}
