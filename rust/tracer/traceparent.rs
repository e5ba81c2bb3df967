//! W3C Trace Context `traceparent` headers
//! (<https://www.w3.org/TR/trace-context/#traceparent-header>):
//! `00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>`.
//!
//! How our ids map (see `ids`): the trace id is the root span's
//! correlation id (128 bits), a span id is the low 64 bits of a span's
//! correlation id, and every span of a trace shares the trace id's high 64
//! bits. So the parent named by a header has the correlation id
//! `trace id high 64 bits ‖ parent span id`, which is what a continued span
//! writes in its `parent_id` column: trace analysis over both processes'
//! files nests it under its parent without any new column.

use uuid::Uuid;

/// We always emit version 00 with the `sampled` flag: every span is written.
const VERSION: &str = "00";
const FLAGS: &str = "01";
/// `00-` + 32 + `-` + 16 + `-` + 2.
const LEN: usize = 55;

/// A parsed header: the trace id and the parent's span id, both non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub parent_span_id: u64,
}

impl TraceParent {
    /// The parent's correlation id (see the module doc).
    pub fn parent_uuid(&self) -> Uuid {
        let high = (self.trace_id >> 64) as u64;
        Uuid::from_u64_pair(high, self.parent_span_id)
    }

    pub fn trace_uuid(&self) -> Uuid {
        Uuid::from_u128(self.trace_id)
    }
}

/// The header for a span with this trace and correlation id.
pub fn format(trace: &Uuid, id: &Uuid) -> String {
    format!(
        "{VERSION}-{:032x}-{:016x}-{FLAGS}",
        trace.as_u128(),
        id.as_u64_pair().1
    )
}

/// Lowercase hex only: the specification's `HEXDIGLC`.
fn hex<const N: usize>(field: &str, what: &str) -> Result<u128, String> {
    if field.len() != N
        || !field
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(format!("the {what} must be {N} lowercase hex digits"));
    }
    u128::from_str_radix(field, 16).map_err(|e| e.to_string())
}

/// Parses a header as the specification says a receiver must: version
/// `ff` is invalid; version `00` has exactly four fields; a later version
/// may append fields after a `-`, which are ignored. All-zero trace or
/// parent ids are invalid. The error says which part is wrong.
pub fn parse(header: &str) -> Result<TraceParent, String> {
    let header = header.trim_matches(|c| c == ' ' || c == '\t');
    if header.len() < LEN || !header.is_char_boundary(LEN) {
        return Err(format!(
            "it must be {LEN} characters (00-<32 hex>-<16 hex>-<2 hex>)"
        ));
    }
    let (head, rest) = header.split_at(LEN);
    let version = hex::<2>(&head[..2], "version")?;
    if version == 0xff {
        return Err("version ff is invalid".to_owned());
    }
    if version == 0 && !rest.is_empty() {
        return Err(format!("a version 00 header is exactly {LEN} characters"));
    }
    if !rest.is_empty() && !rest.starts_with('-') {
        return Err("fields must be separated by '-'".to_owned());
    }
    let b = head.as_bytes();
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return Err("fields must be separated by '-'".to_owned());
    }
    let trace_id = hex::<32>(&head[3..35], "trace id")?;
    let parent_span_id = hex::<16>(&head[36..52], "parent id")? as u64;
    hex::<2>(&head[53..55], "trace flags")?;
    if trace_id == 0 {
        return Err("the trace id must not be all zeros".to_owned());
    }
    if parent_span_id == 0 {
        return Err("the parent id must not be all zeros".to_owned());
    }
    Ok(TraceParent {
        trace_id,
        parent_span_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_specification_example() {
        let tp = parse(SPEC_EXAMPLE).unwrap();
        assert_eq!(tp.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(tp.parent_span_id, 0x00f067aa0ba902b7);
        assert_eq!(
            tp.parent_uuid().hyphenated().to_string(),
            "4bf92f35-77b3-4da6-00f0-67aa0ba902b7"
        );
    }

    #[test]
    fn round_trips_our_ids() {
        let trace = Uuid::from_u128(0x1c6e8f0e_6b0a_4b5e_9d4e_2f1f2f6a1b11);
        let id = crate::tracer::ids::in_trace(trace.as_u64_pair().0, 0x1234_5678_9abc_def0);
        let header = format(&trace, &id);
        assert_eq!(header.len(), LEN);
        let tp = parse(&header).unwrap();
        assert_eq!(tp.trace_uuid(), trace);
        assert_eq!(tp.parent_uuid(), id);
    }

    #[test]
    fn later_versions_may_append_fields() {
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever";
        assert_eq!(parse(later).unwrap(), parse(SPEC_EXAMPLE).unwrap());
        assert!(parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x").is_err());
    }

    #[test]
    fn refuses_malformed_headers() {
        for bad in [
            "",
            "00",
            "garbage",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-01",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
