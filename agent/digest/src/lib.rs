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
//! This is a crate of its own because it must be compiled for speed: the many short `update`
//! calls inline the hash crates' generic buffering code into the caller, and at the
//! workspace's size-first `opt-level = "z"` those calls cost more than the turns gain. The
//! workspace builds this crate (like `sha2`, `md-5` and `blake3`) at `opt-level = 3`, which a
//! profile sets per crate, not per function. Nothing here is a hash primitive: every byte is
//! hashed by `sha2`, `md-5` or `blake3`; this crate only decides the order of the calls.

use sha2::Digest as _;

/// Bytes given to each chain per turn: one SHA-256 and MD5 block. Longer turns let one chain
/// run alone for longer; measured, 64 bytes did best and 512 gained little.
pub const TURN_BYTES: usize = 64;

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
    md5: Option<md5::Md5>,
}

impl std::fmt::Debug for Hashers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hashers")
            .field("sha256", &self.sha256.is_some())
            .field("blake3", &self.blake3.is_some())
            .field("md5", &self.md5.is_some())
            .finish()
    }
}

impl Hashers {
    /// States for the digests `wanted`, with nothing fed yet.
    pub fn new(wanted: Wanted) -> Self {
        Self {
            sha256: wanted.sha256.then(sha2::Sha256::new),
            blake3: wanted.blake3.then(blake3::Hasher::new),
            md5: wanted.md5.then(md5::Md5::new),
        }
    }

    /// Feeds each of `feeds` its bytes: SHA-256 and MD5 in turns of [`TURN_BYTES`] across all
    /// of them (what is left of the longer ones, once the shorter are fed, in turns among
    /// themselves). BLAKE3 takes each whole: it spreads a long input over SIMD lanes itself.
    pub fn feed(feeds: &mut [(&mut Hashers, &[u8])]) {
        for (h, data) in feeds.iter_mut() {
            if let Some(b3) = h.blake3.as_mut() {
                b3.update(data);
            }
        }
        // One chain alone gains nothing from turns: fed whole, without the calls.
        if let [(h, data)] = feeds
            && (h.sha256.is_none() || h.md5.is_none())
        {
            if let Some(sha) = h.sha256.as_mut() {
                sha.update(*data);
            }
            if let Some(md5) = h.md5.as_mut() {
                md5.update(*data);
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
            at = match (a.sha256.as_mut(), a.md5.as_mut(), b.sha256.as_mut(), b.md5.as_mut()) {
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
                if let Some(md5) = h.md5.as_mut() {
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
            md5: self.md5.map(|h| h.finalize().into()),
        }
    }
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
