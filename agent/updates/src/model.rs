//! The `updates` section: what the host's own package manager metadata says is pending.

use guestward_core::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The `updates` section of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UpdatesReport {
    /// Debian/Ubuntu: the apt lists against the dpkg database; absent without dpkg.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apt: Option<PackageUpdates>,
    /// Amazon Linux / RHEL family: the dnf or yum caches against the rpm database; absent
    /// without an rpm database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<PackageUpdates>,
    /// Whether a reboot (or service restarts) is needed to run what is installed.
    pub reboot: RebootStatus,
}

impl UpdatesReport {
    /// Pending updates of every package manager.
    pub fn pending(&self) -> impl Iterator<Item = &PendingUpdate> {
        self.apt.iter().chain(&self.rpm).flat_map(|m| &m.pending)
    }
}

/// Which package manager's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Manager {
    /// apt lists (`/var/lib/apt/lists`) and dpkg.
    Apt,
    /// dnf or yum repository caches and rpm.
    Rpm,
}

impl std::fmt::Display for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Apt => "apt",
            Self::Rpm => "rpm",
        })
    }
}

/// One package manager's view: the metadata read, its age and the pending updates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PackageUpdates {
    /// apt or rpm.
    pub manager: Manager,
    /// The directories the metadata was read from.
    pub metadata_dirs: Vec<String>,
    /// Every package index read (one apt list file, one repository's primary).
    pub sources: Vec<UpdateSource>,
    /// apt lists on disk of sources no longer configured (apt ignores them until the next
    /// `apt-get update` deletes them; so does this).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<String>,
    /// When the metadata was last refreshed, as far as the files tell: the newest of the
    /// index files' modification times and the repositories' own dates (`Release` `Date`,
    /// `repomd.xml` revision). Absent when no index was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refreshed_at: Option<Timestamp>,
    /// Seconds from `refreshed_at` to the scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_secs: Option<u64>,
    /// Whether `age_secs` is over `[updates] stale_after_days` (or no index exists at all).
    pub stale: bool,
    /// Installed packages compared.
    pub installed: usize,
    /// Installed packages with a newer candidate, by name.
    pub pending: Vec<PendingUpdate>,
}

/// One package index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UpdateSource {
    /// The file read.
    pub path: String,
    /// `Origin` of the apt `Release` (e.g. `Debian`), or the rpm repository id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// `Label` of the apt `Release` (e.g. `Debian-Security`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// `Suite` (e.g. `stable-security`, `oldstable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suite: Option<String>,
    /// `Codename` (e.g. `bookworm-security`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codename: Option<String>,
    /// Whether updates from here are security updates (apt: `Label: Debian-Security` or a
    /// `*-security` suite; rpm: the repository has an `updateinfo`).
    pub security: bool,
    /// apt's default pin priority of this source: 500, 100 (`NotAutomatic` with
    /// `ButAutomaticUpgrades`) or 1 (`NotAutomatic`). Absent for rpm repositories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// The repository's own date (apt `Release` `Date`; rpm `repomd.xml` revision when it is
    /// a Unix time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dated: Option<Timestamp>,
    /// Modification time of the index file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<Timestamp>,
    /// Package entries in the index (all of them, not only installed names).
    pub entries: u64,
}

/// An installed package with a newer candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PendingUpdate {
    /// Package name.
    pub name: String,
    /// Architecture of the installed package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Installed version (`[epoch:]version[-release]`).
    pub installed: String,
    /// The version the package manager would install.
    pub candidate: String,
    /// Suites (apt) or repository ids (rpm) that carry the candidate, as `apt list` names them.
    pub from: Vec<String>,
    /// Whether the candidate is a security update: it comes from a security suite (apt) or a
    /// security advisory covers it (rpm).
    pub security: bool,
    /// The most severe advisory severity, normalised (`critical`, `important`, `moderate`,
    /// `low`), when an advisory names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// Advisories fixed by the candidate (rpm `updateinfo`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advisories: Vec<Advisory>,
}

/// One advisory (`updateinfo.xml` `<update>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Advisory {
    /// `ALAS-2024-1234`, `ALAS2023-2024-500`, `RHSA-2024:1234`...
    pub id: String,
    /// `security`, `bugfix`, `enhancement`, `newpackage`.
    pub kind: String,
    /// As written by the distribution (`Critical`, `important`, `Moderate`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// CVE ids referenced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cves: Vec<String>,
    /// `issued` date as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued: Option<String>,
    /// The package version the advisory ships (`[epoch:]version-release`).
    pub fixed_in: String,
}

/// Whether what runs is what is installed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RebootStatus {
    /// A reboot is needed: the distribution says so, or the running kernel is older than the
    /// newest installed one.
    pub required: bool,
    /// Why, one entry per reason.
    pub reasons: Vec<String>,
    /// Debian's `/var/run/reboot-required` exists.
    pub flag_file: bool,
    /// Packages named in `/var/run/reboot-required.pkgs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flag_packages: Vec<String>,
    /// The running kernel release (`uname -r`); absent on an offline root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_kernel: Option<String>,
    /// The newest installed kernel package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_kernel: Option<KernelPackage>,
    /// The installed package of the running kernel, when one is installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_kernel_package: Option<KernelPackage>,
    /// Processes still mapping shared libraries that were deleted (upgraded or removed)
    /// since they started: they run old code until restarted. Live system only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stale_processes: Vec<StaleProcess>,
    /// Processes whose maps were read.
    pub processes_scanned: u64,
    /// Processes whose maps could not be read (another user's, without root).
    pub processes_denied: u64,
    /// More processes needed restarting than `[updates] max_stale_processes`; the rest were
    /// not listed.
    pub stale_processes_truncated: bool,
}

/// A kernel package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KernelPackage {
    /// Package name (`linux-image-6.1.0-37-cloud-amd64`, `kernel`).
    pub name: String,
    /// Its version (`6.1.140-1`, `6.1.102-111.182.amzn2023`).
    pub version: String,
    /// The kernel release it installs (`6.1.0-37-cloud-amd64`, `6.1.102-111.182.amzn2023.x86_64`).
    pub release: String,
}

/// A process that maps deleted shared libraries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StaleProcess {
    /// Process id.
    pub pid: u32,
    /// `comm`.
    pub name: String,
    /// The deleted libraries (at most a few per process are named).
    pub libraries: Vec<String>,
}
