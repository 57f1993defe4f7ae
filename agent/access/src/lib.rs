//! Credentials and access for guestward: who can log in to this host, and how.
//!
//! One scan ([`scan`], or [`collect`] for the daemon) reads, through a [`HostRoot`] (so
//! `--root` works on a mounted snapshot):
//! 1. `/etc/passwd` and `/etc/shadow`: accounts that can log in, their password state
//!    (set, empty, locked; never the hash), UID 0 accounts.
//! 2. The effective sshd settings ([`sshd`]): `sshd_config` with its `Include`s, first value
//!    wins, `Match` blocks reported and not applied.
//! 3. Every account's `authorized_keys` files (from `AuthorizedKeysFile`): key type, size,
//!    SHA256 fingerprint, comment, options; weak keys flagged.
//! 4. sudoers with its includes: `NOPASSWD` and `ALL` grants.
//! 5. Static AWS credentials: `~/.aws/credentials` and `config`, `.env` files under
//!    `[access] env_file_roots`, systemd units' environment. Key ids masked, secrets never read
//!    into the report.
//!
//! Then [`findings`] on the finished [`AccessReport`], and [`render_summary`] /
//! [`render_table`] for people.
//!
//! Reading is the default feature `collect`. Without it the crate is the model, [`Config`],
//! the findings ([`FINDING_IDS`]) and the renderers.
//!
//! Security: this collector reads secrets (shadow hashes, AWS secret keys) and must never let
//! one out: nothing here logs, problems name files and line numbers but never quote those
//! files' lines, and the model has no field a secret could land in.

// Output goes through `guestward_core::stdio`: the print macros panic when a write fails.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]
#![warn(missing_docs)]

#[cfg(feature = "collect")]
mod accounts;
mod config;
#[cfg(feature = "collect")]
mod credentials;
mod findings;
#[cfg(feature = "collect")]
mod fs;
#[cfg(feature = "collect")]
pub mod keys;
mod model;
mod render;
#[cfg(feature = "collect")]
pub mod sshd;
#[cfg(feature = "collect")]
mod sudo;

pub use config::Config;
pub use findings::{
    EMPTY_PASSWORD, FINDING_IDS, SSH_EMPTY_PASSWORDS, SSH_PASSWORD_AUTH, SSH_ROOT_PASSWORD_LOGIN,
    STATIC_CLOUD_KEY, SUDO_NOPASSWD, UID0_NOT_ROOT, WEAK_AUTHORIZED_KEY, findings,
};
pub use model::{
    AccessReport, Account, AuthorizedKey, CloudCredential, CredentialSource, KeyKind, Location, MatchBlock,
    PasswordState, SshdSettings, SshdValue, SudoGrant, Truncation, key_kind, looks_like_key_id, mask_key_id,
};
pub use render::{render_summary, render_table};

#[cfg(feature = "collect")]
use guestward_core::text::counted;
#[cfg(feature = "collect")]
use guestward_core::{HostFsError, HostRoot, Problem, Section};
#[cfg(feature = "collect")]
use std::collections::{BTreeSet, HashSet};
#[cfg(feature = "collect")]
use std::path::{Path, PathBuf};

#[cfg(feature = "collect")]
/// `/etc/passwd`.
pub const PASSWD: &str = "/etc/passwd";
#[cfg(feature = "collect")]
/// `/etc/shadow`.
pub const SHADOW: &str = "/etc/shadow";
#[cfg(feature = "collect")]
/// authorized_keys files larger than this are not read (sshd reads any size, but a real one
/// holds a few keys).
const MAX_KEYS_FILE_BYTES: u64 = 1024 * 1024;

#[cfg(feature = "collect")]
/// Lines of passwd or shadow listed one by one; the rest are counted.
const MAX_LINE_PROBLEMS: usize = 20;

#[cfg(feature = "collect")]
fn malformed_lines(path: &str, lines: &[u32], what: &str) -> Vec<Problem> {
    // Line numbers only: these files hold password hashes, and a malformed line may be one.
    let mut out: Vec<Problem> = lines
        .iter()
        .take(MAX_LINE_PROBLEMS)
        .map(|n| {
            Problem::new("malformed", format!("{path}:{n}: not a valid {what} entry; skipped"))
                .with_path(path)
                .with_line(u64::from(*n))
        })
        .collect();
    out.extend(more_lines(path, lines.len(), "malformed"));
    out
}

#[cfg(feature = "collect")]
/// Second entries of a name: glibc (login, PAM, sshd, sudo) only ever uses the first.
fn duplicate_lines(path: &str, dups: &[accounts::Duplicate]) -> Vec<Problem> {
    // Line numbers only, as above: no name, no field of a line.
    let mut out: Vec<Problem> = dups
        .iter()
        .take(MAX_LINE_PROBLEMS)
        .map(|(n, first)| {
            Problem::new(
                "duplicate",
                format!(
                    "{path}:{n}: a second entry for the account of line {first}; glibc uses the first, \
                     so this one is ignored"
                ),
            )
            .with_path(path)
            .with_line(u64::from(*n))
        })
        .collect();
    out.extend(more_lines(path, dups.len(), "duplicate"));
    out
}

#[cfg(feature = "collect")]
fn more_lines(path: &str, total: usize, code: &str) -> Option<Problem> {
    let more = total.checked_sub(MAX_LINE_PROBLEMS).filter(|m| *m > 0)?;
    let more = u64::try_from(more).unwrap_or(u64::MAX);
    Some(
        Problem::new(
            code,
            format!("{path}: {} of this kind not listed", counted(more, "more line", "more lines")),
        )
        .with_path(path),
    )
}

#[cfg(feature = "collect")]
/// Reads everything and returns the report and the problems met. Never fails as a whole: a
/// file that cannot be read is a problem, and the rest is still reported.
pub fn scan(config: &Config, root: &HostRoot) -> (AccessReport, Vec<Problem>) {
    let mut report = AccessReport::default();
    let mut problems = Vec::new();
    let cap = usize::try_from(config.max_accounts).unwrap_or(usize::MAX);

    let passwd = match root.read_capped(PASSWD, fs::MAX_CONFIG_BYTES) {
        Ok(text) => {
            let accounts::Passwd { entries, bad, duplicates, truncated } = accounts::parse_passwd(&text, cap);
            problems.extend(malformed_lines(&root.display(PASSWD), &bad, "passwd"));
            problems.extend(duplicate_lines(&root.display(PASSWD), &duplicates));
            if truncated {
                report
                    .truncated
                    .push(Truncation { what: "accounts".into(), limit: u64::from(config.max_accounts) });
                problems.push(Problem::new(
                    "limit_reached",
                    format!(
                        "more than {} accounts; the rest were not read (access.max_accounts)",
                        config.max_accounts
                    ),
                ));
            }
            entries
        }
        // A tree without /etc/passwd (a partial snapshot, a minimal container image) has no
        // local accounts: said in the section's note (see `collect`), not a fault.
        Err(HostFsError::NotFound { .. }) => Vec::new(),
        Err(e) => {
            problems.push(e.to_problem());
            Vec::new()
        }
    };
    report.accounts_total = u32::try_from(passwd.len()).unwrap_or(u32::MAX);

    let shadow = match root.read_capped(SHADOW, fs::MAX_CONFIG_BYTES) {
        Ok(text) => {
            let (states, bad, duplicates) = accounts::parse_shadow(&text);
            drop(text);
            problems.extend(malformed_lines(&root.display(SHADOW), &bad, "shadow"));
            problems.extend(duplicate_lines(&root.display(SHADOW), &duplicates));
            report.shadow_read = true;
            Some(states)
        }
        // No shadow file at all: passwd's own field is all there is.
        Err(HostFsError::NotFound { .. }) => Some(Default::default()),
        Err(e) => {
            // Not root: say so, and report the password states as unknown.
            problems.push(e.to_problem());
            None
        }
    };

    for p in &passwd {
        let can_login = accounts::shell_can_login(&p.shell);
        if !can_login && p.uid != 0 {
            continue;
        }
        let password = match (&p.field_state, &shadow) {
            (Some(state), _) => *state,
            (None, Some(states)) => states.get(&p.raw_name).copied().unwrap_or(PasswordState::NoShadowEntry),
            (None, None) => PasswordState::Unknown,
        };
        report.accounts.push(Account {
            name: p.name.clone(),
            uid: p.uid,
            gid: p.gid,
            home: p.home.clone(),
            shell: p.shell.clone(),
            can_login,
            password,
        });
    }

    match sshd::effective(root, Path::new(sshd::SSHD_CONFIG)) {
        Ok(Some((settings, sshd_problems))) => {
            problems.extend(sshd_problems);
            report.sshd = Some(settings);
        }
        Ok(None) => {}
        Err(e) => problems.push(e.to_problem()),
    }
    authorized_keys(config, root, &passwd, &mut report, &mut problems);

    let sudoers = sudo::read(root);
    report.sudoers_files = sudoers.files;
    report.sudo_grants = sudoers.grants.into_vec();
    report.truncated.extend(sudoers.truncated);
    problems.extend(sudoers.problems.into_vec());

    let mut homes: BTreeSet<String> =
        passwd.iter().map(|p| p.home.clone()).filter(|h| h.starts_with('/') && h != "/").collect();
    homes.insert("/root".into());
    let found = credentials::find(root, config, &homes);
    report.cloud_credentials = found.credentials;
    report.truncated.extend(found.truncated);
    problems.extend(found.problems);
    (report, problems)
}

#[cfg(feature = "collect")]
/// Distinct authorized_keys files read at most (distinct by device and inode).
const MAX_KEYS_FILES: usize = 10_000;
#[cfg(feature = "collect")]
/// Keys listed from one file, so that one account's file cannot use up
/// `access.max_authorized_keys` and hide the keys of the accounts after it.
const MAX_KEYS_PER_FILE: usize = 1_000;
#[cfg(feature = "collect")]
/// Problems about authorized_keys files listed; the rest are counted.
const MAX_KEYS_PROBLEMS: usize = 100;

#[cfg(feature = "collect")]
/// Every account's authorized_keys files.
///
/// Security: any local user can write their own authorized_keys (or point it, by a symlink, at
/// any file they can make), and the daemon reads every account's. So what one file can cost is
/// bounded: a file is read once however many accounts reach it (device and inode, not the
/// name), its lines that are not keys are one problem with a count, its keys are capped, and
/// so are the files, the problems and the keys in all, each with a count of what was left.
fn authorized_keys(
    config: &Config,
    root: &HostRoot,
    passwd: &[accounts::PasswdEntry],
    report: &mut AccessReport,
    problems: &mut Vec<Problem>,
) {
    let patterns: Vec<String> = report
        .sshd
        .as_ref()
        .map(|s| s.authorized_keys_file.clone())
        .unwrap_or_else(|| vec![".ssh/authorized_keys".into(), ".ssh/authorized_keys2".into()]);
    if patterns.iter().any(|p| p == "none") {
        return;
    }
    let cap = usize::try_from(config.max_authorized_keys).unwrap_or(usize::MAX);
    let mut found: Vec<Problem> = Vec::new();
    let mut problems_dropped = 0u64;
    let mut push = |p: Problem| {
        if found.len() < MAX_KEYS_PROBLEMS {
            found.push(p);
        } else {
            problems_dropped += 1;
        }
    };
    let mut seen: BTreeSet<PathBuf> = BTreeSet::new();
    let mut seen_files: HashSet<fs::FileId> = HashSet::new();
    let mut bad_patterns: BTreeSet<&str> = BTreeSet::new();
    let (mut files_over, mut files_after_cap, mut keys_after_cap) = (0u64, 0u64, 0u64);
    let mut per_file_cap_hit = false;
    for p in passwd {
        for pattern in &patterns {
            let Some(file) = sshd::expand_keys_file(pattern, &p.raw_name, p.uid, &p.home_path) else {
                if bad_patterns.insert(pattern) {
                    push(Problem::new(
                        "malformed",
                        format!("AuthorizedKeysFile {pattern}: unknown % token; sshd cannot use it"),
                    ));
                }
                continue;
            };
            // Two accounts sharing a home share its files: each key is listed under the first.
            if !seen.insert(file.clone()) {
                continue;
            }
            let opened = match fs::open_identified(root, &file) {
                Ok(o) => o,
                Err(HostFsError::NotFound { .. }) => continue,
                Err(e) => {
                    push(e.to_problem());
                    continue;
                }
            };
            // The same file by another name (a symlink, a hard link): read and listed once,
            // under the first account that reaches it, as for a shared home.
            if !seen_files.insert(opened.id) {
                continue;
            }
            if report.authorized_keys.len() >= cap {
                files_after_cap += 1;
                continue;
            }
            if report.authorized_keys_files.len() >= MAX_KEYS_FILES {
                files_over += 1;
                continue;
            }
            let text = match opened.read_text(MAX_KEYS_FILE_BYTES) {
                Ok(t) => t,
                Err(e) => {
                    push(e.to_problem());
                    continue;
                }
            };
            let shown = root.display(&file);
            // The report's text (a name that is not UTF-8 is shown with U+FFFD); the file was
            // opened by its real bytes.
            let file = file.to_string_lossy().into_owned();
            report.authorized_keys_files.push(file.clone());
            let (mut bad, mut first_bad, mut in_file, mut over_file) = (0u64, 0u32, 0usize, 0u64);
            for (i, line) in text.lines().enumerate() {
                let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
                let at = Location { file: file.clone(), line: n };
                match keys::parse_line(&p.name, at, line) {
                    Ok(Some(key)) => {
                        if report.authorized_keys.len() >= cap {
                            keys_after_cap += 1;
                        } else if in_file >= MAX_KEYS_PER_FILE {
                            over_file += 1;
                        } else {
                            in_file += 1;
                            report.authorized_keys.push(key);
                        }
                    }
                    Ok(None) => {}
                    Err(()) => {
                        if bad == 0 {
                            first_bad = n;
                        }
                        bad += 1;
                    }
                }
            }
            if bad > 0 {
                // One problem per file, line numbers only: a file of a million bad lines is
                // one line of the report, and no line of it is quoted.
                let message = if bad == 1 {
                    format!("{shown}: line {first_bad} is not a key sshd would accept; skipped")
                } else {
                    format!(
                        "{shown}: {bad} lines are not keys sshd would accept, first at line {first_bad}; skipped"
                    )
                };
                push(
                    Problem::new("malformed", message)
                        .with_path(shown.clone())
                        .with_line(u64::from(first_bad)),
                );
            }
            if over_file > 0 {
                per_file_cap_hit = true;
                push(
                    Problem::new(
                        "limit_reached",
                        format!(
                            "{shown}: more than {MAX_KEYS_PER_FILE} keys in one file; {} not listed",
                            counted(over_file, "more was", "more were")
                        ),
                    )
                    .with_path(shown),
                );
            }
        }
    }
    if per_file_cap_hit {
        report
            .truncated
            .push(Truncation { what: "authorized_keys_per_file".into(), limit: MAX_KEYS_PER_FILE as u64 });
    }
    // The summaries go past the problem cap: they are what says the report is incomplete.
    if keys_after_cap > 0 || files_after_cap > 0 {
        report.truncated.push(Truncation {
            what: "authorized_keys".into(),
            limit: u64::from(config.max_authorized_keys),
        });
        found.push(Problem::new(
            "limit_reached",
            format!(
                "more than {} authorized keys; {} and {} not listed (access.max_authorized_keys)",
                config.max_authorized_keys,
                counted(keys_after_cap, "more key", "more keys"),
                counted(files_after_cap, "more file", "more files"),
            ),
        ));
    }
    if files_over > 0 {
        report
            .truncated
            .push(Truncation { what: "authorized_keys_files".into(), limit: MAX_KEYS_FILES as u64 });
        found.push(Problem::new(
            "limit_reached",
            format!(
                "more than {MAX_KEYS_FILES} authorized_keys files; {} not read",
                counted(files_over, "more was", "more were")
            ),
        ));
    }
    problems.extend(found);
    if problems_dropped > 0 {
        problems.push(Problem::new(
            "limit_reached",
            format!(
                "{} with authorized_keys files not listed",
                counted(problems_dropped, "more problem", "more problems")
            ),
        ));
    }
}

#[cfg(feature = "collect")]
/// The daemon's entry point: the `access` section for `root`.
pub fn collect(config: &Config, root: &HostRoot) -> Section<AccessReport> {
    if !config.enabled {
        return Section::skipped("access collection is disabled ([access] enabled = false)");
    }
    let started = std::time::Instant::now();
    let (report, problems) = scan(config, root);
    let section = Section::from_parts(Some(report), problems, started);
    if root.exists(PASSWD) {
        section
    } else {
        section.with_note("no /etc/passwd in this tree: no local accounts")
    }
}
