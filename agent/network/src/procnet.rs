//! Fallback: the text tables under `/proc/net`, parsed by the `procfs` crate.
//!
//! Each line is handed to `procfs` on its own, so a malformed line yields one
//! [`NetworkError::MalformedLine`] naming that line while every other line is still used (the
//! crate itself would reject the whole table).

use crate::error::NetworkError;
use crate::model::{Family, Protocol};
use crate::raw::{RawInet, RawUnix};
use procfs::net::{TcpNetEntries, UdpNetEntries, UnixNetEntries};
use procfs::{ExplicitSystemInfo, FromBufRead, FromBufReadSI};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// A /proc/net line is about 150 bytes; anything far longer is not a socket entry.
const MAX_LINE_BYTES: u64 = 4096;
/// Content quoted in an error.
const MAX_QUOTED_CHARS: usize = 200;
/// `__SO_ACCEPTCON` in the Flags column of /proc/net/unix: the socket is listening.
const SO_ACCEPTCON: u32 = 0x0001_0000;
/// `SOCK_STREAM` in the Type column of /proc/net/unix.
const SOCK_STREAM: u16 = 1;

fn system_info() -> ExplicitSystemInfo {
    // Only endianness matters for socket tables (addresses are printed in host byte order).
    ExplicitSystemInfo {
        boot_time_secs: 0,
        ticks_per_second: 100,
        page_size: 4096,
        is_little_endian: cfg!(target_endian = "little"),
    }
}

/// Calls `each(line_number, line)` for every line after the header, with bounded line length.
fn for_each_line(path: &Path, mut each: impl FnMut(u64, &str) -> bool) -> Result<(), NetworkError> {
    let file = std::fs::File::open(path)
        .map_err(|source| NetworkError::Read { path: path.to_path_buf(), source })?;
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut line = Vec::with_capacity(256);
    let mut number = 0u64;
    loop {
        line.clear();
        let read = reader
            .by_ref()
            .take(MAX_LINE_BYTES)
            .read_until(b'\n', &mut line)
            .map_err(|source| NetworkError::Read { path: path.to_path_buf(), source })?;
        if read == 0 {
            return Ok(());
        }
        number += 1;
        if line.last() != Some(&b'\n') && read as u64 >= MAX_LINE_BYTES {
            // Skip the rest of an over-long line so the next one starts clean; the partial
            // content will fail to parse and be reported.
            let mut sink = Vec::new();
            let _ = reader.by_ref().take(1 << 20).read_until(b'\n', &mut sink);
        }
        if number == 1 {
            continue; // header
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches('\n');
        if text.trim().is_empty() {
            continue;
        }
        if !each(number, text) {
            return Ok(());
        }
    }
}

fn malformed(path: &Path, line: u64, content: &str, reason: impl std::fmt::Display) -> NetworkError {
    NetworkError::MalformedLine {
        path: path.to_path_buf(),
        line,
        reason: reason.to_string(),
        content: content.chars().take(MAX_QUOTED_CHARS).collect(),
    }
}

/// What procfs says about a line it could not parse. Its parse failures surface as
/// "internal error ... please report this procfs bug", which would mislead a reader: the bug is
/// in the input. Keep only the field-level message.
fn parse_reason(e: &procfs::ProcError) -> String {
    let text = match e {
        procfs::ProcError::InternalError(i) => i.msg.clone(),
        other => other.to_string(),
    };
    let text = text.trim_start_matches("Internal Unwrap Error: ");
    let first = text.lines().next().unwrap_or("unparsable line");
    match first.strip_suffix("NoneError") {
        Some("") => "a field is missing or has an unknown value".to_string(),
        Some(field) => format!("missing or invalid {}", field.trim_end_matches(": ")),
        None => first.to_string(),
    }
}

/// Reads one `/proc/net/{tcp,tcp6,udp,udp6}` table. Returns whether `cap` was reached.
pub(crate) fn read_inet_table(
    path: &Path,
    protocol: Protocol,
    family: Family,
    cap: usize,
    out: &mut Vec<RawInet>,
    problems: &mut Vec<NetworkError>,
) -> Result<bool, NetworkError> {
    let si = system_info();
    let mut full = false;
    for_each_line(path, |number, text| {
        if out.len() >= cap {
            full = true;
            return false;
        }
        // The procfs parsers skip a header line, hence the leading newline.
        let one = format!("\n{text}\n");
        let parsed = match protocol {
            Protocol::Tcp => TcpNetEntries::from_buf_read(one.as_bytes(), &si).map(|t| {
                t.0.into_iter()
                    .map(|e| (e.local_address, e.remote_address, e.state.to_u8(), e.inode, e.uid))
                    .collect::<Vec<_>>()
            }),
            Protocol::Udp => UdpNetEntries::from_buf_read(one.as_bytes(), &si).map(|t| {
                t.0.into_iter()
                    .map(|e| (e.local_address, e.remote_address, e.state.to_u8(), e.inode, e.uid))
                    .collect::<Vec<_>>()
            }),
        };
        match parsed {
            Ok(entries) => {
                for (local, remote, state, inode, uid) in entries {
                    out.push(RawInet {
                        protocol,
                        family,
                        local,
                        remote,
                        state,
                        inode,
                        uid,
                        interface_index: 0,
                        v6_only: None,
                    });
                }
            }
            Err(e) => problems.push(malformed(path, number, text, parse_reason(&e))),
        }
        true
    })?;
    Ok(full)
}

/// Reads listening Unix stream sockets from `/proc/net/unix`. Returns whether `cap` was reached.
pub(crate) fn read_unix_listeners(
    path: &Path,
    cap: usize,
    out: &mut Vec<RawUnix>,
    problems: &mut Vec<NetworkError>,
) -> Result<bool, NetworkError> {
    let mut full = false;
    for_each_line(path, |number, text| {
        // procfs does not expose the Flags column, which is the only place /proc/net/unix says
        // whether a socket listens; read that one field ourselves.
        let flags = text.split_ascii_whitespace().nth(3).and_then(|f| u32::from_str_radix(f, 16).ok());
        let one = format!("\n{text}\n");
        match (UnixNetEntries::from_buf_read(one.as_bytes()), flags) {
            (Ok(entries), Some(flags)) => {
                for e in entries.0 {
                    if e.socket_type != SOCK_STREAM || flags & SO_ACCEPTCON == 0 {
                        continue;
                    }
                    if out.len() >= cap {
                        full = true;
                        return false;
                    }
                    out.push(RawUnix { path: e.path.map(|p| p.display().to_string()), inode: e.inode });
                }
            }
            (Err(e), _) => problems.push(malformed(path, number, text, parse_reason(&e))),
            (Ok(_), None) => problems.push(malformed(path, number, text, "unreadable Flags column")),
        }
        true
    })?;
    Ok(full)
}
