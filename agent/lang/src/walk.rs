//! The bounded directory walk shared by the three ecosystems.
//!
//! One walk per root (after glob expansion and merging identical roots), iterative (an explicit
//! stack, so a deep tree cannot overflow ours), reading directory entries' types from `d_type`
//! so ordinary files cost no `stat`. Bounds and defences:
//! - `max_depth` levels below each root, `max_entries` entries over the whole scan.
//! - Symlinks are followed only when their target, resolved inside the [`HostRoot`], lies
//!   under the root being walked: a link to `/` or to another tree can neither make us walk the
//!   whole disk nor read outside the scanned root (with `--root` the tree is untrusted).
//! - Every directory is walked once per ecosystem, keyed by `(st_dev, st_ino)`, which ends
//!   symlink loops and de-duplicates overlapping roots.
//! - Filesystem types: when a directory's `st_dev` differs from its parent's we are at a mount
//!   point, and `statfs(2)` on it gives the filesystem magic. Pseudo filesystems (proc, sysfs,
//!   cgroup, debugfs...) are always skipped, network ones (NFS, SMB/CIFS, AFS, Ceph, 9p,
//!   FUSE) unless configured otherwise. `statfs` runs once per device, not per directory; it
//!   needs no /proc, so it also works in containers without /proc/self/mountinfo.

use crate::config::Config;
use crate::model::WalkStats;
use guestward_core::{HostFsError, HostRoot, Problem};
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Ecosystem bits: which visitors care about a subtree.
pub(crate) type Mask = u8;
/// Python.
pub(crate) const PY: Mask = 1;
/// Java.
pub(crate) const JAVA: Mask = 2;
/// Node.js.
pub(crate) const NODE: Mask = 4;

/// What a walk reports to the ecosystem code.
pub(crate) trait Visitor {
    /// A directory (already known not to be excluded). Return `false` to not descend into it
    /// (e.g. a `*.dist-info` directory the visitor has fully handled).
    fn dir(&mut self, walker: &mut Walker<'_>, real: &Path, name: &OsStr, mask: Mask) -> bool;
    /// A regular file.
    fn file(&mut self, walker: &mut Walker<'_>, real: &Path, name: &OsStr, mask: Mask);
}

/// Filesystems never walked: their files are not installed software.
const PSEUDO_FS: &[(i64, &str)] = &[
    (0x9fa0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x2724_4e54, "cgroup"),
    (0x6367_7270, "cgroup2"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x7363_6673, "securityfs"),
    (0xcafe_4a11, "bpf"),
    (0x1cd1, "devpts"),
    (0xf97c_ff8c, "selinuxfs"),
    (0x6e73_6673, "nsfs"),
    (0x6165_6c6f, "pstore"),
    (0x0187, "autofs"),
];

/// Network (and FUSE, which on EC2 is mostly s3fs, mountpoint-s3, sshfs) filesystems.
const NETWORK_FS: &[(i64, &str)] = &[
    (0x6969, "nfs"),
    (0x517b, "smb"),
    (0xff53_4d42, "cifs"),
    (0xfe53_4d42, "smb2"),
    (0x5346_414f, "afs"),
    (0x6b41_4653, "afs"),
    (0x00c3_6400, "ceph"),
    (0x0102_1997, "9p"),
    (0x7366_636a, "coda"),
    (0x564c, "ncp"),
    (0x0bd0_0bd0, "lustre"),
    (0x0116_1970, "gfs2"),
    (0x6573_5546, "fuse"),
];

/// The walk's state: bounds, counters, problems, and what has been seen.
pub(crate) struct Walker<'a> {
    pub root: &'a HostRoot,
    pub config: &'a Config,
    pub stats: WalkStats,
    pub problems: Vec<Problem>,
    visited_dirs: HashMap<(u64, u64), Mask>,
    visited_files: HashSet<(u64, u64)>,
    fs_verdict: HashMap<u64, Option<&'static str>>,
    excluded: Vec<PathBuf>,
    stopped: bool,
}

impl<'a> Walker<'a> {
    pub fn new(root: &'a HostRoot, config: &'a Config) -> Self {
        Self {
            root,
            config,
            stats: WalkStats::default(),
            problems: Vec::new(),
            visited_dirs: HashMap::new(),
            visited_files: HashSet::new(),
            fs_verdict: HashMap::new(),
            excluded: config.exclude.iter().map(|p| p.as_path().to_path_buf()).collect(),
            stopped: false,
        }
    }

    /// The host path (as the scanned system sees it) of a real path under the root.
    pub fn host_of(&self, real: &Path) -> PathBuf {
        match real.strip_prefix(self.root.dir()) {
            Ok(rel) => Path::new("/").join(rel),
            // Unreachable for paths this walker produced; show the real path rather than lie.
            Err(_) => real.to_path_buf(),
        }
    }

    /// How a host path is shown in the report (`/opt/app.jar`), for the live root and for
    /// `--root` scans alike: the scanned system's own path.
    pub fn shown(&self, real: &Path) -> String {
        self.host_of(real).display().to_string()
    }

    /// Records a problem about `real`.
    pub fn problem(&mut self, code: &str, message: String, real: &Path) {
        self.problems.push(Problem::new(code, message).with_path(self.shown(real)));
    }

    /// First visit of a file (by device and inode)? Used for archives, which a symlink inside
    /// the root (Debian's `/usr/share/java/foo.jar -> foo-1.2.jar`) would otherwise list twice.
    pub fn first_visit_of_file(&mut self, meta: &Metadata) -> bool {
        self.visited_files.insert((meta.dev(), meta.ino()))
    }

    /// Expands `*` in the components of `pattern` against the root; returns host paths that exist.
    pub fn expand(&mut self, pattern: &Path) -> Vec<PathBuf> {
        let mut current: Vec<PathBuf> = vec![PathBuf::from("/")];
        for component in pattern.components() {
            let Component::Normal(part) = component else {
                continue;
            };
            let part = part.to_string_lossy();
            let mut next = Vec::new();
            for base in &current {
                if !part.contains('*') {
                    next.push(base.join(part.as_ref()));
                    continue;
                }
                let Ok(real) = self.root.resolve(base) else {
                    continue;
                };
                let Ok(entries) = std::fs::read_dir(&real) else {
                    continue;
                };
                let mut names: Vec<String> = entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| wildcard_match(&part, n))
                    .collect();
                names.sort();
                next.extend(names.into_iter().map(|n| base.join(n)));
            }
            current = next;
        }
        current
    }

    /// Resolves a host path to the real directory it names, inside the root.
    fn canonical(&self, host: &Path) -> Result<PathBuf, HostFsError> {
        if self.root.is_live() {
            std::fs::canonicalize(host).map_err(|e| HostFsError::from_io(host, e))
        } else {
            self.root.resolve(host)
        }
    }

    fn is_excluded(&self, host: &Path) -> bool {
        self.excluded.iter().any(|e| host.starts_with(e))
    }

    /// Why the filesystem holding `real` (device `dev`) is skipped, if it is.
    fn filesystem_skip(&mut self, real: &Path, dev: u64) -> Option<&'static str> {
        if let Some(verdict) = self.fs_verdict.get(&dev) {
            return *verdict;
        }
        let verdict = match nix::sys::statfs::statfs(real) {
            Ok(st) => {
                // The field is i64 on glibc x86_64 and aarch64 but narrower or unsigned on other libcs.
                #[allow(clippy::useless_conversion)]
                let magic = i64::try_from(st.filesystem_type().0).unwrap_or(-1);
                let find =
                    |list: &[(i64, &'static str)]| list.iter().find(|(m, _)| *m == magic).map(|(_, n)| *n);
                find(PSEUDO_FS)
                    .or_else(|| if self.config.skip_network_filesystems { find(NETWORK_FS) } else { None })
            }
            // statfs failing on a directory we could stat is unusual; walking it is the safe
            // default for an inventory (missing software is worse than a slow walk).
            Err(_) => None,
        };
        self.fs_verdict.insert(dev, verdict);
        verdict
    }

    /// Marks a directory visited for `mask`; returns the bits not walked before (0: skip it).
    fn claim(&mut self, meta: &Metadata, mask: Mask) -> Mask {
        let seen = self.visited_dirs.entry((meta.dev(), meta.ino())).or_insert(0);
        let new = mask & !*seen;
        *seen |= mask;
        new
    }

    /// Walks one root (a host path) for the ecosystems in `mask`.
    pub fn walk(&mut self, host_start: &Path, mask: Mask, visitor: &mut dyn Visitor) {
        if self.stopped || self.is_excluded(host_start) {
            return;
        }
        let start = match self.canonical(host_start) {
            Ok(p) => p,
            Err(HostFsError::NotFound { .. }) => return,
            Err(e) => {
                self.problems.push(e.to_problem());
                return;
            }
        };
        let meta = match std::fs::metadata(&start) {
            Ok(m) if m.is_dir() => m,
            Ok(_) => return,
            Err(e) => {
                let err = HostFsError::from_io(&start, e);
                if !matches!(err, HostFsError::NotFound { .. }) {
                    self.problems.push(err.to_problem());
                }
                return;
            }
        };
        if self.is_excluded(&self.host_of(&start)) || self.filesystem_skip(&start, meta.dev()).is_some() {
            self.stats.mounts_skipped += 1;
            return;
        }
        let mask = self.claim(&meta, mask);
        if mask == 0 {
            self.stats.directories_already_seen += 1;
            return;
        }
        self.stats.roots_walked += 1;
        let mut stack: Vec<(PathBuf, u32, Mask, u64)> = vec![(start.clone(), 0, mask, meta.dev())];
        while let Some((dir, depth, mask, dir_dev)) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) => {
                    let err = HostFsError::from_io(&dir, e);
                    let mut p = err.to_problem();
                    p.path = Some(self.shown(&dir));
                    self.problems.push(p);
                    continue;
                }
            };
            self.stats.directories += 1;
            for entry in entries {
                let Ok(entry) = entry else { continue };
                self.stats.entries += 1;
                if self.stats.entries > self.config.max_entries {
                    self.stats.truncated = true;
                    self.stopped = true;
                    self.problems.push(Problem::new(
                        "limit_reached",
                        format!(
                            "stopped after {} directory entries (packages.language.max_entries); the language inventory is incomplete",
                            self.config.max_entries
                        ),
                    ));
                    return;
                }
                let Ok(file_type) = entry.file_type() else {
                    continue;
                };
                let mut path = entry.path();
                let name = entry.file_name();
                let mut is_dir = file_type.is_dir();
                let mut is_file = file_type.is_file();
                if file_type.is_symlink() {
                    match self.follow(&path, &start) {
                        Some((target, target_meta)) => {
                            is_dir = target_meta.is_dir();
                            is_file = target_meta.is_file();
                            path = target;
                        }
                        None => {
                            self.stats.symlinks_not_followed += 1;
                            continue;
                        }
                    }
                }
                if is_file {
                    visitor.file(self, &path, &name, mask);
                    continue;
                }
                if !is_dir || depth + 1 > self.config.max_depth {
                    continue;
                }
                if self.is_excluded(&self.host_of(&path)) {
                    self.stats.mounts_skipped += 1;
                    continue;
                }
                if !visitor.dir(self, &path, &name, mask) {
                    continue;
                }
                let Ok(meta) = std::fs::symlink_metadata(&path).or_else(|_| std::fs::metadata(&path)) else {
                    continue;
                };
                if meta.dev() != dir_dev && self.filesystem_skip(&path, meta.dev()).is_some() {
                    self.stats.mounts_skipped += 1;
                    continue;
                }
                let child_mask = self.claim(&meta, mask);
                if child_mask == 0 {
                    self.stats.directories_already_seen += 1;
                    continue;
                }
                stack.push((path, depth + 1, child_mask, meta.dev()));
            }
        }
    }

    /// Where a symlink leads, if it stays under `walk_root`.
    fn follow(&self, link: &Path, walk_root: &Path) -> Option<(PathBuf, Metadata)> {
        let target = self.canonical(&self.host_of(link)).ok()?;
        if !target.starts_with(walk_root) {
            return None;
        }
        let meta = std::fs::symlink_metadata(&target).ok()?;
        // A resolved path is symlink-free unless it changed under us; never chase a second hop.
        if meta.file_type().is_symlink() {
            return None;
        }
        Some((target, meta))
    }
}

/// `*` matches any run of characters (including none); everything else matches itself.
pub(crate) fn wildcard_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let Some((first, rest)) = parts.split_first() else {
        return pattern == name;
    };
    let Some(mut remaining) = name.strip_prefix(first) else {
        return false;
    };
    if rest.is_empty() {
        return remaining.is_empty();
    }
    for (i, part) in rest.iter().enumerate() {
        let last = i + 1 == rest.len();
        if last {
            return remaining.ends_with(part);
        }
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_within_a_component() {
        assert!(wildcard_match("python3*", "python3.11"));
        assert!(wildcard_match("python3*", "python3"));
        assert!(!wildcard_match("python3*", "python2.7"));
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match("a*b*c", "aXXbYYc"));
        assert!(!wildcard_match("a*b*c", "aXXbYY"));
        assert!(wildcard_match("exact", "exact"));
        assert!(!wildcard_match("exact", "exactly"));
    }
}
