//! Static AWS credentials on disk: `~/.aws/credentials` and `~/.aws/config` of every account,
//! `.env` files under the configured roots, and systemd units' `Environment=` and
//! `EnvironmentFile=`.
//!
//! Security: these files hold secrets. Only the key id leaves this module, masked
//! ([`mask_key_id`]), with the file, line and variable or profile name; a secret is noted as
//! present, never copied. Problems name files and line numbers, never a line's content.

use crate::config::Config;
use crate::fs::{MAX_CONFIG_BYTES, list_dir, read_text, show, show_name};
use crate::model::{
    CloudCredential, CredentialSource, Location, Truncation, key_kind, looks_like_key_id, mask_key_id,
};
use guestward_core::text::counted;
use guestward_core::{HostFsError, HostRoot, Problem};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// `.env` files and credential files larger than this are not read.
const MAX_SECRET_FILE_BYTES: u64 = 1024 * 1024;
/// Directories never entered by the `.env` search: dependency trees and caches, large and
/// never where an application's own `.env` lives.
const SKIP_DIRS: &[&str] = &[
    "node_modules",
    ".git",
    ".cache",
    ".npm",
    ".cargo",
    ".rustup",
    "vendor",
    "__pycache__",
    ".venv",
    "venv",
    "proc",
    "sys",
];
/// systemd unit directories, in systemd's order of precedence.
const UNIT_DIRS: &[&str] =
    &["/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"];
/// Unit files and drop-ins read at most.
const MAX_UNIT_FILES: usize = 20_000;

/// The `.env` search under way.
struct EnvWalk<'a> {
    root: &'a HostRoot,
    config: &'a Config,
    /// Directories listed.
    seen: BTreeSet<PathBuf>,
    /// The first directory the budget did not cover, and how many it did not.
    cut: Option<PathBuf>,
    cut_count: u64,
}

impl EnvWalk<'_> {
    fn note_cut(&mut self, dir: &Path) {
        self.cut.get_or_insert_with(|| dir.to_path_buf());
        self.cut_count += 1;
    }
}

/// What was found, with the problems met and the bounds reached.
#[derive(Debug, Default)]
pub(crate) struct Found {
    pub credentials: Vec<CloudCredential>,
    pub problems: Vec<Problem>,
    pub truncated: Vec<Truncation>,
}

fn unquote(v: &str) -> &str {
    let v = v.trim();
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner;
        }
    }
    v
}

fn line_no(i: usize) -> u32 {
    u32::try_from(i + 1).unwrap_or(u32::MAX)
}

/// An AWS shared credentials or config file: one credential per profile with a key id.
pub(crate) fn parse_aws_file(text: &str, file: &str, source: CredentialSource) -> Vec<CloudCredential> {
    let mut out: Vec<CloudCredential> = Vec::new();
    let mut profile = String::from("default");
    let mut secret_in_profile = false;
    let mut first_of_profile = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('[') && line.ends_with(']') {
            for c in &mut out[first_of_profile..] {
                c.secret_present |= secret_in_profile;
            }
            first_of_profile = out.len();
            secret_in_profile = false;
            profile = line[1..line.len() - 1].trim().to_string();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else { continue };
        match key.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => {
                let id = value.trim();
                out.push(CloudCredential {
                    source,
                    at: Location { file: file.to_string(), line: line_no(i) },
                    name: guestward_core::text::truncate_chars(&profile, 128).into_owned(),
                    key_id: mask_key_id(id),
                    kind: key_kind(id),
                    secret_present: false,
                    unit: None,
                });
            }
            "aws_secret_access_key" if !value.trim().is_empty() => secret_in_profile = true,
            _ => {}
        }
    }
    for c in &mut out[first_of_profile..] {
        c.secret_present |= secret_in_profile;
    }
    out
}

/// `KEY=value` lines (`.env`, `EnvironmentFile=`, the words of `Environment=`): a credential for
/// `AWS_ACCESS_KEY_ID`, and for any other variable whose value has the shape of a key id.
pub(crate) fn parse_env_assignments<'a>(
    assignments: impl Iterator<Item = (u32, &'a str)>,
    file: &str,
    source: CredentialSource,
    unit: Option<&str>,
) -> Vec<CloudCredential> {
    let mut out = Vec::new();
    let mut secret = false;
    for (line, assignment) in assignments {
        let a = assignment.trim();
        let a = a.strip_prefix("export ").unwrap_or(a).trim_start();
        let Some((name, value)) = a.split_once('=') else { continue };
        let name = name.trim();
        let value = unquote(value);
        if name == "AWS_SECRET_ACCESS_KEY" && !value.is_empty() {
            secret = true;
            continue;
        }
        if name == "AWS_ACCESS_KEY_ID" || looks_like_key_id(value) {
            out.push(CloudCredential {
                source,
                at: Location { file: file.to_string(), line },
                name: guestward_core::text::truncate_chars(name, 128).into_owned(),
                key_id: mask_key_id(value),
                kind: key_kind(value),
                secret_present: false,
                unit: unit.map(str::to_string),
            });
        }
    }
    for c in &mut out {
        c.secret_present = secret;
    }
    out
}

/// The words of an `Environment=` value: space-separated, double-quoted words kept whole.
fn environment_words(v: &str) -> Vec<String> {
    crate::sshd::split_args(v)
}

impl Found {
    fn read_optional(&mut self, root: &HostRoot, path: &Path) -> Option<String> {
        match read_text(root, path, MAX_SECRET_FILE_BYTES) {
            Ok(t) => Some(t),
            Err(HostFsError::NotFound { .. }) => None,
            Err(e) => {
                self.problems.push(e.to_problem());
                None
            }
        }
    }

    /// `~/.aws/credentials` and `~/.aws/config` of each home directory.
    fn aws_files(&mut self, root: &HostRoot, homes: &BTreeSet<String>) {
        for home in homes {
            for (name, source) in [
                ("credentials", CredentialSource::AwsCredentialsFile),
                ("config", CredentialSource::AwsConfigFile),
            ] {
                let path = PathBuf::from(home).join(".aws").join(name);
                if let Some(text) = self.read_optional(root, &path) {
                    self.credentials.extend(parse_aws_file(&text, &show(&path), source));
                }
            }
        }
    }

    fn env_file(&mut self, root: &HostRoot, path: &Path, source: CredentialSource, unit: Option<&str>) {
        if let Some(text) = self.read_optional(root, path) {
            let lines = text.lines().enumerate().map(|(i, l)| (line_no(i), l));
            self.credentials.extend(parse_env_assignments(lines, &show(path), source, unit));
        }
    }

    /// `.env` and `.env.*` under the configured roots, depth- and entry-bounded.
    ///
    /// Security: every user writes in their home directory, so the budget of entries
    /// (`env_file_max_entries`) is shared, never first come first served: 60,000 files in
    /// `/home/evil` once used it all before `/root`, `/opt`, `/srv` and `/var/www` were looked
    /// at. Each root gets an equal share of what is left when its turn comes (what a root does
    /// not use goes to the ones after it), and inside a directory each subdirectory gets an
    /// equal share of what its parent has left, so one home cannot starve the next one either.
    /// Roots under `/home` come last, so the root-owned ones leave them what they did not use.
    fn env_walk(&mut self, root: &HostRoot, config: &Config) {
        let mut roots: Vec<&Path> = config.env_file_roots.iter().map(|r| r.as_path()).collect();
        roots.sort_by_key(|r| r.starts_with("/home"));
        let mut walk = EnvWalk { root, config, seen: BTreeSet::new(), cut: None, cut_count: 0 };
        let mut left = config.env_file_max_entries;
        for (i, start) in roots.iter().enumerate() {
            let share = left.div_ceil(u64::try_from(roots.len() - i).unwrap_or(1));
            left -= self.env_dir(&mut walk, start, 0, share);
        }
        if let Some(first) = walk.cut {
            self.truncated
                .push(Truncation { what: "env_file_search".into(), limit: config.env_file_max_entries });
            self.problems.push(Problem::new(
                "limit_reached",
                format!(
                    "the .env search reached its budget of {} directory entries (access.env_file_max_entries, \
                     shared between env_file_roots and their subdirectories) in {}, the first {}; some .env \
                     files may not have been looked at",
                    config.env_file_max_entries,
                    counted(walk.cut_count, "directory", "directories"),
                    show(&first)
                ),
            ));
        }
    }

    /// Looks at `dir` with `allowance` entries for it and everything below; returns how many
    /// were used (never more than `allowance`).
    fn env_dir(&mut self, walk: &mut EnvWalk<'_>, dir: &Path, depth: u32, allowance: u64) -> u64 {
        // Roots that overlap (`/home` and `/home/app`) are walked once.
        if walk.seen.contains(dir) {
            return 0;
        }
        if allowance == 0 {
            walk.note_cut(dir);
            return 0;
        }
        walk.seen.insert(dir.to_path_buf());
        let (entries, listing_cut) = match list_dir(walk.root, dir) {
            Ok(listed) => listed,
            Err(HostFsError::NotFound { .. }) => return 0,
            Err(e) => {
                self.problems.push(e.to_problem());
                return 0;
            }
        };
        let mut cut_here = listing_cut;
        let mut used = 0u64;
        let mut subdirs = Vec::new();
        for e in entries {
            if used == allowance {
                cut_here = true;
                break;
            }
            used += 1;
            let path = dir.join(&e.name);
            if e.is_dir {
                if depth < walk.config.env_file_max_depth
                    && !e.name.to_str().is_some_and(|n| SKIP_DIRS.contains(&n))
                {
                    subdirs.push(path);
                }
            } else if e.bytes() == b".env" || e.bytes().starts_with(b".env.") {
                self.env_file(walk.root, &path, CredentialSource::EnvFile, None);
            }
        }
        if cut_here {
            walk.note_cut(dir);
        }
        let mut left = allowance - used;
        let count = subdirs.len();
        for (i, sub) in subdirs.iter().enumerate() {
            let share = left.div_ceil(u64::try_from(count - i).unwrap_or(1));
            left -= self.env_dir(walk, sub, depth + 1, share);
        }
        allowance - left
    }

    /// `Environment=` and `EnvironmentFile=` of unit files and their drop-ins.
    fn systemd(&mut self, root: &HostRoot) {
        let mut files: Vec<(PathBuf, String)> = Vec::new();
        let mut seen_dirs: BTreeSet<PathBuf> = BTreeSet::new();
        for dir in UNIT_DIRS {
            // `/lib` is a link to `/usr/lib` on merged-/usr systems: list each real directory once.
            let real = if root.is_live() { std::fs::canonicalize(dir).ok() } else { root.resolve(dir).ok() };
            let Some(real) = real else { continue };
            if !seen_dirs.insert(real) {
                continue;
            }
            let Ok((entries, _)) = list_dir(root, Path::new(dir)) else { continue };
            for e in entries {
                if files.len() >= MAX_UNIT_FILES {
                    break;
                }
                let path = Path::new(dir).join(&e.name);
                if e.is_dir && e.bytes().ends_with(b".d") {
                    let unit = show_name(&e.name).trim_end_matches(".d").to_string();
                    if let Ok((drop_ins, _)) = list_dir(root, &path) {
                        files.extend(
                            drop_ins
                                .into_iter()
                                .filter(|d| !d.is_dir && d.bytes().ends_with(b".conf"))
                                .map(|d| (path.join(d.name), unit.clone())),
                        );
                    }
                } else if !e.is_dir && e.bytes().contains(&b'.') {
                    files.push((path, show_name(&e.name)));
                }
            }
        }
        if files.len() >= MAX_UNIT_FILES {
            files.truncate(MAX_UNIT_FILES);
            self.truncated.push(Truncation { what: "systemd_units".into(), limit: MAX_UNIT_FILES as u64 });
        }
        let mut env_files: BTreeSet<(String, String)> = BTreeSet::new();
        for (path, unit) in files {
            // Unit files are public configuration, but a link to /dev/zero or a FIFO among them
            // must not stall the scan: the door refuses both.
            let text = match read_text(root, &path, MAX_CONFIG_BYTES) {
                Ok(t) => t,
                Err(HostFsError::NotFound { .. } | HostFsError::NotRegularFile { .. }) => continue,
                Err(e) => {
                    self.problems.push(e.to_problem());
                    continue;
                }
            };
            if !text.contains("Environment") {
                continue;
            }
            let file = show(&path);
            let mut words: Vec<(u32, String)> = Vec::new();
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if let Some(v) = line.strip_prefix("Environment=") {
                    words.extend(environment_words(v).into_iter().map(|w| (line_no(i), w)));
                } else if let Some(v) = line.strip_prefix("EnvironmentFile=") {
                    let v = v.trim().trim_start_matches('-');
                    if v.starts_with('/') {
                        env_files.insert((v.to_string(), unit.clone()));
                    }
                }
            }
            if !words.is_empty() {
                let found = parse_env_assignments(
                    words.iter().map(|(n, w)| (*n, w.as_str())),
                    &file,
                    CredentialSource::SystemdEnvironment,
                    Some(&unit),
                );
                self.credentials.extend(found);
            }
        }
        for (path, unit) in env_files {
            self.env_file(root, Path::new(&path), CredentialSource::SystemdEnvironmentFile, Some(&unit));
        }
    }
}

/// Every static credential on `root`. `homes`: the home directories of the accounts (and
/// `/root`).
pub(crate) fn find(root: &HostRoot, config: &Config, homes: &BTreeSet<String>) -> Found {
    let mut found = Found::default();
    found.aws_files(root, homes);
    found.env_walk(root, config);
    found.systemd(root);
    // A `.env` under a home found twice (a root inside another root) is one credential.
    let mut seen = BTreeSet::new();
    found.credentials.retain(|c| seen.insert((c.at.file.clone(), c.at.line, c.name.clone())));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_files_give_masked_ids_per_profile() {
        let text = "[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n\n[ci]\naws_access_key_id=ASIAXXXXXXXXXXXXWXYZ\n";
        let c = parse_aws_file(text, "/root/.aws/credentials", CredentialSource::AwsCredentialsFile);
        assert_eq!(c.len(), 2);
        assert_eq!(
            (c[0].name.as_str(), c[0].key_id.as_str(), c[0].secret_present),
            ("default", "AKIA…MPLE", true)
        );
        assert_eq!((c[1].name.as_str(), c[1].secret_present, c[1].at.line), ("ci", false, 6));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("wJalr") && !dbg.contains("IOSFODNN7"), "{dbg}");
    }

    #[test]
    fn env_lines_and_unit_words() {
        let lines = [
            "export AWS_ACCESS_KEY_ID=\"AKIAIOSFODNN7EXAMPLE\"",
            "AWS_SECRET_ACCESS_KEY=abc",
            "OTHER=AKIAABCDEFGHIJKLMNOP",
        ];
        let c = parse_env_assignments(
            lines.iter().enumerate().map(|(i, l)| (line_no(i), *l)),
            "/srv/app/.env",
            CredentialSource::EnvFile,
            None,
        );
        assert_eq!(c.len(), 2);
        assert!(c.iter().all(|c| c.secret_present));
        assert_eq!(c[1].name, "OTHER");
        let words = environment_words("\"AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\" FOO=bar");
        assert_eq!(words, vec!["AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", "FOO=bar"]);
    }
}
