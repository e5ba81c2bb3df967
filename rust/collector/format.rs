//! Text forms of what the orchestrator stores, byte-identical to EDGELESS.
//!
//! EDGELESS scores a sample by its timestamp in fractional seconds,
//! `timestamp_sec as f64 + timestamp_ns as f64 / 1e9`, and prints both that
//! score and the value with Rust's `Display` for `f64` (the shortest text
//! that reads back to the same double, never in exponent form). Redis
//! members are `"<score>:<value>"` (`"<score>:<message>"` for logs) and the
//! CSV rows carry the same two texts.
//!
//! Hazard kept for compatibility: a double near 1.7e9 resolves about 238 ns,
//! so two samples of one function and metric with the same value and
//! timestamps closer than that print the same member and Redis keeps one.
//! The collector counts such members (`redis_members_existing`); the CSV
//! dataset keeps every row.

use std::io::Write;

/// The EDGELESS score of a (sec, ns) timestamp.
#[inline]
pub fn score(sec: i64, ns: u32) -> f64 {
    sec as f64 + ns as f64 / 1e9
}

/// Appends `x` as EDGELESS prints it.
#[inline]
pub fn push_f64(buf: &mut Vec<u8>, x: f64) {
    write!(buf, "{x}").expect("writing to a Vec cannot fail");
}

/// Appends one CSV field, by the library's one quoting rule (the tracer's
/// too).
#[inline]
pub fn push_csv_field(buf: &mut Vec<u8>, field: &str) {
    crate::csv_field::push_field(buf, field.as_bytes());
}

/// RESP encoding of commands, written straight into one pipeline buffer.
pub struct Resp<'a> {
    pub buf: &'a mut Vec<u8>,
}

impl Resp<'_> {
    pub fn array(&mut self, n: usize) {
        write!(self.buf, "*{n}\r\n").expect("vec write");
    }

    pub fn bulk(&mut self, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        write!(self.buf, "${len}\r\n").expect("vec write");
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn command(&mut self, args: &[&[u8]]) {
        self.array(args.len());
        for a in args {
            self.bulk(&[a]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(x: f64) -> String {
        let mut b = Vec::new();
        push_f64(&mut b, x);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn floats_print_like_edgeless() {
        assert_eq!(text(score(1_700_000_000, 500_000_000)), "1700000000.5");
        assert_eq!(text(1.0), "1");
        assert_eq!(text(0.00001), "0.00001");
        assert_eq!(text(0.1 + 0.2), "0.30000000000000004");
    }

    #[test]
    fn nearby_timestamps_collapse() {
        // The documented hazard: 100 ns apart, same printed score.
        assert_eq!(
            text(score(1_700_000_000, 0)),
            text(score(1_700_000_000, 100))
        );
    }

    #[test]
    fn csv_quoting() {
        let mut b = Vec::new();
        push_csv_field(&mut b, "a,\"b\"\nc");
        assert_eq!(b, b"\"a,\"\"b\"\"\nc\"");
        b.clear();
        push_csv_field(&mut b, "plain");
        assert_eq!(b, b"plain");
    }
}
