//! The rpm part of the packages section, from real rpm databases laid out as on a host.

use guestward_core::{HostRoot, SectionStatus};
use guestward_packages::{Config, collect};
use std::path::{Path, PathBuf};

fn rpm_fixture(rel: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/rpmdb")).join(rel)
}

#[test]
fn amazon_linux_2023_rpmdb_is_inventoried() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("var/lib/rpm");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(rpm_fixture("amazonlinux2023-plain/rpmdb.sqlite"), dir.join("rpmdb.sqlite")).unwrap();
    let section = collect(&HostRoot::new(tmp.path()).unwrap(), &Config::default());
    assert_eq!(section.status, SectionStatus::Ok, "{:?}", section.problems);
    let report = section.data.unwrap();
    assert!(report.dpkg.is_none());
    let rpm = report.rpm.as_ref().unwrap();
    assert_eq!(rpm.db_path, "/var/lib/rpm/rpmdb.sqlite");
    assert_eq!(rpm.packages.len(), 103);
    assert_eq!(report.installed_count(), 103);
    let mut out = Vec::new();
    guestward_packages::render_summary(&report, &mut out).unwrap();
    assert!(String::from_utf8(out).unwrap().contains("rpm       103 installed"));
}

#[test]
fn suse_ndb_under_usr_lib_sysimage_is_found() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("usr/lib/sysimage/rpm");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(rpm_fixture("sle15-bci/Packages.db"), dir.join("Packages.db")).unwrap();
    let section = collect(&HostRoot::new(tmp.path()).unwrap(), &Config::default());
    let rpm = section.data.unwrap().rpm.unwrap();
    assert_eq!(rpm.packages.len(), 35);
}

#[test]
fn a_damaged_rpm_database_degrades_the_section_and_keeps_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("var/lib/rpm");
    std::fs::create_dir_all(&dir).unwrap();
    let full = std::fs::read(rpm_fixture("synthetic-bdb-al2023-le-4k/Packages")).unwrap();
    std::fs::write(dir.join("Packages"), &full[..full.len() / 2]).unwrap();
    let section = collect(&HostRoot::new(tmp.path()).unwrap(), &Config::default());
    assert_eq!(section.status, SectionStatus::Degraded);
    assert!(section.problems.iter().any(|p| p.message.contains("truncated")), "{:?}", section.problems);
    let rpm = section.data.unwrap().rpm.unwrap();
    assert!(rpm.packages.len() > 20 && rpm.packages.len() < 103, "{}", rpm.packages.len());
}

#[test]
fn a_host_without_rpm_has_no_rpm_part_and_no_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let section = collect(&HostRoot::new(tmp.path()).unwrap(), &Config::default());
    assert!(section.problems.is_empty(), "{:?}", section.problems);
    assert!(section.data.unwrap().rpm.is_none());
}
