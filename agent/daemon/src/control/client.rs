//! The `agentctl` side of the control socket: a small typed HTTP client over a Unix socket.

use super::protocol::{ErrorBody, MAX_RESPONSE_BYTES};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

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
    /// The socket exists but we may not connect.
    #[error("permission denied on {}: run as root or as a member of the guestward group", socket.display())]
    PermissionDenied {
        /// The socket path.
        socket: PathBuf,
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

/// A client bound to one socket path.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client for the daemon listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self { socket: socket.into() }
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
        let transport = |e: &dyn std::fmt::Display| ClientError::Transport {
            socket: self.socket.clone(),
            message: e.to_string(),
        };
        let stream = tokio::net::UnixStream::connect(&self.socket).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                ClientError::NotRunning { socket: self.socket.clone() }
            }
            std::io::ErrorKind::PermissionDenied => {
                ClientError::PermissionDenied { socket: self.socket.clone() }
            }
            _ => transport(&e),
        })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| transport(&e))?;
        let driver = tokio::spawn(connection);
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
        driver.abort();
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
