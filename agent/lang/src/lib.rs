//! Language-package inventory for guestward: Python distributions, Java archives (with nested
//! jars) and Node.js packages found by a bounded walk of configurable roots, plus the rule set
//! over them (Log4Shell, JndiLookup, known-malicious PyPI packages).
//!
//! Every host file is read through [`HostRoot`](guestward_core::HostRoot), so `--root` scans of a mounted snapshot work
//! and symlinks in the scanned tree cannot lead outside it. Entry points:
//! - [`collect`]: walk and return the inventory plus the problems met, as a [`Section`].
//! - [`findings`]: the rules over a collected inventory.
//! - [`render_table`]: a human summary.
//!
//! The walk and the readers are the default feature `collect`. Without it the crate is the
//! model ([`LangReport`]...), its [`Config`], the rules ([`findings`], [`FINDING_IDS`]) and
//! [`render_table`], for crates that carry or show reports. Integer conversions in the
//! parsers are checked (`clippy::cast_possible_truncation` is on).

// Output goes through `guestward_core::stdio`: the print macros panic when a write fails.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]
#![warn(clippy::cast_possible_truncation)]

pub mod config;
#[cfg(feature = "collect")]
pub mod java;
pub mod model;
#[cfg(feature = "collect")]
pub mod node;
pub mod python;
pub mod rules;
#[cfg(feature = "collect")]
mod sink;
#[cfg(feature = "collect")]
mod walk;

pub use config::{Config, ConfigError};
pub use model::{Ecosystem, Evidence, JndiLookupHit, LangPackage, LangReport, WalkStats};
pub use rules::FINDING_IDS;

use guestward_core::Finding;
#[cfg(feature = "collect")]
use guestward_core::{HostRoot, Problem, Section};
#[cfg(feature = "collect")]
use std::ffi::OsStr;
#[cfg(feature = "collect")]
use std::path::Path;
#[cfg(feature = "collect")]
use std::time::Instant;
#[cfg(feature = "collect")]
use walk::{FileKind, JAVA, Mask, NODE, PY, Visitor, Walker};

#[cfg(feature = "collect")]
/// Routes what the walk meets to the ecosystem readers. Stateless: results and their bounds
/// live in the walker's sink.
struct Collector;

#[cfg(feature = "collect")]
impl Visitor for Collector {
    fn dir(&mut self, walker: &mut Walker<'_>, real: &Path, name: &OsStr, mask: Mask) -> bool {
        if mask & PY != 0 {
            let name = name.to_string_lossy();
            if name.ends_with(".dist-info") || name.ends_with(".egg-info") {
                python::read_info_dir(walker, real, &name);
                // Metadata directories hold no further packages; Java and Node.js never live
                // inside them either.
                return false;
            }
        }
        true
    }

    fn file(&mut self, walker: &mut Walker<'_>, real: &Path, name: &OsStr, mask: Mask, kind: FileKind) {
        let name = name.to_string_lossy();
        let wanted = (mask & JAVA != 0 && java::is_archive_name(&name))
            || (mask & NODE != 0 && name == "package.json" && node::is_installed_package_json(real))
            || (mask & PY != 0 && name.ends_with(".egg-info"));
        if !wanted {
            return;
        }
        // Security: a FIFO, socket or device node named like a package file is reported and
        // never opened (opening a FIFO blocks, a device may read forever).
        if let FileKind::Other(kind) = kind {
            return walker.not_regular(real, kind);
        }
        if mask & JAVA != 0 && java::is_archive_name(&name) {
            java::scan_file(walker, real);
        } else if mask & NODE != 0 && name == "package.json" {
            node::read_package_json(walker, real);
        } else {
            python::read_info_file(walker, real, &name);
        }
    }
}

#[cfg(feature = "collect")]
/// Walks the configured roots under `root` and returns the inventory and the problems met.
/// Never fails as a whole: unreadable files, malformed archives and reached bounds become
/// [`Problem`]s next to everything that could be read.
pub fn scan(root: &HostRoot, config: &Config) -> (LangReport, Vec<Problem>) {
    let mut walker = Walker::new(root, config);
    let roots = walker.plan();
    let mut collector = Collector;
    for planned in &roots {
        walker.walk(planned, &mut collector);
    }
    let Walker { out, mut stats, .. } = walker;
    let (mut packages, mut jndi, problems) = out.finish(&mut stats);
    // The walk names everything as the scanned system sees it (`/opt/app.jar`), which is what
    // a package's location means. A problem's `path`, as in every other section, is the file
    // on the machine that ran the scan: under `--root` the walk's paths are joined to it here,
    // once for every site (two sites used to give that path already, the rest the walk's).
    let problems = problems
        .into_iter()
        .map(|mut problem| match problem.path.take() {
            Some(path) => root.locate_problem(problem, &path),
            None => problem,
        })
        .collect();
    packages.sort_by(|a, b| {
        (a.ecosystem, &a.namespace, &a.name, &a.version, &a.location, &a.path_in_archive).cmp(&(
            b.ecosystem,
            &b.namespace,
            &b.name,
            &b.version,
            &b.location,
            &b.path_in_archive,
        ))
    });
    jndi.sort_by(|a, b| (&a.location, &a.path_in_archive).cmp(&(&b.location, &b.path_in_archive)));
    let report = LangReport { packages, jndi_lookup: jndi, stats };
    (report, problems)
}

#[cfg(feature = "collect")]
/// [`scan`] as a report section (skipped when turned off in config).
pub fn collect(root: &HostRoot, config: &Config) -> Section<LangReport> {
    if !config.enabled {
        return Section::skipped("language packages turned off (packages.language.enabled = false)");
    }
    let started = Instant::now();
    let (report, problems) = scan(root, config);
    Section::from_parts(Some(report), problems, started)
}

/// The rule set over an inventory (see [`rules`]).
pub fn findings(report: &LangReport) -> Vec<Finding> {
    rules::evaluate(report)
}

/// Writes a short human summary: counts per ecosystem, then one line per package.
pub fn render_table(report: &LangReport, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    use guestward_core::text::escape_control;
    // Names, versions and locations come from files anyone may write (a user's ~/.local):
    // shown escaped, so they cannot carry terminal control sequences or fake lines.
    use std::io::Write as _;
    let out = &mut guestward_core::text::TerminalSafe::new(out);
    for eco in [Ecosystem::Pypi, Ecosystem::Maven, Ecosystem::Npm] {
        writeln!(out, "{:<6} {} packages", eco.as_str(), report.of(eco).count())?;
    }
    for p in &report.packages {
        let name = match &p.namespace {
            Some(ns) if p.ecosystem == Ecosystem::Npm => format!("@{ns}/{}", p.name),
            Some(ns) => format!("{ns}:{}", p.name),
            None => p.name.clone(),
        };
        let at = match &p.path_in_archive {
            Some(inner) => format!("{}!/{inner}", p.location),
            None => p.location.clone(),
        };
        writeln!(
            out,
            "  {:<6} {:<40} {:<16} {}",
            p.ecosystem.as_str(),
            escape_control(&name),
            escape_control(&p.version),
            escape_control(&at)
        )?;
    }
    if report.stats.truncated {
        writeln!(out, "  (incomplete: a packages.language bound was reached; see the problems)")?;
    }
    Ok(())
}
