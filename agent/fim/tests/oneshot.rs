//! One-shot `init | check | update` through `--root`, with hostile names and special files.

use guestward_core::{AbsolutePath, HostRoot};
use guestward_fim::config::PathEntry;
use guestward_fim::oneshot::{self, OneShot};
use guestward_fim::record::FileKind;
use guestward_fim::{ChangeKind, Config, FimError};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

fn setup() -> (tempfile::TempDir, OneShot) {
    let dir = crate::common::scratch();
    let host = dir.path().join("host");
    let etc = host.join("etc");
    std::fs::create_dir_all(etc.join("ssh")).unwrap();
    std::fs::write(etc.join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::write(etc.join("ssh/sshd_config"), "PermitRootLogin no\n").unwrap();
    std::fs::write(etc.join(OsStr::from_bytes(b"bad\xffname")), "x").unwrap();
    std::fs::write(etc.join("mtab"), "churn").unwrap();
    nix::unistd::mkfifo(&etc.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // An absolute symlink pointing at the scanning host's file: recorded, never followed.
    std::os::unix::fs::symlink("/etc/shadow", etc.join("shadow-link")).unwrap();
    let config: Config = toml::from_str(
        r#"
paths = ["/etc/ssh", { path = "/etc", exclude = ["/etc/mtab"] }]
"#,
    )
    .unwrap();
    assert!(matches!(config.paths[0], PathEntry::Simple(_)));
    let o = OneShot {
        config,
        state_dir: dir.path().join("state"),
        root: HostRoot::new(&host).unwrap(),
        progress_bar: true,
    };
    let _ = AbsolutePath::new("/etc").unwrap();
    (dir, o)
}

#[test]
fn init_check_update_cycle_with_exit_codes() {
    let (dir, o) = setup();
    let etc = dir.path().join("host/etc");
    assert!(matches!(oneshot::check(&o), Err(FimError::NoBaseline { .. })));
    let init = oneshot::init(&o).unwrap();
    assert!(init.changes.is_empty());
    // etc, ssh, ssh/sshd_config, passwd, bad\xffname, fifo, shadow-link (mtab excluded)
    assert_eq!(init.summary.stats.entries, 7, "{:?}", init.summary);
    assert_eq!(oneshot::check(&o).unwrap().exit_code(), 0);

    std::fs::write(etc.join("ssh/sshd_config"), "PermitRootLogin yes\n").unwrap();
    std::fs::write(etc.join(OsStr::from_bytes(b"bad\xffname")), "changed").unwrap();
    std::fs::write(etc.join("mtab"), "more churn").unwrap();
    std::fs::remove_file(etc.join("fifo")).unwrap();
    std::fs::write(etc.join("new"), "n").unwrap();

    let check = oneshot::check(&o).unwrap();
    assert_eq!(check.exit_code(), 1);
    let mut got: Vec<(String, ChangeKind)> =
        check.changes.iter().map(|c| (c.path.clone(), c.change)).collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    // /etc's mtime/ctime moved only because fifo and new came and went: folded into them.
    let want = vec![
        ("/etc/bad\\xffname".to_string(), ChangeKind::Modified),
        ("/etc/fifo".to_string(), ChangeKind::Removed),
        ("/etc/new".to_string(), ChangeKind::Added),
        ("/etc/ssh/sshd_config".to_string(), ChangeKind::Modified),
    ];
    assert_eq!(got, want);
    let fifo = check.changes.iter().find(|c| c.path == "/etc/fifo").unwrap();
    assert_eq!(fifo.old.as_ref().unwrap().kind, FileKind::Fifo);
    let sshd = check.changes.iter().find(|c| c.path == "/etc/ssh/sshd_config").unwrap();
    assert_eq!(sshd.rule, "/etc/ssh");
    let new = check.changes.iter().find(|c| c.path == "/etc/new").unwrap();
    assert_eq!(new.folded_parent.as_ref().map(|f| f.path.as_str()), Some("/etc"), "{new:?}");
    assert_eq!(check.summary.counts.folded_directories, 1);
    // JSON form round-trips; the human form names every path.
    let json = serde_json::to_string(&check).unwrap();
    let back: oneshot::CheckReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, check);
    let mut human = Vec::new();
    check.render_human(&mut human).unwrap();
    let human = String::from_utf8(human).unwrap();
    assert!(human.contains("/etc/bad\\xffname") && human.contains("4 change(s)"), "{human}");

    // check changes nothing; update accepts.
    assert_eq!(oneshot::check(&o).unwrap().summary.changes, 4);
    // One process at a time: while another holds the baseline (a daemon, a cron job's
    // update), a second update is refused before it stages a row, and the first one's work
    // stands.
    let held = guestward_fim::lock::StateLock::acquire(&o.state_dir).unwrap();
    let refused = oneshot::update(&o).unwrap_err();
    assert!(matches!(refused, FimError::Lock(guestward_fim::lock::LockError::Busy { .. })), "{refused}");
    assert!(matches!(oneshot::check(&o), Err(FimError::Lock(_))));
    drop(held);
    assert_eq!(oneshot::check(&o).unwrap().summary.changes, 4, "the refused update accepted nothing");
    assert_eq!(oneshot::update(&o).unwrap().exit_code(), 1);
    assert_eq!(oneshot::check(&o).unwrap().exit_code(), 0);
}

#[test]
fn symlinked_root_paths_stay_inside_the_root() {
    let (dir, o) = setup();
    let etc = dir.path().join("host/etc");
    oneshot::init(&o).unwrap();
    // Replacing a watched directory by a symlink to the scanning host's /etc must be seen as
    // a type change, and the host's /etc must not be read.
    std::fs::remove_dir_all(etc.join("ssh")).unwrap();
    std::os::unix::fs::symlink("/etc", etc.join("ssh")).unwrap();
    let check = oneshot::check(&o).unwrap();
    let ssh = check.changes.iter().find(|c| c.path == "/etc/ssh").unwrap();
    assert!(ssh.changed.contains(&guestward_fim::config::Attribute::Type), "{ssh:?}");
    assert!(
        check.changes.iter().any(|c| c.path == "/etc/ssh/sshd_config" && c.change == ChangeKind::Removed)
    );
    assert!(!check.changes.iter().any(|c| c.path.starts_with("/etc/ssh/") && c.change == ChangeKind::Added));
}

#[test]
fn nested_rules_govern_their_subtree_and_scoped_rescans_keep_them() {
    use guestward_fim::config::{Attribute, PathRule};
    use guestward_fim::{Fim, Mechanism, Purpose, Scope};
    let dir = crate::common::scratch();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("logs")).unwrap();
    std::fs::write(tree.join("conf"), "c").unwrap();
    std::fs::write(tree.join("logs/app.log"), "l").unwrap();
    let rule = |path: &std::path::Path, attributes: Option<Vec<Attribute>>| {
        PathEntry::Rule(PathRule {
            path: AbsolutePath::new(path).unwrap(),
            recursive: true,
            exclude: vec![],
            attributes,
            max_file_size_bytes: None,
        })
    };
    let config = Config {
        // Content of logs/ may change; only its permissions and owners are checked.
        paths: vec![rule(&tree, None), rule(&tree.join("logs"), Some(vec![Attribute::Mode, Attribute::Uid]))],
        ..Config::default()
    };
    let o = OneShot {
        config: config.clone(),
        state_dir: dir.path().join("state"),
        root: HostRoot::live(),
        progress_bar: false,
    };
    oneshot::init(&o).unwrap();
    std::fs::write(tree.join("logs/app.log"), "more log lines").unwrap();
    assert_eq!(oneshot::check(&o).unwrap().summary.changes, 0, "content of logs/ is not checked");

    // A rescan scoped to the outer tree includes the nested one: nothing looks removed.
    let fim = Fim::new(config, HostRoot::live(), dir.path().join("state")).unwrap();
    let opts = guestward_fim::scan::ScanOptions {
        rate: Default::default(),
        threads: 1,
        progress: None,
        cancel: None,
        pace: None,
        rehash: Default::default(),
    };
    let mut changes = Vec::new();
    fim.scan(Purpose::Rescan, &Scope::Trees(vec![tree.clone()]), Mechanism::Rescan, &opts, &mut |c| {
        changes.push(c)
    })
    .unwrap();
    assert!(changes.is_empty(), "{changes:#?}");

    std::os::unix::fs::chown(tree.join("logs/app.log"), Some(1234), None).unwrap();
    let check = oneshot::check(&o).unwrap();
    assert_eq!(check.changes.len(), 1, "{:#?}", check.changes);
    assert_eq!(check.changes[0].rule, tree.join("logs").display().to_string());
    assert_eq!(check.changes[0].changed, vec![Attribute::Uid]);
}
