//! Collector ingest benchmark (written next).
fn main() {}
