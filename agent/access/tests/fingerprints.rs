//! Key types, sizes and SHA256 fingerprints against `ssh-keygen -lf` on keys generated here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::util::{find_tool, keygen, run};
use guestward_access::Location;
use guestward_core::testing::skip_or_fail;
use std::process::Command;

#[test]
fn authorized_keys_fingerprints_equal_ssh_keygen() {
    let Some(ssh_keygen) = find_tool(&["ssh-keygen", "/usr/bin/ssh-keygen"]) else {
        skip_or_fail(
            "authorized_keys_fingerprints_equal_ssh_keygen",
            "ssh-keygen is not installed (openssh-client)",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let kinds: &[(&str, Option<u32>)] = &[
        ("rsa", Some(1024)),
        ("rsa", Some(2048)),
        ("rsa", Some(4096)),
        ("ed25519", None),
        ("ecdsa", Some(256)),
        ("ecdsa", Some(384)),
        ("ecdsa", Some(521)),
        ("dsa", None),
    ];
    let mut lines = Vec::new();
    for (i, (kind, bits)) in kinds.iter().enumerate() {
        let path = dir.path().join(format!("k{i}"));
        if !keygen(&ssh_keygen, kind, *bits, &format!("{kind} key {i}"), &path) {
            // OpenSSH 9.8 and later no longer generate DSA keys: the committed fixture keeps
            // one (tests/fixtures/access/root/home/deploy/.ssh/authorized_keys).
            assert_eq!(*kind, "dsa", "ssh-keygen could not make a {kind} key");
            continue;
        }
        let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
        // Every other key gets options, quoted spaces and commas included.
        let line = if i % 2 == 0 {
            format!("command=\"/bin/echo a, b\",from=\"10.0.0.0/8\",no-pty {}", public.trim())
        } else {
            public.trim().to_string()
        };
        lines.push(line);
    }
    let file = dir.path().join("authorized_keys");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let oracle = run(Command::new(&ssh_keygen).arg("-lf").arg(&file));
    let expected: Vec<&str> = oracle.lines().collect();
    assert_eq!(expected.len(), lines.len(), "{oracle}");
    for (n, (line, want)) in lines.iter().zip(&expected).enumerate() {
        let at = Location { file: file.display().to_string(), line: u32::try_from(n + 1).unwrap() };
        let key = guestward_access::keys::parse_line("bob", at, line).unwrap().unwrap();
        let got = format!("{} {} {} ({})", key.bits, key.fingerprint, key.comment, key.key_type);
        assert_eq!(&got, want, "line {}", n + 1);
        let weak = key.key_type == "DSA" || (key.key_type == "RSA" && key.bits < 2048);
        assert_eq!(key.weak.is_some(), weak, "{got}");
        if n % 2 == 0 {
            assert_eq!(key.options, vec!["command=\"/bin/echo a, b\"", "from=\"10.0.0.0/8\"", "no-pty"]);
        }
    }
}

#[test]
fn committed_fixture_keys_equal_the_recorded_ssh_keygen_output() {
    // The fixture's keys (a DSA one among them) were listed with `ssh-keygen -lf` when they
    // were made; where ssh-keygen is installed the listing is checked again live.
    let root = crate::util::fixture_root();
    let recorded = std::fs::read_to_string(root.join("../ssh-keygen-lf.txt")).unwrap();
    let mut got = Vec::new();
    for user in ["alice", "deploy"] {
        let file = root.join(format!("home/{user}/.ssh/authorized_keys"));
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, line) in text.lines().enumerate() {
            let at = Location { file: file.display().to_string(), line: u32::try_from(i + 1).unwrap() };
            if let Ok(Some(k)) = guestward_access::keys::parse_line(user, at, line) {
                got.push(format!("{} {} {} ({})", k.bits, k.fingerprint, k.comment, k.key_type));
            }
        }
    }
    assert_eq!(got, recorded.lines().collect::<Vec<_>>());
    if let Some(ssh_keygen) = find_tool(&["ssh-keygen", "/usr/bin/ssh-keygen"]) {
        let mut live = Vec::new();
        for user in ["alice", "deploy"] {
            let file = root.join(format!("home/{user}/.ssh/authorized_keys"));
            let out = Command::new(&ssh_keygen).arg("-lf").arg(&file).output().unwrap();
            live.extend(String::from_utf8_lossy(&out.stdout).lines().map(str::to_string));
        }
        assert_eq!(got, live);
    }
}
