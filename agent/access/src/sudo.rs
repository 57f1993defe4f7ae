//! sudoers: the rules that grant every command or need no password.
//!
//! Read as sudo reads it: `/etc/sudoers`, then each `@include`/`#include` file and each
//! `@includedir`/`#includedir` directory where the directive stands (a directory's files in
//! name order, skipping names that end in `~` or contain a `.`, as sudo does); relative names
//! are relative to the including file's directory; backslash continues a line. Aliases are not
//! expanded: a rule is reported with its user and command lists as written (`%admins`,
//! `ADMINS`), and a `Cmnd_Alias` that contains `ALL` is not seen as `ALL`.

use crate::fs::{FileId, MAX_CONFIG_BYTES, list_dir, located, open_identified, show};
use crate::model::{Location, SudoGrant, Truncation};
use guestward_core::capped::Capped;
use guestward_core::text::counted;
use guestward_core::{HostFsError, HostRoot, Problem};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// The main file.
pub const SUDOERS: &str = "/etc/sudoers";
/// sudo stops at 128 nested includes; real hosts use one or two.
const MAX_DEPTH: u32 = 16;
/// Files read in all.
const MAX_FILES: usize = 1024;
/// Commands listed per rule.
const MAX_COMMANDS: usize = 32;
/// Grants listed in all (each file is read once, so this only bounds a sudoers written to
/// flood the report; a real host has a handful).
const MAX_GRANTS: usize = 10_000;
/// Problems listed in all; the rest are counted in one last problem.
const MAX_PROBLEMS: usize = 100;

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
    /// The root read, which a problem's path is shown in ([`located`]).
    root: HostRoot,
    pub files: Vec<String>,
    pub grants: Capped<SudoGrant, MAX_GRANTS>,
    pub problems: Capped<Problem, MAX_PROBLEMS>,
    pub truncated: Vec<Truncation>,
    /// The files being read now (the include chain), to recognise a loop.
    reading: Vec<(FileId, String)>,
    /// Every file read or being read: a file is read once however often it is included.
    read_ids: HashSet<FileId>,
    /// Identities of the paths opened so far, so that an include line naming a file already
    /// seen costs a lookup, not an open (a sudoers of 100,000 include lines stays cheap).
    known: HashMap<PathBuf, FileId>,
    /// `@includedir` directories being listed now (a loop through a directory).
    dirs_reading: Vec<PathBuf>,
    /// `@includedir` directories already listed: their files were all read then.
    dirs_read: HashSet<PathBuf>,
    /// Causes met many times are reported once, with the number of times.
    loop_reported: bool,
    loops_more: u64,
    too_deep: Option<(Location, u64)>,
    too_many_files: Option<(String, u64)>,
}

/// Reads `/etc/sudoers` and everything it includes. A host without sudo has no file: empty.
///
/// Security: sudoers is root's file, but an `#include` loop or a rule repeated a million times
/// must not turn a scan into gigabytes: every file is read once (by device and inode, so a
/// symlink or a second spelling is the same file), and grants and problems are capped with a
/// count of what was left out. Memory is then bounded by the bytes of the distinct files.
pub(crate) fn read(root: &HostRoot) -> Sudoers {
    let mut s = Sudoers { root: root.clone(), ..Sudoers::default() };
    match s.file(root, Path::new(SUDOERS), 0, None) {
        Ok(()) | Err(HostFsError::NotFound { .. }) => {}
        Err(e) => s.problem(e.to_problem()),
    }
    s.summarise();
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
    fn problem(&mut self, p: Problem) {
        self.problems.push(p);
    }

    fn grant(&mut self, g: SudoGrant) {
        self.grants.push(g);
    }

    /// The causes counted while reading, one problem each.
    fn summarise(&mut self) {
        if self.loops_more > 0 {
            let n = self.loops_more;
            self.problem(Problem::new(
                "include_loop",
                format!(
                    "{} back into a file being read; not followed",
                    counted(n, "more include line leads", "more include lines lead")
                ),
            ));
        }
        if let Some((at, n)) = self.too_deep.take() {
            self.problem(located(
                Problem::new(
                    "limit_reached",
                    format!(
                        "includes nested deeper than {MAX_DEPTH} levels ({}, the first at {at}); not read",
                        counted(n, "include line", "include lines")
                    ),
                ),
                &at,
                &self.root,
            ));
        }
        if let Some((first, n)) = self.too_many_files.take() {
            self.problem(Problem::new(
                "limit_reached",
                format!(
                    "more than {MAX_FILES} sudoers files; {} not read, the first {first}",
                    counted(n, "more was", "more were")
                ),
            ));
        }
        if self.grants.left_out() > 0 {
            self.truncated.push(Truncation { what: "sudo_grants".into(), limit: MAX_GRANTS as u64 });
            let n = self.grants.left_out();
            self.problem(Problem::new(
                "limit_reached",
                format!(
                    "more than {MAX_GRANTS} sudo grants; {} not listed",
                    counted(n, "more was", "more were")
                ),
            ));
        }
        // Past the cap on purpose: the count of what was left out is the last problem.
        self.problems.close_with(|n| {
            Problem::new(
                "limit_reached",
                format!("{} with the sudoers files not listed", counted(n, "more problem", "more problems")),
            )
        });
    }

    /// An include that leads back into a file or directory being read. sudo has no loop check:
    /// it reads the file again until 128 levels, then fails with "too many levels of includes"
    /// (a parse error); the rules are the same each time. Reported once, then counted.
    fn include_loop(&mut self, from: Option<&Location>, what: &str) {
        if self.loop_reported {
            self.loops_more += 1;
            return;
        }
        self.loop_reported = true;
        let mut p = Problem::new(
            "include_loop",
            format!(
                "{} includes {what}: an include loop (sudo follows it 128 levels deep and then stops \
                 with a parse error); not read again",
                from.map_or_else(|| SUDOERS.to_string(), ToString::to_string),
            ),
        );
        if let Some(at) = from {
            p = located(p, at, &self.root);
        }
        self.problem(p);
    }

    /// Reads one file where it is included (`from`: the include line). A file already being
    /// read is an include loop, reported once and not read again; a file already read is
    /// skipped, its grants are listed already.
    fn file(
        &mut self,
        root: &HostRoot,
        path: &Path,
        depth: u32,
        from: Option<&Location>,
    ) -> Result<(), HostFsError> {
        let opened = match self.known.get(path) {
            Some(id) => Err(*id),
            None => {
                let opened = open_identified(root, path)?;
                self.known.insert(path.to_path_buf(), opened.id);
                Ok(opened)
            }
        };
        let id = match &opened {
            Ok(o) => o.id,
            Err(id) => *id,
        };
        if let Some((_, open_name)) = self.reading.iter().find(|(r, _)| *r == id) {
            let shown = show(path);
            let alias = if *open_name == shown { String::new() } else { format!(" (as {open_name})") };
            self.include_loop(from, &format!("{shown}, which is already being read{alias}"));
            return Ok(());
        }
        if self.read_ids.contains(&id) {
            // Included a second time: sudo reads it again and finds the same rules.
            return Ok(());
        }
        if self.files.len() >= MAX_FILES {
            let entry = self.too_many_files.get_or_insert_with(|| (show(path), 0));
            entry.1 += 1;
            return Ok(());
        }
        let opened = match opened {
            Ok(o) => o,
            // Known by name, yet neither read nor being read: not reached today (a name is only
            // remembered on the way to reading it, or past MAX_FILES, which never lets go), but
            // opening again is the safe answer.
            Err(_) => open_identified(root, path)?,
        };
        self.read_ids.insert(id);
        let text = opened.read_text(MAX_CONFIG_BYTES)?;
        let file = show(path);
        self.files.push(file.clone());
        self.reading.push((id, file.clone()));
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
        self.reading.pop();
        Ok(())
    }

    fn include(&mut self, root: &HostRoot, dir: &Path, is_dir: bool, arg: &str, at: &Location, depth: u32) {
        let arg = arg.trim_matches('"');
        if arg.is_empty() {
            return;
        }
        if depth >= MAX_DEPTH {
            self.too_deep.get_or_insert_with(|| (at.clone(), 0)).1 += 1;
            return;
        }
        let target = if arg.starts_with('/') { PathBuf::from(arg) } else { dir.join(arg) };
        if !is_dir {
            match self.file(root, &target, depth + 1, Some(at)) {
                Ok(()) => {}
                Err(e) => self.problem(e.to_problem()),
            }
            return;
        }
        if self.dirs_reading.contains(&target) {
            self.include_loop(Some(at), &format!("{}, which is already being read", show(&target)));
            return;
        }
        // Every file of a directory listed once was read then: listing it again would find
        // nothing new.
        if !self.dirs_read.insert(target.clone()) {
            return;
        }
        let entries = match list_dir(root, &target) {
            Ok((entries, _)) => entries,
            Err(HostFsError::NotFound { .. }) => return,
            Err(e) => {
                self.problem(e.to_problem());
                return;
            }
        };
        self.dirs_reading.push(target.clone());
        for e in entries {
            // sudo skips editor backups and files with a dot (`README`, `foo.rpmsave`).
            if e.is_dir || e.bytes().ends_with(b"~") || e.bytes().contains(&b'.') {
                continue;
            }
            match self.file(root, &target.join(&e.name), depth + 1, Some(at)) {
                Ok(()) => {}
                Err(e) => self.problem(e.to_problem()),
            }
        }
        self.dirs_reading.pop();
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
                self.grant(SudoGrant {
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
            self.grant(SudoGrant {
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
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::BTreeSet;

    /// A tree with the given files (host path, content).
    fn tree(files: &[(&str, String)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = dir.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    fn read_tree(dir: &tempfile::TempDir) -> Sudoers {
        read(&HostRoot::new(dir.path()).unwrap())
    }

    #[test]
    fn sudoers_including_itself_is_read_once_with_one_loop_problem() {
        // The adversarial case: 2,000 grants and 20,000 self-includes once gave 34,000 grants
        // and millions of problems.
        let text = "bob ALL=(ALL) NOPASSWD: ALL\n".repeat(2_000) + &"#include /etc/sudoers\n".repeat(20_000);
        let dir = tree(&[("/etc/sudoers", text)]);
        let s = read_tree(&dir);
        assert_eq!(s.files, ["/etc/sudoers"]);
        assert_eq!(s.grants.len(), 2_000);
        let at: BTreeSet<(String, u32)> = s.grants.iter().map(|g| (g.at.file.clone(), g.at.line)).collect();
        assert_eq!(at.len(), 2_000, "no file:line counted twice");
        let codes: Vec<&str> = s.problems.iter().map(|p| p.code.as_str()).collect();
        assert_eq!(codes, ["include_loop", "include_loop"], "{:#?}", s.problems);
        // The problem names the file on this machine; the message and `at`, sudo's own path.
        let on_this_machine = dir.path().join("etc/sudoers").display().to_string();
        assert_eq!((s.problems[0].path.clone(), s.problems[0].line), (Some(on_this_machine), Some(2_001)));
        assert!(s.problems[0].message.contains("include loop"), "{}", s.problems[0].message);
        assert!(s.problems[1].message.starts_with("19999 more include lines"), "{}", s.problems[1].message);
    }

    #[test]
    fn a_file_included_twice_or_by_another_name_counts_once() {
        let dir = tree(&[
            ("/etc/sudoers", "#include /etc/t\n@include t\n#include /etc/link\n#includedir /etc/d\n".into()),
            ("/etc/t", "bob ALL=(ALL) NOPASSWD: ALL\n".into()),
            // A file of the included directory that includes the directory again: a loop
            // through another name.
            ("/etc/d/a", "alice ALL=(ALL) ALL\n#includedir /etc/d\n#include /etc/sudoers\n".into()),
            ("/etc/d/b", "carol ALL=(ALL) ALL\n".into()),
        ]);
        std::os::unix::fs::symlink("/etc/t", dir.path().join("etc/link")).unwrap();
        let s = read_tree(&dir);
        assert_eq!(s.files, ["/etc/sudoers", "/etc/t", "/etc/d/a", "/etc/d/b"]);
        let who: Vec<&str> = s.grants.iter().map(|g| g.who.as_str()).collect();
        assert_eq!(who, ["bob", "alice", "carol"]);
        let messages: Vec<&str> = s.problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(messages.len(), 2, "{messages:#?}");
        let top = dir.path().display();
        assert!(
            messages[0].starts_with(&format!("{top}/etc/d/a:2 includes /etc/d, which is already being read")),
            "{messages:?}"
        );
        assert!(messages[1].starts_with("1 more include line leads"), "{messages:?}");
    }

    #[test]
    fn grants_and_depth_are_capped_with_counts() {
        let mut files = vec![(
            "/etc/sudoers",
            "bob ALL=(ALL) NOPASSWD: ALL\n".repeat(MAX_GRANTS + 7) + "#include /etc/c0\n",
        )];
        let names: Vec<String> = (0..=MAX_DEPTH + 3).map(|i| format!("/etc/c{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            files.push((name.as_str(), format!("#include /etc/c{}\n#include /etc/c{}\n", i + 1, i + 1)));
        }
        let dir = tree(&files);
        let s = read_tree(&dir);
        assert_eq!(s.grants.len(), MAX_GRANTS);
        assert_eq!(s.truncated, [Truncation { what: "sudo_grants".into(), limit: MAX_GRANTS as u64 }]);
        let messages: Vec<&str> = s.problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(messages.len(), 2, "{messages:#?}");
        assert!(messages[0].contains("deeper than 16 levels (2 include lines"), "{}", messages[0]);
        assert!(messages[1].contains("7 more were not listed"), "{}", messages[1]);
    }

    fn parse(text: &str) -> Vec<SudoGrant> {
        let mut s = Sudoers::default();
        for (n, line) in logical_lines(text) {
            let body = strip_comment(line.trim()).trim().to_string();
            if !body.is_empty() {
                s.statement(&body, Location { file: "/etc/sudoers".into(), line: n });
            }
        }
        s.grants.into_vec()
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
