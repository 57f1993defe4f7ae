//! Integration tests of guestward-history against a real SQLite file in a temp directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod hostile;
mod store;
mod storm;
