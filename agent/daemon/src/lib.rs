//! The guestward agent as a library; `guestward-agent` is a thin binary over it.
//!
//! Data flows one way: [`collect`] holds one long-lived object per collector, each yielding
//! its typed [`guestward_core::Section`] with findings and events; [`scan`] assembles them into
//! a [`guestward_report::Report`] envelope; in the daemon, [`pipeline`] owns the cycle (scan,
//! change tracking, events, sequence) and [`control`] serves what it produced; with
//! `[transport]` enabled, [`transport`] holds the spool every full report is written to and the
//! shipper that delivers it ([`once`]: `run --once`, one report delivered and exit). [`config`]
//! is the single TOML file that configures all of it.

// Output goes through `guestward_core::stdio`: the print macros panic when a write fails.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod cli;
pub mod collect;
pub mod config;
pub mod control;
pub mod daemon;
pub mod identity;
pub mod logs;
pub mod once;
pub mod pipeline;
pub mod prepare_image;
pub mod scan;
pub mod selflimit;
pub mod transport;

pub use guestward_core::exit;
