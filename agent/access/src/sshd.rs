//! The effective sshd settings, as sshd applies them (servconf.c) outside any `Match` block:
//! - keywords are case-insensitive, `Keyword value` or `Keyword=value`; arguments split like
//!   sshd's argv_split (quotes, `#` starting a comment);
//! - the first value of a keyword wins (later ones are ignored), `AuthorizedKeysFile` takes all
//!   the arguments of its first line;
//! - `Include` is expanded in place (glob(3), sorted; relative names are under `/etc/ssh`),
//!   at most 16 levels deep; an `Include` inside a `Match` block belongs to the block, and a
//!   `Match` inside an included file ends with that file; a file included again where it was
//!   read already (inside or outside a `Match` alike) is not read again, since first value
//!   wins and a second reading changes nothing, and an include loop (which sshd refuses with
//!   "Too many recursive configuration includes") is one problem;
//! - `Match` blocks are not evaluated (they depend on the connection): their settings are
//!   not applied, which is also what `sshd -T` without `-C` prints, and each block is reported.
//!
//! Defaults are upstream OpenSSH's (`sshd -T` with an empty file), as compiled into the
//! packages of Debian, Ubuntu, Amazon Linux and RHEL: a distribution that patches a default
//! is followed only through the settings its shipped `sshd_config` writes.

use crate::fs::{FileId, MAX_CONFIG_BYTES, glob, located, open_identified, show};
use crate::model::{Location, MatchBlock, SshdSettings, SshdValue};
use guestward_core::capped::Capped;
use guestward_core::text::counted;
use guestward_core::{HostFsError, HostRoot, Problem};
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// The main configuration file.
pub const SSHD_CONFIG: &str = "/etc/ssh/sshd_config";
/// Where relative `Include` names are resolved.
const SSHD_DIR: &str = "/etc/ssh";
/// sshd's own limit on nested includes (SERVCONF_MAX_DEPTH).
const MAX_INCLUDE_DEPTH: u32 = 16;
/// Files one `Include` may expand to, and files read in all.
const MAX_FILES: usize = 256;
/// Problems listed; the rest are counted in one last problem.
const MAX_PROBLEMS: usize = 100;
/// `Include` patterns whose expansion is remembered (an `Include` repeated 100,000 times lists
/// its directory once).
const MAX_CACHED_PATTERNS: usize = 1024;

/// Security: sshd_config is root's, but the collector must stay bounded whatever it says: an
/// `Include` of the file itself repeated 100,000 times once read the file 256 times and pushed
/// a problem per line in each copy (9 GB). Each file is now read once per context, loops are
/// caught by device and inode, and each cause is one problem with a count.
#[derive(Default)]
struct State {
    /// The root read, which a problem's path is shown in ([`located`]).
    root: HostRoot,
    files: Vec<String>,
    /// The files being read now (the include chain), to recognise a loop.
    reading: Vec<FileId>,
    /// Files read, with whether inside a `Match` block: reading one again in the same context
    /// cannot change a value (first value wins) nor add what it reports.
    read: HashSet<(FileId, bool)>,
    /// Identities of the paths opened, so a repeated `Include` costs a lookup, not an open.
    known: HashMap<PathBuf, FileId>,
    /// Expansions of the `Include` patterns met.
    globs: HashMap<String, Rc<[PathBuf]>>,
    loop_reported: bool,
    loops_more: u64,
    too_deep: Option<(Location, u64)>,
    too_many_files: Option<(Location, u64)>,
    password_authentication: Option<SshdValue>,
    permit_root_login: Option<SshdValue>,
    permit_empty_passwords: Option<SshdValue>,
    kbd_interactive_authentication: Option<SshdValue>,
    pubkey_authentication: Option<SshdValue>,
    authorized_keys_file: Option<Vec<String>>,
    match_blocks: Vec<MatchBlock>,
    problems: Capped<Problem, MAX_PROBLEMS>,
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
        self.push(located(Problem::new("malformed", message), at, &self.root));
    }

    fn push(&mut self, p: Problem) {
        self.problems.push(p);
    }

    /// The causes counted while reading, one problem each.
    fn summarise(&mut self) {
        if self.loops_more > 0 {
            let n = self.loops_more;
            self.push(Problem::new(
                "include_loop",
                format!(
                    "{} back into a file being read; not followed",
                    counted(n, "more Include line leads", "more Include lines lead")
                ),
            ));
        }
        if let Some((at, n)) = self.too_deep.take() {
            self.push(located(
                Problem::new(
                    "limit_reached",
                    format!(
                        "Include nested deeper than {MAX_INCLUDE_DEPTH} levels ({}, the first at {at}; \
                         sshd refuses to start); not read",
                        counted(n, "Include line", "Include lines")
                    ),
                ),
                &at,
                &self.root,
            ));
        }
        if let Some((at, n)) = self.too_many_files.take() {
            self.push(located(
                Problem::new(
                    "limit_reached",
                    format!(
                        "more than {MAX_FILES} configuration files; {} not read, the first included at {at}",
                        counted(n, "more was", "more were")
                    ),
                ),
                &at,
                &self.root,
            ));
        }
        self.problems.close_with(|n| {
            Problem::new(
                "limit_reached",
                format!(
                    "{} with the sshd configuration not listed",
                    counted(n, "more problem", "more problems")
                ),
            )
        });
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

    /// Reads one file (`from`: the `Include` line, none for the main file). A file being read
    /// is an include loop; a file read already in the same context is skipped.
    fn read(
        &mut self,
        root: &HostRoot,
        host_path: &Path,
        depth: u32,
        in_match: bool,
        from: Option<&Location>,
    ) -> Result<(), HostFsError> {
        let (id, opened) = match self.known.get(host_path) {
            Some(id) => (*id, None),
            None => {
                let opened = open_identified(root, host_path)?;
                self.known.insert(host_path.to_path_buf(), opened.id);
                (opened.id, Some(opened))
            }
        };
        if self.reading.contains(&id) {
            self.include_loop(host_path, from);
            return Ok(());
        }
        if !self.read.insert((id, in_match)) {
            return Ok(());
        }
        if self.files.len() >= MAX_FILES {
            if let Some(at) = from {
                self.too_many_files.get_or_insert_with(|| (at.clone(), 0)).1 += 1;
            }
            return Ok(());
        }
        let opened = match opened {
            Some(o) => o,
            // Read before in the other context (inside or outside a Match): open it again.
            None => open_identified(root, host_path)?,
        };
        let text = opened.read_text(MAX_CONFIG_BYTES)?;
        let file = show(host_path);
        self.files.push(file.clone());
        self.reading.push(id);
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
        self.reading.pop();
        Ok(())
    }

    /// An `Include` that leads back into a file being read: sshd fails with "Too many
    /// recursive configuration includes" and does not start. Reported once, then counted.
    fn include_loop(&mut self, host_path: &Path, from: Option<&Location>) {
        if self.loop_reported {
            self.loops_more += 1;
            return;
        }
        self.loop_reported = true;
        let Some(at) = from else { return };
        self.push(located(
            Problem::new(
                "include_loop",
                format!(
                    "{at}: Include of {}, which is already being read: an include loop (sshd \
                     refuses to start: \"Too many recursive configuration includes\"); not read again",
                    show(host_path)
                ),
            ),
            at,
            &self.root,
        ));
    }

    fn include(&mut self, root: &HostRoot, args: &[String], at: &Location, depth: u32, in_match: bool) {
        if args.is_empty() {
            self.problem(at, "Include without a file name (sshd refuses to start)".into());
            return;
        }
        if depth >= MAX_INCLUDE_DEPTH {
            self.too_deep.get_or_insert_with(|| (at.clone(), 0)).1 += 1;
            return;
        }
        for pattern in args {
            let pattern =
                if pattern.starts_with('/') { pattern.clone() } else { format!("{SSHD_DIR}/{pattern}") };
            let paths = match self.globs.get(&pattern) {
                Some(paths) => Rc::clone(paths),
                None => {
                    let mut problems = Vec::new();
                    let paths: Rc<[PathBuf]> = glob(root, &pattern, MAX_FILES, &mut problems).into();
                    for p in problems {
                        self.push(p);
                    }
                    if self.globs.len() < MAX_CACHED_PATTERNS {
                        self.globs.insert(pattern.clone(), Rc::clone(&paths));
                    }
                    paths
                }
            };
            for path in paths.iter() {
                match self.read(root, path, depth + 1, in_match, Some(at)) {
                    Ok(()) => {}
                    // A literal name that does not exist is skipped by sshd too (glob: no match).
                    Err(HostFsError::NotFound { .. }) => {}
                    Err(e) => self.push(e.to_problem()),
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
    let mut state = State { root: root.clone(), ..State::default() };
    match state.read(root, config, 0, false, None) {
        Ok(()) => {}
        Err(HostFsError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    }
    state.summarise();
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
    Ok(Some((settings, state.problems.into_vec())))
}

/// Expands an `AuthorizedKeysFile` pattern for one account: `%%`, `%h` (home), `%u` (user),
/// `%U` (uid); a relative result is under the home directory. `None` for an unknown token.
/// The user and home are bytes, as sshd takes them from passwd (see `PasswdEntry`).
pub(crate) fn expand_keys_file(pattern: &str, user: &[u8], uid: u32, home: &Path) -> Option<PathBuf> {
    let home = home.as_os_str().as_bytes();
    let mut out: Vec<u8> = Vec::new();
    let mut bytes = pattern.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'%') => out.push(b'%'),
            Some(b'h') => out.extend_from_slice(home),
            Some(b'u') => out.extend_from_slice(user),
            Some(b'U') => out.extend_from_slice(uid.to_string().as_bytes()),
            _ => return None,
        }
    }
    if !out.starts_with(b"/") {
        let mut under_home = home.strip_suffix(b"/").unwrap_or(home).to_vec();
        under_home.push(b'/');
        under_home.append(&mut out);
        out = under_home;
    }
    Some(PathBuf::from(OsString::from_vec(out)))
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

    fn tree(files: &[(&str, String)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = dir.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    fn effective_in(dir: &tempfile::TempDir) -> (SshdSettings, Vec<Problem>) {
        effective(&HostRoot::new(dir.path()).unwrap(), Path::new(SSHD_CONFIG)).unwrap().unwrap()
    }

    #[test]
    fn sshd_config_including_itself_is_one_loop_problem() {
        // 20,000 of these once took 8 s and 1.85 GB for 5.1 million problems.
        let text = "PermitRootLogin no\n".to_string() + &"Include /etc/ssh/sshd_config\n".repeat(20_000);
        let dir = tree(&[(SSHD_CONFIG, text)]);
        let (settings, problems) = effective_in(&dir);
        assert_eq!(settings.files, [SSHD_CONFIG]);
        assert_eq!(settings.permit_root_login.value, "no");
        let codes: Vec<&str> = problems.iter().map(|p| p.code.as_str()).collect();
        assert_eq!(codes, ["include_loop", "include_loop"], "{problems:#?}");
        assert_eq!(problems[0].line, Some(2));
        // The file on this machine; the message names it as sshd does.
        assert_eq!(problems[0].path, Some(dir.path().join("etc/ssh/sshd_config").display().to_string()));
        assert!(problems[0].message.contains("Too many recursive configuration includes"), "{problems:?}");
        assert!(problems[1].message.starts_with("19999 more Include lines"), "{problems:?}");
    }

    #[test]
    fn include_fan_out_reads_each_file_once_and_counts_what_is_left() {
        // A chain of includes 20 deep, then 300 drop-ins each including itself, matched by a
        // glob repeated 1,000 times: each limit is one problem with a count.
        let mut files = vec![(
            SSHD_CONFIG.to_string(),
            "Include /etc/ssh/chain/c0\n".to_string() + &"Include /etc/ssh/d/*.conf\n".repeat(1_000),
        )];
        for i in 0..20 {
            // `c{n}` is /etc/ssh/c{n} (relative names are under /etc/ssh): missing, skipped.
            files.push((
                format!("/etc/ssh/chain/c{i}"),
                format!("Include c{}\nInclude chain/c{}\n", i + 1, i + 1),
            ));
        }
        for i in 0..300 {
            files.push((format!("/etc/ssh/d/{i:03}.conf"), format!("Include /etc/ssh/d/{i:03}.conf\n")));
        }
        let files: Vec<(&str, String)> = files.iter().map(|(p, t)| (p.as_str(), t.clone())).collect();
        let dir = tree(&files);
        let (settings, problems) = effective_in(&dir);
        assert_eq!(settings.files.len(), MAX_FILES);
        assert_eq!(settings.files[16], "/etc/ssh/chain/c15");
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(messages.len(), 4, "{messages:#?}");
        // The line that includes names its file on this machine (the scratch root's); what the
        // line includes, as sshd_config writes it.
        let top = dir.path().display();
        assert!(
            messages[0].starts_with(&format!("{top}/etc/ssh/d/000.conf:1: Include of /etc/ssh/d/000.conf,")),
            "{messages:?}"
        );
        assert!(messages[1].starts_with("238 more Include lines"), "{messages:?}");
        assert!(
            messages[2].contains(&format!(
                "deeper than 16 levels (2 Include lines, the first at {top}/etc/ssh/chain/c15:1;"
            )),
            "{messages:?}"
        );
        assert!(
            messages[3].contains("more than 256 configuration files; 17 more were not read"),
            "{messages:?}"
        );
        let here = |p: &str| Some(dir.path().join(p).display().to_string());
        let paths: Vec<Option<String>> = problems.iter().map(|p| p.path.clone()).collect();
        assert_eq!(
            paths,
            [here("etc/ssh/d/000.conf"), None, here("etc/ssh/chain/c15"), here("etc/ssh/sshd_config")]
        );
    }

    #[test]
    fn a_malformed_line_names_the_file_on_this_machine() {
        let dir = tree(&[(SSHD_CONFIG, "PermitRootLogin\n".to_string())]);
        let (_, problems) = effective_in(&dir);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, Some(dir.path().join("etc/ssh/sshd_config").display().to_string()));
        assert_eq!(problems[0].line, Some(1));
        // Scanning the live system names the same file as sshd: the root is `/`.
        let live = located(
            Problem::new("malformed", "x"),
            &Location { file: SSHD_CONFIG.into(), line: 1 },
            &HostRoot::live(),
        );
        assert_eq!(live.path.as_deref(), Some(SSHD_CONFIG));
    }

    #[test]
    fn keys_file_tokens() {
        assert_eq!(
            expand_keys_file(".ssh/authorized_keys", b"bob", 1000, Path::new("/home/bob/")).unwrap(),
            Path::new("/home/bob/.ssh/authorized_keys")
        );
        assert_eq!(
            expand_keys_file("/etc/ssh/keys/%u.%U%%", b"bob", 1000, Path::new("/h")).unwrap(),
            Path::new("/etc/ssh/keys/bob.1000%")
        );
        assert_eq!(expand_keys_file("%x", b"bob", 1, Path::new("/h")), None);
    }
}
