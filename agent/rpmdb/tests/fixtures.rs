//! Every package of every fixture database, field by field, against what rpm printed.

use crate::fixture_dir;
use guestward_core::HostRoot;
use guestward_rpmdb::header::{Header, tags};
use guestward_rpmdb::{
    Backend, HeaderError, Limits, RpmInventory, RpmPackage, detect_in_dir, package_from_blob, read_database,
};
use std::path::Path;

fn none(v: Option<String>) -> String {
    v.unwrap_or_else(|| "(none)".to_owned())
}

/// The line rpm's `--queryformat '%{NAME}\t%{EPOCH}\t%{VERSION}\t%{RELEASE}\t%{ARCH}\n'` prints.
pub(crate) fn qf(p: &RpmPackage) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{}",
        p.name,
        none(p.epoch.map(|e| e.to_string())),
        p.version,
        p.release,
        none(p.arch.clone())
    )
}

fn read_fixture(dir: &str) -> RpmInventory {
    let root = HostRoot::new(fixture_dir().join(dir)).unwrap();
    let (found, errors) = detect_in_dir(&root, Path::new("/"));
    assert!(errors.is_empty(), "{dir}: {errors:?}");
    assert_eq!(found.len(), 1, "{dir}: {found:?}");
    read_database(&root, &found[0].host_path, found[0].backend, &Limits::default()).unwrap()
}

/// Compares the packages with `expected.sorted.tsv`, field by field, with a message naming
/// the package and the field that differs.
fn compare_with_rpm(dir: &str, expected_backend: Backend) -> RpmInventory {
    let inv = read_fixture(dir);
    assert_eq!(inv.backend, expected_backend, "{dir}");
    assert!(inv.corrupt.is_empty(), "{dir}: {:?}", inv.corrupt);
    assert!(inv.problems.is_empty(), "{dir}: {:?}", inv.problems);
    let text = std::fs::read_to_string(fixture_dir().join(dir).join("expected.sorted.tsv")).unwrap();
    let expected: Vec<&str> = text.lines().collect();
    let mut got: Vec<String> = inv.packages.iter().map(qf).collect();
    got.sort(); // byte order, like LC_ALL=C sort
    assert_eq!(got.len(), expected.len(), "{dir}: package count");
    const FIELDS: [&str; 5] = ["name", "epoch", "version", "release", "arch"];
    for (g, e) in got.iter().zip(&expected) {
        let gf: Vec<&str> = g.split('\t').collect();
        let ef: Vec<&str> = e.split('\t').collect();
        assert_eq!(ef.len(), 5, "{dir}: expected line {e:?}");
        for i in 0..5 {
            assert_eq!(gf[i], ef[i], "{dir}: package {:?}: field {} differs", ef[0], FIELDS[i]);
        }
    }
    inv
}

#[test]
fn amazonlinux2023_sqlite_matches_rpm() {
    let inv = compare_with_rpm("amazonlinux2023-plain", Backend::Sqlite);
    assert_eq!(inv.packages.len(), 103);
    // SQLite is read in hnum order, which is also rpm's iteration order.
    let text =
        std::fs::read_to_string(fixture_dir().join("amazonlinux2023-plain/expected.rpm-qa.tsv")).unwrap();
    let in_order: Vec<String> = inv.packages.iter().map(qf).collect();
    assert_eq!(in_order, text.lines().collect::<Vec<_>>());
}

#[test]
fn amazonlinux2023_other_fields_match_upstream_list() {
    // upstream-packages.csv (go-rpmdb's test data, fields separated by '¶'):
    // epoch, name, version, release, arch, sourcerpm, size, license, vendor, summary, sigmd5.
    let inv = read_fixture("amazonlinux2023-plain");
    let text =
        std::fs::read_to_string(fixture_dir().join("amazonlinux2023-plain/upstream-packages.csv")).unwrap();
    let mut checked = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split('¶').collect();
        assert_eq!(f.len(), 11, "{line}");
        let p = inv
            .packages
            .iter()
            .find(|p| p.name == f[1] && p.version == f[2] && p.release == f[3])
            .unwrap_or_else(|| panic!("{} not read", f[1]));
        let ctx = &p.name;
        // The list writes "(none)" or nothing for a tag the header lacks, and rpm's
        // gpg-pubkey headers store the literal string "(none)" as SOURCERPM: compare absent,
        // empty and "(none)" as one value.
        let norm = |v: Option<&str>| match v {
            None | Some("") | Some("(none)") => String::new(),
            Some(v) => v.to_owned(),
        };
        assert_eq!(norm(p.source_rpm.as_deref()), norm(Some(f[5])), "{ctx}: source_rpm");
        assert_eq!(p.size_bytes.unwrap_or(0).to_string(), f[6], "{ctx}: size");
        assert_eq!(norm(p.license.as_deref()), norm(Some(f[7])), "{ctx}: license");
        assert_eq!(norm(p.vendor.as_deref()), norm(Some(f[8])), "{ctx}: vendor");
        assert_eq!(norm(p.digests.sigmd5.as_deref()), norm(Some(f[10])), "{ctx}: sigmd5");
        checked += 1;
    }
    assert!(checked >= 100, "only {checked} rows");
    // Every real package header carries verified SHA-256 and SHA-1 header digests.
    let verified =
        inv.packages.iter().filter(|p| p.digests.sha256.is_some() && p.digests.sha1.is_some()).count();
    assert!(verified >= 102, "{verified} of {} verified", inv.packages.len());
    let bash = inv.packages.iter().find(|p| p.name == "bash").unwrap();
    assert!(bash.install_time.is_some());
    assert_eq!(bash.digests.signatures, vec!["rsa".to_owned()]);
}

#[test]
fn libuuid_bdb_little_endian_matches_rpm() {
    let inv = compare_with_rpm("libuuid", Backend::Bdb);
    assert_eq!(inv.packages[0].name, "libuuid");
}

#[test]
fn synthetic_bdb_little_endian_matches_rpm() {
    compare_with_rpm("synthetic-bdb-al2023-le-4k", Backend::Bdb);
}

#[test]
fn synthetic_bdb_big_endian_matches_rpm() {
    compare_with_rpm("synthetic-bdb-al2023-be-4k", Backend::Bdb);
}

#[test]
fn bdb_and_sqlite_copies_yield_identical_packages() {
    // The synthetic bdb files hold the same header blobs as the sqlite database, under the
    // same record numbers: everything (digests, sizes, times) must come out the same.
    let mut sqlite = read_fixture("amazonlinux2023-plain").packages;
    for dir in ["synthetic-bdb-al2023-le-4k", "synthetic-bdb-al2023-be-4k"] {
        let mut bdb = read_fixture(dir).packages;
        bdb.sort_by_key(|p| p.record);
        sqlite.sort_by_key(|p| p.record);
        assert_eq!(bdb, sqlite, "{dir}");
    }
}

#[test]
fn sle15_ndb_matches_rpm() {
    let inv = compare_with_rpm("sle15-bci", Backend::Ndb);
    assert_eq!(inv.packages.len(), 35);
}

#[test]
fn sle15_ndb_older_revision_matches_rpm() {
    compare_with_rpm("sle15-bci-v2022", Backend::Ndb);
}

#[test]
fn blob_with_bad_digests_is_reported_corrupt_like_rpm() {
    // rpm: "Header SHA256 digest: BAD (Expected 8940d5... != 12f66c...)" and skips it.
    let blob = std::fs::read(fixture_dir().join("blob/blob.bin")).unwrap();
    let (err, nevra) = package_from_blob(1, &blob).unwrap_err();
    match err {
        HeaderError::DigestMismatch { algorithm, expected, computed } => {
            assert_eq!(algorithm, "SHA256");
            assert_eq!(expected, "8940d54a34bf5a2fe06e062c7e88dfddcf5f0b161ea31e56ffea2bd43bff23a8");
            assert_eq!(computed, "12f66cdfd2dbe5caf0d5b7e65d2dd85d9fb1144c8d6a94d70d8ec0f8c946b020");
        }
        other => panic!("expected a digest mismatch, got {other}"),
    }
    assert_eq!(nevra.as_deref(), Some("publicsuffix-list-dafsa-20210518-2.fc35.noarch"));
}

#[test]
fn blob_fields_match_rpm_nodigest_listing() {
    // With --nodigest rpm lists the header; our parser reads the same fields from it.
    let blob = std::fs::read(fixture_dir().join("blob/blob.bin")).unwrap();
    let h = Header::parse(&blob).unwrap();
    let s = |t| h.string(t).map(|s| s.into_owned()).unwrap_or_else(|| "(none)".into());
    let epoch = h.integer(tags::EPOCH).map(|e| e.to_string()).unwrap_or_else(|| "(none)".into());
    let line =
        format!("{}\t{epoch}\t{}\t{}\t{}", s(tags::NAME), s(tags::VERSION), s(tags::RELEASE), s(tags::ARCH));
    let expected = std::fs::read_to_string(fixture_dir().join("blob/expected.nodigest.tsv")).unwrap();
    assert_eq!(line, expected.trim_end());
    // SHA-1 is wrong too (rpm: "Header SHA1 digest: BAD (Expected f5a898... != faab97...)").
    assert_eq!(s(tags::SHA1HEADER), "f5a8982d6bac924b514113a6e91bb4657d786666");
}

#[test]
fn bad_blob_in_a_database_is_listed_as_corrupt_and_the_rest_read() {
    // Real rpmdb.sqlite copy plus the bad header inserted as one more record.
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("rpmdb.sqlite");
    std::fs::copy(fixture_dir().join("amazonlinux2023-plain/rpmdb.sqlite"), &db).unwrap();
    let blob = std::fs::read(fixture_dir().join("blob/blob.bin")).unwrap();
    {
        let c = rusqlite_conn(&db);
        c.execute("INSERT INTO Packages (hnum, blob) VALUES (1000, ?1)", [&blob]).unwrap();
    }
    let root = HostRoot::new(tmp.path()).unwrap();
    let inv = read_database(&root, Path::new("/rpmdb.sqlite"), Backend::Sqlite, &Limits::default()).unwrap();
    assert_eq!(inv.packages.len(), 103);
    assert_eq!(inv.corrupt.len(), 1);
    let c = &inv.corrupt[0];
    assert_eq!(c.record, 1000);
    assert_eq!(c.code, "digest_mismatch");
    assert!(c.reason.contains("/rpmdb.sqlite") && c.reason.contains("SHA256"), "{}", c.reason);
    assert!(!inv.packages.iter().any(|p| p.name == "publicsuffix-list-dafsa"));
}

fn rusqlite_conn(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

#[test]
fn inventory_round_trips_through_json() {
    let inv = read_fixture("sle15-bci");
    let json = serde_json::to_string(&inv).unwrap();
    let back: RpmInventory = serde_json::from_str(&json).unwrap();
    assert_eq!(back, inv);
    let schema = schemars::schema_for!(RpmInventory);
    let schema = serde_json::to_string(&schema).unwrap();
    assert!(schema.contains("source_rpm") && schema.contains("digest"), "schema lacks fields");
}

#[test]
fn render_table_lists_every_package() {
    let inv = read_fixture("libuuid");
    let mut out = Vec::new();
    guestward_rpmdb::render_table(&inv, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("libuuid") && text.contains("2.32.1-42.el8_8") && text.contains("x86_64"),
        "{text}"
    );
}

#[test]
fn small_pages_in_page_items_and_both_byte_orders() {
    // tiny-bdb-512: 512-byte pages written by db5.3_load; two real headers on overflow
    // chains, plus a 4-byte in-page value (not a header) that must be reported corrupt.
    for name in ["Packages.le", "Packages.be"] {
        let bytes = std::fs::read(fixture_dir().join("tiny-bdb-512").join(name)).unwrap();
        let inv =
            guestward_rpmdb::read_page_format(&bytes[..], Backend::Bdb, Path::new(name), &Limits::default())
                .unwrap();
        assert!(inv.problems.is_empty(), "{name}: {:?}", inv.problems);
        let mut records: Vec<u32> = inv.packages.iter().map(|p| p.record).collect();
        records.sort();
        assert_eq!(records, vec![5, 103], "{name}");
        assert_eq!(inv.corrupt.len(), 1, "{name}");
        assert_eq!(inv.corrupt[0].record, 7);
        assert_eq!(inv.corrupt[0].code, "malformed_header");
        assert!(inv.packages.iter().all(|p| p.digests.sha256.is_some()));
    }
}
