//! Gauge series: one atomic integer (running function instances).
//!
//! Like the histogram, writers hold the GIL and so use a relaxed load +
//! store; the scrape thread reads the atomic without it.

use pyo3::Python;
use std::sync::atomic::{AtomicI64, Ordering};

#[derive(Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    #[inline]
    pub fn add(&self, _py: Python<'_>, delta: i64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(delta),
            Ordering::Relaxed,
        );
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}
