//! Native (sparse, exponential) histogram series, as Prometheus defines
//! them: at schema `s` the bucket with index `i` holds the values in
//! `(2^((i-1)·2^-s), 2^(i·2^-s)]`, and values with `|v| <= zero_threshold`
//! go to the zero bucket.
//!
//! Memory bound: a series holds a fixed window of `max_buckets` 32-bit
//! atomic counters over consecutive bucket indexes, allocated once when the
//! series is created (at the defaults: 100 counters, 400 bytes, plus a
//! 64-byte header; the target's classic buckets and labels come on top,
//! under 1 KB per series in all). A counter never holds more than 2^31: the
//! observation that would take it there moves 2^31 into a side array of
//! 64-bit counters (8 bytes per bucket), allocated the first time any bucket
//! of the series reaches 2^31 observations and kept until the series is
//! dropped, so counts stay exact forever. So the bound is
//! `4·max_buckets + 64` bytes, and `12·max_buckets + 64` once a single
//! bucket has seen two billion observations. Apart from that one
//! allocation, observing never allocates.
//!
//! When an observation falls outside the window, the window moves (if the
//! occupied range plus the new index fits), else the resolution is halved
//! (schema − 1, merging bucket pairs, as prometheus/client_golang does)
//! until it fits. At schema −4 (the coarsest) an index still outside is
//! clamped to the window's edge: that only happens for a series spanning
//! more than `16·max_buckets` binary orders of magnitude.
//!
//! Writers hold the GIL (see `histogram`), so they are serialised: a plain
//! load + store per counter. Readers (scrapes, without the GIL) read the
//! counters lock-free; a restructuring (moving or merging the window, or
//! carrying 2^31 out of a counter) is bracketed by a generation counter (a
//! seqlock) and a reader that saw it change reads again. The count is not
//! stored: a reader derives it from the buckets it read, so
//! `count == zero_count + Σ buckets` in every snapshot. The sum is not kept
//! here: the series' classic sum is the sum of the same observations.

use pyo3::Python;
use std::sync::atomic::{fence, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;

pub const MIN_SCHEMA: i32 = -4;
pub const MAX_SCHEMA: i32 = 8;
/// client_golang's default zero threshold (2^-128).
pub const DEFAULT_ZERO_THRESHOLD: f64 = 2.938735877055719e-39;
pub const DEFAULT_SCHEMA: i32 = 3;
/// 100 counters: 400 bytes per series, and at schema 3 a window of 12.5
/// binary orders of magnitude (1 ms to 5.8 s) before the resolution drops.
pub const DEFAULT_MAX_BUCKETS: usize = 100;
pub const MIN_MAX_BUCKETS: usize = 16;
pub const MAX_MAX_BUCKETS: usize = 4096;

/// A 32-bit counter reaching this moves it into the 64-bit side array.
const CARRY: u32 = 1 << 31;

const MANTISSA_BITS: u32 = 52;
const MANTISSA: u64 = (1 << MANTISSA_BITS) - 1;
/// A cell's boundary field when the cell holds no boundary: greater than
/// every mantissa.
const NO_BOUNDARY: u64 = 1 << MANTISSA_BITS;

/// Settings shared by every native series of a target.
pub struct NativeConfig {
    pub schema: i32,
    pub zero_threshold: f64,
    pub max_buckets: usize,
    /// For each schema `s > 0` (from `cells[first_cell(s)]` on): the `2^s`
    /// boundaries in `[0.5, 1)` that split one binary order of magnitude
    /// (client_golang's `nativeHistogramBounds`, `2^(j/2^s)/2`), as a
    /// lookup table indexed by the top `s + 1` mantissa bits of a value.
    /// Boundaries are more than `ln 2/2^s` apart on the mantissa's `[1, 2)`
    /// scale and a cell is `1/2^(s+1)` wide, so a cell holds at most one
    /// boundary: each cell packs the number of boundaries below the cell
    /// (bits 53..) and the mantissa of the boundary inside it, if any (bits
    /// 0..53, `NO_BOUNDARY` if none). One comparison then finds the bucket:
    /// no search, so no branch for random values to mispredict. One array
    /// of a power-of-two length (8 KB per target) so that indexing needs no
    /// bounds check.
    cells: Box<[u64; CELLS]>,
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
        let mut cells = Box::new([0; CELLS]);
        for s in 1..=MAX_SCHEMA {
            let table = cells_for(s);
            cells[first_cell(s)..][..table.len()].copy_from_slice(&table);
        }
        Ok(Self {
            schema,
            zero_threshold,
            max_buckets,
            cells,
        })
    }

    /// The bucket index of finite `v > 0` at `schema`, from the float's
    /// bits: no `log()`, no search. Exactly client_golang's `findBucket`.
    #[inline]
    pub fn key(&self, v: f64, schema: i32) -> i32 {
        let (mantissa, exp) = mantissa_exp(v);
        if schema > 0 {
            let at =
                first_cell(schema) + (mantissa >> (MANTISSA_BITS - 1 - schema as u32)) as usize;
            let cell = self.cells[at % CELLS];
            // Boundaries below `frac = (1 + mantissa/2^52)/2`: those below
            // the cell, plus the one in it if it is below (the comparison
            // is exact: both have the exponent of [0.5, 1)).
            let i = (cell >> (MANTISSA_BITS + 1)) as i32
                + i32::from(mantissa > cell & (NO_BOUNDARY | MANTISSA));
            i + ((exp - 1) << schema)
        } else {
            // `frac == 0.5` is the top of the bucket below.
            let key = exp - i32::from(mantissa == 0);
            let shift = -schema;
            (key + (1 << shift) - 1) >> shift
        }
    }
}

/// The tables of schemas 1..=8 hold 2^2 + 2^3 + ... + 2^9 = 1,020 cells.
const CELLS: usize = 1 << (MAX_SCHEMA + 2);

/// Where the table of schema `s > 0` starts in `NativeConfig::cells`.
#[inline]
fn first_cell(s: i32) -> usize {
    (1usize << (s + 1)) - 4
}

/// client_golang's `nativeHistogramBounds[schema]`: `2^(j/2^s)/2`.
fn bounds(schema: i32) -> Vec<f64> {
    let n = 1usize << schema.max(0);
    (0..n).map(|j| (j as f64 / n as f64).exp2() / 2.0).collect()
}

/// The lookup table of `NativeConfig::cells` for `schema > 0`.
fn cells_for(schema: i32) -> Vec<u64> {
    let shift = MANTISSA_BITS - 1 - schema as u32;
    let mantissas: Vec<u64> = bounds(schema)
        .iter()
        .map(|b| {
            debug_assert!((0.5..1.0).contains(b));
            b.to_bits() & MANTISSA
        })
        .collect();
    (0..1u64 << (schema + 1))
        .map(|c| {
            let (lo, hi) = (c << shift, (c + 1) << shift);
            // The mantissas are sorted: those below the cell, then the one
            // in it, if any.
            let below = mantissas.partition_point(|m| *m < lo);
            let mut inside = mantissas[below..].iter().take_while(|m| **m < hi);
            let boundary = inside.next().copied().unwrap_or(NO_BOUNDARY);
            assert!(inside.next().is_none(), "two boundaries in one cell");
            (below as u64) << (MANTISSA_BITS + 1) | boundary
        })
        .collect()
}

/// `v = (1 + mantissa/2^52)/2 · 2^exp` for finite `v > 0` (frexp, with
/// the fraction as its 52 mantissa bits).
#[inline]
fn mantissa_exp(v: f64) -> (u64, i32) {
    let bits = v.to_bits();
    let biased = (bits >> MANTISSA_BITS) as i32 & 0x7ff;
    if biased == 0 {
        return subnormal_mantissa_exp(v);
    }
    (bits & MANTISSA, biased - 1022)
}

#[cold]
fn subnormal_mantissa_exp(v: f64) -> (u64, i32) {
    // Scale into the normal range first.
    let (m, e) = mantissa_exp(v * f64::from_bits(0x43f0_0000_0000_0000)); // 2^64
    (m, e - 64)
}

/// Bucket index at schema `s - 1` of the bucket `key` at schema `s`.
#[inline]
fn halve(key: i32) -> i32 {
    (key + 1) >> 1
}

pub struct NativeHistogram {
    /// `counts[i] + carried[i]` is the bucket with index `offset + i`;
    /// `counts[i] < 2^31`.
    counts: Box<[AtomicU32]>,
    /// Multiples of 2^31 carried out of `counts`, allocated the first
    /// time a counter reaches 2^31 (see the module doc).
    carried: OnceLock<Box<[AtomicU64]>>,
    offset: AtomicI32,
    schema: AtomicI32,
    zero: AtomicU64,
    /// Odd while the writer restructures the window.
    generation: AtomicU64,
}

/// What a scrape read from one native series.
pub struct NativeSnapshot {
    pub schema: i32,
    pub zero_count: u64,
    pub count: u64,
    /// (index of the first bucket, counts of consecutive buckets) per run
    /// of non-empty buckets.
    pub runs: Vec<(i32, Vec<u64>)>,
}

impl NativeHistogram {
    pub fn new(config: &NativeConfig) -> Self {
        Self {
            counts: (0..config.max_buckets).map(|_| AtomicU32::new(0)).collect(),
            carried: OnceLock::new(),
            offset: AtomicI32::new(0),
            schema: AtomicI32::new(config.schema),
            zero: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        }
    }

    /// Heap bytes held by this series besides the struct itself.
    pub fn heap_bytes(&self) -> usize {
        self.counts.len() * std::mem::size_of::<AtomicU32>()
            + self
                .carried
                .get()
                .map_or(0, |c| c.len() * std::mem::size_of::<AtomicU64>())
    }

    /// Records one observation; the token proves the GIL is held, which
    /// serialises all writers. Negative values and NaN count in the zero
    /// bucket (durations are never negative); `+Inf` in the highest bucket.
    #[inline]
    pub fn observe(&self, _py: Python<'_>, config: &NativeConfig, value: f64) {
        // NaN too (not greater than anything).
        if value.partial_cmp(&config.zero_threshold) != Some(std::cmp::Ordering::Greater) {
            self.zero
                .store(self.zero.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            return;
        }
        let schema = self.schema.load(Ordering::Relaxed);
        let key = config.key(value.min(f64::MAX), schema);
        let i = key.wrapping_sub(self.offset.load(Ordering::Relaxed));
        match self.counts.get(i as u32 as usize) {
            Some(cell) => {
                let n = cell.load(Ordering::Relaxed) + 1;
                if n < CARRY {
                    cell.store(n, Ordering::Relaxed);
                } else {
                    self.carry(i as usize);
                }
            }
            None => self.observe_outside(key),
        }
    }

    /// Counter `i` is at 2^31 - 1 and gets one more: it goes back to 0 and
    /// its side counter gains 2^31, together as readers see them.
    #[cold]
    fn carry(&self, i: usize) {
        let g = self.begin();
        self.set(i, self.total(i) + 1);
        self.end(g);
    }

    /// Marks a restructuring under way (see `snapshot`).
    fn begin(&self) -> u64 {
        let g = self.generation.load(Ordering::Relaxed);
        self.generation.store(g + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        g
    }

    fn end(&self, g: u64) {
        self.generation.store(g + 2, Ordering::Release);
    }

    /// Bucket `i` of the window (writer only).
    fn total(&self, i: usize) -> u64 {
        u64::from(self.counts[i].load(Ordering::Relaxed))
            + self
                .carried
                .get()
                .map_or(0, |c| c[i].load(Ordering::Relaxed))
    }

    /// Sets bucket `i` of the window to `n` (writer only, inside
    /// `begin`/`end`), splitting it between the counter and the side array.
    fn set(&self, i: usize, n: u64) {
        let low = n % u64::from(CARRY);
        let high = n - low;
        if high != 0 {
            let carried = self
                .carried
                .get_or_init(|| (0..self.counts.len()).map(|_| AtomicU64::new(0)).collect());
            carried[i].store(high, Ordering::Relaxed);
        } else if let Some(carried) = self.carried.get() {
            carried[i].store(0, Ordering::Relaxed);
        }
        self.counts[i].store(low as u32, Ordering::Relaxed);
    }

    /// The window does not hold `key`: move it, or halve the resolution
    /// until the occupied range and `key` fit.
    #[cold]
    fn observe_outside(&self, mut key: i32) {
        let cap = self.counts.len() as i64;
        let mut schema = self.schema.load(Ordering::Relaxed);
        let mut offset = self.offset.load(Ordering::Relaxed);
        // The occupied range, from the counters (they are only written
        // under the GIL, which this writer holds).
        let occupied = |i: &usize| self.total(*i) != 0;
        let first = (0..self.counts.len()).find(occupied);
        let last = (0..self.counts.len()).rev().find(occupied);
        let g = self.begin();
        let (mut lo, mut hi) = match (first, last) {
            (Some(f), Some(l)) => ((offset + f as i32).min(key), (offset + l as i32).max(key)),
            _ => (key, key),
        };
        while i64::from(hi) - i64::from(lo) + 1 > cap && schema > MIN_SCHEMA {
            self.merge_pairs(offset);
            schema -= 1;
            offset = halve(offset);
            lo = halve(lo);
            hi = halve(hi);
            key = halve(key);
        }
        let span = i64::from(hi) - i64::from(lo) + 1;
        if span > cap {
            // Coarsest schema and still too wide: clamp to the edge.
            key = key.clamp(offset, offset + cap as i32 - 1);
        } else {
            // Centre the occupied range in the window.
            let new_offset = (i64::from(lo) - (cap - span) / 2) as i32;
            self.shift(offset, new_offset);
            offset = new_offset;
        }
        let i = (key - offset) as usize;
        self.set(i, self.total(i) + 1);
        self.offset.store(offset, Ordering::Relaxed);
        self.schema.store(schema, Ordering::Relaxed);
        self.end(g);
    }

    /// Merges bucket pairs in place: the bucket at `offset + i` goes to
    /// index `halve(offset + i) - halve(offset) <= i`, so going up, every
    /// destination has already been read.
    fn merge_pairs(&self, offset: i32) {
        let base = halve(offset);
        for i in 0..self.counts.len() {
            let n = self.total(i);
            if n == 0 {
                continue;
            }
            self.set(i, 0);
            let j = (halve(offset + i as i32) - base) as usize;
            self.set(j, self.total(j) + n);
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
            let n = self.total(i as usize);
            if n == 0 {
                return;
            }
            self.set(i as usize, 0);
            let j = i + delta;
            if (0..cap).contains(&j) {
                self.set(j as usize, n);
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
            scratch.extend(
                self.counts
                    .iter()
                    .map(|c| u64::from(c.load(Ordering::Relaxed))),
            );
            if let Some(carried) = self.carried.get() {
                for (n, c) in scratch.iter_mut().zip(carried.iter()) {
                    *n += c.load(Ordering::Relaxed);
                }
            }
            let zero = self.zero.load(Ordering::Relaxed);
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
                runs,
            };
        }
    }
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
    fn mantissa_exp_matches_definition() {
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
            let (m, e) = mantissa_exp(v);
            let f = (1.0 + m as f64 / (1u64 << 52) as f64) / 2.0;
            assert!((0.5..1.0).contains(&f), "{v}: {f}");
            let mut back = f;
            for _ in 0..e.unsigned_abs() {
                back = if e > 0 { back * 2.0 } else { back / 2.0 };
            }
            assert_eq!(back, v);
        }
    }

    /// The search the lookup table replaces (client_golang's `findBucket`
    /// for positive schemas, over the same fractions).
    fn searched_key(v: f64, schema: i32) -> i32 {
        let (m, exp) = mantissa_exp(v);
        let frac = f64::from_bits(m | (1022 << 52));
        let b = bounds(schema);
        b.partition_point(|x| *x < frac) as i32 + (exp - 1) * b.len() as i32
    }

    #[test]
    fn lookup_table_equals_the_search_around_every_boundary() {
        let c = NativeConfig::new(3, 0.0, 100).unwrap();
        for s in 1..=MAX_SCHEMA {
            let shift = MANTISSA_BITS - 1 - s as u32;
            let mut mantissas: Vec<u64> = vec![0, MANTISSA];
            // Every boundary, its neighbours, and every cell's edges.
            for b in bounds(s) {
                let m = b.to_bits() & MANTISSA;
                mantissas.extend([m.saturating_sub(1), m, (m + 1).min(MANTISSA)]);
            }
            for cell in 0..1u64 << (s + 1) {
                let lo = cell << shift;
                mantissas.extend([lo, lo.saturating_sub(1), lo + 1]);
            }
            for m in mantissas {
                for exp_bits in [1u64, 1020, 1022, 1023, 1024, 2046] {
                    let v = f64::from_bits(exp_bits << 52 | m);
                    assert_eq!(c.key(v, s), searched_key(v, s), "v={v:e} s={s}");
                }
            }
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
                    (bounds(s)[j as usize] * 2f64.powi(whole + 1), i)
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
        Python::attach(|py| {
            for v in values {
                h.observe(py, c, *v);
            }
        });
    }

    #[test]
    fn counts_land_in_their_buckets() {
        Python::initialize();
        let c = NativeConfig::new(3, 1e-9, 100).unwrap();
        let h = NativeHistogram::new(&c);
        observe_all(&h, &c, &[1.0, 1.0, 2.0, 0.0, 1e-12, 1.05]);
        let s = h.snapshot(&mut Vec::new());
        assert_eq!(s.schema, 3);
        assert_eq!(s.zero_count, 2);
        assert_eq!(s.count, 6);
        assert_eq!(s.runs, vec![(0, vec![2, 1]), (8, vec![1])]);
    }

    #[test]
    fn resolution_drops_when_the_window_is_too_narrow() {
        Python::initialize();
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
        assert_eq!(buckets(&s), expected);
    }

    #[test]
    fn extremes_are_clamped_at_the_coarsest_schema() {
        Python::initialize();
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

    /// Buckets as `{index: count}` from a snapshot.
    fn buckets(s: &NativeSnapshot) -> std::collections::BTreeMap<i32, u64> {
        let mut got = std::collections::BTreeMap::new();
        for (start, run) in &s.runs {
            for (i, n) in run.iter().enumerate() {
                got.insert(start + i as i32, *n);
            }
        }
        got
    }

    #[test]
    fn counts_stay_exact_past_the_32_bit_counters() {
        Python::initialize();
        let c = NativeConfig::new(3, 0.0, 16).unwrap();
        let h = NativeHistogram::new(&c);
        observe_all(&h, &c, &[1.0, 1.05]);
        assert!(h.carried.get().is_none());
        let (k1, k2) = (c.key(1.0, 3), c.key(1.05, 3));
        let i1 = (k1 - h.offset.load(Ordering::Relaxed)) as usize;
        let i2 = (k2 - h.offset.load(Ordering::Relaxed)) as usize;
        // As if 2^31 - 1 and 2^31 - 2 observations had been made.
        h.counts[i1].store(CARRY - 1, Ordering::Relaxed);
        h.counts[i2].store(CARRY - 2, Ordering::Relaxed);
        let small = u64::from(CARRY);
        observe_all(&h, &c, &[1.0, 1.05, 1.05]);
        // Both reached 2^31 (the first carried, the second carried at its
        // last observation) and the counters went back below 2^31.
        assert!(h.carried.get().is_some());
        assert_eq!(h.heap_bytes(), 16 * 4 + 16 * 8);
        assert!(h.counts.iter().all(|n| n.load(Ordering::Relaxed) < CARRY));
        let s = h.snapshot(&mut Vec::new());
        assert_eq!(buckets(&s), [(k1, small), (k2, small)].into());
        assert_eq!(s.count, 2 * small);
        // A window move and resolution drops carry the side counts along,
        // merging the two into one bucket of 2^32 (over u32).
        let far: Vec<f64> = (0..60).map(|i| 1.5f64.powi(i)).collect();
        observe_all(&h, &c, &far);
        let s = h.snapshot(&mut Vec::new());
        assert!(s.schema < 3);
        assert_eq!(s.count, 2 * small + 60);
        let mut expected = std::collections::BTreeMap::new();
        *expected.entry(c.key(1.0, s.schema)).or_insert(0) += small;
        *expected.entry(c.key(1.05, s.schema)).or_insert(0) += small;
        for v in &far {
            *expected.entry(c.key(*v, s.schema)).or_insert(0u64) += 1;
        }
        assert_eq!(buckets(&s), expected);
        assert!(h.counts.iter().all(|n| n.load(Ordering::Relaxed) < CARRY));
    }

    #[test]
    fn a_series_at_the_defaults_holds_464_bytes() {
        // The bound the module doc states: 64 bytes of header and 4 per
        // counter, until a bucket passes 2^31 observations.
        let c =
            NativeConfig::new(DEFAULT_SCHEMA, DEFAULT_ZERO_THRESHOLD, DEFAULT_MAX_BUCKETS).unwrap();
        let h = NativeHistogram::new(&c);
        assert!(std::mem::size_of::<NativeHistogram>() <= 64);
        assert_eq!(h.heap_bytes(), 400);
    }
}
