//! Package-aware FIM: which package owns a file, what that package says the file should be,
//! and whether a change came from the package manager.
//!
//! The FIM engine knows nothing about dpkg or rpm: it asks a [`PackageOracle`] (implemented by
//! `guestward-pkgfiles`, wired in by the agent) and records the answer on each change as a
//! [`PackageAttribution`]. The types here are the model (no I/O), shared by the report crate
//! and `agentctl`; the trait exists with the `collect` feature only.

use guestward_core::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The package manager that owns a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PackageManager {
    /// Debian's dpkg (`/var/lib/dpkg`).
    Dpkg,
    /// rpm (`/var/lib/rpm`, `/usr/lib/sysimage/rpm`).
    Rpm,
}

/// A package, as its manager names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct PackageOwner {
    /// dpkg or rpm.
    pub manager: PackageManager,
    /// Package name (`openssh-server`).
    pub name: String,
    /// Installed version: dpkg's version, rpm's `[epoch:]version-release`.
    pub version: String,
    /// Architecture, when the manager records one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
}

/// A digest algorithm a package manager records for its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DigestAlgo {
    /// dpkg's `md5sums` and conffiles; rpm's `FILEDIGESTALGO` 1 (and its default).
    Md5,
    /// rpm `FILEDIGESTALGO` 2.
    Sha1,
    /// rpm `FILEDIGESTALGO` 11.
    Sha224,
    /// rpm `FILEDIGESTALGO` 8 (every current distribution).
    Sha256,
    /// rpm `FILEDIGESTALGO` 9.
    Sha384,
    /// rpm `FILEDIGESTALGO` 10.
    Sha512,
}

/// A digest with its algorithm, as lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct PackageDigest {
    /// Algorithm.
    pub algo: DigestAlgo,
    /// Lowercase hex.
    pub hex: String,
}

/// What one package says about one of its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ExpectedFile {
    /// The owning package.
    pub owner: PackageOwner,
    /// Expected content digest (regular files; `None` when the manager records none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<PackageDigest>,
    /// A configuration file (dpkg conffile, rpm `%config`): edits by the administrator are
    /// expected, so a difference is a lower-severity change, reported as such.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub conffile: bool,
    /// Expected permission bits and file type (`st_mode`), when recorded (rpm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Expected size in bytes, when recorded (rpm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Expected owner name, when recorded (rpm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Expected group name, when recorded (rpm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// Where a change to a package-owned file came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeOrigin {
    /// Inside a dpkg/rpm transaction, and the new content matches the new package version.
    PackageTransaction,
    /// Not explained by any package transaction: the new content does not match the package
    /// (or no transaction ran). A high-severity finding naming package and digests.
    OutsidePackageManager,
    /// A configuration file edited outside a transaction (lower severity).
    ConffileEdit,
    /// The package records nothing to compare with (no digest, or it could not be read).
    Unverified,
}

/// The package side of one `fim.change`: who owns the path and where the change came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PackageAttribution {
    /// The owning package (its version after the transaction, when there was one).
    pub owner: PackageOwner,
    /// Classification.
    pub origin: ChangeOrigin,
    /// The file is a conffile / `%config`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub conffile: bool,
    /// What the package says the content is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<PackageDigest>,
    /// What the content is, in the same algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual: Option<PackageDigest>,
    /// The transaction it belongs to (see [`PackageTransaction::id`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<String>,
}

/// A package transaction (dpkg run, rpm/dnf/yum run, unattended-upgrades), as observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PackageTransaction {
    /// Stable id: manager and start time (`dpkg-2026-12-02T10:00:00Z`).
    pub id: String,
    /// dpkg or rpm.
    pub manager: PackageManager,
    /// When it was first seen running (or its log's first line).
    pub started: Timestamp,
    /// What showed it: `lock /var/lib/dpkg/lock-frontend held by pid 123 (apt-get)`,
    /// `dpkg.log upgrade ...`, `process dnf (pid 77)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
}

/// The package manager as seen by FIM (implemented by `guestward-pkgfiles`).
///
/// Implementations read through the agent's `HostRoot`, bound every input, and never panic;
/// lookups are called from the FIM monitor's thread for changed package files only.
#[cfg(feature = "collect")]
pub trait PackageOracle: Send + Sync {
    /// Every package entry for the host path `path` (absolute, as on the monitored system).
    /// Empty: no package owns it. Several: shared between packages (multi-arch, diversions).
    fn expected(&self, path: &std::path::Path) -> Vec<ExpectedFile>;
    /// Re-reads the package databases (after a transaction ended).
    fn refresh(&self) -> Result<(), String>;
    /// The package transaction running now, if any.
    fn running_transaction(&self) -> Option<PackageTransaction>;
}
