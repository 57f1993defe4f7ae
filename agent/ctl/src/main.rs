//! `agentctl`: the local command-line client of the guestward agent. See `agentctl --help`.

// Output goes through `guestward_core::stdio`: the print macros panic when a write fails.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(guestward_ctl::main_with_args(std::env::args_os()))
}
