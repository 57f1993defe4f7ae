//! `check-config` and the daemon agree: every bad config is refused by both real binaries with
//! the same lines, each naming the file, line, column and key; several problems in one file
//! are all listed; and `[fim] enabled = true` with a monitor that cannot start stops the daemon.

use crate::support::{agent, agentctl, run_bounded};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `run` on an invalid config must stop at once; a hang is a regression.
const LIMIT: Duration = Duration::from_secs(30);

/// A config whose `[control]` socket and `[agent]` state dir are inside `dir`, so a `run` that
/// wrongly accepted it could not touch the host. `body` continues the `[agent]` table (4 lines
/// precede it: line 5 is its first).
fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("agent.toml");
    let text = format!(
        "[control]\nsocket_path = \"{}\"\n[agent]\nstate_dir = \"{}\"\n{body}",
        dir.join("run/agent.sock").display(),
        dir.join("state").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The problem lines of `guestward-agent check-config` and of `guestward-agent run` on `path`,
/// after checking their exit codes (1 and 2) and that `run` created nothing.
fn both_refuse(dir: &Path, path: &Path) -> (Vec<String>, Vec<String>) {
    let (code, stdout, check_err, _) = run_bounded(agent().arg("check-config").arg(path), LIMIT);
    assert_eq!(code, Some(1), "check-config accepted it; stdout: {stdout}");
    let (code, _, run_err, _) = run_bounded(agent().arg("--config").arg(path).arg("run"), LIMIT);
    assert_eq!(code, Some(2), "run did not refuse it; stderr: {run_err}");
    assert!(!dir.join("run/agent.sock").exists(), "the refused daemon bound its socket");
    assert!(!dir.join("state").exists(), "the refused daemon created its state directory");
    let shown = path.display().to_string();
    let lines = |s: &str| s.lines().filter(|l| l.starts_with(&shown)).map(str::to_string).collect::<Vec<_>>();
    (lines(&check_err), lines(&run_err))
}

#[test]
fn check_config_and_the_daemon_refuse_each_bad_config_with_the_same_located_message() {
    // (what, config text from line 5, line:column, key, part of the message)
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        (
            "bad glob",
            "[fim]\npaths = [{ path = \"/etc\", exclude = [\"/etc/[\"] }]\n",
            "6:38",
            "fim.paths[0].exclude[0]",
            "`/etc/[` is not a valid glob",
        ),
        (
            "duplicate FIM path",
            "[fim]\npaths = [\"/etc\", \"/etc/\"]\n",
            "6:18",
            "fim.paths[1]",
            "listed twice",
        ),
        (
            "bad attribute name",
            "[fim]\npaths = [{ path = \"/etc\", attributes = [\"sha265\"] }]\n",
            "6:41",
            "fim.paths[0].attributes[0]",
            "unknown attribute `sha265`; valid attributes: sha256, blake3, mode, uid, gid",
        ),
        ("zero debounce", "[fim]\ndebounce_ms = 0\n", "6:15", "fim.debounce_ms", "must be 1..=60000, got 0"),
        (
            "relative FIM path",
            "[fim]\npaths = [\"etc\"]\n",
            "6:10",
            "fim.paths[0]",
            "must be an absolute path",
        ),
        (
            "out-of-range interval",
            "scan_interval_secs = 1\n",
            "5:22",
            "agent.scan_interval_secs",
            "must be 10..=604800, got 1",
        ),
        (
            "bad IMDS endpoint",
            "[imds]\nendpoint = \"ftp://169.254.169.254\"\n",
            "6:12",
            "imds.endpoint",
            "must start with http:// or https://",
        ),
    ];
    for (what, body, at, key, message) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), body);
        let (check, run) = both_refuse(dir.path(), &path);
        assert_eq!(check.len(), 1, "{what}: check-config printed {check:?}");
        let expected = format!("{}:{at}: key `{key}`: ", path.display());
        assert!(check[0].starts_with(&expected) && check[0].contains(message), "{what}: {check:?}");
        assert_eq!(check, run, "{what}: check-config and run disagree");

        // `agentctl check-config` (until it execs `guestward-agent`) prints the same line.
        let (code, _, ctl_err, _) = run_bounded(agentctl().arg("check-config").arg(&path), LIMIT);
        assert_eq!(code, Some(1), "{what}");
        assert!(ctl_err.lines().any(|l| l == check[0]), "{what}: agentctl said {ctl_err}");

        let (code, json, _, _) = run_bounded(agent().args(["check-config", "--json"]).arg(&path), LIMIT);
        assert_eq!(code, Some(1), "{what}");
        let json: serde_json::Value = serde_json::from_str(&json).unwrap();
        let (line, column) = at.split_once(':').unwrap();
        assert_eq!(json["valid"], false, "{what}");
        assert_eq!(json["path"], path.display().to_string(), "{what}");
        let e = &json["errors"][0];
        assert_eq!(
            (e["line"].to_string(), e["column"].to_string(), e["key"].as_str()),
            (line.to_string(), column.to_string(), Some(*key)),
            "{what}: {json}"
        );
    }
}

#[test]
fn several_problems_in_one_file_are_all_listed_by_both() {
    let dir = tempfile::tempdir().unwrap();
    let body = "scan_interval_secs = 1\n\
                [imds]\n\
                endpoint = \"ftp://x\"\n\
                token_ttl_secs = 0\n\
                [fim]\n\
                debounce_ms = 0\n\
                paths = [\"/etc\", \"/etc\", { path = \"/usr\", exclude = [\"/usr/[\"], attributes = [\"md5\"] }]\n\
                [network]\n\
                max_sockets = 0\n";
    let path = write_config(dir.path(), body);
    let (check, run) = both_refuse(dir.path(), &path);
    assert_eq!(check, run);
    let keys: Vec<&str> = check.iter().map(|l| l.split('`').nth(1).unwrap_or_default()).collect();
    // The attribute typo makes `fim.paths` undeserializable; the rest of `[fim]` is still
    // checked (`debounce_ms`), as is every other section.
    assert_eq!(
        keys,
        [
            "agent.scan_interval_secs",
            "imds.endpoint",
            "imds.token_ttl_secs",
            "fim.debounce_ms",
            "fim.paths[2].attributes[0]",
            "network.max_sockets",
        ],
        "{check:#?}"
    );
    let (code, json, _, _) = run_bounded(agent().args(["check-config", "--json"]).arg(&path), LIMIT);
    assert_eq!(code, Some(1));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["errors"].as_array().unwrap().len(), 6, "{json}");

    // Without the typo, every FIM problem shows too.
    let body = body.replace(", attributes = [\"md5\"]", "");
    let path = write_config(dir.path(), &body);
    let (check, run) = both_refuse(dir.path(), &path);
    assert_eq!(check, run);
    let keys: Vec<&str> = check.iter().map(|l| l.split('`').nth(1).unwrap_or_default()).collect();
    assert_eq!(
        keys,
        [
            "agent.scan_interval_secs",
            "imds.endpoint",
            "imds.token_ttl_secs",
            "fim.debounce_ms",
            "fim.paths[1]",
            "fim.paths[2].exclude[0]",
            "network.max_sockets",
        ],
        "{check:#?}"
    );
}

#[test]
fn check_config_exit_codes_valid_invalid_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "");
    let (code, stdout, stderr, _) = run_bounded(agent().arg("check-config").arg(&path), LIMIT);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, format!("{}: ok\n", path.display()));
    let (code, json, _, _) = run_bounded(agent().args(["check-config", "--json"]).arg(&path), LIMIT);
    assert_eq!(code, Some(0));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        (json["valid"].clone(), json["errors"].clone()),
        (serde_json::json!(true), serde_json::json!([]))
    );
    // `--config` is the default file to check.
    let (code, _, _, _) = run_bounded(agent().arg("--config").arg(&path).arg("check-config"), LIMIT);
    assert_eq!(code, Some(0));
    let absent = dir.path().join("absent.toml");
    let (code, _, stderr, _) = run_bounded(agent().arg("check-config").arg(&absent), LIMIT);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("absent.toml: cannot read config"), "{stderr}");
    // A FIFO where the config belongs is refused at once (it once hung every command that
    // read it, `run` and its SIGHUP reloads included), and so is a device.
    let fifo = dir.path().join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    for special in [fifo.as_path(), Path::new("/dev/null")] {
        let (code, _, stderr, _) = run_bounded(agent().arg("check-config").arg(special), LIMIT);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains("cannot read config: not a regular file"), "{stderr}");
        let (code, _, stderr, _) =
            run_bounded(agent().arg("--config").arg(special).args(["run", "--once"]), LIMIT);
        assert_eq!(code, Some(2), "{stderr}");
        // Said once (the reason was repeated as the error's source).
        assert_eq!(stderr.matches("not a regular file").count(), 1, "{stderr}");
    }
}

/// `[fim] enabled = true` is a promise: a monitor that cannot start (here its database path is
/// a directory) stops the daemon at start with the reason, instead of a daemon running with
/// FIM silently off.
#[test]
fn the_daemon_stops_at_start_when_fim_is_enabled_and_cannot_start() {
    use std::os::unix::fs::DirBuilderExt;
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    let path = write_config(dir.path(), &format!("[fim]\npaths = [\"{}\"]\n", tree.display()));
    std::fs::DirBuilder::new().mode(0o700).create(dir.path().join("state")).unwrap();
    std::fs::create_dir(dir.path().join("state/fim.db")).unwrap();
    let (code, _, stderr, _) = run_bounded(agent().arg("--config").arg(&path).arg("run"), LIMIT);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("file integrity monitoring could not start"), "{stderr}");
    assert!(!dir.path().join("run/agent.sock").exists(), "the socket was left behind");
}
