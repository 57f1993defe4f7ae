//! The guestward agent as a library; `guestward-agent` and `agentctl` are thin binaries over it.
//!
//! Data flows one way: [`collect`] runs each collector crate into a typed [`guestward_core::Section`],
//! [`scan`] assembles them into a [`report::Report`] envelope, and the binaries print it (later:
//! spool and ship it). [`config`] is the single TOML file that configures all of it.

pub mod cli;
pub mod collect;
pub mod config;
pub mod control;
pub mod daemon;
pub mod scan;

pub use guestward_core::exit;
