//! `guestward-agent`: see `guestward-agent --help`.

// Output goes through `guestward_core::stdio`: the print macros panic when a write fails.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Before any thread exists (the arena limit applies to arenas made after it): the same
    // malloc settings for the daemon and for every command run by hand, such as `fim init`.
    let tuning = guestward_reclaim::tune_allocator(|name| std::env::var_os(name));
    let cli = guestward_agent::cli::Cli::parse();
    // The daemon logs at info by default (start, stop, reload, configuration, file changes);
    // the one-shot commands print their result and log only warnings unless asked
    // (`RUST_LOG=info`). See `guestward_core::logging` for the journal and colour rules.
    guestward_core::logging::init(guestward_agent::cli::default_log_level(&cli));
    tracing::debug!(?tuning, "glibc malloc settings");
    match guestward_agent::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // A closed stdout (`scan --json | head`) is not an error worth a message.
            if e.chain().any(guestward_agent::exit::is_broken_pipe) {
                return ExitCode::from(guestward_agent::exit::OK);
            }
            guestward_core::stdio::error_line(format_args!(
                "guestward-agent: error: {}",
                guestward_core::text::error_chain(e.chain())
            ));
            ExitCode::from(guestward_agent::exit::USAGE)
        }
    }
}
