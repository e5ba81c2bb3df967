//! Native (sparse, exponential) histogram series, as Prometheus defines
//! them: at schema `s` the bucket with index `i` holds the values in
//! `(2^((i-1)·2^-s), 2^(i·2^-s)]`, and values with `|v| <= zero_threshold`
//! go to the zero bucket.
//!
//! Memory bound: a series holds a fixed window of `max_buckets` atomic
//! counters (8 bytes each) over consecutive bucket indexes, allocated once
//! when the series is created; the hot path never allocates. When an
//! observation falls outside the window, the window moves (if the occupied
//! range plus the new index fits), else the resolution is halved (schema
//! − 1, merging bucket pairs, as prometheus/client_golang does) until it
//! fits. At schema −4 (the coarsest) an index still outside is clamped to
//! the window's edge: that only happens for a series spanning more than
//! `16·max_buckets` binary orders of magnitude.
//!
//! Writers hold the GIL (see `histogram`), so they are serialised: a plain
//! load + store per counter. Readers (scrapes, without the GIL) read the
//! counters lock-free; a restructuring (moving or merging the window) is
//! bracketed by a generation counter (a seqlock) and a reader that saw it
//! change reads again. The count is not stored: a reader derives it from
//! the buckets it read, so `count == zero_count + Σ buckets` in every
//! snapshot; the sum is exact but may lag by the observations in flight.

use pyo3::Python;
use std::sync::atomic::{fence, AtomicI32, AtomicU64, Ordering};

pub const MIN_SCHEMA: i32 = -4;
pub const MAX_SCHEMA: i32 = 8;
/// client_golang's default zero threshold (2^-128).
pub const DEFAULT_ZERO_THRESHOLD: f64 = 2.938735877055719e-39;
pub const DEFAULT_SCHEMA: i32 = 3;
/// 100 counters: 800 bytes per series, and at schema 3 a window of 12.5
/// binary orders of magnitude (1 ms to 5.8 s) before the resolution drops.
pub const DEFAULT_MAX_BUCKETS: usize = 100;
pub const MIN_MAX_BUCKETS: usize = 16;
pub const MAX_MAX_BUCKETS: usize = 4096;

/// Settings shared by every native series of a target.
pub struct NativeConfig {
    pub schema: i32,
    pub zero_threshold: f64,
    pub max_buckets: usize,
    /// `bounds[s]` for schema `s > 0`: the `2^s` fractions in `[0.5, 1)`
    /// that split one binary order of magnitude (client_golang's
    /// `nativeHistogramBounds`).
    bounds: Vec<Box<[f64]>>,
}

impl NativeConfig {
    pub fn new(schema: i32, zero_threshold: f64, max_buckets: usize) -> Result<Self, String> {
        if !(MIN_SCHEMA..=MAX_SCHEMA).contains(&schema) {
            return Err(format!(
                "native_schema must be between {MIN_SCHEMA} and {MAX_SCHEMA}, got {schema}"
            ));
        }
        if !(zero_threshold.is_finite() && zero_threshold >= 0.0) {
            return Err(format!(
                "native_zero_threshold must be a finite number >= 0, got {zero_threshold}"
            ));
        }
        if !(MIN_MAX_BUCKETS..=MAX_MAX_BUCKETS).contains(&max_buckets) {
            return Err(format!(
                "native_max_buckets must be between {MIN_MAX_BUCKETS} and {MAX_MAX_BUCKETS}, got {max_buckets}"
            ));
        }
        let bounds = (0..=MAX_SCHEMA)
            .map(|s| {
                let n = 1usize << s.max(0);
                (0..n).map(|j| (j as f64 / n as f64).exp2() / 2.0).collect()
            })
            .collect();
        Ok(Self {
            schema,
            zero_threshold,
            max_buckets,
            bounds,
        })
    }

    /// The bucket index of `v > 0` at `schema`, from the float's bits
    /// (frexp) and, for positive schemas, a search among `2^schema`
    /// fractions: no `log()`. Exactly client_golang's `findBucket`.
    #[inline]
    pub fn key(&self, v: f64, schema: i32) -> i32 {
        let (frac, exp) = frexp(v);
        if schema > 0 {
            let bounds = &self.bounds[schema as usize];
            // First fraction >= frac (bounds are sorted, bounds[0] = 0.5).
            let i = bounds.partition_point(|b| *b < frac) as i32;
            i + (exp - 1) * bounds.len() as i32
        } else {
            let key = if frac == 0.5 { exp - 1 } else { exp };
            let shift = -schema;
            (key + (1 << shift) - 1) >> shift
        }
    }
}

/// `v = frac · 2^exp` with `frac` in `[0.5, 1)`, for finite `v > 0`.
#[inline]
fn frexp(v: f64) -> (f64, i32) {
    let bits = v.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if biased == 0 {
        // Subnormal: scale into the normal range first.
        let (f, e) = frexp(v * f64::from_bits(0x43f0_0000_0000_0000)); // 2^64
        return (f, e - 64);
    }
    let frac = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (frac, biased - 1022)
}

/// Bucket index at schema `s - 1` of the bucket `key` at schema `s`.
#[inline]
fn halve(key: i32) -> i32 {
    (key + 1) >> 1
}

pub struct NativeHistogram {
    /// `counts[i]` is the bucket with index `offset + i`.
    counts: Box<[AtomicU64]>,
    offset: AtomicI32,
    schema: AtomicI32,
    /// Smallest and largest index with a count (writer's bookkeeping);
    /// `lo > hi` while empty.
    lo: AtomicI32,
    hi: AtomicI32,
    zero: AtomicU64,
    /// `f64` bits.
    sum: AtomicU64,
    /// Odd while the writer restructures the window.
    generation: AtomicU64,
}

/// What a scrape read from one native series.
pub struct NativeSnapshot {
    pub schema: i32,
    pub zero_count: u64,
    pub count: u64,
    pub sum: f64,
    /// (index of the first bucket, counts of consecutive buckets) per run
    /// of non-empty buckets.
    pub runs: Vec<(i32, Vec<u64>)>,
}

impl NativeHistogram {
    pub fn new(config: &NativeConfig) -> Self {
        Self {
            counts: (0..config.max_buckets).map(|_| AtomicU64::new(0)).collect(),
            offset: AtomicI32::new(0),
            schema: AtomicI32::new(config.schema),
            lo: AtomicI32::new(i32::MAX),
            hi: AtomicI32::new(i32::MIN),
            zero: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
            generation: AtomicU64::new(0),
        }
    }

    /// Heap bytes held by this series besides the struct itself.
    pub fn heap_bytes(&self) -> usize {
        self.counts.len() * std::mem::size_of::<AtomicU64>()
    }

    /// Records one observation; the token proves the GIL is held, which
    /// serialises all writers. Negative values and NaN count in the zero
    /// bucket (durations are never negative); `+Inf` in the highest bucket.
    #[inline]
    pub fn observe(&self, _py: Python<'_>, config: &NativeConfig, value: f64) {
        let sum = f64::from_bits(self.sum.load(Ordering::Relaxed)) + value;
        self.sum.store(sum.to_bits(), Ordering::Relaxed);
        // NaN too (not greater than anything).
        if value.partial_cmp(&config.zero_threshold) != Some(std::cmp::Ordering::Greater) {
            bump(&self.zero);
            return;
        }
        let schema = self.schema.load(Ordering::Relaxed);
        let key = config.key(value.min(f64::MAX), schema);
        let offset = self.offset.load(Ordering::Relaxed);
        let i = key.wrapping_sub(offset);
        if i >= 0 && (i as usize) < self.counts.len() {
            bump(&self.counts[i as usize]);
            if key < self.lo.load(Ordering::Relaxed) {
                self.lo.store(key, Ordering::Relaxed);
            }
            if key > self.hi.load(Ordering::Relaxed) {
                self.hi.store(key, Ordering::Relaxed);
            }
        } else {
            self.observe_outside(key);
        }
    }

    /// The window does not hold `key`: move it, or halve the resolution
    /// until the occupied range and `key` fit.
    #[cold]
    fn observe_outside(&self, mut key: i32) {
        let cap = self.counts.len() as i64;
        let mut schema = self.schema.load(Ordering::Relaxed);
        let mut offset = self.offset.load(Ordering::Relaxed);
        let (mut lo, mut hi) = (
            self.lo.load(Ordering::Relaxed),
            self.hi.load(Ordering::Relaxed),
        );
        let empty = lo > hi;
        let g = self.generation.load(Ordering::Relaxed);
        self.generation.store(g + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        if empty {
            lo = key;
            hi = key;
        } else {
            lo = lo.min(key);
            hi = hi.max(key);
            while i64::from(hi) - i64::from(lo) + 1 > cap && schema > MIN_SCHEMA {
                self.merge_pairs(offset);
                schema -= 1;
                offset = halve(offset);
                lo = halve(lo);
                hi = halve(hi);
                key = halve(key);
            }
        }
        let span = i64::from(hi) - i64::from(lo) + 1;
        if span > cap {
            // Coarsest schema and still too wide: clamp to the edge.
            let last = offset + cap as i32 - 1;
            key = key.clamp(offset, last);
            lo = lo.max(offset);
            hi = hi.min(last);
        } else {
            // Centre the occupied range in the window.
            let new_offset = (i64::from(lo) - (cap - span) / 2) as i32;
            self.shift(offset, new_offset);
            offset = new_offset;
        }
        bump(&self.counts[(key - offset) as usize]);
        self.offset.store(offset, Ordering::Relaxed);
        self.schema.store(schema, Ordering::Relaxed);
        self.lo.store(lo, Ordering::Relaxed);
        self.hi.store(hi, Ordering::Relaxed);
        self.generation.store(g + 2, Ordering::Release);
    }

    /// Merges bucket pairs in place: the bucket at `offset + i` goes to
    /// index `halve(offset + i) - halve(offset) <= i`, so going up, every
    /// destination has already been read.
    fn merge_pairs(&self, offset: i32) {
        let base = halve(offset);
        for (i, cell) in self.counts.iter().enumerate() {
            let n = cell.load(Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            cell.store(0, Ordering::Relaxed);
            let j = (halve(offset + i as i32) - base) as usize;
            let dst = &self.counts[j];
            dst.store(dst.load(Ordering::Relaxed) + n, Ordering::Relaxed);
        }
    }

    /// Moves the counts so index `k` is at `k - to` instead of `k - from`.
    fn shift(&self, from: i32, to: i32) {
        let cap = self.counts.len() as i64;
        let delta = i64::from(from) - i64::from(to);
        if delta == 0 {
            return;
        }
        let mut mv = |i: i64| {
            let n = self.counts[i as usize].swap(0, Ordering::Relaxed);
            let j = i + delta;
            if n != 0 && (0..cap).contains(&j) {
                self.counts[j as usize].store(n, Ordering::Relaxed);
            }
        };
        if delta > 0 {
            (0..cap).rev().for_each(&mut mv);
        } else {
            (0..cap).for_each(&mut mv);
        }
    }

    /// Reads the series without the GIL or a lock (retrying while a
    /// restructuring is under way, see the module doc).
    pub fn snapshot(&self, scratch: &mut Vec<u64>) -> NativeSnapshot {
        loop {
            let g1 = self.generation.load(Ordering::Acquire);
            if g1 % 2 == 1 {
                // The writer (holding the GIL) is moving the window: a
                // few hundred stores at most, unless it was preempted.
                std::thread::yield_now();
                continue;
            }
            let schema = self.schema.load(Ordering::Relaxed);
            let offset = self.offset.load(Ordering::Relaxed);
            scratch.clear();
            scratch.extend(self.counts.iter().map(|c| c.load(Ordering::Relaxed)));
            let zero = self.zero.load(Ordering::Relaxed);
            let sum = f64::from_bits(self.sum.load(Ordering::Relaxed));
            fence(Ordering::Acquire);
            if self.generation.load(Ordering::Relaxed) != g1 {
                continue;
            }
            let mut runs: Vec<(i32, Vec<u64>)> = Vec::new();
            let mut count = zero;
            let mut prev_nonzero = false;
            for (i, &n) in scratch.iter().enumerate() {
                if n == 0 {
                    prev_nonzero = false;
                    continue;
                }
                count += n;
                match runs.last_mut() {
                    Some((_, run)) if prev_nonzero => run.push(n),
                    _ => runs.push((offset + i as i32, vec![n])),
                }
                prev_nonzero = true;
            }
            return NativeSnapshot {
                schema,
                zero_count: zero,
                count,
                sum,
                runs,
            };
        }
    }
}

#[inline]
fn bump(cell: &AtomicU64) {
    cell.store(cell.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema's definition: the smallest `i` with `v <= base^i`,
    /// computed in exact arithmetic on the float's exponent and bounds.
    fn reference_key(v: f64, schema: i32) -> i32 {
        // base^i = 2^(i / 2^schema); search i around log2(v) * 2^schema.
        let scale = (schema as f64).exp2();
        let guess = (v.log2() * scale).ceil() as i32;
        let upper = |i: i32| -> f64 {
            let e = i as f64 / scale;
            let whole = e.floor();
            let frac = e - whole;
            // 2^frac in [1,2) the same way the table is built, times 2^whole.
            let f = (frac).exp2();
            f * whole.exp2()
        };
        let mut i = guess - 2;
        while v > upper(i) {
            i += 1;
        }
        i
    }

    #[test]
    fn frexp_matches_definition() {
        for v in [
            1.0,
            0.5,
            0.75,
            3.0,
            1e-310,
            f64::MIN_POSITIVE,
            5e-324,
            f64::MAX,
        ] {
            let (f, e) = frexp(v);
            assert!((0.5..1.0).contains(&f), "{v}: {f}");
            let mut back = f;
            for _ in 0..e.unsigned_abs() {
                back = if e > 0 { back * 2.0 } else { back / 2.0 };
            }
            assert_eq!(back, v);
        }
    }

    #[test]
    fn keys_on_boundaries_and_between() {
        let c = NativeConfig::new(3, 0.0, 100).unwrap();
        // Boundaries are inclusive upper bounds: 1 is the top of bucket 0.
        assert_eq!(c.key(1.0, 3), 0);
        assert_eq!(c.key(1.0000001, 3), 1);
        assert_eq!(c.key(2.0, 3), 8);
        assert_eq!(c.key(0.5, 3), -8);
        assert_eq!(c.key(2.0, 0), 1);
        assert_eq!(c.key(2.0000001, 0), 2);
        assert_eq!(c.key(4.0, -1), 1);
        assert_eq!(c.key(4.1, -1), 2);
        assert_eq!(c.key(1.0, -2), 0);
        assert_eq!(c.key(16.0, -2), 1);
        assert_eq!(c.key(16.5, -2), 2);
        // Subnormals and extremes.
        assert_eq!(c.key(5e-324, 0), -1074);
        assert_eq!(c.key(f64::MAX, 0), 1024);
    }

    #[test]
    fn keys_match_reference_for_many_values() {
        let c = NativeConfig::new(3, 0.0, 100).unwrap();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Random positive normal floats over the whole range.
            let v = f64::from_bits(x >> 2 | 0x0010_0000_0000_0000);
            if !v.is_finite() || v <= 0.0 {
                continue;
            }
            for s in MIN_SCHEMA..=MAX_SCHEMA {
                assert_eq!(c.key(v, s), reference_key(v, s), "v={v} s={s}");
            }
        }
    }

    #[test]
    fn values_on_boundaries_are_in_the_lower_bucket() {
        let c = NativeConfig::new(3, 0.0, 100).unwrap();
        for s in MIN_SCHEMA..=MAX_SCHEMA {
            for i in [-8000i32, -1074, -200, -17, -1, 0, 1, 5, 63, 700, 1000] {
                // The boundary 2^(i/2^s) as the table spells it.
                let n = 1i32 << s.max(0);
                let (whole, j) = (i.div_euclid(n), i.rem_euclid(n));
                let (bound, key) = if s > 0 {
                    (c.bounds[s as usize][j as usize] * 2f64.powi(whole + 1), i)
                } else {
                    // Powers of two: boundary i is 2^(i·2^-s).
                    let e = i64::from(i) << -s;
                    if !(-1074..=1023).contains(&e) {
                        continue;
                    }
                    (2f64.powi(e as i32), i)
                };
                if bound == 0.0 || !bound.is_finite() {
                    continue;
                }
                assert_eq!(c.key(bound, s), key, "bound {bound:e} s={s}");
                let above = f64::from_bits(bound.to_bits() + 1);
                assert_eq!(c.key(above, s), key + 1, "above {bound:e} s={s}");
            }
        }
    }

    #[test]
    fn subnormals_match_reference() {
        let c = NativeConfig::new(3, 0.0, 100).unwrap();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..5_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = f64::from_bits((x >> 12).max(1)); // subnormal
            assert!(v > 0.0 && v < f64::MIN_POSITIVE);
            for s in MIN_SCHEMA..=0 {
                assert_eq!(c.key(v, s), reference_key(v, s), "v={v:e} s={s}");
            }
            // Positive schemas: the same index as the normal value 2^64 times
            // larger, shifted by 64 powers of two.
            for s in 1..=MAX_SCHEMA {
                let scaled = c.key(v * 2f64.powi(64), s);
                assert_eq!(c.key(v, s), scaled - (64 << s), "v={v:e} s={s}");
            }
        }
    }

    #[test]
    fn halving_keys_is_lowering_the_schema() {
        let c = NativeConfig::new(3, 0.0, 100).unwrap();
        for v in [1e-9, 0.003, 0.1, 1.0, 1.5, 7.0, 123456.0] {
            for s in (MIN_SCHEMA + 1)..=MAX_SCHEMA {
                assert_eq!(halve(c.key(v, s)), c.key(v, s - 1), "v={v} s={s}");
            }
        }
    }

    fn observe_all(h: &NativeHistogram, c: &NativeConfig, values: &[f64]) {
        Python::with_gil(|py| {
            for v in values {
                h.observe(py, c, *v);
            }
        });
    }

    #[test]
    fn counts_land_in_their_buckets() {
        pyo3::prepare_freethreaded_python();
        let c = NativeConfig::new(3, 1e-9, 100).unwrap();
        let h = NativeHistogram::new(&c);
        observe_all(&h, &c, &[1.0, 1.0, 2.0, 0.0, 1e-12, 1.05]);
        let s = h.snapshot(&mut Vec::new());
        assert_eq!(s.schema, 3);
        assert_eq!(s.zero_count, 2);
        assert_eq!(s.count, 6);
        assert_eq!(s.runs, vec![(0, vec![2, 1]), (8, vec![1])]);
        assert!((s.sum - 5.05).abs() < 1e-9);
    }

    #[test]
    fn resolution_drops_when_the_window_is_too_narrow() {
        pyo3::prepare_freethreaded_python();
        let c = NativeConfig::new(3, 0.0, 16).unwrap();
        let h = NativeHistogram::new(&c);
        let values: Vec<f64> = (0..200).map(|i| 1e-3 * 1.07f64.powi(i)).collect();
        observe_all(&h, &c, &values);
        let s = h.snapshot(&mut Vec::new());
        assert!(s.schema < 3);
        assert_eq!(s.count, 200);
        // Every value is in the bucket its key names at the final schema.
        let mut expected = std::collections::BTreeMap::new();
        for v in &values {
            *expected.entry(c.key(*v, s.schema)).or_insert(0u64) += 1;
        }
        let mut got = std::collections::BTreeMap::new();
        for (start, run) in &s.runs {
            for (i, n) in run.iter().enumerate() {
                got.insert(start + i as i32, *n);
            }
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn extremes_are_clamped_at_the_coarsest_schema() {
        pyo3::prepare_freethreaded_python();
        let c = NativeConfig::new(0, 0.0, 16).unwrap();
        let h = NativeHistogram::new(&c);
        observe_all(
            &h,
            &c,
            &[5e-324, f64::MAX, f64::INFINITY, 1.0, f64::NAN, -1.0],
        );
        let s = h.snapshot(&mut Vec::new());
        assert_eq!(s.schema, MIN_SCHEMA);
        assert_eq!(s.count, 6);
        assert_eq!(s.zero_count, 2);
    }
}
