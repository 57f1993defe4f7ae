//! FIM reports through the real binaries: each subcommand's own exit codes in `--help`, old ->
//! new values and summary counts from `guestward-agent fim check`, live change counts in
//! `agentctl fim status`, and `--since 1h` in `agentctl events` and `agentctl fim events`.

use crate::support::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;

#[test]
fn fim_init_help_shows_init_exit_codes_not_checks() {
    let help = |sub: &[&str]| {
        let (code, out, err) = run(agent().arg("fim").args(sub).arg("--help"));
        assert_eq!(code, 0, "{err}");
        out
    };
    let init = help(&["init"]);
    assert!(init.contains("0  the baseline was built"), "{init}");
    assert!(init.contains("no baseline was accepted"), "{init}");
    assert!(
        !init.contains("changes found") && !init.contains("no changes"),
        "check's codes in init's help:\n{init}"
    );
    let check = help(&["check"]);
    assert!(
        check.contains("0  no changes") && check.contains("1  changes found (listed on stdout)\n"),
        "{check}"
    );
    assert!(!check.contains("baseline was built"), "{check}");
    let update = help(&["update"]);
    assert!(
        update.contains("1  changes found (listed on stdout) and accepted as the new baseline"),
        "{update}"
    );
    let all = help(&[]);
    assert!(all.contains("init ") && all.contains("check, update"), "{all}");
    // Every subcommand's line comes before the pointer to their own pages, the mounted
    // `verify-packages` included, aligned with the others.
    let codes = &all[all.find("Exit codes:").expect("exit codes in fim --help")..];
    let lines: Vec<&str> = codes.lines().collect();
    assert!(
        lines.last().is_some_and(|l| l.starts_with("See `guestward-agent fim <SUBCOMMAND> --help`")),
        "{codes}"
    );
    assert!(lines.iter().any(|l| l.starts_with("  verify-packages 0 all match")), "{codes}");
    let verify = help(&["verify-packages"]);
    assert!(
        verify.contains("Hashing threads, 1 to 64 [default: one per core]\n")
            && !verify.contains("[default: 0]"),
        "{verify}"
    );
}

#[test]
fn fim_check_prints_counts_and_old_new_values_through_the_agent_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (root, config, _state) = fim_root_setup(dir.path());
    std::fs::create_dir_all(root.join("etc/cron.d")).unwrap();
    std::fs::write(root.join("etc/ssh_config"), "Port 22\n").unwrap();
    std::fs::set_permissions(root.join("etc/ssh_config"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let fim = |args: &[&str]| run_fim(&config, &root, args);
    let (code, out, err) = fim(&["init"]);
    assert_eq!(code, 0, "{out}{err}");

    std::fs::write(root.join("etc/ssh_config"), "Port 2222\n").unwrap();
    std::fs::set_permissions(root.join("etc/ssh_config"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(root.join("etc/cron.d/job"), "* * * * * root sh\n").unwrap();

    let (code, out, err) = fim(&["check"]);
    assert_eq!(code, 1, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("modified /etc/ssh_config"))
        .unwrap_or_else(|| panic!("{out}"));
    let details: Vec<String> = lines[at + 1..]
        .iter()
        .take_while(|l| l.starts_with("    "))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert!(details.contains(&"mode: 0644 -> 0600".to_string()), "{out}");
    assert!(details.contains(&"size: 8 -> 10".to_string()), "{out}");
    assert!(details.iter().any(|d| d.starts_with("sha256: ") && d.matches('\u{2026}').count() == 2), "{out}");
    assert!(lines.iter().any(|l| l.starts_with("added") && l.ends_with("/etc/cron.d/job")), "{out}");
    assert!(
        !lines.iter().any(|l| l.ends_with("/etc/cron.d") || l.contains("/etc/cron.d [")),
        "folded: {out}"
    );
    assert!(out.contains("2 change(s): 1 added, 0 removed, 1 modified; 4 entries checked"), "{out}");

    let (code, out, err) = fim(&["check", "--json"]);
    assert_eq!(code, 1, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let change =
        report["changes"].as_array().unwrap().iter().find(|c| c["path"] == "/etc/ssh_config").unwrap();
    let mode = change["attributes"].as_array().unwrap().iter().find(|a| a["name"] == "mode").unwrap();
    assert_eq!((&mode["old"], &mode["new"]), (&Value::from("0644"), &Value::from("0600")), "{out}");
    let sha = change["attributes"].as_array().unwrap().iter().find(|a| a["name"] == "sha256").unwrap();
    assert_eq!(sha["new"].as_str().unwrap().len(), 64, "full digests in JSON: {out}");
    assert_eq!(report["summary"]["counts"]["folded_directories"], 1, "{out}");
}

#[test]
fn agentctl_fim_shows_live_changes_with_values_and_takes_since_1h() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let file = tree.join("app.conf");
    std::fs::write(&file, "port = 80\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let daemon =
        Daemon::start_with(&format!("[fim]\npaths = [\"{}\"]\ndebounce_ms = 50\n", tree.display()), &[]);
    let ctl = |args: &[&str]| daemon.ctl(args);
    daemon.wait_for(
        || {
            let (code, out, _) = ctl(&["--json", "fim", "status"]);
            code == 0 && serde_json::from_str::<Value>(&out).is_ok_and(|s| s["state"] == "watching")
        },
        "the monitor to watch",
    );
    let (code, out, err) = ctl(&["fim", "baseline", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = file.display().to_string();
    daemon.wait_for(
        || {
            let (_, out, _) = ctl(&["--json", "fim", "events", "--since", "1h"]);
            serde_json::from_str::<Vec<Value>>(&out)
                .is_ok_and(|events| events.iter().any(|e| e["data"]["path"] == path.as_str()))
        },
        "the chmod event through `agentctl fim events --since 1h`",
    );
    let (code, out, err) = ctl(&["fim", "events", "--since", "1h"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let at =
        lines.iter().position(|l| l.contains(&format!("modified {path}"))).unwrap_or_else(|| panic!("{out}"));
    assert!(
        lines[at + 1..]
            .iter()
            .take_while(|l| l.starts_with("    "))
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["mode:", "0644", "->", "0600"]),
        "{out}"
    );

    // The event history is written by its own coalescer: the event reaches it a moment later.
    daemon.wait_for(
        || {
            let (code, out, _) = ctl(&["events", "--since", "1h", "--kind", "fim.change", "--json"]);
            code == 0 && out.contains(&path)
        },
        "the chmod event through `agentctl events --since 1h`",
    );
    // `--json` is one JSON document, an array (empty when nothing matches), for scripts.
    let (_, out, _) = ctl(&["events", "--since", "1h", "--kind", "fim.change", "--json"]);
    let events: Vec<Value> = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(events.iter().any(|e| e["kind"] == "fim.change" && e["data"]["path"] == path.as_str()), "{out}");
    let (code, out, _) = ctl(&["events", "--kind", "no.such_kind", "--json"]);
    assert_eq!((code, out.trim()), (0, "[]"));
    // An age that is not one, for both commands: a usage error naming the flag and the forms.
    for args in [&["events", "--since", "1x"][..], &["fim", "events", "--since", "yesterday"][..]] {
        let (code, _, err) = ctl(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("--since") && err.contains("RFC 3339") && err.contains("1h"), "{args:?}: {err}");
    }

    // `agentctl fim status`: live changes since start, human and JSON.
    let (code, out, err) = ctl(&["fim", "status"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("changes:    1 since start (1 realtime, 0 by rescans)"), "{out}");
    let (_, out, _) = ctl(&["--json", "fim", "status"]);
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&status["changes_reported"], &status["changes_realtime"]),
        (&Value::from(1), &Value::from(1)),
        "{out}"
    );
    assert_eq!(daemon.terminate(), 0);
}
