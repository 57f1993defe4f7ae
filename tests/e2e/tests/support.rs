//! The harness: the real binaries, a dev PKI per test, a collector process, agent configs, an
//! mTLS client for the collector's API, and the test-only peers (a TLS 1.2-only server, a relay
//! that holds back the collector's answer).
//!
//! Every test has its own temporary directory and its own ports, so the tests run in parallel.

use guestward_report::ingest::{HostDetail, HostList};
use std::collections::HashSet;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The repository root.
pub const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// `run --once --timeout-secs` when delivery should succeed.
pub const DELIVERY_SECS: u64 = 30;
/// `run --once --timeout-secs` when delivery should fail: long enough for a few retries.
pub const FAILING_DELIVERY_SECS: u64 = 3;

// ---------------------------------------------------------------------------------------------
// Binaries and processes

/// A binary of the workspace, from the target directory this test executable was built into
/// (`target/<profile>/deps/e2e-<hash>` → `target/<profile>/<name>`). Cargo builds only this
/// package's own targets for its tests, so the binaries under test come from
/// `cargo build --workspace --bins` (`./scripts/test` runs it first).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, or run ./scripts/test)",
        path.display()
    );
    path
}

/// A command for one of the workspace's binaries, with an environment that cannot steer it:
/// no proxy variables (the agent would otherwise send its reports through the machine's proxy)
/// and no log filter from the caller.
pub fn command(name: &str) -> Command {
    let mut cmd = Command::new(bin(name));
    for var in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        cmd.env_remove(var);
    }
    cmd.env_remove("GUESTWARD_LOG").env_remove("RUST_LOG");
    cmd
}

/// What a finished process said.
#[derive(Debug)]
pub struct Outcome {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Outcome {
    /// Panics (with everything the process said) unless it exited 0.
    #[track_caller]
    pub fn assert_success(&self, what: &str) {
        assert_eq!(self.code, Some(0), "{what} failed:\n{self}");
    }

    /// Panics unless the process exited non-zero (not by a signal).
    #[track_caller]
    pub fn assert_failure(&self, what: &str) {
        assert!(matches!(self.code, Some(c) if c != 0), "{what} should have failed:\n{self}");
    }

    /// Standard output and error, lowercased, for matching error messages.
    pub fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr).to_lowercase()
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout\n{}\n--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Runs `cmd` to completion, failing the test (and killing the process) if it takes longer than
/// `limit`.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Outcome {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let Some(status) = guestward_core::testing::wait_bounded(&mut child, limit) else {
        let stderr = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
        panic!("{cmd:?} did not finish within {limit:?}; stderr:\n{stderr}");
    };
    Outcome {
        code: status.code(),
        stdout: String::from_utf8_lossy(&out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
    }
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = r.read_to_end(&mut s);
        s
    })
}

/// Polls `ready` every 50 ms until it returns `Some`, failing the test after `limit`.
#[track_caller]
pub fn wait_until<T>(limit: Duration, what: &str, ready: impl FnMut() -> Option<T>) -> T {
    wait_until_or_explain(limit, what, ready, String::new)
}

/// [`wait_until`], with `explain()` (logs) in the failure message.
#[track_caller]
pub fn wait_until_or_explain<T>(
    limit: Duration,
    what: &str,
    mut ready: impl FnMut() -> Option<T>,
    explain: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = ready() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}\n{}", explain());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A port on 127.0.0.1 free right now, never handed to another test of this process (the
/// kernel could otherwise give the same ephemeral port to two tests between bind and use).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut given = GIVEN.lock().unwrap();
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// A temporary directory for one test (removed when dropped).
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("gw-e2e-").tempdir().unwrap()
}

/// Writes `text` to `path` with mode 0600 (key files: the agent refuses group/other access).
pub fn write_private(path: &Path, text: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).unwrap();
    f.write_all(text).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Dev PKI (`guestward-collector pki ...`)

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, 0600).
    pub key: PathBuf,
}

impl Identity {
    /// Certificate then key, PEM, as reqwest's `Identity::from_pem` takes them.
    pub fn pem_bundle(&self) -> Vec<u8> {
        let mut pem = std::fs::read(&self.cert).unwrap();
        pem.push(b'\n');
        pem.extend(std::fs::read(&self.key).unwrap());
        pem
    }

    /// Copies both files into `dir` as `cert.pem` and `key.pem` (the key stays 0600).
    pub fn copy_to(&self, dir: &Path) -> Identity {
        std::fs::create_dir_all(dir).unwrap();
        let copy = Identity { cert: dir.join("cert.pem"), key: dir.join("key.pem") };
        std::fs::write(&copy.cert, std::fs::read(&self.cert).unwrap()).unwrap();
        write_private(&copy.key, &std::fs::read(&self.key).unwrap());
        copy
    }

    /// The certificate, DER.
    pub fn cert_der(&self) -> Vec<u8> {
        pem_to_der(&std::fs::read_to_string(&self.cert).unwrap())
    }
}

/// The first PEM block of `pem`, decoded.
pub fn pem_to_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body.trim()).unwrap()
}

/// SHA-256 of `der`, lowercase hex (as the collector's `CertificateInfo.sha256`).
pub fn sha256_hex(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der).iter().map(|b| format!("{b:02x}")).collect()
}

/// A certificate's serial number, lowercase hex without leading zeros.
pub fn serial_hex(der: &[u8]) -> String {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(der).unwrap();
    normalize_serial(
        &cert.tbs_certificate.serial_number.as_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>(),
    )
}

/// A hex serial as printed by anyone (`0A:1b`, `0a1b`) in one form: lowercase, no separators,
/// no leading zeros.
pub fn normalize_serial(hex: &str) -> String {
    let s: String = hex.chars().filter(char::is_ascii_hexdigit).map(|c| c.to_ascii_lowercase()).collect();
    let trimmed = s.trim_start_matches('0');
    if trimmed.is_empty() { "0".into() } else { trimmed.into() }
}

/// A dev PKI made by `guestward-collector pki init --dir <dir>`.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The PKI directory.
    pub dir: PathBuf,
}

impl Pki {
    /// `pki init --dir <dir>`: CA and a server certificate for localhost and 127.0.0.1.
    pub fn init(dir: &Path) -> Pki {
        pki(&["init", "--dir", &dir.display().to_string()]);
        Pki { dir: dir.to_path_buf() }
    }

    /// The CA certificate (what agents pin).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The server certificate made by `init` (localhost, 127.0.0.1).
    pub fn server(&self) -> Identity {
        Identity { cert: self.dir.join("server.pem"), key: self.dir.join("server-key.pem") }
    }

    /// `pki issue-agent --host-id <id>`.
    pub fn agent(&self, host_id: &str) -> Identity {
        self.issue_agent(host_id, &[])
    }

    /// `pki issue-agent --host-id <id> <extra>...` (e.g. `--force`, to replace an earlier one:
    /// rotation; `--days N`).
    pub fn issue_agent(&self, host_id: &str, extra: &[&str]) -> Identity {
        let dir = self.dir.display().to_string();
        let mut args = vec!["issue-agent", "--dir", &dir, "--host-id", host_id];
        args.extend(extra);
        pki(&args);
        let d = self.dir.join("agents").join(host_id);
        Identity { cert: d.join("cert.pem"), key: d.join("key.pem") }
    }

    /// `pki issue-operator --name <name>` (may read GET /v1/hosts*).
    pub fn operator(&self, name: &str) -> Identity {
        pki(&["issue-operator", "--dir", &self.dir.display().to_string(), "--name", name]);
        let d = self.dir.join("operators").join(name);
        Identity { cert: d.join("cert.pem"), key: d.join("key.pem") }
    }

    /// `pki issue-server --name <dns>... --force`: the server certificate (`server.pem`),
    /// replaced by one for other names.
    pub fn reissue_server(&self, names: &[&str]) -> Identity {
        let dir = self.dir.display().to_string();
        let mut args = vec!["issue-server", "--dir", &dir, "--force"];
        for n in names {
            args.extend(["--name", n]);
        }
        pki(&args);
        self.server()
    }
}

fn pki(args: &[&str]) {
    let mut cmd = command("guestward-collector");
    cmd.arg("pki").args(args);
    run_bounded(&mut cmd, Duration::from_secs(20))
        .assert_success(&format!("guestward-collector pki {}", args.join(" ")));
}

/// An agent certificate for `host_id` signed by `pki`'s CA that expired in 2021: made with
/// rcgen (the dev PKI refuses to issue one), with the CA's own subject name as issuer name.
pub fn expired_agent_identity(pki: &Pki, host_id: &str, out_dir: &Path) -> Identity {
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
        KeyUsagePurpose, SanType, date_time_ymd,
    };
    let ca_der = pem_to_der(&std::fs::read_to_string(pki.ca()).unwrap());
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(pki.dir.join("ca-key.pem")).unwrap()).unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = rcgen_name(&ca_der);
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, host_id);
    params.distinguished_name = dn;
    params.subject_alt_names =
        vec![SanType::URI(format!("urn:guestward:host:{host_id}").try_into().unwrap())];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2021, 1, 1);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let id = Identity { cert: out_dir.join("cert.pem"), key: out_dir.join("key.pem") };
    std::fs::create_dir_all(out_dir).unwrap();
    std::fs::write(&id.cert, cert.pem()).unwrap();
    write_private(&id.key, key.serialize_pem().as_bytes());
    id
}

/// The subject name of the certificate `der` as an rcgen name that encodes to the same bytes
/// (each attribute its own RDN, string types kept): a certificate issued under it chains to it.
fn rcgen_name(der: &[u8]) -> rcgen::DistinguishedName {
    use x509_cert::der::{Decode, Tag, Tagged};
    let cert = x509_cert::Certificate::from_der(der).unwrap();
    let mut dn = rcgen::DistinguishedName::new();
    for rdn in cert.tbs_certificate.subject.0.iter() {
        assert_eq!(rdn.0.len(), 1, "multi-valued RDN in the CA's subject: not supported by this test helper");
        for atv in rdn.0.iter() {
            let arcs: Vec<u64> = atv.oid.arcs().map(u64::from).collect();
            let text = std::str::from_utf8(atv.value.value()).unwrap().to_string();
            let value = match atv.value.tag() {
                Tag::Utf8String => rcgen::DnValue::Utf8String(text),
                Tag::PrintableString => rcgen::DnValue::PrintableString(text.try_into().unwrap()),
                other => panic!("CA subject attribute of type {other:?}: not supported by this test helper"),
            };
            dn.push(rcgen::DnType::from_oid(&arcs), value);
        }
    }
    dn
}

// ---------------------------------------------------------------------------------------------
// The collector

/// How to start a collector.
#[derive(Debug, Clone, Default)]
pub struct CollectorOptions {
    /// The server certificate (default: the PKI's `server.pem`).
    pub server: Option<Identity>,
    /// Extra TOML appended to the config file (e.g. a `[proxy]` table).
    pub extra_config: String,
    /// The DNS name the server certificate is for, when not 127.0.0.1: the operator's client
    /// then connects to that name, resolved to 127.0.0.1.
    pub server_name: Option<String>,
}

/// A real `guestward-collector serve`, killed when dropped. Its log is `<dir>/collector.log`.
pub struct Collector {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its working directory (config, database, log).
    pub dir: PathBuf,
    /// A client with an operator certificate (may read /v1/hosts).
    pub operator: Client,
    config: PathBuf,
}

impl Collector {
    /// Writes the config and starts the collector on a free port; returns once /healthz answers.
    pub fn start(dir: &Path, pki: &Pki, options: CollectorOptions) -> Collector {
        let c = Self::configure(dir, pki, free_port(), options);
        c.started()
    }

    /// Writes the config for `port` without starting the collector (an outage from the start).
    pub fn configure(dir: &Path, pki: &Pki, port: u16, options: CollectorOptions) -> Collector {
        std::fs::create_dir_all(dir).unwrap();
        let server = options.server.unwrap_or_else(|| pki.server());
        let config = dir.join("collector.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\nca_file = \"{}\"\ndb = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n{}\n",
                pki.ca().display(),
                dir.join("collector.db").display(),
                server.cert.display(),
                server.key.display(),
                options.extra_config
            ),
        )
        .unwrap();
        let operator = match &options.server_name {
            None => Client::new(
                &format!("https://127.0.0.1:{port}"),
                &pki.ca(),
                Some(pki.operator("e2e-operator")),
            ),
            Some(name) => Client::with_resolve(
                &format!("https://{name}:{port}"),
                &pki.ca(),
                Some(pki.operator("e2e-operator")),
                Some((name, port)),
            ),
        };
        Collector { child: None, port, dir: dir.to_path_buf(), operator, config }
    }

    /// Starts the (stopped) collector and waits for /healthz.
    pub fn started(mut self) -> Collector {
        self.start_again();
        self
    }

    /// Starts the collector again on the same port, config and database.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the collector is already running");
        let log = std::fs::File::create(self.dir.join("collector.log")).unwrap();
        let child = command("guestward-collector")
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            // Debug for the accept loop: its handshake failures name the reason (an unknown CA,
            // an expired certificate), which the tests read when a client saw only a reset.
            .env("GUESTWARD_LOG", "info,guestward_collector::server=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_until(Duration::from_secs(20), "the collector's /healthz", || {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the collector exited ({status}) before answering /healthz; log:\n{}", self.log());
            }
            matches!(self.operator.get("/healthz"), Ok((200, _))).then_some(())
        });
    }

    /// Kills the collector (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("collector.log")).unwrap_or_default()
    }

    /// GET /v1/hosts as the operator.
    pub fn hosts(&self) -> HostList {
        let (status, body) = self.operator.get("/v1/hosts").unwrap();
        assert_eq!(status, 200, "GET /v1/hosts: {body}\ncollector log:\n{}", self.log());
        serde_json::from_str(&body).unwrap()
    }

    /// GET /v1/hosts/{id} as the operator; `None` on 404 (never reported).
    pub fn host(&self, id: &str) -> Option<HostDetail> {
        let (status, body) = self.operator.get(&format!("/v1/hosts/{id}")).unwrap();
        match status {
            200 => Some(serde_json::from_str(&body).unwrap()),
            404 => None,
            _ => panic!("GET /v1/hosts/{id}: {status} {body}\ncollector log:\n{}", self.log()),
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// An HTTPS client with a pinned CA and an optional client certificate

/// A reqwest client (rustls) for the collector's API.
pub struct Client {
    base: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    /// A client for `base` that trusts only `ca` and presents `identity` (none: no client
    /// certificate at all).
    pub fn new(base: &str, ca: &Path, identity: Option<Identity>) -> Client {
        Self::with_resolve(base, ca, identity, None)
    }

    /// Like [`Client::new`], with `name` resolved to 127.0.0.1:`port`.
    pub fn with_resolve(
        base: &str,
        ca: &Path,
        identity: Option<Identity>,
        resolve: Option<(&str, u16)>,
    ) -> Client {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
        let mut builder = reqwest::Client::builder()
            .tls_backend_rustls()
            .tls_certs_only([ca])
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15));
        if let Some((name, port)) = resolve {
            builder = builder.resolve(name, std::net::SocketAddr::from(([127, 0, 0, 1], port)));
        }
        if let Some(id) = identity {
            builder = builder.identity(reqwest::Identity::from_pem(&id.pem_bundle()).unwrap());
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = {
            let _guard = runtime.enter();
            builder.build().unwrap()
        };
        Client { base: base.to_string(), client, runtime }
    }

    /// GET `path`: status and body, or the whole error chain.
    pub fn get(&self, path: &str) -> Result<(u16, String), String> {
        self.send(self.client.get(format!("{}{path}", self.base)))
    }

    /// POST `body` (JSON) to `path` with extra `headers`.
    pub fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> Result<(u16, String), String> {
        let mut req = self.client.post(format!("{}{path}", self.base)).json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req)
    }

    fn send(&self, req: reqwest::RequestBuilder) -> Result<(u16, String), String> {
        self.runtime.block_on(async {
            let resp = req.send().await.map_err(|e| error_chain(&e))?;
            let status = resp.status().as_u16();
            let body = resp.text().await.map_err(|e| error_chain(&e))?;
            Ok((status, body))
        })
    }
}

/// An error and all its sources, `: `-separated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// A report of `host_id` as the agent would ship it (schema of this build, fresh `batch_id`).
pub fn sample_report(host_id: &str, sequence: u64) -> serde_json::Value {
    use guestward_report::{AgentInfo, HostIdSource, Report};
    let mut report = Report::new(
        AgentInfo {
            version: "e2e".into(),
            host_id: Some(host_id.into()),
            host_id_source: HostIdSource::Config,
        },
        guestward_core::Timestamp::now(),
    );
    report.sequence = Some(sequence);
    serde_json::to_value(guestward_report::ingest::IngestRequest { reports: vec![report] }).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The agent

/// The `[transport]` settings of an agent.
#[derive(Debug, Clone)]
pub struct Transport {
    /// The collector's URL.
    pub url: String,
    /// The pinned CA.
    pub ca_file: PathBuf,
    /// The client certificate and key.
    pub identity: Identity,
    /// Extra `[transport]` keys (TOML lines).
    pub extra: String,
}

/// An agent's directory and config: state dir, control socket, config file, all in `dir`.
/// FIM and IMDS are off (a scan takes about a second and touches nothing of the host's).
pub struct Agent {
    /// Its directory.
    pub dir: PathBuf,
    /// Its host id (`[agent] host_id`).
    pub host_id: String,
}

impl Agent {
    /// An agent in `dir` (created) for `host_id`, shipping as `transport` says.
    pub fn new(dir: &Path, host_id: &str, transport: &Transport) -> Agent {
        std::fs::create_dir_all(dir).unwrap();
        let agent = Agent { dir: dir.to_path_buf(), host_id: host_id.to_string() };
        agent.configure(transport);
        agent
    }

    /// The config file.
    pub fn config(&self) -> PathBuf {
        self.dir.join("agent.toml")
    }

    /// The control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    /// (Re)writes the config: the state directory stays, so the spool does too.
    pub fn configure(&self, t: &Transport) {
        std::fs::write(
            self.config(),
            format!(
                "[agent]\nstate_dir = \"{state}\"\nhost_id = \"{host}\"\nscan_interval_secs = 3600\n\
                 [control]\nsocket_path = \"{socket}\"\n\
                 [fim]\nenabled = false\n\
                 [imds]\nenabled = false\n\
                 [transport]\nenabled = true\nurl = \"{url}\"\nca_file = \"{ca}\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n\
                 flush_interval_secs = 1\n{extra}\n",
                state = self.dir.join("state").display(),
                host = self.host_id,
                socket = self.socket().display(),
                url = t.url,
                ca = t.ca_file.display(),
                cert = t.identity.cert.display(),
                key = t.identity.key.display(),
                extra = t.extra,
            ),
        )
        .unwrap();
    }

    /// `guestward-agent run --once --config <config> --timeout-secs 30` (delivery that
    /// should succeed), bounded in time.
    pub fn run_once(&self) -> Outcome {
        self.run_once_with(DELIVERY_SECS, &[])
    }

    /// `run --once` that should fail: delivery retries for only [`FAILING_DELIVERY_SECS`], so
    /// a failure the shipper retries (a refused connection, a handshake error) ends quickly,
    /// its last error in the message.
    pub fn run_once_failing(&self) -> Outcome {
        self.run_once_with(FAILING_DELIVERY_SECS, &[])
    }

    /// `run --once --json`: the outcome and its JSON (stored, duplicates, spool).
    pub fn run_once_json(&self) -> (Outcome, serde_json::Value) {
        self.run_once_json_within(DELIVERY_SECS)
    }

    /// `run --once --json --timeout-secs <secs>`.
    pub fn run_once_json_within(&self, timeout_secs: u64) -> (Outcome, serde_json::Value) {
        let out = self.run_once_with(timeout_secs, &["--json"]);
        let json = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("run --once --json printed no JSON ({e}):\n{out}"));
        (out, json)
    }

    fn run_once_with(&self, timeout_secs: u64, args: &[&str]) -> Outcome {
        let mut cmd = self.run_once_command(timeout_secs);
        cmd.args(args);
        run_bounded(&mut cmd, Duration::from_secs(timeout_secs + 25))
    }

    /// The `run --once` command, to spawn and kill.
    pub fn run_once_command(&self, timeout_secs: u64) -> Command {
        let mut cmd = command("guestward-agent");
        cmd.arg("run")
            .arg("--once")
            .arg("--timeout-secs")
            .arg(timeout_secs.to_string())
            .arg("--config")
            .arg(self.config());
        cmd
    }

    /// The daemon's command (`guestward-agent run --config <config>`), to spawn and kill.
    pub fn daemon_command(&self) -> Command {
        let mut cmd = command("guestward-agent");
        cmd.arg("run").arg("--config").arg(self.config());
        cmd
    }

    /// The daemon (`guestward-agent run`), killed when dropped; returns once its control socket
    /// exists.
    pub fn start_daemon(&self) -> Daemon {
        let log = std::fs::File::create(self.dir.join("daemon.log")).unwrap();
        let child = self
            .daemon_command()
            .env("GUESTWARD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut daemon = Daemon { child, socket: self.socket(), log: self.dir.join("daemon.log") };
        wait_until(Duration::from_secs(20), "the daemon's control socket", || {
            if let Some(status) = daemon.child.try_wait().unwrap() {
                panic!("the daemon exited ({status}); log:\n{}", daemon.log());
            }
            daemon.socket.exists().then_some(())
        });
        daemon
    }
}

/// A running `guestward-agent run`.
pub struct Daemon {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// `agentctl --socket <socket> <args>`, bounded in time.
    pub fn ctl(&self, args: &[&str]) -> Outcome {
        let mut cmd = command("agentctl");
        cmd.arg("--socket").arg(&self.socket).args(args);
        run_bounded(&mut cmd, Duration::from_secs(30))
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Test-only TLS peers

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn load_certs(path: &Path) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_file_iter(path).unwrap().map(Result::unwrap).collect()
}

fn load_key(path: &Path) -> rustls::pki_types::PrivateKeyDer<'static> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::PrivateKeyDer::from_pem_file(path).unwrap()
}

/// A background tokio runtime serving one listener; stops when dropped.
pub struct Peer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    stop: Arc<AtomicBool>,
    /// Bytes the upstream answered that were held back from the agent (relay only).
    pub held_back: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn spawn_peer<F, Fut>(serve: F) -> Peer
where
    F: Fn(tokio::net::TcpStream, Arc<AtomicU64>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let port = std_listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let held_back = Arc::new(AtomicU64::new(0));
    let (stop2, held2) = (stop.clone(), held_back.clone());
    let serve = Arc::new(serve);
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            while !stop2.load(Ordering::SeqCst) {
                if let Ok(Ok((tcp, _))) =
                    tokio::time::timeout(Duration::from_millis(100), listener.accept()).await
                {
                    let serve = serve.clone();
                    tokio::spawn(serve(tcp, held2.clone()));
                }
            }
        });
        rt.shutdown_background();
    });
    Peer { port, stop, held_back, thread: Some(thread) }
}

/// A TLS server that speaks only TLS 1.2, with `server`'s certificate (valid for 127.0.0.1
/// under the dev CA): an agent that requires TLS 1.3 must refuse it.
pub fn tls12_only_server(server: &Identity) -> Peer {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(load_certs(&server.cert), load_key(&server.key))
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    spawn_peer(move |tcp, _| {
        let acceptor = acceptor.clone();
        async move {
            // The handshake fails (the client offers only TLS 1.3): nothing to serve.
            let _ = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await;
        }
    })
}

/// A relay that terminates the agent's TLS (with the dev server certificate), forwards the
/// agent's bytes to the collector over a TLS connection of its own (with the same agent
/// certificate, so the collector sees the same identity) and holds back every byte of the
/// collector's answer. HTTP/1.1 only (ALPN) on both sides, so nothing the agent needs before
/// its request is complete comes from the collector: the window "batch stored, acknowledgement
/// not received" stays open for as long as the test wants.
pub fn holding_relay(collector_port: u16, server: &Identity, agent: &Identity, ca: &Path) -> Peer {
    let mut server_config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(load_certs(&server.cert), load_key(&server.key))
        .unwrap();
    server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(ca) {
        roots.add(c).unwrap();
    }
    let mut client_config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(load_certs(&agent.cert), load_key(&agent.key))
        .unwrap();
    client_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    spawn_peer(move |tcp, held_back| {
        let (acceptor, connector) = (acceptor.clone(), connector.clone());
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let Ok(downstream) = acceptor.accept(tcp).await else { return };
            let Ok(up_tcp) = tokio::net::TcpStream::connect(("127.0.0.1", collector_port)).await else {
                return;
            };
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let Ok(upstream) = connector.connect(name, up_tcp).await else { return };
            let (mut down_r, _down_w) = tokio::io::split(downstream);
            let (mut up_r, mut up_w) = tokio::io::split(upstream);
            let forward = async {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match down_r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if up_w.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            };
            let hold = async {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match up_r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            held_back.fetch_add(n as u64, Ordering::SeqCst);
                        }
                    }
                }
            };
            // `_down_w` is kept (never written, never closed) until both directions end, so
            // the agent waits for an answer that never comes.
            tokio::join!(forward, hold);
        }
    })
}

/// Completes a TLS handshake with the collector on 127.0.0.1:`port` trusting `ca` and
/// presenting `identity` (none: no certificate), sends nothing, and reads: returns the error that
/// ended the connection (`received fatal alert: ...`), or `Ok(())` when the collector closed it
/// cleanly, sent data, or kept it open for 2 s (accepted: it waits for a request). Sending nothing matters: a client that sent its request while the
/// server refused its certificate may see a TCP reset instead of the server's alert.
pub fn raw_tls_read_error(port: u16, ca: &Path, identity: Option<&Identity>) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(ca) {
        roots.add(c).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some(id) => builder.with_client_auth_cert(load_certs(&id.cert), load_key(&id.key)).unwrap(),
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        use tokio::io::AsyncReadExt;
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = connector.connect(name, tcp).await.map_err(|e| error_chain(&e))?;
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_secs(2), tls.read(&mut buf)).await {
            Ok(Ok(_)) | Err(_) => Ok(()),
            Ok(Err(e)) => Err(error_chain(&e)),
        }
    })
}

/// `s` percent-encoded like nginx's `$ssl_client_escaped_cert` (everything but unreserved
/// characters).
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
