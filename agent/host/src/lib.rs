//! Host facts: who this machine is and what it runs.
//!
//! File-based facts (OS release, hostname, machine-id) are read through [`HostRoot`](guestward_core::HostRoot), so they
//! work on a mounted snapshot; live facts (kernel, CPU, memory, uptime) come from the running
//! kernel via `sysinfo` and are left out when scanning a root other than `/`.
//!
//! The reading is the default feature `collect`; without it this crate is only the model
//! ([`HostFacts`]) and [`render_summary`], for crates that carry or show reports.

// Output goes through `guestward_core::stdio`: the print macros panic when a write fails.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

#[cfg(feature = "collect")]
use guestward_core::{HostRoot, Problem, Section};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
#[cfg(feature = "collect")]
use std::str::FromStr;
#[cfg(feature = "collect")]
use std::time::Instant;

/// Small text files (os-release, hostname, machine-id) are never legitimately large.
#[cfg(feature = "collect")]
const SMALL_FILE_LIMIT: u64 = 64 * 1024;

/// What the host is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HostFacts {
    /// The host name (live: the kernel's; under `--root`: `/etc/hostname`).
    pub hostname: Option<String>,
    /// The distribution, from os-release.
    pub os: Option<OsInfo>,
    /// The systemd machine id (`/etc/machine-id`), 32 lowercase hex digits.
    pub machine_id: Option<String>,
    /// Facts that only exist on a running system; absent under `--root`.
    pub live: Option<LiveFacts>,
}

/// The distribution as os-release(5) describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OsInfo {
    /// `ID`, e.g. `debian`, `amzn`, `rhel`.
    pub id: String,
    /// `ID_LIKE`, e.g. `["rhel", "fedora"]`.
    pub id_like: Vec<String>,
    /// `VERSION_ID`, e.g. `12`, `2023`.
    pub version_id: Option<String>,
    /// `VERSION_CODENAME`, e.g. `bookworm`.
    pub version_codename: Option<String>,
    /// `PRETTY_NAME`, e.g. `Debian GNU/Linux 12 (bookworm)`.
    pub pretty_name: String,
}

/// Facts read from the running kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LiveFacts {
    /// Kernel release (`uname -r`).
    pub kernel_release: Option<String>,
    /// CPU architecture, e.g. `x86_64`, `aarch64`.
    pub arch: String,
    /// Logical CPUs.
    pub cpu_count: usize,
    /// CPU model name of the first CPU.
    pub cpu_model: Option<String>,
    /// Physical memory in bytes.
    pub memory_total_bytes: u64,
    /// When the system booted.
    pub boot_time: Option<guestward_core::Timestamp>,
    /// Seconds since boot.
    pub uptime_secs: u64,
}

#[cfg(feature = "collect")]
/// Collects host facts. Never fails as a whole: each unreadable source becomes a [`Problem`].
pub fn collect(root: &HostRoot) -> Section<HostFacts> {
    let started = Instant::now();
    let mut problems = Vec::new();

    let os = os_release(root, &mut problems);
    let machine_id = match read_machine_id(root) {
        Ok(id) => id,
        Err(p) => {
            problems.push(p);
            None
        }
    };
    let (hostname, live) = if root.is_live() {
        let live = match live_facts() {
            Ok(l) => Some(l),
            Err(e) => {
                problems.push(Problem::new("live_facts", format!("cannot read kernel facts: {e}")));
                None
            }
        };
        (sysinfo::System::host_name().ok(), live)
    } else {
        let hostname = match root.read_string_capped("/etc/hostname", SMALL_FILE_LIMIT) {
            Ok(s) => s.lines().next().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string),
            Err(e) if e.code() == "not_found" => None,
            Err(e) => {
                problems.push(e.to_problem());
                None
            }
        };
        (hostname, None)
    };

    let facts = HostFacts { hostname, os, machine_id, live };
    Section::from_parts(Some(facts), problems, started)
}

#[cfg(feature = "collect")]
/// Reads `/etc/os-release`, falling back to `/usr/lib/os-release` as os-release(5) says.
pub fn read_os_release(root: &HostRoot) -> Result<OsInfo, Problem> {
    let mut problems = Vec::new();
    match os_release(root, &mut problems) {
        Some(os) => Ok(os),
        None => Err(problems
            .into_iter()
            .next()
            .unwrap_or_else(|| Problem::new("not_found", "no os-release file"))),
    }
}

#[cfg(feature = "collect")]
/// Like [`read_os_release`], but a first candidate that exists and cannot be read (a FIFO, a
/// device node, no permission) is reported in `problems` even when the fallback is read: a
/// FIFO planted in place of `/etc/os-release` is worth a word, and must not cost the OS facts.
fn os_release(root: &HostRoot, problems: &mut Vec<Problem>) -> Option<OsInfo> {
    let mut missing = None;
    for candidate in ["/etc/os-release", "/usr/lib/os-release"] {
        match root.read_string_capped(candidate, SMALL_FILE_LIMIT) {
            Ok(text) => {
                return match parse_os_release(&text) {
                    Ok(os) => Some(os),
                    Err(msg) => {
                        problems.push(Problem::new("malformed", msg).with_path(root.display(candidate)));
                        None
                    }
                };
            }
            Err(e) if e.code() == "not_found" => {
                missing.get_or_insert(e);
            }
            Err(e) => problems.push(e.to_problem()),
        }
    }
    if problems.is_empty() {
        problems.push(match missing {
            Some(e) => e.to_problem(),
            None => Problem::new("not_found", "no os-release file"),
        });
    }
    None
}

#[cfg(feature = "collect")]
/// Parses os-release text (shell-style quoting handled by the `etc-os-release` crate).
pub fn parse_os_release(text: &str) -> Result<OsInfo, String> {
    let parsed = etc_os_release::OsRelease::from_str(text).map_err(|e| e.to_string())?;
    Ok(OsInfo {
        id: parsed.id().to_string(),
        id_like: parsed.id_like().map(|it| it.map(str::to_string).collect()).unwrap_or_default(),
        version_id: parsed.version_id().map(str::to_string),
        version_codename: parsed.version_codename().map(str::to_string),
        pretty_name: parsed.pretty_name().to_string(),
    })
}

#[cfg(feature = "collect")]
/// Reads `/etc/machine-id`. An empty or `uninitialized` file (a golden image before first
/// boot) is `None`, not an error; anything that is not 32 hex digits is malformed.
pub fn read_machine_id(root: &HostRoot) -> Result<Option<String>, Problem> {
    let path = "/etc/machine-id";
    let text = match root.read_string_capped(path, SMALL_FILE_LIMIT) {
        Ok(t) => t,
        Err(e) if e.code() == "not_found" => return Ok(None),
        Err(e) => return Err(e.to_problem()),
    };
    let id = text.trim();
    if id.is_empty() || id == "uninitialized" {
        return Ok(None);
    }
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(Some(id.to_ascii_lowercase()))
    } else {
        Err(Problem::new("malformed", "machine-id is not 32 hexadecimal digits")
            .with_path(root.display(path)))
    }
}

#[cfg(feature = "collect")]
fn live_facts() -> Result<LiveFacts, sysinfo::Error> {
    use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};
    let sys = System::new_with_specifics(
        RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing())
            .with_memory(MemoryRefreshKind::nothing().with_ram()),
    )?;
    let cpus = sys.cpus();
    Ok(LiveFacts {
        kernel_release: System::kernel_version().ok(),
        arch: System::cpu_arch(),
        cpu_count: cpus.len(),
        cpu_model: cpus.first().map(|c| c.brand().trim().to_string()).filter(|s| !s.is_empty()),
        memory_total_bytes: sys.total_memory(),
        boot_time: System::boot_time()
            .ok()
            .and_then(|secs| i64::try_from(secs).ok())
            .and_then(guestward_core::Timestamp::from_unix_secs),
        uptime_secs: System::uptime().unwrap_or(0),
    })
}

/// Writes a short human summary of the host facts.
///
/// The hostname, `PRETTY_NAME` and machine id come from files in the scanned tree: they are
/// shown with control characters escaped, so a crafted value cannot drive the terminal.
pub fn render_summary(facts: &HostFacts, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    use guestward_core::text::escape_control;
    use std::io::Write as _;
    let out = &mut guestward_core::text::TerminalSafe::new(out);
    let os = facts.os.as_ref().map_or("unknown OS", |o| o.pretty_name.as_str());
    writeln!(
        out,
        "host      {} ({})",
        escape_control(facts.hostname.as_deref().unwrap_or("?")),
        escape_control(os)
    )?;
    if let Some(live) = &facts.live {
        writeln!(
            out,
            "kernel    {} {}, {} CPU ({}), {} MiB RAM, up {}h",
            live.kernel_release.as_deref().unwrap_or("?"),
            live.arch,
            live.cpu_count,
            live.cpu_model.as_deref().unwrap_or("?"),
            live.memory_total_bytes / (1024 * 1024),
            live.uptime_secs / 3600
        )?;
    }
    if let Some(id) = &facts.machine_id {
        writeln!(out, "machine   {}", escape_control(id))?;
    }
    Ok(())
}

// Every test here reads a tree through `collect`.
#[cfg(all(test, feature = "collect"))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use guestward_core::testing::within;

    /// The `scanned_text` fuzz corpus through the os-release parser, as the fuzz target calls
    /// it: a change that brings a panic or a hang back fails here.
    #[test]
    fn fuzz_corpus_replays_as_os_release() {
        let mut parsed = 0;
        for f in guestward_core::testing::fuzz_inputs("scanned_text") {
            let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
            parsed += usize::from(parse_os_release(&text).is_ok());
        }
        assert!(parsed > 0, "no input of the corpus is an os-release");
    }

    fn root_with(files: &[(&str, &str)]) -> (tempfile::TempDir, HostRoot) {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = dir.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let root = HostRoot::new(dir.path()).unwrap();
        (dir, root)
    }

    #[test]
    fn os_release_falls_back_to_usr_lib_and_unquotes() {
        let (_d, root) = root_with(&[(
            "/usr/lib/os-release",
            "NAME=\"Amazon Linux\"\nID=\"amzn\"\nID_LIKE=\"fedora\"\nVERSION_ID=\"2023\"\nPRETTY_NAME=\"Amazon Linux 2023.6.20241010\"\n",
        )]);
        let os = read_os_release(&root).unwrap();
        assert_eq!(os.id, "amzn");
        assert_eq!(os.id_like, vec!["fedora"]);
        assert_eq!(os.version_id.as_deref(), Some("2023"));
        assert_eq!(os.pretty_name, "Amazon Linux 2023.6.20241010");
    }

    #[test]
    fn machine_id_states() {
        let (_d, root) = root_with(&[("/etc/machine-id", "uninitialized\n")]);
        assert_eq!(read_machine_id(&root).unwrap(), None);
        let (_d, root) = root_with(&[("/etc/machine-id", "0123456789ABCDEF0123456789abcdef\n")]);
        assert_eq!(read_machine_id(&root).unwrap().as_deref(), Some("0123456789abcdef0123456789abcdef"));
        let (_d, root) = root_with(&[("/etc/machine-id", "nonsense\n")]);
        let p = read_machine_id(&root).unwrap_err();
        assert_eq!(p.code, "malformed");
        assert!(p.path.unwrap().ends_with("/etc/machine-id"));
    }

    #[test]
    fn offline_root_has_no_live_facts_and_reports_missing_os_release() {
        let (_d, root) = root_with(&[("/etc/hostname", "snap-host\n")]);
        let section = collect(&root);
        let facts = section.data.unwrap();
        assert_eq!(facts.hostname.as_deref(), Some("snap-host"));
        assert!(facts.live.is_none());
        assert_eq!(section.problems.len(), 1, "{:?}", section.problems);
        assert_eq!(section.problems[0].code, "not_found");
    }

    #[test]
    fn fifo_in_place_of_os_release_machine_id_and_hostname_is_refused_and_the_rest_collected() {
        let (dir, root) = root_with(&[("/usr/lib/os-release", "ID=debian\nPRETTY_NAME=\"Debian 12\"\n")]);
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        for name in ["os-release", "machine-id", "hostname"] {
            nix::unistd::mkfifo(
                &dir.path().join("etc").join(name),
                nix::sys::stat::Mode::from_bits_truncate(0o644),
            )
            .unwrap();
        }
        let section =
            within(std::time::Duration::from_secs(10), "collecting host facts with FIFOs", move || {
                collect(&root)
            });
        let facts = section.data.as_ref().unwrap();
        assert_eq!(facts.os.as_ref().unwrap().id, "debian", "the fallback os-release is still read");
        assert_eq!(facts.machine_id, None);
        assert_eq!(facts.hostname, None);
        assert_eq!(section.status, guestward_core::SectionStatus::Degraded);
        let mut named: Vec<&str> = Vec::new();
        for p in &section.problems {
            assert_eq!(p.code, "not_regular_file", "{p}");
            assert!(p.message.contains("fifo"), "{p}");
            named.extend(
                ["os-release", "machine-id", "hostname"].into_iter().filter(|n| p.message.contains(n)),
            );
        }
        named.sort_unstable();
        assert_eq!(named, ["hostname", "machine-id", "os-release"], "{:?}", section.problems);
    }

    #[test]
    fn char_device_in_place_of_machine_id_is_refused_without_reading() {
        if !nix::unistd::geteuid().is_root() {
            guestward_core::testing::skip_or_fail(
                "char_device_in_place_of_machine_id_is_refused_without_reading",
                "creating a device node needs root",
            );
            return;
        }
        let (dir, root) = root_with(&[("/etc/os-release", "ID=debian\n"), ("/etc/hostname", "snap\n")]);
        // /dev/zero's numbers: read, it would fill the 64 KiB cap and then some, for ever.
        nix::sys::stat::mknod(
            &dir.path().join("etc/machine-id"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o644),
            nix::sys::stat::makedev(1, 5),
        )
        .unwrap();
        let section = within(
            std::time::Duration::from_secs(10),
            "collecting host facts with a device node",
            move || collect(&root),
        );
        let facts = section.data.as_ref().unwrap();
        assert_eq!(facts.hostname.as_deref(), Some("snap"));
        assert_eq!(facts.os.as_ref().unwrap().id, "debian");
        assert_eq!(section.problems.len(), 1, "{:?}", section.problems);
        let p = &section.problems[0];
        assert_eq!(p.code, "not_regular_file");
        assert!(p.message.contains("machine-id") && p.message.contains("character device"), "{p}");
    }

    #[test]
    fn huge_malformed_os_release_line_gives_a_bounded_problem() {
        // Under the 64 KiB cap, but a line long enough to swamp a report if quoted whole.
        let line = format!("PRETTY_NAME=\"{}", "z".repeat(60 * 1024));
        let (_d, root) = root_with(&[("/etc/os-release", &format!("ID=debian\n{line}\n"))]);
        let section = collect(&root);
        for p in &section.problems {
            assert!(
                p.message.len() <= 2 * guestward_core::text::MAX_MESSAGE_CHARS,
                "{} bytes",
                p.message.len()
            );
        }
    }

    #[test]
    fn live_host_facts_match_the_kernel() {
        let section = collect(&HostRoot::live());
        let live = section.data.unwrap().live.unwrap();
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_eq!(live.kernel_release.as_deref(), Some(release.trim()));
        assert_eq!(live.cpu_count, std::thread::available_parallelism().unwrap().get());
        assert!(live.memory_total_bytes > 0);
    }
}
