//! The durable spool: reports on disk until the collector acknowledged them.
//!
//! Layout of the spool directory (mode 0700, `<state_dir>/spool`):
//!
//! - `<sequence:020>-<batch_id>.zst`: one report each, its JSON as ONE zstd frame (level 3).
//!   The zero-padded sequence makes the name order the delivery order (reports without a
//!   sequence sort first, by `batch_id`, a time-ordered UUIDv7). One zstd frame per entry lets
//!   the shipper concatenate entries into a request body without recompressing them.
//! - `counters.json`: the drop counters, so `stats()` survives restarts.
//! - `rejected/`: reports the collector refused for good, kept for a human, bounded: malformed
//!   ones (poison), and those made as a host this agent no longer reports as (a certificate
//!   delivers only its own host's reports), and entries found unusable when the spool is
//!   opened (damaged, not a report, not a regular file), each with a `.reason` file.
//! - `.<name>.tmp`: a write in progress ([`guestward_core::state_file::write_atomic`]); a
//!   leftover from a crash is removed at open.
//!
//! Durability: an entry is written to a fresh temporary file (`O_EXCL`, `O_NOFOLLOW`, 0600),
//! fsync'd, renamed over its name and the directory fsync'd BEFORE [`Spool::push`] returns;
//! [`Spool::acknowledge`] deletes and fsyncs the directory. A kill -9 at any instant leaves
//! every pushed report whole and no partial entry under an entry's name.
//!
//! Bound: the entries' compressed sizes add up to at most `max_bytes`. When a push would pass
//! it, the spool drops, in this order, until it fits (the newest report is never thinned):
//!
//! 1. [`DropClass::SupersededSnapshot`]: the inventory sections (host, packages, network,
//!    cloud, fim) of a spooled report when a newer spooled report carries the same section
//!    (the entry is rewritten without them; `batch_id`, sequence, findings and events stay),
//!    oldest first;
//! 2. [`DropClass::NonFimEvents`]: events whose kind starts neither with `fim.` nor with
//!    `coverage.`, oldest report first;
//! 3. [`DropClass::Report`]: whole reports (their FIM events and findings), oldest first.
//!
//! Every drop is returned as a [`DropRecord`] (the daemon reports it as an event) and counted
//! in persistent counters. A report larger than `max_bytes` on its own is refused
//! ([`SpoolError::TooLarge`]) and counted as a dropped report.
//!
//! Disk refusal: when the entry of a new report cannot be written (`ENOSPC`, `EDQUOT`, a
//! read-only or failing filesystem), the spool holds its compressed bytes in memory instead,
//! at most [`MAX_HELD_BYTES`] (oldest dropped first, counted as dropped reports), delivered in
//! order with the entries on disk. Filling the disk that holds the state directory is a cheap
//! way to try to silence an agent; this way the reports still leave. Held reports are written
//! to disk, oldest first, at the next push that finds room, and are lost by a crash before
//! that (the FIM's failed baseline writes leave coverage gaps, so its next start rescans and
//! reports file changes again).
//!
//! Security: the directory may be tampered with by whoever can write it (root only, in
//! production). Entries are opened with `O_NOFOLLOW | O_NONBLOCK` and must be regular files
//! (a planted symlink is never followed, a FIFO never blocks), reads are capped, names that
//! are not ours are ignored (logged), and a `batch_id` that could not be a file name component
//! is refused at push.

use guestward_core::state_file::{StateFileError, write_atomic};
use guestward_core::{Event, Timestamp};
use guestward_report::Report;
use serde::de::{Error as _, IgnoredAny, MapAccess, Visitor};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// zstd level of spool entries: ~7x on report JSON at hundreds of MB/s.
pub const ZSTD_LEVEL: i32 = 3;
/// The largest report JSON the spool will decompress back (thinning, reading heads). Reports
/// are a few MB; this bounds memory against a hostile entry (a zstd bomb planted in the spool).
const MAX_DECOMPRESSED_BYTES: u64 = 512 << 20;
/// Entries up to this size are read at open whatever `max_bytes` is now.
const ENTRY_MIN_CAP: u64 = 64 << 20;
/// The counters file's cap.
const COUNTERS_MAX_BYTES: u64 = 64 << 10;
/// The longest `batch_id` accepted (a UUID is 36).
const MAX_BATCH_ID_LEN: usize = 128;
/// Most compressed bytes of reports held in memory while the disk refuses entries (see the
/// module documentation): some dozens of reports, a few MB of the daemon's budget.
pub const MAX_HELD_BYTES: u64 = 4 << 20;
/// Name of the drop counters file.
const COUNTERS_FILE: &str = "counters.json";
/// Name of the quarantine directory.
pub const REJECTED_DIR: &str = "rejected";
/// At most this many reports are kept in `rejected/` (oldest removed first).
pub const MAX_REJECTED: usize = 32;

/// Why the spool could not do what was asked. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool directory or an entry could not be read or written.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A report larger than the whole spool.
    #[error("report {batch_id} is {bytes} bytes compressed, more than spool_max_bytes ({max_bytes})")]
    TooLarge {
        /// The report.
        batch_id: String,
        /// Its compressed size.
        bytes: u64,
        /// The bound.
        max_bytes: u64,
    },
}

impl SpoolError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }

    fn invalid(path: &Path, message: String) -> Self {
        Self::io(path, std::io::Error::new(std::io::ErrorKind::InvalidData, message))
    }
}

impl From<StateFileError> for SpoolError {
    fn from(e: StateFileError) -> Self {
        match e {
            StateFileError::Io { path, source } => Self::Io { path, source },
            StateFileError::TooLarge { path, limit } => Self::Io {
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::FileTooLarge,
                    format!("larger than {limit} bytes"),
                ),
            },
        }
    }
}

/// The durable spool. See the module documentation.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    inner: Mutex<Inner>,
}

/// One spooled report, ready to send.
#[derive(Debug, Clone)]
pub struct SpooledBatch {
    /// The report's `batch_id`.
    pub batch_id: String,
    /// The host the report was made as (`agent.host_id`).
    pub host_id: Option<String>,
    /// The report's `sequence`.
    pub sequence: Option<u64>,
    /// The report's `collected_at`.
    pub collected_at: Timestamp,
    /// The report's JSON, zstd-compressed.
    pub compressed: Vec<u8>,
}

/// What a push did besides storing the report.
#[derive(Debug, Clone, Default)]
pub struct PushOutcome {
    /// What the size bound made the spool drop to make room, in drop order.
    pub dropped: Vec<DropRecord>,
    /// Why the report is held in memory rather than on disk (the disk refused its entry), if
    /// it is.
    pub held_in_memory: Option<String>,
}

/// One drop forced by `spool_max_bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropRecord {
    /// The report that lost something.
    pub batch_id: String,
    /// Its sequence.
    pub sequence: Option<u64>,
    /// What it lost.
    pub what: DropClass,
    /// How many events went with it.
    pub events: u64,
    /// How many findings went with it.
    pub findings: u64,
}

/// What is dropped, in the order it is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropClass {
    /// 1. The inventory sections of a report that a newer spooled report supersedes (its
    ///    events and findings stay).
    SupersededSnapshot,
    /// 2. Events other than FIM changes and coverage gaps, oldest report first.
    NonFimEvents,
    /// 3. A whole report: its FIM events and findings, oldest first.
    Report,
}

impl DropRecord {
    /// The `transport.spool_dropped` event that reports this drop.
    pub fn to_event(&self, time: Timestamp) -> Event {
        Event {
            kind: "transport.spool_dropped".to_string(),
            time,
            data: serde_json::json!({
                "batch_id": self.batch_id,
                "sequence": self.sequence,
                "what": self.what,
                "events": self.events,
                "findings": self.findings,
            }),
        }
    }
}

/// The persistent counters (`counters.json`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
struct Counters {
    superseded_snapshots_dropped_total: u64,
    events_dropped_total: u64,
    reports_dropped_total: u64,
    /// Reports refused at push because they alone exceed the bound (also in
    /// `reports_dropped_total`).
    too_large_total: u64,
    /// Reports moved to `rejected/`.
    rejected_total: u64,
}

/// Order of entries: sequence (0 when absent), then `batch_id`.
type Key = (u64, String);

/// An entry listed to send: key, host id, sequence, `collected_at`, compressed size, and the
/// bytes of a report held in memory.
type Listed = (Key, Option<String>, Option<u64>, Timestamp, u64, Option<Vec<u8>>);

#[derive(Debug)]
struct Entry {
    /// `agent.host_id`: a collector takes a host's reports only over that host's certificate,
    /// so one request never mixes hosts.
    host_id: Option<String>,
    sequence: Option<u64>,
    collected_at: Timestamp,
    bytes: u64,
    /// Bit set of the inventory sections present (bit 0 host, 1 packages, 2 network, 3 cloud,
    /// 4 fim); `None` until read (entries
    /// found at open are read lazily, only when the bound needs thinning).
    sections: Option<u8>,
    /// Already holds only FIM and coverage events (nothing for class 2 to take).
    fim_only: bool,
}

#[derive(Debug)]
struct Inner {
    entries: BTreeMap<Key, Entry>,
    /// Reports whose entry the disk refused, with their compressed bytes.
    held: BTreeMap<Key, HeldReport>,
    counters: Counters,
}

/// A report held in memory (see the module documentation).
#[derive(Debug)]
struct HeldReport {
    entry: Entry,
    compressed: Vec<u8>,
}

impl Inner {
    fn held_bytes(&self) -> u64 {
        self.held.values().map(|h| h.entry.bytes).sum()
    }
}

fn sections_of(r: &Report) -> u8 {
    let present =
        [r.host.is_some(), r.packages.is_some(), r.network.is_some(), r.cloud.is_some(), r.fim.is_some()];
    present.iter().enumerate().fold(0, |acc, (i, p)| if *p { acc | (1 << i) } else { acc })
}

fn drop_sections(r: &mut Report, mask: u8) {
    if mask & 1 != 0 {
        r.host = None;
    }
    if mask & 2 != 0 {
        r.packages = None;
    }
    if mask & 4 != 0 {
        r.network = None;
    }
    if mask & 8 != 0 {
        r.cloud = None;
    }
    if mask & 16 != 0 {
        r.fim = None;
    }
}

/// Events that survive class 2: file changes and coverage gaps.
pub fn is_fim_or_coverage(e: &Event) -> bool {
    e.kind.starts_with("fim.") || e.kind.starts_with("coverage.")
}

/// Whether `id` can be part of a file name: `[A-Za-z0-9_-]`, 1 to 128 characters.
fn valid_batch_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_BATCH_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn entry_name(key: &Key) -> String {
    format!("{:020}-{}.zst", key.0, key.1)
}

/// `<20 digits>-<batch_id>.zst` → the key; anything else is not an entry.
fn parse_entry_name(name: &str) -> Option<Key> {
    let stem = name.strip_suffix(".zst")?;
    let (seq, id) = stem.split_at_checked(20)?;
    let id = id.strip_prefix('-')?;
    if !seq.bytes().all(|b| b.is_ascii_digit()) || !valid_batch_id(id) {
        return None;
    }
    Some((seq.parse().ok()?, id.to_string()))
}

/// The report's JSON as one zstd frame.
pub fn compress_report(report: &Report) -> Result<Vec<u8>, std::io::Error> {
    let json = serde_json::to_vec(report).map_err(std::io::Error::other)?;
    zstd::bulk::compress(&json, ZSTD_LEVEL)
}

/// Decompresses a spooled entry, refusing more than `MAX_DECOMPRESSED_BYTES` of JSON.
fn decompress(compressed: &[u8], path: &Path) -> Result<Vec<u8>, SpoolError> {
    let decoder = zstd::stream::read::Decoder::new(compressed).map_err(|e| SpoolError::io(path, e))?;
    let mut out = Vec::new();
    decoder.take(MAX_DECOMPRESSED_BYTES + 1).read_to_end(&mut out).map_err(|e| SpoolError::io(path, e))?;
    if u64::try_from(out.len()).unwrap_or(u64::MAX) > MAX_DECOMPRESSED_BYTES {
        return Err(SpoolError::invalid(
            path,
            format!("decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes"),
        ));
    }
    Ok(out)
}

/// Reads an entry: a regular file (no symlink followed, a FIFO refused without blocking), at
/// most `limit` bytes.
fn read_entry(path: &Path, limit: u64) -> Result<Vec<u8>, SpoolError> {
    guestward_core::read_regular_file_capped(path, limit, false)
        .map_err(|e| SpoolError::io(path, std::io::Error::other(e.to_string())))
}

/// The head of a report: the fields written before the sections.
#[derive(Debug, Default)]
struct Head {
    host_id: Option<String>,
    batch_id: Option<String>,
    sequence: Option<u64>,
    collected_at: Option<Timestamp>,
}

/// The one field of `agent` the spool needs (serialized before `batch_id`).
#[derive(serde::Deserialize)]
struct AgentHead {
    #[serde(default)]
    host_id: Option<String>,
}

/// Reads the report's JSON only as far as `collected_at` (serialized before the sections), so
/// opening a full spool does not decompress and parse every report.
struct HeadVisitor<'a>(&'a mut Head);

const HEAD_DONE: &str = "guestward spool: head read";

impl<'de> Visitor<'de> for HeadVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a report object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "agent" => self.0.host_id = map.next_value::<AgentHead>()?.host_id,
                "batch_id" => self.0.batch_id = Some(map.next_value()?),
                "sequence" => self.0.sequence = map.next_value()?,
                "collected_at" => self.0.collected_at = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            // `sequence` is written before `collected_at` (absent when none): once the id and
            // the time are read, stop rather than parse the sections.
            if self.0.batch_id.is_some() && self.0.collected_at.is_some() {
                return Err(A::Error::custom(HEAD_DONE));
            }
        }
        Ok(())
    }
}

/// The head of the entry at `path` and its size, streamed from the file: only as much is
/// decompressed as the head takes (a whole 250 MB entry planted or damaged was once read into
/// memory at start), and an entry over `limit` bytes is refused unread.
fn read_entry_head(path: &Path, limit: u64) -> Result<(Head, u64), SpoolError> {
    let file = guestward_core::open_regular_file(path, false)
        .map_err(|e| SpoolError::io(path, std::io::Error::other(e.to_string())))?;
    let len = file.metadata().map_err(|e| SpoolError::io(path, e))?.len();
    if len > limit {
        return Err(SpoolError::invalid(
            path,
            format!("{len} bytes, more than any spooled report ({limit})"),
        ));
    }
    Ok((read_head(file.take(limit), path)?, len))
}

fn read_head(compressed: impl Read, path: &Path) -> Result<Head, SpoolError> {
    let decoder = zstd::stream::read::Decoder::new(compressed).map_err(|e| SpoolError::io(path, e))?;
    let mut head = Head::default();
    let mut de = serde_json::Deserializer::from_reader(decoder.take(MAX_DECOMPRESSED_BYTES));
    let parsed = serde::Deserializer::deserialize_map(&mut de, HeadVisitor(&mut head));
    if head.collected_at.is_none() {
        let why = match parsed {
            Err(e) => e.to_string(),
            Ok(()) => "no collected_at".to_string(),
        };
        return Err(SpoolError::invalid(path, format!("not a zstd-compressed spooled report: {why}")));
    }
    Ok(head)
}

fn fsync_dir(dir: &Path) -> Result<(), SpoolError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| SpoolError::io(dir, e))
}

fn is_leftover_temp(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

impl Spool {
    /// Opens (creating, mode 0700) the spool in `dir`.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        create_private_dir(dir)?;
        let mut counters = read_counters(&dir.join(COUNTERS_FILE));
        let mut set_aside_any = false;
        let mut entries = BTreeMap::new();
        let listing = std::fs::read_dir(dir).map_err(|e| SpoolError::io(dir, e))?;
        let mut removed_temp = false;
        for item in listing {
            let item = item.map_err(|e| SpoolError::io(dir, e))?;
            let path = item.path();
            let Some(name) = item.file_name().to_str().map(str::to_string) else {
                tracing::warn!(path = %path.display(), "spool: ignoring a file whose name is not ours");
                continue;
            };
            if name == COUNTERS_FILE || name == REJECTED_DIR {
                continue;
            }
            if is_leftover_temp(&name) {
                // A write cut short by a crash: its report was never acknowledged to the
                // pipeline (push had not returned), so removing it loses nothing.
                match std::fs::remove_file(&path) {
                    Ok(()) => removed_temp = true,
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "spool: cannot remove a leftover temporary file")
                    }
                }
                continue;
            }
            let Some(key) = parse_entry_name(&name) else {
                tracing::warn!(path = %path.display(), "spool: ignoring a file whose name is not ours");
                continue;
            };
            // Capped (a planted huge file is not read into memory), but not below 64 MiB: the
            // bound may have been lowered since the entry was written, and the next push then
            // drops what no longer fits rather than the entry being forgotten.
            let head = read_entry_head(&path, max_bytes.max(ENTRY_MIN_CAP));
            let unusable = match head {
                Ok((head, len)) if head.batch_id.as_deref() == Some(key.1.as_str()) => {
                    let entry = Entry {
                        host_id: head.host_id,
                        sequence: head.sequence.or((key.0 > 0).then_some(key.0)),
                        collected_at: head.collected_at.unwrap_or_else(Timestamp::now),
                        bytes: len,
                        sections: None,
                        fim_only: false,
                    };
                    entries.insert(key, entry);
                    continue;
                }
                Ok(_) => "its batch_id does not match its name".to_string(),
                Err(e) => e.to_string(),
            };
            // Set aside, counted and with the reason beside it, rather than left in the queue
            // unseen: `agentctl status` shows the rejected count (an entry that is not a report
            // once sat in the spool with "0 reports" shown and a WARN line only).
            let reason = format!("unusable when the agent started: {unusable}");
            tracing::warn!(path = %path.display(), reason, "spool: an entry was set aside in rejected/");
            match set_aside(dir, &name, &reason) {
                Ok(()) => {
                    counters.rejected_total += 1;
                    set_aside_any = true;
                }
                Err(e) => tracing::warn!(error = %e, "spool: cannot set the entry aside; it is ignored"),
            }
        }
        if removed_temp {
            fsync_dir(dir)?;
        }
        let spool = Self {
            dir: dir.to_path_buf(),
            max_bytes,
            inner: Mutex::new(Inner { entries, held: BTreeMap::new(), counters }),
        };
        if set_aside_any {
            let counters = spool.lock().counters.clone();
            spool.save_counters(&counters)?;
        }
        Ok(spool)
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The highest report sequence number the spool holds (on disk or in memory), if any.
    pub fn highest_sequence(&self) -> Option<u64> {
        let inner = self.lock();
        inner.entries.values().chain(inner.held.values().map(|h| &h.entry)).filter_map(|e| e.sequence).max()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the index as consistent as the files (every
        // change is written before the index is updated): keep going.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores `report` durably; returns once it is on disk (fsync'd).
    pub fn push(&self, report: &Report) -> Result<PushOutcome, SpoolError> {
        self.push_then(report, || {})
    }

    /// [`Self::push`], running `on_spooled` once the report is in the spool (on disk, or held
    /// in memory) and before any reader can see it: the spool's lock is held across it, so
    /// the shipper cannot deliver (and acknowledge, deleting it) the report before
    /// `on_spooled` returns. The daemon stores the report's sequence number there, so a crash
    /// can neither leave a number taken by no report (a gap the collector counts as a lost
    /// report) nor forget one a delivered report took. `on_spooled` does not run when the
    /// report is refused.
    pub fn push_then(&self, report: &Report, on_spooled: impl FnOnce()) -> Result<PushOutcome, SpoolError> {
        if !valid_batch_id(&report.batch_id) {
            return Err(SpoolError::invalid(
                &self.dir,
                format!(
                    "batch_id `{}` is not 1 to 128 of [A-Za-z0-9_-]; not spooled",
                    report.batch_id.escape_debug()
                ),
            ));
        }
        let key: Key = (report.sequence.unwrap_or(0), report.batch_id.clone());
        let path = self.dir.join(entry_name(&key));
        let compressed = compress_report(report).map_err(|e| SpoolError::io(&path, e))?;
        let bytes = u64::try_from(compressed.len()).unwrap_or(u64::MAX);
        let mut inner = self.lock();
        if bytes > self.max_bytes {
            inner.counters.too_large_total += 1;
            inner.counters.reports_dropped_total += 1;
            self.save_counters(&inner.counters)?;
            tracing::warn!(batch_id = %report.batch_id, bytes, max_bytes = self.max_bytes, "spool: a report larger than spool_max_bytes was dropped");
            return Err(SpoolError::TooLarge {
                batch_id: report.batch_id.clone(),
                bytes,
                max_bytes: self.max_bytes,
            });
        }
        let entry = Entry {
            host_id: report.agent.host_id.clone(),
            sequence: report.sequence,
            collected_at: report.collected_at,
            bytes,
            sections: Some(sections_of(report)),
            fim_only: report.events.iter().all(is_fim_or_coverage),
        };
        // Reports held since the disk refused them go first: the disk may have room again.
        if !inner.held.is_empty() {
            self.persist_held(&mut inner);
        }
        let written = if inner.held.is_empty() {
            write_atomic(&path, bytes, |w| w.write_all(&compressed)).map_err(SpoolError::from)
        } else {
            Err(SpoolError::io(&path, std::io::Error::other("older reports are still held in memory")))
        };
        if let Err(e) = written {
            let outcome = self.hold(&mut inner, key, entry, compressed, &e);
            on_spooled();
            return Ok(outcome);
        }
        inner.entries.insert(key, entry);
        on_spooled();
        // The report is durable from here on: a failure while making room is logged, not
        // returned (the caller would take the report for lost, and the bound is enforced
        // again at the next push).
        let mut dropped = Vec::new();
        if let Err(e) = self.make_room(&mut inner, &mut dropped) {
            tracing::warn!(error = %e, "spool: cannot make room under spool_max_bytes; over the bound until the next push");
        }
        if !dropped.is_empty() {
            if let Err(e) = self.save_counters(&inner.counters) {
                tracing::warn!(error = %e, "spool: drop counters not saved");
            }
            for d in &dropped {
                tracing::warn!(batch_id = %d.batch_id, what = ?d.what, events = d.events, findings = d.findings, "spool full (spool_max_bytes): dropped");
            }
        }
        Ok(PushOutcome { dropped, held_in_memory: None })
    }

    /// Keeps a report whose entry the disk refused (`why`) in memory, dropping the oldest held
    /// reports past [`MAX_HELD_BYTES`] (the newest is always kept: it carries what is pending).
    fn hold(
        &self,
        inner: &mut Inner,
        key: Key,
        entry: Entry,
        compressed: Vec<u8>,
        why: &SpoolError,
    ) -> PushOutcome {
        let mut dropped = Vec::new();
        inner.held.insert(key.clone(), HeldReport { entry, compressed });
        while inner.held_bytes() > MAX_HELD_BYTES && inner.held.len() > 1 {
            let Some((old_key, old)) = inner.held.pop_first() else { break };
            let (events, findings) = match decompress(&old.compressed, &self.dir)
                .ok()
                .and_then(|json| serde_json::from_slice::<Report>(&json).ok())
            {
                Some(r) => (r.events.len(), r.findings.len()),
                None => (0, 0),
            };
            inner.counters.reports_dropped_total += 1;
            dropped.push(DropRecord {
                batch_id: old_key.1,
                sequence: old.entry.sequence,
                what: DropClass::Report,
                events: u64::try_from(events).unwrap_or(u64::MAX),
                findings: u64::try_from(findings).unwrap_or(u64::MAX),
            });
        }
        let why = why.to_string();
        tracing::warn!(
            batch_id = %key.1,
            held = inner.held.len(),
            error = %why,
            "spool: the disk refused the report; it is held in memory until delivered or written (a crash before either loses it)"
        );
        PushOutcome { dropped, held_in_memory: Some(why) }
    }

    /// Writes the reports held in memory to disk, oldest first, as far as the disk takes them
    /// (the daemon calls it as it stops). Returns how many are still held.
    pub fn write_held(&self) -> usize {
        let mut inner = self.lock();
        self.persist_held(&mut inner);
        inner.held.len()
    }

    /// Writes held reports to disk, oldest first, until one is refused.
    fn persist_held(&self, inner: &mut Inner) {
        while let Some((key, held)) = inner.held.pop_first() {
            let path = self.dir.join(entry_name(&key));
            match write_atomic(&path, held.entry.bytes, |w| w.write_all(&held.compressed)) {
                Ok(()) => {
                    tracing::info!(batch_id = %key.1, "spool: a report held in memory is on disk now");
                    inner.entries.insert(key, held.entry);
                }
                Err(_) => {
                    inner.held.insert(key, held);
                    return;
                }
            }
        }
    }

    /// The bytes of the entries on disk (what `max_bytes` bounds).
    fn total_bytes(inner: &Inner) -> u64 {
        inner.entries.values().map(|e| e.bytes).sum()
    }

    /// Drops by class until the entries fit in `max_bytes`. The newest entry is never touched.
    fn make_room(&self, inner: &mut Inner, dropped: &mut Vec<DropRecord>) -> Result<(), SpoolError> {
        if Self::total_bytes(inner) <= self.max_bytes {
            return Ok(());
        }
        let keys: Vec<Key> = inner.entries.keys().cloned().collect();
        let Some((_newest, older)) = keys.split_last() else { return Ok(()) };
        // 1. Superseded snapshots, oldest first.
        for (i, key) in older.iter().enumerate() {
            if Self::total_bytes(inner) <= self.max_bytes {
                return Ok(());
            }
            let mine = self.sections_of_entry(inner, key);
            if mine == 0 {
                continue;
            }
            let mut newer = 0u8;
            for k in &keys[i + 1..] {
                newer |= self.sections_of_entry(inner, k);
            }
            let superseded = mine & newer;
            if superseded == 0 {
                continue;
            }
            if let Some(record) = self.rewrite(inner, key, |r| {
                drop_sections(r, superseded);
                Some((DropClass::SupersededSnapshot, 0, 0))
            })? {
                inner.counters.superseded_snapshots_dropped_total += 1;
                dropped.push(record);
            }
        }
        // 2. Events other than FIM changes and coverage gaps, oldest report first.
        for key in older {
            if Self::total_bytes(inner) <= self.max_bytes {
                return Ok(());
            }
            if inner.entries.get(key).is_none_or(|e| e.fim_only) {
                continue;
            }
            if let Some(record) = self.rewrite(inner, key, |r| {
                let before = r.events.len();
                r.events.retain(is_fim_or_coverage);
                let n = u64::try_from(before - r.events.len()).unwrap_or(u64::MAX);
                (n > 0).then_some((DropClass::NonFimEvents, n, 0))
            })? {
                inner.counters.events_dropped_total += record.events;
                dropped.push(record);
            }
        }
        // 3. Whole reports, oldest first.
        for key in older {
            if Self::total_bytes(inner) <= self.max_bytes {
                return Ok(());
            }
            let Some(entry) = inner.entries.get(key) else { continue };
            let path = self.dir.join(entry_name(key));
            let (events, findings) = match self.load(&path, entry.bytes) {
                Ok(r) => (r.events.len(), r.findings.len()),
                Err(_) => (0, 0),
            };
            let sequence = entry.sequence;
            remove_file(&path)?;
            fsync_dir(&self.dir)?;
            inner.entries.remove(key);
            inner.counters.reports_dropped_total += 1;
            dropped.push(DropRecord {
                batch_id: key.1.clone(),
                sequence,
                what: DropClass::Report,
                events: u64::try_from(events).unwrap_or(u64::MAX),
                findings: u64::try_from(findings).unwrap_or(u64::MAX),
            });
        }
        Ok(())
    }

    /// The sections an entry holds, reading it when not yet known (0 when unreadable).
    fn sections_of_entry(&self, inner: &mut Inner, key: &Key) -> u8 {
        let Some(entry) = inner.entries.get(key) else { return 0 };
        if let Some(s) = entry.sections {
            return s;
        }
        let path = self.dir.join(entry_name(key));
        let sections = match self.load(&path, entry.bytes) {
            Ok(r) => sections_of(&r),
            Err(e) => {
                tracing::warn!(error = %e, "spool: cannot read an entry to thin it");
                0
            }
        };
        if let Some(entry) = inner.entries.get_mut(key) {
            entry.sections = Some(sections);
        }
        sections
    }

    fn load(&self, path: &Path, bytes: u64) -> Result<Report, SpoolError> {
        let compressed = read_entry(path, bytes.max(self.max_bytes))?;
        let json = decompress(&compressed, path)?;
        serde_json::from_slice(&json).map_err(|e| SpoolError::invalid(path, format!("not a report: {e}")))
    }

    /// Rewrites an entry with `change` applied (durably, same name); `change` says what was
    /// dropped, or `None` when nothing was (the entry is then left alone).
    fn rewrite(
        &self,
        inner: &mut Inner,
        key: &Key,
        change: impl FnOnce(&mut Report) -> Option<(DropClass, u64, u64)>,
    ) -> Result<Option<DropRecord>, SpoolError> {
        let Some(entry) = inner.entries.get(key) else { return Ok(None) };
        let path = self.dir.join(entry_name(key));
        let mut report = match self.load(&path, entry.bytes) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "spool: cannot read an entry to thin it");
                return Ok(None);
            }
        };
        let outcome = change(&mut report);
        let sections = sections_of(&report);
        let fim_only = report.events.iter().all(is_fim_or_coverage);
        let Some((what, events, findings)) = outcome else {
            if let Some(e) = inner.entries.get_mut(key) {
                e.sections = Some(sections);
                e.fim_only = fim_only;
            }
            return Ok(None);
        };
        let compressed = compress_report(&report).map_err(|e| SpoolError::io(&path, e))?;
        let bytes = u64::try_from(compressed.len()).unwrap_or(u64::MAX);
        write_atomic(&path, bytes, |w| w.write_all(&compressed))?;
        if let Some(e) = inner.entries.get_mut(key) {
            e.bytes = bytes;
            e.sections = Some(sections);
            e.fim_only = fim_only;
        }
        Ok(Some(DropRecord { batch_id: key.1.clone(), sequence: report.sequence, what, events, findings }))
    }

    /// The spooled reports, oldest (lowest sequence) first, up to `max_bytes` compressed (at
    /// least one, however large), all made as the same host as the oldest (the collector
    /// refuses a request that holds another host's report, so the refusal of one request is
    /// always about one host). An entry that became unreadable (removed or replaced behind
    /// the spool's back) leaves the queue, logged and counted as a dropped report, instead of
    /// stalling it.
    pub fn pending(&self, max_bytes: u64) -> Result<Vec<SpooledBatch>, SpoolError> {
        // Listed under the lock, read outside it: a push (fsync) is not held up by reading.
        // Held reports are copied under it (they are in memory), in order with the entries.
        let listed: Vec<Listed> = {
            let inner = self.lock();
            let mut all: Vec<(&Key, &Entry, Option<&Vec<u8>>)> = inner
                .entries
                .iter()
                .map(|(k, e)| (k, e, None))
                .chain(inner.held.iter().map(|(k, h)| (k, &h.entry, Some(&h.compressed))))
                .collect();
            all.sort_by(|a, b| a.0.cmp(b.0));
            let mut total = 0u64;
            let mut out = Vec::new();
            let host = all.first().map(|(_, e, _)| e.host_id.clone());
            for (key, e, held) in all {
                if !out.is_empty() && total.saturating_add(e.bytes) > max_bytes {
                    break;
                }
                if host.as_ref() != Some(&e.host_id) {
                    break;
                }
                total = total.saturating_add(e.bytes);
                out.push((
                    key.clone(),
                    e.host_id.clone(),
                    e.sequence,
                    e.collected_at,
                    e.bytes,
                    held.cloned(),
                ));
            }
            out
        };
        let mut batches = Vec::with_capacity(listed.len());
        for (key, host_id, sequence, collected_at, bytes, held) in listed {
            if let Some(compressed) = held {
                batches.push(SpooledBatch { batch_id: key.1, host_id, sequence, collected_at, compressed });
                continue;
            }
            let path = self.dir.join(entry_name(&key));
            match read_entry(&path, bytes.max(self.max_bytes)) {
                Ok(compressed) => batches.push(SpooledBatch {
                    batch_id: key.1,
                    host_id,
                    sequence,
                    collected_at,
                    compressed,
                }),
                Err(e) => {
                    // Acknowledged or dropped since it was listed: nothing to say. Otherwise the
                    // file was removed or replaced behind the spool's back (a FIFO, a symlink):
                    // it can never be sent, so it leaves the index rather than stall the queue.
                    let mut inner = self.lock();
                    if inner.entries.remove(&key).is_some() {
                        inner.counters.reports_dropped_total += 1;
                        tracing::warn!(error = %e, "spool: an entry became unreadable; dropped from the queue");
                    }
                }
            }
        }
        Ok(batches)
    }

    /// Deletes acknowledged reports (durably). Unknown ids are ignored.
    pub fn acknowledge(&self, batch_ids: &[String]) -> Result<(), SpoolError> {
        let mut inner = self.lock();
        inner.held.retain(|k, _| !batch_ids.contains(&k.1));
        let keys: Vec<Key> = inner.entries.keys().filter(|k| batch_ids.contains(&k.1)).cloned().collect();
        if keys.is_empty() {
            return Ok(());
        }
        for key in &keys {
            remove_file(&self.dir.join(entry_name(key)))?;
            inner.entries.remove(key);
        }
        fsync_dir(&self.dir)
    }

    /// The host the newest spooled report was made as: the host this agent reports as now
    /// (`None` when the spool is empty; `Some(None)` when that report names no host).
    pub fn newest_host_id(&self) -> Option<Option<String>> {
        let inner = self.lock();
        let newest_entry = inner.entries.last_key_value();
        let newest_held = inner.held.last_key_value().map(|(k, h)| (k, &h.entry));
        match (newest_entry, newest_held) {
            (Some(a), Some(b)) => Some(if a.0 >= b.0 { a.1 } else { b.1 }.host_id.clone()),
            (a, b) => a.or(b).map(|(_, e)| e.host_id.clone()),
        }
    }

    /// Moves a report the collector refused for good (malformed, or made as another host than
    /// this agent reports as now) to `rejected/` so the queue moves on (kept for a human, at
    /// most [`MAX_REJECTED`], oldest removed first), with `reason` beside it. Counted. Unknown
    /// ids are ignored.
    pub fn reject(&self, batch_id: &str, reason: &str) -> Result<(), SpoolError> {
        let mut inner = self.lock();
        if let Some(key) = inner.held.keys().find(|k| k.1 == batch_id).cloned() {
            // Held because the disk refused it: there is no room for `rejected/` either.
            inner.held.remove(&key);
            inner.counters.rejected_total += 1;
            tracing::warn!(batch_id, reason, "spool: the collector refused a report held in memory; dropped");
            return Ok(());
        }
        let Some(key) = inner.entries.keys().find(|k| k.1 == batch_id).cloned() else { return Ok(()) };
        set_aside(&self.dir, &entry_name(&key), reason)?;
        inner.entries.remove(&key);
        inner.counters.rejected_total += 1;
        self.save_counters(&inner.counters)?;
        Ok(())
    }

    /// Depth, size, oldest report and drop counters.
    pub fn stats(&self) -> guestward_report::protocol::SpoolStatus {
        let inner = self.lock();
        let oldest_on_disk = inner.entries.values().next().map(|e| e.collected_at);
        let oldest_held = inner.held.values().next().map(|h| h.entry.collected_at);
        guestward_report::protocol::SpoolStatus {
            reports: u64::try_from(inner.entries.len() + inner.held.len()).unwrap_or(u64::MAX),
            bytes: Self::total_bytes(&inner) + inner.held_bytes(),
            max_bytes: self.max_bytes,
            oldest_collected_at: match (oldest_on_disk, oldest_held) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            superseded_snapshots_dropped_total: inner.counters.superseded_snapshots_dropped_total,
            events_dropped_total: inner.counters.events_dropped_total,
            reports_dropped_total: inner.counters.reports_dropped_total,
            rejected_total: inner.counters.rejected_total,
            held_in_memory: u64::try_from(inner.held.len()).unwrap_or(u64::MAX),
        }
    }

    /// Reports moved to `rejected/` (poison: refused by the collector as malformed), since the
    /// spool was created.
    pub fn rejected_total(&self) -> u64 {
        self.lock().counters.rejected_total
    }

    /// Reports refused at push because they alone exceed `max_bytes`, since the spool was
    /// created (also counted in `reports_dropped_total`).
    pub fn too_large_total(&self) -> u64 {
        self.lock().counters.too_large_total
    }

    /// Reports waiting.
    pub fn len(&self) -> usize {
        let inner = self.lock();
        inner.entries.len() + inner.held.len()
    }

    /// Whether no report is waiting.
    pub fn is_empty(&self) -> bool {
        let inner = self.lock();
        inner.entries.is_empty() && inner.held.is_empty()
    }

    /// Reports held in memory because the disk refused their entries.
    pub fn held_in_memory(&self) -> usize {
        self.lock().held.len()
    }

    fn save_counters(&self, counters: &Counters) -> Result<(), SpoolError> {
        let json =
            serde_json::to_vec(counters).map_err(|e| SpoolError::io(&self.dir, std::io::Error::other(e)))?;
        write_atomic(&self.dir.join(COUNTERS_FILE), COUNTERS_MAX_BYTES, |w| w.write_all(&json))?;
        Ok(())
    }
}

fn remove_file(path: &Path) -> Result<(), SpoolError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SpoolError::io(path, e)),
    }
}

/// Creates `dir` mode 0700 (parents too); an existing directory is tightened to 0700. A
/// symlink in its place is refused: the spool would otherwise be written wherever it points.
fn create_private_dir(dir: &Path) -> Result<(), SpoolError> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_dir() => {
            if m.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(|e| SpoolError::io(dir, e))?;
            }
            Ok(())
        }
        Ok(m) => Err(SpoolError::invalid(
            dir,
            format!("is a {:?}, not a directory; remove it or choose another state_dir", m.file_type()),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| SpoolError::io(dir, e)),
        Err(e) => Err(SpoolError::io(dir, e)),
    }
}

/// Counters from disk; missing or unreadable counters start at zero (logged when unreadable).
fn read_counters(path: &Path) -> Counters {
    match guestward_core::read_regular_file_capped(path, COUNTERS_MAX_BYTES, false) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "spool: drop counters unreadable; starting from zero");
            Counters::default()
        }),
        Err(guestward_core::HostFsError::NotFound { .. }) => Counters::default(),
        Err(e) => {
            tracing::warn!(error = %e, "spool: drop counters unreadable; starting from zero");
            Counters::default()
        }
    }
}

/// Moves the entry `name` of the spool in `dir` to `rejected/`, with `reason` beside it (kept
/// for a human; the oldest pruned past [`MAX_REJECTED`]).
fn set_aside(dir: &Path, name: &str, reason: &str) -> Result<(), SpoolError> {
    let rejected = dir.join(REJECTED_DIR);
    create_private_dir(&rejected)?;
    let reason_path = rejected.join(format!("{name}.reason"));
    let mut text = reason.as_bytes().to_vec();
    text.truncate(64 << 10);
    write_atomic(&reason_path, 64 << 10, |w| w.write_all(&text))?;
    let target = rejected.join(name);
    std::fs::rename(dir.join(name), &target).map_err(|e| SpoolError::io(&target, e))?;
    fsync_dir(&rejected)?;
    fsync_dir(dir)?;
    prune_rejected(&rejected);
    Ok(())
}

/// Keeps the newest [`MAX_REJECTED`] reports in `rejected/` (names sort by sequence).
fn prune_rejected(dir: &Path) {
    let Ok(listing) = std::fs::read_dir(dir) else { return };
    let mut names: Vec<String> = listing
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| parse_entry_name(n).is_some())
        .collect();
    names.sort_unstable();
    let excess = names.len().saturating_sub(MAX_REJECTED);
    for name in names.iter().take(excess) {
        let _ = std::fs::remove_file(dir.join(name));
        let _ = std::fs::remove_file(dir.join(format!("{name}.reason")));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn entry_names_round_trip_and_foreign_names_are_refused() {
        let key = (42, "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".to_string());
        assert_eq!(parse_entry_name(&entry_name(&key)), Some(key));
        for bad in [
            "x.zst",
            "00000000000000000042-.zst",
            "00000000000000000042-a/b.zst",
            "0000000000000000004x-a.zst",
            "00000000000000000042-a.zst.tmp",
        ] {
            assert_eq!(parse_entry_name(bad), None, "{bad}");
        }
        assert!(!valid_batch_id("../../etc"));
        assert!(valid_batch_id("abc-DEF_1"));
    }

    #[test]
    fn the_head_is_read_without_the_sections() {
        let mut r = Report::new(
            guestward_report::AgentInfo {
                version: "t".into(),
                host_id: Some("h".into()),
                host_id_source: guestward_report::HostIdSource::Config,
            },
            Timestamp::from_unix_secs(1_700_000_000).unwrap(),
        );
        r.sequence = Some(7);
        let compressed = compress_report(&r).unwrap();
        let head = read_head(compressed.as_slice(), Path::new("x")).unwrap();
        assert_eq!(head.batch_id.as_deref(), Some(r.batch_id.as_str()));
        assert_eq!(head.sequence, Some(7));
        assert_eq!(head.collected_at, Some(r.collected_at));
        assert!(read_head(&b"not zstd"[..], Path::new("x")).is_err());
    }
}
