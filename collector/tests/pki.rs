//! The dev PKI: files, modes, identity fields, refusing to overwrite.

use crate::common::*;
use guestward_collector::identity::{Role, identity_from_cert};
use guestward_collector::pki::{self, IssueOptions, PkiError};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn der(p: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(p).unwrap()
}

#[test]
fn pki_init_and_issue_write_every_file_with_keys_0600() {
    let dir = tempfile::tempdir().unwrap();
    let d = new_pki(dir.path());
    for key in ["ca-key.pem", "server-key.pem", "agents/host-a/key.pem", "operators/ops/key.pem"] {
        assert_eq!(mode(&d.join(key)), 0o600, "{key}");
        assert!(std::fs::read_to_string(d.join(key)).unwrap().contains("PRIVATE KEY"), "{key}");
    }
    for cert in ["ca.pem", "server.pem", "agents/host-a/cert.pem", "operators/ops/cert.pem"] {
        assert_eq!(mode(&d.join(cert)), 0o644, "{cert}");
    }
    assert_eq!(mode(&d), 0o700);
    // No temporary files left behind.
    let names: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 6, "{names:?}");
}

#[test]
fn agent_and_operator_certificates_carry_their_identity_in_a_san_uri() {
    let dir = tempfile::tempdir().unwrap();
    let d = new_pki(dir.path());
    let agent = identity_from_cert(&der(&d.join("agents/host-a/cert.pem")), false).unwrap();
    assert_eq!(agent.role, Role::Host(HOST_A.into()));
    assert_eq!(agent.certificate.sha256.len(), 64);
    let days =
        (agent.certificate.not_after.unix_secs() - guestward_core::Timestamp::now().unix_secs()) / 86_400;
    assert!((363..=365).contains(&days), "{days} days");
    let op = identity_from_cert(&der(&d.join("operators/ops/cert.pem")), false).unwrap();
    assert_eq!(op.role, Role::Operator(OPERATOR.into()));
    let text = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(d.join("agents/host-a/cert.pem"))
        .output();
    match text {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("URI:urn:guestward:host:host-a"), "{text}");
            assert!(text.contains("TLS Web Client Authentication"), "{text}");
            assert!(text.contains("Subject: CN = host-a") || text.contains("Subject: CN=host-a"), "{text}");
            assert!(text.contains("ecdsa-with-SHA256"), "{text}");
        }
        _ => guestward_core::testing::skip_or_fail("agent_certificate_fields", "openssl not installed"),
    }
}

#[test]
fn existing_files_are_never_overwritten_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let d = new_pki(dir.path());
    let ca_before = std::fs::read(d.join("ca.pem")).unwrap();
    let err = pki::init(&d, IssueOptions::default()).unwrap_err();
    assert!(matches!(err, PkiError::Exists { .. }), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(std::fs::read(d.join("ca.pem")).unwrap(), ca_before);
    let key_before = std::fs::read(d.join("agents/host-a/key.pem")).unwrap();
    let err = pki::issue_agent(&d, HOST_A, IssueOptions::default()).unwrap_err();
    assert!(matches!(err, PkiError::Exists { .. }), "{err}");
    assert_eq!(std::fs::read(d.join("agents/host-a/key.pem")).unwrap(), key_before);
    pki::issue_agent(&d, HOST_A, IssueOptions { force: true, ..Default::default() }).unwrap();
    assert_ne!(std::fs::read(d.join("agents/host-a/key.pem")).unwrap(), key_before);
    // Re-issued from the same CA: still verifies against it.
    let ca = der(&d.join("ca.pem"));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.into(),
        rustls::crypto::aws_lc_rs::default_provider().into(),
    )
    .build()
    .unwrap();
    verifier
        .verify_client_cert(&der(&d.join("agents/host-a/cert.pem")), &[], rustls::pki_types::UnixTime::now())
        .unwrap();
}

#[test]
fn host_ids_that_are_not_plain_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = new_pki(dir.path());
    for bad in ["../escape", "a/b", "..", "", ".x"] {
        let err = pki::issue_agent(&d, bad, IssueOptions::default()).unwrap_err();
        assert!(matches!(err, PkiError::InvalidName { .. }), "{bad:?}: {err}");
    }
    assert!(!dir.path().join("escape").exists());
    let err = pki::issue_agent(&d, "ok", IssueOptions { days: 0, force: false }).unwrap_err();
    assert!(matches!(err, PkiError::Days(0)), "{err}");
    let err = pki::issue_agent(&dir.path().join("nope"), "ok", IssueOptions::default()).unwrap_err();
    assert!(err.to_string().contains("pki init"), "{err}");
}

#[test]
fn issue_server_replaces_the_server_certificate_for_new_names() {
    let dir = tempfile::tempdir().unwrap();
    let d = new_pki(dir.path());
    let names = vec!["collector.example.internal".to_string()];
    let err = pki::issue_server(&d, &names, &[], IssueOptions::default()).unwrap_err();
    assert!(matches!(err, PkiError::Exists { .. }), "{err}");
    pki::issue_server(&d, &names, &["10.0.0.5".parse().unwrap()], IssueOptions { days: 30, force: true })
        .unwrap();
    let pem = std::fs::read_to_string(d.join("server.pem")).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(mode(&d.join("server-key.pem")), 0o600);
}

/// Errors an operator meets one at a time no more: `issue-server` without a name says so
/// before it says the files exist; `--dir` naming a file says a directory is wanted.
#[test]
fn pki_errors_name_what_is_wrong_first() {
    let dir = tempfile::tempdir().unwrap();
    let d = new_pki(dir.path());
    let err = pki::issue_server(&d, &[], &[], IssueOptions::default()).unwrap_err().to_string();
    assert!(err.contains("--name or --ip"), "{err}");
    let file = dir.path().join("somefile");
    std::fs::write(&file, "").unwrap();
    let err = pki::init(&file, IssueOptions::default()).unwrap_err().to_string();
    assert!(err.contains("is not a directory"), "{err}");
}
