//! Exposition: Prometheus text format 0.0.4 and OpenMetrics 1.0.0.
//!
//! Label sets are escaped once, when a series is created, and stored as
//! the text that goes between the braces; a scrape then only copies bytes
//! and formats numbers, which is what makes rendering 10,000 series cheap.
//! The two formats differ only in the details handled here: the counter
//! family name, HELP escaping and the closing `# EOF`. The protobuf
//! format (the one native histograms need) is in `protobuf`.

pub mod protobuf;

use std::io::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    OpenMetrics,
    /// Length-delimited `io.prometheus.client.MetricFamily` messages.
    Protobuf,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Protobuf => protobuf::CONTENT_TYPE,
        }
    }

    /// Picks the format from a scrape's `Accept` header: protobuf (only
    /// offered when `protobuf` is true, that is with native histograms on)
    /// when the scraper asks for the delimited `MetricFamily` stream at
    /// least as strongly as for anything else; else OpenMetrics when it
    /// asks for it (version 1.0.0 or unversioned) at least as strongly as
    /// for text; else text.
    pub fn negotiate(accept: Option<&str>, protobuf: bool) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let mut best_pb = 0.0f64;
        let mut best_om = 0.0f64;
        let mut best_other = 0.0f64;
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let mut q = 1.0;
            let mut version = None;
            let (mut proto, mut delimited) = (false, false);
            for p in parts {
                if let Some((k, v)) = p.split_once('=') {
                    let v = v.trim();
                    match k.trim().to_ascii_lowercase().as_str() {
                        "q" => q = v.parse().unwrap_or(0.0),
                        "version" => version = Some(v.to_owned()),
                        "proto" => proto = v == "io.prometheus.client.MetricFamily",
                        "encoding" => delimited = v == "delimited",
                        _ => {}
                    }
                }
            }
            if media == "application/vnd.google.protobuf" {
                if protobuf && proto && delimited {
                    best_pb = best_pb.max(q);
                }
            } else if media == "application/openmetrics-text" {
                if version.as_deref().is_none_or(|v| v == "1.0.0") {
                    best_om = best_om.max(q);
                }
            } else {
                best_other = best_other.max(q);
            }
        }
        if best_pb > 0.0 && best_pb >= best_om && best_pb >= best_other {
            Format::Protobuf
        } else if best_om > 0.0 && best_om >= best_other {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }
}

/// Whether an `Accept-Encoding` header allows gzip.
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    accept_encoding.is_some_and(|h| {
        h.split(',').any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let q = parts
                .filter_map(|p| p.strip_prefix("q="))
                .map(|q| q.trim().parse::<f64>().unwrap_or(0.0))
                .next()
                .unwrap_or(1.0);
            (name.eq_ignore_ascii_case("gzip") || name == "*") && q > 0.0
        })
    })
}

/// Appends `name="value"` (value escaped as both formats require:
/// backslash, double quote and newline), preceded by a comma unless `out`
/// is empty.
pub fn push_label(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Whether `name` is a valid metric or label name (`[a-zA-Z_][a-zA-Z0-9_]*`;
/// colons are reserved for recording rules, so not accepted).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A float as both formats spell it (Go style for the specials).
pub fn push_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v == f64::INFINITY {
        out.extend_from_slice(b"+Inf");
    } else if v == f64::NEG_INFINITY {
        out.extend_from_slice(b"-Inf");
    } else {
        // Debug keeps a ".0" on integers and switches to exponents for very
        // large or small magnitudes, so the text stays short and exact.
        let _ = write!(out, "{v:?}");
    }
}

pub fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

pub fn push_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    push_u64(out, v.unsigned_abs());
}

/// Metric kinds as the `# TYPE` line names them.
#[derive(Clone, Copy)]
pub enum Kind {
    Gauge,
    Histogram,
    Counter,
}

/// Writes the `# HELP` and `# TYPE` lines. For a counter, `name` is the
/// family name without `_total`: text 0.0.4 types the sample name
/// (`x_total`), OpenMetrics the family (`x`).
pub fn push_header(out: &mut Vec<u8>, format: Format, name: &str, kind: Kind, help: &str) {
    let suffix = match (kind, format) {
        (Kind::Counter, Format::Text) => "_total",
        _ => "",
    };
    for (what, text) in [("HELP", help), ("TYPE", kind_name(kind))] {
        out.extend_from_slice(b"# ");
        out.extend_from_slice(what.as_bytes());
        out.push(b' ');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(suffix.as_bytes());
        out.push(b' ');
        if what == "HELP" {
            push_help(out, format, text);
        } else {
            out.extend_from_slice(text.as_bytes());
        }
        out.push(b'\n');
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Gauge => "gauge",
        Kind::Histogram => "histogram",
        Kind::Counter => "counter",
    }
}

fn push_help(out: &mut Vec<u8>, format: Format, help: &str) {
    for c in help.chars() {
        match c {
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '"' if format == Format::OpenMetrics => out.extend_from_slice(b"\\\""),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

/// Writes `name{labels} ` (no braces when there are no labels).
#[inline]
pub fn push_series_start(out: &mut Vec<u8>, name: &str, suffix: &str, labels: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(suffix.as_bytes());
    if !labels.is_empty() {
        out.push(b'{');
        out.extend_from_slice(labels.as_bytes());
        out.push(b'}');
    }
    out.push(b' ');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut s = String::new();
        push_label(&mut s, "a", "x\"y\\z\nw");
        push_label(&mut s, "b", "é");
        assert_eq!(s, r#"a="x\"y\\z\nw",b="é""#);
    }

    #[test]
    fn negotiation_follows_prometheus_headers() {
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prom), false), Format::OpenMetrics);
        assert_eq!(Format::negotiate(None, false), Format::Text);
        // Prometheus with native histograms on asks for protobuf first.
        let native = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,application/openmetrics-text;version=1.0.0;q=0.6,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(Format::negotiate(Some(native), true), Format::Protobuf);
        assert_eq!(Format::negotiate(Some(native), false), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some(prom), true), Format::OpenMetrics);
        // The text-format protobuf variant and other messages are not ours.
        assert_eq!(
            Format::negotiate(
                Some("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text"),
                true
            ),
            Format::Text
        );
        assert_eq!(Format::negotiate(Some("*/*"), false), Format::Text);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; version=0.0.1"), false),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(
                Some("text/plain;q=0.9, application/openmetrics-text;q=0.5"),
                false
            ),
            Format::Text
        );
    }

    #[test]
    fn gzip_needs_a_positive_q() {
        assert!(accepts_gzip(Some("gzip")));
        assert!(accepts_gzip(Some("deflate, GZIP;q=0.5")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(Some("identity")));
        assert!(!accepts_gzip(None));
    }

    #[test]
    fn numbers_are_spelled_like_go() {
        let mut out = Vec::new();
        for v in [1.0, 0.1, f64::INFINITY, 2.5e-7] {
            push_f64(&mut out, v);
            out.push(b' ');
        }
        push_i64(&mut out, -42);
        out.push(b' ');
        push_u64(&mut out, 0);
        assert_eq!(String::from_utf8(out).unwrap(), "1.0 0.1 +Inf 2.5e-7 -42 0");
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("node_1"));
        assert!(valid_name("_x"));
        assert!(!valid_name("1x"));
        assert!(!valid_name(""));
        assert!(!valid_name("a-b"));
        assert!(!valid_name("a:b"));
    }
}
