//! Socket inode -> owning processes, by one pass over `/proc/*/fd`.
//!
//! Pid reuse: during the walk each `/proc/<pid>` directory is opened once, and its descriptor
//! links and `stat` (start time) are read relative to that directory descriptor, so they belong
//! to one process. Details are read afterwards (only for processes owning a reported socket) and
//! are accepted only when the start time is unchanged: if the process exited and its pid was
//! reused meanwhile, its sockets are reported with the owner unknown (`vanished`), never
//! attributed to the newcomer.
//!
//! Speed: this pass dominates a scan on a busy host (20,000 descriptors). `procfs`'s
//! `Process::fd()` costs four system calls per descriptor (open, readlink, stat, close) because it
//! also reports the descriptor's mode; we only need the link target, so the walk is one
//! `readlinkat` per descriptor into a stack buffer (rustix, no allocation), directories are
//! listed into a reused buffer, the dense part of a large descriptor table is read by number
//! and only the rest of it listed ([`probe_fds`]), and `procfs` parses `stat`/`status` for the
//! few processes that own a reported socket. Measurements: docs/bench/network.md, docs/bench/issue12-netwalk.md.
//!
//! Races and permissions are expected on a live host and are counted, not reported one by one
//! (a busy host would otherwise produce thousands of problems per scan).

use crate::model::{OwnerScanStats, ProcessInfo};
use procfs::FromRead;
use procfs::process::{Stat, Status};
use rustix::fs::{CWD, Mode, OFlags, RawDir, SeekFrom, fstat, openat, readlinkat, readlinkat_raw, seek};
use rustix::io::Errno;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::Path;

/// `cmdline` bytes kept per process (arguments can hold megabytes).
pub const MAX_CMDLINE_BYTES: u64 = 4096;
/// `/proc/<pid>/cgroup` bytes read (cgroup v1 hosts list one line per hierarchy).
const MAX_CGROUP_BYTES: u64 = 16 * 1024;
/// `/proc/<pid>/stat` and `status` bytes read.
const MAX_STAT_BYTES: u64 = 64 * 1024;
/// Descriptors examined per process; a process can hold up to `fs.nr_open` (1,048,576).
const MAX_FDS_PER_PROCESS: usize = 1 << 20;
/// Processes examined; `pid_max` cannot exceed 4,194,304.
const MAX_PROCESSES: usize = 1 << 22;

/// Hash state for sets and maps keyed by socket inode: foldhash, seeded per process. A scan of
/// 20,000 connections looks up every inode two or three times, and std's SipHash made those
/// lookups a visible part of the scan's serial end (docs/benchmarks.md). The inodes are the
/// kernel's, numbered in order, and the seed is not known to anyone who could pick them.
pub(crate) type InodeHash = foldhash::fast::RandomState;

/// What the `/proc/*/fd` pass found.
#[derive(Debug, Default)]
pub(crate) struct OwnerIndex {
    /// Pids of the sockets in `by_inode`, those of one socket side by side, ascending.
    held_by: Vec<u32>,
    /// Inode -> its pids, `held_by[start..end]`: one allocation for all sockets rather than a
    /// list each.
    by_inode: HashMap<u64, (u32, u32), InodeHash>,
    /// Details of every pid in `held_by`.
    pub processes: BTreeMap<u32, ProcessInfo>,
    /// Inodes whose only holders exited before their details could be read.
    pub vanished: HashSet<u64, InodeHash>,
    /// Counters.
    pub stats: OwnerScanStats,
}

impl OwnerIndex {
    /// The pids holding socket `inode`, ascending; `None` if no inspected process holds it.
    pub(crate) fn holders(&self, inode: u64) -> Option<&[u32]> {
        let &(start, end) = self.by_inode.get(&inode)?;
        self.held_by.get(start as usize..end as usize)
    }
}

fn count(stats: &mut OwnerScanStats, e: Errno) {
    match e {
        Errno::ACCESS | Errno::PERM => stats.processes_denied += 1,
        // ENOENT, ESRCH and anything else: the process is gone or cannot be read for a reason
        // we cannot act on.
        _ => stats.processes_vanished += 1,
    }
}

/// The inode in a `socket:[12345]` descriptor link.
pub(crate) fn socket_inode(link: &[u8]) -> Option<u64> {
    let digits = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Bytes of directory entries fetched per `getdents64` call: one call lists about 1,300
/// descriptors, so a 10,000-descriptor process costs 8 calls, not one per entry.
const DIRENT_BUFFER_BYTES: usize = 32 * 1024;
/// A descriptor link is read into this many bytes. `socket:[` + at most 20 digits + `]` is 29;
/// a longer target (a file path) is cut short, and a cut-short target is never taken for a
/// socket (see [`socket_fds`]).
const LINK_BUFFER_BYTES: usize = 64;

/// One walking thread's reusable buffers, so reading a descriptor allocates nothing: the walk
/// costs exactly one `readlinkat` per descriptor plus one `getdents64` per ~1,300 of them.
struct Scratch {
    dirents: Vec<MaybeUninit<u8>>,
    inodes: Vec<u64>,
}

impl Scratch {
    fn new() -> Self {
        Self { dirents: vec![MaybeUninit::uninit(); DIRENT_BUFFER_BYTES], inodes: Vec::new() }
    }
}

/// Processes with at least this many open descriptors are read by probing descriptor numbers
/// (see [`probe_fds`]); below it one `getdents64` call lists them all anyway.
const PROBE_MIN_FDS: u64 = 256;

/// `Some(inode)` when a descriptor link read into `link` (`len` bytes) names a socket.
fn socket_link(link: &[u8; LINK_BUFFER_BYTES], len: usize) -> Option<u64> {
    // `len == LINK_BUFFER_BYTES` means the target may have been cut short: not a socket.
    link.get(..len).filter(|_| len < LINK_BUFFER_BYTES).and_then(socket_inode)
}

/// What [`probe_fds`] read: the sockets among descriptors `0..next`.
struct Probed {
    sockets: u64,
    /// The first descriptor number not read.
    next: u64,
}

/// Reads the descriptors of a process with `open` descriptors by number, 0, 1, 2... until
/// `open` links were read, without listing the directory. Descriptor tables are dense (the
/// kernel hands out the lowest free number), so this skips listing the dense part, a third of
/// the walk's kernel time on a host with 20,000 connections (listing instantiates a dentry per
/// descriptor). Returns what it read, or `None` when the table is sparse or changed under us
/// (more than `64 + open / 4` numbers missed): the caller then lists the whole directory.
///
/// Reading `open` descriptors does not prove there are no more: the process may open one
/// (filling a gap below) and close another while we probe, so the count is met before a
/// descriptor far above is reached. The caller therefore always lists the directory from
/// `next` on as well; the probe only decides where listing starts, never what is skipped.
fn probe_fds(fd_dir: &OwnedFd, open: u64, inodes: &mut Vec<u64>) -> Option<Probed> {
    let budget = open / 4 + 64;
    let (mut found, mut missed, mut sockets) = (0u64, 0u64, 0u64);
    let mut link = [0u8; LINK_BUFFER_BYTES];
    let mut fd = 0u64;
    while found < open {
        if missed > budget {
            return None;
        }
        let mut name = [0u8; 24];
        let mut cursor = std::io::Cursor::new(&mut name[..]);
        std::io::Write::write_fmt(&mut cursor, format_args!("{fd}\0")).ok()?;
        let end = usize::try_from(cursor.position()).ok()?;
        let name = std::ffi::CStr::from_bytes_with_nul(name.get(..end)?).ok()?;
        match readlinkat_raw(fd_dir, name, &mut link[..]) {
            Ok(len) => {
                found += 1;
                if let Some(inode) = socket_link(&link, len) {
                    sockets += 1;
                    inodes.push(inode);
                }
            }
            Err(_) => missed += 1,
        }
        fd += 1;
    }
    Some(Probed { sockets, next: fd })
}

/// Socket inodes held by the process whose `/proc/<pid>` directory is `pid_dir`, into
/// `scratch.inodes` (cleared first). `probe`: `pid_dir` is the running kernel's, whose `fd`
/// directory reports its number of open descriptors as its size (Linux 6.2 and later; 0
/// before, which falls back to listing).
fn socket_fds(
    pid_dir: &OwnedFd,
    probe: bool,
    scratch: &mut Scratch,
    stats: &mut OwnerScanStats,
) -> Result<(), Errno> {
    scratch.inodes.clear();
    let fd_dir = openat(pid_dir, c"fd", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    // `.` and `..` plus at most MAX_FDS_PER_PROCESS descriptors, probed and listed together.
    let mut left = MAX_FDS_PER_PROCESS.saturating_add(2);
    if probe {
        let open = fstat(&fd_dir).map_or(0, |st| u64::try_from(st.st_size).unwrap_or(0));
        if (PROBE_MIN_FDS..=MAX_FDS_PER_PROCESS as u64).contains(&open) {
            // The listing below then starts after the probed numbers: positions in a `/proc`
            // fd directory are descriptor numbers plus 2 (`.` and `..` come first), so it
            // yields exactly the descriptors from `next` on, however the table changed.
            let probed = probe_fds(&fd_dir, open, &mut scratch.inodes)
                .filter(|probed| seek(&fd_dir, SeekFrom::Start(probed.next.saturating_add(2))).is_ok());
            match probed {
                Some(probed) => {
                    stats.socket_fds_seen += probed.sockets;
                    left = left.saturating_sub(usize::try_from(open).unwrap_or(usize::MAX));
                }
                // Sparse, or the seek failed (the position is then still 0): list it all.
                None => scratch.inodes.clear(),
            }
        }
    }
    let mut entries = RawDir::new(&fd_dir, &mut scratch.dirents);
    let mut link = [0u8; LINK_BUFFER_BYTES];
    while left > 0
        && let Some(entry) = entries.next()
    {
        left -= 1;
        // A failed getdents64 (the process exited mid-listing) fails the whole process: its
        // partial list would pass for a complete one.
        let entry = entry?;
        let name = entry.file_name();
        if !name.to_bytes().first().is_some_and(u8::is_ascii_digit) {
            continue;
        }
        // Read straight away, by the name the kernel just gave (no copy). A descriptor closed
        // since the listing fails here and is simply skipped.
        let Ok(len) = readlinkat_raw(&fd_dir, name, &mut link[..]) else {
            continue;
        };
        if let Some(inode) = socket_link(&link, len) {
            stats.socket_fds_seen += 1;
            scratch.inodes.push(inode);
        }
    }
    Ok(())
}

/// Every socket descriptor on the host: the raw result of the `/proc/*/fd` pass, before it is
/// narrowed to the sockets being reported.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    /// (inode, pid) for every socket descriptor, sorted.
    held: Vec<(u64, u32)>,
    /// Start time of every process that holds a socket, to detect pid reuse later.
    start_times: HashMap<u32, u64>,
    /// Sockets held by processes that exited while their descriptors were being read.
    vanished: Vec<u64>,
    stats: OwnerScanStats,
}

/// Threads for the `/proc/*/fd` pass. The walk is system-call bound and each process is
/// independent, so it scales with cores; a small cap keeps the agent's footprint modest.
const MAX_WALK_THREADS: usize = 4;

/// The pids under `proc_root`, ascending as the kernel lists them.
fn list_pids(proc_root: &Path, scratch: &mut Scratch) -> std::io::Result<(OwnedFd, Vec<u32>)> {
    let proc_dir =
        openat(CWD, proc_root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    let mut pids = Vec::new();
    let mut entries = RawDir::new(&proc_dir, &mut scratch.dirents);
    while pids.len() < MAX_PROCESSES
        && let Some(entry) = entries.next()
    {
        let entry = entry?;
        if let Some(pid) = std::str::from_utf8(entry.file_name().to_bytes()).ok().and_then(|s| s.parse().ok())
        {
            pids.push(pid);
        }
    }
    Ok((proc_dir, pids))
}

/// Reads every process's socket descriptors. Runs on a few threads (processes are handed out one
/// at a time, so two processes with 10,000 descriptors each land on different threads), and can
/// run while the socket list is being dumped, since it does not need that list.
/// Errors only when `proc_root` itself cannot be listed.
/// `live`: `proc_root` is the running kernel's `/proc` (descriptors may then be probed by
/// number, see [`probe_fds`]).
pub(crate) fn walk(proc_root: &Path, live: bool) -> std::io::Result<Walk> {
    let (proc_dir, pids) = list_pids(proc_root, &mut Scratch::new())?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, MAX_WALK_THREADS);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let parts: Vec<Walk> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                guestward_core::threads::spawn_or_run(scope, "gw-proc-walk", || {
                    let mut part = Walk::default();
                    let mut scratch = Scratch::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(pid) = pids.get(i) else { break };
                        walk_one(&proc_dir, *pid, live, &mut scratch, &mut part);
                    }
                    part
                })
            })
            .collect();
        // A worker cannot panic on host data (no unwrap/index on it); if one did, its
        // processes are simply missing and counted nowhere, rather than failing the scan.
        workers.into_iter().filter_map(|w| w.join().ok()).collect()
    });
    let mut all = Walk::default();
    for part in parts {
        all.held.extend(part.held);
        all.start_times.extend(part.start_times);
        all.vanished.extend(part.vanished);
        all.stats.processes_scanned += part.stats.processes_scanned;
        all.stats.processes_denied += part.stats.processes_denied;
        all.stats.processes_vanished += part.stats.processes_vanished;
        all.stats.socket_fds_seen += part.stats.socket_fds_seen;
    }
    all.held.sort_unstable();
    all.held.dedup();
    Ok(all)
}

fn walk_one(proc_dir: &OwnedFd, pid: u32, live: bool, scratch: &mut Scratch, part: &mut Walk) {
    // Relative to the open `/proc`: one path component to resolve, not two.
    let pid_dir = match openat(
        proc_dir,
        pid.to_string(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => return count(&mut part.stats, e),
    };
    if let Err(e) = socket_fds(&pid_dir, live, scratch, &mut part.stats) {
        return count(&mut part.stats, e);
    }
    part.stats.processes_scanned += 1;
    if scratch.inodes.is_empty() {
        return;
    }
    // Read through the same directory descriptor as the links, so this is the start time of
    // the process whose descriptors we just read.
    let Some(stat) =
        read_capped(&pid_dir, "stat", MAX_STAT_BYTES).and_then(|b| Stat::from_read(b.as_slice()).ok())
    else {
        part.stats.processes_vanished += 1;
        part.vanished.extend_from_slice(&scratch.inodes);
        return;
    };
    part.start_times.insert(pid, stat.starttime);
    part.held.extend(scratch.inodes.iter().map(|inode| (*inode, pid)));
}

/// Narrows a [`Walk`] to the sockets in `wanted` and reads the details of their processes.
/// A process whose start time changed since the walk has exited and its pid was reused: its
/// sockets are marked `vanished`, never attributed to the newcomer.
pub(crate) fn resolve(
    proc_root: &Path,
    walk: Walk,
    wanted: &HashSet<u64, InodeHash>,
    users: &HashMap<u32, String>,
) -> OwnerIndex {
    let mut index = OwnerIndex { stats: walk.stats, ..OwnerIndex::default() };
    index.vanished.extend(walk.vanished.into_iter().filter(|i| wanted.contains(i)));
    // The descriptors of the sockets reported, and the processes holding them.
    let held: Vec<(u64, u32)> = walk.held.into_iter().filter(|(inode, _)| wanted.contains(inode)).collect();
    let pids: BTreeSet<u32> = held.iter().map(|(_, pid)| *pid).collect();
    for pid in pids {
        let info = openat(
            CWD,
            proc_root.join(pid.to_string()),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()
        .and_then(|dir| describe(&dir, pid, users))
        .filter(|info| info.start_time_ticks == walk.start_times.get(&pid).copied());
        match info {
            Some(info) => {
                index.processes.insert(pid, info);
            }
            None => index.stats.processes_vanished += 1,
        }
    }
    // `held` is sorted by inode, then pid: each socket's pids come out side by side, ascending.
    index.held_by.reserve(held.len());
    index.by_inode.reserve(held.len());
    for (inode, pid) in held {
        if !index.processes.contains_key(&pid) {
            index.vanished.insert(inode);
            continue;
        }
        let at = u32::try_from(index.held_by.len()).unwrap_or(u32::MAX);
        index.held_by.push(pid);
        let range = index.by_inode.entry(inode).or_insert((at, at));
        range.1 = at.saturating_add(1);
    }
    let by_inode = &index.by_inode;
    index.vanished.retain(|i| !by_inode.contains_key(i));
    index
}

fn read_capped(pid_dir: &OwnedFd, file: &str, limit: u64) -> Option<Vec<u8>> {
    let fd = openat(pid_dir, file, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok()?;
    let mut buf = Vec::new();
    File::from(fd).take(limit).read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// Reads a process's details; `None` when it exited meanwhile (its `stat` is gone).
fn describe(pid_dir: &OwnedFd, pid: u32, users: &HashMap<u32, String>) -> Option<ProcessInfo> {
    let stat = Stat::from_read(read_capped(pid_dir, "stat", MAX_STAT_BYTES)?.as_slice()).ok()?;
    let uid = read_capped(pid_dir, "status", MAX_STAT_BYTES)
        .and_then(|b| Status::from_read(b.as_slice()).ok())
        .map(|s| s.euid);
    let exe = readlinkat(pid_dir, "exe", Vec::new())
        .ok()
        .map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned());
    let cmdline = read_capped(pid_dir, "cmdline", MAX_CMDLINE_BYTES)
        .map(|bytes| {
            bytes
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default();
    let systemd_unit = read_capped(pid_dir, "cgroup", MAX_CGROUP_BYTES)
        .and_then(|bytes| systemd_unit(&String::from_utf8_lossy(&bytes)));
    Some(ProcessInfo {
        pid,
        name: stat.comm,
        exe,
        cmdline,
        uid,
        user: uid.and_then(|u| users.get(&u).cloned()),
        systemd_unit,
        start_time_ticks: Some(stat.starttime),
    })
}

/// The innermost systemd unit (`*.service` or `*.scope`) in a `/proc/<pid>/cgroup` file: the
/// unified (`0::`) hierarchy on cgroup v2, `name=systemd` on v1.
///
/// Security: below `user@UID.service` a user's own service manager runs, and the user may
/// create and name cgroups there at will, `sshd.service` included. A unit found below it is
/// therefore given as `user@UID.service/NAME`, so that a user's listener never reads as the
/// system's sshd.
pub(crate) fn systemd_unit(cgroup: &str) -> Option<String> {
    let path = cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        (controllers.is_empty() || controllers == "name=systemd").then_some(path)
    })?;
    let unit = path.rsplit('/').find(|c| c.ends_with(".service") || c.ends_with(".scope"))?;
    let user_manager = path.split('/').find(|c| c.starts_with("user@") && c.ends_with(".service"));
    Some(match user_manager {
        Some(manager) if manager != unit => format!("{manager}/{unit}"),
        _ => unit.to_string(),
    })
}

/// uid -> user name from an `/etc/passwd` text.
pub(crate) fn parse_passwd(text: &str) -> HashMap<u32, String> {
    let mut map = HashMap::new();
    for line in text.lines() {
        let mut fields = line.split(':');
        let (Some(name), Some(_pw), Some(uid)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if let Ok(uid) = uid.parse::<u32>() {
            // The first entry wins, as with getpwuid.
            map.entry(uid).or_insert_with(|| name.to_string());
        }
    }
    map
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn systemd_unit_from_cgroup_v2_and_v1() {
        // A user names the cgroups of their own manager: their `sshd.service` is not the
        // system's, and is reported below `user@UID.service`.
        for (cgroup, unit) in [
            ("0::/system.slice/ssh.service\n", "ssh.service"),
            (
                "0::/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service\n",
                "user@1000.service/foo.service",
            ),
            (
                "0::/user.slice/user-1000.slice/user@1000.service/sshd.service\n",
                "user@1000.service/sshd.service",
            ),
            ("0::/user.slice/user-1000.slice/user@1000.service/init.scope\n", "user@1000.service/init.scope"),
            ("0::/user.slice/user-1000.slice/user@1000.service\n", "user@1000.service"),
            ("0::/user.slice/user-1000.slice/session-3.scope\n", "session-3.scope"),
            ("12:cpu,cpuacct:/x\n1:name=systemd:/system.slice/docker-ab.scope\n", "docker-ab.scope"),
        ] {
            assert_eq!(systemd_unit(cgroup).as_deref(), Some(unit), "{cgroup:?}");
        }
        assert_eq!(systemd_unit("0::/\n"), None);
        assert_eq!(systemd_unit("garbage"), None);
    }

    #[test]
    fn a_reused_pid_is_never_credited_with_the_old_process_sockets() {
        let root = std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/network/proc-basic"
        ));
        let mut walked = walk(&root, false).unwrap();
        assert_eq!(walked.start_times.get(&100), Some(&1100));
        // The pid-100 process whose descriptors were read had another start time: by the time
        // its details are read, pid 100 is a different process.
        walked.start_times.insert(100, 1);
        let wanted: HashSet<u64, InodeHash> = [1001, 1003].into_iter().collect();
        let index = resolve(&root, walked, &wanted, &HashMap::new());
        assert_eq!(index.holders(1001), Some(&[200][..]));
        assert!(index.vanished.contains(&1003) && !index.vanished.contains(&1001));
        assert!(!index.processes.contains_key(&100));
    }

    /// A `/proc/<pid>/stat` line with this start time (the fixture's format).
    fn stat_line(pid: u32, start: u64) -> String {
        format!(
            "{pid} (x) S 1 {pid} {pid} 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 {start} 10000000 500 \
                 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n"
        )
    }

    #[test]
    fn a_socket_shared_by_processes_lists_each_holder_once_in_pid_order() {
        let root = tempfile::tempdir().unwrap();
        // 30 holds socket 5 twice (a dup'd descriptor), 10 and 20 once; 20 also holds 6, and 40
        // holds 7 but its stat is gone by the time its details are read.
        for (pid, sockets) in [(30u32, &[5u64, 5][..]), (10, &[5]), (20, &[6, 5]), (40, &[7])] {
            let fd = root.path().join(format!("{pid}/fd"));
            std::fs::create_dir_all(&fd).unwrap();
            for (n, inode) in sockets.iter().enumerate() {
                std::os::unix::fs::symlink(format!("socket:[{inode}]"), fd.join(n.to_string())).unwrap();
            }
            std::fs::write(root.path().join(format!("{pid}/stat")), stat_line(pid, 1000 + u64::from(pid)))
                .unwrap();
        }
        let walked = walk(root.path(), false).unwrap();
        std::fs::remove_file(root.path().join("40/stat")).unwrap();
        // 6 is not among the sockets reported, so it gets no entry though its holder has one.
        let wanted: HashSet<u64, InodeHash> = [5, 7, 8].into_iter().collect();
        let index = resolve(root.path(), walked, &wanted, &HashMap::new());
        assert_eq!(index.holders(5), Some(&[10, 20, 30][..]));
        assert_eq!((index.holders(6), index.holders(7), index.holders(8)), (None, None, None));
        assert_eq!(index.processes.keys().copied().collect::<Vec<_>>(), vec![10, 20, 30]);
        assert_eq!(index.vanished.iter().copied().collect::<Vec<_>>(), vec![7]);
        assert_eq!(index.stats.processes_vanished, 1);
    }

    #[test]
    fn a_cut_short_link_is_never_taken_for_a_socket() {
        let root = tempfile::tempdir().unwrap();
        let fd = root.path().join("100/fd");
        std::fs::create_dir_all(&fd).unwrap();
        // 64 bytes (the link buffer) end in "]" and parse as socket 12345; the rest is cut off.
        let long = format!("socket:[{}12345]/and/more", "0".repeat(50));
        assert!(long.len() > LINK_BUFFER_BYTES && long.as_bytes()[LINK_BUFFER_BYTES - 1] == b']');
        std::os::unix::fs::symlink(&long, fd.join("3")).unwrap();
        std::os::unix::fs::symlink("socket:[777]", fd.join("4")).unwrap();
        std::fs::write(root.path().join("100/stat"), stat_line(100, 4242)).unwrap();
        let walked = walk(root.path(), false).unwrap();
        assert_eq!(walked.held, vec![(777, 100)]);
        assert_eq!(walked.stats.socket_fds_seen, 1);
    }

    #[test]
    fn a_process_with_more_descriptors_than_one_listing_batch_is_read_whole() {
        let root = tempfile::tempdir().unwrap();
        let fd = root.path().join("7/fd");
        std::fs::create_dir_all(&fd).unwrap();
        // About 1,300 entries fit one getdents64 batch: 5,000 take several.
        for n in 0..5000u64 {
            std::os::unix::fs::symlink(format!("socket:[{}]", 10_000 + n), fd.join(n.to_string())).unwrap();
        }
        std::os::unix::fs::symlink("/dev/null", fd.join("5000")).unwrap();
        std::fs::write(root.path().join("7/stat"), stat_line(7, 99)).unwrap();
        let walked = walk(root.path(), false).unwrap();
        let expected: Vec<(u64, u32)> = (0..5000u64).map(|n| (10_000 + n, 7)).collect();
        assert_eq!(walked.held, expected);
        assert_eq!(walked.start_times.get(&7), Some(&99));
        assert_eq!(walked.stats.processes_scanned, 1);
    }

    #[test]
    fn socket_links_are_recognised() {
        assert_eq!(socket_inode(b"socket:[12345]"), Some(12345));
        assert_eq!(socket_inode(b"pipe:[12345]"), None);
        assert_eq!(socket_inode(b"socket:[12x]"), None);
        assert_eq!(socket_inode(b"/dev/null"), None);
    }

    #[test]
    fn passwd_first_entry_wins_and_bad_lines_are_skipped() {
        let m =
            parse_passwd("root:x:0:0::/root:/bin/sh\ntoor:x:0:0::/:/bin/sh\nbad line\nwww:x:33:33::/:/x\n");
        assert_eq!(m.get(&0).map(String::as_str), Some("root"));
        assert_eq!(m.get(&33).map(String::as_str), Some("www"));
        assert_eq!(m.len(), 2);
    }
}
