//! Who a client is: read from its verified client certificate, or from the certificate a trusted
//! proxy forwarded in a header (verified again here).
//!
//! Which identity a certificate names is `guestward_report::client_identity`'s rule (a SAN URI
//! `urn:guestward:host:<id>` or `urn:guestward:operator:<name>`, else the CN as a host id; several
//! guestward URIs are refused as ambiguous), shared with the agent, which checks its own
//! certificate against it.

use guestward_core::Timestamp;
use guestward_report::ingest::CertificateInfo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use sha2::Digest;
use x509_cert::der::Decode;

pub use guestward_report::client_identity::{HOST_URN_PREFIX, OPERATOR_URN_PREFIX, Role};
use guestward_report::client_identity::{NamingError, named_by};

/// A proxy header larger than this is refused (a leaf and two intermediates fit in 16 KiB).
pub const MAX_PROXY_HEADER_BYTES: usize = 32 * 1024;

/// A client's identity and the certificate it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// Host or operator.
    pub role: Role,
    /// The certificate that proved it.
    pub certificate: CertificateInfo,
    /// Taken from a trusted proxy's header rather than this connection's TLS handshake.
    pub via_proxy: bool,
}

/// Why no identity could be taken from a certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Not a parseable X.509 certificate.
    #[error("the client certificate cannot be parsed: {0}")]
    Parse(String),
    /// No identity, or several (`client_identity::named_by`).
    #[error(transparent)]
    Naming(#[from] NamingError),
    /// The identity has characters a host id may not have.
    #[error("the client certificate's identity {0:?} is not a valid host id or operator name")]
    InvalidName(String),
    /// The proxy header could not be decoded.
    #[error("the certificate header from the proxy is unusable: {0}")]
    Header(String),
    /// The forwarded certificate did not verify against the CA.
    #[error("the certificate forwarded by the proxy does not verify against the collector's CA: {0}")]
    Untrusted(String),
}

/// The identity in a DER certificate (already verified by the caller).
pub fn identity_from_cert(der: &[u8], via_proxy: bool) -> Result<ClientIdentity, IdentityError> {
    let cert = x509_cert::Certificate::from_der(der).map_err(|e| IdentityError::Parse(e.to_string()))?;
    let tbs = &cert.tbs_certificate;
    let (role, _) = named_by(&cert)?;
    let name = match &role {
        Role::Host(n) | Role::Operator(n) => n,
    };
    if crate::pki::validate_name("identity", name).is_err() {
        return Err(IdentityError::InvalidName(name.clone()));
    }
    let not_after = Timestamp::from_unix_secs(
        i64::try_from(tbs.validity.not_after.to_unix_duration().as_secs()).unwrap_or(i64::MAX),
    )
    .unwrap_or_else(Timestamp::now);
    let certificate = CertificateInfo {
        serial: hex(tbs.serial_number.as_bytes()),
        sha256: hex(&sha2::Sha256::digest(der)),
        not_after,
    };
    Ok(ClientIdentity { role, certificate, via_proxy })
}

/// Decodes a proxy's certificate header: a URL-encoded PEM certificate, optionally followed by
/// its intermediates (AWS ALB `X-Amzn-Mtls-Clientcert` in passthrough mode sends the chain,
/// `X-Amzn-Mtls-Clientcert-Leaf` in verify mode the leaf; nginx `$ssl_client_escaped_cert` the
/// leaf). Returns the leaf first.
pub fn decode_proxy_header(value: &[u8]) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    if value.len() > MAX_PROXY_HEADER_BYTES {
        return Err(IdentityError::Header(format!("larger than {MAX_PROXY_HEADER_BYTES} bytes")));
    }
    // Percent-decoding only: `+` stays `+` (it is base64, not a space, in these headers).
    let pem: Vec<u8> = percent_encoding::percent_decode(value).collect();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| IdentityError::Header(format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(IdentityError::Header("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// Verifies a forwarded chain against the CA exactly as a TLS handshake would (signature chain,
/// validity at `now`, EKU clientAuth), then reads its identity. A proxy is trusted to forward,
/// not to vouch: a bug or misconfiguration in it must not let an unverified certificate in.
pub fn verify_forwarded(
    verifier: &dyn ClientCertVerifier,
    chain: &[CertificateDer<'static>],
    now: UnixTime,
) -> Result<ClientIdentity, IdentityError> {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err(IdentityError::Header("no certificate".into()));
    };
    verifier
        .verify_client_cert(leaf, intermediates, now)
        .map_err(|e| IdentityError::Untrusted(e.to_string()))?;
    identity_from_cert(leaf, true)
}

/// Lower-case hexadecimal.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn cert(cn: Option<&str>, uris: &[&str]) -> Vec<u8> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
        p.subject_alt_names = uris.iter().map(|u| SanType::URI((*u).try_into().unwrap())).collect();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_san_uri_names_the_identity_and_the_cn_is_only_a_fallback() {
        let id = identity_from_cert(&cert(Some("ignored"), &["urn:guestward:host:h-1"]), false).unwrap();
        assert_eq!(id.role, Role::Host("h-1".into()));
        let id = identity_from_cert(&cert(Some("h-2"), &["https://example.invalid"]), false).unwrap();
        assert_eq!(id.role, Role::Host("h-2".into()));
        let id = identity_from_cert(&cert(None, &["urn:guestward:operator:alice"]), false).unwrap();
        assert_eq!(id.role, Role::Operator("alice".into()));
        // Among names of every other kind (DNS, IP, e-mail), the URI is found.
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(vec!["h.example".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, "ignored");
        p.subject_alt_names.extend([
            SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
            SanType::Rfc822Name("ops@h.example".try_into().unwrap()),
            SanType::URI("urn:guestward:host:h-3".try_into().unwrap()),
            SanType::DnsName("other.example".try_into().unwrap()),
        ]);
        let mixed = p.self_signed(&key).unwrap().der().to_vec();
        assert_eq!(identity_from_cert(&mixed, false).unwrap().role, Role::Host("h-3".into()));
    }

    #[test]
    fn ambiguous_missing_or_path_like_identities_are_refused() {
        let two = cert(None, &["urn:guestward:host:a", "urn:guestward:operator:a"]);
        assert_eq!(
            identity_from_cert(&two, false).unwrap_err(),
            IdentityError::Naming(NamingError::Ambiguous)
        );
        assert_eq!(
            identity_from_cert(&cert(None, &[]), false).unwrap_err(),
            IdentityError::Naming(NamingError::NoIdentity)
        );
        let bad = cert(None, &["urn:guestward:host:../x"]);
        assert!(matches!(identity_from_cert(&bad, false).unwrap_err(), IdentityError::InvalidName(_)));
    }

    #[test]
    fn proxy_headers_decode_in_nginx_and_alb_forms() {
        // A certificate whose base64 has a `/`, `+` or `=` (what the ALB form leaves as it is):
        // a random key gives one nearly always, not always, so a few are tried.
        let issued = (0..64)
            .map(|_| {
                let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
                CertificateParams::default().self_signed(&key).unwrap()
            })
            .find(|c| c.pem().contains(['/', '+', '=']))
            .unwrap();
        let text = issued.pem();
        let nginx =
            percent_encoding::utf8_percent_encode(&text, percent_encoding::NON_ALPHANUMERIC).to_string();
        const ALB: &percent_encoding::AsciiSet =
            &percent_encoding::NON_ALPHANUMERIC.remove(b'+').remove(b'=').remove(b'/');
        let alb = percent_encoding::utf8_percent_encode(&text, ALB).to_string();
        assert!(alb.contains('/') || alb.contains('+') || alb.contains('='), "{alb}");
        for header in [nginx, alb, text.clone()] {
            let chain = decode_proxy_header(header.as_bytes()).unwrap();
            assert_eq!(chain.len(), 1);
            assert_eq!(chain[0].as_ref(), issued.der().as_ref());
        }
        assert!(decode_proxy_header(b"garbage").is_err());
        assert!(decode_proxy_header(&vec![b'a'; MAX_PROXY_HEADER_BYTES + 1]).is_err());
    }
}
