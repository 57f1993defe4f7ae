//! What a scan just read, offered to the package trust anchor so that a package file is not
//! read a second time for it (see [`crate::package::KnownContent`]).
//!
//! Trust: the anchor judges the content this scan recorded, which is what the baseline holds
//! (or, for `check`, what the report compares), not the file as it is a moment later. A write
//! after the read is a change to that baseline, reported by the realtime watch and the next
//! scan like any other, so judging the recorded content leaves no gap, and it spares an
//! `lstat` of every package file (100k on a Debian host). A record is not used when its own
//! read saw the file change or fail (`FLAG_UNSTABLE`, `FLAG_UNREADABLE`): the anchor then reads
//! the file itself. Records come only from rows this scan staged or, for a scan that leaves
//! rows identical to the baseline unstaged, from a baseline verified with the key (any
//! baseline without one). Its MD5 was taken in the same read as its SHA-256 (or BLAKE3), or
//! carried over with identical content digests (`FileRecord::carry_md5`).

use crate::attribution::{Content, MAX_DIGEST_BYTES};
use crate::integrity::BaselineKey;
use crate::package::{DigestAlgo, KnownContent, PackageDigest};
use crate::record::{FileKind, FileRecord, hex};
use crate::store::Store;
use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Read connections kept for reuse: one per trust-anchor thread is enough.
const MAX_IDLE_CONNECTIONS: usize = 8;
/// Page cache of each connection, KiB.
const CACHE_KIB: u32 = 128;
/// Staged paths held in memory (see `ScannedContent::staged`): a check stages only what
/// changed, usually nothing; more than this and each path's staging row is looked up instead.
const MAX_STAGED_IN_MEMORY: usize = 4096;

/// MD5s remembered by [`ScannedMd5s`] at most (8 bytes each): 2 MiB. A Debian host has about
/// 100k package files under /usr; past this, the anchor looks the rest up in the store.
const MAX_REMEMBERED_MD5S: usize = 1 << 18;

/// The MD5s the scan took in its own reads, or carried over from baseline rows of the same
/// content that the anchor would read them from (see [`crate::scan::Md5Wanted::taken`] and
/// `carried`), so that the trust anchor judges the files whose MD5 is the one their package
/// lists without reading their rows back from the store: a keyed 64-bit tag of each (path,
/// MD5), not the paths.
///
/// Why a tag is enough: the anchor asks whether (path, expected MD5) was taken, and a file
/// whose content differs has another MD5, so another tag. A wrong yes needs two tags to
/// collide: by chance about one in 10^14 for a host's 100k package files, and on purpose not
/// at all, since the keys are this process's random SipHash keys, never written or shown, so
/// nobody can compute which content would collide.
pub(crate) struct ScannedMd5s {
    keys: std::collections::hash_map::RandomState,
    tags: Mutex<Vec<u64>>,
}

impl ScannedMd5s {
    pub(crate) fn new() -> Self {
        Self { keys: std::collections::hash_map::RandomState::new(), tags: Mutex::new(Vec::new()) }
    }

    /// Remembers that `md5` is the MD5 of what the scan recorded of `path` (up to
    /// [`MAX_REMEMBERED_MD5S`]).
    pub(crate) fn remember(&self, path: &Path, md5: &[u8; 16]) {
        let tag = tag(&self.keys, path, md5);
        let mut tags = self.tags.lock().unwrap_or_else(|e| e.into_inner());
        if tags.len() < MAX_REMEMBERED_MD5S {
            tags.push(tag);
        }
    }

    /// The tags, sorted for lookups: call once the scan is over.
    pub(crate) fn sealed(self) -> SealedMd5s {
        let mut tags = self.tags.into_inner().unwrap_or_else(|e| e.into_inner());
        tags.sort_unstable();
        tags.dedup();
        tags.shrink_to_fit();
        SealedMd5s { keys: self.keys, tags }
    }
}

/// [`ScannedMd5s`] once the scan is over.
pub(crate) struct SealedMd5s {
    keys: std::collections::hash_map::RandomState,
    tags: Vec<u64>,
}

impl SealedMd5s {
    /// Whether the scan took `md5` of `path`.
    pub(crate) fn taken(&self, path: &Path, md5: &[u8; 16]) -> bool {
        self.tags.binary_search(&tag(&self.keys, path, md5)).is_ok()
    }
}

/// The tag of (`path`, `md5`) under `keys`.
fn tag(keys: &std::collections::hash_map::RandomState, path: &Path, md5: &[u8; 16]) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = keys.build_hasher();
    // The MD5 is of fixed length, at the end: no two pairs hash the same input.
    h.write(path.as_os_str().as_bytes());
    h.write(md5);
    h.finish()
}

/// The records of the scan that just ran, in the state directory's store.
pub(crate) struct ScannedContent<'a> {
    state_dir: &'a Path,
    key: Option<Arc<BaselineKey>>,
    /// Whether baseline rows stand for entries the scan left unstaged, and if so whether they
    /// are verified (see [`Store::scanned_record`]); `None`: staged rows only.
    baseline: Option<bool>,
    /// The staged paths, when baseline rows stand for unstaged entries and there are few: a
    /// path not among them has no staged row, so its lookup goes straight to the baseline
    /// (100k package files after a check, against a handful staged). `None`: look each up.
    staged: Option<BTreeSet<Vec<u8>>>,
    /// SQLite connections are not shared between threads: each call takes one of these.
    idle: Mutex<Vec<Store>>,
    /// The MD5s the scan took, when it remembered them.
    md5s: Option<SealedMd5s>,
}

impl<'a> ScannedContent<'a> {
    /// Over `state_dir`'s store; `unstaged_in_baseline`: the scan left entries identical to
    /// their baseline row unstaged.
    pub(crate) fn new(
        state_dir: &'a Path,
        key: Option<Arc<BaselineKey>>,
        unstaged_in_baseline: bool,
    ) -> Self {
        let mut s =
            Self { state_dir, key, baseline: None, staged: None, idle: Mutex::new(Vec::new()), md5s: None };
        if unstaged_in_baseline {
            s.baseline = match s.key {
                // Nothing to verify its rows with.
                None => Some(false),
                // Rows of a baseline not sealed with the key are not verified, so not used.
                Some(_) => s.connection().and_then(|st| {
                    let verified = st.baseline_verified().ok();
                    s.put_back(st);
                    verified.filter(|v| *v)
                }),
            };
            if s.baseline.is_some() {
                s.staged = s.connection().and_then(|st| {
                    let staged = st.staged_paths(MAX_STAGED_IN_MEMORY).ok().flatten();
                    s.put_back(st);
                    staged
                });
            }
        }
        s
    }

    /// With the MD5s the scan took in its reads, judged without a lookup.
    pub(crate) fn with_md5s(mut self, md5s: SealedMd5s) -> Self {
        self.md5s = Some(md5s);
        self
    }

    fn connection(&self) -> Option<Store> {
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        match idle {
            Some(st) => Some(st),
            None => {
                let st = Store::open_keyed(self.state_dir, self.key.clone()).ok()?;
                st.set_cache_kib(CACHE_KIB).ok()?;
                Some(st)
            }
        }
    }

    fn put_back(&self, st: Store) {
        if let Ok(mut v) = self.idle.lock()
            && v.len() < MAX_IDLE_CONNECTIONS
        {
            v.push(st);
        }
    }
}

impl KnownContent for ScannedContent<'_> {
    fn took_md5(&self, path: &Path, md5: &[u8; 16]) -> bool {
        self.md5s.as_ref().is_some_and(|m| m.taken(path, md5))
    }

    fn contents(&self, files: &[(&Path, Vec<DigestAlgo>)]) -> Vec<Option<Content>> {
        let Some(st) = self.connection() else { return files.iter().map(|_| None).collect() };
        // One read transaction for the batch: a transaction per lookup costs more than it.
        let out = st
            .in_read_transaction(|st| match (&self.staged, self.baseline) {
                // A path known not to be staged is read from the baseline, the batch's such
                // paths in one merged read (a package's files come sorted: see
                // `Store::baseline_records`).
                (Some(staged), Some(verify)) => {
                    let unstaged = |path: &Path| !staged.contains(path.as_os_str().as_bytes());
                    let direct: Vec<&[u8]> = files
                        .iter()
                        .filter(|(path, _)| unstaged(path))
                        .map(|(path, _)| path.as_os_str().as_bytes())
                        .collect();
                    let mut from_baseline = st.baseline_records(&direct, verify).into_iter();
                    files
                        .iter()
                        .map(|(path, algos)| {
                            let rec = match unstaged(path) {
                                true => from_baseline.next().unwrap_or(Ok(None)),
                                false => st.scanned_record(path, self.baseline),
                            };
                            Self::content(rec.ok().flatten(), algos)
                        })
                        .collect()
                }
                // Staged rows only (`init` stages every entry): the batch in merged reads, as
                // above.
                (_, None) => {
                    let paths: Vec<&[u8]> =
                        files.iter().map(|(path, _)| path.as_os_str().as_bytes()).collect();
                    st.staged_records(&paths)
                        .into_iter()
                        .zip(files)
                        .map(|(rec, (_, algos))| Self::content(rec.ok().flatten(), algos))
                        .collect()
                }
                _ => files
                    .iter()
                    .map(|(path, algos)| {
                        Self::content(st.scanned_record(path, self.baseline).ok().flatten(), algos)
                    })
                    .collect(),
            })
            .unwrap_or_else(|_| files.iter().map(|_| None).collect());
        self.put_back(st);
        out
    }
}

impl ScannedContent<'_> {
    /// What the anchor is given of a scanned record: its digests in `algos`, if it has them all
    /// and its read was sound.
    fn content(rec: Option<FileRecord>, algos: &[DigestAlgo]) -> Option<Content> {
        let rec = rec?;
        if rec.kind != FileKind::File
            || rec.size > MAX_DIGEST_BYTES
            || rec.flags & (crate::record::FLAG_UNSTABLE | crate::record::FLAG_UNREADABLE) != 0
        {
            return None;
        }
        let mut digests = Vec::with_capacity(algos.len());
        for algo in algos {
            let hex = match algo {
                DigestAlgo::Md5 => hex(&rec.md5?),
                DigestAlgo::Sha256 => hex(&rec.sha256?),
                _ => return None,
            };
            digests.push(PackageDigest { algo: *algo, hex });
        }
        // `st_mode` as the file's own stat gives it: a regular file's type bits and the mode.
        let mode = Some(nix::libc::S_IFREG | rec.mode);
        Some(Content { present: true, digests, mode, unexamined: false })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::config::{Config, PathEntry};
    use crate::scan::{ScanOptions, Staging, stage_with};
    use guestward_core::AbsolutePath;
    use md5::Digest as _;

    /// An MD5 the scan took is known for its own path and content only, in any order taken
    /// and by any thread; the anchor is then asked nothing else about it.
    #[test]
    fn md5s_taken_are_known_for_their_own_path_and_content_only() {
        let md5s = ScannedMd5s::new();
        let (a, b) = (Path::new("/usr/bin/a"), Path::new("/usr/bin/b"));
        let (x, y) = ([1u8; 16], [2u8; 16]);
        std::thread::scope(|s| {
            s.spawn(|| md5s.remember(b, &y));
            s.spawn(|| md5s.remember(a, &x));
        });
        md5s.remember(a, &x);
        let sealed = md5s.sealed();
        assert_eq!(sealed.tags.len(), 2, "told twice, kept once");
        assert!(sealed.taken(a, &x) && sealed.taken(b, &y));
        assert!(!sealed.taken(a, &y), "another content of a");
        assert!(!sealed.taken(b, &x), "another content of b");
        assert!(!sealed.taken(Path::new("/usr/bin/c"), &x), "never read");

        let known = ScannedContent::new(Path::new("/nonexistent"), None, false).with_md5s(sealed);
        assert!(known.took_md5(a, &x));
        assert!(!known.took_md5(a, &y));
        assert!(
            !ScannedContent::new(Path::new("/nonexistent"), None, false).took_md5(a, &x),
            "none remembered"
        );
    }

    /// The trust anchor is given what the scan recorded, in the algorithms the scan took, not
    /// for a read that saw the file change, and baseline rows only when asked for.
    #[test]
    fn the_scan_s_recorded_digests_are_given_unless_its_read_saw_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("t");
        std::fs::create_dir(&tree).unwrap();
        let f = tree.join("f");
        std::fs::write(&f, b"package content\n").unwrap();
        let policy =
            Config { paths: vec![PathEntry::Simple(AbsolutePath::new(&tree).unwrap())], ..Config::default() }
                .policy()
                .unwrap();
        let root = guestward_core::HostRoot::live();
        let state = dir.path().join("state");
        let opts = ScanOptions::unlimited(1);
        let wants = |_: &Path| true;
        let targets = policy.targets(&root);
        stage_with(&policy, &root, &state, &targets, false, &opts, Staging::All, Some(&wants)).unwrap();

        let missing = tree.join("missing");
        let asked = [
            (f.as_path(), vec![DigestAlgo::Md5]),
            (f.as_path(), vec![DigestAlgo::Sha256, DigestAlgo::Md5]),
            (f.as_path(), vec![DigestAlgo::Sha1]),
            (missing.as_path(), vec![DigestAlgo::Md5]),
        ];
        let known = ScannedContent::new(&state, None, false);
        let got = known.contents(&asked);
        let md5 = hex(&md5::Md5::digest(b"package content\n"));
        let sha = hex(&sha2::Sha256::digest(b"package content\n"));
        let first = got[0].as_ref().expect("the scan read it");
        assert_eq!(
            (first.present, first.digests.len(), first.digests[0].hex.as_str()),
            (true, 1, md5.as_str())
        );
        let both: Vec<&str> = got[1].as_ref().unwrap().digests.iter().map(|d| d.hex.as_str()).collect();
        assert_eq!(both, vec![sha.as_str(), md5.as_str()]);
        assert!(got[2].is_none(), "SHA-1 was not taken: read it");
        assert!(got[3].is_none(), "not there: read it (and find it missing)");

        // Staged rows moved into the baseline: used only when asked for.
        let mut store = Store::open(&state).unwrap();
        store.replace_all().unwrap();
        assert!(ScannedContent::new(&state, None, false).contents(&asked[..1])[0].is_none());
        assert!(ScannedContent::new(&state, None, true).contents(&asked[..1])[0].is_some());

        // Written since: the content the scan recorded (what the baseline holds) is judged;
        // the write is a change to the baseline, for the watch and the next scan to report.
        std::fs::write(&f, b"PACKAGE CONTENT\n").unwrap();
        let judged = ScannedContent::new(&state, None, true).contents(&asked[..1]);
        assert_eq!(judged[0].as_ref().unwrap().digests[0].hex, md5);
        let recorded = store.get(&f).unwrap().unwrap();
        assert_eq!(judged[0].as_ref().unwrap().mode, Some(0o100000 | recorded.mode));

        // A row this check staged (the content changed) is judged, not the baseline's; the
        // other paths go straight to the baseline (the staged paths are known up front).
        let mut changed = recorded.clone();
        changed.md5 = Some(md5::Md5::digest(b"PACKAGE CONTENT\n").into());
        store.stage_batch(&[(f.clone(), changed)]).unwrap();
        let known = ScannedContent::new(&state, None, true);
        assert_eq!(known.staged.as_ref().map(|s| s.len()), Some(1));
        assert_eq!(
            known.contents(&asked[..1])[0].as_ref().unwrap().digests[0].hex,
            hex(&md5::Md5::digest(b"PACKAGE CONTENT\n"))
        );
        store.clear_staging().unwrap();

        // A record whose read saw the file change is not used: the anchor reads the file.
        let mut unstable = recorded;
        unstable.flags |= crate::record::FLAG_UNSTABLE;
        store.put(&f, &unstable).unwrap();
        assert!(ScannedContent::new(&state, None, true).contents(&asked[..1])[0].is_none());
    }
}
