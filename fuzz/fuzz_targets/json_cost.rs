//! Differential: the collector's estimate of what parsing a report body will take
//! (`collector/src/json_cost.rs`, compiled here on its own, so this crate needs serde_json and
//! not the whole collector) against what the parse the collector then makes
//! (`serde_json::from_slice::<Value>`) allocates, each block counted as the glibc malloc chunk
//! it takes (`guestward_reclaim::counting`). A body whose parse takes more than its estimate is
//! a crash: the collector would have reserved too little of its memory budget for it.
#![no_main]

#[path = "../../collector/src/json_cost.rs"]
mod json_cost;

use guestward_reclaim::counting::{Counting, peak_of};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    let Ok(estimate) = json_cost::tree_cost(data) else { return };
    let took = peak_of(|| {
        assert!(
            serde_json::from_slice::<serde_json::Value>(data).is_ok(),
            "the estimate accepted a body the parse refuses"
        );
    });
    assert!(took <= estimate, "the parse took {took} bytes, more than the {estimate} estimated");
});
