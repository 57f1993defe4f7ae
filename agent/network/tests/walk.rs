//! The `/proc/*/fd` walk against real processes: many descriptors in one process, and
//! processes that exit while the walk runs.

use crate::util::{find, inode_of, live_lock, live_scan};
use guestward_core::testing::within;
use guestward_network::BackendChoice;
use std::collections::BTreeSet;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The soft `RLIMIT_NOFILE` of this process.
fn open_files_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    line.split_whitespace().nth(3).and_then(|v| v.parse().ok()).unwrap_or(usize::MAX)
}

#[test]
fn every_socket_of_a_process_with_thousands_of_descriptors_is_found_with_its_owner() {
    within(Duration::from_secs(120), "thousands of sockets", || {
        let _guard = live_lock();
        // More than one getdents64 batch (about 1,300 entries), within the open-files limit.
        let soft = open_files_limit();
        let count = soft.saturating_sub(256).min(3000);
        assert!(count > 1500, "open-files limit {soft} too low for this test");
        let sockets: Vec<UdpSocket> = (0..count).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        let me = std::process::id();
        let report = live_scan(BackendChoice::Netlink);
        for s in &sockets {
            let inode = inode_of(s);
            let found = find(&report, inode).unwrap_or_else(|| panic!("socket {inode} not listed"));
            let pids: Vec<u32> = found.owners.iter().map(|o| o.pid).collect();
            assert_eq!(pids, vec![me], "owners of {found:?}");
            assert_eq!(found.owner_unknown, None);
        }
        assert!(report.owner_scan.socket_fds_seen >= count as u64, "{:?}", report.owner_scan);
    });
}

#[test]
fn owners_stay_exact_while_processes_holding_the_socket_exit_mid_walk() {
    within(Duration::from_secs(120), "processes exiting mid-walk", || {
        let _guard = live_lock();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let inode = inode_of(&listener);
        let me = std::process::id();
        // Children inherit a copy of the listener and exit at once, over and over, while we
        // scan: some are listed in /proc when the walk starts and gone before their descriptors
        // or details are read.
        let children: Arc<Mutex<BTreeSet<u32>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let churn = {
            let (children, stop) = (Arc::clone(&children), Arc::clone(&stop));
            let copy = listener.try_clone().unwrap();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let fd: OwnedFd = copy.try_clone().unwrap().into();
                    let mut child = Command::new("true").stdin(Stdio::from(fd)).spawn().unwrap();
                    children.lock().unwrap().insert(child.id());
                    child.wait().unwrap();
                }
            })
        };
        let mut vanished = 0;
        let mut seen: Vec<Vec<u32>> = Vec::new();
        for _ in 0..20 {
            let report = live_scan(BackendChoice::Netlink);
            vanished += report.owner_scan.processes_vanished;
            let s = find(&report, inode).expect("the listener is listed");
            // We hold it throughout: always found, always with us among its owners.
            assert_eq!(s.owner_unknown, None, "{s:?}");
            let pids: Vec<u32> = s.owners.iter().map(|o| o.pid).collect();
            assert!(pids.contains(&me), "{pids:?}");
            // Owners are listed once each, ascending; any other owner must be one of the
            // children (caught alive), never a stranger that reused an exited child's pid.
            assert!(pids.windows(2).all(|w| w[0] < w[1]), "{pids:?}");
            seen.push(pids);
        }
        stop.store(true, Ordering::Relaxed);
        churn.join().unwrap();
        // Checked once the churn has stopped, so every child's pid has been recorded.
        let known = children.lock().unwrap().clone();
        assert!(known.len() > 1, "the children did not run");
        for pid in seen.iter().flatten().filter(|p| **p != me) {
            assert!(known.contains(pid), "owner {pid} is not one of the children");
        }
        eprintln!("processes counted as vanished over 20 scans: {vanished}");
    });
}

/// Several hundred socket descriptors (so the walk probes numbers first), then one listening
/// socket held only on a descriptor far above them: the sockets, the far descriptor and its
/// inode.
fn dense_and_far() -> (Vec<UdpSocket>, OwnedFd, u64) {
    let limit = open_files_limit();
    assert!(limit > 1200, "open-files limit {limit} too low for this test");
    let dense: Vec<UdpSocket> = (0..400).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    let far_socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let far_number = i32::try_from(limit.min(1 << 20) - 2).unwrap();
    let far: OwnedFd = rustix::io::fcntl_dupfd_cloexec(&far_socket, far_number).unwrap();
    assert!(std::os::fd::AsRawFd::as_raw_fd(&far) >= far_number);
    let inode = inode_of(&far);
    (dense, far, inode) // `far_socket` dropped: only the far descriptor holds it now
}

#[test]
fn a_socket_on_a_far_descriptor_number_is_found_when_the_table_is_sparse() {
    within(Duration::from_secs(120), "a sparse descriptor table", || {
        let _guard = live_lock();
        // Probing gives up on the gap and the directory is listed instead.
        let (dense, _far, inode) = dense_and_far();
        let report = live_scan(BackendChoice::Netlink);
        let s = find(&report, inode).expect("the far socket is listed");
        assert_eq!(s.owners.iter().map(|o| o.pid).collect::<Vec<_>>(), vec![std::process::id()], "{s:?}");
        for d in &dense {
            let found = find(&report, inode_of(d)).expect("dense socket listed");
            assert_eq!(found.owners.len(), 1, "{found:?}");
        }
    });
}

#[test]
fn a_far_socket_is_found_while_the_process_opens_and_closes_descriptors_below_it() {
    within(Duration::from_secs(120), "a far socket and descriptor churn", || {
        let _guard = live_lock();
        // And a thread opening and closing descriptors in the gap while we scan: a probe that
        // stops once it has read as many descriptors as the directory counted then meets the
        // count below the far socket, which must still be found.
        let (dense, far, inode) = dense_and_far();
        let stop = Arc::new(AtomicBool::new(false));
        let churn = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                // Bursts held for about as long as a probe of this process takes, then closed
                // for as long: the count is often read in one phase and the gap in the other.
                let mut opened = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let burst: Vec<std::fs::File> =
                        (0..16).map(|_| std::fs::File::open("/dev/null").unwrap()).collect();
                    opened += burst.len() as u64;
                    std::thread::sleep(Duration::from_micros(200));
                    drop(burst);
                    std::thread::sleep(Duration::from_micros(200));
                }
                opened
            })
        };
        let me = std::process::id();
        let mut misses = 0;
        for _ in 0..40 {
            let report = live_scan(BackendChoice::Netlink);
            let s = find(&report, inode).expect("the far socket is listed");
            if s.owners.iter().map(|o| o.pid).collect::<Vec<_>>() != vec![me] {
                misses += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let opened = churn.join().unwrap();
        assert!(opened > 40, "the churn did not run ({opened} opens)");
        assert_eq!(misses, 0, "the far socket's owner was missed in {misses} of 40 scans");
        drop((dense, far));
    });
}
