//! Java archives (`*.jar`, `*.war`, `*.ear`) and the archives nested in them.
//!
//! Memory: an archive is never loaded whole. The top-level file is read in place through a
//! [`Window`] (positioned reads on a shared file descriptor); only its central directory (bounded
//! by `max_archive_entries`) and the few small entries we parse are in memory. A nested archive
//! that is *stored* (Spring Boot's `BOOT-INF/lib/*.jar` must be) is read in place too, as a
//! window onto its parent's bytes. A *compressed* nested archive is inflated, with a size cap,
//! into an unlinked temporary file and read from there. So however deep the nesting, no archive
//! body is ever held in memory, which is a stronger form of "at most one archive in memory".
//!
//! Identification, in order: every `META-INF/maven/<g>/<a>/pom.properties` (a shaded jar
//! holds several), else `META-INF/MANIFEST.MF`, else the file name.

use crate::model::{Ecosystem, Evidence, JndiLookupHit, LangPackage};
use crate::walk::Walker;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use zip::{CompressionMethod, ZipArchive};

/// The class whose presence makes a Log4j 2 jar exploitable by CVE-2021-44228. Removing it
/// (`zip -d`) was the vendor's interim mitigation, so its absence matters as much as the version.
pub const JNDI_LOOKUP_CLASS: &str = "org/apache/logging/log4j/core/lookup/JndiLookup.class";

/// A read-only view of `len` bytes of a file starting at `start`, with its own cursor.
/// Positioned reads (`pread`) mean windows on the same descriptor never disturb each other.
pub struct Window {
    file: Arc<File>,
    start: u64,
    len: u64,
    pos: u64,
}

impl Window {
    /// The whole file.
    pub fn whole(file: File) -> io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(Self { file: Arc::new(file), start: 0, len, pos: 0 })
    }

    /// `len` bytes of this window starting at `offset` (clamped to this window).
    fn sub(&self, offset: u64, len: u64) -> Self {
        let offset = offset.min(self.len);
        let len = len.min(self.len - offset);
        Self { file: Arc::clone(&self.file), start: self.start + offset, len, pos: 0 }
    }

    /// `len` bytes at `offset` of this window (an error if they are not all inside it).
    fn bytes_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let end = offset.checked_add(len as u64);
        if end.is_none_or(|e| e > self.len) {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "outside the archive"));
        }
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, self.start + offset)?;
        Ok(buf)
    }
}

fn le_u16(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 2).map_or(0, |s| u64::from(u16::from_le_bytes([s[0], s[1]])))
}

fn le_u32(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 4).map_or(0, |s| u64::from(u32::from_le_bytes([s[0], s[1], s[2], s[3]])))
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).map_or(0, |s| {
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        u64::from_le_bytes(a)
    })
}

/// Smallest central-directory header (APPNOTE 4.3.12): signature and fixed fields.
const CENTRAL_HEADER_MIN_BYTES: u64 = 46;

/// The most central-directory entries the zip reader could be made to load from `window`,
/// judged from every end-of-central-directory record in the archive's tail.
///
/// Security: the zip reader loads the whole central directory into memory (a few hundred bytes
/// per entry) before anything can count the entries, so `max_archive_entries` checked after
/// opening bounded nothing: a 20 MB zip64 jar of 400,000 tiny entries costs well over 100 MB
/// (the daemon's memory cap is 200 MB). A zip32 record claims at most 65,535 entries. A zip64
/// record is found through the locator just before the zip32 one; when it sits where the
/// locator says and is consistent (the same checks the reader makes), its count is what the
/// reader would load; otherwise the reader may search the archive for another record, and the
/// only safe bound is the one the reader itself enforces (each claimed entry needs 46 bytes
/// before the record).
fn claimed_entries(window: &Window) -> io::Result<u64> {
    // EOCD (22 bytes) plus the longest comment; the reader looks no further back.
    let tail_len = window.len.min(22 + 65_535 + 64);
    let tail_start = window.len - tail_len;
    let tail = window.bytes_at(tail_start, usize::try_from(tail_len).unwrap_or(0))?;
    let mut claimed = 0u64;
    for p in 0..tail.len().saturating_sub(21) {
        if tail[p..p + 4] != *b"PK\x05\x06" {
            continue;
        }
        // A record with a field at its maximum and a zip64 locator right before it sends the
        // reader to the zip64 record for the count; any other, this record's count.
        let may_be_zip64 = le_u16(&tail, p + 10) == 0xffff
            || le_u32(&tail, p + 12) == 0xffff_ffff
            || le_u32(&tail, p + 16) == 0xffff_ffff;
        let eocd_at = tail_start + p as u64;
        let locator_at = eocd_at.checked_sub(20).filter(|_| may_be_zip64);
        let locator = match locator_at {
            Some(at) => Some(window.bytes_at(at, 20)?).filter(|l| l[0..4] == *b"PK\x06\x07"),
            None => None,
        };
        let (Some(locator_at), Some(locator)) = (locator_at, locator) else {
            claimed = claimed.max(le_u16(&tail, p + 10));
            continue;
        };
        let mut bound = locator_at / CENTRAL_HEADER_MIN_BYTES;
        let record_at = le_u64(&locator, 8);
        if record_at.checked_add(56).is_some_and(|end| end <= locator_at) {
            let record = window.bytes_at(record_at, 56)?;
            let files = le_u64(&record, 32);
            let consistent = record[0..4] == *b"PK\x06\x06"
                && le_u64(&record, 4).checked_add(12) == Some(locator_at - record_at)
                && le_u32(&record, 16) == 0
                && le_u32(&record, 20) == le_u32(&locator, 4)
                && le_u64(&record, 24) == files
                && files
                    .checked_mul(CENTRAL_HEADER_MIN_BYTES)
                    .and_then(|v| v.checked_add(le_u64(&record, 48)))
                    .is_some_and(|end| end <= record_at);
            if consistent {
                bound = files;
            }
        }
        claimed = claimed.max(bound);
    }
    Ok(claimed)
}

impl Read for Window {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let remaining = self.len.saturating_sub(self.pos);
        let want = usize::try_from(remaining).unwrap_or(usize::MAX).min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.start + self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Window {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match target {
            Some(t) => {
                self.pos = t;
                Ok(t)
            }
            None => Err(io::Error::new(io::ErrorKind::InvalidInput, "seek before the start of the archive")),
        }
    }
}

/// Per top-level archive state.
pub(crate) struct ArchiveScan<'w, 'a> {
    walker: &'w mut Walker<'a>,
    location: String,
    nested_entered: u32,
    /// Central-directory entries of the archives open right now (this one and its parents).
    entries_open: u64,
}

/// Size of a local file header before its name (APPNOTE 4.3.7).
const LOCAL_HEADER_FIXED_BYTES: u64 = 30;

/// Entries named in an overlap problem (the count says how many more there are).
const OVERLAPS_NAMED: usize = 3;

/// Where each entry's bytes must end, by central-directory index: the start of the next
/// entry's local header, or the central directory.
///
/// Security (issue 9, item 4): a zip's central directory may point many entries at the same
/// compressed bytes. A 381 KB jar with 2000 entries sharing one deflate stream inflated
/// 256 MiB per entry, about 500 GiB per jar; each entry on its own respected every per-entry
/// cap. Real archives never share bytes between entries, so every entry's range (local
/// header, name, data) is checked against the archive and against its neighbours, sorted by
/// offset, before anything is inflated; an archive whose entries overlap or run past the
/// central directory is refused whole. The check uses the central directory only (no I/O);
/// the local header's own name and extra-field lengths, known once an entry is opened, are
/// checked against the same limit before its data is read ([`ArchiveScan::within_limit`]).
fn entry_limits(zip: &ZipArchive<Window>) -> Result<Vec<u64>, String> {
    let dir_start = zip.central_directory_start();
    let mut ranges: Vec<(u64, u64, usize)> = Vec::with_capacity(zip.len());
    // Overlaps are named first (they are what a bomb is made of), then entries past the end.
    let mut faults: Vec<String> = Vec::new();
    let mut outside: Vec<String> = Vec::new();
    let mut fault_count = 0usize;
    let name_of = |i: usize| {
        zip.by_index_data(i).ok().and_then(|e| e.name().ok().map(|n| n.into_owned())).unwrap_or_default()
    };
    for i in 0..zip.len() {
        let entry = zip.by_index_data(i).map_err(|e| format!("entry {i}: {e}"))?;
        let start = entry.header_start();
        let end = start
            .checked_add(LOCAL_HEADER_FIXED_BYTES)
            .and_then(|v| v.checked_add(entry.name_raw().len() as u64))
            .and_then(|v| v.checked_add(entry.compressed_size()));
        match end {
            Some(end) if end <= dir_start => ranges.push((start, end, i)),
            _ => {
                fault_count += 1;
                if outside.len() < OVERLAPS_NAMED {
                    outside.push(format!(
                        "`{}` (local header at {start}, {} compressed bytes) runs past the central directory at {dir_start}",
                        name_of(i),
                        entry.compressed_size()
                    ));
                }
            }
        }
    }
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        let [(a_start, a_end, a), (b_start, _, b)] = [pair[0], pair[1]];
        if a_end > b_start {
            fault_count += 1;
            if faults.len() < OVERLAPS_NAMED {
                faults.push(format!(
                    "`{}` (bytes {a_start}..{a_end}) overlaps `{}` (from {b_start})",
                    name_of(a),
                    name_of(b)
                ));
            }
        }
    }
    faults.extend(outside);
    faults.truncate(OVERLAPS_NAMED);
    if fault_count > 0 {
        let more = fault_count - faults.len();
        let more = if more > 0 { format!("; {more} more") } else { String::new() };
        return Err(format!(
            "entries overlap or lie outside the archive, as in a zip bomb ({}{more}); not examined",
            faults.join("; ")
        ));
    }
    let mut limits = vec![dir_start; zip.len()];
    for pair in ranges.windows(2) {
        limits[pair[0].2] = pair[1].0;
    }
    Ok(limits)
}

/// A top-level archive found by the walk (a regular file: the walk checked its type, and the
/// door checks it again on the descriptor).
pub(crate) fn scan_file(walker: &mut Walker<'_>, real: &Path) {
    let location = walker.shown(real);
    if walker.out.inflate_spent() {
        walker.out.archive_unexamined(&location);
        return;
    }
    let host = walker.host_of(real);
    let file = match walker.root.open(&host) {
        Ok((f, _)) => f,
        Err(e) => return walker.fs_problem(&e, real),
    };
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(e) => return walker.problem("io", format!("{location}: {e}"), real),
    };
    if meta.len() > walker.config.max_archive_bytes {
        let msg = format!(
            "{location}: archive of {} bytes is over packages.language.max_archive_bytes ({}); not opened",
            meta.len(),
            walker.config.max_archive_bytes
        );
        return walker.problem("too_large", msg, real);
    }
    let window = match Window::whole(file) {
        Ok(w) => w,
        Err(e) => return walker.problem("io", format!("{location}: {e}"), real),
    };
    let file_name = real.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut scan = ArchiveScan { walker, location, nested_entered: 0, entries_open: 0 };
    let mut chain = Vec::new();
    scan.archive(window, &file_name, &mut chain, 0);
}

impl ArchiveScan<'_, '_> {
    fn shown(&self, chain: &[String]) -> String {
        let mut shown = self.location.clone();
        for part in chain {
            shown.push_str("!/");
            shown.push_str(part);
        }
        shown
    }

    fn problem(&mut self, code: &str, chain: &[String], message: String) {
        let shown = self.shown(chain);
        self.walker
            .out
            .problem(guestward_core::Problem::new(code, format!("{shown}: {message}")).with_path(shown));
    }

    fn archive(&mut self, window: Window, file_name: &str, chain: &mut Vec<String>, depth: u32) {
        self.walker.stats.archives += 1;
        // A second view of the same bytes: stored nested archives are windows onto it.
        let base = window.sub(0, u64::MAX);
        // The central directories of this archive and of the ones it is nested in are all in
        // memory while it is examined, so they share one bound.
        let max_entries = self.walker.config.max_archive_entries;
        let room = max_entries.saturating_sub(self.entries_open);
        let nested_note = if self.entries_open > 0 { " (with the archives it is nested in)" } else { "" };
        match claimed_entries(&window) {
            Ok(claimed) if claimed > room => {
                let msg = format!(
                    "its central directory may hold up to {claimed} entries, over packages.language.max_archive_entries ({max_entries}){nested_note}; not opened"
                );
                return self.problem("too_large", chain, msg);
            }
            Ok(_) => {}
            Err(e) => return self.problem("malformed", chain, format!("not a readable zip archive ({e})")),
        }
        let zip = match ZipArchive::new(window) {
            Ok(z) => z,
            Err(e) => {
                return self.problem("malformed", chain, format!("not a readable zip archive ({e})"));
            }
        };
        let count = zip.len() as u64;
        if count > room {
            let msg = format!(
                "{count} entries is over packages.language.max_archive_entries ({max_entries}){nested_note}; not examined"
            );
            return self.problem("too_large", chain, msg);
        }
        self.entries_open += count;
        self.examine(zip, &base, file_name, chain, depth);
        self.entries_open -= count;
    }

    /// Identifies an opened archive, records what it holds and enters its nested archives.
    fn examine(
        &mut self,
        mut zip: ZipArchive<Window>,
        base: &Window,
        file_name: &str,
        chain: &mut Vec<String>,
        depth: u32,
    ) {
        let limits = match entry_limits(&zip) {
            Ok(l) => l,
            Err(msg) => return self.problem("overlapping_entries", chain, msg),
        };
        let mut poms = Vec::new();
        let mut manifest = None;
        let mut nested = Vec::new();
        for i in 0..zip.len() {
            let Some(Ok(name)) = zip.name_for_index(i) else {
                continue;
            };
            if name.ends_with('/') {
                continue;
            }
            if name.starts_with("META-INF/maven/") && name.ends_with("/pom.properties") {
                poms.push(i);
            } else if name.eq_ignore_ascii_case("META-INF/MANIFEST.MF") {
                manifest = Some(i);
            } else if name == JNDI_LOOKUP_CLASS || name.ends_with(&format!("/{JNDI_LOOKUP_CLASS}")) {
                let hit = JndiLookupHit {
                    location: self.location.clone(),
                    path_in_archive: (!chain.is_empty()).then(|| chain.join("!/")),
                    class_entry: name.into_owned(),
                };
                if !self.walker.out.jndi(hit) {
                    return;
                }
            } else if is_archive_name(&name) {
                nested.push(i);
            }
        }
        let path_in_archive = (!chain.is_empty()).then(|| chain.join("!/"));
        let mut identified = false;
        for i in poms {
            if let Some(props) = self.read_small(&mut zip, &limits, i, chain) {
                let props = parse_properties(&props);
                let get = |k: &str| props.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
                if let (Some(artifact), Some(version)) = (get("artifactId"), get("version")) {
                    let package = LangPackage {
                        ecosystem: Ecosystem::Maven,
                        namespace: get("groupId"),
                        name: artifact,
                        version,
                        location: self.location.clone(),
                        path_in_archive: path_in_archive.clone(),
                        installer: None,
                        evidence: Evidence::PomProperties,
                    };
                    if !self.walker.out.package(package) {
                        return;
                    }
                    identified = true;
                }
            }
        }
        if !identified {
            let from_file = split_file_name(file_name);
            let from_manifest = manifest
                .and_then(|i| self.read_small(&mut zip, &limits, i, chain))
                .and_then(|m| identify_from_manifest(&parse_manifest(&m), from_file.as_ref()));
            let found = match from_manifest {
                Some((group, name, version)) => Some((group, name, version, Evidence::Manifest)),
                None => from_file.map(|(name, version)| (None, name, version, Evidence::FileName)),
            };
            if let Some((namespace, name, version, evidence)) = found {
                let package = LangPackage {
                    ecosystem: Ecosystem::Maven,
                    namespace,
                    name,
                    version,
                    location: self.location.clone(),
                    path_in_archive: path_in_archive.clone(),
                    installer: None,
                    evidence,
                };
                if !self.walker.out.package(package) {
                    return;
                }
            }
        }
        if depth >= self.walker.config.max_nesting_depth {
            if !nested.is_empty() {
                let msg = format!(
                    "{} nested archives below packages.language.max_nesting_depth ({}) not examined",
                    nested.len(),
                    self.walker.config.max_nesting_depth
                );
                self.problem("limit_reached", chain, msg);
            }
            return;
        }
        for i in nested {
            if self.walker.out.halted() {
                return;
            }
            if self.nested_entered >= self.walker.config.max_nested_archives {
                let msg = format!(
                    "more than packages.language.max_nested_archives ({}) nested archives; the rest were not examined",
                    self.walker.config.max_nested_archives
                );
                return self.problem("limit_reached", chain, msg);
            }
            self.nested_entered += 1;
            self.nested(&mut zip, base, &limits, i, chain, depth);
        }
    }

    /// Whether an opened entry's data (`data_start` is known once the local header was read)
    /// ends within the limit computed from the central directory; reports it when not.
    fn within_limit(
        &mut self,
        chain: &[String],
        name: &str,
        data_start: Option<u64>,
        compressed: u64,
        limit: u64,
    ) -> bool {
        let end = data_start.and_then(|s| s.checked_add(compressed));
        if end.is_some_and(|e| e <= limit) {
            return true;
        }
        let msg = format!(
            "`{name}`: its data (local header extended by its own name and extra fields) overlaps the next entry, as in a zip bomb; not read"
        );
        self.problem("overlapping_entries", chain, msg);
        false
    }

    fn nested(
        &mut self,
        zip: &mut ZipArchive<Window>,
        base: &Window,
        limits: &[u64],
        index: usize,
        chain: &mut Vec<String>,
        depth: u32,
    ) {
        let cap = self.walker.config.max_nested_archive_bytes;
        let limit = limits.get(index).copied().unwrap_or(0);
        let (name, stored, data_start, compressed) = {
            let entry = match zip.by_index_raw(index) {
                Ok(e) => e,
                Err(e) => return self.problem("malformed", chain, format!("entry {index}: {e}")),
            };
            let name = entry.name().map(|n| n.into_owned()).unwrap_or_default();
            if entry.encrypted() {
                return self.problem("unsupported", chain, format!("{name}: encrypted entry not examined"));
            }
            if entry.size() > cap {
                let msg = format!(
                    "{name}: nested archive of {} bytes is over packages.language.max_nested_archive_bytes ({cap}); not examined",
                    entry.size()
                );
                return self.problem("too_large", chain, msg);
            }
            (
                name,
                entry.compression() == CompressionMethod::Stored,
                entry.data_start(),
                entry.compressed_size(),
            )
        };
        if !self.within_limit(chain, &name, data_start, compressed, limit) {
            return;
        }
        let window = match (stored, data_start) {
            (true, Some(start)) => base.sub(start, compressed),
            _ => {
                if self.walker.out.inflate_spent() {
                    let shown = format!("{}!/{name}", self.shown(chain));
                    self.walker.out.archive_unexamined(&shown);
                    return;
                }
                match self.inflate_to_temp(zip, index, cap) {
                    Ok(w) => w,
                    Err(Inflate::BudgetSpent) => {
                        let shown = format!("{}!/{name}", self.shown(chain));
                        self.walker.out.archive_unexamined(&shown);
                        return;
                    }
                    Err(Inflate::Failed(e)) => return self.problem("io", chain, format!("{name}: {e}")),
                }
            }
        };
        self.walker.stats.nested_archives += 1;
        let short = name.rsplit('/').next().unwrap_or(&name).to_string();
        chain.push(name);
        self.archive(window, &short, chain, depth + 1);
        chain.pop();
    }

    /// Inflates a compressed nested archive into an unlinked temporary file (never memory),
    /// stopping at `cap` bytes whatever the header claims (zip bombs lie about sizes), and at
    /// what is left of the scan-wide inflate budget.
    fn inflate_to_temp(
        &mut self,
        zip: &mut ZipArchive<Window>,
        index: usize,
        cap: u64,
    ) -> Result<Window, Inflate> {
        let allowance = self.walker.out.inflate_allowance();
        let entry = zip.by_index(index).map_err(|e| Inflate::Failed(io::Error::other(e)))?;
        let mut spool = tempfile::tempfile().map_err(Inflate::Failed)?;
        let limit = cap.min(allowance);
        let copied = io::copy(&mut entry.take(limit.saturating_add(1)), &mut spool);
        let copied = match copied {
            Ok(n) => n,
            Err(e) => return Err(Inflate::Failed(e)),
        };
        self.walker.out.spend_inflate(copied);
        if copied > limit {
            if limit == cap {
                return Err(Inflate::Failed(io::Error::other(format!(
                    "inflates to more than packages.language.max_nested_archive_bytes ({cap})"
                ))));
            }
            return Err(Inflate::BudgetSpent);
        }
        Window::whole(spool).map_err(Inflate::Failed)
    }

    /// Reads a small entry (pom.properties, MANIFEST.MF) with the metadata cap, counted against
    /// the scan-wide inflate budget.
    fn read_small(
        &mut self,
        zip: &mut ZipArchive<Window>,
        limits: &[u64],
        index: usize,
        chain: &[String],
    ) -> Option<String> {
        let cap = self.walker.config.max_metadata_bytes;
        let allowance = self.walker.out.inflate_allowance();
        if allowance == 0 {
            let shown = self.shown(chain);
            self.walker.out.archive_unexamined(&shown);
            return None;
        }
        let entry = match zip.by_index(index) {
            Ok(e) => e,
            Err(e) => {
                self.problem("malformed", chain, format!("entry {index}: {e}"));
                return None;
            }
        };
        let name = entry.name().map(|n| n.into_owned()).unwrap_or_default();
        let (data_start, compressed) = (entry.data_start(), entry.compressed_size());
        let limit = limits.get(index).copied().unwrap_or(0);
        let end_ok = data_start.and_then(|s| s.checked_add(compressed)).is_some_and(|e| e <= limit);
        let mut buf = Vec::new();
        let read_limit = cap.min(allowance);
        let read =
            if end_ok { Some(entry.take(read_limit.saturating_add(1)).read_to_end(&mut buf)) } else { None };
        let Some(read) = read else {
            self.within_limit(chain, &name, data_start, compressed, limit);
            return None;
        };
        match read {
            Ok(n) => {
                self.walker.out.spend_inflate(n as u64);
                if n as u64 > read_limit {
                    if read_limit == cap {
                        self.problem(
                            "too_large",
                            chain,
                            format!("{name}: over packages.language.max_metadata_bytes ({cap})"),
                        );
                    } else {
                        let shown = self.shown(chain);
                        self.walker.out.archive_unexamined(&shown);
                    }
                    return None;
                }
                Some(String::from_utf8_lossy(&buf).into_owned())
            }
            Err(e) => {
                self.problem("malformed", chain, format!("{name}: {e}"));
                None
            }
        }
    }
}

/// Why a nested archive was not inflated.
enum Inflate {
    /// The scan-wide budget ran out while inflating it.
    BudgetSpent,
    /// Anything else, reported as it is.
    Failed(io::Error),
}

/// `*.jar`, `*.war`, `*.ear` (any case).
pub fn is_archive_name(name: &str) -> bool {
    let lower = name.len() >= 4 && name.is_char_boundary(name.len() - 4);
    lower && {
        let ext = &name[name.len() - 4..];
        ext.eq_ignore_ascii_case(".jar")
            || ext.eq_ignore_ascii_case(".war")
            || ext.eq_ignore_ascii_case(".ear")
    }
}

/// `log4j-core-2.14.1.jar` -> (`log4j-core`, `2.14.1`): the name ends at the first `-` that is
/// followed by a digit.
pub fn split_file_name(file_name: &str) -> Option<(String, String)> {
    let stem = if is_archive_name(file_name) { &file_name[..file_name.len() - 4] } else { file_name };
    let bytes = stem.as_bytes();
    let at = (2..bytes.len()).find(|&i| bytes[i - 1] == b'-' && bytes[i].is_ascii_digit())?;
    Some((stem[..at - 1].to_string(), stem[at..].to_string()))
}

/// Java `.properties` lines: `key=value`, `key: value`, `#`/`!` comments. Enough for the three
/// keys Maven writes (no escapes or continuations appear in pom.properties).
pub fn parse_properties(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
        .filter_map(|l| {
            let at = l.find(['=', ':'])?;
            Some((l[..at].trim().to_string(), l[at + 1..].trim().to_string()))
        })
        .collect()
}

/// The main section of a JAR manifest: `Name: value` lines, continuation lines start with one
/// space, the section ends at the first empty line.
pub fn parse_manifest(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if let Some(cont) = line.strip_prefix(' ') {
            if let Some(last) = out.last_mut() {
                last.1.push_str(cont);
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// (group, name, version) from manifest attributes. The name prefers the file name's (it is
/// the artifactId for anything Maven or Gradle built), then `Bundle-SymbolicName`, then
/// `Implementation-Title`.
fn identify_from_manifest(
    attrs: &[(String, String)],
    from_file: Option<&(String, String)>,
) -> Option<(Option<String>, String, String)> {
    let get = |k: &str| attrs.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone());
    let version = get("Implementation-Version")
        .or_else(|| get("Bundle-Version"))
        .or_else(|| get("Specification-Version"))?;
    let symbolic =
        get("Bundle-SymbolicName").map(|s| s.split(';').next().unwrap_or_default().trim().to_string());
    let name = from_file
        .map(|(n, _)| n.clone())
        .or_else(|| symbolic.clone())
        .or_else(|| get("Implementation-Title"))
        .filter(|n| !n.is_empty())?;
    let group = get("Implementation-Vendor-Id");
    Some((group, name, version))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn file_names_split_at_the_version() {
        assert_eq!(split_file_name("log4j-core-2.14.1.jar"), Some(("log4j-core".into(), "2.14.1".into())));
        assert_eq!(
            split_file_name("commons-lang3-3.12.0.jar"),
            Some(("commons-lang3".into(), "3.12.0".into()))
        );
        assert_eq!(split_file_name("app.war"), None);
        assert_eq!(split_file_name("-1.jar"), None);
    }

    #[test]
    fn manifest_continuations_and_sections() {
        let m = "Manifest-Version: 1.0\r\nImplementation-Title: Apache Log4j\r\n  Core\r\nImplementation-Version: 2.14.1\r\n\r\nName: x\r\nImplementation-Version: 9\r\n";
        let attrs = parse_manifest(m);
        assert_eq!(
            identify_from_manifest(&attrs, None),
            Some((None, "Apache Log4j Core".into(), "2.14.1".into()))
        );
    }

    #[test]
    fn properties_with_comments() {
        let p = "#Generated by Maven\n#Tue\ngroupId=org.apache.logging.log4j\nartifactId=log4j-core\nversion=2.14.1\n";
        let props = parse_properties(p);
        assert_eq!(props.len(), 3);
        assert_eq!(props[1], ("artifactId".into(), "log4j-core".into()));
    }

    #[test]
    fn window_reads_and_seeks_within_bounds() {
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, b"0123456789").unwrap();
        let w = Window::whole(f).unwrap();
        let mut sub = w.sub(2, 5);
        let mut s = String::new();
        sub.read_to_string(&mut s).unwrap();
        assert_eq!(s, "23456");
        assert_eq!(sub.seek(SeekFrom::End(-1)).unwrap(), 4);
        let mut one = [0u8; 4];
        assert_eq!(sub.read(&mut one).unwrap(), 1);
        assert_eq!(one[0], b'6');
        assert!(sub.seek(SeekFrom::Current(-10)).is_err());
        let mut clamped = w.sub(8, 100);
        let mut rest = Vec::new();
        clamped.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"89");
    }
}
