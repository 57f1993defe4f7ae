//! dpkg's view of its files: the `status` file (installed packages and their `Conffiles:`),
//! `info/<pkg>[:<arch>].md5sums` and `.list`, and `diversions`.
//!
//! Every file is read through [`HostRoot`] with a size cap; a damaged stanza or line costs
//! that stanza or line (reported as a [`Problem`] naming file and line), never the rest.

use crate::ReadError;
use guestward_core::text::{MAX_QUOTED_CHARS, quote_truncated};
use guestward_core::{HostRoot, Problem};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// dpkg's administrative directory, as seen on the host.
pub const DEFAULT_ADMIN_DIR: &str = "/var/lib/dpkg";

/// Largest `status` file read (a desktop with 5,000 packages has about 10 MiB).
pub const MAX_STATUS_BYTES: u64 = 64 << 20;
/// Largest `.md5sums` or `.list` file read (the largest real ones are a few MiB: texlive).
pub const MAX_INFO_FILE_BYTES: u64 = 64 << 20;
/// Largest `diversions` file read.
pub const MAX_DIVERSIONS_BYTES: u64 = 4 << 20;
/// Largest dpkg configuration file read (`/etc/dpkg/dpkg.cfg`, `dpkg.cfg.d/*`).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Most files read from `/etc/dpkg/dpkg.cfg.d`.
const MAX_CONFIG_FILES: usize = 256;

/// One conffile of a package, from its `Conffiles:` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conffile {
    /// Absolute host path.
    pub path: PathBuf,
    /// The MD5 dpkg recorded when it installed it; `None` for `newconffile` (unpacked, never
    /// configured) or anything else that is not 32 hex digits.
    pub md5: Option<[u8; 16]>,
    /// No longer shipped by the package (dpkg keeps it on disk).
    pub obsolete: bool,
    /// Removed by dpkg at the next upgrade (`remove-on-upgrade`): not checked, like debsums.
    pub remove_on_upgrade: bool,
}

/// One package of the status file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpkgPackage {
    /// `Package`.
    pub name: String,
    /// `Version`.
    pub version: String,
    /// `Architecture`.
    pub arch: Option<String>,
    /// The third word of `Status` (`installed`, `half-configured`, `unpacked`...).
    pub state: String,
    /// `Conffiles:`.
    pub conffiles: Vec<Conffile>,
    /// The name of its files under `info/`: `name` or `name:arch` (Multi-Arch: same), as found
    /// on disk; `None` when neither `.list` exists.
    pub info_name: Option<String>,
}

impl DpkgPackage {
    /// dpkg has put (some of) its files on disk.
    pub fn has_files(&self) -> bool {
        matches!(
            self.state.as_str(),
            "installed"
                | "half-configured"
                | "unpacked"
                | "half-installed"
                | "triggers-awaited"
                | "triggers-pending"
        )
    }

    /// The states `debsums` checks (`installed`, `half-configured`); verification follows it.
    pub fn is_verified(&self) -> bool {
        matches!(self.state.as_str(), "installed" | "half-configured")
    }
}

/// `diversions`: a path diverted by a package (or the administrator) to another path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diversions {
    /// Keyed by the diverted path's bytes: asked about every package file the trust anchor
    /// checks (100k on a Debian host), where hashing a `Path` (component by component, with
    /// SipHash) cost more than the handful of byte comparisons this takes.
    by_from: BTreeMap<Vec<u8>, (PathBuf, String)>,
}

impl Diversions {
    /// Where `package`'s file `path` really is: the diverted-to path when another package
    /// (or the administrator, `:`) diverted it, else `path` itself.
    pub fn on_disk<'a>(&'a self, package: &str, path: &'a Path) -> &'a Path {
        match self.by_from.get(path.as_os_str().as_bytes()) {
            Some((to, by)) if by != package => to,
            _ => path,
        }
    }

    /// Number of diversions.
    pub fn len(&self) -> usize {
        self.by_from.len()
    }

    /// No diversions.
    pub fn is_empty(&self) -> bool {
        self.by_from.is_empty()
    }
}

fn admin_file(admin: &Path, name: &str) -> PathBuf {
    admin.join(name)
}

fn bytes_path(b: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(b))
}

/// Reads `<admin>/status`: every package with files on disk (see [`DpkgPackage::has_files`]),
/// with `info_name` looked up under `<admin>/info`.
pub fn read_status(root: &HostRoot, admin: &Path) -> Result<(Vec<DpkgPackage>, Vec<Problem>), ReadError> {
    let path = admin_file(admin, "status");
    let bytes = root.read_capped(&path, MAX_STATUS_BYTES)?;
    let (mut packages, problems) = parse_status(&bytes, &path);
    for p in &mut packages {
        p.info_name = find_info_name(root, admin, p);
    }
    Ok((packages, problems))
}

fn find_info_name(root: &HostRoot, admin: &Path, p: &DpkgPackage) -> Option<String> {
    let plain = p.name.clone();
    if root.exists(admin.join("info").join(format!("{plain}.list"))) {
        return Some(plain);
    }
    let arch = p.arch.as_deref()?;
    let qualified = format!("{}:{arch}", p.name);
    root.exists(admin.join("info").join(format!("{qualified}.list"))).then_some(qualified)
}

/// Parses a status file's bytes (`shown` names it in problems).
pub fn parse_status(bytes: &[u8], shown: &Path) -> (Vec<DpkgPackage>, Vec<Problem>) {
    let mut packages = Vec::new();
    let mut problems = Vec::new();
    let mut stanza: Vec<(usize, &[u8])> = Vec::new();
    let mut flush = |stanza: &mut Vec<(usize, &[u8])>| {
        if !stanza.is_empty() {
            match parse_stanza(stanza) {
                Ok(Some(p)) => packages.push(p),
                Ok(None) => {}
                Err((line, msg)) => problems.push(
                    Problem::new("malformed", format!("dpkg status stanza skipped: {msg}"))
                        .with_path(shown.display().to_string())
                        .with_line(line as u64),
                ),
            }
        }
        stanza.clear();
    };
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            flush(&mut stanza);
        } else {
            stanza.push((i + 1, line));
        }
    }
    flush(&mut stanza);
    (packages, problems)
}

/// One stanza; `Err` names the line at fault (a missing field: the stanza's first line).
fn parse_stanza(lines: &[(usize, &[u8])]) -> Result<Option<DpkgPackage>, (usize, String)> {
    let first = lines.first().map_or(0, |(n, _)| *n);
    parse_stanza_fields(lines).map_err(|(line, msg)| (line.unwrap_or(first), msg))
}

fn parse_stanza_fields(lines: &[(usize, &[u8])]) -> Result<Option<DpkgPackage>, (Option<usize>, String)> {
    let mut name = None;
    let mut version = None;
    let mut arch = None;
    let mut status = None;
    let mut conffiles = Vec::new();
    let mut in_conffiles = false;
    for (n, line) in lines {
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            if in_conffiles {
                conffiles.push(parse_conffile(line).map_err(|msg| (Some(*n), msg))?);
            }
            continue;
        }
        in_conffiles = false;
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return Err((
                Some(*n),
                format!(
                    "line without a field name: {}",
                    quote_truncated(&String::from_utf8_lossy(line), MAX_QUOTED_CHARS)
                ),
            ));
        };
        let field = &line[..colon];
        let value = String::from_utf8_lossy(&line[colon + 1..]).trim().to_owned();
        match field.to_ascii_lowercase().as_slice() {
            b"package" => name = Some(value),
            b"version" => version = Some(value),
            b"architecture" => arch = Some(value),
            b"status" => status = Some((*n, value)),
            b"conffiles" => in_conffiles = true,
            _ => {}
        }
    }
    let name = name.ok_or((None, "no Package field".to_string()))?;
    let (status_line, status) = status.ok_or_else(|| {
        (None, format!("package {}: no Status field", quote_truncated(&name, MAX_QUOTED_CHARS)))
    })?;
    let words: Vec<&str> = status.split_whitespace().collect();
    let [_want, _flag, state] = words.as_slice() else {
        return Err((
            Some(status_line),
            format!(
                "package {}: Status is not three words: {}",
                quote_truncated(&name, MAX_QUOTED_CHARS),
                quote_truncated(&status, MAX_QUOTED_CHARS)
            ),
        ));
    };
    let p = DpkgPackage {
        name,
        version: version.unwrap_or_default(),
        arch,
        state: (*state).to_owned(),
        conffiles,
        info_name: None,
    };
    Ok(p.has_files().then_some(p))
}

/// ` /etc/foo 0123...abcdef [obsolete] [remove-on-upgrade]`: the path may contain spaces, so
/// the digest and flags are taken from the end.
fn parse_conffile(line: &[u8]) -> Result<Conffile, String> {
    let bad =
        |what: &str| format!("{what}: {}", quote_truncated(&String::from_utf8_lossy(line), MAX_QUOTED_CHARS));
    let mut text = line.trim_ascii();
    let mut obsolete = false;
    let mut remove_on_upgrade = false;
    loop {
        if let Some(rest) = text.strip_suffix(b" obsolete") {
            obsolete = true;
            text = rest.trim_ascii_end();
        } else if let Some(rest) = text.strip_suffix(b" remove-on-upgrade") {
            remove_on_upgrade = true;
            text = rest.trim_ascii_end();
        } else {
            break;
        }
    }
    let Some(space) = text.iter().rposition(|b| *b == b' ') else {
        return Err(bad("conffile line without a digest"));
    };
    let (path, digest) = (text[..space].trim_ascii_end(), &text[space + 1..]);
    if !path.starts_with(b"/") {
        return Err(bad("conffile path is not absolute"));
    }
    Ok(Conffile { path: bytes_path(path), md5: parse_md5(digest), obsolete, remove_on_upgrade })
}

/// 32 lowercase or uppercase hex digits.
pub fn parse_md5(hex: &[u8]) -> Option<[u8; 16]> {
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// `.md5sums` entries (absolute host path, MD5) and the problems met reading them.
pub type Md5Sums = (Vec<(PathBuf, [u8; 16])>, Vec<Problem>);

/// Longest line of an `.md5sums` or `.list` file taken (`PATH_MAX` and the digest, with room);
/// a longer one is a problem on its line and the rest of the file is still read.
const MAX_INFO_LINE_BYTES: usize = 8 << 10;

/// Calls `line(number, bytes)` for each line of `host_path` (without its newline), read in
/// pieces of at most 64 KiB: the largest `.md5sums` (google-cloud-cli's: 5 MB, 50k files)
/// never sits in memory whole, and nothing grows with it. At most `limit` bytes in all (more is
/// [`HostFsError::TooLarge`](guestward_core::HostFsError::TooLarge), after the lines before
/// it were passed); a line over [`MAX_INFO_LINE_BYTES`] is passed as `None`. `line` returns
/// `false` to stop early.
fn for_each_line(
    root: &HostRoot,
    host_path: &Path,
    limit: u64,
    mut line: impl FnMut(u64, Option<&[u8]>) -> bool,
) -> Result<(), ReadError> {
    use std::io::{BufRead, Read};
    let (file, real) = root.open(host_path)?;
    let too_large = || guestward_core::HostFsError::TooLarge { path: real.clone(), limit };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > limit {
        return Err(too_large().into());
    }
    // A buffer of the file's size, from 4 KiB up to 64 KiB: most `.list` and `.md5sums` files
    // are a few KiB, and 64 KiB for each (over the agent's glibc mmap threshold) was an
    // `mmap`, 17 page faults and a `munmap` per package, 900 of them at the start of a first
    // baseline, which waits for the index. The size is only a hint: a file that grew since is
    // read all the same.
    let capacity = usize::try_from(len.saturating_add(1)).unwrap_or(usize::MAX).clamp(4 << 10, 64 << 10);
    let mut reader = std::io::BufReader::with_capacity(capacity, file.take(limit.saturating_add(1)));
    let mut buf = Vec::with_capacity(512);
    let mut total = 0u64;
    for number in 1u64.. {
        buf.clear();
        let mut over = false;
        // Read one line in bounded steps: a file without newlines cannot grow `buf` past the cap.
        loop {
            let n = (&mut reader)
                .take(MAX_INFO_LINE_BYTES as u64 + 1 - buf.len().min(MAX_INFO_LINE_BYTES) as u64)
                .read_until(b'\n', &mut buf)
                .map_err(|e| guestward_core::HostFsError::from_io(&real, e))?;
            total += n as u64;
            if buf.last() == Some(&b'\n') || n == 0 {
                break;
            }
            if buf.len() > MAX_INFO_LINE_BYTES {
                over = true;
                buf.clear();
            }
        }
        if total > limit {
            return Err(too_large().into());
        }
        if buf.is_empty() && !over {
            return Ok(());
        }
        let text = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if !line(number, (!over).then_some(text)) {
            return Ok(());
        }
    }
    Ok(())
}

/// One `.md5sums` line: the digest and the path relative to `/` (`None`: not `<md5>  <path>`).
fn md5sums_line(line: &[u8]) -> Option<([u8; 16], &[u8])> {
    let line = line.trim_ascii_start();
    let at = line.iter().position(u8::is_ascii_whitespace)?;
    let md5 = parse_md5(&line[..at])?;
    let rel = line[at..].trim_ascii_start();
    let rel = rel.strip_prefix(b"./").unwrap_or(rel);
    let rel = rel.strip_prefix(b"/").unwrap_or(rel);
    (!rel.is_empty()).then_some((md5, rel))
}

fn malformed_md5sums_line(line: &[u8], shown: &Path, number: u64) -> Problem {
    Problem::new(
        "malformed",
        format!(
            "md5sums line is not `<md5>  <path>`: {}",
            quote_truncated(&String::from_utf8_lossy(line), MAX_QUOTED_CHARS)
        ),
    )
    .with_path(shown.display().to_string())
    .with_line(number)
}

/// At most this many bad lines of one file are reported (the rest are skipped all the same).
const MAX_LINE_PROBLEMS: usize = 10;

/// Calls `entry(absolute host path, md5)` for each line of `<admin>/info/<info_name>.md5sums`,
/// streamed (see [`for_each_line`]); `entry` returns `false` to stop. A missing file has no
/// entries (some packages ship none, like debsums says with `-l`); bad lines are problems.
pub fn for_each_md5sum(
    root: &HostRoot,
    admin: &Path,
    info_name: &str,
    mut entry: impl FnMut(&Path, [u8; 16]) -> bool,
) -> Result<Vec<Problem>, ReadError> {
    let path = admin.join("info").join(format!("{info_name}.md5sums"));
    let mut problems = Vec::new();
    let mut abs = Vec::with_capacity(256);
    let read = for_each_line(root, &path, MAX_INFO_FILE_BYTES, |number, line| {
        match line.map(|l| (l, md5sums_line(l))) {
            Some((_, Some((md5, rel)))) => {
                abs.clear();
                abs.push(b'/');
                abs.extend_from_slice(rel);
                return entry(Path::new(OsStr::from_bytes(&abs)), md5);
            }
            Some((l, None)) if !l.is_empty() && problems.len() < MAX_LINE_PROBLEMS => {
                problems.push(malformed_md5sums_line(l, &path, number));
            }
            None if problems.len() < MAX_LINE_PROBLEMS => problems.push(
                Problem::new("malformed", format!("md5sums line longer than {MAX_INFO_LINE_BYTES} bytes"))
                    .with_path(path.display().to_string())
                    .with_line(number),
            ),
            _ => {}
        }
        true
    });
    match read {
        Ok(()) | Err(ReadError::Host(guestward_core::HostFsError::NotFound { .. })) => Ok(problems),
        Err(e) => Err(e),
    }
}

/// Reads `<admin>/info/<info_name>.md5sums` whole: (absolute host path, MD5). See
/// [`for_each_md5sum`], which the index and verification use instead.
pub fn read_md5sums(root: &HostRoot, admin: &Path, info_name: &str) -> Result<Md5Sums, ReadError> {
    let mut out = Vec::new();
    let problems = for_each_md5sum(root, admin, info_name, |path, md5| {
        out.push((path.to_path_buf(), md5));
        true
    })?;
    Ok((out, problems))
}

/// Parses an `.md5sums` file: `<32 hex>  <path relative to />` per line.
pub fn parse_md5sums(bytes: &[u8], shown: &Path) -> Md5Sums {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        match md5sums_line(line) {
            Some((md5, rel)) => {
                let mut abs = Vec::with_capacity(rel.len() + 1);
                abs.push(b'/');
                abs.extend_from_slice(rel);
                out.push((bytes_path(&abs), md5));
            }
            None if problems.len() < MAX_LINE_PROBLEMS => {
                problems.push(malformed_md5sums_line(line, shown, i as u64 + 1));
            }
            None => {}
        }
    }
    (out, problems)
}

/// Whether a `.list` line names a path (not the root, which every package lists as `/.`).
fn list_entry(line: &[u8]) -> bool {
    line.starts_with(b"/") && line != b"/." && line != b"/"
}

/// Calls `entry(path)` for each path of `<admin>/info/<info_name>.list`, streamed (see
/// [`for_each_line`]); `entry` returns `false` to stop. Lines over the line cap are skipped
/// (no real path is that long).
pub fn for_each_list_path(
    root: &HostRoot,
    admin: &Path,
    info_name: &str,
    mut entry: impl FnMut(&Path) -> bool,
) -> Result<(), ReadError> {
    let path = admin.join("info").join(format!("{info_name}.list"));
    for_each_line(root, &path, MAX_INFO_FILE_BYTES, |_, line| match line {
        Some(l) if list_entry(l) => entry(Path::new(OsStr::from_bytes(l))),
        _ => true,
    })
}

/// Reads `<admin>/info/<info_name>.list` whole (see [`for_each_list_path`]).
pub fn read_list(root: &HostRoot, admin: &Path, info_name: &str) -> Result<Vec<PathBuf>, ReadError> {
    let mut out = Vec::new();
    for_each_list_path(root, admin, info_name, |p| {
        out.push(p.to_path_buf());
        true
    })?;
    Ok(out)
}

/// Parses a `.list` file.
pub fn parse_list(bytes: &[u8]) -> Vec<PathBuf> {
    bytes.split(|b| *b == b'\n').filter(|l| list_entry(l)).map(bytes_path).collect()
}

/// Reads `<admin>/diversions` (three lines per diversion: from, to, diverting package or `:`
/// for a local diversion). Missing: none.
pub fn read_diversions(root: &HostRoot, admin: &Path) -> (Diversions, Vec<Problem>) {
    let path = admin.join("diversions");
    match root.read_capped(&path, MAX_DIVERSIONS_BYTES) {
        Ok(bytes) => parse_diversions(&bytes, &path),
        Err(guestward_core::HostFsError::NotFound { .. }) => (Diversions::default(), Vec::new()),
        Err(e) => (Diversions::default(), vec![e.to_problem()]),
    }
}

/// Parses a `diversions` file.
pub fn parse_diversions(bytes: &[u8], shown: &Path) -> (Diversions, Vec<Problem>) {
    let mut d = Diversions::default();
    let mut problems = Vec::new();
    let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    let chunks = lines.chunks_exact(3);
    if !chunks.remainder().is_empty() {
        problems.push(
            Problem::new(
                "malformed",
                "the diversions file does not hold whole three-line entries; the last is ignored",
            )
            .with_path(shown.display().to_string()),
        );
    }
    for c in chunks {
        if c[0].starts_with(b"/") && c[1].starts_with(b"/") {
            // Keyed as the md5sums paths it is asked about are spelled (`/` + relative path):
            // a `//` or `/./` in the file would otherwise keep the diversion from being found.
            let from: PathBuf = bytes_path(c[0]).components().collect();
            d.by_from.insert(
                from.into_os_string().into_vec(),
                (bytes_path(c[1]), String::from_utf8_lossy(c[2]).into_owned()),
            );
        }
    }
    (d, problems)
}

/// dpkg's `path-exclude`/`path-include` filters (dpkg.cfg(5)): files dpkg did not unpack
/// although their package lists them (minimal images drop /usr/share/doc this way). The last
/// matching rule wins; patterns are fnmatch(3) globs in which `*` also matches `/`.
#[derive(Debug, Clone, Default)]
pub struct PathFilters {
    rules: Vec<(bool, globset::GlobMatcher)>,
}

impl PathFilters {
    /// Whether dpkg was told not to unpack `path`.
    pub fn excluded(&self, path: &Path) -> bool {
        self.rules.iter().rev().find(|(_, m)| m.is_match(path)).is_some_and(|(exclude, _)| *exclude)
    }

    /// No rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// Reads the filters of `/etc/dpkg/dpkg.cfg.d/*` (names of letters, digits, `_` and `-`, in
/// order) and `/etc/dpkg/dpkg.cfg`, as debsums does.
pub fn read_path_filters(root: &HostRoot) -> (PathFilters, Vec<Problem>) {
    let mut files = Vec::new();
    if let Ok(dir) = root.resolve("/etc/dpkg/dpkg.cfg.d")
        && let Ok(entries) = std::fs::read_dir(&dir)
    {
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
            .take(MAX_CONFIG_FILES)
            .collect();
        names.sort_unstable();
        files.extend(names.into_iter().map(|n| PathBuf::from("/etc/dpkg/dpkg.cfg.d").join(n)));
    }
    files.push(PathBuf::from("/etc/dpkg/dpkg.cfg"));
    let mut filters = PathFilters::default();
    let mut problems = Vec::new();
    for f in files {
        let text = match root.read_string_capped(&f, MAX_CONFIG_BYTES) {
            Ok(t) => t,
            Err(guestward_core::HostFsError::NotFound { .. }) => continue,
            Err(e) => {
                problems.push(e.to_problem());
                continue;
            }
        };
        for line in text.lines() {
            let line = line.trim().trim_start_matches("--");
            let (name, value) = match line.split_once(['=', ' ', '\t']) {
                Some((n, v)) => (n.trim(), v.trim()),
                None => continue,
            };
            let exclude = match name {
                "path-exclude" => true,
                "path-include" => false,
                _ => continue,
            };
            match globset::GlobBuilder::new(value).literal_separator(false).backslash_escape(true).build() {
                Ok(g) => filters.rules.push((exclude, g.compile_matcher())),
                Err(e) => problems.push(
                    Problem::new(
                        "malformed",
                        format!("dpkg {name} pattern {}: {e}", quote_truncated(value, MAX_QUOTED_CHARS)),
                    )
                    .with_path(f.display().to_string()),
                ),
            }
        }
    }
    (filters, problems)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn info_file(dir: &Path, name: &str, bytes: &[u8]) -> (HostRoot, PathBuf) {
        std::fs::create_dir_all(dir.join("var/lib/dpkg/info")).unwrap();
        std::fs::write(dir.join("var/lib/dpkg/info").join(name), bytes).unwrap();
        (HostRoot::new(dir).unwrap(), PathBuf::from(DEFAULT_ADMIN_DIR))
    }

    /// Streaming reads give what whole-file parsing gives, and planted files cost bounded
    /// memory: a line with no end is one problem and the lines after it are still read.
    #[test]
    fn streamed_md5sums_and_lists_match_whole_parsing_and_survive_endless_lines() {
        let dir = tempfile::tempdir().unwrap();
        let md5 = "0123456789abcdef0123456789abcdef";
        let mut sums = format!("{md5}  usr/bin/a\nnot a line\n{md5}  ./usr/bin/b\n\n").into_bytes();
        sums.extend(std::iter::repeat_n(b'x', 3 * MAX_INFO_LINE_BYTES));
        sums.extend(format!("\n{md5}  /usr/bin/c").bytes());
        let (root, admin) = info_file(dir.path(), "p.md5sums", &sums);
        let (streamed, problems) = read_md5sums(&root, &admin, "p").unwrap();
        let paths: Vec<_> = streamed.iter().map(|(p, _)| p.display().to_string()).collect();
        assert_eq!(paths, ["/usr/bin/a", "/usr/bin/b", "/usr/bin/c"]);
        assert_eq!(problems.iter().map(|p| p.line).collect::<Vec<_>>(), [Some(2), Some(5)], "{problems:?}");
        let (whole, _) = parse_md5sums(&sums, Path::new("p.md5sums"));
        assert_eq!(streamed, whole);

        let list = b"/.\n/usr\n/usr/bin/a\n/usr/bin/with space\n/usr/bin/no-newline";
        let (root, admin) = info_file(dir.path(), "p.list", list);
        assert_eq!(read_list(&root, &admin, "p").unwrap(), parse_list(list));
        assert_eq!(read_list(&root, &admin, "p").unwrap().len(), 4);
        // Stopping early reads no further.
        let mut seen = 0;
        for_each_list_path(&root, &admin, "p", |_| {
            seen += 1;
            seen < 2
        })
        .unwrap();
        assert_eq!(seen, 2);
        // A missing .md5sums is no entries; a missing .list is an error naming it.
        assert_eq!(read_md5sums(&root, &admin, "absent").unwrap(), (Vec::new(), Vec::new()));
        let err = read_list(&root, &admin, "absent").unwrap_err();
        assert!(err.to_string().contains("absent.list"), "{err}");
    }

    #[test]
    fn parses_conffiles_with_flags_and_spaces() {
        let status = b"Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\nConffiles:\n /etc/a b.conf 0123456789abcdef0123456789abcdef\n /etc/old 0123456789abcdef0123456789abcdef obsolete\n /etc/gone 0123456789abcdef0123456789abcdef remove-on-upgrade\n /etc/new newconffile\n\nPackage: b\nStatus: deinstall ok config-files\n\nPackage: c\nBroken\n";
        let (p, problems) = parse_status(status, Path::new("status"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(problems.len(), 1, "{problems:?}");
        // The line at fault, not the stanza's first.
        assert_eq!(problems[0].line, Some(15));
        let bad = b"Package: d\nStatus: install ok installed\nConffiles:\n /etc/ok 0123456789abcdef0123456789abcdef\n /etc/other.conf\n\nPackage: e\nVersion: 1\n";
        let (_, problems) = parse_status(bad, Path::new("status"));
        let lines: Vec<_> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [Some(5), Some(7)], "a bad conffile line; a missing field: {problems:?}");
        let c = &p[0].conffiles;
        assert_eq!(c[0].path, Path::new("/etc/a b.conf"));
        assert!(c[0].md5.is_some() && !c[0].obsolete);
        assert!(c[1].obsolete && !c[1].remove_on_upgrade);
        assert!(c[2].remove_on_upgrade);
        assert_eq!(c[3].md5, None);
    }

    #[test]
    fn path_filters_last_match_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/dpkg/dpkg.cfg.d")).unwrap();
        std::fs::write(
            dir.path().join("etc/dpkg/dpkg.cfg.d/excludes"),
            "# minimal image\npath-exclude=/usr/share/doc/*\npath-include=/usr/share/doc/*/copyright\n",
        )
        .unwrap();
        let (f, problems) = read_path_filters(&HostRoot::new(dir.path()).unwrap());
        assert!(problems.is_empty(), "{problems:?}");
        assert!(f.excluded(Path::new("/usr/share/doc/bash/README")));
        assert!(f.excluded(Path::new("/usr/share/doc/bash/examples/x")));
        assert!(!f.excluded(Path::new("/usr/share/doc/bash/copyright")));
        assert!(!f.excluded(Path::new("/usr/bin/bash")));
    }

    #[test]
    fn parses_md5sums_and_diversions() {
        let (m, problems) = parse_md5sums(
            b"0123456789abcdef0123456789abcdef  usr/bin/a b\nzz  bad\n0123456789abcdef0123456789abcdef  ./usr/c\n",
            Path::new("x"),
        );
        assert_eq!(
            m.iter().map(|e| e.0.clone()).collect::<Vec<_>>(),
            vec![PathBuf::from("/usr/bin/a b"), PathBuf::from("/usr/c")]
        );
        assert_eq!(problems.len(), 1);
        let (d, problems) =
            parse_diversions(b"/bin/sh\n/bin/sh.distrib\ndash\n/usr/x\n/usr/x.orig\n:\n", Path::new("d"));
        assert!(problems.is_empty());
        assert_eq!(d.on_disk("bash", Path::new("/bin/sh")), Path::new("/bin/sh.distrib"));
        assert_eq!(d.on_disk("dash", Path::new("/bin/sh")), Path::new("/bin/sh"));
        assert_eq!(d.on_disk("foo", Path::new("/usr/x")), Path::new("/usr/x.orig"));
        // Found however the diversions file spells the path.
        let (d, _) = parse_diversions(b"/usr//lib/./y\n/usr/lib/y.real\n:\n", Path::new("d"));
        assert_eq!(d.on_disk("foo", Path::new("/usr/lib/y")), Path::new("/usr/lib/y.real"));
    }
}
