//! `/etc/passwd` and `/etc/shadow`.
//!
//! Security: `/etc/shadow` holds password hashes. Each hash is reduced to a
//! [`PasswordState`] as its line is parsed and never stored, logged or quoted: problems about
//! a malformed line name the line number only.

use crate::model::PasswordState;
use std::collections::HashMap;

/// One `/etc/passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
    /// The state passwd's own password field gives (`x`: look in shadow).
    pub field_state: Option<PasswordState>,
}

/// The state a password field (passwd's or shadow's) gives.
fn state_of(field: &str) -> PasswordState {
    if field.is_empty() {
        PasswordState::Empty
    } else if field.starts_with('!') || field.starts_with('*') {
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

/// Parses passwd. At most `cap` entries.
///
/// A name listed twice: glibc's `getpwnam` (so login, sshd, sudo) returns the first entry,
/// and never the second, so the first is the account and the second is reported, not used.
pub(crate) fn parse_passwd(text: &str, cap: usize) -> Passwd {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    let mut duplicates = Vec::new();
    let mut first_line: HashMap<&str, u32> = HashMap::new();
    let mut truncated = false;
    for (i, line) in text.lines().enumerate() {
        let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        // NIS compat lines (`+`, `-user`) are not local accounts.
        if line.starts_with('+') || line.starts_with('-') {
            continue;
        }
        let f: Vec<&str> = line.split(':').collect();
        let (Some(uid), Some(gid)) =
            (f.get(2).and_then(|s| s.parse().ok()), f.get(3).and_then(|s| s.parse().ok()))
        else {
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
        let field_state = if f[1] == "x" { None } else { Some(state_of(f[1])) };
        out.push(PasswdEntry {
            name: f[0].to_string(),
            uid,
            gid,
            home: f[5].to_string(),
            shell: f[6].to_string(),
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
pub(crate) fn parse_shadow(text: &str) -> (HashMap<String, PasswordState>, Vec<u32>, Vec<Duplicate>) {
    let mut out: HashMap<String, (PasswordState, u32)> = HashMap::new();
    let mut bad = Vec::new();
    let mut duplicates = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') || line.starts_with('+') || line.starts_with('-') {
            continue;
        }
        let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let mut fields = line.split(':');
        match (fields.next(), fields.next()) {
            (Some(name), Some(hash)) if !name.is_empty() => match out.get(name) {
                Some((_, first)) => duplicates.push((n, *first)),
                None => {
                    out.insert(name.to_string(), (state_of(hash), n));
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
            "root:$6$salt$hash:19000:0:99999:7:::\nbin:*:19000::::::\nlocked:!$6$x$y:1::::::\nopen::1::::::\nbroken\n",
        );
        assert!(dups.is_empty());
        assert_eq!(shadow["root"], PasswordState::Set);
        assert_eq!(shadow["bin"], PasswordState::Locked);
        assert_eq!(shadow["locked"], PasswordState::Locked);
        assert_eq!(shadow["open"], PasswordState::Empty);
        assert_eq!(bad, vec![5]);
        let Passwd { entries: pw, bad, truncated, .. } = parse_passwd(
            "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\nold:$1$a$b:5:5::/h:/bin/sh\nbad:x:z:1::/:/bin/sh\n",
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
            parse_shadow("root::19000:0:99999:7:::\nbin:*:1::::::\nroot:*:19000:0:99999:7:::\n");
        assert_eq!(shadow["root"], PasswordState::Empty);
        assert!(bad.is_empty());
        assert_eq!(dups, [(3, 1)]);
        let pw = parse_passwd(
            "bob:x:1000:1000::/home/bob:/bin/bash\nroot:x:0:0::/root:/bin/bash\nbob:x:0:0::/root:/bin/bash\n",
            10,
        );
        let names: Vec<(&str, u32)> = pw.entries.iter().map(|e| (e.name.as_str(), e.uid)).collect();
        assert_eq!(names, [("bob", 1000), ("root", 0)]);
        assert_eq!(pw.duplicates, [(3, 1)]);
    }
}
