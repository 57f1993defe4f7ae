//! The collector's TLS configurations: one that requires a client certificate (everyone), one
//! that allows a connection without one (trusted proxies only, which forward the client's
//! certificate in a header instead). Also the operator's side: the client configuration of
//! `guestward-collector hosts | host | findings` ([`operator_client_config`]).

use crate::config::{ServeConfig, TlsMinVersion};
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file is missing, unreadable or holds no usable item.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration refused: {0}")]
    Config(String),
}

/// The configurations and the verifier used for forwarded certificates.
#[derive(Debug, Clone)]
pub struct TlsSetup {
    /// Client certificate required and verified against the CA.
    pub strict: Arc<ServerConfig>,
    /// Client certificate verified when presented, not required (trusted proxies).
    pub proxy: Arc<ServerConfig>,
    /// The CA verifier, also applied to certificates forwarded by a trusted proxy.
    pub verifier: Arc<dyn ClientCertVerifier>,
}

impl TlsSetup {
    /// Reads the CA, certificate and key files of `config`.
    pub fn load(config: &ServeConfig) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let roots = Arc::new(read_roots(&config.ca_file, Reader::Collector)?);
        let chain = read_certs(&config.cert_file, Reader::Collector)?;
        let key = read_key(&config.key_file, Reader::Collector)?;

        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let optional = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let versions: &[&'static rustls::SupportedProtocolVersion] = match config.tls_min_version {
            TlsMinVersion::Tls13 => &[&rustls::version::TLS13],
            TlsMinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        };
        let build = |v: Arc<dyn ClientCertVerifier>| -> Result<Arc<ServerConfig>, TlsError> {
            let mut cfg = ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(versions)
                .map_err(|e| TlsError::Config(e.to_string()))?
                .with_client_cert_verifier(v)
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(|e| TlsError::File {
                    path: config.cert_file.clone(),
                    reason: format!("certificate and key do not go together: {e}"),
                })?;
            // HTTP/1.1 only: its header-read timeout is what cuts slow clients off.
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(cfg))
        };
        Ok(Self { strict: build(verifier.clone())?, proxy: build(optional)?, verifier })
    }
}

/// The client configuration an operator asks the collector with: the collector's certificate
/// verified against `ca` (rustls' WebPki verifier, name included: nothing here turns it off),
/// and the operator's certificate (`cert`, `key`) presented. TLS 1.3 or 1.2, as the collector
/// may allow either.
pub fn operator_client_config(ca: &Path, cert: &Path, key: &Path) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let roots = read_roots(ca, Reader::Operator)?;
    let chain = read_certs(cert, Reader::Operator)?;
    let key_der = read_key(key, Reader::Operator)?;
    rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key_der)
        .map_err(|e| TlsError::File {
            path: key.to_path_buf(),
            reason: format!(
                "cannot be used with {} ({e}): is it the key of that certificate?",
                cert.display()
            ),
        })
}

/// Whose files are read: the advice on a file that cannot be read differs.
#[derive(Debug, Clone, Copy)]
enum Reader {
    /// `serve`: the service user must read them.
    Collector,
    /// An operator's command: the user running it must.
    Operator,
}

/// A private key must not be readable by group or others: the collector's key, leaked to
/// another local user, lets that user impersonate the collector to every agent; an
/// operator's, read the fleet's state. A symlink is not followed (the mode checked must be the
/// key's own).
fn read_key(path: &Path, reader: Reader) -> Result<PrivateKeyDer<'static>, TlsError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| TlsError::File { path: path.to_path_buf(), reason: e.to_string() })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TlsError::File {
            path: path.to_path_buf(),
            reason: format!(
                "the private key is readable by group or others (mode {mode:04o}); run chmod 600 on it"
            ),
        });
    }
    let bytes = read(path, false, reader)?;
    // The error names the PEM problem only, never key material.
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| TlsError::File { path: path.to_path_buf(), reason: format!("no PEM private key: {e}") })
}

fn read(path: &Path, follow_symlinks: bool, reader: Reader) -> Result<Vec<u8>, TlsError> {
    let reason = match reader {
        Reader::Collector => crate::pki::read_capped(path, follow_symlinks),
        Reader::Operator => crate::pki::read_capped_as_operator(path, follow_symlinks),
    };
    reason.map_err(|reason| TlsError::File { path: path.to_path_buf(), reason })
}

fn read_roots(path: &Path, reader: Reader) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in read_certs(path, reader)? {
        roots
            .add(ca)
            .map_err(|e| TlsError::File { path: path.to_path_buf(), reason: format!("unusable CA: {e}") })?;
    }
    Ok(roots)
}

fn read_certs(path: &Path, reader: Reader) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path, true, reader)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::File { path: path.to_path_buf(), reason: format!("bad PEM: {e}") })?;
    if certs.is_empty() {
        return Err(TlsError::File { path: path.to_path_buf(), reason: "no PEM certificate in it".into() });
    }
    Ok(certs)
}
