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
