//! A pre-scan of a received `UpdateNodeRequest` body: what decoding it
//! would build, counted without building it.
//!
//! Decoding allocates per entry (an empty log entry is 2 bytes on the wire
//! and 64 bytes decoded, before its Redis command and CSV row), so the
//! collector must know what a body becomes before it decodes it. This walk
//! reads the same wire format with prost's own key and varint readers,
//! keeps a handful of counters and allocates nothing per entry.
//!
//! It accepts exactly the bodies `prost` decodes: same wire types for the
//! known fields (a mismatch is an error, as in prost), same skipping of
//! unknown fields (groups included, with prost's recursion limit), same
//! bounds on lengths, UTF-8 checked on strings. So a body the scan refuses
//! would be refused by the decoder too (400 either way), and the counts of
//! an accepted body are the decoder's counts (the unit tests check both on
//! random and mutated bodies).

use super::Malformed;
use crate::collector::format::score;
use prost::bytes::Buf;
use prost::encoding::{decode_key, decode_varint, WireType};
use prost::DecodeError;

/// prost's recursion limit (`RECURSION_LIMIT`, not exported).
const RECURSION_LIMIT: u32 = 100;

/// What a body decodes into, for the collector's admission.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BodyCounts {
    /// `Sample` messages, all five series kinds together.
    pub samples: u64,
    /// `FunctionLogEntry` messages.
    pub log_entries: u64,
    /// `Samples` messages (one function's series of one kind).
    pub series: u64,
    /// `FunctionLogEntries` messages.
    pub log_groups: u64,
    /// String fields with at least one byte (each is one allocation).
    pub strings: u64,
    /// Bytes of every string field (a field sent twice counts twice).
    pub string_bytes: u64,
    /// Bytes of log targets and messages (a field sent twice counts twice).
    pub log_text_bytes: u64,
    /// Upper bound of the printed scores of all samples.
    pub sample_score_text: u64,
    /// Upper bound of the printed values of all samples.
    pub sample_value_text: u64,
    /// Upper bound of the printed scores of all log entries.
    pub log_score_text: u64,
}

impl BodyCounts {
    /// Samples plus log entries: what the per-body cap limits.
    pub fn entries(&self) -> u64 {
        self.samples.saturating_add(self.log_entries)
    }
}

/// Counts what `body` decodes into; `Err` exactly when prost's decoding
/// of an `UpdateNodeRequest` fails.
pub fn scan(body: &[u8]) -> Result<BodyCounts, Malformed> {
    let mut counts = BodyCounts::default();
    let mut buf = body;
    request(&mut buf, &mut counts)
        .map_err(|e| Malformed(format!("not an UpdateNodeRequest protobuf: {e}")))?;
    Ok(counts)
}

/// Longest text Rust's `Display` prints for `x` (how the collector prints
/// scores and values): at most 17 significant digits placed by the decimal
/// exponent, never in exponent form, so a subnormal takes about 340
/// characters. Bounded from the binary exponent, with no formatting.
pub fn f64_text_bound(x: f64) -> u64 {
    if !x.is_finite() {
        return 4; // "NaN", "inf", "-inf"
    }
    if x == 0.0 {
        return 2; // "0", "-0"
    }
    let biased = ((x.to_bits() >> 52) & 0x7ff) as i64;
    let exp2 = if biased == 0 { -1074 } else { biased - 1023 };
    // |decimal exponent| <= (|exp2| + 1) * log10(2) + 2; 78/256 > log10(2).
    // Sign, "0.", 17 digits and that many placing zeros: 20 + it.
    24 + (exp2.unsigned_abs() + 1) * 78 / 256
}

type Step = Result<(), DecodeError>;

fn request(buf: &mut &[u8], c: &mut BodyCounts) -> Step {
    let depth = RECURSION_LIMIT;
    while buf.has_remaining() {
        let (tag, wire) = decode_key(buf)?;
        match tag {
            2 => string(wire, buf, c).map(drop)?,
            10 | 11 | 1000 => varint(wire, buf).map(drop)?,
            30 => message(wire, buf, depth, |tag, wire, buf| {
                perf_field(tag, wire, buf, depth - 1, c)
            })?,
            _ => skip(wire, tag, buf, depth)?,
        }
    }
    Ok(())
}

fn perf_field(tag: u32, wire: WireType, buf: &mut &[u8], depth: u32, c: &mut BodyCounts) -> Step {
    match tag {
        90 | 95 | 100 | 105 | 110 => {
            message(wire, buf, depth, |tag, wire, buf| match tag {
                1 => string(wire, buf, c).map(drop),
                10 => sample(wire, buf, depth - 1, c),
                _ => skip(wire, tag, buf, depth - 1),
            })?;
            c.series += 1;
        }
        200 => {
            message(wire, buf, depth, |tag, wire, buf| match tag {
                1 => string(wire, buf, c).map(drop),
                10 => log_entry(wire, buf, depth - 1, c),
                _ => skip(wire, tag, buf, depth - 1),
            })?;
            c.log_groups += 1;
        }
        _ => skip(wire, tag, buf, depth)?,
    }
    Ok(())
}

fn sample(wire: WireType, buf: &mut &[u8], depth: u32, c: &mut BodyCounts) -> Step {
    // Scalars sent twice: the last one wins, as in prost.
    let (mut sec, mut ns, mut value) = (0i64, 0u32, 0f64);
    message(wire, buf, depth, |tag, wire, buf| {
        match tag {
            1 => sec = varint(wire, buf)? as i64,
            2 => ns = varint(wire, buf)? as u32,
            3 => value = double(wire, buf)?,
            _ => skip(wire, tag, buf, depth - 1)?,
        }
        Ok(())
    })?;
    c.samples += 1;
    c.sample_score_text += f64_text_bound(score(sec, ns));
    c.sample_value_text += f64_text_bound(value);
    Ok(())
}

fn log_entry(wire: WireType, buf: &mut &[u8], depth: u32, c: &mut BodyCounts) -> Step {
    let (mut sec, mut ns) = (0i64, 0u32);
    message(wire, buf, depth, |tag, wire, buf| {
        match tag {
            1 => sec = varint(wire, buf)? as i64,
            2 => ns = varint(wire, buf)? as u32,
            3 | 4 => {
                let n = string(wire, buf, c)?;
                c.log_text_bytes += n;
            }
            _ => skip(wire, tag, buf, depth - 1)?,
        }
        Ok(())
    })?;
    c.log_entries += 1;
    c.log_score_text += f64_text_bound(score(sec, ns));
    Ok(())
}

fn expect(wanted: WireType, got: WireType) -> Step {
    if wanted == got {
        Ok(())
    } else {
        Err(DecodeError::new(format!(
            "invalid wire type: {got:?} (expected {wanted:?})"
        )))
    }
}

/// One length-delimited sub-message at recursion budget `depth`, its
/// fields handed to `field` (which sees them at `depth - 1`).
fn message(
    wire: WireType,
    buf: &mut &[u8],
    depth: u32,
    mut field: impl FnMut(u32, WireType, &mut &[u8]) -> Step,
) -> Step {
    expect(WireType::LengthDelimited, wire)?;
    if depth == 0 {
        return Err(DecodeError::new("recursion limit reached"));
    }
    let mut inner = delimited(buf)?;
    while inner.has_remaining() {
        let (tag, wire) = decode_key(&mut inner)?;
        field(tag, wire, &mut inner)?;
    }
    Ok(())
}

/// Splits off a length-prefixed run of bytes.
fn delimited<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    let len = decode_varint(buf)?;
    if len > buf.len() as u64 {
        return Err(DecodeError::new("buffer underflow"));
    }
    let (head, tail) = buf.split_at(len as usize);
    *buf = tail;
    Ok(head)
}

fn varint(wire: WireType, buf: &mut &[u8]) -> Result<u64, DecodeError> {
    expect(WireType::Varint, wire)?;
    decode_varint(buf)
}

fn double(wire: WireType, buf: &mut &[u8]) -> Result<f64, DecodeError> {
    expect(WireType::SixtyFourBit, wire)?;
    if buf.len() < 8 {
        return Err(DecodeError::new("buffer underflow"));
    }
    Ok(buf.get_f64_le())
}

/// A string field: checked as prost does (UTF-8), counted; its length.
fn string(wire: WireType, buf: &mut &[u8], c: &mut BodyCounts) -> Result<u64, DecodeError> {
    expect(WireType::LengthDelimited, wire)?;
    let text = delimited(buf)?;
    if std::str::from_utf8(text).is_err() {
        return Err(DecodeError::new(
            "invalid string value: data is not UTF-8 encoded",
        ));
    }
    let n = text.len() as u64;
    c.strings += u64::from(n > 0);
    c.string_bytes += n;
    Ok(n)
}

/// prost's `skip_field`, with the recursion budget it would have here.
fn skip(wire: WireType, tag: u32, buf: &mut &[u8], depth: u32) -> Step {
    if depth == 0 {
        return Err(DecodeError::new("recursion limit reached"));
    }
    let len = match wire {
        WireType::Varint => decode_varint(buf).map(|_| 0)?,
        WireType::ThirtyTwoBit => 4,
        WireType::SixtyFourBit => 8,
        WireType::LengthDelimited => decode_varint(buf)?,
        WireType::StartGroup => loop {
            let (inner_tag, inner_wire) = decode_key(buf)?;
            match inner_wire {
                WireType::EndGroup if inner_tag == tag => break 0,
                WireType::EndGroup => return Err(DecodeError::new("unexpected end group tag")),
                _ => skip(inner_wire, inner_tag, buf, depth - 1)?,
            }
        },
        WireType::EndGroup => return Err(DecodeError::new("unexpected end group tag")),
    };
    if len > buf.len() as u64 {
        return Err(DecodeError::new("buffer underflow"));
    }
    buf.advance(len as usize);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::XorShift;
    use crate::wire::{
        FunctionLogEntries, FunctionLogEntry, NodePerformanceSamples, Sample, Samples,
        UpdateNodeRequest,
    };
    use prost::Message;

    /// The shared generator, with the values these bodies need.
    struct Rng(XorShift);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0.next()
        }

        fn below(&mut self, n: usize) -> usize {
            self.0.below(n)
        }

        fn text(&mut self) -> String {
            let n = [0, 0, 1, 5, 36, 300][self.below(6)];
            (0..n)
                .map(|_| ['a', ',', '"', '\n', '✓', '0'][self.below(6)])
                .collect()
        }

        fn f64(&mut self) -> f64 {
            match self.below(4) {
                0 => f64::from_bits(self.next()),
                1 => 0.0,
                2 => [f64::MIN_POSITIVE, 5e-324, f64::MAX, -0.0, 1e21][self.below(5)],
                _ => self.next() as f64 / 1e9,
            }
        }

        fn i64(&mut self) -> i64 {
            [0, -1, i64::MIN, i64::MAX, 1_700_000_000, self.next() as i64][self.below(6)]
        }
    }

    fn random_request(rng: &mut Rng) -> UpdateNodeRequest {
        let mut perf = NodePerformanceSamples::default();
        let series = |rng: &mut Rng| {
            (0..rng.below(4))
                .map(|_| Samples {
                    id: rng.text(),
                    samples: (0..[0, 1, 3, 40][rng.below(4)])
                        .map(|_| Sample {
                            timestamp_sec: rng.i64(),
                            timestamp_ns: rng.next() as u32,
                            sample: rng.f64(),
                        })
                        .collect(),
                })
                .collect::<Vec<_>>()
        };
        perf.function_instantiate_times = series(rng);
        perf.function_init_times = series(rng);
        perf.function_execution_times = series(rng);
        perf.function_stop_times = series(rng);
        perf.function_transfer_times = series(rng);
        perf.function_log_entries = (0..rng.below(4))
            .map(|_| FunctionLogEntries {
                id: rng.text(),
                entries: (0..[0, 1, 7][rng.below(3)])
                    .map(|_| FunctionLogEntry {
                        timestamp_sec: rng.i64(),
                        timestamp_ns: rng.next() as u32,
                        target: rng.text(),
                        msg: rng.text(),
                    })
                    .collect(),
            })
            .collect();
        UpdateNodeRequest {
            node_id: rng.text(),
            refresh_deadline: rng.next(),
            nonce: rng.next(),
            performance_samples: (rng.below(8) > 0).then_some(perf),
            batch_sequence: rng.next() >> rng.below(64),
        }
    }

    /// What the scan should say, read off the decoded message.
    fn counts_of(msg: &UpdateNodeRequest) -> BodyCounts {
        let mut c = BodyCounts::default();
        let text = |s: &str, c: &mut BodyCounts| {
            c.strings += u64::from(!s.is_empty());
            c.string_bytes += s.len() as u64;
        };
        text(&msg.node_id, &mut c);
        if let Some(perf) = &msg.performance_samples {
            for (_, series) in perf.times() {
                for s in series {
                    c.series += 1;
                    text(&s.id, &mut c);
                    for x in &s.samples {
                        c.samples += 1;
                        c.sample_score_text +=
                            f64_text_bound(score(x.timestamp_sec, x.timestamp_ns));
                        c.sample_value_text += f64_text_bound(x.sample);
                    }
                }
            }
            for g in &perf.function_log_entries {
                c.log_groups += 1;
                text(&g.id, &mut c);
                for e in &g.entries {
                    c.log_entries += 1;
                    text(&e.target, &mut c);
                    text(&e.msg, &mut c);
                    c.log_text_bytes += (e.target.len() + e.msg.len()) as u64;
                    c.log_score_text += f64_text_bound(score(e.timestamp_sec, e.timestamp_ns));
                }
            }
        }
        c
    }

    #[test]
    fn agrees_with_prost_on_random_valid_bodies() {
        let mut rng = Rng(XorShift(0x2545_F491_4F6C_DD1D));
        for _ in 0..3000 {
            let msg = random_request(&mut rng);
            let body = msg.encode_to_vec();
            assert_eq!(scan(&body).unwrap(), counts_of(&msg));
        }
    }

    /// A mutated body: the scan accepts it exactly when prost does, counts
    /// the same entries, and never panics.
    #[test]
    fn agrees_with_prost_on_mutated_bodies() {
        let mut rng = Rng(XorShift(0x9E37_79B9_7F4A_7C15));
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let mut body = random_request(&mut rng).encode_to_vec();
            for _ in 0..1 + rng.below(3) {
                if body.is_empty() {
                    body.push(rng.next() as u8);
                }
                let pos = rng.below(body.len());
                match rng.below(7) {
                    0 => body[pos] ^= 1 << rng.below(8),
                    1 => body[pos] = [0x00, 0x7f, 0x80, 0xff, 0x0b, 0x0c][rng.below(6)],
                    2 => body.insert(pos, rng.next() as u8),
                    3 => drop(body.drain(pos..(pos + 1 + rng.below(8)).min(body.len()))),
                    // An unknown field or group (start 0x?3 / end 0x?4).
                    4 => body
                        .splice(
                            pos..pos,
                            [[0xf8, 0x01, 0x05], [0x0b, 0x10, 0x01], [0x0b, 0x0c, 0x00]]
                                [rng.below(3)],
                        )
                        .for_each(drop),
                    5 => body.truncate(pos),
                    _ => {
                        let (a, b) = (rng.below(body.len()), rng.below(body.len()));
                        body.swap(a, b);
                    }
                }
            }
            match (scan(&body), UpdateNodeRequest::decode(body.as_slice())) {
                (Ok(c), Ok(msg)) => {
                    accepted += 1;
                    let want = counts_of(&msg);
                    assert_eq!(
                        (c.samples, c.log_entries, c.series, c.log_groups),
                        (want.samples, want.log_entries, want.series, want.log_groups),
                        "{body:?}"
                    );
                    // Fields sent twice count twice: never below.
                    assert!(c.string_bytes >= want.string_bytes && c.strings >= want.strings);
                    assert!(c.log_text_bytes >= want.log_text_bytes);
                }
                (Err(_), Err(_)) => refused += 1,
                (scanned, decoded) => panic!(
                    "scan {:?} but prost {:?} for {body:?}",
                    scanned.map(drop).map_err(|m| m.0),
                    decoded.map(drop)
                ),
            }
        }
        eprintln!("scan fuzz: {accepted} accepted, {refused} refused");
        assert!(accepted > 1000 && refused > 1000);
    }

    #[test]
    fn deep_groups_hit_the_same_recursion_limit() {
        let mut seen = Vec::new();
        for depth in [90u32, 99, 100, 101, 120] {
            // Unknown field 5 as nested groups: start 0x2b, end 0x2c.
            let mut body = vec![0x2b; depth as usize];
            body.extend(std::iter::repeat_n(0x2c, depth as usize));
            let ours = scan(&body).is_ok();
            let prost = UpdateNodeRequest::decode(body.as_slice()).is_ok();
            assert_eq!(ours, prost, "depth {depth}");
            seen.push(ours);
        }
        assert_eq!(seen, [true, true, true, false, false]);
    }

    #[test]
    fn text_bound_covers_display() {
        let mut rng = Rng(XorShift(7));
        let special = [
            0.0,
            -0.0,
            5e-324,
            -5e-324,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::MIN,
            1e21,
            1e-7,
            0.1 + 0.2,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1_700_000_000.123_456_7,
        ];
        let randoms = (0..200_000).map(|_| f64::from_bits(rng.next()));
        for x in special.into_iter().chain(randoms) {
            let len = format!("{x}").len() as u64;
            let bound = f64_text_bound(x);
            assert!(len <= bound, "{x:e}: {len} > {bound}");
            assert!(bound <= len + 40, "{x:e}: {bound} much over {len}");
        }
    }

    #[test]
    fn hostile_bodies_are_counted_not_built() {
        // 2 million empty log entries of one function: 2 bytes each.
        let id = "00000000-0000-0000-0000-000000000007";
        let mut group = vec![0x0a, id.len() as u8];
        group.extend_from_slice(id.as_bytes());
        for _ in 0..2_000_000 {
            group.extend_from_slice(&[0x52, 0x00]);
        }
        let mut body = vec![0x12, 0x01, b'n', 0x58, 0x01];
        let mut perf = vec![0xc2, 0x0c];
        prost::encoding::encode_varint(group.len() as u64, &mut perf);
        perf.extend_from_slice(&group);
        body.extend_from_slice(&[0xf2, 0x01]);
        prost::encoding::encode_varint(perf.len() as u64, &mut body);
        body.extend_from_slice(&perf);
        body.extend_from_slice(&[0xc0, 0x3e, 0x01]);
        let c = scan(&body).unwrap();
        assert_eq!(
            (c.log_entries, c.log_groups, c.entries()),
            (2_000_000, 1, 2_000_000)
        );
        // The same count prost gets, by building them.
        let msg = UpdateNodeRequest::decode(body.as_slice()).unwrap();
        assert_eq!(msg.performance_samples.unwrap().log_count(), 2_000_000);
    }
}
