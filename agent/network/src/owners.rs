//! Socket inode -> owning processes, by one pass over `/proc/*/fd`.
//!
//! Pid reuse: each `/proc/<pid>` directory is opened once, and everything else (`fd/`, the
//! descriptor links, `stat`, `status`, `exe`, `cmdline`, `cgroup`) is read relative to that
//! directory descriptor. If the process exits and its pid is reused while we look, those reads
//! fail with `ESRCH`/`ENOENT` instead of silently describing the new process, so a socket is
//! never attributed to the wrong program: it is reported with its owner unknown (`vanished`).
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
    let mut dir = Dir::openat(
        pid_dir,
        "fd",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
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

/// Maps every inode in `wanted` to the processes holding it. `users` maps uid -> name.
/// Errors only when `proc_root` itself cannot be listed.
pub(crate) fn scan(
    proc_root: &Path,
    wanted: &HashSet<u64>,
    users: &HashMap<u32, String>,
) -> std::io::Result<OwnerIndex> {
    let mut index = OwnerIndex::default();
    let entries = std::fs::read_dir(proc_root)?;
    for entry in entries.take(MAX_PROCESSES) {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let pid_dir = match open(
            &entry.path(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(e) => {
                count(&mut index.stats, e);
                continue;
            }
        };
        let mut held = match socket_fds(&pid_dir, &mut index.stats) {
            Ok(held) => held,
            Err(e) => {
                count(&mut index.stats, e);
                continue;
            }
        };
        index.stats.processes_scanned += 1;
        held.retain(|inode| wanted.contains(inode));
        if held.is_empty() {
            continue;
        }
        held.sort_unstable();
        held.dedup();
        match describe(&pid_dir, pid, users) {
            Some(info) => {
                index.processes.insert(pid, info);
                for inode in held {
                    index.by_inode.entry(inode).or_default().push(pid);
                }
            }
            None => {
                index.stats.processes_vanished += 1;
                index.vanished.extend(held);
            }
        }
    }
    for pids in index.by_inode.values_mut() {
        pids.sort_unstable();
        pids.dedup();
    }
    // An inode also held by a live process is not "vanished".
    let by_inode = &index.by_inode;
    index.vanished.retain(|i| !by_inode.contains_key(i));
    Ok(index)
}

fn read_capped(pid_dir: &OwnedFd, file: &str, limit: u64) -> Option<Vec<u8>> {
    let fd = openat(
        pid_dir,
        file,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
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
    let exe = readlinkat(pid_dir, "exe")
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
pub(crate) fn systemd_unit(cgroup: &str) -> Option<String> {
    let path = cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        (controllers.is_empty() || controllers == "name=systemd").then_some(path)
    })?;
    path.rsplit('/')
        .find(|c| c.ends_with(".service") || c.ends_with(".scope"))
        .map(str::to_string)
}

/// uid -> user name from an `/etc/passwd` text.
pub(crate) fn parse_passwd(text: &str) -> HashMap<u32, String> {
    let mut map = HashMap::new();
    for line in text.lines() {
        let mut fields = line.split(':');
        let (Some(name), Some(_pw), Some(uid)) = (fields.next(), fields.next(), fields.next())
        else {
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
        assert_eq!(
            systemd_unit("0::/system.slice/ssh.service\n").as_deref(),
            Some("ssh.service")
        );
        assert_eq!(
            systemd_unit(
                "0::/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service\n"
            )
            .as_deref(),
            Some("foo.service")
        );
        assert_eq!(
            systemd_unit("12:cpu,cpuacct:/x\n1:name=systemd:/system.slice/docker-ab.scope\n")
                .as_deref(),
            Some("docker-ab.scope")
        );
        assert_eq!(systemd_unit("0::/\n"), None);
        assert_eq!(systemd_unit("garbage"), None);
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
        let m = parse_passwd(
            "root:x:0:0::/root:/bin/sh\ntoor:x:0:0::/:/bin/sh\nbad line\nwww:x:33:33::/:/x\n",
        );
        assert_eq!(m.get(&0).map(String::as_str), Some("root"));
        assert_eq!(m.get(&33).map(String::as_str), Some("www"));
        assert_eq!(m.len(), 2);
    }
}
