//! A bounded parser for rpm header blobs as rpm stores them in its database, and the header
//! digest check rpm applies before it trusts one.
//!
//! Why not the `rpm` crate (DEPENDENCIES.md suggested prefixing a lead and calling
//! `PackageMetadata::parse`): its header parser (0.30) indexes the data store with the entry
//! offset unchecked (`&bytes[entry.offset as usize..]`, a panic on a negative or too-large
//! offset), reserves `num_items` elements before checking they fit (an allocation abort on a
//! count of 2^32), and has no API to verify a bare header's own SHA-256/SHA-1 digest. An rpm
//! database is input we do not trust (a snapshot volume may come from a compromised
//! instance), so the blob is parsed here with every offset and count checked against the
//! blob's own length before it is used, the same checks rpm's `hdrblobVerifyInfo` makes.
//!
//! Blob layout (all integers big-endian; rpm's `doc/manual/format.md`, "Header"):
//! `il: u32, dl: u32, il x { tag: u32, type: u32, offset: i32, count: u32 }, dl bytes of data`.
//! The first entry is normally the immutable region (tag 63): its data is a 16-byte trailer
//! whose negative offset gives the number of entries in the region. Tags rpm adds at install
//! time (INSTALLTIME, the copied signature tags) sit after the region.

use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::borrow::Cow;

/// The 8 bytes rpm writes before a header in a package file (and hashes before the region).
pub const HEADER_MAGIC: [u8; 8] = [0x8e, 0xad, 0xe8, 0x01, 0, 0, 0, 0];
/// rpm's `HEADER_TAGS_MAX`: more index entries than this is not a header.
pub const MAX_INDEX_ENTRIES: u32 = 0xffff;
/// rpm's `HEADER_DATA_MAX` (256 MiB): a larger data store is not a header.
pub const MAX_DATA_BYTES: u32 = 0x0fff_ffff;

const ENTRY_SIZE: usize = 16;

/// Header tag numbers used here (rpm's `rpmtag.h`).
pub mod tags {
    /// Legacy header image region.
    pub const HEADERIMAGE: u32 = 61;
    /// The immutable region of a package header.
    pub const HEADERIMMUTABLE: u32 = 63;
    /// MD5 over header and payload (not checkable without the package file).
    pub const SIGMD5: u32 = 261;
    /// DSA/EdDSA header signature.
    pub const DSAHEADER: u32 = 267;
    /// RSA header signature.
    pub const RSAHEADER: u32 = 268;
    /// SHA-1 of the immutable region, hex.
    pub const SHA1HEADER: u32 = 269;
    /// SHA-256 of the immutable region, hex.
    pub const SHA256HEADER: u32 = 273;
    /// Package name.
    pub const NAME: u32 = 1000;
    /// Upstream version.
    pub const VERSION: u32 = 1001;
    /// Package release.
    pub const RELEASE: u32 = 1002;
    /// Epoch (integer).
    pub const EPOCH: u32 = 1003;
    /// One-line summary.
    pub const SUMMARY: u32 = 1004;
    /// Install time (seconds since the epoch).
    pub const INSTALLTIME: u32 = 1008;
    /// Installed size (32-bit).
    pub const SIZE: u32 = 1009;
    /// Vendor.
    pub const VENDOR: u32 = 1011;
    /// Licence.
    pub const LICENSE: u32 = 1014;
    /// Architecture.
    pub const ARCH: u32 = 1022;
    /// Source package file name.
    pub const SOURCERPM: u32 = 1044;
    /// Installed size (64-bit).
    pub const LONGSIZE: u32 = 5009;
    /// File names of old packages (full paths; newer ones use BASENAMES/DIRNAMES).
    pub const OLDFILENAMES: u32 = 1027;
    /// File sizes (32-bit).
    pub const FILESIZES: u32 = 1028;
    /// File states (CHAR: normal, replaced, not installed, net shared, wrong colour).
    pub const FILESTATES: u32 = 1029;
    /// File modes (`st_mode`, 16-bit).
    pub const FILEMODES: u32 = 1030;
    /// Device numbers of device files.
    pub const FILERDEVS: u32 = 1033;
    /// File modification times (seconds).
    pub const FILEMTIMES: u32 = 1034;
    /// File content digests, hex, in FILEDIGESTALGO (empty for non-regular files).
    pub const FILEDIGESTS: u32 = 1035;
    /// Symlink targets (empty for non-symlinks).
    pub const FILELINKTOS: u32 = 1036;
    /// File flags (`%config`, `%doc`, `%ghost`, `%missingok`...).
    pub const FILEFLAGS: u32 = 1037;
    /// Owner names.
    pub const FILEUSERNAME: u32 = 1039;
    /// Group names.
    pub const FILEGROUPNAME: u32 = 1040;
    /// What `rpm -V` checks per file (`%verify(...)`).
    pub const FILEVERIFYFLAGS: u32 = 1045;
    /// Index into DIRNAMES of each file.
    pub const DIRINDEXES: u32 = 1116;
    /// File base names.
    pub const BASENAMES: u32 = 1117;
    /// Directory names (with a trailing `/`).
    pub const DIRNAMES: u32 = 1118;
    /// File sizes (64-bit; packages with a file of 4 GiB or more).
    pub const LONGFILESIZES: u32 = 5008;
    /// The digest algorithm of FILEDIGESTS (PGP hash algorithm number; absent: MD5).
    pub const FILEDIGESTALGO: u32 = 5011;
    /// Payload digest(s), hex.
    pub const PAYLOADDIGEST: u32 = 5092;
    /// Payload digest algorithm (PGP hash algorithm number).
    pub const PAYLOADDIGESTALGO: u32 = 5093;
}

/// rpm tag data types (`rpmTagType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagType {
    /// No data.
    Null,
    /// Characters.
    Char,
    /// 8-bit integers.
    Int8,
    /// 16-bit integers.
    Int16,
    /// 32-bit integers.
    Int32,
    /// 64-bit integers.
    Int64,
    /// One NUL-terminated string.
    String,
    /// Opaque bytes.
    Bin,
    /// NUL-terminated strings.
    StringArray,
    /// Translated strings (NUL-terminated, one per locale).
    I18nString,
}

impl TagType {
    fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::Null,
            1 => Self::Char,
            2 => Self::Int8,
            3 => Self::Int16,
            4 => Self::Int32,
            5 => Self::Int64,
            6 => Self::String,
            7 => Self::Bin,
            8 => Self::StringArray,
            9 => Self::I18nString,
            _ => return None,
        })
    }

    /// Size of one element for fixed-size types (also its alignment in the data store).
    fn fixed_size(self) -> Option<usize> {
        match self {
            Self::Null => Some(0),
            Self::Char | Self::Int8 | Self::Bin => Some(1),
            Self::Int16 => Some(2),
            Self::Int32 => Some(4),
            Self::Int64 => Some(8),
            Self::String | Self::StringArray | Self::I18nString => None,
        }
    }
}

/// Why a header blob is not a usable rpm header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Fewer than the 8 bytes of the index counts.
    #[error("header blob is {len} bytes, too short for its index counts")]
    TooShort {
        /// Blob length.
        len: usize,
    },
    /// The blob is larger than the configured per-header limit; it was not loaded.
    #[error("header blob is {len} bytes, over the {limit}-byte limit; not read")]
    TooLarge {
        /// Blob length (0 when unknown).
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// The index entry count is zero or above rpm's limit.
    #[error("header claims {il} index entries (rpm allows 1..={max})", max = MAX_INDEX_ENTRIES)]
    BadEntryCount {
        /// The count read.
        il: u32,
    },
    /// The data store size is above rpm's limit.
    #[error("header claims a {dl}-byte data store (rpm allows at most {max})", max = MAX_DATA_BYTES)]
    DataTooLarge {
        /// The size read.
        dl: u32,
    },
    /// The counts do not add up to the blob's length.
    #[error("header counts need {expected} bytes but the blob has {actual}")]
    SizeMismatch {
        /// 8 + 16 * il + dl.
        expected: u64,
        /// Blob length.
        actual: usize,
    },
    /// An index entry points outside the data store or is otherwise invalid.
    #[error("index entry {index} (tag {tag}): {reason}")]
    BadEntry {
        /// 0-based position in the index.
        index: usize,
        /// The entry's tag.
        tag: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// The immutable region tag or its trailer is invalid.
    #[error("immutable region: {reason}")]
    BadRegion {
        /// What is wrong.
        reason: &'static str,
    },
    /// A required tag is missing or has the wrong type.
    #[error("required tag {tag} ({name}) is missing or not a string")]
    MissingTag {
        /// Tag number.
        tag: u32,
        /// Tag name.
        name: &'static str,
    },
    /// The header's own digest does not match its immutable region: rpm refuses such a
    /// header ("Header SHA256 digest: BAD"), and so do we.
    #[error("header {algorithm} digest BAD (expected {expected}, computed {computed})")]
    DigestMismatch {
        /// `SHA256` or `SHA1`.
        algorithm: &'static str,
        /// The value stored in the header.
        expected: String,
        /// The value computed over the immutable region.
        computed: String,
    },
}

/// The strings of one entry, in order ([`Header::strings`]).
#[derive(Debug, Clone)]
pub struct Strings<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Iterator for Strings<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        // `parse` checked that `count` NUL-terminated strings lie inside the entry's bytes; a
        // missing NUL ends the iteration instead of reading past them.
        let Some(nul) = self.rest.iter().position(|c| *c == 0) else {
            self.left = 0;
            return None;
        };
        let s = &self.rest[..nul];
        self.rest = &self.rest[nul + 1..];
        self.left -= 1;
        Some(s)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

impl Strings<'_> {
    /// Strings left, as the entry counts them.
    pub fn len(&self) -> usize {
        self.left
    }

    /// No strings left.
    pub fn is_empty(&self) -> bool {
        self.left == 0
    }
}

/// The values of one integer entry, widened to `u64` ([`Header::ints`]).
#[derive(Debug, Clone)]
pub struct Ints<'a> {
    bytes: &'a [u8],
    width: usize,
}

impl Iterator for Ints<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        let (value, rest) = self.bytes.split_at_checked(self.width)?;
        self.bytes = rest;
        let mut wide = [0u8; 8];
        wide[8 - value.len()..].copy_from_slice(value);
        Some(u64::from_be_bytes(wide))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.len();
        (n, Some(n))
    }
}

impl ExactSizeIterator for Ints<'_> {
    fn len(&self) -> usize {
        self.bytes.len() / self.width
    }
}

/// One validated index entry.
#[derive(Debug, Clone, Copy)]
struct Entry {
    tag: u32,
    ty: TagType,
    offset: usize,
    count: usize,
    /// Bytes the entry's data occupies from `offset` (validated to fit in the store).
    len: usize,
}

/// A header blob whose index has been validated: every entry's data lies inside the store.
#[derive(Debug)]
pub struct Header<'a> {
    index: &'a [u8],
    data: &'a [u8],
    entries: Vec<Entry>,
    /// Entries in the immutable region.
    ril: usize,
    /// Bytes of the data store in the immutable region.
    rdl: usize,
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

impl<'a> Header<'a> {
    /// Validates a blob as stored in an rpm database (optionally preceded by the 8-byte header
    /// magic, as in a package file). Nothing is allocated in proportion to counts read from
    /// the blob beyond one small record per index entry, and the entry count is bounded by the
    /// blob's length.
    pub fn parse(blob: &'a [u8]) -> Result<Self, HeaderError> {
        let blob = blob.strip_prefix(&HEADER_MAGIC[..]).unwrap_or(blob);
        let (il, dl) = match (be_u32(blob, 0), be_u32(blob, 4)) {
            (Some(il), Some(dl)) => (il, dl),
            _ => return Err(HeaderError::TooShort { len: blob.len() }),
        };
        if il == 0 || il > MAX_INDEX_ENTRIES {
            return Err(HeaderError::BadEntryCount { il });
        }
        if dl > MAX_DATA_BYTES {
            return Err(HeaderError::DataTooLarge { dl });
        }
        let expected = 8 + u64::from(il) * ENTRY_SIZE as u64 + u64::from(dl);
        if expected != blob.len() as u64 {
            return Err(HeaderError::SizeMismatch { expected, actual: blob.len() });
        }
        // Both fit in the blob (checked just above), so these conversions and slices hold.
        let il = il as usize;
        let dl = dl as usize;
        let index = &blob[8..8 + il * ENTRY_SIZE];
        let data = &blob[8 + il * ENTRY_SIZE..];
        debug_assert_eq!(data.len(), dl);

        let mut entries = Vec::with_capacity(il);
        for (i, raw) in index.chunks_exact(ENTRY_SIZE).enumerate() {
            entries.push(parse_entry(i, raw, data)?);
        }
        let mut header = Header { index, data, entries, ril: il, rdl: dl };
        header.find_region()?;
        Ok(header)
    }

    /// Locates the immutable region as rpm's `hdrblobVerifyRegion` does. A header without a
    /// region tag (very old packages) is treated as one region covering everything.
    fn find_region(&mut self) -> Result<(), HeaderError> {
        let first = self.entries[0];
        if first.tag != tags::HEADERIMMUTABLE && first.tag != tags::HEADERIMAGE {
            return Ok(());
        }
        if first.ty != TagType::Bin || first.count != ENTRY_SIZE {
            return Err(HeaderError::BadRegion { reason: "region tag is not 16 bytes of BIN" });
        }
        // parse_entry checked offset + 16 <= dl for this BIN entry.
        let trailer = &self.data[first.offset..first.offset + ENTRY_SIZE];
        let ttag = be_u32(trailer, 0).unwrap_or(0);
        let ttype = be_u32(trailer, 4).unwrap_or(u32::MAX);
        let toff = be_u32(trailer, 8).map(|v| v as i32).unwrap_or(0);
        let tcount = be_u32(trailer, 12).unwrap_or(0);
        let tag_ok = ttag == first.tag || (first.tag == tags::HEADERIMMUTABLE && ttag == tags::HEADERIMAGE);
        if !tag_ok || ttype != 7 || tcount as usize != ENTRY_SIZE {
            return Err(HeaderError::BadRegion { reason: "region trailer does not match the region tag" });
        }
        let size = toff.checked_neg().filter(|v| *v > 0).map(|v| v as usize);
        let Some(size) = size.filter(|s| s % ENTRY_SIZE == 0) else {
            return Err(HeaderError::BadRegion {
                reason: "region trailer offset is not a negative multiple of 16",
            });
        };
        let ril = size / ENTRY_SIZE;
        let rdl = first.offset + ENTRY_SIZE;
        if ril > self.entries.len() || rdl > self.data.len() {
            return Err(HeaderError::BadRegion { reason: "region is larger than the header" });
        }
        self.ril = ril;
        self.rdl = rdl;
        Ok(())
    }

    /// Number of index entries.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    fn entry(&self, tag: u32) -> Option<&Entry> {
        self.entries.iter().find(|e| e.tag == tag)
    }

    fn bytes(&self, e: &Entry) -> &'a [u8] {
        // parse_entry validated offset + len <= data.len().
        &self.data[e.offset..e.offset + e.len]
    }

    /// True when the header carries `tag`.
    pub fn has(&self, tag: u32) -> bool {
        self.entry(tag).is_some()
    }

    /// The first string of a STRING, STRING_ARRAY or I18NSTRING entry (rpm strings are
    /// usually UTF-8; anything else is converted lossily).
    pub fn string(&self, tag: u32) -> Option<Cow<'a, str>> {
        let e = self.entry(tag)?;
        match e.ty {
            TagType::String | TagType::StringArray | TagType::I18nString => {
                let b = self.bytes(e);
                let end = b.iter().position(|c| *c == 0)?;
                Some(String::from_utf8_lossy(&b[..end]))
            }
            _ => None,
        }
    }

    /// The first integer of an INT8/16/32/64 entry.
    pub fn integer(&self, tag: u32) -> Option<u64> {
        let e = self.entry(tag)?;
        let b = self.bytes(e);
        match e.ty {
            TagType::Int8 | TagType::Char => b.first().map(|v| u64::from(*v)),
            TagType::Int16 => b.get(..2).map(|s| u64::from(u16::from_be_bytes([s[0], s[1]]))),
            TagType::Int32 => be_u32(b, 0).map(u64::from),
            TagType::Int64 => {
                let s = b.get(..8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(s);
                Some(u64::from_be_bytes(a))
            }
            _ => None,
        }
    }

    /// The bytes of a BIN entry.
    pub fn binary(&self, tag: u32) -> Option<&'a [u8]> {
        let e = self.entry(tag)?;
        (e.ty == TagType::Bin).then(|| self.bytes(e))
    }

    /// Every string of a STRING, STRING_ARRAY or I18NSTRING entry, as raw bytes without the
    /// NUL (file names need not be UTF-8). `parse` checked that `count` strings lie inside the
    /// store, so the loop is bounded by the entry's own bytes.
    pub fn string_array_bytes(&self, tag: u32) -> Option<Vec<&'a [u8]>> {
        let strings = self.strings(tag)?;
        let count = strings.len();
        let mut out = Vec::with_capacity(count);
        out.extend(strings);
        // Fewer than `count`: not what `parse` validated; refused as before.
        (out.len() == count).then_some(out)
    }

    /// [`Self::string_array_bytes`] read one string at a time, without a vector of them all:
    /// a package's file arrays hold one string per file (139k in the largest header measured),
    /// so the whole-array form costs memory in proportion to the largest package.
    pub fn strings(&self, tag: u32) -> Option<Strings<'a>> {
        let e = self.entry(tag)?;
        matches!(e.ty, TagType::String | TagType::StringArray | TagType::I18nString)
            .then(|| Strings { rest: self.bytes(e), left: e.count })
    }

    /// The values of any integer entry (INT8/16/32/64, CHAR) widened to `u64`, read one at a
    /// time (see [`Self::strings`]).
    pub fn ints(&self, tag: u32) -> Option<Ints<'a>> {
        let e = self.entry(tag)?;
        let width = match e.ty {
            TagType::Char | TagType::Int8 => 1,
            TagType::Int16 => 2,
            TagType::Int32 => 4,
            TagType::Int64 => 8,
            _ => return None,
        };
        Some(Ints { bytes: self.bytes(e), width })
    }

    /// [`Self::string_array_bytes`] as text (invalid UTF-8 converted lossily).
    pub fn string_array(&self, tag: u32) -> Option<Vec<Cow<'a, str>>> {
        Some(self.string_array_bytes(tag)?.into_iter().map(String::from_utf8_lossy).collect())
    }

    /// Every value of an INT16 entry.
    pub fn int16_array(&self, tag: u32) -> Option<Vec<u16>> {
        let e = self.entry(tag)?;
        (e.ty == TagType::Int16)
            .then(|| self.bytes(e).chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect())
    }

    /// Every value of an INT32 entry.
    pub fn int32_array(&self, tag: u32) -> Option<Vec<u32>> {
        let e = self.entry(tag)?;
        (e.ty == TagType::Int32).then(|| {
            self.bytes(e).chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect()
        })
    }

    /// Every value of an INT64 entry.
    pub fn int64_array(&self, tag: u32) -> Option<Vec<u64>> {
        let e = self.entry(tag)?;
        (e.ty == TagType::Int64).then(|| {
            self.bytes(e)
                .chunks_exact(8)
                .map(|c| u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect()
        })
    }

    /// Every value of a CHAR or INT8 entry (rpm's FILESTATES are CHAR).
    pub fn int8_array(&self, tag: u32) -> Option<&'a [u8]> {
        let e = self.entry(tag)?;
        matches!(e.ty, TagType::Char | TagType::Int8).then(|| self.bytes(e))
    }

    /// Every value of any integer entry (INT8/16/32/64, CHAR) widened to `u64`: rpm stores
    /// FILESIZES as INT32 and LONGFILESIZES as INT64, and old packages use narrower types.
    pub fn int_array(&self, tag: u32) -> Option<Vec<u64>> {
        Some(self.ints(tag)?.collect())
    }

    /// Checks the header's own digests (SHA256HEADER and SHA1HEADER) over its immutable
    /// region the way rpm does: `magic || be32(ril) || be32(rdl) || ril index entries ||
    /// rdl data bytes`. Returns which were verified; a mismatch is an error, so such a
    /// header is reported as corrupt rather than listed.
    pub fn verify_digests(&self) -> Result<VerifiedDigests, HeaderError> {
        let mut out = VerifiedDigests::default();
        let region_index = &self.index[..self.ril * ENTRY_SIZE];
        let region_data = &self.data[..self.rdl];
        // ril <= il <= MAX_INDEX_ENTRIES and rdl <= dl <= MAX_DATA_BYTES (checked by `parse`),
        // so both fit in u32; checked anyway, so a count this parser should have refused is
        // reported rather than hashed truncated.
        let be32 = |v: usize| {
            u32::try_from(v)
                .map(u32::to_be_bytes)
                .map_err(|_| HeaderError::BadRegion { reason: "region counts do not fit in 32 bits" })
        };
        let ildl = [be32(self.ril)?, be32(self.rdl)?].concat();
        if let Some(expected) = self.string(tags::SHA256HEADER) {
            let mut h = Sha256::new();
            for part in [&HEADER_MAGIC[..], &ildl, region_index, region_data] {
                h.update(part);
            }
            let computed = hex(&h.finalize());
            if !computed.eq_ignore_ascii_case(expected.trim()) {
                return Err(HeaderError::DigestMismatch {
                    algorithm: "SHA256",
                    expected: expected.into_owned(),
                    computed,
                });
            }
            out.sha256 = Some(computed);
        }
        if let Some(expected) = self.string(tags::SHA1HEADER) {
            let mut h = Sha1::new();
            for part in [&HEADER_MAGIC[..], &ildl, region_index, region_data] {
                h.update(part);
            }
            let computed = hex(&h.finalize());
            if !computed.eq_ignore_ascii_case(expected.trim()) {
                return Err(HeaderError::DigestMismatch {
                    algorithm: "SHA1",
                    expected: expected.into_owned(),
                    computed,
                });
            }
            out.sha1 = Some(computed);
        }
        Ok(out)
    }
}

/// Header digests that matched their immutable region.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifiedDigests {
    /// SHA-256 (hex) when the header carries one.
    pub sha256: Option<String>,
    /// SHA-1 (hex) when the header carries one.
    pub sha1: Option<String>,
}

/// Lower-case hex.
pub use guestward_core::text::hex;

/// Validates one index entry against the data store, as rpm's `hdrblobVerifyInfo` does:
/// known type, offset inside the store, aligned, count non-zero, data inside the store.
fn parse_entry(index: usize, raw: &[u8], data: &[u8]) -> Result<Entry, HeaderError> {
    let tag = be_u32(raw, 0).unwrap_or(0);
    let bad = |reason| HeaderError::BadEntry { index, tag, reason };
    let ty = be_u32(raw, 4).and_then(TagType::from_u32).ok_or_else(|| bad("unknown data type"))?;
    let offset = be_u32(raw, 8).map(|v| v as i32).unwrap_or(-1);
    let count = be_u32(raw, 12).unwrap_or(0);
    let offset = usize::try_from(offset).map_err(|_| bad("negative offset"))?;
    if offset >= data.len() && !(ty == TagType::Null && offset == data.len()) {
        return Err(bad("offset past the data store"));
    }
    if count == 0 || count as usize > data.len() + 1 {
        return Err(bad("count is zero or larger than the data store"));
    }
    let count = count as usize;
    let avail = &data[offset.min(data.len())..];
    let len = match ty.fixed_size() {
        Some(size) => {
            if size > 1 && offset % size != 0 {
                return Err(bad("misaligned data"));
            }
            let len = count.checked_mul(size).ok_or_else(|| bad("data length overflows"))?;
            if len > avail.len() {
                return Err(bad("data runs past the data store"));
            }
            len
        }
        None => {
            if ty == TagType::String && count != 1 {
                return Err(bad("STRING entry with count other than 1"));
            }
            // Walk `count` NUL-terminated strings; each costs at least one byte, and count was
            // bounded by the store size above, so this loop is bounded by the data length.
            let mut pos = 0usize;
            for _ in 0..count {
                let rest = avail.get(pos..).ok_or_else(|| bad("strings run past the data store"))?;
                let nul = rest.iter().position(|c| *c == 0).ok_or_else(|| bad("unterminated string"))?;
                pos += nul + 1;
            }
            pos
        }
    };
    Ok(Entry { tag, ty, offset, count, len })
}

#[cfg(test)]
mod tests {
    // The fixtures built here are a few hundred bytes: their lengths and offsets fit every type.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_possible_truncation)]
    use super::*;

    /// Builds a blob from (tag, type, data) entries with a correct immutable region, the way
    /// rpm lays one out: region tag first, its trailer at the end of the region's data.
    pub(crate) fn build(entries: &[(u32, u32, Vec<u8>, u32)], extra: &[(u32, u32, Vec<u8>, u32)]) -> Vec<u8> {
        let mut data = Vec::new();
        let mut index = Vec::new();
        let push =
            |index: &mut Vec<u8>, data: &mut Vec<u8>, (tag, ty, bytes, count): &(u32, u32, Vec<u8>, u32)| {
                let align = match ty {
                    3 => 2,
                    4 => 4,
                    5 => 8,
                    _ => 1,
                };
                while !data.len().is_multiple_of(align) {
                    data.push(0);
                }
                for v in [*tag, *ty, data.len() as u32, *count] {
                    index.extend_from_slice(&v.to_be_bytes());
                }
                data.extend_from_slice(bytes);
            };
        for e in entries {
            push(&mut index, &mut data, e);
        }
        let ril = entries.len() as i32 + 1;
        let trailer_off = data.len() as u32;
        for v in [tags::HEADERIMMUTABLE, 7, (-(ril * 16)) as u32, 16] {
            data.extend_from_slice(&v.to_be_bytes());
        }
        let mut region = Vec::new();
        for v in [tags::HEADERIMMUTABLE, 7, trailer_off, 16] {
            region.extend_from_slice(&v.to_be_bytes());
        }
        index.splice(0..0, region);
        for e in extra {
            push(&mut index, &mut data, e);
        }
        let il = (index.len() / 16) as u32;
        let mut blob = Vec::new();
        blob.extend_from_slice(&il.to_be_bytes());
        blob.extend_from_slice(&(data.len() as u32).to_be_bytes());
        blob.extend(index);
        blob.extend(data);
        blob
    }

    fn s(v: &str) -> Vec<u8> {
        let mut b = v.as_bytes().to_vec();
        b.push(0);
        b
    }

    fn sample() -> Vec<(u32, u32, Vec<u8>, u32)> {
        vec![
            (tags::NAME, 6, s("foo"), 1),
            (tags::VERSION, 6, s("1.0"), 1),
            (tags::RELEASE, 6, s("1"), 1),
            (tags::EPOCH, 4, 2u32.to_be_bytes().to_vec(), 1),
            (tags::LONGSIZE, 5, 5_000_000_000u64.to_be_bytes().to_vec(), 1),
        ]
    }

    #[test]
    fn reads_tags_from_a_built_header() {
        let blob = build(&sample(), &[]);
        let h = Header::parse(&blob).unwrap();
        assert_eq!(h.string(tags::NAME).unwrap(), "foo");
        assert_eq!(h.integer(tags::EPOCH), Some(2));
        assert_eq!(h.integer(tags::LONGSIZE), Some(5_000_000_000));
        assert_eq!(h.string(tags::ARCH), None);
        assert_eq!(h.ril, 6);
        assert_eq!(h.verify_digests().unwrap(), VerifiedDigests::default());
    }

    #[test]
    fn reads_arrays_of_every_type() {
        let mut names = s("a");
        names.extend(s("b\u{e9}"));
        names.extend(b"\xff\0");
        let entries = vec![
            (tags::NAME, 6, s("foo"), 1),
            (tags::FILEMODES, 3, [0o100644u16, 0o40755].iter().flat_map(|v| v.to_be_bytes()).collect(), 2),
            (tags::FILESIZES, 4, [7u32, 0].iter().flat_map(|v| v.to_be_bytes()).collect(), 2),
            (tags::LONGFILESIZES, 5, [1u64 << 33, 3].iter().flat_map(|v| v.to_be_bytes()).collect(), 2),
            (tags::FILESTATES, 1, vec![0, 2], 2),
            (tags::BASENAMES, 8, names, 3),
        ];
        let blob = build(&entries, &[]);
        let h = Header::parse(&blob).unwrap();
        assert_eq!(h.int16_array(tags::FILEMODES), Some(vec![0o100644, 0o40755]));
        assert_eq!(h.int32_array(tags::FILESIZES), Some(vec![7, 0]));
        assert_eq!(h.int64_array(tags::LONGFILESIZES), Some(vec![1 << 33, 3]));
        assert_eq!(h.int_array(tags::FILEMODES), Some(vec![0o100644, 0o40755]));
        assert_eq!(h.int_array(tags::LONGFILESIZES), Some(vec![1 << 33, 3]));
        assert_eq!(h.int8_array(tags::FILESTATES), Some(&[0u8, 2][..]));
        let raw = h.string_array_bytes(tags::BASENAMES).unwrap();
        assert_eq!(raw, vec![&b"a"[..], "b\u{e9}".as_bytes(), &b"\xff"[..]]);
        assert_eq!(h.string_array(tags::BASENAMES).unwrap()[2], "\u{fffd}");
        // The wrong type for the accessor is None, not a reinterpretation.
        assert_eq!(h.int32_array(tags::FILEMODES), None);
        assert_eq!(h.int16_array(tags::BASENAMES), None);
        assert_eq!(h.string_array(tags::FILESIZES), None);
        assert_eq!(h.string_array(tags::DIRNAMES), None);
        assert_eq!(h.string_array(tags::NAME).unwrap(), vec!["foo"]);
        // Read one value at a time: the same values, every integer width widened, the counts
        // known before the first is read.
        let mut strings = h.strings(tags::BASENAMES).unwrap();
        assert_eq!(strings.len(), 3);
        assert_eq!(strings.next(), Some(&b"a"[..]));
        assert_eq!(strings.len(), 2);
        assert_eq!(strings.collect::<Vec<_>>(), raw[1..]);
        for tag in [tags::FILEMODES, tags::FILESIZES, tags::LONGFILESIZES, tags::FILESTATES] {
            let ints = h.ints(tag).unwrap();
            assert_eq!(ints.len(), 2);
            assert_eq!(Some(ints.collect::<Vec<_>>()), h.int_array(tag));
        }
        assert!(h.ints(tags::BASENAMES).is_none() && h.strings(tags::FILESIZES).is_none());
    }

    #[test]
    fn verifies_a_correct_sha256_and_rejects_a_wrong_one() {
        let blob = build(&sample(), &[]);
        let h = Header::parse(&blob).unwrap();
        let mut sha = Sha256::new();
        let ildl = [(h.ril as u32).to_be_bytes(), (h.rdl as u32).to_be_bytes()].concat();
        sha.update(HEADER_MAGIC);
        sha.update(&ildl);
        sha.update(&h.index[..h.ril * 16]);
        sha.update(&h.data[..h.rdl]);
        let good = hex(&sha.finalize());
        // Digest tags sit outside the region, as after rpm installs a package.
        let blob = build(&sample(), &[(tags::SHA256HEADER, 6, s(&good), 1)]);
        let v = Header::parse(&blob).unwrap().verify_digests().unwrap();
        assert_eq!(v.sha256.as_deref(), Some(good.as_str()));
        let bad = "0".repeat(64);
        let blob = build(&sample(), &[(tags::SHA256HEADER, 6, s(&bad), 1)]);
        let err = Header::parse(&blob).unwrap().verify_digests().unwrap_err();
        assert!(matches!(err, HeaderError::DigestMismatch { algorithm: "SHA256", .. }), "{err}");
    }

    #[test]
    fn rejects_out_of_range_entries() {
        let mut blob = build(&sample(), &[]);
        // Entry 1 (NAME): offset field at 8 + 16 + 8.
        blob[32..36].copy_from_slice(&0x7fff_fff0u32.to_be_bytes());
        assert!(matches!(Header::parse(&blob), Err(HeaderError::BadEntry { index: 1, .. })));
        blob[32..36].copy_from_slice(&(-4i32).to_be_bytes());
        assert!(matches!(Header::parse(&blob), Err(HeaderError::BadEntry { index: 1, .. })));
        let mut blob = build(&sample(), &[]);
        // Entry 4 (EPOCH): a count of 2^32-1 must not allocate or read past the store.
        blob[8 + 4 * 16 + 12..8 + 4 * 16 + 16].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(Header::parse(&blob), Err(HeaderError::BadEntry { index: 4, .. })));
    }

    #[test]
    fn rejects_bad_counts_and_regions() {
        assert!(matches!(Header::parse(&[0, 0]), Err(HeaderError::TooShort { .. })));
        assert!(matches!(
            Header::parse(&[0, 0, 0, 0, 0, 0, 0, 0]),
            Err(HeaderError::BadEntryCount { il: 0 })
        ));
        assert!(matches!(
            Header::parse(&[0, 1, 0, 0, 0, 0, 0, 0]),
            Err(HeaderError::BadEntryCount { il: 0x0001_0000 })
        ));
        assert!(matches!(Header::parse(&[0, 0, 0, 1, 0xff, 0, 0, 0]), Err(HeaderError::DataTooLarge { .. })));
        let mut blob = build(&sample(), &[]);
        blob.push(0);
        assert!(matches!(Header::parse(&blob), Err(HeaderError::SizeMismatch { .. })));
        // Trailer claiming more entries than the header has.
        let mut blob = build(&sample(), &[]);
        let len = blob.len();
        blob[len - 8..len - 4].copy_from_slice(&(-(100 * 16i32)).to_be_bytes());
        assert!(matches!(Header::parse(&blob), Err(HeaderError::BadRegion { .. })));
    }

    #[test]
    fn accepts_a_leading_magic() {
        let mut blob = HEADER_MAGIC.to_vec();
        blob.extend(build(&sample(), &[]));
        assert_eq!(Header::parse(&blob).unwrap().string(tags::VERSION).unwrap(), "1.0");
    }

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
    }
}
