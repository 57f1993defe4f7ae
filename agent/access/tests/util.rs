#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The committed fixture tree.
pub fn fixture_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/access/root")
}

/// Whether `tool` runs (`tool` found on PATH or at its usual place).
pub fn find_tool(names: &[&str]) -> Option<PathBuf> {
    for name in names {
        let p = Path::new(name);
        if p.is_absolute() && p.exists() {
            return Some(p.to_path_buf());
        }
        if let Ok(out) = Command::new("sh").arg("-c").arg(format!("command -v {name}")).output()
            && out.status.success()
        {
            let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !s.is_empty() {
                return Some(PathBuf::from(s));
            }
        }
    }
    None
}

/// Runs a command and returns its stdout, panicking with stderr on failure.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `ssh-keygen -q -t TYPE [-b BITS] -N "" -C COMMENT -f PATH`.
pub fn keygen(ssh_keygen: &Path, key_type: &str, bits: Option<u32>, comment: &str, path: &Path) -> bool {
    let mut cmd = Command::new(ssh_keygen);
    cmd.args(["-q", "-t", key_type, "-N", "", "-C", comment, "-f"]).arg(path);
    if let Some(b) = bits {
        cmd.args(["-b", &b.to_string()]);
    }
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

/// A copy of the fixture tree in a temporary directory (so a test can add FIFOs, symlinks...).
pub fn fixture_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    run(Command::new("cp").arg("-a").arg(format!("{}/.", fixture_root().display())).arg(dir.path()));
    dir
}
