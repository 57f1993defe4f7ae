//! The `[fim]` section of the agent's config and its validated form.
//!
//! The simplest form replaces the default list of watched paths:
//!
//! ```toml
//! [fim]
//! paths = ["/etc", "/usr/bin"]
//! ```
//!
//! Entries may also be tables for per-path rules:
//!
//! ```toml
//! [fim]
//! paths = [
//!   "/usr/bin",
//!   { path = "/etc", exclude = ["/etc/mtab", "/etc/**/*.swp"], attributes = ["sha256", "mode"] },
//!   { path = "/var/spool/cron", recursive = false },
//! ]
//! ```
//!
//! Nested rules are allowed: the most specific root governs its subtree (so `/etc/sudoers.d`
//! keeps its own rule even when `/etc` excludes something above it).

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use guestward_core::config::check_range;
use guestward_core::{AbsolutePath, ConfigIssue};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use std::path::{Path, PathBuf};

/// One attribute of a file the policy can check.
///
/// Deserialized by hand (not derived) so that a typo names itself and every valid name:
/// ``unknown attribute `sha265`; valid attributes: sha256, blake3, ...``.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Attribute {
    /// SHA-256 of the content (regular files up to the size cap).
    Sha256,
    /// BLAKE3 of the content (regular files up to the size cap); optional, not in the default.
    Blake3,
    /// Permission bits including setuid/setgid/sticky.
    Mode,
    /// Owner user id.
    Uid,
    /// Owner group id.
    Gid,
    /// Size in bytes.
    Size,
    /// Modification time.
    Mtime,
    /// Inode change time (changes on any chmod/chown/write; cannot be set from user space).
    Ctime,
    /// Inode number (a replaced file gets a new one).
    Inode,
    /// Symlink target.
    LinkTarget,
    /// Extended attributes, including `security.selinux` and `security.capability`: the first
    /// 64 by name with their values, and any others as one entry, `guestward.beyond`, that
    /// counts them and gives the SHA-256 of their names and values.
    Xattrs,
    /// File type (file, directory, symlink...). Always checked; listing it is allowed.
    Type,
}

impl Attribute {
    /// The name used in config and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Blake3 => "blake3",
            Self::Mode => "mode",
            Self::Uid => "uid",
            Self::Gid => "gid",
            Self::Size => "size",
            Self::Mtime => "mtime",
            Self::Ctime => "ctime",
            Self::Inode => "inode",
            Self::LinkTarget => "link_target",
            Self::Xattrs => "xattrs",
            Self::Type => "type",
        }
    }

    /// Every attribute, in the order the config documents them.
    pub const ALL: &'static [Attribute] = &[
        Self::Sha256,
        Self::Blake3,
        Self::Mode,
        Self::Uid,
        Self::Gid,
        Self::Size,
        Self::Mtime,
        Self::Ctime,
        Self::Inode,
        Self::LinkTarget,
        Self::Xattrs,
        Self::Type,
    ];

    /// The attribute called `name` in config, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|a| a.as_str() == name)
    }

    /// What AIDE and most policies call "everything but access time".
    pub const DEFAULT: &'static [Attribute] = &[
        Self::Sha256,
        Self::Mode,
        Self::Uid,
        Self::Gid,
        Self::Size,
        Self::Mtime,
        Self::Ctime,
        Self::Inode,
        Self::LinkTarget,
        Self::Xattrs,
    ];
}

impl<'de> Deserialize<'de> for Attribute {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = Attribute;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an attribute name such as \"sha256\"")
            }
            // The error is raised inside the deserializer's visit of the string itself, so the
            // TOML parser points at this element, not at the whole list.
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Attribute, E> {
                Attribute::from_name(name).ok_or_else(|| {
                    let valid: Vec<&str> = Attribute::ALL.iter().map(|a| a.as_str()).collect();
                    E::custom(format!(
                        "unknown attribute `{}`; valid attributes: {}",
                        guestward_core::text::truncate_chars(name, 64),
                        valid.join(", ")
                    ))
                })
            }
        }
        deserializer.deserialize_str(Name)
    }
}

/// A set of [`Attribute`]s as a bit mask (cheap to copy into every scan job).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AttributeSet(u16);

impl AttributeSet {
    /// The set holding `attrs` (type is always included).
    pub fn of(attrs: &[Attribute]) -> Self {
        let mut bits = 1u16 << (Attribute::Type as u16);
        for a in attrs {
            bits |= 1 << (*a as u16);
        }
        Self(bits)
    }

    /// Whether `attr` is checked.
    pub fn has(self, attr: Attribute) -> bool {
        self.0 & (1 << (attr as u16)) != 0
    }

    /// Whether any content hash is checked.
    pub fn hashes(self) -> bool {
        self.has(Attribute::Sha256) || self.has(Attribute::Blake3)
    }
}

/// One watched path, as written in config: a bare string or a table.
///
/// Deserialized by hand: serde's `untagged` would try both forms and, when neither fits, say
/// only ``data did not match any variant of untagged enum PathEntry``, hiding which key or
/// attribute was wrong. Here a string is a path and a table is a [`PathRule`], whose own error
/// (an unknown key, a bad attribute, a relative path) is reported as is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum PathEntry {
    /// A path with the section's default rule (recursive, default attributes, no excludes).
    Simple(AbsolutePath),
    /// A path with its own rule.
    Rule(PathRule),
}

impl<'de> Deserialize<'de> for PathEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entry;
        impl<'de> serde::de::Visitor<'de> for Entry {
            type Value = PathEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "an absolute path, or a table such as { path = \"/etc\", exclude = [\"/etc/mtab\"] }",
                )
            }
            fn visit_str<E: serde::de::Error>(self, path: &str) -> Result<PathEntry, E> {
                AbsolutePath::new(path).map(PathEntry::Simple).map_err(E::custom)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<PathEntry, A::Error> {
                PathRule::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(PathEntry::Rule)
            }
        }
        deserializer.deserialize_any(Entry)
    }
}

/// A watched path with its own rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathRule {
    /// The file or directory. One `*` per component is allowed (`/home/*/.ssh/authorized_keys`);
    /// it is expanded at every scan.
    pub path: AbsolutePath,
    /// Whether subdirectories are included (default true). When false only the directory and
    /// its direct entries are checked.
    #[serde(default = "default_true")]
    pub recursive: bool,
    /// Glob patterns on absolute paths (`*` stays within one component, `**` crosses them).
    /// An excluded directory is neither scanned nor watched.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Attributes to check; default: all but BLAKE3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Vec<Attribute>>,
    /// Files larger than this are checked by attributes only and flagged `hash_skipped`;
    /// default: the section's `max_file_size_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_file_size_bytes: Option<u64>,
}

fn default_true() -> bool {
    true
}

/// Scan speed caps; 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimit {
    /// Files per second (0 = unlimited).
    pub files_per_sec: u64,
    /// Bytes hashed per second (0 = unlimited).
    pub bytes_per_sec: u64,
}

/// The `[fim]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Whether the daemon monitors files at all.
    pub enabled: bool,
    /// Watched paths; giving this list replaces the built-in default list entirely.
    pub paths: Vec<PathEntry>,
    /// Files larger than this are checked by attributes only (flagged `hash_skipped`). Package
    /// files above it are still verified against their packages: the trust anchor reads them
    /// itself (at most 1 GiB each).
    pub max_file_size_bytes: u64,
    /// Also compute BLAKE3 for every hashed file, beside SHA-256 where a path's attributes take
    /// it (the default: rpm's manifests and AIDE use SHA-256). A path whose attributes list
    /// `blake3` and not `sha256` is hashed with BLAKE3 alone, several times faster; rpm's file
    /// digests being SHA-256, the trust anchor then reads rpm package files itself.
    pub blake3: bool,
    /// Quiet period per path before a realtime event is examined: a file written 1000 times in
    /// a burst yields one change with the final hash.
    pub debounce_ms: u64,
    /// A path written continuously is examined at least this often.
    pub max_delay_ms: u64,
    /// Full verification rescan of every tree (catches what inotify cannot see, e.g. writes
    /// through another mount namespace or offline edits).
    pub rescan_interval_secs: u64,
    /// Rescan interval for trees that did not fit in the inotify watch budget.
    pub unwatched_rescan_interval_secs: u64,
    /// Metadata-first rescans: the daemon's scheduled and event-driven rescans hash again only
    /// the files whose size, mtime, ctime, inode, mode or owner changed since the baseline
    /// (like git's index), and every file on `full_rehash_interval_secs`. ctime cannot be set
    /// from user space, so a write through the filesystem is caught either way; writes to the
    /// raw block device and a clock set back are caught by the full rehash. false: every
    /// rescan hashes every file.
    pub fast_rescans: bool,
    /// How often the daemon hashes every file again when `fast_rescans` is on (and at every
    /// start); default daily.
    pub full_rehash_interval_secs: u64,
    /// Share of `fs.inotify.max_user_watches` left for other programs.
    pub watch_reserve_percent: u8,
    /// Hard cap on watches this agent places, below the kernel limit (0 = kernel limit minus
    /// the reserve).
    pub max_watches: u64,
    /// Events held between the inotify reader and the engine; when full, events are dropped
    /// and handled exactly like a kernel queue overflow (verification rescan + coverage gap).
    /// Also bounds their memory, 192 bytes an event: events of long paths fill it sooner.
    pub event_queue_capacity: usize,
    /// Hashing threads: 0 = one per CPU, else 1 to [`MAX_THREADS`] (64). Hashing is bound by
    /// the disks and the CPUs long before that; thousands of threads would only cost memory
    /// (a stack and a 256 KiB buffer each) and starve the host.
    pub threads: usize,
    /// Speed cap of the first baseline and of one-shot `init`/`check`/`update`.
    pub initial_scan_rate: RateLimit,
    /// Speed cap of the daemon's verification rescans (gentle by default).
    pub rescan_rate: RateLimit,
    /// Change events kept in the state database for `agentctl fim events`.
    pub max_stored_events: u64,
    /// Key sealing the baseline (HMAC-SHA256 over its rows and row set, see
    /// [`crate::integrity`]), so that a row rewritten, added or removed outside the agent is
    /// reported as tampering by the next check. It must live outside the state directory, e.g.
    /// `/etc/guestward/fim-baseline.key`: a regular file, owned by root (or the agent's user),
    /// mode 0600, holding 64 hex characters. `fim init` creates it when absent. Not set: the
    /// baseline is not sealed and every check says its integrity is unverified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_key_file: Option<AbsolutePath>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enabled: true,
            paths: default_paths(),
            max_file_size_bytes: 1 << 30,
            blake3: false,
            debounce_ms: 200,
            max_delay_ms: 2_000,
            rescan_interval_secs: 12 * 3600,
            unwatched_rescan_interval_secs: 3600,
            fast_rescans: true,
            full_rehash_interval_secs: 86_400,
            watch_reserve_percent: 20,
            max_watches: 0,
            event_queue_capacity: 65_536,
            threads: 0,
            initial_scan_rate: RateLimit::default(),
            rescan_rate: RateLimit { files_per_sec: 0, bytes_per_sec: 64 << 20 },
            max_stored_events: 100_000,
            baseline_key_file: None,
        }
    }
}

/// What attackers change to persist or escalate, in the order watches are granted when the
/// inotify budget is short (most valuable first).
fn default_paths() -> Vec<PathEntry> {
    let simple = |p: &str| AbsolutePath::new(p).ok().map(PathEntry::Simple);
    [
        // Nested under /etc below but listed on their own so they keep full rules even if a
        // user narrows /etc with excludes.
        simple("/etc/ld.so.preload"),
        simple("/etc/sudoers"),
        simple("/etc/sudoers.d"),
        simple("/etc/pam.d"),
        simple("/etc/security"),
        simple("/etc/systemd"),
        simple("/etc/crontab"),
        simple("/etc/cron.d"),
        simple("/etc/guestward"),
        simple("/root/.ssh"),
        simple("/home/*/.ssh/authorized_keys"),
        simple("/var/spool/cron"),
        simple("/usr/bin"),
        simple("/usr/sbin"),
        simple("/usr/lib/systemd/system"),
        simple("/boot"),
        AbsolutePath::new("/etc").ok().map(|path| {
            PathEntry::Rule(PathRule {
                path,
                recursive: true,
                // Churn the system itself rewrites: reporting it would bury real changes.
                exclude: vec![
                    "/etc/mtab".into(),
                    "/etc/adjtime".into(),
                    "/etc/resolv.conf".into(),
                    "/etc/ld.so.cache".into(),
                    "/etc/.pwd.lock".into(),
                ],
                attributes: None,
                max_file_size_bytes: None,
            })
        }),
    ]
    .into_iter()
    // Every entry is a literal absolute path; `default_policy_compiles` checks none is lost.
    .flatten()
    .collect()
}

/// Why a `[fim]` section cannot be used: every issue found (not only the first), each under its
/// key relative to `[fim]` (`debounce_ms`, `paths[2].exclude[0]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.issues.iter().map(|i| format!("fim.{}: {}", i.key, i.message)).collect::<Vec<_>>().join("; "))]
pub struct ConfigError {
    /// Every problem found, in the order of the section's keys.
    pub issues: Vec<ConfigIssue>,
}

impl ConfigError {
    /// Whether some issue concerns `key` (relative to `[fim]`, e.g. `threads`).
    pub fn concerns(&self, key: &str) -> bool {
        self.issues.iter().any(|i| i.key == key)
    }
}

/// Upper bound of `fim.threads`.
pub const MAX_THREADS: usize = 64;

/// Accepted `fim.debounce_ms`: 0 would examine every single write of a burst.
pub const DEBOUNCE_RANGE_MS: std::ops::RangeInclusive<u64> = 1..=60_000;

/// Accepted `fim.event_queue_capacity`: each queued event holds a path, so the cap bounds memory
/// (together with the queue's bound in bytes: see the key).
pub const EVENT_QUEUE_RANGE: std::ops::RangeInclusive<usize> = 16..=1 << 20;

/// One validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Position in the config list (stable id for reports).
    pub index: usize,
    /// The path as configured (may hold `*` components).
    pub pattern: PathBuf,
    /// Whether subdirectories are included.
    pub recursive: bool,
    /// Attributes checked.
    pub attributes: AttributeSet,
    /// Size cap for hashing.
    pub max_file_size_bytes: u64,
    excludes: GlobSet,
}

impl Rule {
    /// Whether `host_path` is excluded by this rule.
    pub fn excludes(&self, host_path: &Path) -> bool {
        !self.excludes.is_empty() && self.excludes.is_match(host_path)
    }

    /// Whether the configured path has wildcard components.
    pub fn is_pattern(&self) -> bool {
        self.pattern.components().any(|c| c.as_os_str() == "*")
    }
}

/// The validated policy: rules sorted by specificity for lookups.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Rules in config order (the watch budget is granted in this order).
    pub rules: Vec<Rule>,
    /// Hash BLAKE3 too.
    pub blake3: bool,
    /// The loaded baseline key ([`crate::Fim::new`] sets it): every store a scan opens seals
    /// and verifies with it, the scan's writer and resume reader included.
    /// Only with `collect`: reading the key is I/O.
    #[cfg(feature = "collect")]
    pub baseline_key: Option<std::sync::Arc<crate::integrity::BaselineKey>>,
}

/// A `[fim]` section that passed every check, with its policy compiled (globs built, paths
/// normalised, attributes resolved).
///
/// Only [`Config::check`] makes one, and the engine runs on exactly this policy
/// ([`crate::Fim::from_validated`]): what `check-config` accepted is what the monitor uses, and
/// a section that would not compile can never reach a running monitor.
#[derive(Debug, Clone)]
pub struct Validated {
    config: Config,
    policy: Policy,
}

impl Validated {
    /// The section as written.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The compiled policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Both parts, for the engine.
    pub fn into_parts(self) -> (Config, Policy) {
        (self.config, self.policy)
    }
}

impl std::ops::Deref for Validated {
    type Target = Config;

    fn deref(&self) -> &Config {
        &self.config
    }
}

impl Config {
    /// Checks the whole section and compiles its policy: the one function through which every
    /// `[fim]` section passes (daemon config load, `check-config`, one-shot `fim` commands).
    /// Every problem is reported, not only the first. `state_dir` is where the baseline lives:
    /// the baseline key must not be inside it.
    pub fn check(&self, state_dir: &Path) -> Result<Validated, ConfigError> {
        let mut issues = self.setting_issues();
        let rules = self.compile_rules(&mut issues);
        if let Some(key) = &self.baseline_key_file
            && resolve_for_comparison(key.as_path()).starts_with(resolve_for_comparison(state_dir))
        {
            issues.push(ConfigIssue::new(
                "baseline_key_file",
                format!(
                    "{} must be outside the state directory ({}): a key kept next to the baseline protects nothing",
                    key.as_path().display(),
                    state_dir.display()
                ),
            ));
        }
        if !issues.is_empty() {
            return Err(ConfigError { issues });
        }
        let policy = Policy {
            rules,
            blake3: self.blake3,
            #[cfg(feature = "collect")]
            baseline_key: None,
        };
        Ok(Validated { config: self.clone(), policy })
    }

    /// [`Self::check`], keeping only the policy.
    pub fn validate(&self, state_dir: &Path) -> Result<Policy, ConfigError> {
        self.check(state_dir).map(|v| v.policy)
    }

    /// Everything [`Self::check`] checks but the state directory rule; the compiled policy.
    pub fn policy(&self) -> Result<Policy, ConfigError> {
        let mut issues = self.setting_issues();
        let rules = self.compile_rules(&mut issues);
        if !issues.is_empty() {
            return Err(ConfigError { issues });
        }
        Ok(Policy {
            rules,
            blake3: self.blake3,
            #[cfg(feature = "collect")]
            baseline_key: None,
        })
    }

    /// Ranges of the scalar settings.
    fn setting_issues(&self) -> Vec<ConfigIssue> {
        const DAY_SECS: u64 = 86_400;
        let mut issues = Vec::new();
        check_range(&mut issues, "debounce_ms", self.debounce_ms, DEBOUNCE_RANGE_MS);
        // A path written continuously must still be looked at. Below `debounce_ms` it is not an
        // error: the monitor waits at least the debounce (a long debounce with the default
        // delay is a real setting).
        check_range(&mut issues, "max_delay_ms", self.max_delay_ms, 1..=600_000);
        check_range(&mut issues, "rescan_interval_secs", self.rescan_interval_secs, 1..=30 * DAY_SECS);
        check_range(
            &mut issues,
            "unwatched_rescan_interval_secs",
            self.unwatched_rescan_interval_secs,
            1..=30 * DAY_SECS,
        );
        check_range(
            &mut issues,
            "full_rehash_interval_secs",
            self.full_rehash_interval_secs,
            1..=30 * DAY_SECS,
        );
        check_range(&mut issues, "watch_reserve_percent", self.watch_reserve_percent, 0..=90);
        check_range(&mut issues, "event_queue_capacity", self.event_queue_capacity, EVENT_QUEUE_RANGE);
        check_range(&mut issues, "threads", self.threads, 0..=MAX_THREADS);
        check_range(&mut issues, "max_stored_events", self.max_stored_events, 1..=100_000_000);
        issues
    }

    /// Compiles every entry of `paths`, recording each problem (a bad entry does not hide the
    /// next one). Rules with problems are left out of the result, which is then not used.
    fn compile_rules(&self, issues: &mut Vec<ConfigIssue>) -> Vec<Rule> {
        let mut rules = Vec::with_capacity(self.paths.len());
        let mut seen = std::collections::HashMap::new();
        for (index, entry) in self.paths.iter().enumerate() {
            let (path, recursive, exclude, attrs, max, path_key) = match entry {
                PathEntry::Simple(p) => (p.as_path(), true, &[][..], None, None, format!("paths[{index}]")),
                PathEntry::Rule(r) => (
                    r.path.as_path(),
                    r.recursive,
                    &r.exclude[..],
                    r.attributes.as_deref(),
                    r.max_file_size_bytes,
                    format!("paths[{index}].path"),
                ),
            };
            let before = issues.len();
            let shown = path.display().to_string();
            let normal: PathBuf = path.components().collect();
            if let Some(first) = seen.insert(normal.clone(), index) {
                issues.push(ConfigIssue::new(
                    &path_key,
                    format!("`{shown}` is listed twice (also paths[{first}]); give each path one entry"),
                ));
            }
            for c in normal.components() {
                let b = c.as_os_str().as_encoded_bytes();
                if b != b"*" && b.iter().any(|&x| matches!(x, b'*' | b'?' | b'[' | b'{')) {
                    issues.push(ConfigIssue::new(
                        &path_key,
                        format!("`{shown}`: only `*` as a whole path component is supported"),
                    ));
                    break;
                }
            }
            let mut set = GlobSetBuilder::new();
            for (n, pattern) in exclude.iter().enumerate() {
                match compile_glob(pattern) {
                    Ok(glob) => {
                        set.add(glob);
                    }
                    Err(e) => issues.push(ConfigIssue::new(
                        format!("paths[{index}].exclude[{n}]"),
                        format!("`{pattern}` is not a valid glob: {}", e.kind()),
                    )),
                }
            }
            let excludes = match set.build() {
                Ok(set) => set,
                Err(e) => {
                    issues.push(ConfigIssue::new(format!("paths[{index}].exclude"), e.to_string()));
                    GlobSet::empty()
                }
            };
            if issues.len() > before {
                continue;
            }
            let mut attributes =
                attrs.map(AttributeSet::of).unwrap_or_else(|| AttributeSet::of(Attribute::DEFAULT));
            if self.blake3 && attributes.hashes() {
                attributes = AttributeSet(attributes.0 | (1 << Attribute::Blake3 as u16));
            }
            rules.push(Rule {
                index,
                pattern: normal,
                recursive,
                attributes,
                max_file_size_bytes: max.unwrap_or(self.max_file_size_bytes),
                excludes,
            });
        }
        rules
    }
}

/// `p` made absolute and resolved through the part of it that exists (a symlinked state dir),
/// lexically beyond, so that a key file and a state directory can be compared before either
/// is created.
fn resolve_for_comparison(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut existing = abs.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name().map(|n| n.to_os_string()), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return abs,
        }
    }
    let mut out = std::fs::canonicalize(&existing).unwrap_or(existing);
    out.extend(rest.iter().rev());
    out
}

// `*` must not cross `/`: `/etc/*.swp` should not exclude `/etc/ssh/x.swp` (use `**` for that).
fn compile_glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern).literal_separator(true).backslash_escape(true).build()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[derive(Deserialize)]
    struct File {
        fim: Config,
    }

    #[test]
    fn default_policy_compiles() {
        let policy = Config::default().policy().unwrap();
        assert_eq!(policy.rules.len(), 17);
        let etc = policy.rules.iter().find(|r| r.pattern == Path::new("/etc")).unwrap();
        assert!(etc.excludes(Path::new("/etc/mtab")));
        assert!(!etc.excludes(Path::new("/etc/passwd")));
        assert!(policy.rules.iter().any(|r| r.is_pattern()));
    }

    #[test]
    fn documented_section_equals_the_defaults() {
        // The block the daemon's packaging/agent.toml carries; kept here so a new key cannot
        // be added without documenting its default.
        let text = include_str!("../../../tests/fixtures/fim/agent-fim.toml");
        let f: File = toml::from_str(text).unwrap();
        assert_eq!(f.fim, Config::default());
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        for key in defaults.keys() {
            let documented = text.contains(&format!("{key} =")) || text.contains(&format!("[fim.{key}]"));
            assert!(documented, "{key} undocumented");
        }
    }

    #[test]
    fn simple_list_replaces_defaults() {
        let f: File = toml::from_str("[fim]\npaths = [\"/etc\", \"/usr/bin\"]\n").unwrap();
        let policy = f.fim.policy().unwrap();
        let paths: Vec<_> = policy.rules.iter().map(|r| r.pattern.clone()).collect();
        assert_eq!(paths, vec![PathBuf::from("/etc"), PathBuf::from("/usr/bin")]);
        assert_eq!(f.fim.debounce_ms, 200);
    }

    #[test]
    fn rich_rules_parse_and_unknown_keys_fail() {
        let text = r#"
[fim]
debounce_ms = 50
paths = [
  "/usr/bin",
  { path = "/etc", exclude = ["/etc/*.swp", "/etc/cache/**"], attributes = ["sha256", "mode"], max_file_size_bytes = 10 },
  { path = "/var/spool/cron", recursive = false },
]
"#;
        let f: File = toml::from_str(text).unwrap();
        let policy = f.fim.policy().unwrap();
        let etc = &policy.rules[1];
        assert!(etc.excludes(Path::new("/etc/a.swp")));
        assert!(!etc.excludes(Path::new("/etc/ssh/a.swp")), "* must not cross /");
        assert!(etc.excludes(Path::new("/etc/cache/x/y")));
        assert!(etc.attributes.has(Attribute::Mode) && !etc.attributes.has(Attribute::Uid));
        assert_eq!(etc.max_file_size_bytes, 10);
        assert!(!policy.rules[2].recursive);

        let bad = "[fim]\npaths = [{ path = \"/etc\", recursiv = false }]\n";
        assert!(toml::from_str::<File>(bad).is_err());
        let bad = "[fim]\ndebounce = 5\n";
        let err = toml::from_str::<File>(bad).err().unwrap().to_string();
        assert!(err.contains("debounce"), "{err}");
        let rel = "[fim]\npaths = [\"etc\"]\n";
        assert!(toml::from_str::<File>(rel).is_err());
    }

    #[test]
    fn thousands_of_hashing_threads_are_refused_naming_the_key() {
        let f: File = toml::from_str("[fim]\nthreads = 3000\n").unwrap();
        let err = f.fim.policy().unwrap_err();
        assert!(err.concerns("threads"), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("fim.threads") && msg.contains("3000") && msg.contains("64"), "{msg}");
        for ok in [0, 1, MAX_THREADS] {
            let f: File = toml::from_str(&format!("[fim]\nthreads = {ok}\n")).unwrap();
            f.fim.policy().unwrap();
        }
        let f: File = toml::from_str(&format!("[fim]\nthreads = {}\n", MAX_THREADS + 1)).unwrap();
        assert!(f.fim.policy().unwrap_err().concerns("threads"));
    }

    #[test]
    fn a_baseline_key_inside_the_state_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let inside = format!("[fim]\nbaseline_key_file = \"{}/fim.key\"\n", state.display());
        let f: File = toml::from_str(&inside).unwrap();
        let err = f.fim.validate(&state).unwrap_err();
        assert!(err.concerns("baseline_key_file"), "{err:?}");
        assert!(err.to_string().contains("outside the state directory"), "{err}");
        let outside = format!("[fim]\nbaseline_key_file = \"{}/keys/fim.key\"\n", dir.path().display());
        let f: File = toml::from_str(&outside).unwrap();
        f.fim.validate(&state).unwrap();
    }

    #[test]
    fn bad_globs_and_duplicates_are_named() {
        let f: File =
            toml::from_str("[fim]\npaths = [{ path = \"/etc\", exclude = [\"/etc/ok\", \"/etc/[\"] }]\n")
                .unwrap();
        let err = f.fim.policy().unwrap_err();
        assert_eq!(err.issues.len(), 1, "{err:?}");
        assert_eq!(err.issues[0].key, "paths[0].exclude[1]");
        assert!(err.issues[0].message.contains("`/etc/[` is not a valid glob"), "{err}");
        let f: File = toml::from_str("[fim]\npaths = [\"/etc\", \"/etc/\"]\n").unwrap();
        let err = f.fim.policy().unwrap_err();
        assert_eq!(err.issues[0].key, "paths[1]");
        assert!(err.issues[0].message.contains("listed twice (also paths[0])"), "{err}");
    }

    #[test]
    fn every_problem_of_the_section_is_reported_not_only_the_first() {
        let text = r#"
[fim]
debounce_ms = 0
threads = 100
paths = [
  { path = "/etc", exclude = ["/etc/[", "/etc/{a"] },
  "/usr/b?n",
  "/etc",
]
"#;
        let f: File = toml::from_str(text).unwrap();
        let err = f.fim.check(Path::new("/var/lib/guestward")).unwrap_err();
        let keys: Vec<&str> = err.issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            ["debounce_ms", "threads", "paths[0].exclude[0]", "paths[0].exclude[1]", "paths[1]", "paths[2]"],
            "{err:?}"
        );
    }

    #[test]
    fn attribute_typo_names_the_attribute_and_the_valid_ones() {
        let text = "[fim]\npaths = [{ path = \"/etc\", attributes = [\"sha256\", \"sha265\"] }]\n";
        let err = toml::from_str::<File>(text).err().unwrap();
        let msg = err.message();
        assert!(msg.contains("unknown attribute `sha265`"), "{msg}");
        assert!(!msg.contains("untagged"), "{msg}");
        for a in Attribute::ALL {
            assert!(msg.contains(a.as_str()), "{msg} lacks {}", a.as_str());
        }
        // The error points at the misspelt element itself.
        let span = err.span().unwrap();
        assert_eq!(&text[span], "\"sha265\"");
    }

    #[test]
    fn a_rule_with_an_unknown_key_or_a_relative_path_says_so() {
        let err =
            toml::from_str::<File>("[fim]\npaths = [{ path = \"/etc\", recursiv = false }]\n").err().unwrap();
        assert!(err.message().contains("unknown field `recursiv`"), "{}", err.message());
        let err = toml::from_str::<File>("[fim]\npaths = [\"etc\"]\n").err().unwrap();
        assert!(err.message().contains("`etc` must be an absolute path"), "{}", err.message());
        let err = toml::from_str::<File>("[fim]\npaths = [{ path = \"etc\" }]\n").err().unwrap();
        assert!(err.message().contains("`etc` must be an absolute path"), "{}", err.message());
    }

    #[test]
    #[cfg(feature = "collect")]
    fn the_engine_runs_on_the_policy_check_compiled() {
        let dir = tempfile::tempdir().unwrap();
        let f: File =
            toml::from_str("[fim]\npaths = [{ path = \"/etc\", exclude = [\"/etc/mtab\"] }]\n").unwrap();
        let validated = f.fim.check(dir.path()).unwrap();
        let fim = crate::Fim::from_validated(validated, guestward_core::HostRoot::live(), dir.path());
        assert_eq!(fim.policy.rules.len(), 1);
        assert!(fim.policy.rules[0].excludes(Path::new("/etc/mtab")));
    }
}
