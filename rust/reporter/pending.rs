//! Bodies encoded but not yet delivered, oldest first, bounded in bytes.
//!
//! The bound is what keeps a node's memory flat while its collector is
//! unreachable: past it the oldest bodies go (their samples are the least
//! useful to a live view), and what went is counted, never silent.

use bytes::Bytes;
use std::collections::VecDeque;

/// One encoded `UpdateNodeRequest`, ready to POST (again).
pub struct Body {
    pub samples: usize,
    pub log_entries: usize,
    /// Shared with a request in flight, so resending never copies.
    pub data: Bytes,
}

/// What `Pending::push` dropped to stay within its bound.
#[derive(Default, Debug, PartialEq, Eq)]
pub struct Dropped {
    pub batches: u64,
    pub samples: u64,
    pub log_entries: u64,
}

pub struct Pending {
    bodies: VecDeque<Body>,
    bytes: usize,
    samples: usize,
    max_bytes: usize,
}

impl Pending {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            bodies: VecDeque::new(),
            bytes: 0,
            samples: 0,
            max_bytes,
        }
    }

    /// Appends `body`, then drops the oldest bodies until the total is
    /// within the bound again (a body larger than the bound alone goes too).
    pub fn push(&mut self, body: Body) -> Dropped {
        self.bytes += body.data.len();
        self.samples += body.samples;
        self.bodies.push_back(body);
        let mut dropped = Dropped::default();
        while self.bytes > self.max_bytes {
            let Some(old) = self.pop_front() else { break };
            dropped.batches += 1;
            dropped.samples += old.samples as u64;
            dropped.log_entries += old.log_entries as u64;
        }
        dropped
    }

    pub fn front(&self) -> Option<&Body> {
        self.bodies.front()
    }

    pub fn pop_front(&mut self) -> Option<Body> {
        let body = self.bodies.pop_front()?;
        self.bytes -= body.data.len();
        self.samples -= body.samples;
        Some(body)
    }

    pub fn batches(&self) -> usize {
        self.bodies.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn samples(&self) -> usize {
        self.samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `len` bytes, all `tag`.
    fn body(tag: u8, len: usize) -> Body {
        Body {
            samples: 10,
            log_entries: 1,
            data: Bytes::from(vec![tag; len]),
        }
    }

    #[test]
    fn drops_oldest_past_the_bound_and_counts() {
        let mut p = Pending::new(250);
        assert_eq!(p.push(body(1, 100)), Dropped::default());
        assert_eq!(p.push(body(2, 100)), Dropped::default());
        let dropped = p.push(body(3, 100));
        assert_eq!(
            (dropped.batches, dropped.samples, dropped.log_entries),
            (1, 10, 1)
        );
        assert_eq!((p.batches(), p.bytes(), p.samples()), (2, 200, 20));
        assert_eq!(p.front().map(|b| b.data[0]), Some(2));
        // Larger than the bound on its own: everything goes.
        assert_eq!(p.push(body(4, 300)).batches, 3);
        assert!(p.batches() == 0 && p.bytes() == 0 && p.samples() == 0);
    }
}
