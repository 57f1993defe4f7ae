//! `agentctl`: the local command-line client of the guestward agent. See `agentctl --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(guestward_ctl::main_with_args(std::env::args_os()))
}
