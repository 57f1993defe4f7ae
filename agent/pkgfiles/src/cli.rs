//! `guestward-agent fim verify-packages`: the clap arguments and the run, mounted by the
//! agent's CLI next to the other `fim` subcommands.

use crate::verify::{self, Mismatch, MismatchKind, Options, Progress, Report};
use guestward_core::HostRoot;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Exit codes of `fim verify-packages`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  every package file checked matches its package
  1  mismatches: changed files, changed conffiles or missing files (listed on stdout)
  2  error: no dpkg or rpm database under the root, or none of its packages could be read
     (why is printed), --root is not a directory, a --package that is not installed; or
     (without mismatches) files that could not be checked (unreadable, over the size cap),
     listed on stderr";

/// This subcommand's lines for `guestward-agent fim --help`, aligned with guestward-fim's.
pub const EXIT_CODES_LINE: &str = concat!(
    "  verify-packages 0 all match; 1 changed, conffile-changed or missing files;\n",
    "                  2 error or unchecked files"
);

/// `guestward-agent fim verify-packages`
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyPackagesArgs {
    /// Check a mounted filesystem instead of `/` (its own dpkg/rpm database, its files).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Only these packages (name, or name:arch); repeat the flag or list several.
    #[arg(long = "package", value_name = "NAME", num_args = 1..)]
    pub packages: Vec<String>,
    /// Hashing threads, 1 to 64 [default: one per core].
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=64))]
    pub threads: usize,
    /// Files larger than this many bytes are not hashed (reported as not checked).
    #[arg(long, value_name = "BYTES", default_value_t = verify::DEFAULT_MAX_FILE_BYTES)]
    pub max_file_size: u64,
    /// Never draw a progress bar (it is drawn only when stderr is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
}

/// Runs `fim verify-packages`, printing to stdout/stderr; returns the exit code.
pub fn run(args: &VerifyPackagesArgs) -> u8 {
    run_with(args, &mut std::io::stdout(), &mut std::io::stderr())
}

/// [`run`] with explicit output streams. Never pass a locked stderr: the progress bar draws
/// on it from another thread.
pub fn run_with(args: &VerifyPackagesArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let root = match &args.root {
        Some(dir) => match HostRoot::new(dir) {
            Ok(r) => r,
            Err(e) => {
                let _ = writeln!(err, "guestward-agent fim verify-packages: --root: {e}");
                return 2;
            }
        },
        None => HostRoot::live(),
    };
    let opts = Options {
        packages: args.packages.clone(),
        threads: args.threads,
        max_file_bytes: args.max_file_size,
    };
    let progress = Progress::default();
    // A spinner while the package databases are read (the number of packages is not known
    // yet), then a bar over the packages.
    let bar = (!args.no_progress && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_message("reading the package databases");
        bar
    });
    let result = std::thread::scope(|s| {
        // Without a thread for it, the check runs here and the bar is not drawn.
        let worker = guestward_core::threads::spawn_or_run(s, "gw-verify", || {
            verify::verify_root(&root, &opts, &progress)
        });
        if let Some(bar) = &bar {
            let mut counting = false;
            while !worker.is_finished() {
                let total = progress.packages_total.load(Ordering::Relaxed);
                if total > 0 && !counting {
                    counting = true;
                    bar.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{spinner} {elapsed_precise} [{wide_bar}] {pos}/{len} packages {msg}",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                    );
                    bar.set_length(total);
                }
                if counting {
                    bar.set_position(progress.packages_done.load(Ordering::Relaxed));
                    bar.set_message(format!("{} files", progress.files_done.load(Ordering::Relaxed)));
                } else {
                    bar.tick();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            bar.finish_and_clear();
        }
        worker.join()
    });
    let report = match result {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let _ = writeln!(err, "guestward-agent fim verify-packages: {e}");
            return 2;
        }
        Err(_) => {
            let _ = writeln!(err, "guestward-agent fim verify-packages: internal error (a thread panicked)");
            return 2;
        }
    };
    let written = if args.json {
        // Indented only for a person at a terminal; a reader that closes the pipe early (`| head`)
        // is no error: the error keeps its kind (`BrokenPipe`), checked below.
        guestward_core::json::write_json(&mut *out, &report, guestward_core::json::stdout_wants_pretty())
    } else {
        write_human(&report, out, err)
    };
    if let Err(e) = written
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        let _ = writeln!(err, "guestward-agent fim verify-packages: writing the report: {e}");
        return 2;
    }
    exit_code(&report)
}

/// 1 with mismatches, else 2 with files not checked, else 0.
pub fn exit_code(report: &Report) -> u8 {
    if !report.mismatches.is_empty() {
        1
    } else if !report.problems.is_empty() {
        2
    } else {
        0
    }
}

fn kind_label(k: MismatchKind) -> &'static str {
    match k {
        MismatchKind::Changed => "changed",
        MismatchKind::ConffileChanged => "conffile",
        MismatchKind::Missing => "missing",
    }
}

fn attrs(m: &Mismatch) -> String {
    if m.kind == MismatchKind::Missing {
        return "-".into();
    }
    let a: Vec<String> = m
        .attributes
        .iter()
        .map(|a| serde_json::to_value(a).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default())
        .collect();
    a.join(",")
}

/// The human table: one line per mismatch, then a summary; problems on stderr.
pub fn write_human(r: &Report, out: &mut dyn Write, err: &mut dyn Write) -> std::io::Result<()> {
    // Everything from the databases reaches the terminal escaped: the fields below that set a
    // column's width are escaped before they are measured, and the rest on the way out (an rpm
    // header's FILEDIGESTS is any string its maker wrote, shown as the expected digest).
    let mut out = guestward_core::text::TerminalSafe::new(out);
    let out = &mut out;
    let mut err = guestward_core::text::TerminalSafe::new(err);
    let err = &mut err;
    if !r.mismatches.is_empty() {
        // Names and versions come from the (possibly hostile) status file or rpm header.
        let pkg = |m: &Mismatch| verify::shown_path(&format!("{} {}", m.package.name, m.package.version));
        let wk = 8;
        let wp = r.mismatches.iter().map(|m| pkg(m).chars().count()).max().unwrap_or(7).clamp(7, 40);
        let wa = r.mismatches.iter().map(|m| attrs(m).len()).max().unwrap_or(10).clamp(10, 40);
        writeln!(out, "{:<wk$}  {:<6}  {:<wp$}  {:<wa$}  PATH", "KIND", "SEV", "PACKAGE", "DIFFERS")?;
        for m in &r.mismatches {
            writeln!(
                out,
                "{:<wk$}  {:<6}  {:<wp$}  {:<wa$}  {}",
                kind_label(m.kind),
                m.severity.to_string(),
                pkg(m),
                attrs(m),
                verify::shown_path(&m.path)
            )?;
            if let (Some(e), Some(a)) = (&m.expected, &m.actual)
                && e.hex != a.hex
            {
                let algo = serde_json::to_value(e.algo)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                writeln!(out, "{:<wk$}  {algo} expected {} actual {}", "", e.hex, a.hex)?;
            }
            for d in &m.details {
                writeln!(out, "{:<wk$}  {}", "", verify::shown_path(d))?;
            }
        }
        writeln!(out)?;
    }
    let managers: Vec<String> = r
        .managers
        .iter()
        .map(|m| serde_json::to_value(m).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default())
        .collect();
    writeln!(
        out,
        "{}: {} ({}), {}, {} hashed in {:.1} s: {} changed, {} conffiles changed, {} missing, {} not checked",
        r.root,
        guestward_core::text::counted(r.packages_checked as u64, "package", "packages"),
        managers.join(", "),
        guestward_core::text::counted(r.files_checked, "file", "files"),
        guestward_core::human::bytes(r.bytes_hashed),
        r.duration_ms as f64 / 1000.0,
        r.count(MismatchKind::Changed),
        r.count(MismatchKind::ConffileChanged),
        r.count(MismatchKind::Missing),
        r.problems.len() as u64 + r.unlisted_problems
    )?;
    if r.unlisted_mismatches > 0 {
        writeln!(
            out,
            "({} more not listed: the first {} are, most severe first)",
            r.unlisted_mismatches,
            crate::verify::MAX_LISTED_MISMATCHES
        )?;
    }
    for p in &r.problems {
        writeln!(err, "not checked: {p}")?;
    }
    if r.unlisted_problems > 0 {
        writeln!(
            err,
            "not checked: {} more (see --json for the first {})",
            r.unlisted_problems,
            r.problems.len()
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use guestward_fim::package::{DigestAlgo, PackageDigest, PackageManager, PackageOwner};

    /// An image's rpm header may carry a file digest that is no digest at all, and a version
    /// with escape sequences: the table shows them escaped, never as control sequences.
    #[test]
    fn a_hostile_digest_and_version_reach_the_terminal_escaped() {
        const HOSTILE: &str = "\x1b]0;pwned\x07\x1b[2J";
        const SHOWN: &str = "\\x1b]0;pwned\\x07\\x1b[2J";
        let digest = |hex: &str| Some(PackageDigest { algo: DigestAlgo::Sha256, hex: hex.to_owned() });
        let report = Report {
            root: "/mnt/image".into(),
            managers: vec![PackageManager::Rpm],
            packages_checked: 1,
            files_checked: 1,
            bytes_hashed: 4,
            mismatches: vec![Mismatch {
                path: "/usr/bin/tool".into(),
                package: PackageOwner {
                    manager: PackageManager::Rpm,
                    name: "tool".into(),
                    version: format!("1.0-1{HOSTILE}"),
                    arch: None,
                },
                kind: MismatchKind::Changed,
                conffile: false,
                severity: MismatchKind::Changed.severity(),
                attributes: vec![],
                expected: digest(HOSTILE),
                actual: digest(&"ab".repeat(32)),
                details: vec![],
            }],
            unlisted_mismatches: 0,
            problems: vec![],
            unlisted_problems: 0,
            duration_ms: 1,
            unlisted_by_kind: [0; 3],
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        write_human(&report, &mut out, &mut err).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(!out.contains('\x1b') && !out.contains('\x07'), "raw control characters: {out:?}");
        assert!(out.contains(&format!("sha256 expected {SHOWN} actual ")), "{out}");
        assert!(out.contains(&format!("tool 1.0-1{SHOWN}")), "{out}");
        assert!(out.contains("/mnt/image: 1 package (rpm), 1 file,"), "one package is named so: {out}");
    }
}
