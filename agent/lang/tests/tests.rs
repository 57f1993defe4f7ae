//! Integration tests for guestward-lang: real trees, real jars built with the zip crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod fuzz_corpus;
mod java;
mod node;
mod python;
mod walk;
