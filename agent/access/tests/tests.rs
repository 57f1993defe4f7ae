//! Integration tests of guestward-access (one binary: see Cargo.toml).
