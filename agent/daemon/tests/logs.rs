//! The daemon's log as an operator reads it: a file or the journal, not a terminal (issue 12,
//! item 5). Each test runs the real `guestward-agent run` with its standard error in a file,
//! except the one about colour on a terminal.

use crate::support::{agent, agentctl, empty_config, run_on_terminal};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A daemon whose standard error is a file (`log`), on a private socket and state directory,
/// with FIM on a small tree of its own (`tree`, holding `f`). Killed when dropped.
struct LoggedDaemon {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    tree: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoggedDaemon {
    /// `agent_keys`: extra `[agent]` lines; `env`: extra environment (the log variables are
    /// cleared first, so the machine's own do not leak in).
    fn start(agent_keys: &str, env: &[(&str, String)], journal: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::write(tree.join("f"), "content\n").unwrap();
        let socket = dir.path().join("run/agent.sock");
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "[agent]\nstate_dir = \"{}\"\nscan_interval_secs = 3600\n{agent_keys}\n[control]\nsocket_path = \"{}\"\n\
                 [fim]\npaths = [\"{}\"]\ndebounce_ms = 50\n",
                dir.path().join("state").display(),
                socket.display(),
                tree.display()
            ),
        )
        .unwrap();
        let log = dir.path().join("agent.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = agent();
        cmd.env_remove("RUST_LOG").env_remove("JOURNAL_STREAM");
        if journal {
            // What systemd sets for StandardError=journal: the device and inode of the stream.
            use std::os::unix::fs::MetadataExt;
            let meta = file.metadata().unwrap();
            cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
        }
        let child = cmd
            .envs(env.iter().map(|(k, v)| (k, v)))
            .arg("--config")
            .arg(&config)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        let daemon = Self { child, socket, log, tree, _dir: dir };
        daemon.wait_for("the control socket", || daemon.socket.exists());
        daemon
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap()).into_owned()
    }

    fn wait_for(&self, what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// FIM watching with a complete baseline, so a change is reported in real time.
    fn wait_for_baseline(&self) {
        self.wait_for("the FIM baseline", || {
            let out = agentctl().arg("--socket").arg(&self.socket).args(["--json", "fim", "status"]).output();
            out.is_ok_and(|o| {
                serde_json::from_slice::<Value>(&o.stdout).is_ok_and(|s| {
                    s["state"] == "watching" && s["baseline"]["complete"].as_bool().unwrap_or(true)
                })
            })
        });
        let (code, _, err) = crate::support::run(
            agentctl().arg("--socket").arg(&self.socket).args(["fim", "baseline", "--wait"]),
        );
        assert_eq!(code, 0, "{err}");
    }

    /// SIGTERM, and the exit code (the daemon must stop within 10 s).
    fn terminate(mut self) -> (i32, String) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let code = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status.code().expect("exited by a signal");
            }
            assert!(Instant::now() < deadline, "no exit within 10 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        (code, self.log())
    }
}

impl Drop for LoggedDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines_about<'a>(log: &'a str, path: &Path) -> Vec<&'a str> {
    let quoted = format!("\"{}\"", path.display());
    log.lines().filter(|l| l.contains(&quoted)).collect()
}

#[test]
fn logs_have_no_escape_codes_when_stderr_is_not_a_terminal() {
    let daemon = LoggedDaemon::start("", &[], false);
    let (socket, state) = (daemon.socket.display().to_string(), daemon._dir.path().join("state"));
    let (code, log) = daemon.terminate();
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains('\x1b'), "escape codes in a log file:\n{log:?}");
    // Info by default: start (version, config, state dir, socket), configuration, stop.
    let start =
        log.lines().find(|l| l.contains("guestward-agent running")).unwrap_or_else(|| panic!("{log}"));
    assert!(start.contains(" INFO "), "{start}");
    for part in [env!("CARGO_PKG_VERSION"), "agent.toml", &state.display().to_string(), &socket] {
        assert!(start.contains(part), "start line lacks {part}: {start}");
    }
    assert!(log.contains("configuration loaded") && log.contains("log_level=info"), "{log}");
    assert!(log.lines().any(|l| l.contains(" INFO ") && l.contains("guestward-agent stopped")), "{log}");
}

#[test]
fn a_fim_change_is_one_info_line() {
    let daemon = LoggedDaemon::start("", &[], false);
    daemon.wait_for_baseline();
    let file = daemon.tree.join("f");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    daemon.wait_for("the change's log line", || !lines_about(&daemon.log(), &file).is_empty());
    // Past the debounce and the event's round through the history: nothing more comes.
    std::thread::sleep(Duration::from_millis(1500));
    let (code, log) = daemon.terminate();
    assert_eq!(code, 0, "{log}");
    let lines = lines_about(&log, &file);
    assert_eq!(lines.len(), 1, "one line for one change:\n{log}");
    let line = lines[0];
    assert!(line.contains(" INFO ") && line.contains("file changed"), "{line}");
    let changed = line.split("changed=").nth(1).unwrap_or_default();
    assert!(changed.split([',', ' ']).any(|a| a == "mode"), "names the changed attribute: {line}");
    assert!(!line.contains('{') && !line.contains("sha256\""), "no JSON records: {line}");
    assert!(
        !log.contains(" WARN ") || !log.lines().any(|l| l.contains(" WARN ") && l.contains("tree/f")),
        "{log}"
    );
}

/// Removing a watched directory (what removing a package does under /usr) is a change, logged
/// as one, not a warning: `journalctl -p warning` stays for what asks something of someone.
#[test]
fn a_watched_directory_removed_logs_its_changes_and_no_warning() {
    let daemon = LoggedDaemon::start("", &[], false);
    daemon.wait_for_baseline();
    let daemon_tree = daemon.tree.clone();
    let sub = daemon.tree.join("sub");
    let deep = sub.join("deeper/g");
    std::fs::create_dir_all(sub.join("deeper")).unwrap();
    std::fs::write(&deep, "g\n").unwrap();
    daemon.wait_for("the new file's log line", || {
        lines_about(&daemon.log(), &deep).iter().any(|l| l.contains("file added"))
    });
    std::fs::remove_dir_all(&sub).unwrap();
    daemon.wait_for("the removal's log line", || {
        lines_about(&daemon.log(), &deep).iter().any(|l| l.contains("file removed"))
    });
    std::thread::sleep(Duration::from_millis(1000));
    let (code, log) = daemon.terminate();
    assert_eq!(code, 0, "{log}");
    // Only lines about the watched tree or from the watcher count: the daemon runs every other
    // collector too, whose warnings (no network, say) are not this test's business.
    let tree = daemon_tree.display().to_string();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .filter(|l| l.contains(&tree) || l.contains("notify"))
        .collect();
    assert!(warnings.is_empty(), "warnings for an ordinary removal: {warnings:#?}");
}

#[test]
fn under_the_journal_lines_carry_sd_daemon_priorities_and_no_timestamp() {
    let daemon = LoggedDaemon::start("", &[], true);
    let (code, log) = daemon.terminate();
    assert_eq!(code, 0, "{log}");
    let start =
        log.lines().find(|l| l.contains("guestward-agent running")).unwrap_or_else(|| panic!("{log}"));
    assert!(start.starts_with("<6>"), "info is priority 6: {start}");
    assert!(!start.starts_with("<6>20"), "the journal stamps entries itself: {start}");
    assert!(log.lines().all(|l| l.len() > 3 && l.starts_with('<') && l.as_bytes()[2] == b'>'), "{log}");
    assert!(!log.contains('\x1b'), "{log:?}");

    // Debug lines are priority 7 (a one-shot command at RUST_LOG=debug logs plenty).
    let dir = tempfile::tempdir().unwrap();
    let err = dir.path().join("err");
    let file = std::fs::File::create(&err).unwrap();
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().unwrap();
    let config = crate::support::empty_config();
    // A debug-level scan with stderr to `stderr` and JOURNAL_STREAM set to `stream`.
    let scan = |stream: String, stderr: std::fs::File| {
        agent()
            .env("RUST_LOG", "debug")
            .env("JOURNAL_STREAM", stream)
            .arg("--config")
            .arg(config.path())
            .args(["scan", "--only", "host,packages"])
            .stdout(Stdio::null())
            .stderr(stderr)
            .status()
            .unwrap()
    };
    let status = scan(format!("{}:{}", meta.dev(), meta.ino()), file);
    assert!(status.code().is_some(), "{status:?}");
    let text = std::fs::read_to_string(&err).unwrap();
    assert!(text.lines().any(|l| l.starts_with("<7>")), "{text}");

    // A JOURNAL_STREAM naming another stream (inherited, stderr redirected) is ignored.
    scan("1:1".to_string(), std::fs::File::create(&err).unwrap());
    let text = std::fs::read_to_string(&err).unwrap();
    assert!(!text.is_empty() && text.lines().all(|l| !l.starts_with('<')), "{text}");
}

#[test]
fn agent_log_level_sets_the_level_and_rust_log_wins() {
    let daemon = LoggedDaemon::start("log_level = \"warn\"", &[], false);
    let (code, log) = daemon.terminate();
    assert_eq!(code, 0, "{log}");
    // The configured level applies before the first line (the configuration line included).
    assert!(!log.contains(" INFO "), "log_level = warn:\n{log}");

    let daemon = LoggedDaemon::start("log_level = \"warn\"", &[("RUST_LOG", "info".into())], false);
    let (code, log) = daemon.terminate();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains(" INFO ") && log.contains("guestward-agent running"), "RUST_LOG wins:\n{log}");
}

/// On a terminal the log was coloured whatever the environment said: `NO_COLOR` (set and not
/// empty, no-color.org) and `TERM=dumb` turn the escape codes off; an empty `NO_COLOR` does not.
#[test]
fn no_color_and_a_dumb_terminal_turn_the_log_s_colour_off() {
    let config = empty_config();
    let log_on_terminal = |env: &[(&str, &str)]| {
        let mut cmd = agent();
        cmd.env("RUST_LOG", "debug").env("TERM", "xterm").env_remove("NO_COLOR");
        cmd.envs(env.iter().copied())
            .args(["scan", "--json", "--only", "host", "--config"])
            .arg(config.path());
        let (code, out) = run_on_terminal(&mut cmd, 200, Duration::from_secs(60));
        assert!(code == 0 || code == 1, "exit {code}: {out}");
        assert!(out.contains("DEBUG"), "no log line: {out}");
        out
    };
    assert!(log_on_terminal(&[]).contains("\x1b["), "a terminal gets colour by default");
    assert!(log_on_terminal(&[("NO_COLOR", "")]).contains("\x1b["), "an empty NO_COLOR is unset");
    for env in [("NO_COLOR", "1"), ("TERM", "dumb")] {
        let out = log_on_terminal(&[env]);
        assert!(!out.contains('\x1b'), "{env:?}: escape codes in {out:?}");
    }
}
