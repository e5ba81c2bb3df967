//! The one CSV quoting rule of every file this library writes (the tracer's
//! rows and the collector's dataset): RFC 4180 as the `csv` crate writes it
//! with its defaults (`QuoteStyle::Necessary`, quotes doubled, `\n` rows):
//! a field is quoted only when it holds a comma, a quote, CR or LF.
//!
//! Fields go through `csv-core`, the `csv` crate's writer engine, straight
//! into the caller's row buffer. `csv::Writer` itself would need its own
//! buffer per row (it cannot be drained without `into_inner`), which the
//! tracer's hot path, appending rows under a mutex into a shared buffer,
//! cannot afford; the tests check both give the same bytes.

use csv_core::{QuoteStyle, Terminator, Writer, WriterBuilder};
use std::sync::LazyLock;

/// The dialect, built once: which bytes make a field need quotes.
static DIALECT: LazyLock<Writer> = LazyLock::new(|| {
    WriterBuilder::new()
        .delimiter(b',')
        .quote(b'"')
        .double_quote(true)
        .quote_style(QuoteStyle::Necessary)
        .terminator(Terminator::Any(b'\n'))
        .build()
});

/// Appends `value` as one CSV field.
#[inline]
pub fn push_field(out: &mut Vec<u8>, value: &[u8]) {
    if !DIALECT.should_quote(value) {
        out.extend_from_slice(value);
        return;
    }
    // Worst case: every byte a quote (doubled), plus the two around it.
    let start = out.len();
    out.resize(start + 2 * value.len() + 2, 0);
    out[start] = b'"';
    let (_, read, wrote) = csv_core::quote(value, &mut out[start + 1..], b'"', b'"', true);
    debug_assert_eq!(read, value.len());
    let end = start + 1 + wrote;
    out[end] = b'"';
    out.truncate(end + 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(s: &str) -> String {
        let mut out = Vec::new();
        push_field(&mut out, s.as_bytes());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(field("plain text"), "plain text");
        assert_eq!(field(""), "");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("\""), "\"\"\"\"");
        assert_eq!(field("line\nbreak"), "\"line\nbreak\"");
        assert_eq!(field("cr\r"), "\"cr\r\"");
        assert_eq!(field("ünïcödé, ok"), "\"ünïcödé, ok\"");
    }

    /// Byte for byte what `csv::Writer` (default settings, `\n` rows)
    /// writes, over fields built from every awkward byte.
    #[test]
    fn same_bytes_as_the_csv_writer() {
        let parts = [
            "", "a", ",", "\"", "\r", "\n", "\r\n", " ", "#", "\t", "é", "x\"y",
        ];
        let mut fields = Vec::new();
        for a in parts {
            for b in parts {
                for c in parts {
                    fields.push(format!("{a}{b}{c}"));
                }
            }
        }
        fields.push("\"".repeat(1000));
        fields.push("long,".repeat(5000));
        for row in fields.chunks(3) {
            let mut csv_writer = csv::WriterBuilder::new()
                .terminator(csv::Terminator::Any(b'\n'))
                .from_writer(Vec::new());
            csv_writer.write_record(row).unwrap();
            let expected = csv_writer.into_inner().unwrap();
            let mut ours = Vec::new();
            for (i, f) in row.iter().enumerate() {
                if i > 0 {
                    ours.push(b',');
                }
                push_field(&mut ours, f.as_bytes());
            }
            ours.push(b'\n');
            if row.len() == 1 && row[0].is_empty() {
                continue; // csv writes a lone empty field as "" (never ours)
            }
            assert_eq!(ours, expected, "{row:?}");
        }
    }
}
