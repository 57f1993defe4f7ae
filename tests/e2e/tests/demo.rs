//! `scripts/demo`, a newcomer's first end-to-end run, works.

use crate::support::*;
use std::time::Duration;

/// `bash scripts/demo` from the repository root exits 0 and prints the demo host in the
/// collector's host list.
#[test]
fn scripts_demo_runs_and_lists_the_demo_host() {
    guestward_core::testing::within(Duration::from_secs(90), "scripts/demo", || {
        let mut cmd = std::process::Command::new("bash");
        cmd.arg("scripts/demo").current_dir(REPO);
        for var in ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
            cmd.env_remove(var);
        }
        let out = run_bounded(&mut cmd, Duration::from_secs(80));
        out.assert_success("scripts/demo");
        assert!(out.stdout.contains("\"hosts\""), "scripts/demo printed no host list:\n{out}");
        assert!(out.stdout.contains("demo"), "scripts/demo's host list lacks the demo host:\n{out}");
    });
}
