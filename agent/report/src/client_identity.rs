//! Who a client certificate names, by the one rule the collector enforces and the agent checks.
//!
//! An agent certificate names its host in a SAN URI `urn:guestward:host:<id>`; the CN is only a
//! fallback, for certificates from a fleet CA that cannot write URIs. An operator certificate has
//! `urn:guestward:operator:<name>`. A certificate with several guestward URIs names nobody: an
//! identity must never be ambiguous.
//!
//! The collector refuses a report whose `agent.host_id` is not the host its certificate names
//! (403). The agent reads its own certificate with this same function, so it can say so in its
//! status and its report (GW-TLS-002) before the collector refuses it, naming both ids: two
//! readings of the rule could only disagree, one of them silently.

use x509_cert::der::asn1::{AnyRef, Ia5StringRef, ObjectIdentifier};
use x509_cert::der::{Decode, Tag, TagNumber, Tagged};

/// Longest host id or operator name: a DNS name's limit, also a safe directory name length.
pub const MAX_NAME_LEN: usize = 253;
/// SAN URI prefix of an agent certificate.
pub const HOST_URN_PREFIX: &str = "urn:guestward:host:";
/// SAN URI prefix of an operator certificate.
pub const OPERATOR_URN_PREFIX: &str = "urn:guestward:operator:";
/// The X.509 attribute type of the subject's common name.
const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
/// The subject alternative name extension (RFC 5280 section 4.2.1.6).
const SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
/// A `GeneralName`'s `uniformResourceIdentifier`: `[6] IMPLICIT IA5String`.
const URI: Tag = Tag::ContextSpecific { constructed: false, number: TagNumber::N6 };

/// What a client may do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// An agent: may post its own host's reports and read its own host.
    Host(String),
    /// An operator: may read every host, may not post.
    Operator(String),
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Host(id) => write!(f, "host {id}"),
            Self::Operator(n) => write!(f, "operator {n}"),
        }
    }
}

/// Where in the certificate the identity was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamedIn {
    /// A guestward SAN URI.
    SanUri,
    /// The subject's CN (no guestward SAN URI).
    CommonName,
}

/// Why a certificate names nobody.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamingError {
    /// Neither a guestward SAN URI nor a CN.
    #[error(
        "the client certificate names no identity (no SAN URI urn:guestward:host:<id> or urn:guestward:operator:<name>, no CN)"
    )]
    NoIdentity,
    /// Several guestward URIs.
    #[error("the client certificate names several guestward identities; refused as ambiguous")]
    Ambiguous,
}

/// The identity `cert` names, and where. The name is returned as written: whether it is a
/// valid host id or operator name is the caller's check.
pub fn named_by(cert: &x509_cert::Certificate) -> Result<(Role, NamedIn), NamingError> {
    let tbs = &cert.tbs_certificate;
    let mut found: Option<Role> = None;
    for uri in san_uris(tbs) {
        let role = if let Some(id) = uri.strip_prefix(HOST_URN_PREFIX) {
            Role::Host(id.to_string())
        } else if let Some(n) = uri.strip_prefix(OPERATOR_URN_PREFIX) {
            Role::Operator(n.to_string())
        } else {
            continue;
        };
        if found.replace(role).is_some() {
            return Err(NamingError::Ambiguous);
        }
    }
    if let Some(role) = found {
        return Ok((role, NamedIn::SanUri));
    }
    let cn = tbs.subject.0.iter().flat_map(|rdn| rdn.0.iter()).find(|atv| atv.oid == COMMON_NAME);
    cn.and_then(|atv| std::str::from_utf8(atv.value.value()).ok())
        .map(|cn| (Role::Host(cn.to_string()), NamedIn::CommonName))
        .ok_or(NamingError::NoIdentity)
}

/// Whether `name` can be an identity, host id or operator name; the reason when it cannot. The
/// collector refuses a certificate naming anything else (401), and the agent refuses to start
/// shipping as a host id it would refuse. Names become directory names (the development PKI's
/// `agents/<id>/`) and URIs, so only `A-Z a-z 0-9 . _ -`, 1 to 253 characters, not starting with
/// `.` or `-`: nothing that could climb out of a directory or need escaping.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err("must be 1 to 253 characters");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err("must not start with `.` or `-`");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return Err("only letters, digits, `.`, `_` and `-` are allowed");
    }
    Ok(())
}

/// The URIs of the certificate's subject alternative names. An unreadable extension, or more
/// than one (RFC 5280 allows one), names nobody through it; the CN fallback still applies, as
/// for a certificate without one.
///
/// The names are read as a SEQUENCE OF any DER value, keeping the URIs: decoding every kind of
/// `GeneralName` (x509-cert's `SubjectAltName`) cost the agent's binary 33 kB for names it
/// never looks at.
fn san_uris(tbs: &x509_cert::TbsCertificate) -> Vec<&str> {
    let mut extensions =
        tbs.extensions.as_deref().unwrap_or(&[]).iter().filter(|e| e.extn_id == SUBJECT_ALT_NAME);
    let (Some(san), None) = (extensions.next(), extensions.next()) else { return Vec::new() };
    let Ok(names) = Vec::<AnyRef<'_>>::from_der(san.extn_value.as_bytes()) else { return Vec::new() };
    names
        .into_iter()
        .filter(|name| name.tag() == URI)
        .filter_map(|name| Ia5StringRef::new(name.value()).ok())
        .map(|uri| uri.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_safe_as_a_directory_and_in_a_uri_are_identities() {
        let too_long = "a".repeat(MAX_NAME_LEN + 1);
        for bad in ["", "..", ".hidden", "a/b", "a\\b", "-x", "a b", "a:b", "é", "a\n", too_long.as_str()] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        let longest = "a".repeat(MAX_NAME_LEN);
        for good in ["i-0123456789abcdef0", "web-1.prod", "0f3a_b", "x", longest.as_str()] {
            assert_eq!(check_name(good), Ok(()), "{good:?}");
        }
    }
}
