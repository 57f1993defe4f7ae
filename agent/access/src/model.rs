//! The `access` section: who can log in, how, and with what.
//!
//! Nothing here ever holds a secret: password hashes are reduced to a [`PasswordState`] while
//! `/etc/shadow` is parsed, and AWS secret keys are only noted as present. Access key ids are
//! kept masked ([`mask_key_id`]).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Everything the access collector found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AccessReport {
    /// Accounts that can log in (a shell other than nologin/false) and every UID 0 account,
    /// in `/etc/passwd` order.
    pub accounts: Vec<Account>,
    /// Lines in `/etc/passwd` (every account, including those that cannot log in).
    pub accounts_total: u32,
    /// Whether `/etc/shadow` could be read (password states are `unknown` when not).
    pub shadow_read: bool,
    /// The effective sshd settings; absent when the host has no `/etc/ssh/sshd_config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sshd: Option<SshdSettings>,
    /// Every key in every `authorized_keys` file of every account.
    pub authorized_keys: Vec<AuthorizedKey>,
    /// The `authorized_keys` files read (host paths).
    pub authorized_keys_files: Vec<String>,
    /// `NOPASSWD` grants, grants of all commands, and `Defaults !authenticate`.
    pub sudo_grants: Vec<SudoGrant>,
    /// The sudoers files read, in the order sudo reads them.
    pub sudoers_files: Vec<String>,
    /// Static cloud credentials found on disk (key ids masked, never the secret).
    pub cloud_credentials: Vec<CloudCredential>,
    /// Where a bound stopped the collection (the report is then incomplete there).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub truncated: Vec<Truncation>,
}

/// One account from `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Account {
    /// User name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
    /// Login shell (empty in passwd means `/bin/sh`).
    pub shell: String,
    /// Whether the shell lets the account log in (not nologin or false).
    pub can_login: bool,
    /// The password's state (never the hash).
    pub password: PasswordState,
}

/// What `/etc/shadow` (or passwd's own field) says about an account's password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PasswordState {
    /// A password hash is set: the account can log in with a password where allowed.
    Set,
    /// The field is empty: no password at all (anyone can log in where empty passwords are
    /// permitted, e.g. on the console).
    Empty,
    /// Locked (`!` or `*` prefix): no password login.
    Locked,
    /// The account has no shadow entry.
    NoShadowEntry,
    /// `/etc/shadow` could not be read (not root).
    Unknown,
}

impl PasswordState {
    /// The name used in JSON and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Set => "set",
            Self::Empty => "empty",
            Self::Locked => "locked",
            Self::NoShadowEntry => "no_shadow_entry",
            Self::Unknown => "unknown",
        }
    }
}

/// A place in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Location {
    /// The file (host path).
    pub file: String,
    /// 1-based line.
    pub line: u32,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One effective sshd setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SshdValue {
    /// The value as `sshd -T` prints it (`yes`, `no`, `without-password`...).
    pub value: String,
    /// Where it was set; absent when it is OpenSSH's built-in default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_at: Option<Location>,
}

/// The sshd settings that decide who can log in and how, as sshd applies them outside any
/// `Match` block (first value wins, `Include` expanded in place).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SshdSettings {
    /// The configuration files read, in order (`sshd_config`, then each included file where
    /// its `Include` stands).
    pub files: Vec<String>,
    /// `PasswordAuthentication`.
    pub password_authentication: SshdValue,
    /// `PermitRootLogin` (`without-password` is what `sshd -T` prints for `prohibit-password`).
    pub permit_root_login: SshdValue,
    /// `PermitEmptyPasswords`.
    pub permit_empty_passwords: SshdValue,
    /// `KbdInteractiveAuthentication` (or its old name `ChallengeResponseAuthentication`).
    pub kbd_interactive_authentication: SshdValue,
    /// `PubkeyAuthentication`.
    pub pubkey_authentication: SshdValue,
    /// `AuthorizedKeysFile`: patterns with `%h`, `%u`, `%U`, `%%`; relative ones are relative
    /// to the home directory; `none` means no file.
    pub authorized_keys_file: Vec<String>,
    /// `Match` blocks: not evaluated (they depend on the connecting user and address); their
    /// settings are not part of the values above.
    pub match_blocks: Vec<MatchBlock>,
}

/// A `Match` block whose settings were not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MatchBlock {
    /// Where the `Match` line is.
    pub at: Location,
    /// Its criteria (`User deploy`, `Address 10.0.0.0/8`...).
    pub criteria: String,
    /// Of the settings above, those it sets (lowercase keywords with their values), so a
    /// reader sees e.g. `passwordauthentication yes` for some users.
    pub overrides: Vec<String>,
}

/// One key of an `authorized_keys` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuthorizedKey {
    /// The account whose file it is.
    pub user: String,
    /// Where it is.
    pub at: Location,
    /// The key type as `ssh-keygen -l` names it: `RSA`, `DSA`, `ECDSA`, `ED25519`,
    /// `ECDSA-SK`, `ED25519-SK`, or the algorithm name for others.
    pub key_type: String,
    /// The SSH algorithm name (`ssh-rsa`, `ssh-ed25519`...).
    pub algorithm: String,
    /// Size in bits, as `ssh-keygen -l` prints it.
    pub bits: u32,
    /// `SHA256:` and the unpadded base64 digest, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The comment (often `user@host`).
    pub comment: String,
    /// Options before the key (`from="..."`, `command="..."`, `no-pty`...).
    pub options: Vec<String>,
    /// Why the key is weak (DSA, RSA below 2048 bits), if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weak: Option<String>,
}

/// A sudo rule worth knowing about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SudoGrant {
    /// Where the rule is.
    pub at: Location,
    /// Who it applies to (users, `%groups`, aliases), as written.
    pub who: String,
    /// The hosts, as written (usually `ALL`).
    pub hosts: String,
    /// The `(runas)` part, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runas: Option<String>,
    /// The commands (at most 32 listed).
    pub commands: Vec<String>,
    /// Some command needs no password (`NOPASSWD:`, or `Defaults !authenticate`).
    pub nopasswd: bool,
    /// The rule grants every command (`ALL`).
    pub all_commands: bool,
    /// `Defaults ... !authenticate` rather than a user rule.
    #[serde(default)]
    pub defaults_no_authenticate: bool,
}

/// Where a static credential was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CredentialSource {
    /// `~/.aws/credentials`.
    AwsCredentialsFile,
    /// `~/.aws/config`.
    AwsConfigFile,
    /// A `.env` file under a configured root.
    EnvFile,
    /// `Environment=` in a systemd unit or drop-in.
    SystemdEnvironment,
    /// A file named by a unit's `EnvironmentFile=`.
    SystemdEnvironmentFile,
}

/// What kind of AWS access key an id is, from its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// `AKIA`: a long-lived IAM user key (valid until someone deactivates it).
    LongTerm,
    /// `ASIA`: temporary STS credentials (expire, need a session token).
    Temporary,
    /// Anything else.
    Unknown,
}

/// A static cloud credential on disk: where, and which key (masked), never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CloudCredential {
    /// What kind of file it is in.
    pub source: CredentialSource,
    /// Where.
    pub at: Location,
    /// The profile (`[default]`) or variable name (`AWS_ACCESS_KEY_ID`).
    pub name: String,
    /// The key id masked: its first 4 and last 4 characters (`AKIA…MPLE`).
    pub key_id: String,
    /// Long-lived, temporary or unknown, from the prefix.
    pub kind: KeyKind,
    /// Whether a secret access key sits next to it (same profile or file). The secret itself
    /// is never read into the report.
    pub secret_present: bool,
    /// The systemd unit, for `systemd_*` sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// A bound that stopped part of the collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Truncation {
    /// What was cut (`accounts`, `authorized_keys`, `env_walk`...).
    pub what: String,
    /// The bound that was reached.
    pub limit: u64,
}

/// `AKIAIOSFODNN7EXAMPLE` -> `AKIA…MPLE`: enough to find the key in IAM, not enough to use it.
/// Ids shorter than 12 characters are fully masked.
pub fn mask_key_id(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() < 12 {
        return "…".to_string();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

/// The kind of key an (unmasked) id is.
pub fn key_kind(id: &str) -> KeyKind {
    if id.starts_with("AKIA") {
        KeyKind::LongTerm
    } else if id.starts_with("ASIA") {
        KeyKind::Temporary
    } else {
        KeyKind::Unknown
    }
}

/// Whether `s` has the shape of an AWS access key id: a 4-letter prefix (`AKIA`, `ASIA`...)
/// and 16 more upper-case letters or digits.
pub fn looks_like_key_id(s: &str) -> bool {
    s.len() == 20
        && (s.starts_with("AKIA") || s.starts_with("ASIA"))
        && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_keeps_four_and_four() {
        assert_eq!(mask_key_id("AKIAIOSFODNN7EXAMPLE"), "AKIA…MPLE");
        assert_eq!(mask_key_id("short"), "…");
        assert_eq!(key_kind("ASIAXXXXXXXXXXXXXXXX"), KeyKind::Temporary);
        assert!(looks_like_key_id("AKIAIOSFODNN7EXAMPLE"));
        assert!(!looks_like_key_id("AKIAIOSFODNN7EXAMPLe"));
    }
}
