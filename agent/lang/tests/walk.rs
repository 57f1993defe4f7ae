//! Walk bounds: depth, entry count, symlinks, excluded and pseudo filesystems.

use crate::common::*;
use guestward_core::HostRoot;
use guestward_lang::Config;

fn dist_info(t: &Tree, dir: &str, name: &str) {
    t.write(&format!("{dir}/{name}-1.0.dist-info/METADATA"), format!("Name: {name}\nVersion: 1.0\n\n"));
}

fn names(report: &guestward_lang::LangReport) -> Vec<&str> {
    report.packages.iter().map(|p| p.name.as_str()).collect()
}

#[test]
fn max_depth_stops_descent_and_says_where() {
    // Issue 9, item 7: the walk used to stop at max_depth without a word.
    let t = Tree::new();
    dist_info(&t, "/opt/a", "shallow");
    dist_info(&t, "/opt/a/b/c/d/e", "deep");
    t.mkdir("/opt/a/b/c/other");
    let mut cfg = config(&["/opt"], &[], &[]);
    cfg.max_depth = 3;
    let (report, problems) = t.scan(&cfg);
    assert_eq!(names(&report), vec!["shallow"]);
    assert!(report.stats.truncated);
    assert_eq!(report.stats.depth_limited, 2, "{:?}", report.stats);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].code, "limit_reached");
    let first = problems[0].path.clone().unwrap();
    assert!(first == t.here("/opt/a/b/c/d") || first == t.here("/opt/a/b/c/other"), "{first}");
    assert!(problems[0].message.contains("max_depth (3)"), "{}", problems[0].message);
    assert!(problems[0].message.contains("and 1 other directories"), "{}", problems[0].message);
    cfg.max_depth = 6;
    let (report, problems) = t.scan(&cfg);
    assert_eq!(names(&report), vec!["deep", "shallow"]);
    assert!(problems.is_empty() && !report.stats.truncated, "{problems:?}");
}

#[test]
fn max_entries_truncates_and_says_so() {
    let t = Tree::new();
    for i in 0..50 {
        t.write(&format!("/opt/files/f{i}"), "x");
    }
    let mut cfg = config(&["/opt"], &[], &[]);
    cfg.max_entries = 20;
    let (report, problems) = t.scan(&cfg);
    assert!(report.stats.truncated);
    assert_eq!(report.stats.entries, 21);
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].code, "limit_reached");
    assert!(problems[0].message.contains("max_entries"), "{}", problems[0].message);
}

#[test]
fn symlink_loops_end_and_packages_are_listed_once() {
    let t = Tree::new();
    dist_info(&t, "/opt/app/lib", "looped");
    t.symlink("..", "/opt/app/lib/up");
    t.symlink("/opt/app", "/opt/app/lib/abs-up");
    t.symlink("loop-b", "/opt/app/loop-a");
    t.symlink("loop-a", "/opt/app/loop-b");
    let (report, problems) = t.scan(&config(&["/opt"], &[], &[]));
    assert_eq!(names(&report), vec!["looped"]);
    assert!(report.stats.directories_already_seen >= 2, "{:?}", report.stats);
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn symlinks_inside_the_root_are_followed_once() {
    let t = Tree::new();
    dist_info(&t, "/opt/releases/v2/site-packages", "app");
    t.symlink("releases/v2", "/opt/current");
    t.symlink("/opt/releases/v2", "/opt/current-abs");
    let (report, _) = t.scan(&config(&["/opt/current"], &[], &[]));
    // Walking /opt/current resolves to /opt/releases/v2: reported under its real path.
    assert_eq!(names(&report), vec!["app"]);
    assert_eq!(report.packages[0].location, "/opt/releases/v2/site-packages/app-1.0.dist-info");
    let (report, _) = t.scan(&config(&["/opt"], &[], &[]));
    assert_eq!(names(&report), vec!["app"]);
}

#[test]
fn symlinks_out_of_the_walk_root_or_host_root_are_not_followed() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(outside.path().join("secret-1.0.dist-info")).unwrap();
    std::fs::write(outside.path().join("secret-1.0.dist-info/METADATA"), "Name: secret\nVersion: 1.0\n\n")
        .unwrap();
    let t = Tree::new();
    dist_info(&t, "/etc/elsewhere", "other-tree");
    dist_info(&t, "/opt/mine", "mine");
    // Out of the scanned root entirely (with --root this would read the scanning host's files).
    t.symlink(outside.path(), "/opt/escape");
    t.symlink("../../../../../../../..", "/opt/dotdot");
    // Inside the HostRoot but outside the walk root (/opt): not ours to walk.
    t.symlink("/etc", "/opt/etc-link");
    t.symlink("/nonexistent", "/opt/dangling");
    let (report, problems) = t.scan(&config(&["/opt"], &[], &[]));
    assert_eq!(names(&report), vec!["mine"]);
    assert!(report.stats.symlinks_not_followed >= 4, "{:?}", report.stats);
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn excluded_paths_are_not_entered() {
    let t = Tree::new();
    dist_info(&t, "/opt/keep", "kept");
    dist_info(&t, "/opt/skip", "skipped");
    let mut cfg = config(&["/opt"], &[], &[]);
    cfg.exclude = paths(&["/opt/skip"]);
    let (report, _) = t.scan(&cfg);
    assert_eq!(names(&report), vec!["kept"]);
    assert_eq!(report.stats.mounts_skipped, 1);
}

#[test]
fn pseudo_filesystems_are_recognized_by_statfs_not_by_name() {
    // /proc and /sys are excluded by path by default; with the exclusion list emptied the
    // filesystem type check must still refuse them.
    let cfg = Config {
        python_roots: paths(&["/proc/self", "/sys/kernel"]),
        exclude: vec![],
        ..Config::without_roots()
    };
    let (report, problems) = guestward_lang::scan(&HostRoot::live(), &cfg);
    assert_eq!(report.stats.entries, 0, "{:?}", report.stats);
    assert_eq!(report.stats.mounts_skipped, 2, "{:?}", report.stats);
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn overlapping_roots_are_walked_once_per_ecosystem() {
    let t = Tree::new();
    dist_info(&t, "/opt/x", "py-pkg");
    t.write("/opt/x/node_modules/left-pad/package.json", r#"{"name":"left-pad","version":"1.3.0"}"#);
    t.write(
        "/opt/x/lib/commons-io-2.11.0.jar",
        zip_of(&[("a.class", vec![1])], zip::CompressionMethod::Stored),
    );
    let cfg = config(&["/opt", "/opt/x"], &["/opt/x", "/opt"], &["/opt"]);
    let (report, problems) = t.scan(&cfg);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(names(&report), vec!["py-pkg", "commons-io", "left-pad"]);
}

#[test]
fn unreadable_directory_is_a_problem_when_not_root() {
    if nix::unistd::geteuid().is_root() {
        // Root reads a mode-000 directory anyway: the check runs in this test re-run as nobody.
        rerun_as_nobody("walk::unreadable_directory_is_a_problem_when_not_root");
        return;
    }
    let t = Tree::new();
    dist_info(&t, "/opt/ok", "ok");
    t.mkdir("/opt/locked");
    use std::os::unix::fs::PermissionsExt;
    let locked = t.dir.path().join("opt/locked");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let (report, problems) = t.scan(&config(&["/opt"], &[], &[]));
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(names(&report), vec!["ok"]);
    assert_eq!(problems[0].code, "permission_denied", "{problems:?}");
}

#[test]
fn a_problem_names_the_file_on_this_machine_wherever_the_walk_met_it() {
    if nix::unistd::geteuid().is_root() {
        rerun_as_nobody("walk::a_problem_names_the_file_on_this_machine_wherever_the_walk_met_it");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let t = Tree::new();
    // Three places that refuse a walk: a home not entered while the roots are found (the
    // root itself cannot be resolved), a root that cannot be listed, and a directory within.
    t.mkdir("/home/alice/.local");
    t.mkdir("/home/bob/.local");
    dist_info(&t, "/home/carol/.local/lib/python3.12/site-packages", "carols");
    t.mkdir("/home/carol/.local/locked");
    let lock = |rel: &str| {
        let path = t.dir.path().join(rel);
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o000)).unwrap();
    };
    lock("home/alice");
    lock("home/bob/.local");
    lock("home/carol/.local/locked");
    let (report, problems) = t.scan(&config(&["/home/*/.local"], &[], &[]));
    for unlock in ["home/alice", "home/bob/.local", "home/carol/.local/locked"] {
        std::fs::set_permissions(t.dir.path().join(unlock), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    assert_eq!(names(&report), vec!["carols"]);
    let mut denied: Vec<String> =
        problems.iter().filter(|p| p.code == "permission_denied").filter_map(|p| p.path.clone()).collect();
    denied.sort();
    let expected = ["/home/alice/.local", "/home/bob/.local", "/home/carol/.local/locked"].map(|p| t.here(p));
    assert_eq!(denied, expected, "{problems:?}");
}

#[test]
fn packages_per_root_cap_truncates_that_root_only_and_says_so() {
    let t = Tree::new();
    for i in 0..30 {
        t.mkdir(&format!("/home/mallory/.local/lib/python3.12/site-packages/flood{i}-1.0.egg-info"));
    }
    dist_info(&t, "/opt/app", "legit");
    let mut cfg = config(&["/home/*/.local", "/opt"], &[], &[]);
    cfg.max_packages_per_root = 10;
    let (report, problems) = t.scan_within(20, &cfg);
    assert_eq!(report.packages.iter().filter(|p| p.name.starts_with("flood")).count(), 10);
    assert!(names(&report).contains(&"legit"), "{:?}", names(&report));
    assert!(report.stats.truncated);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].code, "limit_reached");
    assert_eq!(problems[0].path, Some(t.here("/home/mallory/.local")));
    assert!(problems[0].message.contains("max_packages_per_root"), "{}", problems[0].message);
}

#[test]
fn user_owned_roots_are_walked_after_system_roots_so_a_flood_cannot_starve_them() {
    if !nix::unistd::geteuid().is_root() {
        guestward_core::testing::skip_or_fail(
            "user_owned_roots_are_walked_after_system_roots_so_a_flood_cannot_starve_them",
            "needs root to give the flooded tree to another user",
        );
        return;
    }
    let t = Tree::new();
    for i in 0..30 {
        t.mkdir(&format!("/home/mallory/.local/lib/python3.12/site-packages/flood{i}-1.0.egg-info"));
    }
    let nobody = nix::unistd::Uid::from_raw(65534);
    nix::unistd::chown(&t.dir.path().join("home/mallory/.local"), Some(nobody), None).unwrap();
    dist_info(&t, "/opt/app", "legit");
    // The user's tree comes first in the config, and the scan-wide cap is small.
    let mut cfg = config(&["/home/*/.local", "/opt"], &[], &[]);
    cfg.max_packages_per_scan = 5;
    let (report, problems) = t.scan_within(20, &cfg);
    assert!(names(&report).contains(&"legit"), "{:?}", names(&report));
    assert_eq!(report.packages.len(), 5);
    assert!(report.stats.truncated);
    assert!(problems.iter().any(|p| p.message.contains("max_packages_per_scan")), "{problems:?}");
}

#[test]
fn symlinked_directories_are_not_followed_but_their_targets_are_walked_once() {
    let t = Tree::new();
    dist_info(&t, "/opt/releases/v2/site-packages", "app");
    t.symlink("releases/v2", "/opt/current");
    t.symlink("/opt/releases/v2/site-packages/app-1.0.dist-info", "/opt/app.dist-info");
    let (report, problems) = t.scan(&config(&["/opt"], &[], &[]));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(names(&report), vec!["app"]);
    assert_eq!(report.stats.directories_already_seen, 2, "{:?}", report.stats);
}

/// Set in the child process of [`egg_info_flood_is_capped_and_memory_stays_bounded`].
const PROBE_ROOT_ENV: &str = "GUESTWARD_LANG_MEMORY_PROBE_ROOT";

/// The scan's peak memory is measured in a child process (this test binary run again, for
/// [`memory_probe_child`] only), so other tests running in parallel do not count.
#[test]
fn egg_info_flood_is_capped_and_memory_stays_bounded() {
    // Issue 9, item 5: a million empty *.egg-info directories in one ~/.local took the daemon
    // to 829 MB. Here 150,000 of them, plus 60,000 empty directories the walk must stream
    // through (the old walk queued every subdirectory's path and remembered every directory).
    // Measured with 200,000 + 100,000: the old walk peaked at 84 MB, this one at 5 MB. A tmpfs
    // makes the mkdirs take seconds, not minutes.
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        eprintln!("no /dev/shm: building the tree on the default temporary filesystem (slower)");
        tempfile::tempdir().unwrap()
    };
    let started = std::time::Instant::now();
    let sp = base.path().join("home/mallory/.local/lib/python3.12/site-packages");
    std::fs::create_dir_all(&sp).unwrap();
    for i in 0..150_000 {
        std::fs::create_dir(sp.join(format!("flood{i}-1.0.egg-info"))).unwrap();
    }
    let flood = base.path().join("srv/flood");
    std::fs::create_dir_all(&flood).unwrap();
    for i in 0..60_000 {
        std::fs::create_dir(flood.join(format!("d{i}"))).unwrap();
    }
    let legit = base.path().join("opt/app/legit-1.0.dist-info");
    std::fs::create_dir_all(&legit).unwrap();
    std::fs::write(legit.join("METADATA"), "Name: legit\nVersion: 1.0\n\n").unwrap();
    // A 15 MB zip64 jar of 300,000 tiny entries: loading its central directory cost the old
    // code 66 MB before max_archive_entries was even checked.
    std::fs::write(base.path().join("opt/many.jar"), zip64_entries(300_000)).unwrap();
    eprintln!("tree built in {:?}", started.elapsed());

    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "walk::memory_probe_child", "--nocapture", "--test-threads=1"])
        .env(PROBE_ROOT_ENV, base.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the scan of the flooded tree did not finish within 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("PROBE ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("{stdout}"));
    let probe: serde_json::Value = serde_json::from_str(line).unwrap();
    eprintln!("child: {probe}");
    assert_eq!(probe["flood_packages"], 1_000);
    assert_eq!(probe["legit"], true);
    assert_eq!(probe["truncated"], true);
    assert_eq!(probe["root_problem"], format!("{}/home/mallory/.local", base.path().display()));
    assert!(probe["entries"].as_u64().unwrap() >= 60_000, "{probe}");
    assert_eq!(probe["many_jar"], "too_large");
    // The old code peaked far above this (the packages held, the queued paths, the zip64
    // central directory loaded).
    let hwm = probe["vmhwm_kib"].as_u64().unwrap();
    assert!(hwm < 32 * 1024, "peak RSS {hwm} KiB");
}

#[test]
fn memory_probe_child() {
    let Some(dir) = std::env::var_os(PROBE_ROOT_ENV) else {
        return; // Only meaningful as the child of the test above.
    };
    let root = HostRoot::new(dir).unwrap();
    let mut cfg = config(&["/home/*/.local", "/srv", "/opt"], &["/opt"], &[]);
    cfg.max_packages_per_root = 1_000;
    cfg.max_archive_entries = 100_000;
    let (report, problems) = guestward_lang::scan(&root, &cfg);
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let probe = serde_json::json!({
        "vmhwm_kib": hwm,
        "flood_packages": report.packages.iter().filter(|p| p.name.starts_with("flood")).count(),
        "legit": report.packages.iter().any(|p| p.name == "legit"),
        "truncated": report.stats.truncated,
        "entries": report.stats.entries,
        "root_problem": problems.iter().find(|p| p.message.contains("max_packages_per_root")).and_then(|p| p.path.clone()),
        "problems": problems.len(),
        "many_jar": problems.iter().find(|p| p.path == Some(root.display("/opt/many.jar"))).map(|p| p.code.clone()),
    });
    println!("\nPROBE {probe}");
}
