//! Integration tests for guestward-rpmdb (one test binary; modules per concern).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod corruption;
mod dirs;
mod fixtures;
mod fuzz_corpus;
mod sqlite;
mod vercmp_oracle;

pub use guestward_core::testing::within;
use std::path::PathBuf;

/// The shared rpm database fixtures (see tests/fixtures/rpmdb/README.md).
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/rpmdb"))
}
