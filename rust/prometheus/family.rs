//! A metric family: label set -> series, bounded.
//!
//! Series are created when a handle first emits an event that needs them
//! and are never removed (Prometheus series are cumulative). A family holds
//! at most `max_series`; further label sets are refused and counted, and
//! the count is exposed as a metric so a runaway cardinality is visible.
//!
//! The mutex is only taken to create or look up a series (once per handle)
//! and by a scrape to copy the list of series; observations go straight to
//! the series' atomics through the `Arc` a route holds. A scrape thread may
//! hold it at the moment another thread forks, so it is a `fork::Mutex`:
//! the child never inherits it held.

use crate::fork;
use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub struct Series<M> {
    /// Escaped label set, as written between the braces.
    pub labels: Box<str>,
    pub metric: M,
}

/// Index key: the series itself, hashed and compared by its labels, so the
/// label text is stored once.
struct Key<M>(Arc<Series<M>>);

impl<M> Borrow<str> for Key<M> {
    fn borrow(&self) -> &str {
        &self.0.labels
    }
}

impl<M> Hash for Key<M> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.labels.hash(state)
    }
}

impl<M> PartialEq for Key<M> {
    fn eq(&self, other: &Self) -> bool {
        self.0.labels == other.0.labels
    }
}

impl<M> Eq for Key<M> {}

struct Inner<M> {
    index: HashSet<Key<M>>,
    /// Creation order, which is the exposition order.
    list: Vec<Arc<Series<M>>>,
}

pub struct Family<M> {
    max_series: usize,
    inner: fork::Mutex<Inner<M>>,
    refused: AtomicU64,
}

impl<M> Family<M> {
    pub fn new(max_series: usize) -> Self {
        Self {
            max_series,
            inner: fork::Mutex::new(Inner {
                index: HashSet::new(),
                list: Vec::new(),
            }),
            refused: AtomicU64::new(0),
        }
    }

    /// A panic while holding the lock leaves the maps consistent (they
    /// are only extended after the series is built); `fork::Mutex` goes on.
    fn lock(&self) -> fork::Guard<'_, Inner<M>> {
        self.inner.lock()
    }

    /// The series for `labels`, created with `make` if new; `None` (and
    /// counted) when the family is full.
    pub fn get_or_create(&self, labels: &str, make: impl FnOnce() -> M) -> Option<Arc<Series<M>>> {
        let mut inner = self.lock();
        if let Some(k) = inner.index.get(labels) {
            return Some(k.0.clone());
        }
        if inner.list.len() >= self.max_series {
            drop(inner);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let series = Arc::new(Series {
            labels: labels.into(),
            metric: make(),
        });
        inner.index.insert(Key(series.clone()));
        inner.list.push(series.clone());
        Some(series)
    }

    /// The current series, in creation order (a copy of the pointers, so
    /// the scrape renders without holding the lock).
    pub fn series(&self) -> Vec<Arc<Series<M>>> {
        self.lock().list.clone()
    }

    pub fn series_count(&self) -> usize {
        self.lock().list.len()
    }

    /// Counts a label set refused for another reason (a label value too
    /// long, see `registry`).
    pub fn refuse(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Label sets refused (cumulative).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_shared_and_bounded() {
        let f: Family<u8> = Family::new(2);
        let a = f.get_or_create("a=\"1\"", || 1).unwrap();
        let a2 = f.get_or_create("a=\"1\"", || 9).unwrap();
        assert!(Arc::ptr_eq(&a, &a2));
        assert_eq!(a2.metric, 1);
        assert!(f.get_or_create("a=\"2\"", || 2).is_some());
        assert!(f.get_or_create("a=\"3\"", || 3).is_none());
        assert!(f.get_or_create("a=\"3\"", || 3).is_none());
        assert_eq!(f.refused(), 2);
        assert_eq!(f.series_count(), 2);
        let labels: Vec<_> = f.series().iter().map(|s| s.labels.to_string()).collect();
        assert_eq!(labels, ["a=\"1\"", "a=\"2\""]);
    }
}
