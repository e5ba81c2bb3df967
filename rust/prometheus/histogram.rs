//! Histogram series: one atomic counter per bucket plus an atomic sum.
//!
//! Buckets are stored non-cumulative (an observation touches exactly one
//! counter) and the count is not stored at all: a scrape derives it, and
//! the cumulative bucket values, from the counters it read. So whatever
//! moment a scrape lands on, `_count` equals the `+Inf` bucket and the
//! buckets are monotonic; only `_sum` may lag by the observations in
//! flight.
//!
//! Writers hold the GIL (the `Python` token is the proof), so they are
//! serialised and a relaxed load + store suffices: no lock-prefixed
//! read-modify-write on the hot path. Readers (the scrape thread) never
//! see a torn value because every cell is an `AtomicU64`.

use super::native::{NativeConfig, NativeHistogram};
use pyo3::exceptions::PyValueError;
use pyo3::PyResult;
use pyo3::Python;
use std::sync::atomic::{AtomicU64, Ordering};

/// EDGELESS bucket bounds (seconds); `+Inf` is implicit.
pub const EDGELESS_BUCKETS: [f64; 10] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];

/// Upper bounds per series are a memory cost for every series; this keeps
/// a typo (say, `range(100000)`) from making a node run out of memory.
pub const MAX_BUCKETS: usize = 128;

/// Validated, strictly increasing finite upper bounds (without `+Inf`).
#[derive(Clone, Debug, PartialEq)]
pub struct Buckets(Box<[f64]>);

impl Buckets {
    pub fn edgeless() -> Self {
        Self(EDGELESS_BUCKETS.into())
    }

    /// Accepts finite, strictly increasing bounds, optionally ending in
    /// `+Inf` (dropped: it is always there).
    pub fn new(mut bounds: Vec<f64>) -> PyResult<Self> {
        if bounds.last() == Some(&f64::INFINITY) {
            bounds.pop();
        }
        if bounds.is_empty() {
            return Err(PyValueError::new_err(
                "buckets must hold at least one finite upper bound",
            ));
        }
        if bounds.len() > MAX_BUCKETS {
            return Err(PyValueError::new_err(format!(
                "at most {MAX_BUCKETS} buckets are allowed, got {}",
                bounds.len()
            )));
        }
        if let Some(bad) = bounds.iter().find(|b| !b.is_finite()) {
            return Err(PyValueError::new_err(format!(
                "bucket bounds must be finite numbers (+Inf only last), got {bad}"
            )));
        }
        // Durations are never negative, and OpenMetrics forbids `_sum` on
        // a histogram with a negative bucket: refuse them here.
        if let Some(bad) = bounds.iter().find(|b| **b < 0.0) {
            return Err(PyValueError::new_err(format!(
                "bucket bounds must not be negative (durations never are), got {bad}"
            )));
        }
        if let Some(w) = bounds.windows(2).find(|w| w[0] >= w[1]) {
            return Err(PyValueError::new_err(format!(
                "bucket bounds must be strictly increasing, got {} before {}",
                w[0], w[1]
            )));
        }
        Ok(Self(bounds.into()))
    }

    pub fn bounds(&self) -> &[f64] {
        &self.0
    }

    /// Index of the bucket `value` falls in (`len()` is `+Inf`); a bound is
    /// inclusive (`le`).
    #[inline]
    fn index(&self, value: f64) -> usize {
        if self.0.len() <= 16 {
            self.0.iter().take_while(|b| value > **b).count()
        } else {
            self.0.partition_point(|b| value > *b)
        }
    }
}

/// One histogram series.
pub struct Histogram {
    /// Non-cumulative counts; the last one is `+Inf`.
    counts: Box<[AtomicU64]>,
    /// `f64` bits.
    sum: AtomicU64,
    /// The native buckets, when the target has them on (boxed: 8 bytes
    /// per series when off).
    native: Option<Box<NativeHistogram>>,
}

/// What a scrape read from one series, already cumulative.
pub struct HistogramSnapshot<'a> {
    pub cumulative: &'a [u64],
    pub sum: f64,
}

impl Histogram {
    pub fn new(buckets: &Buckets, native: Option<&NativeConfig>) -> Self {
        Self {
            counts: (0..=buckets.0.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
            native: native.map(|c| Box::new(NativeHistogram::new(c))),
        }
    }

    pub fn native(&self) -> Option<&NativeHistogram> {
        self.native.as_deref()
    }

    /// Records one observation. The token proves the GIL is held, which
    /// serialises all writers (see the module doc).
    #[inline]
    pub fn observe(
        &self,
        py: Python<'_>,
        buckets: &Buckets,
        native: Option<&NativeConfig>,
        value: f64,
    ) {
        if let (Some(h), Some(config)) = (&self.native, native) {
            h.observe(py, config, value);
        }
        let cell = &self.counts[buckets.index(value)];
        cell.store(cell.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        let sum = f64::from_bits(self.sum.load(Ordering::Relaxed)) + value;
        self.sum.store(sum.to_bits(), Ordering::Relaxed);
    }

    /// Reads the series into `scratch` (reused across series, so a scrape
    /// does not allocate per series). Safe without the GIL.
    pub fn snapshot<'a>(&self, scratch: &'a mut Vec<u64>) -> HistogramSnapshot<'a> {
        scratch.clear();
        let mut running = 0u64;
        for c in self.counts.iter() {
            running += c.load(Ordering::Relaxed);
            scratch.push(running);
        }
        HistogramSnapshot {
            cumulative: scratch,
            sum: f64::from_bits(self.sum.load(Ordering::Relaxed)),
        }
    }

    /// Heap bytes held by this series besides the struct itself.
    pub fn heap_bytes(&self) -> usize {
        self.counts.len() * std::mem::size_of::<AtomicU64>()
            + self.native.as_ref().map_or(0, |n| {
                std::mem::size_of::<NativeHistogram>() + n.heap_bytes()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_index_is_le() {
        let b = Buckets::edgeless();
        assert_eq!(b.index(0.0), 0);
        assert_eq!(b.index(0.1), 0);
        assert_eq!(b.index(0.1000001), 1);
        assert_eq!(b.index(1.0), 9);
        assert_eq!(b.index(1.5), 10);
    }

    #[test]
    fn long_bucket_lists_use_binary_search() {
        let b = Buckets((1..=40).map(f64::from).collect());
        for v in [0.5, 1.0, 7.5, 40.0, 41.0] {
            let linear = b.0.iter().take_while(|x| v > **x).count();
            assert_eq!(b.index(v), linear);
        }
    }
}
