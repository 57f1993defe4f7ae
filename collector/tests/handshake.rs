//! The handshake matrix: only a certificate issued by the collector's CA, valid now, over TLS
//! 1.3 (as configured) gets in.

use crate::common::*;
use guestward_collector::pki;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::OffsetDateTime;

const LIMIT: Duration = Duration::from_secs(60);

/// Issues a client certificate for `host` from the CA in `pki_dir`, valid `from`..`to` days from
/// now (negative: in the past), into `out/{cert,key}.pem`.
pub fn issue_with_validity(
    pki_dir: &Path,
    host: &str,
    from_days: i64,
    to_days: i64,
    out: &Path,
) -> (PathBuf, PathBuf) {
    let issuer = pki::load_issuer(pki_dir).unwrap();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, host);
    p.subject_alt_names =
        vec![SanType::URI(format!("urn:guestward:host:{host}").as_str().try_into().unwrap())];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let now = OffsetDateTime::now_utc();
    p.not_before = now + time::Duration::days(from_days);
    p.not_after = now + time::Duration::days(to_days);
    let cert = p.signed_by(&key, &issuer).unwrap();
    std::fs::create_dir_all(out).unwrap();
    let (c, k) = (out.join("cert.pem"), out.join("key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

async fn healthz(h: &Harness, client: reqwest::Client) -> Result<reqwest::StatusCode, String> {
    client.get(h.url("/healthz")).send().await.map(|r| r.status()).map_err(|e| chain(&e))
}

#[test]
fn valid_agent_and_operator_certificates_are_accepted() {
    run(LIMIT, "valid pair", || async {
        let h = Harness::start(|_| {}).await;
        assert_eq!(healthz(&h, h.client(Who::Agent(HOST_A))).await.unwrap(), 200);
        assert_eq!(healthz(&h, h.client(Who::Operator(OPERATOR))).await.unwrap(), 200);
    });
}

#[test]
fn handshake_without_client_certificate_is_rejected() {
    run(LIMIT, "no client cert", || async {
        let h = Harness::start(|_| {}).await;
        let err = healthz(&h, h.client(Who::Nobody)).await.unwrap_err();
        assert!(err.to_lowercase().contains("certificate"), "{err}");
    });
}

#[test]
fn handshake_with_certificate_from_another_ca_is_rejected() {
    run(LIMIT, "foreign CA", || async {
        let h = Harness::start(|_| {}).await;
        let other = tempfile::tempdir().unwrap();
        let other_pki = new_pki(other.path());
        let agent = other_pki.join("agents").join(HOST_A);
        let client = h
            .builder(Who::Nobody)
            .identity(identity(&agent.join("cert.pem"), &agent.join("key.pem")))
            .build()
            .unwrap();
        let err = healthz(&h, client).await.unwrap_err();
        assert!(err.to_lowercase().contains("certificate") || err.contains("UnknownCA"), "{err}");
    });
}

#[test]
fn handshake_with_expired_client_certificate_is_rejected() {
    run(LIMIT, "expired cert", || async {
        let h = Harness::start(|_| {}).await;
        let out = h.dir.path().join("expired");
        let (c, k) = issue_with_validity(&h.pki(), HOST_A, -30, -1, &out);
        let client = h.builder(Who::Nobody).identity(identity(&c, &k)).build().unwrap();
        let err = healthz(&h, client).await.unwrap_err();
        assert!(err.to_lowercase().contains("certificate") || err.contains("Expired"), "{err}");
        // The same CA, valid dates: accepted (so the refusal above was the dates).
        let (c, k) = issue_with_validity(&h.pki(), HOST_A, -1, 30, &h.dir.path().join("fresh"));
        let client = h.builder(Who::Nobody).identity(identity(&c, &k)).build().unwrap();
        assert_eq!(healthz(&h, client).await.unwrap(), 200);
    });
}

#[test]
fn tls12_only_client_is_rejected_when_13_is_required() {
    run(LIMIT, "TLS 1.2 client", || async {
        let h = Harness::start(|_| {}).await;
        let client =
            h.builder(Who::Agent(HOST_A)).tls_version_max(reqwest::tls::Version::TLS_1_2).build().unwrap();
        let err = healthz(&h, client).await.unwrap_err();
        assert!(err.to_lowercase().contains("version") || err.contains("Protocol"), "{err}");
        // With tls_min_version = "1.2" the same client gets in.
        let h =
            Harness::start(|c| c.tls_min_version = guestward_collector::config::TlsMinVersion::Tls12).await;
        let client =
            h.builder(Who::Agent(HOST_A)).tls_version_max(reqwest::tls::Version::TLS_1_2).build().unwrap();
        assert_eq!(healthz(&h, client).await.unwrap(), 200);
    });
}
