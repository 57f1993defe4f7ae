//! Helpers shared by the test modules.

use guestward_core::{Event, Timestamp};
use guestward_history::{Bounds, EventStore};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// Bounds large enough that nothing is dropped.
pub fn roomy() -> Bounds {
    Bounds { max_age: Duration::from_secs(3650 * 24 * 3600), max_events: 10_000_000 }
}

pub fn open(dir: &Path, bounds: Bounds) -> EventStore {
    EventStore::open(&dir.join(guestward_history::DB_FILE), bounds).unwrap()
}

/// A timestamp `secs_ago` seconds before now.
pub fn ago(secs_ago: i64) -> Timestamp {
    Timestamp::from_unix_secs(Timestamp::now().unix_secs() - secs_ago).unwrap()
}

/// A `fim.change` event shaped like the FIM's (path, change, old/new attributes, mechanism).
pub fn fim_change(
    path: &str,
    change: &str,
    old_size: Option<u64>,
    new_size: Option<u64>,
    time: Timestamp,
) -> Event {
    let attrs = |size: u64| {
        json!({
            "type": "file", "mode": "0644", "uid": 0, "gid": 0, "size": size,
            "mtime_ns": 1_700_000_000_000_000_000i64 + size as i64, "ctime_ns": 1_700_000_000_000_000_000i64,
            "inode": 4242, "sha256": format!("{size:064x}")
        })
    };
    let mut data = json!({"path": path, "change": change, "mechanism": "realtime", "rule": "/srv"});
    if change == "modified" {
        data["changed"] = json!(["sha256", "size", "mtime"]);
    }
    if let Some(o) = old_size {
        data["old"] = attrs(o);
    }
    if let Some(n) = new_size {
        data["new"] = attrs(n);
    }
    Event { kind: "fim.change".into(), time, data }
}

pub fn simple(kind: &str, n: u64, time: Timestamp) -> Event {
    Event { kind: kind.into(), time, data: json!({"n": n}) }
}
