//! The control socket: HTTP/1.1 with JSON over a Unix socket (`/run/guestward/agent.sock`).
//!
//! The request and response types live in [`protocol`] and are used by both the daemon
//! ([`server`]) and `agentctl` ([`client`]), so the two cannot drift apart.

pub mod client;
pub mod protocol;
pub mod server;
