//! File integrity monitoring: AIDE's rigor (a baseline of hashes and attributes) with
//! realtime inotify detection, in one engine shared by the daemon and the one-shot commands.
//!
//! - [`config`]: the `[fim]` policy (paths, per-path rules, excludes, attributes).
//! - [`record`]: what is recorded per file, read without following symlinks.
//! - [`store`]: the baseline in `fim.db` (SQLite, WAL) under the state directory.
//! - [`scan`]: parallel, rate-limited, resumable scans into a staging table.
//! - [`engine`]: scans with a purpose (init, check, update, rescan) and the diff to changes.
//! - [`monitor`]: realtime inotify, debouncing, watch budget, overflow rescans, coverage gaps.
//! - [`oneshot`]: `fim init | check | update` for the CLI; [`cli`]: their clap definitions.
//! - [`events`]: typed payloads of `fim.change` and `coverage.gap` events.
//!
//! The honesty rule: a change is either reported (with the mechanism that saw it) or covered
//! by an explicit `coverage.gap` event naming the trees and the cause.

pub mod cli;
pub mod config;
pub mod engine;
pub mod events;
pub mod monitor;

pub mod oneshot;
pub mod record;
pub mod scan;
pub mod store;

pub use config::Config;
pub use engine::{Fim, FimError, Purpose, ScanSummary, Scope};
pub use events::{ChangeKind, CoverageGap, FimChange, GapCause, Mechanism};
pub use monitor::{FimStatus, Monitor};
