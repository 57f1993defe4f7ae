//! The dev PKI: a CA, the collector's server certificate, one client certificate per agent and
//! per operator (`guestward-collector pki ...`).
//!
//! Layout of a PKI directory `D`:
//!
//! | file | what |
//! |---|---|
//! | `D/ca.pem`, `D/ca-key.pem` | the CA (10 years) |
//! | `D/server.pem`, `D/server-key.pem` | the collector's certificate (EKU serverAuth) |
//! | `D/agents/<host id>/{cert.pem,key.pem}` | an agent (CN = host id, SAN URI `urn:guestward:host:<id>`, EKU clientAuth) |
//! | `D/operators/<name>/{cert.pem,key.pem}` | an operator (SAN URI `urn:guestward:operator:<name>`, EKU clientAuth) |
//!
//! Every key is ECDSA P-256. Key files are 0600 and every file is written atomically (temporary
//! file, fsync, rename): a crash never leaves half a key. Nothing is overwritten unless the caller
//! passes `force`, because replacing a CA key silently invalidates every certificate it issued.
//!
//! This is a development and small-fleet PKI; a fleet with its own CA only needs to issue
//! certificates with the same identity fields (see `docs/collector.md`).

use crate::identity::{HOST_URN_PREFIX, OPERATOR_URN_PREFIX};
use guestward_core::state_file::{StateFileError, write_atomic};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::OffsetDateTime;

/// Lifetime of the CA.
pub const CA_DAYS: u32 = 3650;
/// Default lifetime of server, agent and operator certificates.
pub const DEFAULT_LEAF_DAYS: u32 = 365;
/// Longest lifetime `--days` accepts for a leaf certificate.
pub const MAX_LEAF_DAYS: u32 = 3650;
/// Certificates and keys are small; a larger file is not ours.
const MAX_PEM_BYTES: u64 = 64 * 1024;
pub use guestward_report::client_identity::MAX_NAME_LEN;
/// Certificates start one hour in the past so a client whose clock is a little behind accepts
/// a freshly issued one.
const BACKDATE: Duration = Duration::from_secs(3600);

/// Why a PKI operation failed. Nothing was replaced unless the error says so.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file to be written exists and `force` was not given.
    #[error("{}: already exists; pass --force to replace it", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// A directory could not be created or a file read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error(transparent)]
    Write(#[from] StateFileError),
    /// A host id, operator name or DNS name is not usable.
    #[error("{what} {value:?} is not valid: {reason}")]
    InvalidName {
        /// `host id`, `operator name`, `DNS name`.
        what: &'static str,
        /// The value given.
        value: String,
        /// What is accepted.
        reason: &'static str,
    },
    /// The CA files are missing or unusable.
    #[error("{}: cannot use the CA: {reason} (create one with `guestward-collector pki init --dir {}`)", path.display(), dir.display())]
    Ca {
        /// The PKI directory.
        dir: PathBuf,
        /// The CA file at fault.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `--days` out of range.
    #[error("--days must be 1..={MAX_LEAF_DAYS}, got {0}")]
    Days(u32),
    /// `issue-server` without any name.
    #[error("a server certificate needs at least one --name or --ip")]
    NoServerNames,
    /// rcgen refused the parameters (should not happen with validated names).
    #[error("cannot build the certificate: {0}")]
    Certificate(#[from] rcgen::Error),
}

/// Options shared by every issuing command.
#[derive(Debug, Clone, Copy)]
pub struct IssueOptions {
    /// Lifetime of the leaf certificate, in days (1..=[`MAX_LEAF_DAYS`]).
    pub days: u32,
    /// Replace existing files.
    pub force: bool,
}

impl Default for IssueOptions {
    fn default() -> Self {
        Self { days: DEFAULT_LEAF_DAYS, force: false }
    }
}

/// The files one command wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Every file written, certificates and keys.
    pub files: Vec<PathBuf>,
}

/// Paths of the files in a PKI directory.
#[derive(Debug, Clone)]
pub struct PkiPaths {
    /// The directory.
    pub dir: PathBuf,
}

impl PkiPaths {
    /// The paths under `dir`.
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf() }
    }
    /// `D/ca.pem`.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    /// `D/ca-key.pem`.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca-key.pem")
    }
    /// `D/server.pem`.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    /// `D/server-key.pem`.
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server-key.pem")
    }
    /// `D/agents/<host_id>/`.
    pub fn agent_dir(&self, host_id: &str) -> PathBuf {
        self.dir.join("agents").join(host_id)
    }
    /// `D/operators/<name>/`.
    pub fn operator_dir(&self, name: &str) -> PathBuf {
        self.dir.join("operators").join(name)
    }
}

/// Checks a host id or operator name by the one rule for identities
/// (`guestward_report::client_identity::check_name`): it becomes a directory name and a URI.
pub fn validate_name(what: &'static str, value: &str) -> Result<(), PkiError> {
    guestward_report::client_identity::check_name(value).map_err(|reason| PkiError::InvalidName {
        what,
        value: value.to_string(),
        reason,
    })
}

fn validate_dns_name(value: &str) -> Result<(), PkiError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_NAME_LEN
        && value.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
        });
    if ok {
        Ok(())
    } else {
        Err(PkiError::InvalidName {
            what: "DNS name",
            value: value.to_string(),
            reason: "must be dot-separated labels of letters, digits and `-`",
        })
    }
}

fn check_days(days: u32) -> Result<(), PkiError> {
    if (1..=MAX_LEAF_DAYS).contains(&days) { Ok(()) } else { Err(PkiError::Days(days)) }
}

/// `pki init`: a new CA and a server certificate for `localhost` and `127.0.0.1`.
pub fn init(dir: &Path, opts: IssueOptions) -> Result<Written, PkiError> {
    check_days(opts.days)?;
    let paths = PkiPaths::new(dir);
    let targets = [paths.ca_cert(), paths.ca_key(), paths.server_cert(), paths.server_key()];
    refuse_existing(&targets, opts.force)?;
    make_private_dir(dir)?;

    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = ca_name(&format!("guestward dev CA {}", &random_hex()[..8]));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    set_validity(&mut params, CA_DAYS);
    params.serial_number = Some(random_serial());
    let ca_cert = params.self_signed(&ca_key)?;
    write_key(&paths.ca_key(), &ca_key)?;
    write_cert(&paths.ca_cert(), &ca_cert.pem())?;

    let issuer = Issuer::new(params, ca_key);
    let server = server_params(&["localhost".to_string()], &[IpAddr::from([127, 0, 0, 1])], opts.days)?;
    let mut files = vec![paths.ca_cert(), paths.ca_key()];
    files.extend(issue_leaf(server, &issuer, &paths.server_cert(), &paths.server_key())?);
    Ok(Written { files })
}

/// `pki issue-server`: replaces `D/server.pem` and `D/server-key.pem` with a certificate for
/// `names` (DNS) and `ips`.
pub fn issue_server(
    dir: &Path,
    names: &[String],
    ips: &[IpAddr],
    opts: IssueOptions,
) -> Result<Written, PkiError> {
    check_days(opts.days)?;
    let paths = PkiPaths::new(dir);
    // The arguments first: "pass --force" and then, forced, "name one" was one error at a time.
    let params = server_params(names, ips, opts.days)?;
    refuse_existing(&[paths.server_cert(), paths.server_key()], opts.force)?;
    let issuer = load_issuer(dir)?;
    Ok(Written { files: issue_leaf(params, &issuer, &paths.server_cert(), &paths.server_key())? })
}

/// `pki issue-agent`: `D/agents/<host_id>/{cert.pem,key.pem}`.
pub fn issue_agent(dir: &Path, host_id: &str, opts: IssueOptions) -> Result<Written, PkiError> {
    validate_name("host id", host_id)?;
    check_days(opts.days)?;
    let paths = PkiPaths::new(dir);
    issue_client(dir, &paths.agent_dir(host_id), host_id, &format!("{HOST_URN_PREFIX}{host_id}"), opts)
}

/// `pki issue-operator`: `D/operators/<name>/{cert.pem,key.pem}`.
pub fn issue_operator(dir: &Path, name: &str, opts: IssueOptions) -> Result<Written, PkiError> {
    validate_name("operator name", name)?;
    check_days(opts.days)?;
    let paths = PkiPaths::new(dir);
    issue_client(dir, &paths.operator_dir(name), name, &format!("{OPERATOR_URN_PREFIX}{name}"), opts)
}

fn issue_client(
    dir: &Path,
    out: &Path,
    cn: &str,
    uri: &str,
    opts: IssueOptions,
) -> Result<Written, PkiError> {
    let (cert, key) = (out.join("cert.pem"), out.join("key.pem"));
    refuse_existing(&[cert.clone(), key.clone()], opts.force)?;
    let issuer = load_issuer(dir)?;
    if let Some(parent) = out.parent() {
        make_private_dir(parent)?;
    }
    make_private_dir(out)?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.subject_alt_names = vec![SanType::URI(uri.try_into()?)];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    leaf_common(&mut params, opts.days);
    Ok(Written { files: issue_leaf(params, &issuer, &cert, &key)? })
}

fn server_params(names: &[String], ips: &[IpAddr], days: u32) -> Result<CertificateParams, PkiError> {
    if names.is_empty() && ips.is_empty() {
        return Err(PkiError::NoServerNames);
    }
    let mut params = CertificateParams::default();
    let cn = names.first().cloned().unwrap_or_else(|| ips.first().map(|i| i.to_string()).unwrap_or_default());
    params.distinguished_name.push(DnType::CommonName, cn);
    for name in names {
        validate_dns_name(name)?;
        params.subject_alt_names.push(SanType::DnsName(name.as_str().try_into()?));
    }
    for ip in ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_common(&mut params, days);
    Ok(params)
}

fn leaf_common(params: &mut CertificateParams, days: u32) {
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    set_validity(params, days);
}

fn issue_leaf(
    params: CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<Vec<PathBuf>, PkiError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let cert = params.signed_by(&key, issuer)?;
    // Key first: a crash between the two writes leaves a key without a certificate (harmless,
    // re-issue with --force), never a certificate whose key is missing.
    write_key(key_path, &key)?;
    write_cert(cert_path, &cert.pem())?;
    Ok(vec![cert_path.to_path_buf(), key_path.to_path_buf()])
}

/// Loads the CA of `dir` as an rcgen issuer: its key from `ca-key.pem` and its subject name
/// from `ca.pem` (rebuilt attribute by attribute, so issued certificates name it exactly). For
/// tools and tests that issue certificates `pki` does not (e.g. already expired ones).
pub fn load_issuer(dir: &Path) -> Result<Issuer<'static, KeyPair>, PkiError> {
    use x509_cert::der::Decode;
    let paths = PkiPaths::new(dir);
    let ca_err = |path: PathBuf, reason: String| PkiError::Ca { dir: dir.to_path_buf(), path, reason };
    let (cert_path, key_path) = (paths.ca_cert(), paths.ca_key());
    let key_pem = read_capped(&key_path, false).map_err(|e| ca_err(key_path.clone(), e))?;
    let key_pem =
        String::from_utf8(key_pem).map_err(|_| ca_err(key_path.clone(), "not a PEM file".into()))?;
    let key = KeyPair::from_pem(&key_pem)
        .map_err(|e| ca_err(key_path.clone(), format!("not a private key: {e}")))?;
    let cert_pem = read_capped(&cert_path, true).map_err(|e| ca_err(cert_path.clone(), e))?;
    let der = CertificateDer::from_pem_slice(&cert_pem)
        .map_err(|e| ca_err(cert_path.clone(), format!("no PEM certificate: {e}")))?;
    let cert = x509_cert::Certificate::from_der(&der)
        .map_err(|e| ca_err(cert_path.clone(), format!("not an X.509 certificate: {e}")))?;
    let spki = x509_cert::der::Encode::to_der(&cert.tbs_certificate.subject_public_key_info)
        .map_err(|e| ca_err(cert_path.clone(), format!("unreadable public key: {e}")))?;
    if spki != rcgen::PublicKeyData::subject_public_key_info(&key) {
        return Err(ca_err(key_path, format!("this key does not belong to {}", cert_path.display())));
    }
    let mut dn = DistinguishedName::new();
    for rdn in cert.tbs_certificate.subject.0.iter() {
        for atv in rdn.0.iter() {
            let value = attribute_value(&atv.value).ok_or_else(|| {
                ca_err(
                    cert_path.clone(),
                    "the subject has an attribute that is not a UTF-8 or printable string".into(),
                )
            })?;
            dn.push(dn_type(&atv.oid), value);
        }
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(Issuer::new(params, key))
}

fn dn_type(oid: &x509_cert::der::oid::ObjectIdentifier) -> DnType {
    match oid.to_string().as_str() {
        "2.5.4.3" => DnType::CommonName,
        "2.5.4.10" => DnType::OrganizationName,
        "2.5.4.11" => DnType::OrganizationalUnitName,
        "2.5.4.6" => DnType::CountryName,
        "2.5.4.7" => DnType::LocalityName,
        "2.5.4.8" => DnType::StateOrProvinceName,
        _ => DnType::CustomDnType(oid.arcs().map(u64::from).collect()),
    }
}

fn attribute_value(any: &x509_cert::der::Any) -> Option<DnValue> {
    use x509_cert::der::{Tag, Tagged};
    let text = std::str::from_utf8(any.value()).ok()?.to_string();
    match any.tag() {
        Tag::Utf8String => Some(DnValue::Utf8String(text)),
        Tag::PrintableString => text.try_into().ok().map(DnValue::PrintableString),
        _ => None,
    }
}

fn ca_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "guestward");
    dn.push(DnType::CommonName, cn);
    dn
}

fn set_validity(params: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::from_secs(u64::from(days) * 86_400);
}

fn random_hex() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// 16 random bytes (UUIDv4 from the OS generator), positive and non-zero as RFC 5280 wants.
fn random_serial() -> SerialNumber {
    let mut bytes = *uuid::Uuid::new_v4().as_bytes();
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

fn refuse_existing(paths: &[PathBuf], force: bool) -> Result<(), PkiError> {
    if force {
        return Ok(());
    }
    // symlink_metadata: a dangling symlink also counts as "exists" (never written through).
    match paths.iter().find(|p| p.symlink_metadata().is_ok()) {
        Some(p) => Err(PkiError::Exists { path: p.clone() }),
        None => Ok(()),
    }
}

fn make_private_dir(dir: &Path) -> Result<(), PkiError> {
    // `--dir` naming a file: "File exists" alone did not say that a directory was wanted.
    if std::fs::metadata(dir).is_ok_and(|m| !m.is_dir()) {
        return Err(PkiError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "is not a directory: --dir names the directory the PKI is kept in",
            ),
        });
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| PkiError::Io { path: dir.to_path_buf(), source })
}

fn write_key(path: &Path, key: &KeyPair) -> Result<(), PkiError> {
    // write_atomic creates the temporary file 0600 (O_EXCL, O_NOFOLLOW) before any byte of the
    // key is written, so the key is never readable by others, not even for an instant.
    let pem = key.serialize_pem();
    write_atomic(path, MAX_PEM_BYTES, |w| w.write_all(pem.as_bytes()))?;
    Ok(())
}

fn write_cert(path: &Path, pem: &str) -> Result<(), PkiError> {
    write_atomic(path, MAX_PEM_BYTES, |w| w.write_all(pem.as_bytes()))?;
    // Certificates are public: readable by the agent's or proxy's user.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .map_err(|source| PkiError::Io { path: path.to_path_buf(), source })
}

/// Reads a PEM file of at most 64 KiB; `follow_symlinks` false for keys. The error is the
/// reason alone ([`read_error_reason`]): every caller names the file in its own error.
pub(crate) fn read_capped(path: &Path, follow_symlinks: bool) -> Result<Vec<u8>, String> {
    guestward_core::read_regular_file_capped(path, MAX_PEM_BYTES, follow_symlinks)
        .map_err(|e| read_error_reason(&e))
}

/// [`read_capped`] for an operator's command: the advice on permissions is the operator's.
pub(crate) fn read_capped_as_operator(path: &Path, follow_symlinks: bool) -> Result<Vec<u8>, String> {
    guestward_core::read_regular_file_capped(path, MAX_PEM_BYTES, follow_symlinks).map_err(|e| match e {
        guestward_core::HostFsError::PermissionDenied { .. } => format!(
            "{} (the operator's certificate, key and CA file must be readable by the user running this command)",
            e.reason()
        ),
        _ => e.reason(),
    })
}

/// Why the collector could not read a file, without its path (the caller's error names it),
/// with the collector's advice on permissions, not the agent's (which names the agent's
/// capability and unit).
pub(crate) fn read_error_reason(e: &guestward_core::HostFsError) -> String {
    match e {
        guestward_core::HostFsError::PermissionDenied { .. } => format!(
            "{} (the collector must run as a user that can read it: guestward-collector, as guestward-collector.service runs it, or root)",
            e.reason()
        ),
        _ => e.reason(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_escape_the_directory_are_refused() {
        for bad in ["", "..", ".hidden", "a/b", "a\\b", "-x", "a b", "é"] {
            assert!(validate_name("host id", bad).is_err(), "{bad:?} accepted");
        }
        for good in ["i-0123456789abcdef0", "web-1.prod", "0f3a_b"] {
            validate_name("host id", good).unwrap();
        }
    }
}
