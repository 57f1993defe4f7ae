//! Typed errors of the network collector.

use std::path::PathBuf;

/// Why sockets could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The netlink socket could not be opened, or a request failed.
    #[error("netlink sock_diag {operation} failed: {source}")]
    Netlink {
        /// What was being done (`socket`, `send`, `recv`, `dump tcp/ipv4`...).
        operation: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The kernel answered a dump with an error code.
    #[error("netlink sock_diag dump of {what} was refused by the kernel: {source}")]
    NetlinkRefused {
        /// Which dump.
        what: String,
        /// The errno the kernel returned.
        source: std::io::Error,
    },
    /// A netlink message could not be decoded.
    #[error("netlink sock_diag dump of {what}: undecodable message: {message}")]
    NetlinkDecode {
        /// Which dump.
        what: String,
        /// The decoder's description.
        message: String,
    },
    /// A `/proc/net` table could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The table.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A `/proc/net` line could not be parsed. Other lines are still used.
    #[error("{}:{line}: malformed socket entry ({reason}): {content:?}", path.display())]
    MalformedLine {
        /// The table.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What was wrong.
        reason: String,
        /// The line (capped at 200 characters).
        content: String,
    },
}

impl NetworkError {
    /// A stable machine-readable code for reports.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Netlink { .. } | Self::NetlinkRefused { .. } => "netlink_unavailable",
            Self::NetlinkDecode { .. } => "malformed",
            Self::Read { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
                "permission_denied"
            }
            Self::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => "not_found",
            Self::Read { .. } => "io",
            Self::MalformedLine { .. } => "malformed",
        }
    }

    /// This error as a report problem.
    pub fn to_problem(&self) -> guestward_core::Problem {
        let p = guestward_core::Problem::new(self.code(), self.to_string());
        match self {
            Self::Read { path, .. } => p.with_path(path.display().to_string()),
            Self::MalformedLine { path, line, .. } => {
                p.with_path(path.display().to_string()).with_line(*line)
            }
            _ => p,
        }
    }
}
