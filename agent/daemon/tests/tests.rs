//! End-to-end tests of the real `guestward-agent` and `agentctl` binaries (one test binary per
//! crate; modules below).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod access;
mod cli;
mod cloud;
mod config;
mod daemon;
mod events;
mod fim;
mod fim_report;
mod hardening;
mod image;
mod least_privilege;
mod lifecycle;
mod logs;
mod sbom;
mod scan_gate;
mod selflimit;
mod status;
mod support;
mod transport;
