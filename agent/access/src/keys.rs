//! `authorized_keys` lines: options, key, comment; key type, size and fingerprint as
//! `ssh-keygen -l` prints them.
//!
//! Parsing the key blob, the RSA modulus and the fingerprint is ssh-key's (RustCrypto); this
//! module only finds where the options end (sshd's auth2-pubkeyfile.c: the options field ends
//! at the first whitespace outside double quotes) and counts bits of the modulus it returns.

use crate::model::{AuthorizedKey, Location};
use ssh_key::public::KeyData;
use ssh_key::{EcdsaCurve, HashAlg, Mpint, PublicKey};

/// Bits in a positive multi-precision integer (BN_num_bits), as ssh-keygen reports key sizes.
fn mpint_bits(n: &Mpint) -> u32 {
    let bytes = n.as_positive_bytes().unwrap_or(&[]);
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    let bytes = &bytes[skip..];
    match bytes.first() {
        None => 0,
        Some(top) => {
            let whole = u32::try_from(bytes.len()).unwrap_or(u32::MAX / 8).saturating_mul(8);
            whole - top.leading_zeros()
        }
    }
}

/// Type label and size, as `ssh-keygen -l` shows them.
pub(crate) fn type_and_bits(key: &KeyData) -> (String, u32) {
    match key {
        KeyData::Rsa(k) => ("RSA".into(), mpint_bits(k.n())),
        KeyData::Dsa(k) => ("DSA".into(), mpint_bits(k.p())),
        KeyData::Ecdsa(k) => {
            let bits = match k.curve() {
                EcdsaCurve::NistP256 => 256,
                EcdsaCurve::NistP384 => 384,
                EcdsaCurve::NistP521 => 521,
            };
            ("ECDSA".into(), bits)
        }
        KeyData::Ed25519(_) => ("ED25519".into(), 256),
        KeyData::SkEcdsaSha2NistP256(_) => ("ECDSA-SK".into(), 256),
        KeyData::SkEd25519(_) => ("ED25519-SK".into(), 256),
        other => (other.algorithm().as_str().to_ascii_uppercase(), 0),
    }
}

/// Why a key is weak, if it is.
pub(crate) fn weakness(key_type: &str, bits: u32) -> Option<String> {
    match key_type {
        "DSA" => Some(format!(
            "DSA key ({bits} bits): DSA is limited to 1024 bits and disabled by default since OpenSSH 7.0"
        )),
        "RSA" if bits < 2048 => Some(format!("RSA key of {bits} bits, below 2048")),
        _ => None,
    }
}

/// Splits an options field on commas outside double quotes.
fn split_options(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => {
                cur.push(c);
                escaped = true;
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Where the options field ends: the first whitespace outside double quotes.
fn options_end(line: &str) -> usize {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return i,
            _ => {}
        }
    }
    line.len()
}

/// Parses `type base64 [comment]`.
fn parse_key(s: &str) -> Option<(PublicKey, String)> {
    let mut parts = s.trim_start().splitn(3, char::is_whitespace);
    let (algo, blob) = (parts.next()?, parts.next()?);
    let comment = parts.next().unwrap_or("").trim().to_string();
    let key = PublicKey::from_openssh(&format!("{algo} {blob}")).ok()?;
    Some((key, comment))
}

/// One line of an authorized_keys file: `Ok(None)` for blank and comment lines, `Err(())` for
/// a line that holds no key sshd would accept.
#[allow(clippy::result_unit_err)]
pub fn parse_line(user: &str, at: Location, line: &str) -> Result<Option<AuthorizedKey>, ()> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    // As sshd: a key at the start of the line, else options first.
    let (options, (key, comment)) = match parse_key(line) {
        Some(parsed) => (Vec::new(), parsed),
        None => {
            let end = options_end(line);
            let parsed = parse_key(&line[end..]).ok_or(())?;
            (split_options(&line[..end]), parsed)
        }
    };
    let (key_type, bits) = type_and_bits(key.key_data());
    Ok(Some(AuthorizedKey {
        user: user.to_string(),
        at,
        weak: weakness(&key_type, bits),
        algorithm: key.algorithm().as_str().to_string(),
        key_type,
        bits,
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        comment: guestward_core::text::truncate_chars(&comment, 256).into_owned(),
        options: options
            .into_iter()
            .map(|o| guestward_core::text::truncate_chars(&o, 512).into_owned())
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    fn at() -> Location {
        Location { file: "/f".into(), line: 1 }
    }

    #[test]
    fn options_with_quoted_spaces_and_comments_with_spaces() {
        let line =
            format!("from=\"10.0.0.0/8,192.168.1.1\",command=\"echo hi there\",no-pty {ED} deploy key 1");
        let k = parse_line("bob", at(), &line).unwrap().unwrap();
        assert_eq!(k.options, vec!["from=\"10.0.0.0/8,192.168.1.1\"", "command=\"echo hi there\"", "no-pty"]);
        assert_eq!(k.comment, "deploy key 1");
        assert_eq!((k.key_type.as_str(), k.bits), ("ED25519", 256));
        assert!(k.fingerprint.starts_with("SHA256:") && !k.fingerprint.ends_with('='), "{}", k.fingerprint);
        assert_eq!(parse_line("bob", at(), "# x").unwrap(), None);
        assert!(parse_line("bob", at(), "ssh-rsa notbase64").is_err());
    }
}
