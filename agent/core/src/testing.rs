//! Test support shared by every crate's tests (feature `testing`, never in a release build).
//!
//! Tests run against real peers and oracles (dpkg-query, ss, rpm, aide, setpriv, root). A
//! developer machine may lack one: the test then calls [`skip_or_fail`] and returns. CI sets
//! [`REQUIRE_ORACLES_ENV`]`=1` (`.ci/run`), and there the same call fails the test, so a
//! missing oracle can never turn a CI run green without the test having run.

use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::Duration;

/// Runs `f` on its own thread and panics if it has not returned within `limit`, so that a
/// regression that blocks (a FIFO opened for reading, an endless query, a lock never released)
/// fails the test instead of hanging the whole test run.
pub fn within<T: Send + 'static>(limit: Duration, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(RecvTimeoutError::Timeout) => panic!("{what}: still running after {limit:?} (a hang)"),
        Err(RecvTimeoutError::Disconnected) => panic!("{what}: panicked (see its message above)"),
    }
}

/// Waits for `child` to exit, at most `limit`; past it, kills it, reaps it and returns `None`
/// (the caller fails the test with what it knows: a hang must fail, never block the run).
#[allow(clippy::unwrap_used)]
pub fn wait_bounded(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The environment variable that turns a skipped test into a failed one (`1`: required).
pub const REQUIRE_ORACLES_ENV: &str = "GUESTWARD_REQUIRE_ORACLES";

/// Whether [`REQUIRE_ORACLES_ENV`] asks for every oracle to be present.
pub fn oracles_required() -> bool {
    std::env::var_os(REQUIRE_ORACLES_ENV).is_some_and(|v| v == "1")
}

/// Reports that `test` (or a part of it) cannot run here because `reason` (a tool missing, not
/// root, no IPv6...). With `GUESTWARD_REQUIRE_ORACLES=1` it panics with
/// `"{test}: required oracle missing: {reason}"`; otherwise it prints `SKIPPED {test}: {reason}`
/// to stderr and the caller returns (or leaves out the part that needs it).
#[track_caller]
#[allow(clippy::print_stderr)] // A test's own output, captured by the harness.
pub fn skip_or_fail(test: &str, reason: &str) {
    if oracles_required() {
        panic!("{test}: required oracle missing: {reason} ({REQUIRE_ORACLES_ENV}=1)");
    }
    eprintln!("SKIPPED {test}: {reason}");
}

/// A `.deb` built in `work` with `dpkg-deb --build --root-owner-group`: package `name`,
/// version `version`, installing `files` (path relative to `/`, content). For the tests that
/// install a real package while the agent watches (package attribution).
#[allow(clippy::unwrap_used)]
pub fn build_deb(
    work: &std::path::Path,
    name: &str,
    version: &str,
    files: &[(&str, &[u8])],
) -> std::path::PathBuf {
    let pkg = work.join(format!("{name}-{version}-tree"));
    for (rel, content) in files {
        let path = pkg.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
    }
    std::fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
    std::fs::write(
        pkg.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: guestward tests <tests@invalid>\n\
             Description: guestward FIM attribution test package\n"
        ),
    )
    .unwrap();
    let deb = work.join(format!("{name}_{version}.deb"));
    let out = std::process::Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&pkg)
        .arg(&deb)
        .output()
        .unwrap();
    assert!(out.status.success(), "dpkg-deb --build: {}", String::from_utf8_lossy(&out.stderr));
    deb
}

/// `dpkg ARGS`, retried for up to two minutes while another dpkg (another test, apt on this
/// machine) holds its lock; any other failure panics with dpkg's message.
#[allow(clippy::unwrap_used)]
pub fn dpkg_retrying(args: &[&std::ffi::OsStr]) {
    let end = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let out = std::process::Command::new("dpkg").args(args).output().unwrap();
        if out.status.success() {
            return;
        }
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains("lock") && std::time::Instant::now() < end, "dpkg {args:?}: {err}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::process::Command;

    /// Spawned by the test below (it does nothing in a normal run).
    #[test]
    fn skip_probe() {
        if std::env::var_os("GUESTWARD_SKIP_PROBE").is_none() {
            return;
        }
        skip_or_fail("skip_probe", "a probe reason");
    }

    /// Runs [`skip_probe`] in a child test process under each setting of the variable.
    #[test]
    fn skip_or_fail_fails_only_when_oracles_are_required() {
        for (required, should_pass, expected) in [
            (Some("1"), false, "skip_probe: required oracle missing: a probe reason"),
            (Some("0"), true, "SKIPPED skip_probe: a probe reason"),
            (None, true, "SKIPPED skip_probe: a probe reason"),
        ] {
            let mut cmd = Command::new(std::env::current_exe().unwrap());
            cmd.args(["--exact", "testing::tests::skip_probe", "--nocapture", "--test-threads=1"])
                .env("GUESTWARD_SKIP_PROBE", "1");
            match required {
                Some(v) => cmd.env(REQUIRE_ORACLES_ENV, v),
                None => cmd.env_remove(REQUIRE_ORACLES_ENV),
            };
            let out = within(Duration::from_secs(60), "the probe test", move || cmd.output().unwrap());
            let all =
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert_eq!(out.status.success(), should_pass, "{required:?}: {all}");
            assert!(all.contains(expected), "{required:?}: {all}");
        }
    }
}

/// A filesystem mounted for a test, unmounted when dropped: lazily if something still holds
/// it open, such as a daemon a failed test left running.
#[derive(Debug)]
pub struct Mount(std::path::PathBuf);

/// Runs `mount ARGS` for a test; `Err` says why this process may not.
fn mount(args: &[&str], dir: &std::path::Path) -> Result<(), String> {
    let out = std::process::Command::new("mount")
        .args(args)
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cannot mount at {} (needs root): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

impl Mount {
    /// Binds `dir` read-only over itself: writes under it fail with `EROFS`, even as root.
    /// `Err` says why this process may not (it needs root).
    pub fn read_only_bind(dir: &std::path::Path) -> Result<Self, String> {
        let path = dir.to_string_lossy().into_owned();
        mount(&["--bind", &path], dir)?;
        let bound = Self(dir.to_path_buf());
        mount(&["-o", "remount,ro,bind"], dir)?;
        Ok(bound)
    }

    /// Mounts a tmpfs of `size` (`mount`'s syntax, `8m`) at `dir`, mode 0700. `Err` says why
    /// this process may not (it needs root); the caller passes it to [`skip_or_fail`].
    pub fn tmpfs(dir: &std::path::Path, size: &str) -> Result<Self, String> {
        mount(&["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "guestward-test"], dir)?;
        Ok(Self(dir.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut cmd = std::process::Command::new("umount");
            if lazy {
                cmd.arg("-l");
            }
            cmd.arg(&self.0).status().is_ok_and(|s| s.success())
        };
        if !umount(false) {
            umount(true);
        }
    }
}

/// Writes `path` until its filesystem is full (ENOSPC), to the last byte.
///
/// # Panics
/// On any other write error.
pub fn fill_filesystem(path: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    let chunk = vec![0u8; 64 * 1024];
    for size in [chunk.len(), 1] {
        loop {
            match f.write_all(&chunk[..size]) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
    }
}

/// `n` pseudo-random lowercase letters from `seed` (xorshift): text that zstd shortens to about
/// 60 % and no further, so what a test stores has a predictable size.
pub fn letters(n: usize, seed: u32) -> String {
    let mut state = seed | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect()
}

/// The inputs a fuzz target's corpus and regressions hold (`fuzz/corpus/<target>/`,
/// `fuzz/regressions/<target>/`), sorted, for the tests that replay them through the target's
/// own calls: a parser change that brings a panic or a hang back then fails `cargo test`,
/// without nightly. Fails when the corpus is missing, so a moved directory cannot turn the
/// replay into a test of nothing.
pub fn fuzz_inputs(target: &str) -> Vec<std::path::PathBuf> {
    let fuzz = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz"));
    let mut files = Vec::new();
    for dir in [fuzz.join("corpus").join(target), fuzz.join("regressions").join(target)] {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            files.extend(entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    assert!(!files.is_empty(), "no inputs in {}/corpus/{target}", fuzz.display());
    files.sort();
    files
}

/// A fuzz input cut at each `\n\x1e\n` (a record separator line) into the parts a target
/// reads as several files or answers (`config_tree`, `imds_answers`); no separator is one part.
pub fn fuzz_parts(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(3).position(|w| w == b"\n\x1e\n") {
        parts.push(&rest[..at]);
        rest = &rest[at + 3..];
    }
    parts.push(rest);
    parts
}

/// The files the `config_tree` fuzz target writes, in the order of an input's parts: accounts,
/// privileges, cloud keys, an apt suite with dpkg's status, and three lists of other suites
/// compressed (or not: any bytes) as gzip, lz4 and xz.
pub const FUZZ_CONFIG_TREE_FILES: [&str; 10] = [
    "etc/passwd",
    "etc/shadow",
    "etc/sudoers",
    "root/.aws/credentials",
    "var/lib/apt/lists/deb.example.org_debian_dists_stable_InRelease",
    "var/lib/apt/lists/deb.example.org_debian_dists_stable_main_binary-amd64_Packages",
    "var/lib/dpkg/status",
    "var/lib/apt/lists/deb.example.org_debian_dists_stable_contrib_binary-amd64_Packages.gz",
    "var/lib/apt/lists/deb.example.org_debian_dists_stable_non-free_binary-amd64_Packages.lz4",
    "var/lib/apt/lists/deb.example.org_debian_dists_stable_non-free-firmware_binary-amd64_Packages.xz",
];

/// Writes one `config_tree` input under `dir`: cut at each `\n\x1e\n` (a record separator
/// line), part `i` becomes [`FUZZ_CONFIG_TREE_FILES`]`[i]` (empty when the input has fewer
/// parts; parts past the last file are ignored). The fuzz target and the replay tests write
/// the tree with this one function, so they read the same files.
pub fn write_fuzz_config_tree(dir: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    write_fuzz_files(dir, &FUZZ_CONFIG_TREE_FILES, data)
}

/// The files the `dnf_cache` fuzz target writes, in the order of an input's parts: a dnf
/// repository cache (`repomd.xml`, its `primary` and `updateinfo` as plain XML) and a yum one,
/// flat, with both gzipped (or not: any bytes).
pub const FUZZ_DNF_TREE_FILES: [&str; 6] = [
    "var/cache/dnf/fuzz-0123456789abcdef/repodata/repomd.xml",
    "var/cache/dnf/fuzz-0123456789abcdef/repodata/primary.xml",
    "var/cache/dnf/fuzz-0123456789abcdef/repodata/updateinfo.xml",
    "var/cache/yum/x86_64/2/amzn2-core/repomd.xml",
    "var/cache/yum/x86_64/2/amzn2-core/primary.xml.gz",
    "var/cache/yum/x86_64/2/amzn2-core/updateinfo.xml.gz",
];

/// Writes one `dnf_cache` input under `dir`, as [`write_fuzz_config_tree`] does with
/// [`FUZZ_DNF_TREE_FILES`], over an rpm database that stays the same for every input: the
/// fixture `tests/fixtures/rpmdb/libuuid/Packages` (Berkeley DB, `libuuid-2.32.1-42.el8_8`),
/// copied the first time, so that the repositories' packages meet an installed one.
pub fn write_fuzz_dnf_tree(dir: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    install_fuzz_rpmdb(dir)?;
    write_fuzz_files(dir, &FUZZ_DNF_TREE_FILES, data)
}

/// The `libuuid-2.32.1-42.el8_8` rpm database of the repository-cache fuzz targets, copied
/// under `dir` the first time.
fn install_fuzz_rpmdb(dir: &std::path::Path) -> std::io::Result<()> {
    let installed = dir.join("var/lib/rpm/Packages");
    if !installed.exists() {
        std::fs::create_dir_all(dir.join("var/lib/rpm"))?;
        std::fs::copy(
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/rpmdb/libuuid/Packages"),
            &installed,
        )?;
    }
    Ok(())
}

/// Where the `yum_primary_db` fuzz target writes its input: Amazon Linux 2's yum cache of a
/// repository, flat, holding its `primary_db` as yum leaves it once read (decompressed).
pub const FUZZ_YUM_DB_FILE: &str = "var/cache/yum/x86_64/2/amzn2-core/fuzz-primary.sqlite";

/// The `repomd.xml` beside it: `primary_db` alone (no XML `primary` to prefer), bzip2ed as
/// yum fetches it, so the reader looks for the decompressed file next to it first.
const FUZZ_YUM_DB_REPOMD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">
  <revision>1796665445</revision>
  <data type="primary_db">
    <location href="repodata/fuzz-primary.sqlite.bz2"/>
    <database_version>10</database_version>
  </data>
</repomd>
"#;

/// Writes one `yum_primary_db` input under `dir`: the whole input is the database
/// ([`FUZZ_YUM_DB_FILE`]), under a fixed `repomd.xml` naming it, over the rpm database of
/// [`write_fuzz_dnf_tree`].
pub fn write_fuzz_yum_db_tree(dir: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    install_fuzz_rpmdb(dir)?;
    let db = dir.join(FUZZ_YUM_DB_FILE);
    let repo = db.parent().unwrap_or(dir);
    std::fs::create_dir_all(repo)?;
    std::fs::write(repo.join("repomd.xml"), FUZZ_YUM_DB_REPOMD)?;
    std::fs::write(db, data)
}

/// Part `i` of `data` ([`fuzz_parts`]) into `dir/files[i]`, every file written (empty when the
/// input has fewer parts).
fn write_fuzz_files(dir: &std::path::Path, files: &[&str], data: &[u8]) -> std::io::Result<()> {
    let parts = fuzz_parts(data);
    for (i, file) in files.iter().enumerate() {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, parts.get(i).copied().unwrap_or_default())?;
    }
    Ok(())
}
