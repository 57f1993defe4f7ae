use guestward_core::testing::within;
use guestward_core::{HostRoot, SectionStatus};
use guestward_packages::dpkg::{DebPackage, parse_status, read_status};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/dpkg");

fn fixture(name: &str) -> (guestward_packages::dpkg::DpkgInventory, Vec<guestward_core::Problem>) {
    let path = Path::new(FIXTURES).join(name);
    let bytes = std::fs::read(&path).unwrap();
    parse_status(&bytes, &path.display().to_string())
}

fn names(pkgs: &[DebPackage]) -> Vec<String> {
    pkgs.iter().map(|p| format!("{}:{}", p.name, p.architecture.as_deref().unwrap_or("?"))).collect()
}

/// The oracle: dpkg-query on this machine, reading the same database, lists the same installed
/// packages with the same versions and architectures.
#[test]
fn live_dpkg_database_matches_dpkg_query() {
    if !Path::new("/var/lib/dpkg/status").exists() {
        guestward_core::testing::skip_or_fail(
            "live_dpkg_database_matches_dpkg_query",
            "no /var/lib/dpkg/status on this machine",
        );
        return;
    }
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${binary:Package}\t${Version}\t${Architecture}\t${db:Status-Abbrev}\n"])
        .output()
        .expect("dpkg-query must be installed where /var/lib/dpkg/status exists");
    assert!(out.status.success(), "dpkg-query failed: {}", String::from_utf8_lossy(&out.stderr));
    // We read before and after dpkg-query; the database may change under us only if someone
    // installs packages right now, which would show up as a difference in both reads.
    let (inventory, problems) = read_status(&HostRoot::live(), Path::new("/var/lib/dpkg"), 1 << 30).unwrap();
    assert!(problems.is_empty(), "{problems:?}");

    let mut expected = BTreeSet::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 4, "{line:?}");
        let abbrev = cols[3].as_bytes();
        // Second letter: state `i` (installed); third: error flag, blank when ok.
        if abbrev.get(1) == Some(&b'i') && abbrev.get(2) == Some(&b' ') {
            let name = cols[0].split(':').next().unwrap().to_string();
            expected.insert((name, cols[1].to_string(), cols[2].to_string()));
        }
    }
    let got: BTreeSet<(String, String, String)> = inventory
        .installed
        .iter()
        .map(|p| (p.name.clone(), p.version.full.clone(), p.architecture.clone().unwrap_or_default()))
        .collect();
    assert_eq!(got.len(), inventory.installed.len(), "duplicate entries in our inventory");
    let missing: Vec<_> = expected.difference(&got).collect();
    let extra: Vec<_> = got.difference(&expected).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}\nextra {extra:?}");
    assert!(got.len() > 50, "suspiciously few packages: {}", got.len());
}

#[test]
fn multiarch_duplicates_are_kept_per_architecture() {
    let (inv, problems) = fixture("multiarch.status");
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(names(&inv.installed), vec!["zlib1g:amd64", "zlib1g:i386", "tzdata:all"]);
    let z = &inv.installed[1];
    assert_eq!(z.multi_arch.as_deref(), Some("same"));
    assert_eq!(z.installed_size_kib, Some(175));
    assert_eq!((z.source_name.as_str(), z.source_version.as_str()), ("zlib", "1:1.2.13.dfsg-1"));
}

#[test]
fn epochs_holds_and_source_versions() {
    let (inv, problems) = fixture("epochs.status");
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(inv.installed.len(), 3, "a held package is installed");
    let ssh = &inv.installed[0];
    assert_eq!((ssh.version.epoch, ssh.version.upstream.as_str()), (Some(1), "9.2p1"));
    assert_eq!(ssh.version.revision.as_deref(), Some("2+deb12u7"));
    let mach = &inv.installed[1];
    assert_eq!(mach.status.want, "hold");
    assert_eq!(mach.version.full, "2:1.8+git20210923-1+b1");
    assert_eq!((mach.source_name.as_str(), mach.source_version.as_str()), ("gnumach", "2:1.8+git20210923-1"));
    assert_eq!(inv.installed[2].version.upstream, "1.0~rc1");
}

#[test]
fn partial_states_are_reported_separately_and_purged_ones_dropped() {
    let (inv, problems) = fixture("states.status");
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(names(&inv.installed), vec!["bash:amd64"]);
    let states: Vec<(&str, &str)> =
        inv.not_fully_installed.iter().map(|p| (p.name.as_str(), p.status.state.as_str())).collect();
    assert_eq!(
        states,
        vec![
            ("oldconf", "config-files"),
            ("broken-upgrade", "half-installed"),
            ("unpacked-only", "unpacked")
        ]
    );
    assert_eq!(inv.not_fully_installed[1].status.flag, "reinstreq");
}

#[test]
fn continuation_lines_do_not_split_packages() {
    let (inv, problems) = fixture("continuation.status");
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(names(&inv.installed), vec!["libc6:amd64", "base-files:amd64"]);
    assert_eq!(inv.installed[1].version.full, "12.4+deb12u11");
}

#[test]
fn truncated_final_stanza_is_reported_with_its_line_and_the_rest_kept() {
    let (inv, problems) = fixture("truncated.status");
    assert_eq!(names(&inv.installed), vec!["libc6:amd64"]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].code, "malformed");
    assert_eq!(problems[0].line, Some(22));
    assert!(problems[0].message.contains("base-files"), "{}", problems[0].message);
    assert!(problems[0].path.as_deref().unwrap().ends_with("truncated.status"));
}

#[test]
fn non_utf8_bytes_are_replaced_and_the_package_kept() {
    let (inv, problems) = fixture("non-utf8.status");
    assert_eq!(names(&inv.installed), vec!["cafe-tools:amd64", "base-files:amd64"]);
    assert_eq!(inv.installed[0].maintainer.as_deref(), Some("Ren\u{fffd} Example <rene@example.org>"));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!((problems[0].code.as_str(), problems[0].line), ("invalid_utf8", Some(1)));
}

#[test]
fn empty_file_is_an_empty_inventory() {
    let (inv, problems) = fixture("empty.status");
    assert!(inv.installed.is_empty() && inv.not_fully_installed.is_empty() && problems.is_empty());
}

#[test]
fn malformed_stanzas_are_skipped_with_file_and_line() {
    let (inv, problems) = fixture("malformed.status");
    assert_eq!(names(&inv.installed), vec!["good-one:amd64", "good-two:amd64"]);
    let lines: Vec<Option<u64>> = problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, vec![Some(6), Some(11), Some(15)], "{problems:?}");
    assert!(problems[1].message.contains("missing Package"), "{}", problems[1].message);
    assert!(problems[2].message.contains("bad-version"), "{}", problems[2].message);
}

#[test]
fn missing_status_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("var/lib/dpkg")).unwrap();
    let root = HostRoot::new(dir.path()).unwrap();
    let err = read_status(&root, Path::new("/var/lib/dpkg"), 1 << 20).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("var/lib/dpkg/status") && msg.contains("not found"), "{msg}");

    // Through the collector: the section is an error naming the file, not a panic.
    let section = guestward_packages::collect(&root, &guestward_packages::Config::default());
    assert_eq!(section.status, SectionStatus::Degraded);
    assert_eq!(section.problems[0].code, "not_found");
}

#[test]
fn host_without_dpkg_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot::new(dir.path()).unwrap();
    let section = guestward_packages::collect(&root, &guestward_packages::Config::default());
    assert_eq!(section.status, SectionStatus::Ok);
    assert!(section.data.unwrap().dpkg.is_none());
    assert!(section.note.unwrap().contains("no package database"));
}

#[test]
fn oversized_status_file_is_refused_not_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("var/lib/dpkg")).unwrap();
    std::fs::write(dir.path().join("var/lib/dpkg/status"), vec![b'x'; 2048]).unwrap();
    let root = HostRoot::new(dir.path()).unwrap();
    let err = read_status(&root, Path::new("/var/lib/dpkg"), 1024).unwrap_err();
    assert!(err.to_string().contains("1024-byte limit"), "{err}");
}

/// A root with a dpkg admin directory (its `status` left to the test) and one Python package,
/// so the test can see that the rest of the section is still collected.
fn root_with_dpkg_dir_and_a_python_package() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("var/lib/dpkg")).unwrap();
    let dist = dir.path().join("usr/lib/python3.11/site-packages/requests-2.31.0.dist-info");
    std::fs::create_dir_all(&dist).unwrap();
    std::fs::write(dist.join("METADATA"), "Metadata-Version: 2.1\nName: requests\nVersion: 2.31.0\n")
        .unwrap();
    dir
}

fn assert_status_refused(section: &guestward_core::Section<guestward_packages::PackagesReport>, kind: &str) {
    let report = section.data.as_ref().unwrap();
    assert!(report.dpkg.is_none());
    let lang = report.language.as_ref().unwrap();
    assert!(lang.packages.iter().any(|p| p.name == "requests"), "the language packages are still collected");
    let p =
        section.problems.iter().find(|p| p.code == "not_regular_file").expect("a not_regular_file problem");
    assert!(p.message.contains("var/lib/dpkg/status") && p.message.contains(kind), "{p}");
    assert_eq!(section.status, SectionStatus::Degraded);
}

#[test]
fn fifo_in_place_of_dpkg_status_is_refused_not_read() {
    let dir = root_with_dpkg_dir_and_a_python_package();
    nix::unistd::mkfifo(
        &dir.path().join("var/lib/dpkg/status"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let root = HostRoot::new(dir.path()).unwrap();
    let section = within(
        std::time::Duration::from_secs(20),
        "collecting packages with a FIFO as dpkg status",
        move || guestward_packages::collect(&root, &guestward_packages::Config::default()),
    );
    assert_status_refused(&section, "fifo");
}

#[test]
fn char_device_in_place_of_dpkg_status_is_refused_not_read() {
    if !nix::unistd::geteuid().is_root() {
        guestward_core::testing::skip_or_fail(
            "char_device_in_place_of_dpkg_status_is_refused_not_read",
            "creating a device node needs root",
        );
        return;
    }
    let dir = root_with_dpkg_dir_and_a_python_package();
    // /dev/zero's numbers: read, it would produce 256 MiB of NULs up to the status cap.
    nix::sys::stat::mknod(
        &dir.path().join("var/lib/dpkg/status"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o644),
        nix::sys::stat::makedev(1, 5),
    )
    .unwrap();
    let root = HostRoot::new(dir.path()).unwrap();
    let section = within(
        std::time::Duration::from_secs(20),
        "collecting packages with a device node as dpkg status",
        move || guestward_packages::collect(&root, &guestward_packages::Config::default()),
    );
    assert_status_refused(&section, "character device");
}

#[test]
fn huge_line_in_dpkg_status_gives_bounded_problems() {
    // A 20 MiB Version and a 20 MiB invalid package name: each stanza is skipped with a problem
    // that quotes the start of the value, not all of it, and the good stanza is kept.
    let huge = "!".repeat(20 * 1024 * 1024);
    let text = format!(
        "Package: good\nStatus: install ok installed\nVersion: 1.0\nArchitecture: amd64\n\n\
         Package: bad-version\nStatus: install ok installed\nVersion: 1:{huge}\n\n\
         Package: Bad{huge}\nStatus: install ok installed\nVersion: 1.0\n"
    );
    let (inv, problems) = parse_status(text.as_bytes(), "/var/lib/dpkg/status");
    assert_eq!(names(&inv.installed), ["good:amd64"]);
    assert_eq!(
        problems.len(),
        2,
        "{:?}",
        problems.iter().map(|p| &p.message[..80.min(p.message.len())]).collect::<Vec<_>>()
    );
    for p in &problems {
        assert!(p.message.len() < 1024, "a {}-byte message", p.message.len());
        assert!(p.message.contains("more bytes)"), "{}", p.message);
    }
}
