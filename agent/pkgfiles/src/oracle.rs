//! [`PackageOracle`] over the package [`Index`] and the [`transaction`](crate::transaction)
//! detector: what the FIM engine asks about each changed file.
//!
//! The index is re-read when the FIM engine asks (a transaction ended), and on its own when
//! the package databases changed while no transaction was seen (one was missed: a short
//! `dpkg -i` between two looks), checked at most every [`STALE_CHECK`]. Never while a
//! transaction runs: the engine asks for the owners *before* the transaction then.

use crate::index::Index;
use crate::transaction;
use guestward_core::{HostRoot, Problem, Timestamp};
use guestward_fim::package::{
    ChangeOrigin, ExpectedFile, PackageAttribution, PackageOracle, PackageTransaction,
};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How often the databases' modification times are compared with those of the last load.
pub const STALE_CHECK: Duration = Duration::from_secs(2);

/// Files whose change means the index is stale.
const DATABASES: &[&str] = &[
    "/var/lib/dpkg/status",
    "/var/lib/rpm/rpmdb.sqlite",
    "/var/lib/rpm/Packages",
    "/var/lib/rpm/Packages.db",
    "/usr/lib/sysimage/rpm/rpmdb.sqlite",
    "/usr/lib/sysimage/rpm/Packages.db",
];

/// (size, mtime in ns, inode) of each database file present.
type Stamp = Vec<(u64, i128, u64)>;

fn stamp(root: &HostRoot) -> Stamp {
    DATABASES
        .iter()
        .map(|p| match root.symlink_metadata(p) {
            Ok(m) => (m.len(), i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()), m.ino()),
            Err(_) => (0, 0, 0),
        })
        .collect()
}

struct Tracked {
    transaction: Option<PackageTransaction>,
}

/// The package manager of one root, as FIM sees it.
pub struct Oracle {
    root: HostRoot,
    index: RwLock<Arc<Index>>,
    stamp: Mutex<(Stamp, Instant)>,
    tracked: Mutex<Tracked>,
}

impl std::fmt::Debug for Oracle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oracle").field("root", &self.root).finish_non_exhaustive()
    }
}

impl Oracle {
    /// Loads the index of `root`; what could not be read is returned as problems (the rest is
    /// indexed: a damaged `.md5sums` leaves that package's files unverified, not the others).
    pub fn load(root: HostRoot) -> (Self, Vec<Problem>) {
        let s = stamp(&root);
        let (index, problems) = Index::load(&root);
        let oracle = Self {
            root,
            index: RwLock::new(Arc::new(index)),
            stamp: Mutex::new((s, Instant::now())),
            tracked: Mutex::new(Tracked { transaction: None }),
        };
        (oracle, problems)
    }

    /// The index in use now.
    pub fn index(&self) -> Arc<Index> {
        Arc::clone(&self.index.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn reload(&self) -> Vec<Problem> {
        let s = stamp(&self.root);
        let (index, problems) = Index::load(&self.root);
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(index);
        *self.stamp.lock().unwrap_or_else(|e| e.into_inner()) = (s, Instant::now());
        problems
    }

    /// Reloads when the databases changed and no transaction is being tracked.
    fn reload_if_stale(&self) {
        if self.tracked.lock().unwrap_or_else(|e| e.into_inner()).transaction.is_some() {
            return;
        }
        let stale = {
            let mut st = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
            if st.1.elapsed() < STALE_CHECK {
                return;
            }
            st.1 = Instant::now();
            stamp(&self.root) != st.0
        };
        if stale {
            let problems = self.reload();
            tracing::info!(problems = problems.len(), "package databases changed: package index re-read");
        }
    }
}

impl PackageOracle for Oracle {
    fn expected(&self, path: &Path) -> Vec<ExpectedFile> {
        self.reload_if_stale();
        self.index().expected(path)
    }

    fn refresh(&self) -> Result<(), String> {
        let problems = self.reload();
        match problems.first() {
            // Partial: what could be read is indexed; the first problem says what was not.
            Some(p) if problems.len() > 1 => Err(format!("{} (and {} more)", p.message, problems.len() - 1)),
            Some(p) => Err(p.message.clone()),
            None => Ok(()),
        }
    }

    fn verify_under(&self, roots: &[PathBuf]) -> Result<Vec<(PathBuf, PackageAttribution)>, String> {
        use crate::verify::{MismatchKind, Options, Progress, verify};
        let index = self.index();
        let under = |p: &Path| roots.iter().any(|r| p.starts_with(r));
        // Only packages with a file in scope: a FIM policy of /etc does not hash all of /usr.
        let mut names = Vec::new();
        for (id, pkg) in index.packages().iter().enumerate() {
            let Ok(id) = u32::try_from(id) else { break };
            let Ok(m) = index.manifest(id) else { continue };
            let inside = match m.as_ref() {
                crate::Manifest::Dpkg(files) => files.iter().any(|f| under(&index.canon(&f.on_disk))),
                crate::Manifest::Rpm(p) => p.files.iter().any(|f| under(&index.canon(&f.path))),
            };
            if inside && pkg.is_verified() {
                names.push(match &pkg.owner.arch {
                    Some(a) => format!("{}:{a}", pkg.owner.name),
                    None => pkg.owner.name.clone(),
                });
            }
        }
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let opts = Options { packages: names, ..Options::default() };
        let report = verify(&index, &opts, &Progress::default()).map_err(|e| e.to_string())?;
        Ok(report
            .mismatches
            .into_iter()
            .map(|m| (PathBuf::from(&m.path), m))
            .filter(|(p, _)| under(&index.canon(p)) || under(p))
            .map(|(p, m)| {
                let origin = match m.kind {
                    MismatchKind::ConffileChanged => ChangeOrigin::ConffileEdit,
                    MismatchKind::Changed | MismatchKind::Missing => ChangeOrigin::OutsidePackageManager,
                };
                let a = PackageAttribution {
                    owner: m.package,
                    origin,
                    conffile: m.kind == MismatchKind::ConffileChanged,
                    expected: m.expected,
                    actual: m.actual,
                    transaction: None,
                };
                (p, a)
            })
            .collect())
    }

    fn running_transaction(&self) -> Option<PackageTransaction> {
        let observed = transaction::observe(&self.root);
        let mut tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
        match observed {
            None => {
                tracked.transaction = None;
                None
            }
            Some(o) => {
                // One id for as long as it is seen: the FIM groups its changes by it.
                let t = match tracked.transaction.take() {
                    Some(mut t) if t.manager == o.manager => {
                        for e in o.evidence {
                            if t.evidence.len() < 16 && !t.evidence.contains(&e) {
                                t.evidence.push(e);
                            }
                        }
                        t
                    }
                    _ => o.to_transaction(Timestamp::now()),
                };
                tracked.transaction = Some(t.clone());
                Some(t)
            }
        }
    }
}
