//! Storm coalescing: a bounded in-memory stage in front of the store.
//!
//! Measured before this existed: 2,000 files rewritten 30 times and 600 files created in 18 s
//! made ~62,600 events; a queue of the last 10,000 dropped 52,600, so 520 of the 600 new files
//! were never reported anywhere. Here, each event has a key (its path; or, for events without
//! one, its kind and the field that identifies its subject, see [`identity_of`]):
//!
//! - Below the thresholds every event passes on its own (a file changed once is reported once,
//!   with all its detail).
//! - Past them (more than [`CoalesceLimits::per_key_events`] events for one key within
//!   [`CoalesceLimits::window`], or more than [`CoalesceLimits::max_pending_events`] events
//!   waiting overall), further events of a key fold into ONE summary per key: the kind is kept,
//!   the data is the latest event's with the earliest old state put back (`old`, `old_path`,
//!   `old_version`, `previous_processes`), and `data.coalesced` says `count`, `first_time`,
//!   `last_time` and the distinct `changes` seen. A storming key's summary is released once
//!   the key has been quiet for a window, or after [`CoalesceLimits::max_hold`] at most; a
//!   summary made only because the backlog was full goes out with the next drain.
//! - Memory is counted (events are held as compact JSON text, and its length is what counts,
//!   plus a fixed overhead per event and per key). Past
//!   [`CoalesceLimits::max_memory_bytes`] the coalescer first forgets rate bookkeeping (no event
//!   is lost by that); only if the events and summaries themselves exceed the cap are the
//!   oldest dropped, counted, and reported as one `coverage.gap` (cause `history_overflow`) in
//!   the next [`Batch`], which the next verification rescan closes.
//!
//! So every key that had an event appears in the output at least once unless the cap forced a
//! drop, and then a gap says so. Time is passed in (`now: Instant`) so the daemon uses the
//! monotonic clock and tests can play a storm faster than real time.

use crate::{KIND_GAP, overflow_gap_data};
use guestward_core::{Event, Timestamp};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

/// Thresholds of the coalescer (from [`crate::HistoryConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoalesceLimits {
    /// Rate window, and how long a key must stay quiet before its summary is released.
    pub window: Duration,
    /// Events of one key within a window that pass individually; the next ones coalesce.
    pub per_key_events: u32,
    /// Individual events waiting for the next drain beyond which new events coalesce.
    pub max_pending_events: usize,
    /// Approximate memory cap (events, summaries and bookkeeping).
    pub max_memory_bytes: usize,
    /// A summary is released at the latest this long after its first event, even if its key
    /// is still busy (a file rewritten forever is still reported).
    pub max_hold: Duration,
}

impl Default for CoalesceLimits {
    /// 10 s window, 3 events per key, 1,000 pending, 16 MiB, 60 s hold.
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            per_key_events: 3,
            max_pending_events: 1000,
            max_memory_bytes: 16 << 20,
            max_hold: Duration::from_secs(60),
        }
    }
}

/// What one drain hands to the store (`EventStore::append_batch`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Individual events, summaries and (if the cap dropped any) one coverage gap, in event
    /// time order.
    pub events: Vec<Event>,
    /// Input events folded away into the summaries of this batch (`count - 1` per summary).
    pub coalesced: u64,
    /// Input events dropped at the memory cap since the previous drain.
    pub dropped: u64,
}

impl Batch {
    /// True when there is nothing to store.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.dropped == 0
    }
}

/// Keys whose room the coalescer keeps after a storm (see `take`).
const KEYS_KEPT: usize = 1024;
/// Most keys whose rate is tracked: a table of 32,768 slots, at most 7/8 of them used (about
/// 1.3 MB). A rescan reporting 100,000 new files made one key per path within a window: 11.2 MB
/// of table and 3.1 MB of key text, the daemon's largest heap use in that storm (heaptrack).
/// The table is not grown past it: when a new key would make a table of half as many keys or
/// more grow (or rehash), the keys without a summary are forgotten first and the table is
/// compacted. A path whose fourth change in a window comes after that passes individually:
/// nothing is lost, and the backlog bound still folds a flood.
const MAX_RATE_KEYS: usize = 28_672;
/// Fields holding the state *before* a change: a summary keeps the earliest event's.
const OLD_FIELDS: [&str; 4] = ["old", "old_path", "old_version", "previous_processes"];
/// Distinct `change` values remembered per summary.
const MAX_CHANGES: usize = 8;
/// Distinct `changed` attribute names remembered per summary.
const MAX_CHANGED: usize = 32;
/// Bookkeeping per key: its slot in the hash map (at the map's 7/8 load) and its control byte.
/// The key's text is not kept: the map is keyed by its hash (see [`Coalescer::keys`]).
const KEY_OVERHEAD: usize = (std::mem::size_of::<(u64, KeyState)>() + 1) * 8 / 7;
/// Per waiting event besides its kind and JSON text: its queue slot and two allocation headers.
const PENDING_OVERHEAD: usize = std::mem::size_of::<Pending>() + 32;
/// Per summary besides its texts: the boxed struct, its old-state slots, its entry in the
/// order index and allocation headers.
const SUMMARY_OVERHEAD: usize =
    std::mem::size_of::<Summary>() + OLD_FIELDS.len() * std::mem::size_of::<(&str, Option<Box<str>>)>() + 96;

/// Identifies what an event is about, for coalescing: the events of one identity fold
/// together (within one kind).
///
/// - `data.path` (FIM changes): the path.
/// - listeners (`data.protocol/local_address/local_port`, or under `data.current` for an owner
///   change): `tcp 0.0.0.0:22`.
/// - packages (`data.source/name`, with `arch`, `location`): `dpkg openssl amd64`.
/// - anything else: the whole data, so only identical events fold together.
pub fn identity_of(event: &Event) -> String {
    let d = &event.data;
    if let Some(p) = d.get("path").and_then(Value::as_str) {
        return format!("path {p}");
    }
    let listener = |v: &Value| -> Option<String> {
        let port = v.get("local_port")?;
        Some(format!(
            "listener {} {}:{}",
            v.get("protocol").map(Value::to_string).unwrap_or_default(),
            v.get("local_address").map(Value::to_string).unwrap_or_default(),
            port
        ))
    };
    if let Some(l) = listener(d).or_else(|| d.get("current").and_then(listener)) {
        return l;
    }
    if let (Some(source), Some(name)) = (d.get("source"), d.get("name")) {
        let field = |k: &str| d.get(k).map(Value::to_string).unwrap_or_default();
        return format!("package {source} {name} {} {}", field("arch"), field("location"));
    }
    format!("data {d}")
}

#[derive(Debug)]
struct Summary {
    /// Its key passed the per-key rate: held until quiet (or `max_hold`). A summary made only
    /// because the backlog was full goes out with the next drain: holding it would save
    /// nothing and fill memory with paths changed once.
    storm: bool,
    first_arrival: Instant,
    last_arrival: Instant,
    first_time: Timestamp,
    last_time: Timestamp,
    count: u64,
    kind: String,
    /// The first event's old-state fields (`None`: it had none, so the summary has none).
    earliest: Vec<(&'static str, Option<Box<str>>)>,
    /// The latest event's data, as compact JSON (see [`Compact`]).
    latest: Compact,
    changes: Vec<String>,
    changed: Vec<Value>,
    bytes: usize,
    /// The key it summarizes: the rate table holds only the key's hash, and an event whose
    /// key's hash is the same but whose key is not (a 64-bit collision) is not merged.
    key: Box<str>,
}

impl Summary {
    fn new(now: Instant, event: Event, key: Box<str>) -> Self {
        let earliest = OLD_FIELDS
            .iter()
            .map(|f| (*f, event.data.get(*f).map(|v| v.to_string().into_boxed_str())))
            .collect::<Vec<_>>();
        let earliest_bytes: usize = earliest.iter().filter_map(|(_, v)| v.as_ref()).map(|v| v.len()).sum();
        let mut s = Self {
            storm: false,
            first_arrival: now,
            last_arrival: now,
            first_time: event.time,
            last_time: event.time,
            count: 1,
            bytes: SUMMARY_OVERHEAD + event.kind.len() + earliest_bytes + key.len(),
            kind: event.kind,
            key,
            earliest,
            latest: Compact::default(),
            changes: Vec::new(),
            changed: Vec::new(),
        };
        s.note(&event.data);
        s.latest = Compact::new(&event.data);
        s.bytes += s.latest.len();
        s
    }

    /// Remembers the `change` and `changed` values of one event (bounded).
    fn note(&mut self, data: &Value) {
        if let Some(c) = data.get("change").and_then(Value::as_str)
            && self.changes.len() < MAX_CHANGES
            && !self.changes.iter().any(|x| x == c)
        {
            self.bytes += 32 + c.len();
            self.changes.push(c.to_string());
        }
        if let Some(list) = data.get("changed").and_then(Value::as_array) {
            for v in list {
                if self.changed.len() < MAX_CHANGED && !self.changed.contains(v) {
                    self.bytes += 32 + v.to_string().len();
                    self.changed.push(v.clone());
                }
            }
        }
    }

    /// Folds one more event in; returns the change in bytes held.
    fn merge(&mut self, now: Instant, event: Event) -> isize {
        let before = self.bytes;
        self.count += 1;
        self.last_arrival = now;
        self.first_time = self.first_time.min(event.time);
        self.last_time = self.last_time.max(event.time);
        self.note(&event.data);
        let latest = Compact::new(&event.data);
        self.bytes = self.bytes - self.latest.len() + latest.len();
        self.latest = latest;
        signed(self.bytes) - signed(before)
    }

    fn into_event(self) -> Event {
        if self.count == 1 {
            return Event { kind: self.kind, time: self.last_time, data: self.latest.value() };
        }
        let mut data = match self.latest.value() {
            Value::Object(m) => m,
            other => {
                let mut m = Map::new();
                m.insert("latest".into(), other);
                m
            }
        };
        for (field, value) in self.earliest {
            match value {
                Some(v) => data.insert(field.to_string(), Compact(v).value()),
                None => data.remove(field),
            };
        }
        if !self.changed.is_empty() {
            data.insert("changed".into(), Value::Array(self.changed));
        }
        if self.kind == "fim.change" {
            // From the earliest old state to the latest new state, what happened overall.
            let present = |k: &str| data.get(k).is_some_and(|v| !v.is_null());
            let overall = match (present("old"), present("new")) {
                (false, true) => Some("added"),
                (true, false) => Some("removed"),
                (true, true) if present("old_path") => Some("renamed"),
                (true, true) => Some("modified"),
                (false, false) => None,
            };
            if let Some(c) = overall {
                data.insert("change".into(), Value::String(c.into()));
            }
        }
        data.insert(
            "coalesced".into(),
            serde_json::json!({
                "count": self.count,
                "first_time": self.first_time,
                "last_time": self.last_time,
                "changes": self.changes,
            }),
        );
        Event { kind: self.kind, time: self.last_time, data: Value::Object(data) }
    }
}

fn signed(v: usize) -> isize {
    isize::try_from(v).unwrap_or(isize::MAX)
}

#[derive(Debug)]
struct KeyState {
    window_start: Instant,
    in_window: u32,
    summary: Option<Box<Summary>>,
}

#[derive(Debug)]
struct Pending {
    seq: u64,
    kind: String,
    time: Timestamp,
    data: Compact,
}

impl Pending {
    fn bytes(&self) -> usize {
        PENDING_OVERHEAD + self.kind.len() + self.data.len()
    }

    fn into_event(self) -> Event {
        Event { kind: self.kind, time: self.time, data: self.data.value() }
    }
}

/// Event data held as compact JSON text. A `serde_json::Value` of a `fim.change` takes about
/// five times its JSON size in memory (a B-tree node per object, 32 bytes per value), so text
/// lets the same cap hold five times as many events; the length is also an honest measure of
/// what is held.
#[derive(Debug, Default)]
struct Compact(Box<str>);

impl Compact {
    fn new(v: &Value) -> Self {
        Self(v.to_string().into_boxed_str())
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn value(&self) -> Value {
        // Text this process serialized from a Value parses back; Null is unreachable.
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
}

/// The in-memory storm stage. Not thread-safe by itself: the daemon keeps it behind its lock.
#[derive(Debug)]
pub struct Coalescer {
    limits: CoalesceLimits,
    seq: u64,
    /// Rate bookkeeping, by the hash of each key (`hasher`): the keys' text would be most of
    /// the table's memory in a storm of new paths. The hasher's keys are random per process,
    /// so nobody can choose paths whose hashes collide; a collision only shares a rate count
    /// (a summary checks its own key before merging).
    keys: HashMap<u64, KeyState>,
    hasher: RandomState,
    /// Keys with a summary (their hash), by the summary's first arrival (oldest first).
    summaries: BTreeMap<u64, u64>,
    pending: VecDeque<Pending>,
    bytes: usize,
    dropped: u64,
    dropped_first: Option<Timestamp>,
    dropped_last: Option<Timestamp>,
}

impl Coalescer {
    /// An empty coalescer.
    pub fn new(limits: CoalesceLimits) -> Self {
        Self {
            limits,
            seq: 0,
            keys: HashMap::new(),
            hasher: RandomState::new(),
            summaries: BTreeMap::new(),
            pending: VecDeque::new(),
            bytes: 0,
            dropped: 0,
            dropped_first: None,
            dropped_last: None,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> CoalesceLimits {
        self.limits
    }

    /// Approximate bytes held now (never above the cap once `push` returns).
    pub fn memory_bytes(&self) -> usize {
        self.bytes
    }

    /// Individual events plus summaries waiting.
    pub fn pending(&self) -> usize {
        self.pending.len() + self.summaries.len()
    }

    /// Takes one event observed now.
    pub fn push(&mut self, event: Event, now: Instant) {
        self.seq += 1;
        let seq = self.seq;
        // Coverage gaps are rare and each one matters: never folded.
        if event.kind.starts_with("coverage.") {
            self.push_individual(seq, event);
            self.enforce_cap();
            return;
        }
        let key = format!("{}\0{}", event.kind, identity_of(&event));
        let hash = self.hasher.hash_one(&key);
        let backlog = self.pending.len() >= self.limits.max_pending_events;
        if !self.keys.contains_key(&hash) {
            // `len == capacity`: this insert reallocates. Forgotten keys leave tombstones that
            // count as used, so the length alone does not say when the table would double.
            if self.keys.len() == self.keys.capacity() && self.keys.len() >= MAX_RATE_KEYS / 2 {
                self.forget_rates();
                self.keys.shrink_to_fit();
            }
            self.bytes += KEY_OVERHEAD;
            self.keys.insert(hash, KeyState { window_start: now, in_window: 0, summary: None });
        }
        let Some(state) = self.keys.get_mut(&hash) else { return };
        if now.saturating_duration_since(state.window_start) >= self.limits.window {
            state.window_start = now;
            state.in_window = 0;
        }
        state.in_window = state.in_window.saturating_add(1);
        let storming = state.in_window > self.limits.per_key_events;
        if let Some(summary) = &mut state.summary
            && *summary.key == *key
        {
            summary.storm |= storming;
            let delta = summary.merge(now, event);
            self.bytes = self.bytes.saturating_add_signed(delta);
        } else if state.summary.is_none() && (storming || backlog) {
            let mut summary = Box::new(Summary::new(now, event, key.into_boxed_str()));
            summary.storm = storming;
            self.bytes += summary.bytes;
            state.summary = Some(summary);
            self.summaries.insert(seq, hash);
        } else {
            self.push_individual(seq, event);
        }
        self.enforce_cap();
    }

    fn push_individual(&mut self, seq: u64, event: Event) {
        let p = Pending { seq, data: Compact::new(&event.data), kind: event.kind, time: event.time };
        self.bytes += p.bytes();
        self.pending.push_back(p);
    }

    /// Forgets the rate bookkeeping of every key without a summary (no event is lost by it).
    fn forget_rates(&mut self) {
        let before = self.keys.len();
        self.keys.retain(|_, s| s.summary.is_some());
        let forgotten = before - self.keys.len();
        self.bytes = self.bytes.saturating_sub(forgotten * KEY_OVERHEAD);
        if forgotten > 0 {
            tracing::debug!(forgotten, "coalescer: rate bookkeeping dropped (memory cap or key bound)");
        }
    }

    /// Keeps memory under the cap: first forgets rate bookkeeping, then drops the oldest
    /// events or summaries, down to 90% of the cap so the work is not redone on every push.
    fn enforce_cap(&mut self) {
        let cap = self.limits.max_memory_bytes;
        if self.bytes <= cap {
            return;
        }
        let low = cap - cap / 10;
        self.forget_rates();
        while self.bytes > low {
            let oldest_pending = self.pending.front().map(|p| p.seq);
            let oldest_summary = self.summaries.first_key_value().map(|(s, _)| *s);
            match (oldest_pending, oldest_summary) {
                (None, None) => break,
                (Some(p), s) if s.is_none_or(|s| p < s) => {
                    if let Some(p) = self.pending.pop_front() {
                        self.bytes = self.bytes.saturating_sub(p.bytes());
                        self.note_drop(1, p.time, p.time);
                    }
                }
                _ => {
                    if let Some((_, key)) = self.summaries.pop_first()
                        && let Some(state) = self.keys.get_mut(&key)
                        && let Some(s) = state.summary.take()
                    {
                        self.bytes = self.bytes.saturating_sub(s.bytes);
                        self.note_drop(s.count, s.first_time, s.last_time);
                    }
                }
            }
        }
    }

    fn note_drop(&mut self, count: u64, first: Timestamp, last: Timestamp) {
        if self.dropped == 0 {
            tracing::warn!(
                cap_bytes = self.limits.max_memory_bytes,
                "event storm beyond the coalescer's memory cap: the oldest events are dropped and a coverage gap records it"
            );
        }
        self.dropped += count;
        self.dropped_first = Some(self.dropped_first.map_or(first, |f| f.min(first)));
        self.dropped_last = Some(self.dropped_last.map_or(last, |l| l.max(last)));
    }

    /// What is ready now: every individual event, the backlog summaries, the storm summaries
    /// whose key has been quiet for a window (or held for `max_hold`), and a coverage gap if
    /// the cap dropped events. The daemon calls it about once a second.
    pub fn drain(&mut self, now: Instant) -> Batch {
        self.drain_ready(now).into_batch()
    }

    /// [`Self::drain`], still compact: the caller expands and stores it in bounded batches
    /// ([`Ready::into_batches`]) after releasing whatever lock guards the coalescer.
    pub fn drain_ready(&mut self, now: Instant) -> Ready {
        let window = self.limits.window;
        let hold = self.limits.max_hold;
        self.take(now, |s| {
            !s.storm
                || now.saturating_duration_since(s.last_arrival) >= window
                || now.saturating_duration_since(s.first_arrival) >= hold
        })
    }

    /// Everything held, ready or not (at shutdown).
    pub fn flush(&mut self, now: Instant) -> Batch {
        self.flush_ready(now).into_batch()
    }

    /// [`Self::flush`], still compact (see [`Self::drain_ready`]).
    pub fn flush_ready(&mut self, now: Instant) -> Ready {
        self.take(now, |_| true)
    }

    fn take(&mut self, now: Instant, ready: impl Fn(&Summary) -> bool) -> Ready {
        let mut out = Ready::default();
        for p in std::mem::take(&mut self.pending) {
            self.bytes = self.bytes.saturating_sub(p.bytes());
            out.items.push(ReadyItem::Single(p));
        }
        let ready_seqs: Vec<u64> = self
            .summaries
            .iter()
            .filter(|(_, key)| self.keys.get(*key).and_then(|s| s.summary.as_deref()).is_some_and(&ready))
            .map(|(seq, _)| *seq)
            .collect();
        for seq in ready_seqs {
            if let Some(key) = self.summaries.remove(&seq)
                && let Some(state) = self.keys.get_mut(&key)
                && let Some(s) = state.summary.take()
            {
                self.bytes = self.bytes.saturating_sub(s.bytes);
                out.items.push(ReadyItem::Summary(s));
            }
        }
        // Rate bookkeeping of keys quiet for a window is no longer needed.
        let window = self.limits.window;
        let mut freed = 0usize;
        self.keys.retain(|_, s| {
            let keep = s.summary.is_some() || now.saturating_duration_since(s.window_start) < window;
            if !keep {
                freed += KEY_OVERHEAD;
            }
            keep
        });
        self.bytes = self.bytes.saturating_sub(freed);
        // A map keeps the table of its largest size: a storm of new files grew it to one key
        // per path (5.6 MB of table for 100,000 files), which the daemon then kept for good,
        // over its idle budget. Given back once at most a quarter of it is in use.
        if self.keys.capacity() > KEYS_KEPT && self.keys.len() <= self.keys.capacity() / 4 {
            self.keys.shrink_to(KEYS_KEPT.max(self.keys.len().saturating_mul(2)));
        }
        if self.dropped > 0 {
            let first = self.dropped_first.unwrap_or_else(Timestamp::now);
            let last = self.dropped_last.unwrap_or_else(Timestamp::now);
            let detail = format!(
                "{} events were dropped before they were stored: an event storm exceeded the coalescer's {}-byte memory cap",
                self.dropped, self.limits.max_memory_bytes
            );
            out.items.push(ReadyItem::Gap(
                Event {
                    kind: KIND_GAP.into(),
                    time: Timestamp::now().max(last),
                    data: overflow_gap_data(self.dropped, first, last, &detail),
                },
                self.dropped,
            ));
            self.dropped = 0;
            self.dropped_first = None;
            self.dropped_last = None;
        }
        out.items.sort_by_key(ReadyItem::time);
        out
    }
}

/// What one drain took out of the coalescer, still as compact JSON text: expanded into
/// [`Batch`]es only as they are stored. A storm releases thousands of summaries at once, and
/// as `serde_json::Value`s they take about five times their text (measured: 7 MB of B-tree
/// nodes for 2,600 summaries in one batch, the daemon's largest allocation in a storm).
#[derive(Debug, Default)]
pub struct Ready {
    /// In event time order.
    items: Vec<ReadyItem>,
}

#[derive(Debug)]
enum ReadyItem {
    Single(Pending),
    Summary(Box<Summary>),
    /// The coverage gap, with how many events it stands for.
    Gap(Event, u64),
}

impl ReadyItem {
    fn time(&self) -> Timestamp {
        match self {
            Self::Single(p) => p.time,
            Self::Summary(s) => s.last_time,
            Self::Gap(e, _) => e.time,
        }
    }
}

impl Ready {
    /// True when there is nothing to store.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Everything as one batch.
    pub fn into_batch(self) -> Batch {
        self.into_batches(usize::MAX).next().unwrap_or_default()
    }

    /// Batches of at most `max_events` events each (at least one), in event time order; each
    /// carries the counts of what it holds (folded events of its summaries, dropped events of
    /// its gap), so storing them one by one adds up to storing one batch.
    pub fn into_batches(self, max_events: usize) -> impl Iterator<Item = Batch> {
        let max_events = max_events.clamp(1, self.items.len().max(1));
        let mut items = self.items.into_iter().peekable();
        std::iter::from_fn(move || {
            items.peek()?;
            let mut batch = Batch::default();
            for item in items.by_ref().take(max_events) {
                match item {
                    ReadyItem::Single(p) => batch.events.push(p.into_event()),
                    ReadyItem::Summary(s) => {
                        batch.coalesced += s.count - 1;
                        batch.events.push(s.into_event());
                    }
                    ReadyItem::Gap(e, dropped) => {
                        batch.dropped += dropped;
                        batch.events.push(e);
                    }
                }
            }
            Some(batch)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn fim(path: &str, change: &str, old: Option<u64>, new: Option<u64>, secs: i64) -> Event {
        let mut data = json!({"path": path, "change": change, "mechanism": "realtime", "rule": "/etc"});
        if let Some(o) = old {
            data["old"] = json!({"size": o});
        }
        if let Some(n) = new {
            data["new"] = json!({"size": n});
        }
        Event { kind: "fim.change".into(), time: Timestamp::from_unix_secs(secs).unwrap(), data }
    }

    #[test]
    fn a_summary_keeps_the_earliest_old_state_and_the_latest_new_state() {
        let limits = CoalesceLimits { per_key_events: 0, ..CoalesceLimits::default() };
        let mut c = Coalescer::new(limits);
        let t0 = Instant::now();
        c.push(fim("/etc/x", "added", None, Some(1), 100), t0);
        c.push(fim("/etc/x", "modified", Some(1), Some(2), 101), t0);
        c.push(fim("/etc/x", "modified", Some(2), Some(3), 102), t0);
        let batch = c.flush(t0);
        assert_eq!(batch.events.len(), 1);
        assert_eq!(batch.coalesced, 2);
        let d = &batch.events[0].data;
        assert_eq!(d["change"], "added", "{d}");
        assert!(d.get("old").is_none(), "{d}");
        assert_eq!(d["new"]["size"], 3);
        assert_eq!(d["coalesced"]["count"], 3);
        assert_eq!(d["coalesced"]["changes"], json!(["added", "modified"]));
        assert_eq!(d["coalesced"]["first_time"], json!(Timestamp::from_unix_secs(100).unwrap()));
        assert_eq!(batch.events[0].time, Timestamp::from_unix_secs(102).unwrap());
        assert!(c.memory_bytes() > 0, "the key's rate bookkeeping lasts a window");
        assert!(c.drain(t0 + limits.window).is_empty());
        assert_eq!(c.memory_bytes(), 0, "everything released");
    }

    /// A storm of new paths grows the rate bookkeeping to one key per path; once they are
    /// quiet for a window, the table is given back, not kept for the life of the daemon.
    #[test]
    fn a_storms_keys_are_given_back_once_quiet() {
        let limits = CoalesceLimits::default();
        let mut c = Coalescer::new(limits);
        let t0 = Instant::now();
        // Fewer paths than the table's bound (`MAX_RATE_KEYS`, tested below).
        for i in 0..12_000 {
            c.push(fim(&format!("/w/f{i:07}"), "added", None, Some(1), 100), t0);
            if i % 1000 == 999 {
                c.drain(t0);
            }
        }
        assert!(c.keys.capacity() >= 12_000, "one key per path during the storm");
        let batch = c.drain(t0 + limits.window);
        assert!(c.keys.is_empty(), "{}", batch.events.len());
        assert!(c.keys.capacity() <= 2 * KEYS_KEPT, "{} keys' room kept", c.keys.capacity());
        // A key still in its window keeps its room (and its bookkeeping).
        c.push(fim("/w/a", "modified", Some(1), Some(2), 101), t0 + limits.window);
        c.drain(t0 + limits.window);
        assert_eq!(c.keys.len(), 1);
    }

    /// A rescan reporting 100,000 new paths within one window (drained each "second", as the
    /// daemon does): the rate table stays within its bound, and every path is still reported,
    /// none dropped, none folded into another.
    #[test]
    fn the_rate_table_stays_bounded_through_a_window_of_100_000_new_paths() {
        let limits = CoalesceLimits::default();
        let mut c = Coalescer::new(limits);
        let t0 = Instant::now();
        let mut paths = std::collections::BTreeSet::new();
        let mut largest = 0;
        for i in 0..100_000 {
            c.push(fim(&format!("/w/f{i:07}"), "added", None, Some(1), 100), t0);
            largest = largest.max(c.keys.capacity());
            if i % 10_000 == 9_999 {
                for e in c.drain(t0).events {
                    assert!(e.data.get("coalesced").is_none(), "{e:?}");
                    paths.insert(e.data["path"].as_str().unwrap().to_string());
                }
            }
        }
        assert_eq!(paths.len(), 100_000, "every path reported once");
        assert!(largest <= MAX_RATE_KEYS, "the table grew to {largest} keys");
        assert!(c.keys.len() <= MAX_RATE_KEYS);
    }

    /// A path rewritten in a storm keeps its summary (and its bookkeeping) when the bound
    /// forgets the keys of paths seen once: it is still folded, not reported change by change.
    #[test]
    fn a_storming_path_stays_folded_when_the_bound_forgets_the_others() {
        let mut c = Coalescer::new(CoalesceLimits::default());
        let t0 = Instant::now();
        for i in 0..(3 * MAX_RATE_KEYS) {
            c.push(fim("/etc/hot", "modified", Some(1), Some(2), 100), t0);
            c.push(fim(&format!("/w/f{i:07}"), "added", None, Some(1), 100), t0);
            if i % 500 == 499 {
                c.drain(t0);
            }
        }
        let hot: Vec<Event> = c
            .flush(t0 + Duration::from_secs(1))
            .events
            .into_iter()
            .filter(|e| e.data["path"] == "/etc/hot")
            .collect();
        assert_eq!(hot.len(), 1, "{hot:?}");
        assert!(hot[0].data["coalesced"]["count"].as_u64().unwrap() > 3 * MAX_RATE_KEYS as u64 - 10);
    }

    #[test]
    fn below_the_threshold_events_pass_one_by_one() {
        let mut c = Coalescer::new(CoalesceLimits::default());
        let t0 = Instant::now();
        for i in 0..3 {
            c.push(fim("/etc/y", "modified", Some(i), Some(i + 1), 100), t0);
        }
        let batch = c.drain(t0);
        assert_eq!(batch.events.len(), 3);
        assert!(batch.events.iter().all(|e| e.data.get("coalesced").is_none()));
    }

    #[test]
    fn listeners_and_packages_are_keyed_by_their_subject() {
        let l = |port: u16, pid: u32| Event {
            kind: "network.listener_opened".into(),
            time: Timestamp::now(),
            data: json!({"protocol": "tcp", "local_address": "0.0.0.0", "local_port": port, "processes": [{"pid": pid}]}),
        };
        assert_eq!(identity_of(&l(22, 1)), identity_of(&l(22, 2)));
        assert_ne!(identity_of(&l(22, 1)), identity_of(&l(23, 1)));
        let owner = Event {
            kind: "network.listener_owner_changed".into(),
            time: Timestamp::now(),
            data: json!({"current": {"protocol": "tcp", "local_address": "0.0.0.0", "local_port": 22}}),
        };
        assert_eq!(identity_of(&owner), identity_of(&l(22, 9)));
        let p = |v: &str| Event {
            kind: "package.upgraded".into(),
            time: Timestamp::now(),
            data: json!({"source": "dpkg", "name": "openssl", "arch": "amd64", "old_version": "1", "new_version": v}),
        };
        assert_eq!(identity_of(&p("2")), identity_of(&p("3")));
    }

    /// The daemon stores a drain in bounded batches: together they must hold what one batch
    /// would (same events, same order, same counts), a storm's summaries and the gap included.
    #[test]
    fn a_drain_split_into_bounded_batches_adds_up_to_one_batch() {
        let play = || {
            // 40 paths changed once, 5 storming paths, then more than the cap holds.
            let limits = CoalesceLimits { max_memory_bytes: 24 << 10, ..CoalesceLimits::default() };
            let mut c = Coalescer::new(limits);
            let t0 = Instant::now();
            for i in 0..40u64 {
                c.push(fim(&format!("/etc/once{i}"), "modified", Some(i), Some(i + 1), 100 + i as i64), t0);
            }
            for round in 0..20u64 {
                for p in 0..5 {
                    c.push(fim(&format!("/etc/storm{p}"), "modified", Some(round), Some(round + 1), 200), t0);
                }
            }
            // Past the cap: the oldest (the paths changed once) are dropped, the storm stays.
            for i in 0..40u64 {
                c.push(fim(&format!("/var/filler{i:0100}"), "added", None, Some(i), 50), t0);
            }
            c.flush_ready(t0)
        };
        // The gap is stamped with the clock when it is made: the same in both plays otherwise.
        let unstamped = |events: Vec<Event>| -> Vec<Event> {
            let gap_time = Timestamp::from_unix_secs(0).unwrap();
            events
                .into_iter()
                .map(|e| if e.kind == KIND_GAP { Event { time: gap_time, ..e } } else { e })
                .collect()
        };
        let whole = play().into_batch();
        assert!(
            whole.dropped > 0 && whole.coalesced > 0,
            "drops {}, folds {}",
            whole.dropped,
            whole.coalesced
        );
        for max in [1, 7, 64] {
            let parts: Vec<Batch> = play().into_batches(max).collect();
            assert!(parts.iter().all(|b| !b.events.is_empty() && b.events.len() <= max));
            let events: Vec<Event> = parts.iter().flat_map(|b| b.events.clone()).collect();
            assert!(unstamped(events) == unstamped(whole.events.clone()), "max {max}: other events");
            assert_eq!(parts.iter().map(|b| b.coalesced).sum::<u64>(), whole.coalesced);
            assert_eq!(parts.iter().map(|b| b.dropped).sum::<u64>(), whole.dropped);
        }
        assert_eq!(Ready::default().into_batches(10).count(), 0);
        assert!(Ready::default().into_batch().is_empty());
    }
}
