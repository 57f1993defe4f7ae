//! The pieces every guestward collector shares.
//!
//! - [`HostRoot`]: the directory through which every host file is read (`/` in production, a
//!   fixture tree in tests, a mounted snapshot with `--root`), resolving symlinks the way a
//!   chroot would so nothing read can escape it.
//! - [`Section`]: one collector's result, carrying data *and* the problems met on the way, so a
//!   failing collector never hides the others.
//! - [`Finding`] and [`Event`]: what the report tells the owner beyond raw inventory.
//! - [`state_file`]: the one atomic, durable way to replace a file in the state directory.
//! - [`config`]: [`ConfigIssue`], one problem in a config section by dotted key; sections
//!   report every issue, not only the first.
//! - [`ReadBuffer`]: the page-aligned buffer files are read into to be hashed (why: its
//!   documentation).
//! - [`text`]: bounding and escaping text read from scanned files before it is quoted or shown.
//!
//! Nothing here knows about the network, the spool or any particular collector.

// Output goes through `guestward_core::stdio`: the print macros panic when a write fails.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod capped;
#[cfg(feature = "cli-docs")]
pub mod cli_docs;
pub mod config;
#[cfg(feature = "dns")]
pub mod dns;
pub mod exit;
pub mod finding;
pub mod human;
pub mod json;
pub mod lock;
#[cfg(feature = "logging")]
pub mod logging;
mod paths;
mod read_buffer;
pub mod reserve;
mod root;
mod section;
pub mod state_file;
pub mod stdio;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod text;
pub mod threads;
pub mod time;

pub use config::ConfigIssue;
pub use finding::{Event, Finding, FindingFilter, Severity};
pub use paths::AbsolutePath;
pub use read_buffer::{READ_BUFFER_ALIGN, ReadBuffer};
pub use root::{
    HostFsError, HostRoot, MAX_SYMLINK_HOPS, READ_PERMISSION_ADVICE, ensure_regular, file_kind,
    leads_to_nothing, open_regular_file, read_regular_file_capped,
};
pub use section::{Problem, Section, SectionStatus};
pub use time::{Timestamp, parse_time_arg};
