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
fn max_depth_stops_descent() {
    let t = Tree::new();
    dist_info(&t, "/opt/a", "shallow");
    dist_info(&t, "/opt/a/b/c/d/e", "deep");
    let mut cfg = config(&["/opt"], &[], &[]);
    cfg.max_depth = 3;
    let (report, _) = t.scan(&cfg);
    assert_eq!(names(&report), vec!["shallow"]);
    cfg.max_depth = 6;
    let (report, _) = t.scan(&cfg);
    assert_eq!(names(&report), vec!["deep", "shallow"]);
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
    let t = Tree::new();
    dist_info(&t, "/opt/ok", "ok");
    t.mkdir("/opt/locked");
    use std::os::unix::fs::PermissionsExt;
    let locked = t.dir.path().join("opt/locked");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let (report, problems) = t.scan(&config(&["/opt"], &[], &[]));
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(names(&report), vec!["ok"]);
    if nix::unistd::geteuid().is_root() {
        eprintln!(
            "SKIPPED: running as root, a mode-000 directory is still readable; checked only that the walk completed"
        );
    } else {
        assert_eq!(problems[0].code, "permission_denied", "{problems:?}");
    }
}
