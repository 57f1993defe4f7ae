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
use guestward_core::{HostFsError, HostRoot, Problem, Section};
#[cfg(feature = "collect")]
use std::collections::BTreeSet;
#[cfg(feature = "collect")]
use std::path::Path;

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
fn malformed_lines(path: &str, lines: &[u32], what: &str) -> Vec<Problem> {
    // Line numbers only: these files hold password hashes, and a malformed line may be one.
    lines
        .iter()
        .take(20)
        .map(|n| {
            Problem::new("malformed", format!("{path}:{n}: not a valid {what} entry; skipped"))
                .with_path(path)
                .with_line(u64::from(*n))
        })
        .collect()
}

#[cfg(feature = "collect")]
/// Reads everything and returns the report and the problems met. Never fails as a whole: a
/// file that cannot be read is a problem, and the rest is still reported.
pub fn scan(config: &Config, root: &HostRoot) -> (AccessReport, Vec<Problem>) {
    let mut report = AccessReport::default();
    let mut problems = Vec::new();
    let cap = usize::try_from(config.max_accounts).unwrap_or(usize::MAX);

    let passwd = match root.read_string_capped(PASSWD, fs::MAX_CONFIG_BYTES) {
        Ok(text) => {
            let (entries, bad, truncated) = accounts::parse_passwd(&text, cap);
            problems.extend(malformed_lines(&root.display(PASSWD), &bad, "passwd"));
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

    let shadow = match root.read_string_capped(SHADOW, fs::MAX_CONFIG_BYTES) {
        Ok(text) => {
            let (states, bad) = accounts::parse_shadow(&text);
            drop(text);
            problems.extend(malformed_lines(&root.display(SHADOW), &bad, "shadow"));
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
            (None, Some(states)) => states.get(&p.name).copied().unwrap_or(PasswordState::NoShadowEntry),
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
    report.sudo_grants = sudoers.grants;
    report.truncated.extend(sudoers.truncated);
    problems.extend(sudoers.problems);

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
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for p in passwd {
        for pattern in &patterns {
            let Some(file) = sshd::expand_keys_file(pattern, &p.name, p.uid, &p.home) else {
                problems.push(Problem::new(
                    "malformed",
                    format!("AuthorizedKeysFile {pattern}: unknown % token; sshd cannot use it"),
                ));
                continue;
            };
            // Two accounts sharing a home share its files: each key is listed under the first.
            if !seen.insert(file.clone()) {
                continue;
            }
            let text = match root.read_string_capped(&file, MAX_KEYS_FILE_BYTES) {
                Ok(t) => t,
                Err(HostFsError::NotFound { .. }) => continue,
                Err(e) => {
                    problems.push(e.to_problem());
                    continue;
                }
            };
            report.authorized_keys_files.push(file.clone());
            for (i, line) in text.lines().enumerate() {
                let at = Location { file: file.clone(), line: u32::try_from(i + 1).unwrap_or(u32::MAX) };
                match keys::parse_line(&p.name, at, line) {
                    Ok(Some(key)) => {
                        if report.authorized_keys.len() >= cap {
                            report.truncated.push(Truncation {
                                what: "authorized_keys".into(),
                                limit: u64::from(config.max_authorized_keys),
                            });
                            problems.push(Problem::new(
                                "limit_reached",
                                format!(
                                    "more than {} authorized keys; the rest were not read (access.max_authorized_keys)",
                                    config.max_authorized_keys
                                ),
                            ));
                            return;
                        }
                        report.authorized_keys.push(key);
                    }
                    Ok(None) => {}
                    Err(()) => problems.push(
                        Problem::new("malformed", "not a public key sshd would accept; skipped")
                            .with_path(root.display(&file))
                            .with_line(u64::try_from(i + 1).unwrap_or(u64::MAX)),
                    ),
                }
            }
        }
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
