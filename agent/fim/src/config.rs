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

#[cfg(feature = "collect")]
use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use guestward_core::AbsolutePath;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
#[cfg(feature = "collect")]
use std::path::{Path, PathBuf};

/// One attribute of a file the policy can check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
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
    /// Extended attributes, including `security.selinux` and `security.capability`.
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum PathEntry {
    /// A path with the section's default rule (recursive, default attributes, no excludes).
    Simple(AbsolutePath),
    /// A path with its own rule.
    Rule(PathRule),
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
    /// Files larger than this are checked by attributes only (flagged `hash_skipped`).
    pub max_file_size_bytes: u64,
    /// Also compute BLAKE3 for every hashed file (SHA-256 is always computed when any hash is
    /// checked, because package manifests and AIDE use it).
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
    /// Share of `fs.inotify.max_user_watches` left for other programs.
    pub watch_reserve_percent: u8,
    /// Hard cap on watches this agent places, below the kernel limit (0 = kernel limit minus
    /// the reserve).
    pub max_watches: u64,
    /// Events held between the inotify reader and the engine; when full, events are dropped
    /// and handled exactly like a kernel queue overflow (verification rescan + coverage gap).
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

/// Why a `[fim]` section cannot be used.
#[cfg(feature = "collect")]
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An exclude pattern does not parse.
    #[error("fim.paths[{index}] ({path}): exclude pattern `{pattern}`: {source}")]
    BadGlob {
        /// Position in `paths`.
        index: usize,
        /// The rule's path.
        path: String,
        /// The pattern.
        pattern: String,
        /// The parser's complaint.
        source: globset::Error,
    },
    /// A path uses a wildcard the expander does not support.
    #[error("fim.paths[{index}] ({path}): only `*` as a whole path component is supported")]
    BadWildcard {
        /// Position in `paths`.
        index: usize,
        /// The rule's path.
        path: String,
    },
    /// The same path twice.
    #[error("fim.paths: `{path}` is listed twice")]
    Duplicate {
        /// The repeated path.
        path: String,
    },
    /// A zero debounce would examine every single write.
    #[error("fim.debounce_ms must be between 1 and 60000 (got {0})")]
    Debounce(u64),
    /// The baseline key is kept where the baseline is.
    #[error(
        "fim.baseline_key_file ({}) must be outside the state directory ({}): a key kept next to the baseline protects nothing",
        key_file.display(),
        state_dir.display()
    )]
    KeyInStateDir {
        /// The configured key file.
        key_file: PathBuf,
        /// The state directory.
        state_dir: PathBuf,
    },
    /// More hashing threads than any machine can use.
    #[error("fim.threads must be between 0 (one per CPU) and {MAX_THREADS} (got {0})")]
    Threads(usize),
}

/// Upper bound of `fim.threads`.
pub const MAX_THREADS: usize = 64;

#[cfg(feature = "collect")]
impl ConfigError {
    /// The dotted config key concerned (for the daemon's `file: key `...`: message` errors).
    pub fn key(&self) -> &'static str {
        match self {
            Self::BadGlob { .. } | Self::BadWildcard { .. } | Self::Duplicate { .. } => "fim.paths",
            Self::Debounce(_) => "fim.debounce_ms",
            Self::Threads(_) => "fim.threads",
            Self::KeyInStateDir { .. } => "fim.baseline_key_file",
        }
    }
}

/// One validated rule.
#[cfg(feature = "collect")]
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

#[cfg(feature = "collect")]
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
#[cfg(feature = "collect")]
#[derive(Debug, Clone)]
pub struct Policy {
    /// Rules in config order (the watch budget is granted in this order).
    pub rules: Vec<Rule>,
    /// Hash BLAKE3 too.
    pub blake3: bool,
    /// The loaded baseline key ([`crate::Fim::new`] sets it): every store a scan opens seals
    /// and verifies with it, the scan's writer and resume reader included.
    pub baseline_key: Option<std::sync::Arc<crate::integrity::BaselineKey>>,
}

#[cfg(feature = "collect")]
impl Config {
    /// Everything [`Self::policy`] checks, plus what needs the state directory: the baseline
    /// key must not be inside it.
    pub fn validate(&self, state_dir: &Path) -> Result<Policy, ConfigError> {
        let policy = self.policy()?;
        if let Some(key) = &self.baseline_key_file {
            // Compared resolved where the paths exist (a symlinked state dir), lexically else.
            let resolve = |p: &Path| {
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
            };
            if resolve(key.as_path()).starts_with(resolve(state_dir)) {
                return Err(ConfigError::KeyInStateDir {
                    key_file: key.as_path().to_path_buf(),
                    state_dir: state_dir.to_path_buf(),
                });
            }
        }
        Ok(policy)
    }

    /// Validates and compiles the section.
    pub fn policy(&self) -> Result<Policy, ConfigError> {
        if self.debounce_ms == 0 || self.debounce_ms > 60_000 {
            return Err(ConfigError::Debounce(self.debounce_ms));
        }
        if self.threads > MAX_THREADS {
            return Err(ConfigError::Threads(self.threads));
        }
        let mut rules = Vec::with_capacity(self.paths.len());
        let mut seen = std::collections::HashSet::new();
        for (index, entry) in self.paths.iter().enumerate() {
            let (path, recursive, exclude, attrs, max) = match entry {
                PathEntry::Simple(p) => (p.as_path(), true, &[][..], None, None),
                PathEntry::Rule(r) => (
                    r.path.as_path(),
                    r.recursive,
                    &r.exclude[..],
                    r.attributes.as_deref(),
                    r.max_file_size_bytes,
                ),
            };
            let shown = path.display().to_string();
            let normal: PathBuf = path.components().collect();
            if !seen.insert(normal.clone()) {
                return Err(ConfigError::Duplicate { path: shown });
            }
            for c in normal.components() {
                let b = c.as_os_str().as_encoded_bytes();
                if b != b"*" && b.iter().any(|&x| matches!(x, b'*' | b'?' | b'[' | b'{')) {
                    return Err(ConfigError::BadWildcard { index, path: shown });
                }
            }
            let mut set = GlobSetBuilder::new();
            for pattern in exclude {
                set.add(compile_glob(pattern).map_err(|source| ConfigError::BadGlob {
                    index,
                    path: shown.clone(),
                    pattern: pattern.clone(),
                    source,
                })?);
            }
            let excludes = set.build().map_err(|source| ConfigError::BadGlob {
                index,
                path: shown.clone(),
                pattern: exclude.join(", "),
                source,
            })?;
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
        Ok(Policy { rules, blake3: self.blake3, baseline_key: None })
    }
}

#[cfg(feature = "collect")]
// `*` must not cross `/`: `/etc/*.swp` should not exclude `/etc/ssh/x.swp` (use `**` for that).
fn compile_glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern).literal_separator(true).backslash_escape(true).build()
}

#[cfg(all(test, feature = "collect"))]
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
        assert!(matches!(err, ConfigError::Threads(3000)), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("fim.threads") && msg.contains("3000") && msg.contains("64"), "{msg}");
        for ok in [0, 1, MAX_THREADS] {
            let f: File = toml::from_str(&format!("[fim]\nthreads = {ok}\n")).unwrap();
            f.fim.policy().unwrap();
        }
        let f: File = toml::from_str(&format!("[fim]\nthreads = {}\n", MAX_THREADS + 1)).unwrap();
        assert!(matches!(f.fim.policy().unwrap_err(), ConfigError::Threads(_)));
    }

    #[test]
    fn a_baseline_key_inside_the_state_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let inside = format!("[fim]\nbaseline_key_file = \"{}/fim.key\"\n", state.display());
        let f: File = toml::from_str(&inside).unwrap();
        let err = f.fim.validate(&state).unwrap_err();
        assert_eq!(err.key(), "fim.baseline_key_file");
        assert!(err.to_string().contains("outside the state directory"), "{err}");
        let outside = format!("[fim]\nbaseline_key_file = \"{}/keys/fim.key\"\n", dir.path().display());
        let f: File = toml::from_str(&outside).unwrap();
        f.fim.validate(&state).unwrap();
    }

    #[test]
    fn bad_globs_and_duplicates_are_named() {
        let f: File =
            toml::from_str("[fim]\npaths = [{ path = \"/etc\", exclude = [\"/etc/[\"] }]\n").unwrap();
        let err = f.fim.policy().unwrap_err().to_string();
        assert!(err.contains("/etc/["), "{err}");
        let f: File = toml::from_str("[fim]\npaths = [\"/etc\", \"/etc/\"]\n").unwrap();
        assert!(matches!(f.fim.policy().unwrap_err(), ConfigError::Duplicate { .. }));
    }
}
