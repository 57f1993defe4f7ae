//! A test-only emulator of the EC2 Instance Metadata Service, on 127.0.0.1 (or `[::1]`) and a
//! random port.
//!
//! It follows AWS's documented behaviour:
//! - `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds` (1..=21600; 400 when
//!   missing or invalid) returns a token and echoes the TTL; a PUT carrying `X-Forwarded-For`
//!   is refused (403), as IMDS does to stop tokens being obtained through a proxy.
//! - GETs with a token: 401 when it is unknown or expired; without a token: 401 in
//!   tokens-required mode, served in optional mode (IMDSv1).
//! - 404 for unknown paths, 405 for other methods, 403 for everything when IMDS is turned off,
//!   429 when throttling.
//! - `dynamic/instance-identity/document`, `signature` (RSA-SHA256 over the document with a key
//!   generated at start), `rsa2048` (a CMS SignedData with the document embedded, signed by the
//!   same key) and `pkcs7` (the same structure: real IMDS uses DSA/SHA-1 there, which nothing
//!   should rely on).
//! - Faults for tests: slow answers (one path, or every answer), answers that never come,
//!   oversized bodies, error statuses (500) for chosen paths, a token PUT answering 403/404/405
//!   (IMDS without IMDSv2).
//!
//! Every request is recorded so tests can assert what the client asked for (and never asked
//! for: `iam/security-credentials`), and counted ([`Emulator::counters`]) so a test can say
//! how many tokens a process asked for.

// Output goes through `guestward_core::stdio`: the print macros panic when a write fails.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use base64::Engine as _;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The instance id the emulator serves by default.
pub const INSTANCE_ID: &str = "i-0123456789abcdef0";
/// The account id in the default identity document.
pub const ACCOUNT_ID: &str = "123456789012";
/// The default instance profile ARN.
pub const PROFILE_ARN: &str = "arn:aws:iam::123456789012:instance-profile/web-server";

/// Whether GETs need a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMode {
    /// `HttpTokens: optional`: IMDSv1 answers.
    Optional,
    /// `HttpTokens: required`: IMDSv2 only.
    Required,
}

/// The emulated instance and the faults to inject. Change it at run time with
/// [`Emulator::update`].
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Token requirement.
    pub tokens: TokenMode,
    /// `false`: IMDS turned off, 403 to everything.
    pub enabled: bool,
    /// Answer the token PUT with this status instead (403/404/405: an IMDS without IMDSv2).
    pub token_put_status: Option<u16>,
    /// Instance tags; `None` means `instance-metadata-tags` disabled (404).
    pub tags: Option<BTreeMap<String, String>>,
    /// `iam/info` profile ARN; `None` means no profile (404).
    pub instance_profile_arn: Option<String>,
    /// Spot `instance-action` JSON body; `None` means no notice (404).
    pub spot_instance_action: Option<String>,
    /// `events/recommendations/rebalance` JSON body; `None` means 404.
    pub rebalance: Option<String>,
    /// `events/maintenance/scheduled` JSON body (`[]` when none).
    pub maintenance: String,
    /// `autoscaling/target-lifecycle-state`; `None` means 404 (not in an ASG).
    pub autoscaling_state: Option<String>,
    /// The next this-many requests are answered 429.
    pub throttle_next: u32,
    /// Paths (exact, under `/latest/`) answered only after this delay.
    pub delays: BTreeMap<String, Duration>,
    /// Paths (exact) that never answer (the connection stays open).
    pub hang: BTreeSet<String>,
    /// Every request (any path, the token PUT included) is answered only after this delay: a
    /// slow metadata service, each answer inside the client's timeouts.
    pub delay_every_answer: Option<Duration>,
    /// Paths (exact, e.g. `/latest/meta-data/instance-type`) answered with this status and a
    /// short body instead (500, 503: a failing service).
    pub status_for: BTreeMap<String, u16>,
    /// Paths (exact) answered with a body of this many bytes.
    pub oversized: BTreeMap<String, usize>,
    /// Extra metadata leaves, `meta-data/...` to value (override defaults).
    pub extra: BTreeMap<String, String>,
    /// The instance id served (`meta-data/instance-id` and the identity document; the
    /// document is signed at start, so set it before [`Emulator::start`]). Default
    /// [`INSTANCE_ID`].
    pub instance_id: String,
    /// The identity document's `pendingTime` (fixed at start, like `instance_id`).
    pub pending_time: String,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            tokens: TokenMode::Required,
            enabled: true,
            token_put_status: None,
            tags: Some(BTreeMap::from([
                ("Name".to_string(), "web-1".to_string()),
                ("cost center".to_string(), "42".to_string()),
            ])),
            instance_profile_arn: Some(PROFILE_ARN.to_string()),
            spot_instance_action: None,
            rebalance: None,
            maintenance: "[]".to_string(),
            autoscaling_state: None,
            throttle_next: 0,
            delays: BTreeMap::new(),
            hang: BTreeSet::new(),
            delay_every_answer: None,
            status_for: BTreeMap::new(),
            oversized: BTreeMap::new(),
            extra: BTreeMap::new(),
            instance_id: INSTANCE_ID.to_string(),
            pending_time: "2026-11-29T08:00:00Z".to_string(),
        }
    }
}

/// How a request was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    /// No token header.
    None,
    /// A valid token.
    Valid,
    /// An unknown or expired token.
    Invalid,
}

/// One request as the emulator saw it.
#[derive(Debug, Clone)]
pub struct Record {
    /// HTTP method.
    pub method: String,
    /// Path, e.g. `/latest/meta-data/instance-id`.
    pub path: String,
    /// Token header state.
    pub token: TokenUse,
    /// Status answered (0 when the request hung).
    pub status: u16,
}

/// How many requests of each kind arrived, counted as they arrive (before any injected delay
/// or hang), whatever the answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// `PUT /latest/api/token` requests received, refused ones included.
    pub token_put_requests: u64,
    /// Tokens issued: token PUTs answered 200 (the same figure as [`Emulator::token_puts`]).
    pub tokens_issued: u64,
    /// GET requests received, any path, with or without a token.
    pub get_requests: u64,
}

struct Shared {
    config: EmulatorConfig,
    tokens: HashMap<String, Instant>,
    records: Vec<Record>,
    token_puts: u64,
    counters: Counters,
    next_token: u64,
}

/// A running emulator; stops when dropped.
pub struct Emulator {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    signer: Arc<Signer>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Signer {
    document: String,
    signature_b64: String,
    rsa2048_b64: String,
    public_key_der: Vec<u8>,
}

impl Emulator {
    /// Starts on `127.0.0.1` and a random port.
    pub async fn start(config: EmulatorConfig) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), config).await
    }

    /// Starts on `addr` (use port 0 for a random one; `[::1]:0` for IPv6).
    pub async fn start_on(addr: SocketAddr, config: EmulatorConfig) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let signer = Arc::new(Signer::new(&config.instance_id, &config.pending_time));
        let shared = Arc::new(Mutex::new(Shared {
            config,
            tokens: HashMap::new(),
            records: Vec::new(),
            token_puts: 0,
            counters: Counters::default(),
            next_token: 0,
        }));
        let app = Router::new().fallback(handle).with_state((shared.clone(), signer.clone()));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, signer, task }
    }

    /// `http://127.0.0.1:PORT` (or `http://[::1]:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the emulated instance or its faults.
    pub fn update(&self, f: impl FnOnce(&mut EmulatorConfig)) {
        f(&mut self.shared.lock().unwrap().config);
    }

    /// Invalidates every token issued so far (as a stop/start of the instance would).
    pub fn expire_all_tokens(&self) {
        self.shared.lock().unwrap().tokens.clear();
    }

    /// Token PUTs answered 200.
    pub fn token_puts(&self) -> u64 {
        self.shared.lock().unwrap().token_puts
    }

    /// Request counters so far.
    pub fn counters(&self) -> Counters {
        let s = self.shared.lock().unwrap();
        Counters { tokens_issued: s.token_puts, ..s.counters }
    }

    /// Every request so far.
    pub fn records(&self) -> Vec<Record> {
        self.shared.lock().unwrap().records.clone()
    }

    /// The identity document served.
    pub fn identity_document(&self) -> &str {
        &self.signer.document
    }

    /// The signing key's public half (PKCS#1 `RSAPublicKey` DER), to verify `signature` and
    /// `rsa2048`.
    pub fn signing_public_key_der(&self) -> &[u8] {
        &self.signer.public_key_der
    }
}

impl Signer {
    fn new(instance_id: &str, pending_time: &str) -> Self {
        let document = serde_json::to_string_pretty(&serde_json::json!({
            "accountId": ACCOUNT_ID,
            "architecture": "x86_64",
            "availabilityZone": "eu-west-1a",
            "billingProducts": null,
            "devpayProductCodes": null,
            "marketplaceProductCodes": null,
            "imageId": "ami-0abcdef1234567890",
            "instanceId": instance_id,
            "instanceType": "m7i.large",
            "kernelId": null,
            "pendingTime": pending_time,
            "privateIp": "10.0.1.23",
            "ramdiskId": null,
            "region": "eu-west-1",
            "version": "2017-09-30"
        }))
        .unwrap();
        let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let mut sig = vec![0u8; key.public_modulus_len()];
        key.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), document.as_bytes(), &mut sig).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        // As AWS does, the PKCS#7 signs authenticated attributes (content type and the
        // document's SHA-256), not the document directly.
        let attrs = signed_attributes(document.as_bytes());
        let mut cms_sig = vec![0u8; key.public_modulus_len()];
        key.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), &attrs, &mut cms_sig).unwrap();
        let cms = signed_data_der(document.as_bytes(), &attrs, &cms_sig);
        Self {
            signature_b64: wrap64(&b64.encode(&sig)),
            rsa2048_b64: wrap64(&b64.encode(cms)),
            public_key_der: key.public_key().as_ref().to_vec(),
            document,
        }
    }
}

fn wrap64(s: &str) -> String {
    s.as_bytes().chunks(64).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join("\n")
}

// --- A minimal DER writer for the CMS SignedData (RFC 5652) served as `rsa2048`. ---

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().iter().copied().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    der(0x30, &parts.concat())
}

fn set(parts: &[Vec<u8>]) -> Vec<u8> {
    der(0x31, &parts.concat())
}

fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut body = vec![(arcs[0] * 40 + arcs[1]) as u8];
    for &a in &arcs[2..] {
        let mut chunk = vec![(a & 0x7f) as u8];
        let mut v = a >> 7;
        while v > 0 {
            chunk.push(0x80 | (v & 0x7f) as u8);
            v >>= 7;
        }
        chunk.reverse();
        body.extend(chunk);
    }
    der(0x06, &body)
}

/// The DER `SET OF Attribute` that is signed: contentType = data, messageDigest = SHA-256 of
/// the content. Elements in DER order (sorted by encoding), as a SET OF requires.
fn signed_attributes(content: &[u8]) -> Vec<u8> {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, content);
    let content_type = seq(&[oid(&[1, 2, 840, 113549, 1, 9, 3]), set(&[oid(&[1, 2, 840, 113549, 1, 7, 1])])]);
    let message_digest = seq(&[oid(&[1, 2, 840, 113549, 1, 9, 4]), set(&[der(0x04, digest.as_ref())])]);
    let mut attrs = vec![content_type, message_digest];
    attrs.sort();
    set(&attrs)
}

fn signed_data_der(content: &[u8], signed_attrs_set: &[u8], signature: &[u8]) -> Vec<u8> {
    let null = vec![0x05, 0x00];
    let sha256 = seq(&[oid(&[2, 16, 840, 1, 101, 3, 4, 2, 1]), null.clone()]);
    let rsa = seq(&[oid(&[1, 2, 840, 113549, 1, 1, 1]), null]);
    let int1 = der(0x02, &[1]);
    let issuer = seq(&[set(&[seq(&[oid(&[2, 5, 4, 3]), der(0x0c, b"guestward IMDS emulator")])])]);
    // signedAttrs is [0] IMPLICIT: the SET's content under a context tag.
    let mut implicit_attrs = signed_attrs_set.to_vec();
    implicit_attrs[0] = 0xa0;
    let signer_info = seq(&[
        int1.clone(),
        seq(&[issuer, int1.clone()]),
        sha256.clone(),
        implicit_attrs,
        rsa,
        der(0x04, signature),
    ]);
    let encap = seq(&[oid(&[1, 2, 840, 113549, 1, 7, 1]), der(0xa0, &der(0x04, content))]);
    let signed_data = seq(&[int1, set(&[sha256]), encap, set(&[signer_info])]);
    seq(&[oid(&[1, 2, 840, 113549, 1, 7, 2]), der(0xa0, &signed_data)])
}

// --- The metadata tree. ---

fn tree(c: &EmulatorConfig, s: &Signer) -> BTreeMap<String, String> {
    let mut t = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        t.insert(k.to_string(), v.to_string());
    };
    let m = "meta-data/";
    put(&format!("{m}instance-id"), &c.instance_id);
    put(&format!("{m}instance-type"), "m7i.large");
    put(&format!("{m}ami-id"), "ami-0abcdef1234567890");
    put(&format!("{m}instance-life-cycle"), "on-demand");
    put(&format!("{m}placement/region"), "eu-west-1");
    put(&format!("{m}placement/availability-zone"), "eu-west-1a");
    put(&format!("{m}placement/availability-zone-id"), "euw1-az2");
    put(&format!("{m}local-ipv4"), "10.0.1.23");
    put(&format!("{m}public-ipv4"), "203.0.113.10");
    put(&format!("{m}ipv6"), "2001:db8:1234:1a00::23");
    put(&format!("{m}local-hostname"), "ip-10-0-1-23.eu-west-1.compute.internal");
    put(&format!("{m}mac"), "0e:49:61:0f:c3:11");
    for (mac, dev, eni, ip, sgs, public) in [
        (
            "0e:49:61:0f:c3:11",
            "0",
            "eni-0a1b2c3d4e5f60001",
            "10.0.1.23",
            "sg-0aaa1111bbbb2222c\nsg-0ddd3333eeee4444f",
            true,
        ),
        ("0e:49:61:0f:c3:22", "1", "eni-0a1b2c3d4e5f60002", "10.0.2.17", "sg-0ddd3333eeee4444f", false),
    ] {
        let p = format!("{m}network/interfaces/macs/{mac}/");
        put(&format!("{p}device-number"), dev);
        put(&format!("{p}interface-id"), eni);
        put(&format!("{p}local-ipv4s"), ip);
        put(&format!("{p}security-group-ids"), sgs);
        put(
            &format!("{p}subnet-id"),
            if dev == "0" { "subnet-0123456789abcdef0" } else { "subnet-0fedcba9876543210" },
        );
        put(&format!("{p}vpc-id"), "vpc-0123456789abcdef0");
        put(&format!("{p}owner-id"), ACCOUNT_ID);
        if public {
            put(&format!("{p}public-ipv4s"), "203.0.113.10");
            put(&format!("{p}ipv6s"), "2001:db8:1234:1a00::23");
        }
    }
    if let Some(arn) = &c.instance_profile_arn {
        let info = serde_json::json!({
            "Code": "Success",
            "LastUpdated": "2026-11-29T08:01:00Z",
            "InstanceProfileArn": arn,
            "InstanceProfileId": "AIPAEXAMPLEPROFILEID1"
        });
        put(&format!("{m}iam/info"), &serde_json::to_string_pretty(&info).unwrap());
        // Present so a client that asked would get credentials: the tests assert it never asks.
        put(
            &format!("{m}iam/security-credentials/web-server-role"),
            r#"{"AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"do-not-read"}"#,
        );
    }
    if let Some(tags) = &c.tags {
        for (k, v) in tags {
            put(&format!("{m}tags/instance/{k}"), v);
        }
        if tags.is_empty() {
            // An enabled but empty tag category still answers (with an empty list).
            put(&format!("{m}tags/instance"), "");
        }
    }
    put(&format!("{m}events/maintenance/scheduled"), &c.maintenance);
    put(&format!("{m}events/maintenance/history"), "[]");
    if let Some(a) = &c.spot_instance_action {
        put(&format!("{m}spot/instance-action"), a);
    }
    if let Some(r) = &c.rebalance {
        put(&format!("{m}events/recommendations/rebalance"), r);
    }
    if let Some(a) = &c.autoscaling_state {
        put(&format!("{m}autoscaling/target-lifecycle-state"), a);
    }
    put("dynamic/instance-identity/document", &s.document);
    put("dynamic/instance-identity/signature", &s.signature_b64);
    put("dynamic/instance-identity/rsa2048", &s.rsa2048_b64);
    put("dynamic/instance-identity/pkcs7", &s.rsa2048_b64);
    for (k, v) in &c.extra {
        put(k, v);
    }
    t
}

/// A leaf's value, or a directory listing (children, sub-directories with a trailing `/`).
fn lookup(tree: &BTreeMap<String, String>, rel: &str) -> Option<String> {
    let key = rel.trim_end_matches('/');
    if !rel.ends_with('/')
        && let Some(v) = tree.get(key)
    {
        return Some(v.clone());
    }
    let prefix = if key.is_empty() { String::new() } else { format!("{key}/") };
    let mut children = BTreeSet::new();
    for k in tree.keys() {
        if let Some(rest) = k.strip_prefix(&prefix) {
            if rest.is_empty() {
                continue;
            }
            match rest.split_once('/') {
                Some((dir, _)) => children.insert(format!("{dir}/")),
                None => children.insert(rest.to_string()),
            };
        }
    }
    if children.is_empty() {
        // The empty-tags marker is a leaf with an empty value.
        return tree.get(key).cloned();
    }
    Some(children.into_iter().collect::<Vec<_>>().join("\n"))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn reply(status: u16, body: impl Into<Body>) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "text/plain")
        .header("server", "EC2ws")
        .body(body.into())
        .unwrap()
}

type AppState = (Arc<Mutex<Shared>>, Arc<Signer>);

async fn handle(
    State((shared, signer)): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path().to_string();
    let (delay, hang, delay_all) = {
        let mut s = shared.lock().unwrap();
        if method == Method::PUT && path == "/latest/api/token" {
            s.counters.token_put_requests += 1;
        } else if method == Method::GET {
            s.counters.get_requests += 1;
        }
        (s.config.delays.get(&path).copied(), s.config.hang.contains(&path), s.config.delay_every_answer)
    };
    if let Some(d) = delay_all {
        tokio::time::sleep(d).await;
    }
    if hang {
        record(&shared, &method, &path, TokenUse::None, 0);
        // Long enough for any client timeout; the task is aborted when the emulator drops.
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let mut s = shared.lock().unwrap();
    let token_use = match headers.get("x-aws-ec2-metadata-token").and_then(|v| v.to_str().ok()) {
        None => TokenUse::None,
        Some(t) if s.tokens.get(t).is_some_and(|exp| *exp > Instant::now()) => TokenUse::Valid,
        Some(_) => TokenUse::Invalid,
    };
    let (status, body, ttl) = answer(&mut s, &signer, &method, &path, &headers, token_use);
    s.records.push(Record { method: method.to_string(), path, token: token_use, status });
    drop(s);
    let mut resp = reply(status, body);
    if let Some(ttl) = ttl {
        resp.headers_mut().insert("x-aws-ec2-metadata-token-ttl-seconds", ttl.into());
    }
    resp
}

fn record(shared: &Arc<Mutex<Shared>>, method: &Method, path: &str, token: TokenUse, status: u16) {
    shared.lock().unwrap().records.push(Record {
        method: method.to_string(),
        path: path.to_string(),
        token,
        status,
    });
}

fn answer(
    s: &mut Shared,
    signer: &Signer,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    token_use: TokenUse,
) -> (u16, Vec<u8>, Option<u64>) {
    if s.config.throttle_next > 0 {
        s.config.throttle_next -= 1;
        return (429, b"Too Many Requests".to_vec(), None);
    }
    if !s.config.enabled {
        return (403, b"Forbidden".to_vec(), None);
    }
    if let Some(status) = s.config.status_for.get(path) {
        return (*status, b"Internal Server Error".to_vec(), None);
    }
    if path == "/latest/api/token" {
        if method != Method::PUT {
            return (405, b"Method Not Allowed".to_vec(), None);
        }
        if let Some(st) = s.config.token_put_status {
            return (st, Vec::new(), None);
        }
        if headers.contains_key("x-forwarded-for") {
            return (403, b"Forbidden".to_vec(), None);
        }
        let ttl = headers
            .get("x-aws-ec2-metadata-token-ttl-seconds")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|t| (1..=21_600).contains(t));
        let Some(ttl) = ttl else {
            return (400, b"Bad Request".to_vec(), None);
        };
        s.next_token += 1;
        let token = format!("AQAEA{:016x}emulatedTOKEN{}==", s.next_token * 0x9e37_79b9, s.next_token);
        s.tokens.insert(token.clone(), Instant::now() + Duration::from_secs(ttl));
        s.token_puts += 1;
        return (200, token.into_bytes(), Some(ttl));
    }
    if method != Method::GET {
        return (405, b"Method Not Allowed".to_vec(), None);
    }
    match (token_use, s.config.tokens) {
        (TokenUse::Invalid, _) | (TokenUse::None, TokenMode::Required) => {
            return (401, b"Unauthorized".to_vec(), None);
        }
        _ => {}
    }
    if let Some(n) = s.config.oversized.get(path) {
        return (200, vec![b'A'; *n], None);
    }
    let Some(rel) = path.strip_prefix("/latest/") else {
        return (404, b"Not Found".to_vec(), None);
    };
    let t = tree(&s.config, signer);
    match lookup(&t, &percent_decode(rel)) {
        Some(v) => (200, v.into_bytes(), None),
        None => (404, b"Not Found".to_vec(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_show_children_and_subdirectories() {
        let t = tree(&EmulatorConfig::default(), &Signer::new(INSTANCE_ID, "2026-11-29T08:00:00Z"));
        let macs = lookup(&t, "meta-data/network/interfaces/macs/").unwrap();
        assert_eq!(macs, "0e:49:61:0f:c3:11/\n0e:49:61:0f:c3:22/");
        assert_eq!(lookup(&t, "meta-data/tags/instance").unwrap(), "Name\ncost center");
        assert!(lookup(&t, "meta-data/nope").is_none());
    }

    #[test]
    fn signed_data_is_well_formed_der() {
        let d = signed_data_der(b"{}", &signed_attributes(b"{}"), &[7u8; 256]);
        assert_eq!(d[0], 0x30);
        // Long-form length covering the rest of the buffer.
        assert_eq!(d[1], 0x82);
        assert_eq!(usize::from(d[2]) * 256 + usize::from(d[3]), d.len() - 4);
    }
}
