//! How a finding's or event's JSON is kept: zstd-compressed when that pays, plain otherwise,
//! with its length recorded either way.
//!
//! Why: a host decides what its events hold, and a long repetitive string costs almost nothing
//! on the wire (zstd body) while it once took its full length in the database, tens of MB per
//! request of a few KB. Stored compressed, a request costs on disk about what it cost to send.

use crate::store::StoreError;
use rusqlite::types::ValueRef;
use std::io::Read;

/// JSON shorter than this stays plain: zstd's frame and block headers take about a dozen bytes
/// and short JSON has few repeats, so the gain would be small next to what its row costs anyway
/// (its keys, `schema::row_cost`), and plain rows are read without a decoder.
pub(super) const COMPRESS_FROM_BYTES: usize = 512;
/// zstd level: as for the reports (fast, and JSON still compresses several times).
const ZSTD_LEVEL: i32 = 3;
/// Largest zstd window a stored value may ask for when it is read back: level 3 uses at most
/// 2 MiB. A damaged or planted value asking for more is refused instead of costing memory.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// A value ready for its column.
#[derive(Debug)]
pub(super) struct StoredJson {
    /// What goes into the column (a blob either way).
    pub bytes: Vec<u8>,
    /// Whether `bytes` is a zstd frame.
    pub compressed: bool,
    /// The JSON's length.
    pub json_len: usize,
}

/// Compresses values, reusing one zstd context (making one costs more than compressing a small
/// event), made when the first value long enough comes.
#[derive(Default)]
pub(super) struct Encoder {
    compressor: Option<zstd::bulk::Compressor<'static>>,
}

impl Encoder {
    /// `json` as it will be stored: compressed when it is long enough and comes out shorter.
    pub(super) fn encode(&mut self, json: Vec<u8>) -> Result<StoredJson, StoreError> {
        let json_len = json.len();
        if json_len >= COMPRESS_FROM_BYTES {
            let zstd_err =
                |e: std::io::Error| StoreError::Database(format!("cannot compress a finding or event: {e}"));
            let compressor = match &mut self.compressor {
                Some(compressor) => compressor,
                none => none.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(zstd_err)?),
            };
            let packed = compressor.compress(&json).map_err(zstd_err)?;
            if packed.len() < json_len {
                return Ok(StoredJson { bytes: packed, compressed: true, json_len });
            }
        }
        Ok(StoredJson { bytes: json, compressed: false, json_len })
    }
}

/// The bytes of a stored value in column `index` of `row`: a blob, or text in rows written
/// before compression; `None` for NULL (a value the query chose not to read).
pub(super) fn value_bytes(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Option<Vec<u8>>> {
    match row.get_ref(index)? {
        ValueRef::Null => Ok(None),
        ValueRef::Text(b) | ValueRef::Blob(b) => Ok(Some(b.to_vec())),
        other => Err(rusqlite::Error::InvalidColumnType(
            index,
            "a stored finding or event".into(),
            other.data_type(),
        )),
    }
}

/// The JSON of a stored value. A compressed one is inflated to its recorded length `json_len`
/// and no further: a value that would inflate to more (damage, or a planted row) is an error
/// after `json_len + 1` bytes, never an allocation of what it claims. The caller bounds
/// `json_len` itself (the events of a host's detail are read only while they fit in 1 MiB).
pub(super) fn decode(
    stored: Vec<u8>,
    compressed: bool,
    json_len: u64,
    what: &str,
) -> Result<Vec<u8>, StoreError> {
    if !compressed {
        return Ok(stored);
    }
    let corrupt = |reason: String| StoreError::Corrupt { what: what.to_string(), reason };
    let mut decoder =
        zstd::stream::read::Decoder::with_buffer(stored.as_slice()).map_err(|e| corrupt(e.to_string()))?;
    decoder.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(|e| corrupt(e.to_string()))?;
    // Never trust the recorded length for an allocation up front.
    let mut json = Vec::with_capacity(usize::try_from(json_len.min(1 << 20)).unwrap_or(0));
    decoder.take(json_len.saturating_add(1)).read_to_end(&mut json).map_err(|e| corrupt(e.to_string()))?;
    let inflated = u64::try_from(json.len()).unwrap_or(u64::MAX);
    if inflated > json_len {
        return Err(corrupt(format!("inflates to more than the {json_len} bytes recorded")));
    }
    if inflated < json_len {
        return Err(corrupt(format!("inflates to {inflated} bytes, not the {json_len} recorded")));
    }
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_json_is_compressed_and_short_or_incompressible_json_stays_plain() {
        let mut enc = Encoder::default();
        let long = format!("{{\"x\":\"{}\"}}", "A".repeat(1 << 20)).into_bytes();
        let stored = enc.encode(long.clone()).unwrap();
        assert!(stored.compressed);
        assert!(stored.bytes.len() < 1000, "{} bytes", stored.bytes.len());
        assert_eq!(stored.json_len, long.len());
        assert_eq!(decode(stored.bytes, true, long.len() as u64, "t").unwrap(), long);

        let short = br#"{"kind":"fim.change"}"#.to_vec();
        let stored = enc.encode(short.clone()).unwrap();
        assert!(!stored.compressed);
        assert_eq!(stored.bytes, short);
        // 4 KiB of random bytes: zstd cannot make them shorter.
        let mut state = 0x9E37_79B9_u32;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state.to_le_bytes()[1]
            })
            .collect();
        let stored = enc.encode(noise.clone()).unwrap();
        assert!(!stored.compressed, "stored compressed at {} bytes", stored.bytes.len());
        assert_eq!(stored.bytes, noise);
    }

    /// A zstd frame of `blocks` RLE blocks of 128 KiB of zeros: 4 bytes per block, so a frame
    /// of 64 KiB inflates to 2 GiB (built by hand from RFC 8878: magic, a frame header with a
    /// 128 KiB window and no content size, then the blocks).
    fn rle_bomb(blocks: usize) -> Vec<u8> {
        let mut frame = vec![0x28, 0xB5, 0x2F, 0xFD, 0x00, 7 << 3];
        for i in 0..blocks {
            let last = u32::from(i + 1 == blocks);
            let header = (128u32 << 10) << 3 | 1 << 1 | last;
            frame.extend_from_slice(&header.to_le_bytes()[..3]);
            frame.push(0);
        }
        frame
    }

    /// A value that inflates past its recorded length (2 GiB of zeros claiming 100 bytes) is
    /// refused after 101 bytes, not inflated: at once, and without the memory.
    #[test]
    fn a_value_inflating_past_its_recorded_length_is_refused_without_inflating_it() {
        let bomb = rle_bomb(16 << 10);
        assert_eq!(zstd::bulk::decompress(&rle_bomb(2), 1 << 20).unwrap(), vec![0u8; 256 << 10]);
        let started = std::time::Instant::now();
        let e = decode(bomb, true, 100, "an event").unwrap_err();
        assert!(e.to_string().contains("more than the 100 bytes recorded"), "{e}");
        // Inflating the 2 GiB takes seconds; stopping after 101 bytes takes microseconds.
        assert!(started.elapsed() < std::time::Duration::from_millis(250), "{:?}", started.elapsed());
        // Shorter than recorded is damage too.
        let small = zstd::bulk::compress(b"{}", 3).unwrap();
        let e = decode(small, true, 3, "an event").unwrap_err();
        assert!(e.to_string().contains("inflates to 2 bytes, not the 3 recorded"), "{e}");
    }
}
