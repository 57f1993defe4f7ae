//! The `[imds]` config section and how it combines with the AWS SDK environment variables.

use guestward_core::ConfigIssue;
use guestward_core::config::url_parse_issue;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Where IMDS listens on EC2, over IPv4.
pub const IPV4_ENDPOINT: &str = "http://169.254.169.254";
/// Where IMDS listens on EC2, over IPv6 (Nitro instances with the IPv6 endpoint turned on).
pub const IPV6_ENDPOINT: &str = "http://[fd00:ec2::254]";
/// The longest token lifetime IMDS grants (6 hours).
pub const MAX_TOKEN_TTL_SECS: u32 = 21_600;
/// Default `imds.collection_deadline_ms`: real IMDS answers in about a millisecond, so a full
/// collection (a few dozen items) takes well under a second.
pub const DEFAULT_COLLECTION_DEADLINE_MS: u64 = 5_000;
/// Accepted `imds.collection_deadline_ms`.
pub const COLLECTION_DEADLINE_RANGE_MS: std::ops::RangeInclusive<u64> = 500..=120_000;

/// Which IMDS address to use when no endpoint is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    /// `169.254.169.254`.
    Ipv4,
    /// `[fd00:ec2::254]`.
    Ipv6,
}

impl EndpointMode {
    /// The base URL of this mode's endpoint.
    pub fn url(self) -> &'static str {
        match self {
            Self::Ipv4 => IPV4_ENDPOINT,
            Self::Ipv6 => IPV6_ENDPOINT,
        }
    }
}

/// `[imds]`: how the agent talks to the EC2 Instance Metadata Service.
///
/// The AWS SDK environment variables are honoured where this section leaves a key unset:
/// `AWS_EC2_METADATA_DISABLED=true` turns IMDS off (it wins over everything, as in the SDKs),
/// `AWS_EC2_METADATA_SERVICE_ENDPOINT` sets the endpoint, `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE`
/// (`IPv4`/`IPv6`) the mode. A key set in this file wins over the variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ImdsConfig {
    /// Ask IMDS at all. `false` leaves the `cloud` section skipped.
    pub enabled: bool,
    /// Base URL of the metadata service (e.g. `http://127.0.0.1:1338` for an emulator or a
    /// proxy). Setting it skips the "are we on EC2" pre-check: the endpoint is always asked.
    pub endpoint: Option<String>,
    /// `ipv4` or `ipv6`; unset means the environment variable, else `ipv4`.
    pub endpoint_mode: Option<EndpointMode>,
    /// Lifetime requested for IMDSv2 session tokens, 1..=21600 seconds.
    pub token_ttl_secs: u32,
    /// Time allowed to open the connection.
    pub connect_timeout_ms: u64,
    /// Time allowed between two reads of the response.
    pub read_timeout_ms: u64,
    /// Time allowed for one whole request, connection and body included (a slow drip of bytes
    /// never resets it).
    pub request_timeout_ms: u64,
    /// Extra attempts after a timeout, connection error, 429 or 5xx (the SDKs use 1).
    pub retries: u32,
    /// Time allowed for one whole collection (every item, retries included),
    /// 500..=120000 ms. When it runs out the items read so far are reported, with a problem
    /// naming the ones not asked for: a metadata service answering slowly, each request just
    /// inside its own timeouts, cannot keep a scan busy for minutes.
    pub collection_deadline_ms: u64,
    /// Largest response body accepted; bigger bodies are cut off and reported.
    pub max_body_bytes: u64,
    /// When the token PUT is refused with 403/404/405 (IMDSv2 unavailable), continue with
    /// token-less IMDSv1 GETs, as the AWS SDKs do. A finding reports it either way.
    pub allow_imdsv1_fallback: bool,
    /// Send one token-less GET to learn whether IMDSv1 still answers (the `GW-IMDS-001`
    /// finding). It counts once in the instance's CloudWatch `MetadataNoToken` metric.
    pub probe_imdsv1: bool,
    /// Read instance tags (needs `instance-metadata-tags` enabled on the instance).
    pub collect_tags: bool,
    /// How often the daemon asks for a spot interruption notice.
    pub spot_poll_interval_secs: u64,
    /// How often the daemon asks for scheduled maintenance, rebalance recommendations and
    /// the autoscaling target lifecycle state.
    pub events_poll_interval_secs: u64,
    /// Off EC2, or when IMDS did not answer, how long to wait before asking again.
    pub reprobe_interval_secs: u64,
    /// The instance's PUT response hop limit, when the owner knows it (from
    /// `aws ec2 describe-instances`): the host cannot observe it. Above 1 while no container
    /// runtime is present raises an informational finding.
    pub http_put_response_hop_limit: Option<u8>,
}

impl Default for ImdsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            endpoint: None,
            endpoint_mode: None,
            token_ttl_secs: MAX_TOKEN_TTL_SECS,
            connect_timeout_ms: 1_000,
            read_timeout_ms: 1_000,
            request_timeout_ms: 3_000,
            retries: 1,
            collection_deadline_ms: DEFAULT_COLLECTION_DEADLINE_MS,
            max_body_bytes: 64 * 1024,
            allow_imdsv1_fallback: true,
            probe_imdsv1: true,
            collect_tags: true,
            spot_poll_interval_secs: 5,
            events_poll_interval_secs: 60,
            reprobe_interval_secs: 3_600,
            http_put_response_hop_limit: None,
        }
    }
}

/// A config value out of range. Names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("imds.{field}: {message}")]
pub struct ConfigError {
    /// The key, without the `imds.` prefix.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError { field, message: message.into() }
}

impl ImdsConfig {
    /// Checks ranges; the first problem, for callers that need one error (see [`Self::issues`]
    /// for all of them).
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.problems().into_iter().next() {
            Some((field, message)) => Err(bad(field, message)),
            None => Ok(()),
        }
    }

    /// Every problem of the section, each under its key relative to `[imds]` (the daemon's
    /// config load and `check-config` list them all, with the line of each key).
    pub fn issues(&self) -> Vec<ConfigIssue> {
        self.problems().into_iter().map(|(field, message)| ConfigIssue::new(field, message)).collect()
    }

    fn problems(&self) -> Vec<(&'static str, String)> {
        const DAY_SECS: u64 = 86_400;
        let mut out = Vec::new();
        let mut range = |field: &'static str, value: u64, range: std::ops::RangeInclusive<u64>| {
            if !range.contains(&value) {
                out.push((field, format!("must be {}..={}, got {value}", range.start(), range.end())));
            }
        };
        range("token_ttl_secs", u64::from(self.token_ttl_secs), 1..=u64::from(MAX_TOKEN_TTL_SECS));
        range("connect_timeout_ms", self.connect_timeout_ms, 1..=60_000);
        range("read_timeout_ms", self.read_timeout_ms, 1..=60_000);
        range("request_timeout_ms", self.request_timeout_ms, 1..=120_000);
        range("retries", u64::from(self.retries), 0..=5);
        range("collection_deadline_ms", self.collection_deadline_ms, COLLECTION_DEADLINE_RANGE_MS);
        range("max_body_bytes", self.max_body_bytes, 1024..=16 * 1024 * 1024);
        range("spot_poll_interval_secs", self.spot_poll_interval_secs, 1..=3_600);
        range("events_poll_interval_secs", self.events_poll_interval_secs, 1..=DAY_SECS);
        range("reprobe_interval_secs", self.reprobe_interval_secs, 1..=7 * DAY_SECS);
        if let Some(hops) = self.http_put_response_hop_limit {
            // What EC2 itself accepts for the instance's metadata options.
            range("http_put_response_hop_limit", u64::from(hops), 1..=64);
        }
        if let Some(e) = &self.endpoint
            && let Err(m) = check_endpoint(e)
        {
            out.push(("endpoint", m));
        }
        out
    }
}

fn check_endpoint(url: &str) -> Result<String, String> {
    let url = url.trim();
    // Every message quotes the URL without its credentials: an error goes into the report,
    // which is spooled and shipped, and into logs.
    let shown = redact_userinfo(url);
    let parsed = url::Url::parse(url).map_err(|e| url_parse_issue(&shown, e))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("`{shown}` must start with http:// or https://"));
    }
    if parsed.host().is_none() {
        return Err(format!("`{shown}` has no host"));
    }
    // A fragment is never sent: `http://169.254.169.254#x` asked `GET /` for every item.
    if !parsed.username().is_empty()
        || parsed.password().is_some()
        || parsed.query().is_some()
        || parsed.fragment().is_some()
    {
        return Err(format!("`{shown}` must not carry credentials, a query or a fragment"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// `url` with what stands between `://` and the host's `@` replaced by `***`.
fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_string(),
    }
}

/// Where the endpoint came from, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndpointSource {
    /// `imds.endpoint` in the config file.
    Config,
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT`.
    Environment,
    /// The mode's well-known address.
    Default,
}

/// The endpoint to use, or why IMDS is off, after combining config and environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// IMDS is turned off by config or `AWS_EC2_METADATA_DISABLED`.
    Disabled {
        /// Which setting turned it off.
        reason: String,
    },
    /// Ask this endpoint.
    Endpoint(ResolvedEndpoint),
}

/// A validated endpoint and the settings derived from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedEndpoint {
    /// Base URL without a trailing slash, e.g. `http://169.254.169.254`.
    pub base_url: String,
    /// Where it came from.
    pub source: EndpointSource,
    /// Configured explicitly (config or environment): skip the DMI pre-check.
    pub explicit: bool,
    /// Client settings.
    pub settings: ClientSettings,
}

/// What [`crate::ImdsClient`] needs from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// Token lifetime asked for.
    pub token_ttl: Duration,
    /// Connection timeout.
    pub connect_timeout: Duration,
    /// Timeout between reads.
    pub read_timeout: Duration,
    /// Timeout of a whole attempt.
    pub request_timeout: Duration,
    /// Extra attempts.
    pub retries: u32,
    /// Time allowed for one whole collection.
    pub collection_deadline: Duration,
    /// Body size cap.
    pub max_body_bytes: u64,
    /// Allow IMDSv1 when IMDSv2 is unavailable.
    pub allow_imdsv1_fallback: bool,
}

impl ClientSettings {
    /// Settings from a (validated) config.
    pub fn from_config(c: &ImdsConfig) -> Self {
        Self {
            token_ttl: Duration::from_secs(u64::from(c.token_ttl_secs.clamp(1, MAX_TOKEN_TTL_SECS))),
            connect_timeout: Duration::from_millis(c.connect_timeout_ms.max(1)),
            read_timeout: Duration::from_millis(c.read_timeout_ms.max(1)),
            request_timeout: Duration::from_millis(c.request_timeout_ms.max(1)),
            retries: c.retries.min(5),
            collection_deadline: Duration::from_millis(
                c.collection_deadline_ms
                    .clamp(*COLLECTION_DEADLINE_RANGE_MS.start(), *COLLECTION_DEADLINE_RANGE_MS.end()),
            ),
            max_body_bytes: c.max_body_bytes,
            allow_imdsv1_fallback: c.allow_imdsv1_fallback,
        }
    }
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self::from_config(&ImdsConfig::default())
    }
}

/// The process environment, for [`resolve`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Combines the config with the AWS SDK environment variables. `env` is injected so tests do
/// not have to mutate the process environment.
pub fn resolve(config: &ImdsConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Resolved, ConfigError> {
    config.validate()?;
    if env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(Resolved::Disabled { reason: "AWS_EC2_METADATA_DISABLED=true".to_string() });
    }
    if !config.enabled {
        return Ok(Resolved::Disabled { reason: "imds.enabled = false".to_string() });
    }
    let settings = ClientSettings::from_config(config);
    if let Some(e) = &config.endpoint {
        let base_url = check_endpoint(e).map_err(|m| bad("endpoint", m))?;
        return Ok(Resolved::Endpoint(ResolvedEndpoint {
            base_url,
            source: EndpointSource::Config,
            explicit: true,
            settings,
        }));
    }
    if let Some(e) = env("AWS_EC2_METADATA_SERVICE_ENDPOINT").filter(|v| !v.trim().is_empty()) {
        let base_url = check_endpoint(&e)
            .map_err(|m| bad("endpoint", format!("AWS_EC2_METADATA_SERVICE_ENDPOINT: {m}")))?;
        return Ok(Resolved::Endpoint(ResolvedEndpoint {
            base_url,
            source: EndpointSource::Environment,
            explicit: true,
            settings,
        }));
    }
    let mode = match config.endpoint_mode {
        Some(m) => m,
        None => match env("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE") {
            None => EndpointMode::Ipv4,
            Some(v) if v.trim().is_empty() => EndpointMode::Ipv4,
            Some(v) if v.trim().eq_ignore_ascii_case("ipv4") => EndpointMode::Ipv4,
            Some(v) if v.trim().eq_ignore_ascii_case("ipv6") => EndpointMode::Ipv6,
            Some(v) => {
                return Err(bad(
                    "endpoint_mode",
                    format!("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE must be IPv4 or IPv6, got `{v}`"),
                ));
            }
        },
    };
    Ok(Resolved::Endpoint(ResolvedEndpoint {
        base_url: mode.url().to_string(),
        source: EndpointSource::Default,
        explicit: false,
        settings,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn defaults_validate_and_match_the_documented_values() {
        let c = ImdsConfig::default();
        c.validate().unwrap();
        assert_eq!(c.token_ttl_secs, 21_600);
        assert_eq!(c.connect_timeout_ms, 1_000);
        assert_eq!(c.spot_poll_interval_secs, 5);
    }

    #[test]
    fn out_of_range_values_name_the_key() {
        let c = ImdsConfig { token_ttl_secs: 21_601, ..Default::default() };
        assert_eq!(c.validate().unwrap_err().field, "token_ttl_secs");
        let c = ImdsConfig { token_ttl_secs: 0, ..Default::default() };
        assert_eq!(c.validate().unwrap_err().field, "token_ttl_secs");
        for bad in [0, 499, 120_001] {
            let c = ImdsConfig { collection_deadline_ms: bad, ..Default::default() };
            let e = c.validate().unwrap_err();
            assert_eq!(e.field, "collection_deadline_ms");
            assert!(e.to_string().contains("500..=120000"), "{e}");
        }
        let c = ImdsConfig { endpoint: Some("ftp://x".into()), ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().starts_with("imds.endpoint:"));
    }

    #[test]
    fn every_problem_is_listed_not_only_the_first() {
        let c = ImdsConfig {
            token_ttl_secs: 0,
            read_timeout_ms: 0,
            endpoint: Some("not a url".into()),
            http_put_response_hop_limit: Some(0),
            ..Default::default()
        };
        let keys: Vec<String> = c.issues().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["token_ttl_secs", "read_timeout_ms", "http_put_response_hop_limit", "endpoint"]);
        assert!(ImdsConfig::default().issues().is_empty());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = serde_json::from_str::<ImdsConfig>(r#"{"token_ttl": 5}"#).unwrap_err();
        assert!(err.to_string().contains("token_ttl"), "{err}");
    }

    #[test]
    fn endpoint_errors_never_quote_credentials_and_a_fragment_is_refused() {
        for (url, kept) in [
            ("http://admin:S3cretP4ss@127.0.0.1:18080", "http://***@127.0.0.1:18080"),
            ("http://u:TopSecret@127.0.0.1:99999", "***@127.0.0.1"),
            ("ftp://u:TopSecret@127.0.0.1/", "ftp://***@127.0.0.1/"),
        ] {
            let e = check_endpoint(url).unwrap_err();
            assert!(!e.contains("S3cret") && !e.contains("TopSecret"), "{e}");
            assert!(e.contains(kept), "{e}");
        }
        let e = check_endpoint("http://127.0.0.1:18080#frag").unwrap_err();
        assert!(e.contains("fragment"), "{e}");
        assert_eq!(check_endpoint("http://169.254.169.254/").unwrap(), "http://169.254.169.254");
    }
}
