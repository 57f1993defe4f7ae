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
    cmd.env_remove("GUESTWARD_LOG").env_remove("RUST_LOG");
    cmd
}

/// `agentctl`, from the guestward-ctl package: cargo names only this package's binaries to its
/// tests, so it is found beside `guestward-agent` in the same target directory, where
/// `./scripts/test` (`cargo build --workspace --bins` first) puts it.
pub fn agentctl_path() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_guestward-agent")).parent().unwrap().to_path_buf();
    let path = dir.join("agentctl");
    assert!(
        path.is_file(),
        "{} is missing: build it first (`cargo build -p guestward-ctl`, or run ./scripts/test)",
        path.display()
    );
    path
}

pub fn agentctl() -> Command {
    Command::new(agentctl_path())
}

/// An empty config file, so tests do not depend on /etc/guestward/agent.toml.
/// A one-shot FIM setup under `dir`: `root/` for the tree to scan with `--root`, `state/` for
/// the baseline, and `agent.toml` watching the tree's `/etc`. Returns (root, config, state).
pub fn fim_root_setup(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let state = dir.join("state");
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!("[agent]\nstate_dir = \"{}\"\n\n[fim]\npaths = [\"/etc\"]\n", state.display()),
    )
    .unwrap();
    (root, config, state)
}

/// `guestward-agent --config CONFIG fim ARGS --root ROOT`.
pub fn run_fim(config: &Path, root: &Path, args: &[&str]) -> (i32, String, String) {
    run(agent().arg("--config").arg(config).arg("fim").args(args).arg("--root").arg(root))
}

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

    /// A daemon with extra config text appended and extra environment variables. The text
    /// follows the `[control]` table: keys before any table header are `[control]` keys. A text
    /// that starts with an `[agent]` table has its keys added to the daemon's `[agent]` table,
    /// up to the next table header. Unless the text has a `[fim]` table, FIM watches
    /// `<dir>/watched` (see [`Self::watched`]).
    pub fn start_with(extra_config: &str, env: &[(&str, String)]) -> Self {
        match Self::start_prepared(extra_config, env, |_| Ok(())) {
            Ok((daemon, ())) => daemon,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`Self::start_with`], with `prepare` run on the state directory (created empty) before
    /// the daemon starts: a filesystem mounted there, say. Its error is returned, nothing started.
    pub fn start_prepared<T>(
        extra_config: &str,
        env: &[(&str, String)],
        prepare: impl FnOnce(&Path) -> Result<T, String>,
    ) -> Result<(Self, T), String> {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let prepared = prepare(&state)?;
        let socket = dir.path().join("run/agent.sock");
        let config = dir.path().join("agent.toml");
        // FIM watches a small tree of the test's own, never the host's /usr or /etc: a baseline
        // of those would take minutes on a busy machine, and the test would depend on them.
        let fim = if extra_config.contains("[fim]") {
            String::new()
        } else {
            let watched = dir.path().join("watched");
            std::fs::create_dir_all(watched.join("etc")).unwrap();
            std::fs::write(watched.join("etc/app.conf"), "port = 8080\n").unwrap();
            std::fs::write(watched.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
            format!("\n[fim]\npaths = [\"{}\"]\n", watched.display())
        };
        let (agent_keys, extra_config) = match extra_config.strip_prefix("[agent]\n") {
            Some(rest) => rest.split_at(rest.find("\n[").map_or(rest.len(), |i| i + 1)),
            None => ("", extra_config),
        };
        std::fs::write(
            &config,
            format!(
                "[agent]\nstate_dir = \"{}\"\nscan_interval_secs = 3600\n{agent_keys}[control]\nsocket_path = \"{}\"\n{extra_config}{fim}",
                state.display(),
                socket.display()
            ),
        )
        .unwrap();
        let child = Self::spawn(&config, env);
        let daemon = Self { dir_path: dir.path().to_path_buf(), child, socket, _dir: dir };
        daemon.wait_for(|| daemon.socket.exists(), "the control socket to appear");
        Ok((daemon, prepared))
    }

    fn spawn(config: &Path, env: &[(&str, String)]) -> Child {
        agent()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .arg("--config")
            .arg(config)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    }

    /// Stops the daemon with SIGTERM (asserting a clean exit) and starts it again on the same
    /// configuration and state directory.
    pub fn restart(&mut self) {
        self.restart_after(Duration::ZERO);
    }

    /// Stops the daemon, waits `pause` with it stopped, and starts it again.
    pub fn restart_after(&mut self, pause: Duration) {
        self.stop_gracefully();
        std::thread::sleep(pause);
        self.child = Self::spawn(&self.dir_path.join("agent.toml"), &[]);
        self.wait_for(|| self.socket.exists(), "the control socket to appear again");
    }

    fn stop_gracefully(&mut self) -> i32 {
        let pid = i32::try_from(self.child.id()).unwrap();
        let status = sigterm_and_wait(pid, &mut self.child, Duration::from_secs(10));
        status.code().expect("exited by signal, not gracefully")
    }

    /// The tree FIM watches by default.
    pub fn watched(&self) -> PathBuf {
        self.dir_path.join("watched")
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `agentctl` against this daemon, bounded in time (`--timeout` and a kill after `limit`).
    pub fn ctl_bounded(&self, args: &[&str], limit: Duration) -> (Option<i32>, String, String, Duration) {
        run_bounded(agentctl().arg("--socket").arg(&self.socket).args(args), limit)
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
        self.stop_gracefully()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends SIGTERM to `pid` (the daemon: `child` itself, or a process under it such as one run by
/// strace or setpriv) and waits for `child` to exit, killing it and failing the test after `limit`.
pub fn sigterm_and_wait(
    pid: i32,
    child: &mut std::process::Child,
    limit: Duration,
) -> std::process::ExitStatus {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the daemon did not stop within {limit:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
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

/// Runs `cmd` to completion, failing the test (and killing the process) if it takes longer
/// than `limit`: a regression then fails instead of hanging CI. Returns the exit code (`None`
/// when killed by a signal), stdout, stderr and the time taken.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> (Option<i32>, String, String, Duration) {
    use std::io::Read;
    let started = Instant::now();
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let Some(status) = guestward_core::testing::wait_bounded(&mut child, limit) else {
        let stderr = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
        panic!("{cmd:?} did not finish within {limit:?}; stderr:\n{stderr}");
    };
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
    (status.code(), stdout, stderr, took)
}

/// `setpriv`, when installed.
pub fn setpriv() -> Option<&'static str> {
    ["/usr/bin/setpriv", "/bin/setpriv"].into_iter().find(|p| Path::new(p).exists())
}

/// A line of `/proc/<pid>/status` (e.g. `VmHWM`), its first number.
pub fn proc_status_value(pid: u32, key: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::to_string))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// The environment the shipped systemd unit gives the daemon (`Environment=` lines of
/// `systemd/guestward-agent.service`: glibc's malloc settings), for tests that measure the
/// daemon's memory as it runs in production.
pub fn unit_environment() -> Vec<(String, String)> {
    let unit = std::fs::read_to_string(format!("{REPO}/systemd/guestward-agent.service")).unwrap();
    let mut env = Vec::new();
    for line in unit.lines().filter_map(|l| l.trim().strip_prefix("Environment=")) {
        for pair in line.split_whitespace() {
            let (k, v) = pair.split_once('=').unwrap();
            env.push((k.to_string(), v.to_string()));
        }
    }
    assert!(!env.is_empty(), "the unit sets no Environment=");
    env
}

/// Runs `cmd` with standard output and error on a new pseudo-terminal `columns` wide (standard
/// input empty) and returns its exit code and what the terminal received, `\r\n` as `\n`. For
/// what a binary does only on a terminal: colour, wrapping at the terminal's width.
pub fn run_on_terminal(cmd: &mut Command, columns: u16, limit: Duration) -> (i32, String) {
    use std::io::Read;
    let size = nix::pty::Winsize { ws_row: 50, ws_col: columns, ws_xpixel: 0, ws_ypixel: 0 };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(Stdio::from(pty.slave))
        .spawn()
        .unwrap();
    // The command keeps its copies of the terminal's end until they are replaced: the reader
    // below sees the end of the output only once no process holds that end open.
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut master = std::fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        // Ends with EIO once the child (and every process that inherited the terminal) is gone.
        let _ = master.read_to_end(&mut bytes);
        bytes
    });
    let Some(status) = guestward_core::testing::wait_bounded(&mut child, limit) else {
        panic!("{cmd:?} did not finish within {limit:?}");
    };
    let out = String::from_utf8_lossy(&reader.join().unwrap()).replace("\r\n", "\n");
    (status.code().expect("killed by a signal"), out)
}
