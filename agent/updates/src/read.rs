//! Index files as the package managers store them: plain or compressed, read as bounded
//! streams through the [`HostRoot`] door.

use crate::error::UpdatesError;
use guestward_core::{HostRoot, Timestamp};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Compressions apt and dnf/yum store index files in, told by the file name's suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Lz4,
    Xz,
    Zstd,
    Bzip2,
}

impl Compression {
    /// The compression of `name` and the name without its suffix.
    pub(crate) fn of(name: &str) -> (Self, &str) {
        for (suffix, c) in [
            (".gz", Self::Gzip),
            (".lz4", Self::Lz4),
            (".xz", Self::Xz),
            (".zst", Self::Zstd),
            (".bz2", Self::Bzip2),
        ] {
            if let Some(stem) = name.strip_suffix(suffix) {
                return (c, stem);
            }
        }
        (Self::None, name)
    }
}

/// An opened index: its decompressed bytes as a stream, the path shown in messages and its
/// modification time.
pub(crate) struct Index {
    pub reader: Box<dyn BufRead + Send>,
    pub shown: PathBuf,
    pub modified: Option<Timestamp>,
}

/// Opens `host_path` (a regular file only) and decompresses it by its suffix, stopping with an
/// error once more than `max_bytes` came out: a small file that inflates without end (a
/// decompression bomb) costs time up to the cap and no memory for the stream; what it offers
/// is kept deduplicated and capped per package ([`Offers`]).
pub(crate) fn open_index(root: &HostRoot, host_path: &Path, max_bytes: u64) -> Result<Index, UpdatesError> {
    let (file, shown) = root.open(host_path)?;
    let modified = file
        .metadata()
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| Timestamp::from_unix_secs(i64::try_from(d.as_secs()).ok()?));
    let name = host_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let raw = BufReader::with_capacity(64 * 1024, file);
    let decoded: Box<dyn Read + Send> = match Compression::of(&name).0 {
        Compression::None => Box::new(raw),
        // Multi-member: `gzip -c a b > c.gz` is valid and some mirrors serve such files.
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(raw)),
        Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(raw)),
        // A hostile header may ask for a 1.5 GiB dictionary: 64 MiB covers `xz -9`.
        Compression::Xz => Box::new(lzma_rust2::XzReader::new_mem_limit(raw, true, 64 * 1024)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(raw)
                .map_err(|e| UpdatesError::Decode { path: shown.clone(), source: e })?,
        ),
        // yum's `primary_db` is `.sqlite.bz2` by default.
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(raw)),
    };
    let capped = Capped { inner: decoded, left: max_bytes, cap: max_bytes };
    Ok(Index { reader: Box::new(BufReader::with_capacity(64 * 1024, capped)), shown, modified })
}

/// Fails reads once `cap` bytes have been returned.
struct Capped<R> {
    inner: R,
    left: u64,
    cap: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            // One byte more tells a file of exactly `cap` bytes from a longer one.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::new(
                    std::io::ErrorKind::FileTooLarge,
                    format!("more than {} bytes once decompressed", self.cap),
                )),
            };
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// What [`read_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A line (without its newline) is in the buffer.
    Full,
    /// The line was longer than the cap: it was skipped to its end, the buffer is empty.
    TooLong,
    /// End of input, nothing read.
    Eof,
}

/// Reads one line into `out` (cleared first), keeping at most `cap` bytes: a longer line is
/// consumed without being kept, so a hostile file cannot grow memory.
pub(crate) fn read_line(reader: &mut dyn BufRead, out: &mut Vec<u8>, cap: usize) -> std::io::Result<Line> {
    out.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(if too_long {
                Line::TooLong
            } else if any {
                Line::Full
            } else {
                Line::Eof
            });
        }
        any = true;
        let (chunk, used, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        if !too_long {
            if out.len() + chunk.len() > cap {
                too_long = true;
                out.clear();
            } else {
                out.extend_from_slice(chunk);
            }
        }
        reader.consume(used);
        if done {
            return Ok(if too_long { Line::TooLong } else { Line::Full });
        }
    }
}

/// Consumes the rest of a stanza whose first line was just read (so the stream is at a line
/// start), up to and including the blank line that ends it, without copying it: most stanzas
/// of a list are of packages not installed, and this is where the time of a 50 MB list goes.
/// Returns whether the input ended.
pub(crate) fn skip_stanza(
    reader: &mut dyn BufRead,
    finder: &memchr::memmem::Finder<'_>,
) -> std::io::Result<bool> {
    let mut at_line_start = true;
    loop {
        let buf = reader.fill_buf()?;
        let Some(&last) = buf.last() else { return Ok(true) };
        if at_line_start && buf[0] == b'\n' {
            reader.consume(1);
            return Ok(false);
        }
        match finder.find(buf) {
            Some(i) => {
                reader.consume(i + 2);
                return Ok(false);
            }
            None => {
                at_line_start = last == b'\n';
                let n = buf.len();
                reader.consume(n);
            }
        }
    }
}

/// The names in `host_dir` (UTF-8 ones; the package managers write no others), sorted.
/// A missing directory is `Ok(None)`.
pub(crate) fn list_dir(root: &HostRoot, host_dir: &Path) -> Result<Option<Vec<String>>, UpdatesError> {
    if !root.exists(host_dir) {
        return Ok(None);
    }
    let real = root.resolve(host_dir)?;
    let entries =
        std::fs::read_dir(&real).map_err(|e| guestward_core::HostFsError::from_io(real.clone(), e))?;
    let mut names = Vec::new();
    for entry in entries.flatten() {
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort_unstable();
    Ok(Some(names))
}

/// Whether `host_path` is a directory (not following a final symlink out of the root: the door
/// resolves inside it).
pub(crate) fn is_dir(root: &HostRoot, host_path: &Path) -> bool {
    root.resolve(host_path).ok().and_then(|p| std::fs::metadata(p).ok()).is_some_and(|m| m.is_dir())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lines_over_the_cap_are_skipped_whole() {
        let data = b"short\nthis line is far too long\nok\nlast";
        let mut r: &[u8] = data;
        let mut out = Vec::new();
        let got: Vec<_> = std::iter::from_fn(|| {
            let l = read_line(&mut r, &mut out, 10).unwrap();
            (l != Line::Eof).then(|| (l, String::from_utf8(out.clone()).unwrap()))
        })
        .collect();
        assert_eq!(
            got,
            vec![
                (Line::Full, "short".into()),
                (Line::TooLong, String::new()),
                (Line::Full, "ok".into()),
                (Line::Full, "last".into())
            ]
        );
    }

    #[test]
    fn skipping_a_stanza_stops_after_its_blank_line() {
        let finder = memchr::memmem::Finder::new(b"\n\n");
        // Tiny buffers put the blank line across reads.
        for cap in [1, 2, 3, 64] {
            let data = b"Version: 1\nArchitecture: all\n\nPackage: next\n";
            let mut r = std::io::BufReader::with_capacity(cap, &data[..]);
            assert!(!skip_stanza(&mut r, &finder).unwrap());
            let mut rest = String::new();
            r.read_to_string(&mut rest).unwrap();
            assert_eq!(rest, "Package: next\n", "buffer {cap}");
        }
        let mut r: &[u8] = b"\nPackage: b\n";
        assert!(!skip_stanza(&mut r, &finder).unwrap());
        assert_eq!(r, b"Package: b\n");
        let mut r: &[u8] = b"Version: 1\n";
        assert!(skip_stanza(&mut r, &finder).unwrap());
    }

    #[test]
    fn capped_reader_refuses_one_byte_more() {
        let mut exact = Capped { inner: &b"12345"[..], left: 5, cap: 5 };
        let mut s = Vec::new();
        exact.read_to_end(&mut s).unwrap();
        assert_eq!(s, b"12345");
        let mut over = Capped { inner: &b"123456"[..], left: 5, cap: 5 };
        let err = over.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("more than 5 bytes"), "{err}");
    }
}

/// How many offers of one installed package's name (distinct versions, per source) are kept
/// from all the lists together. A real archive offers a handful; a list written to exhaust
/// memory (the same stanza a million times in 700 KB of gzip) must not grow the agent: the same
/// offer again is dropped, and one past this cap is counted instead (see [`Offers`]).
pub const MAX_OFFERS_PER_NAME: usize = 256;

/// The same for the advisories naming one package: a kernel collects hundreds over the years.
pub const MAX_ADVISORIES_PER_NAME: usize = 4096;

/// The offers kept per name, deduplicated and capped, and how many were dropped by the cap.
pub(crate) struct Offers<K, T> {
    kept: std::collections::HashMap<K, Vec<T>>,
    cap: usize,
    over_cap: u64,
}

impl<K: std::hash::Hash + Eq, T> Offers<K, T> {
    /// At most `cap` offers per key.
    pub(crate) fn new(cap: usize) -> Self {
        Self { kept: std::collections::HashMap::new(), cap, over_cap: 0 }
    }

    /// Keeps `offer` under `key` unless `same` finds it kept already, or the key holds the cap.
    pub(crate) fn keep(&mut self, key: K, offer: T, same: impl Fn(&T, &T) -> bool) {
        let list = self.kept.entry(key).or_default();
        if list.iter().any(|o| same(o, &offer)) {
            return;
        }
        if list.len() >= self.cap {
            self.over_cap += 1;
            return;
        }
        list.push(offer);
    }

    /// The kept offers, and the problem naming what the cap dropped, if anything.
    pub(crate) fn finish(self) -> (std::collections::HashMap<K, Vec<T>>, Option<guestward_core::Problem>) {
        let problem = (self.over_cap > 0).then(|| {
            guestward_core::Problem::new(
                "too_many_entries",
                format!(
                    "{} package list entries were not considered: more than {} distinct entries for \
                     one package (a list written to exhaust memory?)",
                    self.over_cap, self.cap
                ),
            )
        });
        (self.kept, problem)
    }
}

#[cfg(test)]
mod offers_tests {
    use super::*;

    #[test]
    fn the_same_offer_is_kept_once_and_a_name_holds_at_most_the_cap() {
        let mut offers: Offers<&str, (u32, usize)> = Offers::new(MAX_OFFERS_PER_NAME);
        for _ in 0..1000 {
            offers.keep("bash", (5, 0), |a, b| a == b);
        }
        for v in 0..1000 {
            offers.keep("zlib", (v, 1), |a, b| a == b);
        }
        let (kept, problem) = offers.finish();
        assert_eq!(kept["bash"], vec![(5, 0)]);
        assert_eq!(kept["zlib"].len(), MAX_OFFERS_PER_NAME);
        let problem = problem.map(|p| p.message).unwrap_or_default();
        assert!(
            problem.starts_with(&format!("{} package list entries", 1000 - MAX_OFFERS_PER_NAME)),
            "{problem}"
        );
    }
}
