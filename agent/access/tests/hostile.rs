//! Trees written to cost the scan or to hide something from it (found by adversarial
//! testing): what any local user can plant stays bounded, and never hides what others have.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use guestward_access::Config;
use guestward_core::HostRoot;
use std::path::Path;

const ED25519: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBlUKEuDteyAGGDBXIiLSnTX6wR50tDZrTOpMeIvMNz8 alice@laptop";

/// Writes `text` at host path `path` under `root`, making the directories.
fn write(root: &Path, path: &str, text: &str) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// `/etc/passwd` with root and the given login accounts (home `/home/NAME`).
fn passwd(root: &Path, users: &[&str]) {
    let mut text = String::from("root:x:0:0:root:/root:/bin/bash\n");
    for (i, u) in users.iter().enumerate() {
        text.push_str(&format!("{u}:x:{}:{}::/home/{u}:/bin/bash\n", 1000 + i, 1000 + i));
    }
    write(root, "/etc/passwd", &text);
}

#[test]
fn authorized_keys_of_many_users_linked_to_one_file_of_bad_lines_is_one_problem() {
    // 20 users whose authorized_keys link to one file of 500,000 lines `x` once made 10
    // million problems (2.46 GB). Here 100,000 lines, a key among them, and a hard link too.
    let dir = tempfile::tempdir().unwrap();
    let users: Vec<String> = (0..20).map(|i| format!("u{i:02}")).collect();
    passwd(dir.path(), &users.iter().map(String::as_str).collect::<Vec<_>>());
    let text = "x\n".repeat(4) + ED25519 + "\n" + &"x\n".repeat(100_000);
    write(dir.path(), "/srv/keys", &text);
    for u in &users[1..] {
        std::fs::create_dir_all(dir.path().join(format!("home/{u}/.ssh"))).unwrap();
        std::os::unix::fs::symlink("/srv/keys", dir.path().join(format!("home/{u}/.ssh/authorized_keys")))
            .unwrap();
    }
    std::fs::create_dir_all(dir.path().join("home/u00/.ssh")).unwrap();
    std::fs::hard_link(dir.path().join("srv/keys"), dir.path().join("home/u00/.ssh/authorized_keys2"))
        .unwrap();

    let (report, problems) = guestward_access::scan(&Config::default(), &HostRoot::new(dir.path()).unwrap());
    assert_eq!(report.authorized_keys_files, ["/home/u00/.ssh/authorized_keys2"]);
    assert_eq!(report.authorized_keys.len(), 1);
    assert_eq!(report.authorized_keys[0].user, "u00");
    let bad: Vec<_> = problems.iter().filter(|p| p.code == "malformed").collect();
    assert_eq!(bad.len(), 1, "{problems:#?}");
    assert_eq!(bad[0].line, Some(1));
    assert!(
        bad[0].message.ends_with("100004 lines are not keys sshd would accept, first at line 1; skipped"),
        "{bad:?}"
    );
    assert!(problems.len() <= 2, "{problems:#?}");
}

#[test]
fn keys_are_capped_per_file_so_one_user_cannot_hide_the_next() {
    let dir = tempfile::tempdir().unwrap();
    passwd(dir.path(), &["eve", "bob"]);
    write(dir.path(), "/home/eve/.ssh/authorized_keys", &(ED25519.to_string() + "\n").repeat(1_005));
    write(dir.path(), "/home/bob/.ssh/authorized_keys", &format!("{ED25519}\n"));
    // eve's 1,005 keys would have used up a cap of 1,002 and hidden bob's key.
    let config = Config { max_authorized_keys: 1_002, ..Config::default() };
    let (report, problems) = guestward_access::scan(&config, &HostRoot::new(dir.path()).unwrap());
    let eve = report.authorized_keys.iter().filter(|k| k.user == "eve").count();
    let bob = report.authorized_keys.iter().filter(|k| k.user == "bob").count();
    assert_eq!((eve, bob), (1_000, 1));
    let what: Vec<&str> = report.truncated.iter().map(|t| t.what.as_str()).collect();
    assert_eq!(what, ["authorized_keys_per_file"]);
    let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert!(
        messages[0].ends_with(
            "/home/eve/.ssh/authorized_keys: more than 1000 keys in one file; 5 more were not listed"
        ),
        "{messages:#?}"
    );

    // The total cap counts what it left out.
    let config = Config { max_authorized_keys: 10, ..Config::default() };
    let (report, problems) = guestward_access::scan(&config, &HostRoot::new(dir.path()).unwrap());
    assert_eq!(report.authorized_keys.len(), 10);
    let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "more than 10 authorized keys; 995 more keys and 1 more file not listed (access.max_authorized_keys)"
        ]
    );
}

#[test]
fn one_users_files_do_not_use_up_the_env_search_before_other_roots() {
    // 60,000 files in /home/evil once used the whole budget: the key in /root/.env was never
    // found. Here 5,000 files against a budget of 1,000, and a second home after evil's.
    let dir = tempfile::tempdir().unwrap();
    passwd(dir.path(), &["evil", "zoe"]);
    let evil = dir.path().join("home/evil");
    std::fs::create_dir_all(&evil).unwrap();
    for i in 0..5_000 {
        std::fs::write(evil.join(format!("f{i:05}")), "").unwrap();
    }
    let places = ["/root/.env", "/opt/app/.env", "/srv/api/.env", "/var/www/site/.env", "/home/zoe/app/.env"];
    for (i, place) in places.iter().enumerate() {
        write(dir.path(), place, &format!("AWS_ACCESS_KEY_ID=AKIAHIDDENKEY{i:07}\n"));
    }
    let config = Config { env_file_max_entries: 1_000, ..Config::default() };
    let (report, problems) = guestward_access::scan(&config, &HostRoot::new(dir.path()).unwrap());
    let mut found: Vec<&str> = report.cloud_credentials.iter().map(|c| c.at.file.as_str()).collect();
    found.sort_unstable();
    let mut expected = places.to_vec();
    expected.sort_unstable();
    assert_eq!(found, expected, "{problems:#?}");
    // evil's directory is where the budget ran out, and the report says so.
    assert_eq!(report.truncated.iter().map(|t| t.what.as_str()).collect::<Vec<_>>(), ["env_file_search"]);
    let cut: Vec<&str> =
        problems.iter().filter(|p| p.code == "limit_reached").map(|p| p.message.as_str()).collect();
    assert_eq!(cut.len(), 1, "{problems:#?}");
    assert!(cut[0].contains("in 1 directory, the first /home/evil;"), "{cut:?}");
}

#[test]
fn a_second_shadow_entry_does_not_hide_roots_empty_password() {
    // glibc (getent shadow root) uses the first entry: root has no password. Once reported as
    // locked, with no finding.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "/etc/passwd", "root:x:0:0:root:/root:/bin/bash\n");
    write(dir.path(), "/etc/shadow", "root::19000:0:99999:7:::\nroot:*:19000:0:99999:7:::\n");
    let root = HostRoot::new(dir.path()).unwrap();
    let (report, problems) = guestward_access::scan(&Config::default(), &root);
    assert_eq!(report.accounts[0].password, guestward_access::PasswordState::Empty);
    let ids: Vec<String> = guestward_access::findings(&report).into_iter().map(|f| f.id).collect();
    assert!(ids.iter().any(|id| id == guestward_access::EMPTY_PASSWORD), "{ids:?}");
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!((problems[0].code.as_str(), problems[0].line), ("duplicate", Some(2)));
    assert_eq!(problems[0].path.as_deref(), Some(root.display("/etc/shadow").as_str()));
}

#[test]
fn names_that_are_not_utf8_are_read_and_shown_escaped() {
    // Names once made lossy (`bob\u{fffd}`) named files that do not exist: all three of these
    // were silently missed.
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let at = |parent: &str, name: &[u8]| {
        let p = dir.path().join(parent.trim_start_matches('/'));
        std::fs::create_dir_all(&p).unwrap();
        p.join(OsStr::from_bytes(name))
    };
    passwd(dir.path(), &[]);
    write(dir.path(), "/etc/sudoers", "#includedir /etc/sudoers.d\n");
    std::fs::write(at("/etc/sudoers.d", b"bob\xff"), "bob ALL=(ALL) NOPASSWD: ALL\n").unwrap();
    write(
        dir.path(),
        "/etc/ssh/sshd_config",
        "Include /etc/ssh/sshd_config.d/*.conf\nPasswordAuthentication no\n",
    );
    std::fs::write(at("/etc/ssh/sshd_config.d", b"\xff.conf"), "PasswordAuthentication yes\n").unwrap();
    let app = at("/home", b"app\xff");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join(".env"), "AWS_ACCESS_KEY_ID=AKIANOTUTF8NAME00001\n").unwrap();

    let (report, problems) = guestward_access::scan(&Config::default(), &HostRoot::new(dir.path()).unwrap());
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(report.sudoers_files, ["/etc/sudoers", "/etc/sudoers.d/bob\\xff"]);
    assert_eq!(report.sudo_grants.len(), 1);
    assert_eq!(report.sudo_grants[0].at.file, "/etc/sudoers.d/bob\\xff");
    let sshd = report.sshd.unwrap();
    assert_eq!(sshd.password_authentication.value, "yes");
    assert_eq!(sshd.password_authentication.set_at.unwrap().file, "/etc/ssh/sshd_config.d/\\xff.conf");
    let files: Vec<&str> = report.cloud_credentials.iter().map(|c| c.at.file.as_str()).collect();
    assert_eq!(files, ["/home/app\\xff/.env"]);
}

#[test]
fn a_home_named_with_bytes_that_are_not_utf8_is_still_searched_for_keys() {
    // sshd takes the home from passwd as bytes: `/home/\xff` is a real directory, and its keys
    // let whoever holds them log in. Read lossily, the home became `/home/\u{fffd}`, which does
    // not exist, and the keys were never listed.
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let mut text =
        b"root:x:0:0:root:/root:/bin/bash\nmal\xfflory:x:1000:1000::/home/\xff:/bin/bash\n".to_vec();
    text.extend_from_slice(b"bob:x:1001:1001::/home/bob:/bin/bash\n");
    std::fs::create_dir_all(dir.path().join("etc")).unwrap();
    std::fs::write(dir.path().join("etc/passwd"), &text).unwrap();
    std::fs::write(dir.path().join("etc/shadow"), b"root:*:1::::::\nmal\xfflory::1::::::\nbob:*:1::::::\n")
        .unwrap();
    let home = dir.path().join("home").join(std::ffi::OsStr::from_bytes(b"\xff"));
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(home.join(".ssh/authorized_keys"), format!("{ED25519}\n")).unwrap();
    write(dir.path(), "/home/bob/.ssh/authorized_keys", &format!("{ED25519}\n"));

    let (report, problems) = guestward_access::scan(&Config::default(), &HostRoot::new(dir.path()).unwrap());
    assert!(problems.is_empty(), "{problems:#?}");
    let users: Vec<&str> = report.authorized_keys.iter().map(|k| k.user.as_str()).collect();
    assert_eq!(users, ["mal\u{fffd}lory", "bob"]);
    assert_eq!(
        report.authorized_keys_files,
        ["/home/\u{fffd}/.ssh/authorized_keys", "/home/bob/.ssh/authorized_keys"]
    );
    // The shadow entry is found by the name's bytes: an empty password, not "no shadow entry".
    let mallory = report.accounts.iter().find(|a| a.uid == 1000).unwrap();
    assert_eq!((mallory.name.as_str(), mallory.home.as_str()), ("mal\u{fffd}lory", "/home/\u{fffd}"));
    assert_eq!(mallory.password, guestward_access::PasswordState::Empty, "{mallory:?}");
}
