//! Berkeley DB hash `Packages` files, read directly (no libdb), read-only.
//!
//! Layout (Berkeley DB's `db_page.h`, as described in its documentation and summarised in
//! this crate's README): page 0 is the hash meta page (generic 72-byte `DBMETA`: magic
//! 0x061561 at byte 12, version at 16, page size at 20, encryption at 24, page type 8 at 25,
//! meta flags at 26, last page number at 32). Every other page starts with a 26-byte header
//! (`pgno` 8, `prev_pgno` 12, `next_pgno` 16, `entries` 20, `hf_offset` 22, `type` 25). A
//! hash page (type 13, or 2 for pre-4.6 unsorted) holds `entries` u16 item offsets after the
//! header; items come in key/data pairs, item *i* runs from its offset to the previous
//! item's offset (the page end for item 0). The first byte of an item is its kind:
//! 1 = key/data in place, 3 = off-page (`pgno` u32 at 4, total length u32 at 8) stored in a
//! chain of overflow pages (type 7) whose `hf_offset` is the number of data bytes on that
//! page and `next_pgno` the next page (0 ends the chain). All integers are in the byte order
//! of the machine that wrote the file, which the meta magic reveals.
//!
//! rpm stores each header under a 4-byte key (the header instance, in file byte order) and
//! keeps a record under key 0 (the next instance number), which is skipped.
//!
//! Rather than following hash buckets (whose chains an attacker could loop), every page is
//! visited once in file order and each hash page's items are read; only overflow chains are
//! followed, with a step bound.

use crate::RawBlob;
use crate::error::FormatError;
use crate::header::HeaderError;
use crate::source::ReadAt;

const HASH_MAGIC: u32 = 0x0006_1561;
const BTREE_MAGIC: u32 = 0x0005_3162;
const PAGE_HEADER: usize = 26;
const P_HASH_UNSORTED: u8 = 2;
const P_OVERFLOW: u8 = 7;
const P_HASHMETA: u8 = 8;
const P_HASH: u8 = 13;
const H_KEYDATA: u8 = 1;
const H_DUPLICATE: u8 = 2;
const H_OFFPAGE: u8 = 3;
const H_OFFDUP: u8 = 4;
const DBMETA_CHKSUM: u8 = 0x01;

/// True when the bytes at the start of a file look like a Berkeley DB hash database
/// (either byte order).
pub fn looks_like_bdb_hash(start: &[u8]) -> bool {
    start.get(12..16).is_some_and(|m| {
        let m = [m[0], m[1], m[2], m[3]];
        u32::from_le_bytes(m) == HASH_MAGIC || u32::from_be_bytes(m) == HASH_MAGIC
    })
}

#[derive(Clone, Copy)]
struct Order {
    big: bool,
}

impl Order {
    fn u32(self, b: &[u8], at: usize) -> u32 {
        let mut a = [0u8; 4];
        if let Some(s) = b.get(at..at + 4) {
            a.copy_from_slice(s);
        }
        if self.big { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) }
    }

    fn u16(self, b: &[u8], at: usize) -> u16 {
        let mut a = [0u8; 2];
        if let Some(s) = b.get(at..at + 2) {
            a.copy_from_slice(s);
        }
        if self.big { u16::from_be_bytes(a) } else { u16::from_le_bytes(a) }
    }
}

/// Facts from the meta page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Page size in bytes.
    pub page_size: u32,
    /// Pages we will visit (bounded by the file length).
    pub pages: u32,
    /// True for a big-endian file.
    pub big_endian: bool,
}

/// Reads and validates the meta page.
pub fn read_meta<R: ReadAt + ?Sized>(src: &R) -> Result<(Meta, Vec<FormatError>), FormatError> {
    let mut m = [0u8; 512];
    src.read_exact_at(&mut m, 0)
        .map_err(|_| FormatError::new(0, "file is shorter than a Berkeley DB meta page (512 bytes)"))?;
    let le = u32::from_le_bytes([m[12], m[13], m[14], m[15]]);
    let be = u32::from_be_bytes([m[12], m[13], m[14], m[15]]);
    let order = if le == HASH_MAGIC {
        Order { big: false }
    } else if be == HASH_MAGIC {
        Order { big: true }
    } else if le == BTREE_MAGIC || be == BTREE_MAGIC {
        return Err(FormatError::new(12, "a Berkeley DB btree, not the hash database rpm uses for Packages"));
    } else {
        return Err(FormatError::new(12, format!("no Berkeley DB hash magic (found {le:#010x})")));
    };
    let page_size = order.u32(&m, 20);
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(FormatError::new(
            20,
            format!("page size {page_size} is not a power of two in 512..=65536"),
        ));
    }
    if m[24] != 0 {
        return Err(FormatError::new(24, "encrypted database; not supported"));
    }
    if m[25] != P_HASHMETA {
        return Err(FormatError::new(25, format!("meta page type {} is not a hash meta page (8)", m[25])));
    }
    if m[26] & DBMETA_CHKSUM != 0 {
        // Checksummed pages have a longer header; rpm never enables checksums for Packages.
        return Err(FormatError::new(26, "page checksums enabled; not supported"));
    }
    let last_pgno = order.u32(&m, 32);
    let mut problems = Vec::new();
    let in_file = src.len() / u64::from(page_size);
    let claimed = u64::from(last_pgno) + 1;
    if claimed > in_file {
        problems.push(FormatError::new(
            32,
            format!("meta page claims {claimed} pages but the file holds {in_file}: truncated; reading what is there"),
        ));
    }
    // Both are bounded by u32 (claimed <= 2^32) so the min fits.
    let pages = u32::try_from(claimed.min(in_file)).unwrap_or(u32::MAX);
    Ok((Meta { page_size, pages, big_endian: order.big }, problems))
}

/// Streams every header blob (key != 0) to `sink`, in page order. Returns the problems met
/// in the page structure; a fatal problem (bad meta page) is the `Err`.
pub fn read_blobs<R: ReadAt + ?Sized>(
    src: &R,
    max_blob_bytes: u64,
    sink: &mut dyn FnMut(RawBlob),
) -> Result<Vec<FormatError>, FormatError> {
    let (meta, mut problems) = read_meta(src)?;
    let order = Order { big: meta.big_endian };
    let ps = meta.page_size as usize;
    let mut page = vec![0u8; ps];
    for pgno in 1..meta.pages {
        let page_off = u64::from(pgno) * u64::from(meta.page_size);
        let mut head = [0u8; PAGE_HEADER];
        if src.read_exact_at(&mut head, page_off).is_err() {
            problems.push(FormatError::new(page_off, format!("page {pgno} unreadable")));
            break;
        }
        if head[25] != P_HASH && head[25] != P_HASH_UNSORTED {
            continue;
        }
        if src.read_exact_at(&mut page, page_off).is_err() {
            problems.push(FormatError::new(page_off, format!("page {pgno} unreadable")));
            break;
        }
        read_hash_page(src, &meta, order, pgno, page_off, &page, max_blob_bytes, sink, &mut problems);
    }
    Ok(problems)
}

#[allow(clippy::too_many_arguments)]
fn read_hash_page<R: ReadAt + ?Sized>(
    src: &R,
    meta: &Meta,
    order: Order,
    pgno: u32,
    page_off: u64,
    page: &[u8],
    max_blob_bytes: u64,
    sink: &mut dyn FnMut(RawBlob),
    problems: &mut Vec<FormatError>,
) {
    let ps = page.len();
    let entries = usize::from(order.u16(page, 20));
    let index_end = PAGE_HEADER + 2 * entries;
    if index_end > ps {
        problems.push(FormatError::new(
            page_off + 20,
            format!("hash page {pgno}: {entries} entries do not fit the page"),
        ));
        return;
    }
    // Item i spans [offset(i), offset(i-1)) with the page end for i == 0.
    let item = |i: usize| -> Option<&[u8]> {
        let start = usize::from(order.u16(page, PAGE_HEADER + 2 * i));
        let end = if i == 0 { ps } else { usize::from(order.u16(page, PAGE_HEADER + 2 * (i - 1))) };
        if start < index_end || start >= end || end > ps {
            return None;
        }
        page.get(start..end)
    };
    let mut i = 0;
    while i + 1 < entries {
        let key_at = page_off + u64::from(order.u16(page, PAGE_HEADER + 2 * i));
        let (Some(key), Some(data)) = (item(i), item(i + 1)) else {
            problems.push(FormatError::new(
                key_at,
                format!("hash page {pgno}: item {i} or {} out of bounds", i + 1),
            ));
            i += 2;
            continue;
        };
        i += 2;
        if key[0] != H_KEYDATA || key.len() != 5 {
            problems
                .push(FormatError::new(key_at, format!("hash page {pgno}: key is not a 4-byte in-page key")));
            continue;
        }
        let record = order.u32(key, 1);
        if record == 0 {
            continue; // rpm's own bookkeeping record
        }
        let data_at = page_off + (data.as_ptr() as usize - page.as_ptr() as usize) as u64;
        let blob = match data[0] {
            H_KEYDATA => Ok(data[1..].to_vec()),
            H_OFFPAGE if data.len() >= 12 => {
                let start = order.u32(data, 4);
                let tlen = order.u32(data, 8);
                if u64::from(tlen) > max_blob_bytes {
                    Err(HeaderError::TooLarge { len: u64::from(tlen), limit: max_blob_bytes })
                } else {
                    match read_overflow(src, meta, order, start, tlen as usize) {
                        Ok(b) => Ok(b),
                        Err(e) => {
                            problems.push(e);
                            continue;
                        }
                    }
                }
            }
            H_DUPLICATE | H_OFFDUP => {
                problems.push(FormatError::new(
                    data_at,
                    format!("hash page {pgno}: duplicate-key item; rpm never writes these, skipped"),
                ));
                continue;
            }
            other => {
                problems
                    .push(FormatError::new(data_at, format!("hash page {pgno}: unknown item kind {other}")));
                continue;
            }
        };
        sink(RawBlob { record, offset: Some(data_at), data: blob });
    }
}

/// Follows an overflow chain, collecting exactly `tlen` bytes. The number of pages visited is
/// bounded by the pages the length needs and by the file's page count, so a cyclic chain
/// ends with an error instead of looping (a revisited page is reported as a loop).
fn read_overflow<R: ReadAt + ?Sized>(
    src: &R,
    meta: &Meta,
    order: Order,
    start: u32,
    tlen: usize,
) -> Result<Vec<u8>, FormatError> {
    let ps = meta.page_size as usize;
    let per_page = ps - PAGE_HEADER;
    let max_steps = (tlen / per_page + 1).min(meta.pages as usize);
    let mut out = Vec::with_capacity(tlen);
    let mut pgno = start;
    let mut page = vec![0u8; ps];
    let mut steps = 0usize;
    let mut visited = std::collections::HashSet::new();
    while out.len() < tlen {
        let off = u64::from(pgno) * u64::from(meta.page_size);
        if pgno == 0 || pgno >= meta.pages {
            return Err(FormatError::new(
                off,
                format!("overflow chain from page {start} points to page {pgno}, outside the file"),
            ));
        }
        steps += 1;
        if !visited.insert(pgno) {
            return Err(FormatError::new(
                off,
                format!("overflow chain from page {start} visits page {pgno} twice (a loop)"),
            ));
        }
        if steps > max_steps {
            return Err(FormatError::new(
                off,
                format!("overflow chain from page {start} is longer than its {tlen} bytes need (a loop?)"),
            ));
        }
        src.read_exact_at(&mut page, off)
            .map_err(|_| FormatError::new(off, format!("overflow page {pgno} unreadable")))?;
        if page[25] != P_OVERFLOW {
            return Err(FormatError::new(
                off + 25,
                format!("page {pgno} in an overflow chain has type {}", page[25]),
            ));
        }
        let len = usize::from(order.u16(&page, 22));
        let Some(chunk) = page.get(PAGE_HEADER..PAGE_HEADER + len) else {
            return Err(FormatError::new(
                off + 22,
                format!("overflow page {pgno} claims {len} bytes, more than a page holds"),
            ));
        };
        let take = chunk.len().min(tlen - out.len());
        out.extend_from_slice(&chunk[..take]);
        pgno = order.u32(&page, 16);
        if pgno == 0 && out.len() < tlen {
            return Err(FormatError::new(
                off + 16,
                format!("overflow chain from page {start} ends after {} of {tlen} bytes", out.len()),
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    // The fixtures built here are a few hundred bytes: their lengths and offsets fit every type.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_possible_truncation)]
    use super::*;

    /// A minimal little-endian hash file: meta page, one hash page with one in-page item and
    /// one off-page item whose overflow chain is given.
    fn file(chain_next: u32) -> Vec<u8> {
        let ps = 512usize;
        let mut f = vec![0u8; ps * 4];
        f[12..16].copy_from_slice(&HASH_MAGIC.to_le_bytes());
        f[16..20].copy_from_slice(&9u32.to_le_bytes());
        f[20..24].copy_from_slice(&(ps as u32).to_le_bytes());
        f[25] = P_HASHMETA;
        f[32..36].copy_from_slice(&3u32.to_le_bytes());
        // Page 1: hash page with 4 items: key 7 -> "abc" in page, key 8 -> off-page.
        let p = &mut f[ps..2 * ps];
        p[25] = P_HASH;
        p[20..22].copy_from_slice(&4u16.to_le_bytes());
        let items: [Vec<u8>; 4] = [
            [vec![H_KEYDATA], 7u32.to_le_bytes().to_vec()].concat(),
            vec![H_KEYDATA, b'a', b'b', b'c'],
            [vec![H_KEYDATA], 8u32.to_le_bytes().to_vec()].concat(),
            [vec![H_OFFPAGE, 0, 0, 0], 2u32.to_le_bytes().to_vec(), 600u32.to_le_bytes().to_vec()].concat(),
        ];
        let mut end = ps;
        for (i, it) in items.iter().enumerate() {
            let start = end - it.len();
            p[start..end].copy_from_slice(it);
            p[26 + 2 * i..28 + 2 * i].copy_from_slice(&(start as u16).to_le_bytes());
            end = start;
        }
        // Pages 2 and 3: overflow chain 2 -> 3 carrying 600 bytes of 'x'.
        for (pg, next, len) in [(2usize, 3u32, 486u16), (3, chain_next, 114)] {
            let p = &mut f[pg * ps..(pg + 1) * ps];
            p[25] = P_OVERFLOW;
            p[16..20].copy_from_slice(&next.to_le_bytes());
            p[22..24].copy_from_slice(&len.to_le_bytes());
            for b in &mut p[26..26 + usize::from(len)] {
                *b = b'x';
            }
        }
        f
    }

    fn collect(f: &[u8]) -> (Vec<RawBlob>, Vec<FormatError>) {
        let mut got = Vec::new();
        let problems = read_blobs(f, 1 << 20, &mut |b| got.push(b)).unwrap();
        (got, problems)
    }

    #[test]
    fn reads_in_page_and_overflow_items() {
        let (got, problems) = collect(&file(0));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].record, 7);
        assert_eq!(got[0].data.as_deref().unwrap(), b"abc");
        assert_eq!(got[1].record, 8);
        assert_eq!(got[1].data.as_deref().unwrap(), vec![b'x'; 600].as_slice());
    }

    #[test]
    fn a_cyclic_overflow_chain_ends_with_an_error() {
        // Page 3 points back to page 2, but 2 pages already hold all 600 bytes: the chain
        // is then complete; make the length need more so the loop is exercised.
        let mut f = file(2);
        let p = &mut f[512..1024];
        let at = usize::from(u16::from_le_bytes([p[26 + 6], p[27 + 6]]));
        p[at + 8..at + 12].copy_from_slice(&100_000u32.to_le_bytes());
        let (got, problems) = collect(&f);
        assert_eq!(got.len(), 1, "the in-page item is still read");
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].reason.contains("longer than") || problems[0].reason.contains("loop"),
            "{problems:?}"
        );
    }

    #[test]
    fn truncation_is_reported_and_the_rest_read() {
        let f = file(0);
        let (got, problems) = collect(&f[..512 * 3]);
        assert_eq!(got.len(), 1);
        assert!(problems.iter().any(|p| p.reason.contains("truncated")), "{problems:?}");
        assert!(problems.iter().any(|p| p.reason.contains("outside the file")), "{problems:?}");
    }

    #[test]
    fn rejects_non_hash_files() {
        assert!(read_meta(&[0u8; 100][..]).is_err());
        assert!(read_meta(&[0u8; 512][..]).is_err());
        let mut f = file(0);
        f[20..24].copy_from_slice(&1000u32.to_le_bytes());
        assert!(read_meta(&f[..]).is_err());
    }
}
