//! Integration tests of guestward-history against a real SQLite file in a temp directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]
