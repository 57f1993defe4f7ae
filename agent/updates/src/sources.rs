//! Which apt lists are in use: apt reads only the lists of the sources configured now
//! (`/etc/apt/sources.list`, `sources.list.d/*.list` and deb822 `*.sources`); lists of a
//! source since removed stay on disk until the next `apt-get update` and must not count.
//!
//! A source's lists are named after its URI the way apt's `URItoFileName` does: scheme, user
//! and password dropped, `\|{}[]<>"^~_=!@#$%^&*`, spaces and non-ASCII bytes %-escaped
//! (lowercase hex), then `/` replaced by `_`.

use guestward_core::{HostRoot, Problem};
use std::path::Path;

/// Largest sources file read.
const MAX_SOURCES_BYTES: u64 = 4 * 1024 * 1024;

/// The list-name prefixes of every enabled `deb` source under `root`, or `None` when the host
/// has no sources configuration at all (then every list is used).
pub(crate) fn configured_prefixes(root: &HostRoot, problems: &mut Vec<Problem>) -> Option<Vec<String>> {
    let mut files = Vec::new();
    if root.exists("/etc/apt/sources.list") {
        files.push("/etc/apt/sources.list".to_string());
    }
    match crate::read::list_dir(root, Path::new("/etc/apt/sources.list.d")) {
        Ok(Some(names)) => files.extend(
            names
                .into_iter()
                .filter(|n| n.ends_with(".list") || n.ends_with(".sources"))
                .map(|n| format!("/etc/apt/sources.list.d/{n}")),
        ),
        Ok(None) => {}
        Err(e) => problems.push(e.to_problem()),
    }
    if files.is_empty() {
        return None;
    }
    let mut prefixes = Vec::new();
    for f in files {
        let text = match root.read_string_capped(&f, MAX_SOURCES_BYTES) {
            Ok(t) => t,
            Err(e) => {
                problems.push(e.to_problem());
                continue;
            }
        };
        let entries = if f.ends_with(".sources") { parse_deb822(&text) } else { parse_one_line(&text) };
        for (uri, suite) in entries {
            prefixes.push(list_prefix(&uri, &suite));
        }
    }
    prefixes.sort_unstable();
    prefixes.dedup();
    Some(prefixes)
}

/// `(uri, suite)` of each `deb` line of a one-line-style file.
fn parse_one_line(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line.strip_prefix("deb ").or_else(|| line.strip_prefix("deb\t")) else { continue };
        let mut rest = rest.trim_start();
        if rest.starts_with('[') {
            match rest.find(']') {
                Some(end) => rest = rest[end + 1..].trim_start(),
                None => continue,
            }
        }
        let mut words = rest.split_whitespace();
        if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
            out.push((uri.to_string(), suite.to_string()));
        }
    }
    out
}

/// `(uri, suite)` for every URI x suite of each enabled stanza with `Types: deb`.
fn parse_deb822(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    // Comment lines are not deb822 syntax apt accepts everywhere: dropped first.
    let cleaned: String =
        text.lines().filter(|l| !l.trim_start().starts_with('#')).map(|l| format!("{l}\n")).collect();
    for stanza in cleaned.split("\n\n") {
        let mut types = Vec::new();
        let mut uris = Vec::new();
        let mut suites = Vec::new();
        let mut enabled = true;
        let mut current: Option<&str> = None;
        for line in stanza.lines() {
            let (key, value) = if line.starts_with([' ', '\t']) {
                match current {
                    Some(k) => (k, line.trim()),
                    None => continue,
                }
            } else {
                match line.split_once(':') {
                    Some((k, v)) => {
                        current = Some(k.trim());
                        (k.trim(), v.trim())
                    }
                    None => continue,
                }
            };
            let words = value.split_whitespace().map(String::from);
            match key.to_ascii_lowercase().as_str() {
                "types" => types.extend(words),
                "uris" => uris.extend(words),
                "suites" => suites.extend(words),
                "enabled" => enabled = !value.eq_ignore_ascii_case("no"),
                _ => {}
            }
        }
        if enabled && types.iter().any(|t| t == "deb") {
            for u in &uris {
                for s in &suites {
                    out.push((u.clone(), s.clone()));
                }
            }
        }
    }
    out
}

/// The name prefix apt gives the lists of `uri` `suite` (its `InRelease` is this plus
/// `InRelease`).
pub(crate) fn list_prefix(uri: &str, suite: &str) -> String {
    let uri = if uri.ends_with('/') { uri.to_string() } else { format!("{uri}/") };
    // A suite ending in `/` is a flat repository: lists sit under it, not under dists/.
    let full = if suite.ends_with('/') { format!("{uri}{suite}") } else { format!("{uri}dists/{suite}/") };
    uri_to_file_name(&full)
}

fn uri_to_file_name(uri: &str) -> String {
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    // user:password@ is dropped.
    let rest = match rest.split_once('/') {
        Some((authority, path)) => {
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{host}/{path}")
        }
        None => rest.rsplit_once('@').map_or(rest, |(_, h)| h).to_string(),
    };
    let mut out = String::with_capacity(rest.len());
    for b in rest.bytes() {
        if b <= 0x20 || b >= 0x7f || br#"\|{}[]<>"^~_=!@#$%&*"#.contains(&b) {
            out.push_str(&format!("%{b:02x}"));
        } else if b == b'/' {
            out.push('_');
        } else {
            out.push(char::from(b));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_named_as_apt_names_them() {
        assert_eq!(
            list_prefix("http://deb.debian.org/debian-security", "bookworm-security"),
            "deb.debian.org_debian-security_dists_bookworm-security_"
        );
        assert_eq!(
            list_prefix("https://deb.nodesource.com/node_20.x", "nodistro"),
            "deb.nodesource.com_node%5f20.x_dists_nodistro_"
        );
        assert_eq!(list_prefix("file:///srv/repo/", "./"), "_srv_repo_._");
        assert_eq!(
            list_prefix("http://user:pw@mirror:8080/debian", "stable"),
            "mirror:8080_debian_dists_stable_"
        );
    }

    #[test]
    fn both_formats() {
        let one = "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://a/debian bookworm main\ndeb-src http://a/debian bookworm main\n";
        assert_eq!(parse_one_line(one), vec![("http://a/debian".into(), "bookworm".into())]);
        let deb822 = "Types: deb deb-src\nURIs: http://a/debian\n# note\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
                      Types: deb\nURIs: http://b/\nSuites: x\nEnabled: no\n";
        assert_eq!(
            parse_deb822(deb822),
            vec![
                ("http://a/debian".into(), "bookworm".into()),
                ("http://a/debian".into(), "bookworm-updates".into())
            ]
        );
    }
}
