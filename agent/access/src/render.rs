//! The human views: a summary for `scan` and `agentctl report`, the full table for
//! `agentctl access`. Callers write through `TerminalSafe`; names and comments come from
//! scanned files and are escaped here too so column widths count what is shown.

use crate::model::{AccessReport, PasswordState, SshdValue};
use guestward_core::text::escape_control;
use std::io::Write;

fn value(v: &SshdValue) -> String {
    match &v.set_at {
        Some(at) => format!("{} ({at})", v.value),
        None => format!("{} (default)", v.value),
    }
}

fn account_line(r: &AccessReport) -> String {
    let login: Vec<String> =
        r.accounts.iter().filter(|a| a.can_login).map(|a| escape_control(&a.name).into_owned()).collect();
    let shown = match login.len() {
        0 => String::new(),
        1..=8 => format!(" ({})", login.join(", ")),
        _ => format!(" ({}, ...)", login[..8].join(", ")),
    };
    let mut line = format!("{} of {} accounts can log in{shown}", login.len(), r.accounts_total);
    let uid0: Vec<&str> = r.accounts.iter().filter(|a| a.uid == 0).map(|a| a.name.as_str()).collect();
    if uid0.len() > 1 {
        line.push_str(&format!("; UID 0: {}", escape_control(&uid0.join(", "))));
    }
    if !r.shadow_read {
        line.push_str("; password states unknown (/etc/shadow not read)");
    }
    line
}

/// A few lines for the scan summary.
pub fn render_summary(r: &AccessReport, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "  accounts: {}", account_line(r))?;
    match &r.sshd {
        Some(s) => writeln!(
            out,
            "  sshd: PasswordAuthentication {}, PermitRootLogin {}, PermitEmptyPasswords {}, KbdInteractiveAuthentication {}{}",
            s.password_authentication.value,
            s.permit_root_login.value,
            s.permit_empty_passwords.value,
            s.kbd_interactive_authentication.value,
            if s.match_blocks.is_empty() {
                String::new()
            } else {
                format!("; {} Match block(s) not evaluated", s.match_blocks.len())
            }
        )?,
        None => writeln!(out, "  sshd: no /etc/ssh/sshd_config")?,
    }
    let weak = r.authorized_keys.iter().filter(|k| k.weak.is_some()).count();
    writeln!(
        out,
        "  authorized keys: {} in {} file(s){}",
        r.authorized_keys.len(),
        r.authorized_keys_files.len(),
        if weak > 0 { format!(", {weak} weak") } else { String::new() }
    )?;
    let nopasswd = r.sudo_grants.iter().filter(|g| g.nopasswd).count();
    writeln!(
        out,
        "  sudo: {} grant(s) of ALL or without a password, {nopasswd} without a password",
        r.sudo_grants.len()
    )?;
    writeln!(out, "  static cloud keys: {}", r.cloud_credentials.len())?;
    for t in &r.truncated {
        writeln!(out, "  truncated: {} (limit {})", t.what, t.limit)?;
    }
    Ok(())
}

/// Everything, for `agentctl access`.
pub fn render_table(r: &AccessReport, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "ACCOUNTS: {}", account_line(r))?;
    writeln!(out, "  {:<16} {:>6}  {:<24} {:<16} HOME", "USER", "UID", "SHELL", "PASSWORD")?;
    for a in &r.accounts {
        let password = match a.password {
            PasswordState::Unknown => "unknown",
            other => other.as_str(),
        };
        writeln!(
            out,
            "  {:<16} {:>6}  {:<24} {:<16} {}",
            escape_control(&a.name),
            a.uid,
            escape_control(&a.shell),
            password,
            escape_control(&a.home)
        )?;
    }
    writeln!(out)?;
    match &r.sshd {
        Some(s) => {
            writeln!(out, "SSHD (outside Match blocks; {} file(s) read):", s.files.len())?;
            writeln!(out, "  PasswordAuthentication        {}", value(&s.password_authentication))?;
            writeln!(out, "  PermitRootLogin               {}", value(&s.permit_root_login))?;
            writeln!(out, "  PermitEmptyPasswords          {}", value(&s.permit_empty_passwords))?;
            writeln!(out, "  KbdInteractiveAuthentication  {}", value(&s.kbd_interactive_authentication))?;
            writeln!(out, "  PubkeyAuthentication          {}", value(&s.pubkey_authentication))?;
            writeln!(
                out,
                "  AuthorizedKeysFile            {}",
                escape_control(&s.authorized_keys_file.join(" "))
            )?;
            for m in &s.match_blocks {
                writeln!(
                    out,
                    "  Match {} at {} (not evaluated){}",
                    escape_control(&m.criteria),
                    m.at,
                    if m.overrides.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", escape_control(&m.overrides.join("; ")))
                    }
                )?;
            }
        }
        None => writeln!(out, "SSHD: no /etc/ssh/sshd_config")?,
    }
    writeln!(out)?;
    writeln!(out, "AUTHORIZED KEYS: {}", r.authorized_keys.len())?;
    for k in &r.authorized_keys {
        writeln!(
            out,
            "  {:<12} {:<10} {:>5}  {}  {}{}",
            escape_control(&k.user),
            k.key_type,
            k.bits,
            k.fingerprint,
            escape_control(&k.comment),
            if k.weak.is_some() { "  WEAK" } else { "" }
        )?;
        writeln!(out, "  {:<12} at {}", "", escape_control(&k.at.to_string()))?;
        if !k.options.is_empty() {
            writeln!(out, "  {:<12} options {}", "", escape_control(&k.options.join(",")))?;
        }
    }
    writeln!(out)?;
    writeln!(out, "SUDO (grants of ALL or without a password): {}", r.sudo_grants.len())?;
    for g in &r.sudo_grants {
        let what = if g.defaults_no_authenticate {
            "Defaults !authenticate".to_string()
        } else {
            format!(
                "{}{}{}",
                g.runas.as_ref().map(|r| format!("({r}) ")).unwrap_or_default(),
                if g.nopasswd { "NOPASSWD: " } else { "" },
                g.commands.join(", ")
            )
        };
        writeln!(
            out,
            "  {:<16} {}  at {}",
            escape_control(&g.who),
            escape_control(&what),
            escape_control(&g.at.to_string())
        )?;
    }
    writeln!(out)?;
    writeln!(out, "STATIC CLOUD KEYS: {}", r.cloud_credentials.len())?;
    for c in &r.cloud_credentials {
        let source = serde_json::to_value(c.source)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        writeln!(
            out,
            "  {}  {:<20} {:<26} at {}{}",
            c.key_id,
            escape_control(&c.name),
            source,
            escape_control(&c.at.to_string()),
            c.unit.as_ref().map(|u| format!(" (unit {})", escape_control(u))).unwrap_or_default()
        )?;
    }
    for t in &r.truncated {
        writeln!(out, "truncated: {} (limit {})", t.what, t.limit)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Account, PasswordState};

    fn account(name: &str, uid: u32, can_login: bool) -> Account {
        Account {
            name: name.to_string(),
            uid,
            gid: uid,
            home: format!("/home/{name}"),
            shell: if can_login { "/bin/bash" } else { "/usr/sbin/nologin" }.to_string(),
            can_login,
            password: PasswordState::Locked,
        }
    }

    #[test]
    fn the_account_line_names_who_can_log_in_and_nothing_when_nobody_can() {
        let mut r = AccessReport { shadow_read: true, ..AccessReport::default() };
        assert_eq!(account_line(&r), "0 of 0 accounts can log in");
        r.accounts = vec![account("root", 0, true), account("daemon", 1, false), account("ann", 1000, true)];
        r.accounts_total = 3;
        assert_eq!(account_line(&r), "2 of 3 accounts can log in (root, ann)");
        r.accounts = (0..10).map(|i| account(&format!("u{i}"), 1000 + i, true)).collect();
        r.accounts_total = 10;
        assert_eq!(account_line(&r), "10 of 10 accounts can log in (u0, u1, u2, u3, u4, u5, u6, u7, ...)");
    }
}
