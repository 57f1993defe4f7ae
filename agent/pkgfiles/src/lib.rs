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

pub mod transaction;
