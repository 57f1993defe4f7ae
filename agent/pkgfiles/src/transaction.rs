//! Is a package transaction running (or did one just end)? Observed without taking part.
//!
//! Evidence, each read through [`HostRoot`] and bounded:
//! - the holder of dpkg's locks (`/var/lib/dpkg/lock-frontend`, `lock`) and rpm's
//!   (`.rpm.lock` in the rpm database directory): `/proc/locks` matched by inode, and
//!   `F_GETLK` on a descriptor opened read-only, which asks the kernel who holds a lock
//!   without taking it (taking dpkg's lock, even briefly, would make a real `apt-get` fail);
//! - a running `dpkg`, `apt`, `apt-get`, `aptitude`, `unattended-upgr`, `rpm`, `dnf`, `yum`,
//!   `microdnf` process (`/proc/<pid>/comm`, at most [`MAX_PROCESSES`] looked at) whose real
//!   and effective user are root (`/proc/<pid>/status`). Any user can name a process `dpkg`
//!   (a copy of `sleep` will do), and while a transaction is seen running the changes to
//!   package files are held, not alerted: counted from anyone, a process that never ends
//!   would hold every alert. Installing packages takes root, and the other evidence (locks,
//!   logs, databases) can only be written by root too. A process installing into another
//!   root (`rpm --root /mnt/image`, `dnf --installroot`, `dpkg --root`: see
//!   [`installs_elsewhere`]) is not this host's transaction and is not counted;
//! - `/var/log/dpkg.log`'s tail (the last [`LOG_TAIL_BYTES`]): its last entries say which
//!   packages moved, and its modification time whether dpkg wrote just now;
//! - the rpm database's modification time (`rpmdb.sqlite`, `Packages`), and
//!   `/var/log/unattended-upgrades/unattended-upgrades.log` when present;
//! - for rpm, the packages whose `INSTALLTIME` falls in the transaction
//!   ([`rpm_recent_installs`]): rpm's counterpart of dpkg.log's last entries, read by the
//!   [`Oracle`](crate::Oracle) once per change of the database, not on every look.
//!
//! Locks and processes are looked at only on the live root: another root's processes are not
//! this machine's.

use guestward_core::{HostRoot, Timestamp};
use guestward_fim::package::{PackageManager, PackageTransaction};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// dpkg's locks: apt holds the frontend lock for a whole run, dpkg the inner one.
pub const DPKG_LOCKS: &[&str] = &["/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock"];
/// rpm's transaction lock, in each place the database may live.
pub const RPM_LOCKS: &[&str] = &["/var/lib/rpm/.rpm.lock", "/usr/lib/sysimage/rpm/.rpm.lock"];
/// rpm database files whose modification time says a transaction wrote to it.
const RPM_DATABASES: &[&str] = &[
    "/var/lib/rpm/rpmdb.sqlite",
    "/var/lib/rpm/Packages",
    "/var/lib/rpm/Packages.db",
    "/usr/lib/sysimage/rpm/rpmdb.sqlite",
    "/usr/lib/sysimage/rpm/Packages.db",
];
/// dpkg's log.
pub const DPKG_LOG: &str = "/var/log/dpkg.log";
/// unattended-upgrades' own log.
const UNATTENDED_LOG: &str = "/var/log/unattended-upgrades/unattended-upgrades.log";
/// How much of dpkg.log's end is read.
pub const LOG_TAIL_BYTES: u64 = 64 * 1024;
/// Processes looked at, at most (a fork bomb must not make every file change expensive).
pub const MAX_PROCESSES: usize = 8192;
/// `/proc/locks` read at most (one line per lock held on the machine).
const MAX_PROC_LOCKS_BYTES: u64 = 1 << 20;
/// A log or database written this recently counts as a transaction that just ended: dpkg's
/// last file rename comes a moment before its last log line, and triggers run after it.
pub const RECENT: Duration = Duration::from_secs(5);

/// Package manager processes by `comm` (truncated by the kernel to 15 bytes).
const PROCESSES: &[(&str, PackageManager)] = &[
    ("dpkg", PackageManager::Dpkg),
    ("apt", PackageManager::Dpkg),
    ("apt-get", PackageManager::Dpkg),
    ("aptitude", PackageManager::Dpkg),
    ("unattended-upgr", PackageManager::Dpkg),
    ("rpm", PackageManager::Rpm),
    ("dnf", PackageManager::Rpm),
    ("dnf-3", PackageManager::Rpm),
    ("yum", PackageManager::Rpm),
    ("microdnf", PackageManager::Rpm),
];

/// What a look at the host found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The manager the strongest evidence points at.
    pub manager: PackageManager,
    /// A lock is held or a package manager process runs now.
    pub running: bool,
    /// Each piece of evidence, for a person (`lock /var/lib/dpkg/lock-frontend held by pid
    /// 123 (apt-get)`, `/var/log/dpkg.log written 1 s ago`).
    pub evidence: Vec<String>,
}

/// One line of dpkg.log that moved a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// `2026-12-02 11:06:47`, as written (local time).
    pub time: String,
    /// `install`, `upgrade`, `remove`, `purge`, `status installed`...
    pub action: String,
    /// The package, without its architecture.
    pub package: String,
    /// Architecture, when given.
    pub arch: Option<String>,
    /// Version before (`install`/`upgrade`: the old one, `<none>` dropped).
    pub old_version: Option<String>,
    /// Version after.
    pub new_version: Option<String>,
}

/// Looks at the host now. `None`: nothing says a transaction is running or just ended.
pub fn observe(root: &HostRoot) -> Option<Observed> {
    observe_at(root, SystemTime::now())
}

/// [`observe`] as of `now` (the recency window is measured from it).
pub fn observe_at(root: &HostRoot, now: SystemTime) -> Option<Observed> {
    let mut evidence = Vec::new();
    let mut running: Option<PackageManager> = None;
    let mut recent: Option<PackageManager> = None;
    if root.is_live() {
        let proc_locks = read_proc_locks();
        for (locks, manager) in [(DPKG_LOCKS, PackageManager::Dpkg), (RPM_LOCKS, PackageManager::Rpm)] {
            for lock in locks {
                if let Some(holder) = lock_holder(root, lock, proc_locks.as_deref()) {
                    evidence.push(format!("lock {lock} held by {holder}"));
                    running.get_or_insert(manager);
                }
            }
        }
        for (pid, comm, manager) in package_processes() {
            evidence.push(format!("process {comm} (pid {pid})"));
            running.get_or_insert(manager);
        }
    }
    let written = |path: &str| -> Option<Duration> {
        let meta = root.symlink_metadata(path).ok()?;
        let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(meta.mtime()).ok()?);
        // A time in the future (clock stepped back) counts as just now.
        Some(now.duration_since(mtime).unwrap_or_default())
    };
    let mut wrote = |path: &str, manager: PackageManager, evidence: &mut Vec<String>| {
        if let Some(age) = written(path).filter(|a| *a <= RECENT) {
            evidence.push(format!("{path} written within the last {} s", RECENT.as_secs()));
            let _ = age;
            recent.get_or_insert(manager);
        }
    };
    wrote(DPKG_LOG, PackageManager::Dpkg, &mut evidence);
    wrote(UNATTENDED_LOG, PackageManager::Dpkg, &mut evidence);
    for db in RPM_DATABASES {
        wrote(db, PackageManager::Rpm, &mut evidence);
    }
    let manager = running.or(recent)?;
    if manager == PackageManager::Dpkg
        && let Some(last) = dpkg_log_tail(root).last()
    {
        evidence.push(format!(
            "dpkg.log {} {} {}{}",
            last.time,
            last.action,
            last.package,
            last.new_version.as_deref().map(|v| format!(" {v}")).unwrap_or_default()
        ));
    }
    Some(Observed { manager, running: running.is_some(), evidence })
}

impl Observed {
    /// As the FIM model's transaction, first seen at `started`.
    pub fn to_transaction(&self, started: Timestamp) -> PackageTransaction {
        let manager = match self.manager {
            PackageManager::Dpkg => "dpkg",
            PackageManager::Rpm => "rpm",
        };
        PackageTransaction {
            id: format!("{manager}-{started}"),
            manager: self.manager,
            started,
            evidence: self.evidence.clone(),
        }
    }
}

/// Most rpm packages [`rpm_recent_installs`] names (an upgrade of hundreds names the latest).
pub const MAX_RPM_INSTALLS: usize = 8;

/// rpm packages whose `INSTALLTIME` is at or after `since`, newest first, at most
/// [`MAX_RPM_INSTALLS`], as evidence lines (`rpm INSTALLTIME 2026-12-02T10:00:00Z
/// bash-5.2.15-1.amzn2023`). Reads the database's headers (not their file lists) with the
/// inventory's bounds; empty when there is no rpm database or it cannot be read.
pub fn rpm_recent_installs(root: &HostRoot, since: Timestamp) -> Vec<String> {
    let scan = guestward_rpmdb::read_rpm_dirs(
        root,
        &crate::rpm::default_dirs(),
        &guestward_rpmdb::Limits::default(),
    );
    let Some(inventory) = scan.inventory else { return Vec::new() };
    let mut recent: Vec<(Timestamp, String)> = inventory
        .packages
        .iter()
        .filter_map(|p| p.install_time.filter(|t| *t >= since).map(|t| (t, p.nevra())))
        .collect();
    // Newest first; the same second by name, so the list does not depend on record order.
    recent.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    recent.truncate(MAX_RPM_INSTALLS);
    recent.into_iter().map(|(t, nevra)| format!("rpm INSTALLTIME {t} {nevra}")).collect()
}

/// The package-moving entries of dpkg.log's last [`LOG_TAIL_BYTES`], oldest first (empty when
/// there is no log or it cannot be read).
pub fn dpkg_log_tail(root: &HostRoot) -> Vec<LogEntry> {
    let Ok((mut file, _)) = root.open(DPKG_LOG) else { return Vec::new() };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(LOG_TAIL_BYTES);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    if file.take(LOG_TAIL_BYTES).read_to_end(&mut buf).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.lines();
    if start > 0 {
        // Started mid-line.
        lines.next();
    }
    lines.filter_map(parse_log_line).collect()
}

/// One dpkg.log line: `DATE TIME install|upgrade|remove|purge PKG:ARCH OLD NEW`, or
/// `DATE TIME status STATE PKG:ARCH VERSION`. Other lines (`startup`, `conffile`, `trigproc`,
/// `configure`) say nothing a grouped event needs.
pub fn parse_log_line(line: &str) -> Option<LogEntry> {
    let mut w = line.split_ascii_whitespace();
    let (date, time, action) = (w.next()?, w.next()?, w.next()?);
    let time = format!("{date} {time}");
    let split = |p: &str| match p.split_once(':') {
        Some((n, a)) => (n.to_string(), Some(a.to_string())),
        None => (p.to_string(), None),
    };
    let version = |v: Option<&str>| v.filter(|v| *v != "<none>").map(str::to_string);
    match action {
        "install" | "upgrade" | "remove" | "purge" => {
            let (package, arch) = split(w.next()?);
            let old = version(w.next());
            let new = version(w.next());
            Some(LogEntry {
                time,
                action: action.to_string(),
                package,
                arch,
                old_version: old,
                new_version: new,
            })
        }
        "status" => {
            let state = w.next()?;
            let (package, arch) = split(w.next()?);
            let new = version(w.next());
            Some(LogEntry {
                time,
                action: format!("status {state}"),
                package,
                arch,
                old_version: None,
                new_version: new,
            })
        }
        _ => None,
    }
}

fn read_proc_locks() -> Option<String> {
    let bytes =
        guestward_core::read_regular_file_capped(Path::new("/proc/locks"), MAX_PROC_LOCKS_BYTES, false)
            .ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Who holds a lock on the file `lock` (a host path under `root`) now: `pid 123 (apt-get)`;
/// `None` when nobody does. Never takes the lock.
pub fn holder(root: &HostRoot, lock: &str) -> Option<String> {
    lock_holder(root, lock, read_proc_locks().as_deref())
}

/// Who holds a lock on `lock` now: `pid 123 (apt-get)`, or `another process` when only the
/// kernel's answer says so. Never takes the lock.
fn lock_holder(root: &HostRoot, lock: &str, proc_locks: Option<&str>) -> Option<String> {
    let (file, _) = root.open(lock).ok()?;
    let meta = file.metadata().ok()?;
    let (dev, ino) = (meta.dev(), meta.ino());
    if let Some(pid) = proc_locks.and_then(|t| holder_in_proc_locks(t, dev, ino)) {
        return Some(describe_pid(pid));
    }
    // /proc/locks may be hidden (a restricted /proc); ask the kernel on our descriptor.
    getlk(&file).map(|pid| if pid > 0 { describe_pid(pid as u32) } else { "another process".to_string() })
}

/// The pid holding a lock on the inode `dev`/`ino`, from `/proc/locks`
/// (`1: POSIX  ADVISORY  WRITE 1234 08:01:131090 0 EOF`; OFD locks show pid -1).
pub fn holder_in_proc_locks(text: &str, dev: u64, ino: u64) -> Option<u32> {
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    for line in text.lines() {
        // `-> ` marks a waiter, not a holder.
        if line.contains("->") {
            continue;
        }
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let Some(id) = fields.iter().position(|f| f.matches(':').count() == 2) else { continue };
        let mut parts = fields[id].split(':');
        let (Some(ma), Some(mi), Some(i)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let same = u64::from_str_radix(ma, 16).ok() == Some(major)
            && u64::from_str_radix(mi, 16).ok() == Some(minor)
            && i.parse::<u64>().ok() == Some(ino);
        if same {
            let pid = id.checked_sub(1).and_then(|p| fields.get(p)).and_then(|p| p.parse::<i64>().ok());
            return Some(pid.and_then(|p| u32::try_from(p).ok()).unwrap_or(0));
        }
    }
    None
}

/// `F_GETLK` for a write lock over the whole file: the kernel answers with the conflicting
/// lock (its holder's pid) or `F_UNLCK`, and takes nothing. A read-only descriptor is enough
/// for the question. `Some(0)`: held, holder unknown (an OFD lock).
fn getlk(file: &std::fs::File) -> Option<i32> {
    use nix::libc;
    // SAFETY-free: nix wraps fcntl; a zeroed flock is a valid request once its fields are set.
    let mut fl = libc::flock {
        l_type: libc::F_WRLCK as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    nix::fcntl::fcntl(file, nix::fcntl::FcntlArg::F_GETLK(&mut fl)).ok()?;
    if fl.l_type == libc::F_UNLCK as i16 { None } else { Some(fl.l_pid.max(0)) }
}

fn describe_pid(pid: u32) -> String {
    if pid == 0 {
        return "another process".to_string();
    }
    match read_comm(pid) {
        Some(comm) => format!("pid {pid} ({comm})"),
        None => format!("pid {pid}"),
    }
}

fn read_comm(pid: u32) -> Option<String> {
    let path = format!("/proc/{pid}/comm");
    let bytes = guestward_core::read_regular_file_capped(Path::new(&path), 64, false).ok()?;
    Some(guestward_core::text::escape_control(String::from_utf8_lossy(&bytes).trim_end()).into_owned())
}

/// Whether the process's real and effective user ids are both 0, from the `Uid:` line of
/// `/proc/<pid>/status` (not the owner of `/proc/<pid>`, which is root for any process that
/// made itself non-dumpable). Unreadable or gone: no.
fn runs_as_root(pid: u32) -> bool {
    let path = format!("/proc/{pid}/status");
    let Ok(bytes) = guestward_core::read_regular_file_capped(Path::new(&path), 16 * 1024, false) else {
        return false;
    };
    String::from_utf8_lossy(&bytes).lines().find_map(|l| l.strip_prefix("Uid:")).is_some_and(|ids| {
        let mut ids = ids.split_whitespace();
        ids.next() == Some("0") && ids.next() == Some("0")
    })
}

/// Running package manager processes (pid, comm, manager) run by root on this root, at most
/// [`MAX_PROCESSES`] looked at.
fn package_processes() -> Vec<(u32, String, PackageManager)> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut out = Vec::new();
    for entry in dir.flatten().take(MAX_PROCESSES) {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Some(comm) = read_comm(pid) else { continue };
        if let Some((_, m)) = PROCESSES.iter().find(|(name, _)| *name == comm)
            && runs_as_root(pid)
            && !read_cmdline(pid).is_some_and(|args| installs_elsewhere(&comm, &args))
        {
            out.push((pid, comm, *m));
        }
    }
    out
}

/// The most of `/proc/<pid>/cmdline` read: the options come first.
const MAX_CMDLINE_BYTES: u64 = 64 * 1024;

fn read_cmdline(pid: u32) -> Option<Vec<String>> {
    let path = format!("/proc/{pid}/cmdline");
    let bytes = guestward_core::read_regular_file_capped(Path::new(&path), MAX_CMDLINE_BYTES, false).ok()?;
    Some(bytes.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect())
}

/// Whether the package manager named `comm`, run with `args` (`argv`, the program first),
/// installs into another root than `/`: `dpkg --root`/`--instdir`, `rpm --root`/`-r`,
/// `dnf`/`yum`/`microdnf --installroot`. An image being built or a chroot being filled on this
/// host is not a transaction of this host: counted, it would hold the live watch's changes
/// for as long as it runs. apt passes such options on to dpkg, whose own process carries them.
/// A database elsewhere (`dpkg --admindir`, `rpm --dbpath`) still installs here, so it counts.
pub fn installs_elsewhere(comm: &str, args: &[String]) -> bool {
    let options: &[&str] = match comm {
        "dpkg" => &["--root", "--instdir"],
        "rpm" => &["--root", "-r"],
        "dnf" | "dnf-3" | "yum" | "microdnf" => &["--installroot"],
        _ => return false,
    };
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        let value = options.iter().find_map(|o| match arg.strip_prefix(o) {
            // `--root DIR`
            Some("") => Some(args.next().map_or("", String::as_str)),
            // `--root=DIR`
            Some(v) => v.strip_prefix('='),
            None => None,
        });
        // `/` (or `//`) is this root; anything else, relative paths included, is not.
        if let Some(dir) = value
            && !dir.is_empty()
            && !dir.trim_end_matches('/').is_empty()
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_package_manager_installing_into_another_root_is_told_apart() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        for (comm, argv) in [
            ("rpm", &["rpm", "--root", "/mnt/image", "-i", "x.rpm"][..]),
            ("rpm", &["rpm", "--root=/mnt/image", "-i", "x.rpm"]),
            ("rpm", &["rpm", "-i", "-r", "image", "x.rpm"]),
            ("dpkg", &["dpkg", "--root=/srv/chroot", "-i", "x.deb"]),
            ("dpkg", &["dpkg", "--instdir", "/srv/chroot", "--unpack", "x.deb"]),
            ("dnf", &["dnf", "--installroot=/mnt/sysimage", "install", "bash"]),
            ("yum", &["yum", "--installroot", "/mnt/sysimage", "install", "bash"]),
        ] {
            assert!(installs_elsewhere(comm, &args(argv)), "{argv:?}");
        }
        for (comm, argv) in [
            ("rpm", &["rpm", "-Uvh", "x.rpm"][..]),
            ("rpm", &["rpm", "--root", "/", "-i", "x.rpm"]),
            ("rpm", &["rpm", "--dbpath", "/tmp/db", "-i", "x.rpm"]),
            ("dpkg", &["dpkg", "--root=//", "-i", "x.deb"]),
            ("dpkg", &["dpkg", "--admindir=/tmp/admin", "-i", "x.deb"]),
            ("dpkg", &["dpkg", "-i", "--", "--root=/x"]),
            ("dpkg", &["dpkg", "--rootless", "-i", "x.deb"]),
            ("dnf", &["dnf", "install", "bash"]),
            // apt hands a root to dpkg, whose own process carries it.
            ("apt-get", &["apt-get", "-o", "DPkg::Options::=--root=/x", "install", "bash"]),
            // An option with its value missing at the end.
            ("rpm", &["rpm", "-i", "--root"]),
            ("rpm", &[]),
        ] {
            assert!(!installs_elsewhere(comm, &args(argv)), "{argv:?}");
        }
    }

    #[test]
    fn log_lines_give_package_and_versions() {
        let e = parse_log_line("2026-12-02 11:06:47 upgrade dbus:amd64 1.14.8-1 1.14.10-1~deb12u1").unwrap();
        assert_eq!(e.package, "dbus");
        assert_eq!(e.arch.as_deref(), Some("amd64"));
        assert_eq!(e.old_version.as_deref(), Some("1.14.8-1"));
        assert_eq!(e.new_version.as_deref(), Some("1.14.10-1~deb12u1"));
        let i = parse_log_line("2026-12-02 11:06:47 install hello:all <none> 1.0").unwrap();
        assert_eq!((i.old_version, i.new_version.as_deref()), (None, Some("1.0")));
        let s = parse_log_line("2026-12-02 11:06:47 status installed man-db:amd64 2.11.2-2").unwrap();
        assert_eq!(s.action, "status installed");
        assert!(parse_log_line("2026-12-02 11:06:47 startup archives unpack").is_none());
        assert!(parse_log_line("garbage").is_none());
    }

    #[test]
    fn proc_locks_lines_are_matched_by_device_and_inode() {
        let dev = nix::sys::stat::makedev(8, 1);
        let text = "1: POSIX  ADVISORY  WRITE 4242 08:01:131090 0 EOF\n\
                    2: OFDLCK ADVISORY  WRITE -1 08:01:777 0 EOF\n\
                    2: -> POSIX  ADVISORY  WRITE 99 08:01:131091 0 EOF\n";
        assert_eq!(holder_in_proc_locks(text, dev, 131090), Some(4242));
        assert_eq!(holder_in_proc_locks(text, dev, 777), Some(0), "OFD lock: held, pid unknown");
        assert_eq!(holder_in_proc_locks(text, dev, 131091), None, "a waiter holds nothing");
        assert_eq!(holder_in_proc_locks(text, nix::sys::stat::makedev(8, 2), 131090), None);
    }
}
