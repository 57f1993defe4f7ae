//! Throughput of SHA-256 fed one input after another and two inputs in turns, on buffers the
//! size of FIM's reads (in L2), one core: the measurement behind `guestward_digest`'s turns
//! (docs/benchmarks.md, "Two hash chains per thread").
//!
//!     cargo run --release -p guestward-digest --example turns

use guestward_digest::{Hashers, Wanted};
use std::time::Instant;

const BUFFER: usize = 128 * 1024;
const ROUNDS: usize = 4096;

fn main() {
    let a: Vec<u8> = (0..BUFFER).map(|i| (i * 7 + 3) as u8).collect();
    let b: Vec<u8> = (0..BUFFER).map(|i| (i * 13 + 1) as u8).collect();
    let gb = (2 * BUFFER * ROUNDS) as f64 / 1e9;
    for wanted in [
        Wanted { sha256: true, ..Wanted::default() },
        Wanted { sha256: true, md5: true, ..Wanted::default() },
    ] {
        let t = Instant::now();
        let (mut ha, mut hb) = (Hashers::new(wanted), Hashers::new(wanted));
        for _ in 0..ROUNDS {
            Hashers::feed(&mut [(&mut ha, &a)]);
        }
        for _ in 0..ROUNDS {
            Hashers::feed(&mut [(&mut hb, &b)]);
        }
        let alone = (ha.finish(), hb.finish());
        let one_after_another = gb / t.elapsed().as_secs_f64();
        let t = Instant::now();
        let (mut ha, mut hb) = (Hashers::new(wanted), Hashers::new(wanted));
        for _ in 0..ROUNDS {
            Hashers::feed(&mut [(&mut ha, &a), (&mut hb, &b)]);
        }
        let in_turns = gb / t.elapsed().as_secs_f64();
        assert_eq!((ha.finish(), hb.finish()), alone, "the same digests either way");
        println!(
            "{wanted:?}: one input after another {one_after_another:.2} GB/s, two in turns {in_turns:.2} GB/s"
        );
    }
}
