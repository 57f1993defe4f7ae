//! The buffer a file is read into to be hashed, starting on a page boundary.

/// Alignment of the start of every [`ReadBuffer`]: the 4 KiB page of x86-64 (and of the arm64
/// kernels EC2's Linux AMIs ship), which is also a multiple of any cache line.
pub const READ_BUFFER_ALIGN: usize = 4096;

/// A zeroed byte buffer of a fixed length whose first byte is on a [`READ_BUFFER_ALIGN`]
/// boundary. Allocated on first use and reused for every file a thread reads.
///
/// Why the alignment matters: a `read` of a cached file is the kernel copying from its
/// page-cache pages (which start on a page boundary) into this buffer. On the AMD EPYC this
/// was measured on (the CPU of EC2's AMD instance types), that copy ran at 1.5-2.3 GB/s
/// instead of 9-11 when the buffer started 16 bytes past a page boundary (4K aliasing: the CPU
/// takes each load for one that depends on a store just before it, as their addresses agree
/// in the low 12 bits). glibc's `malloc` returns exactly such a pointer for a block it maps by
/// itself; a 128 KiB block is mapped or not depending on what was freed before it, and always
/// is under the systemd unit's `MALLOC_MMAP_THRESHOLD_=65536`. A full FIM scan of /usr then
/// spent 28% of its CPU copying instead of 6% (docs/benchmarks.md, "Read buffers on a page
/// boundary"). Starting the buffer on a page boundary makes the fast case the only one.
pub struct ReadBuffer {
    /// Empty until the first read: a buffer made for a path that turns out to need no read
    /// (a directory, a symlink, an unchanged file) costs nothing.
    storage: Box<[u8]>,
    start: usize,
    len: usize,
}

impl ReadBuffer {
    /// A buffer of `len` bytes, allocated on first use. It allocates `len` plus one
    /// alignment's worth and uses the aligned part, so no `unsafe` allocation with a custom
    /// layout is needed; the unused head is under 4 KiB of address space.
    pub fn new(len: usize) -> Self {
        Self { storage: Box::default(), start: 0, len }
    }

    /// The aligned bytes, `len` of them.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        if self.storage.is_empty() && self.len > 0 {
            self.storage = vec![0u8; self.len + READ_BUFFER_ALIGN].into_boxed_slice();
            let misalignment = self.storage.as_ptr().addr() % READ_BUFFER_ALIGN;
            self.start = (READ_BUFFER_ALIGN - misalignment) % READ_BUFFER_ALIGN;
        }
        &mut self.storage[self.start..self.start + self.len]
    }

    /// The usable length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the usable length is zero.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for ReadBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadBuffer").field("len", &self.len).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_buffer_starts_on_a_page_boundary_and_has_its_length() {
        assert!(ReadBuffer::new(0).as_mut_slice().is_empty());
        // Sizes below, at and above glibc's default mmap threshold (128 KiB), so that both the
        // heap's and mmap's placements are met.
        for len in [1, 4096, 64 * 1024, 128 * 1024, 256 * 1024, 1 << 20] {
            let mut buf = ReadBuffer::new(len);
            assert_eq!(buf.len(), len);
            let slice = buf.as_mut_slice();
            assert_eq!(slice.len(), len);
            assert_eq!(slice.as_ptr().addr() % READ_BUFFER_ALIGN, 0, "len {len}");
            assert!(slice.iter().all(|b| *b == 0));
            // Written and asked for again: the same bytes, not a new buffer.
            slice[len - 1] = 7;
            let again = buf.as_mut_slice();
            assert_eq!((again.len(), again[len - 1]), (len, 7));
            assert_eq!(again.as_ptr().addr() % READ_BUFFER_ALIGN, 0);
        }
    }
}
