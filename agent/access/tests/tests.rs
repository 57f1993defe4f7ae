//! Integration tests of guestward-access (one binary: see Cargo.toml).
//!
//! Oracles: `sshd -T` (openssh-server) for the effective settings, `ssh-keygen -lf`
//! (openssh-client) for key types, sizes and fingerprints. The fixture tree is
//! tests/fixtures/access/root (see tests/fixtures/access/README.md).

mod fingerprints;
mod fixture_root;
mod fuzz_corpus;
mod garbage;
mod hostile;
mod sshd_oracle;
mod util;
