//! Damaged copies of the real databases: every package that can be read is read, the
//! damage is reported with its offset, and nothing panics or hangs.

use crate::fixture_dir;
use guestward_rpmdb::{Backend, Limits, read_page_format};
use std::path::Path;

fn read(
    bytes: &[u8],
    backend: Backend,
) -> Result<guestward_rpmdb::RpmInventory, guestward_rpmdb::RpmdbError> {
    read_page_format(bytes, backend, Path::new("/var/lib/rpm/Packages"), &Limits::default())
}

#[test]
fn truncated_bdb_yields_the_packages_before_the_cut_and_a_problem() {
    let full = std::fs::read(fixture_dir().join("synthetic-bdb-al2023-le-4k/Packages")).unwrap();
    let mut last = 0;
    for cut in [4096 * 2, full.len() / 4, full.len() / 2, full.len() - 4096, full.len() - 1] {
        let inv = read(&full[..cut], Backend::Bdb).unwrap();
        assert!(!inv.problems.is_empty(), "cut at {cut}: no problem reported");
        assert!(inv.problems[0].message.contains("truncated"), "{:?}", inv.problems);
        assert!(
            inv.packages.len() < 103 && inv.packages.len() >= last,
            "cut at {cut}: {}",
            inv.packages.len()
        );
        last = inv.packages.len();
    }
    assert!(last > 90, "a file missing its last page still yields most packages ({last})");
}

#[test]
fn truncated_ndb_yields_the_packages_before_the_cut() {
    let full = std::fs::read(fixture_dir().join("sle15-bci/Packages.db")).unwrap();
    let inv = read(&full[..full.len() / 2], Backend::Ndb).unwrap();
    assert!(inv.packages.len() > 5 && inv.packages.len() < 35, "{}", inv.packages.len());
    assert!(inv.problems.iter().all(|p| p.message.contains("byte offset")), "{:?}", inv.problems);
    assert!(!inv.problems.is_empty());
}

#[test]
fn a_flipped_byte_in_one_header_costs_only_that_header() {
    // Flip one byte inside the data of some overflow page: exactly one header changes,
    // and its digest check (or structure check) catches it.
    let mut f = std::fs::read(fixture_dir().join("synthetic-bdb-al2023-be-4k/Packages")).unwrap();
    let page = 4096 * 40;
    assert_eq!(f[page + 25], 7, "page 40 of the fixture is an overflow page");
    f[page + 2000] ^= 0x55;
    let inv = read(&f, Backend::Bdb).unwrap();
    assert_eq!(inv.packages.len() + inv.corrupt.len(), 103, "{:?}", inv.problems);
    assert_eq!(inv.corrupt.len(), 1, "{:?}", inv.corrupt);
    assert!(inv.corrupt[0].offset.is_some());
}

#[test]
fn a_cyclic_overflow_chain_in_a_real_file_terminates() {
    let mut f = std::fs::read(fixture_dir().join("synthetic-bdb-al2023-le-4k/Packages")).unwrap();
    // Point every overflow page's next_pgno at itself.
    let pages = f.len() / 4096;
    let mut changed = 0;
    for p in 1..pages {
        let off = p * 4096;
        if f[off + 25] == 7 {
            f[off + 16..off + 20].copy_from_slice(&(p as u32).to_le_bytes());
            changed += 1;
        }
    }
    assert!(changed > 10);
    let inv = read(&f, Backend::Bdb).unwrap();
    assert!(!inv.problems.is_empty());
    assert!(inv.problems.iter().any(|p| p.message.contains("loop")), "{:?}", inv.problems);
}

#[test]
fn random_damage_never_panics() {
    // A deterministic pseudo-random walk over byte flips in all three page formats; the
    // fuzz targets do this at scale, this keeps a bounded version in the test suite.
    let files = [
        ("synthetic-bdb-al2023-le-4k/Packages", Backend::Bdb),
        ("libuuid/Packages", Backend::Bdb),
        ("sle15-bci/Packages.db", Backend::Ndb),
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (name, backend) in files {
        let orig = std::fs::read(fixture_dir().join(name)).unwrap();
        for _ in 0..40 {
            let mut f = orig.clone();
            for _ in 0..8 {
                let at = (next() as usize) % f.len();
                f[at] = next() as u8;
            }
            // Only the outcome's existence matters: Ok with problems or a clean Err.
            if let Ok(inv) = read(&f, backend) {
                assert!(inv.packages.len() + inv.corrupt.len() <= 103);
            }
        }
    }
}
