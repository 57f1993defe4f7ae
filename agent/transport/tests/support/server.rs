//! An in-test collector: HTTPS on 127.0.0.1 with client-certificate verification (rustls
//! `WebPkiClientVerifier`), HTTP/1.1 written by hand so that faults can be scripted per request
//! (a connection reset or a stall mid-answer is out of reach of a well-behaved HTTP server).

use super::pki::{Ca, Identity};
use guestward_report::ingest::{BatchResult, BatchStatus, IngestRequest, IngestResponse};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the server does with one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Store the reports (idempotent on batch_id), answer 200 with an `IngestResponse`.
    Store,
    /// Answer this status with an `ErrorBody`, storing nothing; `Retry-After` when given.
    Status(u16, Option<String>),
    /// 200 with a body that is not JSON.
    Garbage,
    /// Close the TCP connection abruptly (RST) without answering.
    Reset,
    /// Send the answer's head and a few bytes of body, then nothing.
    Stall,
    /// 422 when the request holds this batch id, else `Store`.
    RefuseBatch(String),
    /// This status with the HTML page a proxy in front of the collector answers (nginx's
    /// "400 The SSL certificate error"), not the collector's `ErrorBody`.
    Proxy(u16),
}

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Serial of the client certificate presented on the connection.
    pub serial: u64,
    /// Batch ids in the request, in order.
    pub batch_ids: Vec<String>,
    /// When it arrived.
    pub at: Instant,
    /// Size of the (compressed) request body.
    pub body_len: usize,
}

#[derive(Default)]
struct Shared {
    script: VecDeque<Reply>,
    /// Used when the script is empty.
    default: Option<Reply>,
    seen: Vec<Seen>,
    /// Stored batch ids, in storage order.
    stored: Vec<String>,
    handshake_errors: Vec<String>,
}

pub struct Server {
    pub port: u16,
    shared: Arc<Mutex<Shared>>,
}

pub struct ServerOptions {
    pub tls12_only: bool,
}

impl Server {
    /// A collector with `cert` (signed by some CA) that accepts clients of `client_ca`.
    pub fn start(client_ca: &Ca, cert: &Identity) -> Self {
        Self::start_with(client_ca, cert, ServerOptions { tls12_only: false })
    }

    pub fn start_with(client_ca: &Ca, cert: &Identity, options: ServerOptions) -> Self {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(client_ca.pem().as_bytes()).unwrap()).unwrap();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .unwrap();
        let versions: &[&'static rustls::SupportedProtocolVersion] = if options.tls12_only {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let chain = vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Mutex::new(Shared { default: Some(Reply::Store), ..Default::default() }));
        let s = shared.clone();
        // Its own thread and runtime: it outlives the test's runtime calls and is never blocked
        // by the code under test.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((tcp, _)) = listener.accept().await else { continue };
                    let acceptor = acceptor.clone();
                    let s = s.clone();
                    tokio::spawn(async move { serve(acceptor, tcp, s).await });
                }
            });
        });
        Self { port, shared }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Replies for the next requests, in order; then `Store` (or the default).
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.lock().unwrap().script.extend(replies);
    }

    /// What to do once the script is used up.
    pub fn set_default(&self, reply: Reply) {
        self.shared.lock().unwrap().default = Some(reply);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.lock().unwrap().seen.clone()
    }

    pub fn stored(&self) -> Vec<String> {
        self.shared.lock().unwrap().stored.clone()
    }

    pub fn handshake_errors(&self) -> Vec<String> {
        self.shared.lock().unwrap().handshake_errors.clone()
    }
}

async fn serve(acceptor: tokio_rustls::TlsAcceptor, tcp: tokio::net::TcpStream, shared: Arc<Mutex<Shared>>) {
    let mut tls = match acceptor.accept(tcp).await {
        Ok(t) => t,
        Err(e) => {
            shared.lock().unwrap().handshake_errors.push(e.to_string());
            return;
        }
    };
    let serial = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(serial_of).unwrap_or(0);
    let client_host = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(common_name_of);
    loop {
        let Some(body) = read_request(&mut tls).await else { return };
        let json = zstd::stream::decode_all(&body[..]).unwrap_or_default();
        let request: Option<IngestRequest> = serde_json::from_slice(&json).ok();
        let batch_ids: Vec<String> = request
            .as_ref()
            .map(|r| r.reports.iter().map(|r| r.batch_id.clone()).collect())
            .unwrap_or_default();
        let reply = {
            let mut s = shared.lock().unwrap();
            s.seen.push(Seen {
                serial,
                batch_ids: batch_ids.clone(),
                at: Instant::now(),
                body_len: body.len(),
            });
            let next = s.script.pop_front();
            next.or_else(|| s.default.clone()).unwrap_or(Reply::Store)
        };
        let reply = match reply {
            Reply::RefuseBatch(id) if batch_ids.contains(&id) => Reply::Status(422, None),
            Reply::RefuseBatch(_) => Reply::Store,
            r => r,
        };
        // As the real collector: a certificate delivers only its own host's reports (subject
        // CN = agent.host_id), and a request holding another host's report stores nothing.
        let another_host = request
            .as_ref()
            .and_then(|r| r.reports.iter().find(|r| r.agent.host_id.as_deref() != client_host.as_deref()));
        if let (Reply::Store, Some(other)) = (&reply, another_host) {
            let body = format!(
                r#"{{"error":"forbidden","message":"report {} is for host {:?}, not the certificate's"}}"#,
                other.batch_id,
                other.agent.host_id.as_deref().unwrap_or("")
            );
            if respond(&mut tls, 403, &[], body.as_bytes()).await.is_err() {
                return;
            }
            continue;
        }
        match reply {
            Reply::Store => {
                let Some(request) = request else {
                    let _ = respond(
                        &mut tls,
                        422,
                        &[],
                        br#"{"error":"invalid_report","message":"not an IngestRequest"}"#,
                    )
                    .await;
                    continue;
                };
                let mut results = Vec::new();
                {
                    let mut s = shared.lock().unwrap();
                    for r in &request.reports {
                        let status = if s.stored.contains(&r.batch_id) {
                            BatchStatus::Duplicate
                        } else {
                            s.stored.push(r.batch_id.clone());
                            BatchStatus::Stored
                        };
                        results.push(BatchResult {
                            batch_id: r.batch_id.clone(),
                            sequence: r.sequence,
                            status,
                        });
                    }
                }
                let body = serde_json::to_vec(&IngestResponse { results }).unwrap();
                if respond(&mut tls, 200, &[], &body).await.is_err() {
                    return;
                }
            }
            Reply::Status(code, retry_after) => {
                let headers: Vec<(&str, String)> =
                    retry_after.map(|v| ("Retry-After", v)).into_iter().collect();
                let body = format!(
                    r#"{{"error":"scripted","message":"scripted answer {code} for {}"}}"#,
                    batch_ids.join(",")
                );
                if respond(&mut tls, code, &headers, body.as_bytes()).await.is_err() {
                    return;
                }
            }
            Reply::Proxy(code) => {
                let page = format!(
                    "<html>\r\n<head><title>{code} Bad Request</title></head>\r\n<body>\r\n<center><h1>{code} \
                     Bad Request</h1></center>\r\n<center>The SSL certificate error</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
                );
                if respond(&mut tls, code, &[], page.as_bytes()).await.is_err() {
                    return;
                }
            }
            Reply::Garbage => {
                if respond(&mut tls, 200, &[], b"<html>\x00\xff not json").await.is_err() {
                    return;
                }
            }
            Reply::Reset => {
                let (tcp, _) = tls.into_inner();
                let _ = tcp.set_zero_linger();
                drop(tcp);
                return;
            }
            Reply::Stall => {
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"results\":")
                    .await;
                let _ = tls.flush().await;
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            Reply::RefuseBatch(_) => unreachable!(),
        }
    }
}

/// Reads one HTTP/1.1 request; returns its body, or `None` when the connection ended.
async fn read_request<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 << 10 {
            return None;
        }
        let n = s.read(&mut byte).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = s.read(&mut byte).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&byte[..n]);
    }
    Some(body)
}

async fn respond<S: tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    code: u16,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head =
        format!("HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    s.flush().await
}

/// The certificate's serial number as an integer (test serials fit in a u64).
/// The subject CN: the host id the certificate was issued for.
fn common_name_of(der: &CertificateDer<'_>) -> String {
    use x509_cert::der::Decode;
    let cn = x509_cert::der::asn1::ObjectIdentifier::new_unwrap("2.5.4.3");
    let cert = x509_cert::Certificate::from_der(der.as_ref()).unwrap();
    let rdns = cert.tbs_certificate.subject.0;
    let value =
        rdns.iter().flat_map(|rdn| rdn.0.iter()).find(|atv| atv.oid == cn).unwrap().value.value().to_vec();
    String::from_utf8(value).unwrap()
}

fn serial_of(der: &CertificateDer<'_>) -> u64 {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(der.as_ref()).unwrap();
    cert.tbs_certificate.serial_number.as_bytes().iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}
