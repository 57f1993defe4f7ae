//! `agentctl`: the local command-line client of the guestward agent. See `agentctl --help`.

use clap::{Parser, Subcommand};
use guestward_agent::config::{Config, ConfigSource, DEFAULT_CONFIG_PATH};
use guestward_agent::exit;
use std::path::PathBuf;
use std::process::ExitCode;

const EXIT_CODES: &str = "\
Exit codes:
  0  success (check-config: the file is valid)
  1  the check failed (check-config: the file is invalid)
  2  usage error";

/// Local control of the guestward agent.
#[derive(Debug, Parser)]
#[command(name = "agentctl", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a configuration file (default: /etc/guestward/agent.toml).
    #[command(after_help = EXIT_CODES)]
    CheckConfig {
        /// The file to check.
        path: Option<PathBuf>,
        /// Print the effective configuration (defaults filled in) as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { path, json } => {
            let path = path.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
            match Config::load(Some(&path)) {
                Ok((config, source)) => {
                    if json {
                        match serde_json::to_string_pretty(&config) {
                            Ok(text) => println!("{text}"),
                            Err(e) => {
                                eprintln!("agentctl: error: {e}");
                                return ExitCode::from(exit::USAGE);
                            }
                        }
                    } else {
                        let shown = match source {
                            ConfigSource::File(p) => p.display().to_string(),
                            ConfigSource::Defaults => "defaults".to_string(),
                        };
                        println!("{shown}: ok");
                    }
                    ExitCode::from(exit::OK)
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(exit::DEGRADED)
                }
            }
        }
    }
}
