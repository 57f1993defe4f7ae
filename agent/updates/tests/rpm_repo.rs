//! The rpm side against dnf: rpms built here (`rpmbuild`), some installed into a fixture root
//! (`rpm --root --justdb`), newer ones published with `createrepo_c` plus an ALAS-style
//! `updateinfo.xml` (`modifyrepo_c`); dnf itself fills the root's cache
//! (`dnf --installroot ... updateinfo list`) and its answer is the oracle.

use guestward_core::HostRoot;
use guestward_core::testing::skip_or_fail;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const TEST: &str = "rpm_updates_and_advisories_equal_dnf_updateinfo_list";

fn have(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn build_rpm(top: &Path, name: &str, version: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(top).unwrap();
    let spec = top.join(format!("{name}.spec"));
    std::fs::write(
        &spec,
        format!("Name: {name}\nVersion: {version}\nRelease: 1\nSummary: t\nLicense: MIT\nBuildArch: noarch\n%description\nt\n%files\n"),
    )
    .unwrap();
    run(Command::new("rpmbuild")
        .arg("-bb")
        .arg("--define")
        .arg(format!("_topdir {}", top.display()))
        .arg(&spec));
    top.join(format!("RPMS/noarch/{name}-{version}-1.noarch.rpm"))
}

const UPDATEINFO: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<updates>
  <update author="amazon" from="alas@amazon.com" status="final" type="security" version="2.0">
    <id>ALAS-2026-0001</id>
    <title>Amazon Linux 2023 - ALAS-2026-0001: Important priority package update for gwtest-a</title>
    <issued date="2026-11-30 10:00:00"/>
    <severity>Important</severity>
    <description>A flaw was found in gwtest-a.</description>
    <references>
      <reference href="https://nvd.nist.gov/vuln/detail/CVE-2026-1111" id="CVE-2026-1111" title="" type="cve"/>
      <reference href="https://nvd.nist.gov/vuln/detail/CVE-2026-2222" id="CVE-2026-2222" title="" type="cve"/>
    </references>
    <pkglist><collection short="amazon-linux-2023"><name>amazon-linux-2023</name>
      <package arch="noarch" epoch="0" name="gwtest-a" release="1" src="gwtest-a-1.1-1.src.rpm" version="1.1">
        <filename>gwtest-a-1.1-1.noarch.rpm</filename>
      </package>
    </collection></pkglist>
  </update>
  <update author="amazon" from="alas@amazon.com" status="final" type="bugfix" version="2.0">
    <id>ALAS-2026-0002</id>
    <title>bugfix for gwtest-b</title>
    <issued date="2026-11-30 11:00:00"/>
    <pkglist><collection short="amazon-linux-2023"><name>amazon-linux-2023</name>
      <package arch="noarch" epoch="0" name="gwtest-b" release="1" src="gwtest-b-2.1-1.src.rpm" version="2.1">
        <filename>gwtest-b-2.1-1.noarch.rpm</filename>
      </package>
    </collection></pkglist>
  </update>
</updates>
"#;

/// Builds the fixture under `dir`: a root with gwtest-a 1.0, gwtest-b 2.0 and gwtest-c 1.0
/// installed, and a repository (`createrepo_c` with `createrepo_args`, plus [`UPDATEINFO`])
/// publishing a 1.1 (security), b 2.1 (bugfix) and d 3.0. Returns (root, repo).
fn fixture(dir: &Path, createrepo_args: &[&str]) -> (PathBuf, PathBuf) {
    let top = dir.join("build");
    let root = dir.join("root");
    let repo = dir.join("repo");
    std::fs::create_dir_all(root.join("root")).unwrap();
    std::fs::create_dir_all(root.join("var/lib")).unwrap();
    std::fs::create_dir_all(&repo).unwrap();

    // Installed: a 1.0 (security fix in 1.1), b 2.0 (bugfix in 2.1), c 1.0 (nothing newer).
    for (name, version) in [("gwtest-a", "1.0"), ("gwtest-b", "2.0"), ("gwtest-c", "1.0")] {
        let rpm = build_rpm(&top, name, version);
        // Debian's rpm keeps its database in ~/.rpmdb (root's: /root/.rpmdb under --root),
        // which is also where dnf --installroot looks; /var/lib/rpm points there, as
        // guestward looks in /var/lib/rpm.
        run(Command::new("rpm").arg("--root").arg(&root).args(["-i", "--nodeps", "--justdb"]).arg(&rpm));
    }
    std::os::unix::fs::symlink("/root/.rpmdb", root.join("var/lib/rpm")).unwrap();
    // Published: a 1.1, b 2.1, d 3.0 (not installed).
    for (name, version) in [("gwtest-a", "1.1"), ("gwtest-b", "2.1"), ("gwtest-d", "3.0")] {
        let rpm = build_rpm(&top, name, version);
        std::fs::copy(&rpm, repo.join(rpm.file_name().unwrap())).unwrap();
    }
    run(Command::new("createrepo_c").arg("-q").args(createrepo_args).arg(&repo));
    let updateinfo = dir.join("updateinfo.xml");
    std::fs::write(&updateinfo, UPDATEINFO).unwrap();
    run(Command::new("modifyrepo_c").arg("--mdtype=updateinfo").arg(&updateinfo).arg(repo.join("repodata")));
    (root, repo)
}

#[test]
fn rpm_updates_and_advisories_equal_dnf_updateinfo_list() {
    for tool in ["rpmbuild", "rpm", "createrepo_c", "modifyrepo_c"] {
        if !have(tool) {
            return skip_or_fail(TEST, &format!("{tool} is not installed"));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (root, repo) = fixture(dir.path(), &[]);

    let dnf_says: Option<BTreeSet<(String, String)>> = if have("dnf") {
        std::fs::create_dir_all(root.join("etc/yum.repos.d")).unwrap();
        std::fs::write(
            root.join("etc/yum.repos.d/fixture.repo"),
            format!("[fixture]\nname=fixture\nbaseurl=file://{}\ngpgcheck=0\nenabled=1\n", repo.display()),
        )
        .unwrap();
        // dnf fills <root>/var/cache/dnf/fixture-<hash>/repodata, which is what we read.
        let out = run(Command::new("dnf")
            .arg("-q")
            .arg("--installroot")
            .arg(&root)
            .args(["--releasever", "1", "--disablerepo=*", "--enablerepo=fixture"])
            .arg(format!("--setopt=reposdir={}", root.join("etc/yum.repos.d").display()))
            .args(["updateinfo", "list"]));
        Some(
            out.lines()
                .filter_map(|l| {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    (w.len() == 3).then(|| (w[0].to_string(), w[2].to_string()))
                })
                .collect(),
        )
    } else {
        // Without dnf the cache is laid out as dnf lays it out.
        let cache = root.join("var/cache/dnf/fixture-0123456789abcdef/repodata");
        std::fs::create_dir_all(&cache).unwrap();
        for e in std::fs::read_dir(repo.join("repodata")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), cache.join(e.file_name())).unwrap();
        }
        None
    };

    let section =
        guestward_updates::collect(&guestward_updates::Config::default(), &HostRoot::new(&root).unwrap());
    assert!(section.problems.is_empty(), "{:?}", section.problems);
    let report = section.data.unwrap();
    assert!(report.apt.is_none());
    let rpm = report.rpm.as_ref().unwrap();
    assert_eq!(rpm.installed, 3);
    assert_eq!(rpm.sources.len(), 1, "{:?}", rpm.sources);
    assert_eq!(rpm.sources[0].origin.as_deref(), Some("fixture"));
    let got: Vec<_> = rpm
        .pending
        .iter()
        .map(|p| {
            (p.name.as_str(), p.installed.as_str(), p.candidate.as_str(), p.security, p.severity.as_deref())
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("gwtest-a", "1.0-1", "1.1-1", true, Some("important")),
            ("gwtest-b", "2.0-1", "2.1-1", false, None),
        ]
    );
    let a = &rpm.pending[0].advisories[0];
    assert_eq!((a.id.as_str(), a.kind.as_str()), ("ALAS-2026-0001", "security"));
    assert_eq!(a.cves, vec!["CVE-2026-1111".to_string(), "CVE-2026-2222".to_string()]);
    let findings = guestward_updates::findings(&report, &guestward_updates::Config::default());
    let security = findings.iter().find(|f| f.id == guestward_updates::SECURITY_UPDATES_PENDING).unwrap();
    assert_eq!(security.severity, guestward_core::Severity::High);
    assert_eq!(security.evidence["cves"], serde_json::json!(["CVE-2026-1111", "CVE-2026-2222"]));

    let ours: BTreeSet<(String, String)> = rpm
        .pending
        .iter()
        .flat_map(|p| {
            p.advisories.iter().map(move |a| {
                (a.id.clone(), format!("{}-{}.{}", p.name, a.fixed_in, p.arch.as_deref().unwrap_or("")))
            })
        })
        .collect();
    match dnf_says {
        Some(dnf) => assert_eq!(ours, dnf, "ours (left) and dnf updateinfo list (right) differ"),
        None => skip_or_fail(TEST, "dnf is not installed: advisories not compared with dnf"),
    }
}

const DB_TEST: &str = "rpm_primary_db_gives_the_same_updates_as_primary_xml";

/// `(name, installed, candidate, security, severity, advisory ids)` of the rpm side of `root`,
/// with the problems met.
type Pending = Vec<(String, String, String, bool, Option<String>, Vec<String>)>;

fn collect_rpm(root: &Path) -> (Pending, Vec<String>, Vec<guestward_core::Problem>) {
    let section =
        guestward_updates::collect(&guestward_updates::Config::default(), &HostRoot::new(root).unwrap());
    let report = section.data.unwrap();
    let rpm = report.rpm.unwrap();
    assert_eq!(rpm.installed, 3);
    let pending = rpm
        .pending
        .into_iter()
        .map(|p| {
            let ids = p.advisories.iter().map(|a| a.id.clone()).collect();
            (p.name, p.installed, p.candidate, p.security, p.severity, ids)
        })
        .collect();
    (pending, rpm.sources.into_iter().map(|s| s.path).collect(), section.problems)
}

/// A yum-style cache (`/var/cache/yum/<arch>/<releasever>/<repoid>/`, flat) of `repo` in
/// `root`, without the files whose names contain any of `drop`.
fn yum_cache(root: &Path, repo: &Path, drop: &[&str]) -> PathBuf {
    let cache = root.join("var/cache/yum/x86_64/2/fixture");
    let _ = std::fs::remove_dir_all(&cache);
    std::fs::create_dir_all(&cache).unwrap();
    for e in std::fs::read_dir(repo.join("repodata")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if !drop.iter().any(|d| name.contains(d)) {
            std::fs::copy(e.path(), cache.join(&name)).unwrap();
        }
    }
    cache
}

/// Amazon Linux 2's yum caches `primary_db` (SQLite, `.sqlite.bz2`) and no XML `primary`: the
/// same repository read through either gives the same pending updates and advisories (and the
/// XML path equals `dnf updateinfo list`, see the test above). Also: the other compressions
/// createrepo_c writes, a database yum left decompressed, and a damaged one.
#[test]
fn rpm_primary_db_gives_the_same_updates_as_primary_xml() {
    for tool in ["rpmbuild", "rpm", "createrepo_c", "modifyrepo_c"] {
        if !have(tool) {
            return skip_or_fail(DB_TEST, &format!("{tool} is not installed"));
        }
    }
    let expected: Pending = vec![
        (
            "gwtest-a".into(),
            "1.0-1".into(),
            "1.1-1".into(),
            true,
            Some("important".into()),
            vec!["ALAS-2026-0001".into()],
        ),
        ("gwtest-b".into(), "2.0-1".into(), "2.1-1".into(), false, None, vec!["ALAS-2026-0002".into()]),
    ];
    // Debian's createrepo_c is built without zstd ("Unknown/Unsupported compression type").
    for compression in ["bz2", "xz", "gz"] {
        let dir = tempfile::tempdir().unwrap();
        let (root, repo) = fixture(dir.path(), &["--database", &format!("--compress-type={compression}")]);
        let repomd = std::fs::read_to_string(repo.join("repodata/repomd.xml")).unwrap();
        assert!(repomd.contains(r#"type="primary_db""#), "{repomd}");

        let cache = yum_cache(&root, &repo, &[]);
        let (xml, xml_sources, problems) = collect_rpm(&root);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(xml, expected, "XML primary ({compression})");
        assert!(xml_sources[0].contains("-primary.xml"), "{xml_sources:?}");

        yum_cache(&root, &repo, &["primary.xml"]);
        let (db, db_sources, problems) = collect_rpm(&root);
        assert!(problems.is_empty(), "{compression}: {problems:?}");
        assert_eq!(db, xml, "primary_db ({compression}, left) and XML primary (right) differ");
        assert_eq!(db_sources.len(), 1);
        assert!(db_sources[0].contains("-primary.sqlite."), "{db_sources:?}");

        if compression == "gz" {
            // A cache holding the database already decompressed (`<hash>-primary.sqlite`).
            let archive = std::fs::read_dir(&cache)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.to_string_lossy().ends_with("-primary.sqlite.gz"))
                .unwrap();
            let plain = archive.with_extension("");
            let mut out = std::fs::File::create(&plain).unwrap();
            std::io::copy(
                &mut flate2::read::GzDecoder::new(std::fs::File::open(&archive).unwrap()),
                &mut out,
            )
            .unwrap();
            std::fs::remove_file(&archive).unwrap();
            let (db, sources, problems) = collect_rpm(&root);
            assert!(problems.is_empty(), "{problems:?}");
            assert_eq!(db, xml, "decompressed primary_db");
            assert!(sources[0].ends_with("-primary.sqlite"), "{sources:?}");

            // Damaged: the header survives, the pages do not. A problem naming the file; the
            // advisories and the rest of the report are still read.
            let mut bytes = std::fs::read(&plain).unwrap();
            for b in bytes.iter_mut().skip(100) {
                *b = 0xA5;
            }
            std::fs::write(&plain, &bytes).unwrap();
            let (db, _, problems) = collect_rpm(&root);
            assert!(db.is_empty(), "{db:?}");
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert_eq!(problems[0].code, "malformed", "{problems:?}");
            assert!(problems[0].message.contains("-primary.sqlite"), "{problems:?}");
        }
    }
}
