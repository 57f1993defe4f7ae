//! `agentctl`: the local CLI of the guestward agent. It talks to the daemon over the control
//! socket with the typed [`client::Client`] and renders what the daemon answers; it collects
//! nothing itself. One-shot work (`check-config`) is done by `guestward-agent`, which it runs,
//! so the two can never disagree.

// Output goes through `guestward_core::stdio`: the print macros panic when a write fails.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod client;
pub mod inventory;
pub mod status;

use clap::builder::TypedValueParser;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use client::{Client, ClientError, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, SCAN_REQUEST_TIMEOUT};
use guestward_core::exit;
use guestward_core::{Finding, Timestamp};
use guestward_report::Report;
use guestward_report::protocol::{Collector, FlushOutcome, FlushRequest, Health, ScanRequest, Status};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the daemon reads its configuration (and so where its socket path is written).
pub const DEFAULT_CONFIG_PATH: &str = "/etc/guestward/agent.toml";
/// The control socket when the configuration does not name one.
pub const DEFAULT_SOCKET_PATH: &str = "/run/guestward/agent.sock";

/// `agentctl status`: the agent is not running, or could not be reached (no socket, connection
/// refused, no answer in time).
pub const EXIT_NOT_RUNNING: u8 = 2;
/// `agentctl status`: the control socket refused us (file permissions, or the daemon's
/// peer-credential check).
pub const EXIT_PERMISSION_DENIED: u8 = 3;

/// How long `agentctl flush` lets the agent deliver when `--timeout` is not given (the
/// daemon's own default), and at most.
pub const FLUSH_DEFAULT_SECS: u64 = 30;
/// The longest `--timeout` of `agentctl flush` (the daemon's cap).
pub const FLUSH_MAX_SECS: u64 = 600;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  status: degraded; scan, ports, access, imds: a section degraded or failed; fim status: coverage
     degraded; fim baseline: no complete baseline yet; flush: not everything was delivered, or
     reporting is off; check-config: the file is invalid
  2  usage error, or the agent is not running, unreachable, or did not answer in time
  3  status only: permission denied on the control socket
With --json, every failure prints one JSON object on stdout (`agentctl status --help` shows
it) and one line on stderr. A closed standard output (`agentctl report --json | head`) stops
the output quietly, exit 0.";

const STATUS_EXIT_CODES: &str = "\
Exit codes (for scripts and health checks):
  0  ok: the agent runs and does everything it is configured to do
  1  degraded: it runs, but some part does not do its whole job (the reasons say which)
  2  not running or unreachable: no socket, connection refused, or no answer in time
  3  permission denied: run as root or as a member of the socket's group (guestward)
With --json every outcome prints one JSON object on stdout: the status when the agent
answered (its `health.verdict` is `ok` or `degraded`), else
  {\"health\": {\"verdict\": \"not_running\", \"reasons\": [\"...\"]}, \"error\": \"...\",
   \"kind\": \"not_running\", \"reachable\": false, \"socket\": \"/run/guestward/agent.sock\",
   \"exit_code\": 2}
where verdict and kind are `not_running`, `unreachable` or `permission_denied`.";

const FLUSH_EXIT_CODES: &str = "\
Exit codes:
  0  everything the spool held was delivered (acknowledged by the collector)
  1  not everything was delivered before --timeout (it stays spooled; the error says why), or
     reporting is off ([transport] enabled = false: the agent answers 409)
  2  usage error, or the agent is not running, unreachable, or did not answer in time";

/// The control socket and how long to wait for the agent. Accepted before the command
/// (`agentctl --socket S status`) or after it (`agentctl status --socket S`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Connection {
    /// The agent's control socket [default: control.socket_path from
    /// /etc/guestward/agent.toml, else /run/guestward/agent.sock]
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Give up waiting for the agent's answer after SECS seconds [default: 30; `scan`,
    /// `ports` and `imds`, which run a scan (after any scan in progress), 600]. Connecting has
    /// its own 5 s limit.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: Option<u64>,
}

/// Local control of the guestward agent. Start with `agentctl status`.
#[derive(Debug, Parser)]
#[command(name = "agentctl", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// The socket and timeout, given before the command.
    #[command(flatten)]
    pub connection: Connection,
    /// Print JSON instead of tables (also accepted after the command).
    #[arg(long)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands. Each offers only the options it uses.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start here: the health verdict and why, the agent, its configuration and identity, each
    /// collector's last and next run, file integrity, reporting and self-limits.
    #[command(after_help = STATUS_EXIT_CODES)]
    Status {
        #[command(flatten)]
        #[allow(missing_docs)]
        connection: Connection,
        /// Print the status as JSON (every outcome prints JSON; see below).
        #[arg(long)]
        json: bool,
    },
    /// The latest full report (same shape as `guestward-agent scan --json`).
    Report {
        #[command(flatten)]
        #[allow(missing_docs)]
        connection: Connection,
        /// Print JSON instead of the human summary.
        #[arg(long)]
        json: bool,
    },
    /// The findings of the latest scan, most severe first. `--id` and `--min-severity` pick
    /// some, as `guestward-collector findings` does across the fleet.
    Findings {
        /// A finding id (GW-FIM-006), or a prefix ending in `*` (quote it: 'GW-FIM-*'); repeat
        /// for several. Default: every id.
        #[arg(long = "id", value_name = "ID", value_parser = guestward_core::finding::parse_finding_pattern)]
        ids: Vec<String>,
        /// The lowest severity listed: info, low, medium, high or critical.
        #[arg(long, value_name = "SEVERITY", value_parser = guestward_core::finding::parse_severity)]
        min_severity: Option<guestward_core::Severity>,
        #[command(flatten)]
        #[allow(missing_docs)]
        connection: Connection,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The software inventory of the latest full report. With NAME: every package whose name
    /// contains NAME (any case), as a table (name, version, source, arch, location);
    /// `--all`: every package; neither: a count per package source. `--format cyclonedx`: a
    /// CycloneDX 1.6 SBOM of everything, for grype, trivy or Dependency-Track.
    Inventory {
        /// Only packages whose name contains this (case-insensitive), e.g. `openssl`.
        #[arg(value_name = "NAME", conflicts_with = "all")]
        name: Option<String>,
        /// List every package.
        #[arg(long)]
        all: bool,
        /// Output format (`cyclonedx` is JSON already: no --json, no NAME).
        #[arg(long, value_enum, default_value_t = InventoryFormat::Human, conflicts_with_all = ["json", "name", "all"])]
        format: InventoryFormat,
        #[command(flatten)]
        #[allow(missing_docs)]
        connection: Connection,
        /// Print JSON: the packages section, or with NAME or --all the matching rows.
        #[arg(long)]
        json: bool,
    },
    /// Listening sockets right now (the agent runs a fresh network scan): like `ss -tulpn`, plus
    /// exposure, user and systemd unit. `--json` prints the network section.
    Ports {
        #[command(flatten)]
        #[allow(missing_docs)]
        connection: Connection,
        /// Print the network section as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Pending updates right now (the agent reads the host's cached apt lists or dnf/yum
    /// metadata afresh; nothing is downloaded): every installed package with a newer candidate,
    /// security ones first with their advisories and CVEs, the metadata's age, and whether a
    /// reboot or service restarts are needed. `--json` prints the updates section.
    Updates {
        #[command(flatten)]
        #[allow(missing_docs)]
        connection: Connection,
        /// Print the updates section as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Who can log in and how, right now (the agent runs a fresh access scan): accounts that
    /// can log in and their password state (never a hash), the effective sshd settings, every
    /// authorized SSH key with its fingerprint, sudo grants of ALL or without a password, and
    /// static AWS keys on disk (masked). `--json` prints the access section and its findings.
    Access {
        #[command(flatten)]
        #[allow(missing_docs)]
        connection: Connection,
        /// Print `{"section": ..., "findings": [...]}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ask the agent to scan now and print the result.
    Scan {
        /// Run only these collectors (comma-separated): host, packages, cloud, network, fim, updates, access.
        #[arg(long, value_delimiter = ',', value_name = "COLLECTORS", value_parser = collector_parser())]
        only: Vec<Collector>,
        #[command(flatten)]
        #[allow(missing_docs)]
        connection: Connection,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ask the agent to send what its spool holds to the collector now, and wait for the
    /// collector's acknowledgements (`[transport]` must be enabled).
    #[command(after_help = FLUSH_EXIT_CODES)]
    Flush {
        /// The agent's control socket [default: control.socket_path from
        /// /etc/guestward/agent.toml, else /run/guestward/agent.sock]
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// How long the agent may try to deliver, in seconds [default: 30, at most 600];
        /// agentctl waits that long plus 15 s for its answer.
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=FLUSH_MAX_SECS))]
        timeout: Option<u64>,
        /// Print the outcome as JSON: {"delivered_reports", "remaining_reports", "error"}.
        #[arg(long)]
        json: bool,
    },
    /// The event history, oldest first: file changes, listener and package changes,
    /// lifecycle notices, coverage gaps. Storms appear as one summary per path
    /// (`data.coalesced`: count, first and last time).
    Events {
        /// Only events at or after this time: an RFC 3339 time (2026-11-29T17:00:00Z) or an
        /// age (30s, 15m, 1h, 2d, 1w; combined: 1h30m).
        #[arg(long, value_name = "TIME|AGE", value_parser = guestward_core::parse_time_arg)]
        since: Option<guestward_core::Timestamp>,
        /// Only events of this kind (`fim.change`), or of a family (`network.*`).
        #[arg(long, value_name = "KIND")]
        kind: Option<String>,
        /// At most this many events (the oldest that match; narrow with --since).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        limit: u64,
        /// Only events stored after the event with this id (each event's `id`): resume where
        /// an earlier run stopped.
        #[arg(long, value_name = "ID")]
        after: Option<i64>,
        /// Keep printing new events as they are stored (like `tail -F`; without --since or
        /// --after it starts now); stop with Ctrl-C. When the agent stops or restarts, wait for
        /// it (saying so on stderr) and go on after the last event printed: none is lost.
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        #[allow(missing_docs)]
        connection: Connection,
        /// Print a JSON array of the events, once all have arrived (with --follow: one object
        /// per line, as they come).
        #[arg(long)]
        json: bool,
    },
    /// File integrity monitoring: coverage status, or the change and coverage-gap events.
    Fim {
        /// What to show.
        #[command(subcommand)]
        command: FimCtl,
    },
    /// Validate a configuration file (default: /etc/guestward/agent.toml), listing every
    /// error with file:line:column and key. Needs no daemon: runs `guestward-agent
    /// check-config`, the daemon's own validation (exit 0 valid, 1 invalid, 2 unreadable).
    CheckConfig {
        /// The file to check.
        path: Option<PathBuf>,
        /// Print `{"path", "valid", "errors": [...]}`.
        #[arg(long)]
        json: bool,
    },
    /// Before an AMI is created from this instance (as root): stop the agent and remove what
    /// belongs to this instance (identity, spool, history, client certificate and key, the FIM
    /// baseline unless --keep-baseline). Runs `guestward-agent prepare-image`; see
    /// docs/ami.md. Exit 0 done, 1 an item could not be removed, 2 usage or configuration
    /// error or a state_dir that is not the agent's, 3 a running daemon could not be stopped.
    PrepareImage {
        /// The agent's configuration [default: /etc/guestward/agent.toml].
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Keep the FIM baseline, marked golden (re-verified at each instance's first boot).
        #[arg(long)]
        keep_baseline: bool,
        /// List what would be stopped and removed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ask the agent to query the EC2 Instance Metadata Service now and show this instance's
    /// identity and metadata-service posture. Off EC2 it answers `not_ec2` from local firmware
    /// data without sending any request. Without a running agent, use
    /// `guestward-agent scan --only cloud`.
    Imds {
        #[command(flatten)]
        #[allow(missing_docs)]
        connection: Connection,
        /// Print the cloud section and its findings as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the shell completion script of agentctl (`agentctl completions bash >
    /// /usr/share/bash-completion/completions/agentctl`; the packages install them).
    Completions {
        /// The shell.
        shell: guestward_core::cli_docs::Shell,
    },
    /// Write agentctl's man pages and bash, zsh and fish completions under DIR, laid out as
    /// they are installed under /usr/share (for packaging: scripts/gen-cli-docs).
    #[command(hide = true)]
    GenerateDocs {
        /// The directory to write into (created when missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

/// `agentctl fim ...`
#[derive(Debug, Subcommand)]
pub enum FimCtl {
    /// Watched trees, baseline size, last scan, degraded coverage (exit 1 when degraded).
    Status {
        #[command(flatten)]
        #[allow(missing_docs)]
        connection: Connection,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Baseline progress: entries recorded and bytes hashed while the daemon builds or verifies
    /// its baseline (exit 0 once a baseline is complete, 1 while none is).
    Baseline {
        /// Keep printing progress until the running scan finishes (or, right after the agent
        /// started, until its first scan has begun and finished). When the agent stops or
        /// restarts meanwhile, wait for it (saying so on stderr) and go on waiting.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        #[allow(missing_docs)]
        connection: Connection,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change and coverage-gap events, oldest first.
    Events {
        /// Only events at or after this time: an RFC 3339 time (2026-11-29T17:00:00Z) or an
        /// age (30s, 15m, 1h, 2d, 1w; combined: 1h30m).
        #[arg(long, value_name = "TIME|AGE", value_parser = guestward_core::parse_time_arg)]
        since: Option<guestward_core::Timestamp>,
        /// At most this many events, 1 to 10,000 (the oldest that match: narrow with --since).
        #[arg(long, default_value_t = 1000,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
        limit: usize,
        #[command(flatten)]
        #[allow(missing_docs)]
        connection: Connection,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Output formats of `agentctl inventory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InventoryFormat {
    /// A summary per package source, or a table with NAME or --all (`--json`: JSON).
    Human,
    /// A CycloneDX 1.6 JSON SBOM.
    Cyclonedx,
}

/// The options that apply to the command being run, whether given before or after it.
#[derive(Debug, Clone, Default)]
struct Options {
    socket: Option<PathBuf>,
    timeout: Option<u64>,
    json: bool,
}

impl Cli {
    /// Whether JSON output was asked for, before or after the command.
    pub fn json_requested(&self) -> bool {
        self.json || self.command.own_json()
    }

    /// The command and its options, the command's own taking precedence over those given
    /// before it. Options given before a command that does not use them are refused, as they
    /// would be after it: a silently ignored `--timeout` misleads.
    fn resolve(self) -> anyhow::Result<(Command, Options)> {
        let before = self.connection;
        let own = match &self.command {
            Command::Status { connection, json }
            | Command::Report { connection, json }
            | Command::Findings { connection, json, .. }
            | Command::Inventory { connection, json, .. }
            | Command::Ports { connection, json }
            | Command::Updates { connection, json }
            | Command::Access { connection, json }
            | Command::Scan { connection, json, .. }
            | Command::Events { connection, json, .. }
            | Command::Imds { connection, json }
            | Command::Fim { command: FimCtl::Status { connection, json } }
            | Command::Fim { command: FimCtl::Baseline { connection, json, .. } }
            | Command::Fim { command: FimCtl::Events { connection, json, .. } } => {
                Some((connection.socket.clone(), connection.timeout, *json))
            }
            Command::Flush { socket, timeout, json } => Some((socket.clone(), *timeout, *json)),
            Command::CheckConfig { .. }
            | Command::PrepareImage { .. }
            | Command::Completions { .. }
            | Command::GenerateDocs { .. } => None,
        };
        let options = match own {
            Some((socket, timeout, json)) => Options {
                socket: socket.or(before.socket),
                timeout: timeout.or(before.timeout),
                json: json || self.json,
            },
            None => {
                let name = self.command.name();
                if before.socket.is_some() || before.timeout.is_some() {
                    anyhow::bail!("`{name}` does not talk to the agent: --socket and --timeout do not apply");
                }
                if self.json
                    && !matches!(self.command, Command::CheckConfig { .. } | Command::PrepareImage { .. })
                {
                    anyhow::bail!("`{name}` has no JSON output: --json does not apply");
                }
                Options { json: self.json || self.command.own_json(), ..Options::default() }
            }
        };
        Ok((self.command, options))
    }
}

impl Command {
    /// `--json` given after the command.
    fn own_json(&self) -> bool {
        match self {
            Command::Status { json, .. }
            | Command::Report { json, .. }
            | Command::Findings { json, .. }
            | Command::Inventory { json, .. }
            | Command::Ports { json, .. }
            | Command::Updates { json, .. }
            | Command::Access { json, .. }
            | Command::Scan { json, .. }
            | Command::Flush { json, .. }
            | Command::Events { json, .. }
            | Command::CheckConfig { json, .. }
            | Command::PrepareImage { json, .. }
            | Command::Imds { json, .. }
            | Command::Fim { command: FimCtl::Status { json, .. } }
            | Command::Fim { command: FimCtl::Baseline { json, .. } }
            | Command::Fim { command: FimCtl::Events { json, .. } } => *json,
            Command::Completions { .. } | Command::GenerateDocs { .. } => false,
        }
    }

    /// The command's name as typed.
    fn name(&self) -> &'static str {
        match self {
            Command::Status { .. } => "status",
            Command::Report { .. } => "report",
            Command::Findings { .. } => "findings",
            Command::Inventory { .. } => "inventory",
            Command::Ports { .. } => "ports",
            Command::Updates { .. } => "updates",
            Command::Access { .. } => "access",
            Command::Scan { .. } => "scan",
            Command::Flush { .. } => "flush",
            Command::Events { .. } => "events",
            Command::Fim { .. } => "fim",
            Command::CheckConfig { .. } => "check-config",
            Command::PrepareImage { .. } => "prepare-image",
            Command::Imds { .. } => "imds",
            Command::Completions { .. } => "completions",
            Command::GenerateDocs { .. } => "generate-docs",
        }
    }
}

/// Parses the process's arguments and runs them; returns the exit code. A usage error with
/// `--json` among the arguments prints the JSON failure object too.
pub fn main_with_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> u8 {
    let args: Vec<std::ffi::OsString> = args.into_iter().collect();
    match Cli::try_parse_from(&args) {
        Ok(cli) => run(cli),
        Err(e) => {
            use clap::error::ErrorKind;
            let informational = matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            );
            if informational || !args.iter().any(|a| a == "--json") {
                // clap prints help to stdout (exit 0) and usage errors to stderr (exit 2).
                let _ = e.print();
                return u8::try_from(e.exit_code()).unwrap_or(exit::USAGE);
            }
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("usage error").trim_start_matches("error: ");
            let failure = Failure {
                message: first.to_string(),
                kind: FailureKind::Usage,
                socket: None,
                http_status: None,
            };
            emit_failure(&failure, true, false, exit::USAGE);
            exit::USAGE
        }
    }
}

/// Runs a parsed command line and returns the exit code.
pub fn run(cli: Cli) -> u8 {
    let json = cli.json_requested();
    let is_status = matches!(cli.command, Command::Status { .. });
    let is_flush = matches!(cli.command, Command::Flush { .. });
    match execute(cli) {
        Ok(code) => code,
        // `agentctl report --json | head`: the reader has what it wanted; as other Unix tools
        // do, stop without a message (exit 0, as ripgrep does).
        Err(e) if e.chain().any(exit::is_broken_pipe) => exit::OK,
        Err(e) => {
            let failure = Failure::of(&e);
            let code = failure.exit_code(is_status, is_flush);
            emit_failure(&failure, json, is_status, code);
            code
        }
    }
}

/// Why a command failed, classified for the exit code and the JSON failure object.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    message: String,
    kind: FailureKind,
    socket: Option<PathBuf>,
    http_status: Option<u16>,
}

/// The `kind` of a JSON failure object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailureKind {
    /// Nothing listens on the socket (missing, or connection refused).
    NotRunning,
    /// The socket's permissions, or the daemon's peer-credential check, refused us.
    PermissionDenied,
    /// The agent did not accept or did not answer in time, or the connection broke.
    Unreachable,
    /// The agent answered with an error (`http_status` says which).
    Api,
    /// The agent's answer was not understood (a different version?).
    Decode,
    /// Bad arguments, or a local error (writing the output, running check-config).
    Usage,
}

impl FailureKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::NotRunning => "not_running",
            Self::PermissionDenied => "permission_denied",
            Self::Unreachable => "unreachable",
            Self::Api => "api",
            Self::Decode => "decode",
            Self::Usage => "usage",
        }
    }
}

impl Failure {
    fn of(e: &anyhow::Error) -> Self {
        let client = e.chain().find_map(|c| c.downcast_ref::<ClientError>());
        let (kind, socket, http_status) = match client {
            Some(ClientError::NotRunning { socket }) => (FailureKind::NotRunning, Some(socket.clone()), None),
            Some(ClientError::PermissionDenied { socket }) => {
                (FailureKind::PermissionDenied, Some(socket.clone()), None)
            }
            // A path that is no socket: nothing there can answer (exit 2, as unreachable).
            Some(
                ClientError::Timeout { socket, .. }
                | ClientError::Transport { socket, .. }
                | ClientError::NotASocket { socket, .. },
            ) => (FailureKind::Unreachable, Some(socket.clone()), None),
            Some(ClientError::Api { status, .. }) => (FailureKind::Api, None, Some(*status)),
            Some(ClientError::Decode(_)) => (FailureKind::Decode, None, None),
            None => (FailureKind::Usage, None, None),
        };
        // Absolute in the JSON: a script that ran `--socket run/agent.sock` from elsewhere, or
        // logs the object, still knows which socket was meant. The path as given is what was
        // connected to (an absolute one may exceed the 108 bytes a socket address holds).
        let socket = socket.map(|s| std::path::absolute(&s).unwrap_or(s));
        Self { message: guestward_core::text::error_chain(e.chain()), kind, socket, http_status }
    }

    /// `status`: 2 unreachable, 3 permission denied; `flush`: 1 when the agent refused
    /// (409: reporting is off); everything else 2, as before.
    fn exit_code(&self, is_status: bool, is_flush: bool) -> u8 {
        match self.kind {
            FailureKind::PermissionDenied if is_status => EXIT_PERMISSION_DENIED,
            FailureKind::Api if is_flush && self.http_status == Some(409) => exit::DEGRADED,
            FailureKind::NotRunning | FailureKind::Unreachable if is_status => EXIT_NOT_RUNNING,
            _ => exit::USAGE,
        }
    }

    /// Whether an agent answered on the socket (`None`: nothing was asked of it).
    fn reachable(&self) -> Option<bool> {
        match self.kind {
            FailureKind::NotRunning | FailureKind::Unreachable => Some(false),
            FailureKind::PermissionDenied => Some(false),
            FailureKind::Api | FailureKind::Decode => Some(true),
            FailureKind::Usage => None,
        }
    }

    /// The JSON failure object (documented in `agentctl status --help` and the README).
    fn to_json(&self, is_status: bool, exit_code: u8) -> serde_json::Value {
        let mut value = serde_json::json!({
            "error": self.message,
            "kind": self.kind.as_str(),
            "reachable": self.reachable(),
            "socket": self.socket.as_ref().map(|s| s.display().to_string()),
            "exit_code": exit_code,
        });
        if let Some(status) = self.http_status {
            value["http_status"] = status.into();
        }
        if is_status {
            let verdict = match self.kind {
                FailureKind::NotRunning => "not_running",
                FailureKind::PermissionDenied => "permission_denied",
                _ => "unreachable",
            };
            value["health"] = serde_json::json!({ "verdict": verdict, "reasons": [self.message] });
        }
        value
    }
}

/// A command that waits on the agent for long (`events --follow`, `fim baseline --wait`) and
/// outlives an agent restart (`systemctl restart`, a package upgrade): it waits for the agent
/// to come back instead of ending, and says so on stderr, once when the agent goes and once when
/// it is back.
#[derive(Default)]
struct Reconnect {
    away_since: Option<std::time::Instant>,
}

impl Reconnect {
    /// A request failed: `Ok` when the agent is away for now (stopped, restarting, not yet
    /// accepting), so the caller waits and asks again; the error when the failure ends the
    /// command (permission denied, a wrong socket path, an answer this agentctl cannot read).
    fn failed(&mut self, e: ClientError) -> Result<(), ClientError> {
        if !matches!(
            e,
            ClientError::NotRunning { .. } | ClientError::Transport { .. } | ClientError::Timeout { .. }
        ) {
            return Err(e);
        }
        if self.away_since.is_none() {
            self.away_since = Some(std::time::Instant::now());
            let why = match &e {
                ClientError::NotRunning { socket } => {
                    format!("the agent stopped (nothing listens on {})", socket.display())
                }
                other => other.to_string(),
            };
            guestward_core::stdio::error_line(format_args!(
                "agentctl: {}; waiting for it to come back (Ctrl-C to stop)",
                guestward_core::text::escape_control(&why)
            ));
        }
        Ok(())
    }

    /// A request was answered. Returns whether the agent had been away, saying how long and
    /// what the command does now (`then`).
    fn answered(&mut self, then: impl FnOnce() -> String) -> bool {
        let Some(since) = self.away_since.take() else { return false };
        guestward_core::stdio::error_line(format_args!(
            "agentctl: the agent answers again after {} s; {}",
            since.elapsed().as_secs(),
            then()
        ));
        true
    }
}

/// Reports a failure once: one line on stderr, and with `json` the failure object on stdout.
fn emit_failure(failure: &Failure, json: bool, is_status: bool, exit_code: u8) {
    // The JSON first: a health check reading stdout must get its object even when the stderr
    // line cannot be written (a log on a full disk).
    if json {
        let mut out = guestward_core::stdio::stdout();
        // Compact, one line: a script reads it with one `read` or `jq`.
        let _ = serde_json::to_writer(&mut out, &failure.to_json(is_status, exit_code));
        let _ = writeln!(out);
        let _ = out.flush();
    }
    // The message may quote what answered on the socket, which need not be the agent:
    // escaped, so that no byte of it can drive the terminal.
    guestward_core::stdio::error_line(format_args!(
        "agentctl: {}",
        guestward_core::text::escape_control(&failure.message)
    ));
}

fn execute(cli: Cli) -> anyhow::Result<u8> {
    let (command, options) = cli.resolve()?;
    match &command {
        Command::CheckConfig { path, .. } => return check_config(path.clone(), options.json),
        Command::PrepareImage { config, keep_baseline, dry_run, .. } => {
            let mut args = Vec::new();
            if let Some(path) = config {
                args.push(std::ffi::OsString::from("--config"));
                args.push(path.clone().into_os_string());
            }
            args.push("prepare-image".into());
            for (on, flag) in
                [(*keep_baseline, "--keep-baseline"), (*dry_run, "--dry-run"), (options.json, "--json")]
            {
                if on {
                    args.push(flag.into());
                }
            }
            return run_agent(&args, "prepare the image");
        }
        Command::Completions { shell } => {
            let mut out = guestward_core::stdio::stdout();
            guestward_core::cli_docs::write_completions(&mut Cli::command(), *shell, &mut out)?;
            out.flush()?;
            return Ok(exit::OK);
        }
        Command::GenerateDocs { dir } => {
            let written = guestward_core::cli_docs::generate_to(Cli::command(), dir).map_err(|e| {
                anyhow::anyhow!("writing the man pages and completions into {}: {e}", dir.display())
            })?;
            let mut out = guestward_core::stdio::stdout();
            for path in written {
                writeln!(out, "{}", path.display())?;
            }
            return Ok(exit::OK);
        }
        _ => {}
    }
    let socket = match options.socket.clone() {
        Some(s) => s,
        None => configured_socket(Path::new(DEFAULT_CONFIG_PATH)),
    };
    let request_timeout = match (options.timeout, &command) {
        // The agent delivers for up to the flush timeout; its answer comes after.
        (secs, Command::Flush { .. }) => Duration::from_secs(flush_secs(secs) + 15),
        (Some(secs), _) => Duration::from_secs(secs),
        (
            None,
            Command::Scan { .. }
            | Command::Ports { .. }
            | Command::Updates { .. }
            | Command::Access { .. }
            | Command::Imds { .. },
        ) => SCAN_REQUEST_TIMEOUT,
        (None, _) => DEFAULT_REQUEST_TIMEOUT,
    };
    let client = Client::new(socket).with_timeouts(DEFAULT_CONNECT_TIMEOUT, request_timeout);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut out = guestward_core::stdio::stdout();
    let cli = options;
    let code: anyhow::Result<u8> = match command {
        Command::Status { .. } => {
            let mut status: Status = runtime.block_on(client.get("/v1/status"))?;
            // The verdict printed, put in the JSON and exited with are one and the same.
            status.health = status::effective_health(&status);
            if cli.json {
                write_json(&mut out, &status)?;
            } else {
                status::render(&status, Timestamp::now(), status::Width::of_stdout(), &mut out)?;
            }
            Ok(match status.health.verdict {
                Health::Ok => exit::OK,
                Health::Degraded => exit::DEGRADED,
            })
        }
        Command::Flush { .. } => {
            // The resolved `--timeout` (given before or after `flush`): the same value bounds
            // the agent's delivery and agentctl's wait for its answer.
            let request = FlushRequest { timeout_secs: Some(flush_secs(cli.timeout)) };
            let outcome: FlushOutcome = runtime.block_on(client.post("/v1/flush", &request))?;
            if cli.json {
                write_json(&mut out, &outcome)?;
            } else {
                let mut safe = guestward_core::text::TerminalSafe::new(&mut out);
                writeln!(
                    safe,
                    "delivered {} report(s); {} still spooled",
                    outcome.delivered_reports, outcome.remaining_reports
                )?;
                if let Some(e) = &outcome.error {
                    writeln!(safe, "error: {e}")?;
                }
                safe.flush()?;
            }
            Ok(if outcome.remaining_reports == 0 && outcome.error.is_none() {
                exit::OK
            } else {
                exit::DEGRADED
            })
        }
        Command::Report { .. } => {
            let report: Report = runtime.block_on(client.get("/v1/report"))?;
            print_report(&report, cli.json, &mut out)?;
            Ok(exit::OK)
        }
        Command::Scan { only, .. } => {
            let report: Report = runtime.block_on(client.post("/v1/scan", &ScanRequest { only }))?;
            print_report(&report, cli.json, &mut out)?;
            Ok(if report.any_degraded() { exit::DEGRADED } else { exit::OK })
        }
        Command::Ports { .. } => {
            let request = ScanRequest { only: vec![Collector::Network] };
            let report: Report = runtime.block_on(client.post("/v1/scan", &request))?;
            let Some(section) = report.network else {
                anyhow::bail!("the agent returned no network section");
            };
            print_section_view(&section, cli.json, &mut out, guestward_network::render_table)
        }
        Command::Updates { .. } => {
            let request = ScanRequest { only: vec![Collector::Updates] };
            let report: Report = runtime.block_on(client.post("/v1/scan", &request))?;
            let Some(section) = report.updates else {
                anyhow::bail!("the agent returned no updates section");
            };
            print_section_view(&section, cli.json, &mut out, guestward_updates::render_table)
        }
        Command::Inventory { format: InventoryFormat::Cyclonedx, .. } => {
            // Built by the daemon from its latest report: the CLI links no SBOM builder.
            let bom: serde_json::Value = runtime.block_on(client.get("/v1/sbom"))?;
            write_json(&mut out, &bom)?;
            Ok(exit::OK)
        }
        Command::Inventory { format: InventoryFormat::Human, name, all, .. } => {
            let report: Report = runtime.block_on(client.get("/v1/report"))?;
            let data = report.packages.as_ref().and_then(|s| s.data.as_ref());
            if name.is_none() && !all {
                if cli.json {
                    write_json(&mut out, &report.packages)?;
                } else {
                    match data {
                        Some(data) => {
                            guestward_packages::render_summary(data, &mut out)?;
                            writeln!(
                                out,
                                "(agentctl inventory NAME lists matching packages; --all lists every one)"
                            )?;
                        }
                        None => writeln!(out, "the latest report has no package inventory")?,
                    }
                }
                return finish(out, Ok(exit::OK));
            }
            let rows = data.map(|d| inventory::rows(d, name.as_deref())).unwrap_or_default();
            if cli.json {
                write_json(&mut out, &rows)?;
            } else if rows.is_empty() {
                match &name {
                    Some(n) => writeln!(
                        out,
                        "no installed package name contains `{}`",
                        guestward_core::text::escape_control(n)
                    )?,
                    None => writeln!(out, "the latest report has no package inventory")?,
                }
            } else {
                inventory::render(&rows, &mut out)?;
            }
            // A filter that matches nothing is an answer, not an error (grep would exit 1,
            // but "openssl is not installed" is what the operator asked to know).
            Ok(exit::OK)
        }
        Command::Findings { ids, min_severity, .. } => {
            let mut findings: Vec<Finding> = runtime.block_on(client.get("/v1/findings"))?;
            let all = findings.len();
            let filter = guestward_core::FindingFilter { ids, min_severity };
            findings.retain(|f| filter.matches(f));
            if cli.json {
                write_json(&mut out, &findings)?;
            } else if findings.is_empty() && !filter.is_empty() {
                writeln!(
                    out,
                    "no finding matches ({} in the latest scan)",
                    guestward_core::text::counted(
                        u64::try_from(all).unwrap_or(u64::MAX),
                        "finding",
                        "findings"
                    )
                )?;
            } else if findings.is_empty() {
                writeln!(out, "no findings")?;
            } else {
                render_findings(&findings, &mut out)?;
            }
            Ok(exit::OK)
        }
        Command::Events { since, kind, limit, after, follow, .. } => {
            let since = match since {
                Some(time) => Some(time),
                None if follow && after.is_none() => Some(guestward_core::Timestamp::now()),
                None => None,
            };
            let mut query = guestward_history::Query {
                since,
                kind: kind
                    .as_deref()
                    .map(guestward_history::KindPattern::parse)
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("--kind: {e}"))?,
                after_id: after,
                limit: usize::try_from(limit).unwrap_or(1000),
            };
            // The daemon answers at most MAX_EVENTS_PER_ANSWER events at a time (its memory);
            // larger requests are paged by id.
            let wanted = query.limit;
            let page = wanted.min(guestward_report::protocol::MAX_EVENTS_PER_ANSWER);
            query.limit = page;
            let mut printed = 0usize;
            // Without --follow, `--json` is one JSON array, as `agentctl fim events --json`.
            // It is built in memory and printed only once the last page has arrived: a request
            // that fails on any page (the agent down, a timeout, the agent dying between pages)
            // must print nothing but the failure object, as every failing `--json` command
            // does, not an array left open with the object after it. The memory is bounded by
            // --limit (at most 10,000 events). Following, one object per line, written as each
            // event comes, so a reader can act on it at once.
            let array = cli.json && !follow;
            let pretty = guestward_core::json::stdout_wants_pretty();
            let mut held: Vec<u8> = Vec::new();
            // Following, the agent may go away and come back (`systemctl restart`, a package
            // upgrade): the events are in its history on disk, so the follower waits and goes on
            // after the last one it printed, as `tail -F` does, instead of leaving a forwarding
            // script dead. Only once the agent has answered: a first request that fails still
            // fails, as every command's does.
            let mut answered = false;
            let mut reconnect = Reconnect::default();
            loop {
                let events: Vec<guestward_history::StoredEvent> =
                    match runtime.block_on(client.post("/v1/events", &query)) {
                        Ok(events) => events,
                        Err(e) if follow && answered => {
                            reconnect.failed(e)?;
                            std::thread::sleep(Duration::from_secs(1));
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    };
                answered = true;
                reconnect.answered(|| match query.after_id {
                    Some(id) => format!("following on after event {id}"),
                    None => "following on from where it started".to_string(),
                });
                if let Some(last) = events.last() {
                    query.after_id = Some(last.id);
                }
                for e in &events {
                    if array {
                        held.push(if held.is_empty() { b'[' } else { b',' });
                        if pretty {
                            held.push(b'\n');
                            serde_json::to_writer_pretty(&mut held, e)?;
                        } else {
                            serde_json::to_writer(&mut held, e)?;
                        }
                    } else if cli.json {
                        serde_json::to_writer(&mut out, e)?;
                        writeln!(out)?;
                    } else {
                        let line = guestward_report::render::event_line(&e.event);
                        writeln!(out, "{:>8} {}", e.id, guestward_core::text::escape_control(&line))?;
                    }
                }
                printed += events.len();
                out.flush()?;
                let short = events.len() < page;
                if !follow {
                    if short || printed >= wanted {
                        break;
                    }
                    query.limit = page.min(wanted - printed);
                    continue;
                }
                if short {
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            if array {
                if held.is_empty() {
                    writeln!(out, "[]")?;
                } else {
                    out.write_all(&held)?;
                    writeln!(out, "{}]", if pretty { "\n" } else { "" })?;
                }
            } else if printed == 0 && !cli.json {
                writeln!(out, "no events")?;
            }
            Ok(exit::OK)
        }
        Command::Fim { command: FimCtl::Status { .. } } => {
            let status: guestward_fim::FimStatus = runtime.block_on(client.get("/v1/fim/status"))?;
            if cli.json {
                write_json(&mut out, &status)?;
            } else {
                status.render_human(&mut out)?;
            }
            Ok(if status.degraded { exit::DEGRADED } else { exit::OK })
        }
        Command::Fim { command: FimCtl::Baseline { wait, .. } } => {
            let fetch = || runtime.block_on(client.get::<guestward_fim::FimStatus>("/v1/fim/status"));
            let mut status = fetch()?;
            // Bounded: a baseline of a large tree on a gentle rate limit can take a while, but
            // not forever; give up waiting (the scan goes on in the daemon) after 24 h.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(24 * 3600);
            // Also while the monitor is still starting (right after the daemon started, its
            // first scan has not begun: there is no progress yet, and no baseline either), for
            // at most a minute from the agent's start: a monitor that never gets going is
            // reported, not waited for.
            let mut started = std::time::Instant::now();
            let busy = |s: &guestward_fim::FimStatus, started: std::time::Instant| {
                use guestward_fim::MonitorState as M;
                s.scan_progress.is_some()
                    || matches!(s.state, M::Baselining | M::Verifying)
                    || (s.state == M::Starting && started.elapsed() < std::time::Duration::from_secs(60))
            };
            // An image build waits here, and the agent may be restarted meanwhile (a config
            // change, a package upgrade): wait for it, the baseline resumes where it stopped.
            let mut reconnect = Reconnect::default();
            while wait && busy(&status, started) && std::time::Instant::now() < deadline {
                if !cli.json
                    && let Some(p) = &status.scan_progress
                {
                    writeln!(out, "scanning: {}", progress_words(p))?;
                    out.flush()?;
                }
                loop {
                    std::thread::sleep(std::time::Duration::from_millis(500));
                    match fetch() {
                        Ok(fresh) => {
                            status = fresh;
                            break;
                        }
                        Err(e) => {
                            reconnect.failed(e)?;
                            if std::time::Instant::now() >= deadline {
                                anyhow::bail!(
                                    "the agent did not come back within 24 h of waiting for the baseline"
                                );
                            }
                        }
                    }
                }
                if reconnect.answered(|| "waiting for the baseline again".to_string()) {
                    started = std::time::Instant::now();
                }
            }
            let complete = status.baseline_completed_at.is_some();
            if cli.json {
                let view = serde_json::json!({
                    "complete": complete,
                    "files_in_baseline": status.files_in_baseline,
                    "baseline_completed_at": status.baseline_completed_at,
                    "scan_progress": status.scan_progress,
                });
                write_json(&mut out, &view)?;
            } else if let Some(at) = status.baseline_completed_at {
                writeln!(
                    out,
                    "baseline complete: {} entries, completed {}",
                    status.files_in_baseline,
                    at.human()
                )?;
            } else if let Some(p) = &status.scan_progress {
                // While the first baseline is built, `files_in_baseline` stays 0 until it is
                // complete: the scan's own counters are what says how far it got.
                writeln!(
                    out,
                    "no complete baseline yet; the agent is building it: {} (agentctl fim baseline --wait follows it)",
                    progress_words(p)
                )?;
            } else {
                writeln!(
                    out,
                    "no complete baseline yet ({} entries recorded so far)",
                    status.files_in_baseline
                )?;
            }
            Ok(if complete { exit::OK } else { exit::DEGRADED })
        }
        Command::Fim { command: FimCtl::Events { since, limit, .. } } => {
            let request = guestward_report::protocol::FimEventsRequest { since, limit: Some(limit) };
            let events: Vec<guestward_core::Event> =
                runtime.block_on(client.post("/v1/fim/events", &request))?;
            if cli.json {
                write_json(&mut out, &events)?;
            } else if events.is_empty() {
                writeln!(out, "no events")?;
            } else {
                for e in &events {
                    writeln!(out, "{}", guestward_fim::events::render_event_line(e))?;
                }
                writeln!(out, "{}", guestward_fim::events::render_events_summary(&events))?;
                // As many as asked for: the rest were not shown, which the summary cannot say.
                if events.len() >= limit {
                    writeln!(
                        out,
                        "the first {limit} event(s) shown: there may be more; narrow with --since, or \
                         raise --limit (at most 10000)"
                    )?;
                }
            }
            Ok(exit::OK)
        }
        Command::Access { .. } => {
            let request = ScanRequest { only: vec![Collector::Access] };
            let report: Report = runtime.block_on(client.post("/v1/scan", &request))?;
            let Some(section) = report.access else {
                anyhow::bail!("the agent returned no access section");
            };
            let findings: Vec<Finding> =
                report.findings.into_iter().filter(|f| f.source == "access").collect();
            render_access(&section, &findings, cli.json, &mut out)
        }
        Command::Imds { .. } => {
            let request = ScanRequest { only: vec![Collector::Cloud] };
            let report: Report = runtime.block_on(client.post("/v1/scan", &request))?;
            let Some(section) = report.cloud else {
                anyhow::bail!("the agent returned no cloud section");
            };
            let findings: Vec<Finding> =
                report.findings.into_iter().filter(|f| f.source == "cloud").collect();
            render_imds(&section, &findings, cli.json, &mut out)
        }
        // Handled above, before any connection.
        Command::CheckConfig { .. }
        | Command::PrepareImage { .. }
        | Command::Completions { .. }
        | Command::GenerateDocs { .. } => Ok(exit::USAGE),
    };
    finish(out, code)
}

/// The end of every command that printed: a write error (a closed pipe) must surface here,
/// not be lost when stdout is flushed at exit.
fn finish(mut out: guestward_core::stdio::Stdout, code: anyhow::Result<u8>) -> anyhow::Result<u8> {
    let code = code?;
    out.flush()?;
    Ok(code)
}

/// JSON on standard output: indented for a terminal, one line for a pipe.
fn write_json<T: serde::Serialize + ?Sized>(out: &mut dyn Write, value: &T) -> std::io::Result<()> {
    guestward_core::json::write_json(out, value, guestward_core::json::stdout_wants_pretty())
}

/// A running FIM scan's progress in words: `120/4,000 entries, 3.2 MiB hashed, 5 s`.
fn progress_words(p: &guestward_fim::model::ScanProgress) -> String {
    format!(
        "{}/{} entries, {} hashed, {} s",
        p.entries_done,
        p.entries_seen.max(p.baseline_entries),
        guestward_core::human::bytes(p.bytes_hashed),
        p.elapsed_ms / 1000
    )
}

/// How long `flush` lets the agent deliver: `--timeout`, else the default, at most the cap.
fn flush_secs(timeout: Option<u64>) -> u64 {
    timeout.unwrap_or(FLUSH_DEFAULT_SECS).min(FLUSH_MAX_SECS)
}

/// A one-section view (`agentctl ports`, `agentctl updates`): the section as JSON, or its note,
/// problems and table, made safe for a terminal (names come from the host: a process or package
/// name may carry escape sequences). Exit 1 when the section degraded or failed.
fn print_section_view<T: serde::Serialize>(
    section: &guestward_core::Section<T>,
    json: bool,
    out: &mut dyn Write,
    table: fn(&T, &mut dyn Write) -> std::io::Result<()>,
) -> anyhow::Result<u8> {
    if json {
        write_json(&mut *out, section)?;
    } else {
        let mut safe = guestward_core::text::TerminalSafe::new(&mut *out);
        if let Some(note) = &section.note {
            writeln!(safe, "note: {note}")?;
        }
        for p in &section.problems {
            writeln!(safe, "problem: {p}")?;
        }
        if let Some(data) = &section.data {
            table(data, &mut safe)?;
        }
        safe.flush()?;
    }
    let degraded = matches!(
        section.status,
        guestward_core::SectionStatus::Degraded | guestward_core::SectionStatus::Error
    );
    Ok(if degraded { exit::DEGRADED } else { exit::OK })
}

/// `agentctl access`: problems and notes first (what could not be read), then the tables, then
/// the findings. Exit 1 when the section degraded or failed.
fn render_access(
    section: &guestward_core::Section<guestward_access::AccessReport>,
    findings: &[Finding],
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<u8> {
    if json {
        let value = serde_json::json!({ "section": section, "findings": findings });
        write_json(out, &value)?;
    } else {
        let mut safe = guestward_core::text::TerminalSafe::new(out);
        let status = match section.status {
            guestward_core::SectionStatus::Ok => "ok",
            guestward_core::SectionStatus::Degraded => "DEGRADED",
            guestward_core::SectionStatus::Error => "ERROR",
            guestward_core::SectionStatus::Skipped => "skipped",
        };
        writeln!(safe, "access: {status} ({} ms)", section.duration_ms)?;
        if let Some(note) = &section.note {
            writeln!(safe, "note: {note}")?;
        }
        for p in &section.problems {
            writeln!(safe, "problem: {p}")?;
        }
        if let Some(data) = &section.data {
            writeln!(safe)?;
            guestward_access::render_table(data, &mut safe)?;
        }
        writeln!(safe)?;
        guestward_report::render::render_findings(findings, &mut safe)?;
        safe.flush()?;
    }
    let degraded = matches!(
        section.status,
        guestward_core::SectionStatus::Degraded | guestward_core::SectionStatus::Error
    );
    Ok(if degraded { exit::DEGRADED } else { exit::OK })
}

fn print_report(report: &Report, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    if json {
        guestward_report::write_report_json(report, out, guestward_core::json::stdout_wants_pretty())?;
    } else {
        guestward_report::render::render_human(report, out)?;
    }
    Ok(())
}

/// The findings table. Titles and remediations quote scanned data (paths, package names,
/// process names), so the whole table goes through the terminal-escaping writer.
fn render_findings(findings: &[Finding], out: &mut dyn Write) -> std::io::Result<()> {
    let mut out = guestward_core::text::TerminalSafe::new(out);
    writeln!(out, "{:<9} {:<14} TITLE", "SEVERITY", "ID")?;
    for f in findings {
        writeln!(out, "{:<9} {:<14} {}", f.severity.to_string(), f.id, f.title)?;
        writeln!(out, "{:<24} fix: {}", "", f.remediation)?;
    }
    out.flush()
}

/// `check-config` is the daemon's own validation, run as `guestward-agent check-config`: the
/// file the daemon would refuse is exactly the file reported here. The agent binary installed
/// beside `agentctl` is used, else the one on `PATH`. Its exit code is passed through.
fn check_config(path: Option<PathBuf>, json: bool) -> anyhow::Result<u8> {
    let path = path.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    let mut args = vec![std::ffi::OsString::from("check-config"), path.into_os_string()];
    if json {
        args.push("--json".into());
    }
    run_agent(&args, "check the configuration")
}

/// Runs `guestward-agent ARGS` (the binary installed beside `agentctl`, else the one on
/// `PATH`) and passes its exit code through.
fn run_agent(args: &[std::ffi::OsString], what: &str) -> anyhow::Result<u8> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("guestward-agent")))
        .filter(|p| p.is_file());
    let agent = beside.unwrap_or_else(|| PathBuf::from("guestward-agent"));
    let status = std::process::Command::new(&agent).args(args).status().map_err(|e| {
        anyhow::anyhow!("cannot run {} to {what} ({e}); is guestward-agent installed?", agent.display())
    })?;
    Ok(status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(exit::USAGE))
}

/// The socket named by `[control] socket_path` in the daemon's config file, else the default.
/// Only that key is read: a config with errors elsewhere must not stop `agentctl status`,
/// which is how an operator finds out what is wrong (check-config reports the errors).
pub fn configured_socket(config_path: &Path) -> PathBuf {
    #[derive(serde::Deserialize, Default)]
    struct Partial {
        #[serde(default)]
        control: PartialControl,
    }
    #[derive(serde::Deserialize, Default)]
    struct PartialControl {
        socket_path: Option<PathBuf>,
    }
    // Config files are small; anything larger is not the daemon's (it refuses over 1 MiB).
    const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
    let text = guestward_core::open_regular_file(config_path, true).ok().and_then(|f| {
        use std::io::Read;
        let mut text = String::new();
        f.take(MAX_CONFIG_BYTES).read_to_string(&mut text).ok().map(|_| text)
    });
    text.and_then(|t| toml::from_str::<Partial>(&t).ok())
        .and_then(|p| p.control.socket_path)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET_PATH))
}

/// The `--only` parser: the collector names of the wire protocol.
fn collector_parser() -> impl TypedValueParser<Value = Collector> {
    clap::builder::PossibleValuesParser::new(
        Collector::ALL.map(|c| clap::builder::PossibleValue::new(c.name()).help(c.about())),
    )
    .try_map(|name| name.parse::<Collector>())
}

/// `agentctl imds`: the cloud section of a fresh scan by the daemon. Exit 0 when the section is
/// ok or skipped, 1 when it degraded or failed.
fn render_imds(
    section: &guestward_core::Section<guestward_cloud::CloudReport>,
    findings: &[Finding],
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<u8> {
    if json {
        let value = serde_json::json!({ "cloud": section, "findings": findings });
        write_json(&mut *out, &value)?;
    } else {
        {
            let mut safe = guestward_core::text::TerminalSafe::new(&mut *out);
            if let Some(data) = &section.data {
                guestward_cloud::render_table(data, &mut safe)?;
            } else if let Some(note) = &section.note {
                writeln!(safe, "Cloud (IMDS): {note}")?;
            }
            for p in &section.problems {
                writeln!(safe, "  problem: {p}")?;
            }
            safe.flush()?;
        }
        if !findings.is_empty() {
            writeln!(out)?;
            render_findings(findings, out)?;
        }
    }
    use guestward_core::SectionStatus as S;
    Ok(match section.status {
        S::Ok | S::Skipped => exit::OK,
        S::Degraded | S::Error => exit::DEGRADED,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("agentctl").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn options_are_accepted_before_or_after_the_command_and_the_command_wins() {
        let (_, o) =
            parse(&["--socket", "/a", "--timeout", "5", "--json", "status"]).unwrap().resolve().unwrap();
        assert_eq!((o.socket.as_deref(), o.timeout, o.json), (Some(Path::new("/a")), Some(5), true));
        let (_, o) =
            parse(&["--socket", "/a", "status", "--socket", "/b", "--json"]).unwrap().resolve().unwrap();
        assert_eq!((o.socket.as_deref(), o.json), (Some(Path::new("/b")), true));
        let (_, o) = parse(&["fim", "events", "--json", "--timeout", "9"]).unwrap().resolve().unwrap();
        assert_eq!((o.timeout, o.json), (Some(9), true));
    }

    #[test]
    fn a_timeout_given_before_or_after_flush_bounds_the_delivery_and_the_wait_alike() {
        for args in [&["--timeout", "5", "flush"][..], &["flush", "--timeout", "5"]] {
            let (_, o) = parse(args).unwrap().resolve().unwrap();
            assert_eq!(flush_secs(o.timeout), 5, "{args:?}");
        }
        let (_, o) = parse(&["flush"]).unwrap().resolve().unwrap();
        assert_eq!(flush_secs(o.timeout), FLUSH_DEFAULT_SECS);
        let (_, o) = parse(&["--timeout", "5000", "flush"]).unwrap().resolve().unwrap();
        assert_eq!(flush_secs(o.timeout), FLUSH_MAX_SECS);
    }

    #[test]
    fn flags_a_command_ignores_are_not_offered_and_conflicts_are_refused() {
        use clap::error::ErrorKind;
        // Not offered after the command...
        assert_eq!(parse(&["completions", "bash", "--json"]).unwrap_err().kind(), ErrorKind::UnknownArgument);
        assert_eq!(
            parse(&["check-config", "--timeout", "3"]).unwrap_err().kind(),
            ErrorKind::UnknownArgument
        );
        // ...and refused before it.
        let e = parse(&["--json", "completions", "bash"]).unwrap().resolve().unwrap_err();
        assert!(e.to_string().contains("`completions` has no JSON output"), "{e}");
        let e = parse(&["--timeout", "3", "check-config"]).unwrap().resolve().unwrap_err();
        assert!(e.to_string().contains("--socket and --timeout do not apply"), "{e}");
        parse(&["--json", "check-config"]).unwrap().resolve().unwrap();
        // An SBOM is JSON already, and of everything.
        for args in [
            &["inventory", "--format", "cyclonedx", "--json"][..],
            &["inventory", "openssl", "--format", "cyclonedx"],
            &["inventory", "openssl", "--all"],
        ] {
            assert_eq!(parse(args).unwrap_err().kind(), ErrorKind::ArgumentConflict, "{args:?}");
        }
        // The flush timeout is the agent's delivery time, capped as the daemon caps it.
        assert!(parse(&["flush", "--timeout", "601"]).is_err());
        assert!(parse(&["flush", "--timeout", "600"]).is_ok());
    }

    #[test]
    fn help_documents_the_exit_codes_and_says_nothing_stale() {
        let mut cmd = Cli::command();
        let top = cmd.render_long_help().to_string();
        assert!(top.contains("3  status only: permission denied"), "{top}");
        let status = cmd.find_subcommand_mut("status").unwrap().render_long_help().to_string();
        for code in ["0  ok", "1  degraded", "2  not running or unreachable", "3  permission denied"] {
            assert!(status.contains(code), "{code}: {status}");
        }
        assert!(status.contains("\"verdict\": \"not_running\""), "{status}");
        let mut all = String::new();
        for sub in Cli::command().get_subcommands_mut() {
            all.push_str(&sub.render_long_help().to_string());
        }
        assert!(!all.contains("later"), "stale help: {all}");
    }

    #[test]
    fn a_down_agent_gives_a_stable_json_object_and_exit_2_for_status() {
        let e: anyhow::Error = ClientError::NotRunning { socket: "/run/guestward/agent.sock".into() }.into();
        let f = Failure::of(&e);
        assert_eq!(f.exit_code(true, false), EXIT_NOT_RUNNING);
        assert_eq!(f.exit_code(false, false), exit::USAGE);
        let json = f.to_json(true, 2);
        assert_eq!(json["health"]["verdict"], "not_running");
        assert_eq!(json["kind"], "not_running");
        assert_eq!(json["reachable"], false);
        assert_eq!(json["socket"], "/run/guestward/agent.sock");
        assert_eq!(json["exit_code"], 2);
        assert!(json["error"].as_str().unwrap().contains("not running"), "{json}");
        assert_eq!(json["health"]["reasons"][0], json["error"]);
        // Other commands: the same object without `health`.
        assert!(f.to_json(false, 2).get("health").is_none());
    }

    #[test]
    fn permission_denied_exits_3_for_status_and_a_refused_flush_exits_1() {
        let e: anyhow::Error = ClientError::PermissionDenied { socket: "/s".into() }.into();
        let f = Failure::of(&e);
        assert_eq!(f.exit_code(true, false), EXIT_PERMISSION_DENIED);
        assert_eq!(f.to_json(true, 3)["health"]["verdict"], "permission_denied");
        let e: anyhow::Error = ClientError::Api { status: 409, message: "reporting is off".into() }.into();
        let f = Failure::of(&e);
        assert_eq!((f.exit_code(false, true), f.exit_code(false, false)), (exit::DEGRADED, exit::USAGE));
        assert_eq!((f.to_json(false, 1)["http_status"].as_u64(), f.reachable()), (Some(409), Some(true)));
        let e: anyhow::Error = ClientError::Timeout {
            socket: "/s".into(),
            phase: client::TimeoutPhase::Answer,
            waited: Duration::from_secs(2),
        }
        .into();
        assert_eq!(Failure::of(&e).to_json(true, 2)["health"]["verdict"], "unreachable");
    }
}
