//! sudoers: the rules that grant every command or need no password.
//!
//! Read as sudo reads it: `/etc/sudoers`, then each `@include`/`#include` file and each
//! `@includedir`/`#includedir` directory where the directive stands (a directory's files in
//! name order, skipping names that end in `~` or contain a `.`, as sudo does); relative names
//! are relative to the including file's directory; backslash continues a line. Aliases are not
//! expanded: a rule is reported with its user and command lists as written (`%admins`,
//! `ADMINS`), and a `Cmnd_Alias` that contains `ALL` is not seen as `ALL`.

use crate::fs::{MAX_CONFIG_BYTES, list_dir, read_text};
use crate::model::{Location, SudoGrant};
use guestward_core::{HostFsError, HostRoot, Problem};
use std::path::{Path, PathBuf};

/// The main file.
pub const SUDOERS: &str = "/etc/sudoers";
/// sudo stops at 128 nested includes; real hosts use one or two.
const MAX_DEPTH: u32 = 16;
/// Files read in all.
const MAX_FILES: usize = 1024;
/// Commands listed per rule.
const MAX_COMMANDS: usize = 32;

/// Command tags (`NOPASSWD:`...).
const TAGS: &[&str] = &[
    "NOPASSWD",
    "PASSWD",
    "NOEXEC",
    "EXEC",
    "SETENV",
    "NOSETENV",
    "LOG_INPUT",
    "NOLOG_INPUT",
    "LOG_OUTPUT",
    "NOLOG_OUTPUT",
    "MAIL",
    "NOMAIL",
    "FOLLOW",
    "NOFOLLOW",
    "INTERCEPT",
    "NOINTERCEPT",
];
/// Per-command options (`CWD=/`...), not part of the command.
const OPTIONS: &[&str] =
    &["CWD=", "CHROOT=", "ROLE=", "TYPE=", "TIMEOUT=", "NOTBEFORE=", "NOTAFTER=", "APPARMOR_PROFILE="];

/// What the sudoers files grant.
#[derive(Debug, Default)]
pub(crate) struct Sudoers {
    pub files: Vec<String>,
    pub grants: Vec<SudoGrant>,
    pub problems: Vec<Problem>,
}

/// Reads `/etc/sudoers` and everything it includes. A host without sudo has no file: empty.
pub(crate) fn read(root: &HostRoot) -> Sudoers {
    let mut s = Sudoers::default();
    match s.file(root, Path::new(SUDOERS), 0) {
        Ok(()) | Err(HostFsError::NotFound { .. }) => {}
        Err(e) => s.problems.push(e.to_problem()),
    }
    s
}

/// Joins backslash-continued lines; yields (first line number, logical line).
fn logical_lines(text: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut start = 0u32;
    for (i, line) in text.lines().enumerate() {
        let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
        if cur.is_empty() {
            start = n;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                cur.push_str(head);
                cur.push(' ');
            }
            None => {
                cur.push_str(line);
                out.push((start, std::mem::take(&mut cur)));
            }
        }
    }
    if !cur.is_empty() {
        out.push((start, cur));
    }
    out
}

/// Removes a comment: `#` starts one unless it begins a directive or a `#uid` user.
fn strip_comment(line: &str) -> &str {
    let mut prev_ws = true;
    for (i, c) in line.char_indices() {
        if c == '#' && prev_ws {
            let rest = &line[i + 1..];
            let uid = rest.starts_with(|d: char| d.is_ascii_digit());
            if !uid {
                return &line[..i];
            }
        }
        prev_ws = c.is_whitespace() || c == ',' || c == '(' || c == '=';
    }
    line
}

impl Sudoers {
    fn file(&mut self, root: &HostRoot, path: &Path, depth: u32) -> Result<(), HostFsError> {
        if self.files.len() >= MAX_FILES {
            self.problems.push(Problem::new(
                "limit_reached",
                format!("more than {MAX_FILES} sudoers files; {} was not read", path.display()),
            ));
            return Ok(());
        }
        let text = read_text(root, path, MAX_CONFIG_BYTES)?;
        let file = path.display().to_string();
        self.files.push(file.clone());
        let dir = path.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
        for (line_no, line) in logical_lines(&text) {
            let at = Location { file: file.clone(), line: line_no };
            let trimmed = line.trim();
            let directive = trimmed.strip_prefix('@').or_else(|| trimmed.strip_prefix('#'));
            if let Some(d) = directive {
                let (word, arg) = d.split_once(char::is_whitespace).unwrap_or((d, ""));
                if word == "include" || word == "includedir" {
                    self.include(root, &dir, word == "includedir", arg.trim(), &at, depth);
                    continue;
                }
            }
            let body = strip_comment(trimmed).trim();
            if body.is_empty() {
                continue;
            }
            self.statement(body, at);
        }
        Ok(())
    }

    fn include(&mut self, root: &HostRoot, dir: &Path, is_dir: bool, arg: &str, at: &Location, depth: u32) {
        let arg = arg.trim_matches('"');
        if arg.is_empty() {
            return;
        }
        if depth >= MAX_DEPTH {
            self.problems.push(
                Problem::new("limit_reached", format!("includes nested deeper than {MAX_DEPTH} levels"))
                    .with_path(at.file.clone())
                    .with_line(u64::from(at.line)),
            );
            return;
        }
        let target = if arg.starts_with('/') { PathBuf::from(arg) } else { dir.join(arg) };
        if !is_dir {
            match self.file(root, &target, depth + 1) {
                Ok(()) => {}
                Err(e) => self.problems.push(e.to_problem()),
            }
            return;
        }
        let entries = match list_dir(root, &target) {
            Ok((entries, _)) => entries,
            Err(HostFsError::NotFound { .. }) => return,
            Err(e) => {
                self.problems.push(e.to_problem());
                return;
            }
        };
        for e in entries {
            // sudo skips editor backups and files with a dot (`README`, `foo.rpmsave`).
            if e.is_dir || e.name.ends_with('~') || e.name.contains('.') {
                continue;
            }
            match self.file(root, &target.join(&e.name), depth + 1) {
                Ok(()) => {}
                Err(e) => self.problems.push(e.to_problem()),
            }
        }
    }

    fn statement(&mut self, body: &str, at: Location) {
        let first = body.split(|c: char| c.is_whitespace() || c == ':').next().unwrap_or("");
        if let Some(binding) = first.strip_prefix("Defaults") {
            // `Defaults[:user|@host|>runas|!cmnd] ... !authenticate`: no password for whoever
            // it covers.
            let no_auth = body.split([',', ' ', '\t']).any(|w| w.trim() == "!authenticate");
            if no_auth {
                let after = body[first.len()..].trim_start();
                let who = if !binding.is_empty() {
                    binding.to_string()
                } else if after.starts_with(':') {
                    after.split_whitespace().next().unwrap_or("").to_string()
                } else {
                    "everyone".to_string()
                };
                self.grants.push(SudoGrant {
                    at,
                    who,
                    hosts: "ALL".into(),
                    runas: None,
                    commands: Vec::new(),
                    nopasswd: true,
                    all_commands: false,
                    defaults_no_authenticate: true,
                });
            }
            return;
        }
        if matches!(first, "User_Alias" | "Runas_Alias" | "Host_Alias" | "Cmnd_Alias" | "Cmd_Alias") {
            return;
        }
        let Some((left, right)) = body.split_once('=') else { return };
        // `alice, bob  host1, host2`: the user list, then the host list.
        let left = normalise_lists(left);
        let mut tokens = left.split_whitespace();
        let (Some(who), hosts) = (tokens.next(), tokens.collect::<Vec<_>>().join(" ")) else { return };
        let mut rest = right.trim();
        let mut runas = None;
        let mut nopasswd_active = false;
        let mut nopasswd = false;
        let mut all_commands = false;
        let mut commands = Vec::new();
        for raw in split_commands(&mut rest) {
            let mut cmd = raw.trim();
            loop {
                if cmd.starts_with('(')
                    && let Some(end) = cmd.find(')')
                {
                    if runas.is_none() {
                        runas = Some(cmd[1..end].trim().to_string());
                    }
                    cmd = cmd[end + 1..].trim_start();
                    continue;
                }
                if let Some(tag) = TAGS.iter().find(|t| cmd.starts_with(&format!("{t}:"))) {
                    match *tag {
                        "NOPASSWD" => nopasswd_active = true,
                        "PASSWD" => nopasswd_active = false,
                        _ => {}
                    }
                    cmd = cmd[tag.len() + 1..].trim_start();
                    continue;
                }
                if let Some(opt) = OPTIONS.iter().find(|o| cmd.starts_with(**o)) {
                    let end = cmd[opt.len()..].find(char::is_whitespace).map_or(cmd.len(), |e| e + opt.len());
                    cmd = cmd[end..].trim_start();
                    continue;
                }
                break;
            }
            if cmd.is_empty() {
                continue;
            }
            let is_all = cmd == "ALL";
            all_commands |= is_all;
            nopasswd |= nopasswd_active;
            if commands.len() < MAX_COMMANDS {
                commands.push(guestward_core::text::truncate_chars(cmd, 256).into_owned());
            }
        }
        if nopasswd || all_commands {
            self.grants.push(SudoGrant {
                at,
                who: who.to_string(),
                hosts,
                runas,
                commands,
                nopasswd,
                all_commands,
                defaults_no_authenticate: false,
            });
        }
    }
}

/// `a , b` -> `a,b`, so lists are single tokens.
fn normalise_lists(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for part in s.split(',') {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(part.trim());
    }
    out
}

/// Commands separated by commas outside parentheses (`(root, www)` is a runas list).
fn split_commands(s: &mut &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth <= 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<SudoGrant> {
        let mut s = Sudoers::default();
        for (n, line) in logical_lines(text) {
            let body = strip_comment(line.trim()).trim().to_string();
            if !body.is_empty() {
                s.statement(&body, Location { file: "/etc/sudoers".into(), line: n });
            }
        }
        s.grants
    }

    #[test]
    fn rules_that_matter_are_kept() {
        let g = parse(
            "Defaults env_reset\n%sudo ALL=(ALL:ALL) ALL\nalice , bob ALL = (root) NOPASSWD: /usr/bin/systemctl restart app, \\\n  /usr/bin/journalctl\n\
             carol ALL=/bin/ls # just ls\n#1001 ALL=(ALL) NOPASSWD:ALL\nCmnd_Alias X = ALL\nDefaults:deploy !authenticate\n",
        );
        assert_eq!(g.len(), 4, "{g:#?}");
        assert_eq!((g[0].who.as_str(), g[0].all_commands, g[0].nopasswd), ("%sudo", true, false));
        assert_eq!(g[0].runas.as_deref(), Some("ALL:ALL"));
        assert_eq!(g[1].who, "alice,bob");
        assert!(g[1].nopasswd && !g[1].all_commands);
        assert_eq!(g[1].commands, vec!["/usr/bin/systemctl restart app", "/usr/bin/journalctl"]);
        assert_eq!(g[1].at.line, 3);
        assert_eq!((g[2].who.as_str(), g[2].nopasswd, g[2].all_commands), ("#1001", true, true));
        assert!(g[3].defaults_no_authenticate && g[3].who == ":deploy", "{:?}", g[3]);
    }
}
