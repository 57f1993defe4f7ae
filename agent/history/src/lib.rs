//! The agent's event history.
//!
//! Events (`fim.change`, `network.listener_opened`, `coverage.gap`...) used to live only in the
//! latest report and in an in-memory queue of 10,000 that dropped the rest during a storm. This
//! crate keeps them instead:
//!
//! - `EventStore` (feature `store`): `events.db` (SQLite, WAL) in the state directory. Every stored event gets a
//!   monotonically increasing id (what `agentctl events --follow` and the spool read by), and
//!   the store is bounded by age and by count ([`Bounds`]). What the bounds drop is the oldest,
//!   and it is counted in persisted counters ([`HistoryStats`]); a drop of events no reader has
//!   seen yet leaves a `coverage.gap` event (cause [`GAP_CAUSE_OVERFLOW`]) in their place.
//! - [`Coalescer`]: a bounded in-memory stage in front of the store. Past a per-path rate or an
//!   overall backlog, the events of one path (or one listener, one package...) fold into ONE
//!   summary event carrying the first and last time, the count, the earliest old state and the
//!   latest new state, so a storm of rewrites never hides a path. Only when even the summaries
//!   exceed the memory cap are the oldest dropped, counted, and turned into a coverage gap.
//! - [`HistoryConfig`]: the `[history]` table of `agent.toml`, with its validation.
//!
//! Feature `store` (default) brings the SQLite store. Without it the crate is the types a
//! reader needs ([`StoredEvent`], [`Query`], [`KindPattern`], [`HistoryStats`]), the config
//! and the coalescer (pure, in memory), so `agentctl` and the report build without SQLite.
//!
//! The daemon owns one `Coalescer` and one `EventStore`: collectors' events go to
//! [`Coalescer::push`], and a periodic [`Coalescer::drain_ready`] feeds `EventStore::append_batch`
//! in bounded batches ([`Ready::into_batches`]).

// Output goes through `guestward_core::stdio`: the print macros panic when a write fails.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]
#![warn(missing_docs)]

mod coalesce;
mod config;
mod model;
#[cfg(feature = "store")]
mod store;

pub use coalesce::{Batch, CoalesceLimits, Coalescer, Ready, identity_of};
pub use config::{ConfigIssue, HistoryConfig};
pub use model::{AppendOutcome, Bounds, HistoryError, HistoryStats, KindPattern, Query, StoredEvent};
#[cfg(feature = "store")]
pub use store::{DB_FILE, EventStore, WAL_KEPT_BYTES};

/// Event kind of a coverage gap (the same kind the FIM uses for its own gaps).
pub const KIND_GAP: &str = "coverage.gap";

/// `cause` of the coverage gaps this crate opens: events were dropped before any reader saw
/// them (by the store's bounds or at the coalescer's memory cap).
pub const GAP_CAUSE_OVERFLOW: &str = "history_overflow";

/// The data of a history-overflow coverage gap. Field names follow the FIM's `CoverageGap`
/// (`id`, `cause`, `trees`, `start`, `end`, `detail`) so one renderer reads both; the rest say
/// how many events were lost and over which span of event times.
pub(crate) fn overflow_gap_data(
    dropped: u64,
    first_time: guestward_core::Timestamp,
    last_time: guestward_core::Timestamp,
    detail: &str,
) -> serde_json::Value {
    serde_json::json!({
        "cause": GAP_CAUSE_OVERFLOW,
        "trees": [],
        "start": first_time,
        "detail": detail,
        "dropped": dropped,
        "first_time": first_time,
        "last_time": last_time,
    })
}
