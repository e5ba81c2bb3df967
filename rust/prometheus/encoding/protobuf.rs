//! The Prometheus protobuf exposition: `io.prometheus.client.MetricFamily`
//! messages, each preceded by its varint length (`encoding=delimited`).
//! The only format that carries native histograms; a histogram's classic
//! buckets travel in the same `Histogram` message.
//!
//! The messages are derived by hand from the published definition (checked
//! in as `proto/io/prometheus/client/metrics.proto`), so building never
//! needs `protoc`. Only the fields we write are declared; proto2 repeated
//! scalars are written unpacked, as the definition declares them.

use super::super::native::NativeSnapshot;
use prost::Message;

pub const CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum MetricType {
    Counter = 0,
    Gauge = 1,
    Histogram = 4,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelPair {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Gauge {
    #[prost(double, optional, tag = "1")]
    pub value: Option<f64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Counter {
    #[prost(double, optional, tag = "1")]
    pub value: Option<f64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Bucket {
    #[prost(uint64, optional, tag = "1")]
    pub cumulative_count: Option<u64>,
    #[prost(double, optional, tag = "2")]
    pub upper_bound: Option<f64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BucketSpan {
    #[prost(sint32, optional, tag = "1")]
    pub offset: Option<i32>,
    #[prost(uint32, optional, tag = "2")]
    pub length: Option<u32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Histogram {
    #[prost(uint64, optional, tag = "1")]
    pub sample_count: Option<u64>,
    #[prost(double, optional, tag = "2")]
    pub sample_sum: Option<f64>,
    #[prost(message, repeated, tag = "3")]
    pub bucket: Vec<Bucket>,
    #[prost(sint32, optional, tag = "5")]
    pub schema: Option<i32>,
    #[prost(double, optional, tag = "6")]
    pub zero_threshold: Option<f64>,
    #[prost(uint64, optional, tag = "7")]
    pub zero_count: Option<u64>,
    #[prost(message, repeated, tag = "12")]
    pub positive_span: Vec<BucketSpan>,
    #[prost(sint64, repeated, packed = "false", tag = "13")]
    pub positive_delta: Vec<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    #[prost(message, optional, tag = "2")]
    pub gauge: Option<Gauge>,
    #[prost(message, optional, tag = "3")]
    pub counter: Option<Counter>,
    #[prost(message, optional, tag = "7")]
    pub histogram: Option<Histogram>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricFamily {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub help: Option<String>,
    #[prost(enumeration = "MetricType", optional, tag = "3")]
    pub r#type: Option<i32>,
    #[prost(message, repeated, tag = "4")]
    pub metric: Vec<Metric>,
}

/// Appends one family, length-delimited. A counter's `name` is the sample
/// name (with `_total`), as client_golang writes it.
pub fn push_family(
    out: &mut Vec<u8>,
    name: &str,
    help: &str,
    kind: MetricType,
    metric: Vec<Metric>,
) {
    let family = MetricFamily {
        name: Some(name.to_owned()),
        help: Some(help.to_owned()),
        r#type: Some(kind as i32),
        metric,
    };
    family
        .encode_length_delimited(out)
        .expect("a Vec grows as needed");
}

/// The label pairs of a label set as the text formats write it between
/// the braces (`a="x",b="y\"z"`): series store that text (escaped once),
/// and this undoes `encoding::push_label`.
pub fn labels_from_text(text: &str) -> Vec<LabelPair> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some((name, after)) = rest.split_once("=\"") {
        let name = name.strip_prefix(',').unwrap_or(name);
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => {}
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push(LabelPair {
            name: Some(name.to_owned()),
            value: Some(value),
        });
        rest = &after[end..];
    }
    out
}

pub fn gauge(labels: &str, value: f64) -> Metric {
    Metric {
        label: labels_from_text(labels),
        gauge: Some(Gauge { value: Some(value) }),
        ..Default::default()
    }
}

pub fn counter(labels: &str, value: f64) -> Metric {
    Metric {
        label: labels_from_text(labels),
        counter: Some(Counter { value: Some(value) }),
        ..Default::default()
    }
}

/// One histogram series: the classic buckets (`cumulative`, whose last
/// value is `+Inf`, implicit in this format) and, when on, the native ones.
/// With native buckets the count is theirs, and a classic cumulative count
/// read a moment earlier is capped by it, so the message stays monotonic.
/// The sum is the classic one (the native buckets keep none: it is the sum
/// of the same observations).
pub fn histogram(
    labels: &str,
    bounds: &[f64],
    cumulative: &[u64],
    sum: f64,
    native: Option<(&NativeSnapshot, f64)>,
) -> Metric {
    let classic_count = cumulative.last().copied().unwrap_or(0);
    let count = native.map_or(classic_count, |(n, _)| n.count);
    let mut h = Histogram {
        sample_count: Some(count),
        sample_sum: Some(sum),
        bucket: bounds
            .iter()
            .zip(cumulative)
            .map(|(b, c)| Bucket {
                cumulative_count: Some((*c).min(count)),
                upper_bound: Some(*b),
            })
            .collect(),
        ..Default::default()
    };
    if let Some((n, zero_threshold)) = native {
        h.schema = Some(n.schema);
        h.zero_threshold = Some(zero_threshold);
        h.zero_count = Some(n.zero_count);
        let mut prev_end: Option<i32> = None;
        let mut prev_count = 0i64;
        for (start, run) in &n.runs {
            h.positive_span.push(BucketSpan {
                offset: Some(prev_end.map_or(*start, |end| start - end)),
                length: Some(run.len() as u32),
            });
            prev_end = Some(start + run.len() as i32);
            for c in run {
                let c = *c as i64;
                h.positive_delta.push(c - prev_count);
                prev_count = c;
            }
        }
        if h.positive_span.is_empty() {
            // A no-op span marks the histogram as native while it is
            // empty (client_golang does the same).
            h.positive_span.push(BucketSpan {
                offset: Some(0),
                length: Some(0),
            });
        }
    }
    Metric {
        label: labels_from_text(labels),
        histogram: Some(h),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_through_the_text_escaping() {
        let mut text = String::new();
        for (k, v) in [("a", "plain"), ("b", "q\"u\\o\nte,=\""), ("c", "")] {
            super::super::push_label(&mut text, k, v);
        }
        let pairs: Vec<_> = labels_from_text(&text)
            .into_iter()
            .map(|p| (p.name.unwrap(), p.value.unwrap()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("a".to_owned(), "plain".to_owned()),
                ("b".to_owned(), "q\"u\\o\nte,=\"".to_owned()),
                ("c".to_owned(), String::new())
            ]
        );
        assert!(labels_from_text("").is_empty());
    }

    #[test]
    fn native_buckets_become_spans_and_deltas() {
        let snap = NativeSnapshot {
            schema: 3,
            zero_count: 1,
            count: 10,
            runs: vec![(-2, vec![2, 3]), (5, vec![4])],
        };
        let m = histogram("", &[1.0], &[7, 9], 4.5, Some((&snap, 1e-9)));
        let h = m.histogram.unwrap();
        assert_eq!(h.sample_count, Some(10));
        assert_eq!(h.bucket[0].cumulative_count, Some(7));
        assert_eq!(
            h.positive_span,
            [
                BucketSpan {
                    offset: Some(-2),
                    length: Some(2)
                },
                BucketSpan {
                    offset: Some(5),
                    length: Some(1)
                }
            ]
        );
        assert_eq!(h.positive_delta, [2, 1, 1]);
        let mut buf = Vec::new();
        push_family(&mut buf, "x", "h", MetricType::Histogram, vec![]);
        let back = MetricFamily::decode_length_delimited(&buf[..]).unwrap();
        assert_eq!(back.name.as_deref(), Some("x"));
    }
}
