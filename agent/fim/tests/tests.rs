//! Integration tests of guestward-fim against real files, real inotify and AIDE.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod fast;
mod hardening;
mod hostile;
mod oneshot;
mod oracle;
mod overflow;
mod pace;
mod realtime;
mod report;
mod restart;
mod store_failure;
