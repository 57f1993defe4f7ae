//! Findings drawn from an [`AccessReport`]. Evidence names files, lines, users and masked key
//! ids; never a password hash or a secret (the report holds none).

use crate::model::{AccessReport, KeyKind, PasswordState, SshdSettings};
use guestward_core::{Finding, Severity};
use serde_json::json;

/// Rule id: an account other than root has UID 0.
pub const UID0_NOT_ROOT: &str = "GW-ACCESS-001";
/// Rule id: an account that can log in has an empty password.
pub const EMPTY_PASSWORD: &str = "GW-ACCESS-002";
/// Rule id: sshd lets root log in with a password (`PermitRootLogin yes`).
pub const SSH_ROOT_PASSWORD_LOGIN: &str = "GW-ACCESS-003";
/// Rule id: sshd accepts passwords (`PasswordAuthentication` or `KbdInteractiveAuthentication`).
pub const SSH_PASSWORD_AUTH: &str = "GW-ACCESS-004";
/// Rule id: sshd permits empty passwords.
pub const SSH_EMPTY_PASSWORDS: &str = "GW-ACCESS-005";
/// Rule id: a weak key (DSA, RSA below 2048 bits) is authorized.
pub const WEAK_AUTHORIZED_KEY: &str = "GW-ACCESS-006";
/// Rule id: sudo without a password.
pub const SUDO_NOPASSWD: &str = "GW-ACCESS-007";
/// Rule id: a static AWS access key on disk.
pub const STATIC_CLOUD_KEY: &str = "GW-ACCESS-008";

/// Every finding id this crate can raise (the finding catalogue checks it is complete).
pub const FINDING_IDS: &[&str] = &[
    UID0_NOT_ROOT,
    EMPTY_PASSWORD,
    SSH_ROOT_PASSWORD_LOGIN,
    SSH_PASSWORD_AUTH,
    SSH_EMPTY_PASSWORDS,
    WEAK_AUTHORIZED_KEY,
    SUDO_NOPASSWD,
    STATIC_CLOUD_KEY,
];

const SOURCE: &str = "access";

fn finding(
    id: &str,
    severity: Severity,
    title: String,
    evidence: serde_json::Value,
    remediation: &str,
) -> Finding {
    Finding {
        id: id.to_string(),
        severity,
        title,
        evidence,
        remediation: remediation.to_string(),
        source: SOURCE.to_string(),
    }
}

fn is_yes(v: &crate::model::SshdValue) -> bool {
    v.value == "yes"
}

/// Whether sshd lets an account with an empty password in without any credential.
fn sshd_allows_empty(sshd: Option<&SshdSettings>) -> bool {
    sshd.is_some_and(|s| {
        is_yes(&s.permit_empty_passwords)
            && (is_yes(&s.password_authentication) || is_yes(&s.kbd_interactive_authentication))
    })
}

/// All findings for `report`.
pub fn findings(report: &AccessReport) -> Vec<Finding> {
    let mut out = Vec::new();
    for a in report.accounts.iter().filter(|a| a.uid == 0 && a.name != "root") {
        out.push(finding(
            UID0_NOT_ROOT,
            Severity::High,
            format!("account {} has UID 0 (root's powers under another name)", a.name),
            json!({ "user": a.name, "uid": a.uid, "shell": a.shell, "path": "/etc/passwd" }),
            "Give the account its own UID (usermod -u) or remove it (userdel) if nobody knows why it exists; \
             administrators should use sudo from their own accounts.",
        ));
    }
    let empty_open = sshd_allows_empty(report.sshd.as_ref());
    for a in report.accounts.iter().filter(|a| a.can_login && a.password == PasswordState::Empty) {
        out.push(finding(
            EMPTY_PASSWORD,
            if empty_open { Severity::Critical } else { Severity::High },
            format!("account {} can log in and has an empty password", a.name),
            json!({ "user": a.name, "uid": a.uid, "shell": a.shell, "path": "/etc/shadow",
                    "sshd_permits_empty_passwords": empty_open }),
            "Lock the password (passwd -l USER) or set one; accounts that log in with keys need no password.",
        ));
    }
    if let Some(sshd) = &report.sshd {
        let at = |v: &crate::model::SshdValue| v.set_at.as_ref().map(|l| l.file.clone());
        let line = |v: &crate::model::SshdValue| v.set_at.as_ref().map(|l| l.line);
        if sshd.permit_root_login.value == "yes" {
            out.push(finding(
                SSH_ROOT_PASSWORD_LOGIN,
                Severity::High,
                "sshd lets root log in with a password (PermitRootLogin yes)".to_string(),
                json!({ "setting": "PermitRootLogin", "value": "yes", "path": at(&sshd.permit_root_login),
                        "line": line(&sshd.permit_root_login) }),
                "Set PermitRootLogin prohibit-password (or no) in /etc/ssh/sshd_config, check with sshd -T, \
                 then reload sshd.",
            ));
        }
        let mut password = Vec::new();
        for (name, v) in [
            ("PasswordAuthentication", &sshd.password_authentication),
            ("KbdInteractiveAuthentication", &sshd.kbd_interactive_authentication),
        ] {
            if is_yes(v) {
                password.push(json!({ "setting": name, "value": "yes", "path": at(v), "line": line(v) }));
            }
        }
        if !password.is_empty() {
            let names: Vec<&str> =
                password.iter().filter_map(|p| p.get("setting").and_then(|s| s.as_str())).collect();
            out.push(finding(
                SSH_PASSWORD_AUTH,
                Severity::Medium,
                format!("sshd accepts passwords ({} yes)", names.join(", ")),
                {
                    // Where the first of them is set (or the main file, for built-in defaults).
                    let set = [&sshd.password_authentication, &sshd.kbd_interactive_authentication]
                        .into_iter()
                        .filter(|v| is_yes(v))
                        .find_map(|v| v.set_at.as_ref());
                    match set {
                        Some(l) => json!({ "settings": password, "path": l.file, "line": l.line }),
                        None => json!({ "settings": password, "path": sshd.files.first() }),
                    }
                },
                "Set PasswordAuthentication no and KbdInteractiveAuthentication no (after every user who needs \
                 it has a key), check with sshd -T, then reload sshd.",
            ));
        }
        if is_yes(&sshd.permit_empty_passwords) {
            out.push(finding(
                SSH_EMPTY_PASSWORDS,
                Severity::High,
                "sshd permits empty passwords (PermitEmptyPasswords yes)".to_string(),
                json!({ "setting": "PermitEmptyPasswords", "value": "yes", "path": at(&sshd.permit_empty_passwords),
                        "line": line(&sshd.permit_empty_passwords) }),
                "Set PermitEmptyPasswords no in /etc/ssh/sshd_config, check with sshd -T, then reload sshd.",
            ));
        }
    }
    for k in report.authorized_keys.iter().filter(|k| k.weak.is_some()) {
        out.push(finding(
            WEAK_AUTHORIZED_KEY,
            Severity::Medium,
            format!("weak SSH key authorized for {}: {} {} bits ({})", k.user, k.key_type, k.bits, k.comment),
            json!({ "user": k.user, "path": k.at.file, "line": k.at.line, "key_type": k.key_type,
                    "bits": k.bits, "fingerprint": k.fingerprint, "comment": k.comment, "why": k.weak }),
            "Replace the key with an Ed25519 key (ssh-keygen -t ed25519) and remove this line from the file.",
        ));
    }
    for g in report.sudo_grants.iter().filter(|g| g.nopasswd) {
        let severity =
            if g.all_commands || g.defaults_no_authenticate { Severity::High } else { Severity::Low };
        let what = if g.defaults_no_authenticate {
            "Defaults !authenticate".to_string()
        } else if g.all_commands {
            "NOPASSWD: ALL".to_string()
        } else {
            format!("NOPASSWD: {}", g.commands.join(", "))
        };
        out.push(finding(
            SUDO_NOPASSWD,
            severity,
            format!("sudo without a password for {}: {what}", g.who),
            json!({ "who": g.who, "path": g.at.file, "line": g.at.line, "runas": g.runas,
                    "commands": g.commands, "all_commands": g.all_commands,
                    "defaults_no_authenticate": g.defaults_no_authenticate }),
            "Remove NOPASSWD (edit with visudo -f FILE) or narrow it to the few commands that must run \
             unattended; anyone who takes over the account is otherwise root at once.",
        ));
    }
    for c in &report.cloud_credentials {
        let severity = match c.kind {
            KeyKind::LongTerm => Severity::High,
            KeyKind::Temporary | KeyKind::Unknown => Severity::Medium,
        };
        out.push(finding(
            STATIC_CLOUD_KEY,
            severity,
            format!("static AWS access key {} on disk ({})", c.key_id, c.name),
            json!({ "path": c.at.file, "line": c.at.line, "name": c.name, "key_id": c.key_id,
                    "kind": c.kind, "source": c.source, "secret_present": c.secret_present, "unit": c.unit }),
            "Use the instance's IAM role instead (the SDKs and the CLI find it through instance metadata), \
             deactivate and delete this key in IAM, and remove it from the file.",
        ));
    }
    out
}
