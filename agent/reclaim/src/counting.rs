//! A global allocator for tests and fuzz targets that counts what a piece of work allocates, as
//! glibc's malloc would hold it: every block as its chunk (an 8-byte header, rounded to 16, at
//! least 32 bytes), and a `realloc` as the old chunk and the new one at once (one that cannot
//! grow in place copies). Compared with what an estimate of memory claims (the collector's
//! `json_cost`), it finds the inputs the estimate misses, at any size, without measuring a
//! process's pages.
//!
//! Counting happens only on a thread inside [`peak_of`], in a thread-local: the other tests of
//! a binary, on their own threads, count nothing and disturb nothing.
//!
//! ```
//! use guestward_reclaim::counting::{Counting, peak_of};
//!
//! #[global_allocator]
//! static ALLOCATOR: Counting = Counting;
//!
//! fn main() {
//!     // 100 bytes take a 112-byte chunk; growing to 200 holds 112 and 208 at once.
//!     let held = peak_of(|| {
//!         let mut v: Vec<u8> = Vec::with_capacity(100);
//!         v.reserve_exact(200);
//!         drop(std::hint::black_box(v));
//!     });
//!     assert_eq!(held, 112 + 208);
//!     // Nothing is counted outside `peak_of`.
//!     assert_eq!(peak_of(|| ()), 0);
//! }
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    /// (counting, chunk bytes held now, the most held at once). No destructor, and a constant
    /// initialiser: reading it from inside the allocator allocates nothing.
    static HELD: Cell<(bool, u64, u64)> = const { Cell::new((false, 0, 0)) };
}

/// What glibc's malloc takes for a block of `size` bytes.
pub fn chunk_bytes(size: usize) -> u64 {
    (size as u64).saturating_add(8).next_multiple_of(16).max(32)
}

fn change(taken: u64, given_back: u64) {
    // `try_with`: a thread being torn down may still free memory.
    let _ = HELD.try_with(|held| {
        let (counting, now, most) = held.get();
        if counting {
            let top = now.saturating_add(taken);
            held.set((true, top.saturating_sub(given_back), most.max(top)));
        }
    });
}

/// The system allocator, counting on the threads inside [`peak_of`].
#[derive(Debug)]
pub struct Counting;

// Every call is passed to `System` unchanged, so `System`'s guarantees hold; the counting is
// arithmetic on a thread-local that allocates nothing. (Not formatted by rustfmt, which would
// move each SAFETY note off the line it is about.)
#[allow(unsafe_code)]
#[rustfmt::skip]
unsafe impl GlobalAlloc for Counting { // SAFETY: see above
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 { // SAFETY: the caller's contract, passed on
        let block = unsafe { System.alloc(layout) }; // SAFETY: as above
        if !block.is_null() {
            change(chunk_bytes(layout.size()), 0);
        }
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) { // SAFETY: the caller's contract, passed on
        change(0, chunk_bytes(layout.size()));
        unsafe { System.dealloc(block, layout) } // SAFETY: as above
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 { // SAFETY: as above
        let moved = unsafe { System.realloc(block, layout, new_size) }; // SAFETY: as above
        if !moved.is_null() {
            change(chunk_bytes(new_size), chunk_bytes(layout.size()));
        }
        moved
    }
}

/// The most chunk bytes `work` held at once on this thread (0 unless [`Counting`] is the
/// global allocator). What it still holds at its end counts; what was held before does not.
pub fn peak_of(work: impl FnOnce()) -> u64 {
    HELD.with(|held| held.set((true, 0, 0)));
    work();
    HELD.with(|held| {
        let (_, _, most) = held.get();
        held.set((false, 0, 0));
        most
    })
}
