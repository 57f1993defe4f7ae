//! The performance target: a 1 MB report compresses at least 5x.

use guestward_report::{AgentInfo, HostIdSource, Report};
use guestward_transport::spool::compress_report;

/// A realistic report: this machine's dpkg database as the packages section and file-integrity
/// changes for this machine's files. Prints the numbers; asserts only the ratio.
#[test]
fn a_realistic_one_megabyte_report_compresses_at_least_five_times() {
    let status = std::path::Path::new("/var/lib/dpkg/status");
    let Ok(bytes) = std::fs::read(status) else {
        guestward_core::testing::skip_or_fail("compression", "no /var/lib/dpkg/status on this machine");
        return;
    };
    let (inventory, _) = guestward_packages::dpkg::parse_status(&bytes, "/var/lib/dpkg/status");
    let agent = AgentInfo {
        version: "0.1.0".into(),
        host_id: Some("i-0123456789abcdef0".into()),
        host_id_source: HostIdSource::Ec2InstanceId,
    };
    let mut report = Report::new(agent, guestward_core::Timestamp::now());
    report.sequence = Some(1);
    report.packages = Some(guestward_core::Section {
        status: guestward_core::SectionStatus::Ok,
        data: Some(guestward_packages::PackagesReport { dpkg: Some(inventory), rpm: None, language: None }),
        problems: Vec::new(),
        note: None,
        expected_problems: Vec::new(),
        duration_ms: 41,
    });
    // The rest: file-integrity changes, as after a package upgrade, for real paths of this
    // machine (hashes are random hex: as incompressible as real SHA-256s), up to ~1 MB.
    let mut paths = Vec::new();
    walk(std::path::Path::new("/usr/lib"), &mut paths, 20_000);
    let mut json = serde_json::to_vec(&report).unwrap();
    for (i, path) in paths.iter().enumerate() {
        if json.len() >= 1_000_000 {
            break;
        }
        let hex = |n| std::iter::repeat_with(|| fastrand::digit(16)).take(n).collect::<String>();
        let attrs = |sha: String, size: u64| serde_json::json!({"size": size, "mode": "0644", "uid": 0, "gid": 0, "mtime": 1_700_000_000 + i, "sha256": sha});
        let size = fastrand::u64(1_000..2_000_000);
        report.events.push(guestward_core::Event {
            kind: "fim.change".into(),
            time: guestward_core::Timestamp::now(),
            data: serde_json::json!({
                "path": path,
                "change": "modified",
                "changed": ["size", "mtime", "sha256"],
                "old": attrs(hex(64), size),
                "new": attrs(hex(64), size + 10),
                "mechanism": "rescan",
                "rule": "/usr/lib",
            }),
        });
        if i % 100 == 0 {
            json = serde_json::to_vec(&report).unwrap();
        }
    }
    let json = serde_json::to_vec(&report).unwrap();
    let started = std::time::Instant::now();
    let compressed = compress_report(&report).unwrap();
    let took = started.elapsed();
    let ratio = json.len() as f64 / compressed.len() as f64;
    eprintln!(
        "report JSON {} bytes -> zstd level 3 {} bytes: {ratio:.1}x in {took:?} (debug build)",
        json.len(),
        compressed.len()
    );
    if json.len() < 900_000 {
        guestward_core::testing::skip_or_fail(
            "compression",
            "the dpkg database here is too small for a ~1 MB report",
        );
        return;
    }
    assert!(ratio >= 5.0, "{ratio:.1}x");
}

/// Up to `max` file paths under `dir`, depth first, in directory order.
fn walk(dir: &std::path::Path, out: &mut Vec<String>, max: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if out.len() >= max {
            return;
        }
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            walk(&e.path(), out, max);
        } else {
            out.push(e.path().display().to_string());
        }
    }
}
