//! What a JSON body will cost in memory once parsed, estimated before it is parsed.
//!
//! The decompressed body is capped (`limits.max_decompressed_bytes`), but the tree parsed from
//! it is not the same size: every JSON object becomes a B-tree map with a node of its own
//! (about 660 bytes for `{"":0}`, seven bytes of JSON), every array element a 32-byte value.
//! A compromised agent once sent 5.9 KB of zstd that expanded to 64 MiB of `{"":0},` and made
//! the collector allocate 6.4 GB; two such requests at once, 12.7 GB.
//!
//! [`tree_cost`] walks the body with serde_json's own parser and allocates nothing (a visitor
//! that only counts), so the request can reserve what the parse will take from the memory
//! budget first, or be refused when that could never fit. The estimate errs high: the typed
//! report built from the tree, and the stored copy, are smaller than the tree.

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::cell::Cell;
use std::fmt;

/// One `serde_json::Value`, as stored in its parent (array slot or map entry).
const VALUE_BYTES: u64 = 32;
/// A B-tree node of an object's map (eleven key and value slots), measured: `{"":0}` alone
/// costs one.
const MAP_NODE_BYTES: u64 = 640;
/// Entries a node holds at most: a map of up to this many entries is one node.
const MAP_NODE_CAPACITY: u64 = 11;
/// Entries counted per node in a map that has split: a node split when full keeps five or six
/// entries, and keys sent in order (or reverse order) never fill it again, so a large map
/// averages about six per leaf, and internal nodes (736 bytes, one per six or more children)
/// add about a sixth. Counted as four, the worst case with room: a 200,000-key object took
/// 135 bytes an entry, measured, where seven per node had estimated 123.
const MAP_ENTRIES_PER_NODE: u64 = 4;

/// What serde_json's exact float parsing (`float_roundtrip`) holds at most while it compares
/// one number as big integers: a few vectors of 64-bit limbs, bounded because it reads at most
/// 768 significant digits and the exponent is bounded by f64's range. Measured under 700 bytes
/// for 768 digits at either end of that range; counted as 4 KiB, once per body.
const FLOAT_BIGINT_BYTES: u64 = 4096;

/// What one heap allocation of `len` bytes takes: glibc's malloc adds an 8-byte header and
/// rounds to 16, and its smallest chunk is 32 bytes. A short string is mostly that overhead:
/// counted by its length alone, a 200,000-key object (`{"k0":0,...}`) took 38% more than
/// estimated, measured.
fn heap_bytes(len: u64) -> u64 {
    if len == 0 { 0 } else { len.saturating_add(8).next_multiple_of(16).max(32) }
}

/// What an array of `n` values takes: serde_json pushes them into a `Vec`, whose capacity
/// starts at four and doubles, and while it doubles the old buffer is still held (half the
/// new one). Counted as two slots a value, a one-element array (`[[[[0]]]]`: 144 bytes each)
/// took twice the estimate, measured.
fn array_bytes(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    let capacity = n.checked_next_power_of_two().unwrap_or(u64::MAX).max(4);
    let buffer = heap_bytes(capacity.saturating_mul(VALUE_BYTES));
    let growing = if capacity > 4 { heap_bytes((capacity / 2).saturating_mul(VALUE_BYTES)) } else { 0 };
    buffer.saturating_add(growing)
}

/// Estimated bytes that parsing `json` into a `serde_json::Value` would allocate, or the
/// parser's error for a body that is not JSON (the parse proper reports it, with its place).
pub(crate) fn tree_cost(json: &[u8]) -> Result<u64, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let longest = Cell::new(0);
    let cost = Cost { longest: &longest }.deserialize(&mut de)?.saturating_add(VALUE_BYTES);
    de.end()?;
    // A string with escapes is decoded into the parser's scratch buffer before it is copied
    // out, and that buffer lives as long as the parse. Its capacity is under twice the
    // longest string: it doubles, or jumps to what a run of plain bytes needs, whichever is
    // more. While it last grew, the buffer before (under the longest string) was held with it;
    // at the end the string's own copy is (counted with the strings). Found by the `json_cost`
    // fuzz target: counted as the longest string rounded to a power of two, a 1,006-byte
    // escaped string took 2,992 bytes against 2,227 estimated (the buffer jumped from 256 to
    // 975 bytes, then doubled to 1,950).
    //
    // A number too long for 64 bits is read digit by digit into the same buffer when a
    // dependency turns serde_json's `float_roundtrip` on (the workspace's tests do): the
    // longest run of number characters in the body bounds it, since a run inside a string is
    // no longer than the string (found by the same target: 23 digits took 80 bytes, 34 were
    // estimated).
    let numbers = number_runs(json);
    let longest = longest.get().max(numbers.longest);
    let mut scratch = heap_bytes(longest.saturating_mul(2)).saturating_add(heap_bytes(longest));
    if numbers.any_digit {
        // With `float_roundtrip`, a float the fast paths cannot decide exactly is compared as
        // big integers, one number at a time (found by the same target: 23 digits took 224
        // bytes, 136 estimated).
        scratch = scratch.saturating_add(FLOAT_BIGINT_BYTES);
    }
    let cost = cost.saturating_add(scratch);
    // What the model leaves out (the allocator's own growth, pages touched in part): a
    // sixteenth more. Measured, the modelled cost alone came within 2% of the peak for the
    // tightest shapes (`[[[[0]]]]`, report-like bodies).
    Ok(cost.saturating_add(cost / 16))
}

/// What one pass over a body tells of its numbers.
struct NumberRuns {
    /// The longest run of bytes a JSON number is made of (`0-9 + - . e E`), anywhere.
    longest: u64,
    /// Whether it holds a digit at all.
    any_digit: bool,
}

fn number_runs(json: &[u8]) -> NumberRuns {
    let (mut longest, mut run, mut any_digit) = (0u64, 0u64, false);
    for &b in json {
        if matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
            any_digit |= b.is_ascii_digit();
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    NumberRuns { longest, any_digit }
}

/// Counts the heap bytes below one value (not its own slot, which its parent counts), and
/// keeps the length of the longest string met.
#[derive(Clone, Copy)]
struct Cost<'a> {
    longest: &'a Cell<u64>,
}

impl<'de> DeserializeSeed<'de> for Cost<'_> {
    type Value = u64;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Cost<'_> {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<u64, E> {
        Ok(0)
    }

    fn visit_i64<E>(self, _: i64) -> Result<u64, E> {
        Ok(0)
    }

    fn visit_u64<E>(self, _: u64) -> Result<u64, E> {
        Ok(0)
    }

    fn visit_f64<E>(self, _: f64) -> Result<u64, E> {
        Ok(0)
    }

    fn visit_unit<E>(self) -> Result<u64, E> {
        Ok(0)
    }

    fn visit_str<E>(self, s: &str) -> Result<u64, E> {
        let len = s.len() as u64;
        self.longest.set(self.longest.get().max(len));
        Ok(heap_bytes(len))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let mut total = 0u64;
        let mut n = 0u64;
        while let Some(below) = seq.next_element_seed(self)? {
            n += 1;
            total = total.saturating_add(below);
        }
        Ok(total.saturating_add(array_bytes(n)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        let mut total = 0u64;
        let mut entries = 0u64;
        while let Some(key) = map.next_key_seed(self)? {
            let value = map.next_value_seed(self)?;
            entries += 1;
            total = total.saturating_add(key).saturating_add(value);
        }
        let nodes = match entries {
            0 => 0,
            1..=MAP_NODE_CAPACITY => 1,
            _ => entries.div_ceil(MAP_ENTRIES_PER_NODE),
        };
        Ok(total.saturating_add(nodes.saturating_mul(MAP_NODE_BYTES)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The `json_cost` fuzz target's oracle, so that its corpus is replayed without nightly. It
    // counts only on a thread inside `peak_of`: the other tests of this binary are unaffected.
    #[global_allocator]
    static ALLOCATOR: guestward_reclaim::counting::Counting = guestward_reclaim::counting::Counting;

    /// Every body of the fuzz target's corpus and regressions: the estimate covers what the
    /// collector's parse of it allocates. A 1,006-byte escaped string once took 34% more.
    #[test]
    fn the_estimate_covers_what_the_fuzz_corpus_allocates_when_parsed() {
        let mut parsed = 0;
        for path in guestward_core::testing::fuzz_inputs("json_cost") {
            let json = std::fs::read(&path).unwrap();
            let Ok(estimate) = tree_cost(&json) else { continue };
            let took = guestward_reclaim::counting::peak_of(|| {
                assert!(serde_json::from_slice::<serde_json::Value>(&json).is_ok(), "{}", path.display());
            });
            assert!(
                took <= estimate,
                "{}: the parse took {took} bytes, {estimate} estimated",
                path.display()
            );
            parsed += 1;
        }
        // A third of the corpus is JSON (its seeds: bodies and the shapes that amplify).
        assert!(parsed >= 50, "only {parsed} inputs of the corpus are JSON");
    }

    /// The estimate stays above what the parse takes, and within a few times of it, for the
    /// shapes that amplify most (small objects, long arrays) and for plain report-like JSON.
    #[test]
    fn the_estimate_covers_the_shapes_that_amplify() {
        let objects = format!("[{}{{}}]", r#"{"":0},"#.repeat(100_000));
        let zeros = format!("[{}0]", "0,".repeat(100_000));
        let words = format!("[{}\"x\"]", r#""abcdefgh","#.repeat(100_000));
        for json in [&objects, &zeros, &words] {
            let cost = tree_cost(json.as_bytes()).unwrap();
            // At least 32 bytes a value and 600 an object: the measured floor of the parse.
            assert!(cost > json.len() as u64 * 4, "{cost} for {} bytes", json.len());
        }
        assert!(tree_cost(objects.as_bytes()).unwrap() >= 100_000 * 640);
        assert!(tree_cost(b"{\"reports\":[]}").unwrap() < 1024);
    }

    /// Set in the child runs of the measured test below: the shape the child parses.
    const PROBE_ENV: &str = "GUESTWARD_JSON_COST_PROBE";
    const MEASURED: &str = "json_cost::tests::the_estimate_covers_the_memory_the_parse_takes";

    /// Bodies a compromised agent could send, each a few MB of JSON: the shapes that amplify
    /// most, and a report-like one.
    fn shape(name: &str) -> String {
        match name {
            "objects" => format!("[{}{{}}]", r#"{"":0},"#.repeat(100_000)),
            "zeros" => format!("[{}0]", "0,".repeat(1_000_000)),
            "words" => format!("[{}\"x\"]", r#""abcdefgh","#.repeat(1_000_000)),
            "wide" => format!("{{{}\"end\":0}}", (0..200_000).map(|i| format!("\"k{i}\":{i},")).collect::<String>()),
            "nested" => format!("[{}0]", "[[[[[[[[0]]]]]]]],".repeat(100_000)),
            "escaped" => format!("[\"{}\"]", "\\n".repeat(4_000_000)),
            "escaped_keys" => format!("{{{}\"end\":0}}", (0..100_000).map(|i| format!("\"\\u00{:02x}{i}\":0,", 0x41 + i % 26)).collect::<String>()),
            _ => format!(
                "{{\"reports\":[{}{{}}]}}",
                (0..20_000)
                    .map(|i| format!(
                        r#"{{"path":"/usr/lib/x86_64-linux-gnu/lib{i}.so","sha256":"{i:064x}","size":{i},"mode":420}},"#
                    ))
                    .collect::<String>()
            ),
        }
    }

    fn status_kib(field: &str) -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find_map(|l| l.strip_prefix(field)).unwrap();
        line.trim().trim_end_matches("kB").trim().parse().unwrap()
    }

    /// Measured, not assumed: each shape is parsed into a `serde_json::Value` in a child
    /// process of its own (this test binary again), whose peak resident memory, reset just
    /// before the parse, must stay below the estimate. The estimate's job is to be reserved
    /// before the parse: one that fell short would let a body take more than its reservation.
    #[test]
    fn the_estimate_covers_the_memory_the_parse_takes() {
        if let Ok(name) = std::env::var(PROBE_ENV) {
            let json = shape(&name);
            let cost = tree_cost(json.as_bytes()).unwrap();
            // Writing 5 to clear_refs resets VmHWM to the current VmRSS (Linux 4.0 and later).
            if let Err(e) = std::fs::write("/proc/self/clear_refs", "5") {
                println!("\nPROBE-UNAVAILABLE cannot reset the peak (/proc/self/clear_refs: {e})");
                return;
            }
            let before = status_kib("VmRSS:");
            let value: serde_json::Value = serde_json::from_slice(json.as_bytes()).unwrap();
            let peak = status_kib("VmHWM:");
            std::hint::black_box(&value);
            println!("\nPROBE {} {cost}", peak.saturating_sub(before) * 1024);
            return;
        }
        for name in ["objects", "zeros", "words", "wide", "nested", "escaped", "escaped_keys", "report"] {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", MEASURED, "--nocapture", "--test-threads=1"])
                .env(PROBE_ENV, name)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{name}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
            if let Some(why) = stdout.lines().find_map(|l| l.strip_prefix("PROBE-UNAVAILABLE ")) {
                guestward_core::testing::skip_or_fail("the parse's measured peak", why);
                return;
            }
            let line =
                stdout.lines().find_map(|l| l.strip_prefix("PROBE ")).unwrap_or_else(|| panic!("{stdout}"));
            let (took, cost) = line.split_once(' ').unwrap();
            let (took, cost): (u64, u64) = (took.parse().unwrap(), cost.parse().unwrap());
            eprintln!("{name}: the parse took {took} bytes, {cost} estimated");
            assert!(took > 1 << 20, "{name}: the parse took only {took} bytes: nothing measured");
            assert!(took <= cost, "{name}: the parse took {took} bytes, more than the {cost} estimated");
            // And not so high that an ordinary body would be refused as too large.
            assert!(cost <= 8 * took, "{name}: {cost} estimated for {took} taken");
        }
    }

    #[test]
    fn what_is_not_json_is_the_parsers_error() {
        assert!(tree_cost(b"{\"reports\":[").is_err());
        assert!(tree_cost(b"{} trailing").is_err());
        assert!(tree_cost(&[b'['; 200]).is_err(), "nesting beyond serde_json's limit");
    }
}
