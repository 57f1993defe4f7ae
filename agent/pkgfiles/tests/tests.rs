//! Integration tests of guestward-pkgfiles: one binary, one module per concern.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod attribution;
mod dpkg;
mod fuzz_corpus;
mod index;
mod rpm;
mod support;
