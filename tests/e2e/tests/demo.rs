//! `scripts/demo`, a newcomer's first end-to-end run, works.

use crate::support::*;
use std::time::Duration;

/// `bash scripts/demo` from the repository root exits 0 and prints the demo host (`demo-host`)
/// in the collector's host list, with the one report it delivered, and the fleet's findings.
#[test]
fn scripts_demo_runs_and_lists_the_demo_host() {
    for tool in ["curl", "python3"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            guestward_core::testing::skip_or_fail(
                "demo::scripts_demo_runs_and_lists_the_demo_host",
                &format!("scripts/demo needs {tool}, which is not installed"),
            );
            return;
        }
    }
    guestward_core::testing::within(Duration::from_secs(90), "scripts/demo", || {
        let mut cmd = std::process::Command::new("bash");
        // The binaries under test, not whichever of target/debug and target/release is newer.
        let bin_dir = bin("guestward-agent").parent().unwrap().to_path_buf();
        cmd.arg("scripts/demo").current_dir(REPO).env("GUESTWARD_BIN_DIR", bin_dir);
        for var in ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
            cmd.env_remove(var);
        }
        let out = run_bounded(&mut cmd, Duration::from_secs(80));
        out.assert_success("scripts/demo");
        let lines: Vec<&str> = out.stdout.lines().collect();
        let table = lines.iter().position(|l| l.starts_with("HOST ")).unwrap_or_else(|| {
            panic!("scripts/demo printed no host list:\n{out}");
        });
        let row: Vec<&str> = lines.get(table + 1).map(|l| l.split_whitespace().collect()).unwrap_or_default();
        // HOST, LAST SEEN (`0s ago`), REPORTS, MISSING.
        assert_eq!(
            row.get(..5).map(|r| [r[0], r[2], r[3], r[4]]),
            Some(["demo-host", "ago", "1", "0"]),
            "the demo host, one report, none missing:\n{out}"
        );
        assert!(
            out.stdout.contains("on 1 host; 1 host searched")
                || out.stdout.contains("no finding matches (1 host searched)"),
            "scripts/demo printed no findings answer:\n{out}"
        );
    });
}
