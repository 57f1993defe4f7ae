//! `guestward-collector serve --config F`: the TOML file, parsed raw (every key defaulted,
//! unknown keys refused) and then validated into [`ServeConfig`] with every problem listed by key.
//!
//! Relative paths in the file are resolved against the file's directory, so a config and its
//! PKI can move together.

use crate::store::Retention;
use guestward_core::config::{ConfigIssue, check_range};
use ipnet::IpNet;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest config file read.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Why the config cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{}: cannot read the config: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Not TOML, an unknown key or a value of the wrong type.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message (names the key, line and column).
        message: String,
    },
    /// Values out of range.
    #[error("{}: {}", path.display(), issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// The file (or `command line`).
        path: PathBuf,
        /// Every problem, by key.
        issues: Vec<ConfigIssue>,
    },
}

/// The file as written. Every key has a default; see `docs/collector.md` for the reference.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// Address and port to listen on. Default `127.0.0.1:8443`.
    pub listen: String,
    /// The CA that issued the agents' and operators' certificates (PEM). Default `pki/ca.pem`.
    pub ca_file: PathBuf,
    /// The collector's certificate chain (PEM). Default `pki/server.pem`.
    pub cert_file: PathBuf,
    /// The collector's private key (PEM). Default `pki/server-key.pem`.
    pub key_file: PathBuf,
    /// The SQLite database. Default `collector.db`.
    pub db: PathBuf,
    /// Lowest TLS version accepted: `"1.3"` (default) or `"1.2"`.
    pub tls_min_version: String,
    /// Size, rate, connection and time limits.
    pub limits: RawLimits,
    /// Trusted reverse proxies that forward the client certificate in a header.
    pub proxy: RawProxy,
    /// How long and how much the store keeps.
    pub retention: RawRetention,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8443".into(),
            ca_file: "pki/ca.pem".into(),
            cert_file: "pki/server.pem".into(),
            key_file: "pki/server-key.pem".into(),
            db: "collector.db".into(),
            tls_min_version: "1.3".into(),
            limits: RawLimits::default(),
            proxy: RawProxy::default(),
            retention: RawRetention::default(),
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Largest request body as sent (compressed). Default 8 MiB.
    pub max_body_bytes: u64,
    /// Largest body after zstd decompression. Default 64 MiB.
    pub max_decompressed_bytes: u64,
    /// Most reports in one request. Default 256.
    pub max_reports_per_request: u32,
    /// Memory for requests at once, all clients together (bodies as received, then what their
    /// parsed reports take until the database has them); beyond it requests wait, then get
    /// 503. One client identity may hold a quarter of it (at least `max_body_bytes`). Default
    /// 512 MiB; at least `max_decompressed_bytes`.
    pub max_buffered_bytes: u64,
    /// Sustained requests per second per client identity. Default 20.
    pub requests_per_sec_per_client: f64,
    /// Requests a client may send at once above the sustained rate. Default 40.
    pub burst: u32,
    /// Open connections, all clients together. Default 10000.
    pub max_connections: u32,
    /// Open connections from one IP address. Default 64.
    pub max_connections_per_ip: u32,
    /// Time for a TLS handshake. Default 10 s.
    pub handshake_timeout_secs: u64,
    /// Time to send one whole request, from its first byte to the end of its body. Default 60 s.
    pub request_timeout_secs: u64,
    /// A connection with no request for this long is closed. Default 120 s.
    pub idle_timeout_secs: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 * 1024 * 1024,
            max_decompressed_bytes: 64 * 1024 * 1024,
            max_reports_per_request: 256,
            max_buffered_bytes: 512 * 1024 * 1024,
            requests_per_sec_per_client: 20.0,
            burst: 40,
            max_connections: 10_000,
            max_connections_per_ip: 64,
            handshake_timeout_secs: 10,
            request_timeout_secs: 60,
            idle_timeout_secs: 120,
        }
    }
}

/// `[proxy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawProxy {
    /// Addresses or CIDRs of proxies allowed to forward a client certificate. Default: none.
    pub trusted: Vec<String>,
    /// The header carrying the URL-encoded PEM certificate. Default `x-amzn-mtls-clientcert`.
    pub header: String,
}

impl Default for RawProxy {
    fn default() -> Self {
        Self { trusted: Vec::new(), header: "x-amzn-mtls-clientcert".into() }
    }
}

/// `[retention]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRetention {
    /// Reports (with their findings and events) received longer ago are deleted; a host's
    /// latest report is kept. 0 keeps them for good. Default 90.
    pub max_age_days: u32,
    /// What one host's reports, findings and events may take in the store (as stored:
    /// compressed, with what their rows cost); over it, its oldest reports are deleted, its
    /// latest kept. Bounds the disk a compromised host can fill. 0: no cap. Default 1 GiB.
    pub max_bytes_per_host: u64,
    /// A host that has delivered nothing for this many days is deleted whole (its row, reports,
    /// findings, events and tombstones); should it report again, it is a new host. 0: hosts are
    /// never forgotten. Default: the same as `max_age_days` (90 by default; 0, never, when
    /// `max_age_days` is 0): by then the age limit has left the host only its latest report,
    /// and forgetting it is the age limit reaching that one too. Shorter than `max_age_days`
    /// is refused: it would delete the history of a terminated instance (often the one an
    /// investigation needs) sooner than the history of any host still running.
    pub forget_idle_hosts_after_days: Option<u32>,
}

impl Default for RawRetention {
    fn default() -> Self {
        let d = Retention::default();
        Self {
            max_age_days: d.max_age_days,
            max_bytes_per_host: d.max_bytes_per_host,
            forget_idle_hosts_after_days: None,
        }
    }
}

/// Lowest TLS version accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMinVersion {
    /// TLS 1.2 and 1.3.
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// Validated limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// See [`RawLimits::max_body_bytes`].
    pub max_body_bytes: u64,
    /// See [`RawLimits::max_decompressed_bytes`].
    pub max_decompressed_bytes: u64,
    /// See [`RawLimits::max_reports_per_request`].
    pub max_reports_per_request: usize,
    /// See [`RawLimits::max_buffered_bytes`].
    pub max_buffered_bytes: u64,
    /// See [`RawLimits::requests_per_sec_per_client`].
    pub requests_per_sec_per_client: f64,
    /// See [`RawLimits::burst`].
    pub burst: u32,
    /// See [`RawLimits::max_connections`].
    pub max_connections: usize,
    /// See [`RawLimits::max_connections_per_ip`].
    pub max_connections_per_ip: usize,
    /// See [`RawLimits::handshake_timeout_secs`].
    pub handshake_timeout: Duration,
    /// See [`RawLimits::request_timeout_secs`].
    pub request_timeout: Duration,
    /// See [`RawLimits::idle_timeout_secs`].
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        let mut issues = Vec::new();
        validate_limits(&RawLimits::default(), &mut issues)
    }
}

/// Validated proxy settings.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Peers allowed to forward a certificate.
    pub trusted: Vec<IpNet>,
    /// The header (lower case).
    pub header: hyper::header::HeaderName,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self { trusted: Vec::new(), header: hyper::header::HeaderName::from_static("x-amzn-mtls-clientcert") }
    }
}

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// CA file.
    pub ca_file: PathBuf,
    /// Server certificate chain.
    pub cert_file: PathBuf,
    /// Server key.
    pub key_file: PathBuf,
    /// SQLite database.
    pub db: PathBuf,
    /// Lowest TLS version.
    pub tls_min_version: TlsMinVersion,
    /// Limits.
    pub limits: Limits,
    /// Trusted proxies.
    pub proxy: ProxyConfig,
    /// What the store keeps.
    pub retention: Retention,
}

/// Command-line overrides of the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--pki-dir D`: `D/ca.pem`, `D/server.pem`, `D/server-key.pem`.
    pub pki_dir: Option<PathBuf>,
    /// `--db`.
    pub db: Option<PathBuf>,
}

/// Reads `path` (when given; defaults otherwise), applies `overrides` and validates.
pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<ServeConfig, ConfigError> {
    let (raw, base, shown) = match path {
        Some(path) => {
            let bytes =
                guestward_core::read_regular_file_capped(path, MAX_CONFIG_BYTES, true).map_err(|e| {
                    ConfigError::Read { path: path.to_path_buf(), reason: crate::pki::read_error_reason(&e) }
                })?;
            let text = String::from_utf8(bytes)
                .map_err(|_| ConfigError::Read { path: path.to_path_buf(), reason: "not UTF-8".into() })?;
            let raw: RawConfig = toml::from_str(&text)
                .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
            let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
            (raw, base, path.to_path_buf())
        }
        None => (RawConfig::default(), PathBuf::new(), PathBuf::from("(no --config file)")),
    };
    validate(raw, &base, overrides).map_err(|issues| ConfigError::Invalid { path: shown, issues })
}

/// Validates a parsed file; relative paths are taken from `base`.
pub fn validate(
    mut raw: RawConfig,
    base: &Path,
    overrides: &Overrides,
) -> Result<ServeConfig, Vec<ConfigIssue>> {
    let resolve = |p: &Path| {
        if p.is_absolute() || base.as_os_str().is_empty() { p.to_path_buf() } else { base.join(p) }
    };
    let (mut ca_file, mut cert_file, mut key_file) =
        (resolve(&raw.ca_file), resolve(&raw.cert_file), resolve(&raw.key_file));
    let mut db = resolve(&raw.db);
    if let Some(dir) = &overrides.pki_dir {
        let paths = crate::pki::PkiPaths::new(dir);
        (ca_file, cert_file, key_file) = (paths.ca_cert(), paths.server_cert(), paths.server_key());
    }
    if let Some(d) = &overrides.db {
        db = d.clone();
    }
    if let Some(l) = &overrides.listen {
        raw.listen = l.clone();
    }
    let mut issues = Vec::new();
    // A value given on the command line is named as the flag, not as the file's key.
    let listen_key = if overrides.listen.is_some() { "--listen" } else { "listen" };
    let listen = raw.listen.parse::<SocketAddr>().unwrap_or_else(|_| {
        issues.push(ConfigIssue::new(
            listen_key,
            format!("{:?} is not an address:port (e.g. \"0.0.0.0:8443\" or \"[::]:8443\")", raw.listen),
        ));
        SocketAddr::from(([127, 0, 0, 1], 8443))
    });
    let tls_min_version = match raw.tls_min_version.as_str() {
        "1.3" => TlsMinVersion::Tls13,
        "1.2" => TlsMinVersion::Tls12,
        other => {
            issues.push(ConfigIssue::new(
                "tls_min_version",
                format!("must be \"1.3\" or \"1.2\", got {other:?}"),
            ));
            TlsMinVersion::Tls13
        }
    };
    let limits = validate_limits(&raw.limits, &mut issues);
    let retention = validate_retention(&raw.retention, &mut issues);
    let mut trusted = Vec::new();
    for (i, t) in raw.proxy.trusted.iter().enumerate() {
        match t.parse::<IpNet>().or_else(|_| t.parse::<std::net::IpAddr>().map(IpNet::from)) {
            Ok(net) => trusted.push(net.trunc()),
            Err(_) => issues.push(ConfigIssue::new(
                format!("proxy.trusted[{i}]"),
                format!("{t:?} is not an IP address or CIDR (e.g. \"10.0.0.0/16\")"),
            )),
        }
    }
    let header = hyper::header::HeaderName::from_bytes(raw.proxy.header.to_ascii_lowercase().as_bytes())
        .unwrap_or_else(|_| {
            issues.push(ConfigIssue::new(
                "proxy.header",
                format!("{:?} is not an HTTP header name", raw.proxy.header),
            ));
            ProxyConfig::default().header
        });
    if !issues.is_empty() {
        return Err(issues);
    }
    Ok(ServeConfig {
        listen,
        ca_file,
        cert_file,
        key_file,
        db,
        tls_min_version,
        limits,
        proxy: ProxyConfig { trusted, header },
        retention,
    })
}

/// Smallest cap: a few reports of a quiet host, so that a typo (a cap in KiB or MiB written
/// as bytes) is refused instead of deleting every host's history but its latest report.
const MIN_BYTES_PER_HOST: u64 = 1 << 20;

fn validate_retention(raw: &RawRetention, issues: &mut Vec<ConfigIssue>) -> Retention {
    let mut local = Vec::new();
    // 0 means "for good"; beyond a century is a typo.
    check_range(&mut local, "max_age_days", raw.max_age_days, 0..=36_500);
    if raw.max_bytes_per_host != 0 && !(MIN_BYTES_PER_HOST..=(1 << 50)).contains(&raw.max_bytes_per_host) {
        local.push(ConfigIssue::new(
            "max_bytes_per_host",
            format!(
                "must be 0 (no cap) or {MIN_BYTES_PER_HOST}..={}, got {}",
                1u64 << 50,
                raw.max_bytes_per_host
            ),
        ));
    }
    let forget_idle_hosts_after_days = match raw.forget_idle_hosts_after_days {
        // Not set: it follows the age limit (whose own check reports a bad value).
        None => raw.max_age_days,
        Some(days) => {
            // Same range as the age limit; and never sooner than it (see `RawRetention`).
            let issues_before = local.len();
            check_range(&mut local, "forget_idle_hosts_after_days", days, 0..=36_500);
            if local.len() == issues_before && days != 0 && (raw.max_age_days == 0 || days < raw.max_age_days)
            {
                let age = if raw.max_age_days == 0 {
                    "max_age_days is 0 (reports kept for good)".to_string()
                } else {
                    format!("max_age_days is {}", raw.max_age_days)
                };
                local.push(ConfigIssue::new(
                    "forget_idle_hosts_after_days",
                    format!(
                        "must be 0 (never forget) or at least max_age_days, got {days} while {age}: a host \
                         that stopped reporting would lose its history sooner than a running one"
                    ),
                ));
            }
            days
        }
    };
    issues.extend(guestward_core::config::within("retention", local));
    Retention {
        max_age_days: raw.max_age_days,
        max_bytes_per_host: raw.max_bytes_per_host,
        forget_idle_hosts_after_days,
    }
}

fn validate_limits(raw: &RawLimits, issues: &mut Vec<ConfigIssue>) -> Limits {
    let mut local = Vec::new();
    check_range(&mut local, "max_body_bytes", raw.max_body_bytes, 1024..=(1 << 30));
    check_range(&mut local, "max_decompressed_bytes", raw.max_decompressed_bytes, 1024..=(4 << 30));
    check_range(&mut local, "max_reports_per_request", raw.max_reports_per_request, 1..=10_000);
    check_range(&mut local, "max_buffered_bytes", raw.max_buffered_bytes, (1 << 20)..=(1 << 40));
    if raw.max_buffered_bytes < raw.max_decompressed_bytes || raw.max_buffered_bytes < raw.max_body_bytes {
        local.push(ConfigIssue::new(
            "max_buffered_bytes",
            format!(
                "must be at least max_decompressed_bytes and max_body_bytes ({}), got {}",
                raw.max_decompressed_bytes.max(raw.max_body_bytes),
                raw.max_buffered_bytes
            ),
        ));
    }
    if !(raw.requests_per_sec_per_client.is_finite()
        && raw.requests_per_sec_per_client > 0.0
        && raw.requests_per_sec_per_client <= 1_000_000.0)
    {
        local.push(ConfigIssue::new(
            "requests_per_sec_per_client",
            format!("must be more than 0 and at most 1000000, got {}", raw.requests_per_sec_per_client),
        ));
    }
    check_range(&mut local, "burst", raw.burst, 1..=1_000_000);
    check_range(&mut local, "max_connections", raw.max_connections, 1..=1_000_000);
    check_range(&mut local, "max_connections_per_ip", raw.max_connections_per_ip, 1..=1_000_000);
    check_range(&mut local, "handshake_timeout_secs", raw.handshake_timeout_secs, 1..=600);
    check_range(&mut local, "request_timeout_secs", raw.request_timeout_secs, 1..=3600);
    check_range(&mut local, "idle_timeout_secs", raw.idle_timeout_secs, 1..=86_400);
    issues.extend(guestward_core::config::within("limits", local));
    let as_usize = |v: u32| usize::try_from(v).unwrap_or(usize::MAX);
    Limits {
        max_body_bytes: raw.max_body_bytes,
        max_decompressed_bytes: raw.max_decompressed_bytes,
        max_reports_per_request: as_usize(raw.max_reports_per_request),
        max_buffered_bytes: raw.max_buffered_bytes,
        requests_per_sec_per_client: raw.requests_per_sec_per_client,
        burst: raw.burst,
        max_connections: as_usize(raw.max_connections),
        max_connections_per_ip: as_usize(raw.max_connections_per_ip),
        handshake_timeout: Duration::from_secs(raw.handshake_timeout_secs),
        request_timeout: Duration::from_secs(raw.request_timeout_secs),
        idle_timeout: Duration::from_secs(raw.idle_timeout_secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_value_is_reported_by_its_key() {
        let raw: RawConfig = toml::from_str(
            "listen = \"nope\"\ntls_min_version = \"1.1\"\n[limits]\nmax_body_bytes = 0\n[proxy]\ntrusted = [\"10.0.0.0/8\", \"x\"]\n[retention]\nmax_age_days = 40000\nmax_bytes_per_host = 4096\n",
        )
        .unwrap();
        let issues = validate(raw, Path::new("/etc/c"), &Overrides::default()).unwrap_err();
        let keys: Vec<_> = issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "listen",
                "tls_min_version",
                "limits.max_body_bytes",
                "retention.max_age_days",
                "retention.max_bytes_per_host",
                "proxy.trusted[1]"
            ]
        );
        let cap = issues.iter().find(|i| i.key == "retention.max_bytes_per_host").unwrap();
        assert!(cap.to_string().contains("must be 0 (no cap) or 1048576..="), "{cap}");
    }

    #[test]
    fn unknown_keys_are_refused_and_paths_resolve_against_the_file() {
        assert!(toml::from_str::<RawConfig>("[limits]\nmax_body = 1\n").is_err());
        let raw: RawConfig = toml::from_str("db = \"x.db\"\n").unwrap();
        let cfg = validate(raw, Path::new("/etc/c"), &Overrides::default()).unwrap();
        assert_eq!(cfg.db, Path::new("/etc/c/x.db"));
        assert_eq!(cfg.limits.max_body_bytes, 8 * 1024 * 1024);
        assert_eq!(cfg.tls_min_version, TlsMinVersion::Tls13);
    }

    #[test]
    fn retention_defaults_to_90_days_and_1_gib_per_host_and_0_turns_each_off() {
        let cfg = validate(toml::from_str("").unwrap(), Path::new(""), &Overrides::default()).unwrap();
        assert_eq!(
            cfg.retention,
            Retention { max_age_days: 90, max_bytes_per_host: 1 << 30, forget_idle_hosts_after_days: 90 }
        );
        let raw: RawConfig =
            toml::from_str("[retention]\nmax_age_days = 0\nmax_bytes_per_host = 0\n").unwrap();
        let cfg = validate(raw, Path::new(""), &Overrides::default()).unwrap();
        assert_eq!(cfg.retention, Retention::KEEP_EVERYTHING);
        assert_eq!(cfg.retention.max_age(), None);
        assert_eq!(cfg.retention.cap(), None);
        let raw: RawConfig =
            toml::from_str("[retention]\nmax_age_days = 7\nmax_bytes_per_host = 1048576\n").unwrap();
        let cfg = validate(raw, Path::new(""), &Overrides::default()).unwrap();
        assert_eq!(cfg.retention.max_age(), Some(jiff::SignedDuration::from_hours(7 * 24)));
        assert_eq!(cfg.retention.cap(), Some(1 << 20));
        let e = toml::from_str::<RawConfig>("[retention]\nmax_days = 1\n").unwrap_err();
        assert!(e.to_string().contains("max_days"), "{e}");
        let e = toml::from_str::<RawConfig>("[retention]\nmax_age_days = -1\n").unwrap_err();
        assert!(e.to_string().contains("max_age_days"), "{e}");
    }

    #[test]
    fn forgetting_silent_hosts_follows_the_age_limit_unless_set_and_is_never_sooner() {
        let retention = |toml_text: &str| {
            let raw: RawConfig = toml::from_str(toml_text).unwrap();
            validate(raw, Path::new(""), &Overrides::default()).map(|c| c.retention)
        };
        let forget = |toml_text: &str| retention(toml_text).unwrap().forget_idle_hosts_after_days;
        // Not set: the same as max_age_days, including 0 (a config that keeps everything
        // still does).
        assert_eq!(forget(""), 90);
        assert_eq!(Retention::default().forget_after(), Some(jiff::SignedDuration::from_hours(90 * 24)));
        assert_eq!(forget("[retention]\nmax_age_days = 400\n"), 400);
        assert_eq!(forget("[retention]\nmax_age_days = 0\n"), 0);
        assert_eq!(retention("[retention]\nmax_age_days = 0\n").unwrap().forget_after(), None);
        // Set: 0 turns it off, a longer time is taken as it is.
        assert_eq!(forget("[retention]\nforget_idle_hosts_after_days = 0\n"), 0);
        assert_eq!(forget("[retention]\nforget_idle_hosts_after_days = 365\n"), 365);
        assert_eq!(forget("[retention]\nmax_age_days = 30\nforget_idle_hosts_after_days = 30\n"), 30);
        // Bad values are named by key.
        for (text, says) in [
            ("[retention]\nforget_idle_hosts_after_days = 40000\n", "40000"),
            ("[retention]\nforget_idle_hosts_after_days = 30\n", "max_age_days is 90"),
            ("[retention]\nmax_age_days = 0\nforget_idle_hosts_after_days = 30\n", "max_age_days is 0"),
        ] {
            let issues = retention(text).unwrap_err();
            let keys: Vec<_> = issues.iter().map(|i| i.key.as_str()).collect();
            assert_eq!(keys, ["retention.forget_idle_hosts_after_days"], "{text}");
            assert!(issues[0].to_string().contains(says), "{text}: {}", issues[0]);
        }
        let e = toml::from_str::<RawConfig>("[retention]\nforget_idle_hosts_after_days = -1\n").unwrap_err();
        assert!(e.to_string().contains("forget_idle_hosts_after_days"), "{e}");
    }

    /// The config the packages install is valid, and says what retention keeps.
    #[test]
    fn the_packaged_config_is_valid_and_spells_out_the_retention_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/collector.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("[retention]"), "{}", path.display());
        let cfg = validate(
            toml::from_str(&text).unwrap(),
            Path::new("/etc/guestward-collector"),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(cfg.retention, Retention::default());
    }
}
