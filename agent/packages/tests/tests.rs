//! Integration tests for guestward-packages (one test binary per crate).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod dpkg;
mod fuzz_corpus;
mod rpm;
