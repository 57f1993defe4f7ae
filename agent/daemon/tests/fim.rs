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

#[test]
fn daemon_mode_reports_realtime_changes_through_agentctl_fim() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("f"), "before").unwrap();
    let daemon =
        Daemon::start_with(&format!("[fim]\npaths = [\"{}\"]\ndebounce_ms = 50\n", tree.display()), &[]);
    let ctl = |args: &[&str]| daemon.ctl(args);
    let wait = |what: &str, ready: &dyn Fn() -> bool| daemon.wait_for(ready, what);
    wait("the monitor to watch", &|| {
        let (code, out, _) = ctl(&["--json", "fim", "status"]);
        code == 0 && serde_json::from_str::<Value>(&out).is_ok_and(|s| s["state"] == "watching")
    });
    let (code, out, err) = ctl(&["fim", "baseline", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("baseline complete: "), "{out}");
    std::fs::write(tree.join("f"), "after").unwrap();
    let path = tree.join("f").display().to_string();
    wait("the change event", &|| {
        let (_, out, _) = ctl(&["--json", "fim", "events"]);
        serde_json::from_str::<Vec<Value>>(&out).is_ok_and(|events| {
            events.iter().any(|e| {
                e["kind"] == "fim.change"
                    && e["data"]["path"] == path.as_str()
                    && e["data"]["mechanism"] == "realtime"
            })
        })
    });
    let (code, out, err) = ctl(&["fim", "events", "--since", "2000-01-01T00:00:00Z"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("modified") && out.contains(&path) && out.contains("[realtime]"), "{out}");
    let (code, out, _) = ctl(&["fim", "status"]);
    assert_eq!(code, 0, "not degraded: {out}");
    assert!(out.contains("coverage:   complete"), "{out}");
    let (code, _, err) = ctl(&["fim", "events", "--since", "yesterday"]);
    assert_eq!(code, 2, "a bad --since is a usage error: {err}");
    assert_eq!(daemon.terminate(), 0);
}
