//! Path -> owning package(s), compact enough for the daemon to keep, and what the owning
//! package says about the file, read on demand.
//!
//! Memory: the daemon's idle budget is 15 MB for the whole agent, and a host has 100k-300k
//! package paths. Keeping them as `String`s (plus digests) would cost 10-30 MB, so the index
//! keeps one `u64` per (path, package): the top 44 bits of a 64-bit hash of the path
//! (foldhash, fixed seed) and a 20-bit package number, sorted. A lookup finds the candidate
//! packages by a search of the keys, then reads what that package says (dpkg
//! `.md5sums`/`.list`, streamed line by line and kept only for the path asked about; or the
//! rpm header) and compares the full paths, so a hash collision costs a read, never a wrong
//! answer. The last few rpm headers read are
//! cached (an upgrade touches many files of one package). dpkg's files are never held whole:
//! google-cloud-cli's `.md5sums` alone is 5 MB and 50k paths, 15 MB once parsed.
//!
//! Paths are compared after the top-level directory symlinks of the root are applied
//! (`/bin -> usr/bin` on merged-/usr systems), so `/usr/bin/bash` finds the package that lists
//! `/bin/bash`; and dpkg diversions are applied (a diverted file's entry names the
//! diverted-to path).

use crate::ReadError;
use crate::dpkg::{self, Conffile, Diversions};
use crate::rpm::{self, RpmPackageFiles};
use guestward_core::{HostRoot, Problem};
use guestward_fim::package::{DigestAlgo, ExpectedFile, PackageDigest, PackageManager, PackageOwner};
use guestward_rpmdb::Found;
use std::borrow::Cow;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Bits of a key that hold the package number.
const PKG_BITS: u32 = 20;
/// Most packages indexed (2^20: far above any real host).
pub const MAX_PACKAGES: usize = 1 << PKG_BITS;
/// rpm packages' file lists kept after a lookup.
const CACHED_MANIFESTS: usize = 8;

/// Where a package's manifest is read from.
#[derive(Debug, Clone)]
enum Source {
    Dpkg { info_name: String, conffiles: Vec<Conffile>, verified: bool },
    Rpm { record: u32 },
}

/// One indexed package.
#[derive(Debug, Clone)]
pub struct IndexedPackage {
    /// Who it is.
    pub owner: PackageOwner,
    source: Source,
}

impl IndexedPackage {
    /// dpkg: whether `debsums` would check it (installed or half-configured); rpm: always.
    pub fn is_verified(&self) -> bool {
        match &self.source {
            Source::Dpkg { verified, .. } => *verified,
            Source::Rpm { .. } => true,
        }
    }
}

/// One file of a dpkg package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpkgFile {
    /// The path as the package lists it.
    pub path: PathBuf,
    /// Where it is on disk (differs when another package diverted it).
    pub on_disk: PathBuf,
    /// MD5 from `.md5sums` or, for a conffile, from `Conffiles:`.
    pub md5: Option<[u8; 16]>,
    /// A conffile.
    pub conffile: bool,
    /// A conffile the package no longer ships.
    pub obsolete: bool,
    /// A conffile dpkg removes at the next upgrade (not verified, like debsums).
    pub remove_on_upgrade: bool,
    /// Listed in `.md5sums` (or a conffile): a regular file with a recorded digest.
    pub has_md5sums_entry: bool,
}

impl DpkgFile {
    /// The digest the file is verified against, as debsums does: `.md5sums` entries and
    /// conffiles (obsolete ones too), not those dpkg removes at the next upgrade.
    pub fn checked_md5(&self) -> Option<[u8; 16]> {
        self.md5.filter(|_| self.has_md5sums_entry && !self.remove_on_upgrade)
    }
}

/// The package index of one root.
#[derive(Debug)]
pub struct Index {
    root: HostRoot,
    dpkg_admin: PathBuf,
    rpm_db: Option<Found>,
    diversions: Diversions,
    path_filters: dpkg::PathFilters,
    aliases: Vec<(PathBuf, PathBuf)>,
    packages: Vec<IndexedPackage>,
    /// `hash44(path) << 20 | package`, sorted.
    keys: Vec<u64>,
    /// The key bases (`key_base`) of paths two or more packages list, sorted: a few thousand
    /// (mostly directories) next to `keys`' hundred thousand, so the trust anchor's "is this
    /// file shared?" for each of 100k package files is a search of a short, cached list.
    shared: Vec<u64>,
    cache: Mutex<Vec<(u32, Arc<RpmPackageFiles>)>>,
    /// Packages looked into by path more than once in a row, by canonical path (see
    /// [`PackageLookup`]); emptied by [`Self::forget_lookups`].
    lookups: Mutex<Lookups>,
    /// Problems the load met (what they are is [`Self::load`]'s to return): with no package
    /// indexed, they tell a database that could not be read from none at all.
    load_problems: usize,
    /// The first of them, for the trust anchor to name what it could not verify.
    first_load_problems: Vec<Problem>,
}

/// A path's 64-bit hash: foldhash's quality variant with a fixed seed. Fixed, so that the
/// same path has the same key in every process (nothing is persisted today, but a stable key
/// costs nothing); well spread, as [`lower_bound`]'s first guess needs; and fast on paths:
/// it reads them 8 and 16 bytes at a time, where FNV-1a (used before) took a dependent
/// multiply per byte, 38 ns for a 58-byte path against 7 (docs/benchmarks.md). Not a
/// defence against chosen collisions, nor needed as one: a collision costs a read of the
/// package's file list, never a wrong answer (see the module's comment).
fn path_hash(bytes: &[u8]) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    const SEED: u64 = 0x6775_6573_7477_6172; // "guestwar"
    let mut h = foldhash::quality::FixedState::with_seed(SEED).build_hasher();
    h.write(bytes);
    h.finish()
}

fn key_base(path: &Path) -> u64 {
    (path_hash(path.as_os_str().as_bytes()) >> PKG_BITS) << PKG_BITS
}

/// `keys.partition_point(|k| *k < lo)` for sorted `keys`, searched from where `lo` would be
/// if the keys were spread evenly, as their hashes are: a scan asks this for every file it
/// hashes (is it a dpkg file, whose MD5 to take?), and a plain binary search over a large
/// index's 140k keys (1.1 MB) took some 17 steps each, most of them cache misses while the
/// hashing threads stream files through the caches (2% of a first baseline's CPU). From
/// the guess, steps that double until they pass `lo`, then a binary search within the last:
/// the same answer for any keys, a few nearby reads for evenly spread ones.
fn lower_bound(keys: &[u64], lo: u64) -> usize {
    let n = keys.len();
    // Below `n`: `lo < 2^64`.
    let guess = usize::try_from((u128::from(lo) * n as u128) >> 64).unwrap_or(n);
    let below = |i: usize| keys.get(i).is_some_and(|k| *k < lo);
    if guess >= n {
        return keys.partition_point(|k| *k < lo);
    }
    if below(guess) {
        // The answer is in (guess, n]: keys[low - 1] < lo throughout.
        let (mut low, mut step) = (guess + 1, 1usize);
        loop {
            let probe = guess.saturating_add(step);
            if probe >= n {
                return low + keys.get(low..).map_or(0, |rest| rest.partition_point(|k| *k < lo));
            }
            if !below(probe) {
                return low + keys.get(low..probe).map_or(0, |part| part.partition_point(|k| *k < lo));
            }
            low = probe + 1;
            step = step.saturating_mul(2);
        }
    }
    // The answer is in [0, guess]: keys[high] >= lo throughout.
    let (mut high, mut step) = (guess, 1usize);
    loop {
        if step > high {
            return keys.get(..high).map_or(0, |part| part.partition_point(|k| *k < lo));
        }
        let probe = high - step;
        if below(probe) {
            return probe + 1 + keys.get(probe + 1..high).map_or(0, |part| part.partition_point(|k| *k < lo));
        }
        high = probe;
        step = step.saturating_mul(2);
    }
}

/// The key bases of `keys` (sorted, deduplicated) that carry two or more package numbers.
fn shared_bases(keys: &[u64]) -> Vec<u64> {
    let mut out = Vec::new();
    for pair in keys.windows(2) {
        let base = pair[0] >> PKG_BITS << PKG_BITS;
        if pair[1] >> PKG_BITS << PKG_BITS == base && out.last() != Some(&base) {
            out.push(base);
        }
    }
    out.shrink_to_fit();
    out
}

/// The symlinks at the top of `root` that lead to directories (`/bin -> usr/bin`), as host
/// paths: (link, target).
fn top_level_aliases(root: &HostRoot) -> Vec<(PathBuf, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(root.dir()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten().take(1024) {
        let is_link = e.file_type().map(|t| t.is_symlink()).unwrap_or(false);
        if !is_link {
            continue;
        }
        let host = Path::new("/").join(e.file_name());
        if let Some(target) = resolve_dir(root, &host)
            && target != host
        {
            out.push((host, target));
        }
    }
    out.sort_unstable();
    out
}

/// `host` (a directory) with every symlink resolved inside `root`, as a host path.
pub(crate) fn resolve_dir(root: &HostRoot, host: &Path) -> Option<PathBuf> {
    let real = if root.is_live() { std::fs::canonicalize(host).ok()? } else { root.resolve(host).ok()? };
    if !std::fs::symlink_metadata(&real).ok()?.is_dir() {
        return None;
    }
    let rel = real.strip_prefix(root.dir()).ok()?;
    Some(Path::new("/").join(rel))
}

impl Index {
    /// An index with nothing in it (no package manager under the root).
    pub fn empty(root: HostRoot) -> Self {
        Self {
            root,
            dpkg_admin: PathBuf::from(dpkg::DEFAULT_ADMIN_DIR),
            rpm_db: None,
            diversions: Diversions::default(),
            path_filters: dpkg::PathFilters::default(),
            aliases: Vec::new(),
            packages: Vec::new(),
            keys: Vec::new(),
            shared: Vec::new(),
            cache: Mutex::new(Vec::new()),
            lookups: Mutex::new(Lookups::default()),
            load_problems: 0,
            first_load_problems: Vec::new(),
        }
    }

    /// Reads dpkg's database (`/var/lib/dpkg`) and rpm's (`/var/lib/rpm`,
    /// `/usr/lib/sysimage/rpm`) under `root`. Either may be absent (not a problem); what could
    /// not be read is returned as problems and the rest indexed.
    pub fn load(root: &HostRoot) -> (Self, Vec<Problem>) {
        Self::load_from(root, Path::new(dpkg::DEFAULT_ADMIN_DIR), &rpm::default_dirs())
    }

    /// [`Self::load`] with explicit dpkg admin and rpm directories (host paths).
    pub fn load_from(root: &HostRoot, dpkg_admin: &Path, rpm_dirs: &[PathBuf]) -> (Self, Vec<Problem>) {
        let mut index = Self::empty(root.clone());
        index.dpkg_admin = dpkg_admin.to_path_buf();
        index.aliases = top_level_aliases(root);
        let mut problems = Vec::new();
        let mut keys = Vec::new();
        index.load_dpkg(&mut keys, &mut problems);
        index.load_rpm(rpm_dirs, &mut keys, &mut problems);
        keys.sort_unstable();
        keys.dedup();
        keys.shrink_to_fit();
        index.shared = shared_bases(&keys);
        index.keys = keys;
        index.packages.shrink_to_fit();
        index.load_problems = problems.len();
        index.first_load_problems =
            problems.iter().take(guestward_fim::package::MAX_UNREAD_LISTED).cloned().collect();
        (index, problems)
    }

    /// How many problems the load met (see [`Self::load`]).
    pub fn load_problems(&self) -> usize {
        self.load_problems
    }

    /// The first of them (at most [`guestward_fim::package::MAX_UNREAD_LISTED`]).
    pub fn first_load_problems(&self) -> &[Problem] {
        &self.first_load_problems
    }

    fn add_package(&mut self, p: IndexedPackage, problems: &mut Vec<Problem>) -> Option<u32> {
        if self.packages.len() >= MAX_PACKAGES {
            if self.packages.len() == MAX_PACKAGES {
                problems.push(Problem::new(
                    "too_many_packages",
                    format!("more than {MAX_PACKAGES} packages; the rest are not indexed"),
                ));
            }
            return None;
        }
        let id = u32::try_from(self.packages.len()).ok()?;
        self.packages.push(p);
        Some(id)
    }

    fn push_key(&self, keys: &mut Vec<u64>, path: &Path, id: u32) {
        keys.push(key_base(&self.canon(path)) | u64::from(id));
    }

    fn load_dpkg(&mut self, keys: &mut Vec<u64>, problems: &mut Vec<Problem>) {
        let admin = self.dpkg_admin.clone();
        let packages = match dpkg::read_status(&self.root, &admin) {
            Ok((p, more)) => {
                problems.extend(more);
                p
            }
            Err(ReadError::Host(guestward_core::HostFsError::NotFound { .. })) => return,
            Err(e) => {
                problems.push(e.to_problem());
                return;
            }
        };
        let (diversions, more) = dpkg::read_diversions(&self.root, &admin);
        problems.extend(more);
        self.diversions = diversions;
        let (filters, more) = dpkg::read_path_filters(&self.root);
        problems.extend(more);
        self.path_filters = filters;
        for p in packages {
            let owner = PackageOwner {
                manager: PackageManager::Dpkg,
                name: p.name.clone(),
                version: p.version.clone(),
                arch: p.arch.clone(),
            };
            let Some(info_name) = p.info_name.clone() else {
                problems.push(
                    Problem::new(
                        "not_found",
                        format!("dpkg package {} has no file list under {}/info", p.name, admin.display()),
                    )
                    .with_path(admin.join("info").join(format!("{}.list", p.name)).display().to_string()),
                );
                continue;
            };
            let verified = p.is_verified();
            let keys_before = keys.len();
            let Some(id) = self.add_package(
                IndexedPackage {
                    owner,
                    source: Source::Dpkg { info_name: info_name.clone(), conffiles: p.conffiles, verified },
                },
                problems,
            ) else {
                break;
            };
            // Streamed: each path becomes its key and is gone.
            let listed = dpkg::for_each_list_path(&self.root, &admin, &info_name, |path| {
                self.push_key(keys, self.diversions.on_disk(&p.name, path), id);
                true
            });
            if let Err(e) = listed {
                // As if never indexed: a package whose file list cannot be read owns nothing.
                problems.push(e.to_problem());
                keys.truncate(keys_before);
                self.packages.pop();
                continue;
            }
            if let Some(Source::Dpkg { conffiles, .. }) = self.packages.last().map(|p| &p.source) {
                for c in conffiles {
                    keys.push(
                        key_base(&self.canon(self.diversions.on_disk(&p.name, &c.path))) | u64::from(id),
                    );
                }
            }
        }
    }

    fn load_rpm(&mut self, dirs: &[PathBuf], keys: &mut Vec<u64>, problems: &mut Vec<Problem>) {
        let (found, more) = rpm::find(&self.root, dirs);
        problems.extend(more);
        let Some(found) = found else {
            return;
        };
        let root = self.root.clone();
        let mut read_problems = Vec::new();
        let mut full = false;
        read_problems.extend(rpm::read_headers(&root, &found, None, &mut |p| {
            // Only what the index keeps, a path at a time: gathering every package's paths
            // first cost 20 MB on a host with 200k files, and decoding a whole package's files
            // 82 MB for one of 139k.
            if full {
                return;
            }
            let Some(id) = self.add_package(
                IndexedPackage { owner: p.owner.clone(), source: Source::Rpm { record: p.record } },
                problems,
            ) else {
                full = true;
                return;
            };
            for path in p.installed_paths() {
                self.push_key(keys, &path, id);
            }
        }));
        problems.extend(read_problems);
        self.rpm_db = Some(found);
    }

    /// `path` with the root's top-level directory symlinks applied (`/bin/x` -> `/usr/bin/x`):
    /// borrowed when none applies, as for most paths (each package path as the index loads,
    /// each file a scan hashes), which then cost no allocation.
    pub fn canon<'a>(&self, path: &'a Path) -> Cow<'a, Path> {
        let bytes = path.as_os_str().as_bytes();
        // `Path::strip_prefix` compares component by component, which was a fifth of the trust
        // anchor's time over 100k package paths. A byte prefix that ends at a separator is the
        // same test for a normal path; only a path with `//`, a `.` component or a trailing
        // `/` (which components skip) takes the component-wise one.
        let plain = !bytes.windows(2).any(|w| w == b"//" || w == b"/.") && !bytes.ends_with(b"/");
        for (link, target) in &self.aliases {
            let rest = if plain {
                let link = link.as_os_str().as_bytes();
                match bytes.strip_prefix(link) {
                    Some([]) => Some(Path::new("")),
                    Some([b'/', rest @ ..]) => Some(Path::new(std::ffi::OsStr::from_bytes(rest))),
                    _ => None,
                }
            } else {
                path.strip_prefix(link).ok()
            };
            if let Some(rest) = rest {
                return Cow::Owned(if rest.as_os_str().is_empty() {
                    target.clone()
                } else {
                    target.join(rest)
                });
            }
        }
        Cow::Borrowed(path)
    }

    /// The root this index describes.
    pub fn root(&self) -> &HostRoot {
        &self.root
    }

    /// The dpkg admin directory (host path).
    pub fn dpkg_admin(&self) -> &Path {
        &self.dpkg_admin
    }

    /// The rpm database read, if any.
    pub fn rpm_database(&self) -> Option<&Found> {
        self.rpm_db.as_ref()
    }

    /// Every indexed package, numbered by position.
    pub fn packages(&self) -> &[IndexedPackage] {
        &self.packages
    }

    /// Number of (path, package) entries.
    pub fn entry_count(&self) -> usize {
        self.keys.len()
    }

    /// Approximate heap bytes the index holds (keys, packages, cached manifests excluded).
    pub fn heap_bytes(&self) -> usize {
        let pkgs: usize = self
            .packages
            .iter()
            .map(|p| {
                std::mem::size_of::<IndexedPackage>()
                    + p.owner.name.len()
                    + p.owner.version.len()
                    + p.owner.arch.as_ref().map_or(0, String::len)
                    + match &p.source {
                        Source::Dpkg { info_name, conffiles, .. } => {
                            info_name.len()
                                + conffiles
                                    .iter()
                                    .map(|c| std::mem::size_of::<Conffile>() + c.path.as_os_str().len())
                                    .sum::<usize>()
                        }
                        Source::Rpm { .. } => 0,
                    }
            })
            .sum();
        (self.keys.capacity() + self.shared.capacity()) * 8 + pkgs
    }

    /// Packages whose index entries match `canon`'s hash (candidates; not confirmed), each
    /// once (the keys are deduplicated when the index is built), without gathering them: a scan
    /// asks for each file it hashes.
    fn candidate_ids(&self, canon: &Path) -> impl Iterator<Item = u32> + '_ {
        let lo = key_base(canon);
        let hi = lo | ((1u64 << PKG_BITS) - 1);
        let start = lower_bound(&self.keys, lo);
        self.keys[start..]
            .iter()
            .take_while(move |k| **k <= hi)
            .filter_map(|k| u32::try_from(k & ((1u64 << PKG_BITS) - 1)).ok())
    }

    /// How many packages own `path` (by the index alone: a hash collision may count one more).
    pub fn owner_count(&self, path: &Path) -> usize {
        self.candidate_ids(&self.canon(path)).count()
    }

    /// Whether two or more packages own `canon` (a path already through [`Self::canon`]):
    /// `owner_count(canon) > 1`, answered from the short list of shared paths.
    pub fn is_shared_canon(&self, canon: &Path) -> bool {
        self.shared.binary_search(&key_base(canon)).is_ok()
    }

    /// Whether a dpkg package that `debsums` would check lists `path` (by the index alone: a
    /// hash collision may say yes wrongly, never no).
    pub fn dpkg_owns(&self, path: &Path) -> bool {
        self.candidate_ids(&self.canon(path)).any(|id| {
            self.packages
                .get(id as usize)
                .is_some_and(|p| p.is_verified() && matches!(p.source, Source::Dpkg { .. }))
        })
    }

    /// Every package entry for the host path `path`: empty when no package owns it, several
    /// when it is shared (multi-arch, or a file two packages ship). An entry whose files
    /// cannot be read names its owner without a digest.
    pub fn expected(&self, host_path: &Path) -> Vec<ExpectedFile> {
        let canon = self.canon(host_path);
        let mut out = Vec::new();
        for id in self.candidate_ids(&canon) {
            let Some(pkg) = self.packages.get(id as usize) else {
                continue;
            };
            let found = match self.lookup(id) {
                Some(lookup) => {
                    lookup.entries_for(&pkg.owner, &canon, &mut out);
                    Ok(())
                }
                None => match &pkg.source {
                    Source::Dpkg { info_name, conffiles, .. } => {
                        self.dpkg_entries_for(pkg, info_name, conffiles, &canon, &mut out)
                    }
                    Source::Rpm { .. } => self.rpm_files(id).map(|m| {
                        let files = m.files.iter().filter(|f| f.installed() && self.canon(&f.path) == canon);
                        out.extend(files.map(|f| rpm_expected(&pkg.owner, f)));
                    }),
                },
            };
            if let Err(e) = found {
                // A file list gone since the index was read: the package was removed after it,
                // and the index (reloaded once the transaction is over) is asked about each file
                // the removal deleted. Not worth a warning per file; the owner is still named,
                // without a digest.
                if matches!(e, ReadError::Host(guestward_core::HostFsError::NotFound { .. })) {
                    tracing::debug!(package = %pkg.owner.name, error = %e, "the package's file list is gone");
                } else {
                    tracing::warn!(package = %pkg.owner.name, error = %e, "cannot read the package's file list");
                }
                out.push(bare_expected(&pkg.owner));
            }
        }
        out
    }

    /// Package `id`'s files by canonical path, when it was asked about shortly before this too:
    /// the changes of a transaction (an upgrade of a package of 45k files asked about each of
    /// them) then cost a pass over its manifest once, not once per file, which took 7-14 ms a
    /// lookup in that package here. A package asked about once (one edited file) is read as
    /// before, without building anything. `None`: not worth building yet, or the manifest
    /// could not be read (the caller reads it and reports why).
    fn lookup(&self, id: u32) -> Option<Arc<PackageLookup>> {
        let mut lookups = self.lookups.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pos) = lookups.built.iter().position(|l| l.id == id) {
            let hit = lookups.built.remove(pos);
            lookups.built.insert(0, Arc::clone(&hit));
            return Some(hit);
        }
        // Asked about among the last few: a path two packages share asks both in turn.
        if !lookups.recently_asked.contains(&id) {
            if lookups.recently_asked.len() >= RECENTLY_ASKED {
                lookups.recently_asked.pop_front();
            }
            lookups.recently_asked.push_back(id);
            return None;
        }
        let built = Arc::new(self.build_lookup(id).ok()?);
        lookups.built.insert(0, Arc::clone(&built));
        lookups.built.truncate(BUILT_LOOKUPS);
        Some(built)
    }

    fn build_lookup(&self, id: u32) -> Result<PackageLookup, ReadError> {
        let pkg = self.packages.get(id as usize).ok_or(ReadError::NoSuchPackage(id))?;
        let mut lookup = PackageLookup::new(id);
        let hasher = lookup.hasher.clone();
        let key = |p: &Path| path_key(&hasher, &self.canon(p));
        match &pkg.source {
            Source::Dpkg { info_name, conffiles, .. } => {
                // The same two passes as `dpkg_entries_for`, for every path at once: the
                // digests first, then the paths `.list` names without one.
                let _problems = self.dpkg_checked_files(
                    &pkg.owner.name,
                    info_name,
                    conffiles,
                    |on_disk| Some(key(on_disk)),
                    |f, k| {
                        lookup.add(k, LookupEntry::Dpkg { md5: f.md5, conffile: f.conffile });
                        true
                    },
                )?;
                dpkg::for_each_list_path(&self.root, &self.dpkg_admin, info_name, |path| {
                    let k = key(self.diversions.on_disk(&pkg.owner.name, path));
                    lookup.first.entry(k).or_insert(LookupEntry::Listed);
                    true
                })?;
            }
            Source::Rpm { .. } => {
                let files = self.rpm_files(id)?;
                for (i, f) in files.files.iter().enumerate() {
                    if f.installed() {
                        let k = key(&f.path);
                        lookup.add(k, LookupEntry::Rpm(i));
                    }
                }
                lookup.rpm = Some(files);
            }
        }
        lookup.first.shrink_to_fit();
        Ok(lookup)
    }

    /// Drops what [`Self::expected`] kept to answer runs of lookups into the same packages
    /// (their files by path, and the last rpm file lists read): call when a run is over (a
    /// transaction's changes classified, a scan's changes attributed), so that an idle agent
    /// does not hold the largest package it was last asked about.
    pub fn forget_lookups(&self) {
        *self.lookups.lock().unwrap_or_else(|e| e.into_inner()) = Lookups::default();
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// What dpkg package `pkg` says about `canon`, into `out`: its digest when it has one
    /// (`.md5sums` or a conffile), else a bare entry if `.list` names it (a symlink, or a file
    /// without a recorded digest), else nothing (the index's hash matched another path).
    fn dpkg_entries_for(
        &self,
        pkg: &IndexedPackage,
        info_name: &str,
        conffiles: &[Conffile],
        canon: &Path,
        out: &mut Vec<ExpectedFile>,
    ) -> Result<(), ReadError> {
        let before = out.len();
        self.dpkg_checked_files(
            &pkg.owner.name,
            info_name,
            conffiles,
            |on_disk| (self.canon(on_disk) == canon).then_some(()),
            |f, ()| {
                out.push(ExpectedFile {
                    digest: f.md5.map(|d| PackageDigest { algo: DigestAlgo::Md5, hex: crate::hex(&d) }),
                    conffile: f.conffile,
                    ..bare_expected(&pkg.owner)
                });
                true
            },
        )?;
        if out.len() == before {
            let mut listed = false;
            dpkg::for_each_list_path(&self.root, &self.dpkg_admin, info_name, |path| {
                listed = self.canon(self.diversions.on_disk(&pkg.owner.name, path)) == canon;
                !listed
            })?;
            if listed {
                out.push(bare_expected(&pkg.owner));
            }
        }
        Ok(())
    }

    /// rpm package `id`'s files (its header's arrays), from the cache or read now.
    pub fn rpm_files(&self, id: u32) -> Result<Arc<RpmPackageFiles>, ReadError> {
        if let Ok(mut cache) = self.cache.lock()
            && let Some(pos) = cache.iter().position(|(i, _)| *i == id)
        {
            let hit = cache.remove(pos);
            let m = Arc::clone(&hit.1);
            cache.insert(0, hit);
            return Ok(m);
        }
        let m = Arc::new(self.read_rpm_files(id)?);
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(0, (id, Arc::clone(&m)));
            cache.truncate(CACHED_MANIFESTS);
        }
        Ok(m)
    }

    /// Reads rpm package `id`'s files without caching them (verification reads each once).
    pub fn read_rpm_files(&self, id: u32) -> Result<RpmPackageFiles, ReadError> {
        let pkg = self.packages.get(id as usize).ok_or(ReadError::NoSuchPackage(id))?;
        let Source::Rpm { record } = &pkg.source else {
            return Err(ReadError::NoSuchPackage(id));
        };
        let found = self.rpm_db.as_ref().ok_or(ReadError::NoSuchPackage(id))?;
        let mut hit = None;
        let problems = rpm::read_packages(&self.root, found, Some(&[*record]), &mut |p| hit = Some(p));
        hit.ok_or_else(|| {
            ReadError::Rpm(problems.first().map_or_else(
                || format!("record {record} is no longer in the database"),
                |p| p.message.clone(),
            ))
        })
    }

    /// The files of a dpkg package that have a recorded digest, as debsums checks them: its
    /// `.md5sums` entries and its conffiles (a conffile's digest is the one in `Conffiles:`).
    /// Streamed: `keep(on-disk path)` chooses before anything is allocated, and `emit` takes
    /// each kept file with what `keep` returned for it (returning `false` stops), so memory
    /// does not grow with the package. Returns the problems met in `.md5sums` (bad lines).
    pub fn dpkg_checked_files<K>(
        &self,
        name: &str,
        info_name: &str,
        conffiles: &[Conffile],
        mut keep: impl FnMut(&Path) -> Option<K>,
        mut emit: impl FnMut(DpkgFile, K) -> bool,
    ) -> Result<Vec<Problem>, ReadError> {
        let is_conffile = |path: &Path| conffiles.iter().any(|c| c.path.as_os_str() == path.as_os_str());
        let mut going = true;
        let problems = dpkg::for_each_md5sum(&self.root, &self.dpkg_admin, info_name, |path, md5| {
            let on_disk = self.diversions.on_disk(name, path);
            if let Some(kept) = (!is_conffile(path)).then(|| keep(on_disk)).flatten() {
                going = emit(
                    DpkgFile {
                        path: path.to_path_buf(),
                        on_disk: on_disk.to_path_buf(),
                        md5: Some(md5),
                        conffile: false,
                        obsolete: false,
                        remove_on_upgrade: false,
                        has_md5sums_entry: true,
                    },
                    kept,
                );
            }
            going
        })?;
        for c in conffiles {
            let on_disk = self.diversions.on_disk(name, &c.path);
            if let Some(kept) = going.then(|| keep(on_disk)).flatten() {
                going = emit(
                    DpkgFile {
                        path: c.path.clone(),
                        on_disk: on_disk.to_path_buf(),
                        md5: c.md5,
                        conffile: true,
                        obsolete: c.obsolete,
                        remove_on_upgrade: c.remove_on_upgrade,
                        has_md5sums_entry: true,
                    },
                    kept,
                );
            }
        }
        Ok(problems)
    }

    /// Whether dpkg's `path-exclude` rules kept `path` from being unpacked.
    pub fn dpkg_path_excluded(&self, path: &Path) -> bool {
        !self.path_filters.is_empty() && self.path_filters.excluded(path)
    }

    /// The rpm database record of package `id`.
    pub fn rpm_record(&self, id: u32) -> Option<u32> {
        match &self.packages.get(id as usize)?.source {
            Source::Rpm { record } => Some(*record),
            Source::Dpkg { .. } => None,
        }
    }

    /// The dpkg sources of package `id` (info name and conffiles), for verification.
    pub fn dpkg_source(&self, id: u32) -> Option<(&str, &[Conffile])> {
        match &self.packages.get(id as usize)?.source {
            Source::Dpkg { info_name, conffiles, .. } => Some((info_name, conffiles)),
            Source::Rpm { .. } => None,
        }
    }
}

/// Packages whose files by path are kept at once (see [`Index::lookup`]): an upgrade unpacks
/// one package after another, so the one being unpacked and the one before it.
const BUILT_LOOKUPS: usize = 2;

/// Packages a lookup asked about that are remembered (see [`Index::lookup`]).
const RECENTLY_ASKED: usize = 4;

#[derive(Debug, Default)]
struct Lookups {
    /// The packages the last lookups asked about, oldest first.
    recently_asked: std::collections::VecDeque<u32>,
    /// Most recently used first, at most [`BUILT_LOOKUPS`].
    built: Vec<Arc<PackageLookup>>,
}

/// One package's files by canonical path (see [`Index::lookup`]), keyed by the path's 64-bit
/// SipHash under this process's random keys rather than by the path itself: 2 MB for the
/// largest package here (45k files, 50k paths) against 12 MB with the paths kept. Two paths of
/// one package that hash alike would share their entries; by chance that is about one in
/// 10^14 for such a package, and the keys are not known outside the process, so nobody can
/// choose a path that does.
#[derive(Debug)]
struct PackageLookup {
    id: u32,
    hasher: std::collections::hash_map::RandomState,
    /// The first entry of each path: nearly every path has one.
    first: std::collections::HashMap<u64, LookupEntry>,
    /// The others, in order (a path the package lists under two spellings of one canonical
    /// path, an rpm file listed twice).
    more: std::collections::HashMap<u64, Vec<LookupEntry>>,
    /// An rpm package's files ([`LookupEntry::Rpm`] indexes them).
    rpm: Option<Arc<RpmPackageFiles>>,
}

#[derive(Debug, Clone, Copy)]
enum LookupEntry {
    /// From `.md5sums` or `Conffiles:`.
    Dpkg { md5: Option<[u8; 16]>, conffile: bool },
    /// Named only by `.list`.
    Listed,
    /// `RpmPackageFiles::files[i]`.
    Rpm(usize),
}

impl PackageLookup {
    fn new(id: u32) -> Self {
        Self {
            id,
            hasher: std::collections::hash_map::RandomState::new(),
            first: std::collections::HashMap::new(),
            more: std::collections::HashMap::new(),
            rpm: None,
        }
    }

    fn key(&self, canon: &Path) -> u64 {
        path_key(&self.hasher, canon)
    }

    fn add(&mut self, key: u64, e: LookupEntry) {
        match self.first.entry(key) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(e);
            }
            std::collections::hash_map::Entry::Occupied(_) => self.more.entry(key).or_default().push(e),
        }
    }

    /// What `dpkg_entries_for` or the rpm list would give for `canon`, into `out`.
    fn entries_for(&self, owner: &PackageOwner, canon: &Path, out: &mut Vec<ExpectedFile>) {
        let key = self.key(canon);
        let Some(first) = self.first.get(&key) else { return };
        let more = self.more.get(&key).map_or(&[][..], Vec::as_slice);
        for e in std::iter::once(first).chain(more) {
            match e {
                LookupEntry::Dpkg { md5, conffile } => out.push(ExpectedFile {
                    digest: md5.map(|d| PackageDigest { algo: DigestAlgo::Md5, hex: crate::hex(&d) }),
                    conffile: *conffile,
                    ..bare_expected(owner)
                }),
                LookupEntry::Rpm(i) => {
                    if let Some(f) = self.rpm.as_ref().and_then(|m| m.files.get(*i)) {
                        out.push(rpm_expected(owner, f));
                    }
                }
                // Only ever a path's one entry (added when no digest names the path).
                LookupEntry::Listed => out.push(bare_expected(owner)),
            }
        }
    }
}

/// A canonical path's key in a [`PackageLookup`] built with `hasher`.
fn path_key(hasher: &std::collections::hash_map::RandomState, canon: &Path) -> u64 {
    use std::hash::BuildHasher;
    hasher.hash_one(canon.as_os_str().as_bytes())
}

/// What an rpm header says of one of its files.
fn rpm_expected(owner: &PackageOwner, f: &rpm::RpmFile) -> ExpectedFile {
    ExpectedFile {
        owner: owner.clone(),
        digest: f.digest.clone(),
        conffile: f.flags & rpm::flags::CONFIG != 0,
        mode: Some(f.mode),
        size: Some(f.size),
        user: Some(f.user.clone()),
        group: Some(f.group.clone()),
    }
}

fn bare_expected(owner: &PackageOwner) -> ExpectedFile {
    ExpectedFile {
        owner: owner.clone(),
        digest: None,
        conffile: false,
        mode: None,
        size: None,
        user: None,
        group: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Index>();
    }

    /// The search from the guess answers as a binary search does, for keys spread evenly
    /// (real path hashes), for keys bunched at either end or all equal (where the guess is far
    /// off), for every length from none up, and for values present, absent, below and above
    /// every key.
    #[test]
    fn lower_bound_answers_as_a_binary_search_whatever_the_keys() {
        let mut spread: Vec<u64> =
            (0..5000).map(|i| key_base(Path::new(&format!("/usr/lib/f{i}"))) | i).collect();
        spread.sort_unstable();
        let low_end: Vec<u64> = (0..3000u64).map(|i| i * 7).collect();
        let high_end: Vec<u64> = (0..3000u64).map(|i| u64::MAX - 3000 * 7 + i * 7).collect();
        let equal = vec![1u64 << 63; 1000];
        let mut dups: Vec<u64> = spread.iter().flat_map(|k| [*k, *k, *k]).collect();
        dups.sort_unstable();
        for keys in [&spread, &low_end, &high_end, &equal, &dups] {
            for len in (0..40).chain([100, 999, 1000, 2999, keys.len()]) {
                let keys = &keys[..len.min(keys.len())];
                let mut probes = vec![0, 1, u64::MAX, u64::MAX - 1, 1 << 63, (1 << 63) - 1, (1 << 63) + 1];
                for k in keys.iter().step_by(7) {
                    probes.extend([*k, k.wrapping_sub(1), k.wrapping_add(1)]);
                }
                for lo in probes {
                    assert_eq!(
                        lower_bound(keys, lo),
                        keys.partition_point(|k| *k < lo),
                        "{lo:#x} in {} keys",
                        keys.len()
                    );
                }
            }
        }
    }

    #[test]
    fn keys_keep_the_package_number_apart_from_the_hash() {
        let base = key_base(Path::new("/usr/bin/ls"));
        assert_eq!(base & ((1 << PKG_BITS) - 1), 0);
        assert_ne!(base, key_base(Path::new("/usr/bin/lt")));
    }

    /// `lower_bound` starts where a key would sit if the keys were spread evenly: the hash must
    /// spread paths that differ by a few bytes (as a package's do) over the whole range.
    #[test]
    fn path_keys_spread_evenly_enough_for_the_search_to_start_near_them() {
        let n = 20_000usize;
        let mut keys: Vec<u64> = (0..n)
            .map(|i| key_base(Path::new(&format!("/usr/share/doc/lib{}-dev/changelog.Debian.gz", i))))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), n, "no two of these paths share a key");
        // How far each key is from the position an even spread gives it: for uniform keys,
        // of the order of the square root of n (141); 123 with this hash and seed (FNV-1a,
        // used before: 80). A hash that bunched keys would fail it and send every search on
        // a longer walk.
        let worst = keys
            .iter()
            .enumerate()
            .map(|(i, k)| ((u128::from(*k) * n as u128) >> 64).abs_diff(i as u128))
            .max()
            .unwrap();
        assert!(worst < 400, "a key is {worst} places from where an even spread puts it");
    }

    #[test]
    fn canon_applies_a_top_level_alias_by_component_whatever_the_spelling() {
        let mut index = Index::empty(HostRoot::live());
        index.aliases = vec![(PathBuf::from("/bin"), PathBuf::from("/usr/bin"))];
        for (path, canon) in [
            ("/bin/ls", "/usr/bin/ls"),
            ("/bin", "/usr/bin"),
            ("/bin/", "/usr/bin"),
            // Not the alias: a longer name that starts with it.
            ("/binary/x", "/binary/x"),
            ("/usr/bin/ls", "/usr/bin/ls"),
            // Spellings that components normalise take the component-wise comparison.
            ("//bin/ls", "/usr/bin/ls"),
            ("/./bin/ls", "/usr/bin/ls"),
            ("/bin//ls", "/usr/bin/ls"),
            ("/bin/.hidden", "/usr/bin/.hidden"),
            ("/bin/x/", "/usr/bin/x"),
        ] {
            // Byte for byte: the index hashes these bytes (`Path`'s own equality would call
            // `/usr/bin/x/` and `/usr/bin/x` equal).
            assert_eq!(index.canon(Path::new(path)).as_os_str(), canon, "{path}");
        }
    }

    #[test]
    fn shared_bases_are_the_paths_of_two_or_more_packages() {
        let ls = key_base(Path::new("/usr/bin/ls"));
        let doc = key_base(Path::new("/usr/share/doc"));
        let sh = key_base(Path::new("/usr/bin/sh"));
        let mut keys = vec![ls | 3, doc | 1, doc | 2, doc | 7, sh | 5];
        keys.sort_unstable();
        let shared = shared_bases(&keys);
        assert_eq!(shared, vec![doc]);
        let mut index = Index::empty(HostRoot::live());
        index.keys = keys;
        index.shared = shared;
        for path in ["/usr/bin/ls", "/usr/share/doc", "/usr/bin/sh", "/usr/bin/none"] {
            let path = Path::new(path);
            assert_eq!(index.is_shared_canon(path), index.owner_count(path) > 1, "{}", path.display());
        }
    }
}
