//! Python distributions and the malicious-package rule.

use crate::common::*;
use guestward_core::Severity;
use guestward_lang::{Config, Ecosystem, Evidence};

fn metadata(name: &str, version: &str) -> String {
    format!(
        "Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: test\n\nLong description\nName: not-a-header\n"
    )
}

#[test]
fn dist_info_egg_info_and_fallbacks() {
    let t = Tree::new();
    let sp = "/usr/lib/python3.11/site-packages";
    t.write(&format!("{sp}/Requests-2.31.0.dist-info/METADATA"), metadata("Requests", "2.31.0"));
    t.write(&format!("{sp}/Requests-2.31.0.dist-info/INSTALLER"), "pip\n");
    t.write(&format!("{sp}/zope.interface-6.0.dist-info/METADATA"), metadata("zope.interface", "6.0"));
    t.write(&format!("{sp}/PyYAML-6.0.1-py3.11.egg-info/PKG-INFO"), metadata("PyYAML", "6.0.1"));
    t.write(&format!("{sp}/distro_legacy-1.0.egg-info"), metadata("distro_legacy", "1.0"));
    // No METADATA: the directory name still tells name and version.
    t.mkdir(&format!("{sp}/Half_Installed-0.3.dist-info"));
    // A virtualenv under /opt, found by the default roots.
    t.write(
        "/opt/app/venv/lib/python3.12/site-packages/flask-3.0.0.dist-info/METADATA",
        metadata("Flask", "3.0.0"),
    );
    t.write("/opt/app/venv/lib/python3.12/site-packages/flask-3.0.0.dist-info/INSTALLER", "uv");
    let cfg = Config { java_roots: vec![], node_roots: vec![], ..Config::default() };
    let (report, problems) = t.scan(&cfg);
    assert!(problems.is_empty(), "{problems:?}");
    let got: Vec<(&str, &str, Option<&str>, Evidence)> = report
        .of(Ecosystem::Pypi)
        .map(|p| (p.name.as_str(), p.version.as_str(), p.installer.as_deref(), p.evidence))
        .collect();
    assert_eq!(
        got,
        vec![
            ("distro-legacy", "1.0", None, Evidence::EggInfoPkgInfo),
            ("flask", "3.0.0", Some("uv"), Evidence::DistInfoMetadata),
            ("half-installed", "0.3", None, Evidence::DirectoryName),
            ("pyyaml", "6.0.1", None, Evidence::EggInfoPkgInfo),
            ("requests", "2.31.0", Some("pip"), Evidence::DistInfoMetadata),
            ("zope-interface", "6.0", None, Evidence::DistInfoMetadata),
        ]
    );
    let flask = report.packages.iter().find(|p| p.name == "flask").unwrap();
    assert_eq!(flask.location, "/opt/app/venv/lib/python3.12/site-packages/flask-3.0.0.dist-info");
    assert!(guestward_lang::findings(&report).is_empty());
}

#[test]
fn huge_metadata_body_is_not_read_whole() {
    let t = Tree::new();
    let mut text = metadata("big", "1.0");
    text.push_str(&"x".repeat(4 * 1024 * 1024));
    t.write("/opt/site-packages/big-1.0.dist-info/METADATA", text);
    let (report, problems) = t.scan(&config(&["/opt"], &[], &[]));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(report.packages[0].version, "1.0");
}

#[test]
fn known_malicious_packages_are_critical_findings() {
    let t = Tree::new();
    let sp = "/home/alice/.local/lib/python3.10/site-packages";
    t.write(
        &format!("{sp}/torchtriton-2.0.0+0d7e753227.dist-info/METADATA"),
        metadata("torchtriton", "2.0.0+0d7e753227"),
    );
    // `jeIlyfish` with a capital I normalizes to `jeilyfish`.
    t.write(&format!("{sp}/jeIlyfish-0.7.2.dist-info/METADATA"), metadata("jeIlyfish", "0.7.2"));
    t.write(&format!("{sp}/jellyfish-1.0.0.dist-info/METADATA"), metadata("jellyfish", "1.0.0"));
    t.write(&format!("{sp}/triton-2.1.0.dist-info/METADATA"), metadata("triton", "2.1.0"));
    let (report, problems) = t.scan(&config(&["/home/*/.local"], &[], &[]));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(report.packages.len(), 4);
    let findings = guestward_lang::findings(&report);
    let got: Vec<(&str, Severity, &str)> =
        findings.iter().map(|f| (f.id.as_str(), f.severity, f.evidence["name"].as_str().unwrap())).collect();
    assert_eq!(
        got,
        vec![
            ("GW-LANG-003", Severity::Critical, "jeilyfish"),
            ("GW-LANG-003", Severity::Critical, "torchtriton")
        ]
    );
    let torch = &findings[1];
    assert_eq!(torch.evidence["version"], "2.0.0+0d7e753227");
    assert_eq!(torch.evidence["path"], format!("{sp}/torchtriton-2.0.0+0d7e753227.dist-info"));
    assert!(torch.evidence["reference"].as_str().unwrap().contains("2022"));
}

#[test]
fn fifo_in_place_of_dist_info_metadata_is_refused_not_read() {
    // Issue 9, item 2: a FIFO planted as METADATA in a user's ~/.local hung the scan forever.
    let t = Tree::new();
    let sp = "/home/mallory/.local/lib/python3.12/site-packages";
    t.fifo(&format!("{sp}/evil-1.0.dist-info/METADATA"));
    t.fifo(&format!("{sp}/evil-1.0.dist-info/INSTALLER"));
    t.fifo(&format!("{sp}/old_style-2.0.egg-info"));
    t.fifo(&format!("{sp}/eggdir-3.0.egg-info/PKG-INFO"));
    t.write(&format!("{sp}/fine-1.0.dist-info/METADATA"), metadata("fine", "1.0"));
    let (report, problems) = t.scan_within(20, &config(&["/home/*/.local"], &[], &[]));
    // The dist-info directories are still listed, from their names.
    let got: Vec<(&str, &str, Evidence)> =
        report.packages.iter().map(|p| (p.name.as_str(), p.version.as_str(), p.evidence)).collect();
    assert_eq!(
        got,
        vec![
            ("eggdir", "3.0", Evidence::DirectoryName),
            ("evil", "1.0", Evidence::DirectoryName),
            ("fine", "1.0", Evidence::DistInfoMetadata),
        ]
    );
    let mut refused: Vec<&str> =
        problems.iter().filter(|p| p.code == "not_regular_file").filter_map(|p| p.path.as_deref()).collect();
    refused.sort();
    assert_eq!(
        refused,
        vec![
            format!("{sp}/eggdir-3.0.egg-info/PKG-INFO"),
            format!("{sp}/evil-1.0.dist-info/INSTALLER"),
            format!("{sp}/evil-1.0.dist-info/METADATA"),
            format!("{sp}/old_style-2.0.egg-info"),
        ],
        "{problems:?}"
    );
    assert!(problems.iter().all(|p| p.message.contains("fifo")), "{problems:?}");
}
