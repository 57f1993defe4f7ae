//! JSON output of the command-line tools (`guestward-agent scan --json`, `agentctl ... --json`).
//!
//! Indented for a person at a terminal, compact for a pipe or a file: a scan of a host with
//! 20,000 connections was 14 MB of indentation-heavy JSON (about 700 bytes a socket) and
//! writing it cost more than collecting it. Compact output is the same document, so `jq`
//! and every parser read both alike.

use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter, PrettyFormatter};
use std::io::{IsTerminal, Write};

/// Bytes buffered before a write: large enough that a multi-megabyte report goes out in a few
/// hundred `write(2)` calls, small enough not to matter for the agent's memory.
const BUFFER_BYTES: usize = 256 * 1024;

/// Writes `value` as JSON to `out`, indented when `pretty`, then a newline, and flushes.
///
/// Streams through a buffer (`serde_json::to_writer`): no intermediate `String` or `Value`
/// tree of the whole document. An I/O error (a closed pipe: `scan --json | head`) comes back
/// as the `std::io::Error` it was, so `crate::exit::is_broken_pipe` recognises it.
pub fn write_json<W: Write, T: Serialize + ?Sized>(out: W, value: &T, pretty: bool) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(BUFFER_BYTES, out);
    let style = if pretty { Style::Pretty(PrettyFormatter::new()) } else { Style::Compact };
    value.serialize(&mut serde_json::Serializer::with_formatter(&mut out, style))?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Compact or indented, chosen when writing: one formatter type, so each type written is
/// compiled once instead of once per style. Two copies of every serializer (the report's alone
/// was 34 kB each) were the agent's binary's largest duplicate. Each call goes to the formatter
/// serde_json has for that style; nothing is formatted here.
enum Style<'a> {
    Compact,
    Pretty(PrettyFormatter<'a>),
}

/// Calls the same method of the style's own formatter.
macro_rules! each_style {
    ($self:ident, $method:ident($($arg:expr),*)) => {
        match $self {
            Style::Compact => CompactFormatter.$method($($arg),*),
            Style::Pretty(pretty) => pretty.$method($($arg),*),
        }
    };
}

/// The methods in which serde_json's two formatters differ (the others are the trait's own).
impl Formatter for Style<'_> {
    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        each_style!(self, begin_array(w))
    }
    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        each_style!(self, end_array(w))
    }
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        each_style!(self, begin_array_value(w, first))
    }
    fn end_array_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        each_style!(self, end_array_value(w))
    }
    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        each_style!(self, begin_object(w))
    }
    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        each_style!(self, end_object(w))
    }
    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        each_style!(self, begin_object_key(w, first))
    }
    fn end_object_key<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        each_style!(self, end_object_key(w))
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        each_style!(self, begin_object_value(w))
    }
    fn end_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        each_style!(self, end_object_value(w))
    }
}

/// Whether `--json` output on standard output should be indented: only when a person reads it
/// at a terminal.
pub fn stdout_wants_pretty() -> bool {
    std::io::stdout().is_terminal()
}

/// [`write_json`] to standard output, indented only on a terminal ([`stdout_wants_pretty`]).
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> std::io::Result<()> {
    write_json(crate::stdio::stdout(), value, stdout_wants_pretty())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn compact_and_pretty_are_the_same_document_each_with_one_trailing_newline() {
        let value = serde_json::json!({ "a": [1, 2], "b": { "c": "d" } });
        let mut compact = Vec::new();
        write_json(&mut compact, &value, false).unwrap();
        let mut pretty = Vec::new();
        write_json(&mut pretty, &value, true).unwrap();
        assert_eq!(compact, b"{\"a\":[1,2],\"b\":{\"c\":\"d\"}}\n");
        assert!(pretty.starts_with(b"{\n  \"a\""), "{}", String::from_utf8_lossy(&pretty));
        // Byte for byte what serde_json's own writers make, empty containers included.
        let nested = serde_json::json!({ "a": [1, [], {}, [{ "b": null }]], "c": {}, "d": "e" });
        for (pretty, expected) in [
            (false, serde_json::to_string(&nested).unwrap()),
            (true, serde_json::to_string_pretty(&nested).unwrap()),
        ] {
            let mut out = Vec::new();
            write_json(&mut out, &nested, pretty).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), format!("{expected}\n"), "pretty: {pretty}");
        }
        assert!(pretty.iter().filter(|b| **b == b'\n').count() > 1);
        let back: serde_json::Value = serde_json::from_slice(&pretty).unwrap();
        assert_eq!(back, value);
    }
}
