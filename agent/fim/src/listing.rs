//! One directory's entries in name order, in bounded memory, however many there are.
//!
//! The walk hands entries on in path order so that each baseline lookup and each staged row
//! lands next to the last one in the store's B-trees (keyed by path). It reads a directory
//! [`crate::scan`]'s chunk of names at a time, a bound on the memory a planted directory of
//! millions of entries can cost. Sorted chunk by chunk only, a directory larger than one chunk
//! reached the store in the file system's hash order from one chunk to the next: a first
//! baseline of one directory of 500,000 files wrote 3.5 GB for a 55 MB database, each batch of
//! rows dirtying as many leaf pages (docs/benchmarks.md, "One directory of 500,000 files").
//!
//! So a directory larger than one chunk is sorted outside memory: each chunk, sorted, is
//! written as a run to an unnamed temporary file (`O_TMPFILE`, never linked, gone when closed)
//! in the state directory, and the runs are merged. The file holds names only (a few bytes an
//! entry) and is capped at [`MAX_SPILL_BYTES`]; without it (no state directory, a file system
//! without `O_TMPFILE`, the disk full, the cap reached) the chunks that could not be written
//! are handed on as before, each in name order, so no entry is ever lost to the sort.

use std::collections::BinaryHeap;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The most bytes of names one directory's sort writes to its temporary file: about 3 million
/// entries of ordinary names. A larger directory's remaining chunks are handed on unsorted
/// between them: its cost in the state directory's file system stays bounded.
pub const MAX_SPILL_BYTES: u64 = 64 << 20;

/// Memory shared by the merge's read buffers, one per run: 3,000,000 entries (about what
/// [`MAX_SPILL_BYTES`] holds) in chunks of 4,096 are 733 runs of 1,430 bytes each.
const MERGE_BUFFER_BYTES: usize = 1 << 20;
/// A run's read buffer is at least one whole record (see [`encode`]) and at most this.
const MAX_RUN_BUFFER_BYTES: usize = 16 << 10;

/// A listed entry: its name and what `getdents` says it is (an [`EntryType`]).
pub type Entry<T> = (OsString, T);

/// What `getdents` says an entry is, carried through the temporary file as one byte.
pub trait EntryType: Copy {
    /// The byte written for it.
    fn to_byte(self) -> u8;
    /// Back from the byte ([`Self::to_byte`]'s); `None` for a byte it never writes.
    fn from_byte(b: u8) -> Option<Self>;
}

/// Where the temporary file of a large directory's sort goes, if anywhere.
#[derive(Debug, Clone, Copy)]
pub struct SpillTo<'a> {
    /// The state directory (0700, the agent's own).
    pub dir: &'a Path,
    /// [`MAX_SPILL_BYTES`] unless a test sets less.
    pub max_bytes: u64,
}

/// How a listing went, beyond the entries handed on.
#[derive(Debug)]
pub enum Listed {
    /// Every entry, in name order.
    InOrder,
    /// Every entry, some chunks out of order: the temporary file could not take them (the
    /// error says why). Slower to store, nothing less checked.
    Unsorted(std::io::Error),
    /// Reading the temporary file back failed: the entries of its runs not yet handed on were
    /// lost, as when `getdents` fails part-way.
    Incomplete(std::io::Error),
}

/// Hands every entry `next_chunk` lists to `each`, in name order when the whole directory fits
/// in one chunk or its runs could all be written to `spill`; otherwise each chunk that could
/// not be written in name order (the written runs merged after them). `next_chunk` fills the
/// vector it is given (empty) with up to one chunk of entries and says whether more may follow.
pub fn each_in_order<T: EntryType>(
    spill: Option<SpillTo<'_>>,
    next_chunk: &mut dyn FnMut(&mut Vec<Entry<T>>) -> bool,
    each: &mut dyn FnMut(OsString, T),
) -> Listed {
    let mut names: Vec<Entry<T>> = Vec::new();
    let mut more = next_chunk(&mut names);
    let mut runs = None;
    let mut spill_error = None;
    if more {
        // More than one chunk: runs to the temporary file while it takes them.
        match spill.map(Runs::create) {
            Some(Ok(r)) => runs = Some(r),
            Some(Err(e)) => spill_error = Some(e),
            None => spill_error = Some(std::io::Error::other("no directory for a temporary file")),
        }
    }
    loop {
        names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let written = match runs.as_mut().filter(|_| spill_error.is_none()) {
            Some(r) => r.write(&names).map_err(|e| spill_error = Some(e)).is_ok(),
            None => false,
        };
        if written {
            names.clear();
        } else {
            // Handed on now, in name order within the chunk; the runs written (if any) are
            // merged after the last chunk.
            names.drain(..).for_each(|(n, t)| each(n, t));
        }
        if !more {
            break;
        }
        more = next_chunk(&mut names);
    }
    if let Some(r) = runs
        && let Err(e) = r.finish().merge(each)
    {
        return Listed::Incomplete(e);
    }
    spill_error.map_or(Listed::InOrder, Listed::Unsorted)
}

/// One record: the type byte, the name's length (2 bytes, little-endian), the name.
fn encode<T: EntryType>(out: &mut Vec<u8>, name: &OsString, t: T) {
    let bytes = name.as_bytes();
    // Names are at most 255 bytes on Linux; `Runs::write` refuses a chunk with a longer one
    // than the length holds, rather than write another name.
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.push(t.to_byte());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&bytes[..usize::from(len)]);
}

/// Runs being written to the temporary file.
struct Runs {
    file: File,
    max_bytes: u64,
    /// Start and length of each run written.
    spans: Vec<(u64, u64)>,
    end: u64,
    buf: Vec<u8>,
}

impl Runs {
    fn create(to: SpillTo<'_>) -> Result<Self, std::io::Error> {
        use rustix::fs::{Mode, OFlags};
        // Unnamed: nothing to clean up after a crash, nothing another process can open by name.
        let fd = rustix::fs::open(
            to.dir,
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        Ok(Self { file: File::from(fd), max_bytes: to.max_bytes, spans: Vec::new(), end: 0, buf: Vec::new() })
    }

    /// Writes one sorted chunk as a run. An error leaves the runs written before it intact.
    fn write<T: EntryType>(&mut self, sorted: &[Entry<T>]) -> Result<(), std::io::Error> {
        self.buf.clear();
        for (name, t) in sorted {
            if name.len() > usize::from(u16::MAX) {
                return Err(std::io::Error::other("a name longer than 65,535 bytes"));
            }
            encode(&mut self.buf, name, *t);
        }
        let len = self.buf.len() as u64;
        if self.end + len > self.max_bytes {
            return Err(std::io::Error::other(format!(
                "the directory's names need more than {} bytes to sort",
                self.max_bytes
            )));
        }
        self.file.write_all_at(&self.buf, self.end)?;
        self.spans.push((self.end, len));
        self.end += len;
        Ok(())
    }

    fn finish(self) -> Written {
        Written { file: self.file, spans: self.spans }
    }
}

/// Runs written, ready to be merged.
struct Written {
    file: File,
    spans: Vec<(u64, u64)>,
}

/// A run being read back: its next bytes buffered.
struct Cursor {
    /// Next offset in the file to read from.
    at: u64,
    /// Bytes of the run not yet read into `buf`.
    left: u64,
    buf: Vec<u8>,
    /// Start of the unread part of `buf`.
    pos: usize,
}

impl Cursor {
    /// The next record of this run, reading more of it when its buffer holds no whole one.
    fn next<T: EntryType>(&mut self, file: &File) -> Result<Option<Entry<T>>, std::io::Error> {
        let corrupt = || std::io::Error::other("the sort's temporary file ended inside a record");
        loop {
            let unread = &self.buf[self.pos..];
            // The bytes the next record needs: its header, then its name.
            let need = match unread {
                [t, l0, l1, rest @ ..] => {
                    let len = usize::from(u16::from_le_bytes([*l0, *l1]));
                    if let Some(name) = rest.get(..len) {
                        let t = T::from_byte(*t).ok_or_else(corrupt)?;
                        let entry = (OsString::from_vec(name.to_vec()), t);
                        self.pos += 3 + len;
                        return Ok(Some(entry));
                    }
                    3 + len
                }
                [] if self.left == 0 => return Ok(None),
                _ => 3,
            };
            if self.left == 0 {
                return Err(corrupt());
            }
            self.refill(file, need)?;
        }
    }

    /// Moves the unread bytes to the front and reads as much more of the run as the buffer
    /// holds, and at least up to `need` bytes unread (one whole record) while the run lasts.
    fn refill(&mut self, file: &File, need: usize) -> Result<(), std::io::Error> {
        self.buf.drain(..self.pos);
        self.pos = 0;
        let have = self.buf.len();
        let room = self.buf.capacity().max(need).saturating_sub(have);
        let want = usize::try_from(self.left).unwrap_or(usize::MAX).min(room);
        self.buf.resize(have + want, 0);
        file.read_exact_at(&mut self.buf[have..], self.at)?;
        self.at += want as u64;
        self.left -= want as u64;
        Ok(())
    }
}

impl Written {
    /// Hands on every entry of every run, in name order (a k-way merge).
    fn merge<T: EntryType>(self, each: &mut dyn FnMut(OsString, T)) -> Result<(), std::io::Error> {
        let per_run = (MERGE_BUFFER_BYTES / self.spans.len().max(1)).clamp(512, MAX_RUN_BUFFER_BYTES);
        let mut cursors: Vec<Cursor> = self
            .spans
            .iter()
            .map(|&(at, left)| Cursor { at, left, buf: Vec::with_capacity(per_run), pos: 0 })
            .collect();
        // Least name first: `Reverse` turns the max-heap around. The run's index breaks ties
        // (two runs never hold the same name: a directory lists each once).
        let mut heap = BinaryHeap::with_capacity(cursors.len());
        for (i, c) in cursors.iter_mut().enumerate() {
            if let Some((name, t)) = c.next::<T>(&self.file)? {
                heap.push(std::cmp::Reverse((name, i, Tagged(t))));
            }
        }
        while let Some(std::cmp::Reverse((name, i, Tagged(t)))) = heap.pop() {
            each(name, t);
            if let Some((name, t)) = cursors[i].next::<T>(&self.file)? {
                heap.push(std::cmp::Reverse((name, i, Tagged(t))));
            }
        }
        Ok(())
    }
}

/// An entry type carried in the heap, left out of its order (names and run indices decide).
struct Tagged<T>(T);

impl<T> PartialEq for Tagged<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<T> Eq for Tagged<T> {}
impl<T> PartialOrd for Tagged<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Tagged<T> {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl EntryType for rustix::fs::FileType {
    fn to_byte(self) -> u8 {
        use rustix::fs::FileType as F;
        match self {
            F::RegularFile => 1,
            F::Directory => 2,
            F::Symlink => 3,
            F::Fifo => 4,
            F::Socket => 5,
            F::CharacterDevice => 6,
            F::BlockDevice => 7,
            F::Unknown => 0,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        use rustix::fs::FileType as F;
        Some(match b {
            0 => F::Unknown,
            1 => F::RegularFile,
            2 => F::Directory,
            3 => F::Symlink,
            4 => F::Fifo,
            5 => F::Socket,
            6 => F::CharacterDevice,
            7 => F::BlockDevice,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use rustix::fs::FileType;

    /// A directory listing of `names` in the given (unsorted) order, `chunk` at a time.
    fn lister(names: Vec<String>, chunk: usize) -> impl FnMut(&mut Vec<Entry<FileType>>) -> bool {
        let mut it = names.into_iter().peekable();
        move |out: &mut Vec<Entry<FileType>>| {
            while out.len() < chunk {
                match it.next() {
                    Some(n) => {
                        let t = if n.ends_with('d') { FileType::Directory } else { FileType::RegularFile };
                        out.push((OsString::from(n), t));
                    }
                    None => return false,
                }
            }
            it.peek().is_some()
        }
    }

    /// Names in a scrambled order, as a hashed directory lists them.
    fn scrambled(n: usize) -> Vec<String> {
        let mut v: Vec<String> =
            (0..n).map(|i| format!("f{i:06}{}", if i % 7 == 0 { "d" } else { "" })).collect();
        // A fixed permutation: i -> i * 7919 mod n (7919 is prime, so coprime to these n).
        let copy = v.clone();
        for (i, slot) in v.iter_mut().enumerate() {
            *slot = copy[(i * 7919) % n].clone();
        }
        v
    }

    fn run(names: Vec<String>, chunk: usize, spill: Option<SpillTo<'_>>) -> (Vec<Entry<FileType>>, bool) {
        let mut got = Vec::new();
        let listed = each_in_order(spill, &mut lister(names, chunk), &mut |n, t| got.push((n, t)));
        (got, matches!(listed, Listed::InOrder))
    }

    fn sorted(names: &[String]) -> Vec<String> {
        let mut s = names.to_vec();
        s.sort_unstable();
        s
    }

    fn names_of(got: &[Entry<FileType>]) -> Vec<String> {
        got.iter().map(|(n, _)| n.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn a_directory_of_many_chunks_comes_out_whole_and_in_name_order() {
        let state = tempfile::tempdir().unwrap();
        let names = scrambled(10_007);
        let spill = SpillTo { dir: state.path(), max_bytes: MAX_SPILL_BYTES };
        let (got, ok) = run(names.clone(), 64, Some(spill));
        assert!(ok);
        assert_eq!(names_of(&got), sorted(&names), "every entry once, in name order");
        for (n, t) in &got {
            let dir = n.to_string_lossy().ends_with('d');
            assert_eq!(*t == FileType::Directory, dir, "{n:?} keeps its type");
        }
        // The temporary file was never linked: the state directory is as it was.
        assert_eq!(std::fs::read_dir(state.path()).unwrap().count(), 0);
    }

    #[test]
    fn one_chunk_or_less_is_sorted_in_memory() {
        let names = scrambled(50);
        let (got, ok) = run(names.clone(), 64, None);
        assert!(ok);
        assert_eq!(names_of(&got), sorted(&names));
        let (got, ok) = run(Vec::new(), 64, None);
        assert!(ok && got.is_empty());
    }

    #[test]
    fn without_a_temporary_file_each_chunk_is_sorted_and_none_is_lost() {
        let names = scrambled(1_000);
        let missing = Path::new("/nonexistent/guestward-state");
        for spill in [None, Some(SpillTo { dir: missing, max_bytes: MAX_SPILL_BYTES })] {
            let (got, in_order) = run(names.clone(), 64, spill);
            assert!(!in_order);
            let got = names_of(&got);
            assert_eq!(sorted(&got), sorted(&names), "every entry once");
            for chunk in got.chunks(64) {
                assert!(chunk.is_sorted(), "each chunk in name order");
            }
        }
    }

    #[test]
    fn a_sort_over_its_cap_hands_on_the_rest_and_merges_what_it_wrote() {
        let state = tempfile::tempdir().unwrap();
        let names = scrambled(1_000);
        // Room for about 3 runs of 64 names of 7-8 bytes (+3 bytes each).
        let spill = SpillTo { dir: state.path(), max_bytes: 3 * 64 * 11 + 10 };
        let mut got = Vec::new();
        let listed = each_in_order(Some(spill), &mut lister(names.clone(), 64), &mut |n, t| got.push((n, t)));
        let Listed::Unsorted(err) = listed else { panic!("the cap is reported: {listed:?}") };
        assert!(err.to_string().contains("bytes to sort"), "{err}");
        let got = names_of(&got);
        assert_eq!(sorted(&got), sorted(&names), "every entry once, the cap notwithstanding");
        // The runs written before the cap come last, merged: one sorted stretch.
        let written = 3 * 64;
        assert!(got[got.len() - written..].is_sorted(), "the merged runs");
    }

    #[test]
    fn long_and_odd_names_survive_the_round_trip() {
        let state = tempfile::tempdir().unwrap();
        let mut names: Vec<OsString> =
            (0..300).map(|i| OsString::from(format!("{}{i}", "x".repeat(250)))).collect();
        names.push(OsString::from_vec(vec![0xff, b'\n', 0x1b, b'a']));
        names.push(OsString::from("é"));
        let spill = SpillTo { dir: state.path(), max_bytes: MAX_SPILL_BYTES };
        let mut it = names.clone().into_iter().peekable();
        let mut next = |out: &mut Vec<Entry<FileType>>| {
            while out.len() < 16 {
                match it.next() {
                    Some(n) => out.push((n, FileType::Symlink)),
                    None => return false,
                }
            }
            it.peek().is_some()
        };
        let mut got = Vec::new();
        let listed = each_in_order(Some(spill), &mut next, &mut |n, t| got.push((n, t)));
        assert!(matches!(listed, Listed::InOrder), "{listed:?}");
        let mut want = names;
        want.sort_unstable();
        assert_eq!(got.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(), want);
        assert!(got.iter().all(|(_, t)| *t == FileType::Symlink));
    }
}
