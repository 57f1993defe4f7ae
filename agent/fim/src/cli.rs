//! The `fim` subcommands of `guestward-agent` (clap derive), ready to be mounted by the daemon's
//! CLI as one variant: `Fim { #[command(subcommand)] cmd: guestward_fim::cli::FimCommand }`,
//! then `guestward_fim::cli::run(cmd, &config.fim, config.agent.state_dir.as_path())`.
//!
//! Exit codes differ per subcommand: [`INIT_EXIT_CODES`], [`CHECK_EXIT_CODES`],
//! [`UPDATE_EXIT_CODES`] (each subcommand's `--help` shows its own), [`EXIT_CODES`] for all.

use crate::config::Config;
use crate::oneshot::{self, CheckReport, EXIT_ERROR, OneShot};
use guestward_core::HostRoot;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Exit codes of `fim init`.
pub const INIT_EXIT_CODES: &str = "\
Exit codes:
  0  the baseline was built (or an interrupted init was completed); its integrity line says
     whether it is sealed with fim.baseline_key_file
  1  the baseline was built, but package files in it already differ from their packages
     (PACKAGE MISMATCH lines on stdout; edited or removed conffiles alone exit 0): the
     machine may have been changed before its first baseline; `fim verify-packages` lists
     them in full
  2  error (printed on stderr): bad configuration (a fim.baseline_key_file that is set but
     cannot be used included), state directory not writable, baseline store unreadable, the
     baseline in use by another process (the daemon, another fim
     command: one at a time); no baseline was accepted (running init again resumes what it
     staged)
  130  stopped by SIGINT (Ctrl-C), 143 by SIGTERM: nothing accepted; running init again
       resumes what it hashed";

/// Exit codes of `fim check`.
pub const CHECK_EXIT_CODES: &str = "\
Exit codes:
  0  no changes
  1  changes found (listed on stdout)
  2  error: no baseline, unreadable state, bad configuration, the baseline in use by another
     process (the daemon, another fim command: one at a time); or the baseline itself
     cannot be relied on: tampered (rows rewritten outside the agent), damaged rows, or
     fim.baseline_key_file set but the baseline not sealed with it, or the key file gone or
     unusable (the report is printed)
  130  stopped by SIGINT (Ctrl-C), 143 by SIGTERM: nothing accepted";

/// Exit codes of `fim update`.
pub const UPDATE_EXIT_CODES: &str = "\
Exit codes:
  0  no changes
  1  changes found (listed on stdout) and accepted as the new baseline
  2  error: no baseline, unreadable state, bad configuration, the baseline in use by another
     process (nothing accepted in these); or the old
     baseline could not be relied on (tampered, damaged rows, not sealed with the configured
     key, the key file gone or unusable): the current state was still accepted and the report
     says what was wrong
  130  stopped by SIGINT (Ctrl-C), 143 by SIGTERM: nothing accepted";

/// Exit codes of every `fim` subcommand, for `guestward-agent fim --help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  init            0 baseline built; 1 built, but package files already differ from their
                  packages; 2 error (no baseline accepted)
  check, update   0 no changes; 1 changes found (update: and accepted);
                  2 error, or a baseline that cannot be relied on (tampered, damaged, unsealed)
  init, check and update stopped by Ctrl-C or SIGTERM exit 130 or 143: nothing is accepted,
  and init run again resumes
  one process at a time scans a state directory's baseline: while the daemon or another fim
  command holds it, the next exits 2 at once, naming it";

/// The line that closes the exit codes of `guestward-agent fim --help`, after every
/// subcommand's line (those of crates mounted beside this one included).
pub const EXIT_CODES_FOOTER: &str = "See `guestward-agent fim <SUBCOMMAND> --help` for each in full.";

/// `guestward-agent fim ...`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum FimCommand {
    /// Build the baseline of every configured path (resumes an interrupted init).
    #[command(after_help = INIT_EXIT_CODES)]
    Init(FimArgs),
    /// Compare the files with the baseline; changes nothing.
    #[command(after_help = CHECK_EXIT_CODES)]
    Check(CompareArgs),
    /// Report changes and accept the current state as the new baseline.
    #[command(after_help = UPDATE_EXIT_CODES)]
    Update(CompareArgs),
}

/// Options of the subcommands that compare with the baseline (`check`, `update`).
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// The shared options.
    #[command(flatten)]
    pub common: FimArgs,
    /// Metadata first: hash again only the files whose size, mtime, ctime, inode, mode or
    /// owner changed since the baseline, like git's index; the others keep their recorded
    /// hashes. ctime cannot be set from user space, so a write through the filesystem is
    /// still caught; writes to the raw block device and a clock set back are not (run a full
    /// check for those; the daemon does so on `fim.full_rehash_interval_secs`).
    #[arg(long)]
    pub fast: bool,
}

/// Options shared by the `fim` subcommands.
#[derive(Debug, Clone, clap::Args)]
pub struct FimArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Where the baseline (`fim.db`) lives [default: `[agent] state_dir` from the config].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Check a mounted filesystem instead of `/`; paths are resolved inside DIR.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Never draw a progress bar (it is drawn only when stderr is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
}

impl FimCommand {
    /// The shared options.
    pub fn args(&self) -> &FimArgs {
        match self {
            Self::Init(a) => a,
            Self::Check(a) | Self::Update(a) => &a.common,
        }
    }
}

/// Runs one `fim` subcommand with the `[fim]` section and the default state directory,
/// printing to stdout/stderr. Returns the exit code.
pub fn run(cmd: &FimCommand, config: &Config, default_state_dir: &Path) -> u8 {
    // Unlocked handles, on purpose. The progress bar is drawn on stderr by the scan's writer
    // thread (indicatif writes through `std::io::stderr()`), and the std stdio locks are
    // reentrant per *thread*: holding `stderr().lock()` here for the whole run, as this did,
    // made the `fim-writer` thread wait for it forever while this thread waited in
    // `pthread_join` for the writer (issue 9, item 1: a hang whenever stderr was a terminal).
    // Unlocked `Stdout`/`Stderr` take the lock per write call, so no lock outlives a line.
    run_with(cmd, config, default_state_dir, &mut std::io::stdout(), &mut std::io::stderr())
}

/// [`run`], with changes to package files attributed and package files in scope verified
/// against their packages, by the oracle `packages` builds for the command's root.
pub fn run_packaged(
    cmd: &FimCommand,
    config: &Config,
    default_state_dir: &Path,
    packages: crate::oneshot::OracleFactory<'_>,
) -> u8 {
    run_inner(cmd, config, default_state_dir, &mut std::io::stdout(), &mut std::io::stderr(), packages)
}

/// [`run`] with explicit output streams (for tests).
///
/// Never pass a *locked* stdio handle (`stderr().lock()`): the progress bar draws on stderr
/// from another thread while this one waits for the scan, and would wait for that lock forever.
pub fn run_with(
    cmd: &FimCommand,
    config: &Config,
    default_state_dir: &Path,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    run_inner(cmd, config, default_state_dir, out, err, &|_| None)
}

fn run_inner(
    cmd: &FimCommand,
    config: &Config,
    default_state_dir: &Path,
    out: &mut dyn Write,
    err: &mut dyn Write,
    packages: crate::oneshot::OracleFactory<'_>,
) -> u8 {
    let args = cmd.args();
    let root = match &args.root {
        Some(dir) => match HostRoot::new(dir) {
            Ok(r) => r,
            Err(e) => {
                let _ = writeln!(err, "guestward-agent fim: --root: {e}");
                return EXIT_ERROR as u8;
            }
        },
        None => HostRoot::live(),
    };
    let o = OneShot {
        config: config.clone(),
        state_dir: args.state_dir.clone().unwrap_or_else(|| default_state_dir.to_path_buf()),
        root,
        progress_bar: !args.no_progress && !args.json,
    };
    let rehash = |fast: bool| if fast { crate::scan::Rehash::Changed } else { crate::scan::Rehash::All };
    let (purpose, rehash) = match cmd {
        FimCommand::Init(_) => (crate::engine::Purpose::Init, crate::scan::Rehash::All),
        FimCommand::Check(a) => (crate::engine::Purpose::Check, rehash(a.fast)),
        FimCommand::Update(a) => (crate::engine::Purpose::Update, rehash(a.fast)),
    };
    let result = oneshot::run_packaged_with(&o, purpose, rehash, packages);
    let report: CheckReport = match result {
        Ok(r) => r,
        // As a shell reports a command killed by the signal: 128 + its number.
        Err(e @ crate::engine::FimError::Interrupted { number, .. }) => {
            let _ = writeln!(err, "guestward-agent fim: {e}");
            return u8::try_from(128 + number).unwrap_or(EXIT_ERROR as u8);
        }
        Err(e) => {
            let _ = writeln!(err, "guestward-agent fim: error: {e}");
            return EXIT_ERROR as u8;
        }
    };
    let written = if args.json {
        // Indented on a terminal, compact in a pipe or a file.
        guestward_core::json::write_json(&mut *out, &report, guestward_core::json::stdout_wants_pretty())
    } else if matches!(cmd, FimCommand::Init(_)) {
        report.render_init_human(out)
    } else {
        report.render_human(out)
    };
    if let Err(e) = written.and_then(|()| out.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        let _ = writeln!(err, "guestward-agent fim: cannot write the report: {e}");
        return EXIT_ERROR as u8;
    }
    for p in report.summary.stats.problems.iter().take(20) {
        let _ = writeln!(err, "warning: {p}");
    }
    // In JSON mode stdout is the report: the baseline's own problems are said on stderr too.
    if args.json {
        for p in report.summary.baseline.problems.iter().take(20) {
            let _ = writeln!(
                err,
                "{}: {p}",
                if report.summary.baseline.untrusted() { "error" } else { "warning" }
            );
        }
    }
    match cmd {
        FimCommand::Init(_) => report.init_exit_code() as u8,
        _ => report.exit_code() as u8,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Top {
        #[command(subcommand)]
        cmd: FimCommand,
    }

    #[test]
    fn subcommands_parse_and_report_errors_with_exit_2() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("f"), "1").unwrap();
        let config: Config = toml::from_str("paths = [\"/etc\"]").unwrap();
        let state = dir.path().join("state");
        let root = dir.path().display().to_string();
        let parse = |args: &[&str]| Top::parse_from(std::iter::once("fim").chain(args.iter().copied())).cmd;
        let mut out = Vec::new();
        let mut err = Vec::new();
        let check = parse(&["check", "--root", &root]);
        assert_eq!(run_with(&check, &config, &state, &mut out, &mut err), 2);
        assert!(String::from_utf8_lossy(&err).contains("fim init"), "{}", String::from_utf8_lossy(&err));
        assert_eq!(run_with(&parse(&["init", "--root", &root]), &config, &state, &mut out, &mut err), 0);
        assert_eq!(run_with(&check, &config, &state, &mut out, &mut err), 0);
        std::fs::write(etc.join("f"), "2").unwrap();
        let mut out = Vec::new();
        let json = parse(&["check", "--json", "--root", &root]);
        assert_eq!(run_with(&json, &config, &state, &mut out, &mut err), 1);
        let report: CheckReport = serde_json::from_slice(&out).unwrap();
        assert_eq!(report.changes[0].path, "/etc/f");
    }
}
