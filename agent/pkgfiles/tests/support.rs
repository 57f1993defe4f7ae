//! Shared helpers: the rpm fixture database and running the oracles.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's fixture rpm databases.
pub fn rpm_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/rpmdb").join(name)
}

/// A fresh root holding a copy of the Amazon Linux 2023 rpm database at /var/lib/rpm (rpm
/// writes its -shm/-wal beside the database, so never the fixture itself).
pub fn rpm_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("var/lib/rpm");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::copy(rpm_fixture("amazonlinux2023-plain/rpmdb.sqlite"), db.join("rpmdb.sqlite")).unwrap();
    dir
}

/// Whether `tool --version` runs.
pub fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// `rpm` against the database of `root`.
pub fn rpm(root: &Path) -> Command {
    let mut c = Command::new("rpm");
    c.arg("--root").arg(root).args(["--dbpath", "/var/lib/rpm", "--define", "_db_backend sqlite"]);
    c
}
