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

/// Connects with rustls directly and reads: the TLS alert the collector sent, as rustls names it.
/// (With TLS 1.3 the client finishes its side of the handshake before the server judges its
/// certificate, so the verdict arrives as an alert on the first read; reqwest sometimes reports
/// only a closed connection for the same thing.)
async fn alert(
    h: &Harness,
    versions: &[&'static rustls::SupportedProtocolVersion],
    cert: Option<(&Path, &Path)>,
) -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::AsyncReadExt;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(h.pki().join("ca.pem")).unwrap()).unwrap();
    let builder =
        rustls::ClientConfig::builder_with_provider(rustls::crypto::aws_lc_rs::default_provider().into())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
    let config = match cert {
        Some((c, k)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(c).unwrap()],
                PrivateKeyDer::from_pem_file(k).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let mut tls = match connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await {
        Ok(tls) => tls,
        Err(e) => return e.to_string(),
    };
    let mut buf = [0u8; 64];
    match tls.read(&mut buf).await {
        Err(e) => e.to_string(),
        Ok(n) => format!("no alert: read {n} bytes"),
    }
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
        let alert = alert(&h, &[&rustls::version::TLS13], None).await;
        assert!(alert.contains("CertificateRequired"), "{alert} (reqwest: {err})");
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
        let alert =
            alert(&h, &[&rustls::version::TLS13], Some((&agent.join("cert.pem"), &agent.join("key.pem"))))
                .await;
        assert!(alert.contains("UnknownCA"), "{alert} (reqwest: {err})");
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
        let alert = alert(&h, &[&rustls::version::TLS13], Some((&c, &k))).await;
        assert!(alert.contains("CertificateExpired"), "{alert} (reqwest: {err})");
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
        let agent = h.pki().join("agents").join(HOST_A);
        let alert =
            alert(&h, &[&rustls::version::TLS12], Some((&agent.join("cert.pem"), &agent.join("key.pem"))))
                .await;
        assert!(alert.contains("ProtocolVersion"), "{alert} (reqwest: {err})");
        // With tls_min_version = "1.2" the same client gets in.
        let h =
            Harness::start(|c| c.tls_min_version = guestward_collector::config::TlsMinVersion::Tls12).await;
        let client =
            h.builder(Who::Agent(HOST_A)).tls_version_max(reqwest::tls::Version::TLS_1_2).build().unwrap();
        assert_eq!(healthz(&h, client).await.unwrap(), 200);
    });
}
