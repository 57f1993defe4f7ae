use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// A real `guestward-agent run` on a private socket and state dir, killed when dropped.
pub struct Daemon {
    pub dir_path: PathBuf,
    child: Child,
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    pub fn start() -> Self {
        Self::start_with("", &[])
    }

    /// The daemon's state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir_path.join("state")
    }

    /// A daemon with extra config text appended and extra environment variables.
    pub fn start_with(extra_config: &str, env: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/agent.sock");
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "[agent]\nstate_dir = \"{}\"\nscan_interval_secs = 3600\n[control]\nsocket_path = \"{}\"\n{extra_config}",
                dir.path().join("state").display(),
                socket.display()
            ),
        )
        .unwrap();
        let child = agent()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .arg("--config")
            .arg(&config)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let daemon = Self { dir_path: dir.path().to_path_buf(), child, socket, _dir: dir };
        daemon.wait_for(|| daemon.socket.exists(), "the control socket to appear");
        daemon
    }

    pub fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        run(agentctl().arg("--socket").arg(&self.socket).args(args))
    }

    pub fn wait_for(&self, mut ready: impl FnMut() -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn terminate(mut self) -> i32 {
        Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().expect("exited by signal, not gracefully");
            }
            assert!(Instant::now() < deadline, "daemon did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the tests run as root (needed to switch users with setpriv).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        == Some("0")
}
