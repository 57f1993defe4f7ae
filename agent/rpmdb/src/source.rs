//! Positioned reads over a database file or an in-memory buffer.
//!
//! The page readers never load a whole database: they read one page (or one blob) at a
//! time at offsets taken from the file, so memory stays bounded by the page size and the
//! per-header cap whatever the file claims. The same code runs over `&[u8]` in the fuzz
//! targets.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Something that can be read at arbitrary offsets: a file, or bytes in memory.
pub trait ReadAt {
    /// Total length in bytes.
    fn len(&self) -> u64;

    /// True when there is nothing to read.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` from `offset`; an error if the range does not lie inside the source.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Reads `len` bytes at `offset` into a fresh buffer, refusing ranges past the end before
    /// allocating (so a length field read from the file can never make us allocate more than
    /// the file holds).
    fn read_vec_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let end = offset.checked_add(len as u64).ok_or_else(out_of_range)?;
        if end > self.len() {
            return Err(out_of_range());
        }
        let mut buf = vec![0u8; len];
        self.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

fn out_of_range() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "range lies past the end of the file")
}

/// A file with its length taken once at open time (a database being rewritten under us
/// shows up as read errors, never as reads past what we sized).
#[derive(Debug)]
pub struct FileSource {
    file: File,
    len: u64,
}

impl FileSource {
    /// Wraps an open file.
    pub fn new(file: File) -> io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(Self { file, len })
    }
}

impl ReadAt for FileSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).ok_or_else(out_of_range)?;
        if end > self.len {
            return Err(out_of_range());
        }
        FileExt::read_exact_at(&self.file, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        let end = start.checked_add(buf.len()).ok_or_else(out_of_range)?;
        let src = self.get(start..end).ok_or_else(out_of_range)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn slice_reads_are_bounded() {
        let data: &[u8] = &[1, 2, 3, 4];
        let mut b = [0u8; 2];
        data.read_exact_at(&mut b, 2).unwrap();
        assert_eq!(b, [3, 4]);
        assert!(data.read_exact_at(&mut b, 3).is_err());
        assert!(data.read_exact_at(&mut b, u64::MAX).is_err());
        assert!(data.read_vec_at(0, usize::MAX).is_err());
    }

    #[test]
    fn file_reads_are_bounded() {
        use std::io::Write;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"abcdef").unwrap();
        let src = FileSource::new(f).unwrap();
        assert_eq!(src.len(), 6);
        assert_eq!(src.read_vec_at(4, 2).unwrap(), b"ef");
        assert!(src.read_vec_at(5, 2).is_err());
    }
}
