//! dpkg's database: `<admin_dir>/status`, a deb822 file with one stanza per package.
//!
//! The file is split into stanzas here (tracking line numbers for error messages) and each
//! stanza is parsed by `deb822-fast`. Splitting ourselves matters for robustness: a stanza with
//! a syntax error, or bytes that are not UTF-8 (seen in descriptions written by old tools), must
//! cost only that stanza (or nothing), never the rest of the inventory.

#[cfg(feature = "collect")]
use guestward_core::HostRoot;
use guestward_core::capped::Capped;
use guestward_core::text::{MAX_QUOTED_CHARS, quote_truncated, truncate_chars};
use guestward_core::{HostFsError, Problem};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
#[cfg(feature = "collect")]
use std::path::Path;
use std::str::FromStr;

/// Why the dpkg database could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum DpkgError {
    /// The status file could not be read.
    #[error("cannot read the dpkg database: {0}")]
    Read(#[from] HostFsError),
}

impl DpkgError {
    /// This error as a report problem.
    pub fn to_problem(&self) -> Problem {
        match self {
            Self::Read(e) => {
                Problem::new(e.code(), self.to_string()).with_path(e.path().display().to_string())
            }
        }
    }
}

/// Everything dpkg knows about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DpkgInventory {
    /// The status file read.
    pub status_file: String,
    /// Packages whose state is `installed` (any selection: `install`, `hold`, `deinstall`
    /// all leave the files on disk) and whose error flag is `ok`.
    pub installed: Vec<DebPackage>,
    /// Packages that are on disk in some other state (`half-installed`, `unpacked`,
    /// `half-configured`, `triggers-awaited`, `triggers-pending`, `config-files`) or flagged
    /// `reinstreq`: partly present, worth a look, not counted as installed.
    pub not_fully_installed: Vec<DebPackage>,
}

/// One binary package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DebPackage {
    /// `Package`.
    pub name: String,
    /// `Version`, kept whole and split.
    pub version: DebVersion,
    /// `Architecture` (`amd64`, `all`...).
    pub architecture: Option<String>,
    /// Source package name: `Source` without its version, or the binary name when absent.
    pub source_name: String,
    /// Source version: the one in `Source: name (version)`, else the binary version.
    pub source_version: String,
    /// `Status`, split into its three words.
    pub status: DpkgStatus,
    /// `Installed-Size`, in KiB as dpkg records it.
    pub installed_size_kib: Option<u64>,
    /// `Maintainer`.
    pub maintainer: Option<String>,
    /// `Multi-Arch` (`same`, `foreign`, `allowed`).
    pub multi_arch: Option<String>,
}

/// A Debian version string and its parts (deb-version(7)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DebVersion {
    /// The version as written, e.g. `1:2.36-9+deb12u4`.
    pub full: String,
    /// Epoch, when one is written (`1` above).
    pub epoch: Option<u32>,
    /// Upstream part (`2.36`).
    pub upstream: String,
    /// Debian revision (`9+deb12u4`), absent for native packages.
    pub revision: Option<String>,
}

impl DebVersion {
    /// Splits a version string; `None` when dpkg itself would reject it.
    pub fn parse(full: &str) -> Option<Self> {
        let v = debversion::Version::from_str(full).ok()?;
        // debversion is more lenient than dpkg (it takes "1:" as an upstream version). Apply
        // dpkg's own rules from deb-version(7): a written epoch is digits, the upstream part is
        // non-empty and starts with a digit, and every character is one dpkg allows.
        if let Some((epoch, _)) = full.split_once(':')
            && (epoch.is_empty() || !epoch.bytes().all(|b| b.is_ascii_digit()) || v.epoch.is_none())
        {
            return None;
        }
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b".+~-:".contains(&b);
        if !v.upstream_version.as_bytes().first().is_some_and(u8::is_ascii_digit)
            || !full.bytes().all(allowed)
        {
            return None;
        }
        Some(Self {
            full: full.to_string(),
            epoch: v.epoch,
            upstream: v.upstream_version.clone(),
            revision: v.debian_revision.clone(),
        })
    }
}

/// dpkg's `Status: want flag state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DpkgStatus {
    /// Selection: `install`, `hold`, `deinstall`, `purge`, `unknown`.
    pub want: String,
    /// Error flag: `ok` or `reinstreq`.
    pub flag: String,
    /// Package state: `installed`, `config-files`, `half-installed`...
    pub state: String,
}

impl DpkgStatus {
    /// Installed with files on disk and no error flag.
    pub fn is_installed(&self) -> bool {
        self.state == "installed" && self.flag == "ok"
    }

    /// Known to dpkg but with nothing left on disk: not worth reporting.
    pub fn is_absent(&self) -> bool {
        self.state == "not-installed"
    }
}

#[cfg(feature = "collect")]
/// Reads `<admin_dir>/status`. Malformed stanzas become problems (file and line) and are
/// skipped; everything else is returned.
pub fn read_status(
    root: &HostRoot,
    admin_dir: &Path,
    max_bytes: u64,
) -> Result<(DpkgInventory, Vec<Problem>), DpkgError> {
    let status_path = admin_dir.join("status");
    let bytes = root.read_capped(&status_path, max_bytes)?;
    let shown = root.display(&status_path);
    let (inventory, problems) = parse_status(&bytes, &shown);
    Ok((inventory, problems))
}

/// Parses the bytes of a status file; `shown_path` names it in problems.
pub fn parse_status(bytes: &[u8], shown_path: &str) -> (DpkgInventory, Vec<Problem>) {
    let mut inventory = DpkgInventory {
        status_file: shown_path.to_string(),
        installed: Vec::new(),
        not_fully_installed: Vec::new(),
    };
    // A planted status file of a million bad stanzas must not become a million problems
    // (520 MB, and a 148 MB JSON report): the first are listed, the rest counted.
    let mut problems: Capped<Problem, MAX_STATUS_PROBLEMS> = Capped::default();
    for stanza in Stanzas::new(bytes) {
        let text = String::from_utf8_lossy(stanza.bytes);
        if matches!(text, Cow::Owned(_)) {
            // Not fatal: invalid bytes in free text (usually Description) are replaced; the
            // fields we keep are ASCII by Debian policy and are checked below.
            problems.push(
                Problem::new("invalid_utf8", "stanza contains bytes that are not UTF-8; they were replaced")
                    .with_path(shown_path)
                    .with_line(stanza.first_line),
            );
        }
        match parse_stanza(&text) {
            Ok(pkg) if pkg.status.is_absent() => {}
            Ok(pkg) if pkg.status.is_installed() => inventory.installed.push(pkg),
            Ok(pkg) => inventory.not_fully_installed.push(pkg),
            Err(message) => problems.push(
                Problem::new("malformed", format!("skipped a stanza: {message}"))
                    .with_path(shown_path)
                    .with_line(stanza.first_line),
            ),
        }
    }
    problems.close_with(|unlisted| {
        Problem::new(
            "malformed",
            format!(
                "{unlisted} more problem(s) in this file are not listed (the first {MAX_STATUS_PROBLEMS} are)"
            ),
        )
        .with_path(shown_path)
    });
    (inventory, problems.into_vec())
}

/// How many problems of one status file are listed (see [`parse_status`]).
pub const MAX_STATUS_PROBLEMS: usize = 100;

/// The default cap of a status file read (`[packages] max_status_file_bytes`): 64 MiB, ten
/// times the largest real one.
pub const DEFAULT_MAX_STATUS_BYTES: u64 = 64 * 1024 * 1024;

fn parse_stanza(text: &str) -> Result<DebPackage, String> {
    let paragraphs =
        deb822_fast::borrowed::parse_borrowed(text).map_err(|e| format!("deb822 syntax: {e}"))?;
    let [para] = paragraphs.as_slice() else {
        return Err(format!("expected one stanza, found {}", paragraphs.len()));
    };
    let field = |name: &str| para.get_single(name).map(str::trim).filter(|v| !v.is_empty());

    let name = field("Package").ok_or("missing Package field")?;
    // Values are quoted into problem messages bounded: a status file may hold a line of any
    // length (up to the file cap), and a message must stay a sentence.
    if !is_valid_package_name(name) {
        return Err(format!("invalid package name {}", quote_truncated(name, MAX_QUOTED_CHARS)));
    }
    let shown = truncate_chars(name, MAX_QUOTED_CHARS);
    let name_for_errors = shown.as_ref();
    let status_text =
        field("Status").ok_or_else(|| format!("package {name_for_errors}: missing Status field"))?;
    let mut words = status_text.split_ascii_whitespace();
    let (Some(want), Some(flag), Some(state), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(format!(
            "package {name_for_errors}: Status {} is not `want flag state`",
            quote_truncated(status_text, MAX_QUOTED_CHARS)
        ));
    };
    let status = DpkgStatus { want: want.to_string(), flag: flag.to_string(), state: state.to_string() };

    // dpkg keeps stanzas of purged packages without a Version; only those may lack one.
    let version_text = match field("Version") {
        Some(v) => v,
        None if status.is_absent() || status.state == "config-files" => "",
        None => return Err(format!("package {name_for_errors}: missing Version field")),
    };
    let version = if version_text.is_empty() {
        DebVersion { full: String::new(), epoch: None, upstream: String::new(), revision: None }
    } else {
        DebVersion::parse(version_text).ok_or_else(|| {
            format!(
                "package {name_for_errors}: invalid Version {}",
                quote_truncated(version_text, MAX_QUOTED_CHARS)
            )
        })?
    };

    let (source_name, source_version) = match field("Source") {
        Some(src) => match src.split_once('(') {
            Some((n, rest)) => (n.trim().to_string(), rest.trim_end_matches(')').trim().to_string()),
            None => (src.to_string(), version.full.clone()),
        },
        None => (name.to_string(), version.full.clone()),
    };
    let installed_size_kib = match field("Installed-Size") {
        Some(s) => Some(s.parse::<u64>().map_err(|_| {
            format!(
                "package {name_for_errors}: Installed-Size {} is not a number",
                quote_truncated(s, MAX_QUOTED_CHARS)
            )
        })?),
        None => None,
    };

    Ok(DebPackage {
        name: name.to_string(),
        version,
        architecture: field("Architecture").map(str::to_string),
        source_name,
        source_version,
        status,
        installed_size_kib,
        maintainer: field("Maintainer").map(str::to_string),
        multi_arch: field("Multi-Arch").map(str::to_string),
    })
}

/// Debian policy 5.6.1: lowercase letters, digits, `+ - .`, at least two characters, starting
/// alphanumeric. Checked so a corrupted name cannot smuggle control characters into reports.
fn is_valid_package_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() >= 2
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

/// One stanza's bytes and the 1-based line it starts on.
struct Stanza<'a> {
    bytes: &'a [u8],
    first_line: u64,
}

/// Splits a deb822 file on blank lines (empty or only spaces/tabs, per deb822(5)).
struct Stanzas<'a> {
    rest: &'a [u8],
    line: u64,
}

impl<'a> Stanzas<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes, line: 1 }
    }

    /// Takes one line (with its newline) off the front.
    fn take_line(&mut self) -> &'a [u8] {
        let end = self.rest.iter().position(|&b| b == b'\n').map_or(self.rest.len(), |i| i + 1);
        let (line, rest) = self.rest.split_at(end);
        self.rest = rest;
        self.line += 1;
        line
    }
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

impl<'a> Iterator for Stanzas<'a> {
    type Item = Stanza<'a>;

    fn next(&mut self) -> Option<Stanza<'a>> {
        // Skip separators.
        while !self.rest.is_empty() {
            let end = self.rest.iter().position(|&b| b == b'\n').map_or(self.rest.len(), |i| i + 1);
            if !is_blank(&self.rest[..end]) {
                break;
            }
            self.take_line();
        }
        if self.rest.is_empty() {
            return None;
        }
        let start = self.rest;
        let first_line = self.line;
        let mut len = 0;
        while !self.rest.is_empty() {
            let line = self.take_line();
            if is_blank(line) {
                break;
            }
            len += line.len();
        }
        Some(Stanza { bytes: &start[..len], first_line })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stanzas_carry_their_first_line() {
        let text = b"\n\nA: 1\nB: 2\n\n  \t\nC: 3\n continued\n";
        let got: Vec<(u64, &[u8])> = Stanzas::new(text).map(|s| (s.first_line, s.bytes)).collect();
        assert_eq!(got, vec![(3, &b"A: 1\nB: 2\n"[..]), (7, &b"C: 3\n continued\n"[..])]);
    }

    /// A million bad stanzas are the first problems and a count, and the good stanza among
    /// them is still read.
    #[test]
    fn problems_of_a_planted_status_file_are_bounded_and_good_stanzas_kept() {
        let mut text = "Package: x\n\n".repeat(100_000);
        text.push_str("Package: ok\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n\n");
        text.push_str(&"Package: y\n\n".repeat(5));
        let (inventory, problems) = parse_status(text.as_bytes(), "/var/lib/dpkg/status");
        assert_eq!(inventory.installed.len(), 1);
        assert_eq!(problems.len(), MAX_STATUS_PROBLEMS + 1);
        let last = problems.last().unwrap();
        let unlisted = 100_005 - MAX_STATUS_PROBLEMS;
        assert!(last.message.starts_with(&format!("{unlisted} more problem(s)")), "{last:?}");
    }

    #[test]
    fn versions_split_like_dpkg() {
        let v = DebVersion::parse("1:2.36-9+deb12u4").unwrap();
        assert_eq!(
            (v.epoch, v.upstream.as_str(), v.revision.as_deref()),
            (Some(1), "2.36", Some("9+deb12u4"))
        );
        let native = DebVersion::parse("2.0.11").unwrap();
        assert_eq!((native.epoch, native.revision), (None, None));
        assert_eq!(DebVersion::parse("1:"), None);
        assert_eq!(DebVersion::parse("x:1.0"), None);
        assert_eq!(DebVersion::parse("1.0 beta"), None);
        let dashes = DebVersion::parse("1.2-3-4").unwrap();
        assert_eq!((dashes.upstream.as_str(), dashes.revision.as_deref()), ("1.2-3", Some("4")));
    }

    #[test]
    fn package_names_follow_policy() {
        assert!(is_valid_package_name("libc6"));
        assert!(is_valid_package_name("g++-12"));
        assert!(!is_valid_package_name("a"));
        assert!(!is_valid_package_name("Bad"));
        assert!(!is_valid_package_name("evil\u{1b}[0m"));
    }
}
