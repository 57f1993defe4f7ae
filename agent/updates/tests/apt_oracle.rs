//! The live machine against apt itself: the upgradable set and its security subset equal what
//! `apt list --upgradable` prints (after `apt-get update`, which `.ci/run` runs; this test
//! never refreshes the lists itself).

use guestward_core::HostRoot;
use guestward_core::testing::skip_or_fail;
use std::collections::BTreeSet;
use std::process::Command;

/// `apt list --upgradable` as (name:arch, security) pairs. Its lines are
/// `name/suite1,suite2 version arch [upgradable from: old]`.
fn apt_upgradable() -> Option<BTreeSet<(String, bool)>> {
    let out = Command::new("apt").args(["list", "--upgradable"]).env("LC_ALL", "C").output().ok()?;
    assert!(out.status.success(), "apt list failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut set = BTreeSet::new();
    for line in text.lines().filter(|l| l.contains("[upgradable from:")) {
        let (name, rest) = line.split_once('/').unwrap();
        let mut words = rest.split_whitespace();
        let suites = words.next().unwrap();
        let arch = words.nth(1).unwrap();
        let security = suites.split(',').any(|s| s.ends_with("-security"));
        set.insert((format!("{name}:{arch}"), security));
    }
    Some(set)
}

#[test]
fn upgradable_and_security_subset_equal_apt_list_upgradable() {
    let test = "upgradable_and_security_subset_equal_apt_list_upgradable";
    if !std::path::Path::new("/var/lib/dpkg/status").exists() {
        return skip_or_fail(test, "no dpkg database on this machine");
    }
    let Some(expected) = apt_upgradable() else {
        return skip_or_fail(test, "apt is not installed");
    };
    let section = guestward_updates::collect(&guestward_updates::Config::default(), &HostRoot::live());
    let data = section.data.as_ref().unwrap();
    let apt = data.apt.as_ref().expect("a dpkg host has an apt part");
    if apt.sources.is_empty() {
        return skip_or_fail(test, "no apt lists on this machine (run apt-get update)");
    }
    let got: BTreeSet<(String, bool)> = apt
        .pending
        .iter()
        .map(|p| (format!("{}:{}", p.name, p.arch.as_deref().unwrap_or("")), p.security))
        .collect();
    assert_eq!(got, expected, "ours (left) and apt list --upgradable (right) differ");
    // The candidate versions, too.
    let out = Command::new("apt").args(["list", "--upgradable"]).env("LC_ALL", "C").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for p in &apt.pending {
        let line = text.lines().find(|l| l.starts_with(&format!("{}/", p.name))).unwrap();
        assert_eq!(line.split_whitespace().nth(1), Some(p.candidate.as_str()), "{line}");
    }
    eprintln!(
        "{} upgradable ({} security) from {} lists",
        got.len(),
        got.iter().filter(|g| g.1).count(),
        apt.sources.len()
    );
}
