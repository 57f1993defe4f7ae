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
use std::fmt;

/// One `serde_json::Value`, as stored in its parent (array slot or map entry).
const VALUE_BYTES: u64 = 32;
/// A B-tree node of an object's map (eleven key and value slots), measured: `{"":0}` alone
/// costs one.
const MAP_NODE_BYTES: u64 = 640;
/// Entries counted per node: a node holds five to eleven once the map has split (seven on
/// average, internal nodes included); a small map has one node, counted as one per seven
/// entries started.
const MAP_ENTRIES_PER_NODE: u64 = 7;

/// Estimated bytes that parsing `json` into a `serde_json::Value` would allocate, or the
/// parser's error for a body that is not JSON (the parse proper reports it, with its place).
pub(crate) fn tree_cost(json: &[u8]) -> Result<u64, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let cost = Cost.deserialize(&mut de)?;
    de.end()?;
    Ok(cost.saturating_add(VALUE_BYTES))
}

/// Counts the heap bytes below one value (not its own slot, which its parent counts).
#[derive(Clone, Copy)]
struct Cost;

impl<'de> DeserializeSeed<'de> for Cost {
    type Value = u64;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Cost {
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
        Ok(s.len() as u64)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let mut total = 0u64;
        // A vector grows by doubling: up to twice its elements' slots.
        while let Some(below) = seq.next_element_seed(Cost)? {
            total = total.saturating_add(2 * VALUE_BYTES).saturating_add(below);
        }
        Ok(total)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        let mut total = 0u64;
        let mut entries = 0u64;
        while let Some(key) = map.next_key_seed(Cost)? {
            let value = map.next_value_seed(Cost)?;
            if entries.is_multiple_of(MAP_ENTRIES_PER_NODE) {
                total = total.saturating_add(MAP_NODE_BYTES);
            }
            entries += 1;
            total = total.saturating_add(key).saturating_add(value);
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn what_is_not_json_is_the_parsers_error() {
        assert!(tree_cost(b"{\"reports\":[").is_err());
        assert!(tree_cost(b"{} trailing").is_err());
        assert!(tree_cost(&[b'['; 200]).is_err(), "nesting beyond serde_json's limit");
    }
}
