//! What a body may cost before the collector decodes it.
//!
//! A body's wire size says little about its memory: an empty log entry is
//! 2 bytes on the wire, 64 decoded and about 185 more as a ZADD and a CSV
//! row (a 16 MiB body of them took 1.6 GB). So the collector pre-scans
//! each body (`wire::scan`), refuses one holding more than
//! `max_entries_per_body` samples and log entries (413), estimates from the
//! counts an upper bound of everything decoding and rendering it will
//! allocate, and reserves that from one budget shared by all requests
//! (`max_decoded_bytes`) before decoding: past it the body is refused for
//! now (503, the node sends it again), and a body whose estimate alone is
//! over the budget is refused for good (413).
//!
//! The estimate is a bound, not a guess: decoded vectors at three times
//! their length (growth by doubling, and the old buffer while one is
//! copied), every string with its allocation overhead, and the rendered
//! buffers at their exact worst case, which `render` then allocates up
//! front so they never grow past it. Function ids are rendered only once
//! checked as UUIDs, so at most 45 bytes (the `urn:uuid:` form).

use super::redis::Route;
use super::RedisMode;
use crate::wire::scan::BodyCounts;
use crate::wire::{FunctionLogEntries, FunctionLogEntry, Sample, Samples};
use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Default of `max_entries_per_body`: a NodeReporter body holds at most
/// `max_batch_bytes / 32` samples (131,072 at the default 4 MiB; 524,288
/// at the collector's 16 MiB body limit), so this is twice the most any
/// NodeReporter can send.
pub const DEFAULT_MAX_ENTRIES: u64 = 1 << 20;
/// Default of `max_decoded_bytes`: about 43 MB is the bound for a full
/// 4 MiB NodeReporter body, about 175 MB for a 16 MiB one.
pub const DEFAULT_MAX_DECODED_BYTES: u64 = 256 << 20;

/// Longest function id that passes the UUID check (`urn:uuid:` + 36).
const MAX_ID: u64 = 45;
/// Longest metric name (`function_instantiate_time`).
const MAX_METRIC: u64 = 25;
/// A malloc'd string's overhead (header and rounding) on top of its bytes.
const ALLOC_OVERHEAD: u64 = 32;
/// Room for the request itself and the five series vectors' first growth.
const FIXED: u64 = 4096;

/// Upper bounds of what one batch allocates, by buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Estimate {
    pub decoded: u64,
    pub resp: u64,
    pub routes: u64,
    pub samples_csv: u64,
    pub logs_csv: u64,
}

impl Estimate {
    pub fn total(&self) -> u64 {
        self.decoded
            .saturating_add(self.resp)
            .saturating_add(self.routes.saturating_mul(size_of::<Route>() as u64))
            .saturating_add(self.samples_csv)
            .saturating_add(self.logs_csv)
    }
}

/// Bounds what a body with `c` decodes and renders into (`routes` in
/// routes, the rest in bytes). `csv_prefix` is the row prefix when a
/// dataset is written.
pub fn estimate(
    c: &BodyCounts,
    mode: RedisMode,
    csv_prefix: Option<usize>,
    members_per_command: usize,
) -> Estimate {
    let sz = |n: usize| n as u64;
    // Saturating throughout: counts come from a hostile body.
    let mul = |a: u64, b: u64| a.saturating_mul(b);
    let sum = |parts: &[u64]| parts.iter().fold(0u64, |a, &b| a.saturating_add(b));
    let decoded = sum(&[
        mul(
            sum(&[mul(3, c.samples), mul(4, c.series)]),
            sz(size_of::<Sample>()),
        ),
        mul(sum(&[mul(3, c.series), 20]), sz(size_of::<Samples>())),
        mul(
            sum(&[mul(3, c.log_entries), mul(4, c.log_groups)]),
            sz(size_of::<FunctionLogEntry>()),
        ),
        mul(
            sum(&[mul(3, c.log_groups), 4]),
            sz(size_of::<FunctionLogEntries>()),
        ),
        c.string_bytes,
        mul(c.strings, ALLOC_OVERHEAD),
        FIXED,
    ]);
    let mut est = Estimate {
        decoded,
        ..Estimate::default()
    };
    if mode != RedisMode::None {
        // A series' samples go in ceil(n / m) commands: at most one more
        // per series than n / m.
        let sample_commands = sum(&[c.series, c.samples / members_per_command.max(1) as u64]);
        // "*N\r\n$4\r\nZADD\r\n$L\r\nperformance:<id>:<metric>\r\n"
        let header = 23 + 10 + 5 + 12 + MAX_ID + 1 + MAX_METRIC + 2;
        // "$L\r\n<score>\r\n$L\r\n<score>:<value>\r\n", L of 3 digits at most.
        let member = 17;
        // A log entry's own ZADD, its key and member lengths unbounded
        // (the key may carry "log:", see `log_key`).
        let log_command = 4 + 10 + 23 + 12 + MAX_ID + 1 + 4 + 2 + 6 + 2 + 23 + 1 + 2;
        est.resp = sum(&[
            mul(sample_commands, header),
            mul(c.samples, member),
            mul(2, c.sample_score_text),
            c.sample_value_text,
            mul(c.log_entries, log_command),
            mul(2, c.log_score_text),
            c.log_text_bytes,
        ]);
        if mode == RedisMode::Cluster {
            est.routes = sum(&[sample_commands, c.log_entries]);
        }
    }
    if let Some(prefix) = csv_prefix {
        let prefix = prefix as u64;
        // "<prefix><id>,<metric>,<score>,<value>\n"
        est.samples_csv = sum(&[
            mul(c.samples, prefix + MAX_ID + MAX_METRIC + 4),
            c.sample_score_text,
            c.sample_value_text,
        ]);
        // "<prefix><id>,<target>,<score>,<msg>\n", both texts maybe quoted
        // (quotes doubled).
        est.logs_csv = sum(&[
            mul(c.log_entries, prefix + MAX_ID + 4 + 4),
            c.log_score_text,
            mul(2, c.log_text_bytes),
        ]);
    }
    est
}

/// Bytes of decoded work all requests together may hold.
pub struct Budget {
    limit: u64,
    in_use: AtomicU64,
}

/// Held while a body is decoded, rendered and stored; gives its bytes back
/// when dropped.
pub struct Permit<'a> {
    budget: &'a Budget,
    bytes: u64,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.budget.in_use.fetch_sub(self.bytes, Relaxed);
    }
}

impl Budget {
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            in_use: AtomicU64::new(0),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn in_use(&self) -> u64 {
        self.in_use.load(Relaxed)
    }

    /// Takes `bytes` if they fit beside what is held now.
    pub fn try_reserve(&self, bytes: u64) -> Option<Permit<'_>> {
        self.in_use
            .fetch_update(Relaxed, Relaxed, |cur| {
                cur.checked_add(bytes).filter(|&n| n <= self.limit)
            })
            .ok()
            .map(|_| Permit {
                budget: self,
                bytes,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Arg, Limit};

    #[test]
    fn budget_reserves_and_gives_back() {
        let b = Budget::new(100);
        let p = b.try_reserve(60).unwrap();
        assert!(b.try_reserve(41).is_none());
        let q = b.try_reserve(40).unwrap();
        assert_eq!(b.in_use(), 100);
        drop(p);
        assert_eq!(b.in_use(), 40);
        drop(q);
        assert_eq!(b.in_use(), 0);
        assert!(b.try_reserve(u64::MAX).is_none());
    }

    use super::super::CollectorCore;
    use crate::events::FunctionTime;
    use crate::performance::{Drained, LogEntry, Sample as RawSample};
    use crate::wire::scan::scan;
    use crate::wire::{encode_drained, Sender};
    use std::sync::atomic::Ordering::Relaxed;
    use uuid::Uuid;

    const SENDER: Sender<'static> = Sender {
        node_id: "node-a",
        nonce: 3,
        refresh_deadline: 0,
    };

    /// `n` samples of real-looking timestamps and durations.
    fn drained(n: usize, logs: usize) -> Drained {
        let mut d = Drained::default();
        let id = Uuid::from_u128(0xfeed);
        d.times[FunctionTime::Execution as usize].push((
            id,
            (0..n)
                .map(|i| RawSample {
                    timestamp_ns: 1_764_000_000_123_456_789 + 7_919 * i as i64,
                    value: 0.000_123 * (1 + i % 10_000) as f64,
                })
                .collect(),
        ));
        let entry = |i: usize| LogEntry {
            timestamp_ns: 1_764_000_000_000_000_000 + i as i64,
            target: String::new(),
            message: String::new(),
        };
        d.logs.push((id, (0..logs).map(entry).collect()));
        d
    }

    fn body(n: usize, logs: usize, sequence: u64) -> Vec<u8> {
        let batches = encode_drained(&drained(n, logs), &SENDER, sequence, 64 << 20);
        assert_eq!(batches.len(), 1);
        batches.into_iter().next().unwrap().body
    }

    struct Dir(std::path::PathBuf);

    impl Dir {
        fn new(name: &str) -> Self {
            let p = std::env::temp_dir().join(format!("et-adm-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }

        fn prefix(&self) -> String {
            format!("{}/", self.0.display())
        }

        /// Bytes of both CSV files.
        fn csv_bytes(&self) -> usize {
            ["performance_samples.csv", "application_logs.csv"]
                .iter()
                .map(|f| std::fs::read(self.0.join(f)).unwrap().len())
                .sum()
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn core(dir: &Dir, max_entries: u64, max_decoded: u64) -> CollectorCore {
        CollectorCore::new(
            None,
            Some(Arg::value(dir.prefix())),
            Arg::value(false),
            None,
            None,
            Limit::new(1 << 28),
            Limit::new(1000),
            Arg::value(2.0),
            Limit::new(max_entries as usize),
            Limit::new(max_decoded as usize),
            Arg::value("plain".into()),
        )
        .unwrap_or_else(|_| panic!("collector core"))
    }

    #[test]
    fn entries_over_the_cap_get_413_and_write_nothing() {
        let dir = Dir::new("cap");
        let core = core(&dir, 100, DEFAULT_MAX_DECODED_BYTES);
        let empty = dir.csv_bytes();
        for (n, logs) in [(101, 0), (0, 101), (60, 41)] {
            let (code, why) = core.ingest_body(&body(n, logs, 1), None);
            assert_eq!(code, 413, "{why}");
            assert!(why.contains("max_entries_per_body"), "{why}");
        }
        assert_eq!(dir.csv_bytes(), empty);
        assert_eq!(core.stats.refused_too_many_entries.load(Relaxed), 3);
        assert_eq!(core.stats.batches_stored.load(Relaxed), 0);
        assert_eq!(core.ingest_body(&body(60, 40, 1), None).0, 200);
        assert!(dir.csv_bytes() > empty);
        assert_eq!(core.budget.in_use(), 0);
    }

    #[test]
    fn a_body_over_the_whole_budget_gets_413() {
        let dir = Dir::new("whole");
        let core = core(&dir, DEFAULT_MAX_ENTRIES, 50_000);
        let empty = dir.csv_bytes();
        let (code, why) = core.ingest_body(&body(1000, 0, 1), None);
        assert_eq!(code, 413, "{why}");
        assert!(why.contains("max_decoded_bytes"), "{why}");
        assert_eq!(dir.csv_bytes(), empty);
        assert_eq!(core.stats.refused_too_large_decoded.load(Relaxed), 1);
        assert_eq!(core.ingest_body(&body(10, 0, 1), None).0, 200);
    }

    #[test]
    fn budget_in_use_gives_503_then_the_resend_is_stored() {
        let dir = Dir::new("busy");
        let core = core(&dir, DEFAULT_MAX_ENTRIES, 1 << 20);
        let empty = dir.csv_bytes();
        let b = body(1000, 10, 1);
        let held = core.budget.try_reserve((1 << 20) - 10_000).unwrap();
        let (code, why) = core.ingest_body(&b, None);
        assert_eq!(code, 503, "{why}");
        assert_eq!(dir.csv_bytes(), empty);
        assert_eq!(core.stats.busy_decoded_budget.load(Relaxed), 1);
        drop(held);
        assert_eq!(core.ingest_body(&b, None).0, 200);
        assert_eq!(core.stats.samples_stored.load(Relaxed), 1000);
        assert_eq!(core.budget.in_use(), 0);
        // A malformed body is refused before anything is reserved.
        assert_eq!(core.ingest_body(&b[..b.len() - 1], None).0, 400);
        assert_eq!(core.budget.in_use(), 0);
    }

    /// The most a NodeReporter puts in one body (it budgets 32 bytes per
    /// sample, 64 plus the texts per log entry) fits the defaults with room.
    #[test]
    fn largest_node_reporter_bodies_fit_the_defaults() {
        for max_batch in [4usize << 20, 16 << 20] {
            let batches = encode_drained(&drained(max_batch / 8, 0), &SENDER, 1, max_batch);
            let first = &batches[0].body;
            let c = scan(first).unwrap();
            assert!(c.entries() <= (max_batch / 32) as u64, "{}", c.entries());
            assert!(c.entries() * 2 <= DEFAULT_MAX_ENTRIES);
            let est = estimate(&c, RedisMode::Cluster, Some(0), 1000).total();
            eprintln!(
                "max_batch_bytes {max_batch}: {} samples in {} bytes, decoded bound {est} bytes",
                c.samples,
                first.len()
            );
            assert!(est <= DEFAULT_MAX_DECODED_BYTES * 3 / 4, "{est}");
            let logs = encode_drained(&drained(0, max_batch / 32), &SENDER, 1, max_batch);
            let c = scan(&logs[0].body).unwrap();
            assert!(c.log_entries <= (max_batch / 64) as u64);
            assert!(
                estimate(&c, RedisMode::Cluster, Some(0), 1000).total()
                    <= DEFAULT_MAX_DECODED_BYTES / 2
            );
        }
    }

    #[test]
    fn defaults_match_the_python_signature() {
        assert_eq!(DEFAULT_MAX_ENTRIES, 1_048_576);
        assert_eq!(DEFAULT_MAX_DECODED_BYTES, 268_435_456);
    }

    #[test]
    fn saturates_on_absurd_counts() {
        let c = BodyCounts {
            samples: u64::MAX,
            log_text_bytes: u64::MAX,
            ..BodyCounts::default()
        };
        let e = estimate(&c, RedisMode::Cluster, Some(10), 1);
        assert_eq!(e.total(), u64::MAX);
    }
}
