//! Runs the language-package walk on a root directory and prints counts; used by
//! `scripts/bench-lang.sh`.
//!
//! Usage: `lang_scan <root> [--json]`

use guestward_core::HostRoot;
use guestward_lang::{Config, Ecosystem};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: lang_scan <root> [--json]");
        return ExitCode::from(2);
    };
    let json = args.next().as_deref() == Some("--json");
    let root = match HostRoot::new(&dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let (report, problems) = guestward_lang::scan(&root, &Config::default());
    let findings = guestward_lang::findings(&report);
    if json {
        let out = serde_json::json!({ "report": report, "problems": problems, "findings": findings });
        println!("{out}");
    } else {
        println!(
            "pypi={} maven={} npm={} findings={} problems={} entries={} archives={} nested={}",
            report.of(Ecosystem::Pypi).count(),
            report.of(Ecosystem::Maven).count(),
            report.of(Ecosystem::Npm).count(),
            findings.len(),
            problems.len(),
            report.stats.entries,
            report.stats.archives,
            report.stats.nested_archives
        );
    }
    ExitCode::SUCCESS
}
