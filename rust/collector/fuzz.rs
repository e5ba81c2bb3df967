//! Deterministic fuzzing of the collector's input path under `cargo test`,
//! where overflow checks are on (the wheel is built without them, so the
//! hypothesis fuzzing in `tests/test_fuzz_collector.py` cannot see an
//! overflow): seed bodies from the real encoder, byte-level mutations,
//! then pre-scan, decode, check, render and de-duplicate as `ingest_body`
//! does, checking that what is rendered stays within the pre-scan's bound.

use super::admission::estimate;
use super::dedup::Dedup;
use super::{render_reserved, RedisMode};
use crate::events::FunctionTime;
use crate::performance::{Drained, LogEntry, Sample};
use crate::wire::scan::scan;
use crate::wire::{decode_checked, encode_drained, Sender};
use uuid::Uuid;

use crate::test_rng::XorShift;

fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (n_fn, n, logs) in [(1, 1, 0), (2, 5, 2), (3, 3, 3)] {
        let mut d = Drained::default();
        for f in 0..n_fn {
            let id = Uuid::from_u128(1000 + f as u128);
            for kind in [FunctionTime::Execution, FunctionTime::Transfer] {
                d.times[kind as usize].push((
                    id,
                    (0..n)
                        .map(|i| Sample {
                            timestamp_ns: i64::MAX - i as i64,
                            value: [0.0, f64::NAN, f64::INFINITY, -1.5e-300][i % 4],
                        })
                        .collect(),
                ));
            }
            d.logs.push((
                id,
                (0..logs)
                    .map(|i| LogEntry {
                        timestamp_ns: i64::MIN + i as i64,
                        target: format!("t,\"{i}\"\n"),
                        message: "m ✓,\r\n\"".repeat(i + 1),
                    })
                    .collect(),
            ));
        }
        let sender = Sender {
            node_id: "node-f",
            nonce: 7,
            refresh_deadline: u64::MAX,
        };
        out.extend(
            encode_drained(&d, &sender, 1, 1 << 20)
                .into_iter()
                .map(|b| b.body),
        );
    }
    out
}

fn varint(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[test]
fn mutated_bodies_never_panic() {
    let seeds = seeds();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut dedup = Dedup::default();
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..100_000 {
        let mut body = seeds[rng.below(seeds.len())].clone();
        // Every seed ends in field 1000 (two tag bytes) and a 1-byte sequence.
        body.truncate(body.len() - 3);
        for _ in 0..1 + rng.below(4) {
            if body.is_empty() {
                body.push(rng.next() as u8);
            }
            let pos = rng.below(body.len());
            match rng.below(5) {
                0 => body[pos] ^= 1 << rng.below(8),
                1 => body[pos] = [0x00, 0x7f, 0x80, 0xff][rng.below(4)],
                2 => body.insert(pos, rng.next() as u8),
                3 => drop(body.drain(pos..(pos + 1 + rng.below(8)).min(body.len()))),
                _ => body.truncate(pos),
            }
        }
        // A sequence anywhere in u64, the top included.
        body.extend_from_slice(&[0xc0, 0x3e]);
        let seq = [1, u64::MAX, u64::MAX - 1, rng.next()][rng.below(4)];
        varint(seq, &mut body);
        let scanned = scan(&body);
        match decode_checked(&body) {
            Ok(msg) => {
                accepted += 1;
                let perf = msg.performance_samples.unwrap_or_default();
                let mode = [RedisMode::Single, RedisMode::Cluster][rng.below(2)];
                let per_command = 1 + rng.below(5);
                let counts = scanned.expect("the scan accepts what decodes");
                let est = estimate(&counts, mode, Some(4), per_command);
                let r = render_reserved(&perf, mode, Some("a,b,"), per_command, &est);
                let (samples, logs) = (perf.sample_count(), perf.log_count());
                assert_eq!(
                    (counts.samples, counts.log_entries),
                    (samples as u64, logs as u64)
                );
                // Within the bound, so the buffers never grew past it.
                assert!(
                    r.resp.len() as u64 <= est.resp,
                    "{} > {}",
                    r.resp.len(),
                    est.resp
                );
                assert!(r.routes.len() as u64 <= est.routes);
                assert!(r.samples_csv.len() as u64 <= est.samples_csv);
                assert!(r.logs_csv.len() as u64 <= est.logs_csv);
                assert_eq!(r.members, (samples + logs) as u64);
                if mode == RedisMode::Cluster {
                    assert_eq!(r.routes.len(), r.commands);
                }
                assert_eq!(
                    r.samples_csv.iter().filter(|&&b| b == b'\n').count(),
                    samples
                );
                if !dedup.seen(&msg.node_id, msg.nonce, msg.batch_sequence) {
                    dedup.mark(&msg.node_id, msg.nonce, msg.batch_sequence);
                }
                assert!(dedup.seen(&msg.node_id, msg.nonce, msg.batch_sequence));
            }
            Err(_) => refused += 1,
        }
    }
    eprintln!("collector fuzz: {accepted} bodies accepted, {refused} refused");
    assert!(accepted > 1000 && refused > 1000);
}
