//! `--root` on a fixture tree written here: a dpkg status, sources, lists in lz4, gz and
//! plain text with their (In)Release files, the reboot-required flag; then hostile lists.

use guestward_core::HostRoot;
use guestward_core::testing::within;
use guestward_updates::{Config, UpdatesReport};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

const LISTS: &str = "var/lib/apt/lists";
const MAIN: &str = "deb.example.org_debian_dists_trixie_";
const SECURITY: &str = "security.example.org_debian-security_dists_trixie-security_";
const BACKPORTS: &str = "deb.example.org_debian_dists_trixie-backports_";
const UPDATES: &str = "deb.example.org_debian_dists_trixie-updates_";

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn status_stanza(name: &str, version: &str, arch: &str) -> String {
    format!(
        "Package: {name}\nStatus: install ok installed\nArchitecture: {arch}\nVersion: {version}\nDescription: t\n\n"
    )
}

fn list_stanza(name: &str, version: &str, arch: &str) -> String {
    format!(
        "Package: {name}\nVersion: {version}\nArchitecture: {arch}\nFilename: pool/{name}.deb\nDescription: t\n\n"
    )
}

fn lz4(text: &str) -> Vec<u8> {
    let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
    enc.write_all(text.as_bytes()).unwrap();
    enc.finish().unwrap()
}

fn gz(text: &str) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(text.as_bytes()).unwrap();
    enc.finish().unwrap()
}

fn in_release(fields: &str) -> String {
    let date = jiff::Timestamp::now().strftime("%a, %d %b %Y %H:%M:%S UTC").to_string();
    format!(
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n{fields}Date: {date}\nSHA256:\n 00 1 main/x\n\
         -----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n"
    )
}

/// The tree every test here starts from.
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let status: String = [
        ("openssl", "3.0.1-1", "amd64"),
        ("bash", "5.2-1", "amd64"),
        ("tzdata", "2024a-1", "all"),
        ("vim", "2:9.0-1", "amd64"),
        ("curl", "8.0-1", "amd64"),
        ("linux-image-6.1.0-1-cloud-amd64", "6.1.10-1", "amd64"),
        ("linux-image-6.1.0-2-cloud-amd64", "6.1.12-1", "amd64"),
    ]
    .iter()
    .map(|(n, v, a)| status_stanza(n, v, a))
    .collect();
    write(root, "var/lib/dpkg/status", status.as_bytes());
    write(
        root,
        "etc/apt/sources.list",
        b"deb http://deb.example.org/debian trixie main\n\
          deb [signed-by=/k.gpg] http://security.example.org/debian-security trixie-security main\n",
    );
    write(
        root,
        "etc/apt/sources.list.d/extra.sources",
        b"Types: deb\nURIs: http://deb.example.org/debian\nSuites: trixie-backports trixie-updates\nComponents: main\n",
    );
    write(
        root,
        &format!("{LISTS}/{MAIN}InRelease"),
        in_release("Origin: Debian\nLabel: Debian\nSuite: stable\nCodename: trixie\n").as_bytes(),
    );
    let main = [
        list_stanza("openssl", "3.0.1-2", "amd64"),
        list_stanza("bash", "5.2-2", "amd64"),
        list_stanza("tzdata", "2024b-1", "all"),
        list_stanza("curl", "7.0-1", "amd64"),
        list_stanza("nginx", "1.0-1", "amd64"),
    ]
    .concat();
    write(root, &format!("{LISTS}/{MAIN}main_binary-amd64_Packages.lz4"), &lz4(&main));
    write(
        root,
        &format!("{LISTS}/{SECURITY}InRelease"),
        in_release(
            "Origin: Debian\nLabel: Debian-Security\nSuite: stable-security\nCodename: trixie-security\n",
        )
        .as_bytes(),
    );
    write(
        root,
        &format!("{LISTS}/{SECURITY}main_binary-amd64_Packages.gz"),
        &gz(&list_stanza("openssl", "3.0.1-3", "amd64")),
    );
    write(
        root,
        &format!("{LISTS}/{BACKPORTS}Release"),
        b"Origin: Debian Backports\nSuite: stable-backports\nCodename: trixie-backports\nNotAutomatic: yes\nButAutomaticUpgrades: yes\n",
    );
    write(
        root,
        &format!("{LISTS}/{BACKPORTS}main_binary-amd64_Packages"),
        list_stanza("vim", "2:9.1-1", "amd64").as_bytes(),
    );
    // A source no longer configured: apt ignores its lists, so must we.
    write(
        root,
        &format!("{LISTS}/old.example.org_dists_x_main_binary-amd64_Packages"),
        list_stanza("bash", "9.9-1", "amd64").as_bytes(),
    );
    std::fs::create_dir_all(root.join("run")).unwrap();
    std::fs::create_dir_all(root.join("var")).unwrap();
    std::os::unix::fs::symlink("/run", root.join("var/run")).unwrap();
    write(root, "run/reboot-required", b"*** System restart required ***\n");
    write(root, "run/reboot-required.pkgs", b"linux-image-6.1.0-2-cloud-amd64\nlibc6\nlibc6\n");
    dir
}

fn collect(dir: &Path, config: &Config) -> (UpdatesReport, Vec<guestward_core::Problem>) {
    let section = guestward_updates::collect(config, &HostRoot::new(dir).unwrap());
    (section.data.unwrap(), section.problems)
}

fn pending(report: &UpdatesReport) -> Vec<(String, String, Vec<String>, bool)> {
    report.pending().map(|p| (p.name.clone(), p.candidate.clone(), p.from.clone(), p.security)).collect()
}

fn expected() -> Vec<(String, String, Vec<String>, bool)> {
    let e = |n: &str, v: &str, from: &str, s| (n.to_string(), v.to_string(), vec![from.to_string()], s);
    vec![
        e("bash", "5.2-2", "stable", false),
        e("openssl", "3.0.1-3", "stable-security", true),
        e("tzdata", "2024b-1", "stable", false),
        // NotAutomatic + ButAutomaticUpgrades (100) ties with the installed version: newer wins.
        e("vim", "2:9.1-1", "stable-backports", false),
    ]
}

#[test]
fn fixture_root_lz4_gz_and_plain_lists() {
    let dir = tree();
    let (report, problems) = collect(dir.path(), &Config::default());
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(pending(&report), expected());
    let apt = report.apt.as_ref().unwrap();
    assert_eq!(apt.sources.len(), 3);
    assert!(!apt.stale, "lists written now are fresh");
    assert_eq!(apt.ignored.len(), 1, "{:?}", apt.ignored);
    // Every path shown is the real one under the root.
    for s in &apt.sources {
        assert!(s.path.starts_with(dir.path().to_str().unwrap()), "{}", s.path);
    }
    assert_eq!(apt.sources.iter().map(|s| s.entries).sum::<u64>(), 7);
    let r = &report.reboot;
    assert!(r.required && r.flag_file);
    assert_eq!(r.flag_packages, vec!["libc6".to_string(), "linux-image-6.1.0-2-cloud-amd64".to_string()]);
    assert_eq!(r.newest_kernel.as_ref().unwrap().release, "6.1.0-2-cloud-amd64");
    assert_eq!(r.running_kernel, None, "an offline root has no running kernel");

    let findings = guestward_updates::findings(&report, &Config::default());
    let ids: Vec<(&str, guestward_core::Severity)> =
        findings.iter().map(|f| (f.id.as_str(), f.severity)).collect();
    assert_eq!(
        ids,
        vec![
            (guestward_updates::SECURITY_UPDATES_PENDING, guestward_core::Severity::High),
            (guestward_updates::REBOOT_REQUIRED, guestward_core::Severity::Medium)
        ]
    );
    assert!(findings[0].title.contains("openssl"), "{}", findings[0].title);

    let mut human = Vec::new();
    guestward_updates::render_table(&report, &mut human).unwrap();
    let human = String::from_utf8(human).unwrap();
    assert!(human.contains("openssl:amd64") && human.contains("REQUIRED"), "{human}");
}

#[test]
fn old_lists_are_stale() {
    let dir = tree();
    let config = Config { stale_after_days: 7, ..Config::default() };
    let later =
        guestward_core::Timestamp::from_unix_secs(jiff::Timestamp::now().as_second() + 30 * 86_400).unwrap();
    let section = guestward_updates::collect_at(&config, &HostRoot::new(dir.path()).unwrap(), later);
    let report = section.data.unwrap();
    let apt = report.apt.as_ref().unwrap();
    assert!(apt.stale);
    assert!(apt.age_secs.unwrap() >= 30 * 86_400 - 60);
    let findings = guestward_updates::findings(&report, &config);
    let stale = findings.iter().find(|f| f.id == guestward_updates::STALE_PACKAGE_LISTS).unwrap();
    assert!(stale.title.contains("30 days old"), "{}", stale.title);
}

#[test]
fn hostile_lists_cost_only_themselves() {
    let dir = tree();
    let root = dir.path();
    // A stanza of an installed package with a line far over the entry cap, before the stanza
    // that matters: skipped whole (its version is never seen) and named. (A stanza of a
    // package not installed is skipped unread, long lines and all.)
    let huge = format!(
        "Package: openssl\nVersion: 9.9-1\nArchitecture: amd64\nDescription: {}\n\nPackage: junk\nDescription: {}\n\n{}",
        "x".repeat(200_000),
        "y".repeat(200_000),
        list_stanza("openssl", "3.0.1-3", "amd64")
    );
    let security_list = format!("{LISTS}/{SECURITY}main_binary-amd64_Packages.gz");
    write(root, &security_list, &gz(&huge));
    // A gzip cut in the middle.
    write(
        root,
        &format!("{LISTS}/{UPDATES}InRelease"),
        in_release("Origin: Debian\nSuite: stable-updates\n").as_bytes(),
    );
    let padding: String = (0..2000).map(|i| list_stanza(&format!("pad{i}"), "1.0-1", "amd64")).collect();
    let whole = gz(&padding);
    let updates_list = format!("{LISTS}/{UPDATES}main_binary-amd64_Packages.gz");
    write(root, &updates_list, &whole[..whole.len() / 2]);
    // A FIFO where a list should be: refused, never opened for reading (that would block).
    let fifo = root.join(format!("{LISTS}/{UPDATES}main_binary-all_Packages"));
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());

    let config = Config { max_entry_bytes: 64 * 1024, ..Config::default() };
    let dir_path = root.to_path_buf();
    let (report, problems) =
        within(Duration::from_secs(60), "hostile lists", move || collect(&dir_path, &config));
    assert_eq!(pending(&report), expected(), "nothing else lost");
    let named = |file: &str, code: &str, words: &str| {
        let shown = root.join(file).display().to_string();
        let p = problems.iter().find(|p| p.path.as_deref() == Some(shown.as_str()));
        let p = p.unwrap_or_else(|| panic!("no problem for {shown}: {problems:?}"));
        assert_eq!(p.code, code, "{p:?}");
        assert!(p.message.contains(words) && p.message.contains(&shown), "{p:?}");
    };
    named(&security_list, "too_large", "longer than 65536 bytes");
    named(&updates_list, "corrupt", "");
    named(&fifo.strip_prefix(root).unwrap().display().to_string(), "not_regular_file", "fifo");
    assert_eq!(problems.len(), 3, "{problems:?}");
}

/// A list written to exhaust memory: the same stanza 30,000 times (kept once), and more
/// distinct versions of one package than are kept (the rest counted in a problem). What the
/// host really has pending is unchanged.
#[test]
fn a_list_repeating_stanzas_is_kept_once_and_a_flood_of_versions_is_capped() {
    let dir = tree();
    let root = dir.path();
    let mut text = list_stanza("openssl", "3.0.1-3", "amd64").repeat(30_000);
    let versions = guestward_updates::MAX_OFFERS_PER_NAME + 44;
    // Older than the installed curl (8.0-1): none is an update.
    for i in 0..versions {
        text.push_str(&list_stanza("curl", &format!("0.{i}-1"), "amd64"));
    }
    let security_list = format!("{LISTS}/{SECURITY}main_binary-amd64_Packages.gz");
    write(root, &security_list, &gz(&text));
    let (report, problems) = collect(root, &Config::default());
    assert_eq!(pending(&report), expected());
    // The curl stanza of the main list is an offer too: one more than the flood.
    let dropped = versions + 1 - guestward_updates::MAX_OFFERS_PER_NAME;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].code == "too_many_entries"
            && problems[0].message.starts_with(&format!("{dropped} package list entries")),
        "{problems:?}"
    );
}
