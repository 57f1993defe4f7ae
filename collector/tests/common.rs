//! The harness: a PKI in a temporary directory, a collector on a free port, clients.

use guestward_collector::config::{self, Overrides, RawConfig, ServeConfig};
use guestward_collector::pki::{self, IssueOptions};
use guestward_core::Timestamp;
use guestward_report::ingest::IngestRequest;
use guestward_report::{AgentInfo, HostIdSource, Report};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;

/// Runs an async test on its own runtime, failing (not hanging) after `limit`.
pub fn run<F, Fut>(limit: Duration, what: &str, f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    guestward_core::testing::within(limit, what, move || {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(f());
    });
}

pub const HOST_A: &str = "host-a";
pub const HOST_B: &str = "host-b";
pub const OPERATOR: &str = "ops";

/// A running collector and its PKI.
pub struct Harness {
    pub dir: TempDir,
    pub addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Who a client is.
#[derive(Clone, Copy)]
pub enum Who<'a> {
    Agent(&'a str),
    Operator(&'a str),
    Nobody,
}

pub fn new_pki(dir: &Path) -> PathBuf {
    let pki_dir = dir.join("pki");
    pki::init(&pki_dir, IssueOptions::default()).unwrap();
    for h in [HOST_A, HOST_B] {
        pki::issue_agent(&pki_dir, h, IssueOptions::default()).unwrap();
    }
    pki::issue_operator(&pki_dir, OPERATOR, IssueOptions::default()).unwrap();
    pki_dir
}

pub fn test_config(dir: &Path) -> ServeConfig {
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".into()),
        pki_dir: Some(dir.join("pki")),
        db: Some(dir.join("collector.db")),
    };
    config::validate(RawConfig::default(), Path::new(""), &overrides).unwrap()
}

impl Harness {
    /// A fresh PKI and a collector with the default config as changed by `tweak`.
    pub async fn start(tweak: impl FnOnce(&mut ServeConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        new_pki(dir.path());
        Self::start_in(dir, tweak).await
    }

    /// A collector on an existing directory (with `pki/`).
    pub async fn start_in(dir: TempDir, tweak: impl FnOnce(&mut ServeConfig)) -> Self {
        let mut cfg = test_config(dir.path());
        tweak(&mut cfg);
        let server = guestward_collector::bind(&cfg).await.unwrap();
        let addr = server.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            server
                .run(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Self { dir, addr, _stop: tx }
    }

    pub fn pki(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// A reqwest client that pins the collector CA and presents `who`'s certificate.
    pub fn client(&self, who: Who<'_>) -> reqwest::Client {
        self.builder(who).build().unwrap()
    }

    pub fn builder(&self, who: Who<'_>) -> reqwest::ClientBuilder {
        let ca = std::fs::read(self.pki().join("ca.pem")).unwrap();
        let mut b = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
            .resolve("localhost", self.addr)
            .timeout(Duration::from_secs(20))
            .no_proxy();
        let dir = match who {
            Who::Agent(h) => Some(self.pki().join("agents").join(h)),
            Who::Operator(n) => Some(self.pki().join("operators").join(n)),
            Who::Nobody => None,
        };
        if let Some(dir) = dir {
            b = b.identity(identity(&dir.join("cert.pem"), &dir.join("key.pem")));
        }
        b
    }

    /// `GET /v1/hosts` as the operator: the host ids stored.
    pub async fn stored_hosts(&self) -> Vec<guestward_report::ingest::HostSummary> {
        let resp = self.client(Who::Operator(OPERATOR)).get(self.url("/v1/hosts")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.json::<guestward_report::ingest::HostList>().await.unwrap().hosts
    }
}

pub fn identity(cert: &Path, key: &Path) -> reqwest::Identity {
    let mut pem = std::fs::read(cert).unwrap();
    pem.extend(std::fs::read(key).unwrap());
    reqwest::Identity::from_pem(&pem).unwrap()
}

/// A daemon report of `host` with one finding and one event.
pub fn report(host: &str, sequence: u64) -> Report {
    let agent = AgentInfo {
        version: "9.9.9".into(),
        host_id: Some(host.into()),
        host_id_source: HostIdSource::Config,
    };
    let mut r = Report::new(agent, Timestamp::now());
    r.sequence = Some(sequence);
    r.findings.push(guestward_core::Finding {
        id: "GW-TEST-001".into(),
        severity: guestward_core::Severity::High,
        title: format!("finding of report {sequence}"),
        evidence: serde_json::json!({"sequence": sequence}),
        remediation: "none".into(),
        source: "test".into(),
    });
    r.events.push(guestward_core::Event {
        kind: "test.event".into(),
        time: Timestamp::now(),
        data: serde_json::json!({"sequence": sequence}),
    });
    r
}

pub fn body(reports: &[Report]) -> Vec<u8> {
    serde_json::to_vec(&IngestRequest { reports: reports.to_vec() }).unwrap()
}

/// POSTs `body` (JSON, uncompressed) as `client`.
pub async fn post(h: &Harness, client: &reqwest::Client, body: Vec<u8>) -> reqwest::Response {
    client
        .post(h.url("/v1/reports"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The whole error chain of a failed request, for assertions and failure messages.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(e) = src {
        s.push_str(": ");
        s.push_str(&e.to_string());
        src = e.source();
    }
    s
}

pub fn localhost2() -> IpAddr {
    IpAddr::from([127, 0, 0, 2])
}

/// Starts the real `guestward-collector serve --config CONFIG`, its stderr to `stderr`, and
/// returns it with the address it printed once listening.
pub fn serve_binary(config: &Path, stderr: std::process::Stdio) -> (std::process::Child, SocketAddr) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_guestward-collector"))
        .args(["serve", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr: SocketAddr = line.trim().trim_start_matches("listening on ").parse().unwrap();
    (child, addr)
}
