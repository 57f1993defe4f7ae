//! The effective sshd settings, as sshd applies them (servconf.c) outside any `Match` block:
//! - keywords are case-insensitive, `Keyword value` or `Keyword=value`; arguments split like
//!   sshd's argv_split (quotes, `#` starting a comment);
//! - the first value of a keyword wins (later ones are ignored), `AuthorizedKeysFile` takes all
//!   the arguments of its first line;
//! - `Include` is expanded in place (glob(3), sorted; relative names are under `/etc/ssh`),
//!   at most 16 levels deep; an `Include` inside a `Match` block belongs to the block, and a
//!   `Match` inside an included file ends with that file;
//! - `Match` blocks are not evaluated (they depend on the connection): their settings are
//!   not applied, which is also what `sshd -T` without `-C` prints, and each block is reported.
//!
//! Defaults are upstream OpenSSH's (`sshd -T` with an empty file), as compiled into the
//! packages of Debian, Ubuntu, Amazon Linux and RHEL: a distribution that patches a default
//! is followed only through the settings its shipped `sshd_config` writes.

use crate::fs::{MAX_CONFIG_BYTES, glob, read_text};
use crate::model::{Location, MatchBlock, SshdSettings, SshdValue};
use guestward_core::{HostFsError, HostRoot, Problem};
use std::path::Path;

/// The main configuration file.
pub const SSHD_CONFIG: &str = "/etc/ssh/sshd_config";
/// Where relative `Include` names are resolved.
const SSHD_DIR: &str = "/etc/ssh";
/// sshd's own limit on nested includes (SERVCONF_MAX_DEPTH).
const MAX_INCLUDE_DEPTH: u32 = 16;
/// Files one `Include` may expand to, and files read in all.
const MAX_FILES: usize = 256;

#[derive(Default)]
struct State {
    files: Vec<String>,
    password_authentication: Option<SshdValue>,
    permit_root_login: Option<SshdValue>,
    permit_empty_passwords: Option<SshdValue>,
    kbd_interactive_authentication: Option<SshdValue>,
    pubkey_authentication: Option<SshdValue>,
    authorized_keys_file: Option<Vec<String>>,
    match_blocks: Vec<MatchBlock>,
    problems: Vec<Problem>,
}

/// Splits a line's arguments as sshd's argv_split does: whitespace separates, double or single
/// quotes group, a backslash escapes a quote or backslash, and a `#` starting an unquoted
/// argument ends the line.
pub(crate) fn split_args(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        if first == '#' {
            break;
        }
        let mut arg = String::new();
        let mut quote: Option<char> = None;
        while let Some(&c) = chars.peek() {
            match (c, quote) {
                ('\\', _) => {
                    chars.next();
                    match chars.peek() {
                        Some(&n) if n == '"' || n == '\'' || n == '\\' => {
                            arg.push(n);
                            chars.next();
                        }
                        _ => arg.push('\\'),
                    }
                    continue;
                }
                ('"' | '\'', None) => quote = Some(c),
                (q, Some(open)) if q == open => quote = None,
                (w, None) if w.is_whitespace() => break,
                _ => arg.push(c),
            }
            chars.next();
        }
        out.push(arg);
    }
    out
}

/// The keyword and its arguments, or `None` for a blank or comment line.
fn keyword_and_args(line: &str) -> Option<(String, Vec<String>)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line.find(|c: char| c.is_whitespace() || c == '=').unwrap_or(line.len());
    let keyword = line[..end].to_ascii_lowercase();
    let mut rest = line[end..].trim_start();
    // One `=` may separate the keyword from its value (strdelim).
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start();
    }
    Some((keyword, split_args(rest)))
}

fn yes_no(v: &str) -> Option<&'static str> {
    match v.to_ascii_lowercase().as_str() {
        "yes" => Some("yes"),
        "no" => Some("no"),
        _ => None,
    }
}

fn root_login(v: &str) -> Option<&'static str> {
    match v.to_ascii_lowercase().as_str() {
        "yes" => Some("yes"),
        "no" => Some("no"),
        // sshd -T prints the first name of the state: `without-password`.
        "prohibit-password" | "without-password" => Some("without-password"),
        "forced-commands-only" => Some("forced-commands-only"),
        _ => None,
    }
}

impl State {
    fn problem(&mut self, at: &Location, message: String) {
        self.problems.push(
            Problem::new("malformed", message).with_path(at.file.clone()).with_line(u64::from(at.line)),
        );
    }

    fn set(&mut self, keyword: &str, args: &[String], at: &Location) {
        let Some(first) = args.first() else {
            self.problem(at, format!("{keyword} without a value (sshd refuses to start)"));
            return;
        };
        let (slot, value) = match keyword {
            "passwordauthentication" => (&mut self.password_authentication, yes_no(first)),
            "permitemptypasswords" => (&mut self.permit_empty_passwords, yes_no(first)),
            "kbdinteractiveauthentication" | "challengeresponseauthentication" => {
                (&mut self.kbd_interactive_authentication, yes_no(first))
            }
            "pubkeyauthentication" => (&mut self.pubkey_authentication, yes_no(first)),
            "permitrootlogin" => (&mut self.permit_root_login, root_login(first)),
            _ => return,
        };
        match value {
            Some(v) => {
                if slot.is_none() {
                    *slot = Some(SshdValue { value: v.to_string(), set_at: Some(at.clone()) });
                }
            }
            None => {
                let shown = guestward_core::text::quote_truncated(first, 40);
                self.problem(at, format!("{keyword}: unsupported value {shown} (sshd refuses to start)"));
            }
        }
    }

    fn read(
        &mut self,
        root: &HostRoot,
        host_path: &Path,
        depth: u32,
        in_match: bool,
    ) -> Result<(), HostFsError> {
        let text = read_text(root, host_path, MAX_CONFIG_BYTES)?;
        let file = host_path.display().to_string();
        self.files.push(file.clone());
        let mut in_match = in_match;
        let mut current_block: Option<usize> = None;
        for (i, line) in text.lines().enumerate() {
            let Some((keyword, args)) = keyword_and_args(line) else { continue };
            let at = Location { file: file.clone(), line: u32::try_from(i + 1).unwrap_or(u32::MAX) };
            match keyword.as_str() {
                "match" => {
                    in_match = true;
                    self.match_blocks.push(MatchBlock {
                        at,
                        criteria: guestward_core::text::truncate_chars(&args.join(" "), 200).into_owned(),
                        overrides: Vec::new(),
                    });
                    current_block = Some(self.match_blocks.len() - 1);
                }
                "include" => self.include(root, &args, &at, depth, in_match),
                "passwordauthentication"
                | "permitemptypasswords"
                | "kbdinteractiveauthentication"
                | "challengeresponseauthentication"
                | "pubkeyauthentication"
                | "permitrootlogin"
                | "authorizedkeysfile" => {
                    if in_match {
                        if let Some(block) = current_block.and_then(|b| self.match_blocks.get_mut(b))
                            && block.overrides.len() < 32
                        {
                            let value =
                                guestward_core::text::truncate_chars(&args.join(" "), 200).into_owned();
                            block.overrides.push(format!("{keyword} {value}"));
                        }
                    } else if keyword == "authorizedkeysfile" {
                        if args.is_empty() {
                            self.problem(
                                &at,
                                "AuthorizedKeysFile without a value (sshd refuses to start)".into(),
                            );
                        } else if self.authorized_keys_file.is_none() {
                            self.authorized_keys_file = Some(args);
                        }
                    } else {
                        self.set(&keyword, &args, &at);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn include(&mut self, root: &HostRoot, args: &[String], at: &Location, depth: u32, in_match: bool) {
        if args.is_empty() {
            self.problem(at, "Include without a file name (sshd refuses to start)".into());
            return;
        }
        if depth >= MAX_INCLUDE_DEPTH {
            self.problem(
                at,
                format!("Include nested deeper than {MAX_INCLUDE_DEPTH} levels (sshd refuses to start)"),
            );
            return;
        }
        for pattern in args {
            let pattern =
                if pattern.starts_with('/') { pattern.clone() } else { format!("{SSHD_DIR}/{pattern}") };
            for path in glob(root, &pattern, MAX_FILES, &mut self.problems) {
                if self.files.len() >= MAX_FILES {
                    self.problem(
                        at,
                        format!("more than {MAX_FILES} configuration files; the rest were not read"),
                    );
                    return;
                }
                match self.read(root, &path, depth + 1, in_match) {
                    Ok(()) => {}
                    // A literal name that does not exist is skipped by sshd too (glob: no match).
                    Err(HostFsError::NotFound { .. }) => {}
                    Err(e) => self.problems.push(e.to_problem()),
                }
            }
        }
    }
}

fn default(value: &str) -> SshdValue {
    SshdValue { value: value.to_string(), set_at: None }
}

/// The effective settings of `config` (a host path, [`SSHD_CONFIG`] normally) on `root`, with
/// the problems met. `Ok(None)` when the file does not exist (no OpenSSH server).
pub fn effective(
    root: &HostRoot,
    config: &Path,
) -> Result<Option<(SshdSettings, Vec<Problem>)>, HostFsError> {
    let mut state = State::default();
    match state.read(root, config, 0, false) {
        Ok(()) => {}
        Err(HostFsError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    }
    let settings = SshdSettings {
        files: state.files,
        password_authentication: state.password_authentication.unwrap_or_else(|| default("yes")),
        permit_root_login: state.permit_root_login.unwrap_or_else(|| default("without-password")),
        permit_empty_passwords: state.permit_empty_passwords.unwrap_or_else(|| default("no")),
        kbd_interactive_authentication: state
            .kbd_interactive_authentication
            .unwrap_or_else(|| default("yes")),
        pubkey_authentication: state.pubkey_authentication.unwrap_or_else(|| default("yes")),
        authorized_keys_file: state
            .authorized_keys_file
            .unwrap_or_else(|| vec![".ssh/authorized_keys".into(), ".ssh/authorized_keys2".into()]),
        match_blocks: state.match_blocks,
    };
    Ok(Some((settings, state.problems)))
}

/// Expands an `AuthorizedKeysFile` pattern for one account: `%%`, `%h` (home), `%u` (user),
/// `%U` (uid); a relative result is under the home directory. `None` for an unknown token.
pub(crate) fn expand_keys_file(pattern: &str, user: &str, uid: u32, home: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('h') => out.push_str(home),
            Some('u') => out.push_str(user),
            Some('U') => out.push_str(&uid.to_string()),
            _ => return None,
        }
    }
    if out.starts_with('/') { Some(out) } else { Some(format!("{}/{out}", home.trim_end_matches('/'))) }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn arguments_split_like_sshd() {
        assert_eq!(split_args("a  b # c"), vec!["a", "b"]);
        assert_eq!(split_args("\"a b\" c#d"), vec!["a b", "c#d"]);
        assert_eq!(
            keyword_and_args("PermitRootLogin=yes").unwrap(),
            ("permitrootlogin".into(), vec!["yes".into()])
        );
        assert_eq!(keyword_and_args("  # x"), None);
    }

    #[test]
    fn keys_file_tokens() {
        assert_eq!(
            expand_keys_file(".ssh/authorized_keys", "bob", 1000, "/home/bob/").unwrap(),
            "/home/bob/.ssh/authorized_keys"
        );
        assert_eq!(
            expand_keys_file("/etc/ssh/keys/%u.%U%%", "bob", 1000, "/h").unwrap(),
            "/etc/ssh/keys/bob.1000%"
        );
        assert_eq!(expand_keys_file("%x", "bob", 1, "/h"), None);
    }
}
