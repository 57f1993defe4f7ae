//! `[packages.language]` in agent.toml: which trees are walked for language packages and the
//! bounds every walk obeys.

use guestward_core::AbsolutePath;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Language-package inventory settings.
///
/// Root paths may contain `*` inside one component (`/usr/lib/python3*`, `/home/*/.local`);
/// each is expanded against the scanned root before walking. A root that does not exist is
/// skipped silently (most hosts have no `/srv`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Look for language packages at all.
    pub enabled: bool,
    /// Trees searched for Python `*.dist-info` / `*.egg-info` (site-packages, dist-packages,
    /// user installs, virtualenvs).
    pub python_roots: Vec<AbsolutePath>,
    /// Trees searched for `*.jar`, `*.war` and `*.ear`.
    pub java_roots: Vec<AbsolutePath>,
    /// Trees searched for `node_modules/**/package.json` (global installs and projects).
    pub node_roots: Vec<AbsolutePath>,
    /// Paths never entered, whatever root they are under (pseudo filesystems, device nodes).
    pub exclude: Vec<AbsolutePath>,
    /// Directory levels below a root that are entered (at most [`MAX_DEPTH_LIMIT`]: the walk
    /// holds a few descriptors per level). Where the walk stops for this reason it says so.
    pub max_depth: u32,
    /// Directory entries examined in one scan, over every root. When reached the scan stops,
    /// reports what it found and says so.
    pub max_entries: u64,
    /// Language packages (and JndiLookup hits) recorded from one root after glob expansion
    /// (`/home/alice/.local`). When reached, the rest of that root is not walked, and the report
    /// says so. Bounds what one user's tree can cost.
    pub max_packages_per_root: u64,
    /// Language packages (and JndiLookup hits) recorded in one scan over every root. When
    /// reached, the scan stops and says so. Roots owned by root are walked before the others, so
    /// a user filling their own tree cannot use this up before the system trees are inventoried.
    pub max_packages_per_scan: u64,
    /// Largest top-level archive opened, in bytes (only its central directory and the entries
    /// we need are read, never the whole file).
    pub max_archive_bytes: u64,
    /// Most entries in one archive's central directory, counted together with the archives it
    /// is nested in (all of them are in memory while it is examined, a few hundred bytes per
    /// entry); bounds memory for hostile zips. Checked from the end-of-central-directory
    /// records before the directory is loaded.
    pub max_archive_entries: u64,
    /// Archives inside archives entered (a war's `WEB-INF/lib/*.jar` is depth 1).
    pub max_nesting_depth: u32,
    /// Largest nested archive entered, in bytes (uncompressed). Compressed nested archives are
    /// inflated into an unlinked temporary file, never into memory.
    pub max_nested_archive_bytes: u64,
    /// Nested archives entered per top-level archive.
    pub max_nested_archives: u32,
    /// Bytes inflated from archive entries over one whole scan (nested archives inflated to a
    /// temporary file, manifests, pom.properties). When spent, further archives are reported
    /// as not examined. Bounds the CPU and disk a pile of legitimate-looking zip bombs can cost,
    /// next to the per-archive caps.
    pub max_inflated_bytes_per_scan: u64,
    /// Largest metadata file read (`METADATA`, `PKG-INFO`, `package.json`, `pom.properties`,
    /// `MANIFEST.MF`), in bytes.
    pub max_metadata_bytes: u64,
    /// Skip network filesystems (NFS, SMB/CIFS, AFS, Ceph, 9p, FUSE such as s3fs/sshfs): walking
    /// them is slow and they are other machines' files.
    pub skip_network_filesystems: bool,
}

impl Default for Config {
    fn default() -> Self {
        let paths = |list: &[&'static str]| list.iter().map(|p| AbsolutePath::from_static(p)).collect();
        Self {
            enabled: true,
            python_roots: paths(&[
                "/usr/lib/python3*",
                "/usr/lib64/python3*",
                "/usr/local/lib/python3*",
                "/usr/local/lib64/python3*",
                "/usr/share/python3*",
                "/opt",
                "/srv",
                "/home/*/.local",
                "/root/.local",
            ]),
            java_roots: paths(&["/opt", "/usr/share/java", "/usr/local/lib", "/srv", "/var/lib"]),
            node_roots: paths(&["/usr/lib/node_modules", "/usr/local/lib/node_modules", "/opt", "/srv"]),
            exclude: paths(&["/proc", "/sys", "/dev", "/run"]),
            max_depth: 16,
            max_entries: 2_000_000,
            max_packages_per_root: 50_000,
            max_packages_per_scan: 100_000,
            max_archive_bytes: 2 * 1024 * 1024 * 1024,
            max_archive_entries: 200_000,
            max_nesting_depth: 3,
            max_nested_archive_bytes: 256 * 1024 * 1024,
            max_nested_archives: 2_000,
            max_inflated_bytes_per_scan: 4 * 1024 * 1024 * 1024,
            max_metadata_bytes: 1024 * 1024,
            skip_network_filesystems: true,
        }
    }
}

/// Largest accepted `max_depth`. The walk keeps two descriptors open per directory level
/// (the directory being listed and its parent chain), so the depth bounds descriptor use.
pub const MAX_DEPTH_LIMIT: u32 = 64;

/// A setting outside its accepted range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// The key inside `[packages.language]`.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

impl Config {
    /// A config with no roots at all, for tests and callers that set their own.
    pub fn without_roots() -> Self {
        Self { python_roots: Vec::new(), java_roots: Vec::new(), node_roots: Vec::new(), ..Self::default() }
    }

    /// Checks that cannot be expressed in types; the first problem (see [`Self::issues`] for
    /// all of them).
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.problems().into_iter().next() {
            Some((field, message)) => Err(ConfigError { field, message }),
            None => Ok(()),
        }
    }

    /// Every problem of the section, each under its key relative to `[packages.language]`.
    pub fn issues(&self) -> Vec<guestward_core::ConfigIssue> {
        self.problems()
            .into_iter()
            .map(|(field, message)| guestward_core::ConfigIssue::new(field, message))
            .collect()
    }

    fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.max_depth > MAX_DEPTH_LIMIT {
            out.push(("max_depth", format!("must be at most {MAX_DEPTH_LIMIT}, got {}", self.max_depth)));
        }
        for (field, v) in [
            ("max_entries", self.max_entries),
            ("max_packages_per_root", self.max_packages_per_root),
            ("max_packages_per_scan", self.max_packages_per_scan),
            ("max_metadata_bytes", self.max_metadata_bytes),
        ] {
            if v == 0 {
                out.push((field, "must be greater than 0".into()));
            }
        }
        // Metadata files are read whole into memory.
        if self.max_metadata_bytes > MAX_METADATA_BYTES_LIMIT {
            out.push((
                "max_metadata_bytes",
                format!("must be at most {MAX_METADATA_BYTES_LIMIT}, got {}", self.max_metadata_bytes),
            ));
        }
        out
    }
}

/// Largest accepted `max_metadata_bytes` (64 MiB): each metadata file is read whole.
pub const MAX_METADATA_BYTES_LIMIT: u64 = 64 * 1024 * 1024;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_out_of_range_values_name_their_key() {
        Config::default().validate().unwrap();
        let deep = Config { max_depth: MAX_DEPTH_LIMIT + 1, ..Config::default() };
        assert_eq!(deep.validate().unwrap_err().field, "max_depth");
        let none = Config { max_packages_per_root: 0, ..Config::default() };
        assert_eq!(none.validate().unwrap_err().field, "max_packages_per_root");
        let both = Config { max_depth: 1000, max_entries: 0, ..Config::default() };
        let keys: Vec<String> = both.issues().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["max_depth", "max_entries"]);
    }
}
