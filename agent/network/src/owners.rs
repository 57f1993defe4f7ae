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
//! `readlinkat` per descriptor through `nix`, and `procfs` parses `stat`/`status` for the few
//! processes that own a reported socket.
//!
//! Races and permissions are expected on a live host and are counted, not reported one by one
//! (a busy host would otherwise produce thousands of problems per scan).

use crate::model::{OwnerScanStats, ProcessInfo};
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat, readlinkat};
use nix::sys::stat::Mode;
use procfs::FromRead;
use procfs::process::{Stat, Status};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
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

/// What the `/proc/*/fd` pass found.
#[derive(Debug, Default)]
pub(crate) struct OwnerIndex {
    /// Inode -> pids holding it, ascending.
    pub by_inode: HashMap<u64, Vec<u32>>,
    /// Details of every pid in `by_inode`.
    pub processes: BTreeMap<u32, ProcessInfo>,
    /// Inodes whose only holders exited before their details could be read.
    pub vanished: HashSet<u64>,
    /// Counters.
    pub stats: OwnerScanStats,
}

fn count(stats: &mut OwnerScanStats, e: Errno) {
    match e {
        Errno::EACCES | Errno::EPERM => stats.processes_denied += 1,
        // ENOENT, ESRCH and anything else: the process is gone or cannot be read for a reason
        // we cannot act on.
        _ => stats.processes_vanished += 1,
    }
}

/// The inode in a `socket:[12345]` descriptor link.
fn socket_inode(link: &[u8]) -> Option<u64> {
    let digits = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Socket inodes held by the process whose `/proc/<pid>` directory is `pid_dir`.
fn socket_fds(pid_dir: &OwnedFd, stats: &mut OwnerScanStats) -> Result<Vec<u64>, Errno> {
    let mut dir =
        Dir::openat(pid_dir, "fd", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
    let mut names: Vec<std::ffi::CString> = Vec::new();
    for entry in dir.iter().take(MAX_FDS_PER_PROCESS.saturating_add(2)) {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes().first().is_some_and(u8::is_ascii_digit) {
            names.push(name.to_owned());
        }
    }
    let mut inodes = Vec::new();
    for name in names.iter().take(MAX_FDS_PER_PROCESS) {
        // A descriptor closed since readdir is simply skipped.
        let Ok(link) = readlinkat(dir.as_fd(), name.as_c_str()) else {
            continue;
        };
        if let Some(inode) = socket_inode(link.as_bytes()) {
            stats.socket_fds_seen += 1;
            inodes.push(inode);
        }
    }
    Ok(inodes)
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

/// Reads every process's socket descriptors. Runs on a few threads (processes are handed out one
/// at a time, so two processes with 10,000 descriptors each land on different threads), and can
/// run while the socket list is being dumped, since it does not need that list.
/// Errors only when `proc_root` itself cannot be listed.
pub(crate) fn walk(proc_root: &Path) -> std::io::Result<Walk> {
    let mut pids: Vec<(u32, std::path::PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(proc_root)?.take(MAX_PROCESSES) {
        let Ok(entry) = entry else { continue };
        if let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
            pids.push((pid, entry.path()));
        }
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, MAX_WALK_THREADS);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let parts: Vec<Walk> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut part = Walk::default();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((pid, path)) = pids.get(i) else { break };
                        walk_one(*pid, path, &mut part);
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

fn walk_one(pid: u32, path: &Path, part: &mut Walk) {
    let pid_dir = match open(path, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) => return count(&mut part.stats, e),
    };
    let held = match socket_fds(&pid_dir, &mut part.stats) {
        Ok(held) => held,
        Err(e) => return count(&mut part.stats, e),
    };
    part.stats.processes_scanned += 1;
    if held.is_empty() {
        return;
    }
    // Read through the same directory descriptor as the links, so this is the start time of
    // the process whose descriptors we just read.
    let Some(stat) =
        read_capped(&pid_dir, "stat", MAX_STAT_BYTES).and_then(|b| Stat::from_read(b.as_slice()).ok())
    else {
        part.stats.processes_vanished += 1;
        part.vanished.extend(held);
        return;
    };
    part.start_times.insert(pid, stat.starttime);
    part.held.extend(held.into_iter().map(|inode| (inode, pid)));
}

/// Narrows a [`Walk`] to the sockets in `wanted` and reads the details of their processes.
/// A process whose start time changed since the walk has exited and its pid was reused: its
/// sockets are marked `vanished`, never attributed to the newcomer.
pub(crate) fn resolve(
    proc_root: &Path,
    walk: Walk,
    wanted: &HashSet<u64>,
    users: &HashMap<u32, String>,
) -> OwnerIndex {
    let mut index = OwnerIndex { stats: walk.stats, ..OwnerIndex::default() };
    index.vanished.extend(walk.vanished.into_iter().filter(|i| wanted.contains(i)));
    let mut wanted_by_pid: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (inode, pid) in walk.held {
        if wanted.contains(&inode) {
            wanted_by_pid.entry(pid).or_default().push(inode);
        }
    }
    for (pid, inodes) in wanted_by_pid {
        let info = open(
            &proc_root.join(pid.to_string()),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()
        .and_then(|dir| describe(&dir, pid, users))
        .filter(|info| info.start_time_ticks == walk.start_times.get(&pid).copied());
        match info {
            Some(info) => {
                index.processes.insert(pid, info);
                for inode in inodes {
                    index.by_inode.entry(inode).or_default().push(pid);
                }
            }
            None => {
                index.stats.processes_vanished += 1;
                index.vanished.extend(inodes);
            }
        }
    }
    // Pids were visited in ascending order, so each list is sorted already.
    let by_inode = &index.by_inode;
    index.vanished.retain(|i| !by_inode.contains_key(i));
    index
}

fn read_capped(pid_dir: &OwnedFd, file: &str, limit: u64) -> Option<Vec<u8>> {
    let fd = openat(pid_dir, file, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).ok()?;
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
    let exe = readlinkat(pid_dir, "exe").ok().map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned());
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
pub(crate) fn systemd_unit(cgroup: &str) -> Option<String> {
    let path = cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        (controllers.is_empty() || controllers == "name=systemd").then_some(path)
    })?;
    path.rsplit('/').find(|c| c.ends_with(".service") || c.ends_with(".scope")).map(str::to_string)
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
        assert_eq!(systemd_unit("0::/system.slice/ssh.service\n").as_deref(), Some("ssh.service"));
        assert_eq!(
            systemd_unit("0::/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service\n")
                .as_deref(),
            Some("foo.service")
        );
        assert_eq!(
            systemd_unit("12:cpu,cpuacct:/x\n1:name=systemd:/system.slice/docker-ab.scope\n").as_deref(),
            Some("docker-ab.scope")
        );
        assert_eq!(systemd_unit("0::/\n"), None);
        assert_eq!(systemd_unit("garbage"), None);
    }

    #[test]
    fn a_reused_pid_is_never_credited_with_the_old_process_sockets() {
        let root = std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/network/proc-basic"
        ));
        let mut walked = walk(&root).unwrap();
        assert_eq!(walked.start_times.get(&100), Some(&1100));
        // The pid-100 process whose descriptors were read had another start time: by the time
        // its details are read, pid 100 is a different process.
        walked.start_times.insert(100, 1);
        let wanted: HashSet<u64> = [1001, 1003].into_iter().collect();
        let index = resolve(&root, walked, &wanted, &HashMap::new());
        assert_eq!(index.by_inode.get(&1001), Some(&vec![200]));
        assert!(index.vanished.contains(&1003) && !index.vanished.contains(&1001));
        assert!(!index.processes.contains_key(&100));
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
