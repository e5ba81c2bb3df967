//! Bounded buffers that drop the oldest entry when full.

use std::collections::VecDeque;

/// A fixed-capacity ring of samples. Memory grows with use up to `cap`
/// entries and never beyond; a full ring overwrites its oldest entry.
#[derive(Debug)]
pub struct Ring<T> {
    buf: Vec<T>,
    /// Index of the oldest entry once the ring has wrapped.
    head: usize,
    cap: usize,
}

impl<T> Ring<T> {
    pub fn new(cap: usize) -> Self {
        assert!(cap > 0, "ring capacity must be positive");
        Self {
            buf: Vec::new(),
            head: 0,
            cap,
        }
    }

    /// Appends `value`; returns true when that overwrote the oldest entry.
    #[inline]
    pub fn push(&mut self, value: T) -> bool {
        if self.buf.len() < self.cap {
            self.buf.push(value);
            false
        } else {
            self.buf[self.head] = value;
            self.head = (self.head + 1) % self.cap;
            true
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Removes and returns every entry, oldest first.
    pub fn take(&mut self) -> Vec<T> {
        let mut out = std::mem::take(&mut self.buf);
        out.rotate_left(self.head);
        self.head = 0;
        out
    }
}

/// A string-carrying entry whose size counts against a byte budget.
pub trait ByteSize {
    fn bytes(&self) -> usize;
}

/// A queue bounded both by entry count and by total payload bytes, dropping
/// oldest entries first (log messages vary too much in size for a count alone).
#[derive(Debug)]
pub struct BoundedLog<T> {
    entries: VecDeque<T>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl<T: ByteSize> BoundedLog<T> {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            bytes: 0,
            max_entries,
            max_bytes,
        }
    }

    /// Appends `entry`, evicting the oldest entries to make room; returns
    /// how many entries were dropped (including `entry` itself if it alone
    /// exceeds the byte budget).
    pub fn push(&mut self, entry: T) -> u64 {
        let size = entry.bytes();
        if size > self.max_bytes || self.max_entries == 0 {
            return 1;
        }
        let mut dropped = 0;
        while self.entries.len() >= self.max_entries || self.bytes + size > self.max_bytes {
            let old = self
                .entries
                .pop_front()
                .expect("non-empty while over budget");
            self.bytes -= old.bytes();
            dropped += 1;
        }
        self.bytes += size;
        self.entries.push_back(entry);
        dropped
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn take(&mut self) -> Vec<T> {
        self.bytes = 0;
        std::mem::take(&mut self.entries).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_drops_oldest_and_keeps_order() {
        let mut r = Ring::new(3);
        let dropped: usize = (0..5).map(|i| r.push(i) as usize).sum();
        assert_eq!(dropped, 2);
        assert_eq!(r.take(), vec![2, 3, 4]);
        assert!(r.is_empty());
        r.push(7);
        assert_eq!(r.take(), vec![7]);
    }

    impl ByteSize for String {
        fn bytes(&self) -> usize {
            self.len()
        }
    }

    #[test]
    fn log_is_bounded_by_count_and_bytes() {
        let mut l = BoundedLog::new(3, 10);
        assert_eq!(l.push("aaaa".to_string()), 0);
        assert_eq!(l.push("bbbb".to_string()), 0);
        // 4 + 4 + 4 > 10: the oldest goes.
        assert_eq!(l.push("cccc".to_string()), 1);
        assert_eq!(l.bytes(), 8);
        // Larger than the whole budget: refused, nothing else lost.
        assert_eq!(l.push("x".repeat(11)), 1);
        assert_eq!(l.take(), vec!["bbbb".to_string(), "cccc".to_string()]);
        assert_eq!(l.bytes(), 0);
    }
}
