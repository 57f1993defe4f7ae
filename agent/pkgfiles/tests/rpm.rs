//! rpm: the index and verification against a fixture database, with `rpm` as the oracle.

use crate::support::{have, rpm, rpm_root};
use guestward_core::HostRoot;
use guestward_core::testing::skip_or_fail;
use guestward_fim::package::{DigestAlgo, PackageManager};
use guestward_pkgfiles::Index;
use std::path::Path;

#[test]
fn index_owners_agree_with_rpm_qf() {
    if !have("rpm") {
        skip_or_fail("index_owners_agree_with_rpm_qf", "rpm is not installed");
        return;
    }
    let root = rpm_root();
    let (index, problems) = Index::load(&HostRoot::new(root.path()).unwrap());
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(index.packages().len(), 103);
    let all = rpm(root.path()).args(["-qa", "--qf", "[%{FILENAMES}\\n]"]).output().unwrap();
    let mut paths: Vec<String> = String::from_utf8_lossy(&all.stdout).lines().map(str::to_owned).collect();
    paths.sort();
    paths.dedup();
    assert!(paths.len() > 1000, "{}", paths.len());
    let step = paths.len() / 12;
    let mut sample: Vec<&str> = paths.iter().step_by(step).map(String::as_str).collect();
    sample.extend(["/usr/bin/bash", "/etc/passwd", "/usr/lib64"]);
    for path in sample {
        let out = rpm(root.path()).args(["-qf", "--qf", "%{NAME}\\n", path]).output().unwrap();
        let mut theirs: Vec<String> =
            String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
        theirs.sort();
        theirs.dedup();
        let expected = index.expected(Path::new(path));
        let mut ours: Vec<String> = expected.iter().map(|e| e.owner.name.clone()).collect();
        ours.sort();
        ours.dedup();
        assert_eq!(ours, theirs, "{path}");
        assert!(expected.iter().all(|e| e.owner.manager == PackageManager::Rpm && e.mode.is_some()));
    }
    let bash = index.expected(Path::new("/usr/bin/bash"));
    let d = bash[0].digest.as_ref().unwrap();
    assert_eq!(d.algo, DigestAlgo::Sha256);
    let theirs =
        rpm(root.path()).args(["-q", "--qf", "[%{FILENAMES} %{FILEDIGESTS}\\n]", "bash"]).output().unwrap();
    let line = String::from_utf8_lossy(&theirs.stdout)
        .lines()
        .find(|l| l.starts_with("/usr/bin/bash "))
        .unwrap()
        .to_owned();
    assert_eq!(line, format!("/usr/bin/bash {}", d.hex));
    assert_eq!(bash[0].user.as_deref(), Some("root"));
    assert_eq!(bash[0].mode, Some(0o100755));
}

use guestward_pkgfiles::verify::{self, Attribute, MismatchKind, Options, Progress};
use std::collections::BTreeSet;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::time::{Duration, UNIX_EPOCH};

/// The packages whose files the test lays out: directories and symlinks (filesystem, with
/// %ghost files), %config files (amazon-linux-repo-cdn), %config(missingok) symlinks and
/// ghosts (crypto-policies), plain data files (ncurses-base).
const PACKAGES: [&str; 4] = ["filesystem", "amazon-linux-repo-cdn", "crypto-policies", "ncurses-base"];

struct HeaderFile {
    path: String,
    mode: u32,
    size: u64,
    flags: u32,
    mtime: u64,
    link: String,
    group: String,
}

/// The packages' file lists as `rpm -q --qf` prints them from the header (the oracle's own
/// reading, not ours).
fn header_files(root: &Path) -> Vec<HeaderFile> {
    let out = rpm(root)
        .args(["-q", "--qf", "[%{FILENAMES}\\t%{FILEMODES:octal}\\t%{FILESIZES}\\t%{FILEFLAGS}\\t%{FILEMTIMES}\\t%{FILELINKTOS}\\t%{FILEGROUPNAME}\\n]"])
        .args(PACKAGES)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut files: Vec<HeaderFile> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            HeaderFile {
                path: f[0].to_owned(),
                mode: u32::from_str_radix(f[1], 8).unwrap(),
                size: f[2].parse().unwrap(),
                flags: f[3].parse().unwrap(),
                mtime: f[4].parse().unwrap(),
                link: f[5].to_owned(),
                group: f[6].to_owned(),
            }
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files.dedup_by(|a, b| a.path == b.path);
    files
}

fn set_mtime(p: &Path, secs: u64) {
    let f = std::fs::File::options().write(true).open(p).unwrap();
    f.set_modified(UNIX_EPOCH + Duration::from_secs(secs)).unwrap();
}

/// Lays out the packages' files as rpm would have installed them, as far as content can be
/// made without the payload: directories and symlinks exactly, empty files exactly (the
/// digest of no bytes), other regular files with the right size, mode and mtime but not the
/// right content (so their digest differs, which both tools must report). Then a few changes.
fn build_tree(root: &Path) -> Vec<HeaderFile> {
    let files = header_files(root);
    // The accounts the packages name (as the `setup` package ships them): both tools resolve
    // owner names through the root's own files.
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nmail:x:12:\n").unwrap();
    for f in &files {
        let p = root.join(f.path.trim_start_matches('/'));
        match f.mode & 0o170000 {
            0o040000 => {
                std::fs::create_dir_all(&p).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(f.mode & 0o7777)).unwrap();
                if f.group == "mail" {
                    nix::unistd::chown(&p, None, Some(nix::unistd::Gid::from_raw(12))).unwrap();
                }
            }
            _ if f.flags & 64 != 0 => {} // %ghost: not in the payload, not created.
            0o120000 => {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                symlink(&f.link, &p).unwrap();
            }
            0o100000 => {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, vec![b'x'; usize::try_from(f.size).unwrap()]).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(f.mode & 0o7777)).unwrap();
                set_mtime(&p, f.mtime);
            }
            other => panic!("{}: unexpected type {other:o}", f.path),
        }
    }
    files
}

/// `rpm -V` of the packages: (path -> the letters of the attributes verify-packages compares),
/// and the missing files.
fn rpm_verify(root: &Path) -> (BTreeSet<(String, String)>, BTreeSet<String>) {
    let out = rpm(root).args(["-V", "--nodeps", "--noscripts"]).args(PACKAGES).output().unwrap();
    let mut changed = BTreeSet::new();
    let mut missing = BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(at) = line.find(" /") else { continue };
        let path = line[at + 1..].to_owned();
        if line.starts_with("missing") {
            missing.insert(path);
            continue;
        }
        // Device numbers and capabilities are not compared (see verify.rs).
        let letters: String = line[..9].chars().filter(|c| "SM5LUGT".contains(*c)).collect();
        if !letters.is_empty() {
            changed.insert((path, letters));
        }
    }
    (changed, missing)
}

fn letters(attrs: &[Attribute]) -> String {
    // rpm's column order.
    "SM5LUGT".chars().filter(|c| attrs.iter().any(|a| a.rpm_letter() == *c)).collect()
}

#[test]
fn verify_matches_rpm_v_on_a_built_tree() {
    if !have("rpm") {
        skip_or_fail("verify_matches_rpm_v_on_a_built_tree", "rpm is not installed");
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        skip_or_fail("verify_matches_rpm_v_on_a_built_tree", "rpm -V --root chroots: needs root");
        return;
    }
    let dir = rpm_root();
    let root = dir.path();
    let files = build_tree(root);
    // Regular files of the payload (their content differs already: `5`).
    let regular: Vec<&HeaderFile> = files
        .iter()
        .filter(|f| f.mode & 0o170000 == 0o100000 && f.size > 0 && f.flags & (64 | 1) == 0)
        .collect();
    assert!(regular.len() >= 5, "the test needs regular files to change: {}", regular.len());
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    // The changes: a mode, an owner, an mtime, a missing file, a symlink target, a size, a
    // directory's mode, a %config file's content.
    std::fs::set_permissions(at(&regular[0].path), std::fs::Permissions::from_mode(0o600)).unwrap();
    nix::unistd::chown(&at(&regular[1].path), Some(nix::unistd::Uid::from_raw(4242)), None).unwrap();
    set_mtime(&at(&regular[2].path), 1_000_000_000);
    std::fs::remove_file(at(&regular[3].path)).unwrap();
    let link = files.iter().find(|f| f.mode & 0o170000 == 0o120000 && f.flags & 64 == 0).unwrap();
    std::fs::remove_file(at(&link.path)).unwrap();
    symlink("/elsewhere", at(&link.path)).unwrap();
    let dir_entry = files.iter().find(|f| f.path == "/usr/share/terminfo").unwrap();
    std::fs::set_permissions(at(&dir_entry.path), std::fs::Permissions::from_mode(0o700)).unwrap();
    let nonempty = regular[4];
    std::fs::write(
        at(&nonempty.path),
        b"longer than before, and not the package's content at all....................",
    )
    .unwrap();
    set_mtime(&at(&nonempty.path), nonempty.mtime);

    let host = HostRoot::new(root).unwrap();
    let opts = Options { packages: PACKAGES.iter().map(|p| (*p).to_owned()).collect(), ..Options::default() };
    let report = verify::verify_root(&host, &opts, &Progress::default()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let ours: BTreeSet<(String, String)> = report
        .mismatches
        .iter()
        .filter(|m| m.kind != MismatchKind::Missing)
        .map(|m| (m.path.clone(), letters(&m.attributes)))
        .collect();
    let ours_missing: BTreeSet<String> = report
        .mismatches
        .iter()
        .filter(|m| m.kind == MismatchKind::Missing)
        .map(|m| m.path.clone())
        .collect();
    // The changes made above, independent of either tool.
    for (path, l) in [
        (&regular[0].path, "M5"),
        (&regular[1].path, "5U"),
        (&regular[2].path, "5T"),
        (&link.path, "L"),
        (&dir_entry.path, "M"),
        (&nonempty.path, "S5"),
    ] {
        assert!(ours.contains(&(path.clone(), l.to_owned())), "{path} {l}: {ours:?}");
    }
    assert!(ours_missing.contains(&regular[3].path), "{ours_missing:?}");
    let config = report.mismatches.iter().find(|m| m.package.name == "amazon-linux-repo-cdn").unwrap();
    assert_eq!(config.kind, MismatchKind::ConffileChanged);
    assert_eq!(config.expected.as_ref().unwrap().algo, guestward_fim::package::DigestAlgo::Sha256);

    let (theirs, theirs_missing) = rpm_verify(root);
    let only_ours: Vec<_> = ours.difference(&theirs).take(20).collect();
    let only_theirs: Vec<_> = theirs.difference(&ours).take(20).collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "only ours {only_ours:?}; only rpm -V {only_theirs:?}"
    );
    assert_eq!(ours_missing, theirs_missing);
    assert!(theirs.len() > 100, "{}", theirs.len());

    // The FIM baseline's trust anchor over a scope of this tree (ncurses-base's terminfo, one
    // pass over the database for every package): the files whose content differs from their
    // package (rpm -V's `5`) and the missing ones, nothing else.
    use guestward_fim::package::PackageOracle;
    let scope = "/usr/share/terminfo";
    let (oracle, _) = guestward_pkgfiles::Oracle::load(host);
    let flagged: BTreeSet<String> = oracle
        .verify_under(&[scope.into()], &guestward_fim::package::NothingKnown)
        .unwrap()
        .mismatches
        .into_iter()
        .map(|(p, _)| p.display().to_string())
        .collect();
    let mut expected: BTreeSet<String> = theirs
        .iter()
        .filter(|(p, l)| l.contains('5') && p.starts_with(scope))
        .map(|(p, _)| p.clone())
        .collect();
    expected.extend(theirs_missing.iter().filter(|p| p.starts_with(scope)).cloned());
    assert!(expected.len() > 10, "{expected:?}");
    assert_eq!(flagged, expected);
}

/// Every header of the fixture decodes; damaged copies of them (bytes flipped, truncated)
/// never panic, and a decoded file list always has one value per file.
#[test]
fn decode_survives_damaged_headers() {
    use guestward_rpmdb::{Backend, Found};
    let root = rpm_root();
    let host = HostRoot::new(root.path()).unwrap();
    let found = Found { host_path: "/var/lib/rpm/rpmdb.sqlite".into(), backend: Backend::Sqlite };
    let mut blobs = Vec::new();
    let problems =
        guestward_rpmdb::for_each_blob(&host, &found, &guestward_rpmdb::Limits::default(), &mut |b| {
            blobs.push((b.record, b.data.unwrap()));
        })
        .unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(blobs.len(), 103);
    let mut files = 0;
    for (record, blob) in &blobs {
        let p = guestward_pkgfiles::rpm::decode(*record, blob).unwrap();
        files += p.files.len();
        // What the package index reads of a header, a path at a time, is the paths of the
        // files rpm installed, in header order.
        let h = guestward_pkgfiles::rpm::PackageHeader::parse(*record, blob).unwrap();
        let installed: Vec<_> = p.files.iter().filter(|f| f.installed()).map(|f| f.path.clone()).collect();
        assert_eq!(h.installed_paths().collect::<Vec<_>>(), installed);
        assert_eq!(h.files().collect::<Vec<_>>(), p.files);
    }
    if have("rpm") {
        let all = rpm(root.path()).args(["-qa", "--qf", "[%{FILENAMES}\\n]"]).output().unwrap();
        assert_eq!(files, String::from_utf8_lossy(&all.stdout).lines().count());
    }
    // A cheap deterministic fuzz: the header digests catch most damage (decode refuses the
    // header), the bounds checks the rest (the SHA-256 is over the region only).
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (record, blob) in blobs.iter().take(20) {
        for _ in 0..50 {
            let mut b = blob.clone();
            let at = usize::try_from(next() % b.len() as u64).unwrap();
            b[at] ^= u8::try_from(next() % 255 + 1).unwrap();
            if let Ok(p) = guestward_pkgfiles::rpm::decode(*record, &b) {
                assert!(p.files.iter().all(|f| f.path.is_absolute() || f.path.as_os_str().is_empty()));
            }
            let cut = usize::try_from(next() % b.len() as u64).unwrap();
            assert!(guestward_pkgfiles::rpm::decode(*record, &blob[..cut]).is_err());
        }
    }
}

/// An rpm package's files asked about one after another (the changes of an upgrade) get what
/// single lookups get: every eighth file of the fixture's largest package (2,558; each single
/// lookup reads the package's header again, which all of them would take a minute to in a
/// debug build).
#[test]
fn rpm_lookups_into_the_same_package_answer_as_single_lookups_do() {
    let root = rpm_root();
    let host = HostRoot::new(root.path()).unwrap();
    let (index, problems) = guestward_pkgfiles::Index::load(&host);
    assert!(problems.is_empty(), "{problems:?}");
    let id = index.packages().iter().position(|p| p.owner.name == "python3-libs").unwrap();
    let files = index.read_rpm_files(u32::try_from(id).unwrap()).unwrap();
    assert_eq!(files.files.len(), 2558);
    let paths: Vec<&Path> = files.files.iter().step_by(8).map(|f| f.path.as_path()).collect();
    let some = index.expected(paths[100]);
    assert_eq!(some.len(), 1);
    assert_eq!(some[0].owner.name, "python3-libs");
    crate::support::single_and_repeated_lookups_agree(&index, &paths);
}

/// The rpm side of "which packages just moved": the packages whose INSTALLTIME is at or after
/// a moment, newest first, as `rpm -qa --qf '%{INSTALLTIME} ...'` lists them. Also what the
/// oracle adds to an rpm transaction's evidence.
#[test]
fn recent_installs_agree_with_rpm_installtime() {
    use guestward_pkgfiles::transaction::{MAX_RPM_INSTALLS, rpm_recent_installs};
    if !have("rpm") {
        skip_or_fail("recent_installs_agree_with_rpm_installtime", "rpm is not installed");
        return;
    }
    let root = rpm_root();
    let qf = "%{INSTALLTIME} %{NAME}-%|EPOCH?{%{EPOCH}:}|%{VERSION}-%{RELEASE}%|ARCH?{.%{ARCH}}|\\n";
    let out = rpm(root.path()).args(["-qa", "--qf", qf]).output().unwrap();
    let mut theirs: Vec<(i64, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (t, nevra) = l.split_once(' ').unwrap();
            (t.parse().unwrap(), nevra.to_string())
        })
        .collect();
    assert_eq!(theirs.len(), 103);
    theirs.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let host = HostRoot::new(root.path()).unwrap();
    // From the 5th newest install on, and from the oldest (capped at the newest 8).
    for since in [theirs[4].0, theirs.last().unwrap().0] {
        let ours = rpm_recent_installs(&host, guestward_core::Timestamp::from_unix_secs(since).unwrap());
        let expected: Vec<String> = theirs
            .iter()
            .filter(|(t, _)| *t >= since)
            .take(MAX_RPM_INSTALLS)
            .map(|(t, nevra)| {
                format!("rpm INSTALLTIME {} {nevra}", guestward_core::Timestamp::from_unix_secs(*t).unwrap())
            })
            .collect();
        assert!(expected.len() >= 5, "{expected:?}");
        assert_eq!(ours, expected, "since {since}");
    }
    // After the newest install: nothing moved.
    let after = guestward_core::Timestamp::from_unix_secs(theirs[0].0 + 1).unwrap();
    assert!(rpm_recent_installs(&host, after).is_empty());
}
