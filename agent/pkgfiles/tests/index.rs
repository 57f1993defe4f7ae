//! The index on this machine's real dpkg database, checked against `dpkg-query -S`.

use guestward_core::HostRoot;
use guestward_core::testing::skip_or_fail;
use guestward_fim::package::{DigestAlgo, PackageManager};
use guestward_pkgfiles::Index;
use std::path::Path;
use std::process::Command;

fn dpkg_owners(path: &str) -> Option<Vec<String>> {
    let out = Command::new("dpkg-query").args(["-S", path]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| !l.starts_with("diversion by") && l.ends_with(&format!(": {path}")))?;
    let owners = line.rsplit_once(": ")?.0;
    Some(owners.split(", ").map(|o| o.split(':').next().unwrap_or(o).to_owned()).collect())
}

#[test]
fn live_index_agrees_with_dpkg_query() {
    if !Path::new("/var/lib/dpkg/status").exists()
        || Command::new("dpkg-query").arg("--version").output().is_err()
    {
        skip_or_fail("live_index_agrees_with_dpkg_query", "no dpkg database or dpkg-query here");
        return;
    }
    let started = std::time::Instant::now();
    let (index, problems) = Index::load(&HostRoot::live());
    eprintln!(
        "index: {} packages, {} entries, ~{} KiB, {:?}, problems {problems:?}",
        index.packages().len(),
        index.entry_count(),
        index.heap_bytes() / 1024,
        started.elapsed()
    );
    assert!(index.packages().len() > 10);
    // A few paths every Debian system has, the usr-merged spelling included.
    let mut checked = 0;
    for path in [
        "/usr/bin/dpkg",
        "/etc/debian_version",
        "/bin/sh",
        "/usr/bin/bash",
        "/bin/bash",
        "/etc/passwd",
        "/usr/share/doc/dpkg/copyright",
    ] {
        let expected = index.expected(Path::new(path));
        let mut ours: Vec<String> = expected.iter().map(|e| e.owner.name.clone()).collect();
        ours.sort();
        ours.dedup();
        // dpkg-query knows the spelling the package lists: ask for the other one too.
        let other = path.strip_prefix("/usr").map(str::to_owned).unwrap_or_else(|| format!("/usr{path}"));
        let mut theirs = dpkg_owners(path).or_else(|| dpkg_owners(&other)).unwrap_or_default();
        theirs.sort();
        theirs.dedup();
        assert_eq!(ours, theirs, "{path}: {expected:?}");
        for e in &expected {
            assert_eq!(e.owner.manager, PackageManager::Dpkg);
        }
        checked += usize::from(!theirs.is_empty());
    }
    assert!(checked >= 4, "only {checked} paths were owned");
    let dpkg = index.expected(Path::new("/usr/bin/dpkg"));
    let digest = dpkg[0].digest.as_ref().expect("dpkg's binary has an md5sums entry");
    assert_eq!(digest.algo, DigestAlgo::Md5);
    let md5 = Command::new("md5sum").arg("/usr/bin/dpkg").output().unwrap();
    assert!(String::from_utf8_lossy(&md5.stdout).starts_with(&digest.hex));
    assert!(index.expected(Path::new("/nonexistent/file")).is_empty());
}
