//! The engine both the daemon and the one-shot commands drive: scans with a purpose, diffs
//! against the baseline, and turns differences into [`FimChange`]s.

use crate::config::{Attribute, AttributeSet, Config, ConfigError, Policy, Validated};
use crate::events::{Attributes, ChangeKind, FimChange, FoldedParent, Mechanism, escape_path};
use crate::integrity::{BaselineCheck, BaselineKey, Integrity, KeyState};
pub use crate::model::{ChangeCounts, Purpose, ScanSummary};
use crate::record::FileRecord;
use crate::scan::{Rehash, ScanError, ScanOptions, Staging, Target, minimal_roots, stage_with};
use crate::store::{RowFault, SealVerdict, Store, StoreError};
use guestward_core::{HostRoot, Problem, Timestamp};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the engine failed as a whole (single unreadable files are problems, not errors).
#[derive(Debug, thiserror::Error)]
pub enum FimError {
    /// The `[fim]` section is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The baseline store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A scan could not run.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// `check`/`update` without a baseline.
    #[error("no FIM baseline in {}: run `guestward-agent fim init` first", state_dir.display())]
    NoBaseline {
        /// The state directory searched.
        state_dir: PathBuf,
    },
    /// The realtime watcher could not start.
    #[error("cannot start the inotify watcher: {0}")]
    Watcher(String),
    /// Another process scans or changes this baseline, or its lock is unusable.
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    /// `fim init` with a `fim.baseline_key_file` that is set but cannot be used: the baseline
    /// would not be sealed, though the configuration says it must be.
    #[error(
        "fim.baseline_key_file {}: {reason}; the baseline would not be sealed with it: fix the key file \
         (or remove the setting), then run it again",
        path.display()
    )]
    KeyUnusable {
        /// The configured key file.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// A one-shot command was stopped by a signal (Ctrl-C, `systemctl stop`, `timeout`):
    /// nothing was accepted; what `fim init` hashed stays staged for the next run to resume.
    #[error(
        "interrupted by {signal}: nothing was accepted{}",
        if *resumable { "; what was hashed is kept, and `fim init` run again resumes from it" } else { "" }
    )]
    Interrupted {
        /// The signal's name (`SIGINT`).
        signal: String,
        /// Its number, for the conventional exit code 128 + n.
        number: i32,
        /// Whether the next run resumes from the staged work (`fim init`).
        resumable: bool,
    },
}

/// Records one unusable row as a baseline problem naming the path (and the column).
fn row_problem(b: &mut BaselineCheck, table: &str, path: &Path, fault: &RowFault) {
    let shown = escape_path(path);
    let (code, message) = match fault {
        RowFault::Damaged { .. } => {
            b.damaged_rows += 1;
            ("baseline_damaged", format!("{table} row for {shown} {fault}; it was not compared"))
        }
        RowFault::Tampered => {
            b.tampered_rows += 1;
            ("baseline_tampered", format!("baseline tampering: the {table} row for {shown} {fault}"))
        }
    };
    b.problem(Problem::new(code, message).with_path(shown));
}

/// Directories held back at most while a diff streams, waiting to see whether entries were
/// added or removed in them (a few hundred bytes each). Beyond this, a directory whose only
/// change is its timestamps is reported on its own, as before folding existed: memory stays
/// bounded when every directory of a huge tree was touched.
const MAX_HELD_DIRECTORIES: usize = 4096;

/// Folds a directory's mtime/ctime change into the entries added or removed in it, so that
/// `fim check` lists `added /etc/cron.d/job` and not also `modified /etc/cron.d [mtime,
/// ctime]` (AIDE lists both). The diff streams each tree in path order, present rows before
/// removed ones, so a directory always comes before its entries: it is held back when its
/// only differences are its timestamps, and released at the end unless an entry in it turned
/// out to be added, removed or replaced. Nothing is lost: every such entry carries the
/// directory's old and new timestamps in `folded_parent`.
#[derive(Default)]
struct DirFolder {
    held: std::collections::HashMap<String, (FimChange, bool)>,
    folded: u64,
}

impl DirFolder {
    /// Takes a change; returns it when it is to be reported now (`None`: held back).
    fn offer(&mut self, mut c: FimChange) -> Option<FimChange> {
        if c.is_directory_timestamps_only() && self.held.len() < MAX_HELD_DIRECTORIES {
            self.held.insert(c.path.clone(), (c, false));
            return None;
        }
        if c.changes_directory_entries() {
            // Escaped paths keep their `/` (only `\`, control and non-UTF-8 bytes are escaped).
            let parent = c.path.rfind('/').map(|i| if i == 0 { "/" } else { &c.path[..i] });
            if let Some((dir, folded)) = parent.and_then(|p| self.held.get_mut(p)) {
                if !*folded {
                    *folded = true;
                    self.folded += 1;
                }
                c.folded_parent =
                    Some(FoldedParent { path: dir.path.clone(), attributes: dir.value_changes() });
            }
        }
        Some(c)
    }

    /// The held directories no entry explained, in path order.
    fn finish(&mut self) -> Vec<FimChange> {
        let mut out: Vec<FimChange> =
            self.held.drain().filter(|(_, (_, folded))| !folded).map(|(_, (c, _))| c).collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }
}

/// Which trees a scan covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every rule.
    All,
    /// These host paths (tree roots or directories inside them) and everything below.
    Trees(Vec<PathBuf>),
}

/// Page cache of the connection that counts the baseline's rows during a check, KiB: it reads
/// each page once, so a cache would only hold pages it will not read again.
const COUNT_CACHE_KIB: u32 = 64;
const META_IN_PROGRESS: &str = "scan.in_progress";
const META_LAST_SCAN: &str = "scan.last";
const META_BASELINE: &str = "baseline.completed_at";

/// The FIM report of a stored baseline (see [`crate::FimReport::from_state_dir`]); `None`
/// when there is no baseline and none is being built. Reads only.
pub fn summarize_store(store: &Store) -> Result<Option<crate::report::FimReport>, StoreError> {
    use crate::model::{ScanOutcome, Verification};
    use crate::report::{BaselineState, FimReport};
    let completed = store.meta(META_BASELINE)?.and_then(|s| s.parse::<jiff::Timestamp>().ok()).map(Timestamp);
    let baseline = match completed {
        Some(completed_at) => BaselineState::Complete { completed_at },
        None => {
            // An interrupted `init` (or the daemon's first baseline, in progress or killed).
            let building = store
                .meta(META_IN_PROGRESS)?
                .and_then(|k| serde_json::from_str::<serde_json::Value>(&k).ok())
                .is_some_and(|k| k["purpose"] == "init");
            if !building {
                return Ok(None);
            }
            BaselineState::Building { progress: None, entries_staged: Some(store.staged_count()?) }
        }
    };
    let last: Option<ScanSummary> = store.meta(META_LAST_SCAN)?.and_then(|s| serde_json::from_str(&s).ok());
    let last_verification = last.map(|s| Verification {
        purpose: s.purpose,
        trees: s.trees,
        finished: s.finished,
        duration_ms: s.stats.duration_ms,
        outcome: if s.stats.cancelled { ScanOutcome::Cancelled } else { ScanOutcome::Completed },
        changes: s.changes,
        counts: Some(s.counts),
        error: None,
        baseline_integrity: Some(s.baseline.integrity),
    });
    Ok(Some(FimReport {
        baseline,
        entries: store.file_count()?,
        monitor: None,
        watches_granted: 0,
        watches_wanted: 0,
        watch_budget: 0,
        rescan_only_trees: Vec::new(),
        last_verification,
        open_gaps: Vec::new(),
        store_write_failures_total: 0,
        store_read_failures_total: 0,
        event_store_failures_total: 0,
        watcher_errors_total: 0,
        attribution: None,
    }))
}

/// The engine over one policy, host root and state directory.
#[derive(Debug, Clone)]
pub struct Fim {
    /// The section as configured.
    pub config: Config,
    /// The validated policy.
    pub policy: Policy,
    /// Where host files are read.
    pub root: HostRoot,
    /// Where `fim.db` lives.
    pub state_dir: PathBuf,
    /// The baseline key (`fim.baseline_key_file`), or why there is none.
    pub key: KeyState,
    /// The package manager, when the agent gave one ([`Self::with_packages`]): changes to
    /// package files are attributed (see [`crate::attribution`]).
    pub packages: Option<crate::attribution::Packages>,
}

/// The trust anchor's verdict on a scan, with the package databases' stamp it holds for.
struct Judged {
    databases: [u8; 32],
    verdict: crate::verdict::Verdict,
    /// Taken from the baseline (see [`crate::verdict`]), not judged now.
    reused: bool,
}

/// What the trust anchor is told of the scan's reads.
struct ScanRead {
    /// The scan left entries identical to their baseline row unstaged.
    unstaged_in_baseline: bool,
    /// The MD5s it took, or carried over from trusted baseline rows.
    md5s: crate::scanned::SealedMd5s,
}

/// What a scan the trust anchor runs for does with MD5s: takes them of the files the package
/// oracle says a package lists with one, and remembers each taken or carried over from a
/// trusted baseline row, for the anchor to judge those files by (see
/// [`crate::scanned::ScannedMd5s`]).
struct AnchorMd5s<'a> {
    oracle: Option<&'a dyn crate::package::PackageOracle>,
    taken: crate::scanned::ScannedMd5s,
}

impl crate::scan::Md5Wanted for AnchorMd5s<'_> {
    fn wants(&self, host: &Path) -> bool {
        self.oracle.is_some_and(|o| o.wants_md5(host))
    }

    fn taken(&self, host: &Path, md5: &[u8; 16]) {
        self.taken.remember(host, md5);
    }

    fn carried(&self, host: &Path, md5: &[u8; 16]) {
        self.taken.remember(host, md5);
    }
}

impl Fim {
    /// Validates `config` and binds it to a root and state directory. The baseline key is
    /// loaded when configured; a key that cannot be used is not an error here (checks report
    /// the baseline as unverified, with the reason).
    pub fn new(config: Config, root: HostRoot, state_dir: impl Into<PathBuf>) -> Result<Self, FimError> {
        let state_dir = state_dir.into();
        let validated = config.check(&state_dir)?;
        Ok(Self::from_validated(validated, root, state_dir))
    }

    /// Binds a section already checked by [`Config::check`] (the daemon's config load) to a root
    /// and state directory, running on the policy compiled there: validation and use are one
    /// compilation, so they cannot disagree. `state_dir` must be the one it was checked against.
    pub fn from_validated(validated: Validated, root: HostRoot, state_dir: impl Into<PathBuf>) -> Self {
        let (config, mut policy) = validated.into_parts();
        let key = KeyState::load(config.baseline_key_file.as_ref().map(|p| p.as_path()));
        policy.baseline_key = key.key().cloned();
        Self { config, policy, root, state_dir: state_dir.into(), key, packages: None }
    }

    /// Attributes changes to package files with `oracle` (the agent builds it over the same
    /// root): the crate knows only the trait.
    pub fn with_packages(mut self, oracle: Arc<dyn crate::package::PackageOracle>) -> Self {
        self.packages = Some(crate::attribution::Packages(oracle));
        self
    }

    /// Creates the configured baseline key when it is absent (`fim init`), returning its path
    /// if it was created. A key that cannot be created is kept as the reason the baseline is
    /// not sealed.
    pub fn create_key_if_missing(&mut self) -> Option<PathBuf> {
        let KeyState::Unavailable { path, missing: true, .. } = &self.key else { return None };
        let path = path.clone();
        match BaselineKey::create(&path) {
            Ok(k) => {
                let k = Arc::new(k);
                self.policy.baseline_key = Some(Arc::clone(&k));
                self.key = KeyState::Loaded(k);
                Some(path)
            }
            Err(e) => {
                self.key =
                    KeyState::Unavailable { path, reason: format!("cannot create it: {e}"), missing: true };
                None
            }
        }
    }

    /// The configured baseline key, when it is set but cannot be used.
    pub fn unusable_key(&self) -> Option<FimError> {
        match &self.key {
            KeyState::Unavailable { path, reason, .. } => {
                Some(FimError::KeyUnusable { path: path.clone(), reason: reason.clone() })
            }
            _ => None,
        }
    }

    /// Opens the store, sealing and verifying with the baseline key when there is one.
    pub fn store(&self) -> Result<Store, StoreError> {
        Store::open_keyed(&self.state_dir, self.policy.baseline_key.clone())
    }

    /// When the baseline was last completed, if ever.
    pub fn baseline_time(&self) -> Result<Option<Timestamp>, StoreError> {
        Ok(self.store()?.meta(META_BASELINE)?.and_then(|s| s.parse::<jiff::Timestamp>().ok()).map(Timestamp))
    }

    /// The last finished scan.
    pub fn last_scan(&self) -> Result<Option<ScanSummary>, StoreError> {
        Ok(self.store()?.meta(META_LAST_SCAN)?.and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// Targets and diff roots of a scope. Nested rules below a scoped tree are included so
    /// that their records are not mistaken for removed ones.
    pub fn resolve_scope(&self, scope: &Scope) -> (Vec<Target>, Vec<PathBuf>) {
        let all = self.policy.targets(&self.root);
        match scope {
            Scope::All => {
                let roots = self
                    .policy
                    .rules
                    .iter()
                    .map(|r| if r.is_pattern() { Policy::literal_prefix(r) } else { r.pattern.clone() })
                    .collect();
                (all, minimal_roots(roots))
            }
            Scope::Trees(paths) => {
                let roots = minimal_roots(paths.clone());
                let mut targets = Vec::new();
                for p in &roots {
                    if !all.iter().any(|t| &t.host == p)
                        && let Some(rule) = self.policy.governing(p)
                    {
                        targets.push(Target { host: p.clone(), rule: rule.index });
                    }
                    targets.extend(all.iter().filter(|t| t.host.starts_with(p)).cloned());
                }
                (targets, roots)
            }
        }
    }

    /// Scans `scope` for `purpose`, passing each change to `on_change` (streamed from SQLite:
    /// nothing proportional to the tree is held in memory). An interrupted scan with the same
    /// purpose and scope is resumed.
    pub fn scan(
        &self,
        purpose: Purpose,
        scope: &Scope,
        mechanism: Mechanism,
        opts: &ScanOptions<'_>,
        on_change: &mut dyn FnMut(FimChange),
    ) -> Result<ScanSummary, FimError> {
        let mut store = self.store()?;
        if purpose != Purpose::Init && store.meta(META_BASELINE)?.is_none() {
            return Err(FimError::NoBaseline { state_dir: self.state_dir.clone() });
        }
        let (targets, roots) = self.resolve_scope(scope);
        // Metadata first (a first baseline has nothing to reuse): see `scan::stage_with`.
        let fast = opts.rehash == Rehash::Changed && purpose != Purpose::Init;
        let opts = &ScanOptions { rehash: if fast { Rehash::Changed } else { Rehash::All }, ..*opts };
        // The policy is part of the key: rows staged under other rules (other attributes,
        // excludes, size cap) are not what this scan would record. The trees and the policy
        // are also what the trust anchor's verdict is about (see `crate::verdict`).
        let mut key = serde_json::json!({
            "roots": roots.iter().map(|r| escape_path(r)).collect::<Vec<_>>(),
            "policy": self.policy_fingerprint(),
        });
        let anchor_scope = key.to_string();
        key["purpose"] = serde_json::to_value(purpose).unwrap_or_default();
        if fast {
            key["rehash"] = "changed".into();
        }
        let key = key.to_string();
        // A metadata-first scan is cheap to run again and stages only what changed: never
        // resumed.
        let resume = !fast && store.meta(META_IN_PROGRESS)?.as_deref() == Some(key.as_str());
        if resume {
            store.begin_resume()?;
        } else {
            store.clear_staging()?;
            store.set_meta(META_IN_PROGRESS, &key)?;
        }
        // Only what differs from the baseline is staged (a first baseline stages everything, a
        // resumed scan continues as it began): see `scan::Staging`. An init of every tree over
        // a baseline already there is an update that also drops the rows of trees no longer
        // configured and seals anew (`Store::replace_changed`): the baseline it leaves is the
        // one a full replacement would, but only what changed is written.
        let over_baseline =
            purpose == Purpose::Init && *scope == Scope::All && store.meta(META_BASELINE)?.is_some();
        let staging = if resume || (purpose == Purpose::Init && !over_baseline) {
            Staging::All
        } else {
            Staging::Changes
        };
        // The trust anchor runs after a full rehash of every tree (see below): that scan takes
        // the MD5 of the dpkg files in its own read, so the anchor reads none of them again.
        let anchored = *scope == Scope::All && !fast;
        let oracle = self.packages.as_ref().filter(|_| anchored).map(|p| Arc::clone(&p.0));
        // The rows a check compares are the baseline at this generation (see `crate::verdict`;
        // unknown: no verdict is kept).
        let generation_at_start = oracle.as_ref().and_then(|_| store.generation().ok());
        let md5s = AnchorMd5s { oracle: oracle.as_deref(), taken: crate::scanned::ScannedMd5s::new() };
        let md5: Option<crate::scan::WantsMd5<'_>> = oracle.is_some().then_some(&md5s);
        // Whether the pass met every baseline row of the trees is told by their count (below),
        // a pass over those rows: taken alongside the scan, on a connection of its own, instead
        // of after it. If that thread cannot start or its count fails, they are counted after
        // the scan as before. Only for a scan of every tree: a scoped rescan (a new directory)
        // counts a handful of rows, less than a thread and a connection cost.
        let (first, counted) = std::thread::scope(|s| {
            let counting = (staging == Staging::Changes && *scope == Scope::All)
                .then(|| {
                    std::thread::Builder::new()
                        .name("fim-count".into())
                        .spawn_scoped(s, || self.count_every_tree(&roots))
                        .ok()
                })
                .flatten();
            let first =
                stage_with(&self.policy, &self.root, &self.state_dir, &targets, resume, opts, staging, md5);
            (first, counting.and_then(|h| h.join().ok()))
        });
        let first = first?;
        let mut stats = first.stats;
        // Complete when every baseline row of the trees was met by the walk. Otherwise
        // something was removed (or not reached, or is governed no more) and the diff needs
        // every entry staged to see it: the unchanged ones are staged too, metadata first
        // (what the first pass staged stays: it was read then).
        let mut pruned = staging == Staging::Changes;
        let met_every_row = |found: Option<u64>| -> Result<bool, FimError> {
            let within = match counted {
                Some(Ok(n)) => n,
                // Its own connection failed (or the thread did not run): count here.
                Some(Err(_)) | None if *scope == Scope::All => store.count_within_most(&roots)?,
                Some(Err(_)) | None => store.count_within(&roots)?,
            };
            Ok(found == Some(within))
        };
        if pruned && !stats.cancelled && !met_every_row(first.found)? {
            if first.pruned > 0 {
                let fill_opts = ScanOptions { rehash: Rehash::Changed, ..*opts };
                let again = stage_with(
                    &self.policy,
                    &self.root,
                    &self.state_dir,
                    &targets,
                    false,
                    &fill_opts,
                    Staging::FillIn,
                    None,
                )?;
                let a = again.stats;
                stats.entries = a.entries;
                stats.files_hashed = stats.files_hashed.saturating_add(a.files_hashed);
                stats.bytes_hashed = stats.bytes_hashed.saturating_add(a.bytes_hashed);
                stats.duration_ms = stats.duration_ms.saturating_add(a.duration_ms);
                stats.cancelled = a.cancelled;
                stats.problem_count = stats.problem_count.saturating_add(a.problem_count);
            }
            pruned = false;
        }
        let trees = roots.iter().map(|r| escape_path(r)).collect();
        if stats.cancelled {
            return Ok(ScanSummary {
                purpose,
                trees,
                stats,
                changes: 0,
                counts: ChangeCounts::default(),
                baseline: BaselineCheck::default(),
                finished: Timestamp::now(),
            });
        }
        let mut changes = 0u64;
        let mut counts = ChangeCounts::default();
        let mut folder = DirFolder::default();
        let mut emit = |c: FimChange| {
            changes += 1;
            counts.count(c.change);
            on_change(c);
        };
        let mut baseline = BaselineCheck::default();
        // Asked once per scan, at its first change (a scan is short next to a transaction's
        // quiet time): a check that finds none reads nothing of /proc for it.
        let transaction = std::cell::OnceCell::new();
        let transaction =
            || transaction.get_or_init(|| self.packages.as_ref().and_then(|p| p.0.running_transaction()));
        if purpose != Purpose::Init {
            store.diff_with(&roots, !pruned, |item| {
                let mut faulty = false;
                for (table, fault) in [("baseline", &item.old_fault), ("staged", &item.new_fault)] {
                    if let Some(fault) = fault {
                        faulty = true;
                        row_problem(&mut baseline, table, &item.path, fault);
                    }
                }
                // A row that cannot be trusted is compared with nothing: its problem says why.
                if faulty {
                    return;
                }
                if let Some(c) = self.change_of(&item.path, item.old.as_ref(), item.new.as_ref(), mechanism)
                    && let Some(c) = folder.offer(self.attributed(&item.path, c, transaction().as_ref()))
                {
                    emit(c);
                }
            })?;
            // Directories held back and not folded were changed on their own: reported now.
            for c in folder.finish() {
                emit(c);
            }
            if let Some(p) = &self.packages {
                p.0.forget_lookups();
            }
            // The row set is verified on full scans only: it costs a pass over every row's
            // MAC, too much for the scoped rescans a new directory triggers.
            self.judge(&store, *scope == Scope::All, &mut baseline)?;
        }
        // A metadata-first check trusts unchanged metadata, so it hashes no package file
        // either: the trust anchor runs with every full rehash (init, `check` without
        // `--fast`, the daemon's start and its full-rehash schedule).
        //
        // A check that staged nothing and met every baseline row found every file as the
        // baseline records it: when the package databases are as they were too, the verdict
        // kept with the baseline is this check's (see `crate::verdict`).
        // So did an `init` over a baseline that staged nothing and met every row (its lookups
        // verified each row with the key, if there is one; a row that fails is staged).
        // Asked only of a scan the anchor runs for; a count that fails is no proof (the anchor
        // then judges).
        let unchanged = oracle.is_some()
            && pruned
            && matches!(store.staged_count(), Ok(0))
            && match purpose {
                Purpose::Check => {
                    changes == 0
                        && baseline.damaged_rows == 0
                        && baseline.tampered_rows == 0
                        && matches!(baseline.integrity, Integrity::Verified | Integrity::Unverified)
                }
                Purpose::Init => over_baseline && stats.problem_count == 0,
                _ => false,
            };
        let mut judged = None;
        if anchored {
            let scanned = ScanRead { unstaged_in_baseline: pruned, md5s: md5s.taken.sealed() };
            judged = self.anchor(&store, &roots, &anchor_scope, unchanged, scanned, &mut baseline);
        }
        match purpose {
            Purpose::Init if over_baseline && staging == Staging::Changes => {
                store.replace_changed(&roots, !pruned)?
            }
            Purpose::Init if *scope == Scope::All => store.replace_all()?,
            Purpose::Check => store.clear_staging()?,
            _ => store.apply_with(&roots, !pruned)?,
        }
        store.clear_resume()?;
        match purpose {
            Purpose::Init => self.sealed(&mut baseline),
            // `update` of every tree accepts the current state, seal included (also the way to
            // seal a baseline built before the key existed).
            Purpose::Update if *scope == Scope::All => {
                store.reseal()?;
                if let Some(k) = self.key.key() {
                    baseline
                        .detail
                        .push_str(&format!("; the accepted state is now sealed with key {}", k.id()));
                }
            }
            _ => {}
        }
        // The verdict is kept when the baseline now holds what it judged: a new baseline of
        // every tree, every tree's state accepted, or a check that found it unchanged.
        if let Some(Judged { databases, verdict, reused }) = judged {
            let generation = match purpose {
                Purpose::Init | Purpose::Update if *scope == Scope::All => store.generation_written(),
                // Kept already, for this very generation.
                Purpose::Check if unchanged && !reused => generation_at_start,
                _ => None,
            };
            if let Some(generation) = generation {
                let inputs =
                    crate::verdict::Inputs { generation, scope: &anchor_scope, databases: &databases };
                // Only a cache: a verdict not kept costs the next check the anchor's time.
                let _ = crate::verdict::keep(&store, self.key.key().map(AsRef::as_ref), inputs, &verdict);
            }
        }
        baseline.grade();
        let now = Timestamp::now();
        if matches!(purpose, Purpose::Init | Purpose::Update) {
            store.set_meta(META_BASELINE, &now.to_string())?;
        }
        store.clear_meta(META_IN_PROGRESS)?;
        counts.folded_directories = folder.folded;
        let summary = ScanSummary { purpose, trees, stats, changes, counts, baseline, finished: now };
        store.set_meta(META_LAST_SCAN, &serde_json::to_string(&summary).unwrap_or_default())?;
        Ok(summary)
    }

    /// Baseline rows within `roots`, every configured tree, on a connection of its own with a
    /// small page cache (it runs beside a scan's lookups: see [`Self::scan`]).
    fn count_every_tree(&self, roots: &[PathBuf]) -> Result<u64, StoreError> {
        let store = self.store()?;
        store.set_cache_kib(COUNT_CACHE_KIB)?;
        store.count_within_most(roots)
    }

    /// The baseline's trust anchor: package files in scope that do not match their package
    /// (a baseline taken on a compromised machine would otherwise accept a replaced binary).
    /// `scanned`: what the scan that just ran read, for judging package files by it.
    ///
    /// Returns the verdict with the package databases' stamp it holds for, when the stamp was
    /// the same before and after (see [`crate::verdict`]), for keeping with the baseline.
    fn verify_packages(&self, roots: &[PathBuf], scanned: ScanRead, b: &mut BaselineCheck) -> Option<Judged> {
        let p = self.packages.as_ref()?;
        let started = std::time::Instant::now();
        let stamp_before = p.0.databases_stamp();
        let known = crate::scanned::ScannedContent::new(
            &self.state_dir,
            self.policy.baseline_key.clone(),
            scanned.unstaged_in_baseline,
        )
        .with_md5s(scanned.md5s);
        match p.0.verify_under(roots, &known) {
            Ok(crate::package::PackageVerification { mismatches: mut found, unread, unread_count }) => {
                // The threads find them in no set order: the ones listed are the first in path
                // order, the same ones in every report of the same state.
                found.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                let mut n = 0u64;
                let mut conffiles = 0u64;
                for (path, a) in found {
                    // Excluded from FIM's policy: not in scope.
                    if self.policy.governing(&path).is_none() {
                        continue;
                    }
                    n += 1;
                    if a.origin == crate::package::ChangeOrigin::ConffileEdit {
                        conffiles += 1;
                    }
                    if b.package_mismatches.len() < crate::package::MAX_REPORTED_OUTSIDE {
                        b.package_mismatches.push(crate::package::OutsideChange {
                            path: escape_path(&path),
                            package: a,
                            seen: Timestamp::now(),
                            at_baseline: true,
                        });
                    }
                }
                b.package_mismatch_count = n;
                // Conffiles are named apart: edited or removed, they are the administrator's
                // (lower severity, and alone they leave `fim init` at exit 0).
                let of_which = match conffiles {
                    0 => String::new(),
                    c if c == n => " (conffiles edited or removed)".to_string(),
                    c => format!(" ({c} of them conffiles edited or removed)"),
                };
                // What could not be read of the package databases leaves its files unverified:
                // said, and each named, so that "0 do not match" is never claimed of them.
                let unverified = match unread_count {
                    0 => String::new(),
                    n => format!(
                        "; {} of the package databases could not be read, so the files {} not verified \
                         (`guestward-agent fim verify-packages` names each)",
                        guestward_core::text::counted(n, "part", "parts"),
                        if n == 1 { "it describes were" } else { "they describe were" }
                    ),
                };
                for problem in unread {
                    b.problem(Problem { code: crate::model::PACKAGES_UNVERIFIED.to_string(), ..problem });
                }
                b.package_verification = Some(format!(
                    "package files in scope verified against their packages in {:.1} s: {n} do not match{of_which}{unverified}",
                    started.elapsed().as_secs_f64()
                ));
                // A verdict with parts unread is not kept: the next full check says so again.
                if unread_count > 0 {
                    return None;
                }
                let stamp = stamp_before.filter(|s| p.0.databases_stamp().as_ref() == Some(s))?;
                let verdict = crate::verdict::Verdict {
                    count: n,
                    listed: b.package_mismatches.clone(),
                    judged: Timestamp::now(),
                };
                Some(Judged { databases: stamp, verdict, reused: false })
            }
            Err(e) => {
                b.package_verification = Some(format!("{}: {e}", crate::model::PACKAGES_NOT_VERIFIED));
                None
            }
        }
    }

    /// The trust anchor of a full scan: the verdict kept with the baseline when this scan
    /// found it `unchanged` and the package databases are as they were when it was judged,
    /// else [`Self::verify_packages`]. Either is returned, for keeping with the baseline.
    fn anchor(
        &self,
        store: &Store,
        roots: &[PathBuf],
        scope: &str,
        unchanged: bool,
        scanned: ScanRead,
        b: &mut BaselineCheck,
    ) -> Option<Judged> {
        let p = self.packages.as_ref()?;
        if unchanged && let Some(stamp) = p.0.databases_stamp() {
            let key = self.key.key().map(AsRef::as_ref);
            // A kept verdict that cannot be read is none: the anchor judges.
            if let Ok(Some(v)) = crate::verdict::kept(store, key, scope, &stamp) {
                b.package_mismatch_count = v.count;
                // To the second: the verdict's own time says when it was judged, not how exactly.
                let judged = v.judged.human();
                b.package_verification = Some(format!(
                    "package files in scope: {} do not match their packages (verdict of {judged} kept with the baseline: files and package databases unchanged since)",
                    v.count
                ));
                b.package_mismatches = v.listed.clone();
                return Some(Judged { databases: stamp, verdict: v, reused: true });
            }
        }
        self.verify_packages(roots, scanned, b)
    }

    /// `c` with its package attribution, when a package owns `host` (see
    /// [`crate::attribution`]); unchanged without an oracle.
    pub fn attributed(
        &self,
        host: &Path,
        mut c: FimChange,
        transaction: Option<&crate::package::PackageTransaction>,
    ) -> FimChange {
        if let Some(p) = &self.packages
            && !c.is_directory_timestamps_only()
        {
            c.package = crate::attribution::attribute_now(p.0.as_ref(), &self.root, host, &c, transaction);
        }
        c
    }

    /// Short digest of what decides the records a scan writes (paths, rules, size cap, hashes).
    fn policy_fingerprint(&self) -> String {
        use sha2::Digest;
        let c = &self.config;
        let text = serde_json::json!([c.paths, c.max_file_size_bytes, c.blake3]).to_string();
        crate::record::hex(sha2::Sha256::digest(text.as_bytes()).get(..8).unwrap_or_default())
    }

    /// Why rows are not verified, when they are not.
    fn unverified_reason(&self) -> Option<String> {
        match &self.key {
            KeyState::NotConfigured => Some(
                "no fim.baseline_key_file is configured: a baseline row rewritten outside the agent would not be noticed"
                    .to_string(),
            ),
            KeyState::Unavailable { path, reason, .. } => Some(format!(
                "the baseline key {} is configured but cannot be used ({reason}): rows cannot be verified; restore the key file",
                path.display()
            )),
            KeyState::Loaded(_) => None,
        }
    }

    /// The verdict of an `init`: sealed with the key, or why not.
    fn sealed(&self, b: &mut BaselineCheck) {
        match (&self.key, self.unverified_reason()) {
            (KeyState::Loaded(k), _) => {
                b.integrity = Integrity::Sealed;
                b.key_id = Some(k.id().to_string());
                b.detail = format!("key {} from {}", k.id(), k.path().display());
            }
            (_, reason) => {
                b.integrity = Integrity::Unverified;
                b.detail = format!("not sealed: {}", reason.unwrap_or_default());
            }
        }
    }

    /// Sets the integrity verdict of a compared baseline from the key, the row-set seal (when
    /// `whole`) and the row faults already counted in `b`.
    fn judge(&self, store: &Store, whole: bool, b: &mut BaselineCheck) -> Result<(), StoreError> {
        let db = self.state_dir.join(crate::store::DB_FILE).display().to_string();
        let Some(key) = self.key.key() else {
            // A key that is configured but cannot be used is no mere lack of a key: the
            // operator relies on rows being verified, and a planted row would now read as an
            // ordinary change. The baseline cannot be relied on (exit 2), as when it is not
            // sealed with the configured key.
            let (integrity, code) = match &self.key {
                KeyState::Unavailable { .. } => (Integrity::Unsealed, "baseline_unsealed"),
                _ => (Integrity::Unverified, "baseline_unverified"),
            };
            b.integrity = integrity;
            b.detail = self.unverified_reason().unwrap_or_default();
            b.problem(Problem::new(code, b.detail.clone()).with_path(db));
            return Ok(());
        };
        b.key_id = Some(key.id().to_string());
        let verdict = if whole { store.verify_seal()? } else { store.verify_seal_record()? };
        let set_ok = matches!(verdict, SealVerdict::Valid { .. });
        let (integrity, detail) = match verdict {
            SealVerdict::NoKey => (Integrity::Unverified, self.unverified_reason().unwrap_or_default()),
            SealVerdict::Absent => (
                Integrity::Unsealed,
                format!(
                    "the baseline carries no seal although key {} is configured (built before the key existed, or the seal was removed): rows cannot be verified; `guestward-agent fim update` seals the current state",
                    key.id()
                ),
            ),
            SealVerdict::Foreign { key_id } => (
                Integrity::Unsealed,
                format!(
                    "the baseline was sealed with key {key_id}, but {} holds key {}: rows cannot be verified (restore that key, or accept the current state with `guestward-agent fim update`)",
                    key.path().display(),
                    key.id()
                ),
            ),
            SealVerdict::BadTag => (
                Integrity::Tampered,
                "the baseline's seal record does not verify with the key: it was rewritten outside the agent"
                    .to_string(),
            ),
            SealVerdict::Mismatch { rows_now, rows_sealed } => (
                Integrity::Tampered,
                format!(
                    "the baseline's rows do not match its seal ({rows_now} rows, {rows_sealed} sealed): rows were added, removed or replaced outside the agent"
                ),
            ),
            SealVerdict::Valid { .. } if b.tampered_rows > 0 => (
                Integrity::Tampered,
                format!(
                    "{} baseline row(s) do not match their seal: rewritten outside the agent",
                    b.tampered_rows
                ),
            ),
            SealVerdict::Valid { rows } if whole => {
                (Integrity::Verified, format!("all {rows} rows match the seal of key {}", key.id()))
            }
            SealVerdict::Valid { .. } => {
                (Integrity::Verified, format!("every row compared matches its seal (key {})", key.id()))
            }
        };
        b.integrity = integrity;
        b.detail = detail;
        let code = match integrity {
            Integrity::Tampered => Some("baseline_tampered"),
            Integrity::Unsealed => Some("baseline_unsealed"),
            Integrity::Unverified => Some("baseline_unverified"),
            _ => None,
        };
        // Tampering found only row by row is already listed path by path.
        if let Some(code) = code
            && !(set_ok && integrity == Integrity::Tampered)
        {
            b.problem(Problem::new(code, b.detail.clone()).with_path(db));
        }
        Ok(())
    }

    /// The change between a baseline record and a current one, if any checked attribute
    /// differs. `None` for paths no rule governs any more.
    pub fn change_of(
        &self,
        path: &Path,
        old: Option<&FileRecord>,
        new: Option<&FileRecord>,
        mechanism: Mechanism,
    ) -> Option<FimChange> {
        let rule = self.policy.governing(path)?;
        let (change, changed) = match (old, new) {
            (None, None) => return None,
            (None, Some(_)) => (ChangeKind::Added, Vec::new()),
            (Some(_), None) => (ChangeKind::Removed, Vec::new()),
            (Some(o), Some(n)) => {
                let d = o.diff(n, rule.attributes);
                if d.is_empty() {
                    return None;
                }
                (ChangeKind::Modified, d)
            }
        };
        Some(
            FimChange {
                path: escape_path(path),
                old_path: None,
                change,
                changed,
                old: old.map(Attributes::from),
                new: new.map(Attributes::from),
                mechanism,
                rule: escape_path(&rule.pattern),
                transient: None,
                attributes: Vec::new(),
                folded_parent: None,
                package: None,
            }
            .with_values(),
        )
    }

    /// Stored events (`fim.change`, `coverage.gap`) at or after `since`, oldest first, at most
    /// `limit`: the data of `agentctl fim events --since`.
    pub fn events_since(
        &self,
        since: Timestamp,
        limit: usize,
    ) -> Result<Vec<guestward_core::Event>, FimError> {
        Ok(self.store()?.events_since(since, limit)?)
    }

    /// The attribute set governing `path` (the default set when none does).
    pub fn attributes_for(&self, path: &Path) -> AttributeSet {
        self.policy
            .governing(path)
            .map(|r| r.attributes)
            .unwrap_or_else(|| AttributeSet::of(Attribute::DEFAULT))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::package::{
        ChangeOrigin, ExpectedFile, KnownContent, PackageAttribution, PackageManager, PackageOracle,
        PackageOwner, PackageTransaction,
    };

    /// Every one of its files mismatches (with `present_only`, those that exist), found in
    /// reverse path order; the databases' stamp is what the test sets, and the anchor's runs
    /// are counted.
    struct AllMismatch {
        files: Vec<PathBuf>,
        present_only: bool,
        stamp: std::sync::Mutex<Option<[u8; 32]>>,
        runs: std::sync::atomic::AtomicUsize,
    }

    impl AllMismatch {
        fn new(files: Vec<PathBuf>, present_only: bool, stamp: Option<[u8; 32]>) -> Arc<Self> {
            Arc::new(Self {
                files,
                present_only,
                stamp: std::sync::Mutex::new(stamp),
                runs: Default::default(),
            })
        }
    }

    impl PackageOracle for AllMismatch {
        fn expected(&self, _: &Path) -> Vec<ExpectedFile> {
            Vec::new()
        }
        fn refresh(&self) -> Result<(), String> {
            Ok(())
        }
        fn running_transaction(&self) -> Option<PackageTransaction> {
            None
        }
        fn verify_under(
            &self,
            _: &[PathBuf],
            _: &dyn KnownContent,
        ) -> Result<crate::package::PackageVerification, String> {
            self.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let owner = PackageOwner {
                manager: PackageManager::Dpkg,
                name: "p".into(),
                version: "1".into(),
                arch: None,
            };
            let mismatches = self
                .files
                .iter()
                .rev()
                .filter(|p| !self.present_only || p.exists())
                .map(|p| {
                    let a = PackageAttribution {
                        owner: owner.clone(),
                        origin: ChangeOrigin::OutsidePackageManager,
                        conffile: false,
                        expected: None,
                        actual: None,
                        transaction: None,
                    };
                    (p.clone(), a)
                })
                .collect();
            Ok(crate::package::PackageVerification { mismatches, ..Default::default() })
        }
        fn databases_stamp(&self) -> Option<[u8; 32]> {
            *self.stamp.lock().unwrap()
        }
    }

    /// More mismatches than a report lists: all are counted, and the ones listed are the
    /// first in path order, whatever order the anchor's threads found them in.
    #[test]
    fn the_package_mismatches_listed_are_the_first_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("t");
        std::fs::create_dir(&tree).unwrap();
        let paths: Vec<PathBuf> =
            (0..crate::package::MAX_REPORTED_OUTSIDE + 10).map(|i| tree.join(format!("f{i:03}"))).collect();
        let config = Config {
            paths: vec![crate::config::PathEntry::Simple(guestward_core::AbsolutePath::new(&tree).unwrap())],
            ..Config::default()
        };
        let fim = Fim::new(config, HostRoot::live(), dir.path().join("state"))
            .unwrap()
            .with_packages(AllMismatch::new(paths.clone(), false, None));
        let opts = ScanOptions::unlimited(1);
        let summary = fim.scan(Purpose::Init, &Scope::All, Mechanism::Rescan, &opts, &mut |_| {}).unwrap();
        let b = &summary.baseline;
        assert_eq!(b.package_mismatch_count, paths.len() as u64);
        let listed: Vec<String> = b.package_mismatches.iter().map(|m| m.path.clone()).collect();
        let first: Vec<String> =
            paths[..crate::package::MAX_REPORTED_OUTSIDE].iter().map(|p| p.display().to_string()).collect();
        assert_eq!(listed, first);
    }

    /// A full check that found every file as the baseline records it reuses the verdict the
    /// baseline's anchor gave, while the package databases are as they were; a change to
    /// either (files, databases, rows written by another writer, the scope), a verdict
    /// tampered with outside the agent or a stamp that cannot be taken, and the anchor runs.
    #[test]
    fn the_anchor_s_verdict_is_reused_only_for_the_same_rows_and_databases() {
        use std::sync::atomic::Ordering::SeqCst;
        for keyed in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let tree = dir.path().join("t");
            std::fs::create_dir(&tree).unwrap();
            let files: Vec<PathBuf> = (0..3).map(|i| tree.join(format!("f{i}"))).collect();
            for f in &files {
                std::fs::write(f, f.display().to_string()).unwrap();
            }
            let config = Config {
                paths: vec![crate::config::PathEntry::Simple(
                    guestward_core::AbsolutePath::new(&tree).unwrap(),
                )],
                baseline_key_file: keyed
                    .then(|| guestward_core::AbsolutePath::new(dir.path().join("fim.key")).unwrap()),
                ..Config::default()
            };
            let oracle = AllMismatch::new(files.clone(), true, Some([1; 32]));
            let state = dir.path().join("state");
            let mut fim =
                Fim::new(config.clone(), HostRoot::live(), &state).unwrap().with_packages(oracle.clone());
            assert_eq!(fim.create_key_if_missing().is_some(), keyed);
            let opts = ScanOptions::unlimited(1);
            let scan = |fim: &Fim, purpose| {
                fim.scan(purpose, &Scope::All, Mechanism::Rescan, &opts, &mut |_| {}).unwrap()
            };
            let runs = || oracle.runs.load(SeqCst);
            let at_init = scan(&fim, Purpose::Init).baseline;
            assert_eq!((runs(), at_init.package_mismatch_count), (1, 3), "keyed {keyed}");

            // Nothing changed: the kept verdict, said to be one.
            let b = scan(&fim, Purpose::Check).baseline;
            assert_eq!(runs(), 1, "keyed {keyed}: the anchor ran again");
            assert_eq!((b.package_mismatch_count, &b.package_mismatches), (3, &at_init.package_mismatches));
            assert!(b.package_verification.as_deref().unwrap().contains("kept with the baseline"), "{b:?}");

            // `init` again over the unchanged tree: the same verdict, kept with the new baseline.
            let b = scan(&fim, Purpose::Init).baseline;
            assert_eq!(runs(), 1, "keyed {keyed}: init judged an unchanged tree again");
            assert_eq!(b.package_mismatches, at_init.package_mismatches);
            assert!(b.package_verification.as_deref().unwrap().contains("kept with the baseline"), "{b:?}");
            scan(&fim, Purpose::Check);
            assert_eq!(runs(), 1, "keyed {keyed}: the verdict was not kept for the new baseline");

            // Other package databases: judged again, and that verdict kept in turn.
            *oracle.stamp.lock().unwrap() = Some([2; 32]);
            scan(&fim, Purpose::Check);
            assert_eq!(runs(), 2, "keyed {keyed}");
            scan(&fim, Purpose::Check);
            assert_eq!(runs(), 2, "keyed {keyed}: the new verdict was not kept");

            // A file changed: judged on what the check read (the verdict is about the rows).
            std::fs::remove_file(&files[0]).unwrap();
            let b = scan(&fim, Purpose::Check).baseline;
            assert_eq!((runs(), b.package_mismatch_count), (3, 2), "keyed {keyed}");
            scan(&fim, Purpose::Check);
            assert_eq!(runs(), 4, "keyed {keyed}: a check that found changes kept its verdict");
            // Accepted: the baseline's new verdict, kept.
            scan(&fim, Purpose::Update);
            assert_eq!(runs(), 5, "keyed {keyed}");
            let b = scan(&fim, Purpose::Check).baseline;
            assert_eq!((runs(), b.package_mismatch_count), (5, 2), "keyed {keyed}");

            // A row written by another writer (the daemon accepting a change) moves the
            // baseline's generation past the verdict's.
            let store = fim.store().unwrap();
            let row = store.get(&files[1]).unwrap().unwrap();
            store.put(&files[1], &row).unwrap();
            scan(&fim, Purpose::Check);
            assert_eq!(runs(), 6, "keyed {keyed}");

            // The verdict rewritten outside the agent: with a key it is not used; without one,
            // nothing in the baseline is verified (and the report says so).
            let text = store.kept_verdict().unwrap().unwrap();
            let forged = text.replace("\\\"count\\\":2", "\\\"count\\\":0");
            assert_ne!(forged, text);
            store.set_meta("anchor.verdict", &forged).unwrap();
            let b = scan(&fim, Purpose::Check).baseline;
            if keyed {
                assert_eq!((runs(), b.package_mismatch_count), (7, 2), "a forged verdict was used");
            } else {
                assert_eq!((runs(), b.package_mismatch_count), (6, 0));
            }
            let before = runs();

            // Another scope: judged again.
            let mut wider = config.clone();
            wider.max_file_size_bytes /= 2;
            let other = Fim::new(wider, HostRoot::live(), &state).unwrap().with_packages(oracle.clone());
            scan(&other, Purpose::Check);
            assert_eq!(runs(), before + 1, "keyed {keyed}");

            // `init` over a changed tree judges it (the verdict kept for this scope first), and
            // keeps that verdict.
            scan(&fim, Purpose::Check);
            scan(&fim, Purpose::Check);
            assert_eq!(runs(), before + 2, "keyed {keyed}");
            std::fs::write(&files[2], "changed").unwrap();
            scan(&fim, Purpose::Init);
            assert_eq!(runs(), before + 3, "keyed {keyed}: init reused a verdict on other files");
            scan(&fim, Purpose::Check);
            assert_eq!(runs(), before + 3, "keyed {keyed}");
            // So does one with a file gone since the baseline.
            std::fs::remove_file(&files[1]).unwrap();
            scan(&fim, Purpose::Init);
            assert_eq!(runs(), before + 4, "keyed {keyed}: init reused a verdict on a removed file");

            // No stamp: the anchor runs every time.
            *oracle.stamp.lock().unwrap() = None;
            scan(&fim, Purpose::Check);
            scan(&fim, Purpose::Check);
            assert_eq!(runs(), before + 6, "keyed {keyed}");
        }
    }

    /// An `init` that met fewer entries than the baseline holds judges again, even when every
    /// entry it met is as recorded (a watched file removed: no directory in scope to show it).
    #[test]
    fn an_init_that_missed_a_baseline_row_judges_again() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = (0..2).map(|i| dir.path().join(format!("f{i}"))).collect();
        for f in &files {
            std::fs::write(f, "content").unwrap();
        }
        let paths = files
            .iter()
            .map(|f| crate::config::PathEntry::Simple(guestward_core::AbsolutePath::new(f).unwrap()))
            .collect();
        let oracle = AllMismatch::new(files.clone(), true, Some([1; 32]));
        let fim = Fim::new(Config { paths, ..Config::default() }, HostRoot::live(), dir.path().join("state"))
            .unwrap()
            .with_packages(oracle.clone());
        let opts = ScanOptions::unlimited(1);
        let init = || fim.scan(Purpose::Init, &Scope::All, Mechanism::Rescan, &opts, &mut |_| {}).unwrap();
        init();
        init();
        assert_eq!(
            oracle.runs.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the unchanged files judged again"
        );
        std::fs::remove_file(&files[1]).unwrap();
        let b = init().baseline;
        assert_eq!(
            oracle.runs.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "a verdict on a removed file reused"
        );
        assert_eq!(b.package_mismatch_count, 1);
    }

    /// An `init` over a baseline already there writes only what changed, and leaves exactly the
    /// baseline a first `init` of the same files gives: rows changed, added and removed, a tree
    /// no longer configured dropped, rows of another policy rewritten, sealed anew.
    #[test]
    fn an_init_over_a_baseline_leaves_the_rows_a_first_init_would() {
        for keyed in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (kept, dropped) = (dir.path().join("kept"), dir.path().join("dropped"));
            for tree in [&kept, &dropped] {
                std::fs::create_dir_all(tree.join("sub")).unwrap();
                for name in ["a", "b", "sub/c"] {
                    std::fs::write(tree.join(name), name).unwrap();
                }
            }
            let entry =
                |p: &Path| crate::config::PathEntry::Simple(guestward_core::AbsolutePath::new(p).unwrap());
            let key_file =
                keyed.then(|| guestward_core::AbsolutePath::new(dir.path().join("fim.key")).unwrap());
            let before = Config {
                paths: vec![entry(&kept), entry(&dropped)],
                baseline_key_file: key_file.clone(),
                ..Config::default()
            };
            let opts = ScanOptions::unlimited(1);
            let init = |config: &Config, state: &Path| {
                let mut fim = Fim::new(config.clone(), HostRoot::live(), state).unwrap();
                fim.create_key_if_missing();
                fim.scan(Purpose::Init, &Scope::All, Mechanism::Rescan, &opts, &mut |_| {}).unwrap();
                fim.store().unwrap()
            };
            let rows = |store: &Store| {
                let mut all = Vec::new();
                assert_eq!(store.for_each_below(Path::new("/"), |p, r| all.push((p, r))).unwrap(), 0);
                all
            };
            let (over, first) = (dir.path().join("over"), dir.path().join("first"));
            let old = init(&before, &over);
            assert_eq!(old.count_within(std::slice::from_ref(&dropped)).unwrap(), 5);
            let generation = old.generation().unwrap();

            // The same files: nothing written but the new generation.
            let again = init(&before, &over);
            assert_eq!(rows(&again), rows(&old));
            assert_eq!(again.generation().unwrap(), generation + 1);

            // Changed, removed and added files; one tree no longer configured; a size cap that
            // leaves one file's content unrecorded.
            std::fs::write(kept.join("a"), "changed").unwrap();
            std::fs::remove_file(kept.join("b")).unwrap();
            std::fs::write(kept.join("sub/d"), "added").unwrap();
            std::fs::write(kept.join("big"), vec![b'x'; 4096]).unwrap();
            let after = Config { paths: vec![entry(&kept)], max_file_size_bytes: 1024, ..before.clone() };
            let over_store = init(&after, &over);
            let first_store = init(&after, &first);
            let (got, want) = (rows(&over_store), rows(&first_store));
            assert!(
                want.iter().any(|(p, _)| p.ends_with("sub/d"))
                    && !want.iter().any(|(p, _)| p.starts_with(&dropped))
            );
            assert_eq!(got, want, "keyed {keyed}");
            assert_eq!(over_store.root_digest().unwrap(), first_store.root_digest().unwrap());
            assert_eq!(over_store.staged_count().unwrap(), 0);
            if keyed {
                assert_eq!(over_store.verify_seal().unwrap(), SealVerdict::Valid { rows: want.len() as u64 });
            } else {
                // A key given since: every row rewritten with its MAC (a row without one would
                // be skipped as tampered), and the baseline sealed.
                let keyed_config = Config {
                    baseline_key_file: Some(
                        guestward_core::AbsolutePath::new(dir.path().join("new.key")).unwrap(),
                    ),
                    ..after.clone()
                };
                let (sealed, first_sealed) =
                    (init(&keyed_config, &over), init(&keyed_config, &dir.path().join("first-keyed")));
                assert_eq!(rows(&sealed), rows(&first_sealed));
                assert_eq!(sealed.verify_seal().unwrap(), SealVerdict::Valid { rows: want.len() as u64 });
            }
        }
    }
}
