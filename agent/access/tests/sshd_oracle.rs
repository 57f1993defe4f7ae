//! The effective sshd settings against `sshd -T -f <config>` for fixture configs with includes.
//!
//! The configs are written to a temporary directory and read through the live root (their
//! `Include`s name absolute paths in that directory), so sshd and the collector read the very
//! same files. `sshd -T` needs a host key (one is generated here) and, on Debian, the
//! privilege separation directory /run/sshd; it runs as root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::util::{find_tool, keygen, run};
use guestward_core::HostRoot;
use guestward_core::testing::skip_or_fail;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const TEST: &str = "sshd_effective_values_equal_sshd_t";

/// The settings compared, by `sshd -T`'s lowercase names.
fn ours(settings: &guestward_access::SshdSettings) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("passwordauthentication", settings.password_authentication.value.clone()),
        ("permitrootlogin", settings.permit_root_login.value.clone()),
        ("permitemptypasswords", settings.permit_empty_passwords.value.clone()),
        ("kbdinteractiveauthentication", settings.kbd_interactive_authentication.value.clone()),
        ("pubkeyauthentication", settings.pubkey_authentication.value.clone()),
        ("authorizedkeysfile", settings.authorized_keys_file.join(" ")),
    ])
}

fn theirs(sshd: &Path, config: &Path, host_key: &Path) -> BTreeMap<&'static str, String> {
    let out = run(Command::new(sshd)
        .arg("-T")
        .arg("-f")
        .arg(config)
        .arg("-o")
        .arg(format!("HostKey={}", host_key.display())));
    let mut map = BTreeMap::new();
    for line in out.lines() {
        let (k, v) = line.split_once(' ').unwrap_or((line, ""));
        for wanted in [
            "passwordauthentication",
            "permitrootlogin",
            "permitemptypasswords",
            "kbdinteractiveauthentication",
            "pubkeyauthentication",
            "authorizedkeysfile",
        ] {
            if k == wanted {
                map.insert(wanted, v.to_string());
            }
        }
    }
    map
}

/// (name, files relative to the temporary directory; `@D` stands for its path).
fn cases() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    vec![
        ("empty: the defaults", vec![("sshd_config", "# nothing\n")]),
        (
            "drop-ins first win over the main file (Debian, Ubuntu cloud images)",
            vec![
                (
                    "sshd_config",
                    "Include @D/sshd_config.d/*.conf\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin no\n",
                ),
                ("sshd_config.d/50-cloud-init.conf", "PasswordAuthentication yes\n"),
                ("sshd_config.d/60-root.conf", "permitrootlogin=yes\nPasswordAuthentication no\n"),
                ("sshd_config.d/.hidden.conf", "PermitEmptyPasswords yes\n"),
                ("sshd_config.d/notes.txt", "PubkeyAuthentication no\n"),
            ],
        ),
        (
            "Match blocks are not applied, an Include inside one neither, and a Match ends with its file",
            vec![
                (
                    "sshd_config",
                    "Include @D/inc/a.conf\nPermitEmptyPasswords no\nMatch User deploy\n  PasswordAuthentication no\n  Include @D/inc/in-match.conf\n",
                ),
                ("inc/a.conf", "Match Address 10.0.0.0/8\n  PermitRootLogin yes\n"),
                ("inc/in-match.conf", "KbdInteractiveAuthentication no\n"),
            ],
        ),
        (
            "nested includes, aliases, case, quotes, comments, = and no match for a glob",
            vec![
                (
                    "sshd_config",
                    "# comment\nInclude @D/d1/*.conf @D/none/*.conf\nCHALLENGERESPONSEAUTHENTICATION \"no\"\nPermitRootLogin prohibit-password # trailing\nAuthorizedKeysFile %h/.ssh/authorized_keys /etc/ssh/keys/%u .ssh/k%%2\n",
                ),
                ("d1/10.conf", "Include @D/d2/nested.conf\nPubkeyAuthentication  =  no\n"),
                ("d2/nested.conf", "PermitEmptyPasswords YES\nAuthorizedKeysFile none\n"),
            ],
        ),
        (
            "a file included again: inside a Match first, then twice outside, then from another file",
            vec![
                (
                    "sshd_config",
                    "Include @D/m.conf\nInclude @D/b.conf\nInclude @D/b.conf\nInclude @D/c.conf\n",
                ),
                ("m.conf", "Match User x\n  Include @D/b.conf\n"),
                ("b.conf", "PermitRootLogin no\n"),
                ("c.conf", "Include @D/b.conf\nPasswordAuthentication no\n"),
            ],
        ),
        (
            "forced-commands-only and a later value that is ignored",
            vec![(
                "sshd_config",
                "PermitRootLogin forced-commands-only\nPermitRootLogin yes\nPasswordAuthentication=no\nPasswordAuthentication yes\n",
            )],
        ),
    ]
}

#[test]
fn sshd_effective_values_equal_sshd_t() {
    let Some(sshd) = find_tool(&["/usr/sbin/sshd", "sshd"]) else {
        skip_or_fail(TEST, "sshd is not installed (openssh-server)");
        return;
    };
    let Some(ssh_keygen) = find_tool(&["ssh-keygen", "/usr/bin/ssh-keygen"]) else {
        skip_or_fail(TEST, "ssh-keygen is not installed (openssh-client)");
        return;
    };
    if !nix::unistd::geteuid().is_root() {
        skip_or_fail(TEST, "sshd -T runs as root");
        return;
    }
    // Debian's sshd refuses to start (-T included) without its privilege separation directory.
    std::fs::create_dir_all("/run/sshd").unwrap();
    let keys = tempfile::tempdir().unwrap();
    let host_key = keys.path().join("host_ed25519");
    assert!(keygen(&ssh_keygen, "ed25519", None, "test host key", &host_key));
    for (name, files) in cases() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        for (path, text) in &files {
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(&full, text.replace("@D", &d)).unwrap();
        }
        let config = dir.path().join("sshd_config");
        let (settings, problems) =
            guestward_access::sshd::effective(&HostRoot::live(), &config).unwrap().unwrap();
        assert!(problems.is_empty(), "{name}: {problems:?}");
        assert_eq!(ours(&settings), theirs(&sshd, &config, &host_key), "{name}");
        if name.starts_with("Match") {
            let criteria: Vec<&str> = settings.match_blocks.iter().map(|m| m.criteria.as_str()).collect();
            assert_eq!(criteria, ["Address 10.0.0.0/8", "User deploy"], "{name}");
            assert_eq!(settings.match_blocks[0].overrides, ["permitrootlogin yes"]);
        }
    }

    // An include loop: sshd refuses the configuration, and the collector says so once.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sshd_config");
    std::fs::write(&config, format!("Include {}\n", config.display()).repeat(3)).unwrap();
    let out = Command::new(&sshd)
        .arg("-T")
        .arg("-f")
        .arg(&config)
        .arg("-o")
        .arg(format!("HostKey={}", host_key.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("Too many recursive configuration includes"),
        "{stderr}"
    );
    let (_, problems) = guestward_access::sshd::effective(&HostRoot::live(), &config).unwrap().unwrap();
    let codes: Vec<&str> = problems.iter().map(|p| p.code.as_str()).collect();
    assert_eq!(codes, ["include_loop", "include_loop"], "{problems:?}");
    assert!(problems[0].message.contains("Too many recursive configuration includes"), "{problems:?}");
}
