//! Node.js packages.

use crate::common::*;
use guestward_lang::{Ecosystem, Evidence};

#[test]
fn global_and_project_node_modules_with_scopes_and_nesting() {
    let t = Tree::new();
    t.write("/usr/lib/node_modules/npm/package.json", r#"{"name":"npm","version":"10.2.4"}"#);
    t.write(
        "/usr/lib/node_modules/npm/node_modules/semver/package.json",
        r#"{"name":"semver","version":"7.5.4"}"#,
    );
    t.write(
        "/usr/lib/node_modules/@aws-sdk/client-s3/package.json",
        r#"{"name":"@aws-sdk/client-s3","version":"3.450.0"}"#,
    );
    // A project: its own package.json is the application, not an installed package.
    t.write("/srv/web/package.json", r#"{"name":"web","version":"0.0.1","private":true}"#);
    t.write(
        "/srv/web/node_modules/express/package.json",
        r#"{"name":"express","version":"4.18.2","description":"x"}"#,
    );
    // A file inside a package that happens to be called package.json is not a package.
    t.write("/srv/web/node_modules/express/lib/package.json", r#"{"name":"inner","version":"9"}"#);
    let (report, problems) = t.scan(&config(&[], &[], &["/usr/lib/node_modules", "/srv"]));
    assert!(problems.is_empty(), "{problems:?}");
    let got: Vec<(Option<&str>, &str, &str, &str)> = report
        .of(Ecosystem::Npm)
        .map(|p| (p.namespace.as_deref(), p.name.as_str(), p.version.as_str(), p.location.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (None, "express", "4.18.2", "/srv/web/node_modules/express"),
            (None, "npm", "10.2.4", "/usr/lib/node_modules/npm"),
            (None, "semver", "7.5.4", "/usr/lib/node_modules/npm/node_modules/semver"),
            (Some("aws-sdk"), "client-s3", "3.450.0", "/usr/lib/node_modules/@aws-sdk/client-s3"),
        ]
    );
    assert!(report.packages.iter().all(|p| p.evidence == Evidence::PackageJson));
}

#[test]
fn bad_and_oversized_package_json_are_problems_not_failures() {
    let t = Tree::new();
    t.write("/opt/p/node_modules/good/package.json", r#"{"name":"good","version":"1.0.0"}"#);
    t.write("/opt/p/node_modules/bad/package.json", "{\"name\": \"bad\",\n \"version\": 1.0.0 oops");
    t.write(
        "/opt/p/node_modules/huge/package.json",
        format!(r#"{{"name":"huge","version":"1.0.0","x":"{}"}}"#, "a".repeat(4096)),
    );
    let mut cfg = config(&[], &[], &["/opt"]);
    cfg.max_metadata_bytes = 1024;
    let (report, problems) = t.scan(&cfg);
    assert_eq!(report.packages.len(), 1);
    assert_eq!(report.packages[0].name, "good");
    let mut codes: Vec<(&str, Option<String>)> =
        problems.iter().map(|p| (p.code.as_str(), p.path.clone())).collect();
    codes.sort();
    assert_eq!(
        codes,
        vec![
            ("malformed", Some(t.here("/opt/p/node_modules/bad/package.json"))),
            ("too_large", Some(t.here("/opt/p/node_modules/huge/package.json")))
        ]
    );
    let malformed = problems.iter().find(|p| p.code == "malformed").unwrap();
    assert_eq!(malformed.line, Some(2));
    // The message names the same file as the path (on this machine), so a person reads one
    // name for it: shown, the problem is its message alone.
    assert!(malformed.message.starts_with(&t.here("/opt/p/node_modules/bad/package.json")), "{malformed:?}");
    assert_eq!(malformed.to_string(), malformed.message);
}

#[test]
fn package_json_with_a_byte_order_mark_or_a_duplicate_name_is_listed_as_node_reads_it() {
    // Issue 9, item 19: both were dropped as malformed, though Node loads them; a package
    // could hide from the inventory that way.
    let t = Tree::new();
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(br#"{"name":"with-bom","version":"1.2.3"}"#);
    t.write("/opt/p/node_modules/with-bom/package.json", bom);
    t.write(
        "/opt/p/node_modules/hidden/package.json",
        r#"{"name":"decoy","version":"0.0.1","name":"event-stream","version":"3.3.6"}"#,
    );
    let (report, problems) = t.scan_within(20, &config(&[], &[], &["/opt"]));
    assert!(problems.is_empty(), "{problems:?}");
    let got: Vec<(&str, &str, &str)> =
        report.packages.iter().map(|p| (p.name.as_str(), p.version.as_str(), p.location.as_str())).collect();
    assert_eq!(
        got,
        vec![
            ("event-stream", "3.3.6", "/opt/p/node_modules/hidden"),
            ("with-bom", "1.2.3", "/opt/p/node_modules/with-bom"),
        ]
    );
}

#[test]
fn fifo_in_place_of_package_json_is_refused_not_read() {
    let t = Tree::new();
    t.fifo("/opt/p/node_modules/evil/package.json");
    t.write("/opt/p/node_modules/good/package.json", r#"{"name":"good","version":"1.0.0"}"#);
    let (report, problems) = t.scan_within(20, &config(&[], &[], &["/opt"]));
    assert_eq!(report.packages.len(), 1);
    assert_eq!(report.packages[0].name, "good");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].code, "not_regular_file");
    assert_eq!(problems[0].path, Some(t.here("/opt/p/node_modules/evil/package.json")));
    assert!(problems[0].message.contains("fifo"), "{}", problems[0].message);
}
