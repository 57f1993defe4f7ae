//! `guestward-agent`: see `guestward-agent --help`.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    init_logging();
    let cli = guestward_agent::cli::Cli::parse();
    match guestward_agent::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // A closed stdout (`scan --json | head`) is not an error worth a message.
            if e.chain().any(guestward_agent::exit::is_broken_pipe) {
                return ExitCode::from(guestward_agent::exit::OK);
            }
            eprintln!("guestward-agent: error: {e:#}");
            ExitCode::from(guestward_agent::exit::USAGE)
        }
    }
}

/// Logs go to stderr (the journal under systemd); `GUESTWARD_LOG=debug` raises the level.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GUESTWARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colours only on a terminal: the journal (and a log file) would keep the escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}
