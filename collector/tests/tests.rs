//! Integration tests of the collector: real TLS on 127.0.0.1 with certificates from its own PKI
//! code, a real SQLite file, real HTTP clients (reqwest over rustls, and raw tokio-rustls for
//! misbehaving clients). Every test is bounded in time.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod binary;
mod common;
mod handshake;
mod ingest;
mod limits;
mod operator;
mod pki;
mod proxy;
mod retention;
mod slow;
