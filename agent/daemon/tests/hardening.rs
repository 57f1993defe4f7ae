//! Regression tests of issue 9 for the daemon and the two binaries: control socket limits and
//! timeouts, `socket_group`, the state directory, closed pipes, and a hostile home directory
//! under the daemon. Every risky call is bounded in time so that a regression fails.

use crate::support::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Extra config for daemons in these tests: nothing slow or host-dependent runs.
const QUIET: &str = "[fim]\nenabled = false\n[imds]\nenabled = false\n";

#[test]
fn agentctl_gives_up_on_a_socket_that_accepts_and_never_answers() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("silent.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    // Accept every connection and keep it open without a byte of answer.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    for args in [&["--timeout", "2", "status"][..], &["--timeout", "2", "scan", "--only", "host"][..]] {
        let (code, _, err, took) =
            run_bounded(agentctl().arg("--socket").arg(&socket).args(args), Duration::from_secs(20));
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(8), "{args:?}: took {took:?}");
        assert!(err.contains(&socket.display().to_string()), "names the socket: {err}");
        assert!(err.contains("did not answer within 2 s"), "{err}");
        assert!(err.contains("--timeout") && err.contains("journalctl -u guestward-agent"), "{err}");
    }
    // Without --timeout the default is documented.
    let (_, help, _) = run(agentctl().arg("--help"));
    assert!(
        help.contains("--timeout <SECS>") && help.contains("default: 30") && help.contains("600"),
        "{help}"
    );
}

#[test]
fn agentctl_gives_up_connecting_when_the_accept_queue_is_full() {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, connect, listen, socket,
    };
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.sock");
    let listener = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
    bind(listener.as_raw_fd(), &UnixAddr::new(&path).unwrap()).unwrap();
    listen(&listener, Backlog::new(1).unwrap()).unwrap();
    // Never accepted: fill the queue until the kernel refuses more (EAGAIN).
    let mut queued = Vec::new();
    loop {
        let s = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_NONBLOCK, None).unwrap();
        match connect(s.as_raw_fd(), &UnixAddr::new(&path).unwrap()) {
            Ok(()) => queued.push(s),
            Err(nix::errno::Errno::EAGAIN) => break,
            Err(e) => panic!("connect: {e}"),
        }
        assert!(queued.len() < 1000, "the listen queue never filled");
    }
    let (code, _, err, took) = run_bounded(
        agentctl().arg("--socket").arg(&path).args(["--timeout", "60", "status"]),
        Duration::from_secs(30),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(took >= Duration::from_secs(5) && took < Duration::from_secs(15), "took {took:?}");
    assert!(
        err.contains(&path.display().to_string()) && err.contains("accepted no connection within 5 s"),
        "{err}"
    );
}

#[test]
fn idle_connections_do_not_lock_out_agentctl_and_are_closed_after_the_read_timeout() {
    let daemon =
        Daemon::start_with(&format!("max_connections = 8\nrequest_read_timeout_ms = 1000\n{QUIET}"), &[]);
    // The baseline is taken once the first scan is over: a scan in progress holds descriptors
    // of its own (dpkg status, netlink, /proc), which would be counted against the cap.
    daemon.wait_for(
        || {
            let (_, out, _, _) = daemon.ctl_bounded(&["status", "--json"], Duration::from_secs(40));
            serde_json::from_str::<Value>(&out).is_ok_and(|s| s["last_scan"].is_object())
        },
        "the first scan",
    );
    let baseline = open_fds(daemon.pid());
    // 60 connections that never send a byte: seven times the cap.
    let mut idle: Vec<UnixStream> = (0..60).map(|_| UnixStream::connect(&daemon.socket).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let during = open_fds(daemon.pid());
    assert!(
        during <= baseline + 8 + 2,
        "the daemon holds {during} descriptors (baseline {baseline}, cap 8): connections beyond the cap must wait in the kernel's queue"
    );
    // agentctl still gets an answer: the idle ones are closed after 1 s, eight at a time.
    let (code, out, err, took) = daemon.ctl_bounded(&["status", "--timeout", "30"], Duration::from_secs(40));
    assert!(matches!(code, Some(0 | 1)), "{err}");
    assert!(out.contains("running (pid"), "{out}");
    assert!(took < Duration::from_secs(20), "status took {took:?}");
    // Every idle connection is closed by the daemon (EOF), none is left hanging.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, stream) in idle.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(10));
        stream.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 512];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("idle connection {i} was not closed by the daemon: {e}"),
            }
        }
    }
    drop(idle);
    std::thread::sleep(Duration::from_millis(300));
    assert!(open_fds(daemon.pid()) <= baseline + 2, "descriptors leaked: {}", open_fds(daemon.pid()));
    assert_eq!(daemon.terminate(), 0);
}

#[test]
fn a_peer_that_stops_reading_its_answer_loses_its_connection() {
    // A report larger than the socket buffers: about 3000 Python packages.
    let tree = tempfile::tempdir().unwrap();
    let site = tree.path().join("site-packages");
    for i in 0..3000 {
        let d = site.join(format!("package_number_{i}-1.0.{i}.dist-info"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("METADATA"),
            format!("Metadata-Version: 2.1\nName: package-number-{i}\nVersion: 1.0.{i}\nSummary: filler\n"),
        )
        .unwrap();
    }
    // One slot: if the stalled connection kept it, nobody else would get an answer.
    let daemon = Daemon::start_with(
        &format!(
            "max_connections = 1\nwrite_timeout_ms = 500\n\
             [packages.language]\npython_roots = [\"{}\"]\njava_roots = []\nnode_roots = []\nexclude = []\n{QUIET}",
            site.display()
        ),
        &[],
    );
    daemon.wait_for(
        || {
            let (code, out, _, _) = daemon.ctl_bounded(&["status", "--json"], Duration::from_secs(40));
            matches!(code, Some(0 | 1))
                && serde_json::from_str::<Value>(&out).unwrap()["last_scan"].is_object()
        },
        "the first scan",
    );
    let mut stalled = UnixStream::connect(&daemon.socket).unwrap();
    stalled.write_all(b"GET /v1/report HTTP/1.1\r\nHost: guestward-agent\r\n\r\n").unwrap();
    // Not reading: the daemon's write stalls once the socket buffers are full.
    let (code, out, err, took) = daemon.ctl_bounded(&["status", "--timeout", "20"], Duration::from_secs(30));
    assert!(matches!(code, Some(0 | 1)), "{err}");
    assert!(out.contains("running (pid"), "{out}");
    assert!(took < Duration::from_secs(10), "status waited {took:?} behind a peer that does not read");
    // What the stalled peer got is a cut-off answer, then EOF.
    stalled.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let _ = stalled.read_to_end(&mut got);
    assert!(got.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&got[..got.len().min(100)]));
    assert_eq!(daemon.terminate(), 0);
}

#[test]
fn socket_group_members_can_use_agentctl_and_others_cannot() {
    let Some(setpriv) = setpriv() else {
        guestward_core::testing::skip_or_fail(
            "socket_group_members_can_use_agentctl_and_others_cannot",
            "setpriv not installed",
        );
        return;
    };
    if !is_root() {
        guestward_core::testing::skip_or_fail(
            "socket_group_members_can_use_agentctl_and_others_cannot",
            "needs root to switch users",
        );
        return;
    }
    let group = test_group();
    let daemon = Daemon::start_with(&format!("socket_group = \"{}\"\n{QUIET}", group.name), &[]);
    // Only the test's private temporary directory is opened up (it is 0700 by default); the
    // socket directory and the socket are as the daemon made them.
    std::fs::set_permissions(&daemon.dir_path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = std::fs::metadata(daemon.socket.parent().unwrap()).unwrap();
    assert_eq!((dir.mode() & 0o7777, dir.gid()), (0o750, group.gid), "socket directory");
    let sock = std::fs::metadata(&daemon.socket).unwrap();
    assert_eq!((sock.mode() & 0o777, sock.gid()), (0o660, group.gid), "socket");

    let as_nobody = |groups: &str| {
        let mut cmd = Command::new(setpriv);
        cmd.args(["--reuid=65534", "--regid=65534"]);
        if groups.is_empty() {
            cmd.arg("--clear-groups");
        } else {
            cmd.arg(format!("--groups={groups}"));
        }
        cmd.arg(crate::support::agentctl_path()).arg("--socket").arg(&daemon.socket).arg("status");
        run_bounded(&mut cmd, Duration::from_secs(40))
    };
    let (code, out, err, _) = as_nobody(&group.gid.to_string());
    assert!(matches!(code, Some(0 | 1)), "a member of {} was refused: {err}", group.name);
    assert!(out.contains("running (pid"), "{out}");
    let (code, _, err, _) = as_nobody("");
    // `status` exits 3 on permission denied.
    assert_eq!(code, Some(3), "a non-member got in: {err}");
    assert!(err.contains("permission denied"), "{err}");
}

/// A group for the socket_group test: `adm` when it exists, else one created here.
struct TestGroup {
    name: String,
    gid: u32,
}

fn test_group() -> TestGroup {
    for name in ["adm", "gwsocktest"] {
        if let Ok(Some(g)) = nix::unistd::Group::from_name(name) {
            return TestGroup { name: name.to_string(), gid: g.gid.as_raw() };
        }
    }
    let status = Command::new("groupadd").args(["--system", "gwsocktest"]).status().unwrap();
    assert!(status.success(), "groupadd gwsocktest failed");
    let g = nix::unistd::Group::from_name("gwsocktest").unwrap().unwrap();
    TestGroup { name: "gwsocktest".into(), gid: g.gid.as_raw() }
}

#[test]
fn per_user_connection_cap_refuses_the_excess_and_keeps_root_served() {
    let Some(setpriv) = setpriv() else {
        guestward_core::testing::skip_or_fail(
            "per_user_connection_cap_refuses_the_excess_and_keeps_root_served",
            "setpriv not installed",
        );
        return;
    };
    if !is_root() {
        guestward_core::testing::skip_or_fail(
            "per_user_connection_cap_refuses_the_excess_and_keeps_root_served",
            "needs root",
        );
        return;
    }
    let group = test_group();
    let daemon = Daemon::start_with(
        &format!(
            "socket_group = \"{}\"\nmax_connections = 8\nmax_connections_per_user = 3\n\
             request_read_timeout_ms = 20000\n{QUIET}",
            group.name
        ),
        &[],
    );
    std::fs::set_permissions(&daemon.dir_path, std::fs::Permissions::from_mode(0o755)).unwrap();
    // This test binary, re-run as a group member, opens 20 connections and holds them.
    let mut helper = Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", &format!("--groups={}", group.gid)])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "hardening::hold_connections_helper",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("GW_HOLD_SOCKET", &daemon.socket)
        .env("GW_HOLD_COUNT", "20")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let line = {
        use std::io::BufRead;
        let stdout = helper.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // libtest may print "test name ... " on the same line first.
            for l in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(at) = l.find("held=") {
                    let _ = tx.send(l[at..].to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => l,
            Err(_) => {
                let _ = helper.kill();
                panic!("the helper did not report");
            }
        }
    };
    // While the member holds its 3 connections, root is served at once.
    let (code, out, err, took) = daemon.ctl_bounded(&["status", "--json"], Duration::from_secs(20));
    let _ = helper.kill();
    let _ = helper.wait();
    assert_eq!(line, "held=3 refused=17", "per-user cap 3 out of 20 attempts");
    assert!(matches!(code, Some(0 | 1)), "{err}");
    assert!(took < Duration::from_secs(5), "root waited {took:?}");
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["counters"]["control_refused_connections_total"], 17);
}

/// Not a test of its own: run by `per_user_connection_cap_refuses_the_excess_and_keeps_root_served`
/// under another uid. Opens `GW_HOLD_COUNT` connections to `GW_HOLD_SOCKET` and reports how
/// many the daemon closed at once.
#[test]
#[ignore = "helper process of per_user_connection_cap_refuses_the_excess_and_keeps_root_served"]
fn hold_connections_helper() {
    let (Ok(socket), Ok(count)) = (std::env::var("GW_HOLD_SOCKET"), std::env::var("GW_HOLD_COUNT")) else {
        return;
    };
    let count: usize = count.parse().unwrap();
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..count {
        let mut s = UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut buf = [0u8; 1];
        match s.read(&mut buf) {
            Ok(0) => refused += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => refused += 1,
            _ => held.push(s),
        }
    }
    println!("held={} refused={refused}", held.len());
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(20));
}

/// Starts `guestward-agent run` with `state_dir`, expecting it to refuse at once.
fn daemon_refusing_state_dir(state_dir: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{}\"\n[control]\nsocket_path = \"{}\"\n{QUIET}",
            state_dir.display(),
            dir.path().join("run/agent.sock").display()
        ),
    )
    .unwrap();
    let (code, _, err, _) =
        run_bounded(agent().arg("--config").arg(&config).arg("run"), Duration::from_secs(20));
    assert_eq!(code, Some(2), "the daemon did not refuse {}: {err}", state_dir.display());
    err
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

/// `guestward-agent fim init --state-dir /tmp`-style: the one-shot baseline follows the
/// daemon's state-directory rule, so `fim.db` is never written into a shared directory.
#[test]
fn fim_one_shot_refuses_a_shared_state_dir_and_writes_nothing_there() {
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("watched"), "x").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, format!("[fim]\npaths = [\"{}\"]\n", tree.path().display())).unwrap();
    let tmp_like = tempfile::tempdir().unwrap();
    std::fs::write(tmp_like.path().join("someone-elses-file"), "x").unwrap();
    std::fs::set_permissions(tmp_like.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let (code, _, err, _) = run_bounded(
        agent()
            .arg("--config")
            .arg(&config)
            .args(["fim", "init", "--no-progress", "--state-dir"])
            .arg(tmp_like.path()),
        Duration::from_secs(30),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&tmp_like.path().display().to_string()) && err.contains("mode 1777"), "{err}");
    assert_eq!(mode_of(tmp_like.path()), 0o1777, "mode changed");
    assert!(!tmp_like.path().join("fim.db").exists(), "a baseline was written into the shared directory");
}

#[test]
fn shared_state_dir_is_refused_and_its_mode_left_unchanged() {
    // Like /tmp: world-writable, sticky, other people's files in it.
    let tmp_like = tempfile::tempdir().unwrap();
    std::fs::write(tmp_like.path().join("someone-elses-file"), "x").unwrap();
    std::fs::set_permissions(tmp_like.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let err = daemon_refusing_state_dir(tmp_like.path());
    assert!(err.contains(&format!("agent.state_dir = {}", tmp_like.path().display())), "{err}");
    assert!(err.contains("other users can write to it (mode 1777)"), "{err}");
    assert_eq!(mode_of(tmp_like.path()), 0o1777, "mode changed");

    // Like /var/lib: ours, readable by all, full of other software's state.
    let var_lib_like = tempfile::tempdir().unwrap();
    std::fs::create_dir(var_lib_like.path().join("dpkg")).unwrap();
    std::fs::set_permissions(var_lib_like.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = daemon_refusing_state_dir(var_lib_like.path());
    assert!(err.contains(&format!("agent.state_dir = {}", var_lib_like.path().display())), "{err}");
    assert!(err.contains("not empty") && err.contains("dedicated directory"), "{err}");
    assert_eq!(mode_of(var_lib_like.path()), 0o755, "mode changed");

    if is_root() {
        // Someone else's directory.
        let theirs = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(theirs.path(), Some(65534), Some(65534)).unwrap();
        let before = mode_of(theirs.path());
        let err = daemon_refusing_state_dir(theirs.path());
        assert!(err.contains("is owned by uid 65534"), "{err}");
        assert_eq!(mode_of(theirs.path()), before);
    }

    // An empty directory of ours is dedicated: it is made private and used.
    let empty = tempfile::tempdir().unwrap();
    let state = empty.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    let socket = dir.path().join("run/agent.sock");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{}\"\n[control]\nsocket_path = \"{}\"\n{QUIET}",
            state.display(),
            socket.display()
        ),
    )
    .unwrap();
    let mut child = agent().arg("--config").arg(&config).arg("run").stderr(Stdio::inherit()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!("the daemon did not start with an empty state dir of its own");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(mode_of(&state), 0o700);
}

/// Runs `cmd` with its stdout on a pipe whose reading end is already closed, so that the very
/// first write fails with EPIPE.
fn with_closed_stdout(cmd: &mut Command) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = cmd.stdin(Stdio::null()).stdout(writer).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("{cmd:?} did not finish on a closed stdout");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), err.join().unwrap())
}

#[test]
fn closed_stdout_ends_both_binaries_quietly_with_exit_0() {
    let config = empty_config();
    let agent_config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(agent_config.path(), QUIET).unwrap();
    let mut cases: Vec<(String, Command)> = Vec::new();
    for args in [
        &["schema"][..],
        &["scan", "--json", "--only", "host"][..],
        &["scan", "--only", "host"][..],
        &["scan", "--format", "cyclonedx", "--only", "packages"][..],
    ] {
        let mut cmd = agent();
        cmd.arg("--config").arg(config.path()).args(args);
        cases.push((format!("guestward-agent {args:?}"), cmd));
    }
    for args in [&["check-config"][..], &["check-config", "--json"][..]] {
        let mut cmd = agentctl();
        cmd.args(args).arg(agent_config.path());
        cases.push((format!("agentctl {args:?}"), cmd));
    }
    let daemon = Daemon::start_with(QUIET, &[]);
    daemon.wait_for(
        || {
            let (_, out, _, _) = daemon.ctl_bounded(&["status", "--json"], Duration::from_secs(40));
            serde_json::from_str::<Value>(&out).is_ok_and(|s| s["last_scan"].is_object())
        },
        "the first scan",
    );
    for args in [
        &["status"][..],
        &["status", "--json"][..],
        &["report", "--json"][..],
        &["report"][..],
        &["findings"][..],
        &["imds", "--json"][..],
    ] {
        let mut cmd = agentctl();
        cmd.arg("--socket").arg(&daemon.socket).args(args);
        cases.push((format!("agentctl {args:?}"), cmd));
    }
    for (name, mut cmd) in cases {
        let (code, stderr) = with_closed_stdout(&mut cmd);
        assert!(!stderr.to_lowercase().contains("broken pipe"), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert_eq!(code, Some(0), "{name}: {stderr}");
    }
}

/// Creates up to `target` empty `*.egg-info` directories under `dir` as `nobody`, in batches,
/// stopping early when `budget` is spent. Returns how many exist.
fn plant_egg_infos_as_nobody(setpriv: &str, dir: &Path, target: u64, budget: Duration) -> u64 {
    let started = Instant::now();
    let batch = 50_000u64;
    let mut made = 0;
    while made < target && started.elapsed() < budget {
        let last = (made + batch).min(target);
        let script =
            format!("cd '{}' && seq -f 'pkg%.0f.egg-info' {} {last} | xargs mkdir", dir.display(), made + 1);
        let (code, _, err, _) = run_bounded(
            Command::new(setpriv).args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "sh",
                "-c",
                &script,
            ]),
            Duration::from_secs(120),
        );
        assert_eq!(code, Some(0), "creating entries {}..={last}: {err}", made + 1);
        made = last;
    }
    made
}

/// The scenario end to end: an unprivileged user plants a FIFO where the language walk
/// reads a `METADATA`, and a huge tree of `*.egg-info` entries, in their `~/.local`. The
/// daemon must keep answering, stay under its memory cap and report the FIFO.
///
/// Needs the door that refuses non-regular files (branch h9-core) and the language entry cap
/// (branch h9-lang): without them the first scan blocks on the FIFO forever and this test
/// fails at its deadline.
#[test]
fn unprivileged_fifo_and_huge_tree_in_home_do_not_wedge_the_daemon() {
    const NAME: &str = "unprivileged_fifo_and_huge_tree_in_home_do_not_wedge_the_daemon";
    let Some(setpriv) = setpriv() else {
        guestward_core::testing::skip_or_fail(NAME, "setpriv not installed");
        return;
    };
    if !is_root() {
        guestward_core::testing::skip_or_fail(NAME, "needs root to act as an unprivileged user");
        return;
    }
    // A million directories: on tmpfs they take about 10 s to create (and delete); on this
    // test machine's disk, 200,000 took 16 s to create and minutes to delete. So the tree goes
    // on /dev/shm when it is a roomy tmpfs, and creation stops at a 30 s budget either way (the
    // count reached is printed).
    let base: PathBuf = match nix::sys::statvfs::statvfs("/dev/shm") {
        Ok(st)
            if st.files_available() > 2_000_000 && st.blocks_available() * st.fragment_size() > (2 << 30) =>
        {
            "/dev/shm".into()
        }
        _ => std::env::temp_dir(),
    };
    let top = tempfile::tempdir_in(&base).unwrap();
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Two homes, everything below them made by `nobody`: the FIFO in one, the huge tree in the
    // other. (In one directory, whether the walk reaches the FIFO before the per-root package
    // cap stops it depends on the filesystem's directory order.)
    let mut sites = Vec::new();
    for user in ["nobody", "filler"] {
        let home = top.path().join("home").join(user);
        std::fs::create_dir_all(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
        let site = home.join(".local/lib/python3.11/site-packages");
        let (code, _, err, _) = run_bounded(
            Command::new(setpriv)
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", "mkdir", "-p"])
                .arg(&site),
            Duration::from_secs(20),
        );
        assert_eq!(code, Some(0), "{err}");
        sites.push(site);
    }
    let fifo = sites[0].join("x.dist-info/METADATA");
    let (code, _, err, _) = run_bounded(
        Command::new(setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c"])
            .arg(format!("mkdir '{}' && mkfifo '{}'", fifo.parent().unwrap().display(), fifo.display())),
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(0), "{err}");
    let started = Instant::now();
    let entries = plant_egg_infos_as_nobody(setpriv, &sites[1], 1_000_000, Duration::from_secs(30));
    eprintln!(
        "{NAME}: {entries} *.egg-info entries created under {} in {:?}",
        base.display(),
        started.elapsed()
    );
    assert!(entries >= 100_000, "only {entries} entries could be created in the time budget");

    let daemon = Daemon::start_with(
        &format!(
            "[packages.language]\npython_roots = [\"{}/home/*/.local\"]\njava_roots = []\nnode_roots = []\n\
             exclude = [\"/proc\", \"/sys\"]\n{QUIET}",
            top.path().display()
        ),
        &[],
    );
    // The daemon answers throughout the scan, each time within the timeout; the scan ends.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (code, out, err, took) =
            daemon.ctl_bounded(&["status", "--json", "--timeout", "5"], Duration::from_secs(15));
        assert!(matches!(code, Some(0 | 1)), "the daemon stopped answering during the scan: {err}");
        assert!(took < Duration::from_secs(6), "status took {took:?}");
        let status: Value = serde_json::from_str(&out).unwrap();
        if status["last_scan"].is_object() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first scan did not finish within 180 s (wedged on the FIFO?)"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (code, out, err, _) = daemon.ctl_bounded(&["report", "--json"], Duration::from_secs(40));
    assert_eq!(code, Some(0), "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let problems = report["packages"]["problems"].as_array().cloned().unwrap_or_default();
    let fifo_text = fifo.display().to_string();
    assert!(
        problems.iter().any(|p| {
            p["path"].as_str().is_some_and(|path| path.ends_with("x.dist-info/METADATA"))
                && p["message"].as_str().is_some_and(|m| m.contains(&fifo_text) && m.contains("fifo"))
        }),
        "no problem names the FIFO {fifo_text}: {problems:#?}"
    );
    // Peak memory over the scan, the stored inventory and serving the report.
    let hwm_kb = proc_status_value(daemon.pid(), "VmHWM").unwrap();
    eprintln!("{NAME}: daemon peak RSS {} KiB", hwm_kb);
    assert!(hwm_kb < 64 * 1024, "the daemon's peak RSS was {} MiB (cap 64 MiB)", hwm_kb / 1024);
    // And it still stops promptly.
    assert_eq!(daemon.terminate(), 0);
}
