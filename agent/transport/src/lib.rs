//! Getting reports off the host, in the order data flows:
//!
//! - [`spool`]: every report is written durably (fsync) before any send and deleted only after
//!   the collector acknowledged its `batch_id`; bounded by `spool_max_bytes`, dropping in a
//!   documented order, counted and reported.
//! - [`shipper`]: delivers what the spool holds over HTTPS with mutual TLS (reqwest + rustls,
//!   the collector's CA pinned), batched by size and time, zstd-compressed, with backoff.
//! - [`config`]: the `[transport]` table of `agent.toml`.
//!
//! The wire protocol is `guestward_report::ingest`.

// Output goes through `guestward_core::stdio`: the print macros panic when a write fails.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod config;
pub mod shipper;
pub mod spool;

pub use config::{TlsVersion, TransportConfig};
pub use shipper::{DeliverySummary, Shipper, ShipperError};
pub use spool::{DropRecord, PushOutcome, Spool, SpoolError, SpooledBatch};
