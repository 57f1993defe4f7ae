//! Socket inode -> owning processes, by one pass over `/proc/*/fd`.
//!
//! Pid reuse: `procfs::process::Process` opens `/proc/<pid>` once and reads everything else
//! (`fd/`, `stat`, `exe`, `cmdline`, `cgroup`) relative to that directory descriptor. If the
//! process exits and its pid is reused while we look, those reads fail with `ESRCH`/`ENOENT`
//! instead of silently describing the new process, so a socket is never attributed to the
//! wrong program: it is reported with its owner unknown (`vanished`).
//!
//! Races and permissions are expected on a live host and are counted, not reported one by one
//! (a busy host would otherwise produce thousands of problems per scan).

use crate::model::{OwnerScanStats, ProcessInfo};
use procfs::ProcError;
use procfs::process::{FDTarget, Process};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::Path;

/// `cmdline` bytes kept per process (arguments can hold megabytes).
pub const MAX_CMDLINE_BYTES: u64 = 4096;
/// `/proc/<pid>/cgroup` bytes read (cgroup v1 hosts list one line per hierarchy).
const MAX_CGROUP_BYTES: u64 = 16 * 1024;
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

enum Failure {
    Vanished,
    Denied,
}

fn classify(e: &ProcError) -> Failure {
    match e {
        ProcError::PermissionDenied(_) => Failure::Denied,
        // NotFound, ESRCH (reported as Io/Other) and anything else: the process is gone or
        // unreadable for a reason we cannot act on.
        _ => Failure::Vanished,
    }
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
        let process = match Process::new_with_root(entry.path()) {
            Ok(p) => p,
            Err(e) => {
                count(&mut index.stats, classify(&e));
                continue;
            }
        };
        let fds = match process.fd() {
            Ok(fds) => fds,
            Err(e) => {
                count(&mut index.stats, classify(&e));
                continue;
            }
        };
        index.stats.processes_scanned += 1;
        let mut held: Vec<u64> = Vec::new();
        // Entries that vanish between readdir and readlink are skipped by procfs itself.
        for fd in fds.take(MAX_FDS_PER_PROCESS).flatten() {
            if let FDTarget::Socket(inode) = fd.target {
                index.stats.socket_fds_seen += 1;
                if wanted.contains(&inode) {
                    held.push(inode);
                }
            }
        }
        if held.is_empty() {
            continue;
        }
        held.sort_unstable();
        held.dedup();
        match describe(&process, pid, users) {
            Some(info) => {
                index.processes.insert(pid, info);
                for inode in held {
                    let pids = index.by_inode.entry(inode).or_default();
                    pids.push(pid);
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

fn count(stats: &mut OwnerScanStats, failure: Failure) {
    match failure {
        Failure::Vanished => stats.processes_vanished += 1,
        Failure::Denied => stats.processes_denied += 1,
    }
}

/// Reads a process's details; `None` when it exited meanwhile (its `stat` is gone).
fn describe(process: &Process, pid: u32, users: &HashMap<u32, String>) -> Option<ProcessInfo> {
    let stat = process.stat().ok()?;
    let uid = process.status().ok().map(|s| s.euid);
    let exe = process.exe().ok().map(|p| p.display().to_string());
    let cmdline = read_capped(process, "cmdline", MAX_CMDLINE_BYTES)
        .map(|bytes| {
            bytes
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default();
    let systemd_unit = read_capped(process, "cgroup", MAX_CGROUP_BYTES)
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

fn read_capped(process: &Process, file: &str, limit: u64) -> Option<Vec<u8>> {
    let f = process.open_relative(file).ok()?;
    let mut buf = Vec::new();
    f.take(limit).read_to_end(&mut buf).ok()?;
    Some(buf)
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
    fn passwd_first_entry_wins_and_bad_lines_are_skipped() {
        let m = parse_passwd(
            "root:x:0:0::/root:/bin/sh\ntoor:x:0:0::/:/bin/sh\nbad line\nwww:x:33:33::/:/x\n",
        );
        assert_eq!(m.get(&0).map(String::as_str), Some("root"));
        assert_eq!(m.get(&33).map(String::as_str), Some("www"));
        assert_eq!(m.len(), 2);
    }
}
