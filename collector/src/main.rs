//! `guestward-collector`: the reference collector and its dev PKI. Argument parsing and the error
//! edge only; everything else is in the `guestward_collector` library.

// Output goes through `guestward_core::stdio`: the print macros panic when a write fails.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use guestward_collector::{config, pki};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Receives guestward agents' reports over mutual TLS and serves the fleet's state.
///
/// Quick start (development):
///
///   guestward-collector pki init --dir pki
///   guestward-collector pki issue-agent --dir pki --host-id i-0123456789abcdef0
///   guestward-collector pki issue-operator --dir pki --name alice
///   guestward-collector serve --pki-dir pki --db collector.db --listen 127.0.0.1:8443
///
/// See docs/collector.md for the config file, the endpoints and deployment behind a load balancer.
#[derive(Debug, Parser)]
#[command(name = "guestward-collector", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the collector API (POST /v1/reports, GET /v1/hosts, GET /v1/hosts/{id}, GET /healthz) over mutual TLS.
    ///
    /// Every setting comes from the config file (all keys have defaults; relative paths are taken
    /// from the file's directory); the flags below override it. Stops on SIGINT or SIGTERM after
    /// open requests finish (at most 10 s).
    Serve(ServeArgs),
    /// Development PKI: a CA, the collector's server certificate, agent and operator certificates.
    ///
    /// Keys are ECDSA P-256, written 0600 and atomically; existing files are never replaced
    /// without --force.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Maintenance of the database. Stop the collector first: each command needs the database
    /// to itself, and refuses while another process has it open.
    #[command(subcommand)]
    Db(DbCommand),
    /// Write the collector's man pages and bash, zsh and fish completions under DIR, laid out
    /// as they are installed under /usr/share (for packaging: scripts/package).
    #[command(hide = true)]
    GenerateDocs {
        /// The directory to write into (created when missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// The config file (TOML). Without it, the defaults apply (see docs/collector.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address:port to listen on, e.g. 0.0.0.0:8443 (overrides `listen`).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// A PKI directory made by `pki init`: uses DIR/ca.pem, DIR/server.pem, DIR/server-key.pem
    /// (overrides `ca_file`, `cert_file`, `key_file`).
    #[arg(long, value_name = "DIR")]
    pki_dir: Option<PathBuf>,
    /// The SQLite database, created 0600 if missing (overrides `db`).
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Compact a database made by an earlier version, in place: compress its findings and events
    /// stored as plain text, count each host's bytes again, and convert the file to incremental
    /// auto_vacuum, so that retention hands deleted space back to the file system.
    ///
    /// The conversion rewrites the whole file (SQLite's VACUUM): it needs room for the data
    /// twice, beside the database and in SQLite's temporary directory (SQLITE_TMPDIR, else
    /// TMPDIR, else /var/tmp), and is skipped, saying so, when that room is missing. On a
    /// database that has incremental auto_vacuum already, its free pages are handed back. Each
    /// step commits on its own: an interrupted compaction loses nothing, and running it again
    /// goes on from where it stopped. A collector started meanwhile cannot open the database.
    ///
    /// Exit status: 0 when done (a skipped conversion included: see `vacuum`), 1 on an error.
    #[command(verbatim_doc_comment)]
    Compact(CompactArgs),
}

#[derive(Debug, Args)]
struct CompactArgs {
    /// The collector's config file: its `db` is compacted.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The SQLite database (overrides the config's `db`).
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
    /// Rewrite the rows only; leave the file's free space as it is (no VACUUM).
    #[arg(long)]
    no_vacuum: bool,
    /// Print what was done as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum PkiCommand {
    /// Create a CA (DIR/ca.pem, DIR/ca-key.pem, 10 years) and a server certificate for
    /// localhost and 127.0.0.1 (DIR/server.pem, DIR/server-key.pem).
    Init {
        #[command(flatten)]
        common: Common,
    },
    /// Issue an agent certificate: DIR/agents/ID/{cert.pem,key.pem}, CN = ID,
    /// SAN URI urn:guestward:host:ID, EKU clientAuth.
    ///
    /// The collector accepts from this certificate only reports whose agent.host_id is ID.
    IssueAgent {
        #[command(flatten)]
        common: Common,
        /// The host id, as the agent reports it (agent.host_id: the EC2 instance id, the
        /// machine id, or the configured id). Letters, digits, `.`, `_`, `-`.
        #[arg(long, value_name = "ID")]
        host_id: String,
    },
    /// Issue (replace) the collector's server certificate DIR/server.pem for these names.
    IssueServer {
        #[command(flatten)]
        common: Common,
        /// A DNS name the agents connect to; repeat for several.
        #[arg(long = "name", value_name = "DNS")]
        names: Vec<String>,
        /// An IP address the agents connect to; repeat for several.
        #[arg(long = "ip", value_name = "IP")]
        ips: Vec<IpAddr>,
    },
    /// Issue an operator certificate: DIR/operators/NAME/{cert.pem,key.pem},
    /// SAN URI urn:guestward:operator:NAME. Operators may read GET /v1/hosts*; they may not post.
    IssueOperator {
        #[command(flatten)]
        common: Common,
        /// The operator's name. Letters, digits, `.`, `_`, `-`.
        #[arg(long, value_name = "NAME")]
        name: String,
    },
}

#[derive(Debug, Args)]
struct Common {
    /// The PKI directory (created 0700 if missing).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Lifetime of the issued server, agent or operator certificate, in days (the CA always gets 10 years).
    #[arg(long, value_name = "DAYS", default_value_t = pki::DEFAULT_LEAF_DAYS)]
    days: u32,
    /// Replace existing files. Replacing the CA invalidates every certificate it issued.
    #[arg(long)]
    force: bool,
}

impl Common {
    fn options(&self) -> pki::IssueOptions {
        pki::IssueOptions { days: self.days, force: self.force }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Info by default; `RUST_LOG` (or `GUESTWARD_LOG`) overrides. Colour only on a terminal,
    // `<N>` priority prefixes under the journal (see `guestward_core::logging`).
    guestward_core::logging::init("info");
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed stdout (`pki issue-agent ... | head -c0`) is not an error worth a message,
        // as for the agent.
        Err(e) if e.chain().any(guestward_core::exit::is_broken_pipe) => ExitCode::SUCCESS,
        Err(e) => {
            guestward_core::stdio::error_line(format_args!(
                "guestward-collector: {}",
                guestward_core::text::error_chain(e.chain())
            ));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::GenerateDocs { dir } => {
            use clap::CommandFactory;
            let written = guestward_core::cli_docs::generate_to(Cli::command(), &dir)
                .with_context(|| format!("writing the man pages and completions into {}", dir.display()))?;
            for path in written {
                guestward_core::stdio::output_line(path.display())?;
            }
            Ok(())
        }
        Command::Db(DbCommand::Compact(args)) => compact(args),
        Command::Pki(cmd) => {
            let written = match &cmd {
                PkiCommand::Init { common } => pki::init(&common.dir, common.options()),
                PkiCommand::IssueAgent { common, host_id } => {
                    pki::issue_agent(&common.dir, host_id, common.options())
                }
                PkiCommand::IssueServer { common, names, ips } => {
                    pki::issue_server(&common.dir, names, ips, common.options())
                }
                PkiCommand::IssueOperator { common, name } => {
                    pki::issue_operator(&common.dir, name, common.options())
                }
            }?;
            for f in written.files {
                guestward_core::stdio::output_line(format_args!("wrote {}", f.display()))
                    .context("cannot write the list of files written to standard output")?;
            }
            Ok(())
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = config::Overrides { listen: args.listen, pki_dir: args.pki_dir, db: args.db };
    let config = config::load(args.config.as_deref(), &overrides)?;
    // One process-wide crypto provider (rustls needs it for anything not given one explicitly).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let server = guestward_collector::bind(&config).await?;
        let addr = server.local_addr().context("cannot read the bound address")?;
        tracing::info!(listen = %addr, db = %config.db.display(), "collector listening");
        // For a script waiting on the line; one that has closed its end (`| head -c0`) or a
        // full disk must not stop the server (the log says the same).
        let _ = guestward_core::stdio::output_line(format_args!("listening on {addr}"));
        server.run(shutdown_signal()).await?;
        anyhow::Ok(())
    })
}

/// Why `db compact` failed when only its output could not be written: the database is done.
const SUMMARY_NOT_WRITTEN: &str =
    "the database was compacted, but its summary could not be written to standard output";

fn compact(args: CompactArgs) -> anyhow::Result<()> {
    use guestward_collector::store::{CompactOptions, VacuumOutcome};
    use guestward_core::human::bytes;
    let overrides = config::Overrides { db: args.db, ..Default::default() };
    let config = config::load(args.config.as_deref(), &overrides)?;
    let summary =
        guestward_collector::store::compact(&config.db, CompactOptions { vacuum: !args.no_vacuum })?;
    if args.json {
        let json = serde_json::to_string_pretty(&summary).context("cannot write the summary as JSON")?;
        return guestward_core::stdio::output_line(json).context(SUMMARY_NOT_WRITTEN);
    }
    let vacuum = match &summary.vacuum {
        VacuumOutcome::NotAsked => {
            "not asked (--no-vacuum): free pages stay in the file, for new rows".to_string()
        }
        VacuumOutcome::FreePagesReleased { pages } => {
            format!("incremental auto_vacuum already: {pages} free pages handed back")
        }
        VacuumOutcome::Converted => {
            "converted to incremental auto_vacuum: retention now hands deleted space back".to_string()
        }
        VacuumOutcome::Skipped { reason } => format!("SKIPPED: {reason}"),
    };
    let lines = [
        format!("compacted {}", summary.path.display()),
        if summary.rows_rewritten == 0 {
            "  rows rewritten   none (no finding or event written before compression is left)".to_string()
        } else {
            format!(
                "  rows rewritten   {} findings and events written before compression ({} now compressed), {} -> {}",
                summary.rows_rewritten,
                summary.rows_compressed,
                bytes(summary.value_bytes_before),
                bytes(summary.value_bytes_after)
            )
        },
        format!("  hosts recounted  {}", summary.hosts_recounted),
        format!("  vacuum           {vacuum}"),
        format!(
            "  file             {} -> {} (with its write-ahead log)",
            bytes(summary.file_bytes_before),
            bytes(summary.file_bytes_after)
        ),
    ];
    for line in lines {
        guestward_core::stdio::output_line(line).context(SUMMARY_NOT_WRITTEN)?;
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
