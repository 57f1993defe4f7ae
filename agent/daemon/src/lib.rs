//! The guestward agent as a library; `guestward-agent` and `agentctl` are thin binaries over it.
//!
//! Data flows one way: [`collect`] runs each collector crate into a typed [`guestward_core::Section`],
//! [`scan`] assembles them into a [`report::Report`] envelope, and the binaries print it (later:
//! spool and ship it). [`config`] is the single TOML file that configures all of it.

pub mod cli;
pub mod collect;
pub mod config;
pub mod control;
pub mod ctl;
pub mod daemon;
pub mod report;
pub mod scan;

/// Documented process exit codes (also in `--help`).
pub mod exit {
    /// Everything ran and every collector succeeded (skipped collectors count as success).
    pub const OK: u8 = 0;
    /// The command ran, but some collector degraded or failed (or, for checks, found changes).
    pub const DEGRADED: u8 = 1;
    /// Bad usage or configuration: nothing was collected.
    pub const USAGE: u8 = 2;

    /// Whether an error is, anywhere in its chain, a write to a closed pipe
    /// (`guestward-agent scan --json | head`). Both binaries then stop quietly with [`OK`], as
    /// ripgrep does: the reader took what it wanted, which is not an error worth a message.
    /// serde_json wraps the I/O error without exposing it as a `source`, hence its own check.
    pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
        error.chain().any(|cause| {
            cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
                || cause
                    .downcast_ref::<serde_json::Error>()
                    .is_some_and(|e| e.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
        })
    }
}
