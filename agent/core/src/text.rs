//! Text taken from scanned files, made safe to quote in messages and to show on a terminal.
//!
//! Everything a collector reads (a hostname, `PRETTY_NAME`, a package name, a file name) is
//! written by whoever controls the scanned tree. Two things follow:
//! - Quoting it into a [`crate::Problem`] must be bounded: a 200 MiB line in a status file
//!   once became a 200 MiB message (issue 9, item 14). [`quote_truncated`] quotes at most a
//!   given number of characters, and [`crate::Problem::new`] bounds every message anyway.
//! - Showing it to a person must not let it drive their terminal: `ESC ] 0 ; ... BEL` retitles
//!   the window, `ESC [ 2 J` clears the screen, other sequences have been used to hide or fake
//!   lines, and bidi overrides reorder what is shown (issue 9, item 15). Human renderers pass
//!   values through [`escape_control`] and write through [`TerminalSafe`]. JSON output is
//!   not touched: serde escapes control characters there, and its values must stay exact.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Write};

/// The most characters of a problem message kept ([`crate::Problem::new`] cuts the rest).
pub const MAX_MESSAGE_CHARS: usize = 2048;

/// The most characters of a path kept in a problem ([`crate::Problem::with_path`]); longer
/// than any real path (`PATH_MAX` is 4096 bytes), shorter than a crafted archive entry name.
pub const MAX_PATH_CHARS: usize = 4096;

/// A sensible bound for one value quoted from a file into a message.
pub const MAX_QUOTED_CHARS: usize = 200;

/// `s` cut to its first `max_chars` characters, with how many bytes were left out. Only the
/// kept part is scanned, so this is cheap on a huge string.
pub fn truncate_chars(s: &str, max_chars: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max_chars) {
        None => Cow::Borrowed(s),
        Some((cut, _)) => Cow::Owned(format!("{}… ({} more bytes)", &s[..cut], s.len() - cut)),
    }
}

/// `s` quoted as `{:?}` would quote it (control characters escaped), but at most `max_chars`
/// of it: `"abc"… (12345 more bytes)`. For putting file content into messages.
pub fn quote_truncated(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}… ({} more bytes)", &s[..cut], s.len() - cut),
    }
}

/// Cuts an owned string in place (and gives the memory back), as [`truncate_chars`].
pub(crate) fn truncate_owned(mut s: String, max_chars: usize) -> String {
    if let Some((cut, _)) = s.char_indices().nth(max_chars) {
        let dropped = s.len() - cut;
        s.truncate(cut);
        s.shrink_to_fit();
        let _ = write!(s, "… ({dropped} more bytes)");
    }
    s
}

/// Characters kept from the end of a problem message cut to [`MAX_MESSAGE_CHARS`] ([`crate::Problem::new`]).
pub const MESSAGE_TAIL_CHARS: usize = 256;

/// A problem message longer than [`MAX_MESSAGE_CHARS`] characters cut to about that, keeping
/// both of its ends: the first `MAX_MESSAGE_CHARS - MESSAGE_TAIL_CHARS` characters and the last
/// [`MESSAGE_TAIL_CHARS`], with how many bytes were left out between them. Messages read
/// "SUBJECT: REASON", and the subject can be the long part (a path nested thousands of bytes
/// deep, a quoted line): cut at the end only, the reason was lost. Only the kept parts are
/// scanned, so this is cheap on a huge string.
pub(crate) fn truncate_message(mut s: String) -> String {
    const HEAD_CHARS: usize = MAX_MESSAGE_CHARS - MESSAGE_TAIL_CHARS;
    if s.char_indices().nth(MAX_MESSAGE_CHARS).is_none() {
        return s;
    }
    // More than MAX_MESSAGE_CHARS characters: the head ends before the tail starts.
    let (Some((head_end, _)), Some((tail_start, _))) =
        (s.char_indices().nth(HEAD_CHARS), s.char_indices().rev().nth(MESSAGE_TAIL_CHARS - 1))
    else {
        return s;
    };
    let dropped = tail_start - head_end;
    let tail = s[tail_start..].to_string();
    s.truncate(head_end);
    let _ = write!(s, " … ({dropped} bytes left out) … {tail}");
    s.shrink_to_fit();
    s
}

/// Whether `c` is shown escaped: C0 controls (newline and tab included), DEL, C1 controls,
/// and the Unicode bidi marks, embeddings, overrides and isolates.
fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, c: char) {
    let _ = match c {
        '\n' => write!(out, "\\n"),
        '\r' => write!(out, "\\r"),
        '\t' => write!(out, "\\t"),
        c if u32::from(c) < 0x80 => write!(out, "\\x{:02x}", u32::from(c)),
        c => write!(out, "\\u{{{:x}}}", u32::from(c)),
    };
}

/// `s` for a person's terminal: control characters (newlines too), DEL, C1 controls and bidi
/// overrides are written as visible escapes (`\x1b`, `\n`, `\u{9b}`, `\u{202e}`). Borrowed
/// when there is nothing to escape.
pub fn escape_control(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if is_unsafe_char(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A writer for human output: text passes through, except that control characters other than
/// newline and tab, DEL, C1 controls, bidi overrides and bytes that are not UTF-8 are written
/// as visible escapes. Renderers write their tables through it so that no value from a scanned
/// file, escaped or not where it was formatted, reaches the terminal as a control sequence.
/// Not for JSON (which must stay exact).
pub struct TerminalSafe<W: Write> {
    inner: W,
    /// The start of a UTF-8 sequence cut by the end of the previous write.
    carry: Vec<u8>,
}

impl<W: Write> TerminalSafe<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self { inner, carry: Vec::new() }
    }

    fn escape_chunk(&mut self, bytes: &[u8]) -> io::Result<()> {
        // Fast path: printable ASCII, newlines and tabs only.
        if bytes.iter().all(|&b| matches!(b, b'\n' | b'\t' | 0x20..=0x7e)) {
            return self.inner.write_all(bytes);
        }
        let mut out = String::with_capacity(bytes.len() + 16);
        for chunk in bytes.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c != '\n' && c != '\t' && is_unsafe_char(c) {
                    push_escaped(&mut out, c);
                } else {
                    out.push(c);
                }
            }
            for b in chunk.invalid() {
                // A terminal in an 8-bit mode would take 0x9b for CSI: never pass raw bytes.
                let _ = write!(out, "\\x{b:02x}");
            }
        }
        self.inner.write_all(out.as_bytes())
    }
}

/// How many bytes at the end of `buf` start a UTF-8 sequence that the next write may complete.
fn incomplete_tail(buf: &[u8]) -> usize {
    for back in 1..=buf.len().min(3) {
        let b = buf[buf.len() - back];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back for the lead byte
        }
        let needed = match b {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return 0,
        };
        return if back < needed { back } else { 0 };
    }
    0
}

impl<W: Write> Write for TerminalSafe<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut bytes = std::mem::take(&mut self.carry);
        bytes.extend_from_slice(buf);
        let keep = incomplete_tail(&bytes);
        let (now, later) = bytes.split_at(bytes.len() - keep);
        self.escape_chunk(now)?;
        self.carry = later.to_vec();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Drop for TerminalSafe<W> {
    fn drop(&mut self) {
        // A sequence still cut at the end never will be completed: show its bytes escaped.
        if !self.carry.is_empty() {
            let carry = std::mem::take(&mut self.carry);
            let _ = self.escape_chunk(&carry);
            let _ = self.inner.flush();
        }
    }
}

/// Writes `header` and `rows` as left-aligned columns two spaces apart, each as wide as its
/// widest cell (in characters); the last column is not padded, no line ends in spaces.
pub fn write_columns<const N: usize>(
    out: &mut dyn std::io::Write,
    header: [&str; N],
    rows: &[[String; N]],
) -> std::io::Result<()> {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; N]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  "));
            }
        }
        text.trim_end().to_string()
    };
    writeln!(out, "{}", line(header))?;
    for row in rows {
        writeln!(out, "{}", line(row.each_ref().map(String::as_str)))?;
    }
    Ok(())
}

/// Lowercase hex of `bytes` (digests in reports, keys and fingerprints).
pub fn hex(bytes: &[u8]) -> String {
    // A table, not `write!("{b:02x}")` per byte: the FIM trust anchor writes the digests of
    // 100k package files, and the formatter cost more than the comparisons they serve.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// `n` and the noun in the number it takes: "1 process", "3 processes", "0 processes".
pub fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A path as text: valid UTF-8 is kept, `\` is doubled, control characters and bytes that are
/// not UTF-8 become `\xNN`. Reversible, so names that are not UTF-8 are never merged or lost,
/// and no name can write to a terminal. The one form every report shows a host path in (FIM
/// changes, the package files, the access collector).
pub fn escape_path(path: &std::path::Path) -> String {
    let bytes = path.as_os_str().as_encoded_bytes();
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c.is_control() && u32::from(c) < 0x100 => {
                    out.push_str(&format!("\\x{:02x}", u32::from(c)))
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// An error and its causes on one line, `: `-separated, as `anyhow`'s `{:#}` prints them, but
/// without a cause whose text the line already holds: many of our errors quote their source in
/// their own message, and a chain printed whole said the reason twice (`cannot read config:
/// Is a directory: Is a directory`).
pub fn error_chain(messages: impl IntoIterator<Item = impl std::fmt::Display>) -> String {
    let mut line = String::new();
    for e in messages {
        let text = e.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Quoting(std::io::Error);
    impl std::fmt::Display for Quoting {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "/etc/x: cannot read config: {}", self.0)
        }
    }
    impl std::error::Error for Quoting {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn an_error_chain_says_each_cause_once() {
        let e = Quoting(std::io::Error::other("Is a directory"));
        let inner = std::io::Error::other("denied");
        let chain: [&dyn std::error::Error; 2] = [&e, &e.0];
        assert_eq!(error_chain(chain), "/etc/x: cannot read config: Is a directory");
        let chain: [&dyn std::error::Error; 2] = [&std::io::Error::other("opening the spool"), &inner];
        assert_eq!(error_chain(chain), "opening the spool: denied");
    }

    #[test]
    fn a_cut_message_keeps_its_beginning_and_its_end() {
        let path = format!("/srv/{}", "d/".repeat(3000));
        let message = format!("{path}: nested too deep; not descended");
        let cut = truncate_message(message.clone());
        assert!(cut.starts_with("/srv/d/d/"), "{cut}");
        assert!(cut.ends_with("d/: nested too deep; not descended"), "{cut}");
        let dropped = message.len() - MAX_MESSAGE_CHARS;
        assert!(cut.contains(&format!(" … ({dropped} bytes left out) … ")), "{cut}");
        assert!(cut.chars().count() < MAX_MESSAGE_CHARS + 40, "{}", cut.chars().count());

        // Cut on character boundaries, multi-byte characters included.
        let wide = "é".repeat(MAX_MESSAGE_CHARS + 1);
        let cut = truncate_message(wide.clone());
        assert!(cut.starts_with("éé") && cut.ends_with("éé"), "{cut}");
        assert!(
            cut.contains(&format!("({} bytes left out)", 2 * (wide.chars().count() - MAX_MESSAGE_CHARS)))
        );

        // At the limit or under it: as it was.
        let exact = "x".repeat(MAX_MESSAGE_CHARS);
        assert_eq!(truncate_message(exact.clone()), exact);
        assert_eq!(truncate_message("short".to_string()), "short");
    }

    #[test]
    fn counted_takes_the_singular_for_one_only() {
        assert_eq!(counted(1, "process", "processes"), "1 process");
        assert_eq!(counted(0, "process", "processes"), "0 processes");
        assert_eq!(counted(2, "process", "processes"), "2 processes");
    }

    const HOSTILE: &str = "\x1b]0;pwned\x07\x1b[2J";

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn huge_line_is_quoted_truncated() {
        let line = "x".repeat(50 * 1024 * 1024);
        let q = quote_truncated(&line, 100);
        assert!(q.len() < 200, "{}", q.len());
        assert!(q.starts_with("\"xxx") && q.ends_with(&format!("({} more bytes)", line.len() - 100)), "{q}");
        assert_eq!(quote_truncated("short", 100), "\"short\"");
        assert_eq!(truncate_chars("héllo", 2), "hé… (3 more bytes)");
        assert_eq!(truncate_chars("héllo", 5), "héllo");
    }

    #[test]
    fn terminal_escape_sequences_are_made_visible() {
        assert_eq!(escape_control(HOSTILE), "\\x1b]0;pwned\\x07\\x1b[2J");
        assert_eq!(escape_control("a\nb\u{9b}c\u{202e}d\u{7f}"), "a\\nb\\u{9b}c\\u{202e}d\\x7f");
        assert!(matches!(escape_control("plain ü text"), Cow::Borrowed(_)));
    }

    #[test]
    fn terminal_safe_writer_keeps_lines_and_escapes_controls_even_split_across_writes() {
        let mut buf = Vec::new();
        {
            let mut w = TerminalSafe::new(&mut buf);
            writeln!(w, "host {HOSTILE}\tok").unwrap();
            // U+009B (CSI in C1) is C2 9B in UTF-8: split across two writes.
            w.write_all(&[b'a', 0xC2]).unwrap();
            w.write_all(&[0x9B, b'b', b'\n']).unwrap();
            // "é" split, then a byte that is not UTF-8 at all.
            w.write_all(&[0xC3]).unwrap();
            w.write_all(&[0xA9, 0xFF, b'\n']).unwrap();
        }
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(text, "host \\x1b]0;pwned\\x07\\x1b[2J\tok\na\\u{9b}b\né\\xff\n");
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn columns_are_as_wide_as_their_widest_cell_and_lines_do_not_end_in_spaces() {
        let mut out = Vec::new();
        let rows = [
            ["tcp".to_string(), "sshd".to_string(), String::new()],
            ["udp6".into(), "x".into(), "unit".into()],
        ];
        super::write_columns(&mut out, ["P", "Process", "Unit"], &rows).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "P     Process  Unit\ntcp   sshd\nudp6  x        unit\n");
    }
}
