//! Integration tests of guestward-network (one binary, ripgrep style).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod changes;
mod fixtures;
mod fuzz_corpus;
mod live;
mod oracle;
mod util;
mod walk;
