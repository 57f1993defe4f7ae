//! Debian/Ubuntu: the apt lists against the dpkg database.
//!
//! Each `*_Packages[.gz|.lz4|.xz]` list in the lists directory belongs to the `InRelease` (or
//! `Release`) whose name, without `InRelease`, is the longest prefix of the list's name (apt
//! names both after the same URI: `deb.debian.org_debian_dists_bookworm_InRelease`,
//! `deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4`).
//!
//! Lists are streamed: only the stanzas of installed package names are parsed and kept (the
//! full Debian archive is ~63,000 stanzas, 50 MB; an installed system has hundreds of them).
//!
//! Candidate choice follows apt's policy with default pins only (apt_preferences(5)): a
//! source's priority is 500, or 1 when its `Release` says `NotAutomatic: yes`, or 100 when it
//! also says `ButAutomaticUpgrades: yes`; the installed version has at least 100. Versions
//! below the installed one are never candidates (that needs a pin of 1000 or more, which
//! only `/etc/apt/preferences` can give and is not read). The candidate is the version with
//! the highest priority, the newest among equals. Pins in `/etc/apt/preferences(.d)` and
//! `APT::Default-Release` are not applied.
//!
//! Signatures are not checked: apt verified `InRelease` when it wrote the lists, and anyone
//! who can rewrite `/var/lib/apt/lists` as root can also change what apt itself would see.

use crate::error::UpdatesError;
use crate::model::{KernelPackage, Manager, PackageUpdates, PendingUpdate, UpdateSource};
use crate::read::{Line, list_dir, open_index, read_line};
use crate::{Config, Timestamp};
use debversion::Version;
use guestward_core::{HostRoot, Problem};
use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;

/// Largest `Release`/`InRelease` read (Debian's main one is ~150 KB).
const MAX_RELEASE_BYTES: u64 = 64 * 1024 * 1024;

/// The fields of a `Release` file that matter here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Release {
    pub origin: Option<String>,
    pub label: Option<String>,
    pub suite: Option<String>,
    pub codename: Option<String>,
    pub date: Option<Timestamp>,
    pub not_automatic: bool,
    pub but_automatic_upgrades: bool,
}

impl Release {
    /// Parses a `Release` or the signed text of an `InRelease` (the signature is skipped).
    pub(crate) fn parse(text: &str) -> Self {
        let mut body = text;
        if let Some(rest) = text.strip_prefix("-----BEGIN PGP SIGNED MESSAGE-----") {
            // Armor headers (`Hash: SHA512`) end at the first empty line.
            body = rest.split_once("\n\n").map_or("", |(_, b)| b);
            if let Some((signed, _)) = body.split_once("\n-----BEGIN PGP SIGNATURE-----") {
                body = signed;
            }
        }
        let mut r = Self::default();
        for line in body.lines() {
            // Continuation lines belong to the checksum lists.
            if line.starts_with([' ', '\t']) {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else { continue };
            let value = value.trim();
            let owned = || Some(value.to_string()).filter(|v| !v.is_empty());
            match key {
                "Origin" => r.origin = owned(),
                "Label" => r.label = owned(),
                "Suite" => r.suite = owned(),
                "Codename" => r.codename = owned(),
                "Date" => r.date = parse_release_date(value),
                "NotAutomatic" => r.not_automatic = value.eq_ignore_ascii_case("yes"),
                "ButAutomaticUpgrades" => r.but_automatic_upgrades = value.eq_ignore_ascii_case("yes"),
                _ => {}
            }
        }
        r
    }

    /// apt's default pin priority for this source.
    pub(crate) fn priority(&self) -> i32 {
        match (self.not_automatic, self.but_automatic_upgrades) {
            (true, true) => 100,
            (true, false) => 1,
            _ => 500,
        }
    }

    /// A security archive: Debian's label, or a `*-security` suite (Ubuntu, Debian).
    pub(crate) fn is_security(&self) -> bool {
        self.label.as_deref() == Some("Debian-Security")
            || [&self.suite, &self.codename]
                .iter()
                .any(|s| s.as_deref().is_some_and(|s| s.ends_with("-security")))
    }
}

/// `Sat, 16 May 2026 10:30:49 UTC` (RFC 2822, with `UTC` that the RFC calls `UT`).
pub(crate) fn parse_release_date(value: &str) -> Option<Timestamp> {
    let normalised = match value.strip_suffix(" UTC") {
        Some(v) => format!("{v} +0000"),
        None => value.to_string(),
    };
    jiff::fmt::rfc2822::DateTimeParser::new().parse_timestamp(&normalised).ok().map(Timestamp)
}

/// A version of an installed package seen in one list.
struct Seen {
    version: Version,
    text: String,
    source: usize,
}

/// What the apt side yields.
pub(crate) struct AptOutcome {
    pub updates: PackageUpdates,
    pub kernels: Vec<KernelPackage>,
}

/// Reads dpkg's status and the apt lists under `root`; `None` when the host has no dpkg.
pub(crate) fn collect(
    root: &HostRoot,
    config: &Config,
    now: Timestamp,
    problems: &mut Vec<Problem>,
) -> Option<AptOutcome> {
    let admin = config.dpkg_admin_dir.as_path();
    // Only a status file that is not there means no dpkg: one that cannot be looked at (a
    // directory closed to this user) is a problem, not a host without packages.
    match root.symlink_metadata(admin.join("status")) {
        Ok(_) => {}
        Err(guestward_core::HostFsError::NotFound { .. }) => return None,
        Err(e) => {
            problems.push(e.to_problem());
            return None;
        }
    }
    let installed = match guestward_packages::dpkg::read_status(
        root,
        admin,
        guestward_packages::dpkg::DEFAULT_MAX_STATUS_BYTES,
    ) {
        Ok((inv, _stanza_problems)) => inv.installed,
        Err(e) => {
            problems.push(e.to_problem());
            return None;
        }
    };
    let lists_dir = config.apt_lists_dir.as_path();
    let names = match list_dir(root, lists_dir) {
        Ok(n) => n.unwrap_or_default(),
        Err(e) => {
            problems.push(e.to_problem());
            Vec::new()
        }
    };

    // Only the lists of sources configured now count, as for apt.
    let configured = crate::sources::configured_prefixes(root, problems);
    let in_use =
        |name: &str| configured.as_ref().is_none_or(|c| c.iter().any(|p| name.starts_with(p.as_str())));
    let mut ignored = Vec::new();

    // Release files by prefix; InRelease wins over Release for the same prefix.
    let mut releases: Vec<(String, Release)> = Vec::new();
    for name in &names {
        let prefix = match name.strip_suffix("InRelease") {
            Some(p) => p,
            None => match name.strip_suffix("Release") {
                Some(p) if !names.contains(&format!("{p}InRelease")) => p,
                _ => continue,
            },
        };
        if !in_use(name) {
            continue;
        }
        match root.read_capped(lists_dir.join(name), MAX_RELEASE_BYTES) {
            Ok(bytes) => {
                releases.push((prefix.to_string(), Release::parse(&String::from_utf8_lossy(&bytes))))
            }
            Err(e) => problems.push(UpdatesError::from(e).to_problem()),
        }
    }

    let wanted: HashSet<&str> = installed.iter().map(|p| p.name.as_str()).collect();
    let mut sources: Vec<UpdateSource> = Vec::new();
    let mut offers = crate::read::Offers::new(crate::read::MAX_OFFERS_PER_NAME);
    for name in &names {
        let stem = crate::read::Compression::of(name).1;
        if !stem.ends_with("_Packages") {
            continue;
        }
        if !in_use(name) {
            ignored.push(root.display(lists_dir.join(name)));
            continue;
        }
        let release = releases
            .iter()
            .filter(|(prefix, _)| name.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, r)| r.clone())
            .unwrap_or_default();
        let source_index = sources.len();
        let path = lists_dir.join(name);
        let mut source = UpdateSource {
            path: root.display(&path),
            origin: release.origin.clone(),
            label: release.label.clone(),
            suite: release.suite.clone(),
            codename: release.codename.clone(),
            security: release.is_security(),
            priority: Some(release.priority()),
            dated: release.date,
            modified: None,
            entries: 0,
        };
        let result = read_list(root, &path, config, &wanted, |stanza| {
            let offer = Seen { version: stanza.version, text: stanza.version_text, source: source_index };
            offers.keep((stanza.name, stanza.arch), offer, |a: &Seen, b: &Seen| {
                a.source == b.source && a.text == b.text
            });
        });
        match result {
            Ok((entries, modified, errors)) => {
                source.entries = entries;
                source.modified = modified;
                problems.extend(errors.iter().map(UpdatesError::to_problem));
            }
            Err(e) => problems.push(e.to_problem()),
        }
        sources.push(source);
    }

    let (seen, over_cap) = offers.finish();
    problems.extend(over_cap);
    let mut pending = Vec::new();
    let mut kernels = Vec::new();
    for pkg in &installed {
        let Ok(installed_version) = Version::from_str(&pkg.version.full) else { continue };
        let arch = pkg.architecture.clone().unwrap_or_default();
        if let Some(release) = kernel_release(&pkg.name) {
            kernels.push((
                installed_version.clone(),
                KernelPackage {
                    name: pkg.name.clone(),
                    version: pkg.version.full.clone(),
                    release: release.to_string(),
                },
            ));
        }
        let mut offered: Vec<&Seen> = Vec::new();
        for key_arch in [arch.as_str(), "all"] {
            if let Some(list) = seen.get(&(pkg.name.clone(), key_arch.to_string())) {
                offered.extend(list);
            }
            if arch == "all" {
                break;
            }
        }
        if arch == "all" {
            // An arch:all package may become arch-specific in a newer version.
            for ((name, a), list) in &seen {
                if name == &pkg.name && a != "all" {
                    offered.extend(list);
                }
            }
        }
        if let Some(update) = candidate(&installed_version, &offered, &sources) {
            pending.push(PendingUpdate {
                name: pkg.name.clone(),
                arch: pkg.architecture.clone(),
                installed: pkg.version.full.clone(),
                candidate: update.0,
                from: update.1,
                security: update.2,
                severity: None,
                advisories: Vec::new(),
            });
        }
    }
    pending.sort_by(|a, b| (&a.name, &a.arch).cmp(&(&b.name, &b.arch)));
    kernels.sort_by(|a, b| a.0.cmp(&b.0));

    let refreshed_at = sources.iter().flat_map(|s| [s.modified, s.dated]).flatten().max();
    let age_secs = refreshed_at.map(|t| u64::try_from(now.unix_secs() - t.unix_secs()).unwrap_or(0));
    // No lists at all is stale only where apt has sources to fetch them from: a tree without any
    // sources configuration (a minimal image, a container rootfs) has nothing to refresh.
    let no_lists = sources.is_empty() && configured.is_some();
    let stale = no_lists || age_secs.is_some_and(|a| a > config.stale_after_days * 86_400);
    Some(AptOutcome {
        updates: PackageUpdates {
            manager: Manager::Apt,
            metadata_dirs: vec![root.display(lists_dir)],
            sources,
            ignored,
            refreshed_at,
            age_secs,
            stale,
            installed: installed.len(),
            pending,
        },
        kernels: kernels.into_iter().map(|(_, k)| k).collect(),
    })
}

/// `linux-image-6.1.0-37-cloud-amd64` -> `6.1.0-37-cloud-amd64`; meta packages
/// (`linux-image-amd64`) and debug images are not kernels.
fn kernel_release(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("linux-image-")?;
    let rest = rest.strip_prefix("unsigned-").unwrap_or(rest);
    (rest.starts_with(|c: char| c.is_ascii_digit()) && !rest.ends_with("-dbg")).then_some(rest)
}

/// apt's candidate for an installed version among `offered`: `(version, suites, security)`
/// when it is newer than the installed one.
fn candidate(
    installed: &Version,
    offered: &[&Seen],
    sources: &[UpdateSource],
) -> Option<(String, Vec<String>, bool)> {
    let priority = |s: &Seen| sources.get(s.source).and_then(|s| s.priority).unwrap_or(500);
    // The installed version has at least 100, more when a source also carries it.
    let installed_priority =
        offered.iter().filter(|s| &s.version == installed).map(|s| priority(s)).max().unwrap_or(0).max(100);
    let best = offered
        .iter()
        .filter(|s| &s.version > installed)
        .max_by(|a, b| priority(a).cmp(&priority(b)).then_with(|| a.version.cmp(&b.version)))?;
    let best_priority =
        offered.iter().filter(|s| s.version == best.version).map(|s| priority(s)).max().unwrap_or(0);
    // Equal priorities: the newer version wins, so an upgrade needs at least the installed one's.
    if best_priority < installed_priority {
        return None;
    }
    let mut from = Vec::new();
    let mut security = false;
    for s in offered.iter().filter(|s| s.version == best.version) {
        if let Some(src) = sources.get(s.source) {
            security |= src.security;
            let suite = src.suite.clone().or_else(|| src.codename.clone()).unwrap_or_else(|| "now".into());
            if !from.contains(&suite) {
                from.push(suite);
            }
        }
    }
    Some((best.text.clone(), from, security))
}

/// One kept stanza.
struct Stanza {
    name: String,
    arch: String,
    version: Version,
    version_text: String,
}

/// Streams one list: `keep` gets the stanzas of `wanted` names. Returns the number of
/// stanzas, the file's modification time, and the entries skipped (too long, unparsable)
/// together with a decoding failure part-way (what was read before it is kept).
fn read_list(
    root: &HostRoot,
    path: &Path,
    config: &Config,
    wanted: &HashSet<&str>,
    mut keep: impl FnMut(Stanza),
) -> Result<(u64, Option<Timestamp>, Vec<UpdatesError>), UpdatesError> {
    let mut index = open_index(root, path, config.max_index_bytes)?;
    let cap = usize::try_from(config.max_entry_bytes).unwrap_or(usize::MAX);
    let mut errors = Vec::new();
    let mut line = Vec::with_capacity(256);
    let mut stanza: Vec<u8> = Vec::with_capacity(4096);
    let mut entries = 0u64;
    let mut overlong = false;
    // Skipped entries are counted, and only the first few named: a hostile list could have
    // millions.
    let mut skipped = 0u64;
    let mut finish =
        |stanza: &mut Vec<u8>, overlong: &mut bool, entries: &mut u64, errors: &mut Vec<UpdatesError>| {
            if stanza.is_empty() && !*overlong {
                return;
            }
            *entries += 1;
            if *overlong {
                skipped += 1;
                if skipped <= 3 {
                    errors.push(UpdatesError::EntryTooLong {
                        path: index.shown.clone(),
                        what: "stanza",
                        entry: *entries,
                        cap: config.max_entry_bytes,
                    });
                }
            } else if let Some(s) = parse_stanza(stanza, wanted) {
                keep(s);
            }
            stanza.clear();
            *overlong = false;
        };
    let blank_line = memchr::memmem::Finder::new(b"\n\n");
    loop {
        match read_line(&mut index.reader, &mut line, cap) {
            Ok(Line::Eof) => {
                finish(&mut stanza, &mut overlong, &mut entries, &mut errors);
                break;
            }
            Ok(Line::TooLong) => overlong = true,
            Ok(Line::Full) if line.is_empty() || line == b"\r" => {
                finish(&mut stanza, &mut overlong, &mut entries, &mut errors)
            }
            // `Package` opens every stanza apt writes: a name not installed is skipped unread.
            Ok(Line::Full)
                if stanza.is_empty()
                    && !overlong
                    && line.strip_prefix(b"Package:").is_some_and(|n| {
                        std::str::from_utf8(n).is_ok_and(|n| !wanted.contains(n.trim()))
                    }) =>
            {
                entries += 1;
                match crate::read::skip_stanza(&mut index.reader, &blank_line) {
                    Ok(false) => {}
                    Ok(true) => break,
                    Err(e) => {
                        errors.push(UpdatesError::Decode { path: index.shown.clone(), source: e });
                        break;
                    }
                }
            }
            Ok(Line::Full) => {
                if !overlong {
                    if stanza.len() + line.len() + 1 > cap {
                        overlong = true;
                        stanza.clear();
                    } else {
                        stanza.extend_from_slice(&line);
                        stanza.push(b'\n');
                    }
                }
            }
            Err(e) => {
                // The stanza cut by the failure is incomplete: dropped.
                errors.push(UpdatesError::Decode { path: index.shown.clone(), source: e });
                break;
            }
        }
    }
    Ok((entries, index.modified, errors))
}

/// Parses a stanza whose `Package` is wanted; others are not parsed at all.
fn parse_stanza(bytes: &[u8], wanted: &HashSet<&str>) -> Option<Stanza> {
    let name = field_value(bytes, b"Package:")?;
    let name = std::str::from_utf8(name).ok()?.trim();
    if !wanted.contains(name) {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let paragraphs = deb822_fast::borrowed::parse_borrowed(text).ok()?;
    let para = paragraphs.first()?;
    let get = |f: &str| para.get_single(f).map(str::trim).filter(|v| !v.is_empty());
    let version_text = get("Version")?;
    let version = Version::from_str(version_text).ok()?;
    Some(Stanza {
        name: get("Package")?.to_string(),
        arch: get("Architecture").unwrap_or("all").to_string(),
        version,
        version_text: version_text.to_string(),
    })
}

/// The value of the first line starting with `key` (e.g. `Package:`), without parsing the rest.
fn field_value<'a>(bytes: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let mut start = 0;
    while start < bytes.len() {
        let end = memchr::memchr(b'\n', &bytes[start..]).map_or(bytes.len(), |i| start + i);
        let line = &bytes[start..end];
        if let Some(v) = line.strip_prefix(key) {
            return Some(v);
        }
        start = end + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn inrelease_fields_and_default_priorities() {
        let text = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: Debian\nLabel: Debian-Security\n\
                    Suite: oldstable-security\nCodename: bookworm-security\nDate: Wed, 20 May 2026 16:26:24 UTC\n\
                    SHA256:\n 0123 45 main/Release\n-----BEGIN PGP SIGNATURE-----\n\nxxx\n-----END PGP SIGNATURE-----\n";
        let r = Release::parse(text);
        assert_eq!(r.origin.as_deref(), Some("Debian"));
        assert_eq!(r.suite.as_deref(), Some("oldstable-security"));
        assert!(r.is_security());
        assert_eq!(r.priority(), 500);
        assert_eq!(r.date.unwrap().to_string(), "2026-05-20T16:26:24Z");
        let backports =
            Release::parse("Suite: bookworm-backports\nNotAutomatic: yes\nButAutomaticUpgrades: yes\n");
        assert_eq!(backports.priority(), 100);
        assert!(!backports.is_security());
        assert_eq!(Release::parse("NotAutomatic: yes\n").priority(), 1);
    }

    #[test]
    fn kernel_names() {
        assert_eq!(kernel_release("linux-image-6.1.0-37-cloud-amd64"), Some("6.1.0-37-cloud-amd64"));
        assert_eq!(kernel_release("linux-image-unsigned-6.8.0-1-generic"), Some("6.8.0-1-generic"));
        assert_eq!(kernel_release("linux-image-amd64"), None);
        assert_eq!(kernel_release("linux-image-6.1.0-37-amd64-dbg"), None);
    }

    fn seen(v: &str, source: usize) -> Seen {
        Seen { version: Version::from_str(v).unwrap(), text: v.into(), source }
    }

    fn src(priority: i32, suite: &str, security: bool) -> UpdateSource {
        UpdateSource {
            path: String::new(),
            origin: None,
            label: None,
            suite: Some(suite.into()),
            codename: None,
            security,
            priority: Some(priority),
            dated: None,
            modified: None,
            entries: 0,
        }
    }

    #[test]
    fn candidate_follows_default_priorities() {
        let sources = [
            src(500, "stable", false),
            src(500, "stable-security", true),
            src(1, "experimental", false),
            src(100, "backports", false),
        ];
        let installed = Version::from_str("1.0-1").unwrap();
        // The same newer version in two suites: both named, security because of one.
        let a = seen("1.0-2", 0);
        let b = seen("1.0-2", 1);
        let got = candidate(&installed, &[&a, &b], &sources).unwrap();
        assert_eq!(
            got,
            ("1.0-2".to_string(), vec!["stable".to_string(), "stable-security".to_string()], true)
        );
        // NotAutomatic (1) never wins over the installed version (100).
        let e = seen("9.0-1", 2);
        assert_eq!(candidate(&installed, &[&e], &sources), None);
        // ButAutomaticUpgrades (100) ties with the installed version: the newer one wins.
        let bp = seen("2.0-1", 3);
        assert_eq!(candidate(&installed, &[&bp], &sources).unwrap().0, "2.0-1");
        // A 500 source beats a newer version at 100.
        assert_eq!(candidate(&installed, &[&bp, &a], &sources).unwrap().0, "1.0-2");
        // Older versions are never candidates.
        let old = seen("0.9-1", 0);
        assert_eq!(candidate(&installed, &[&old], &sources), None);
    }
}
