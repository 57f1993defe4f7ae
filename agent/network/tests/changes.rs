//! Change tracking between two snapshots.

use crate::util::{inode_of, live_lock, live_scan};
use guestward_core::Timestamp;
use guestward_network::{
    BackendChoice, Config, LISTENER_CLOSED, LISTENER_OPENED, LISTENER_OWNER_CHANGED, ListenerState,
    ListenerTracker, Protocol, ScanContext, diff, scan,
};
use std::net::TcpListener;
use std::path::PathBuf;

fn fixture_state() -> ListenerState {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/network/proc-basic"));
    ListenerState::from_report(&scan(&Config::default(), &ScanContext::fixture(dir)).unwrap().report)
}

#[test]
fn diff_reports_opened_closed_and_reowned_listeners_with_processes() {
    let before = fixture_state();
    assert_eq!(before.listeners.len(), 4);
    assert!(diff(&before, &before).is_empty());

    let mut after = before.clone();
    // Redis closed.
    let redis = after.listeners.iter().position(|l| l.key.local_port == 6379).unwrap();
    let closed = after.listeners.remove(redis);
    // sshd restarted: same listener, new pid.
    let ssh = after.listeners.iter_mut().find(|l| l.key.local_port == 22).unwrap();
    ssh.processes[0].pid = 301;
    ssh.processes[0].start_time_ticks = Some(9999);
    // A new listener on 8080 held by pid 100's details.
    let mut opened = closed.clone();
    opened.key.local_port = 8080;
    after.listeners.push(opened.clone());

    let changes = diff(&before, &after);
    assert_eq!(changes.opened, vec![opened]);
    assert_eq!(changes.closed, vec![closed.clone()]);
    assert_eq!(changes.closed[0].processes.iter().map(|p| p.pid).collect::<Vec<_>>(), vec![100, 200]);
    assert_eq!(changes.owner_changed.len(), 1);
    assert_eq!(changes.owner_changed[0].previous_processes[0].pid, 300);
    assert_eq!(changes.owner_changed[0].current.processes[0].pid, 301);

    let events = changes.to_events(Timestamp::now());
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, vec![LISTENER_OPENED, LISTENER_CLOSED, LISTENER_OWNER_CHANGED]);
    assert_eq!(events[1].data["local_port"], 6379);
    assert_eq!(events[1].data["processes"][0]["exe"], "/usr/bin/redis-server");

    // The state survives a JSON round trip (the daemon persists it between scans).
    let json = serde_json::to_string(&after).unwrap();
    assert_eq!(serde_json::from_str::<ListenerState>(&json).unwrap(), after);
}

#[test]
fn unknown_owners_are_not_an_owner_change() {
    let before = fixture_state();
    let mut after = before.clone();
    for l in &mut after.listeners {
        l.processes.clear();
    }
    assert!(diff(&before, &after).is_empty());
}

#[test]
fn a_real_listener_shows_up_as_opened_then_closed_with_our_pid() {
    let _guard = live_lock();
    let mut tracker = ListenerTracker::new(None);
    let first_report = live_scan(BackendChoice::Auto);
    assert!(tracker.observe(&first_report).is_empty(), "the first scan is a baseline, not a change");
    let first = ListenerState::from_report(&first_report);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let _ = inode_of(&l);
    let second_report = live_scan(BackendChoice::Auto);
    let second = ListenerState::from_report(&second_report);
    let opened = diff(&first, &second);
    let tracked = tracker.observe(&second_report);
    assert!(tracked.opened.iter().any(|r| r.key.local_port == port), "{tracked:#?}");
    assert_eq!(tracker.state(), Some(&second));
    let ours = opened
        .opened
        .iter()
        .find(|r| r.key.protocol == Protocol::Tcp && r.key.local_port == port)
        .unwrap_or_else(|| panic!("{opened:#?}"));
    assert_eq!(ours.processes.iter().map(|p| p.pid).collect::<Vec<_>>(), vec![std::process::id()]);
    drop(l);
    let third = ListenerState::from_report(&live_scan(BackendChoice::Auto));
    let closed = diff(&second, &third);
    let gone =
        closed.closed.iter().find(|r| r.key.local_port == port).unwrap_or_else(|| panic!("{closed:#?}"));
    assert_eq!(gone.processes[0].pid, std::process::id());
}
