//! The content digests one read of a file feeds (SHA-256, BLAKE3, MD5), and how several are fed
//! at once: [`Hashers::feed`] gives each chain its bytes in short turns, so that one thread
//! keeps several chains of dependent instructions in flight.
//!
//! Why turns: a SHA-256 or MD5 computation is one chain; each round waits for the one before.
//! Fed one after another, a CPU runs one chain at a time and leaves its execution units idle
//! while each round's result is awaited. Fed in turns of [`TURN_BYTES`], the instructions of
//! two chains sit in the CPU's window together and run in each other's gaps: two files'
//! SHA-256 at once, or a file's SHA-256 (the SHA unit) beside its MD5 (the integer units).
//! Measured on a 2-core AMD EPYC with SHA-NI (docs/benchmarks.md, "Two hash chains per
//! thread"): SHA-256 of two buffers in L2 at 2.0-2.1 GB/s a core instead of 1.57.
//!
//! MD5 takes more: it runs at about 0.8 GB/s on one chain, where SHA-NI gives 2 GB/s. Several
//! files' MD5 chains fed together go side by side in SIMD lanes instead ([`MD5_LANES`], through
//! `md5-many`): 16 chains in AVX-512 at about 6 GB/s on one core, measured here. A scan that
//! takes MD5s (the first baseline of dpkg's files) therefore reads many files at once.
//!
//! This is a crate of its own because it must be compiled for speed: the many short `update`
//! calls inline the hash crates' generic buffering code into the caller, and at the
//! workspace's size-first `opt-level = "z"` those calls cost more than the turns gain. The
//! workspace builds this crate (like `sha2`, `md5-many` and `blake3`) at `opt-level = 3`, which a
//! profile sets per crate, not per function. Nothing here is a hash primitive: every byte is
//! hashed by `sha2`, `md5-many` or `blake3`; this crate only decides the order of the calls.

// Output goes through `guestward_core::stdio`: the print macros panic when a write fails.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

use std::sync::OnceLock;

use sha2::Digest as _;

/// Bytes given to each chain per turn: one SHA-256 and MD5 block. Longer turns let one chain
/// run alone for longer; measured, 64 bytes did best and 512 gained little.
pub const TURN_BYTES: usize = 64;

/// Most MD5 chains fed together to the SIMD engine: AVX-512's 16 lanes of 32 bits. More are fed
/// in groups of this many.
pub const MD5_LANES: usize = 16;

/// Fewest MD5 chains fed together that go to the SIMD engine. Measured here (16 KiB each): 2
/// chains ran at the single chain's 0.8 GB/s, 4 at 1.2, 8 at 4.0, 16 at 6.0. Two chains are fed
/// in turns beside their SHA-256 instead, as they were.
const MIN_MD5_LANES: usize = 3;

/// The MD5 engine for this CPU, detected once (`md5-many` picks AVX-512, AVX2, SSE or scalar).
fn md5_engine() -> md5_many::Md5Many {
    static ENGINE: OnceLock<md5_many::Md5Many> = OnceLock::new();
    *ENGINE.get_or_init(md5_many::Md5Many::new)
}

/// Which digests to take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wanted {
    /// SHA-256.
    pub sha256: bool,
    /// BLAKE3.
    pub blake3: bool,
    /// MD5 (dpkg's manifests, old rpms).
    pub md5: bool,
}

/// The digests of one read, those that were wanted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Digests {
    /// SHA-256.
    pub sha256: Option<[u8; 32]>,
    /// BLAKE3.
    pub blake3: Option<[u8; 32]>,
    /// MD5.
    pub md5: Option<[u8; 16]>,
}

/// The hash states of one read in progress.
#[derive(Clone)]
pub struct Hashers {
    sha256: Option<sha2::Sha256>,
    blake3: Option<blake3::Hasher>,
    md5: Option<md5_many::Md5State>,
    /// BLAKE3 is fed by [`Hashers::feed_blake3`] only (see [`Hashers::with_blake3_apart`]).
    blake3_apart: bool,
}

impl std::fmt::Debug for Hashers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hashers")
            .field("sha256", &self.sha256.is_some())
            .field("blake3", &self.blake3.is_some())
            .field("md5", &self.md5.is_some())
            .field("blake3_apart", &self.blake3_apart)
            .finish()
    }
}

impl Hashers {
    /// States for the digests `wanted`, with nothing fed yet.
    pub fn new(wanted: Wanted) -> Self {
        Self {
            sha256: wanted.sha256.then(sha2::Sha256::new),
            blake3: wanted.blake3.then(blake3::Hasher::new),
            md5: wanted.md5.then(md5_many::Md5State::new),
            blake3_apart: false,
        }
    }

    /// These states with BLAKE3 fed apart: by [`Self::feed_blake3`], not by [`Self::feed`].
    /// For a reader that hands [`Self::feed`] its buffer in pieces cut to suit the other chains
    /// (equal lengths for MD5's SIMD lanes): BLAKE3 spreads an input over SIMD lanes 1 KiB
    /// chunk by chunk, and hashes a piece of a few KiB mostly one block at a time (measured on
    /// a first baseline with a BLAKE3 policy: 20-35% of the CPU), so it is better fed each
    /// buffer whole as it is read.
    pub fn with_blake3_apart(mut self) -> Self {
        self.blake3_apart = true;
        self
    }

    /// Feeds BLAKE3 only, when these states were made [`Self::with_blake3_apart`]: the bytes must
    /// be those given to [`Self::feed`], in the same order (as pieces of any size).
    pub fn feed_blake3(&mut self, data: &[u8]) {
        if let Some(b3) = self.blake3.as_mut().filter(|_| self.blake3_apart) {
            b3.update(data);
        }
    }

    /// Feeds each of `feeds` its bytes: SHA-256 and MD5 in turns of [`TURN_BYTES`] across all
    /// of them (what is left of the longer ones, once the shorter are fed, in turns among
    /// themselves). BLAKE3 takes each whole: it spreads a long input over SIMD lanes itself.
    /// Three MD5 chains or more go to SIMD lanes together, their SHA-256 in turns two by two.
    pub fn feed(feeds: &mut [(&mut Hashers, &[u8])]) {
        for (h, data) in feeds.iter_mut() {
            if let Some(b3) = h.blake3.as_mut().filter(|_| !h.blake3_apart) {
                b3.update(data);
            }
        }
        if feeds.iter().filter(|(h, _)| h.md5.is_some()).count() >= MIN_MD5_LANES {
            feed_md5_lanes(feeds);
            // SHA-256 two chains at a time: measured, pairs in turns ran at 2.3-2.4 GB/s a core,
            // all 16 in turns at 2.1 (the calls cost more than a third chain gains).
            for pair in feeds.chunks_mut(2) {
                Self::feed_turns(pair, false);
            }
        } else {
            Self::feed_turns(feeds, true);
        }
    }

    /// SHA-256, and MD5 when `md5` (else it was fed), in turns.
    fn feed_turns(feeds: &mut [(&mut Hashers, &[u8])], md5: bool) {
        fn chain(h: &mut Option<md5_many::Md5State>, wanted: bool) -> Option<&mut md5_many::Md5State> {
            h.as_mut().filter(|_| wanted)
        }
        // One chain alone gains nothing from turns: fed whole, without the calls.
        if let [(h, data)] = feeds
            && (h.sha256.is_none() || !md5 || h.md5.is_none())
        {
            if let Some(sha) = h.sha256.as_mut() {
                sha.update(*data);
            }
            if let Some(md5) = chain(&mut h.md5, md5) {
                md5.update(data);
            }
            return;
        }
        let mut at = 0;
        // Two inputs (a lane beside a read): their common length in whole turns, each chain
        // fed straight, without the general loop's checks per turn.
        if let [(a, da), (b, db)] = feeds {
            let whole = da.len().min(db.len()) / TURN_BYTES * TURN_BYTES;
            let pairs = da[..whole].chunks_exact(TURN_BYTES).zip(db[..whole].chunks_exact(TURN_BYTES));
            // Any other mix is left to the general loop, from the start.
            at = match (a.sha256.as_mut(), chain(&mut a.md5, md5), b.sha256.as_mut(), chain(&mut b.md5, md5))
            {
                (Some(sa), None, Some(sb), None) => {
                    pairs.for_each(|(ta, tb)| {
                        sa.update(ta);
                        sb.update(tb);
                    });
                    whole
                }
                (Some(sa), Some(ma), Some(sb), Some(mb)) => {
                    pairs.for_each(|(ta, tb)| {
                        sa.update(ta);
                        ma.update(ta);
                        sb.update(tb);
                        mb.update(tb);
                    });
                    whole
                }
                _ => 0,
            };
        }
        let longest = feeds.iter().map(|(_, data)| data.len()).max().unwrap_or(0);
        while at < longest {
            for (h, data) in feeds.iter_mut() {
                let Some(turn) = data.get(at..data.len().min(at + TURN_BYTES)) else { continue };
                if let Some(sha) = h.sha256.as_mut() {
                    sha.update(turn);
                }
                if let Some(md5) = chain(&mut h.md5, md5) {
                    md5.update(turn);
                }
            }
            at += TURN_BYTES;
        }
    }

    /// The digests of everything fed.
    pub fn finish(self) -> Digests {
        Digests {
            sha256: self.sha256.map(|h| h.finalize().into()),
            blake3: self.blake3.map(|h| *h.finalize().as_bytes()),
            md5: self.md5.map(|h| h.finalize()),
        }
    }
}

/// Feeds the MD5 chains of `feeds` their bytes side by side in the engine's SIMD lanes, up to
/// [`MD5_LANES`] at a time. Each chain's state is copied in and back out (96 bytes): the engine
/// takes the states as one slice.
///
/// Fewer chains of equal, whole-block inputs than the engine's SIMD lanes (the last lanes of a
/// scan, as they finish one by one) are fed with the lanes left empty filled by throwaway
/// chains: the engine runs a multiple of its width in its fastest kernels, and any other count
/// through general ones several times slower, for 5 to 7 chains slower than a single chain
/// (see [`padded_lanes`]).
fn feed_md5_lanes(feeds: &mut [(&mut Hashers, &[u8])]) {
    let engine = md5_engine();
    let mut states = [md5_many::Md5State::new(); MD5_LANES];
    let mut inputs: [&[u8]; MD5_LANES] = [&[]; MD5_LANES];
    for group in feeds.chunks_mut(MD5_LANES) {
        let mut lanes = 0;
        for (h, data) in group.iter() {
            if let Some(state) = h.md5 {
                states[lanes] = state;
                inputs[lanes] = data;
                lanes += 1;
            }
        }
        let fed = padded_lanes(&inputs[..lanes], engine.lanes()).min(MD5_LANES);
        for pad in lanes..fed {
            // Only its cost matters: its state is never read.
            states[pad] = md5_many::Md5State::new();
            inputs[pad] = inputs[0];
        }
        engine.update_many(&mut states[..fed], &inputs[..fed]);
        let mut lane = 0;
        for (h, _) in group.iter_mut() {
            if let Some(state) = h.md5.as_mut() {
                *state = states[lane];
                lane += 1;
            }
        }
    }
}

/// How many chains to feed the engine for `inputs`, whose native width is `width` chains: 2 or
/// more chains of the same whole number of blocks are topped up to a multiple of that width
/// when it is 8 or 16 (AVX2, AVX-512), else as many as there are. Measured on a 2-core Intel
/// Xeon VM with AVX-512, 16 KiB to each chain (docs/benchmarks.md, "The last MD5 lanes"), GB/s as
/// they are and topped up: AVX-512 16 chains 10.0; 15 3.5 and 9.4; 9 2.3 and 5.7; 8 4.5 and
/// 5.0; 7 0.34 and 4.4; 5 0.25 and 3.2; 2 0.84 and 1.3; one 0.84 and 0.62 (fed as it is). The
/// crate's AVX2 kernels gain as much from a multiple of 8; its 4-lane ones lose (SSE: none).
fn padded_lanes(inputs: &[&[u8]], width: usize) -> usize {
    let n = inputs.len();
    let len = inputs.first().map_or(0, |i| i.len());
    let whole_blocks = len > 0 && len.is_multiple_of(64) && inputs.iter().all(|i| i.len() == len);
    if width >= 8 && n >= 2 && whole_blocks { n.div_ceil(width) * width } else { n }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const ALL: Wanted = Wanted { sha256: true, blake3: true, md5: true };

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    /// Each digest as its own crate computes it over the whole input at once.
    fn reference(data: &[u8]) -> Digests {
        Digests {
            sha256: Some(sha2::Sha256::digest(data).into()),
            blake3: Some(*blake3::hash(data).as_bytes()),
            md5: Some(md5::Md5::digest(data).into()),
        }
    }

    fn only(d: Digests, w: Wanted) -> Digests {
        Digests {
            sha256: d.sha256.filter(|_| w.sha256),
            blake3: d.blake3.filter(|_| w.blake3),
            md5: d.md5.filter(|_| w.md5),
        }
    }

    /// Fed in turns, alone or beside other inputs of every length around the turn and block
    /// sizes, in pieces of any size, each input gets exactly the digests of its own bytes,
    /// whichever digests each of the two takes.
    #[test]
    fn turns_give_each_input_its_own_digests() {
        let lens = [0, 1, 63, 64, 65, 127, 128, 129, 1000, 4096, 65_537];
        let sha = Wanted { sha256: true, ..Wanted::default() };
        let sha_md5 = Wanted { sha256: true, md5: true, ..Wanted::default() };
        let md5_only = Wanted { md5: true, ..Wanted::default() };
        let mixes = [
            (ALL, ALL),
            (sha, sha),
            (sha_md5, sha_md5),
            (sha, sha_md5),
            (sha_md5, sha),
            (md5_only, sha),
            (ALL, sha),
        ];
        for &a_len in &lens {
            for &b_len in &lens {
                let (a, b) = (bytes(a_len, 1), bytes(b_len, 2));
                for piece in [1, 7, 64, 100, 4096, usize::MAX] {
                    for (wa, wb) in mixes {
                        let mut ha = Hashers::new(wa);
                        let mut hb = Hashers::new(wb);
                        let (mut pa, mut pb) =
                            (a.chunks(piece.min(a_len.max(1))), b.chunks(piece.min(b_len.max(1))));
                        loop {
                            match (pa.next(), pb.next()) {
                                (None, None) => break,
                                (Some(x), Some(y)) => Hashers::feed(&mut [(&mut ha, x), (&mut hb, y)]),
                                (Some(x), None) => Hashers::feed(&mut [(&mut ha, x)]),
                                (None, Some(y)) => Hashers::feed(&mut [(&mut hb, y)]),
                            }
                        }
                        let at =
                            format!("{a_len} bytes beside {b_len}, pieces of {piece}, {wa:?} and {wb:?}");
                        assert_eq!(ha.finish(), only(reference(&a), wa), "a: {at}");
                        assert_eq!(hb.finish(), only(reference(&b), wb), "b: {at}");
                    }
                }
            }
        }
    }

    /// Many inputs fed together (MD5 in SIMD lanes, in groups of [`MD5_LANES`]): each gets the
    /// digests of its own bytes, whatever its length and the lengths beside it (every length
    /// around the block size, equal and unequal within a feed), however many are fed and
    /// whichever take an MD5. The engine's control flow depends on lengths only, never on
    /// content: these patterns are what can go wrong in it.
    #[test]
    fn many_md5_chains_fed_together_each_get_their_own_digests() {
        let sha_md5 = Wanted { sha256: true, md5: true, ..Wanted::default() };
        let sha = Wanted { sha256: true, ..Wanted::default() };
        let md5_only = Wanted { md5: true, ..Wanted::default() };
        for count in [3, 4, 7, 8, 9, 15, 16, 17, 31, 33, 48, 50] {
            for pattern in 0..6usize {
                // Lengths of each input's pieces, fed in rounds: equal, or skewed among inputs.
                let piece = |input: usize, round: usize| match pattern {
                    0 => 4096,
                    1 => 64,
                    2 => 1 + (input * 37 + round * 11) % 200,
                    3 => [0, 1, 63, 64, 65, 127, 128, 129][(input + round) % 8],
                    4 => (input * 4099 + round * 61) % 9000,
                    _ => 16 * 1024 - (input % 3) * 64,
                };
                let wanted =
                    |input: usize| if pattern == 5 { [sha_md5, sha, md5_only][input % 3] } else { sha_md5 };
                let data: Vec<Vec<u8>> = (0..count).map(|i| bytes(40_000, i as u8)).collect();
                let mut hashers: Vec<Hashers> = (0..count).map(|i| Hashers::new(wanted(i))).collect();
                let mut fed = vec![0usize; count];
                for round in 0..6 {
                    let mut feeds: Vec<(&mut Hashers, &[u8])> = Vec::new();
                    for (i, h) in hashers.iter_mut().enumerate() {
                        let n = piece(i, round).min(data[i].len() - fed[i]);
                        feeds.push((h, &data[i][fed[i]..fed[i] + n]));
                        fed[i] += n;
                    }
                    Hashers::feed(&mut feeds);
                }
                for (i, h) in hashers.into_iter().enumerate() {
                    let at = format!("input {i} of {count}, pattern {pattern}, {} bytes", fed[i]);
                    assert_eq!(h.finish(), only(reference(&data[i][..fed[i]]), wanted(i)), "{at}");
                }
            }
        }
    }

    /// Chains of equal whole blocks are topped up to the engine's width (AVX2, AVX-512); a single
    /// chain, unequal or partial inputs and narrower engines are fed as they are. The digests of
    /// topped-up feeds are checked above (3, 4, 7, 9 and 15 chains of 64 and 4,096 bytes).
    #[test]
    fn lanes_are_topped_up_to_the_engine_width_only_where_that_is_faster() {
        let block = [0u8; 64];
        let two_blocks = [0u8; 128];
        let equal = |n: usize| vec![&block[..]; n];
        assert_eq!(padded_lanes(&equal(1), 16), 1);
        for n in 2..=16 {
            assert_eq!(padded_lanes(&equal(n), 16), 16, "{n} chains, AVX-512");
            assert_eq!(padded_lanes(&equal(n), 8), if n <= 8 { 8 } else { 16 }, "{n} chains, AVX2");
            assert_eq!(padded_lanes(&equal(n), 4), n, "{n} chains, SSE");
        }
        assert_eq!(padded_lanes(&[&block[..], &two_blocks[..]], 16), 2, "unequal");
        assert_eq!(padded_lanes(&[&block[..63], &block[..63]], 16), 2, "not whole blocks");
        assert_eq!(padded_lanes(&[&block[..0], &block[..0]], 16), 2, "empty");
    }

    /// BLAKE3 fed apart takes only what `feed_blake3` gives it, in pieces of its own, while
    /// the other chains are fed in theirs: every digest is still that of the whole input.
    #[test]
    fn blake3_fed_apart_gets_only_what_is_given_to_it() {
        let data = bytes(50_000, 5);
        let mut apart = Hashers::new(ALL).with_blake3_apart();
        let mut beside = Hashers::new(ALL);
        let other = bytes(30_000, 6);
        // Both cut in 15 pieces: every byte of each is fed.
        for (piece, other_piece) in data.chunks(3_500).zip(other.chunks(2_100)) {
            Hashers::feed(&mut [(&mut apart, piece), (&mut beside, other_piece)]);
        }
        for buffer in data.chunks(16 * 1024) {
            apart.feed_blake3(buffer);
            beside.feed_blake3(buffer);
        }
        assert_eq!(apart.finish(), reference(&data));
        assert_eq!(beside.finish(), reference(&other), "fed by `feed` alone, as before");
    }

    /// Only what is wanted is taken; a single input with two chains is fed in turns too.
    #[test]
    fn only_the_wanted_digests_are_taken() {
        let data = bytes(10_000, 9);
        let full = reference(&data);
        for wanted in [
            Wanted::default(),
            Wanted { sha256: true, ..Wanted::default() },
            Wanted { md5: true, ..Wanted::default() },
            Wanted { sha256: true, md5: true, ..Wanted::default() },
            Wanted { blake3: true, ..Wanted::default() },
            ALL,
        ] {
            let mut h = Hashers::new(wanted);
            Hashers::feed(&mut [(&mut h, &data)]);
            let got = h.finish();
            assert_eq!(got.sha256, full.sha256.filter(|_| wanted.sha256));
            assert_eq!(got.blake3, full.blake3.filter(|_| wanted.blake3));
            assert_eq!(got.md5, full.md5.filter(|_| wanted.md5));
        }
    }
}
