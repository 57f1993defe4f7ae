//! `[updates]` in agent.toml.

use guestward_core::AbsolutePath;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Patch posture settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Collect the updates section at all.
    pub enabled: bool,
    /// Package lists older than this many days are a finding (`GW-UPD-003`): the pending
    /// updates are then computed against old metadata and miss everything published since.
    pub stale_after_days: u64,
    /// apt's lists directory.
    pub apt_lists_dir: AbsolutePath,
    /// dpkg's administrative directory (holds `status`).
    pub dpkg_admin_dir: AbsolutePath,
    /// dnf and yum cache directories searched for `repomd.xml`.
    pub rpm_cache_dirs: Vec<AbsolutePath>,
    /// Largest decompressed size of one index file, in bytes (the full Debian archive's
    /// `Packages` is about 50 MB). Read as a stream: this bounds time, not memory.
    pub max_index_bytes: u64,
    /// Longest line or stanza (apt) or XML element (rpm) kept, in bytes; longer ones are
    /// skipped with a problem naming the file.
    pub max_entry_bytes: u64,
    /// Look for processes mapping deleted shared libraries (live system only).
    pub check_processes: bool,
    /// At most this many processes needing a restart are listed.
    pub max_stale_processes: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enabled: true,
            stale_after_days: 7,
            apt_lists_dir: AbsolutePath::from_static("/var/lib/apt/lists"),
            dpkg_admin_dir: AbsolutePath::from_static("/var/lib/dpkg"),
            rpm_cache_dirs: vec![
                AbsolutePath::from_static("/var/cache/dnf"),
                AbsolutePath::from_static("/var/cache/libdnf5"),
                AbsolutePath::from_static("/var/cache/yum"),
            ],
            max_index_bytes: 1024 * 1024 * 1024,
            max_entry_bytes: 1024 * 1024,
            check_processes: true,
            max_stale_processes: 200,
        }
    }
}

impl Config {
    /// Every problem of `[updates]`, each under its key.
    pub fn issues(&self) -> Vec<guestward_core::ConfigIssue> {
        use guestward_core::config::check_range;
        const GIB: u64 = 1024 * 1024 * 1024;
        let mut issues = Vec::new();
        check_range(&mut issues, "stale_after_days", self.stale_after_days, 1..=3650);
        check_range(&mut issues, "max_index_bytes", self.max_index_bytes, 1024..=16 * GIB);
        check_range(&mut issues, "max_entry_bytes", self.max_entry_bytes, 1024..=GIB);
        check_range(&mut issues, "max_stale_processes", self.max_stale_processes, 0..=100_000);
        issues
    }
}
