//! The daemon side of the control socket: HTTP/1.1 with JSON over a Unix socket
//! (`/run/guestward/agent.sock`). The request and response types are
//! [`guestward_report::protocol`], shared with `agentctl`, so the two cannot drift apart.

pub mod server;
