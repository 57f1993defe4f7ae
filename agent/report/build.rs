//! Embeds the checked-in JSON Schema of the report (`docs/report.schema.json`, what
//! `guestward-agent schema` prints) deflate-compressed: 139 KB of indented JSON was more than 1%
//! of the agent binary, which has a 12 MB budget (docs/benchmarks.md, "Binary size"), and is
//! 24 KB deflated. The agent already carries the inflater (flate2 with zlib-rs, for jars
//! and gzip'd package lists), and the schema is printed only on demand.

use std::error::Error;
use std::io::Write;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let schema = manifest.join("../../docs/report.schema.json");
    println!("cargo::rerun-if-changed={}", schema.display());
    let text = std::fs::read(&schema).map_err(|e| format!("{}: {e}", schema.display()))?;
    let mut deflate = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    deflate.write_all(&text)?;
    let packed = deflate.finish()?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("report.schema.json.deflate");
    std::fs::write(&out, packed).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(())
}
