//! Python distributions: `*.dist-info` (wheels, pip, uv, poetry) and `*.egg-info` (setuptools,
//! distro packages), each a directory holding `METADATA` / `PKG-INFO`, or for old eggs a single
//! `*.egg-info` file that is itself the PKG-INFO.
//!
//! The metadata is RFC 822 style headers followed by a free-text body that can be megabytes
//! (the README). Only a bounded prefix is read and only the header block is parsed: its lines
//! are found here (see `header_block_len`), their `Field: value` syntax with folded lines is read by
//! deb822-fast, the parser of Debian's control files, which are the same RFC 822 style. (It
//! replaced `mailparse`, whose MIME charset decoding, 0.17 MB of the agent binary, no `Name` or
//! `Version` needs: both are ASCII by the core metadata specification.)

#[cfg(feature = "collect")]
use crate::model::{Ecosystem, Evidence, LangPackage};
#[cfg(feature = "collect")]
use crate::walk::Walker;
#[cfg(feature = "collect")]
use std::io::Read;
#[cfg(feature = "collect")]
use std::path::Path;

#[cfg(feature = "collect")]
/// Header bytes read from a METADATA/PKG-INFO file. Name and Version come first in every
/// metadata version; some packages put a whole licence text in `License:` before the body,
/// which this leaves room for.
const HEADER_PREFIX_BYTES: u64 = 256 * 1024;

/// PEP 503 normalization: lower case, every run of `-`, `_`, `.` becomes one `-`.
pub fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_run = false;
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_run {
                out.push('-');
            }
            in_run = true;
        } else {
            out.extend(c.to_lowercase());
            in_run = false;
        }
    }
    out
}

#[cfg(feature = "collect")]
/// Name and version from the `Name:` and `Version:` headers of METADATA / PKG-INFO.
pub fn parse_metadata_headers(bytes: &[u8]) -> Option<(String, String)> {
    // Cut at the last complete line so a prefix ending mid-header does not yield a partial value.
    let end = bytes.iter().rposition(|b| *b == b'\n').map_or(bytes.len(), |i| i + 1);
    let text = String::from_utf8_lossy(&bytes[..end]);
    let block = text.get(..header_block_len(&text))?;
    let headers = deb822_fast::borrowed::iter_paragraphs_borrowed(block).next()?.ok()?;
    let name = headers.get_single("Name")?.trim().to_string();
    let version = headers.get_single("Version").map(|v| v.trim().to_string()).unwrap_or_default();
    if name.is_empty() {
        return None;
    }
    Some((name, version))
}

#[cfg(feature = "collect")]
/// The length of the header lines of a metadata file: up to the empty line before the body, or
/// up to the first line that is neither a `Field: value` header (a name of printable ASCII
/// without spaces, then a colon) nor the continuation of one (an indented line), where Python's
/// own `email` parser ends the headers as well. A CRLF line's `\r` stays in its value, which
/// the caller trims.
fn header_block_len(text: &str) -> usize {
    let mut len = 0;
    for line in text.split_inclusive('\n') {
        let content = line.trim_end_matches(['\n', '\r']);
        let continuation = content.starts_with([' ', '\t']);
        let header = content.find(':').is_some_and(|colon| {
            colon > 0 && content.as_bytes()[..colon].iter().all(|b| (0x21..=0x7e).contains(b))
        });
        if content.is_empty() || (continuation && len == 0) || !(continuation || header) {
            break;
        }
        len += line.len();
    }
    len
}

#[cfg(feature = "collect")]
/// Name and version from a directory name (`requests-2.31.0.dist-info`), the fallback when the
/// metadata file is missing.
fn from_dir_name(stem: &str) -> (String, String) {
    match stem.split_once('-') {
        // Egg names may carry `-py3.11` after the version.
        Some((name, rest)) => (name.to_string(), rest.split('-').next().unwrap_or_default().to_string()),
        None => (stem.to_string(), String::new()),
    }
}

#[cfg(feature = "collect")]
/// Reads up to `limit` bytes of a host file (never more, whatever its size). The file is
/// opened through the [`guestward_core::HostRoot`] door, which refuses anything but a regular
/// file before reading (a FIFO as `METADATA` would otherwise block the scan forever).
fn read_prefix(walker: &mut Walker<'_>, real: &Path, limit: u64) -> Option<Vec<u8>> {
    let host = walker.host_of(real);
    match walker.root.open(&host) {
        Ok((file, _)) => {
            let mut buf = Vec::new();
            match file.take(limit).read_to_end(&mut buf) {
                Ok(_) => Some(buf),
                Err(e) => {
                    walker.problem("io", format!("{}: {e}", walker.shown(real)), real);
                    None
                }
            }
        }
        Err(guestward_core::HostFsError::NotFound { .. }) => None,
        Err(e) => {
            walker.fs_problem(&e, real);
            None
        }
    }
}

/// A `*.dist-info` or `*.egg-info` directory.
#[cfg(feature = "collect")]
pub(crate) fn read_info_dir(walker: &mut Walker<'_>, dir: &Path, dir_name: &str) {
    let (stem, is_dist) = match dir_name.strip_suffix(".dist-info") {
        Some(s) => (s, true),
        None => (dir_name.strip_suffix(".egg-info").unwrap_or(dir_name), false),
    };
    let metadata_file = dir.join(if is_dist { "METADATA" } else { "PKG-INFO" });
    let limit = HEADER_PREFIX_BYTES.min(walker.config.max_metadata_bytes);
    let parsed = read_prefix(walker, &metadata_file, limit).and_then(|b| parse_metadata_headers(&b));
    let (name, version, evidence) = match parsed {
        Some((n, v)) => (n, v, if is_dist { Evidence::DistInfoMetadata } else { Evidence::EggInfoPkgInfo }),
        None => {
            let (n, v) = from_dir_name(stem);
            (n, v, Evidence::DirectoryName)
        }
    };
    let installer = if is_dist {
        read_prefix(walker, &dir.join("INSTALLER"), 256)
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .filter(|s| !s.is_empty())
    } else {
        None
    };
    let location = walker.shown(dir);
    walker.out.package(LangPackage {
        ecosystem: Ecosystem::Pypi,
        namespace: None,
        name: normalize_name(&name),
        version,
        location,
        path_in_archive: None,
        installer,
        evidence,
    });
}

/// An old-style `*.egg-info` *file* (distutils), which is the PKG-INFO itself.
#[cfg(feature = "collect")]
pub(crate) fn read_info_file(walker: &mut Walker<'_>, file: &Path, file_name: &str) {
    let stem = file_name.strip_suffix(".egg-info").unwrap_or(file_name);
    let limit = HEADER_PREFIX_BYTES.min(walker.config.max_metadata_bytes);
    let (name, version, evidence) =
        match read_prefix(walker, file, limit).and_then(|b| parse_metadata_headers(&b)) {
            Some((n, v)) => (n, v, Evidence::EggInfoPkgInfo),
            None => {
                let (n, v) = from_dir_name(stem);
                (n, v, Evidence::DirectoryName)
            }
        };
    let location = walker.shown(file);
    walker.out.package(LangPackage {
        ecosystem: Ecosystem::Pypi,
        namespace: None,
        name: normalize_name(&name),
        version,
        location,
        path_in_archive: None,
        installer: None,
        evidence,
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn pep503_normalization() {
        assert_eq!(normalize_name("Friendly-Bard"), "friendly-bard");
        assert_eq!(normalize_name("FRIENDLY_BARD"), "friendly-bard");
        assert_eq!(normalize_name("friendly.bard"), "friendly-bard");
        assert_eq!(normalize_name("Friendly-._.-Bard"), "friendly-bard");
        assert_eq!(normalize_name("zope.interface"), "zope-interface");
    }

    #[cfg(feature = "collect")]
    #[test]
    fn headers_stop_at_the_body_and_unfold() {
        let text = b"Metadata-Version: 2.1\nName: Foo_Bar\nVersion: 1.0.post1\nSummary: a\n  folded line\n\nName: NotThis\n";
        assert_eq!(parse_metadata_headers(text), Some(("Foo_Bar".into(), "1.0.post1".into())));
    }

    #[cfg(feature = "collect")]
    #[test]
    fn crlf_lines_and_a_stray_line_end_the_headers_where_python_ends_them() {
        let crlf = b"Metadata-Version: 1.0\r\nName: legacy\r\nVersion: 0.9\r\nDescription: one\r\n        two\r\n\r\nbody\r\n";
        assert_eq!(parse_metadata_headers(crlf), Some(("legacy".into(), "0.9".into())));
        // A line that is no header (no colon) ends the block; what came before still counts.
        let stray = b"Name: kept\nVersion: 2.0\nthis is not a header\nName: NotThis\n";
        assert_eq!(parse_metadata_headers(stray), Some(("kept".into(), "2.0".into())));
        // Repeated fields (Classifier, Requires-Dist) are fine; the first Name wins.
        let repeated = b"Name: first\nClassifier: a\nClassifier: b\nVersion: 1\nName: second\n\n";
        assert_eq!(parse_metadata_headers(repeated), Some(("first".into(), "1".into())));
        // An indented first line continues nothing: no headers.
        assert_eq!(parse_metadata_headers(b"  Name: x\nVersion: 1\n"), None);
    }

    #[cfg(feature = "collect")]
    #[test]
    fn truncated_prefix_drops_the_partial_line() {
        let text = b"Metadata-Version: 2.1\nName: foo\nVersion: 1.2";
        assert_eq!(parse_metadata_headers(text), Some(("foo".into(), String::new())));
    }

    #[cfg(feature = "collect")]
    #[test]
    fn garbage_is_not_a_package() {
        assert_eq!(parse_metadata_headers(b"\x00\x01\x02"), None);
        assert_eq!(parse_metadata_headers(b""), None);
    }

    #[cfg(feature = "collect")]
    #[test]
    fn directory_name_fallback() {
        assert_eq!(from_dir_name("requests-2.31.0"), ("requests".into(), "2.31.0".into()));
        assert_eq!(from_dir_name("six-1.16.0-py3.11"), ("six".into(), "1.16.0".into()));
    }
}
