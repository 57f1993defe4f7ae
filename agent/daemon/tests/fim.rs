//! `guestward-agent fim init|check|update` end to end, on a tree given with `--root`.

use crate::support::*;
use serde_json::Value;

#[test]
fn fim_init_check_update_exit_codes_through_the_agent_cli() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc/ssh")).unwrap();
    std::fs::write(root.join("etc/ssh/sshd_config"), "PermitRootLogin no\n").unwrap();
    let state = dir.path().join("state");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!("[agent]\nstate_dir = \"{}\"\n\n[fim]\npaths = [\"/etc\"]\n", state.display()),
    )
    .unwrap();
    let fim = |args: &[&str]| {
        run(agent().arg("--config").arg(&config).arg("fim").args(args).arg("--root").arg(&root))
    };

    let (code, out, err) = fim(&["check"]);
    assert_eq!(code, 2, "no baseline yet: {out}{err}");
    assert!(err.contains("fim init"), "{err}");
    let (code, out, err) = fim(&["init"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("baseline: 3 entries"), "{out}");
    assert!(state.join("fim.db").exists(), "the baseline lives in [agent] state_dir");
    let (code, out, err) = fim(&["check"]);
    assert_eq!(code, 0, "{out}{err}");

    std::fs::write(root.join("etc/ssh/sshd_config"), "PermitRootLogin yes\n").unwrap();
    let (code, out, err) = fim(&["check", "--json"]);
    assert_eq!(code, 1, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["changes"][0]["path"], "/etc/ssh/sshd_config");
    assert_eq!(report["changes"][0]["mechanism"], "rescan");
    let (code, out, _) = fim(&["update"]);
    assert_eq!(code, 1);
    assert!(out.contains("modified") && out.contains("/etc/ssh/sshd_config"), "{out}");
    let (code, out, err) = fim(&["check"]);
    assert_eq!(code, 0, "accepted by update: {out}{err}");
}
