//! Where a scan's results go, and the bounds on them.
//!
//! Everything a scan accumulates passes through [`Sink`]: packages, JndiLookup hits, problems
//! and the bytes inflated from archives. Each is bounded, because every one of them can be
//! driven by files an unprivileged user controls (issue 9, item 5: a million empty `*.egg-info`
//! directories in one `~/.local` took the daemon to 829 MB and an OOM kill loop; item 4: one
//! 381 KB jar inflated 500 GiB). When a bound is reached the scan stops adding, says so in a
//! problem and sets the report's `truncated` flag; nothing is silently dropped.

use crate::model::{JndiLookupHit, LangPackage, WalkStats};
use guestward_core::Problem;

/// Problems listed one by one in one scan; the rest are counted in one summary problem. A user
/// can make any number of unreadable files, and each would otherwise cost memory and report
/// bytes.
pub(crate) const MAX_PROBLEMS: usize = 1_000;

/// The scan's results with their bounds.
pub(crate) struct Sink {
    packages: Vec<LangPackage>,
    jndi: Vec<JndiLookupHit>,
    problems: Vec<Problem>,
    problems_not_listed: u64,
    max_per_root: u64,
    max_per_scan: u64,
    /// Packages plus JndiLookup hits recorded in the scan, and in the root being walked.
    recorded: u64,
    recorded_in_root: u64,
    /// The walk root being walked, as shown in reports.
    root: Option<String>,
    scan_full: bool,
    root_full: bool,
    truncated: bool,
    inflate_budget: u64,
    inflated: u64,
    archives_unexamined: u64,
    first_unexamined: Option<String>,
    last_unexamined: Option<String>,
}

impl Sink {
    pub fn new(max_per_root: u64, max_per_scan: u64, inflate_budget: u64) -> Self {
        Self {
            packages: Vec::new(),
            jndi: Vec::new(),
            problems: Vec::new(),
            problems_not_listed: 0,
            max_per_root,
            max_per_scan,
            recorded: 0,
            recorded_in_root: 0,
            root: None,
            scan_full: false,
            root_full: false,
            truncated: false,
            inflate_budget,
            inflated: 0,
            archives_unexamined: 0,
            first_unexamined: None,
            last_unexamined: None,
        }
    }

    /// Records a problem (counted only once [`MAX_PROBLEMS`] are listed).
    pub fn problem(&mut self, problem: Problem) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(problem);
        } else {
            self.problems_not_listed += 1;
        }
    }

    /// Records a problem that explains why the inventory is incomplete (at most a few per
    /// root, but roots come from globs, so they are bounded like any other problem), and marks
    /// the report truncated.
    pub fn truncation(&mut self, problem: Problem) {
        self.truncated = true;
        self.problem(problem);
    }

    /// Whether the walk should stop: the scan or the current root is full.
    pub fn halted(&self) -> bool {
        self.scan_full || self.root_full
    }

    /// Whether the whole scan is over (no further root is walked).
    pub fn scan_halted(&self) -> bool {
        self.scan_full
    }

    /// Stops the whole scan, with the problem that says why (listed even past
    /// [`MAX_PROBLEMS`]: it happens once).
    pub fn stop_scan(&mut self, problem: Problem) {
        self.scan_full = true;
        self.truncated = true;
        self.problems.push(problem);
    }

    /// A walk root begins (`shown` is its path as reported).
    pub fn begin_root(&mut self, shown: String) {
        self.root = Some(shown);
        self.recorded_in_root = 0;
        self.root_full = false;
    }

    /// Room for one more record? Stops the root or the scan (with a problem) when full.
    fn admit(&mut self) -> bool {
        if self.halted() {
            return false;
        }
        if self.recorded >= self.max_per_scan {
            self.stop_scan(Problem::new(
                "limit_reached",
                format!(
                    "stopped after {} language packages (packages.language.max_packages_per_scan); the language inventory is incomplete",
                    self.max_per_scan
                ),
            ));
            return false;
        }
        if self.recorded_in_root >= self.max_per_root {
            self.root_full = true;
            let root = self.root.clone().unwrap_or_default();
            self.truncation(
                Problem::new(
                    "limit_reached",
                    format!(
                        "{root}: more than {} language packages under this root (packages.language.max_packages_per_root); the rest of it was not walked",
                        self.max_per_root
                    ),
                )
                .with_path(root),
            );
            return false;
        }
        self.recorded += 1;
        self.recorded_in_root += 1;
        true
    }

    /// Adds a package; `false` when a bound refused it (the walk should stop).
    pub fn package(&mut self, package: LangPackage) -> bool {
        let admitted = self.admit();
        if admitted {
            self.packages.push(package);
        }
        admitted
    }

    /// Adds a JndiLookup hit; `false` when a bound refused it.
    pub fn jndi(&mut self, hit: JndiLookupHit) -> bool {
        let admitted = self.admit();
        if admitted {
            self.jndi.push(hit);
        }
        admitted
    }

    /// Bytes that may still be inflated in this scan.
    pub fn inflate_allowance(&self) -> u64 {
        self.inflate_budget.saturating_sub(self.inflated)
    }

    /// Counts `bytes` inflated.
    pub fn spend_inflate(&mut self, bytes: u64) {
        self.inflated = self.inflated.saturating_add(bytes);
    }

    /// Whether the scan-wide inflate budget is spent.
    pub fn inflate_spent(&self) -> bool {
        self.inflated >= self.inflate_budget
    }

    /// An archive left unexamined because the inflate budget is spent. Counted, and named in
    /// one summary problem at the end (a scan can meet any number of them).
    pub fn archive_unexamined(&mut self, shown: &str) {
        self.truncated = true;
        // One archive can run into the spent budget at several entries; it is counted once.
        if self.last_unexamined.as_deref() == Some(shown) {
            return;
        }
        self.archives_unexamined += 1;
        if self.first_unexamined.is_none() {
            self.first_unexamined = Some(shown.to_string());
        }
        self.last_unexamined = Some(shown.to_string());
    }

    /// The results, with the summary problems appended, and the counters written to `stats`.
    pub fn finish(mut self, stats: &mut WalkStats) -> (Vec<LangPackage>, Vec<JndiLookupHit>, Vec<Problem>) {
        if let Some(first) = self.first_unexamined.take() {
            self.truncated = true;
            self.problems.push(
                Problem::new(
                    "limit_reached",
                    format!(
                        "{} archives not examined: the scan-wide inflate budget (packages.language.max_inflated_bytes_per_scan, {} bytes) was spent; the first was {first}",
                        self.archives_unexamined, self.inflate_budget
                    ),
                )
                .with_path(first),
            );
        }
        if self.problems_not_listed > 0 {
            let listed = self.problems.len();
            self.problems.push(Problem::new(
                "limit_reached",
                format!("{} more problems not listed (the first {listed} are)", self.problems_not_listed),
            ));
        }
        stats.truncated |= self.truncated;
        stats.inflated_bytes = self.inflated;
        stats.archives_unexamined = self.archives_unexamined;
        stats.problems_not_listed = self.problems_not_listed;
        (self.packages, self.jndi, self.problems)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::model::{Ecosystem, Evidence};

    fn pkg(name: &str) -> LangPackage {
        LangPackage {
            ecosystem: Ecosystem::Pypi,
            namespace: None,
            name: name.into(),
            version: "1".into(),
            location: format!("/x/{name}"),
            path_in_archive: None,
            installer: None,
            evidence: Evidence::DirectoryName,
        }
    }

    #[test]
    fn per_root_cap_stops_the_root_and_per_scan_cap_stops_the_scan() {
        let mut sink = Sink::new(2, 3, 10);
        sink.begin_root("/a".into());
        assert!(sink.package(pkg("a1")));
        assert!(sink.package(pkg("a2")));
        assert!(!sink.package(pkg("a3")));
        assert!(sink.halted() && !sink.scan_halted());
        sink.begin_root("/b".into());
        assert!(sink.package(pkg("b1")));
        assert!(!sink.package(pkg("b2")));
        assert!(sink.scan_halted());
        let mut stats = WalkStats::default();
        let (packages, _, problems) = sink.finish(&mut stats);
        assert_eq!(packages.len(), 3);
        assert!(stats.truncated);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].path.as_deref(), Some("/a"));
        assert!(problems[1].message.contains("max_packages_per_scan"), "{}", problems[1].message);
    }

    #[test]
    fn problems_are_bounded_and_summarized() {
        let mut sink = Sink::new(10, 10, 10);
        for i in 0..MAX_PROBLEMS + 5 {
            sink.problem(Problem::new("io", format!("p{i}")));
        }
        let mut stats = WalkStats::default();
        let (_, _, problems) = sink.finish(&mut stats);
        assert_eq!(problems.len(), MAX_PROBLEMS + 1);
        assert_eq!(stats.problems_not_listed, 5);
        assert!(problems[MAX_PROBLEMS].message.starts_with("5 more problems"), "{:?}", problems.last());
    }
}
