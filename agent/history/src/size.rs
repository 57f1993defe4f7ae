//! Approximate heap footprint of JSON values, for the coalescer's memory cap.

use serde_json::Value;

/// Bytes a `Value` node costs besides what it owns (enum tag, pointers, allocator slack).
const NODE: usize = 32;
/// Per map entry: the key's `String` header plus B-tree node share.
const ENTRY: usize = 48;

/// Roughly how many heap bytes `value` holds. Iterative so a deeply nested value cannot
/// overflow the stack; over-estimates rather than under-estimates.
pub(crate) fn approx_bytes(value: &Value) -> usize {
    let mut total = 0usize;
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        total = total.saturating_add(NODE);
        match v {
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
            Value::String(s) => total = total.saturating_add(s.capacity()),
            Value::Array(a) => {
                total = total.saturating_add(a.capacity().saturating_mul(std::mem::size_of::<Value>()));
                stack.extend(a.iter());
            }
            Value::Object(m) => {
                for (k, v) in m {
                    total = total.saturating_add(ENTRY + k.len());
                    stack.push(v);
                }
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn larger_values_count_more() {
        let small = serde_json::json!({"path": "/a"});
        let big = serde_json::json!({"path": "/a".repeat(1000), "list": [1, 2, 3]});
        assert!(approx_bytes(&big) > approx_bytes(&small) + 2000);
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        let mut v = Value::Null;
        for _ in 0..100_000 {
            v = Value::Array(vec![v]);
        }
        assert!(approx_bytes(&v) > 100_000);
        // Dropping a 100,000-deep value recurses in serde_json's Drop: unwind it by hand.
        let mut cur = v;
        while let Value::Array(mut a) = cur {
            cur = a.pop().unwrap_or(Value::Null);
        }
    }
}
