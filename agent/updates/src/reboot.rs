//! Whether what runs is what is installed: Debian's reboot-required flag, the running kernel
//! against the newest installed one, and processes still mapping deleted shared libraries
//! (what `needrestart` and `needs-restarting` look for).

use crate::Config;
use crate::model::{KernelPackage, RebootStatus, StaleProcess};
use guestward_core::{HostRoot, Problem};
use std::io::Read;
use std::path::Path;

/// `/var/run/reboot-required.pkgs` larger than this is not read.
const MAX_FLAG_BYTES: u64 = 1024 * 1024;
/// `/proc/<pid>/maps` read per process (a large JVM has tens of thousands of mappings).
const MAX_MAPS_BYTES: u64 = 16 * 1024 * 1024;
/// Libraries named per process.
const MAX_LIBRARIES_NAMED: usize = 8;
/// Processes looked at.
const MAX_PROCESSES: usize = 1 << 20;

/// Fills `status` from the flag files, the kernels and (live only) `/proc`.
/// `kernels`: installed kernel packages, oldest first.
pub(crate) fn check(
    root: &HostRoot,
    config: &Config,
    kernels: &[KernelPackage],
    problems: &mut Vec<Problem>,
) -> RebootStatus {
    let mut status = RebootStatus::default();
    if root.exists("/var/run/reboot-required") {
        status.flag_file = true;
        status.required = true;
        let pkgs = match root.read_string_capped("/var/run/reboot-required.pkgs", MAX_FLAG_BYTES) {
            Ok(text) => {
                let mut v: Vec<String> =
                    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
                v.sort_unstable();
                v.dedup();
                v
            }
            Err(guestward_core::HostFsError::NotFound { .. }) => Vec::new(),
            Err(e) => {
                problems.push(e.to_problem());
                Vec::new()
            }
        };
        status.reasons.push(if pkgs.is_empty() {
            "/var/run/reboot-required exists".to_string()
        } else {
            format!("/var/run/reboot-required exists, for {}", pkgs.join(", "))
        });
        status.flag_packages = pkgs;
    }

    if root.is_live() {
        status.running_kernel =
            std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string());
    }
    status.newest_kernel = kernels.last().cloned();
    if let Some(running) = &status.running_kernel {
        status.running_kernel_package = kernels.iter().rev().find(|k| &k.release == running).cloned();
        if let (Some(newest), Some(_)) = (&status.newest_kernel, &status.running_kernel_package)
            && &newest.release != running
        {
            status.required = true;
            status.reasons.push(format!(
                "the running kernel {running} is older than the installed {} {}",
                newest.name, newest.version
            ));
        }
    }

    if root.is_live() && config.check_processes {
        stale_processes(Path::new("/proc"), config, &mut status, problems);
        if !status.stale_processes.is_empty() {
            let names: Vec<String> =
                status.stale_processes.iter().take(5).map(|p| format!("{}/{}", p.name, p.pid)).collect();
            let more = status.stale_processes.len().saturating_sub(names.len());
            status.reasons.push(format!(
                "{} processes run deleted libraries and need a restart: {}{}",
                status.stale_processes.len(),
                names.join(", "),
                if more > 0 || status.stale_processes_truncated { " ..." } else { "" }
            ));
        }
    }
    status
}

/// One pass over `<proc>/*/maps`.
pub fn stale_processes(
    proc_root: &Path,
    config: &Config,
    status: &mut RebootStatus,
    problems: &mut Vec<Problem>,
) {
    let entries = match std::fs::read_dir(proc_root) {
        Ok(e) => e,
        Err(e) => {
            problems.push(
                Problem::new("io", format!("{}: cannot list processes: {e}", proc_root.display()))
                    .with_path(proc_root.display().to_string()),
            );
            return;
        }
    };
    let me = std::process::id();
    let mut maps = Vec::new();
    for entry in entries.flatten().take(MAX_PROCESSES) {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let dir = entry.path();
        maps.clear();
        let read =
            std::fs::File::open(dir.join("maps")).and_then(|f| f.take(MAX_MAPS_BYTES).read_to_end(&mut maps));
        match read {
            Ok(_) => status.processes_scanned += 1,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                status.processes_denied += 1;
                continue;
            }
            // Exited meanwhile.
            Err(_) => continue,
        }
        let libraries = deleted_libraries(&maps);
        if libraries.is_empty() {
            continue;
        }
        if status.stale_processes.len() >= config.max_stale_processes as usize {
            status.stale_processes_truncated = true;
            continue;
        }
        let name =
            std::fs::read_to_string(dir.join("comm")).map(|s| s.trim().to_string()).unwrap_or_default();
        status.stale_processes.push(StaleProcess { pid, name, libraries });
    }
    status.stale_processes.sort_by_key(|p| p.pid);
}

/// Shared libraries a maps listing shows as deleted: `/usr/lib/x86_64-linux-gnu/libssl.so.3
/// (deleted)`. Memory files (`/memfd:`, `/dev/shm`, SysV segments) are not libraries.
pub fn deleted_libraries(maps: &[u8]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in maps.split(|b| *b == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else { continue };
        let Some(path) = line.strip_suffix(" (deleted)") else { continue };
        // The path is the sixth column; it may itself contain spaces.
        let Some(start) = path.find(" /") else { continue };
        let path = path[start + 1..].trim_start();
        if path.starts_with("/memfd:") || path.starts_with("/dev/") || path.starts_with("/SYSV") {
            continue;
        }
        let file = path.rsplit('/').next().unwrap_or(path);
        let is_library = file.ends_with(".so") || file.contains(".so.");
        if is_library && !out.iter().any(|p| p == path) {
            if out.len() >= MAX_LIBRARIES_NAMED {
                break;
            }
            out.push(path.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_libraries_are_named_once_and_memory_files_ignored() {
        let maps = b"7f0-7f1 r--p 00000000 08:01 123 /usr/lib/x86_64-linux-gnu/libssl.so.3 (deleted)\n\
7f1-7f2 r-xp 00001000 08:01 123 /usr/lib/x86_64-linux-gnu/libssl.so.3 (deleted)\n\
7f2-7f3 rw-s 00000000 00:01 9 /memfd:cache.so (deleted)\n\
7f3-7f4 r--p 00000000 08:01 77 /usr/bin/vim (deleted)\n\
7f4-7f5 r--p 00000000 08:01 78 /opt/my app/libx.so (deleted)\n\
7f5-7f6 r--p 00000000 08:01 79 /usr/lib/libc.so.6\n";
        assert_eq!(
            deleted_libraries(maps),
            vec!["/usr/lib/x86_64-linux-gnu/libssl.so.3".to_string(), "/opt/my app/libx.so".to_string()]
        );
    }
}
