//! Listeners opened and closed between two scans.
//!
//! The daemon keeps one [`ListenerState`] (small: one record per listener, serializable so it
//! can live in `state.db` across restarts). After each scan it calls
//! `let current = ListenerState::from_report(&report); let changes = diff(&previous, &current);`
//! then stores `current` for next time. The first scan after install has no previous state and
//! produces no events (everything would be "new"). [`diff`] is a pure function.
//!
//! A listener is identified by (protocol, local address, local port). When the same listener is
//! held by a different process than last time (a service restarted, or another program grabbed
//! the port between scans), it is reported in `owner_changed`.

use crate::model::{Exposure, NetworkReport, ProcessInfo, Protocol};
use guestward_core::{Event, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Event kind for a listener that appeared.
pub const LISTENER_OPENED: &str = "network.listener_opened";
/// Event kind for a listener that went away.
pub const LISTENER_CLOSED: &str = "network.listener_closed";
/// Event kind for a listener now held by other processes.
pub const LISTENER_OWNER_CHANGED: &str = "network.listener_owner_changed";

/// What identifies a listener across scans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
pub struct ListenerKey {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Bound address.
    pub local_address: IpAddr,
    /// Bound port.
    pub local_port: u16,
}

/// A listener as remembered between scans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ListenerRecord {
    /// Identity.
    #[serde(flatten)]
    pub key: ListenerKey,
    /// Exposure when last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<Exposure>,
    /// The processes holding it (full details), sorted by pid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<ProcessInfo>,
}

impl ListenerRecord {
    fn identities(&self) -> Vec<(u32, Option<u64>)> {
        self.processes.iter().map(|p| (p.pid, p.start_time_ticks)).collect()
    }
}

/// Every listener of one scan: the state the daemon keeps between scans.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ListenerState {
    /// Sorted by key; one record per key (several sockets with `SO_REUSEPORT` are merged).
    pub listeners: Vec<ListenerRecord>,
}

impl ListenerState {
    /// The listeners of `report`.
    pub fn from_report(report: &NetworkReport) -> Self {
        let mut map: BTreeMap<ListenerKey, ListenerRecord> = BTreeMap::new();
        for s in &report.listeners {
            let key = ListenerKey {
                protocol: s.protocol,
                local_address: s.local_address,
                local_port: s.local_port,
            };
            let record = map.entry(key).or_insert_with(|| ListenerRecord {
                key,
                exposure: s.exposure.clone(),
                processes: Vec::new(),
            });
            for owner in &s.owners {
                if record.processes.iter().all(|p| p.pid != owner.pid) {
                    let info = report.process(owner.pid).cloned().unwrap_or_else(|| ProcessInfo {
                        pid: owner.pid,
                        name: owner.name.clone(),
                        exe: None,
                        cmdline: Vec::new(),
                        uid: None,
                        user: None,
                        systemd_unit: None,
                        start_time_ticks: None,
                    });
                    record.processes.push(info);
                }
            }
        }
        let mut listeners: Vec<ListenerRecord> = map.into_values().collect();
        for l in &mut listeners {
            l.processes.sort_by_key(|p| p.pid);
        }
        Self { listeners }
    }
}

/// A listener whose owning processes changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OwnerChange {
    /// The listener now.
    pub current: ListenerRecord,
    /// Who held it before.
    pub previous_processes: Vec<ProcessInfo>,
}

/// What changed between two scans.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ListenerChanges {
    /// Listeners present now and not before, with the processes that hold them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub opened: Vec<ListenerRecord>,
    /// Listeners present before and not now, with the processes that held them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub closed: Vec<ListenerRecord>,
    /// Listeners present in both scans but held by different processes (pid or start time
    /// differ). Not reported when either side's owners are unknown, since an unreadable owner is
    /// not evidence of a change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_changed: Vec<OwnerChange>,
}

impl ListenerChanges {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.opened.is_empty() && self.closed.is_empty() && self.owner_changed.is_empty()
    }

    /// The changes as report events (`network.listener_opened`, `network.listener_closed`,
    /// `network.listener_owner_changed`), all stamped `time`.
    pub fn to_events(&self, time: Timestamp) -> Vec<Event> {
        let mut events = Vec::new();
        for r in &self.opened {
            events.push(Event { kind: LISTENER_OPENED.into(), time, data: to_value(r) });
        }
        for r in &self.closed {
            events.push(Event { kind: LISTENER_CLOSED.into(), time, data: to_value(r) });
        }
        for c in &self.owner_changed {
            events.push(Event { kind: LISTENER_OWNER_CHANGED.into(), time, data: to_value(c) });
        }
        events
    }
}

fn to_value<T: Serialize>(v: &T) -> serde_json::Value {
    // Plain data with string keys: serialization cannot fail.
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// The listeners opened, closed and re-owned between `previous` and `current`.
pub fn diff(previous: &ListenerState, current: &ListenerState) -> ListenerChanges {
    let before: BTreeMap<&ListenerKey, &ListenerRecord> =
        previous.listeners.iter().map(|r| (&r.key, r)).collect();
    let after: BTreeMap<&ListenerKey, &ListenerRecord> =
        current.listeners.iter().map(|r| (&r.key, r)).collect();
    let mut changes = ListenerChanges::default();
    for (key, now) in &after {
        match before.get(key) {
            None => changes.opened.push((*now).clone()),
            Some(then) => {
                let (a, b) = (then.identities(), now.identities());
                if !a.is_empty() && !b.is_empty() && a != b {
                    changes.owner_changed.push(OwnerChange {
                        current: (*now).clone(),
                        previous_processes: then.processes.clone(),
                    });
                }
            }
        }
    }
    for (key, then) in &before {
        if !after.contains_key(key) {
            changes.closed.push((*then).clone());
        }
    }
    changes
}

/// The state a long-running agent keeps between scans: the previous listeners. Feed it every
/// report; it returns the change events since the previous one (none for the first report).
#[derive(Debug, Clone, Default)]
pub struct ListenerTracker {
    previous: Option<ListenerState>,
}

impl ListenerTracker {
    /// A tracker that starts from a persisted state (e.g. read from `state.db` after a
    /// restart), or from nothing.
    pub fn new(previous: Option<ListenerState>) -> Self {
        Self { previous }
    }

    /// Records `report` as the latest scan and returns what changed since the previous one.
    pub fn observe(&mut self, report: &NetworkReport) -> ListenerChanges {
        let current = ListenerState::from_report(report);
        let changes = match &self.previous {
            Some(previous) => diff(previous, &current),
            None => ListenerChanges::default(),
        };
        self.previous = Some(current);
        changes
    }

    /// The state to persist.
    pub fn state(&self) -> Option<&ListenerState> {
        self.previous.as_ref()
    }
}
