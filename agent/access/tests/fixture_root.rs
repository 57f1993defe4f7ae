//! A whole scan of the fixture tree (tests/fixtures/access/root) through `--root`-style
//! HostRoot, with hostile additions: a FIFO where a `.env` is expected, symlinks pointing out
//! of the root, and a huge file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::util::fixture_copy;
use guestward_access::{Config, CredentialSource, KeyKind, PasswordState};
use guestward_core::HostRoot;
use std::time::Duration;

#[test]
fn fixture_tree_scan_reports_everything_and_no_secret() {
    let tree = fixture_copy();
    let root_dir = tree.path().to_path_buf();
    // A FIFO where a .env is looked for: never opened (opening it would block the scan).
    std::fs::create_dir_all(root_dir.join("srv/fifo")).unwrap();
    nix::unistd::mkfifo(&root_dir.join("srv/fifo/.env"), nix::sys::stat::Mode::from_bits_truncate(0o644))
        .unwrap();
    // A secret outside the root, and links to it: absolute ones resolve inside the root, `..`
    // stops at the root, and a directory link is never walked.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join(".env"), "AWS_ACCESS_KEY_ID=AKIAOUTSIDEROOT12345\n").unwrap();
    std::fs::create_dir_all(root_dir.join("home/guest/.aws")).unwrap();
    std::os::unix::fs::symlink(outside.path().join(".env"), root_dir.join("home/guest/.aws/credentials"))
        .unwrap();
    std::os::unix::fs::symlink(
        "../../../../../../..".to_string() + &outside.path().display().to_string(),
        root_dir.join("srv/linkdir"),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path().join(".env"), root_dir.join("opt-env")).unwrap();
    std::fs::create_dir_all(root_dir.join("opt/app")).unwrap();
    std::os::unix::fs::symlink(outside.path().join(".env"), root_dir.join("opt/app/.env")).unwrap();

    let root = HostRoot::new(&root_dir).unwrap();
    let (report, problems) =
        guestward_core::testing::within(Duration::from_secs(60), "the access scan", move || {
            guestward_access::scan(&Config::default(), &root)
        });

    // Accounts: login shells only, plus the UID 0 ones; states from shadow.
    let accounts: Vec<(&str, PasswordState)> =
        report.accounts.iter().map(|a| (a.name.as_str(), a.password)).collect();
    assert_eq!(
        accounts,
        [
            ("root", PasswordState::Set),
            ("toor", PasswordState::Locked),
            ("alice", PasswordState::Set),
            ("guest", PasswordState::Empty),
            ("deploy", PasswordState::Locked),
        ]
    );
    assert_eq!(report.accounts_total, 8);
    assert!(report.shadow_read);

    // sshd: the drop-in's values win, the Match block is reported.
    let sshd = report.sshd.as_ref().unwrap();
    assert_eq!(sshd.password_authentication.value, "yes");
    assert_eq!(
        sshd.password_authentication.set_at.as_ref().unwrap().file,
        "/etc/ssh/sshd_config.d/50-cloud-init.conf"
    );
    assert_eq!(sshd.permit_root_login.value, "yes");
    assert_eq!(sshd.kbd_interactive_authentication.value, "no");
    assert_eq!(sshd.match_blocks.len(), 1);
    assert_eq!(sshd.match_blocks[0].overrides, ["passwordauthentication yes"]);

    // Keys: five valid ones, one broken line reported by number.
    let keys: Vec<(&str, &str, u32, bool)> = report
        .authorized_keys
        .iter()
        .map(|k| (k.user.as_str(), k.key_type.as_str(), k.bits, k.weak.is_some()))
        .collect();
    assert_eq!(
        keys,
        [
            ("alice", "ED25519", 256, false),
            ("alice", "RSA", 4096, false),
            ("alice", "RSA", 1024, true),
            ("deploy", "ECDSA", 384, false),
            ("deploy", "DSA", 1024, true),
        ]
    );
    assert_eq!(report.authorized_keys[1].options.len(), 3);
    assert!(
        problems.iter().any(|p| p.line == Some(3) && p.message.contains("line 3 is not a key")),
        "{problems:?}"
    );

    // sudo: ALL rules and NOPASSWD ones; the .rpmsave file is skipped as sudo skips it.
    let sudo: Vec<(&str, bool, bool)> =
        report.sudo_grants.iter().map(|g| (g.who.as_str(), g.nopasswd, g.all_commands)).collect();
    assert_eq!(
        sudo,
        [("root", false, true), ("%sudo", false, true), ("deploy", true, true), ("alice", true, false)]
    );
    assert_eq!(
        report.sudoers_files,
        ["/etc/sudoers", "/etc/sudoers.d/90-cloud-init-users", "/etc/sudoers.d/README"]
    );

    // Cloud keys: masked, from every kind of place; nothing from outside the root.
    let creds: Vec<(CredentialSource, &str, KeyKind, bool)> = report
        .cloud_credentials
        .iter()
        .map(|c| (c.source, c.key_id.as_str(), c.kind, c.secret_present))
        .collect();
    assert_eq!(
        creds,
        [
            (CredentialSource::AwsCredentialsFile, "AKIA…MPLE", KeyKind::LongTerm, true),
            (CredentialSource::EnvFile, "AKIA…MPLE", KeyKind::LongTerm, true),
            (CredentialSource::SystemdEnvironment, "ASIA…DFGH", KeyKind::Temporary, true),
            (CredentialSource::SystemdEnvironmentFile, "AKIA…ID99", KeyKind::LongTerm, true),
        ]
    );
    let json = serde_json::to_string(&report).unwrap() + &format!("{report:?}{problems:?}");
    for secret in [
        "wJalrXUtnFEMI",
        "je7MtGbClwBF",
        "Zm9vYmFyYmF6",
        "Kq3vT9xYbN2m",
        "fBan08iLKDc80Ws5",
        "Fx7qZ2mN",
        "AKIAIOSFODNN7EXAMPLE",
        "AKIAOUTSIDE",
    ] {
        assert!(!json.contains(secret), "{secret} leaked");
    }
    assert!(problems.iter().any(|p| p.message.contains("fifo")), "the FIFO is named: {problems:?}");

    let findings = guestward_access::findings(&report);
    let ids: std::collections::BTreeSet<&str> = findings.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(
        ids,
        guestward_access::FINDING_IDS
            .iter()
            .copied()
            .filter(|id| *id != guestward_access::SSH_EMPTY_PASSWORDS)
            .collect()
    );
}

#[test]
fn caps_are_reported_as_truncation() {
    let tree = fixture_copy();
    let root = HostRoot::new(tree.path()).unwrap();
    let config =
        Config { max_accounts: 2, max_authorized_keys: 1, env_file_max_entries: 3, ..Config::default() };
    let (report, problems) = guestward_access::scan(&config, &root);
    let what: Vec<&str> = report.truncated.iter().map(|t| t.what.as_str()).collect();
    assert!(what.contains(&"accounts") && what.contains(&"env_file_search"), "{what:?}");
    assert!(report.authorized_keys.len() <= 1);
    assert!(problems.iter().filter(|p| p.code == "limit_reached").count() >= 2, "{problems:?}");
}
