//! The `agentctl` side of the control socket: a small typed HTTP client over a Unix socket.

use guestward_report::protocol::{ErrorBody, MAX_RESPONSE_BYTES};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long `agentctl` waits for the daemon to accept its connection. Accepting is instant for
/// a healthy daemon; it only takes long when the daemon's connection queue is full.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `agentctl` waits for an answer (status, report, findings, fim...).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `agentctl scan` and `agentctl ports` wait: they run a scan, which can take
/// minutes on a big host, after any scan already in progress.
pub const SCAN_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// Why a control request failed, phrased for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error(
        "the guestward agent is not running (nothing listening on {}); start it with `systemctl start guestward-agent`",
        socket.display()
    )]
    NotRunning {
        /// The socket path.
        socket: PathBuf,
    },
    /// The path exists but is no socket (a regular file, a directory...): a wrong `--socket`
    /// or `control.socket_path`, not a stopped agent, so "start it" would mislead.
    #[error(
        "{} is a {kind}, not a socket, so no agent can listen there; give the agent's control socket with --socket PATH, or set control.socket_path in /etc/guestward/agent.toml",
        socket.display()
    )]
    NotASocket {
        /// The path given.
        socket: PathBuf,
        /// What it is instead ([`guestward_core::file_kind`]).
        kind: &'static str,
    },
    /// The socket exists but we may not connect.
    #[error("permission denied on {}: run as root or as a member of the guestward group", socket.display())]
    PermissionDenied {
        /// The socket path.
        socket: PathBuf,
    },
    /// The daemon did not accept the connection, or did not answer, in time.
    #[error(
        "the agent on {} {}: it may be busy or hung; see `systemctl status guestward-agent` and `journalctl -u guestward-agent`{}",
        socket.display(),
        match phase {
            TimeoutPhase::Connect => format!("accepted no connection within {} s", waited.as_secs_f64()),
            TimeoutPhase::Answer => format!("did not answer within {} s", waited.as_secs_f64()),
        },
        match phase {
            TimeoutPhase::Connect => "",
            TimeoutPhase::Answer => ", or give it longer with --timeout SECS",
        }
    )]
    Timeout {
        /// The socket path.
        socket: PathBuf,
        /// What was awaited.
        phase: TimeoutPhase,
        /// How long we waited.
        waited: Duration,
    },
    /// Connecting or talking failed otherwise.
    #[error("talking to the agent on {}: {message}", socket.display())]
    Transport {
        /// The socket path.
        socket: PathBuf,
        /// What failed.
        message: String,
    },
    /// The daemon answered with an error.
    #[error("the agent answered {status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The daemon's explanation.
        message: String,
    },
    /// The answer was not what this agentctl understands (version mismatch?).
    #[error("unexpected answer from the agent (is agentctl the same version as the daemon?): {0}")]
    Decode(String),
}

/// What a [`ClientError::Timeout`] waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// The daemon accepting the connection.
    Connect,
    /// The daemon's answer (sending the request, and reading the whole answer).
    Answer,
}

/// A client bound to one socket path.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    connect_timeout: Duration,
    request_timeout: Duration,
}

impl Client {
    /// A client for the daemon listening on `socket`, with the default timeouts
    /// ([`DEFAULT_CONNECT_TIMEOUT`], [`DEFAULT_REQUEST_TIMEOUT`]).
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// The same client with other timeouts. Every request is bounded: a daemon (or anything
    /// else listening on the path) that accepts and never answers makes the request fail
    /// after `request`, naming the socket, instead of hanging the terminal.
    pub fn with_timeouts(mut self, connect: Duration, request: Duration) -> Self {
        self.connect_timeout = connect;
        self.request_timeout = request;
        self
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET path`, decoding the JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.request(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body, decoding the JSON answer.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.request(Method::POST, path, Some(bytes)).await
    }

    async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let stream = self.connect().await?;
        let timeout = |phase, waited| ClientError::Timeout { socket: self.socket.clone(), phase, waited };
        tokio::time::timeout(self.request_timeout, self.exchange(stream, method, path, body))
            .await
            .map_err(|_| timeout(TimeoutPhase::Answer, self.request_timeout))?
    }

    /// Connects within the connect timeout. A daemon whose accept queue is full makes a
    /// non-blocking connect fail with `EAGAIN` at once; that is retried (briefly spaced) until
    /// the timeout, since the queue drains as the daemon closes idle connections.
    async fn connect(&self) -> Result<tokio::net::UnixStream, ClientError> {
        let started = Instant::now();
        loop {
            let attempt = tokio::time::timeout(
                self.connect_timeout.saturating_sub(started.elapsed()),
                tokio::net::UnixStream::connect(&self.socket),
            )
            .await;
            let error = match attempt {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) => e,
                Err(_) => std::io::Error::from(std::io::ErrorKind::WouldBlock),
            };
            match error.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    // connect(2) refuses a path that is no socket just as it refuses a socket
                    // nobody listens on: look at what is there before blaming the agent.
                    use std::os::unix::fs::FileTypeExt;
                    return Err(match std::fs::metadata(&self.socket) {
                        Ok(meta) if !meta.file_type().is_socket() => ClientError::NotASocket {
                            socket: self.socket.clone(),
                            kind: guestward_core::file_kind(meta.file_type()),
                        },
                        _ => ClientError::NotRunning { socket: self.socket.clone() },
                    });
                }
                std::io::ErrorKind::PermissionDenied => {
                    return Err(ClientError::PermissionDenied { socket: self.socket.clone() });
                }
                std::io::ErrorKind::WouldBlock if started.elapsed() < self.connect_timeout => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                std::io::ErrorKind::WouldBlock => {
                    return Err(ClientError::Timeout {
                        socket: self.socket.clone(),
                        phase: TimeoutPhase::Connect,
                        waited: self.connect_timeout,
                    });
                }
                _ => {
                    return Err(ClientError::Transport {
                        socket: self.socket.clone(),
                        message: error.to_string(),
                    });
                }
            }
        }
    }

    /// One HTTP exchange on a connected stream.
    async fn exchange<T: DeserializeOwned>(
        &self,
        stream: tokio::net::UnixStream,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let transport = |e: &dyn std::fmt::Display| ClientError::Transport {
            socket: self.socket.clone(),
            message: e.to_string(),
        };
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| transport(&e))?;
        // Aborted however this function ends (a timeout drops it mid-way): the connection task
        // must not outlive the request.
        let _driver = AbortOnDrop(tokio::spawn(connection));
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "guestward-agent")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| transport(&e))?;
        let response = sender.send_request(request).await.map_err(|e| transport(&e))?;
        let status = response.status();
        // Bounded: a confused or hostile peer on the socket cannot make us buffer without limit.
        let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| transport(&e))?
            .to_bytes();
        if status != StatusCode::OK {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| b.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(500).collect());
            if status == StatusCode::FORBIDDEN {
                return Err(ClientError::PermissionDenied { socket: self.socket.clone() });
            }
            return Err(ClientError::Api { status: status.as_u16(), message });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
