//! Integration tests of guestward-pkgfiles: one binary, one module per concern.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod attribution;
mod dpkg;
mod index;
mod rpm;
mod support;
