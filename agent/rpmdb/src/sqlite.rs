//! `rpmdb.sqlite`: the `Packages` table (`hnum INTEGER PRIMARY KEY, blob BLOB`) holds one
//! header blob per installed package.

use crate::RawBlob;
use crate::error::RpmdbError;
use crate::header::HeaderError;
use rusqlite::{Connection, OpenFlags};
use std::path::Path;

/// Percent-encodes the characters that would change the meaning of a `file:` URI.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for b in path.as_os_str().as_encoded_bytes() {
        match b {
            b'%' | b'?' | b'#' => out.push_str(&format!("%{b:02X}")),
            // Non-ASCII bytes are escaped too so a non-UTF-8 path survives intact.
            0x80..=0xff => out.push_str(&format!("%{b:02X}")),
            _ => out.push(char::from(*b)),
        }
    }
    out
}

/// Opens the database read-only without ever writing next to it.
///
/// `immutable=1` tells SQLite the file cannot change: no locks, no `-shm`/`-wal` files are
/// created, so a read-only mounted snapshot works. That would ignore committed transactions
/// still sitting in a non-empty `-wal` file on a live host, so when one exists we first open
/// plainly read-only (rpm itself keeps the `-shm` there), and fall back to `immutable` only
/// if that fails.
fn open(real_path: &Path) -> Result<Connection, rusqlite::Error> {
    let flags =
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut wal = real_path.as_os_str().to_owned();
    wal.push("-wal");
    let wal_in_use = std::fs::symlink_metadata(&wal).map(|m| m.is_file() && m.len() > 0).unwrap_or(false);
    let uri = uri_path(real_path);
    if wal_in_use
        && let Ok(c) = Connection::open_with_flags(format!("file:{uri}?mode=ro"), flags)
        // Opening is lazy: make sure the schema is readable before trusting this path.
        && c.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)).is_ok()
    {
        return Ok(c);
    }
    Connection::open_with_flags(format!("file:{uri}?mode=ro&immutable=1"), flags)
}

/// Streams every header blob to `sink`, in `hnum` order. Blobs above `max_blob_bytes` are
/// reported as [`HeaderError::TooLarge`] without being loaded.
pub(crate) fn read_blobs(
    real_path: &Path,
    shown_path: &Path,
    max_blob_bytes: u64,
    max_headers: usize,
    sink: &mut dyn FnMut(RawBlob),
) -> Result<Vec<RpmdbError>, RpmdbError> {
    let err = |source| RpmdbError::Sqlite { path: shown_path.to_owned(), source };
    let conn = open(real_path).map_err(err)?;
    let limit = i64::try_from(max_blob_bytes).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare("SELECT hnum, length(blob), CASE WHEN length(blob) <= ?1 THEN blob END FROM Packages ORDER BY hnum")
        .map_err(err)?;
    let mut rows = stmt.query([limit]).map_err(err)?;
    let mut seen = 0usize;
    let mut problems = Vec::new();
    while let Some(row) = rows.next().map_err(err)? {
        if seen >= max_headers {
            problems.push(RpmdbError::TooManyHeaders { path: shown_path.to_owned(), limit: max_headers });
            break;
        }
        seen += 1;
        let hnum: i64 = row.get(0).map_err(err)?;
        let record = u32::try_from(hnum).unwrap_or(u32::MAX);
        let len: Option<i64> = row.get(1).map_err(err)?;
        let bytes: Option<Vec<u8>> = row.get(2).map_err(err)?;
        let data = match bytes {
            Some(b) => Ok(b),
            None => Err(HeaderError::TooLarge {
                len: len.and_then(|l| u64::try_from(l).ok()).unwrap_or(0),
                limit: max_blob_bytes,
            }),
        };
        sink(RawBlob { record, offset: None, data });
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_escapes_query_characters() {
        assert_eq!(uri_path(Path::new("/a b/x?y#z%")), "/a b/x%3Fy%23z%25");
    }
}
