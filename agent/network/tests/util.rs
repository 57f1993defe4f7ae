//! Helpers shared by the live tests.

use guestward_core::HostRoot;
use guestward_network::{BackendChoice, Config, NetworkReport, ScanContext, Socket, scan};
use std::os::fd::AsFd;
use std::sync::{Mutex, MutexGuard};

/// Live tests open and close sockets and compare whole snapshots; running them one at a time
/// keeps one test's sockets from appearing in another's snapshot mid-comparison.
static LIVE: Mutex<()> = Mutex::new(());

pub fn live_lock() -> MutexGuard<'static, ()> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn live_scan(backend: BackendChoice) -> NetworkReport {
    let config = Config { backend, ..Config::default() };
    let out = scan(&config, &ScanContext::live(&HostRoot::live())).unwrap();
    assert_eq!(out.report.fallback_reason, None, "backend {backend:?} fell back");
    out.report
}

/// The inode of a socket we hold (what `/proc/<pid>/fd` links to).
pub fn inode_of(fd: impl AsFd) -> u64 {
    nix::sys::stat::fstat(fd).unwrap().st_ino
}

pub fn find(report: &NetworkReport, inode: u64) -> Option<&Socket> {
    report.listeners.iter().chain(&report.connections).find(|s| s.inode == inode)
}

pub fn ipv6_available() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}
