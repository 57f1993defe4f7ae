//! The transport crate's integration tests: one binary (link time on 2 cores), one module per
//! concern. Every network test runs a real TLS handshake on 127.0.0.1 against the in-test
//! collector of `support::server`, with certificates from `support::pki` (rcgen).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

mod compression;
mod crash;
mod handshake;
mod shipper;
mod spool;
