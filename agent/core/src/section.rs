use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// How a collector fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SectionStatus {
    /// Everything it meant to read was read.
    Ok,
    /// It produced data, but some inputs could not be read (see `problems`).
    Degraded,
    /// It produced no data (see `problems`).
    Error,
    /// It did not run: not selected, not applicable here (e.g. a live-only collector with
    /// `--root`), or turned off in config. `note` says which.
    Skipped,
}

/// Codes are ours (`not_found`, `malformed`...), but some are built from a value read.
const MAX_CODE_CHARS: usize = 64;

/// Something a collector could not read or understand. Never fatal to the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Problem {
    /// Stable machine-readable kind, e.g. `not_found`, `permission_denied`, `malformed`.
    pub code: String,
    /// A sentence a person can act on.
    pub message: String,
    /// The file (or other input) concerned, when there is one: its path on the machine that
    /// ran the scan, so under `--root` a path inside that directory, in every section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// 1-based line within `path`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
}

impl Problem {
    /// A problem with a code and a message. The message is cut to about
    /// [`crate::text::MAX_MESSAGE_CHARS`], its beginning and its end kept: messages quote file
    /// content and paths, and a file can hold a line of any length, a tree a path of any depth
    /// (quote values with [`crate::text::quote_truncated`] so that the cut falls in the value,
    /// not in the sentence around it).
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: crate::text::truncate_owned(code.into(), MAX_CODE_CHARS),
            message: crate::text::truncate_message(message.into()),
            path: None,
            line: None,
        }
    }

    /// Names the input concerned (cut at [`crate::text::MAX_PATH_CHARS`]).
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(crate::text::truncate_owned(path.into(), crate::text::MAX_PATH_CHARS));
        self
    }

    /// Names the line concerned.
    pub fn with_line(mut self, line: u64) -> Self {
        self.line = Some(line);
        self
    }
}

impl Problem {
    /// Whether the message already names `path`: contains it, or, for a path long enough to
    /// have been cut (in the message, the path or both), starts as it does.
    fn names(&self, path: &str) -> bool {
        const SAME_START_CHARS: usize = 256;
        self.message.contains(path)
            || path
                .char_indices()
                .nth(SAME_START_CHARS)
                .is_some_and(|(start_end, _)| self.message.starts_with(&path[..start_end]))
    }
}

/// For people (human output, logs): paths and messages name things in scanned trees, so
/// control characters in them are shown escaped ([`crate::text::escape_control`]).
impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::text::escape_control;
        match (&self.path, self.line) {
            (Some(p), Some(l)) if !self.names(p) => write!(f, "{}:{l}: ", escape_control(p))?,
            (Some(p), None) if !self.names(p) => write!(f, "{}: ", escape_control(p))?,
            _ => {}
        }
        write!(f, "{}", escape_control(&self.message))
    }
}

/// One collector's result: what it could read plus what it could not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
pub struct Section<T> {
    /// How the collector fared.
    pub status: SectionStatus,
    /// What it collected; absent when `status` is `error` or `skipped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
    /// What it could not read, one entry per input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
    /// Why it was skipped, or other context a reader needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Inputs not read for a reason this run expects, listed for completeness: a scan without
    /// root cannot read other users' homes or root-only directories. They do not make the
    /// section degraded; `note` counts them. Always empty for a run as root, where a path that
    /// cannot be read is a problem.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected_problems: Vec<Problem>,
    /// Wall time the collector took.
    pub duration_ms: u64,
}

impl<T> Section<T> {
    /// Data plus the problems met; the status follows from both.
    pub fn from_parts(data: Option<T>, problems: Vec<Problem>, started: Instant) -> Self {
        let status = match (&data, problems.is_empty()) {
            (Some(_), true) => SectionStatus::Ok,
            (Some(_), false) => SectionStatus::Degraded,
            (None, _) => SectionStatus::Error,
        };
        Self {
            status,
            data,
            problems,
            note: None,
            expected_problems: Vec::new(),
            duration_ms: elapsed_ms(started),
        }
    }

    /// A collector that did not run, with the reason.
    pub fn skipped(note: impl Into<String>) -> Self {
        Self {
            status: SectionStatus::Skipped,
            data: None,
            problems: Vec::new(),
            note: Some(note.into()),
            expected_problems: Vec::new(),
            duration_ms: 0,
        }
    }

    /// A collector that produced nothing.
    pub fn failed(problem: Problem, started: Instant) -> Self {
        Self::from_parts(None, vec![problem], started)
    }

    /// Adds a note (builder style).
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    /// For a run without root (`uid` is the effective uid; `scanned_root`: the `--root`
    /// directory paths may start with, if any): moves each `permission_denied` problem whose
    /// path `expected` accepts to [`Section::expected_problems`], says how many in the note,
    /// and makes a section degraded by nothing else `ok`. Returns how many were moved.
    ///
    /// Meant for directories only root may enter (other users' homes, `/root`, root-only
    /// trees a walk meets): no user but root can read them, so reporting them as a fault would
    /// make every non-root scan degraded and hide the problems that matter. A file the
    /// collector exists to read (a package database) is not excused: the caller's `expected`
    /// says which. Never call it for a run as root: there a path root cannot read is a real
    /// problem.
    pub fn excuse_permission_denied(
        &mut self,
        uid: u32,
        scanned_root: Option<&str>,
        expected: &dyn Fn(&str) -> bool,
    ) -> usize {
        let (excused, kept): (Vec<Problem>, Vec<Problem>) = std::mem::take(&mut self.problems)
            .into_iter()
            .partition(|p| p.code == "permission_denied" && p.path.as_deref().is_some_and(expected));
        self.problems = kept;
        if excused.is_empty() {
            return 0;
        }
        let in_home = |path: &str| {
            let path = scanned_root.and_then(|r| path.strip_prefix(r.trim_end_matches('/'))).unwrap_or(path);
            path == "/root" || path.starts_with("/root/") || path.starts_with("/home/")
        };
        let homes = excused.iter().filter(|p| p.path.as_deref().is_some_and(in_home)).count();
        let which = if homes == excused.len() {
            "other users' homes".to_string()
        } else if homes > 0 {
            format!("{homes} in other users' homes, {} other private directories", excused.len() - homes)
        } else {
            "private directories".to_string()
        };
        let n = excused.len();
        let paths = if n == 1 { "path" } else { "paths" };
        let line = format!("{n} {paths} not readable as uid {uid} ({which}); run as root to include them");
        self.note = Some(match self.note.take() {
            Some(note) => format!("{note}; {line}"),
            None => line,
        });
        self.expected_problems.extend(excused);
        if self.status == SectionStatus::Degraded && self.problems.is_empty() {
            self.status = SectionStatus::Ok;
        }
        n
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_data_and_problems() {
        let t = Instant::now();
        assert_eq!(Section::from_parts(Some(1), vec![], t).status, SectionStatus::Ok);
        let p = Problem::new("malformed", "bad stanza");
        assert_eq!(Section::from_parts(Some(1), vec![p.clone()], t).status, SectionStatus::Degraded);
        assert_eq!(Section::<u8>::from_parts(None, vec![p], t).status, SectionStatus::Error);
        assert_eq!(Section::<u8>::skipped("not selected").status, SectionStatus::Skipped);
    }

    #[test]
    fn permission_denied_paths_become_a_note_and_other_problems_stay() {
        let t = Instant::now();
        let denied =
            |p: &str| Problem::new("permission_denied", format!("{p}: permission denied")).with_path(p);
        let mut s = Section::from_parts(Some(1), vec![denied("/root/.local"), denied("/home/bob/.local")], t);
        assert_eq!(s.status, SectionStatus::Degraded);
        assert_eq!(s.excuse_permission_denied(1000, None, &|_| true), 2);
        assert_eq!(s.status, SectionStatus::Ok);
        assert!(s.problems.is_empty());
        assert_eq!(s.expected_problems.len(), 2);
        assert_eq!(
            s.note.as_deref(),
            Some("2 paths not readable as uid 1000 (other users' homes); run as root to include them")
        );

        let problems = vec![denied("/mnt/snap/var/lib/private"), denied("/mnt/snap/var/lib/dpkg/status")];
        let mut s = Section::from_parts(Some(1), problems, t);
        let only_dirs = |p: &str| !p.ends_with("/status");
        assert_eq!(s.excuse_permission_denied(1000, Some("/mnt/snap"), &only_dirs), 1);
        assert_eq!(s.status, SectionStatus::Degraded, "the package database still degrades it");
        assert_eq!(s.problems[0].path.as_deref(), Some("/mnt/snap/var/lib/dpkg/status"));
        assert!(s.note.as_deref().unwrap().contains("(private directories)"), "{:?}", s.note);
    }

    #[test]
    fn problem_with_a_huge_line_quoted_is_bounded() {
        let line = "y".repeat(200 * 1024 * 1024);
        let p = Problem::new("malformed", format!("bad line {line:?}")).with_path(line.clone());
        assert!(p.message.len() < crate::text::MAX_MESSAGE_CHARS + 64, "{}", p.message.len());
        assert!(p.message.contains("bytes left out) … "), "{}", &p.message[p.message.len() - 300..]);
        assert!(p.message.ends_with("yyy\""), "the end of the quoted line is kept");
        assert!(p.path.as_ref().unwrap().len() < crate::text::MAX_PATH_CHARS + 64);
        let q = Problem::new("malformed", format!("bad line {}", crate::text::quote_truncated(&line, 80)));
        assert!(q.message.len() < 160, "{}", q.message);
    }

    #[test]
    fn a_problem_about_a_very_long_path_shows_it_once_with_the_reason() {
        let path = format!("/srv/{}", "d/".repeat(3000));
        let p = Problem::new("too_deep", format!("{path}: nested too deep; not descended")).with_path(path);
        let shown = p.to_string();
        assert!(shown.starts_with("/srv/d/d/"), "{shown}");
        assert!(shown.ends_with(": nested too deep; not descended"), "{shown}");
        assert_eq!(shown.matches("/srv/").count(), 1, "the path once: {shown}");
        assert!(shown.len() < crate::text::MAX_MESSAGE_CHARS + 64, "{}", shown.len());
        // A short path missing from its message is still put in front of it.
        let q = Problem::new("io", "read error").with_path("/etc/x");
        assert_eq!(q.to_string(), "/etc/x: read error");
    }

    #[test]
    fn problem_display_escapes_terminal_sequences() {
        let p = Problem::new("malformed", "name \x1b]0;pwned\x07 here").with_path("/x/\x1b[2J");
        let shown = p.to_string();
        assert!(!shown.contains('\x1b') && !shown.contains('\x07'), "{shown:?}");
        assert!(shown.contains("\\x1b]0;pwned\\x07"), "{shown}");
        assert_eq!(
            p.message, "name \x1b]0;pwned\x07 here",
            "the data keeps the exact text (JSON escapes it)"
        );
    }

    #[test]
    fn problem_display_names_file_and_line_once() {
        let p = Problem::new("malformed", "missing Package field").with_path("/s").with_line(7);
        assert_eq!(p.to_string(), "/s:7: missing Package field");
        let q = Problem::new("not_found", "/s: not found").with_path("/s");
        assert_eq!(q.to_string(), "/s: not found");
    }
}
