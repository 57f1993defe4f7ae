//! Backend detection in rpm directories through a HostRoot.

use crate::fixture_dir;
use guestward_core::HostRoot;
use guestward_rpmdb::{Backend, DEFAULT_RPM_DIRS, Limits, RpmdbError, detect_format, read_rpm_dirs};
use std::path::{Path, PathBuf};

fn defaults() -> Vec<PathBuf> {
    DEFAULT_RPM_DIRS.iter().map(PathBuf::from).collect()
}

#[test]
fn finds_the_database_behind_the_var_lib_rpm_symlink_once() {
    // Fedora/SUSE layout: /var/lib/rpm -> ../../usr/lib/sysimage/rpm.
    let tmp = tempfile::tempdir().unwrap();
    let sys = tmp.path().join("usr/lib/sysimage/rpm");
    std::fs::create_dir_all(&sys).unwrap();
    std::fs::create_dir_all(tmp.path().join("var/lib")).unwrap();
    std::fs::copy(fixture_dir().join("sle15-bci/Packages.db"), sys.join("Packages.db")).unwrap();
    std::os::unix::fs::symlink("../../usr/lib/sysimage/rpm", tmp.path().join("var/lib/rpm")).unwrap();
    let root = HostRoot::new(tmp.path()).unwrap();
    let scan = read_rpm_dirs(&root, &defaults(), &Limits::default());
    assert!(scan.errors.is_empty(), "{:?}", scan.errors);
    assert!(scan.ignored.is_empty(), "{:?}", scan.ignored);
    let inv = scan.inventory.unwrap();
    assert_eq!(inv.backend, Backend::Ndb);
    assert_eq!(inv.db_path, "/var/lib/rpm/Packages.db");
    assert_eq!(inv.packages.len(), 35);
}

#[test]
fn prefers_sqlite_and_notes_a_leftover_bdb() {
    // After an rpmdb --rebuilddb migration a stale Packages may remain next to rpmdb.sqlite.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("var/lib/rpm");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture_dir().join("amazonlinux2023-plain/rpmdb.sqlite"), dir.join("rpmdb.sqlite"))
        .unwrap();
    std::fs::copy(fixture_dir().join("libuuid/Packages"), dir.join("Packages")).unwrap();
    let root = HostRoot::new(tmp.path()).unwrap();
    let scan = read_rpm_dirs(&root, &defaults(), &Limits::default());
    assert_eq!(scan.inventory.unwrap().backend, Backend::Sqlite);
    assert_eq!(scan.ignored.len(), 1);
    assert_eq!(scan.ignored[0].backend, Backend::Bdb);
}

#[test]
fn a_host_without_rpm_says_not_found() {
    let tmp = tempfile::tempdir().unwrap();
    let root = HostRoot::new(tmp.path()).unwrap();
    let scan = read_rpm_dirs(&root, &defaults(), &Limits::default());
    assert!(scan.inventory.is_none());
    assert!(matches!(scan.errors.as_slice(), [RpmdbError::NotFound { .. }]), "{:?}", scan.errors);
}

#[test]
fn a_file_with_the_wrong_magic_is_reported_not_misread() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("var/lib/rpm");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Packages"), vec![0u8; 8192]).unwrap();
    let root = HostRoot::new(tmp.path()).unwrap();
    let scan = read_rpm_dirs(&root, &[PathBuf::from("/var/lib/rpm")], &Limits::default());
    assert!(scan.inventory.is_none());
    assert!(scan.errors.iter().any(|e| matches!(e, RpmdbError::UnknownFormat { .. })), "{:?}", scan.errors);
    assert_eq!(scan.errors[0].to_problem().code, "unknown_format");
}

#[test]
fn a_symlink_out_of_the_root_stays_inside_it() {
    // An untrusted snapshot's /var/lib/rpm/rpmdb.sqlite -> /etc/passwd must resolve inside
    // the snapshot, never to the scanning host's file.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("var/lib/rpm");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("rpmdb.sqlite")).unwrap();
    let root = HostRoot::new(tmp.path()).unwrap();
    let scan = read_rpm_dirs(&root, &[PathBuf::from("/var/lib/rpm")], &Limits::default());
    assert!(scan.inventory.is_none());
}

#[test]
fn detects_formats_by_magic() {
    let head = |p: &str| {
        let b = std::fs::read(fixture_dir().join(p)).unwrap();
        b[..512].to_vec()
    };
    assert_eq!(detect_format(&head("amazonlinux2023-plain/rpmdb.sqlite")), Some(Backend::Sqlite));
    assert_eq!(detect_format(&head("libuuid/Packages")), Some(Backend::Bdb));
    assert_eq!(detect_format(&head("synthetic-bdb-al2023-be-4k/Packages")), Some(Backend::Bdb));
    assert_eq!(detect_format(&head("sle15-bci/Packages.db")), Some(Backend::Ndb));
    assert_eq!(detect_format(b"hello"), None);
    let _ = Path::new("/");
}

#[test]
fn an_unopenable_sqlite_file_does_not_hide_a_good_ndb() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("var/lib/rpm");
    std::fs::create_dir_all(&dir).unwrap();
    // Right magic, garbage after it: SQLite refuses it.
    let mut bad = b"SQLite format 3\0".to_vec();
    bad.extend(vec![0xffu8; 4096]);
    std::fs::write(dir.join("rpmdb.sqlite"), bad).unwrap();
    std::fs::copy(fixture_dir().join("sle15-bci/Packages.db"), dir.join("Packages.db")).unwrap();
    let root = HostRoot::new(tmp.path()).unwrap();
    let scan = read_rpm_dirs(&root, &[PathBuf::from("/var/lib/rpm")], &Limits::default());
    assert_eq!(scan.inventory.unwrap().backend, Backend::Ndb);
    assert!(matches!(scan.errors.as_slice(), [RpmdbError::Sqlite { .. }]), "{:?}", scan.errors);
    assert_eq!(scan.errors[0].to_problem().path.as_deref(), Some("/var/lib/rpm/rpmdb.sqlite"));
}
