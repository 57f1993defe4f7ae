//! Change tracking for the software inventory: what was added, removed, upgraded or
//! downgraded since the last report, with a full snapshot at a fixed interval.
//!
//! How the daemon uses it (one call pair per inventory run):
//! ```text
//! let tracker = Tracker::new(state_dir, config.full_snapshot_interval_secs);
//! let current = Snapshot::from_inventory(now, dpkg, rpm_dbs, language);
//! let observation = tracker.observe(&current, now);   // reads the stored state only
//! // ... put observation into the report and hand the report to the spool ...
//! tracker.commit(&current, &observation)?;             // only then remember `current`
//! ```
//! Committing after the report is safely queued means a crash in between repeats the same
//! delta next time instead of losing it.
//!
//! Version order is the package manager's own: dpkg's (`debversion`: epochs, `~` before
//! anything) and rpm's `rpmvercmp` (from `guestward-rpmdb`: epoch, then version, then release).
//! Language packages have no single rule; they are ordered with the rpmvercmp segment
//! comparison, which agrees with PEP 440 / semver / Maven for plain dotted numbers and marks
//! anything it cannot order as `changed` rather than guessing a direction.
//!
//! Identity: a dpkg package is `name:arch`, an rpm package `name.arch`, a language package its
//! ecosystem, namespace, name and location (the same library in two virtualenvs is two
//! packages). Several versions under one identity (rpm installs kernels side by side) are
//! compared as sets: new versions are `added`, vanished ones `removed`.
//!
//! The state is one JSON file, `packages-inventory.json` in the agent's state directory,
//! written atomically (temporary file, fsync, rename) with mode 0600: it lists the host's
//! software and is nobody else's business.
//!
//! The file is bounded ([`MAX_STATE_FILE_BYTES`]) both ways, because its size follows what
//! users can put on the host (issue 9, item 5: a million empty `*.egg-info` directories made a
//! 123 MB state file). An inventory that would serialize larger is not written (it is streamed
//! through a counting writer, never built whole in memory) and the stale state is removed, so
//! the next scan sends a full snapshot rather than a delta against an old inventory; a state
//! file larger than the cap is not read, and the problem says so.

use crate::dpkg::DpkgInventory;
use guestward_core::{Event, Problem, Timestamp};
use guestward_lang::LangReport;
use guestward_rpmdb::RpmInventory;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
#[cfg(feature = "collect")]
use std::io::Read;
#[cfg(feature = "collect")]
use std::path::Path;
use std::path::PathBuf;
use std::str::FromStr;

/// File name of the persisted inventory inside the state directory.
pub const STATE_FILE: &str = "packages-inventory.json";
/// Default interval between full snapshots.
pub const DEFAULT_FULL_SNAPSHOT_INTERVAL_SECS: u64 = 24 * 60 * 60;
/// Largest state file written or read back. A host at the language collector's default caps
/// (100,000 language packages) plus a few thousand system packages needs about 20 MiB.
pub const MAX_STATE_FILE_BYTES: u64 = 32 * 1024 * 1024;
/// Version of the state file layout.
#[cfg(feature = "collect")]
const STATE_FORMAT: u32 = 1;

/// Where a package came from; also decides how its versions are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PackageSource {
    /// dpkg database.
    Dpkg,
    /// rpm database.
    Rpm,
    /// Python distribution.
    Pypi,
    /// Java archive.
    Maven,
    /// Node.js package.
    Npm,
}

impl PackageSource {
    /// Every source, in order.
    pub const ALL: [Self; 5] = [Self::Dpkg, Self::Rpm, Self::Pypi, Self::Maven, Self::Npm];

    /// The name as serialized (`dpkg`, `rpm`, `pypi`, `maven`, `npm`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dpkg => "dpkg",
            Self::Rpm => "rpm",
            Self::Pypi => "pypi",
            Self::Maven => "maven",
            Self::Npm => "npm",
        }
    }

    /// The source named `text` (as [`Self::as_str`] names it); the error lists them.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|s| s.as_str() == text).ok_or_else(|| {
            format!(
                "{} is not one of dpkg, rpm, pypi, maven, npm",
                guestward_core::text::quote_truncated(text, 32)
            )
        })
    }

    fn of(ecosystem: guestward_lang::Ecosystem) -> Self {
        match ecosystem {
            guestward_lang::Ecosystem::Pypi => Self::Pypi,
            guestward_lang::Ecosystem::Maven => Self::Maven,
            guestward_lang::Ecosystem::Npm => Self::Npm,
        }
    }
}

/// One package in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct Item {
    /// Source.
    pub source: PackageSource,
    /// Name as reported (`libc6`, `org.apache.logging.log4j:log4j-core`, `@types/node`).
    pub name: String,
    /// Architecture (dpkg, rpm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Where it is installed (language packages): the site-packages / lib / node_modules
    /// package directory, `archive!/dir` inside an archive; version-free, so upgrades in place
    /// are recognized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Version (`[epoch:]version[-release]` for rpm, dpkg's version string for dpkg).
    pub version: String,
}

impl Item {
    fn identity(&self) -> (PackageSource, &str, Option<&str>, Option<&str>) {
        (self.source, &self.name, self.arch.as_deref(), self.location.as_deref())
    }
}

/// The whole inventory at one moment, in the form that is persisted and compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Snapshot {
    /// When it was taken.
    pub taken_at: Timestamp,
    /// Every package, sorted.
    pub items: Vec<Item>,
}

impl Snapshot {
    /// Flattens the inventories read by the collectors.
    pub fn from_inventory(
        taken_at: Timestamp,
        dpkg: Option<&DpkgInventory>,
        rpm: &[RpmInventory],
        language: Option<&LangReport>,
    ) -> Self {
        let mut items = Vec::new();
        visit_items(dpkg, rpm, language, |i| items.push(i.to_item()));
        items.sort_unstable();
        items.dedup();
        Self { taken_at, items }
    }
}

/// One package as [`Snapshot::from_inventory`] flattens it, borrowed (see [`visit_items`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemRef<'a> {
    /// Source.
    pub source: PackageSource,
    /// Name as reported.
    pub name: &'a str,
    /// Architecture (dpkg, rpm).
    pub arch: Option<&'a str>,
    /// Where it is installed (language packages).
    pub location: Option<&'a str>,
    /// Version.
    pub version: &'a str,
}

impl ItemRef<'_> {
    /// The owned item.
    pub fn to_item(&self) -> Item {
        Item {
            source: self.source,
            name: self.name.to_string(),
            arch: self.arch.map(str::to_string),
            location: self.location.map(str::to_string),
            version: self.version.to_string(),
        }
    }
}

/// Calls `f` with each package of the inventories, flattened as [`Snapshot::from_inventory`]
/// flattens them, in the inventories' order (unsorted, duplicates kept). Nothing is allocated
/// per package: the fields that are composed (an rpm version with its epoch, a language
/// package's namespace and install directory) are written into buffers reused from one
/// package to the next. A collector receiving inventories from a whole fleet reads them so.
pub fn visit_items(
    dpkg: Option<&DpkgInventory>,
    rpm: &[RpmInventory],
    language: Option<&LangReport>,
    mut f: impl FnMut(ItemRef<'_>),
) {
    use std::fmt::Write;
    if let Some(d) = dpkg {
        for p in &d.installed {
            f(ItemRef {
                source: PackageSource::Dpkg,
                name: &p.name,
                arch: p.architecture.as_deref(),
                location: None,
                version: &p.version.full,
            });
        }
    }
    let mut version = String::new();
    for db in rpm {
        for p in &db.packages {
            // As `RpmPackage::evr` writes it. Writing to a String cannot fail.
            version.clear();
            if let Some(epoch) = p.epoch {
                let _ = write!(version, "{epoch}:");
            }
            let _ = write!(version, "{}-{}", p.version, p.release);
            f(ItemRef {
                source: PackageSource::Rpm,
                name: &p.name,
                arch: p.arch.as_deref(),
                location: None,
                version: &version,
            });
        }
    }
    let (mut name, mut location) = (String::new(), String::new());
    if let Some(l) = language {
        for p in &l.packages {
            let name: &str = match (&p.namespace, p.ecosystem) {
                (Some(ns), guestward_lang::Ecosystem::Npm) => {
                    name.clear();
                    let _ = write!(name, "@{ns}/{}", p.name);
                    &name
                }
                (Some(ns), _) => {
                    name.clear();
                    let _ = write!(name, "{ns}:{}", p.name);
                    &name
                }
                (None, _) => &p.name,
            };
            install_dir(p, &mut location);
            f(ItemRef {
                source: PackageSource::of(p.ecosystem),
                name,
                arch: None,
                location: Some(&location),
                version: &p.version,
            });
        }
    }
}

/// The directory a language package is installed in, as its identity, written to `out`: a
/// version change renames the dist-info directory (`requests-2.31.0.dist-info`) or the jar
/// (`log4j-core-2.17.1.jar`) but keeps it in the same site-packages or lib directory, so an
/// upgrade is seen as one, not as a removal plus an addition.
fn install_dir(p: &guestward_lang::LangPackage, out: &mut String) {
    fn parent(path: &str) -> &str {
        match path.rsplit_once('/') {
            Some(("", _)) => "/",
            Some((dir, _)) => dir,
            None => "",
        }
    }
    out.clear();
    match (p.ecosystem, &p.path_in_archive) {
        // A package.json's directory is already version-free (`node_modules/express`).
        (guestward_lang::Ecosystem::Npm, _) => out.push_str(&p.location),
        (_, Some(inner)) => {
            out.push_str(&p.location);
            out.push_str("!/");
            out.push_str(parent(inner));
        }
        (_, None) => out.push_str(parent(&p.location)),
    }
}

/// What happened to a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Newly installed (or a further version installed next to others).
    Added,
    /// No longer installed.
    Removed,
    /// Replaced by a higher version.
    Upgraded,
    /// Replaced by a lower version.
    Downgraded,
    /// Replaced by a version that cannot be ordered against the old one.
    Changed,
}

impl ChangeKind {
    /// The event kind (`package.upgraded`...).
    pub fn event_kind(self) -> &'static str {
        match self {
            Self::Added => "package.added",
            Self::Removed => "package.removed",
            Self::Upgraded => "package.upgraded",
            Self::Downgraded => "package.downgraded",
            Self::Changed => "package.changed",
        }
    }
}

/// One change between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// Source.
    pub source: PackageSource,
    /// Name.
    pub name: String,
    /// Architecture (dpkg, rpm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Location (language packages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Version before (absent when added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_version: Option<String>,
    /// Version after (absent when removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_version: Option<String>,
}

impl Change {
    /// This change as a report event observed at `time`.
    pub fn to_event(&self, time: Timestamp) -> Event {
        Event {
            kind: self.kind.event_kind().to_string(),
            time,
            data: serde_json::to_value(self).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// Orders two versions of the same package with its package manager's rules; `None` when they
/// cannot be ordered (a dpkg version dpkg itself would reject).
pub fn compare_versions(source: PackageSource, a: &str, b: &str) -> Option<Ordering> {
    match source {
        PackageSource::Dpkg => {
            let a = debversion::Version::from_str(a).ok()?;
            let b = debversion::Version::from_str(b).ok()?;
            Some(a.cmp(&b))
        }
        PackageSource::Rpm => Some(guestward_rpmdb::vercmp::compare_evr(a, b)),
        PackageSource::Pypi | PackageSource::Maven | PackageSource::Npm => {
            // Only versions that start with a digit are ordered; anything else (a git hash, a
            // tag name) is "changed".
            let numeric =
                |v: &str| v.trim_start_matches(['v', 'V']).starts_with(|c: char| c.is_ascii_digit());
            if !numeric(a) || !numeric(b) {
                return None;
            }
            Some(guestward_rpmdb::vercmp::rpmvercmp(
                a.trim_start_matches(['v', 'V']),
                b.trim_start_matches(['v', 'V']),
            ))
        }
    }
}

/// Everything that changed from `previous` to `current`, sorted.
pub fn diff(previous: &Snapshot, current: &Snapshot) -> Vec<Change> {
    type Key<'a> = (PackageSource, &'a str, Option<&'a str>, Option<&'a str>);
    fn index(s: &Snapshot) -> BTreeMap<Key<'_>, BTreeSet<&str>> {
        let mut map: BTreeMap<Key<'_>, BTreeSet<&str>> = BTreeMap::new();
        for item in &s.items {
            map.entry(item.identity()).or_default().insert(item.version.as_str());
        }
        map
    }
    let old = index(previous);
    let new = index(current);
    let mut changes = Vec::new();
    let change = |kind, key: &Key<'_>, old_version: Option<&str>, new_version: Option<&str>| Change {
        kind,
        source: key.0,
        name: key.1.to_string(),
        arch: key.2.map(str::to_string),
        location: key.3.map(str::to_string),
        old_version: old_version.map(str::to_string),
        new_version: new_version.map(str::to_string),
    };
    let empty = BTreeSet::new();
    let keys: BTreeSet<&Key<'_>> = old.keys().chain(new.keys()).collect();
    for key in keys {
        let before = old.get(key).unwrap_or(&empty);
        let after = new.get(key).unwrap_or(&empty);
        if before == after {
            continue;
        }
        let gone: Vec<&str> = before.difference(after).copied().collect();
        let came: Vec<&str> = after.difference(before).copied().collect();
        match (gone.as_slice(), came.as_slice()) {
            // The common case: one version replaced by another.
            ([old_v], [new_v]) => {
                let kind = match compare_versions(key.0, old_v, new_v) {
                    Some(Ordering::Less) => ChangeKind::Upgraded,
                    Some(Ordering::Greater) => ChangeKind::Downgraded,
                    // Equal under the ordering but written differently (`1.0` vs `1.00`).
                    Some(Ordering::Equal) | None => ChangeKind::Changed,
                };
                changes.push(change(kind, key, Some(old_v), Some(new_v)));
            }
            _ => {
                changes.extend(gone.iter().map(|v| change(ChangeKind::Removed, key, Some(v), None)));
                changes.extend(came.iter().map(|v| change(ChangeKind::Added, key, None, Some(v))));
            }
        }
    }
    changes.sort_unstable();
    changes
}

/// Why a full snapshot is sent instead of a delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FullReason {
    /// No stored inventory: first run (or the state directory was wiped, or the last
    /// inventory was over [`MAX_STATE_FILE_BYTES`] and not stored).
    FirstRun,
    /// `full_snapshot_interval_secs` passed since the last full snapshot.
    IntervalElapsed,
    /// The stored inventory could not be read (see the problem); starting over.
    StateUnreadable,
    /// The clock is earlier than the last full snapshot (it was set back).
    ClockWentBack,
}

/// What the inventory part of a report should carry this time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Observation {
    /// Send everything.
    Full {
        /// Why.
        reason: FullReason,
        /// When this full snapshot was taken.
        at: Timestamp,
        /// A reading problem with the stored state, if that is the reason.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        problem: Option<Problem>,
    },
    /// Send only the changes.
    Delta {
        /// The snapshot the changes are relative to.
        since: Timestamp,
        /// When the last full snapshot was sent (kept until the next one).
        last_full_at: Timestamp,
        /// The changes (possibly none).
        changes: Vec<Change>,
    },
}

impl Observation {
    /// Whether a full snapshot should be sent.
    pub fn is_full(&self) -> bool {
        matches!(self, Self::Full { .. })
    }
}

/// Why the state could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// Writing, syncing or renaming the state file failed.
    #[error("{}: cannot save the package inventory: {source}", path.display())]
    Write {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Serializing the state failed.
    #[error("cannot serialize the package inventory: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The inventory would make a state file larger than the cap: not stored, and the previous
    /// state removed (the next scan sends a full snapshot).
    #[error(
        "{}: package inventory not saved: it is larger than the {limit}-byte cap for this file; the next scan sends a full snapshot",
        path.display()
    )]
    TooLarge {
        /// The state file.
        path: PathBuf,
        /// The cap.
        limit: u64,
    },
}

#[cfg(feature = "collect")]
#[derive(Deserialize)]
struct StoredState {
    format: u32,
    last_full_at: Timestamp,
    snapshot: Snapshot,
}

#[cfg(feature = "collect")]
/// [`StoredState`] as written: borrows the snapshot instead of copying it.
#[derive(Serialize)]
struct StoredStateRef<'a> {
    format: u32,
    last_full_at: Timestamp,
    snapshot: &'a Snapshot,
}

#[cfg(feature = "collect")]
/// Remembers the last inventory under the state directory and decides full vs delta.
#[derive(Debug, Clone)]
pub struct Tracker {
    path: PathBuf,
    full_interval_secs: u64,
    max_state_bytes: u64,
}

#[cfg(feature = "collect")]
impl Tracker {
    /// A tracker keeping its state in `<state_dir>/packages-inventory.json`, sending a full
    /// snapshot every `full_snapshot_interval_secs` (0: always full).
    pub fn new(state_dir: &Path, full_snapshot_interval_secs: u64) -> Self {
        Self {
            path: state_dir.join(STATE_FILE),
            full_interval_secs: full_snapshot_interval_secs,
            max_state_bytes: MAX_STATE_FILE_BYTES,
        }
    }

    /// The same tracker with another cap on the state file (default [`MAX_STATE_FILE_BYTES`]).
    pub fn with_max_state_bytes(mut self, max_state_bytes: u64) -> Self {
        self.max_state_bytes = max_state_bytes;
        self
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(&self) -> Result<Option<StoredState>, Problem> {
        // Through the regular-file check: a FIFO or device planted in place of the state file
        // (a state_dir in a shared directory) must not block or feed the daemon forever.
        let file = match guestward_core::open_regular_file(&self.path, false) {
            Ok(f) => f,
            Err(guestward_core::HostFsError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.problem(e.code(), e.to_string())),
        };
        let cap = self.max_state_bytes;
        let too_large = |size: &dyn std::fmt::Display| {
            self.problem(
                "too_large",
                format!("{size} bytes, over the {cap}-byte cap for this file; not read"),
            )
        };
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        if size > cap {
            return Err(too_large(&size));
        }
        let mut bytes = Vec::new();
        file.take(cap.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| self.problem("io", e.to_string()))?;
        if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > cap {
            return Err(too_large(&format!("more than {cap}")));
        }
        let state: StoredState = serde_json::from_slice(&bytes)
            .map_err(|e| self.problem("malformed", format!("line {}: {e}", e.line())))?;
        if state.format != STATE_FORMAT {
            return Err(self.problem("malformed", format!("unknown state format {}", state.format)));
        }
        Ok(Some(state))
    }

    fn problem(&self, code: &str, detail: String) -> Problem {
        let shown = self.path.display().to_string();
        Problem::new(
            code,
            format!("{shown}: stored package inventory unreadable ({detail}); sending a full snapshot"),
        )
        .with_path(shown)
    }

    /// Decides what to send for `current`, comparing with the stored inventory. Reads only.
    pub fn observe(&self, current: &Snapshot, now: Timestamp) -> Observation {
        let full = |reason, problem| Observation::Full { reason, at: now, problem };
        let stored = match self.load() {
            Ok(Some(s)) => s,
            Ok(None) => return full(FullReason::FirstRun, None),
            Err(p) => return full(FullReason::StateUnreadable, Some(p)),
        };
        let elapsed = now.unix_secs() - stored.last_full_at.unix_secs();
        if elapsed < 0 {
            return full(FullReason::ClockWentBack, None);
        }
        if u64::try_from(elapsed).unwrap_or(u64::MAX) >= self.full_interval_secs {
            return full(FullReason::IntervalElapsed, None);
        }
        Observation::Delta {
            since: stored.snapshot.taken_at,
            last_full_at: stored.last_full_at,
            changes: diff(&stored.snapshot, current),
        }
    }

    /// Stores `current` as the inventory the next delta is relative to. Call once the report
    /// carrying `observation` is safely queued.
    pub fn commit(&self, current: &Snapshot, observation: &Observation) -> Result<(), DeltaError> {
        let last_full_at = match observation {
            Observation::Full { at, .. } => *at,
            Observation::Delta { last_full_at, .. } => *last_full_at,
        };
        let state = StoredStateRef { format: STATE_FORMAT, last_full_at, snapshot: current };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|source| DeltaError::Write { path: self.path.clone(), source })?;
        }
        // One atomic, durable replacement, streamed through the cap: the serialized inventory
        // is never held in memory whole, and writing stops at the cap.
        match guestward_core::state_file::write_atomic(&self.path, self.max_state_bytes, |out| {
            serde_json::to_writer(out, &state).map_err(std::io::Error::other)
        }) {
            Ok(()) => {}
            Err(guestward_core::state_file::StateFileError::TooLarge { limit, .. }) => {
                // A delta against the stale inventory would be wrong from now on; without a
                // state the next scan sends a full snapshot.
                let _ = std::fs::remove_file(&self.path);
                return Err(DeltaError::TooLarge { path: self.path.clone(), limit });
            }
            Err(guestward_core::state_file::StateFileError::Io { source, .. }) => {
                return Err(DeltaError::Write { path: self.path.clone(), source });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn item(source: PackageSource, name: &str, arch: Option<&str>, version: &str) -> Item {
        Item {
            source,
            name: name.into(),
            arch: arch.map(str::to_string),
            location: None,
            version: version.into(),
        }
    }

    fn snap(secs: i64, items: Vec<Item>) -> Snapshot {
        let mut items = items;
        items.sort_unstable();
        Snapshot { taken_at: Timestamp::from_unix_secs(secs).unwrap(), items }
    }

    fn kinds(changes: &[Change]) -> Vec<(ChangeKind, &str, Option<&str>, Option<&str>)> {
        changes
            .iter()
            .map(|c| (c.kind, c.name.as_str(), c.old_version.as_deref(), c.new_version.as_deref()))
            .collect()
    }

    #[test]
    fn dpkg_order_epochs_and_tildes() {
        use PackageSource::Dpkg;
        let before = snap(
            0,
            vec![
                item(Dpkg, "epoch", Some("amd64"), "2.0-1"),
                item(Dpkg, "tilde", Some("amd64"), "1.0~rc1-1"),
                item(Dpkg, "back", Some("amd64"), "1.0-1"),
                item(Dpkg, "security", Some("amd64"), "2.36-9+deb12u3"),
                item(Dpkg, "gone", Some("all"), "1"),
                item(Dpkg, "same", Some("all"), "1"),
            ],
        );
        let after = snap(
            10,
            vec![
                // 1:1.0 > 2.0: the epoch wins over the larger upstream version.
                item(Dpkg, "epoch", Some("amd64"), "1:1.0-1"),
                // 1.0~rc1 < 1.0: `~` sorts before the end of the string.
                item(Dpkg, "tilde", Some("amd64"), "1.0-1"),
                item(Dpkg, "back", Some("amd64"), "1.0~beta-1"),
                item(Dpkg, "security", Some("amd64"), "2.36-9+deb12u4"),
                item(Dpkg, "new", Some("amd64"), "0.1"),
                item(Dpkg, "same", Some("all"), "1"),
            ],
        );
        assert_eq!(
            kinds(&diff(&before, &after)),
            vec![
                (ChangeKind::Added, "new", None, Some("0.1")),
                (ChangeKind::Removed, "gone", Some("1"), None),
                (ChangeKind::Upgraded, "epoch", Some("2.0-1"), Some("1:1.0-1")),
                (ChangeKind::Upgraded, "security", Some("2.36-9+deb12u3"), Some("2.36-9+deb12u4")),
                (ChangeKind::Upgraded, "tilde", Some("1.0~rc1-1"), Some("1.0-1")),
                (ChangeKind::Downgraded, "back", Some("1.0-1"), Some("1.0~beta-1")),
            ]
        );
    }

    #[test]
    fn multiarch_packages_are_distinct() {
        use PackageSource::Dpkg;
        let before = snap(
            0,
            vec![item(Dpkg, "libc6", Some("amd64"), "2.36-9"), item(Dpkg, "libc6", Some("i386"), "2.36-9")],
        );
        let after = snap(
            1,
            vec![item(Dpkg, "libc6", Some("amd64"), "2.36-10"), item(Dpkg, "libc6", Some("i386"), "2.36-9")],
        );
        let changes = diff(&before, &after);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].arch.as_deref(), Some("amd64"));
        assert_eq!(changes[0].kind, ChangeKind::Upgraded);
    }

    #[test]
    fn rpm_order_epochs_tildes_and_side_by_side_kernels() {
        use PackageSource::Rpm;
        let x86 = Some("x86_64");
        let before = snap(
            0,
            vec![
                item(Rpm, "openssl-libs", x86, "3.0.8-1.amzn2023.0.14"),
                item(Rpm, "tilde", x86, "1.0-1"),
                item(Rpm, "kernel", x86, "6.1.61-85.141.amzn2023"),
                item(Rpm, "release", x86, "1.0-1.el9"),
            ],
        );
        let after = snap(
            1,
            vec![
                // Epoch 1 beats any version without one.
                item(Rpm, "openssl-libs", x86, "1:3.0.2-1.amzn2023"),
                item(Rpm, "tilde", x86, "1.0~rc2-1"),
                item(Rpm, "kernel", x86, "6.1.61-85.141.amzn2023"),
                item(Rpm, "kernel", x86, "6.1.66-91.160.amzn2023"),
                item(Rpm, "release", x86, "1.0-1.el9_2"),
            ],
        );
        assert_eq!(
            kinds(&diff(&before, &after)),
            vec![
                (ChangeKind::Added, "kernel", None, Some("6.1.66-91.160.amzn2023")),
                (
                    ChangeKind::Upgraded,
                    "openssl-libs",
                    Some("3.0.8-1.amzn2023.0.14"),
                    Some("1:3.0.2-1.amzn2023")
                ),
                (ChangeKind::Upgraded, "release", Some("1.0-1.el9"), Some("1.0-1.el9_2")),
                (ChangeKind::Downgraded, "tilde", Some("1.0-1"), Some("1.0~rc2-1")),
            ]
        );
    }

    #[test]
    fn language_packages_by_location_and_unorderable_versions() {
        let lang = |loc: &str, v: &str| Item {
            source: PackageSource::Pypi,
            name: "requests".into(),
            arch: None,
            location: Some(loc.into()),
            version: v.into(),
        };
        let before =
            snap(0, vec![lang("/opt/a", "2.31.0"), lang("/opt/b", "2.28.0"), lang("/opt/c", "2.9.0")]);
        let after =
            snap(1, vec![lang("/opt/a", "2.31.0"), lang("/opt/b", "2.32.3"), lang("/opt/c", "deadbeef")]);
        let changes = diff(&before, &after);
        let got: Vec<(ChangeKind, Option<&str>)> =
            changes.iter().map(|c| (c.kind, c.location.as_deref())).collect();
        assert_eq!(got, vec![(ChangeKind::Upgraded, Some("/opt/b")), (ChangeKind::Changed, Some("/opt/c"))]);
        let event = changes[0].to_event(Timestamp::from_unix_secs(5).unwrap());
        assert_eq!(event.kind, "package.upgraded");
        assert_eq!(event.data["old_version"], "2.28.0");
        assert_eq!(event.data["new_version"], "2.32.3");
    }

    // Reads and writes the stored inventory.
    #[cfg(feature = "collect")]
    #[test]
    fn full_then_deltas_then_full_after_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let tracker = Tracker::new(&state_dir, 3600);
        let t = |s| Timestamp::from_unix_secs(s).unwrap();
        let v1 = snap(1000, vec![item(PackageSource::Dpkg, "curl", Some("amd64"), "7.88.1-10")]);
        let first = tracker.observe(&v1, t(1000));
        assert_eq!(first, Observation::Full { reason: FullReason::FirstRun, at: t(1000), problem: None });
        tracker.commit(&v1, &first).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(tracker.path()).unwrap().permissions().mode() & 0o777, 0o600);

        let v2 = snap(2000, vec![item(PackageSource::Dpkg, "curl", Some("amd64"), "7.88.1-10+deb12u5")]);
        let second = tracker.observe(&v2, t(2000));
        let Observation::Delta { since, last_full_at, changes } = &second else { panic!("{second:?}") };
        assert_eq!((*since, *last_full_at), (t(1000), t(1000)));
        assert_eq!(
            kinds(changes),
            vec![(ChangeKind::Upgraded, "curl", Some("7.88.1-10"), Some("7.88.1-10+deb12u5"))]
        );
        tracker.commit(&v2, &second).unwrap();

        // Nothing changed: an empty delta, relative to the last snapshot.
        let third = tracker.observe(&v2, t(3000));
        assert!(
            matches!(&third, Observation::Delta { since, changes, .. } if *since == t(2000) && changes.is_empty()),
            "{third:?}"
        );
        tracker.commit(&v2, &third).unwrap();

        // An hour after the last *full* snapshot (not the last delta): full again.
        assert!(matches!(
            tracker.observe(&v2, t(4600)),
            Observation::Full { reason: FullReason::IntervalElapsed, .. }
        ));
        assert!(matches!(
            tracker.observe(&v2, t(999)),
            Observation::Full { reason: FullReason::ClockWentBack, .. }
        ));
    }

    // Reads and writes the stored inventory.
    #[cfg(feature = "collect")]
    #[test]
    fn uncommitted_observations_repeat_and_corrupt_state_means_full() {
        let dir = tempfile::tempdir().unwrap();
        let tracker = Tracker::new(dir.path(), DEFAULT_FULL_SNAPSHOT_INTERVAL_SECS);
        let t = |s| Timestamp::from_unix_secs(s).unwrap();
        let v1 = snap(0, vec![item(PackageSource::Rpm, "bash", Some("x86_64"), "5.2.15-1")]);
        tracker.commit(&v1, &tracker.observe(&v1, t(0))).unwrap();
        let v2 = snap(10, vec![]);
        // Not committed (say the spool was full): the same delta comes again next time.
        let a = tracker.observe(&v2, t(10));
        let b = tracker.observe(&v2, t(20));
        assert_eq!(a, b);
        assert!(matches!(&a, Observation::Delta { changes, .. } if changes[0].kind == ChangeKind::Removed));

        std::fs::write(tracker.path(), b"{\"format\": 1, \"last_full_at\": ").unwrap();
        let Observation::Full { reason, problem, .. } = tracker.observe(&v2, t(30)) else { panic!() };
        assert_eq!(reason, FullReason::StateUnreadable);
        let problem = problem.unwrap();
        assert_eq!(problem.code, "malformed");
        assert!(problem.message.contains("packages-inventory.json"), "{}", problem.message);
    }

    #[cfg(feature = "collect")]
    fn many_items(count: usize) -> Snapshot {
        let items = (0..count)
            .map(|i| item(PackageSource::Dpkg, &format!("package-{i:06}"), Some("amd64"), "1.0-1"))
            .collect();
        snap(0, items)
    }

    // Reads and writes the stored inventory.
    #[cfg(feature = "collect")]
    #[test]
    fn inventory_over_the_state_cap_is_not_written_and_the_stale_state_is_removed() {
        // Issue 9, item 5: the state file grew with whatever users put on the host (123 MB).
        let dir = tempfile::tempdir().unwrap();
        let tracker =
            Tracker::new(dir.path(), DEFAULT_FULL_SNAPSHOT_INTERVAL_SECS).with_max_state_bytes(4096);
        let t = |s| Timestamp::from_unix_secs(s).unwrap();
        let small = many_items(3);
        tracker.commit(&small, &tracker.observe(&small, t(0))).unwrap();
        assert!(tracker.path().exists());

        let big = many_items(1000);
        let observation = tracker.observe(&big, t(10));
        let err = tracker.commit(&big, &observation).unwrap_err();
        assert!(matches!(err, DeltaError::TooLarge { limit: 4096, .. }), "{err}");
        assert!(err.to_string().contains("packages-inventory.json"), "{err}");
        // Neither a partial file nor the stale inventory is left behind: the next scan is a
        // full snapshot, not a delta against an old inventory.
        assert!(!tracker.path().exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(matches!(
            tracker.observe(&big, t(20)),
            Observation::Full { reason: FullReason::FirstRun, .. }
        ));
    }

    // Reads and writes the stored inventory.
    #[cfg(feature = "collect")]
    #[test]
    fn state_file_over_the_cap_is_refused_with_a_clear_problem() {
        let dir = tempfile::tempdir().unwrap();
        let tracker =
            Tracker::new(dir.path(), DEFAULT_FULL_SNAPSHOT_INTERVAL_SECS).with_max_state_bytes(1024);
        std::fs::write(tracker.path(), vec![b' '; 1025]).unwrap();
        let Observation::Full { reason, problem, .. } =
            tracker.observe(&many_items(1), Timestamp::from_unix_secs(0).unwrap())
        else {
            panic!("expected a full snapshot")
        };
        assert_eq!(reason, FullReason::StateUnreadable);
        let problem = problem.unwrap();
        assert_eq!(problem.code, "too_large");
        assert!(problem.message.contains("1025 bytes, over the 1024-byte cap"), "{}", problem.message);
        assert!(problem.message.contains("packages-inventory.json"), "{}", problem.message);
        // The real cap: a state file of the size the issue reported is refused.
        const { assert!(MAX_STATE_FILE_BYTES < 123 * 1000 * 1000) };
    }

    #[test]
    fn upgrades_that_rename_the_dist_info_or_the_jar_are_upgrades() {
        use guestward_lang::{Ecosystem, Evidence, LangPackage};
        let pkg = |eco, name: &str, version: &str, location: &str, inner: Option<&str>| LangPackage {
            ecosystem: eco,
            namespace: None,
            name: name.into(),
            version: version.into(),
            location: location.into(),
            path_in_archive: inner.map(str::to_string),
            installer: None,
            evidence: Evidence::PomProperties,
        };
        let t = Timestamp::from_unix_secs(0).unwrap();
        let snapshot = |packages| {
            Snapshot::from_inventory(t, None, &[], Some(&LangReport { packages, ..Default::default() }))
        };
        let sp = "/usr/lib/python3/dist-packages";
        let before = snapshot(vec![
            pkg(Ecosystem::Pypi, "requests", "2.28.1", &format!("{sp}/requests-2.28.1.dist-info"), None),
            pkg(
                Ecosystem::Maven,
                "log4j-core",
                "2.14.1",
                "/opt/app.war",
                Some("WEB-INF/lib/log4j-core-2.14.1.jar"),
            ),
        ]);
        let after = snapshot(vec![
            pkg(Ecosystem::Pypi, "requests", "2.31.0", &format!("{sp}/requests-2.31.0.dist-info"), None),
            pkg(
                Ecosystem::Maven,
                "log4j-core",
                "2.17.1",
                "/opt/app.war",
                Some("WEB-INF/lib/log4j-core-2.17.1.jar"),
            ),
        ]);
        let changes = diff(&before, &after);
        let got: Vec<(ChangeKind, &str, Option<&str>)> =
            changes.iter().map(|c| (c.kind, c.name.as_str(), c.location.as_deref())).collect();
        assert_eq!(
            got,
            vec![
                (ChangeKind::Upgraded, "requests", Some(sp)),
                (ChangeKind::Upgraded, "log4j-core", Some("/opt/app.war!/WEB-INF/lib")),
            ]
        );
    }

    #[test]
    fn snapshot_from_inventories() {
        use guestward_lang::{Ecosystem, Evidence, LangPackage};
        let lang = LangReport {
            packages: vec![LangPackage {
                ecosystem: Ecosystem::Maven,
                namespace: Some("org.apache.logging.log4j".into()),
                name: "log4j-core".into(),
                version: "2.14.1".into(),
                location: "/opt/app.jar".into(),
                path_in_archive: Some("BOOT-INF/lib/log4j-core-2.14.1.jar".into()),
                installer: None,
                evidence: Evidence::PomProperties,
            }],
            ..Default::default()
        };
        let s = Snapshot::from_inventory(Timestamp::from_unix_secs(0).unwrap(), None, &[], Some(&lang));
        assert_eq!(s.items.len(), 1);
        assert_eq!(s.items[0].name, "org.apache.logging.log4j:log4j-core");
        assert_eq!(s.items[0].location.as_deref(), Some("/opt/app.jar!/BOOT-INF/lib"));
        assert_eq!(s.items[0].source, PackageSource::Maven);
    }

    // Reads and writes the stored inventory.
    #[cfg(feature = "collect")]
    #[test]
    fn fifo_in_place_of_the_stored_inventory_is_refused_not_read() {
        let dir = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(&dir.path().join(STATE_FILE), nix::sys::stat::Mode::from_bits_truncate(0o600))
            .unwrap();
        let tracker = Tracker::new(dir.path(), 3600);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(tracker.observe(&snap(10, vec![]), Timestamp::from_unix_secs(10).unwrap()));
        });
        let observation =
            rx.recv_timeout(std::time::Duration::from_secs(10)).expect("reading a FIFO state file blocked");
        let Observation::Full { reason, problem: Some(problem), .. } = observation else {
            panic!("expected a full snapshot with a problem, got {observation:?}");
        };
        assert_eq!(reason, FullReason::StateUnreadable);
        assert_eq!(problem.code, "not_regular_file");
        assert!(problem.message.contains("fifo"), "{}", problem.message);
    }

    #[test]
    fn source_names_are_the_serialized_ones() {
        for source in PackageSource::ALL {
            assert_eq!(serde_json::to_string(&source).unwrap(), format!("\"{}\"", source.as_str()));
            assert_eq!(PackageSource::parse(source.as_str()), Ok(source));
        }
        let refused = PackageSource::parse("apk").unwrap_err();
        assert_eq!(refused, "\"apk\" is not one of dpkg, rpm, pypi, maven, npm");
    }
}
