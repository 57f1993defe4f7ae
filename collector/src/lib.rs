//! The reference collector: receives agents' reports over mutual TLS, binds each report to the
//! host identity of the client certificate that delivered it, stores it (SQLite behind the
//! [`store::Store`] trait) and serves the fleet's state to operators. Also the dev PKI that
//! issues the certificates ([`pki`]), and the operator's client of the API ([`operator`]).
//!
//! The wire protocol is `guestward_report::ingest`; `docs/collector.md` is the operator's guide.
//! A report flows: [`server`] (connection caps, TLS, timeouts) → `api` (identity, rate limit,
//! body caps, zstd, validation) → [`store`] (one transaction per request, idempotent on
//! `batch_id`).

// Output goes through `guestward_core::stdio`: the print macros panic when a write fails.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod config;
pub mod identity;
pub mod operator;
pub mod pki;
pub mod ratelimit;
pub mod server;
pub mod store;
pub mod tls;

mod api;
mod body;
mod json_cost;
mod loglimit;
mod memory;

use std::sync::Arc;

/// Opens the store named by `config.db` and binds the server: what `guestward-collector serve`
/// runs (then [`server::Server::run`]).
pub async fn bind(config: &config::ServeConfig) -> Result<server::Server, StartError> {
    // TLS files first: a mistake there should not leave a new database file behind.
    tls::TlsSetup::load(config).map_err(server::ServeError::from)?;
    let store = store::SqliteStore::open(&config.db, config.retention)?;
    Ok(server::Server::bind(config, Arc::new(store)).await?)
}

/// Why the collector could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// TLS or the listen address.
    #[error(transparent)]
    Serve(#[from] server::ServeError),
}
