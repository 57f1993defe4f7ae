//! What the engine tells the rest of the agent: typed payloads of `fim.change` and
//! `coverage.gap` events, status, and how paths are printed.

use crate::config::Attribute;
use crate::model::FileKind;
use guestward_core::{Event, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Event kind of a file change.
pub const KIND_CHANGE: &str = "fim.change";
/// Event kind of a coverage gap.
pub const KIND_GAP: &str = "coverage.gap";
/// Event kind of a package transaction's changes, folded into one event
/// ([`crate::package::TransactionEvent`]).
pub const KIND_PACKAGE_TRANSACTION: &str = "fim.package_transaction";

/// A path as text (`\xNN` for what is not printable UTF-8; see
/// [`guestward_core::text::escape_path`]).
pub use guestward_core::text::escape_path;

/// The inverse of [`escape_path`].
pub fn unescape_path(text: &str) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (b'\\', Some(b'\\')) => {
                out.push(b'\\');
                i += 2;
            }
            (b'\\', Some(b'x')) => {
                match text.get(i + 2..i + 4).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 4;
                    }
                    None => {
                        out.push(b'\\');
                        i += 1;
                    }
                }
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    std::path::PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// How a change was detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// An inotify event (including the scan of a directory that just appeared).
    Realtime,
    /// A verification rescan (scheduled, after an overflow, for unwatched trees, or `fim check`).
    Rescan,
}

/// What happened to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Not in the baseline, now present.
    Added,
    /// In the baseline, now gone.
    Removed,
    /// Present in both with different checked attributes (see `changed`).
    Modified,
    /// Moved from `old_path` (seen as one inotify rename).
    Renamed,
}

/// Attributes of one version of a file, as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Attributes {
    /// Type.
    #[serde(rename = "type")]
    pub kind: FileKind,
    /// Permission bits in octal, e.g. `0644`.
    pub mode: String,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Change time, ns since the epoch.
    pub ctime_ns: i64,
    /// Inode number.
    pub inode: u64,
    /// Symlink target, escaped like paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
    /// SHA-256, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// BLAKE3, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    /// Extended attribute names with hex values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xattrs: Option<Vec<(String, String)>>,
    /// Larger than the size cap: not hashed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hash_skipped: bool,
    /// Changed while being hashed on every attempt.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unstable: bool,
    /// Content could not be read.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unreadable: bool,
}

/// Payload of a `fim.change` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FimChange {
    /// The path as seen by the monitored system, escaped (see [`escape_path`]).
    pub path: String,
    /// For renames: where it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_path: Option<String>,
    /// What happened.
    pub change: ChangeKind,
    /// Checked attributes that differ (for `modified` and `renamed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<Attribute>,
    /// Baseline attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<Attributes>,
    /// Current attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<Attributes>,
    /// Realtime or rescan.
    pub mechanism: Mechanism,
    /// The configured path of the rule that governs this file.
    pub rule: String,
    /// Set when the path lived shorter than the debounce: it appeared and was gone again
    /// before it could be examined. Such a path is reported twice, as `added` (with the
    /// attributes captured while it existed, in `new`, when there was time to capture them)
    /// and then as `removed` (the same attributes in `old`), both carrying this. Two ordinary
    /// events rather than a kind of its own, so that a rule alerting on any file added to,
    /// say, `/etc/sudoers.d` fires for a file dropped there and deleted 5 ms later too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transient: Option<Transient>,
    /// Each attribute in `changed` with its baseline and current value, as text (the values
    /// of `old` and `new`, formatted: `mode` `0644`, `sha256` hex, `mtime` RFC 3339 with
    /// nanoseconds). Filled by the agent that saw the change; events stored by an older agent
    /// lack it ([`FimChange::value_changes`] derives it from `old` and `new`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AttributeChange>,
    /// The parent directory's own change, folded into this entry: its only changed attributes
    /// were `mtime`/`ctime`, moved because this entry was added, removed, renamed or replaced
    /// in it, so the directory is not reported on its own (AIDE lists it separately). Every
    /// entry that changed in that directory carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folded_parent: Option<FoldedParent>,
    /// The package that owns the path and where the change came from (package-aware FIM);
    /// absent for files no package owns, or when no package oracle was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<crate::package::PackageAttribution>,
}

/// One changed attribute with its old (baseline) and new (current) value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AttributeChange {
    /// The attribute (`mode`, `sha256`, `size`, `uid`...).
    pub name: Attribute,
    /// Its baseline value (absent when the baseline did not record it).
    pub old: Option<String>,
    /// Its current value (absent when not recorded now).
    pub new: Option<String>,
}

/// A directory change folded into the entries added or removed in it (see
/// [`FimChange::folded_parent`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FoldedParent {
    /// The directory (escaped like paths).
    pub path: String,
    /// Its changed attributes (only `mtime` and `ctime`), old and new.
    pub attributes: Vec<AttributeChange>,
}

/// Attributes that a directory changes on its own whenever an entry is created, removed or
/// renamed in it: a directory whose only differences are these is folded into those entries.
pub const DIRECTORY_TIMESTAMPS: &[Attribute] = &[Attribute::Mtime, Attribute::Ctime];

/// The value of one attribute as text, or `None` when it was not recorded.
pub fn attribute_value(a: Attribute, v: &Attributes) -> Option<String> {
    let time = |ns: i64| match Timestamp::from_unix_nanos(ns) {
        Some(t) => t.0.to_string(),
        None => format!("{ns} ns"),
    };
    match a {
        Attribute::Sha256 => v.sha256.clone(),
        Attribute::Blake3 => v.blake3.clone(),
        Attribute::Mode => Some(v.mode.clone()),
        Attribute::Uid => Some(v.uid.to_string()),
        Attribute::Gid => Some(v.gid.to_string()),
        Attribute::Size => Some(v.size.to_string()),
        Attribute::Mtime => Some(time(v.mtime_ns)),
        Attribute::Ctime => Some(time(v.ctime_ns)),
        Attribute::Inode => Some(v.inode.to_string()),
        Attribute::LinkTarget => v.link_target.clone(),
        Attribute::Xattrs => v.xattrs.as_ref().map(|x| {
            if x.is_empty() {
                "none".to_string()
            } else {
                x.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(",")
            }
        }),
        Attribute::Type => Some(v.kind.as_str().to_string()),
    }
}

/// Longest value shown on a terminal before it is cut (`xattrs`, link targets); `--json` has
/// every value in full.
const MAX_SHOWN_VALUE_CHARS: usize = 64;
/// Hex digits of a hash shown on a terminal (`sha256: 5891b5b522d5… -> 6052eef1a76d…`).
const SHOWN_HASH_DIGITS: usize = 12;

/// A value for a terminal: hashes abbreviated, long values cut, `-` for none.
fn shown_value(a: Attribute, v: Option<&str>) -> String {
    let Some(v) = v else { return "-".to_string() };
    let keep = match a {
        Attribute::Sha256 | Attribute::Blake3 => SHOWN_HASH_DIGITS,
        _ => MAX_SHOWN_VALUE_CHARS,
    };
    if v.chars().count() > keep {
        let cut: String = v.chars().take(keep).collect();
        format!("{cut}\u{2026}")
    } else {
        v.to_string()
    }
}

/// `name: old -> new` lines, names aligned, values as [`shown_value`].
fn value_lines(changes: &[AttributeChange], indent: &str) -> Vec<String> {
    let width = changes.iter().map(|c| c.name.as_str().len()).max().unwrap_or(0) + 1;
    changes
        .iter()
        .map(|c| {
            format!(
                "{indent}{:width$} {} -> {}",
                format!("{}:", c.name.as_str()),
                shown_value(c.name, c.old.as_deref()),
                shown_value(c.name, c.new.as_deref()),
            )
        })
        .collect()
}

/// When a short-lived path existed, as far as inotify saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Transient {
    /// The first event on the path (usually its creation).
    pub first_seen: Timestamp,
    /// The last event on the path (usually its removal).
    pub last_seen: Timestamp,
}

/// Why coverage was incomplete for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GapCause {
    /// The kernel dropped events (IN_Q_OVERFLOW).
    QueueOverflow,
    /// The agent's own event queue was full and events were dropped.
    EventBacklog,
    /// Adding a watch failed with the kernel's `max_user_watches` limit.
    WatchLimit,
    /// The policy needs more watches than the budget: the tree is checked by periodic rescans.
    WatchBudget,
    /// The watcher reported an error.
    WatcherError,
    /// The agent was not running (from the last baseline or stop until this start).
    AgentNotRunning,
    /// A write to the baseline failed (disk full, read-only filesystem, I/O error): the
    /// baseline may not match what was reported until a verification rescan of the trees
    /// succeeds. Retried on its own.
    StoreWriteFailed,
    /// The baseline could not be read to compare a change with it. Retried on its own.
    StoreReadFailed,
    /// A scan (of a directory that appeared, or a verification) failed as a whole. Retried
    /// on its own.
    ScanFailed,
}

impl GapCause {
    /// The name used in reports (`queue_overflow`, `store_write_failed`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QueueOverflow => "queue_overflow",
            Self::EventBacklog => "event_backlog",
            Self::WatchLimit => "watch_limit",
            Self::WatchBudget => "watch_budget",
            Self::WatcherError => "watcher_error",
            Self::AgentNotRunning => "agent_not_running",
            Self::StoreWriteFailed => "store_write_failed",
            Self::StoreReadFailed => "store_read_failed",
            Self::ScanFailed => "scan_failed",
        }
    }
}

/// Payload of a `coverage.gap` event: emitted when the gap opens (`end` absent) and again when
/// the verification rescan that closes it finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CoverageGap {
    /// Identifies the gap across its start and end events; ids go on across restarts of the
    /// agent (the last one is kept with the baseline), so a history never holds two gaps
    /// under one id.
    pub id: u64,
    /// Why.
    pub cause: GapCause,
    /// Trees whose changes may have been missed by realtime detection.
    pub trees: Vec<String>,
    /// When coverage was lost.
    pub start: Timestamp,
    /// When the verification rescan completed (absent while open; for `watch_budget` the
    /// tree stays on periodic rescans and the gap stays open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Timestamp>,
    /// Details for a person.
    pub detail: String,
}

impl FimChange {
    /// As a report event.
    pub fn to_event(&self, time: Timestamp) -> Event {
        Event { kind: KIND_CHANGE.into(), time, data: serde_json::to_value(self).unwrap_or_default() }
    }

    /// The changed attributes with their old and new values: [`Self::attributes`] when the
    /// agent filled it, else derived from `old` and `new`.
    pub fn value_changes(&self) -> Vec<AttributeChange> {
        if !self.attributes.is_empty() {
            return self.attributes.clone();
        }
        let (Some(old), Some(new)) = (&self.old, &self.new) else { return Vec::new() };
        self.changed
            .iter()
            .map(|&name| AttributeChange {
                name,
                old: attribute_value(name, old),
                new: attribute_value(name, new),
            })
            .collect()
    }

    /// Fills [`Self::attributes`] from `changed`, `old` and `new` (done once, where the change
    /// is made, so every consumer of the JSON gets the values without deriving them).
    pub fn with_values(mut self) -> Self {
        self.attributes = Vec::new();
        self.attributes = self.value_changes();
        self
    }

    /// Whether this is a directory whose only changed attributes are its timestamps
    /// ([`DIRECTORY_TIMESTAMPS`]): what adding or removing an entry in it does.
    pub fn is_directory_timestamps_only(&self) -> bool {
        self.change == ChangeKind::Modified
            && self.old.as_ref().is_some_and(|o| o.kind == FileKind::Dir)
            && self.new.as_ref().is_some_and(|n| n.kind == FileKind::Dir)
            && !self.changed.is_empty()
            && self.changed.iter().all(|a| DIRECTORY_TIMESTAMPS.contains(a))
    }

    /// Whether this entry's name was created or removed in its directory (added, removed,
    /// renamed, or replaced by a new inode): what moves the directory's mtime and ctime.
    pub fn changes_directory_entries(&self) -> bool {
        match self.change {
            ChangeKind::Added | ChangeKind::Removed | ChangeKind::Renamed => true,
            ChangeKind::Modified => self.changed.contains(&Attribute::Inode),
        }
    }

    /// The lines under [`Self::human`] for a person: each changed attribute, old -> new
    /// (`    mode:   0644 -> 0600`, hashes abbreviated), escaped for a terminal.
    pub fn human_details(&self) -> Vec<String> {
        let mut lines = value_lines(&self.value_changes(), "    ");
        if let Some(p) = &self.package {
            lines.push(format!("    {}", p.human()));
        }
        lines.into_iter().map(|l| guestward_core::text::escape_control(&l).into_owned()).collect()
    }

    /// The human one-liner: `modified /etc/passwd (sha256, mtime) [realtime]`.
    pub fn human(&self) -> String {
        let what = match self.change {
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
            ChangeKind::Modified => "modified",
            ChangeKind::Renamed => "renamed",
        };
        // File names are anyone's choice: escaped so they cannot drive the terminal.
        let mut s = format!("{what:8} {}", guestward_core::text::escape_control(&self.path));
        if let Some(old) = &self.old_path {
            s.push_str(&format!(" (from {})", guestward_core::text::escape_control(old)));
        }
        if !self.changed.is_empty() {
            let names: Vec<&str> = self.changed.iter().map(|a| a.as_str()).collect();
            s.push_str(&format!(" [{}]", names.join(", ")));
        }
        if self.new.as_ref().is_some_and(|n| n.unstable) {
            s.push_str(" (unstable: changed while hashed)");
        }
        if let Some(t) = &self.transient {
            let ms = t.last_seen.0.duration_since(t.first_seen.0).as_millis();
            s.push_str(&format!(" (transient: existed about {ms} ms, gone before it could be examined)"));
        }
        if let Some(p) = &self.package {
            use crate::package::ChangeOrigin;
            let tag = match p.origin {
                ChangeOrigin::OutsidePackageManager => "OUTSIDE-PACKAGE-MANAGER",
                other => other.as_str(),
            };
            s.push_str(&format!(" ({tag}: {})", p.owner.name));
        }
        s
    }
}

impl CoverageGap {
    /// As a report event.
    pub fn to_event(&self, time: Timestamp) -> Event {
        Event { kind: KIND_GAP.into(), time, data: serde_json::to_value(self).unwrap_or_default() }
    }
}

/// The text of a stored event, for `agentctl fim events`: a line with the time, then the
/// change or gap; for a change, one more line per changed attribute (`    mode: 0644 -> 0600`).
pub fn render_event_line(event: &Event) -> String {
    let what = match event.kind.as_str() {
        KIND_CHANGE => match serde_json::from_value::<FimChange>(event.data.clone()) {
            Ok(c) => {
                // The first line as before (scripts grep it), then one line per changed
                // attribute with its old and new values, each escaped on its own.
                let mut lines = vec![format!(
                    "{} {} [{}]",
                    event.time.human(),
                    c.human(),
                    if c.mechanism == Mechanism::Realtime { "realtime" } else { "rescan" }
                )];
                lines.extend(c.human_details());
                return lines
                    .iter()
                    .map(|l| guestward_core::text::escape_control(l).into_owned())
                    .collect::<Vec<_>>()
                    .join("\n");
            }
            Err(_) => event.data.to_string(),
        },
        KIND_GAP => match serde_json::from_value::<CoverageGap>(event.data.clone()) {
            Ok(g) => match g.end {
                None => format!(
                    "coverage gap #{} OPEN ({}) on {}: {}",
                    g.id,
                    g.cause.as_str(),
                    g.trees.join(", "),
                    g.detail
                ),
                Some(end) => {
                    format!(
                        "coverage gap #{} closed: {} .. {} verified by rescan",
                        g.id,
                        g.start.human(),
                        end.human()
                    )
                }
            },
            Err(_) => event.data.to_string(),
        },
        KIND_PACKAGE_TRANSACTION => {
            match serde_json::from_value::<crate::package::TransactionEvent>(event.data.clone()) {
                Ok(t) => {
                    let mut lines = vec![format!("{} {}", event.time.human(), t.human())];
                    lines.extend(t.human_details());
                    return lines
                        .iter()
                        .map(|l| guestward_core::text::escape_control(l).into_owned())
                        .collect::<Vec<_>>()
                        .join("\n");
                }
                Err(_) => event.data.to_string(),
            }
        }
        _ => event.data.to_string(),
    };
    // Gap details and tree names come from the watched tree: escape them for the terminal.
    format!("{} {}", event.time.human(), guestward_core::text::escape_control(&what))
}

/// The last line of `agentctl fim events`: `3 change(s): 1 added, 0 removed, 2 modified; 1
/// coverage gap event(s)`.
pub fn render_events_summary(events: &[Event]) -> String {
    let mut counts = crate::model::ChangeCounts::default();
    let mut changes = 0u64;
    let mut gaps = 0u64;
    let mut transactions = 0u64;
    let mut outside = 0u64;
    for e in events {
        if e.kind == KIND_CHANGE
            && e.data.pointer("/package/origin").and_then(|o| o.as_str()) == Some("outside-package-manager")
        {
            outside += 1;
        }
        match e.kind.as_str() {
            KIND_PACKAGE_TRANSACTION => transactions += 1,
            KIND_CHANGE => {
                changes += 1;
                if let Some(kind) = e.data.get("change").and_then(|k| ChangeKind::deserialize(k).ok()) {
                    counts.count(kind);
                }
            }
            KIND_GAP => gaps += 1,
            _ => {}
        }
    }
    let mut s = format!("{changes} change(s): {}", counts.human());
    if outside > 0 {
        s.push_str(&format!(" ({outside} to package files OUTSIDE the package manager)"));
    }
    if transactions > 0 {
        s.push_str(&format!("; {transactions} package transaction(s)"));
    }
    if gaps > 0 {
        s.push_str(&format!("; {gaps} coverage gap event(s)"));
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn payload_schemas_generate() {
        for schema in [
            serde_json::to_value(schemars::schema_for!(FimChange)).unwrap(),
            serde_json::to_value(schemars::schema_for!(Transient)).unwrap(),
            serde_json::to_value(schemars::schema_for!(CoverageGap)).unwrap(),
            serde_json::to_value(schemars::schema_for!(crate::model::FimStatus)).unwrap(),
            serde_json::to_value(schemars::schema_for!(crate::model::CheckReport)).unwrap(),
            serde_json::to_value(schemars::schema_for!(crate::Config)).unwrap(),
        ] {
            assert!(schema["properties"].is_object() || schema["anyOf"].is_array(), "{schema}");
        }
    }

    #[test]
    fn coverage_gap_lines_escape_terminal_sequences_from_the_tree() {
        let gap = CoverageGap {
            id: 7,
            cause: GapCause::WatcherError,
            trees: vec!["/home/u/\x1b]0;pwned\x07".into()],
            start: Timestamp::now(),
            end: None,
            detail: "watch failed: \x1b[2J".into(),
        };
        let line = render_event_line(&gap.to_event(Timestamp::now()));
        assert!(!line.contains('\x1b') && !line.contains('\x07'), "{line:?}");
        assert!(line.contains("coverage gap #7 OPEN"), "{line}");
    }

    fn attrs(mode: &str, size: u64, sha: char) -> Attributes {
        Attributes {
            kind: FileKind::File,
            mode: mode.into(),
            uid: 0,
            gid: 0,
            size,
            mtime_ns: 1_764_633_600_123_456_789,
            ctime_ns: 1_764_633_600_123_456_789,
            inode: 7,
            link_target: None,
            sha256: Some(sha.to_string().repeat(64)),
            blake3: None,
            xattrs: Some(vec![("user.\x1b[2Jx".into(), "01".into())]),
            hash_skipped: false,
            unstable: false,
            unreadable: false,
        }
    }

    #[test]
    fn values_are_derived_for_events_of_older_agents_and_abbreviated_for_people() {
        let mut new = attrs("0600", 24, 'b');
        new.xattrs = Some(vec![]);
        new.mtime_ns += 1_000_000_000;
        let c = FimChange {
            path: "/etc/f".into(),
            old_path: None,
            change: ChangeKind::Modified,
            changed: vec![
                Attribute::Sha256,
                Attribute::Mode,
                Attribute::Size,
                Attribute::Mtime,
                Attribute::Xattrs,
            ],
            old: Some(attrs("0644", 10, 'a')),
            new: Some(new),
            mechanism: Mechanism::Rescan,
            rule: "/etc".into(),
            transient: None,
            attributes: Vec::new(),
            folded_parent: None,
            package: None,
        };
        // Stored by an older agent (no `attributes`): derived from old and new.
        let derived = c.value_changes();
        assert_eq!(
            derived[1],
            AttributeChange { name: Attribute::Mode, old: Some("0644".into()), new: Some("0600".into()) }
        );
        assert_eq!(derived[0].new.as_deref(), Some("b".repeat(64).as_str()), "full in JSON");
        assert_eq!(derived[3].old.as_deref(), Some("2025-12-02T00:00:00.123456789Z"));
        let names: Vec<Attribute> = c.clone().with_values().attributes.iter().map(|a| a.name).collect();
        assert_eq!(names, c.changed, "one value pair per changed attribute, in order");
        let json = serde_json::to_value(c.clone().with_values()).unwrap();
        assert_eq!(json["attributes"][2], serde_json::json!({"name": "size", "old": "10", "new": "24"}));

        let lines = c.human_details();
        assert_eq!(lines[0], format!("    sha256: {}\u{2026} -> {}\u{2026}", "a".repeat(12), "b".repeat(12)));
        assert_eq!(lines[1], "    mode:   0644 -> 0600");
        assert_eq!(lines[2], "    size:   10 -> 24");
        assert!(lines[4].starts_with("    xattrs: user.") && lines[4].ends_with(" -> none"), "{lines:?}");
        // Attribute names and values come from the file: nothing reaches the terminal raw.
        let text = render_event_line(&c.to_event(Timestamp::now()));
        assert!(!text.contains('\x1b'), "{text:?}");
        assert_eq!(text.lines().count(), 6, "{text}");
        assert!(text.lines().next().unwrap().ends_with("[rescan]"), "{text}");
        let removed = FimChange { change: ChangeKind::Removed, ..c.clone() };
        let events =
            [c.to_event(Timestamp::now()), c.to_event(Timestamp::now()), removed.to_event(Timestamp::now())];
        assert_eq!(render_events_summary(&events), "3 change(s): 0 added, 1 removed, 2 modified");
    }

    #[test]
    fn non_utf8_names_are_escaped_reversibly() {
        let p = std::path::Path::new(std::ffi::OsStr::from_bytes(b"/etc/a\xffb\\c\nd\xc3\xa9"));
        assert_eq!(escape_path(p), "/etc/a\\xffb\\\\c\\x0ad\u{e9}");
    }
}
