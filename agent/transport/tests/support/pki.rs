//! A dev PKI for tests (rcgen, ECDSA P-256): a CA, server and agent certificates.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    SanType, SerialNumber,
};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
    pub serial: u64,
}

impl Identity {
    /// Writes `agent.pem` and `agent-key.pem` (0600) into `dir`, each replaced atomically
    /// (written beside, renamed), as a rotation tool would.
    pub fn install(&self, dir: &Path) {
        let put = |name: &str, text: &str| {
            let tmp = dir.join(format!(".{name}.new"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
            std::fs::rename(&tmp, dir.join(name)).unwrap();
        };
        put("agent.pem", &self.cert_pem);
        put("agent-key.pem", &self.key_pem);
    }
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        Self { issuer: CertifiedIssuer::self_signed(params, key).unwrap() }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, names: &[&str]) -> Identity {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "collector");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, 1)
    }

    /// An agent certificate: CN = host id, SAN URI `urn:guestward:host:<id>`, clientAuth.
    pub fn agent(&self, host_id: &str, serial: u64) -> Identity {
        self.agent_until(host_id, serial, None)
    }

    /// An agent certificate whose validity ends on `not_after` (y, m, d) UTC.
    pub fn agent_until(&self, host_id: &str, serial: u64, not_after: Option<(i32, u8, u8)>) -> Identity {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, host_id);
        params.subject_alt_names =
            vec![SanType::URI(format!("urn:guestward:host:{host_id}").try_into().unwrap())];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if let Some((y, m, d)) = not_after {
            params.not_after = rcgen::date_time_ymd(y, m, d);
        }
        self.sign(params, serial)
    }

    fn sign(&self, mut params: CertificateParams, serial: u64) -> Identity {
        params.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Identity { cert_pem: cert.pem(), key_pem: key.serialize_pem(), serial }
    }
}
