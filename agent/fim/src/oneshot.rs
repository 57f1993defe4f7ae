//! One-shot mode for cron and for comparison with AIDE: `guestward-agent fim init | check |
//! update`. The daemon's CLI parses arguments and calls these; they use the same engine as the
//! realtime monitor.
//!
//! Exit codes of `check`/`update` ([`CheckReport::exit_code`]): 0 no changes, 1 changes found;
//! any [`FimError`] maps to 2.

use crate::config::Config;
use crate::engine::{Fim, FimError, Purpose, ScanSummary, Scope};
use crate::events::{FimChange, Mechanism};
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
    /// 0 when nothing changed, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.summary.changes == 0 { EXIT_CLEAN } else { EXIT_CHANGES }
    }

    /// The human list: one line per change, then a summary line.
    pub fn render_human(&self, out: &mut dyn Write) -> std::io::Result<()> {
        for c in &self.changes {
            writeln!(out, "{}", c.human())?;
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
        )
    }
}

fn run(o: &OneShot, purpose: Purpose) -> Result<CheckReport, FimError> {
    let fim = Fim::new(o.config.clone(), o.root.clone(), &o.state_dir)?;
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
