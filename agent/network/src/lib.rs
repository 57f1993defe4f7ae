//! Network exposure for guestward: what `ss -tulpn` shows, plus who owns each socket, how far it
//! can be reached from, which listeners are risky, and what changed since the last scan.
//!
//! Flow of one scan (`scan`, or `collect` for the daemon):
//! 1. List TCP/UDP sockets (and listening Unix stream sockets) through netlink `sock_diag`
//!    (`netlink`), or the `/proc/net` text tables (`procnet`) when netlink is unavailable or
//!    `backend = "procfs"`.
//! 2. Map socket inodes to processes in one pass over `/proc/*/fd` (`owners`).
//! 3. Classify each listener's exposure against the host's interfaces ([`exposure`]).
//!
//! Then, on the finished [`NetworkReport`]: [`mark_public_reachability`] (once cloud metadata
//! is known), [`risky_listener_findings`], [`ListenerState::from_report`] + [`diff`] for change
//! events, and [`render_table`] for people.
//!
//! Sockets and processes only mean something on the running system: `collect` skips the
//! section (with a note) when the `HostRoot` is not live. Library users and tests can still
//! point `ScanContext::proc_root` at a fixture `/proc` tree (procfs backend).
//!
//! Listing is the default feature `collect` (netlink, procfs, nix). Without it the crate is
//! the model ([`NetworkReport`]...), [`Config`], [`classify`], [`mark_public_reachability`],
//! the findings ([`FINDING_IDS`]), change tracking ([`diff`], [`LISTENER_OPENED`]...) and the
//! renderers, for crates that carry or show reports.

// Output goes through `guestward_core::stdio`: the print macros panic when a write fails.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]
#![warn(missing_docs)]

mod changes;
mod config;
mod error;
mod exposure;
mod findings;
mod model;
#[cfg(feature = "collect")]
mod netlink;
#[cfg(feature = "collect")]
mod owners;
#[cfg(feature = "collect")]
mod procnet;
#[cfg(feature = "collect")]
mod raw;
mod render;

pub use changes::{
    LISTENER_CLOSED, LISTENER_OPENED, LISTENER_OWNER_CHANGED, ListenerChanges, ListenerKey, ListenerRecord,
    ListenerState, ListenerTracker, OwnerChange, diff,
};
pub use config::{BackendChoice, Config, RiskyPort};
pub use error::NetworkError;
#[cfg(feature = "collect")]
pub use exposure::host_interfaces;
pub use exposure::{
    PublicAddress, canonical, classify, mark_public_reachability, reachable_public_addresses,
};
pub use findings::{FINDING_IDS, RISKY_SERVICE_ALL_INTERFACES, builtin_risky_ports, risky_listener_findings};
pub use model::{
    Backend, Exposure, ExposureScope, Family, Interface, NetworkReport, OwnerScanStats, OwnerUnknown,
    OwnerUnknownReason, ProcessInfo, Protocol, Socket, SocketOwner, SocketState, UnixListener,
};
#[cfg(feature = "collect")]
pub use owners::MAX_CMDLINE_BYTES;
pub use render::{endpoint, render_summary, render_table, table_string};

/// The readers of kernel records and `/proc` text, for the fuzz target `network_records`
/// (`fuzz/`): not an API.
#[cfg(feature = "collect")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::netlink::fuzz_batch as netlink_batch;

    /// Any bytes as the text the owner walk reads: a descriptor link (`socket:[N]`), a
    /// `/proc/<pid>/cgroup` file and an `/etc/passwd` file.
    pub fn proc_text(bytes: &[u8]) {
        let _ = crate::owners::socket_inode(bytes);
        let text = String::from_utf8_lossy(bytes);
        let _ = crate::owners::systemd_unit(&text);
        let _ = crate::owners::parse_passwd(&text);
    }
}

use guestward_core::Finding;
#[cfg(feature = "collect")]
use guestward_core::{HostRoot, Problem, Section};
#[cfg(feature = "collect")]
use owners::OwnerIndex;
#[cfg(feature = "collect")]
use raw::{RawInet, RawUnix};
#[cfg(feature = "collect")]
use std::collections::{BTreeMap, HashMap, HashSet};
#[cfg(feature = "collect")]
use std::path::PathBuf;
#[cfg(feature = "collect")]
use std::time::Instant;

#[cfg(feature = "collect")]
/// `/etc/passwd` larger than this is not read (user names are then omitted).
const MAX_PASSWD_BYTES: u64 = 8 * 1024 * 1024;
#[cfg(feature = "collect")]
/// Unix listeners kept (a host has tens; a bound keeps a hostile one from exhausting memory).
const MAX_UNIX_LISTENERS: usize = 65_536;

#[cfg(feature = "collect")]
/// Where a scan reads from.
#[derive(Debug, Clone)]
pub struct ScanContext {
    /// The `/proc` directory (`/proc` on the live system; a fixture tree in tests).
    pub proc_root: PathBuf,
    /// Whether `proc_root` describes the running kernel, so netlink and the interface list
    /// describe the same sockets. False for fixture trees: the procfs backend is then used and
    /// interfaces are not listed.
    pub live_kernel: bool,
    /// uid -> user name.
    pub users: HashMap<u32, String>,
}

#[cfg(feature = "collect")]
impl ScanContext {
    /// The running system, with user names from `root`'s `/etc/passwd`.
    pub fn live(root: &HostRoot) -> Self {
        let users = root
            .read_string_capped("/etc/passwd", MAX_PASSWD_BYTES)
            .map(|t| owners::parse_passwd(&t))
            .unwrap_or_default();
        Self { proc_root: PathBuf::from("/proc"), live_kernel: true, users }
    }

    /// A `/proc` tree that is not the running kernel's (tests, fixtures).
    pub fn fixture(proc_root: impl Into<PathBuf>) -> Self {
        Self { proc_root: proc_root.into(), live_kernel: false, users: HashMap::new() }
    }
}

#[cfg(feature = "collect")]
/// A finished scan: the report plus what could not be read.
#[derive(Debug, Clone)]
pub struct ScanOutput {
    /// The data.
    pub report: NetworkReport,
    /// Inputs that could not be read or parsed (one per malformed line, unreadable table...).
    pub problems: Vec<Problem>,
}

#[cfg(feature = "collect")]
struct RawScan {
    backend: Backend,
    fallback_reason: Option<String>,
    inet: Vec<RawInet>,
    unix: Vec<RawUnix>,
    truncated: bool,
    problems: Vec<Problem>,
}

#[cfg(feature = "collect")]
fn list_netlink(config: &Config, cap: usize) -> Result<RawScan, NetworkError> {
    let mut inet = Vec::new();
    let truncated = netlink::inet_sockets(cap, &mut inet)?;
    let mut unix = Vec::new();
    let mut problems = Vec::new();
    if config.include_unix_listeners {
        // Unix listing failing (e.g. unix_diag not loaded) must not discard the inet data.
        if let Err(e) = netlink::unix_listeners(MAX_UNIX_LISTENERS, &mut unix) {
            problems.push(e.to_problem());
        }
    }
    Ok(RawScan { backend: Backend::Netlink, fallback_reason: None, inet, unix, truncated, problems })
}

#[cfg(feature = "collect")]
fn list_procfs(config: &Config, ctx: &ScanContext, cap: usize) -> Result<RawScan, NetworkError> {
    let net = ctx.proc_root.join("net");
    let mut inet = Vec::new();
    let mut errors = Vec::new();
    let mut truncated = false;
    let mut any_table = false;
    for (file, protocol, family) in [
        ("tcp", Protocol::Tcp, Family::Ipv4),
        ("tcp6", Protocol::Tcp, Family::Ipv6),
        ("udp", Protocol::Udp, Family::Ipv4),
        ("udp6", Protocol::Udp, Family::Ipv6),
    ] {
        if truncated {
            break;
        }
        match procnet::read_inet_table(&net.join(file), protocol, family, cap, &mut inet, &mut errors) {
            Ok(full) => {
                any_table = true;
                truncated = full;
            }
            // IPv6 disabled at boot removes tcp6/udp6: not a problem.
            Err(NetworkError::Read { source, .. })
                if family == Family::Ipv6 && source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errors.push(e),
        }
    }
    if !any_table {
        return Err(errors.into_iter().next().unwrap_or_else(|| NetworkError::Read {
            path: net,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no socket tables"),
        }));
    }
    let mut unix = Vec::new();
    if config.include_unix_listeners {
        match procnet::read_unix_listeners(&net.join("unix"), MAX_UNIX_LISTENERS, &mut unix, &mut errors) {
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
    }
    Ok(RawScan {
        backend: Backend::Procfs,
        fallback_reason: None,
        inet,
        unix,
        truncated,
        problems: errors.iter().map(NetworkError::to_problem).collect(),
    })
}

#[cfg(feature = "collect")]
fn list(config: &Config, ctx: &ScanContext) -> Result<RawScan, NetworkError> {
    let cap = usize::try_from(config.max_sockets).unwrap_or(usize::MAX);
    match config.backend {
        BackendChoice::Netlink => list_netlink(config, cap),
        BackendChoice::Procfs => list_procfs(config, ctx, cap),
        BackendChoice::Auto if !ctx.live_kernel => list_procfs(config, ctx, cap),
        BackendChoice::Auto => match list_netlink(config, cap) {
            Ok(raw) => Ok(raw),
            Err(e) => {
                let mut raw = list_procfs(config, ctx, cap)?;
                raw.fallback_reason = Some(e.to_string());
                Ok(raw)
            }
        },
    }
}

#[cfg(feature = "collect")]
fn is_listening(r: &RawInet) -> bool {
    match r.protocol {
        Protocol::Tcp => r.state == 10,
        // An unconnected UDP socket (TCP_CLOSE) is what `ss -l` shows as UNCONN.
        Protocol::Udp => r.state == 7,
    }
}

#[cfg(feature = "collect")]
fn unknown(inode: u64, index: Result<&OwnerIndex, &str>, resolve: bool) -> OwnerUnknown {
    let (reason, detail) = if !resolve {
        (OwnerUnknownReason::NotResolved, "owner lookup is off (resolve_owners = false)".to_string())
    } else if inode == 0 {
        (
            OwnerUnknownReason::NoInode,
            "the socket has no inode: no process holds it (e.g. TIME_WAIT)".to_string(),
        )
    } else {
        match index {
            Err(why) => {
                (OwnerUnknownReason::NotResolved, format!("the process table could not be read: {why}"))
            }
            Ok(index) if index.vanished.contains(&inode) => (
                OwnerUnknownReason::Vanished,
                "the owning process exited while it was being inspected".to_string(),
            ),
            Ok(index) if index.stats.processes_denied > 0 => (
                OwnerUnknownReason::PermissionDenied,
                format!(
                    "no inspected process holds it; {} could not be inspected (run as root)",
                    guestward_core::text::counted(index.stats.processes_denied, "process", "processes")
                ),
            ),
            Ok(_) => (
                OwnerUnknownReason::NotFound,
                "no process holds it now (closed meanwhile, another pid namespace, or the kernel)"
                    .to_string(),
            ),
        }
    };
    OwnerUnknown { reason, detail }
}

#[cfg(feature = "collect")]
/// Lists sockets, resolves owners and classifies exposure. Fails only when no socket source at
/// all could be read; everything else ends up in [`ScanOutput::problems`].
pub fn scan(config: &Config, ctx: &ScanContext) -> Result<ScanOutput, NetworkError> {
    // The descriptor walk does not depend on the socket list, so both run at once.
    let (raw, walk) = std::thread::scope(|scope| {
        let walk = config.resolve_owners.then(|| {
            guestward_core::threads::spawn_or_run(scope, "gw-proc-walk", || {
                owners::walk(&ctx.proc_root, ctx.live_kernel)
            })
        });
        let raw = list(config, ctx);
        let walk = walk.map(|w| {
            w.join().unwrap_or_else(|_| Err(std::io::Error::other("the process walk crashed; this is a bug")))
        });
        (raw, walk)
    });
    let raw = raw?;
    let mut problems = raw.problems;

    let (listeners, connections): (Vec<RawInet>, Vec<RawInet>) = raw.inet.into_iter().partition(is_listening);
    let connections = if config.include_connections { connections } else { Vec::new() };

    let index: Result<OwnerIndex, String> = match walk {
        Some(Ok(walk)) => {
            let mut wanted: HashSet<u64, owners::InodeHash> = HashSet::default();
            wanted.reserve(listeners.len() + connections.len() + raw.unix.len());
            wanted.extend(
                listeners
                    .iter()
                    .chain(&connections)
                    .map(|r| r.inode)
                    .chain(raw.unix.iter().map(|u| u.inode))
                    .filter(|i| *i != 0),
            );
            Ok(owners::resolve(&ctx.proc_root, walk, &wanted, &ctx.users))
        }
        Some(Err(e)) => {
            problems.push(
                Problem::new(
                    if e.kind() == std::io::ErrorKind::PermissionDenied { "permission_denied" } else { "io" },
                    format!("{}: cannot list processes: {e}", ctx.proc_root.display()),
                )
                .with_path(ctx.proc_root.display().to_string()),
            );
            Err(e.to_string())
        }
        None => Err("owner lookup is off".to_string()),
    };
    if let Ok(index) = &index
        && index.stats.processes_denied > 0
    {
        problems.push(Problem::new(
            "permission_denied",
            format!(
                "{} could not be inspected, so some socket owners are unknown; run the agent as root",
                guestward_core::text::counted(index.stats.processes_denied, "process", "processes")
            ),
        ));
    }

    let (interfaces, if_names) = if ctx.live_kernel {
        let interfaces = match exposure::host_interfaces() {
            Ok(list) => list,
            Err(e) => {
                problems.push(Problem::new("io", format!("cannot list network interfaces: {e}")));
                Vec::new()
            }
        };
        (interfaces, exposure::interface_names())
    } else {
        (Vec::new(), BTreeMap::new())
    };

    let index_ref = index.as_ref().map_err(String::as_str);
    let owners_of = |inode: u64| -> (Vec<SocketOwner>, Option<OwnerUnknown>) {
        let pids = index_ref.ok().filter(|_| inode != 0).and_then(|i| i.holders(inode));
        match pids {
            Some(pids) if !pids.is_empty() => {
                let owners = pids
                    .iter()
                    .map(|pid| SocketOwner {
                        pid: *pid,
                        name: index_ref
                            .ok()
                            .and_then(|i| i.processes.get(pid))
                            .map(|p| p.name.clone())
                            .unwrap_or_default(),
                    })
                    .collect();
                (owners, None)
            }
            _ => (Vec::new(), Some(unknown(inode, index_ref, config.resolve_owners))),
        }
    };
    let build = |r: RawInet, listening: bool| -> Socket {
        let bound_device = (r.interface_index != 0).then(|| {
            if_names.get(&r.interface_index).cloned().unwrap_or_else(|| format!("if{}", r.interface_index))
        });
        let exposure = listening.then(|| {
            let mut e = classify(r.local.ip(), bound_device.as_deref(), &interfaces);
            if r.family == Family::Ipv6 && r.local.ip().is_unspecified() {
                e.dual_stack = r.v6_only.map(|v6only| !v6only);
            }
            e
        });
        let (owners, owner_unknown) = owners_of(r.inode);
        Socket {
            protocol: r.protocol,
            family: r.family,
            local_address: r.local.ip(),
            local_port: r.local.port(),
            remote_address: r.remote.ip(),
            remote_port: r.remote.port(),
            state: SocketState::from_kernel(r.state),
            inode: r.inode,
            uid: r.uid,
            bound_device,
            listening,
            exposure,
            owners,
            owner_unknown,
        }
    };
    let mut listeners: Vec<Socket> = listeners.into_iter().map(|r| build(r, true)).collect();
    listeners.sort_by(|a, b| {
        (a.protocol, a.local_port, a.local_address, a.inode).cmp(&(
            b.protocol,
            b.local_port,
            b.local_address,
            b.inode,
        ))
    });
    let connections: Vec<Socket> = connections.into_iter().map(|r| build(r, false)).collect();
    let mut unix_listeners: Vec<UnixListener> = raw
        .unix
        .into_iter()
        .map(|u| {
            let (owners, owner_unknown) = owners_of(u.inode);
            UnixListener { path: u.path, inode: u.inode, owners, owner_unknown }
        })
        .collect();
    unix_listeners.sort_by(|a, b| (&a.path, a.inode).cmp(&(&b.path, b.inode)));

    let (processes, owner_scan) = match index {
        Ok(i) => (i.processes.into_values().collect(), i.stats),
        Err(_) => (Vec::new(), OwnerScanStats::default()),
    };
    let report = NetworkReport {
        backend: raw.backend,
        fallback_reason: raw.fallback_reason,
        listeners,
        connections,
        unix_listeners,
        processes,
        interfaces,
        owner_scan,
        truncated: raw.truncated,
    };
    if report.truncated {
        problems.push(Problem::new(
            "truncated",
            format!(
                "more than {} sockets; the rest were not reported (raise [network] max_sockets)",
                config.max_sockets
            ),
        ));
    }
    Ok(ScanOutput { report, problems })
}

#[cfg(feature = "collect")]
/// The daemon's entry point: the `network` section for `root`. Live-only: skipped with a note
/// when `root` is not the running system, or when disabled in config.
pub fn collect(config: &Config, root: &HostRoot) -> Section<NetworkReport> {
    if !config.enabled {
        return Section::skipped("network collection is disabled ([network] enabled = false)");
    }
    if !root.is_live() {
        return Section::skipped(
            "network sockets and processes are live-only: not collected from an offline root (--root)",
        );
    }
    let started = Instant::now();
    match scan(config, &ScanContext::live(root)) {
        Ok(out) => Section::from_parts(Some(out.report), out.problems, started),
        Err(e) => Section::failed(e.to_problem(), started),
    }
}

/// Findings for a finished report (risky services on all interfaces; see
/// [`risky_listener_findings`]).
pub fn findings(report: &NetworkReport, config: &Config) -> Vec<Finding> {
    risky_listener_findings(report, &config.risky_ports)
}
