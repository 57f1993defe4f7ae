//! One-shot mode for cron and for comparison with AIDE: `guestward-agent fim init | check |
//! update`. The daemon's CLI parses arguments and calls these; they use the same engine as the
//! realtime monitor.
//!
//! Exit codes of `check`/`update` ([`CheckReport::exit_code`]): 0 no changes, 1 changes found,
//! 2 when the baseline cannot be relied on (tampered, damaged rows, or a configured key that
//! sealed nothing: the report is still printed); any [`FimError`] maps to 2 as well.

use crate::config::Config;
use crate::engine::{Fim, FimError, Purpose, ScanSummary, Scope};
use crate::events::{FimChange, Mechanism};
use crate::integrity::Integrity;
use crate::scan::{ScanOptions, ScanProgress};
use guestward_core::HostRoot;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

/// Changes kept in a one-shot report; beyond this only the count grows (a tree replaced
/// wholesale must not exhaust memory).
pub const MAX_REPORTED_CHANGES: usize = 100_000;

/// Exit code for "no changes".
pub const EXIT_CLEAN: i32 = 0;
/// Exit code for "changes found".
pub const EXIT_CHANGES: i32 = 1;
/// Exit code for "could not check".
pub const EXIT_ERROR: i32 = 2;

/// Inputs shared by the one-shot commands (`--config`, `--state-dir`, `--root`).
#[derive(Debug, Clone)]
pub struct OneShot {
    /// The `[fim]` section.
    pub config: Config,
    /// Where `fim.db` lives.
    pub state_dir: PathBuf,
    /// The filesystem checked.
    pub root: HostRoot,
    /// Draw a progress bar on stderr when it is a terminal.
    pub progress_bar: bool,
}

/// Result of `fim check` / `fim update` (and `fim init`, with no changes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CheckReport {
    /// The scan.
    pub summary: ScanSummary,
    /// Changes (at most [`MAX_REPORTED_CHANGES`]; `summary.changes` has the full count).
    pub changes: Vec<FimChange>,
}

impl CheckReport {
    /// 0 when nothing changed, 1 otherwise; 2 when the baseline itself cannot be relied on
    /// (a clean comparison against a tampered baseline proves nothing).
    pub fn exit_code(&self) -> i32 {
        if self.summary.baseline.untrusted() {
            EXIT_ERROR
        } else if self.summary.changes == 0 {
            EXIT_CLEAN
        } else {
            EXIT_CHANGES
        }
    }

    /// The human list: one line per change, the baseline's own problems, a summary line and
    /// the baseline's integrity.
    pub fn render_human(&self, out: &mut dyn Write) -> std::io::Result<()> {
        // Paths and problem details come from the watched tree: escape them for the terminal.
        let mut out = guestward_core::text::TerminalSafe::new(out);
        let out = &mut out;
        for c in &self.changes {
            writeln!(out, "{}", c.human())?;
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
        if b.problem_count > b.problems.len() as u64 {
            writeln!(
                out,
                "... and {} more baseline problem(s) (see --json)",
                b.problem_count - b.problems.len() as u64
            )?;
        }
        let s = &self.summary.stats;
        writeln!(
            out,
            "{} change(s); {} entries, {} MiB hashed in {:.2} s{}{}",
            self.summary.changes,
            s.entries,
            s.bytes_hashed >> 20,
            s.duration_ms as f64 / 1000.0,
            if s.resumed > 0 {
                format!(", {} resumed from an interrupted run", s.resumed)
            } else {
                String::new()
            },
            if s.problem_count > 0 {
                format!(", {} unreadable (see --json)", s.problem_count)
            } else {
                String::new()
            },
        )?;
        if b.integrity != Integrity::NotChecked {
            writeln!(out, "{}", b.human_line())?;
        }
        Ok(())
    }
}

fn run(o: &OneShot, purpose: Purpose) -> Result<CheckReport, FimError> {
    let mut fim = Fim::new(o.config.clone(), o.root.clone(), &o.state_dir)?;
    let created = if purpose == Purpose::Init { fim.create_key_if_missing() } else { None };
    let bar = (o.progress_bar && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{wide_bar}] {pos}/{len} entries {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let draw = |p: &ScanProgress| {
        if let Some(bar) = &bar {
            // Until the walk is over the total is a guess: the baseline's size, or what was seen.
            let len = if p.walk_done { p.entries_seen } else { p.entries_seen.max(p.baseline_entries) };
            bar.set_length(len);
            bar.set_position(p.entries_done);
            bar.set_message(format!("{} MiB hashed", p.bytes_hashed >> 20));
        }
    };
    let opts = ScanOptions {
        rate: o.config.initial_scan_rate,
        threads: o.config.threads,
        progress: Some(&draw),
        cancel: None,
    };
    let mut changes = Vec::new();
    let summary = fim.scan(purpose, &Scope::All, Mechanism::Rescan, &opts, &mut |c| {
        if changes.len() < MAX_REPORTED_CHANGES {
            changes.push(c);
        }
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mut summary = summary;
    if let Some(path) = created {
        summary.baseline.detail.push_str(&format!("; the key was created at {} (mode 0600)", path.display()));
    }
    Ok(CheckReport { summary, changes })
}

/// `fim init`: builds the baseline (resuming an interrupted init).
pub fn init(o: &OneShot) -> Result<CheckReport, FimError> {
    run(o, Purpose::Init)
}

/// `fim check`: compares with the baseline, changes nothing.
pub fn check(o: &OneShot) -> Result<CheckReport, FimError> {
    run(o, Purpose::Check)
}

/// `fim update`: reports changes and accepts the current state as the new baseline.
pub fn update(o: &OneShot) -> Result<CheckReport, FimError> {
    run(o, Purpose::Update)
}
