//! `agentctl`: the local command-line client of the guestward agent. See `agentctl --help`.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(guestward_ctl::run(guestward_ctl::Cli::parse()))
}
