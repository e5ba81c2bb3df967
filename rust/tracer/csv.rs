//! Row formatting for the tracer CSV, appended straight into the writer's
//! pending buffer (no per-row `String`, no `fmt` machinery); fields are
//! quoted by `crate::csv_field`, the rule the collector's dataset uses too.

use crate::clock::split_ns;

pub const HEADER: &str =
    "timestamp_sec,timestamp_ns,event_type,correlation_id,parent_id,name,level,message\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    SpanStart,
    SpanEnd,
    Log,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::SpanStart => "span_start",
            EventType::SpanEnd => "span_end",
            EventType::Log => "log",
        }
    }
}

/// Appends `value` as one CSV field, by the library's one quoting rule.
#[inline]
pub fn push_field(out: &mut Vec<u8>, value: &str) {
    crate::csv_field::push_field(out, value.as_bytes());
}

/// Appends a decimal integer without going through `fmt`.
pub fn push_i64(out: &mut Vec<u8>, value: i64) {
    if value < 0 {
        out.push(b'-');
    }
    let mut n = value.unsigned_abs();
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends one whole row. `span` is the span's pre-encoded
/// `correlation_id,parent_id,name` (see `span_fields`); `log` is the level
/// name and message of a log row, `None` for span rows (empty fields).
pub fn push_row(
    out: &mut Vec<u8>,
    ts_ns: i64,
    event: EventType,
    span: &[u8],
    log: Option<(&str, &str)>,
) {
    let (sec, ns) = split_ns(ts_ns);
    push_i64(out, sec);
    out.push(b',');
    push_i64(out, i64::from(ns));
    out.push(b',');
    out.extend_from_slice(event.as_str().as_bytes());
    out.push(b',');
    out.extend_from_slice(span);
    out.push(b',');
    if let Some((level, message)) = log {
        out.extend_from_slice(level.as_bytes());
        out.push(b',');
        push_field(out, message);
    } else {
        out.push(b',');
    }
    out.push(b'\n');
}

/// Encodes the three span columns once per span; every row of the span
/// then copies them.
pub fn span_fields(
    correlation_id: &uuid::Uuid,
    parent_id: Option<&uuid::Uuid>,
    name: &str,
) -> Box<[u8]> {
    let mut out = Vec::with_capacity(36 + 1 + 36 + 1 + name.len() + 2);
    let mut text = uuid::Uuid::encode_buffer();
    out.extend_from_slice(
        correlation_id
            .hyphenated()
            .encode_lower(&mut text)
            .as_bytes(),
    );
    out.push(b',');
    if let Some(parent) = parent_id {
        out.extend_from_slice(parent.hyphenated().encode_lower(&mut text).as_bytes());
    }
    out.push(b',');
    push_field(&mut out, name);
    out.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Quoting itself is tested once, in `crate::csv_field`.

    #[test]
    fn integers() {
        for v in [0i64, 7, 10, 1_700_000_000, -1, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            push_i64(&mut out, v);
            assert_eq!(String::from_utf8(out).unwrap(), v.to_string());
        }
    }

    #[test]
    fn rows() {
        let id = uuid::Uuid::from_u128(1);
        let parent = uuid::Uuid::from_u128(2);
        let span = span_fields(&id, Some(&parent), "de,ploy");
        let mut out = Vec::new();
        push_row(&mut out, 1_500_000_007, EventType::SpanStart, &span, None);
        push_row(&mut out, -1, EventType::Log, &span, Some(("INFO", "a\"b")));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1,500000007,span_start,00000000-0000-0000-0000-000000000001,\
             00000000-0000-0000-0000-000000000002,\"de,ploy\",,\n\
             -1,999999999,log,00000000-0000-0000-0000-000000000001,\
             00000000-0000-0000-0000-000000000002,\"de,ploy\",INFO,\"a\"\"b\"\n"
        );
        let root = span_fields(&id, None, "r");
        assert_eq!(&*root, b"00000000-0000-0000-0000-000000000001,,r");
    }
}
