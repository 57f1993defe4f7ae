//! Builders for test trees and archives.

use guestward_core::HostRoot;
pub use guestward_core::testing::within;
use guestward_core::{AbsolutePath, Problem};
use guestward_lang::{Config, LangReport};
use std::io::Write;
use std::path::Path;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// A scratch root with a HostRoot on it.
pub struct Tree {
    pub dir: tempfile::TempDir,
    pub root: HostRoot,
}

impl Tree {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path()).unwrap();
        Self { dir, root }
    }

    /// Writes `bytes` at host path `rel` (relative to the root), creating parents.
    pub fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) {
        let path = self.dir.path().join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    pub fn mkdir(&self, rel: &str) {
        std::fs::create_dir_all(self.dir.path().join(rel.trim_start_matches('/'))).unwrap();
    }

    pub fn symlink(&self, target: impl AsRef<Path>, rel: &str) {
        let link = self.dir.path().join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, link).unwrap();
    }

    pub fn scan(&self, config: &Config) -> (LangReport, Vec<Problem>) {
        guestward_lang::scan(&self.root, config)
    }

    /// How a problem names the file at host path `in_root`: its path on this machine (the
    /// scratch directory's), as in every section of a `--root` report.
    pub fn here(&self, in_root: &str) -> String {
        self.root.display(in_root)
    }
}

pub fn paths(list: &[&str]) -> Vec<AbsolutePath> {
    list.iter().map(|p| AbsolutePath::new(*p).unwrap()).collect()
}

/// A config walking only the given roots (Python, Java, Node.js).
pub fn config(python: &[&str], java: &[&str], node: &[&str]) -> Config {
    Config {
        python_roots: paths(python),
        java_roots: paths(java),
        node_roots: paths(node),
        ..Config::without_roots()
    }
}

/// A zip archive from (name, bytes) entries, all stored or all deflated.
pub fn zip_of(entries: &[(&str, Vec<u8>)], method: CompressionMethod) -> Vec<u8> {
    let mut writer = ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(method);
    for (name, bytes) in entries {
        writer.start_file(*name, options).unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

pub const JNDI: &str = "org/apache/logging/log4j/core/lookup/JndiLookup.class";

/// A log4j-core jar as Maven builds it, with or without the JndiLookup class.
pub fn log4j_core_jar(version: &str, with_jndi: bool) -> Vec<u8> {
    let mut entries = vec![
        ("META-INF/MANIFEST.MF", format!("Manifest-Version: 1.0\r\nImplementation-Title: Apache Log4j Core\r\nImplementation-Version: {version}\r\n\r\n").into_bytes()),
        (
            "META-INF/maven/org.apache.logging.log4j/log4j-core/pom.properties",
            format!("#Created by Apache Maven\ngroupId=org.apache.logging.log4j\nartifactId=log4j-core\nversion={version}\n").into_bytes(),
        ),
        ("org/apache/logging/log4j/core/Logger.class", vec![0xca, 0xfe, 0xba, 0xbe, 0, 0, 0, 52]),
    ];
    if with_jndi {
        entries.push((JNDI, vec![0xca, 0xfe, 0xba, 0xbe, 1, 2, 3, 4]));
    }
    zip_of(&entries, CompressionMethod::Deflated)
}

/// A plain library jar identified by pom.properties.
pub fn maven_jar(group: &str, artifact: &str, version: &str) -> Vec<u8> {
    let name = format!("META-INF/maven/{group}/{artifact}/pom.properties");
    let props = format!("groupId={group}\nartifactId={artifact}\nversion={version}\n");
    zip_of(&[(name.as_str(), props.into_bytes())], CompressionMethod::Deflated)
}

impl Tree {
    /// [`Tree::scan`] on its own thread, failing after `secs`.
    pub fn scan_within(&self, secs: u64, config: &Config) -> (LangReport, Vec<Problem>) {
        let root = self.root.clone();
        let config = config.clone();
        within(std::time::Duration::from_secs(secs), "the language scan", move || {
            guestward_lang::scan(&root, &config)
        })
    }

    /// Makes a FIFO at host path `rel`.
    pub fn fifo(&self, rel: &str) {
        let path = self.dir.path().join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    }
}

fn find(bytes: &[u8], magic: &[u8]) -> usize {
    bytes.windows(magic.len()).position(|w| w == magic).unwrap()
}

fn u16_at(bytes: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]))
}

/// A zip whose central directory lists `count` entries named `lib/n<i>.jar`, all pointing at
/// the same local header and deflated data: the simplest overlapping-entries zip bomb (each
/// entry inflates to all of `payload`).
pub fn overlapping_bomb(count: usize, payload: &[u8]) -> Vec<u8> {
    let one = zip_of(&[("lib/n0.jar", payload.to_vec())], CompressionMethod::Deflated);
    let cd = find(&one, b"PK\x01\x02");
    let (name_len, extra_len, comment_len) =
        (u16_at(&one, cd + 28), u16_at(&one, cd + 30), u16_at(&one, cd + 32));
    let fixed = &one[cd..cd + 46];
    let tail = &one[cd + 46 + name_len..cd + 46 + name_len + extra_len + comment_len];
    let mut out = one[..cd].to_vec();
    let cd_start = out.len();
    for i in 0..count {
        let name = format!("lib/n{i}.jar");
        let mut header = fixed.to_vec();
        header[28..30].copy_from_slice(&u16::try_from(name.len()).unwrap().to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(tail);
    }
    let cd_size = out.len() - cd_start;
    let count16 = u16::try_from(count).unwrap();
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&count16.to_le_bytes());
    out.extend_from_slice(&count16.to_le_bytes());
    out.extend_from_slice(&u32::try_from(cd_size).unwrap().to_le_bytes());
    out.extend_from_slice(&u32::try_from(cd_start).unwrap().to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// A zip64 archive of `count` empty central-directory entries (distinct 4-character names, no
/// data, every local header offset 0): about 50 bytes per entry on disk, a few hundred in a
/// zip reader's memory.
pub fn zip64_entries(count: u32) -> Vec<u8> {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    for i in 0..count {
        let mut n = i;
        let mut name = [0u8; 4];
        for c in &mut name {
            *c = DIGITS[usize::try_from(n % 36).unwrap()];
            n /= 36;
        }
        out.extend_from_slice(b"PK\x01\x02");
        out.extend_from_slice(&[20, 0, 20, 0]); // versions
        out.extend_from_slice(&[0; 20]); // flags, method, time, date, crc, sizes
        out.extend_from_slice(&4u16.to_le_bytes()); // name length
        out.extend_from_slice(&[0; 16]); // extra, comment, disk, attributes, local offset
        out.extend_from_slice(&name);
    }
    let cd_size = out.len() as u64;
    let record_at = out.len() as u64;
    out.extend_from_slice(b"PK\x06\x06");
    out.extend_from_slice(&44u64.to_le_bytes());
    out.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // versions, disk numbers
    out.extend_from_slice(&u64::from(count).to_le_bytes());
    out.extend_from_slice(&u64::from(count).to_le_bytes());
    out.extend_from_slice(&cd_size.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(b"PK\x06\x07");
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&record_at.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    out.extend_from_slice(&[0xff; 8]);
    out.extend_from_slice(&[0, 0]);
    out
}

/// Runs the test `name` (its full path in this binary, e.g. `walk::some_test`) again as
/// `nobody` through `setpriv`, for a check root cannot make (root reads a mode-000 directory
/// anyway). Fails unless the child ran exactly that test and it passed.
pub fn rerun_as_nobody(name: &str) {
    let Some(setpriv) = ["/usr/bin/setpriv", "/bin/setpriv"].into_iter().find(|p| Path::new(p).exists())
    else {
        guestward_core::testing::skip_or_fail(name, "running as root without setpriv to drop privileges");
        return;
    };
    // A copy of this binary in a directory `nobody` can enter: the target directory may sit
    // under a home only root can read (CI clones anywhere).
    let bin_dir = tempfile::Builder::new().prefix("gw-as-nobody").tempdir_in("/tmp").unwrap();
    let bin = bin_dir.path().join("tests");
    std::fs::copy(std::env::current_exe().unwrap(), &bin).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for p in [bin_dir.path(), &bin] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut cmd = std::process::Command::new(setpriv);
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["--exact", name, "--test-threads=1"])
        // `nobody` makes its own scratch tree; /tmp is writable by everyone.
        .env("TMPDIR", "/tmp");
    let what = format!("{name} as nobody");
    let out = within(std::time::Duration::from_secs(60), &what, move || cmd.output().unwrap());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(126) || stderr.contains("Permission denied") && !out.status.success() {
        guestward_core::testing::skip_or_fail(name, "`nobody` cannot execute the test binary here");
        return;
    }
    assert!(out.status.success(), "{what} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{what} did not run the test:\n{stdout}\n{stderr}");
}
