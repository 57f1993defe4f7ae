//! `scan --only cloud` and `agentctl imds` end to end, against the IMDS emulator on 127.0.0.1
//! (the endpoint comes from `AWS_EC2_METADATA_SERVICE_ENDPOINT`, as with the AWS SDKs).

use crate::support::*;
use guestward_imds_emulator::{Emulator, EmulatorConfig, INSTANCE_ID, TokenMode};
use serde_json::Value;

fn emulator(config: EmulatorConfig) -> (tokio::runtime::Runtime, Emulator) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emu = rt.block_on(Emulator::start(config));
    (rt, emu)
}

#[test]
fn scan_reports_the_instance_findings_and_uses_the_instance_id_as_host_id() {
    let (_rt, emu) = emulator(EmulatorConfig { tokens: TokenMode::Optional, ..Default::default() });
    let config = empty_config();
    let (code, stdout, stderr) = run(agent()
        .args(["scan", "--json", "--only", "cloud", "--config"])
        .arg(config.path())
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", emu.url())
        .env_remove("AWS_EC2_METADATA_DISABLED"));
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    validate_against_schema(&report);
    assert_eq!(report["cloud"]["status"], "ok");
    assert_eq!(report["cloud"]["data"]["state"], "ec2");
    assert_eq!(report["cloud"]["data"]["instance"]["instance_id"], INSTANCE_ID);
    assert_eq!(report["agent"]["host_id"], INSTANCE_ID);
    assert_eq!(report["agent"]["host_id_source"], "ec2_instance_id");
    let ids: Vec<&str> =
        report["findings"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert_eq!(ids.first(), Some(&"GW-IMDS-001"), "high severity first: {ids:?}");
    assert!(!stdout.contains("emulatedTOKEN"), "the IMDS token must never reach the report");
}

#[test]
fn cloud_is_skipped_under_root_without_any_request() {
    let (_rt, emu) = emulator(EmulatorConfig::default());
    let config = empty_config();
    let (code, stdout, stderr) = run(agent()
        .args(["scan", "--only", "cloud", "--config"])
        .arg(config.path())
        .arg("--root")
        .arg(fixture("roots/debian-min"))
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", emu.url()));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("== cloud: skipped"), "{stdout}");
    assert!(stdout.contains("--root"), "{stdout}");
    assert!(emu.records().is_empty(), "no IMDS request under --root");
}

#[test]
fn agentctl_imds_prints_a_table_and_json() {
    let (_rt, emu) = emulator(EmulatorConfig::default());
    // agentctl asks the daemon, which owns the one IMDS client; the CLI queries nothing itself.
    let daemon = Daemon::start_with("", &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", emu.url())]);
    let (code, stdout, stderr) = daemon.ctl(&["imds"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(INSTANCE_ID) && stdout.contains("eu-west-1a (euw1-az2)"), "{stdout}");
    assert!(stdout.contains("GW-IMDS-004"), "{stdout}");
    let (code, stdout, stderr) = daemon.ctl(&["imds", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["cloud"]["data"]["imds"]["access_mode"], "v2");
    assert_eq!(v["findings"][0]["id"], "GW-IMDS-004");
}
