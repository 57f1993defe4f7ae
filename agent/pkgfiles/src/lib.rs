//! Package-aware file integrity: what dpkg and rpm say their files should be, checked against
//! what is on disk, and when a package transaction is running.
//!
//! No other agent joins these two: osquery lists package files, AIDE and Wazuh hash files, but
//! the signal that matters most is a package file that changed *outside* any package upgrade.
//!
//! - `dpkg`: `/var/lib/dpkg/info/<pkg>.md5sums`, `.list`, and the `Conffiles:` of the status
//!   file, read through [`guestward_core::HostRoot`].
//! - `rpm`: the file arrays of the rpm headers (BASENAMES/DIRNAMES/DIRINDEXES, FILEDIGESTS
//!   with FILEDIGESTALGO, FILEMODES, FILESIZES, FILEUSERNAME/GROUPNAME, FILEFLAGS).
//! - `index`: path -> owning package(s), compact enough for the daemon to keep.
//! - `verify`: `guestward-agent fim verify-packages` (like `debsums -c` / `rpm -V`).
//! - `transaction`: is dpkg/rpm/dnf/yum/unattended-upgrades running (locks, logs, processes).
//! - `oracle`: [`guestward_fim::package::PackageOracle`] over the index and transactions,
//!   which the FIM engine asks about each changed file.

// Output goes through `guestward_core::stdio`: the print macros panic when a write fails.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod cli;
pub mod dpkg;
pub mod index;
pub mod oracle;
pub mod rpm;
pub mod transaction;
pub mod verify;

pub use index::Index;
pub use oracle::Oracle;

use guestward_core::{HostFsError, Problem};

/// Why a package database file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A host file (status, `.list`, `.md5sums`, an rpm database) could not be read.
    #[error("{0}")]
    Host(#[from] HostFsError),
    /// The rpm database or header could not be read.
    #[error("rpm database: {0}")]
    Rpm(String),
    /// No package with this number in the index.
    #[error("no package number {0} in the index")]
    NoSuchPackage(u32),
}

impl ReadError {
    /// This error as a report problem.
    pub fn to_problem(&self) -> Problem {
        match self {
            Self::Host(e) => e.to_problem(),
            Self::Rpm(_) => Problem::new("rpm_database", self.to_string()),
            Self::NoSuchPackage(_) => Problem::new("internal", self.to_string()),
        }
    }
}

/// Lower-case hex.
pub use guestward_core::text::hex;
