//! The types that appear in reports and status (serde + schemars), with the pure functions
//! over them: no file, SQLite, inotify or hashing code. Available without the `collect`
//! feature, so the report crate and `agentctl` use them without linking the collector.
//!
//! Each type is also re-exported from the module that produces it (with `collect`):
//! [`FimStatus`] from `monitor`, [`ScanSummary`] from `engine`, [`ScanProgress`] from `scan`,
//! [`BaselineCheck`] from `integrity`, [`FileKind`] from `record`, [`CheckReport`] from
//! `oneshot`.

use crate::events::{CoverageGap, FimChange};
use guestward_core::{Problem, Severity, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::FileTypeExt;

/// How a tree is covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TreeMode {
    /// inotify watches on every directory.
    Realtime,
    /// Not watched (budget, limit or watcher failure): periodic rescans only.
    RescanOnly,
    /// The tree's parent directory does not exist: nothing to watch; rescans look for it.
    Absent,
}

/// One watched tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TreeStatus {
    /// The tree root (escaped).
    pub path: String,
    /// The configured rule path it comes from.
    pub rule: String,
    /// Realtime or rescan-only.
    pub mode: TreeMode,
    /// Watches the tree needs: its directories and its root's parent. A directory shared with
    /// another tree (`/etc` is the parent of `/etc/sudoers` and a tree of its own) is counted in
    /// each, but watched once.
    pub watches: u64,
    /// Why it is rescan-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the monitor is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MonitorState {
    /// Placing watches.
    Starting,
    /// Building the first baseline (no changes are reported).
    Baselining,
    /// Running a verification rescan.
    Verifying,
    /// Waiting for events.
    Watching,
    /// Stopped (or failed: see `degraded_reasons`).
    Stopped,
}

/// For `agentctl fim status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FimStatus {
    /// What the monitor is doing.
    pub state: MonitorState,
    /// Trees and how each is covered.
    pub trees: Vec<TreeStatus>,
    /// Watches placed (each directory once, however many trees need it).
    pub watches_used: u64,
    /// Watches this agent allows itself.
    pub watch_budget: u64,
    /// The kernel's `fs.inotify.max_user_watches`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_max_user_watches: Option<u64>,
    /// Records in the baseline.
    pub files_in_baseline: u64,
    /// When the baseline was last accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_completed_at: Option<Timestamp>,
    /// The last finished scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scan: Option<ScanSummary>,
    /// The scan running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_progress: Option<ScanProgress>,
    /// Some tree is not covered in realtime, or a gap is open.
    pub degraded: bool,
    /// Why, in sentences.
    pub degraded_reasons: Vec<String>,
    /// Gaps not yet closed by a verification rescan.
    pub open_gaps: Vec<CoverageGap>,
    /// Change events emitted since start (realtime and rescans).
    pub changes_reported: u64,
    /// Of `changes_reported`, those seen in realtime (inotify, and the scan of a directory
    /// that appeared); the rest were found by verification rescans.
    #[serde(default)]
    pub changes_realtime: u64,
    /// Overflows (kernel or internal queue) since start.
    pub overflows: u64,
    /// Queued file events taken off the queue unexamined because the rescan an overflow
    /// started reads what they left (see `Engine::discard_queued`), since start.
    #[serde(default)]
    pub queued_events_answered_by_rescans: u64,
    /// The last verification rescan (or baseline scan) and how it ended, failures included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verification: Option<Verification>,
    /// Writes to the baseline that failed since start (a realtime update, a rename, a
    /// subtree removal, or a scan's staging/apply): each opened or widened a
    /// `store_write_failed` coverage gap that the next successful rescan of its trees closes.
    #[serde(default)]
    pub store_write_failures_total: u64,
    /// Reads of the baseline that failed since start (a change could not be compared): each
    /// opened a `store_read_failed` gap.
    #[serde(default)]
    pub store_read_failures_total: u64,
    /// Events that could not be kept in the event log (`agentctl fim events`); they still
    /// reached the report.
    #[serde(default)]
    pub event_store_failures_total: u64,
    /// Errors of the inotify watcher since start: it could not be created, a watch could not
    /// be placed, or reading events failed.
    #[serde(default)]
    pub watcher_errors_total: u64,
    /// The last store error, for a person (path and SQLite/IO error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_store_error: Option<String>,
    /// The last watcher error, for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_watcher_error: Option<String>,
    /// Package attribution of changes (counts by origin, the latest changes made outside the
    /// package manager); absent without a package oracle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution: Option<crate::package::AttributionReport>,
}

/// How a scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScanOutcome {
    /// Every file in scope was compared (and the baseline updated).
    Completed,
    /// Stopped early (shutdown); resumed at the next start.
    Cancelled,
    /// Failed as a whole (see `error`); its trees are covered by a gap until a retry succeeds.
    Failed,
}

impl ScanOutcome {
    /// The word printed for it (lowercase, as every state word).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }
}

/// The last verification rescan (or baseline scan) the monitor ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Verification {
    /// What the scan was for.
    pub purpose: Purpose,
    /// The trees covered (escaped).
    pub trees: Vec<String>,
    /// When it ended.
    pub finished: Timestamp,
    /// Wall time, milliseconds.
    pub duration_ms: u64,
    /// How it ended.
    pub outcome: ScanOutcome,
    /// Changes it reported.
    pub changes: u64,
    /// Those changes by kind (absent when the scan failed, or in a summary of an older agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<ChangeCounts>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What it found about the baseline itself (absent when it did not get that far).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_integrity: Option<Integrity>,
}

impl FimStatus {
    /// The watches realtime coverage of every tree needs: those placed, plus those the
    /// rescan-only trees would need. Not the sum of every tree's own count: trees share
    /// directories (the default paths watch `/etc` as the parent of `/etc/sudoers`, of
    /// `/etc/pam.d` and as a tree of its own), and a shared directory takes one watch, so that
    /// sum would call full coverage short.
    pub fn watches_wanted(&self) -> u64 {
        let unplaced: u64 =
            self.trees.iter().filter(|t| t.mode == TreeMode::RescanOnly).map(|t| t.watches).sum();
        self.watches_used.saturating_add(unplaced)
    }

    /// The human form of `agentctl fim status`.
    pub fn render_human(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        // Paths and problem details come from the watched tree: escape them for the terminal.
        use std::io::Write as _;
        let mut out = guestward_core::text::TerminalSafe::new(out);
        let out = &mut out;
        let state = serde_json::to_value(self.state).ok().and_then(|v| v.as_str().map(str::to_string));
        writeln!(out, "state:      {}", state.unwrap_or_default())?;
        writeln!(
            out,
            "baseline:   {} entries, completed {}",
            self.files_in_baseline,
            self.baseline_completed_at.map(|t| t.human().to_string()).unwrap_or_else(|| "never".into())
        )?;
        if let Some(s) = &self.last_scan {
            writeln!(
                out,
                "last scan:  {} ({} changes; {}: {} file(s) hashed, {} reused)",
                s.finished.human(),
                s.changes,
                s.stats.rehash.as_str(),
                s.stats.files_hashed,
                s.stats.reused
            )?;
        }
        if let Some(p) = &self.scan_progress {
            writeln!(
                out,
                "scanning:   {}/{} entries, {} hashed",
                p.entries_done,
                p.entries_seen.max(p.baseline_entries),
                guestward_core::human::bytes(p.bytes_hashed)
            )?;
        }
        if let Some(v) = &self.last_verification {
            let outcome = v.outcome.as_str();
            writeln!(
                out,
                "verified:   {} {outcome} in {:.1} s{}",
                v.finished.human(),
                v.duration_ms as f64 / 1000.0,
                v.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
            )?;
        }
        // Live changes next to what the last verification found: an operator asking "did
        // anything change?" needs both (realtime events between verifications, and what a
        // rescan found that realtime did not see).
        writeln!(
            out,
            "changes:    {} since start ({} realtime, {} by rescans){}",
            self.changes_reported,
            self.changes_realtime,
            self.changes_reported.saturating_sub(self.changes_realtime),
            match &self.last_verification {
                Some(v) => format!(
                    "; {} at the last verification{}",
                    v.changes,
                    v.counts.map(|c| format!(" ({})", c.human())).unwrap_or_default()
                ),
                None => String::new(),
            }
        )?;
        if let Some(a) = &self.attribution {
            let c = &a.counts;
            writeln!(
                out,
                "packages:   {} transaction(s) ({} change(s) verified against the new packages), {} change(s) OUTSIDE the package manager, {} conffile edit(s), {} package file(s) not matching at the last full check",
                c.transactions,
                c.package_transaction,
                c.outside_package_manager,
                c.conffile_edit,
                c.baseline_mismatches
            )?;
            if let Some(h) = &a.holding {
                writeln!(
                    out,
                    "  HOLDING {} change(s) while {} transaction {} runs (seen since {}): judged against the new packages when it ends",
                    h.held_changes,
                    h.transaction.manager.as_str(),
                    h.transaction.id,
                    h.transaction.started.human()
                )?;
            }
            for o in &a.outside {
                writeln!(out, "  OUTSIDE {}: {}", o.path, o.package.human())?;
            }
        }
        writeln!(out, "watches:    {} of a budget of {}", self.watches_used, self.watch_budget)?;
        // Always shown, zero included: "no write failed" is worth seeing on a host whose disk
        // filled up once.
        writeln!(
            out,
            "errors:     {} failed baseline write(s), {} failed baseline read(s), {} failed event log write(s), {} watcher error(s)",
            self.store_write_failures_total,
            self.store_read_failures_total,
            self.event_store_failures_total,
            self.watcher_errors_total
        )?;
        if let Some(e) = &self.last_store_error {
            writeln!(out, "  last store error:   {e}")?;
        }
        if let Some(e) = &self.last_watcher_error {
            writeln!(out, "  last watcher error: {e}")?;
        }
        for t in &self.trees {
            let mode = match t.mode {
                TreeMode::Realtime => "realtime",
                TreeMode::RescanOnly => "rescan-only",
                TreeMode::Absent => "absent",
            };
            writeln!(
                out,
                "  {:11} {}{}",
                mode,
                t.path,
                t.reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default()
            )?;
        }
        if self.degraded {
            writeln!(out, "coverage:   DEGRADED")?;
            for r in &self.degraded_reasons {
                writeln!(out, "  - {r}")?;
            }
            for g in &self.open_gaps {
                writeln!(
                    out,
                    "  - open gap #{} since {}: {} on {}: {}",
                    g.id,
                    g.start.human(),
                    g.cause.as_str(),
                    g.trees.join(", "),
                    g.detail
                )?;
            }
        } else {
            writeln!(out, "coverage:   complete")?;
        }
        Ok(())
    }

    /// Recomputes `degraded` and `degraded_reasons` from the trees, the open gaps and the
    /// last verification (called whenever one of them changes).
    pub fn refresh_degraded(&mut self) {
        let mut reasons: Vec<String> = self
            .trees
            .iter()
            .filter(|t| t.mode == TreeMode::RescanOnly)
            .map(|t| {
                format!(
                    "{} is checked by periodic rescans only: {}",
                    t.path,
                    t.reason.clone().unwrap_or_default()
                )
            })
            .collect();
        if let Some(v) = self.last_verification.as_ref().filter(|v| v.outcome == ScanOutcome::Failed) {
            reasons.push(format!(
                "the last scan ({}) failed: {}; it is retried",
                v.trees.join(", "),
                v.error.clone().unwrap_or_default()
            ));
        }
        for g in &self.open_gaps {
            reasons.push(format!(
                "coverage gap #{} ({}) is open on {}",
                g.id,
                g.cause.as_str(),
                g.trees.join(", ")
            ));
        }
        self.degraded = !reasons.is_empty();
        self.degraded_reasons = reasons;
    }

    /// The status of a monitor that has just started.
    pub fn starting() -> Self {
        Self {
            state: MonitorState::Starting,
            trees: Vec::new(),
            watches_used: 0,
            watch_budget: 0,
            kernel_max_user_watches: None,
            files_in_baseline: 0,
            baseline_completed_at: None,
            last_scan: None,
            scan_progress: None,
            degraded: false,
            degraded_reasons: Vec::new(),
            open_gaps: Vec::new(),
            changes_reported: 0,
            changes_realtime: 0,
            overflows: 0,
            queued_events_answered_by_rescans: 0,
            last_verification: None,
            store_write_failures_total: 0,
            store_read_failures_total: 0,
            event_store_failures_total: 0,
            watcher_errors_total: 0,
            last_store_error: None,
            last_watcher_error: None,
            attribution: None,
        }
    }
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
    /// The changes by kind, and the directories folded into them (zero in summaries written
    /// by an older agent).
    #[serde(default)]
    pub counts: ChangeCounts,
    /// What was found about the baseline itself: integrity (seal) and damaged rows.
    #[serde(default)]
    pub baseline: BaselineCheck,
    /// When it finished.
    pub finished: Timestamp,
}

/// Changes of a scan by kind: AIDE's summary (added, removed, changed entries).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChangeCounts {
    /// Entries not in the baseline, present now.
    pub added: u64,
    /// Entries in the baseline, gone now.
    pub removed: u64,
    /// Entries present in both with different checked attributes.
    pub modified: u64,
    /// Entries moved (seen as one inotify rename; a scan sees removed + added instead).
    pub renamed: u64,
    /// Directories whose only change was their mtime/ctime, caused by the entries added or
    /// removed in them: not counted above nor reported on their own (see
    /// `FimChange::folded_parent`).
    pub folded_directories: u64,
}

impl ChangeCounts {
    /// Counts one reported change.
    pub fn count(&mut self, kind: crate::events::ChangeKind) {
        use crate::events::ChangeKind;
        let n = match kind {
            ChangeKind::Added => &mut self.added,
            ChangeKind::Removed => &mut self.removed,
            ChangeKind::Modified => &mut self.modified,
            ChangeKind::Renamed => &mut self.renamed,
        };
        *n += 1;
    }

    /// `1 added, 0 removed, 2 modified` (`, 1 renamed` when there were renames).
    pub fn human(&self) -> String {
        let mut s = format!("{} added, {} removed, {} modified", self.added, self.removed, self.modified);
        if self.renamed > 0 {
            s.push_str(&format!(", {} renamed", self.renamed));
        }
        s
    }
}

/// Progress of a scan, for a progress bar or `agentctl fim baseline`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ScanProgress {
    /// Entries found by the walk so far.
    pub entries_seen: u64,
    /// Entries recorded.
    pub entries_done: u64,
    /// Entries whose record was kept from an interrupted run of the same scan.
    pub entries_resumed: u64,
    /// Bytes hashed.
    pub bytes_hashed: u64,
    /// Entries in the baseline before this scan (an estimate of the total; 0 on a first scan).
    pub baseline_entries: u64,
    /// Milliseconds since the scan started.
    pub elapsed_ms: u64,
    /// The walk is finished (`entries_seen` is final).
    pub walk_done: bool,
}

/// Counters of a finished scan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ScanStats {
    /// Entries recorded.
    pub entries: u64,
    /// Entries kept from an interrupted run.
    pub resumed: u64,
    /// Bytes hashed.
    pub bytes_hashed: u64,
    /// Problems met (the first ones are in `problems`).
    pub problem_count: u64,
    /// The first problems.
    pub problems: Vec<Problem>,
    /// When the scan started.
    pub started: Option<Timestamp>,
    /// Wall time.
    pub duration_ms: u64,
    /// The scan was cancelled before the end.
    pub cancelled: bool,
    /// Which files the scan read again (absent in summaries of an older agent: all).
    #[serde(default)]
    pub rehash: Rehash,
    /// Regular files whose content was read and hashed.
    #[serde(default)]
    pub files_hashed: u64,
    /// Entries whose recorded hashes, extended attributes and link target were kept from the
    /// baseline because their size, mtime, ctime and inode had not changed (metadata-first
    /// scans only; see [`Rehash::Changed`]).
    #[serde(default)]
    pub reused: u64,
}

impl ScanStats {
    /// `, N unreadable (see --json)` when entries could not be read, for the summary lines of
    /// `check` and `init`: what a baseline lacks is said where its size is.
    pub fn unreadable_note(&self) -> String {
        match self.problem_count {
            0 => String::new(),
            n => format!(", {n} unreadable (see --json)"),
        }
    }

    /// `, N resumed from an interrupted run` when this run finished one that was stopped, for
    /// the same summary lines.
    pub fn resumed_note(&self) -> String {
        match self.resumed {
            0 => String::new(),
            n => format!(", {n} resumed from an interrupted run"),
        }
    }
}

/// Which entries a scan reads again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Rehash {
    /// Every regular file is read and hashed, every attribute read (`fim init`, `fim check`,
    /// the daemon's full rehash).
    #[default]
    All,
    /// Metadata first, like git's index: an entry whose type, size, mtime, ctime, inode,
    /// mode and owner equal its baseline record keeps the baseline's hashes, extended
    /// attributes and link target; only the others are read (`fim check --fast`, the
    /// daemon's scheduled rescans). ctime cannot be set from user space, so content written
    /// through the filesystem always moves it; what it misses (writes to the raw device, a
    /// clock set back) is caught by the periodic full rehash.
    Changed,
}

impl Rehash {
    /// The name shown in summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "full",
            Self::Changed => "metadata-first",
        }
    }
}

/// Baseline problems kept in a report (all are counted).
pub const MAX_BASELINE_PROBLEMS: usize = 200;

/// How far the baseline itself can be trusted, as found by a scan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Integrity {
    /// Not examined (a cancelled scan, or a summary written by an older agent).
    #[default]
    NotChecked,
    /// Every row compared carries a valid seal, and the row set matches its seal.
    Verified,
    /// The baseline was (re)built and sealed with the key by this scan (`init`, `update`).
    Sealed,
    /// No usable key: a row rewritten outside the agent would not be noticed.
    Unverified,
    /// A key is configured but the baseline carries no seal made with it (built before the
    /// key existed or without it, with another key, or the seal was removed).
    Unsealed,
    /// Rows were rewritten, added or removed outside the agent.
    Tampered,
}

impl Integrity {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotChecked => "not checked",
            Self::Verified => "verified",
            Self::Sealed => "sealed",
            Self::Unverified => "unverified",
            Self::Unsealed => "unsealed",
            Self::Tampered => "TAMPERED",
        }
    }
}

/// What a scan found about the baseline database itself: its integrity and its damaged rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BaselineCheck {
    /// Integrity verdict.
    pub integrity: Integrity,
    /// How urgent it is: `high` for tampering; `medium` for damage or a missing seal; `low`
    /// when unverified; `info` otherwise.
    pub severity: Severity,
    /// One sentence explaining the verdict.
    pub detail: String,
    /// The id of the key used, when one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Rows whose values no agent writes (named in `problems` with the column).
    pub damaged_rows: u64,
    /// Rows whose seal does not match.
    pub tampered_rows: u64,
    /// Problems found (`baseline_damaged`, `baseline_tampered`, `baseline_unsealed`,
    /// `baseline_unverified`, `packages_unverified`); at most [`MAX_BASELINE_PROBLEMS`], all counted in
    /// `problem_count`.
    pub problems: Vec<Problem>,
    /// All problems found.
    pub problem_count: u64,
    /// Package files in scope that do not match their package (`init` and full checks, with
    /// a package oracle): at most [`crate::package::MAX_REPORTED_OUTSIDE`] listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub package_mismatches: Vec<crate::package::OutsideChange>,
    /// All of them (conffile edits included).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub package_mismatch_count: u64,
    /// How the package files were verified, or why not (absent: not attempted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_verification: Option<String>,
}

/// How [`BaselineCheck::package_verification`] starts when the package files were not verified.
pub const PACKAGES_NOT_VERIFIED: &str = "package files not verified";

/// The code of a [`BaselineCheck::problems`] entry naming a part of the package databases that
/// could not be read, whose files the trust anchor therefore did not verify.
pub const PACKAGES_UNVERIFIED: &str = "packages_unverified";

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Default for BaselineCheck {
    fn default() -> Self {
        Self {
            integrity: Integrity::NotChecked,
            severity: Severity::Info,
            detail: String::new(),
            key_id: None,
            damaged_rows: 0,
            tampered_rows: 0,
            problems: Vec::new(),
            problem_count: 0,
            package_mismatches: Vec::new(),
            package_mismatch_count: 0,
            package_verification: None,
        }
    }
}

/// How a package file the trust anchor flagged is named in `fim init`/`check` output.
fn mismatch_label(judged: &crate::package::PackageAttribution) -> &'static str {
    match (judged.origin, &judged.actual) {
        // dpkg keeps a conffile the administrator deleted deleted: a choice, like an edit.
        (crate::package::ChangeOrigin::ConffileEdit, None) => "CONFFILE REMOVED",
        (crate::package::ChangeOrigin::ConffileEdit, Some(_)) => "CONFFILE EDITED",
        _ => "PACKAGE MISMATCH",
    }
}

impl BaselineCheck {
    /// Records a problem (kept up to the cap, always counted).
    pub fn problem(&mut self, p: Problem) {
        self.problem_count += 1;
        if self.problems.len() < MAX_BASELINE_PROBLEMS {
            self.problems.push(p);
        }
    }

    /// The package files the trust anchor flagged, a line each, and how many more it found
    /// than the report lists. `out` escapes for the terminal (see `CheckReport::render_human`).
    fn render_package_mismatches(&self, out: &mut dyn Write) -> std::io::Result<()> {
        for m in &self.package_mismatches {
            writeln!(out, "{}: {} ({})", mismatch_label(&m.package), m.path, m.package.human())?;
        }
        // What of the package databases could not be read: its files were not judged.
        for p in self.problems.iter().filter(|p| p.code == PACKAGES_UNVERIFIED) {
            writeln!(out, "NOT VERIFIED: {p}")?;
        }
        if self.package_mismatch_count > self.package_mismatches.len() as u64 {
            writeln!(
                out,
                "... and {} more package file(s) not matching their package (guestward-agent fim verify-packages)",
                self.package_mismatch_count - self.package_mismatches.len() as u64
            )?;
        }
        Ok(())
    }

    /// Package files in scope differ from their package (conffiles aside).
    pub fn package_files_differ(&self) -> bool {
        self.package_mismatch_count > self.package_mismatches.len() as u64
            || self
                .package_mismatches
                .iter()
                .any(|m| m.package.origin != crate::package::ChangeOrigin::ConffileEdit)
    }

    /// The package files could not be verified (`package_verification` says why).
    pub fn package_verification_failed(&self) -> bool {
        self.package_verification.as_deref().is_some_and(|v| v.starts_with(PACKAGES_NOT_VERIFIED))
    }

    /// Whether the baseline cannot be relied on: tampered, damaged, or a configured key that
    /// sealed nothing. `fim check` then exits 2 even though it prints what it could compare.
    pub fn untrusted(&self) -> bool {
        matches!(self.integrity, Integrity::Tampered | Integrity::Unsealed) || self.damaged_rows > 0
    }

    /// Sets the severity from the findings.
    pub fn grade(&mut self) {
        self.severity = if self.integrity == Integrity::Tampered || self.tampered_rows > 0 {
            Severity::High
        } else if self.damaged_rows > 0 || self.integrity == Integrity::Unsealed {
            Severity::Medium
        } else if self.integrity == Integrity::Unverified {
            Severity::Low
        } else {
            Severity::Info
        };
    }

    /// One line for people: `baseline integrity: verified (all 12 rows match ...)`.
    pub fn human_line(&self) -> String {
        format!("baseline integrity: {} ({})", self.integrity.as_str(), self.detail)
    }
}

/// File type as recorded. Devices, FIFOs and sockets are recorded by type only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link (never followed).
    Symlink,
    /// Character device.
    CharDevice,
    /// Block device.
    BlockDevice,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
}

impl FileKind {
    /// The name used in reports (`file`, `dir`, `symlink`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Dir => "dir",
            Self::Symlink => "symlink",
            Self::CharDevice => "char_device",
            Self::BlockDevice => "block_device",
            Self::Fifo => "fifo",
            Self::Socket => "socket",
        }
    }

    /// From a `lstat` result.
    pub fn of(meta: &std::fs::Metadata) -> Self {
        let t = meta.file_type();
        if t.is_symlink() {
            Self::Symlink
        } else if t.is_dir() {
            Self::Dir
        } else if t.is_file() {
            Self::File
        } else if t.is_char_device() {
            Self::CharDevice
        } else if t.is_block_device() {
            Self::BlockDevice
        } else if t.is_fifo() {
            Self::Fifo
        } else {
            Self::Socket
        }
    }

    /// Stable small integer for the store.
    pub fn code(self) -> i64 {
        self as i64
    }

    /// Inverse of [`Self::code`].
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => Self::File,
            1 => Self::Dir,
            2 => Self::Symlink,
            3 => Self::CharDevice,
            4 => Self::BlockDevice,
            5 => Self::Fifo,
            6 => Self::Socket,
            _ => return None,
        })
    }
}

/// The content was larger than the rule's `max_file_size_bytes`: attributes only.
pub const FLAG_HASH_SKIPPED: u8 = 1;
/// The file kept changing while hashed; the hash is of the last read.
pub const FLAG_UNSTABLE: u8 = 2;
/// The content could not be read (permission, I/O error); attributes only.
pub const FLAG_UNREADABLE: u8 = 4;

pub use guestward_core::text::hex;

/// Changes kept in a one-shot report; beyond this only the count grows (a tree replaced
/// wholesale must not exhaust memory).
pub const MAX_REPORTED_CHANGES: usize = 100_000;

/// Exit code for "no changes".
pub const EXIT_CLEAN: i32 = 0;
/// Exit code for "changes found".
pub const EXIT_CHANGES: i32 = 1;
/// Exit code for "could not check".
pub const EXIT_ERROR: i32 = 2;

/// Result of `fim check` / `fim update` (and `fim init`, with no changes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CheckReport {
    /// The scan.
    pub summary: ScanSummary,
    /// Changes (at most [`MAX_REPORTED_CHANGES`]; `summary.changes` has the full count).
    pub changes: Vec<FimChange>,
}

impl CheckReport {
    /// 0 when nothing changed (and no package file in scope differs from its package), 1
    /// otherwise; 2 when the baseline itself cannot be relied on
    /// (a clean comparison against a tampered baseline proves nothing).
    pub fn exit_code(&self) -> i32 {
        if self.summary.baseline.untrusted() {
            EXIT_ERROR
        } else if self.summary.changes == 0 && !self.summary.baseline.package_files_differ() {
            EXIT_CLEAN
        } else {
            EXIT_CHANGES
        }
    }

    /// `fim init`'s exit code. The new baseline is accepted whatever it holds; 1 says that the
    /// trust anchor found package files in it that already differ from their packages (conffile
    /// edits aside), as `fim check` says every time after: an image baked from a machine that
    /// was already compromised must not pass a build step that only looks at the exit code.
    pub fn init_exit_code(&self) -> i32 {
        if self.summary.baseline.package_files_differ() { EXIT_CHANGES } else { EXIT_CLEAN }
    }

    /// `fim init`'s human output: the new baseline's size, its integrity, the package files
    /// the trust anchor flagged and its verdict line.
    pub fn render_init_human(&self, out: &mut dyn Write) -> std::io::Result<()> {
        // A package's name, version and paths come from its database, which under `--root` is
        // an image's, written by whoever made it: escape them for the terminal.
        let mut out = guestward_core::text::TerminalSafe::new(out);
        let out = &mut out;
        let s = &self.summary.stats;
        writeln!(
            out,
            "baseline: {} entries, {} hashed in {:.2} s{}{}",
            s.entries,
            guestward_core::human::bytes(s.bytes_hashed),
            s.duration_ms as f64 / 1000.0,
            s.resumed_note(),
            // Each unreadable entry is also on stderr.
            s.unreadable_note()
        )?;
        let b = &self.summary.baseline;
        writeln!(out, "{}", b.human_line())?;
        b.render_package_mismatches(out)?;
        if let Some(v) = &b.package_verification {
            writeln!(out, "{v}")?;
        }
        Ok(())
    }

    /// The human list: one line per change, the baseline's own problems, a summary line and
    /// the baseline's integrity.
    pub fn render_human(&self, out: &mut dyn Write) -> std::io::Result<()> {
        // Paths and problem details come from the watched tree: escape them for the terminal.
        let mut out = guestward_core::text::TerminalSafe::new(out);
        let out = &mut out;
        // AIDE's layout: each entry, then under a changed one each attribute old -> new.
        for c in &self.changes {
            writeln!(out, "{}", c.human())?;
            for line in c.human_details() {
                writeln!(out, "{line}")?;
            }
        }
        let b = &self.summary.baseline;
        // Tampered and damaged rows one per line (unsealed/unverified: the integrity line says it).
        for p in &b.problems {
            let label = match p.code.as_str() {
                "baseline_tampered" => "TAMPERING",
                "baseline_damaged" => "DAMAGE",
                _ => continue,
            };
            writeln!(out, "{label}: {}", p.message)?;
        }
        b.render_package_mismatches(out)?;
        if b.problem_count > b.problems.len() as u64 {
            writeln!(
                out,
                "... and {} more baseline problem(s) (see --json)",
                b.problem_count - b.problems.len() as u64
            )?;
        }
        let s = &self.summary.stats;
        let counts = &self.summary.counts;
        writeln!(
            out,
            "{} change(s): {}; {} entries checked, {} hashed in {:.2} s{}{}{}",
            self.summary.changes,
            counts.human(),
            s.entries,
            guestward_core::human::bytes(s.bytes_hashed),
            s.duration_ms as f64 / 1000.0,
            s.resumed_note(),
            match s.rehash {
                Rehash::All => String::new(),
                Rehash::Changed => format!(
                    " (metadata first: {} file(s) hashed, {} entries unchanged since the baseline reused)",
                    s.files_hashed, s.reused
                ),
            },
            s.unreadable_note(),
        )?;
        if counts.folded_directories > 0 {
            let n = counts.folded_directories;
            writeln!(
                out,
                "{}",
                if n == 1 {
                    "1 directory not listed on its own: its mtime/ctime moved only with the entries added or removed in it (folded_parent in --json)".to_string()
                } else {
                    format!(
                        "{n} directories not listed on their own: their mtime/ctime moved only with the entries added or removed in them (folded_parent in --json)"
                    )
                }
            )?;
        }
        if b.integrity != Integrity::NotChecked {
            writeln!(out, "{}", b.human_line())?;
        }
        if let Some(v) = &b.package_verification {
            writeln!(out, "{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::{
        ChangeOrigin, DigestAlgo, PackageAttribution, PackageDigest, PackageManager, PackageOwner,
    };

    #[test]
    fn a_deleted_conffile_is_named_removed_an_edited_one_edited() {
        let digest = |hex: &str| Some(PackageDigest { algo: DigestAlgo::Md5, hex: hex.into() });
        let judged = |origin, actual| PackageAttribution {
            owner: PackageOwner {
                manager: PackageManager::Dpkg,
                name: "p".into(),
                version: "1".into(),
                arch: None,
            },
            origin,
            conffile: origin == ChangeOrigin::ConffileEdit,
            expected: digest("aa"),
            actual,
            transaction: None,
        };
        assert_eq!(mismatch_label(&judged(ChangeOrigin::ConffileEdit, None)), "CONFFILE REMOVED");
        assert_eq!(mismatch_label(&judged(ChangeOrigin::ConffileEdit, digest("bb"))), "CONFFILE EDITED");
        assert_eq!(mismatch_label(&judged(ChangeOrigin::OutsidePackageManager, None)), "PACKAGE MISMATCH");
    }
}
