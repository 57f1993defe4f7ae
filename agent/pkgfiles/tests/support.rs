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

/// The package oracle `fim init/check` are given (`oneshot::run_packaged`): this crate's, over
/// the databases under `root`.
pub fn oracle_of(
    root: &guestward_core::HostRoot,
) -> Option<std::sync::Arc<dyn guestward_fim::package::PackageOracle>> {
    Some(std::sync::Arc::new(guestward_pkgfiles::Oracle::load(root.clone()).0))
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

/// Asks `index` about each of `paths` the way a single edit does (nothing asked just before)
/// and the way the changes of a transaction do (the same package asked about just before):
/// both must give the same answer. The second way answers from the package's files by path,
/// built once (`Index::lookup`); forgotten, they are built again.
pub fn single_and_repeated_lookups_agree(index: &guestward_pkgfiles::Index, paths: &[&Path]) {
    let mut singles = Vec::new();
    for path in paths {
        index.forget_lookups();
        singles.push(index.expected(path));
    }
    for _ in 0..2 {
        index.forget_lookups();
        for (path, single) in paths.iter().zip(&singles) {
            let first = index.expected(path);
            let again = index.expected(path);
            assert_eq!(&first, single, "{}", path.display());
            assert_eq!(&again, single, "{}", path.display());
        }
    }
}
