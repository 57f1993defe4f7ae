//! dpkg: a fixture tree with real `md5sums` (written by `md5sum`), `.list`, `status` and
//! `diversions` files, checked with verify-packages and with `debsums` (the oracle) under
//! `--root`; and this machine's own `/` against `debsums -c`.

use crate::support::{have, oracle_of};
use guestward_core::HostRoot;
use guestward_core::testing::skip_or_fail;
use guestward_fim::package::NothingKnown;
use guestward_pkgfiles::cli::{VerifyPackagesArgs, run_with};
use guestward_pkgfiles::verify::{self, Attribute, MismatchKind, Options, Progress};
use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

/// Writes `path` (relative to the root) with `content`, creating its directories.
fn put(root: &Path, path: &str, content: &str) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// `md5sum` of files under `root`, as dh_md5sums writes them (`<md5>  <path without />`).
fn md5sums(root: &Path, paths: &[&str]) -> String {
    let rel: Vec<&str> = paths.iter().map(|p| p.trim_start_matches('/')).collect();
    let out = Command::new("md5sum").current_dir(root).args(&rel).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn md5_of(root: &Path, path: &str) -> String {
    md5sums(root, &[path]).split_whitespace().next().unwrap().to_owned()
}

/// The prepared tree. Two packages:
/// - gw-alpha: /bin/gw-alpha (through a merged-/usr `/bin -> usr/bin` symlink, untouched),
///   /usr/share/gw-alpha/data (altered), /usr/share/gw-alpha/gone (deleted),
///   /usr/share/gw-alpha/untouched, /usr/bin/gw-tool (diverted by gw-beta to
///   /usr/bin/gw-tool.alpha; altered there), conffiles /etc/gw-alpha.conf (edited) and
///   /etc/gw-alpha.d/keep.conf (untouched), a symlink listed without an md5.
/// - gw-beta: /usr/bin/gw-tool (its own, untouched), /etc/gw-beta.conf (an obsolete conffile,
///   edited) and /etc/gw-beta.old (remove-on-upgrade, edited: not checked).
fn prepared_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    symlink("usr/bin", root.join("bin")).unwrap();
    let alpha_files = [
        "/usr/bin/gw-alpha",
        "/usr/share/gw-alpha/data",
        "/usr/share/gw-alpha/gone",
        "/usr/share/gw-alpha/untouched",
    ];
    for f in alpha_files {
        put(root, f, &format!("content of {f}\n"));
    }
    put(root, "/usr/bin/gw-tool.alpha", "alpha's gw-tool\n");
    put(root, "/usr/bin/gw-tool", "beta's gw-tool\n");
    put(root, "/etc/gw-alpha.conf", "setting = 1\n");
    put(root, "/etc/gw-alpha.d/keep.conf", "keep = yes\n");
    put(root, "/etc/gw-beta.conf", "beta = 1\n");
    put(root, "/etc/gw-beta.old", "old = 1\n");
    symlink("gw-alpha", root.join("usr/bin/gw-alpha-link")).unwrap();

    // md5sums as the packages shipped them: gw-alpha's gw-tool is recorded under its own path.
    let mut alpha_sums = md5sums(root, &alpha_files).replace("usr/bin/gw-alpha", "bin/gw-alpha");
    // A file a minimal image's dpkg.cfg told dpkg not to unpack: absent on purpose.
    alpha_sums.push_str("0123456789abcdef0123456789abcdef  usr/share/doc/gw-alpha/README\n");
    put(
        root,
        "/etc/dpkg/dpkg.cfg.d/excludes",
        "path-exclude=/usr/share/doc/*\npath-include=/usr/share/doc/*/copyright\n",
    );
    alpha_sums.push_str(&format!("{}  usr/bin/gw-tool\n", md5_of(root, "/usr/bin/gw-tool.alpha")));
    let beta_sums = md5sums(root, &["/usr/bin/gw-tool"]);
    let info = root.join("var/lib/dpkg/info");
    std::fs::create_dir_all(&info).unwrap();
    std::fs::write(info.join("gw-alpha.md5sums"), alpha_sums).unwrap();
    std::fs::write(info.join("gw-beta.md5sums"), beta_sums).unwrap();
    std::fs::write(
        info.join("gw-alpha.list"),
        "/.\n/bin\n/bin/gw-alpha\n/usr\n/usr/bin\n/usr/bin/gw-alpha-link\n/usr/bin/gw-tool\n/usr/share\n/usr/share/gw-alpha\n/usr/share/gw-alpha/data\n/usr/share/gw-alpha/gone\n/usr/share/gw-alpha/untouched\n/etc\n/etc/gw-alpha.conf\n/etc/gw-alpha.d\n/etc/gw-alpha.d/keep.conf\n",
    )
    .unwrap();
    std::fs::write(
        info.join("gw-beta.list"),
        "/.\n/usr\n/usr/bin\n/usr/bin/gw-tool\n/etc\n/etc/gw-beta.conf\n/etc/gw-beta.old\n",
    )
    .unwrap();
    let status = format!(
        "Package: gw-alpha\nStatus: install ok installed\nPriority: optional\nArchitecture: all\nVersion: 1.0-1\nConffiles:\n /etc/gw-alpha.conf {}\n /etc/gw-alpha.d/keep.conf {}\nDescription: test package\n\n\
         Package: gw-beta\nStatus: install ok installed\nArchitecture: all\nVersion: 2.0\nConffiles:\n /etc/gw-beta.conf {} obsolete\n /etc/gw-beta.old {} remove-on-upgrade\nDescription: test package\n\n\
         Package: gw-removed\nStatus: deinstall ok config-files\nArchitecture: all\nVersion: 0.1\nConffiles:\n /etc/gw-removed.conf 0123456789abcdef0123456789abcdef\n\n",
        md5_of(root, "/etc/gw-alpha.conf"),
        md5_of(root, "/etc/gw-alpha.d/keep.conf"),
        md5_of(root, "/etc/gw-beta.conf"),
        md5_of(root, "/etc/gw-beta.old"),
    );
    std::fs::write(root.join("var/lib/dpkg/status"), status).unwrap();
    std::fs::write(
        root.join("var/lib/dpkg/diversions"),
        "/usr/bin/gw-tool\n/usr/bin/gw-tool.alpha\ngw-beta\n",
    )
    .unwrap();

    // The changes.
    std::fs::write(root.join("usr/share/gw-alpha/data"), "altered\n").unwrap();
    std::fs::remove_file(root.join("usr/share/gw-alpha/gone")).unwrap();
    std::fs::write(root.join("usr/bin/gw-tool.alpha"), "trojaned\n").unwrap();
    std::fs::write(root.join("etc/gw-alpha.conf"), "setting = 2\n").unwrap();
    std::fs::write(root.join("etc/gw-beta.conf"), "beta = 2\n").unwrap();
    std::fs::write(root.join("etc/gw-beta.old"), "old = 2\n").unwrap();
    dir
}

fn set(items: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    items.into_iter().collect()
}

/// Asserts two path sets are equal, showing only the paths in one and not the other.
#[track_caller]
fn same(what: &str, ours: &BTreeSet<String>, theirs: &BTreeSet<String>) {
    let only_ours: Vec<_> = ours.difference(theirs).take(20).collect();
    let only_theirs: Vec<_> = theirs.difference(ours).take(20).collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "{what}: only in verify-packages {only_ours:?}; only in the oracle {only_theirs:?}"
    );
}

/// `debsums <flags> --root=DIR`: (stdout paths without the root prefix, missing files).
fn debsums(root: &Path, flags: &[&str]) -> (BTreeSet<String>, BTreeSet<String>) {
    let out = Command::new("debsums").args(flags).arg(format!("--root={}", root.display())).output().unwrap();
    let prefix = root.display().to_string();
    let strip = |l: &str| l.strip_prefix(&prefix).unwrap_or(l).to_owned();
    let changed = set(String::from_utf8_lossy(&out.stdout).lines().map(strip));
    let missing = set(String::from_utf8_lossy(&out.stderr).lines().filter_map(|l| {
        let rest = l.strip_prefix("debsums: missing file ")?;
        Some(strip(rest.split(" (from ").next()?))
    }));
    (changed, missing)
}

#[test]
fn fixture_tree_matches_debsums() {
    let tree = prepared_tree();
    let root = HostRoot::new(tree.path()).unwrap();
    let report = verify::verify_root(&root, &Options::default(), &Progress::default()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let of = |k: MismatchKind| set(report.mismatches.iter().filter(|m| m.kind == k).map(|m| m.path.clone()));
    // What the tree was prepared with (the expected answer, independent of any tool).
    assert_eq!(
        of(MismatchKind::Changed),
        set(["/usr/bin/gw-tool.alpha".into(), "/usr/share/gw-alpha/data".into()])
    );
    assert_eq!(
        of(MismatchKind::ConffileChanged),
        set(["/etc/gw-alpha.conf".into(), "/etc/gw-beta.conf".into()])
    );
    assert_eq!(of(MismatchKind::Missing), set(["/usr/share/gw-alpha/gone".into()]));
    let data = report.mismatches.iter().find(|m| m.path == "/usr/share/gw-alpha/data").unwrap();
    assert_eq!(data.package.name, "gw-alpha");
    assert_eq!(data.attributes, vec![Attribute::Digest]);
    assert_eq!(data.severity, guestward_core::Severity::High);
    assert_eq!(data.actual.as_ref().unwrap().hex, md5_of(tree.path(), "/usr/share/gw-alpha/data"));
    let conf = report.mismatches.iter().find(|m| m.path == "/etc/gw-alpha.conf").unwrap();
    assert_eq!(conf.severity, guestward_core::Severity::Low);
    assert_eq!(report.packages_checked, 2);

    if !have("debsums") {
        skip_or_fail("fixture_tree_matches_debsums", "debsums is not installed");
        return;
    }
    // debsums -c: changed non-conffiles on stdout, missing files on stderr. One known
    // difference: debsums skips a changed file unless `dpkg-query -S` names the package as its
    // only owner, and for a diverted-to path it names the diversion, so debsums never reports
    // a trojaned diverted file. verify-packages does.
    let (mut changed, missing) = debsums(tree.path(), &["-c"]);
    assert!(!changed.contains("/usr/bin/gw-tool.alpha"), "debsums now reports diverted files: {changed:?}");
    changed.insert("/usr/bin/gw-tool.alpha".into());
    same("changed", &of(MismatchKind::Changed), &changed);
    same("missing", &of(MismatchKind::Missing), &missing);
    // debsums -ce: changed conffiles (obsolete ones included, remove-on-upgrade left out).
    let (conf_changed, _) = debsums(tree.path(), &["-ce"]);
    same("conffiles", &of(MismatchKind::ConffileChanged), &conf_changed);
}

/// A scan that took the MD5 of every regular file under some directories of a tree, as it
/// is; it records what the anchor looks up besides, and knows no more (each is then read).
struct TookEveryMd5 {
    md5s: std::collections::BTreeMap<std::path::PathBuf, [u8; 16]>,
    asked: std::sync::Mutex<BTreeSet<String>>,
}

impl TookEveryMd5 {
    fn of(root: &Path, dirs: &[&str]) -> Self {
        use md5::Digest as _;
        let mut md5s = std::collections::BTreeMap::new();
        let mut todo: Vec<std::path::PathBuf> =
            dirs.iter().map(|d| root.join(d.trim_start_matches('/'))).collect();
        while let Some(dir) = todo.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let e = e.unwrap();
                let kind = e.file_type().unwrap();
                if kind.is_dir() {
                    todo.push(e.path());
                } else if kind.is_file() {
                    let host = Path::new("/").join(e.path().strip_prefix(root).unwrap());
                    md5s.insert(host, md5::Md5::digest(std::fs::read(e.path()).unwrap()).into());
                }
            }
        }
        Self { md5s, asked: Default::default() }
    }
}

impl guestward_fim::package::KnownContent for TookEveryMd5 {
    fn contents(
        &self,
        files: &[(&Path, Vec<guestward_fim::package::DigestAlgo>)],
    ) -> Vec<Option<guestward_fim::attribution::Content>> {
        let mut asked = self.asked.lock().unwrap();
        asked.extend(files.iter().map(|(p, _)| p.display().to_string()));
        files.iter().map(|_| None).collect()
    }

    fn took_md5(&self, path: &Path, md5: &[u8; 16]) -> bool {
        self.md5s.get(path) == Some(md5)
    }
}

/// The trust anchor (the FIM baseline's pass over the package files in its scope) flags what
/// verify-packages flags on the same tree, streaming package by package; and a path two
/// packages list is judged against both: it matches if it matches either.
#[test]
fn the_trust_anchor_flags_what_verify_packages_flags_and_judges_shared_paths_by_every_owner() {
    use guestward_fim::package::{ChangeOrigin, PackageOracle};
    let tree = prepared_tree();
    // gw-gamma also ships two of gw-alpha's files: `untouched` with other content (the file on
    // disk is alpha's, so it matches one owner: not flagged) and `data` (altered: flagged once).
    let root_dir = tree.path();
    let info = root_dir.join("var/lib/dpkg/info");
    std::fs::write(info.join("gw-gamma.list"), "/usr/share/gw-alpha/untouched\n/usr/share/gw-alpha/data\n")
        .unwrap();
    std::fs::write(
        info.join("gw-gamma.md5sums"),
        "00000000000000000000000000000000  usr/share/gw-alpha/untouched\n11111111111111111111111111111111  usr/share/gw-alpha/data\n",
    )
    .unwrap();
    let mut status = std::fs::read_to_string(root_dir.join("var/lib/dpkg/status")).unwrap();
    status.push_str("Package: gw-gamma\nStatus: install ok installed\nArchitecture: all\nVersion: 3.0\nDescription: test package\n\n");
    std::fs::write(root_dir.join("var/lib/dpkg/status"), status).unwrap();

    let root = HostRoot::new(root_dir).unwrap();
    let (oracle, problems) = guestward_pkgfiles::Oracle::load(root.clone());
    assert!(problems.is_empty(), "{problems:?}");
    let found = oracle.verify_under(&["/".into()], &NothingKnown).unwrap();
    assert_eq!((found.unread_count, found.unread.len()), (0, 0), "{:?}", found.unread);
    let found = found.mismatches;
    let flagged = set(found.iter().map(|(p, _)| p.display().to_string()));
    assert_eq!(found.len(), flagged.len(), "each path once: {found:#?}");
    assert_eq!(
        flagged,
        set([
            "/usr/bin/gw-tool.alpha".into(),
            "/usr/share/gw-alpha/data".into(),
            "/usr/share/gw-alpha/gone".into(),
            "/etc/gw-alpha.conf".into(),
            "/etc/gw-beta.conf".into(),
        ])
    );
    let origin = |path: &str| &found.iter().find(|(p, _)| p == Path::new(path)).unwrap().1.origin;
    assert_eq!(origin("/usr/share/gw-alpha/data"), &ChangeOrigin::OutsidePackageManager);
    assert_eq!(origin("/etc/gw-alpha.conf"), &ChangeOrigin::ConffileEdit);
    // verify-packages on the same tree: the same paths.
    let report = verify::verify_root(&root, &Options::default(), &Progress::default()).unwrap();
    same("trust anchor", &set(report.mismatches.iter().map(|m| m.path.clone())), &flagged);
    // A scope is a scope: under /etc only the conffiles.
    let etc = oracle.verify_under(&["/etc".into()], &NothingKnown).unwrap().mismatches;
    assert_eq!(
        set(etc.iter().map(|(p, _)| p.display().to_string())),
        set(["/etc/gw-alpha.conf".into(), "/etc/gw-beta.conf".into()])
    );

    // Told which MD5s a scan took (every file as it is): a file whose MD5 is the one its one
    // package lists is judged by that alone, and only the others are looked up or read. The
    // same paths.
    let took = TookEveryMd5::of(root_dir, &["/usr", "/etc"]);
    let judged = oracle.verify_under(&["/".into()], &took).unwrap().mismatches;
    same("judged by the MD5s taken", &set(judged.iter().map(|(p, _)| p.display().to_string())), &flagged);
    let asked = took.asked.into_inner().unwrap();
    for matching in ["/usr/bin/gw-alpha", "/usr/bin/gw-tool", "/etc/gw-alpha.d/keep.conf"] {
        assert!(!asked.contains(matching), "{matching} was looked up: {asked:?}");
    }
    // Shared with gw-gamma: judged against both owners, so looked up.
    assert!(asked.contains("/usr/share/gw-alpha/untouched"), "{asked:?}");
    assert!(asked.contains("/usr/share/gw-alpha/data"), "{asked:?}");

    // The FIM baseline's own anchor: `fim init` and `fim check` take the MD5 of the dpkg files
    // in their scan's read and judge them from it, without reading them again. The same paths.
    let state = tempfile::tempdir().unwrap();
    let rule = |path: &str| {
        guestward_fim::config::PathEntry::Rule(guestward_fim::config::PathRule {
            path: guestward_core::AbsolutePath::new(path).unwrap(),
            recursive: true,
            exclude: vec![],
            attributes: None,
            max_file_size_bytes: None,
        })
    };
    let o = guestward_fim::oneshot::OneShot {
        config: guestward_fim::Config { paths: vec![rule("/usr"), rule("/etc")], ..Default::default() },
        state_dir: state.path().to_path_buf(),
        root: root.clone(),
        progress_bar: false,
    };
    // What the anchor found, and whether it judged the files (not the verdict kept with the
    // baseline: see `guestward_fim::verdict`).
    let judged = |purpose| {
        let run = guestward_fim::oneshot::run_packaged(&o, purpose, &oracle_of).unwrap();
        let b = run.summary.baseline;
        let how = b.package_verification.clone().unwrap_or_else(|| panic!("not verified: {b:#?}"));
        assert_eq!(b.package_mismatch_count as usize, b.package_mismatches.len(), "{b:#?}");
        (set(b.package_mismatches.iter().map(|m| m.path.clone())), !how.contains("kept with the baseline"))
    };
    let anchored = |purpose| {
        let (found, judged_now) = judged(purpose);
        assert!(judged_now, "{purpose:?} reused a kept verdict");
        found
    };
    std::fs::write(root_dir.join("usr/share/stray"), "no package lists this\n").unwrap();
    same("fim init's anchor", &anchored(guestward_fim::Purpose::Init), &flagged);
    // `fim init` exits 1 for package files that already differ from their packages, and 0
    // when the only ones are edited conffiles (each in a state directory of its own).
    let init_exit = |paths: Vec<guestward_fim::config::PathEntry>| {
        let state = tempfile::tempdir().unwrap();
        let o = guestward_fim::oneshot::OneShot {
            config: guestward_fim::Config { paths, ..Default::default() },
            state_dir: state.path().to_path_buf(),
            root: root.clone(),
            progress_bar: false,
        };
        let init =
            guestward_fim::oneshot::run_packaged(&o, guestward_fim::Purpose::Init, &oracle_of).unwrap();
        let line = init.summary.baseline.package_verification.clone().unwrap_or_default();
        (init.summary.baseline.package_mismatches.len(), init.init_exit_code(), line)
    };
    let (n, code, line) = init_exit(vec![rule("/usr"), rule("/etc")]);
    assert_eq!((n, code), (flagged.len(), 1));
    assert!(line.ends_with(&format!("{n} do not match (2 of them conffiles edited or removed)")), "{line}");
    let (n, code, line) = init_exit(vec![rule("/etc")]);
    assert_eq!((n, code), (2, 0), "only the two edited conffiles");
    assert!(line.ends_with("2 do not match (conffiles edited or removed)"), "{line}");
    // The baseline keeps the MD5 of every dpkg file it hashed, as `md5sum` computes it, and of
    // nothing else.
    let store = guestward_fim::store::Store::open(state.path()).unwrap();
    for (path, owned) in [
        ("/usr/share/gw-alpha/untouched", true),
        ("/usr/share/gw-alpha/data", true),
        ("/etc/gw-alpha.conf", true),
        ("/usr/share/stray", false),
    ] {
        let rec = store.get(Path::new(path)).unwrap().unwrap();
        let md5 = rec.md5.map(|m| guestward_fim::record::hex(&m));
        assert_eq!(md5.as_deref(), owned.then(|| md5_of(root_dir, path)).as_deref(), "{path}");
    }
    // `fim check` of the unchanged tree, with the package databases as they were: the
    // verdict kept with the baseline.
    let (kept, judged_now) = judged(guestward_fim::Purpose::Check);
    assert!(!judged_now, "the kept verdict was not used");
    same("fim check's kept verdict", &kept, &flagged);
    // A package database file rewritten (same content, so a new ctime): judged again, from the
    // baseline's MD5s (every row pruned: they equal the baseline).
    let gamma = std::fs::read(info.join("gw-gamma.list")).unwrap();
    std::fs::write(info.join("gw-gamma.list"), &gamma).unwrap();
    same("fim check's anchor", &anchored(guestward_fim::Purpose::Check), &flagged);
    // An `.md5sums` edited to disown an untouched file, its mtime put back: the files are as
    // the baseline has them, but the verdict is not the kept one (ctime moved).
    let sums_path = info.join("gw-alpha.md5sums");
    let sums = std::fs::read_to_string(&sums_path).unwrap();
    let untouched = md5_of(root_dir, "/usr/share/gw-alpha/untouched");
    let mtime = std::fs::metadata(&sums_path).unwrap().modified().unwrap();
    std::fs::write(&sums_path, sums.replace(&untouched, &"f".repeat(32))).unwrap();
    std::fs::File::options().write(true).open(&sums_path).unwrap().set_modified(mtime).unwrap();
    let mut more = flagged.clone();
    more.insert("/usr/share/gw-alpha/untouched".into());
    same("fim check's anchor after an md5sums edit", &anchored(guestward_fim::Purpose::Check), &more);
    std::fs::write(&sums_path, &sums).unwrap();
    // Then a trojaned file is put back as its package has it (new ctime, so read again and
    // its MD5 taken anew): no longer flagged.
    std::fs::write(root_dir.join("usr/share/gw-alpha/data"), "content of /usr/share/gw-alpha/data\n")
        .unwrap();
    let restored = md5_of(root_dir, "/usr/share/gw-alpha/data");
    let listed = std::fs::read_to_string(info.join("gw-alpha.md5sums")).unwrap();
    assert!(
        listed.contains(&format!("{restored}  usr/share/gw-alpha/data")),
        "the fixture's original: {listed}"
    );
    let mut fewer = flagged.clone();
    fewer.remove("/usr/share/gw-alpha/data");
    same("fim check's anchor after a repair", &anchored(guestward_fim::Purpose::Check), &fewer);
}

/// What a scan took, except that judging one path panics (a bug in the code that judges it).
struct PanicsOn {
    took: TookEveryMd5,
    path: &'static str,
}

impl guestward_fim::package::KnownContent for PanicsOn {
    fn contents(
        &self,
        files: &[(&Path, Vec<guestward_fim::package::DigestAlgo>)],
    ) -> Vec<Option<guestward_fim::attribution::Content>> {
        assert!(files.iter().all(|(p, _)| *p != Path::new(self.path)), "planted panic on {}", self.path);
        self.took.contents(files)
    }

    fn took_md5(&self, path: &Path, md5: &[u8; 16]) -> bool {
        assert!(path != Path::new(self.path), "planted panic on {}", self.path);
        self.took.took_md5(path, md5)
    }
}

/// A thread of the trust anchor that panics does not take the files it judged with it into a
/// verdict that looks complete: the packages are reported not verified, whichever pass the
/// file was in (a dpkg package's own files, a path two packages list, a conffile), and the
/// pass ends rather than waiting for the thread.
#[test]
fn a_thread_that_panics_leaves_the_packages_not_verified_rather_than_passed() {
    use guestward_fim::package::PackageOracle;
    let tree = prepared_tree();
    let root_dir = tree.path().to_path_buf();
    let root = HostRoot::new(&root_dir).unwrap();
    let (oracle, problems) = guestward_pkgfiles::Oracle::load(root);
    assert!(problems.is_empty(), "{problems:?}");
    let oracle = std::sync::Arc::new(oracle);
    // Unpanicked, every file is judged: the baseline for what follows.
    let known = PanicsOn { took: TookEveryMd5::of(&root_dir, &["/usr", "/etc"]), path: "/nowhere" };
    assert_eq!(oracle.verify_under(&["/".into()], &known).unwrap().mismatches.len(), 5);
    for path in ["/usr/bin/gw-alpha", "/usr/bin/gw-tool", "/etc/gw-beta.conf", "/usr/share/gw-alpha/data"] {
        let (oracle, root_dir) = (oracle.clone(), root_dir.clone());
        let why = guestward_core::testing::within(std::time::Duration::from_secs(60), path, move || {
            let known = PanicsOn { took: TookEveryMd5::of(&root_dir, &["/usr", "/etc"]), path };
            oracle.verify_under(&["/".into()], &known)
        })
        .expect_err(path);
        assert!(
            why.contains("internal error") && why.contains(&format!("planted panic on {path}")),
            "{path}: {why}"
        );
    }
}

/// Under a policy that takes BLAKE3 instead of SHA-256, the baseline keeps the MD5 of each
/// dpkg file its first scan took through every `fim init` over it and judges from it, as under
/// the default policy (the MD5 was carried over by SHA-256 only: dropped by one init, taken
/// again by the next).
#[test]
fn a_blake3_policy_keeps_the_md5s_of_package_files_through_inits_over_the_baseline() {
    use guestward_fim::config::{Attribute as FimAttribute, PathEntry, PathRule};
    let tree = prepared_tree();
    let root_dir = tree.path();
    let root = HostRoot::new(root_dir).unwrap();
    let state = tempfile::tempdir().unwrap();
    let o = guestward_fim::oneshot::OneShot {
        config: guestward_fim::Config {
            paths: vec![PathEntry::Rule(PathRule {
                path: guestward_core::AbsolutePath::new("/usr").unwrap(),
                recursive: true,
                exclude: vec![],
                attributes: Some(vec![FimAttribute::Blake3, FimAttribute::Mode, FimAttribute::Size]),
                max_file_size_bytes: None,
            })],
            ..Default::default()
        },
        state_dir: state.path().to_path_buf(),
        root: root.clone(),
        progress_bar: false,
    };
    let flagged = set([
        "/usr/bin/gw-tool.alpha".into(),
        "/usr/share/gw-alpha/data".into(),
        "/usr/share/gw-alpha/gone".into(),
    ]);
    for round in 0..3 {
        let run = guestward_fim::oneshot::run_packaged(&o, guestward_fim::Purpose::Init, &oracle_of).unwrap();
        let b = run.summary.baseline;
        same(
            &format!("init {round}'s anchor"),
            &set(b.package_mismatches.iter().map(|m| m.path.clone())),
            &flagged,
        );
        let store = guestward_fim::store::Store::open(state.path()).unwrap();
        for path in ["/usr/share/gw-alpha/untouched", "/usr/share/gw-alpha/data", "/usr/bin/gw-tool"] {
            let rec = store.get(Path::new(path)).unwrap().unwrap();
            assert!(rec.sha256.is_none() && rec.blake3.is_some(), "{path}: {rec:?}");
            let md5 = rec.md5.map(|m| guestward_fim::record::hex(&m));
            assert_eq!(md5, Some(md5_of(root_dir, path)), "init {round}: {path}");
        }
    }
}

/// The package databases' stamp (what a FIM verdict kept with the baseline is bound to)
/// moves with every file the expectations are read from, an edit with its mtime put back
/// included, and with nothing else; an oracle whose index was read before a change gives none
/// until it reads the index again.
#[test]
fn the_databases_stamp_moves_with_every_file_the_expectations_come_from() {
    use guestward_fim::package::PackageOracle;
    use guestward_pkgfiles::oracle::databases_stamp;
    let tree = prepared_tree();
    let dir = tree.path();
    let root = HostRoot::new(dir).unwrap();
    let (oracle, _) = guestward_pkgfiles::Oracle::load(root.clone());
    let mut last = databases_stamp(&root).expect("stamped");
    assert_eq!(oracle.databases_stamp(), Some(last));
    let mut moved = |what: &str, expect_moved: bool| {
        let now = databases_stamp(&root).expect("stamped");
        assert_eq!(now != last, expect_moved, "{what}");
        last = now;
    };
    moved("nothing changed", false);
    put(dir, "/var/lib/rpm/rpmdb.sqlite", "");
    moved("an rpm database appeared", true);
    // Not package data: a lock, SQLite's shared-memory index, a file elsewhere.
    put(dir, "/var/lib/dpkg/lock-frontend", "");
    put(dir, "/var/lib/rpm/rpmdb.sqlite-shm", "index");
    put(dir, "/usr/share/gw-alpha/untouched", "edited: the files are FIM's to judge\n");
    moved("files that hold no package data", false);
    // An `.md5sums` rewritten, same length, its mtime put back: the ctime tells.
    let sums = dir.join("var/lib/dpkg/info/gw-beta.md5sums");
    let mtime = std::fs::metadata(&sums).unwrap().modified().unwrap();
    let text = std::fs::read_to_string(&sums).unwrap();
    std::fs::write(&sums, format!("0{}", &text[1..])).unwrap();
    std::fs::File::options().write(true).open(&sums).unwrap().set_modified(mtime).unwrap();
    assert_eq!(std::fs::metadata(&sums).unwrap().modified().unwrap(), mtime);
    moved("an md5sums edited, mtime restored", true);
    assert_eq!(oracle.databases_stamp(), None, "the index was read before the edit");
    // Read again (the empty rpm database above is a problem of the reload, not a failure).
    let _ = oracle.refresh();
    assert_eq!(oracle.databases_stamp(), databases_stamp(&root), "read again");
    for (what, path) in [
        ("a new info file", "/var/lib/dpkg/info/gw-new.md5sums"),
        ("the status file", "/var/lib/dpkg/status"),
        ("the diversions", "/var/lib/dpkg/diversions"),
        ("a dpkg path-exclude setting", "/etc/dpkg/dpkg.cfg.d/more"),
        ("rpm's write-ahead log", "/var/lib/rpm/rpmdb.sqlite-wal"),
        ("rpm's owner names", "/etc/passwd"),
    ] {
        put(dir, path, "changed\n");
        moved(what, true);
    }
    std::fs::remove_file(dir.join("var/lib/dpkg/info/gw-new.md5sums")).unwrap();
    moved("an info file removed", true);
    // The merged-/usr symlinks decide where a package's files are found.
    std::fs::remove_file(dir.join("bin")).unwrap();
    symlink("usr/sbin", dir.join("bin")).unwrap();
    moved("/bin pointed elsewhere", true);
}

#[test]
fn cli_output_and_exit_codes_on_the_fixture_tree() {
    let tree = prepared_tree();
    let args = |json: bool, packages: &[&str]| VerifyPackagesArgs {
        root: Some(tree.path().to_path_buf()),
        json,
        packages: packages.iter().map(|p| (*p).to_owned()).collect(),
        threads: 0,
        max_file_size: verify::DEFAULT_MAX_FILE_BYTES,
        no_progress: true,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(run_with(&args(false, &[]), &mut out, &mut err), 1);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("changed")
            && l.contains("gw-alpha 1.0-1")
            && l.ends_with("/usr/share/gw-alpha/data")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("conffile") && l.contains("low") && l.ends_with("/etc/gw-alpha.conf")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("missing") && l.ends_with("/usr/share/gw-alpha/gone")),
        "{text}"
    );
    assert!(text.contains("2 changed, 2 conffiles changed, 1 missing, 0 not checked"), "{text}");

    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(run_with(&args(true, &["gw-beta"]), &mut out, &mut err), 1);
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let m = json["mismatches"].as_array().unwrap();
    assert_eq!(m.len(), 1, "{json}");
    assert_eq!(m[0]["path"], "/etc/gw-beta.conf");
    assert_eq!(m[0]["kind"], "conffile_changed");
    assert_eq!(m[0]["expected"]["algo"], "md5");
    assert_eq!(json["packages_checked"], 1);
    // A reader that goes away after the first bytes (`--json | head -1`) is no error: the exit
    // code is the report's, and nothing is said on stderr; in both output forms.
    struct ClosesAfter(usize);
    impl std::io::Write for ClosesAfter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            let n = buf.len().min(self.0);
            self.0 -= n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    for json in [true, false] {
        let mut err = Vec::new();
        assert_eq!(run_with(&args(json, &[]), &mut ClosesAfter(10), &mut err), 1, "json {json}");
        assert!(err.is_empty(), "json {json}: {}", String::from_utf8_lossy(&err));
    }

    // A package whose files all match: exit 0. One that is not installed: exit 2.
    std::fs::write(tree.path().join("etc/gw-beta.conf"), "beta = 1\n").unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(
        run_with(&args(false, &["gw-beta"]), &mut out, &mut err),
        0,
        "{}",
        String::from_utf8_lossy(&out)
    );
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(run_with(&args(false, &["no-such-package"]), &mut out, &mut err), 2);
    assert!(String::from_utf8_lossy(&err).contains("not installed: no-such-package"));
    // No package database at all: exit 2.
    let empty = tempfile::tempdir().unwrap();
    let mut a = args(false, &[]);
    a.root = Some(empty.path().to_path_buf());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(run_with(&a, &mut out, &mut err), 2);
    assert!(String::from_utf8_lossy(&err).contains("no package database"));
    // A database none of whose packages can be read (every file list refused: here a
    // directory where `.list` should be): exit 2, saying why, not that there is none.
    for name in ["gw-alpha.list", "gw-beta.list"] {
        let list = tree.path().join("var/lib/dpkg/info").join(name);
        std::fs::remove_file(&list).unwrap();
        std::fs::create_dir(&list).unwrap();
    }
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(run_with(&args(false, &[]), &mut out, &mut err), 2);
    let err = String::from_utf8_lossy(&err);
    assert!(err.contains("no package of the database under") && err.contains("gw-alpha.list"), "{err}");
    assert!(!err.contains("no package database under"), "{err}");
    // The FIM trust anchor says the same in its own words.
    let root = HostRoot::new(tree.path()).unwrap();
    let (oracle, _) = guestward_pkgfiles::Oracle::load(root);
    use guestward_fim::package::PackageOracle;
    let why = oracle.verify_under(&["/".into()], &NothingKnown).unwrap_err();
    assert!(why.contains("could be read (2 problem(s)"), "{why}");
}

#[test]
fn hostile_entries_are_not_followed_or_opened() {
    let tree = prepared_tree();
    let root = tree.path();
    // The untouched file becomes a symlink to a file outside the root with the same content,
    // and a FIFO takes the place of another: neither is opened, both are reported.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("x"), "content of /usr/share/gw-alpha/untouched\n").unwrap();
    std::fs::remove_file(root.join("usr/share/gw-alpha/untouched")).unwrap();
    symlink(outside.path().join("x"), root.join("usr/share/gw-alpha/untouched")).unwrap();
    std::fs::remove_file(root.join("etc/gw-alpha.d/keep.conf")).unwrap();
    nix::unistd::mkfifo(
        &root.join("etc/gw-alpha.d/keep.conf"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let host = HostRoot::new(root).unwrap();
    let report = guestward_core::testing::within(
        std::time::Duration::from_secs(60),
        "verify with a FIFO",
        move || verify::verify_root(&host, &Options::default(), &Progress::default()).unwrap(),
    );
    for path in ["/usr/share/gw-alpha/untouched", "/etc/gw-alpha.d/keep.conf"] {
        let m =
            report.mismatches.iter().find(|m| m.path == path).unwrap_or_else(|| panic!("{path}: {report:?}"));
        assert_eq!(m.attributes, vec![Attribute::Type], "{m:?}");
    }
}

#[test]
fn live_root_matches_debsums() {
    if !Path::new("/var/lib/dpkg/status").exists() || !have("debsums") {
        skip_or_fail("live_root_matches_debsums", "no dpkg database or no debsums here");
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        skip_or_fail("live_root_matches_debsums", "not root: some package files are unreadable");
        return;
    }
    // The attribution tests install, edit and purge a package of their own: not meanwhile.
    let _dpkg = crate::attribution::DPKG.lock().unwrap_or_else(|e| e.into_inner());
    // Every third installed package (sorted by name), so the test costs CI a third of a full
    // run while covering packages of every kind; both tools are given the same list.
    let listed = Command::new("dpkg-query").args(["-W", "-f", "${Package}\n"]).output().unwrap();
    let names: BTreeSet<String> =
        String::from_utf8_lossy(&listed.stdout).lines().map(str::to_owned).collect();
    let packages: Vec<String> = names.into_iter().step_by(3).collect();
    let options = Options { packages: packages.clone(), ..Options::default() };
    let report = verify::verify_root(&HostRoot::live(), &options, &Progress::default()).unwrap();
    let ours =
        set(report.mismatches.iter().filter(|m| m.kind == MismatchKind::Changed).map(|m| m.path.clone()));
    // debsums -c does not look at conffiles at all (missing ones included).
    let ours_missing = set(report
        .mismatches
        .iter()
        .filter(|m| m.kind == MismatchKind::Missing && !m.conffile)
        .map(|m| m.path.clone()));
    let mut flags = vec!["-c"];
    flags.extend(packages.iter().map(String::as_str));
    let (theirs, theirs_missing) = debsums(Path::new("/"), &flags);
    // debsums --root=/ prints paths as `//usr/...`.
    let fix = |s: BTreeSet<String>| set(s.into_iter().map(|p| format!("/{}", p.trim_start_matches('/'))));
    same("changed", &ours, &fix(theirs));
    same("missing", &ours_missing, &fix(theirs_missing));
    assert!(report.files_checked > 1000, "{}", report.files_checked);
}

/// A package file whose path leads to nothing is missing, whatever stops the path: a directory
/// replaced by a regular file (ENOTDIR) or by a symlink that loops (ELOOP) leaves its files as
/// gone as a deleted one (`rpm -V` says "missing" for any failed `lstat`). Neither is a problem
/// of the agent's own, an "unreadable" file that asks for root. `debsums` differs on purpose
/// here: it prints an error for the first ("can't open ... Not a directory") and stops at the
/// second ("symlink loop detected"), reporting neither.
#[test]
fn a_path_cut_by_a_file_or_a_symlink_loop_leaves_its_package_files_missing() {
    let tree = prepared_tree();
    let root = tree.path();
    std::fs::remove_dir_all(root.join("usr/share/gw-alpha")).unwrap();
    std::fs::write(root.join("usr/share/gw-alpha"), "a file where a directory was\n").unwrap();
    std::fs::remove_dir_all(root.join("etc/gw-alpha.d")).unwrap();
    symlink("gw-alpha.d", root.join("etc/gw-alpha.d")).unwrap();
    let host = HostRoot::new(root).unwrap();
    let report = verify::verify_root(&host, &Options::default(), &Progress::default()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let missing =
        set(report.mismatches.iter().filter(|m| m.kind == MismatchKind::Missing).map(|m| m.path.clone()));
    let expected = set([
        "/usr/share/gw-alpha/data".into(),
        "/usr/share/gw-alpha/gone".into(),
        "/usr/share/gw-alpha/untouched".into(),
        "/etc/gw-alpha.d/keep.conf".into(),
    ]);
    assert_eq!(missing, expected);
    let keep = report.mismatches.iter().find(|m| m.path == "/etc/gw-alpha.d/keep.conf").unwrap();
    assert!(keep.conffile, "{keep:?}");
    // The rest of the tree is judged as before.
    assert!(report.mismatches.iter().any(|m| m.path == "/etc/gw-alpha.conf"), "{report:?}");
}

#[test]
fn lookups_into_the_same_package_answer_as_single_lookups_do() {
    let dir = prepared_tree();
    let root = HostRoot::new(dir.path()).unwrap();
    let (index, _) = guestward_pkgfiles::Index::load(&root);
    // Every spelling the fixture has: a file recorded under the /bin alias, a diverted path and
    // its diversion, conffiles (edited, obsolete, remove-on-upgrade), a symlink and
    // directories only `.list` names, a file dpkg was told not to unpack, and no package's.
    let paths = [
        "/usr/bin/gw-alpha",
        "/bin/gw-alpha",
        "/usr/share/gw-alpha/data",
        "/usr/share/gw-alpha/gone",
        "/usr/bin/gw-tool",
        "/usr/bin/gw-tool.alpha",
        "/etc/gw-alpha.conf",
        "/etc/gw-alpha.d/keep.conf",
        "/etc/gw-alpha.d",
        "/usr/bin/gw-alpha-link",
        "/usr/share/gw-alpha",
        "/usr/share/doc/gw-alpha/README",
        "/etc/gw-beta.conf",
        "/etc/gw-beta.old",
        "/usr/bin/not-a-package-file",
    ];
    let paths: Vec<&Path> = paths.iter().map(Path::new).collect();
    let answers: Vec<_> = paths.iter().map(|p| index.expected(p)).collect();
    // The fixture's owners, so the comparison is not between two empty answers.
    let owners = |i: usize| answers[i].iter().map(|e| e.owner.name.clone()).collect::<Vec<_>>();
    assert_eq!(owners(0), ["gw-alpha"]);
    assert_eq!(owners(4), ["gw-beta"]);
    assert!(answers[6][0].conffile && answers[6][0].digest.is_some());
    assert!(answers[9][0].digest.is_none(), "a symlink is named by .list only: {:?}", answers[9]);
    assert!(answers[14].is_empty());
    crate::support::single_and_repeated_lookups_agree(&index, &paths);
}

/// An index read before a package's removal is asked about the files the removal deleted,
/// after dpkg has deleted the package's `.list` and `.md5sums`: every answer still names the
/// package, without a digest to judge by, instead of failing.
#[test]
fn a_package_whose_lists_are_gone_since_the_index_was_read_is_still_named() {
    let dir = prepared_tree();
    let root = HostRoot::new(dir.path()).unwrap();
    let (index, _) = guestward_pkgfiles::Index::load(&root);
    let data = Path::new("/usr/share/gw-alpha/data");
    assert!(index.expected(data).iter().all(|e| e.digest.is_some()), "{:?}", index.expected(data));
    let info = dir.path().join("var/lib/dpkg/info");
    std::fs::remove_file(info.join("gw-alpha.list")).unwrap();
    std::fs::remove_file(info.join("gw-alpha.md5sums")).unwrap();
    for path in ["/usr/share/gw-alpha/data", "/usr/share/gw-alpha/untouched", "/usr/bin/gw-alpha"] {
        let answer = index.expected(Path::new(path));
        assert_eq!(answer.len(), 1, "{path}: {answer:?}");
        assert_eq!(answer[0].owner.name, "gw-alpha", "{path}");
        assert!(answer[0].digest.is_none(), "{path}: nothing left to take a digest from: {answer:?}");
    }
}

/// Two package files whose names differ only in a byte that is not UTF-8 are two lines, each
/// escaped as FIM shows such names (`\xff`): shown lossily, both once read `x\u{fffd}`.
#[test]
fn names_that_are_not_utf8_are_shown_escaped_and_apart() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let info = root.join("var/lib/dpkg/info");
    std::fs::create_dir_all(&info).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(
        root.join("var/lib/dpkg/status"),
        "Package: p\nStatus: install ok installed\nArchitecture: all\nVersion: 1\n\n",
    )
    .unwrap();
    std::fs::write(info.join("p.list"), b"/usr\n/usr/bin\n/usr/bin/x\xff\n/usr/bin/x\xfe\n").unwrap();
    // The MD5 of nothing: the file present (with content) differs, the other is missing.
    let empty = "d41d8cd98f00b204e9800998ecf8427e";
    let mut sums = Vec::new();
    for name in [&b"x\xff"[..], b"x\xfe"] {
        sums.extend_from_slice(format!("{empty}  usr/bin/").as_bytes());
        sums.extend_from_slice(name);
        sums.push(b'\n');
    }
    std::fs::write(info.join("p.md5sums"), sums).unwrap();
    std::fs::write(root.join("usr/bin").join(std::ffi::OsStr::from_bytes(b"x\xff")), "a\n").unwrap();
    let report =
        verify::verify_root(&HostRoot::new(root).unwrap(), &Options::default(), &Progress::default())
            .unwrap();
    let mut seen: Vec<(String, MismatchKind)> =
        report.mismatches.iter().map(|m| (m.path.clone(), m.kind)).collect();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        vec![
            ("/usr/bin/x\\xfe".to_string(), MismatchKind::Missing),
            ("/usr/bin/x\\xff".to_string(), MismatchKind::Changed),
        ]
    );
}
