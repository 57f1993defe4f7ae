//! Language-package inventory for guestward: Python distributions, Java archives (with nested
//! jars) and Node.js packages found by a bounded walk of configurable roots, plus the rule set
//! over them (Log4Shell, JndiLookup, known-malicious PyPI packages).
//!
//! Every host file is read through [`HostRoot`], so `--root` scans of a mounted snapshot work
//! and symlinks in the scanned tree cannot lead outside it. Entry points:
//! - [`collect`]: walk and return the inventory plus the problems met, as a [`Section`].
//! - [`findings`]: the rules over a collected inventory.
//! - [`render_table`]: a human summary.

pub mod config;
pub mod java;
pub mod model;
pub mod node;
pub mod python;
pub mod rules;
mod walk;

pub use config::Config;
pub use model::{Ecosystem, Evidence, JndiLookupHit, LangPackage, LangReport, WalkStats};

use guestward_core::{Finding, HostRoot, Problem, Section};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Instant;
use walk::{JAVA, Mask, NODE, PY, Visitor, Walker};

struct Collector {
    packages: Vec<LangPackage>,
    jndi: Vec<JndiLookupHit>,
}

impl Visitor for Collector {
    fn dir(&mut self, walker: &mut Walker<'_>, real: &Path, name: &OsStr, mask: Mask) -> bool {
        if mask & PY != 0 {
            let name = name.to_string_lossy();
            if name.ends_with(".dist-info") || name.ends_with(".egg-info") {
                python::read_info_dir(walker, real, &name, &mut self.packages);
                // Metadata directories hold no further packages; Java and Node.js never live
                // inside them either.
                return false;
            }
        }
        true
    }

    fn file(&mut self, walker: &mut Walker<'_>, real: &Path, name: &OsStr, mask: Mask) {
        let name = name.to_string_lossy();
        if mask & JAVA != 0 && java::is_archive_name(&name) {
            java::scan_file(walker, real, &mut self.packages, &mut self.jndi);
        } else if mask & NODE != 0 && name == "package.json" {
            if node::is_installed_package_json(real) {
                node::read_package_json(walker, real, &mut self.packages);
            }
        } else if mask & PY != 0 && name.ends_with(".egg-info") {
            python::read_info_file(walker, real, &name, &mut self.packages);
        }
    }
}

/// Walks the configured roots under `root` and returns the inventory and the problems met.
/// Never fails as a whole: unreadable files, malformed archives and reached bounds become
/// [`Problem`]s next to everything that could be read.
pub fn scan(root: &HostRoot, config: &Config) -> (LangReport, Vec<Problem>) {
    let mut walker = Walker::new(root, config);
    // Expand globs, then merge identical roots so a tree listed for several ecosystems
    // (`/opt`) is walked once.
    let mut roots: Vec<(PathBuf, Mask)> = Vec::new();
    for (list, mask) in [(&config.python_roots, PY), (&config.java_roots, JAVA), (&config.node_roots, NODE)] {
        for pattern in list {
            for host in walker.expand(pattern.as_path()) {
                match roots.iter_mut().find(|(p, _)| *p == host) {
                    Some((_, m)) => *m |= mask,
                    None => roots.push((host, mask)),
                }
            }
        }
    }
    let mut collector = Collector { packages: Vec::new(), jndi: Vec::new() };
    for (host, mask) in &roots {
        walker.walk(host, *mask, &mut collector);
    }
    let Collector { mut packages, mut jndi } = collector;
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
    let report = LangReport { packages, jndi_lookup: jndi, stats: walker.stats };
    (report, walker.problems)
}

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
        writeln!(out, "  (walk stopped at packages.language.max_entries: incomplete)")?;
    }
    Ok(())
}
