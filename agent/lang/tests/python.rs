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
    let mut refused: Vec<String> =
        problems.iter().filter(|p| p.code == "not_regular_file").filter_map(|p| p.path.clone()).collect();
    refused.sort();
    assert_eq!(
        refused,
        vec![
            t.here(&format!("{sp}/eggdir-3.0.egg-info/PKG-INFO")),
            t.here(&format!("{sp}/evil-1.0.dist-info/INSTALLER")),
            t.here(&format!("{sp}/evil-1.0.dist-info/METADATA")),
            t.here(&format!("{sp}/old_style-2.0.egg-info")),
        ],
        "{problems:?}"
    );
    assert!(problems.iter().all(|p| p.message.contains("fifo")), "{problems:?}");
}

/// The oracle: Python's own `email` parser (`BytesParser(policy=compat32)`, headers only), as
/// pip and `importlib.metadata` read METADATA, on every distribution of this machine's Python
/// directories and on crafted files (CRLF, folding, a stray line, a spaced field name).
#[test]
fn metadata_headers_read_as_python_s_email_parser_reads_them() {
    const TEST: &str = "metadata_headers_read_as_python_s_email_parser_reads_them";
    let crafted = tempfile::tempdir().unwrap();
    let cases: &[&[u8]] = &[
        b"Metadata-Version: 1.0\r\nName: crlf\r\nVersion: 0.9\r\nSummary: one\r\n        two\r\n\r\nName: body\r\n",
        b"Metadata-Version: 2.1\nName: folded\nDescription: first\n        |second\n        |\nVersion: 3\n\nbody\n",
        b"Name: stray\nthis is not a header\nVersion: 2\n",
        b"Metadata-Version: 2.1\nName : spaced\nName: after\nVersion: 1\n",
        b"Classifier: a\nName: late\nClassifier: b\nVersion: 7.0rc1\nName: second\n",
        b"\n\nName: after-blank\nVersion: 1\n",
        b"Version: 1\n",
    ];
    let mut files = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let f = crafted.path().join(format!("case{i}.METADATA"));
        std::fs::write(&f, case).unwrap();
        files.push(f);
    }
    // Python lists the machine's METADATA / PKG-INFO files and reads each the way pip does,
    // from the same 256 KiB prefix cut at its last line end.
    let script = r#"
import glob, sys
from email.parser import BytesParser
from email.policy import compat32
paths = sys.argv[1:]
for d in glob.glob('/usr/lib/python3*/*-packages') + glob.glob('/usr/local/lib/python3*/*-packages'):
    paths += sorted(glob.glob(d + '/*.dist-info/METADATA') + glob.glob(d + '/*.egg-info/PKG-INFO'))
for p in paths[:5000]:
    data = open(p, 'rb').read(256 * 1024)
    data = data[:data.rfind(b'\n') + 1] if b'\n' in data else data
    msg = BytesParser(policy=compat32).parsebytes(data, headersonly=True)
    name, version = msg.get('Name'), msg.get('Version')
    values = [v for v in (name, version) if v is not None]
    if not all(v.isascii() and '\t' not in v and '\n' not in v for v in values):
        continue
    print('\t'.join([p, (name or '').strip(), (version or '').strip()]))
"#;
    let out = match std::process::Command::new("python3").arg("-c").arg(script).args(&files).output() {
        Ok(out) if out.status.success() => out,
        Ok(out) => panic!("python3 failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => return guestward_core::testing::skip_or_fail(TEST, &format!("no python3: {e}")),
    };
    let listed = String::from_utf8(out.stdout).unwrap();
    let mut compared = 0;
    for line in listed.lines() {
        let mut cols = line.split('\t');
        let (path, name, version) = (cols.next().unwrap(), cols.next().unwrap(), cols.next().unwrap());
        let mut bytes = std::fs::read(path).unwrap();
        bytes.truncate(256 * 1024);
        let python = (!name.is_empty()).then(|| (name.to_string(), version.to_string()));
        assert_eq!(guestward_lang::python::parse_metadata_headers(&bytes), python, "{path}");
        compared += 1;
    }
    assert!(compared >= cases.len(), "python listed {compared} files");
    eprintln!("{TEST}: {compared} metadata files read as Python reads them");
}
