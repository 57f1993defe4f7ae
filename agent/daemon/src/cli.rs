//! Command-line interface of `guestward-agent` (clap derive). `main.rs` only parses and maps
//! the result of [`run`] to an exit code.

use crate::collect::Collectors;
use crate::collect::cloud::{CloudCollector, ImdsRuntime};
use crate::collect::fim::FimCollector;
use crate::config::{CheckOutcome, Config};
use crate::exit;
use crate::scan;
use anyhow::Context;
use clap::builder::TypedValueParser;
use clap::{Parser, Subcommand, ValueEnum};
use guestward_core::{HostRoot, Severity};
use guestward_report::protocol::Collector;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;

const EXIT_CODES: &str = "\
Exit codes:
  0  success: every selected collector succeeded (skipped ones count as success)
  1  some collector degraded or failed; the report says which and why
  2  usage or configuration error; nothing was collected
  3  run --once: not everything was delivered to the collector (it stays spooled)
  4  scan --fail-on SEVERITY: a finding at or above SEVERITY (takes precedence over 1)
A closed standard output (`scan --json | head`) stops the output quietly, exit 0.";

/// guestward: a security agent for the EC2 guest OS.
///
/// Inventories packages, host facts and more, and reports them. `scan` runs every collector
/// once and prints the result; it needs no server and no configuration file.
#[derive(Debug, Parser)]
#[command(name = "guestward-agent", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Configuration file [default: /etc/guestward/agent.toml if present, else built-in defaults]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every collector once and print the report.
    #[command(after_help = EXIT_CODES)]
    Scan(ScanArgs),
    /// Run as a daemon: scheduled scans and the control socket for `agentctl` (systemd:
    /// guestward-agent.service, Type=notify). Stops on SIGTERM or SIGINT; SIGHUP reloads the
    /// configuration file (an invalid one is refused and the running configuration kept; see
    /// `agentctl status`). With `--once`: one report, delivered to the collector
    /// (`[transport]`), then exit.
    #[command(after_help = RUN_EXIT_CODES)]
    Run(RunArgs),
    /// Print the JSON Schema of the report (`--json` output).
    Schema,
    /// Validate a configuration file exactly as `run` loads it, listing every problem, one per
    /// line (`FILE:LINE:COLUMN: key `KEY`: MESSAGE`). Exit 0 valid, 1 invalid, 2 unreadable.
    CheckConfig {
        /// The file to check [default: `--config`, else /etc/guestward/agent.toml].
        path: Option<PathBuf>,
        /// Print `{"path", "valid", "errors": [{line, column, key, message}]}`.
        #[arg(long)]
        json: bool,
    },
    /// Before an AMI is created from this instance (as root): stop the agent and remove what
    /// belongs to this instance (identity, spool, history, client certificate and key, the FIM
    /// baseline unless --keep-baseline), so each instance launched from the image gets an
    /// identity of its own. See docs/ami.md.
    #[command(after_help = crate::prepare_image::EXIT_CODES)]
    PrepareImage(crate::prepare_image::PrepareImageArgs),
    /// File integrity: build the baseline (`init`), compare with it (`check`: exit 0 no
    /// changes, 1 changes, 2 error), accept the current state (`update`), or check installed
    /// package files against dpkg/rpm (`verify-packages`, like debsums / rpm -V).
    #[command(after_help = fim_exit_codes())]
    Fim {
        /// What to do.
        #[command(subcommand)]
        command: FimCli,
    },
    /// Print the shell completion script of guestward-agent (`guestward-agent completions
    /// bash > /usr/share/bash-completion/completions/guestward-agent`; the packages install
    /// them).
    Completions {
        /// The shell.
        shell: guestward_core::cli_docs::Shell,
    },
    /// Write guestward-agent's man pages and bash, zsh and fish completions under DIR, laid
    /// out as they are installed under /usr/share (for packaging: scripts/gen-cli-docs).
    #[command(hide = true)]
    GenerateDocs {
        /// The directory to write into (created when missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

/// The `fim` subcommands: the baseline ones of `guestward-fim` and `verify-packages` of
/// `guestward-pkgfiles` (which depends on guestward-fim, so it is mounted here).
#[derive(Debug, Subcommand)]
pub enum FimCli {
    /// `init`, `check`, `update`.
    #[command(flatten)]
    Baseline(guestward_fim::cli::FimCommand),
    /// Check installed package files against what dpkg (`.md5sums`, conffiles) and rpm (the
    /// header's digests, sizes, modes, owners) say they are, like `debsums -c` and `rpm -V`:
    /// changed files, changed conffiles (lower severity) and missing files. Needs no baseline.
    #[command(after_help = guestward_pkgfiles::cli::EXIT_CODES)]
    VerifyPackages(guestward_pkgfiles::cli::VerifyPackagesArgs),
}

fn fim_exit_codes() -> String {
    format!(
        "{}\n{}\n{}",
        guestward_fim::cli::EXIT_CODES,
        guestward_pkgfiles::cli::EXIT_CODES_LINE,
        guestward_fim::cli::EXIT_CODES_FOOTER
    )
}

const RUN_EXIT_CODES: &str = "\
Exit codes of `run --once`:
  0  the report and everything the spool held were delivered (acknowledged by the collector)
  2  usage or configuration error (`[transport] enabled` is not true, credentials unusable,
     or refused by the collector: reports stay spooled, no retry within the run would help)
  3  not everything was delivered before --timeout-secs, or the report could not be spooled;
     what was not delivered stays spooled for the next run (or the daemon)";

/// `run` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Collect once (every collector; FIM compares with the stored baseline, as `scan` does),
    /// write the report to the spool, deliver everything the spool holds (reports left by
    /// earlier runs included), wait for the collector's acknowledgements and exit. Needs
    /// `[transport] enabled = true`. For hosts without a daemon: cron, CI, first tests.
    #[arg(long)]
    pub once: bool,
    /// With `--once`: how long delivery may take, retries included; what is not delivered by
    /// then stays spooled (exit 3).
    #[arg(long, value_name = "SECS", default_value_t = 120, requires = "once",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout_secs: u64,
    /// With `--once`: print the outcome as one JSON object instead of a line of text.
    #[arg(long, requires = "once")]
    pub json: bool,
    /// Keep the agent's state (FIM baseline, history, spool) in DIR instead of `[agent]
    /// state_dir` of the configuration file (this flag wins, at start and at every reload).
    /// Created 0700 when missing. With `--once` too.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Listen for `agentctl` on the Unix socket PATH instead of `[control] socket_path` of the
    /// configuration file (this flag wins, at start and at every reload; `agentctl --socket
    /// PATH` reaches it). Not with `--once`, which serves no socket.
    #[arg(long, value_name = "PATH", conflicts_with = "once")]
    pub socket: Option<PathBuf>,
}

impl RunArgs {
    /// `--state-dir` and `--socket` as absolute paths (a relative one is taken from the
    /// current directory, as a shell user means it).
    pub fn overrides(&self) -> anyhow::Result<crate::daemon::Overrides> {
        let absolute = |flag: &str, p: &PathBuf| -> anyhow::Result<guestward_core::AbsolutePath> {
            let abs = std::path::absolute(p).with_context(|| format!("{flag} {}", p.display()))?;
            guestward_core::AbsolutePath::new(abs).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", p.display()))
        };
        Ok(crate::daemon::Overrides {
            state_dir: self.state_dir.as_ref().map(|p| absolute("--state-dir", p)).transpose()?,
            socket_path: self.socket.as_ref().map(|p| absolute("--socket", p)).transpose()?,
        })
    }
}

/// Output formats of `scan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A human summary.
    Human,
    /// The full report envelope as JSON (same as `--json`).
    Json,
    /// A CycloneDX 1.6 JSON SBOM of every package found (dpkg, rpm, PyPI, Maven, npm), for
    /// grype, trivy or Dependency-Track.
    Cyclonedx,
}

/// `scan` arguments.
#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// Print the full report as JSON (the schema is `guestward-agent schema`).
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Run only these collectors (comma-separated): host, packages, cloud, network, fim, updates, access.
    #[arg(long, value_delimiter = ',', value_name = "COLLECTORS", value_parser = collector_parser())]
    pub only: Vec<Collector>,
    /// Scan a mounted filesystem (EBS snapshot, AMI volume, container rootfs) instead of `/`.
    /// Symlinks are resolved inside DIR; live-only collectors are skipped.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Exit 4 when a finding of this severity or higher is found, to stop an AMI bake or a CI
    /// job on it (`--fail-on high`: high and critical). Without it findings do not change the
    /// exit code.
    #[arg(long, value_enum, value_name = "SEVERITY")]
    pub fail_on: Option<FailOn>,
}

/// The severity threshold of `scan --fail-on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    /// Critical findings only.
    Critical,
    /// High and critical.
    High,
    /// Medium, high and critical.
    Medium,
    /// Every finding except `info`.
    Low,
}

impl FailOn {
    /// The lowest severity that fails the scan.
    pub fn severity(self) -> Severity {
        match self {
            Self::Critical => Severity::Critical,
            Self::High => Severity::High,
            Self::Medium => Severity::Medium,
            Self::Low => Severity::Low,
        }
    }
}

/// A multi-thread runtime with `workers` workers, for the daemon and `run --once`.
///
/// Tokio panics when the kernel refuses a worker thread (the unit's `TasksMax`, `ulimit -u`,
/// memory short). That is a limit of the host, not a bug to report with a backtrace: it becomes
/// an error that says which limit to raise. Called before the process has any other thread, so
/// the panic message silenced while the runtime starts can only be tokio's.
pub(crate) fn start_runtime(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let report_panic = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let built = std::panic::catch_unwind(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()
    });
    std::panic::set_hook(report_panic);
    match built {
        Ok(runtime) => runtime.context("starting the async runtime"),
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("no reason given");
            anyhow::bail!(
                "starting the async runtime: {why}; the kernel refused its {workers} worker threads, \
                 so the process limit of this user is likely reached (systemd's TasksMax, \
                 `ulimit -u`): raise it, or stop other processes of this user"
            )
        }
    }
}

/// The log level a command runs with when neither `RUST_LOG` nor the configuration sets one:
/// `info` for the daemon (`run`), whose log is its record of start, stop, reload and file
/// changes; `warn` for the one-shot commands, whose output is their result.
pub fn default_log_level(cli: &Cli) -> &'static str {
    match &cli.command {
        Command::Run(args) if !args.once => DAEMON_LOG_LEVEL,
        _ => "warn",
    }
}

/// The daemon's default log level (`[agent] log_level` unset, no `RUST_LOG`). The `notify`
/// crate warns whenever a watched directory is deleted (the kernel has already dropped the
/// watch it then tries to remove): every package removal under a watched tree would put
/// warnings in the journal that ask nothing of anyone. Its errors still show, and the watcher
/// reports its own failures through the agent's events.
pub const DAEMON_LOG_LEVEL: &str = "info,notify=error";

/// Runs a parsed command line, returning the exit code. Errors are usage/config errors
/// (exit 2); collector failures are reported inside the report (exit 1).
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Fim { command: FimCli::VerifyPackages(args) } => Ok(guestward_pkgfiles::cli::run(&args)),
        Command::Fim { command: FimCli::Baseline(command) } => {
            let (config, _source) = Config::load(cli.config.as_deref())?;
            // The daemon's rule for its state directory holds for the one-shot baseline too:
            // `fim.db` is never written into a shared directory such as /tmp or /var/lib.
            let state_dir = match &command.args().state_dir {
                Some(dir) => dir.clone(),
                None => config.agent.state_dir.as_path().to_path_buf(),
            };
            crate::daemon::prepare_state_dir(&state_dir).map_err(|e| match &command.args().state_dir {
                // Named as the user gave it: the flag, not the config key it overrides.
                Some(_) => anyhow::anyhow!("--state-dir {}: {}", e.path.display(), e.reason),
                None => e.into(),
            })?;
            // Changes to package files are attributed, and package files in scope verified
            // against their packages (the baseline's trust anchor), through the command's root.
            // Read when first needed: a metadata-first check of an unchanged tree never asks.
            let packages = |root: &guestward_core::HostRoot| {
                let oracle = guestward_pkgfiles::Oracle::lazy(root.clone());
                Some(std::sync::Arc::new(oracle) as std::sync::Arc<dyn guestward_fim::package::PackageOracle>)
            };
            // A baseline or a check reads a whole tree for seconds, and the code that parsed
            // the command line and the configuration does not run again: its pages are handed
            // back first, so that they do not count in the scan's peak (1.3 MB of the first
            // `init` of /usr: docs/benchmarks.md). What the scan runs faults back in from the
            // page cache. A release that fails costs only that memory.
            let _ = guestward_reclaim::release_idle_memory();
            Ok(guestward_fim::cli::run_packaged(
                &command,
                &config.fim,
                config.agent.state_dir.as_path(),
                &packages,
            ))
        }
        Command::Completions { shell } => {
            let mut out = guestward_core::stdio::stdout();
            guestward_core::cli_docs::write_completions(
                &mut <Cli as clap::CommandFactory>::command(),
                shell,
                &mut out,
            )?;
            out.flush()?;
            Ok(exit::OK)
        }
        Command::GenerateDocs { dir } => {
            let written =
                guestward_core::cli_docs::generate_to(<Cli as clap::CommandFactory>::command(), &dir)
                    .with_context(|| {
                        format!("writing the man pages and completions into {}", dir.display())
                    })?;
            let mut out = guestward_core::stdio::stdout();
            for path in written {
                writeln!(out, "{}", path.display())?;
            }
            Ok(exit::OK)
        }
        Command::PrepareImage(args) => {
            let (config, _source) = Config::load(cli.config.as_deref())?;
            crate::prepare_image::run(&config, &args)
        }
        Command::Schema => {
            print_stdout(&guestward_report::checked_in_json_schema()?)?;
            Ok(exit::OK)
        }
        Command::CheckConfig { path, json } => {
            let path =
                path.or(cli.config).unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_CONFIG_PATH));
            let outcome = CheckOutcome::of(&path);
            outcome.print(json, &mut guestward_core::stdio::stdout(), &mut std::io::stderr().lock())?;
            Ok(outcome.exit_code())
        }
        Command::Run(args) => {
            // A config the daemon cannot fully apply stops it here, with every problem listed
            // exactly as `check-config` lists them: it never runs on part of its settings.
            let overrides = args.overrides()?;
            let (mut config, source) = match Config::load(cli.config.as_deref()) {
                Ok(loaded) => loaded,
                Err(e) => {
                    guestward_core::stdio::error_line(format_args!("{e}"));
                    guestward_core::stdio::error_line(
                        "guestward-agent: not started: the configuration is invalid",
                    );
                    return Ok(exit::USAGE);
                }
            };
            overrides.apply(&mut config);
            if args.once {
                return crate::once::run(config, &source, &args);
            }
            // The configured level replaces the default unless RUST_LOG was set; the file was
            // validated, so it parses.
            match guestward_core::logging::apply_config_level(
                config.agent.log_level.as_deref(),
                DAEMON_LOG_LEVEL,
            ) {
                Ok(level) => tracing::info!(config = %source, log_level = %level, "configuration loaded"),
                Err(e) => tracing::warn!(config = %source, error = %e, "agent.log_level not applied"),
            }
            // Two workers: the agent must stay small; scans run on blocking threads anyway.
            let runtime = start_runtime(2)?;
            let served = runtime.block_on(crate::daemon::run(config, source, overrides));
            // Dropping a runtime waits for every blocking task, so a scan stuck in a read
            // (a hostile file, a hung mount) would turn SIGTERM into a hang until systemd's
            // SIGKILL. The daemon has already stopped serving; give running work a moment.
            runtime.shutdown_timeout(std::time::Duration::from_secs(5));
            served?;
            tracing::info!("guestward-agent stopped");
            Ok(exit::OK)
        }
        Command::Scan(args) => {
            let (config, _source) = Config::load(cli.config.as_deref())?;
            let root = match &args.root {
                Some(dir) => HostRoot::new(dir).map_err(|e| anyhow::anyhow!("--root: {e}"))?,
                None => HostRoot::live(),
            };
            let only: BTreeSet<Collector> =
                if args.only.is_empty() { Collector::all() } else { args.only.iter().copied().collect() };
            let fim = if !root.is_live() {
                FimCollector::Off("FIM's baseline describes the running system, not a mounted root (--root)")
            } else if !config.fim.enabled {
                FimCollector::Off("file integrity monitoring is off ([fim] enabled = false)")
            } else {
                FimCollector::Stored(config.agent.state_dir.as_path().to_path_buf())
            };
            // The IMDS client runs on a runtime of its own, on the cloud collector's thread: a
            // scan needs no thread it cannot do without (see `ImdsRuntime::PerCollection`).
            let cloud = CloudCollector::new(&config.imds, root.clone(), ImdsRuntime::PerCollection);
            let collectors = Collectors::new(&config, root, cloud, fim);
            let mut report = scan::run(&config, &collectors, &only);
            let euid = nix::unistd::geteuid();
            if !euid.is_root() {
                // Not root: other users' homes (and root-only system directories) cannot be
                // entered by any user but root. That is expected, not a fault of this host:
                // counted in a note, the section stays ok. A file a collector exists to read (a
                // package database) stays a problem, and as root nothing is excused: a path
                // root cannot read is a problem.
                report.excuse_permission_denied(euid.as_raw(), &|path| {
                    private_directory(std::path::Path::new(path), &collectors.root)
                });
            }
            drop(collectors);
            let format = if args.json { Format::Json } else { args.format };
            let pretty = guestward_core::json::stdout_wants_pretty();
            let mut out = guestward_core::stdio::stdout();
            match format {
                // Indented on a terminal, compact otherwise (a pipe or a file: 14 MB of
                // indentation for 20,000 connections cost more than collecting them).
                Format::Json => guestward_report::write_report_json(&report, &mut out, pretty)?,
                Format::Human => guestward_report::render::render_human(&report, &mut out)?,
                Format::Cyclonedx => {
                    let (bom, left_out) = guestward_report::cyclonedx::report_to_json(&report)?;
                    for p in left_out {
                        tracing::warn!(problem = %p, "package left out of the SBOM");
                    }
                    // An SBOM has no place for a collector's problems: a degraded scan says on
                    // stderr why its SBOM may be incomplete (exit 1 promises the reason), or an
                    // empty one would read as a host with nothing installed.
                    for (name, status, problems) in report.section_problems() {
                        use guestward_core::SectionStatus::{Degraded, Error};
                        if matches!(status, Degraded | Error) {
                            warn_section_problems(name, problems);
                        }
                    }
                    out.write_all(bom.as_bytes())?;
                    writeln!(out)?;
                }
            }
            out.flush()?;
            let code = if let Some(threshold) = args.fail_on
                && report.findings.iter().any(|f| f.severity >= threshold.severity())
            {
                exit::FINDINGS
            } else if report.any_degraded() {
                exit::DEGRADED
            } else {
                exit::OK
            };
            // The process exits next and the system takes its memory back whole: freeing a
            // report of 20,000 connections piece by piece took a millisecond of a 60 ms scan.
            std::mem::forget(report);
            Ok(code)
        }
    }
}

/// A degraded section's problems on stderr, the first few and how many more.
fn warn_section_problems(name: &str, problems: &[guestward_core::Problem]) {
    const SHOWN: usize = 5;
    let mut err = std::io::stderr().lock();
    for p in problems.iter().take(SHOWN) {
        let _ = writeln!(err, "guestward-agent: {name}: {p}");
    }
    if problems.len() > SHOWN {
        let _ =
            writeln!(err, "guestward-agent: {name}: ... and {} more (see --json)", problems.len() - SHOWN);
    }
}

/// Host paths every distribution keeps readable by all users, and which collectors exist to
/// read: their permission problems are never excused (see [`private_directory`]).
const NEVER_PRIVATE: &[&str] = &[
    "/etc/passwd",
    "/etc/group",
    "/etc/os-release",
    "/usr/lib/os-release",
    "/etc/ssh/sshd_config",
    "/var/lib/dpkg",
    "/var/lib/rpm",
    "/usr/lib/sysimage/rpm",
];

/// Whether `path` (as a problem names it: a host path, or a real path under `root`) is a
/// directory this user may not enter, or lies inside one (its own metadata cannot be read).
/// Files are never: an unreadable package database is a problem whoever runs the scan.
///
/// Looked up through `root` (symlinks resolved inside it, as the collectors read), so a link
/// in a mounted snapshot never sends the check to the scanning host's own files.
///
/// Never for what every Linux keeps readable by all users ([`NEVER_PRIVATE`]): a tree in which
/// the package database or `/etc/passwd` cannot be read was not inventoried, whoever runs the
/// scan (a root whose `/etc` or `/var/lib/dpkg` was 0700 once passed as clean, exit 0).
fn private_directory(path: &std::path::Path, root: &HostRoot) -> bool {
    let host_path = match path.strip_prefix(root.dir()) {
        Ok(inside) if !root.is_live() => std::path::Path::new("/").join(inside),
        _ => path.to_path_buf(),
    };
    if NEVER_PRIVATE.iter().any(|p| host_path.starts_with(p)) {
        return false;
    }
    match root.symlink_metadata(&host_path) {
        Ok(meta) => meta.is_dir(),
        Err(e) => matches!(e, guestward_core::HostFsError::PermissionDenied { .. }),
    }
}

/// The `--only` parser: the collector names of the wire protocol.
fn collector_parser() -> impl TypedValueParser<Value = Collector> {
    clap::builder::PossibleValuesParser::new(
        Collector::ALL.map(|c| clap::builder::PossibleValue::new(c.name()).help(c.about())),
    )
    .try_map(|name| name.parse::<Collector>())
}

fn print_stdout(text: &str) -> std::io::Result<()> {
    let mut out = guestward_core::stdio::stdout();
    out.write_all(text.as_bytes())?;
    out.flush()
}
