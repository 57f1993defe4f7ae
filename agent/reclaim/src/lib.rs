//! Handing the daemon's idle memory back to the kernel.
//!
//! A scan runs nearly all of the agent's code (every collector, the report writer, SQLite,
//! TLS), so once it ends almost the whole binary stays mapped in the daemon: about 12 MB of
//! the 18 MB it then holds while it waits 15 minutes for the next scan, against an idle budget
//! of 15 MB. Those pages are clean copies of the executable, which the kernel could drop and
//! read back at any time, but it keeps pages that a process maps (the classic page reclaim
//! even keeps referenced executable pages active), so they stay until memory runs short.
//! [`release_idle_memory`] unmaps them when the agent goes quiet ([`QuietAfterWork`] says
//! when): they become ordinary page cache, the first thing reclaimed under pressure,
//! and the next scan maps them again from the cache (or reads them from disk, a few MB).
//! It also asks glibc to return the free pages inside its heap (`malloc_trim`).
//!
//! It also sets glibc's malloc up for the agent in every process ([`tune_allocator`]).
//!
//! This is the only crate of the workspace that uses `unsafe` (the workspace forbids it
//! elsewhere): `madvise(2)`, `malloc_trim(3)` and `mallopt(3)` have no safe wrapper, and each
//! call carries its reasoning. So the counting allocator the tests of other crates use to
//! check an estimate of memory is here too (`counting`, a feature no binary enables).

// Output goes through `guestward_core::stdio`: the print macros panic when a write fails.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

mod allocator;
#[cfg(feature = "counting")]
pub mod counting;

pub use allocator::{
    ARENA_MAX, MMAP_THRESHOLD_BYTES, SETTINGS, Setting, TRIM_THRESHOLD_BYTES, Tuning, tune_allocator,
};
use nix::sys::mman::{MmapAdvise, madvise};
use procfs::process::{MMPermissions, MMapPath, MemoryMap};
use std::ffi::c_void;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

/// What [`release_idle_memory`] handed back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Released {
    /// Resident bytes of the executable's mappings unmapped (their `Rss` just before).
    pub code_bytes: u64,
    /// How many mappings those were.
    pub mappings: usize,
    /// Whether glibc returned free heap pages (`malloc_trim` said so).
    pub heap_trimmed: bool,
}

/// Why memory could not be released. Nothing is lost: what was not released stays mapped.
#[derive(Debug, thiserror::Error)]
pub enum ReclaimError {
    /// `/proc/self/smaps` could not be read or parsed.
    #[error("cannot read /proc/self/smaps: {0}")]
    Smaps(#[source] procfs::ProcError),
    /// `/proc/self/exe` could not be looked at (it names the executable to release).
    #[error("cannot stat /proc/self/exe: {0}")]
    Exe(#[source] nix::Error),
    /// The kernel refused `madvise` for one mapping (the ones before it were released).
    #[error("madvise(MADV_DONTNEED) of the mapping at {address:#x} ({len} bytes): {source}")]
    Madvise {
        /// Its start address.
        address: u64,
        /// Its length in bytes.
        len: u64,
        /// What the kernel said.
        #[source]
        source: nix::Error,
    },
}

/// The executable file, as `/proc/self/maps` names a mapping's file: (major, minor) device
/// numbers and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    /// The device's (major, minor).
    pub dev: (i32, i32),
    /// The inode.
    pub inode: u64,
}

impl FileId {
    /// The running executable (even when its file has since been replaced or deleted:
    /// `/proc/self/exe` leads to the inode that is mapped).
    pub fn current_exe() -> Result<Self, ReclaimError> {
        let st = nix::sys::stat::stat("/proc/self/exe").map_err(ReclaimError::Exe)?;
        let major = i32::try_from(nix::sys::stat::major(st.st_dev)).unwrap_or(-1);
        let minor = i32::try_from(nix::sys::stat::minor(st.st_dev)).unwrap_or(-1);
        Ok(Self { dev: (major, minor), inode: st.st_ino })
    }
}

/// Whether `map` may be unmapped with `MADV_DONTNEED` without changing what the process sees:
/// a private mapping of `exe` that cannot be written and holds no page of its own.
///
/// Security and correctness: `MADV_DONTNEED` on a private file mapping throws away its pages;
/// the next access reads the file again. For a page that is still the file's (never written:
/// `Anonymous` is 0, so no copy-on-write copy exists, as for code and read-only data) nothing
/// changes: until it is written, a private mapping's page *is* the page cache's page, so the
/// fault maps that same page again (or, once the kernel has reclaimed it, reads the same file,
/// which is what happens to any process's code under memory pressure). A binary replaced by
/// an upgrade is a new inode; the mapping keeps the old one. The one new exposure: a disk that
/// can no longer read the binary makes the next fault fail (SIGBUS) where a page kept mapped
/// would not have needed the disk; by then the kernel's own reclaim would do the same. A page
/// that was written (the dynamic loader's relocations in the RELRO segment, then made
/// read-only; the writable data; a debugger's breakpoint) is an anonymous copy: dropping it
/// would bring back the file's bytes, so any mapping holding one is left alone, whatever its
/// permissions. A mapping without the `Anonymous` figure (a kernel that does not report it) is
/// left alone too.
pub fn may_release(map: &MemoryMap, exe: FileId) -> bool {
    let is_exe = matches!(map.pathname, MMapPath::Path(_)) && map.dev == exe.dev && map.inode == exe.inode;
    let never_written = map.extension.map.get("Anonymous") == Some(&0);
    let resident = map.extension.map.get("Rss").is_some_and(|&rss| rss > 0);
    is_exe
        && map.perms.contains(MMPermissions::PRIVATE)
        && !map.perms.contains(MMPermissions::WRITE)
        && never_written
        && resident
}

/// Unmaps the executable's resident clean pages ([`may_release`]) and trims glibc's heap.
/// Costs a read of `/proc/self/smaps` (about a millisecond) and one `madvise` per mapping; the
/// pages the agent needs next come back on their own, as minor faults from the page cache.
pub fn release_idle_memory() -> Result<Released, ReclaimError> {
    let exe = FileId::current_exe()?;
    let maps = procfs::process::Process::myself().and_then(|me| me.smaps()).map_err(ReclaimError::Smaps)?;
    let mut released = Released::default();
    for map in maps.iter().filter(|m| may_release(m, exe)) {
        let (start, end) = map.address;
        let len = end.saturating_sub(start);
        let (Some(addr), Ok(length)) = (NonNull::new(start as usize as *mut c_void), usize::try_from(len))
        else {
            continue;
        };
        // `addr..addr+length` is one whole mapping of this process, as the kernel just listed
        // it. `may_release` checked that it is a private, non-writable mapping of our own
        // executable with no anonymous (written) page, so MADV_DONTNEED only drops clean
        // copies of the file, which the next access faults in again with the same bytes. No
        // Rust reference can be invalidated: the contents never change. The mapping cannot be
        // written or replaced meanwhile: nothing in the agent calls mprotect or mmap over its
        // executable.
        #[allow(unsafe_code)]
        let result = unsafe { madvise(addr, length, MmapAdvise::MADV_DONTNEED) }; // SAFETY: see above
        result.map_err(|source| ReclaimError::Madvise { address: start, len, source })?;
        released.code_bytes += map.extension.map.get("Rss").copied().unwrap_or(0);
        released.mappings += 1;
    }
    released.heap_trimmed = trim_heap();
    Ok(released)
}

/// glibc's `malloc_trim(0)`: gives back the free pages in the middle of its arenas too, not
/// only at the top (which `MALLOC_TRIM_THRESHOLD_` covers).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() -> bool {
    // glibc takes each arena's lock while it walks the free lists, so the call is safe
    // beside other threads that allocate.
    #[allow(unsafe_code)]
    let trimmed = unsafe { nix::libc::malloc_trim(0) }; // SAFETY: one integer by value; see above
    trimmed != 0
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() -> bool {
    false
}

/// When to release: once the agent goes quiet after real work. It is fed the CPU time the
/// process used in each sampling interval; after an interval of at least [`Self::BUSY`] (a
/// scan, a FIM rescan, a storm of changes), the first interval at most [`Self::QUIET`]
/// says "release now", and not again before [`Self::MIN_GAP`]. Small work (a status request,
/// a realtime FIM event) never triggers it, so a quiet agent is not made to fault its code
/// back in over and over.
#[derive(Debug, Default)]
pub struct QuietAfterWork {
    worked: bool,
    last_release: Option<Instant>,
}

impl QuietAfterWork {
    /// CPU time in one interval that counts as work: 100 ms (2% of a core over 5 s).
    pub const BUSY: Duration = Duration::from_millis(100);
    /// CPU time in one interval that counts as quiet: 20 ms.
    pub const QUIET: Duration = Duration::from_millis(20);
    /// The shortest time between two releases.
    pub const MIN_GAP: Duration = Duration::from_secs(60);

    /// A detector that has seen no work yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the CPU time used in the interval that ended at `now`; true: release now.
    pub fn observe(&mut self, cpu_in_interval: Duration, now: Instant) -> bool {
        if cpu_in_interval >= Self::BUSY {
            self.worked = true;
            return false;
        }
        let gap_kept = self.last_release.is_none_or(|t| now.saturating_duration_since(t) >= Self::MIN_GAP);
        if self.worked && cpu_in_interval <= Self::QUIET && gap_kept {
            self.worked = false;
            self.last_release = Some(now);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::collections::HashMap;
    use std::path::PathBuf;

    fn map(
        perms: MMPermissions,
        path: &str,
        dev: (i32, i32),
        inode: u64,
        stats: &[(&str, u64)],
    ) -> MemoryMap {
        let mut m = MemoryMap {
            address: (0x1000, 0x3000),
            perms,
            offset: 0,
            dev,
            inode,
            pathname: MMapPath::Path(PathBuf::from(path)),
            extension: Default::default(),
        };
        m.extension.map = stats.iter().map(|(k, v)| (k.to_string(), *v)).collect::<HashMap<_, _>>();
        m
    }

    const EXE: FileId = FileId { dev: (259, 1), inode: 4242 };
    const R: MMPermissions = MMPermissions::READ;
    const X: MMPermissions = MMPermissions::EXECUTE;
    const W: MMPermissions = MMPermissions::WRITE;
    const P: MMPermissions = MMPermissions::PRIVATE;
    const S: MMPermissions = MMPermissions::SHARED;

    #[test]
    fn only_the_executables_clean_read_only_private_mappings_are_released() {
        let clean = [("Rss", 8192), ("Anonymous", 0)];
        let exe = |perms| map(perms, "/usr/bin/guestward-agent", EXE.dev, EXE.inode, &clean);
        assert!(may_release(&exe(R | X | P), EXE), "code");
        assert!(may_release(&exe(R | P), EXE), "read-only data");
        assert!(!may_release(&exe(R | W | P), EXE), "writable data");
        assert!(!may_release(&exe(R | X | S), EXE), "a shared mapping");
        // RELRO: relocated by the dynamic loader, then made read-only. Its written pages are
        // anonymous copies; dropping them would bring back unrelocated bytes.
        let relro =
            map(R | P, "/usr/bin/guestward-agent", EXE.dev, EXE.inode, &[("Rss", 8192), ("Anonymous", 4096)]);
        assert!(!may_release(&relro, EXE));
        // Another file (the C library), same permissions.
        assert!(!may_release(&map(R | X | P, "/usr/lib/libc.so.6", EXE.dev, 17, &clean), EXE));
        assert!(!may_release(&map(R | X | P, "/usr/bin/guestward-agent", (8, 1), EXE.inode, &clean), EXE));
        // Unknown or nothing resident: left alone.
        assert!(!may_release(
            &map(R | X | P, "/usr/bin/guestward-agent", EXE.dev, EXE.inode, &[("Rss", 8192)]),
            EXE
        ));
        let nothing_resident = [("Rss", 0), ("Anonymous", 0)];
        assert!(!may_release(
            &map(R | X | P, "/usr/bin/guestward-agent", EXE.dev, EXE.inode, &nothing_resident),
            EXE
        ));
        let mut anon = exe(R | X | P);
        anon.pathname = MMapPath::Anonymous;
        assert!(!may_release(&anon, EXE));
    }

    /// The code pages of this very test binary: released, and the process keeps running the
    /// code it just unmapped (the pages fault back in).
    #[test]
    fn the_running_executables_code_is_released_and_still_runs() {
        let exe = FileId::current_exe().unwrap();
        let resident_code = || -> u64 {
            let maps = procfs::process::Process::myself().unwrap().smaps().unwrap();
            maps.iter().filter(|m| may_release(m, exe)).map(|m| m.extension.map["Rss"]).sum()
        };
        let before = resident_code();
        assert!(before > 0, "the test binary's code is resident while it runs");
        let released = release_idle_memory().unwrap();
        assert!(released.mappings >= 1, "{released:?}");
        assert!(released.code_bytes > 0, "{released:?}");
        // Other test threads fault some pages back in at once; most stay out.
        let after = resident_code();
        assert!(after < before, "resident code {before} -> {after} bytes");
        // Code that was unmapped runs again (formatting, hashing of a map, the allocator).
        let text: HashMap<String, usize> = (0..100).map(|i| (format!("k{i}"), i)).collect();
        assert_eq!(text["k42"], 42);
        // The RELRO and writable mappings are untouched: they are never eligible.
        let maps = procfs::process::Process::myself().unwrap().smaps().unwrap();
        assert!(maps.iter().any(|m| m.inode == exe.inode && m.perms.contains(W)));
    }

    #[test]
    fn release_comes_once_when_quiet_follows_work() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut q = QuietAfterWork::new();
        // Quiet from the start: nothing was done, nothing to release.
        assert!(!q.observe(Duration::from_millis(1), at(5)));
        // Small work (a status request) is not work.
        assert!(!q.observe(Duration::from_millis(50), at(10)));
        assert!(!q.observe(Duration::from_millis(1), at(15)));
        // A scan, then quiet: release once.
        assert!(!q.observe(Duration::from_millis(900), at(20)));
        assert!(!q.observe(Duration::from_millis(400), at(25)));
        assert!(!q.observe(Duration::from_millis(30), at(30)), "not yet quiet");
        assert!(q.observe(Duration::from_millis(5), at(35)));
        assert!(!q.observe(Duration::from_millis(5), at(40)), "once");
        // Work again within the minute: the release waits for the gap.
        assert!(!q.observe(Duration::from_millis(500), at(45)));
        assert!(!q.observe(Duration::from_millis(2), at(50)));
        assert!(!q.observe(Duration::from_millis(2), at(90)));
        assert!(q.observe(Duration::from_millis(2), at(95)), "a minute after the last release");
        assert!(!q.observe(Duration::from_millis(2), at(200)));
    }
}
