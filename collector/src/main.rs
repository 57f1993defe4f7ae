//! `guestward-collector`: the reference collector and its dev PKI. Argument parsing and the error
//! edge only; everything else is in the `guestward_collector` library.

// Output goes through `guestward_core::stdio`: the print macros panic when a write fails.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use guestward_collector::{config, operator, pki};
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
/// As an operator (from anywhere that reaches the collector):
///
///   export GUESTWARD_COLLECTOR_URL=https://localhost:8443
///   guestward-collector hosts --pki-dir pki --operator alice
///   guestward-collector findings --pki-dir pki --operator alice --id 'GW-FIM-*'
///   guestward-collector packages --pki-dir pki --operator alice xz-utils --below 5.6.0
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
    /// Serve the collector API (POST /v1/reports, GET /v1/hosts, GET /v1/hosts/{id}, GET
    /// /v1/findings, GET /v1/packages, GET /healthz) over mutual TLS.
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
    /// Every host that has reported: when it last delivered, reports stored and never
    /// received, agent version, bytes stored, client certificate expiry (GET /v1/hosts).
    ///
    /// Asks a running collector as an operator, over mutual TLS (see the connection options).
    ///
    /// With --silent-for: only the hosts silent longer than that, by the collector's clock
    /// (an agent stopped or killed, an instance gone, a network or certificate problem).
    ///
    /// Exit status: 0 answered (whether or not a host was listed), 1 no usable answer
    /// (unreachable, refused, a file unreadable), 2 usage error.
    Hosts {
        /// Only hosts whose last delivery is older than this age (30m, 2h, 1d; combined: 1h30m).
        #[arg(long, value_name = "AGE", value_parser = guestward_core::time::parse_age_arg)]
        silent_for: Option<u64>,
        #[command(flatten)]
        ask: AskArgs,
    },
    /// One host: its delivery record, its latest report as `guestward-agent scan` prints it,
    /// and its recent events (GET /v1/hosts/ID).
    ///
    /// Exit status: 0 answered, 1 no usable answer (the host unknown included), 2 usage error.
    Host {
        /// The host id, as `hosts` lists it.
        #[arg(value_name = "HOST_ID")]
        host_id: String,
        #[command(flatten)]
        ask: AskArgs,
    },
    /// Which hosts have which findings now: the findings of every host's latest report, most
    /// severe first, where each is (GET /v1/findings).
    ///
    /// At most 10,000 findings (and 8 MiB of them) per answer; the rest are counted: narrow
    /// the query with --id and --min-severity.
    ///
    /// Exit status: 0 answered (whether or not a finding matched), 1 no usable answer, 2 usage
    /// error. In scripts: `--json | jq '.findings | length'`.
    Findings {
        /// A finding id (GW-FIM-006), or a prefix ending in `*` (quote it: 'GW-FIM-*'); repeat
        /// for several. Default: every id.
        #[arg(long = "id", value_name = "ID", value_parser = guestward_core::finding::parse_finding_pattern)]
        ids: Vec<String>,
        /// The lowest severity listed: info, low, medium, high or critical.
        #[arg(long, value_name = "SEVERITY", value_parser = guestward_core::finding::parse_severity)]
        min_severity: Option<guestward_core::Severity>,
        /// One line per finding id instead of one per host: its severity, how many hosts have
        /// it, one of its titles; the most severe and widespread first.
        #[arg(long, conflicts_with = "json")]
        summary: bool,
        #[command(flatten)]
        ask: AskArgs,
    },
    /// Which hosts have a package, and which versions of it, now: "which hosts still run
    /// xz-utils 5.6.0?" (GET /v1/packages).
    ///
    /// Each host answers with its newest report that carried a package inventory (dpkg, rpm
    /// and language packages: pypi, maven, npm); AS OF says how old that is. A host whose
    /// reports reached the collector before it indexed packages, or carry no inventory, is
    /// counted below the table, not guessed.
    ///
    /// Examples:
    ///
    ///   guestward-collector packages xz-utils --version 5.6.0-0.1 --version 5.6.1-1
    ///   guestward-collector packages openssl --below 3.0.13-1~deb12u1 --source dpkg
    ///   guestward-collector packages 'org.apache.logging.log4j:log4j-core' --below 2.17.1
    ///   guestward-collector packages 'linux-image-*' --summary
    ///
    /// At most 10,000 (host, package) rows and 10,000 versions per answer; the rest are
    /// counted.
    ///
    /// Exit status: 0 answered (whether or not a package matched), 1 no usable answer, 2 usage
    /// error. In scripts: `--json | jq -r '.packages[].host_id'`.
    #[command(verbatim_doc_comment)]
    Packages {
        /// The package name as the agent reports it (dpkg and rpm names, `group:artifact` for
        /// Java, the distribution name for Python); `*` stands for any characters (quote it:
        /// 'openssl*').
        #[arg(value_name = "NAME", value_parser = guestward_collector::store::parse_package_field)]
        name: String,
        /// Only this exact version; repeat for several.
        #[arg(long = "version", value_name = "VERSION", value_parser = guestward_collector::store::parse_package_field)]
        versions: Vec<String>,
        /// Only versions lower than this one, in the package manager's own order (dpkg's
        /// for dpkg, rpm's for rpm and, for language packages, rpm's segment order); versions the
        /// rule cannot order are listed and marked `?`.
        #[arg(long, value_name = "VERSION", value_parser = guestward_collector::store::parse_package_field)]
        below: Option<String>,
        /// Only packages of this source: dpkg, rpm, pypi, maven or npm.
        #[arg(long, value_name = "SOURCE", value_parser = guestward_collector::store::PackageSource::parse)]
        source: Option<guestward_collector::store::PackageSource>,
        /// One line per version instead of one per host: how many hosts have it.
        #[arg(long, conflicts_with = "json")]
        summary: bool,
        #[command(flatten)]
        ask: AskArgs,
    },
    /// Which hosts listen on which ports now, and how far each listener can be reached from:
    /// "which hosts expose Redis on every interface?" (GET /v1/listeners).
    ///
    /// Each host answers with its newest report that carried a network scan (TCP listeners and
    /// unconnected UDP sockets, as `ss -l` lists them); AS OF says how old that is. PROCESS is
    /// the owner with the lowest process id (the parent of forked workers), USER and UNIT its
    /// user and systemd unit, PUBLIC the instance's public addresses the listener can be
    /// reached on (when the agent knew them). SCOPE is all-interfaces, interface, loopback, or
    /// ? when the agent could not tell; PROCESS is ? when the agent could not see the owner. A host whose reports carry no network scan is counted
    /// below the table, not guessed.
    ///
    /// Examples:
    ///
    ///   guestward-collector listeners --port 6379 --exposed
    ///   guestward-collector listeners --public
    ///   guestward-collector listeners --process 'java*' --summary
    ///   guestward-collector listeners --exposed --summary
    ///
    /// At most 10,000 (host, listener) rows and 10,000 services per answer; the rest are
    /// counted.
    ///
    /// Exit status: 0 answered (whether or not a listener matched), 1 no usable answer, 2 usage
    /// error. In scripts: `--json | jq -r '.listeners[].host_id'`.
    #[command(verbatim_doc_comment)]
    Listeners {
        /// Only this port; repeat for several.
        #[arg(long = "port", value_name = "PORT")]
        ports: Vec<u16>,
        /// Only this protocol: tcp or udp.
        #[arg(long, value_name = "PROTOCOL", value_parser = guestward_collector::store::parse_protocol)]
        protocol: Option<guestward_network::Protocol>,
        /// Only listeners of this scope: all-interfaces, interface or loopback; repeat for
        /// several.
        #[arg(long = "scope", value_name = "SCOPE", value_parser = guestward_collector::store::parse_scope)]
        scopes: Vec<guestward_network::ExposureScope>,
        /// Only listeners reachable from beyond the host: --scope all-interfaces --scope
        /// interface.
        #[arg(long, conflicts_with = "scopes")]
        exposed: bool,
        /// Only listeners whose process has this name (`comm`, as `ps -o comm` shows it); `*`
        /// stands for any characters (quote it: 'java*').
        #[arg(long, value_name = "NAME", value_parser = guestward_collector::store::parse_process_pattern)]
        process: Option<String>,
        /// Only listeners reachable on one of the instance's public addresses.
        #[arg(long)]
        public: bool,
        /// One line per service (port, protocol, scope, process) instead of one per host: how
        /// many hosts run it.
        #[arg(long, conflicts_with = "json")]
        summary: bool,
        #[command(flatten)]
        ask: AskArgs,
    },
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

/// How an operator's command reaches the collector and who it is. Each option may come from
/// the environment instead (the variable is named in its help), so that a shell sets them once.
#[derive(Debug, Args)]
#[command(next_help_heading = "Connection")]
struct AskArgs {
    /// The collector's address.
    #[arg(
        long,
        value_name = "URL",
        env = "GUESTWARD_COLLECTOR_URL",
        default_value = "https://localhost:8443"
    )]
    url: String,
    /// A PKI directory made by `pki init`, with --operator: uses DIR/ca.pem and
    /// DIR/operators/NAME/cert.pem and key.pem (each overridden by --ca, --cert, --key).
    #[arg(long, value_name = "DIR", env = "GUESTWARD_PKI_DIR", requires = "operator")]
    pki_dir: Option<PathBuf>,
    /// The operator's name in --pki-dir (as `pki issue-operator --name` issued it).
    #[arg(long, value_name = "NAME", env = "GUESTWARD_OPERATOR", requires = "pki_dir")]
    operator: Option<String>,
    /// The CA that issued the collector's certificate (PEM). The system's roots are never used.
    #[arg(long, value_name = "FILE", env = "GUESTWARD_COLLECTOR_CA")]
    ca: Option<PathBuf>,
    /// The operator's certificate (PEM).
    #[arg(long, value_name = "FILE", env = "GUESTWARD_OPERATOR_CERT")]
    cert: Option<PathBuf>,
    /// The operator's private key (PEM; refused when group or others may read it).
    #[arg(long, value_name = "FILE", env = "GUESTWARD_OPERATOR_KEY")]
    key: Option<PathBuf>,
    /// How long the request may take, in seconds, answer included (connecting: at most 10).
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
    /// Print the collector's answer as one JSON object (the protocol's types, see
    /// docs/collector.md) instead of tables.
    #[arg(long)]
    json: bool,
}

impl AskArgs {
    /// The files to use: each given one, else --pki-dir's.
    fn connection(&self) -> anyhow::Result<operator::Connection> {
        let from_pki = match (&self.pki_dir, &self.operator) {
            (Some(dir), Some(name)) => {
                pki::validate_name("operator name", name)?;
                let paths = pki::PkiPaths::new(dir);
                let operator = paths.operator_dir(name);
                // Only a directory known to be missing: one this user may not search is named by
                // the read of its files, with the advice on permissions.
                if std::fs::metadata(&operator).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
                    anyhow::bail!(
                        "{}: no such operator in {} (issue one with `guestward-collector pki issue-operator --dir {} --name {name}`)",
                        operator.display(),
                        dir.display(),
                        dir.display()
                    );
                }
                Some((paths.ca_cert(), operator.join("cert.pem"), operator.join("key.pem")))
            }
            _ => None,
        };
        let pick = |given: &Option<PathBuf>, derived: Option<PathBuf>, flag: &str| {
            given.clone().or(derived).with_context(|| {
                format!("no {flag} file: give {flag} FILE, or --pki-dir DIR --operator NAME (see --help)")
            })
        };
        Ok(operator::Connection {
            url: self.url.clone(),
            ca: pick(&self.ca, from_pki.as_ref().map(|f| f.0.clone()), "--ca")?,
            cert: pick(&self.cert, from_pki.as_ref().map(|f| f.1.clone()), "--cert")?,
            key: pick(&self.key, from_pki.as_ref().map(|f| f.2.clone()), "--key")?,
            timeout: std::time::Duration::from_secs(self.timeout),
        })
    }
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
    /// SAN URI urn:guestward:operator:NAME. Operators may read GET /v1/hosts*, /v1/findings and
    /// /v1/packages (the `hosts`, `host`, `findings` and `packages` commands); they may not post.
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
        Command::Hosts { silent_for, ask } => ask_collector(&ask, Question::Hosts { silent_for }),
        Command::Host { host_id, ask } => {
            pki::validate_name("host id", &host_id)?;
            ask_collector(&ask, Question::Host(host_id))
        }
        Command::Findings { ids, min_severity, summary, ask } => ask_collector(
            &ask,
            Question::Findings { filter: guestward_core::FindingFilter { ids, min_severity }, summary },
        ),
        Command::Packages { name, versions, below, source, summary, ask } => ask_collector(
            &ask,
            Question::Packages {
                query: guestward_collector::store::PackageQuery { name, versions, below, source },
                summary,
            },
        ),
        Command::Listeners { ports, protocol, mut scopes, exposed, process, public, summary, ask } => {
            if exposed {
                use guestward_network::ExposureScope;
                scopes = vec![ExposureScope::AllInterfaces, ExposureScope::Interface];
            }
            let query = guestward_collector::store::ListenerQuery {
                ports,
                protocol,
                scopes,
                process,
                public_only: public,
            };
            ask_collector(&ask, Question::Listeners { query, summary })
        }
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

/// What an operator's command asks.
enum Question {
    Hosts { silent_for: Option<u64> },
    Host(String),
    Findings { filter: guestward_core::FindingFilter, summary: bool },
    Packages { query: guestward_collector::store::PackageQuery, summary: bool },
    Listeners { query: guestward_collector::store::ListenerQuery, summary: bool },
}

/// Asks the collector and prints its answer: a table, or with --json the answer as JSON.
fn ask_collector(ask: &AskArgs, question: Question) -> anyhow::Result<()> {
    use std::io::Write;
    let client = operator::OperatorClient::new(&ask.connection()?)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let now = guestward_core::Timestamp::now();
    let mut out = std::io::BufWriter::new(guestward_core::stdio::stdout());
    // JSON is made whole before it is written (`to_writer` would hide a write error inside a
    // serde error): a closed pipe must reach the exit code as the I/O error it is.
    match question {
        Question::Hosts { silent_for } => {
            let mut list = runtime.block_on(client.hosts())?;
            let all = list.hosts.len();
            if let Some(secs) = silent_for {
                list.hosts.retain(|h| h.secs_since_last_seen > secs);
            }
            if ask.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
            } else {
                let silent = silent_for.map(|secs| operator::Silent { secs, of: all });
                operator::render_hosts(&list, silent, now, &mut out)?;
            }
        }
        Question::Host(id) => {
            let detail = runtime.block_on(client.host(&id))?;
            if ask.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&detail)?)?;
            } else {
                operator::render_host(detail, now, &mut out)?;
            }
        }
        Question::Findings { filter, summary } => {
            let answer = runtime.block_on(client.findings(&filter))?;
            if ask.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&answer)?)?;
            } else {
                let view =
                    if summary { operator::FindingsView::PerId } else { operator::FindingsView::PerHost };
                operator::render_findings(&answer, view, &mut out)?;
            }
        }
        Question::Packages { query, summary } => {
            let answer = runtime.block_on(client.packages(&query))?;
            if ask.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&answer)?)?;
            } else {
                let view = if summary {
                    operator::PackagesView::PerVersion
                } else {
                    operator::PackagesView::PerHost
                };
                operator::render_packages(&answer, &query, view, now, &mut out)?;
            }
        }
        Question::Listeners { query, summary } => {
            let answer = runtime.block_on(client.listeners(&query))?;
            if ask.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&answer)?)?;
            } else {
                let view = if summary {
                    operator::ListenersView::PerService
                } else {
                    operator::ListenersView::PerHost
                };
                operator::render_listeners(&answer, view, now, &mut out)?;
            }
        }
    }
    out.flush()?;
    Ok(())
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
