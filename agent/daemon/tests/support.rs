use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(REPO).join("tests/fixtures").join(rel)
}

pub fn agent() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_guestward-agent"));
    // Never pick up the machine's /etc/guestward/agent.toml in tests.
    cmd.env_remove("GUESTWARD_LOG");
    cmd
}

pub fn agentctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_agentctl"))
}

/// An empty config file, so tests do not depend on /etc/guestward/agent.toml.
pub fn empty_config() -> tempfile::NamedTempFile {
    tempfile::NamedTempFile::new().unwrap()
}

pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output { status, stdout, stderr } = cmd.output().unwrap();
    (
        status.code().expect("killed by a signal"),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

pub fn validate_against_schema(report: &serde_json::Value) {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(REPO).join("docs/report.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> =
        validator.iter_errors(report).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "report does not match docs/report.schema.json:\n{}", errors.join("\n"));
}
