//! `scan --format cyclonedx` and the language-package findings, end to end on a fixture root
//! (`tests/fixtures/lang/root-app`, see its README).

use crate::support::*;
use serde_json::Value;
use std::path::Path;

fn cyclonedx_validator() -> jsonschema::Validator {
    let dir = Path::new(REPO).join("tests/fixtures/sbom");
    let load =
        |name: &str| -> Value { serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap() };
    let registry = jsonschema::Registry::new()
        .add("http://cyclonedx.org/schema/spdx.schema.json", load("spdx.schema.json"))
        .unwrap()
        .add("http://cyclonedx.org/schema/jsf-0.82.schema.json", load("jsf-0.82.schema.json"))
        .unwrap()
        .prepare()
        .unwrap();
    jsonschema::options().with_registry(&registry).build(&load("bom-1.6.schema.json")).unwrap()
}

#[test]
fn scan_format_cyclonedx_is_a_valid_sbom_with_purls_for_every_source() {
    let config = empty_config();
    let root = fixture("lang/root-app");
    let (code, stdout, stderr) = run(agent()
        .args(["scan", "--format", "cyclonedx", "--only", "host,packages", "--config"])
        .arg(config.path())
        .arg("--root")
        .arg(&root));
    assert_eq!(code, 0, "{stderr}");
    let bom: Value = serde_json::from_str(&stdout).unwrap();
    let errors: Vec<String> =
        cyclonedx_validator().iter_errors(&bom).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let purls: Vec<&str> =
        bom["components"].as_array().unwrap().iter().filter_map(|c| c["purl"].as_str()).collect();
    assert_eq!(
        purls,
        [
            "pkg:deb/debian/curl@7.88.1-10%2Bdeb12u5?arch=amd64&distro=debian-12",
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12&upstream=glibc",
            "pkg:maven/org.apache.logging.log4j/log4j-api@2.14.1",
            "pkg:maven/org.apache.logging.log4j/log4j-core@2.12.2",
            "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1",
            "pkg:maven/shop@1.4.2",
            "pkg:npm/%40aws-sdk/client-s3@3.450.0",
            "pkg:pypi/requests@2.28.1",
            "pkg:pypi/torchtriton@2.0.0%2B0d7e753227",
        ]
    );
    let os = &bom["components"][0];
    assert_eq!(
        (os["type"].as_str(), os["name"].as_str(), os["version"].as_str()),
        (Some("operating-system"), Some("debian"), Some("12"))
    );
    assert_eq!(bom["metadata"]["component"]["name"], "app-1");
}

/// An SBOM of a scan that could not read the package database is not passed off as a host
/// with nothing installed: exit 1, and stderr says which section and why (it once said nothing).
#[test]
fn scan_format_cyclonedx_of_a_degraded_scan_says_why_on_stderr() {
    let config = empty_config();
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("var/lib/dpkg")).unwrap();
    nix::unistd::mkfifo(&root.path().join("var/lib/dpkg/status"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let (code, stdout, stderr) = run(agent()
        .args(["scan", "--format", "cyclonedx", "--only", "packages", "--config"])
        .arg(config.path())
        .arg("--root")
        .arg(root.path()));
    assert_eq!(code, 1, "{stderr}");
    let bom: Value = serde_json::from_str(&stdout).unwrap();
    assert!(bom["components"].as_array().is_some(), "still an SBOM: {stdout}");
    assert!(
        stderr.contains("guestward-agent: packages: ") && stderr.contains("/var/lib/dpkg/status"),
        "{stderr}"
    );
}

#[test]
fn language_findings_are_in_the_report() {
    let config = empty_config();
    let root = fixture("lang/root-app");
    let (code, stdout, stderr) = run(agent()
        .args(["scan", "--json", "--only", "packages", "--config"])
        .arg(config.path())
        .arg("--root")
        .arg(&root));
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    validate_against_schema(&report);
    let findings: Vec<(&str, &str, &str)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap(),
                f["severity"].as_str().unwrap(),
                f["evidence"]["path"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        findings,
        [
            ("GW-LANG-001", "critical", "/opt/shop/shop-1.4.2.jar"),
            (
                "GW-LANG-003",
                "critical",
                "/opt/ml/venv/lib/python3.11/site-packages/torchtriton-2.0.0.dist-info"
            ),
        ]
    );
    assert_eq!(report["findings"][0]["evidence"]["path_in_archive"], "BOOT-INF/lib/log4j-core-2.14.1.jar");
    let language = &report["packages"]["data"]["language"];
    assert_eq!(language["packages"].as_array().unwrap().len(), 7);
    assert_eq!(language["stats"]["nested_archives"], 2);
}

#[test]
fn daemon_reports_package_changes_as_events_between_full_scans() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site-packages");
    let dist_info = |name: &str, version: &str| {
        let d = site.join(format!("{name}-{version}.dist-info"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("METADATA"), format!("Name: {name}\nVersion: {version}\n\n")).unwrap();
        d
    };
    let old = dist_info("requests", "2.28.1");
    let daemon = Daemon::start_with(
        &format!(
            "[packages.language]\npython_roots = [\"{}\"]\njava_roots = []\nnode_roots = []\n",
            site.display()
        ),
        &[],
    );
    // The first (scheduled) scan is a full snapshot and stores the inventory.
    let stored = daemon.state_dir().join("packages-inventory.json");
    daemon.wait_for(|| stored.exists(), "the first scan to store the inventory");
    std::fs::remove_dir_all(&old).unwrap();
    dist_info("requests", "2.31.0");
    dist_info("flask", "3.0.0");
    let (code, stdout, stderr) = daemon.ctl(&["--json", "scan"]);
    assert!(code == 0 || code == 1, "exit {code}: {stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let events: Vec<(&str, &str, Option<&str>, Option<&str>)> = report["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"].as_str().unwrap().starts_with("package."))
        .map(|e| {
            let d = &e["data"];
            (
                e["kind"].as_str().unwrap(),
                d["name"].as_str().unwrap(),
                d["old_version"].as_str(),
                d["new_version"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ("package.added", "flask", None, Some("3.0.0")),
            ("package.upgraded", "requests", Some("2.28.1"), Some("2.31.0"))
        ]
    );
}
