//! End-to-end tests of reporting over mutual TLS: the real `guestward-agent`,
//! `guestward-collector` and `agentctl` binaries together on 127.0.0.1, with certificates from
//! the dev PKI (`guestward-collector pki`), and a stock nginx in front of the collector.
//!
//! The binaries come from the target directory of this test executable: run `./scripts/test`
//! (it builds every binary first), or `cargo build --workspace --bins` before
//! `cargo test -p guestward-e2e`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod crash;
mod demo;
mod handshake;
mod interop;
mod outage;
mod rotation;
mod spoof;
mod support;
