//! The scratch root of a fuzzing run, for the targets that write each input as a tree of files
//! (`config_tree`, `dnf_cache`): made once, rewritten by every input.

use guestward_core::HostRoot;
use std::sync::OnceLock;

/// The run's scratch directory and the root over it.
pub fn tree() -> &'static (tempfile::TempDir, HostRoot) {
    static TREE: OnceLock<(tempfile::TempDir, HostRoot)> = OnceLock::new();
    TREE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("scratch directory");
        let root = HostRoot::new(dir.path()).expect("root");
        (dir, root)
    })
}
