//! Replays the committed fuzz corpora of this crate's parsers (`fuzz/corpus/dpkg_admin`,
//! `fuzz/corpus/rpm_files`) and any crash found by fuzzing (`fuzz/regressions/<target>/`)
//! through the fuzz targets' own calls, so a parser change that brings a panic or a hang back
//! fails the ordinary test suite, without nightly.

use guestward_core::testing::fuzz_inputs as inputs;
use guestward_pkgfiles::{dpkg, rpm, transaction};
use std::path::Path;

#[test]
fn dpkg_admin_corpus_replays_without_panics() {
    let files = inputs("dpkg_admin");
    assert!(files.len() >= 8, "fuzz/corpus/dpkg_admin is missing: {files:?}");
    let (mut stanzas, mut sums, mut log_lines) = (0, 0, 0);
    for f in files {
        let data = std::fs::read(&f).unwrap();
        let shown = Path::new("/fuzz");
        stanzas += dpkg::parse_status(&data, shown).0.len();
        sums += dpkg::parse_md5sums(&data, shown).0.len();
        let _ = dpkg::parse_list(&data);
        let _ = dpkg::parse_diversions(&data, shown);
        let text = String::from_utf8_lossy(&data);
        log_lines += text.lines().filter_map(transaction::parse_log_line).count();
        let _ = transaction::holder_in_proc_locks(&text, 0x801, 131_090);
    }
    // The real files among the seeds still parse: the replay reaches the parsers' insides,
    // not only their first refusal.
    assert!(
        stanzas > 0 && sums > 0 && log_lines > 0,
        "{stanzas} stanzas, {sums} md5sums lines, {log_lines} log lines"
    );
}

#[test]
fn rpm_files_corpus_replays_without_panics() {
    let files = inputs("rpm_files");
    let decoded = files.iter().filter(|f| rpm::decode(1, &std::fs::read(f).unwrap()).is_ok()).count();
    assert!(decoded > 0, "no input of {} decodes", files.len());
}
