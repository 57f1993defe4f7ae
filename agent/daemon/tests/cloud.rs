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

/// `agentctl findings --id --min-severity` lists what the same filter keeps of the whole list
/// (the rule `guestward-collector findings` applies across the fleet), and says when nothing
/// matches.
#[test]
fn agentctl_findings_filters_by_id_and_severity() {
    let (_rt, emu) = emulator(EmulatorConfig { tokens: TokenMode::Optional, ..Default::default() });
    let daemon = Daemon::start_with("", &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", emu.url())]);
    daemon.wait_for(|| daemon.ctl(&["findings", "--json"]).0 == 0, "the first scan");
    let listed = |args: &[&str]| -> Vec<(String, String)> {
        let (code, stdout, stderr) = daemon.ctl(&[&["findings", "--json"][..], args].concat());
        assert_eq!(code, 0, "{args:?}: {stderr}");
        let findings: Vec<Value> = serde_json::from_str(&stdout).unwrap();
        findings
            .iter()
            .map(|f| (f["id"].as_str().unwrap().into(), f["severity"].as_str().unwrap().into()))
            .collect()
    };
    let all = listed(&[]);
    let rank = |s: &str| ["info", "low", "medium", "high", "critical"].iter().position(|r| *r == s).unwrap();
    // IMDSv1 allowed (tokens optional): GW-IMDS-001, high, among the instance's findings.
    let expected: Vec<(String, String)> = all
        .iter()
        .filter(|(id, sev)| id.starts_with("GW-IMDS-") && rank(sev) >= rank("high"))
        .cloned()
        .collect();
    assert!(expected.iter().any(|(id, _)| id == "GW-IMDS-001"), "{all:?}");
    assert!(expected.len() < all.len(), "the filter must leave something out: {all:?}");
    assert_eq!(listed(&["--id", "GW-IMDS-*", "--min-severity", "high"]), expected);
    let exact: Vec<(String, String)> = all.iter().filter(|(id, _)| id == "GW-IMDS-001").cloned().collect();
    assert_eq!(listed(&["--id", "GW-IMDS-001", "--id", "GW-NOPE-1"]), exact);

    let (code, stdout, stderr) = daemon.ctl(&["findings", "--id", "GW-NOPE-*"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, format!("no finding matches ({} findings in the latest scan)\n", all.len()));
    let (code, _, stderr) = daemon.ctl(&["findings", "--min-severity", "urgent"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("\"urgent\" is not one of info, low, medium, high, critical"), "{stderr}");
}
