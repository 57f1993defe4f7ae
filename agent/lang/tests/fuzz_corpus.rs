//! Replays the fuzz corpora that reach this crate (`scanned_text`: its parsers of single
//! files; `scanned_tree`: any bytes as a jar under a Java root, through the whole walk) the way
//! the fuzz targets call it, so a change that brings a panic or a hang back fails here.

use crate::common::{Tree, config};
use guestward_core::testing::fuzz_inputs;
use guestward_lang::{java, node, python};

#[test]
fn text_corpus_replays_through_the_file_parsers() {
    let mut parsed = 0;
    for f in fuzz_inputs("scanned_text") {
        let data = std::fs::read(&f).unwrap();
        parsed += usize::from(node::parse_package_json(&data).is_ok());
        parsed += usize::from(python::parse_metadata_headers(&data).is_some());
        let text = String::from_utf8_lossy(&data);
        parsed += usize::from(!java::parse_properties(&text).is_empty());
        parsed += usize::from(!java::parse_manifest(&text).is_empty());
    }
    assert!(parsed > 0, "no input of the corpus parses: the replay would test only refusals");
}

#[test]
fn tree_corpus_replays_as_a_jar_under_a_java_root() {
    let t = Tree::new();
    let mut found = 0;
    for f in fuzz_inputs("scanned_tree") {
        t.write("/opt/app-1.0.jar", std::fs::read(&f).unwrap());
        let (report, _) = t.scan_within(20, &config(&[], &["/opt"], &[]));
        found += report.packages.len();
    }
    assert!(found > 0, "no input of the corpus is a jar the walk reads");
}
