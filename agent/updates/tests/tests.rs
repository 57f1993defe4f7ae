//! Integration tests of guestward-updates (one binary, ripgrep style).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod apt_fixture;
mod apt_oracle;
mod fuzz_corpus;
mod rpm_repo;
