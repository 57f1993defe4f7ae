//! The engine both the daemon and the one-shot commands drive: scans with a purpose, diffs
//! against the baseline, and turns differences into [`FimChange`]s.

use crate::config::{Attribute, AttributeSet, Config, ConfigError, Policy};
use crate::events::{Attributes, ChangeKind, FimChange, Mechanism, escape_path};
use crate::record::FileRecord;
use crate::scan::{ScanError, ScanOptions, ScanStats, Target, minimal_roots, stage};
use crate::store::{Store, StoreError};
use guestward_core::{HostRoot, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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
}

/// What a scan is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// Build the baseline from scratch; reports nothing.
    Init,
    /// Compare with the baseline; changes nothing.
    Check,
    /// Compare, report, and accept the current state as the baseline.
    Update,
    /// Daemon verification rescan of some trees: compare, report, accept.
    Rescan,
}

/// Which trees a scan covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every rule.
    All,
    /// These host paths (tree roots or directories inside them) and everything below.
    Trees(Vec<PathBuf>),
}

/// The outcome of one scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ScanSummary {
    /// What the scan was for.
    pub purpose: Purpose,
    /// The trees covered (escaped).
    pub trees: Vec<String>,
    /// Walk/hash counters.
    pub stats: ScanStats,
    /// Changes found (not counted for `init`).
    pub changes: u64,
    /// When it finished.
    pub finished: Timestamp,
}

const META_IN_PROGRESS: &str = "scan.in_progress";
const META_LAST_SCAN: &str = "scan.last";
const META_BASELINE: &str = "baseline.completed_at";

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
}

impl Fim {
    /// Validates `config` and binds it to a root and state directory.
    pub fn new(config: Config, root: HostRoot, state_dir: impl Into<PathBuf>) -> Result<Self, FimError> {
        let policy = config.policy()?;
        Ok(Self { config, policy, root, state_dir: state_dir.into() })
    }

    /// Opens the store.
    pub fn store(&self) -> Result<Store, StoreError> {
        Store::open(&self.state_dir)
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
        let key = serde_json::json!({
            "purpose": purpose,
            "roots": roots.iter().map(|r| escape_path(r)).collect::<Vec<_>>(),
        })
        .to_string();
        let resume = store.meta(META_IN_PROGRESS)?.as_deref() == Some(key.as_str());
        if !resume {
            store.clear_staging()?;
            store.set_meta(META_IN_PROGRESS, &key)?;
        }
        let stats = stage(&self.policy, &self.root, &self.state_dir, &targets, resume, opts)?;
        let trees = roots.iter().map(|r| escape_path(r)).collect();
        if stats.cancelled {
            return Ok(ScanSummary { purpose, trees, stats, changes: 0, finished: Timestamp::now() });
        }
        let mut changes = 0u64;
        if purpose != Purpose::Init {
            store.diff(&roots, |item| {
                if let Some(c) = self.change_of(&item.path, item.old.as_ref(), item.new.as_ref(), mechanism) {
                    changes += 1;
                    on_change(c);
                }
            })?;
        }
        match purpose {
            Purpose::Init if *scope == Scope::All => store.replace_all()?,
            Purpose::Check => store.clear_staging()?,
            _ => store.apply(&roots)?,
        }
        let now = Timestamp::now();
        if matches!(purpose, Purpose::Init | Purpose::Update) {
            store.set_meta(META_BASELINE, &now.to_string())?;
        }
        store.clear_meta(META_IN_PROGRESS)?;
        let summary = ScanSummary { purpose, trees, stats, changes, finished: now };
        store.set_meta(META_LAST_SCAN, &serde_json::to_string(&summary).unwrap_or_default())?;
        Ok(summary)
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
        Some(FimChange {
            path: escape_path(path),
            old_path: None,
            change,
            changed,
            old: old.map(Attributes::from),
            new: new.map(Attributes::from),
            mechanism,
            rule: escape_path(&rule.pattern),
            transient: None,
        })
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
