//! The FIM section of the report ([`FimReport`]): baseline state, entries, watches granted and
//! wanted, the last verification, open coverage gaps and error counters; and the findings drawn
//! from it ([`fim_findings`]).
//!
//! Built two ways:
//! - from the running monitor (`Monitor::section`, through [`FimReport::from_status`]);
//! - read-only from the stored baseline, for a one-shot caller with no monitor running
//!   (`FimReport::from_state_dir`, feature `collect`): it opens `fim.db` read-only and never
//!   creates it. What only a running monitor knows (watches, open gaps, error counters) is
//!   then zero or empty, and the section's note says so.
//!
//! Everything here but `from_state_dir` is pure (model types and functions of them), available
//! without the `collect` feature.

use crate::events::{CoverageGap, GapCause};
use crate::model::{FimStatus, MonitorState, ScanOutcome, ScanProgress, TreeMode, Verification};
use guestward_core::{Finding, Problem, Section, Severity, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Instant;

/// Open coverage gaps: some changes may have gone unreported until a rescan closes them.
pub const COVERAGE_GAPS_OPEN: &str = "GW-FIM-001";
/// Some trees are not watched in realtime (watch budget, kernel limit, watcher failure).
pub const REALTIME_COVERAGE_INCOMPLETE: &str = "GW-FIM-002";
/// Writes to the baseline failed (disk full, read-only or failing state directory).
pub const BASELINE_WRITES_FAILED: &str = "GW-FIM-003";
/// The last verification found the baseline rewritten outside the agent.
pub const BASELINE_TAMPERED: &str = "GW-FIM-004";
/// The last verification (or baseline) scan failed as a whole.
pub const VERIFICATION_FAILED: &str = "GW-FIM-005";
/// A package-owned file changed outside any package transaction, or its new content does not
/// match its package.
pub const PACKAGE_FILE_CHANGED_OUTSIDE: &str = "GW-FIM-006";
/// A package-owned file does not match its package at a baseline or full verification.
pub const PACKAGE_FILE_MISMATCH: &str = "GW-FIM-007";
/// A package's configuration file was edited outside a package transaction.
pub const CONFFILE_EDITED: &str = "GW-FIM-008";

/// Every finding id this crate can raise (for the finding catalogue).
pub const FINDING_IDS: &[&str] = &[
    COVERAGE_GAPS_OPEN,
    REALTIME_COVERAGE_INCOMPLETE,
    BASELINE_WRITES_FAILED,
    BASELINE_TAMPERED,
    VERIFICATION_FAILED,
    PACKAGE_FILE_CHANGED_OUTSIDE,
    PACKAGE_FILE_MISMATCH,
    CONFFILE_EDITED,
];

/// The `source` of FIM findings.
pub const SOURCE: &str = "fim";

/// Where the baseline stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum BaselineState {
    /// No baseline: nothing is compared, no change can be reported.
    None,
    /// The first baseline is being built (or an interrupted build waits to be resumed); no
    /// change is reported until it completes.
    Building {
        /// How far it got (absent when read from the state directory of a stopped agent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        progress: Option<ScanProgress>,
        /// Entries already staged (read from the state directory).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        entries_staged: Option<u64>,
    },
    /// Complete: changes are compared with it.
    Complete {
        /// When it was last accepted (built, or updated by `fim update`).
        completed_at: Timestamp,
    },
}

/// The FIM section of a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FimReport {
    /// Where the baseline stands.
    pub baseline: BaselineState,
    /// Entries (files, directories, links...) in the baseline.
    pub entries: u64,
    /// What the monitor is doing; absent when read from the state directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<MonitorState>,
    /// inotify watches placed.
    pub watches_granted: u64,
    /// Watches the configured trees need for full realtime coverage (directories, plus the
    /// parent of each tree root; a directory two trees share counts once). Fewer granted than
    /// wanted: some trees are on rescans only.
    pub watches_wanted: u64,
    /// Watches this agent allows itself.
    pub watch_budget: u64,
    /// Trees not covered in realtime, with why (escaped paths).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rescan_only_trees: Vec<String>,
    /// The last verification rescan (or baseline scan): when, how it ended, how long it took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verification: Option<Verification>,
    /// Coverage gaps not yet closed by a verification rescan: trees (`trees`), reason
    /// (`cause`), since when (`start`), and the details.
    pub open_gaps: Vec<CoverageGap>,
    /// Baseline writes that failed since the monitor started.
    pub store_write_failures_total: u64,
    /// Baseline reads that failed since the monitor started.
    pub store_read_failures_total: u64,
    /// Events that could not be kept in the event log since the monitor started.
    pub event_store_failures_total: u64,
    /// inotify watcher errors since the monitor started.
    pub watcher_errors_total: u64,
    /// Package attribution since the monitor started: changes by origin, and the latest
    /// package files changed outside the package manager (absent without a package oracle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution: Option<crate::package::AttributionReport>,
}

/// The human summary of a FIM section (`guestward-agent scan`, `agentctl report`). Paths come
/// from the watched host: callers write through [`guestward_core::text::TerminalSafe`].
pub fn render_summary(report: &FimReport, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let baseline = match &report.baseline {
        BaselineState::None => "none (run `guestward-agent fim init`, or start the daemon)".to_string(),
        BaselineState::Building { .. } => "being built".to_string(),
        BaselineState::Complete { completed_at } => format!("complete since {}", completed_at.human()),
    };
    writeln!(out, "   baseline  {baseline}, {} entries", report.entries)?;
    if report.monitor.is_some() {
        writeln!(
            out,
            "   realtime  {} of {} watches granted (budget {})",
            report.watches_granted, report.watches_wanted, report.watch_budget
        )?;
    }
    if let Some(v) = &report.last_verification {
        let outcome = v.outcome.as_str();
        writeln!(
            out,
            "   verified  {} ({outcome}, {} change(s){}, {} ms)",
            v.finished.human(),
            v.changes,
            v.counts.map(|c| format!(": {}", c.human())).unwrap_or_default(),
            v.duration_ms
        )?;
    }
    for gap in &report.open_gaps {
        writeln!(
            out,
            "   gap       {} since {}: {}",
            gap.cause.as_str(),
            gap.start.human(),
            gap.trees.join(", ")
        )?;
    }
    if let Some(a) = &report.attribution {
        let c = &a.counts;
        writeln!(
            out,
            "   packages  {} transaction(s), {} change(s) by the package manager, {} OUTSIDE it, {} conffile edit(s), {} unverified, {} mismatch(es) at baseline",
            c.transactions,
            c.package_transaction,
            c.outside_package_manager,
            c.conffile_edit,
            c.unverified,
            c.baseline_mismatches
        )?;
        for o in &a.outside {
            writeln!(out, "   OUTSIDE   {}: {}", o.path, o.package.human())?;
        }
    }
    Ok(())
}

impl FimReport {
    /// The report of a running monitor, from its status.
    pub fn from_status(s: &FimStatus) -> Self {
        let baseline = match (s.baseline_completed_at, s.state) {
            (Some(completed_at), _) => BaselineState::Complete { completed_at },
            (None, MonitorState::Baselining) => {
                BaselineState::Building { progress: s.scan_progress.clone(), entries_staged: None }
            }
            (None, _) => BaselineState::None,
        };
        Self {
            baseline,
            entries: s.files_in_baseline,
            monitor: Some(s.state),
            watches_granted: s.watches_used,
            watches_wanted: s.watches_wanted(),
            watch_budget: s.watch_budget,
            rescan_only_trees: s
                .trees
                .iter()
                .filter(|t| t.mode == TreeMode::RescanOnly)
                .map(|t| match &t.reason {
                    Some(r) => format!("{} ({r})", t.path),
                    None => t.path.clone(),
                })
                .collect(),
            last_verification: s.last_verification.clone(),
            open_gaps: s.open_gaps.clone(),
            store_write_failures_total: s.store_write_failures_total,
            store_read_failures_total: s.store_read_failures_total,
            event_store_failures_total: s.event_store_failures_total,
            watcher_errors_total: s.watcher_errors_total,
            attribution: s.attribution.clone(),
        }
    }

    /// What makes the section degraded: every open gap, and trees not covered in realtime.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out: Vec<Problem> = self
            .open_gaps
            .iter()
            .map(|g| {
                Problem::new(
                    format!("coverage_gap_{}", g.cause.as_str()),
                    format!(
                        "coverage gap #{} open since {} on {}: {}",
                        g.id,
                        g.start.human(),
                        g.trees.join(", "),
                        g.detail
                    ),
                )
                .with_path(g.trees.join(", "))
            })
            .collect();
        if self.watches_granted < self.watches_wanted {
            out.push(Problem::new(
                "watches_short",
                format!(
                    "{} of the {} inotify watches the trees need were placed; {} checked by periodic rescans only",
                    self.watches_granted,
                    self.watches_wanted,
                    if self.rescan_only_trees.is_empty() {
                        "the rest is".to_string()
                    } else {
                        self.rescan_only_trees.join("; ")
                    }
                ),
            ));
        }
        out
    }

    /// The section: `degraded` when a gap is open or fewer watches were granted than wanted,
    /// `ok` otherwise.
    pub fn into_section(self, started: Instant) -> Section<FimReport> {
        let problems = self.problems();
        Section::from_parts(Some(self), problems, started)
    }

    /// The section from the stored baseline, read-only: `fim.db` in `state_dir` is opened
    /// read-only and never created. No baseline there: the section is `skipped` with a note
    /// saying how to create one. An unreadable database: `error` naming it.
    #[cfg(feature = "collect")]
    pub fn from_state_dir(state_dir: &std::path::Path) -> Section<FimReport> {
        let started = Instant::now();
        let store = match crate::store::Store::open_read_only(state_dir) {
            Ok(Some(s)) => s,
            Ok(None) => return Section::skipped(no_baseline_note(state_dir)),
            Err(e) => {
                return Section::failed(
                    Problem::new("store_unreadable", e.to_string())
                        .with_path(state_dir.join(crate::store::DB_FILE).display().to_string()),
                    started,
                );
            }
        };
        match crate::engine::summarize_store(&store) {
            Ok(None) => Section::skipped(no_baseline_note(state_dir)),
            Ok(Some(report)) => report.into_section(started).with_note(
                "read from the stored baseline: watches, open coverage gaps and error counters are known only to the running agent (`agentctl fim status`)",
            ),
            Err(e) => Section::failed(
                Problem::new("store_unreadable", e.to_string())
                    .with_path(state_dir.join(crate::store::DB_FILE).display().to_string()),
                started,
            ),
        }
    }
}

#[cfg(feature = "collect")]
fn no_baseline_note(state_dir: &std::path::Path) -> String {
    format!(
        "no FIM baseline in {}: run `guestward-agent fim init`, or start the agent with [fim] enabled",
        state_dir.display()
    )
}

/// The findings a FIM report supports.
pub fn fim_findings(r: &FimReport) -> Vec<Finding> {
    let mut out = Vec::new();
    if !r.open_gaps.is_empty() {
        let store = r.open_gaps.iter().any(|g| {
            matches!(g.cause, GapCause::StoreWriteFailed | GapCause::StoreReadFailed | GapCause::ScanFailed)
        });
        out.push(Finding {
            id: COVERAGE_GAPS_OPEN.to_string(),
            severity: Severity::Medium,
            title: format!(
                "File integrity coverage has {} open gap(s): changes in those trees may not have been reported",
                r.open_gaps.len()
            ),
            evidence: json!({
                "open_gaps": r.open_gaps.iter().map(|g| json!({
                    "id": g.id, "cause": g.cause, "trees": g.trees, "since": g.start, "detail": g.detail,
                })).collect::<Vec<_>>(),
            }),
            remediation: if store {
                "Fix the state directory (free disk space, make it writable); the agent retries on its own and \
                 the next successful rescan closes the gap (`agentctl fim status` shows it)"
                    .to_string()
            } else {
                "Wait for the verification rescan to close the gaps, or request one; gaps that stay open name \
                 trees checked by periodic rescans only (see GW-FIM-002)"
                    .to_string()
            },
            source: SOURCE.to_string(),
        });
    }
    if r.watches_granted < r.watches_wanted {
        out.push(Finding {
            id: REALTIME_COVERAGE_INCOMPLETE.to_string(),
            severity: Severity::Low,
            title: "Some monitored trees are not watched in realtime: their changes are found by periodic rescans only"
                .to_string(),
            evidence: json!({
                "watches_granted": r.watches_granted,
                "watches_wanted": r.watches_wanted,
                "watch_budget": r.watch_budget,
                "rescan_only_trees": r.rescan_only_trees,
            }),
            remediation: "Raise fs.inotify.max_user_watches (sysctl) or fim.max_watches, or narrow fim.paths with \
                          excludes"
                .to_string(),
            source: SOURCE.to_string(),
        });
    }
    if r.store_write_failures_total > 0 {
        out.push(Finding {
            id: BASELINE_WRITES_FAILED.to_string(),
            severity: Severity::Medium,
            title: format!(
                "{} write(s) to the FIM baseline failed since the agent started",
                r.store_write_failures_total
            ),
            evidence: json!({
                "store_write_failures_total": r.store_write_failures_total,
                "store_read_failures_total": r.store_read_failures_total,
            }),
            remediation:
                "Check the state directory's filesystem (free space, read-only remount, I/O errors in \
                          the kernel log); each failure opened a coverage gap that a successful rescan closes"
                    .to_string(),
            source: SOURCE.to_string(),
        });
    }
    if let Some(a) = &r.attribution {
        out.extend(attribution_findings(a));
    }
    if let Some(v) = &r.last_verification {
        if v.baseline_integrity == Some(crate::model::Integrity::Tampered) {
            out.push(Finding {
                id: BASELINE_TAMPERED.to_string(),
                severity: Severity::High,
                title: "The FIM baseline was rewritten outside the agent".to_string(),
                evidence: json!({ "verification": v }),
                remediation:
                    "Treat the host as compromised until explained: compare with a trusted copy, then \
                              accept the current state with `guestward-agent fim update` only once verified"
                        .to_string(),
                source: SOURCE.to_string(),
            });
        }
        if v.outcome == ScanOutcome::Failed {
            out.push(Finding {
                id: VERIFICATION_FAILED.to_string(),
                severity: Severity::Medium,
                title: "The last FIM verification scan failed".to_string(),
                evidence: json!({ "verification": v }),
                remediation:
                    "See the error; the agent retries on its own, and `agentctl fim status` shows when a \
                              rescan succeeds"
                        .to_string(),
                source: SOURCE.to_string(),
            });
        }
    }
    out
}

/// The findings of package attribution: package files changed outside the package manager
/// (high), not matching their package at a baseline (high), conffile edits (low).
pub fn attribution_findings(a: &crate::package::AttributionReport) -> Vec<Finding> {
    let mut out = Vec::new();
    let listed = |baseline: bool| -> Vec<serde_json::Value> {
        a.outside
            .iter()
            .filter(|o| o.at_baseline == baseline)
            .map(|o| {
                json!({
                    "path": o.path,
                    "package": o.package.owner.name,
                    "version": o.package.owner.version,
                    "manager": o.package.owner.manager,
                    "expected": o.package.expected,
                    "actual": o.package.actual,
                    "seen": o.seen,
                })
            })
            .collect()
    };
    let c = &a.counts;
    if c.outside_package_manager > 0 {
        let files = listed(false);
        let first = a.outside.iter().rev().find(|o| !o.at_baseline);
        out.push(Finding {
            id: PACKAGE_FILE_CHANGED_OUTSIDE.to_string(),
            severity: Severity::High,
            title: match first {
                Some(o) => format!(
                    "{} package file(s) changed outside the package manager (latest: {} of package {})",
                    c.outside_package_manager, o.path, o.package.owner.name
                ),
                None => format!("{} package file(s) changed outside the package manager", c.outside_package_manager),
            },
            evidence: json!({ "count": c.outside_package_manager, "files": files }),
            remediation: "Find out who changed the file (no package transaction explains it, and its content is \
                          not the package's): compare with the package (`debsums -c`, `rpm -V`), reinstall the \
                          package to restore it, and treat the host as compromised until explained"
                .to_string(),
            source: SOURCE.to_string(),
        });
    }
    if c.baseline_mismatches > 0 {
        out.push(Finding {
            id: PACKAGE_FILE_MISMATCH.to_string(),
            severity: Severity::High,
            title: format!(
                "{} package file(s) in the FIM baseline do not match their package",
                c.baseline_mismatches
            ),
            evidence: json!({ "count": c.baseline_mismatches, "files": listed(true) }),
            remediation: "The baseline was taken over files that differ from what their package installed: \
                          verify them (`guestward-agent fim verify-packages`), reinstall the packages concerned, \
                          and accept the restored state with `guestward-agent fim update`"
                .to_string(),
            source: SOURCE.to_string(),
        });
    }
    if c.conffile_edit > 0 {
        out.push(Finding {
            id: CONFFILE_EDITED.to_string(),
            severity: Severity::Low,
            title: format!(
                "{} package configuration file(s) edited outside the package manager",
                c.conffile_edit
            ),
            evidence: json!({
                "count": c.conffile_edit,
                "files": a.conffile_edits.iter().map(|o| json!({
                    "path": o.path, "package": o.package.owner.name, "seen": o.seen,
                })).collect::<Vec<_>>(),
            }),
            remediation: "Configuration files are meant to be edited: confirm the edit was intended \
                          (configuration management, an administrator)"
                .to_string(),
            source: SOURCE.to_string(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn report() -> FimReport {
        FimReport {
            baseline: BaselineState::Complete { completed_at: Timestamp::now() },
            entries: 10,
            monitor: Some(MonitorState::Watching),
            watches_granted: 5,
            watches_wanted: 5,
            watch_budget: 100,
            rescan_only_trees: vec![],
            last_verification: None,
            open_gaps: vec![],
            store_write_failures_total: 0,
            store_read_failures_total: 0,
            event_store_failures_total: 0,
            watcher_errors_total: 0,
            attribution: None,
        }
    }

    #[test]
    fn a_clean_report_is_ok_and_raises_nothing() {
        let r = report();
        assert!(fim_findings(&r).is_empty());
        let s = r.into_section(Instant::now());
        assert_eq!(s.status, guestward_core::SectionStatus::Ok);
    }

    #[test]
    fn open_gaps_and_short_watches_degrade_the_section_and_raise_findings() {
        let mut r = report();
        r.watches_wanted = 9;
        r.store_write_failures_total = 2;
        r.open_gaps.push(CoverageGap {
            id: 3,
            cause: GapCause::StoreWriteFailed,
            trees: vec!["/etc/passwd".into()],
            start: Timestamp::now(),
            end: None,
            detail: "database or disk is full".into(),
        });
        let ids: Vec<String> = fim_findings(&r).into_iter().map(|f| f.id).collect();
        assert_eq!(ids, [COVERAGE_GAPS_OPEN, REALTIME_COVERAGE_INCOMPLETE, BASELINE_WRITES_FAILED]);
        for id in &ids {
            assert!(FINDING_IDS.contains(&id.as_str()), "{id} missing from FINDING_IDS");
        }
        let s = r.into_section(Instant::now());
        assert_eq!(s.status, guestward_core::SectionStatus::Degraded);
        assert_eq!(s.problems[0].code, "coverage_gap_store_write_failed");
        assert_eq!(s.problems[0].path.as_deref(), Some("/etc/passwd"));
        assert_eq!(s.problems[1].code, "watches_short");
    }

    #[test]
    fn the_scan_summary_says_what_the_last_verification_found_in_lowercase() {
        let mut r = report();
        r.last_verification = Some(Verification {
            purpose: crate::model::Purpose::Rescan,
            trees: vec!["/etc".into()],
            finished: Timestamp::now(),
            duration_ms: 12,
            outcome: ScanOutcome::Completed,
            changes: 3,
            counts: Some(crate::model::ChangeCounts {
                added: 1,
                removed: 0,
                modified: 2,
                ..Default::default()
            }),
            error: None,
            baseline_integrity: None,
        });
        let mut out = Vec::new();
        render_summary(&r, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("(completed, 3 change(s): 1 added, 0 removed, 2 modified, 12 ms)"), "{out}");
    }

    #[test]
    fn report_schema_generates() {
        let schema = serde_json::to_value(schemars::schema_for!(FimReport)).unwrap();
        assert!(schema["properties"]["baseline"].is_object(), "{schema}");
    }
}
