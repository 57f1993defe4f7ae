//! Software inventory: which packages are installed, read from the package managers' own
//! databases through [`HostRoot`](guestward_core::HostRoot) (so `--root` scans of snapshots work), never by running
//! `dpkg-query` or `rpm`.
//!
//! Each source is its own module with its own typed output; [`collect`] assembles them into one
//! [`PackagesReport`] section, where a failing source becomes a [`Problem`](guestward_core::Problem) and the others still
//! report.
//!
//! The reading is the default feature `collect` (it turns on the readers of `guestward-rpmdb`
//! and `guestward-lang` too). Without it the crate is the model, [`Config`], the parsers of
//! bytes ([`dpkg::parse_status`]), [`delta`]'s comparison, [`findings`] and
//! [`render_summary`].

// Output goes through `guestward_core::stdio`: the print macros panic when a write fails.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod delta;
pub mod dpkg;

use guestward_core::{AbsolutePath, Finding};
#[cfg(feature = "collect")]
use guestward_core::{HostRoot, Problem, Section};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
#[cfg(feature = "collect")]
use std::time::Instant;

/// Every finding id [`findings`] can raise (the language rules'; see `guestward_lang::rules`).
pub const FINDING_IDS: &[&str] = guestward_lang::FINDING_IDS;

/// `[packages]` in agent.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// dpkg's administrative directory (holds `status`). When it does not exist the host is
    /// taken not to use dpkg, which is not an error.
    pub dpkg_admin_dir: AbsolutePath,
    /// Largest dpkg `status` file read, in bytes (default 64 MiB). A real one is a few MiB; the
    /// cap bounds memory if the file is corrupt or hostile: parsed, a status file takes up to
    /// about 15 times its size (250 MB of planted stanzas took 3.9 GB under the old 256 MiB).
    pub max_status_file_bytes: u64,
    /// Seconds between full inventory snapshots in daemon mode; the scans in between add
    /// `package.*` change events against the inventory kept in the state directory (see
    /// [`delta`]). 0 makes every scan a full snapshot.
    pub full_snapshot_interval_secs: u64,
    /// Directories searched, in order, for an rpm database (`rpmdb.sqlite`, `Packages.db` or
    /// `Packages`, told apart by their magic bytes). The first one holding a database is read;
    /// a directory that is a symlink to one already searched is skipped. None existing means
    /// the host does not use rpm, which is not an error.
    pub rpm_dirs: Vec<AbsolutePath>,
    /// Largest rpm header blob read, in bytes (one is held in memory at a time; real ones are
    /// kilobytes to a few MiB).
    pub max_rpm_header_bytes: u64,
    /// `[packages.language]`: Python, Java and Node.js packages found by walking directories.
    pub language: guestward_lang::Config,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            dpkg_admin_dir: AbsolutePath::from_static("/var/lib/dpkg"),
            max_status_file_bytes: dpkg::DEFAULT_MAX_STATUS_BYTES,
            full_snapshot_interval_secs: delta::DEFAULT_FULL_SNAPSHOT_INTERVAL_SECS,
            rpm_dirs: guestward_rpmdb::DEFAULT_RPM_DIRS
                .iter()
                .map(|d| AbsolutePath::from_static(d))
                .collect(),
            max_rpm_header_bytes: guestward_rpmdb::Limits::default().max_header_bytes,
            language: guestward_lang::Config::default(),
        }
    }
}

impl Config {
    /// Every problem of `[packages]` (and `[packages.language]`), each under its key relative
    /// to `[packages]`. The caps bound memory, so each has a ceiling as well as a floor.
    pub fn issues(&self) -> Vec<guestward_core::ConfigIssue> {
        use guestward_core::config::check_range;
        const GIB: u64 = 1024 * 1024 * 1024;
        let mut issues = Vec::new();
        check_range(&mut issues, "max_status_file_bytes", self.max_status_file_bytes, 1..=4 * GIB);
        check_range(
            &mut issues,
            "full_snapshot_interval_secs",
            self.full_snapshot_interval_secs,
            0..=30 * 86_400,
        );
        check_range(&mut issues, "max_rpm_header_bytes", self.max_rpm_header_bytes, 1..=GIB);
        issues.extend(guestward_core::config::within("language", self.language.issues()));
        issues
    }
}

/// The `packages` section of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PackagesReport {
    /// Debian packages; absent when the host has no dpkg database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpkg: Option<dpkg::DpkgInventory>,
    /// rpm packages; absent when the host has no rpm database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<guestward_rpmdb::RpmInventory>,
    /// Language packages (Python, Java, Node.js); absent when turned off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<guestward_lang::LangReport>,
}

impl PackagesReport {
    /// Installed packages across every source.
    pub fn installed_count(&self) -> usize {
        self.dpkg.as_ref().map_or(0, |d| d.installed.len())
            + self.rpm.as_ref().map_or(0, |r| r.packages.len())
            + self.language.as_ref().map_or(0, |l| l.packages.len())
    }
}

#[cfg(feature = "collect")]
/// Reads every package source present under `root`.
pub fn collect(root: &HostRoot, config: &Config) -> Section<PackagesReport> {
    let started = Instant::now();
    let mut problems: Vec<Problem> = Vec::new();
    let mut report = PackagesReport { dpkg: None, rpm: None, language: None };

    let admin_dir = config.dpkg_admin_dir.as_path();
    if root.exists(admin_dir) {
        match dpkg::read_status(root, admin_dir, config.max_status_file_bytes) {
            Ok((inventory, stanza_problems)) => {
                problems.extend(stanza_problems);
                report.dpkg = Some(inventory);
            }
            Err(e) => problems.push(e.to_problem()),
        }
    }

    collect_rpm(root, config, &mut report, &mut problems);

    if config.language.enabled {
        let (language, language_problems) = guestward_lang::scan(root, &config.language);
        problems.extend(language_problems);
        report.language = Some(language);
    }

    let nothing_found = report.dpkg.is_none()
        && report.rpm.is_none()
        && report.language.as_ref().is_none_or(|l| l.packages.is_empty())
        && problems.is_empty();
    let section = Section::from_parts(Some(report), problems, started);
    if nothing_found {
        section.with_note("no package database found (looked for dpkg and rpm)")
    } else {
        section
    }
}

#[cfg(feature = "collect")]
/// Most corrupt rpm headers named one by one in the section's problems (all are in the
/// inventory's `corrupt` list).
const MAX_CORRUPT_PROBLEMS: usize = 20;

#[cfg(feature = "collect")]
/// The rpm part: the first rpm database in `config.rpm_dirs`, with its damage lifted into the
/// section's problems (so the section shows as degraded) while the packages stay listed.
fn collect_rpm(root: &HostRoot, config: &Config, report: &mut PackagesReport, problems: &mut Vec<Problem>) {
    let dirs: Vec<std::path::PathBuf> = config.rpm_dirs.iter().map(|d| d.as_path().to_path_buf()).collect();
    let limits =
        guestward_rpmdb::Limits { max_header_bytes: config.max_rpm_header_bytes, ..Default::default() };
    let scan = guestward_rpmdb::read_rpm_dirs(root, &dirs, &limits);
    for e in &scan.errors {
        // No rpm database at all just means an rpm-less host (Debian, Ubuntu).
        if !matches!(e, guestward_rpmdb::RpmdbError::NotFound { .. }) {
            problems.push(e.to_problem());
        }
    }
    if let Some(inv) = scan.inventory {
        problems.extend(inv.problems.iter().cloned());
        for c in inv.corrupt.iter().take(MAX_CORRUPT_PROBLEMS) {
            problems.push(Problem::new(c.code.clone(), c.reason.clone()).with_path(inv.db_path.clone()));
        }
        if inv.corrupt.len() > MAX_CORRUPT_PROBLEMS {
            problems.push(
                Problem::new(
                    "digest_mismatch",
                    format!(
                        "{} more corrupt rpm headers (see rpm.corrupt)",
                        inv.corrupt.len() - MAX_CORRUPT_PROBLEMS
                    ),
                )
                .with_path(inv.db_path.clone()),
            );
        }
        report.rpm = Some(inv);
    }
}

/// The rules over the inventory (Log4Shell, JndiLookup, known-malicious PyPI packages; see
/// `guestward_lang::rules`).
pub fn findings(report: &PackagesReport) -> Vec<Finding> {
    report.language.as_ref().map(guestward_lang::findings).unwrap_or_default()
}

/// Writes a short human summary.
pub fn render_summary(report: &PackagesReport, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    // Paths name files in the scanned tree: never let them reach the terminal as controls.
    use std::io::Write as _;
    let out = &mut guestward_core::text::TerminalSafe::new(out);
    if let Some(d) = &report.dpkg {
        write!(out, "dpkg      {} installed", d.installed.len())?;
        if !d.not_fully_installed.is_empty() {
            write!(out, ", {} not fully installed", d.not_fully_installed.len())?;
        }
        writeln!(out, " ({})", d.status_file)?;
    }
    if let Some(r) = &report.rpm {
        write!(out, "rpm       {} installed", r.packages.len())?;
        if !r.corrupt.is_empty() {
            write!(out, ", {} corrupt headers not listed", r.corrupt.len())?;
        }
        writeln!(out, " ({}, {})", r.db_path, r.backend)?;
    }
    if let Some(l) = &report.language {
        use guestward_lang::Ecosystem::{Maven, Npm, Pypi};
        let count = |e| l.of(e).count();
        write!(out, "language  {} python, {} java, {} node.js", count(Pypi), count(Maven), count(Npm))?;
        writeln!(out, " ({} directory entries walked)", l.stats.entries)?;
    }
    Ok(())
}
