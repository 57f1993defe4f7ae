//! The access collector through the real binary: `scan --root <fixture> --only access`, human
//! and JSON, with debug logs on, must show the findings and never a secret; a scan as `nobody`
//! says what it could not read (/etc/shadow) instead of failing.

use crate::support::{agent, empty_config, fixture, run, setpriv, validate_against_schema};
use guestward_core::testing::skip_or_fail;
use std::os::unix::fs::PermissionsExt;

/// Secrets (and whole key ids) planted in tests/fixtures/access/root: none may be printed.
const SECRETS: &[&str] = &[
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
    "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2Fy",
    "Kq3vT9xYbN2mR8pL5wZ1cF7hJ4sD6gA0eU3iO9tQ",
    "$6$Fx7qZ2mN$",
    "fBan08iLKDc80Ws5AmnSMB9",
    "AKIAIOSFODNN7EXAMPLE",
    "AKIAI44QH8DHBEXAMPLE",
    "ASIAQWERTYUIOPASDFGH",
    "AKIAJ7EXAMPLEKEYID99",
];

#[test]
fn no_secret_in_any_output_of_a_root_scan() {
    let config = empty_config();
    let root = fixture("access/root");
    for json in [false, true] {
        let mut cmd = agent();
        cmd.env("GUESTWARD_LOG", "debug").arg("--config").arg(config.path()).arg("scan");
        if json {
            cmd.arg("--json");
        }
        let (code, stdout, stderr) = run(cmd.args(["--only", "access", "--root"]).arg(&root));
        // 1: the section is degraded (a malformed shadow line and a broken key line).
        assert_eq!(code, 1, "json={json}: {stdout}{stderr}");
        let all = format!("{stdout}{stderr}");
        for secret in SECRETS {
            assert!(!all.contains(secret), "json={json}: {secret} printed:\n{all}");
        }
        for expected in ["GW-ACCESS-001", "GW-ACCESS-008", "AKIA…MPLE", "ASIA…DFGH", "shadow:8"] {
            assert!(all.contains(expected), "json={json}: {expected} missing:\n{all}");
        }
        if json {
            let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
            validate_against_schema(&report);
            assert_eq!(report["access"]["status"], "degraded");
            assert_eq!(report["access"]["data"]["accounts"][3]["password"], "empty");
        } else {
            assert!(stdout.contains("== access: DEGRADED"), "{stdout}");
        }
    }
}

#[test]
fn access_scan_as_nobody_names_what_it_could_not_read() {
    const NAME: &str = "access_scan_as_nobody_names_what_it_could_not_read";
    let Some(setpriv) = setpriv() else {
        skip_or_fail(NAME, "setpriv is not installed (util-linux)");
        return;
    };
    if !nix::unistd::geteuid().is_root() {
        skip_or_fail(NAME, "switching to nobody needs root");
        return;
    }
    // A config nobody can read (tempfile makes 0700 directories).
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "").unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let agent_bin = env!("CARGO_BIN_EXE_guestward-agent");
    let (code, stdout, stderr) = run(std::process::Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", agent_bin, "--config"])
        .arg(&config)
        .args(["scan", "--json", "--only", "access"])
        .env_remove("GUESTWARD_LOG"));
    assert!(code == 0 || code == 1, "{code}: {stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let section = &report["access"];
    assert!(section["data"]["accounts"].as_array().is_some_and(|a| !a.is_empty()), "{section}");
    assert_eq!(section["data"]["shadow_read"], false);
    let problems = section["problems"].as_array().cloned().unwrap_or_default();
    let shadow = problems.iter().find(|p| p["path"] == "/etc/shadow").unwrap_or_else(|| panic!("{section}"));
    assert_eq!(shadow["code"], "permission_denied");
    assert_eq!(section["status"], "degraded");
}
