//! Process exit codes shared by `guestward-agent` and `agentctl` (documented in their `--help`).

/// Everything ran and every collector succeeded (skipped collectors count as success).
pub const OK: u8 = 0;
/// The command ran, but some collector degraded or failed (or, for checks, found changes).
pub const DEGRADED: u8 = 1;
/// Bad usage or configuration: nothing was collected.
pub const USAGE: u8 = 2;
/// `guestward-agent run --once`: a report was collected, but not everything the spool holds
/// reached the collector before the deadline (collector down or refusing, TLS failure), or the
/// report could not be written to the spool. What was not delivered stays spooled (a report the
/// spool refused leaves its events in the history) and goes with the next run or the daemon.
pub const NOT_DELIVERED: u8 = 3;
/// `guestward-agent scan --fail-on SEVERITY`: the report holds a finding at or above SEVERITY
/// (an AMI bake or CI job stops on it). Takes precedence over [`DEGRADED`].
pub const FINDINGS: u8 = 4;

/// Whether one cause of an error is a write to a closed pipe (`guestward-agent scan --json |
/// head`). The binaries then stop quietly with [`OK`], as ripgrep does: the reader took what it
/// wanted, which is not an error worth a message. Use on every link of a chain:
/// `error.chain().any(is_broken_pipe)`. serde_json wraps the I/O error without exposing it as
/// a `source`, hence its own check.
pub fn is_broken_pipe(cause: &(dyn std::error::Error + 'static)) -> bool {
    cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
        || cause
            .downcast_ref::<serde_json::Error>()
            .is_some_and(|e| e.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
}
