//! What a scan just read, offered to the package trust anchor so that a package file is not
//! read a second time for it (see [`crate::package::KnownContent`]).
//!
//! Trust: a record is used only while the file is still as the scan read it (same type, size,
//! mtime, ctime and inode, the metadata-first rule of `FileRecord::reused`), and only from rows
//! this scan staged or, for a scan that leaves rows identical to the baseline unstaged, from a
//! baseline verified with the key (any baseline without one). Its MD5 was taken in the same
//! read as its SHA-256, or carried over with an identical SHA-256 (`FileRecord::carry_md5`).

use crate::attribution::{Content, MAX_DIGEST_BYTES};
use crate::integrity::BaselineKey;
use crate::package::{DigestAlgo, KnownContent, PackageDigest};
use crate::record::{FileKind, FileRecord, hex};
use crate::store::Store;
use guestward_core::HostRoot;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Read connections kept for reuse: one per trust-anchor thread is enough.
const MAX_IDLE_CONNECTIONS: usize = 8;
/// Page cache of each connection, KiB.
const CACHE_KIB: u32 = 256;

/// The records of the scan that just ran, in the state directory's store.
pub(crate) struct ScannedContent<'a> {
    root: &'a HostRoot,
    state_dir: &'a Path,
    key: Option<Arc<BaselineKey>>,
    /// Whether baseline rows stand for entries the scan left unstaged, and if so whether they
    /// are verified (see [`Store::scanned_record`]); `None`: staged rows only.
    baseline: Option<bool>,
    /// SQLite connections are not shared between threads: each call takes one of these.
    idle: Mutex<Vec<Store>>,
}

impl<'a> ScannedContent<'a> {
    /// Over `state_dir`'s store; `unstaged_in_baseline`: the scan left entries identical to
    /// their baseline row unstaged.
    pub(crate) fn new(
        root: &'a HostRoot,
        state_dir: &'a Path,
        key: Option<Arc<BaselineKey>>,
        unstaged_in_baseline: bool,
    ) -> Self {
        let mut s = Self { root, state_dir, key, baseline: None, idle: Mutex::new(Vec::new()) };
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
        }
        s
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
    fn contents(&self, files: &[(&Path, Vec<DigestAlgo>)]) -> Vec<Option<Content>> {
        let Some(st) = self.connection() else { return files.iter().map(|_| None).collect() };
        // One read transaction for the batch: a transaction per lookup costs more than it.
        let out = st
            .in_read_transaction(|st| files.iter().map(|(path, algos)| self.one(st, path, algos)).collect())
            .unwrap_or_else(|_| files.iter().map(|_| None).collect());
        self.put_back(st);
        out
    }
}

impl ScannedContent<'_> {
    fn one(&self, st: &Store, path: &Path, algos: &[DigestAlgo]) -> Option<Content> {
        // On the running system the root is `/` and the kernel's own lookup is the root's: one
        // `lstat` instead of three calls through the root's descriptor, for every package file.
        let meta = if self.root.is_live() {
            std::fs::symlink_metadata(path).ok()?
        } else {
            self.root.symlink_metadata(path).ok()?
        };
        let now = FileRecord::from_metadata(&meta);
        if now.kind != FileKind::File || now.size > MAX_DIGEST_BYTES {
            return None;
        }
        let rec = st.scanned_record(path, self.baseline).ok()??;
        if !rec.same_stat(&now)
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
        let mode = Some(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()));
        Some(Content { present: true, digests, mode })
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

    /// The trust anchor is given what the scan read, only while the file is as it was read,
    /// only in the algorithms the scan took, and baseline rows only when asked for.
    #[test]
    fn the_scan_s_digests_are_given_while_the_file_is_unchanged_and_only_those() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("t");
        std::fs::create_dir(&tree).unwrap();
        let f = tree.join("f");
        std::fs::write(&f, b"package content\n").unwrap();
        let policy =
            Config { paths: vec![PathEntry::Simple(AbsolutePath::new(&tree).unwrap())], ..Config::default() }
                .policy()
                .unwrap();
        let root = HostRoot::live();
        let state = dir.path().join("state");
        let opts = ScanOptions {
            rate: Default::default(),
            threads: 1,
            progress: None,
            cancel: None,
            pace: None,
            rehash: crate::Rehash::All,
        };
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
        let known = ScannedContent::new(&root, &state, None, false);
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
        assert!(ScannedContent::new(&root, &state, None, false).contents(&asked[..1])[0].is_none());
        assert!(ScannedContent::new(&root, &state, None, true).contents(&asked[..1])[0].is_some());

        // Written since (a new ctime even with the same size): not the content the scan read.
        std::fs::write(&f, b"PACKAGE CONTENT\n").unwrap();
        assert!(ScannedContent::new(&root, &state, None, true).contents(&asked[..1])[0].is_none());
    }
}
