//! The typed output of the language-package collector.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which package ecosystem a package belongs to (also its purl type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Ecosystem {
    /// Python (`pkg:pypi`).
    Pypi,
    /// Java archives (`pkg:maven`).
    Maven,
    /// Node.js (`pkg:npm`).
    Npm,
}

impl Ecosystem {
    /// The purl type / short name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pypi => "pypi",
            Self::Maven => "maven",
            Self::Npm => "npm",
        }
    }
}

/// Where a package's name and version were read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    /// A wheel's `*.dist-info/METADATA`.
    DistInfoMetadata,
    /// An egg's `PKG-INFO` (inside `*.egg-info/` or the `*.egg-info` file itself).
    EggInfoPkgInfo,
    /// The `*.dist-info` / `*.egg-info` directory name (metadata missing or unreadable).
    DirectoryName,
    /// `META-INF/maven/<group>/<artifact>/pom.properties`.
    PomProperties,
    /// `META-INF/MANIFEST.MF` attributes.
    Manifest,
    /// The archive's file name (`name-1.2.3.jar`).
    FileName,
    /// `node_modules/<name>/package.json`.
    PackageJson,
}

/// One installed language package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LangPackage {
    /// Ecosystem.
    pub ecosystem: Ecosystem,
    /// Maven `groupId`, or the npm scope without `@`; absent elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Package name: PEP 503-normalized for Python, `artifactId` for Maven, the package.json
    /// name (without scope) for npm.
    pub name: String,
    /// Version as recorded by the package (empty when unknown).
    pub version: String,
    /// Host path of the metadata directory (Python), archive file (Java) or package directory
    /// (Node.js).
    pub location: String,
    /// Path inside the archive for nested jars, outermost first, joined by `!/`
    /// (`WEB-INF/lib/app.jar!/BOOT-INF/lib/log4j-core-2.14.1.jar`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_in_archive: Option<String>,
    /// The tool that installed it (`pip`, `uv`, `conda`...: the dist-info `INSTALLER` file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installer: Option<String>,
    /// What the name and version were read from.
    pub evidence: Evidence,
}

/// An archive (or nested archive) that contains Log4j's `JndiLookup.class`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct JndiLookupHit {
    /// Host path of the top-level archive.
    pub location: String,
    /// Path of the nested archive, when it is one (same form as [`LangPackage::path_in_archive`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_in_archive: Option<String>,
    /// The class entry's own name (it may sit under a shading prefix).
    pub class_entry: String,
}

/// Counters describing how much was walked; they explain an incomplete result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WalkStats {
    /// Roots (after glob expansion) that existed and were walked.
    pub roots_walked: u64,
    /// Directory entries examined.
    pub entries: u64,
    /// Directories entered.
    pub directories: u64,
    /// Archives opened (top-level and nested).
    pub archives: u64,
    /// Nested archives entered.
    pub nested_archives: u64,
    /// Symlinks not followed because they point outside the root being walked (or dangle).
    pub symlinks_not_followed: u64,
    /// Directories reached twice (symlinks within the root, overlapping roots) and walked once.
    pub directories_already_seen: u64,
    /// Mount points skipped (pseudo or network filesystems, excluded paths).
    pub mounts_skipped: u64,
    /// Directories not entered because they lie below `max_depth`.
    #[serde(default)]
    pub depth_limited: u64,
    /// Bytes inflated from archive entries (counted against `max_inflated_bytes_per_scan`).
    #[serde(default)]
    pub inflated_bytes: u64,
    /// Archives not examined because `max_inflated_bytes_per_scan` was spent.
    #[serde(default)]
    pub archives_unexamined: u64,
    /// Problems met but not listed one by one (the list is bounded; see the last problem).
    #[serde(default)]
    pub problems_not_listed: u64,
    /// Whether the inventory is incomplete because a bound was reached: `max_entries`,
    /// `max_depth`, `max_packages_per_root`, `max_packages_per_scan` or
    /// `max_inflated_bytes_per_scan`. The problems say which and where.
    pub truncated: bool,
}

/// The `language` part of the packages section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LangReport {
    /// Every package found, sorted by ecosystem, name, version, location.
    pub packages: Vec<LangPackage>,
    /// Archives that still contain `JndiLookup.class`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jndi_lookup: Vec<JndiLookupHit>,
    /// How much was walked.
    pub stats: WalkStats,
}

impl LangReport {
    /// Packages of one ecosystem.
    pub fn of(&self, ecosystem: Ecosystem) -> impl Iterator<Item = &LangPackage> {
        self.packages.iter().filter(move |p| p.ecosystem == ecosystem)
    }
}
