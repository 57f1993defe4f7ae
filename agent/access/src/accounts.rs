//! `/etc/passwd` and `/etc/shadow`.
//!
//! Security: `/etc/shadow` holds password hashes. Each hash is reduced to a
//! [`PasswordState`] as its line is parsed and never stored, logged or quoted: problems about
//! a malformed line name the line number only.

use crate::model::PasswordState;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// One `/etc/passwd` entry.
///
/// Security: glibc, sshd and login take a name or a home directory as bytes, not as UTF-8, so
/// the entry keeps them as bytes for every lookup (`raw_name` in shadow, `home_path` for the
/// files under it) and a lossy text only for the report. A home named with bytes that are not
/// UTF-8 (`/home/\xff`) once became `/home/\u{fffd}`, a directory that does not exist: the keys
/// planted in the real one were never read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PasswdEntry {
    /// The name as shown (invalid UTF-8 replaced).
    pub name: String,
    /// The name as written, for shadow and `%u`.
    pub raw_name: Vec<u8>,
    pub uid: u32,
    pub gid: u32,
    /// The home directory as shown (invalid UTF-8 replaced).
    pub home: String,
    /// The home directory as written, for the files under it.
    pub home_path: PathBuf,
    pub shell: String,
    /// The state passwd's own password field gives (`x`: look in shadow).
    pub field_state: Option<PasswordState>,
}

/// The state a password field (passwd's or shadow's) gives.
fn state_of(field: &[u8]) -> PasswordState {
    if field.is_empty() {
        PasswordState::Empty
    } else if field.starts_with(b"!") || field.starts_with(b"*") {
        PasswordState::Locked
    } else {
        PasswordState::Set
    }
}

/// Whether a shell lets the account log in interactively. `sync`, `shutdown` and `halt` are
/// the traditional one-command accounts: logging in runs that command and ends.
pub(crate) fn shell_can_login(shell: &str) -> bool {
    let name = shell.rsplit('/').next().unwrap_or(shell);
    !matches!(name, "nologin" | "false" | "sync" | "shutdown" | "halt")
}

/// A second entry for an account: (its line, the line of the first entry).
pub(crate) type Duplicate = (u32, u32);

/// What [`parse_passwd`] found.
#[derive(Debug, Default)]
pub(crate) struct Passwd {
    pub entries: Vec<PasswdEntry>,
    /// 1-based numbers of malformed lines.
    pub bad: Vec<u32>,
    /// Entries for a name already seen: ignored, as glibc ignores them.
    pub duplicates: Vec<Duplicate>,
    /// More than `cap` entries: the rest were not read.
    pub truncated: bool,
}

/// The lines of a passwd-style file as bytes, numbered from 1, without their `\n` (or `\r\n`),
/// skipping blank lines, comments and NIS compat lines (`+`, `-user`: not local accounts).
fn account_lines(text: &[u8]) -> impl Iterator<Item = (u32, &[u8])> {
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    text.split(|b| *b == b'\n').enumerate().filter_map(|(i, line)| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let skipped =
            line.iter().all(u8::is_ascii_whitespace) || matches!(line.first(), Some(b'#' | b'+' | b'-'));
        (!skipped).then(|| (u32::try_from(i + 1).unwrap_or(u32::MAX), line))
    })
}

fn lossy(field: &[u8]) -> String {
    String::from_utf8_lossy(field).into_owned()
}

fn number(field: Option<&&[u8]>) -> Option<u32> {
    std::str::from_utf8(field?).ok()?.parse().ok()
}

/// Parses passwd (its bytes: see [`PasswdEntry`]). At most `cap` entries.
///
/// A name listed twice: glibc's `getpwnam` (so login, sshd, sudo) returns the first entry,
/// and never the second, so the first is the account and the second is reported, not used.
pub(crate) fn parse_passwd(text: &[u8], cap: usize) -> Passwd {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    let mut duplicates = Vec::new();
    let mut first_line: HashMap<&[u8], u32> = HashMap::new();
    let mut truncated = false;
    for (n, line) in account_lines(text) {
        let f: Vec<&[u8]> = line.split(|b| *b == b':').collect();
        let (Some(uid), Some(gid)) = (number(f.get(2)), number(f.get(3))) else {
            bad.push(n);
            continue;
        };
        if f.len() != 7 || f[0].is_empty() {
            bad.push(n);
            continue;
        }
        if let Some(first) = first_line.get(f[0]) {
            duplicates.push((n, *first));
            continue;
        }
        first_line.insert(f[0], n);
        if out.len() >= cap {
            truncated = true;
            break;
        }
        let field_state = if f[1] == b"x" { None } else { Some(state_of(f[1])) };
        out.push(PasswdEntry {
            name: lossy(f[0]),
            raw_name: f[0].to_vec(),
            uid,
            gid,
            home: lossy(f[5]),
            home_path: PathBuf::from(OsStr::from_bytes(f[5])),
            shell: lossy(f[6]),
            field_state,
        });
    }
    Passwd { entries: out, bad, duplicates, truncated }
}

/// Parses shadow into user -> password state (never the hash), the numbers of malformed
/// lines, and the second entries of names seen before.
///
/// Security: glibc's `getspnam` (PAM's pam_unix, so every password login) uses the first entry
/// of a name. A later entry must not decide the state: `root::...` followed by `root:*:...`
/// is a root without a password, not a locked one.
pub(crate) fn parse_shadow(text: &[u8]) -> (HashMap<Vec<u8>, PasswordState>, Vec<u32>, Vec<Duplicate>) {
    let mut out: HashMap<Vec<u8>, (PasswordState, u32)> = HashMap::new();
    let mut bad = Vec::new();
    let mut duplicates = Vec::new();
    for (n, line) in account_lines(text) {
        let mut fields = line.split(|b| *b == b':');
        match (fields.next(), fields.next()) {
            (Some(name), Some(hash)) if !name.is_empty() => match out.get(name) {
                Some((_, first)) => duplicates.push((n, *first)),
                None => {
                    out.insert(name.to_vec(), (state_of(hash), n));
                }
            },
            _ => bad.push(n),
        }
    }
    (out.into_iter().map(|(name, (state, _))| (name, state)).collect(), bad, duplicates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_states_and_login_shells() {
        let (shadow, bad, dups) = parse_shadow(
            b"root:$6$salt$hash:19000:0:99999:7:::\nbin:*:19000::::::\nlocked:!$6$x$y:1::::::\nopen::1::::::\nbroken\n",
        );
        assert!(dups.is_empty());
        assert_eq!(shadow[&b"root"[..]], PasswordState::Set);
        assert_eq!(shadow[&b"bin"[..]], PasswordState::Locked);
        assert_eq!(shadow[&b"locked"[..]], PasswordState::Locked);
        assert_eq!(shadow[&b"open"[..]], PasswordState::Empty);
        assert_eq!(bad, vec![5]);
        let Passwd { entries: pw, bad, truncated, .. } = parse_passwd(
            b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\nold:$1$a$b:5:5::/h:/bin/sh\nbad:x:z:1::/:/bin/sh\n",
            10,
        );
        assert_eq!(pw.len(), 3);
        assert!(!truncated);
        assert_eq!(bad, vec![4]);
        assert_eq!(pw[2].field_state, Some(PasswordState::Set));
        assert!(shell_can_login("/bin/bash") && shell_can_login(""));
        assert!(!shell_can_login("/usr/sbin/nologin") && !shell_can_login("/bin/false"));
    }

    #[test]
    fn the_first_entry_of_a_name_wins_as_in_glibc() {
        // getent shadow root returns `root::...`: an empty password, whatever follows.
        let (shadow, bad, dups) =
            parse_shadow(b"root::19000:0:99999:7:::\nbin:*:1::::::\nroot:*:19000:0:99999:7:::\n");
        assert_eq!(shadow[&b"root"[..]], PasswordState::Empty);
        assert!(bad.is_empty());
        assert_eq!(dups, [(3, 1)]);
        let pw = parse_passwd(
            b"bob:x:1000:1000::/home/bob:/bin/bash\nroot:x:0:0::/root:/bin/bash\nbob:x:0:0::/root:/bin/bash\n",
            10,
        );
        let names: Vec<(&str, u32)> = pw.entries.iter().map(|e| (e.name.as_str(), e.uid)).collect();
        assert_eq!(names, [("bob", 1000), ("root", 0)]);
        assert_eq!(pw.duplicates, [(3, 1)]);
    }
}
