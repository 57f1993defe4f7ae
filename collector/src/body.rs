//! Request bodies: read under a size cap and a deadline; zstd decompressed under a second cap.

use crate::api::ApiError;
use http_body_util::BodyExt;
use hyper::StatusCode;
use hyper::body::Incoming;
use std::io::Read;
use std::time::{Duration, Instant};

/// After the cap is passed, the rest of the body is read and thrown away up to this much more,
/// within this long, so the client reads the 413 instead of a connection reset.
const DRAIN_BYTES: u64 = 16 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);
/// Largest zstd window accepted (2^23 = 8 MiB): the decoder allocates the window a frame asks
/// for, so an unbounded one is a memory bomb of its own. zstd uses at most 2^21 below level 10.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

#[derive(Debug)]
pub(crate) enum BodyError {
    TooLarge,
    Timeout,
    Read(String),
}

/// Reads `body` up to `cap` bytes before `deadline`.
pub(crate) async fn read_body(
    mut body: Incoming,
    cap: u64,
    declared: Option<u64>,
    deadline: Instant,
) -> Result<Vec<u8>, BodyError> {
    let deadline = tokio::time::Instant::from_std(deadline);
    if declared.is_some_and(|n| n > cap) {
        drain(body, deadline).await;
        return Err(BodyError::TooLarge);
    }
    let mut out = Vec::with_capacity(usize::try_from(declared.unwrap_or(0)).unwrap_or(0));
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) => return Ok(out),
            Ok(Some(Err(e))) => return Err(BodyError::Read(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if out.len() as u64 + data.len() as u64 > cap {
                drain(body, deadline).await;
                return Err(BodyError::TooLarge);
            }
            out.extend_from_slice(&data);
        }
    }
}

async fn drain(mut body: Incoming, deadline: tokio::time::Instant) {
    let until = deadline.min(tokio::time::Instant::now() + DRAIN_TIME);
    let mut seen = 0u64;
    while seen < DRAIN_BYTES {
        match tokio::time::timeout_at(until, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    seen += d.len() as u64;
                }
            }
            _ => return,
        }
    }
}

/// Decompresses a zstd body (one or several concatenated frames: the shipper streams its
/// request as frames) up to `cap` bytes. Memory stays bounded by `cap` plus the window, however
/// large the body claims to expand: a bomb is cut off at `cap` + 1 bytes, not inflated.
pub(crate) fn decompress_zstd(body: &[u8], cap: u64) -> Result<Vec<u8>, ApiError> {
    let bad = |e: std::io::Error| {
        // The library is built without its error texts ("Error strings stripped"): say what
        // the usual causes are instead of repeating that.
        let detail = e.to_string();
        let detail = if detail.contains("stripped") { String::new() } else { format!(" ({detail})") };
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!(
                "the body is not valid zstd{detail}: damaged, not zstd, or frames that ask for a window \
                 over {} MiB (zstd --long or levels above 19), which the collector refuses",
                1u32 << (ZSTD_WINDOW_LOG_MAX - 20)
            ),
        )
    };
    let mut decoder = zstd::stream::read::Decoder::new(body).map_err(bad)?;
    decoder.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(bad)?;
    let mut out = Vec::new();
    decoder.take(cap.saturating_add(1)).read_to_end(&mut out).map_err(bad)?;
    if out.len() as u64 > cap {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body decompresses to more than {cap} bytes (limits.max_decompressed_bytes)"),
        ));
    }
    Ok(out)
}
