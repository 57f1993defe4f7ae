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
    /// Package files under `roots` (host paths) that do not match their package (content
    /// differs, or missing), like `debsums -c` / `rpm -V`: the baseline's trust anchor. `Err`:
    /// not verified, and why. `known` gives the digests the scan just took, so a file it read
    /// is not read again.
    fn verify_under(
        &self,
        roots: &[std::path::PathBuf],
        known: &dyn KnownContent,
    ) -> Result<PackageVerification, String> {
        let _ = (roots, known);
        Err("this package oracle cannot verify files".to_string())
    }
    /// Whether a scan should take the MD5 of the host path `path` in its read: a package
    /// lists it with an MD5 (dpkg's `.md5sums`), which [`Self::verify_under`] compares. A false
    /// `true` costs an MD5; a false `false`, a second read.
    fn wants_md5(&self, path: &std::path::Path) -> bool {
        let _ = path;
        false
    }
    /// A digest of the package databases as they are on disk now: the identity (inode, size,
    /// mtime, ctime) of every file what packages expect of their files is read from. Equal
    /// digests mean [`Self::verify_under`] would judge the same files the same way, which
    /// lets a full check reuse the baseline's verdict (see the FIM's `verdict` module). `None`:
    /// cannot tell (the index in use was read from other databases than those on disk now,
    /// or they cannot be examined); no verdict is then kept or reused.
    fn databases_stamp(&self) -> Option<[u8; 32]> {
        None
    }
    /// A run of [`Self::expected`] calls is over (a transaction's changes classified, a scan's
    /// changes attributed): what the oracle kept to answer it (a package's files by path) can
    /// go, so that an idle agent does not hold the largest package it was asked about.
    fn forget_lookups(&self) {}
}

/// What [`PackageOracle::verify_under`] found.
#[cfg(feature = "collect")]
#[derive(Debug, Default)]
pub struct PackageVerification {
    /// Package files under the roots that do not match their package.
    pub mismatches: Vec<(std::path::PathBuf, PackageAttribution)>,
    /// What could not be read of the package databases (a status stanza, a package's
    /// `.md5sums`, a line of it, an rpm header): the files it describes were not verified, and
    /// must not pass for verified. At most [`MAX_UNREAD_LISTED`] listed.
    pub unread: Vec<guestward_core::Problem>,
    /// All of them.
    pub unread_count: u64,
}

/// How many of [`PackageVerification::unread`] are listed.
pub const MAX_UNREAD_LISTED: usize = 5;

/// The content of files as a scan just read them (implemented by the FIM engine over its
/// store), for [`PackageOracle::verify_under`]. Called from several threads.
#[cfg(feature = "collect")]
pub trait KnownContent: Sync {
    /// For each (host path, algorithms) of `files`, in order: the file as the scan recorded
    /// it (the content the baseline holds), with its digests in every one of the algorithms,
    /// when the scan read it whole without seeing it change and took them all. `None`: not
    /// known, read it.
    fn contents(
        &self,
        files: &[(&std::path::Path, Vec<DigestAlgo>)],
    ) -> Vec<Option<crate::attribution::Content>>;

    /// Whether `md5` is the MD5 of the regular file at host path `path` as the scan read it,
    /// whole and unchanged (taken in that read, or carried over from a trusted baseline row of
    /// the same content): a package file expected to have that MD5 then matches, with no
    /// [`Self::contents`] asked. False when not known (ask [`Self::contents`]).
    fn took_md5(&self, path: &std::path::Path, md5: &[u8; 16]) -> bool {
        let _ = (path, md5);
        false
    }
}

/// Knows nothing: every file is read.
#[cfg(feature = "collect")]
#[derive(Debug, Clone, Copy, Default)]
pub struct NothingKnown;

#[cfg(feature = "collect")]
impl KnownContent for NothingKnown {
    fn contents(
        &self,
        files: &[(&std::path::Path, Vec<DigestAlgo>)],
    ) -> Vec<Option<crate::attribution::Content>> {
        files.iter().map(|_| None).collect()
    }
}

/// One package a transaction changed, as seen through the files it touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PackageChange {
    /// dpkg or rpm.
    pub manager: PackageManager,
    /// Package name.
    pub name: String,
    /// Architecture, when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Version before the transaction (absent: newly installed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_version: Option<String>,
    /// Version after (absent: removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_version: Option<String>,
    /// Monitored files of this package the transaction changed, verified against it.
    pub files: u64,
}

/// Payload of a `fim.package_transaction` event: every change a package transaction made to
/// monitored files, folded into one event (a dist-upgrade touching thousands of files is one
/// event, not thousands). Changes that do not match the new package version are not in it:
/// each is its own `fim.change` with `package.origin` `outside-package-manager`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TransactionEvent {
    /// The transaction (id, manager, when it was first seen, evidence).
    pub transaction: PackageTransaction,
    /// When it was seen to end (lock released, and quiet since).
    pub ended: Timestamp,
    /// The packages whose files changed, by name.
    pub packages: Vec<PackageChange>,
    /// Changes whose new content matches the package (or files the package dropped).
    pub verified: u64,
    /// Changes that did not match: reported one by one as `outside-package-manager`.
    pub outside_package_manager: u64,
    /// Configuration files whose content differs from the package's (kept local edits).
    pub conffile_edits: u64,
    /// Package files the package records no digest for (directories, symlinks), or that could
    /// not be read: attributed by ownership only.
    pub unverified: u64,
    /// Changes to files no package owns, made while it ran: reported one by one.
    pub not_package_files: u64,
    /// The package manager's temporary names (`*.dpkg-new`, `*.dpkg-tmp`, `*;5f3a2b1c`...).
    pub temporaries: u64,
    /// Changes beyond what the agent holds per transaction: counted, not examined (the next
    /// full verification compares every package file with its package).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub overflow: u64,
    /// Some of the paths changed (at most a few dozen), escaped.
    pub sample_paths: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Counts of attributed changes by origin, for the report and `agentctl fim status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AttributionCounts {
    /// Package transactions seen end (grouped events emitted).
    pub transactions: u64,
    /// Changes attributed to a package transaction.
    pub package_transaction: u64,
    /// Changes to package files not explained by any transaction (high severity).
    pub outside_package_manager: u64,
    /// Configuration file edits outside transactions.
    pub conffile_edit: u64,
    /// Package files with nothing to compare with.
    pub unverified: u64,
    /// Package files found not matching their package by a baseline or full verification.
    #[serde(default)]
    pub baseline_mismatches: u64,
}

/// The attribution part of the FIM report: counts since start, and the latest changes made
/// outside the package manager (each a finding).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AttributionReport {
    /// Counts by origin since the monitor started.
    pub counts: AttributionCounts,
    /// The latest package files changed outside the package manager, or not matching their
    /// package at a baseline or full verification (at most [`MAX_REPORTED_OUTSIDE`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outside: Vec<OutsideChange>,
    /// The latest conffile edits (at most [`MAX_REPORTED_OUTSIDE`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conffile_edits: Vec<OutsideChange>,
    /// The package transaction running now whose changes are held, to be judged against the
    /// new packages when it ends: a transaction that runs for long (an upgrade waiting on a
    /// prompt) shows here, with how much it holds, instead of as silence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holding: Option<HeldTransaction>,
}

/// A running package transaction and the changes held for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HeldTransaction {
    /// The transaction.
    pub transaction: PackageTransaction,
    /// Changes held so far (those beyond the group's bounds included).
    pub held_changes: u64,
}

/// Entries kept in [`AttributionReport::outside`] (all are counted).
pub const MAX_REPORTED_OUTSIDE: usize = 50;

/// A package file that does not match its package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OutsideChange {
    /// The path (escaped).
    pub path: String,
    /// Owner, origin, expected and actual digests.
    pub package: PackageAttribution,
    /// When it was seen.
    pub seen: Timestamp,
    /// Found by a baseline or full verification (not by a change).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub at_baseline: bool,
}

impl PackageManager {
    /// `dpkg` or `rpm`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dpkg => "dpkg",
            Self::Rpm => "rpm",
        }
    }
}

impl DigestAlgo {
    /// `md5`, `sha256`...
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "md5",
            Self::Sha1 => "sha1",
            Self::Sha224 => "sha224",
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }
}

impl ChangeOrigin {
    /// The name used in reports (`package-transaction`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PackageTransaction => "package-transaction",
            Self::OutsidePackageManager => "outside-package-manager",
            Self::ConffileEdit => "conffile-edit",
            Self::Unverified => "unverified",
        }
    }
}

impl PackageAttribution {
    /// For a person: `package openssh-server 1:9.2p1-2 (dpkg), outside-package-manager:
    /// expected md5 0123… actual md5 4567…`.
    pub fn human(&self) -> String {
        let mut s = format!(
            "package {} {} ({}){}: {}",
            self.owner.name,
            self.owner.version,
            self.owner.manager.as_str(),
            if self.conffile { ", conffile" } else { "" },
            self.origin.as_str()
        );
        if let Some(e) = &self.expected {
            s.push_str(&format!("; expected {} {}", e.algo.as_str(), e.hex));
        }
        match (&self.actual, self.origin) {
            (Some(a), _) => s.push_str(&format!(", actual {} {}", a.algo.as_str(), a.hex)),
            (None, ChangeOrigin::PackageTransaction) => {}
            // Unverified with a digest to compare: the file could not be read (permissions),
            // which is not the same as gone.
            (None, ChangeOrigin::Unverified) if self.expected.is_some() => s.push_str(", actual: not read"),
            (None, _) if self.expected.is_some() => s.push_str(", actual: missing"),
            (None, _) => {}
        }
        if let Some(t) = &self.transaction {
            s.push_str(&format!(" (transaction {t})"));
        }
        s
    }
}

impl TransactionEvent {
    /// As a report event (`fim.package_transaction`).
    pub fn to_event(&self, time: Timestamp) -> guestward_core::Event {
        guestward_core::Event {
            kind: crate::events::KIND_PACKAGE_TRANSACTION.into(),
            time,
            data: serde_json::to_value(self).unwrap_or_default(),
        }
    }

    /// The one-liner: `package transaction dpkg-2026-... (dpkg): 2 packages, 14 file changes
    /// matching the new packages`, then what did not match, when anything did not.
    pub fn human(&self) -> String {
        use guestward_core::text::counted;
        let packages = u64::try_from(self.packages.len()).unwrap_or(u64::MAX);
        let mut s = format!(
            "package transaction {} ({}): {}, {}",
            self.transaction.id,
            self.transaction.manager.as_str(),
            counted(packages, "package", "packages"),
            self.verified_changes(),
        );
        for (n, one, many) in [
            (
                self.outside_package_manager,
                "change OUTSIDE the package manager (reported on its own)",
                "changes OUTSIDE the package manager (reported one by one)",
            ),
            (
                self.conffile_edits,
                "conffile differing from the package",
                "conffiles differing from the package",
            ),
            (self.unverified, "unverified change (no digest)", "unverified changes (no digest)"),
            (
                self.not_package_files,
                "change to a file no package owns (reported on its own)",
                "changes to files no package owns (reported one by one)",
            ),
            (self.temporaries, "package manager temporary file", "package manager temporary files"),
            (
                self.overflow,
                "change over the agent's limit, not examined",
                "changes over the agent's limit, not examined",
            ),
        ] {
            if n > 0 {
                s.push_str(&format!(", {}", counted(n, one, many)));
            }
        }
        s
    }

    /// The subject of its line in the event history: `dpkg-2026-...: openssh-server 1:9.2p1-2
    /// -> 1:9.2p1-2+deb12u3, libfoo 2 (installed), and 4 more, 14 file changes matching the
    /// new packages`.
    pub fn subject(&self) -> String {
        const SHOWN: usize = 3;
        let mut names: Vec<String> = self
            .packages
            .iter()
            .take(SHOWN)
            .map(|p| match (&p.old_version, &p.new_version) {
                (Some(old), Some(new)) => format!("{} {old} -> {new}", p.name),
                (None, Some(new)) => format!("{} {new} (installed)", p.name),
                (Some(old), None) => format!("{} {old} (removed)", p.name),
                (None, None) => p.name.clone(),
            })
            .collect();
        if self.packages.len() > SHOWN {
            names.push(format!("and {} more", self.packages.len() - SHOWN));
        }
        format!("{}: {}, {}", self.transaction.id, names.join(", "), self.verified_changes())
    }

    /// `14 file changes matching the new packages`; a transaction that only removed packages
    /// has no new packages, and its changes match the removal.
    fn verified_changes(&self) -> String {
        let only_removals =
            !self.packages.is_empty() && self.packages.iter().all(|p| p.new_version.is_none());
        format!(
            "{} matching the {}",
            guestward_core::text::counted(self.verified, "file change", "file changes"),
            if only_removals { "removal" } else { "new packages" }
        )
    }

    /// One line per package (`    openssh-server 1:9.2p1-2 -> 1:9.2p1-2+deb12u3 (3 files)`),
    /// then the sample of paths and the evidence.
    pub fn human_details(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.packages {
            let versions = match (&p.old_version, &p.new_version) {
                (Some(o), Some(n)) => format!("{o} -> {n}"),
                (None, Some(n)) => format!("installed {n}"),
                (Some(o), None) => format!("removed {o}"),
                (None, None) => String::new(),
            };
            let arch = p.arch.as_deref().map(|a| format!(":{a}")).unwrap_or_default();
            let files = guestward_core::text::counted(p.files, "file", "files");
            out.push(format!("    {}{arch} {versions} ({files})", p.name));
        }
        if !self.sample_paths.is_empty() {
            out.push(format!("    paths: {}", self.sample_paths.join(", ")));
        }
        if !self.transaction.evidence.is_empty() {
            out.push(format!("    evidence: {}", self.transaction.evidence.join("; ")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_line_counts_in_words_that_agree_with_the_numbers() {
        let one = |name: &str| PackageChange {
            manager: PackageManager::Dpkg,
            name: name.into(),
            arch: Some("all".into()),
            old_version: Some("2.0".into()),
            new_version: None,
            files: 1,
        };
        let mut event = TransactionEvent {
            transaction: PackageTransaction {
                id: "dpkg-2026-12-06T03:15:34Z".into(),
                manager: PackageManager::Dpkg,
                started: Timestamp::from_unix_secs(0).unwrap(),
                evidence: vec![],
            },
            ended: Timestamp::from_unix_secs(1).unwrap(),
            packages: vec![one("gwqa")],
            verified: 1,
            outside_package_manager: 0,
            conffile_edits: 0,
            unverified: 0,
            not_package_files: 0,
            temporaries: 1,
            overflow: 0,
            sample_paths: vec![],
        };
        assert_eq!(
            event.human(),
            "package transaction dpkg-2026-12-06T03:15:34Z (dpkg): 1 package, 1 file change matching \
             the removal, 1 package manager temporary file"
        );
        assert_eq!(
            event.subject(),
            "dpkg-2026-12-06T03:15:34Z: gwqa 2.0 (removed), 1 file change matching the removal"
        );
        assert_eq!(event.human_details(), ["    gwqa:all removed 2.0 (1 file)"]);
        event.packages.push(PackageChange { new_version: Some("2.1".into()), ..one("other") });
        event.verified = 3;
        event.temporaries = 0;
        event.outside_package_manager = 2;
        assert_eq!(
            event.human(),
            "package transaction dpkg-2026-12-06T03:15:34Z (dpkg): 2 packages, 3 file changes matching \
             the new packages, 2 changes OUTSIDE the package manager (reported one by one)"
        );
    }

    #[test]
    fn a_file_not_read_is_not_called_missing() {
        let judged = |origin, conffile| PackageAttribution {
            owner: PackageOwner {
                manager: PackageManager::Dpkg,
                name: "libdebuginfod-common".into(),
                version: "0.188-2.1".into(),
                arch: None,
            },
            origin,
            conffile,
            expected: Some(PackageDigest { algo: DigestAlgo::Md5, hex: "97bc".into() }),
            actual: None,
            transaction: None,
        };
        let gone = judged(ChangeOrigin::OutsidePackageManager, false).human();
        assert!(gone.ends_with("; expected md5 97bc, actual: missing"), "{gone}");
        let unread = judged(ChangeOrigin::Unverified, false).human();
        assert!(unread.ends_with("; expected md5 97bc, actual: not read"), "{unread}");
        let removed = judged(ChangeOrigin::ConffileEdit, true).human();
        assert!(
            removed.contains(", conffile: conffile-edit; expected md5 97bc, actual: missing"),
            "{removed}"
        );
    }
}
