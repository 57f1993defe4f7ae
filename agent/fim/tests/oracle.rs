//! Oracle: the set of changed paths equals what `aide --check` reports with an equivalent
//! rule (sha256 + permissions, owner, group, size, mtime, ctime, inode, link target), once the
//! directories folded into their entries are counted back in.

use guestward_core::{AbsolutePath, HostRoot};
use guestward_fim::Config;
use guestward_fim::config::{Attribute, PathEntry, PathRule};
use guestward_fim::oneshot::{self, OneShot};
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn aide_changed_paths(output: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_lists = false;
    for line in output.lines() {
        if line.ends_with("entries:") && !line.starts_with(' ') {
            in_lists = true;
            continue;
        }
        if line.starts_with("Detailed information") || line.starts_with("The attributes of the") {
            in_lists = false;
        }
        if in_lists && let Some((_, path)) = line.split_once(": /") {
            out.insert(format!("/{path}"));
        }
    }
    out
}

#[test]
fn changed_paths_match_aide_check() {
    if Command::new("aide").arg("--version").output().is_err() {
        guestward_core::testing::skip_or_fail(
            "changed_paths_match_aide_check",
            "aide is not installed (apt-get install aide)",
        );
        return;
    }
    let dir = crate::common::scratch();
    let tree = dir.path().join("tree");
    for d in 0..8 {
        std::fs::create_dir_all(tree.join(format!("d{d}/sub"))).unwrap();
        for f in 0..20 {
            std::fs::write(tree.join(format!("d{d}/f{f}")), format!("{d}-{f}")).unwrap();
            std::fs::write(tree.join(format!("d{d}/sub/g{f}")), format!("sub {d}-{f}")).unwrap();
        }
        std::os::unix::fs::symlink(format!("f{d}"), tree.join(format!("d{d}/link"))).unwrap();
    }
    let conf = dir.path().join("aide.conf");
    std::fs::write(
        &conf,
        format!(
            "database_in=file:{d}/aide.db\ndatabase_out=file:{d}/aide.db.new\ngzip_dbout=no\nreport_url=stdout\n\
             R = p+u+g+s+m+c+i+sha256+l\n{t} R\n",
            d = dir.path().display(),
            t = tree.display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| Command::new("aide").args(args).arg("-c").arg(&conf).output().unwrap();
    let init = run(&["--init"]);
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    std::fs::rename(dir.path().join("aide.db.new"), dir.path().join("aide.db")).unwrap();

    let config = Config {
        paths: vec![PathEntry::Rule(PathRule {
            path: AbsolutePath::new(&tree).unwrap(),
            recursive: true,
            exclude: vec![],
            attributes: Some(vec![
                Attribute::Sha256,
                Attribute::Mode,
                Attribute::Uid,
                Attribute::Gid,
                Attribute::Size,
                Attribute::Mtime,
                Attribute::Ctime,
                Attribute::Inode,
                Attribute::LinkTarget,
            ]),
            max_file_size_bytes: None,
        })],
        ..Config::default()
    };
    let o =
        OneShot { config, state_dir: dir.path().join("state"), root: HostRoot::live(), progress_bar: false };
    oneshot::init(&o).unwrap();

    // AIDE keeps mtime/ctime in whole seconds: let a second pass so both tools can see them.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let t = |p: &str| tree.join(p);
    std::fs::write(t("d0/f1"), "0-X").unwrap(); // same size, new content
    std::fs::write(t("d0/f2"), "grown content").unwrap();
    std::fs::set_permissions(t("d1/f3"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(t("d1/f4"), Some(1000), None).unwrap();
    std::fs::remove_file(t("d2/f5")).unwrap();
    std::fs::write(t("d2/sub/new"), "new").unwrap();
    std::fs::rename(t("d3/f6"), t("d3/f6.moved")).unwrap();
    std::fs::remove_file(t("d4/link")).unwrap();
    std::os::unix::fs::symlink("elsewhere", t("d4/link")).unwrap();
    let f = std::fs::File::options().write(true).open(t("d5/f7")).unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000)).unwrap();
    std::fs::remove_dir_all(t("d6/sub")).unwrap();
    std::fs::create_dir(t("d7/newdir")).unwrap();
    std::fs::write(t("d7/newdir/inside"), "i").unwrap();

    let check = run(&["--check"]);
    let aide_out = String::from_utf8_lossy(&check.stdout);
    let aide = aide_changed_paths(&aide_out);
    assert!(aide.len() > 10, "AIDE output not understood:\n{aide_out}");

    let report = oneshot::check(&o).unwrap();
    let ours: BTreeSet<String> = report.changes.iter().map(|c| c.path.clone()).collect();
    // AIDE lists a directory whose mtime/ctime moved because entries were added, removed or
    // replaced in it; guestward folds it into those entries (`folded_parent`). Same set once
    // the folded directories are counted back in, and none of them listed on its own.
    let folded: BTreeSet<String> =
        report.changes.iter().filter_map(|c| c.folded_parent.as_ref().map(|f| f.path.clone())).collect();
    assert!(folded.is_disjoint(&ours), "folded directories listed too: {folded:?}");
    assert!(folded.contains(&Path::new(&t("d2/sub")).display().to_string()), "{folded:?}");
    assert_eq!(report.summary.counts.folded_directories, folded.len() as u64);
    let ours: BTreeSet<String> = ours.union(&folded).cloned().collect();
    assert_eq!(ours, aide, "AIDE output:\n{aide_out}");
    assert!(ours.contains(&Path::new(&t("d0/f1")).display().to_string()));
}
