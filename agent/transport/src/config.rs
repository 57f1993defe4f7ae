//! The `[transport]` table of `agent.toml`.
//!
//! ```toml
//! [transport]
//! enabled = true
//! url = "https://collector.example.internal:8443"
//! ca_file = "/etc/guestward/tls/ca.pem"        # the collector's CA, pinned
//! cert_file = "/etc/guestward/tls/agent.pem"   # this host's client certificate
//! key_file = "/etc/guestward/tls/agent-key.pem" # its key: mode 0600 or 0400
//! # use_system_roots = false
//! # spool_max_bytes = 268435456   # 256 MiB
//! # batch_max_bytes = 4194304     # 4 MiB per request, compressed
//! # flush_interval_secs = 10
//! # tls_min_version = "1.3"
//! # proxy = "http://proxy.internal:3128"   # default: HTTPS_PROXY / NO_PROXY
//! ```

use guestward_core::config::{ConfigIssue, check_range, url_parse_issue};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where reports go and how they are kept until they get there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// Ship reports to a collector. Default false: reports stay on the host (control socket,
    /// event history).
    pub enabled: bool,
    /// The collector's base URL; `https://` only. Required when `enabled`. Host names are ASCII:
    /// an internationalised name goes in its `xn--` form.
    pub url: Option<String>,
    /// PEM file of the collector's CA: the only roots the collector's certificate may chain to
    /// (pinned). Required when `enabled`, unless `use_system_roots` is true.
    pub ca_file: Option<PathBuf>,
    /// Also trust the system's root store (a collector behind a public certificate). Default
    /// false: a public CA could otherwise vouch for an impostor collector.
    pub use_system_roots: bool,
    /// PEM file of this host's client certificate (its chain may follow). Required when
    /// `enabled`. Re-read when it changes (rotation without restart).
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key. Required when `enabled`; refused when
    /// readable by group or others.
    pub key_file: Option<PathBuf>,
    /// Bound of the spool on disk. Default 268435456 (256 MiB); 1048576 (1 MiB) to
    /// 68719476736 (64 GiB).
    pub spool_max_bytes: u64,
    /// Largest request body (compressed) the shipper sends; a single report larger than this
    /// goes alone. Default 4194304 (4 MiB); 65536 to 67108864 (64 MiB).
    pub batch_max_bytes: u64,
    /// How often the shipper sends what the spool holds (a new report is sent at once).
    /// Default 10; 1 to 3600.
    pub flush_interval_secs: u64,
    /// Lowest TLS version offered: "1.3" (default) or "1.2".
    pub tls_min_version: TlsVersion,
    /// HTTP(S) proxy for the collector, e.g. `http://proxy:3128`. Default: the `HTTPS_PROXY` and
    /// `NO_PROXY` environment variables. The proxy is never used for instance metadata.
    pub proxy: Option<String>,
}

/// TLS protocol versions the shipper may be limited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[default]
    #[serde(rename = "1.3")]
    Tls13,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            url: None,
            ca_file: None,
            use_system_roots: false,
            cert_file: None,
            key_file: None,
            spool_max_bytes: 256 * 1024 * 1024,
            batch_max_bytes: 4 * 1024 * 1024,
            flush_interval_secs: 10,
            tls_min_version: TlsVersion::Tls13,
            proxy: None,
        }
    }
}

impl TransportConfig {
    /// Every problem, keys relative to `[transport]`.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        check_range(&mut issues, "spool_max_bytes", self.spool_max_bytes, 1 << 20..=64 << 30);
        check_range(&mut issues, "batch_max_bytes", self.batch_max_bytes, 64 << 10..=64 << 20);
        check_range(&mut issues, "flush_interval_secs", self.flush_interval_secs, 1..=3600);
        if let Some(url) = &self.url {
            match url::Url::parse(url) {
                Ok(u) if u.scheme() != "https" => issues.push(ConfigIssue::new(
                    "url",
                    format!("must be an https:// URL (reports travel over mutual TLS), got `{url}`"),
                )),
                Ok(u) if u.host_str().is_none() => {
                    issues.push(ConfigIssue::new("url", format!("has no host: `{url}`")))
                }
                Ok(_) => {}
                Err(e) => issues.push(ConfigIssue::new("url", url_parse_issue(url, e))),
            }
        }
        if let Some(proxy) = &self.proxy
            && let Err(e) = url::Url::parse(proxy)
        {
            issues.push(ConfigIssue::new("proxy", url_parse_issue(proxy, e)));
        }
        if self.enabled {
            if self.url.is_none() {
                issues.push(ConfigIssue::new("url", "is required when `enabled = true`"));
            }
            if self.ca_file.is_none() && !self.use_system_roots {
                issues.push(ConfigIssue::new(
                    "ca_file",
                    "is required when `enabled = true` (the collector's CA), unless `use_system_roots = true`",
                ));
            }
            if self.cert_file.is_none() {
                issues.push(ConfigIssue::new("cert_file", "is required when `enabled = true`"));
            }
            if self.key_file.is_none() {
                issues.push(ConfigIssue::new("key_file", "is required when `enabled = true`"));
            }
        }
        issues
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_off() {
        let c = TransportConfig::default();
        assert!(!c.enabled);
        assert_eq!(c.validate(), vec![]);
    }

    #[test]
    fn enabled_without_files_names_every_missing_key() {
        let c = TransportConfig { enabled: true, ..Default::default() };
        let keys: Vec<_> = c.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["url", "ca_file", "cert_file", "key_file"]);
    }

    #[test]
    fn plain_http_is_refused() {
        let c = TransportConfig { url: Some("http://collector:8443".into()), ..Default::default() };
        let issues = c.validate();
        assert_eq!(issues.len(), 1);
        assert!(issues[0].message.contains("https://"), "{issues:?}");
    }

    /// `url` has no Unicode back end (idna_adapter 1.0): an internationalised collector name is
    /// accepted in its ASCII form, and refused with that advice in its Unicode form.
    #[test]
    fn an_internationalised_host_is_accepted_in_its_xn_form_only() {
        let ascii = TransportConfig {
            url: Some("https://xn--bcher-kva.example:8443".into()),
            proxy: Some("http://xn--prxy-6qa.example:3128".into()),
            ..Default::default()
        };
        assert_eq!(ascii.validate(), vec![]);
        let unicode = TransportConfig {
            url: Some("https://bücher.example:8443".into()),
            proxy: Some("http://pröxy.example:3128".into()),
            ..Default::default()
        };
        let issues = unicode.validate();
        assert_eq!(issues.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(), ["url", "proxy"]);
        for issue in &issues {
            assert!(issue.message.contains("is not a URL"), "{issue}");
            assert!(issue.message.contains("write an internationalised name in its `xn--` form"), "{issue}");
        }
    }
}
