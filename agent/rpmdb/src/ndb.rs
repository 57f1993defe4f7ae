//! rpm's "ndb" `Packages.db` (SUSE), read-only.
//!
//! Layout (rpm's `lib/backend/ndb/rpmpkg.c`; all integers little-endian): a 32-byte file
//! header (`"RpmP"` magic, version 0, generation, number of 4 KiB slot pages, next package
//! index) followed, in the slot pages, by 16-byte slots (`"Slot"` magic, package index — 0
//! for a free slot —, block offset, block count; blocks are 16 bytes). Each package's blob
//! starts at `block offset * 16` with a 16-byte head (`"BlbS"`, package index, timestamp,
//! blob length) and its blocks end with a 12-byte tail (Adler-32 of everything from the head
//! to the tail, blob length, `"BlbE"`).

use crate::RawBlob;
use crate::error::FormatError;
use crate::header::HeaderError;
use crate::source::ReadAt;

const FILE_MAGIC: u32 = u32::from_le_bytes(*b"RpmP");
const SLOT_MAGIC: u32 = u32::from_le_bytes(*b"Slot");
const BLOB_HEAD_MAGIC: u32 = u32::from_le_bytes(*b"BlbS");
const BLOB_TAIL_MAGIC: u32 = u32::from_le_bytes(*b"BlbE");
const SLOT_PAGE: usize = 4096;
const SLOT_SIZE: usize = 16;
const BLOCK: u64 = 16;
const HEAD: usize = 16;
const TAIL: usize = 12;
/// The 32-byte file header occupies the first two slots of page 0.
const FIRST_SLOT: usize = 2;

/// True when a file starts with the ndb magic.
pub fn looks_like_ndb(start: &[u8]) -> bool {
    start.get(..4) == Some(&b"RpmP"[..])
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

/// Streams every package blob to `sink`, in slot order. A bad slot or blob is a problem for
/// that package only; a bad file header is the `Err`.
pub fn read_blobs<R: ReadAt + ?Sized>(
    src: &R,
    max_blob_bytes: u64,
    sink: &mut dyn FnMut(RawBlob),
) -> Result<Vec<FormatError>, FormatError> {
    let mut head = [0u8; 32];
    src.read_exact_at(&mut head, 0)
        .map_err(|_| FormatError::new(0, "file is shorter than the 32-byte ndb header"))?;
    if le32(&head, 0) != FILE_MAGIC {
        return Err(FormatError::new(0, "no ndb magic \"RpmP\""));
    }
    let version = le32(&head, 4);
    if version != 0 {
        return Err(FormatError::new(4, format!("ndb version {version} is not supported (only 0)")));
    }
    let slot_pages = le32(&head, 12);
    let mut problems = Vec::new();
    if slot_pages == 0 {
        return Err(FormatError::new(12, "ndb header claims no slot pages"));
    }
    let file_pages = src.len() / SLOT_PAGE as u64;
    let pages = if u64::from(slot_pages) > file_pages {
        problems.push(FormatError::new(
            12,
            format!("ndb header claims {slot_pages} slot pages but the file holds {file_pages}: truncated"),
        ));
        file_pages
    } else {
        u64::from(slot_pages)
    };
    let mut page = vec![0u8; SLOT_PAGE];
    for p in 0..pages {
        let page_off = p * SLOT_PAGE as u64;
        if src.read_exact_at(&mut page, page_off).is_err() {
            problems.push(FormatError::new(page_off, format!("slot page {p} unreadable")));
            break;
        }
        let first = if p == 0 { FIRST_SLOT } else { 0 };
        for s in first..SLOT_PAGE / SLOT_SIZE {
            let at = s * SLOT_SIZE;
            let slot_off = page_off + at as u64;
            if le32(&page, at) != SLOT_MAGIC {
                problems.push(FormatError::new(slot_off, "slot without \"Slot\" magic; skipped"));
                continue;
            }
            let pkgidx = le32(&page, at + 4);
            if pkgidx == 0 {
                continue; // free slot
            }
            let blkoff = u64::from(le32(&page, at + 8));
            let blkcnt = u64::from(le32(&page, at + 12));
            match read_blob(src, pkgidx, blkoff, blkcnt, max_blob_bytes) {
                Ok(Some(blob)) => sink(blob),
                Ok(None) => {}
                Err(e) => problems.push(e),
            }
        }
    }
    Ok(problems)
}

fn read_blob<R: ReadAt + ?Sized>(
    src: &R,
    pkgidx: u32,
    blkoff: u64,
    blkcnt: u64,
    max_blob_bytes: u64,
) -> Result<Option<RawBlob>, FormatError> {
    let start = blkoff * BLOCK;
    let total = blkcnt * BLOCK;
    if blkoff == 0 || total < (HEAD + TAIL) as u64 {
        return Err(FormatError::new(
            start,
            format!("package {pkgidx}: slot points to {blkcnt} blocks at block {blkoff}"),
        ));
    }
    if start.checked_add(total).is_none_or(|end| end > src.len()) {
        return Err(FormatError::new(start, format!("package {pkgidx}: blob runs past the end of the file")));
    }
    let mut head = [0u8; HEAD];
    src.read_exact_at(&mut head, start)
        .map_err(|_| FormatError::new(start, format!("package {pkgidx}: blob head unreadable")))?;
    if le32(&head, 0) != BLOB_HEAD_MAGIC || le32(&head, 4) != pkgidx {
        return Err(FormatError::new(start, format!("package {pkgidx}: blob head magic or index wrong")));
    }
    let bloblen = u64::from(le32(&head, 12));
    if bloblen > max_blob_bytes {
        return Ok(Some(RawBlob {
            record: pkgidx,
            offset: Some(start),
            data: Err(HeaderError::TooLarge { len: bloblen, limit: max_blob_bytes }),
        }));
    }
    if bloblen + (HEAD + TAIL) as u64 > total {
        return Err(FormatError::new(
            start + 12,
            format!("package {pkgidx}: blob length {bloblen} exceeds its {blkcnt} blocks"),
        ));
    }
    // The slot's block count is bounded only by the file length; rpm allocates exactly the
    // blocks a blob needs, so refuse much more than that rather than read a huge range.
    let needed = (bloblen + (HEAD + TAIL) as u64).div_ceil(BLOCK) * BLOCK;
    if total > needed + BLOCK * 256 {
        return Err(FormatError::new(
            start,
            format!("package {pkgidx}: {blkcnt} blocks for a {bloblen}-byte blob"),
        ));
    }
    // `total` is at most the blob plus 257 blocks; on a 32-bit target it may still not fit.
    let total_len = usize::try_from(total).map_err(|_| {
        FormatError::new(start, format!("package {pkgidx}: {total}-byte blob does not fit in memory"))
    })?;
    let all = src
        .read_vec_at(start, total_len)
        .map_err(|_| FormatError::new(start, format!("package {pkgidx}: blob unreadable")))?;
    let tail_at = all.len() - TAIL;
    let tail = &all[tail_at..];
    if le32(tail, 8) != BLOB_TAIL_MAGIC || u64::from(le32(tail, 4)) != bloblen {
        return Err(FormatError::new(
            start + tail_at as u64,
            format!("package {pkgidx}: blob tail magic or length wrong"),
        ));
    }
    let mut adler = adler2::Adler32::new();
    adler.write_slice(&all[..tail_at]);
    let stored = le32(tail, 0);
    if adler.checksum() != stored {
        return Err(FormatError::new(
            start + tail_at as u64,
            format!("package {pkgidx}: blob checksum mismatch (Adler-32)"),
        ));
    }
    // bloblen + HEAD + TAIL <= total (checked above) and `all` holds `total` bytes, so the
    // conversion cannot fail and the range lies inside `all`.
    let data = usize::try_from(bloblen)
        .ok()
        .and_then(|len| all.get(HEAD..HEAD.checked_add(len)?))
        .ok_or_else(|| {
            FormatError::new(start + 12, format!("package {pkgidx}: blob length {bloblen} out of range"))
        })?
        .to_vec();
    Ok(Some(RawBlob { record: pkgidx, offset: Some(start), data: Ok(data) }))
}

#[cfg(test)]
mod tests {
    // The fixtures built here are a few hundred bytes: their lengths and offsets fit every type.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_possible_truncation)]
    use super::*;

    fn file(blobs: &[(u32, &[u8])]) -> Vec<u8> {
        let mut f = vec![0u8; SLOT_PAGE];
        f[0..4].copy_from_slice(b"RpmP");
        f[12..16].copy_from_slice(&1u32.to_le_bytes());
        for s in FIRST_SLOT..SLOT_PAGE / SLOT_SIZE {
            f[s * 16..s * 16 + 4].copy_from_slice(b"Slot");
        }
        for (i, (idx, data)) in blobs.iter().enumerate() {
            let start = f.len();
            let len = (HEAD + data.len() + TAIL).div_ceil(16) * 16;
            let mut b = vec![0u8; len];
            b[0..4].copy_from_slice(b"BlbS");
            b[4..8].copy_from_slice(&idx.to_le_bytes());
            b[12..16].copy_from_slice(&(data.len() as u32).to_le_bytes());
            b[16..16 + data.len()].copy_from_slice(data);
            let mut a = adler2::Adler32::new();
            a.write_slice(&b[..len - TAIL]);
            b[len - 12..len - 8].copy_from_slice(&a.checksum().to_le_bytes());
            b[len - 8..len - 4].copy_from_slice(&(data.len() as u32).to_le_bytes());
            b[len - 4..].copy_from_slice(b"BlbE");
            f.extend(b);
            let s = (FIRST_SLOT + i) * 16;
            f[s + 4..s + 8].copy_from_slice(&idx.to_le_bytes());
            f[s + 8..s + 12].copy_from_slice(&((start / 16) as u32).to_le_bytes());
            f[s + 12..s + 16].copy_from_slice(&((len / 16) as u32).to_le_bytes());
        }
        f
    }

    fn collect(f: &[u8]) -> (Vec<RawBlob>, Vec<FormatError>) {
        let mut got = Vec::new();
        let problems = read_blobs(f, 1 << 20, &mut |b| got.push(b)).unwrap();
        (got, problems)
    }

    #[test]
    fn reads_blobs_in_slot_order() {
        let (got, problems) = collect(&file(&[(3, b"hello"), (9, b"world!")]));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].record, got[0].data.as_deref().unwrap()), (3, &b"hello"[..]));
        assert_eq!((got[1].record, got[1].data.as_deref().unwrap()), (9, &b"world!"[..]));
    }

    #[test]
    fn a_damaged_blob_is_reported_and_the_others_read() {
        let mut f = file(&[(3, b"hello"), (9, b"world!")]);
        f[SLOT_PAGE + 17] ^= 0xff; // inside blob 3's data: checksum no longer matches
        let (got, problems) = collect(&f);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].record, 9);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].reason.contains("checksum"), "{problems:?}");
        assert_eq!(problems[0].offset, (SLOT_PAGE + 48 - TAIL) as u64);
    }

    #[test]
    fn slots_pointing_outside_the_file_are_reported() {
        let mut f = file(&[(3, b"hello")]);
        f[FIRST_SLOT * 16 + 8..FIRST_SLOT * 16 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        let (got, problems) = collect(&f);
        assert!(got.is_empty());
        assert!(problems[0].reason.contains("past the end"), "{problems:?}");
    }

    #[test]
    fn rejects_other_files() {
        let mut sink = |_b: RawBlob| {};
        assert!(read_blobs(&b"RpmP"[..], 100, &mut sink).is_err());
        assert!(read_blobs(&[0u8; 4096][..], 100, &mut sink).is_err());
    }
}
