//! What the agent reports, and what everything that reads a report shares.
//!
//! - [`Report`]: the envelope of one scan or daemon cycle, one optional [`guestward_core::Section`]
//!   per collector, findings and events, identified by a [`Report::batch_id`] and a per-host
//!   [`Report::sequence`]. Its JSON Schema is `docs/report.schema.json` ([`json_schema`]).
//! - [`protocol`]: the control socket's requests and answers (daemon and `agentctl`).
//! - [`ingest`]: the reporting protocol between an agent's shipper and a collector.
//! - [`cyclonedx`]: the report's software inventory as a CycloneDX 1.6 SBOM.
//! - [`render`]: the human summary of a report.
//! - [`client_identity`]: who a client certificate names (the collector's rule, the agent's check).
//! - [`catalogue`]: every finding id with its severity, rationale and remediation (`docs/findings.md`).
//!
//! This crate links the collectors' model types only (their `collect` features are off), so
//! `agentctl` and a collector server can read reports without netlink, inotify, SQLite or an
//! IMDS client.

// Output goes through `guestward_core::stdio`: the print macros panic when a write fails.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod catalogue;
pub mod client_identity;
pub mod cyclonedx;
mod envelope;
pub mod ingest;
pub mod protocol;
pub mod render;

pub use envelope::{
    AgentInfo, HostIdSource, Report, SCHEMA_VERSION, checked_in_json_schema, json_schema, new_batch_id,
    write_report_json,
};
