//! File integrity monitoring: AIDE's rigor (a baseline of hashes and attributes) with
//! realtime inotify detection, in one engine shared by the daemon and the one-shot commands.
//!
//! - [`config`]: the `[fim]` policy (paths, per-path rules, excludes, attributes).
//! - [`record`]: what is recorded per file, read without following symlinks.
//! - [`dirfd`]: trees are walked and read through directory descriptors, never by path.
//! - [`store`]: the baseline in `fim.db` (SQLite, WAL) under the state directory; rows are
//!   validated on read, damage is reported by path and column.
//! - [`integrity`]: the keyed seal over the baseline's rows (`fim.baseline_key_file`).
//! - [`lock`]: one process at a time scans or changes a state directory's baseline.
//! - [`scan`]: parallel, rate-limited, resumable scans into a staging table.
//! - [`engine`]: scans with a purpose (init, check, update, rescan) and the diff to changes.
//! - [`monitor`]: realtime inotify, debouncing, watch budget, overflow rescans, coverage gaps.
//! - [`oneshot`]: `fim init | check | update` for the CLI; [`cli`]: their clap definitions.
//! - [`events`]: typed payloads of `fim.change` and `coverage.gap` events.
//! - [`model`]: the status, scan and report types (no I/O); [`report`]: the FIM report
//!   section ([`FimReport`]) and its findings ([`fim_findings`], [`FINDING_IDS`]).
//!
//! # Features
//! - `collect` (default): the collector (every module that reads files, SQLite or inotify).
//!   Without it only [`config`] (the `[fim]` struct, not its compiled policy), [`events`],
//!   [`model`] and [`report`] are built: what the report crate and `agentctl` need.
//!
//! The honesty rule: a change is either reported (with the mechanism that saw it) or covered
//! by an explicit `coverage.gap` event naming the trees and the cause.
//!
//! # Wiring into the daemon
//! - Config: `[fim]` deserializes into [`Config`]; [`Config::check`] (the one function that
//!   validates and compiles it, listing every problem by key) yields a
//!   [`config::Validated`], which the agent's loaded config holds.
//! - One-shot: a variant `Fim { #[command(subcommand)] cmd: guestward_fim::cli::FimCommand }`
//!   in `guestward-agent`'s CLI, run with
//!   `guestward_fim::cli::run(&cmd, &config.fim, config.agent.state_dir.as_path())`, whose
//!   return value is the exit code (0 no changes, 1 changes, 2 error).
//! - Daemon: `Monitor::start(Fim::from_validated(validated, HostRoot::live(), state_dir), sink)`
//!   (the policy compiled at config load, not a second compilation) where
//!   `sink` forwards each [`guestward_core::Event`] to the report/spool; then
//!   [`Monitor::status`] serves `/v1/fim/status` (`agentctl fim status`, rendered by
//!   [`FimStatus::render_human`]), [`Monitor::section`] is the report's FIM section
//!   ([`FimReport`]; findings: [`fim_findings`]), [`Monitor::events_since`] serves `/v1/fim/events?since=`,
//!   [`Monitor::request_rescan`] an on-demand verification, and [`Monitor::stop`] shutdown
//!   (an interrupted scan resumes at the next start).
//! - One-shot report without a running monitor: `FimReport::from_state_dir(state_dir)` reads
//!   `fim.db` read-only (`skipped`, saying how to create one, when there is no baseline).
//! - Self-limits: `Monitor::start_paced(fim, sink, Some(pace))` with a shared [`Pace`] the
//!   daemon turns up while it is over its CPU budget: scans then hash more slowly.
//! - Known limit: scans run on the monitor's thread, so realtime events wait (queued, not
//!   lost: a full queue becomes an overflow and another rescan) while a periodic or overflow
//!   rescan is running.

// Output goes through `guestward_core::stdio`: the print macros panic when a write fails.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]
// The module docs link the collector's modules, absent without `collect`.
#![cfg_attr(not(feature = "collect"), allow(rustdoc::broken_intra_doc_links))]

#[cfg(feature = "collect")]
pub mod attribution;
#[cfg(feature = "collect")]
pub mod cli;
pub mod config;
#[cfg(feature = "collect")]
pub mod dirfd;
#[cfg(feature = "collect")]
pub mod engine;
pub mod events;
#[cfg(feature = "collect")]
pub mod integrity;
#[cfg(feature = "collect")]
pub mod listing;
#[cfg(feature = "collect")]
pub mod lock;
pub mod model;
#[cfg(feature = "collect")]
pub mod monitor;
#[cfg(feature = "collect")]
pub mod oneshot;
#[cfg(feature = "collect")]
pub mod pace;
/// Package ownership and attribution (see [`package::PackageOracle`]).
pub mod package;
#[cfg(feature = "collect")]
pub mod record;
pub mod report;
#[cfg(feature = "collect")]
pub mod scan;
#[cfg(feature = "collect")]
mod scanned;
#[cfg(feature = "collect")]
pub mod store;
#[cfg(feature = "collect")]
mod verdict;

pub use config::Config;
#[cfg(feature = "collect")]
pub use engine::{Fim, FimError, Scope};
pub use events::{ChangeKind, CoverageGap, FimChange, GapCause, Mechanism, Transient};
pub use model::{FimStatus, MonitorState, Purpose, Rehash, ScanOutcome, ScanSummary, Verification};
#[cfg(feature = "collect")]
pub use monitor::Monitor;
#[cfg(feature = "collect")]
pub use pace::Pace;
pub use package::{ChangeOrigin, ExpectedFile, PackageAttribution, PackageOwner};
pub use report::{BaselineState, FINDING_IDS, FimReport, fim_findings, render_summary};
