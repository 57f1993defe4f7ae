//! rpm: the index and verification against a fixture database, with `rpm` as the oracle.

use crate::support::{have, rpm, rpm_root};
use guestward_core::HostRoot;
use guestward_core::testing::skip_or_fail;
use guestward_fim::package::{DigestAlgo, PackageManager};
use guestward_pkgfiles::Index;
use std::path::Path;

#[test]
fn index_owners_agree_with_rpm_qf() {
    if !have("rpm") {
        skip_or_fail("index_owners_agree_with_rpm_qf", "rpm is not installed");
        return;
    }
    let root = rpm_root();
    let (index, problems) = Index::load(&HostRoot::new(root.path()).unwrap());
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(index.packages().len(), 103);
    let all = rpm(root.path()).args(["-qa", "--qf", "[%{FILENAMES}\\n]"]).output().unwrap();
    let mut paths: Vec<String> = String::from_utf8_lossy(&all.stdout).lines().map(str::to_owned).collect();
    paths.sort();
    paths.dedup();
    assert!(paths.len() > 1000, "{}", paths.len());
    let step = paths.len() / 12;
    let mut sample: Vec<&str> = paths.iter().step_by(step).map(String::as_str).collect();
    sample.extend(["/usr/bin/bash", "/etc/passwd", "/usr/lib64"]);
    for path in sample {
        let out = rpm(root.path()).args(["-qf", "--qf", "%{NAME}\\n", path]).output().unwrap();
        let mut theirs: Vec<String> =
            String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
        theirs.sort();
        theirs.dedup();
        let expected = index.expected(Path::new(path));
        let mut ours: Vec<String> = expected.iter().map(|e| e.owner.name.clone()).collect();
        ours.sort();
        ours.dedup();
        assert_eq!(ours, theirs, "{path}");
        assert!(expected.iter().all(|e| e.owner.manager == PackageManager::Rpm && e.mode.is_some()));
    }
    let bash = index.expected(Path::new("/usr/bin/bash"));
    let d = bash[0].digest.as_ref().unwrap();
    assert_eq!(d.algo, DigestAlgo::Sha256);
    let theirs =
        rpm(root.path()).args(["-q", "--qf", "[%{FILENAMES} %{FILEDIGESTS}\\n]", "bash"]).output().unwrap();
    let line = String::from_utf8_lossy(&theirs.stdout)
        .lines()
        .find(|l| l.starts_with("/usr/bin/bash "))
        .unwrap()
        .to_owned();
    assert_eq!(line, format!("/usr/bin/bash {}", d.hex));
    assert_eq!(bash[0].user.as_deref(), Some("root"));
    assert_eq!(bash[0].mode, Some(0o100755));
}
