//! Amazon Linux / RHEL family: the dnf or yum repository caches against the rpm database.
//!
//! A cached repository is a directory holding `repodata/repomd.xml` (dnf: `/var/cache/dnf/
//! <repoid>-<hash>/repodata/`) or `repomd.xml` itself (yum: `/var/cache/yum/<arch>/<releasever>/
//! <repoid>/`). `repomd.xml` names the `primary` (every package: name, arch, version) and the
//! `updateinfo` (advisories: id, type, severity, CVEs, fixed packages) files, which are found
//! where the href says or beside `repomd.xml` (yum keeps them flat).
//!
//! Both are streamed with a pull parser and only packages with installed names are kept, so a
//! 100 MB `primary.xml` costs no more memory than a small one. The candidate is the highest
//! version of the same name and architecture (or `noarch`) in any repository, as dnf picks it
//! without excludes, modules or priorities. An advisory covers an installed package when it
//! ships a newer version of that name and architecture (`dnf updateinfo list`'s rule); it is
//! attached to the pending update when the candidate includes it.
//!
//! When no XML `primary` is cached (Amazon Linux 2's yum keeps only the SQLite `primary_db`),
//! the `packages` table of `primary_db` is read instead (see `primary_db`).

use crate::error::UpdatesError;
use crate::model::{Advisory, KernelPackage, Manager, PackageUpdates, PendingUpdate, UpdateSource};
use crate::read::{is_dir, list_dir, open_index};
use crate::{Config, Timestamp};
use guestward_core::{HostRoot, Problem};
use guestward_rpmdb::vercmp::compare;
use quick_xml::events::{BytesStart, Event};
use std::cell::Cell;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Largest `repomd.xml` read (real ones are a few KB).
const MAX_REPOMD_BYTES: u64 = 16 * 1024 * 1024;
/// Directories looked into under one cache directory when searching for repositories.
const MAX_DIRS_SEARCHED: usize = 4096;

/// An rpm EVR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Evr {
    pub epoch: Option<u32>,
    pub version: String,
    pub release: String,
}

impl Evr {
    fn cmp(&self, other: &Self) -> Ordering {
        compare((self.epoch, &self.version, &self.release), (other.epoch, &other.version, &other.release))
    }

    fn text(&self) -> String {
        match self.epoch {
            Some(e) if e > 0 => format!("{e}:{}-{}", self.version, self.release),
            _ => format!("{}-{}", self.version, self.release),
        }
    }
}

/// A package of a repository's primary.
struct RepoPackage {
    arch: String,
    evr: Evr,
    repo: usize,
}

/// One advisory's package.
struct AdvisoryPackage {
    arch: String,
    evr: Evr,
    advisory: Rc<Advisory>,
}

/// What the rpm side yields.
pub(crate) struct RpmOutcome {
    pub updates: PackageUpdates,
    pub kernels: Vec<KernelPackage>,
}

/// Reads the rpm database and the dnf/yum caches; `None` when the host has no rpm database.
pub(crate) fn collect(
    root: &HostRoot,
    config: &Config,
    now: Timestamp,
    problems: &mut Vec<Problem>,
) -> Option<RpmOutcome> {
    let dirs: Vec<PathBuf> = guestward_rpmdb::DEFAULT_RPM_DIRS.iter().map(PathBuf::from).collect();
    let scan = guestward_rpmdb::read_rpm_dirs(root, &dirs, &guestward_rpmdb::Limits::default());
    let inventory = match scan.inventory {
        Some(inv) => inv,
        None => {
            for e in &scan.errors {
                if !matches!(e, guestward_rpmdb::RpmdbError::NotFound { .. }) {
                    problems.push(e.to_problem());
                }
            }
            return None;
        }
    };
    let installed = &inventory.packages;
    let wanted: HashSet<&str> = installed.iter().map(|p| p.name.as_str()).collect();

    let mut repo_dirs = Vec::new();
    let mut metadata_dirs = Vec::new();
    for cache in &config.rpm_cache_dirs {
        let cache = cache.as_path();
        if !root.exists(cache) {
            continue;
        }
        metadata_dirs.push(root.display(cache));
        find_repos(root, cache, &mut repo_dirs, problems);
    }

    let mut sources = Vec::new();
    let mut available = crate::read::Offers::new(crate::read::MAX_OFFERS_PER_NAME);
    let mut advisories = crate::read::Offers::new(crate::read::MAX_ADVISORIES_PER_NAME);
    let mut repo_ids = Vec::new();
    for (repo_dir, repomd_path) in &repo_dirs {
        let repo_index = repo_ids.len();
        let id = repo_id(repo_dir);
        repo_ids.push(id.clone());
        let repomd = match root.read_capped(repomd_path, MAX_REPOMD_BYTES) {
            Ok(b) => parse_repomd(&b),
            Err(e) => {
                problems.push(UpdatesError::from(e).to_problem());
                continue;
            }
        };
        let dated = repomd.revision.and_then(Timestamp::from_unix_secs);
        let has_updateinfo = repomd.updateinfo.is_some();
        let primary = match repomd.primary.as_deref().and_then(|h| locate(root, repo_dir, h)) {
            Some(path) => Some((path, false)),
            None => {
                repomd.primary_db.as_deref().and_then(|h| locate_db(root, repo_dir, h)).map(|p| (p, true))
            }
        };
        match primary {
            Some((path, is_db)) => {
                let mut source = UpdateSource {
                    path: root.display(&path),
                    origin: Some(id.clone()),
                    label: None,
                    suite: None,
                    codename: None,
                    security: has_updateinfo,
                    priority: None,
                    dated,
                    modified: None,
                    entries: 0,
                };
                let keep = |name: String, arch, evr| {
                    let offer = RepoPackage { arch, evr, repo: repo_index };
                    available.keep(name, offer, |a: &RepoPackage, b: &RepoPackage| {
                        a.repo == b.repo && a.arch == b.arch && a.evr == b.evr
                    });
                };
                let result = if is_db {
                    crate::primary_db::read_primary_db(root, &path, config, &wanted, keep)
                } else {
                    read_primary(root, &path, config, &wanted, keep)
                };
                match result {
                    Ok((entries, modified, error)) => {
                        source.entries = entries;
                        source.modified = modified;
                        problems.extend(error.map(|e| e.to_problem()));
                    }
                    Err(e) => problems.push(e.to_problem()),
                }
                sources.push(source);
            }
            None => problems.push(
                Problem::new(
                    "not_found",
                    format!(
                        "repository {id}: no cached primary metadata (XML or primary_db) next to {}",
                        root.display(repomd_path)
                    ),
                )
                .with_path(root.display(repomd_path)),
            ),
        }
        if let Some(path) = repomd.updateinfo.as_deref().and_then(|h| locate(root, repo_dir, h)) {
            let result = read_updateinfo(root, &path, config, &wanted, |name, pkg| {
                advisories.keep(name, pkg, |a: &AdvisoryPackage, b: &AdvisoryPackage| {
                    a.advisory.id == b.advisory.id && a.arch == b.arch && a.evr == b.evr
                });
            });
            match result {
                Ok(Some(e)) => problems.push(e.to_problem()),
                Ok(None) => {}
                Err(e) => problems.push(e.to_problem()),
            }
        }
    }

    let (available, over_cap) = available.finish();
    problems.extend(over_cap);
    let (advisories, over_cap) = advisories.finish();
    problems.extend(over_cap);
    let arch_fits = |installed: Option<&str>, offered: &str| match installed {
        Some(a) => a == offered || offered == "noarch" || a == "noarch",
        None => true,
    };
    // The newest installed version of each name and arch (kernels are installed side by side).
    let mut newest: HashMap<(&str, Option<&str>), &guestward_rpmdb::RpmPackage> = HashMap::new();
    for p in installed {
        if p.name == "gpg-pubkey" {
            continue;
        }
        let key = (p.name.as_str(), p.arch.as_deref());
        let keep = newest.get(&key).is_none_or(|q| {
            compare((p.epoch, &p.version, &p.release), (q.epoch, &q.version, &q.release)) == Ordering::Greater
        });
        if keep {
            newest.insert(key, p);
        }
    }
    let mut pending = Vec::new();
    for ((name, arch), p) in &newest {
        let have = Evr { epoch: p.epoch, version: p.version.clone(), release: p.release.clone() };
        let best = available
            .get(*name)
            .into_iter()
            .flatten()
            .filter(|r| arch_fits(*arch, &r.arch) && r.evr.cmp(&have) == Ordering::Greater)
            .max_by(|a, b| a.evr.cmp(&b.evr));
        let covering: Vec<&AdvisoryPackage> = advisories
            .get(*name)
            .into_iter()
            .flatten()
            .filter(|a| arch_fits(*arch, &a.arch) && a.evr.cmp(&have) == Ordering::Greater)
            .collect();
        let Some(best) = best else { continue };
        let mut fixed: Vec<Advisory> = covering
            .iter()
            .filter(|a| a.evr.cmp(&best.evr) != Ordering::Greater)
            .map(|a| Advisory { fixed_in: a.evr.text(), ..(*a.advisory).clone() })
            .collect();
        fixed.sort_by(|a, b| a.id.cmp(&b.id));
        fixed.dedup_by(|a, b| a.id == b.id);
        let mut from: Vec<String> = available
            .get(*name)
            .into_iter()
            .flatten()
            .filter(|r| arch_fits(*arch, &r.arch) && r.evr == best.evr)
            .filter_map(|r| repo_ids.get(r.repo).cloned())
            .collect();
        from.sort_unstable();
        from.dedup();
        let security = fixed.iter().any(|a| a.kind == "security");
        let severity = fixed
            .iter()
            .filter(|a| a.kind == "security")
            .filter_map(|a| a.severity.as_deref())
            .map(normalise_severity)
            .max_by_key(|s| severity_rank(s))
            .map(str::to_string);
        pending.push(PendingUpdate {
            name: (*name).to_string(),
            arch: arch.map(str::to_string),
            installed: have.text(),
            candidate: best.evr.text(),
            from,
            security,
            severity,
            advisories: fixed,
        });
    }
    pending.sort_by(|a, b| (&a.name, &a.arch).cmp(&(&b.name, &b.arch)));

    let mut kernels: Vec<(Evr, KernelPackage)> = installed
        .iter()
        .filter(|p| p.name == "kernel" || p.name == "kernel-core")
        .map(|p| {
            let evr = Evr { epoch: p.epoch, version: p.version.clone(), release: p.release.clone() };
            let release = match &p.arch {
                Some(a) => format!("{}-{}.{a}", p.version, p.release),
                None => format!("{}-{}", p.version, p.release),
            };
            (evr.clone(), KernelPackage { name: p.name.clone(), version: evr.text(), release })
        })
        .collect();
    kernels.sort_by(|a, b| a.0.cmp(&b.0));

    let refreshed_at = sources.iter().flat_map(|s| [s.modified, s.dated]).flatten().max();
    let age_secs = refreshed_at.map(|t| u64::try_from(now.unix_secs() - t.unix_secs()).unwrap_or(0));
    let stale = sources.is_empty() || age_secs.is_some_and(|a| a > config.stale_after_days * 86_400);
    Some(RpmOutcome {
        updates: PackageUpdates {
            manager: Manager::Rpm,
            metadata_dirs,
            sources,
            ignored: Vec::new(),
            refreshed_at,
            age_secs,
            stale,
            installed: installed.len(),
            pending,
        },
        kernels: kernels.into_iter().map(|(_, k)| k).collect(),
    })
}

/// `critical`, `important`, `moderate`, `low` from what distributions write (`Important`,
/// `medium`...).
pub(crate) fn normalise_severity(s: &str) -> &'static str {
    match s.trim().to_ascii_lowercase().as_str() {
        "critical" => "critical",
        "important" | "high" => "important",
        "moderate" | "medium" => "moderate",
        "low" => "low",
        _ => "unknown",
    }
}

/// Order of [`normalise_severity`]'s words.
pub(crate) fn severity_rank(s: &str) -> u8 {
    match s {
        "critical" => 4,
        "important" => 3,
        "moderate" => 2,
        "low" => 1,
        _ => 0,
    }
}

/// The repository id of a cache directory: dnf appends `-<16 hex digits>` to it.
fn repo_id(dir: &Path) -> String {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match name.rsplit_once('-') {
        Some((id, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => id.to_string(),
        _ => name,
    }
}

/// Repositories under `cache`: `(repo dir, repomd.xml)`, at most three levels down (yum's
/// `<arch>/<releasever>/<repoid>`).
fn find_repos(root: &HostRoot, cache: &Path, out: &mut Vec<(PathBuf, PathBuf)>, problems: &mut Vec<Problem>) {
    let mut queue = vec![(cache.to_path_buf(), 0u8)];
    let mut searched = 0usize;
    while let Some((dir, depth)) = queue.pop() {
        searched += 1;
        if searched > MAX_DIRS_SEARCHED {
            problems.push(Problem::new(
                "truncated",
                format!(
                    "{}: more than {MAX_DIRS_SEARCHED} directories; the rest were not searched",
                    root.display(cache)
                ),
            ));
            return;
        }
        let names = match list_dir(root, &dir) {
            Ok(n) => n.unwrap_or_default(),
            Err(e) => {
                problems.push(e.to_problem());
                continue;
            }
        };
        if depth > 0 {
            if names.iter().any(|n| n == "repomd.xml") {
                out.push((dir.clone(), dir.join("repomd.xml")));
                continue;
            }
            if names.iter().any(|n| n == "repodata") && root.exists(dir.join("repodata/repomd.xml")) {
                out.push((dir.clone(), dir.join("repodata/repomd.xml")));
                continue;
            }
        }
        if depth < 3 {
            for n in names.iter().rev() {
                let child = dir.join(n);
                if is_dir(root, &child) {
                    queue.push((child, depth + 1));
                }
            }
        }
    }
}

/// Where `href` (`repodata/<hash>-primary.xml.gz`) is cached for `repo_dir`.
fn locate(root: &HostRoot, repo_dir: &Path, href: &str) -> Option<PathBuf> {
    // The href comes from the file: no way out of the repository directory.
    if href.split('/').any(|c| c == ".." || c.is_empty()) || href.starts_with('/') {
        return None;
    }
    let base = href.rsplit('/').next().unwrap_or(href);
    [repo_dir.join(href), repo_dir.join("repodata").join(base), repo_dir.join(base)]
        .into_iter()
        .find(|p| root.exists(p))
}

/// Where the `primary_db` named by `href` is cached: already decompressed
/// (`<hash>-primary.sqlite`, preferred: nothing to inflate) or as fetched (`.sqlite.bz2`...).
fn locate_db(root: &HostRoot, repo_dir: &Path, href: &str) -> Option<PathBuf> {
    let (compression, stem) = crate::read::Compression::of(href);
    let plain =
        (compression != crate::read::Compression::None).then(|| locate(root, repo_dir, stem)).flatten();
    plain.or_else(|| locate(root, repo_dir, href))
}

/// What `repomd.xml` names.
#[derive(Debug, Default)]
pub(crate) struct Repomd {
    pub revision: Option<i64>,
    pub primary: Option<String>,
    pub primary_db: Option<String>,
    pub updateinfo: Option<String>,
}

/// Parses `repomd.xml`: the `location href` of the `primary` and `updateinfo` data.
pub(crate) fn parse_repomd(bytes: &[u8]) -> Repomd {
    let mut reader = quick_xml::Reader::from_reader(bytes);
    let mut out = Repomd::default();
    let mut current: Option<String> = None;
    let mut in_revision = false;
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) if e.local_name().as_ref() == "data" => current = attr(&e, "type"),
            Ok(Event::Start(e)) if e.local_name().as_ref() == "revision" => in_revision = true,
            Ok(Event::Text(t)) if in_revision => {
                out.revision = t.trim().parse().ok();
                in_revision = false;
            }
            Ok(Event::Empty(e) | Event::Start(e)) if e.local_name().as_ref() == "location" => {
                let href = attr(&e, "href");
                match current.as_deref() {
                    Some("primary") => out.primary = href,
                    Some("primary_db") => out.primary_db = href,
                    Some("updateinfo") => out.updateinfo = href,
                    _ => {}
                }
            }
            Ok(Event::End(e)) if e.local_name().as_ref() == "data" => current = None,
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
        buf.clear();
    }
    out
}

fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == name)
        .and_then(|a| a.normalized_value(quick_xml::XmlVersion::Implicit1_0).ok().map(|v| v.into_owned()))
}

/// Counts bytes pulled from the decompressed stream since the last event and refuses more
/// than the entry cap: the XML parser grows its buffer to hold one event, so this bounds it.
struct EventCap<R> {
    inner: R,
    since_event: Rc<Cell<u64>>,
    cap: u64,
}

impl<R: Read> Read for EventCap<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.since_event.get() > self.cap {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!("an XML element longer than {} bytes", self.cap),
            ));
        }
        let n = self.inner.read(buf)?;
        self.since_event.set(self.since_event.get() + n as u64);
        Ok(n)
    }
}

type XmlReader = quick_xml::Reader<std::io::BufReader<EventCap<Box<dyn std::io::BufRead + Send>>>>;

/// An opened XML index: the reader, the per-event byte counter to reset, the path shown and
/// the modification time.
type OpenedXml = (XmlReader, Rc<Cell<u64>>, PathBuf, Option<Timestamp>);

fn xml_reader(root: &HostRoot, path: &Path, config: &Config) -> Result<OpenedXml, UpdatesError> {
    let index = open_index(root, path, config.max_index_bytes)?;
    let counter = Rc::new(Cell::new(0));
    let capped = EventCap { inner: index.reader, since_event: counter.clone(), cap: config.max_entry_bytes };
    let reader = quick_xml::Reader::from_reader(std::io::BufReader::with_capacity(8 * 1024, capped));
    Ok((reader, counter, index.shown, index.modified))
}

fn xml_error(shown: &Path, e: quick_xml::Error) -> UpdatesError {
    match e {
        quick_xml::Error::Io(io) => UpdatesError::Decode {
            path: shown.to_path_buf(),
            source: std::io::Error::new(io.kind(), io.to_string()),
        },
        other => UpdatesError::Xml { path: shown.to_path_buf(), message: other.to_string() },
    }
}

fn evr_of(e: &BytesStart<'_>) -> Option<Evr> {
    Some(Evr {
        epoch: attr(e, "epoch").and_then(|s| s.parse().ok()),
        version: attr(e, "ver").or_else(|| attr(e, "version"))?,
        release: attr(e, "rel").or_else(|| attr(e, "release"))?,
    })
}

/// Streams a `primary.xml`: `keep(name, arch, evr)` for packages with wanted names. Returns
/// the package count, the modification time and an error met part-way (earlier packages kept).
fn read_primary(
    root: &HostRoot,
    path: &Path,
    config: &Config,
    wanted: &HashSet<&str>,
    mut keep: impl FnMut(String, String, Evr),
) -> Result<(u64, Option<Timestamp>, Option<UpdatesError>), UpdatesError> {
    let (mut reader, counter, shown, modified) = xml_reader(root, path, config)?;
    let mut buf = Vec::new();
    let mut entries = 0u64;
    let mut in_package = false;
    let mut field: Option<&'static str> = None;
    let (mut name, mut arch, mut evr) = (String::new(), String::new(), None::<Evr>);
    loop {
        counter.set(0);
        let event = match reader.read_event_into(&mut buf) {
            Ok(e) => e,
            Err(e) => return Ok((entries, modified, Some(xml_error(&shown, e)))),
        };
        match event {
            Event::Start(e) if e.local_name().as_ref() == "package" => {
                in_package = true;
                name.clear();
                arch.clear();
                evr = None;
            }
            Event::Start(e) if in_package && e.local_name().as_ref() == "name" => field = Some("name"),
            Event::Start(e) if in_package && e.local_name().as_ref() == "arch" => field = Some("arch"),
            Event::Empty(e) | Event::Start(e) if in_package && e.local_name().as_ref() == "version" => {
                evr = evr_of(&e);
            }
            Event::Text(t) => match field {
                Some("name") => name.push_str(&t),
                Some("arch") => arch.push_str(&t),
                _ => {}
            },
            Event::End(e) if e.local_name().as_ref() == "package" => {
                in_package = false;
                entries += 1;
                if arch != "src"
                    && wanted.contains(name.as_str())
                    && let Some(v) = evr.take()
                {
                    keep(std::mem::take(&mut name), std::mem::take(&mut arch), v);
                }
            }
            Event::End(_) => field = None,
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok((entries, modified, None))
}

/// Streams an `updateinfo.xml`: `keep(name, package)` for every advisory package with a
/// wanted name. Returns an error met part-way (earlier advisories kept).
fn read_updateinfo(
    root: &HostRoot,
    path: &Path,
    config: &Config,
    wanted: &HashSet<&str>,
    mut keep: impl FnMut(String, AdvisoryPackage),
) -> Result<Option<UpdatesError>, UpdatesError> {
    let (mut reader, counter, shown, _) = xml_reader(root, path, config)?;
    let mut buf = Vec::new();
    let mut advisory: Option<Advisory> = None;
    let mut packages: Vec<(String, String, Evr)> = Vec::new();
    let mut field: Option<&'static str> = None;
    loop {
        counter.set(0);
        let event = match reader.read_event_into(&mut buf) {
            Ok(e) => e,
            Err(e) => return Ok(Some(xml_error(&shown, e))),
        };
        match event {
            Event::Start(e) if e.local_name().as_ref() == "update" => {
                packages.clear();
                advisory = Some(Advisory {
                    id: String::new(),
                    kind: attr(&e, "type").unwrap_or_default(),
                    severity: None,
                    cves: Vec::new(),
                    issued: None,
                    fixed_in: String::new(),
                });
            }
            Event::Start(e) if advisory.is_some() && e.local_name().as_ref() == "id" => field = Some("id"),
            Event::Start(e) if advisory.is_some() && e.local_name().as_ref() == "severity" => {
                field = Some("severity")
            }
            Event::Empty(e) | Event::Start(e) if e.local_name().as_ref() == "issued" => {
                if let Some(a) = advisory.as_mut() {
                    a.issued = attr(&e, "date");
                }
            }
            Event::Empty(e) | Event::Start(e) if e.local_name().as_ref() == "reference" => {
                if let Some(a) = advisory.as_mut()
                    && attr(&e, "type").as_deref() == Some("cve")
                    && let Some(id) = attr(&e, "id")
                    && !a.cves.contains(&id)
                {
                    a.cves.push(id);
                }
            }
            Event::Empty(e) | Event::Start(e) if e.local_name().as_ref() == "package" => {
                if let (Some(name), Some(evr)) = (attr(&e, "name"), evr_of(&e))
                    && wanted.contains(name.as_str())
                {
                    packages.push((name, attr(&e, "arch").unwrap_or_default(), evr));
                }
            }
            Event::Text(t) => {
                if let (Some(a), Some(f)) = (advisory.as_mut(), field) {
                    let text = t.trim().to_string();
                    match f {
                        "id" => a.id.push_str(&text),
                        _ => a.severity = Some(text).filter(|s| !s.is_empty()),
                    }
                }
            }
            Event::End(e) if e.local_name().as_ref() == "update" => {
                if let Some(a) = advisory.take()
                    && !packages.is_empty()
                {
                    let a = Rc::new(a);
                    for (name, arch, evr) in packages.drain(..) {
                        keep(name, AdvisoryPackage { arch, evr, advisory: a.clone() });
                    }
                }
            }
            Event::End(_) => field = None,
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn repomd_names_primary_and_updateinfo() {
        let xml = br#"<?xml version="1.0"?><repomd xmlns="http://linux.duke.edu/metadata/repo"><revision>1733000000</revision>
            <data type="primary"><location href="repodata/abc-primary.xml.gz"/></data>
            <data type="primary_db"><location href="repodata/abc-primary.sqlite.bz2"/></data>
            <data type="updateinfo"><location href="repodata/def-updateinfo.xml.gz"/></data></repomd>"#;
        let r = parse_repomd(xml);
        assert_eq!(r.revision, Some(1_733_000_000));
        assert_eq!(r.primary.as_deref(), Some("repodata/abc-primary.xml.gz"));
        assert_eq!(r.primary_db.as_deref(), Some("repodata/abc-primary.sqlite.bz2"));
        assert_eq!(r.updateinfo.as_deref(), Some("repodata/def-updateinfo.xml.gz"));
    }

    #[test]
    fn repo_ids_drop_dnf_hash() {
        assert_eq!(repo_id(Path::new("/var/cache/dnf/amazonlinux-1a2b3c4d5e6f7a8b")), "amazonlinux");
        assert_eq!(repo_id(Path::new("/var/cache/yum/x86_64/2/amzn2-core")), "amzn2-core");
    }

    #[test]
    fn severities_normalise() {
        assert_eq!(normalise_severity("Important"), "important");
        assert_eq!(normalise_severity("medium"), "moderate");
        assert!(severity_rank("critical") > severity_rank("low"));
    }
}
