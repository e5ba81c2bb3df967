//! Which batches were already stored, by (node_id, nonce, batch_sequence).
//!
//! A node numbers its batches 1, 2, 3, ... and resends a batch until it is
//! acknowledged, oldest first, so per node instance the stored sequences
//! are almost contiguous: a floor below which all were seen plus a few
//! above it (gaps come from batches the node dropped past its budget).
//! Memory is bounded: at most `MAX_STREAMS` node instances (the least
//! recently heard of is forgotten) and `MAX_ABOVE` sequences above a floor
//! (past it the floor moves up, forgetting the oldest gap).

use std::collections::{BTreeSet, HashMap};

const MAX_STREAMS: usize = 4096;
const MAX_ABOVE: usize = 4096;

#[derive(Default)]
struct Stream {
    floor: u64,
    above: BTreeSet<u64>,
    last_used: u64,
}

impl Stream {
    /// Moves the floor up over the sequences just above it. Sequences come
    /// from the wire, so u64::MAX is possible: the floor stops there.
    fn absorb(&mut self) {
        while let Some(next) = self.floor.checked_add(1) {
            if !self.above.remove(&next) {
                break;
            }
            self.floor = next;
        }
    }
}

#[derive(Default)]
pub struct Dedup {
    streams: HashMap<(String, u64), Stream>,
    clock: u64,
}

impl Dedup {
    pub fn seen(&self, node: &str, nonce: u64, seq: u64) -> bool {
        self.streams
            .get(&(node.to_owned(), nonce))
            .is_some_and(|s| seq <= s.floor || s.above.contains(&seq))
    }

    /// Everything remembered, as (node, nonce, floor, sequences above it).
    pub fn export(&self) -> impl Iterator<Item = (&str, u64, u64, &BTreeSet<u64>)> {
        self.streams
            .iter()
            .map(|((node, nonce), s)| (node.as_str(), *nonce, s.floor, &s.above))
    }

    /// Marks 1..=floor as seen.
    pub fn mark_floor(&mut self, node: &str, nonce: u64, floor: u64) {
        if floor == 0 {
            return;
        }
        self.mark(node, nonce, floor);
        let s = self
            .streams
            .get_mut(&(node.to_owned(), nonce))
            .expect("just marked");
        s.floor = s.floor.max(floor);
        s.above.retain(|&q| q > floor);
        s.absorb();
    }

    pub fn mark(&mut self, node: &str, nonce: u64, seq: u64) {
        self.clock += 1;
        if self.streams.len() >= MAX_STREAMS
            && !self.streams.contains_key(&(node.to_owned(), nonce))
        {
            if let Some(oldest) = self
                .streams
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
            {
                self.streams.remove(&oldest);
            }
        }
        let s = self.streams.entry((node.to_owned(), nonce)).or_default();
        s.last_used = self.clock;
        if seq <= s.floor {
            return;
        }
        s.above.insert(seq);
        s.absorb();
        while s.above.len() > MAX_ABOVE {
            let first = s.above.pop_first().expect("non-empty");
            s.floor = first;
            s.absorb();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_out_of_order_and_gaps() {
        let mut d = Dedup::default();
        for seq in [1, 2, 4, 3, 7] {
            assert!(!d.seen("n", 1, seq));
            d.mark("n", 1, seq);
            assert!(d.seen("n", 1, seq));
        }
        assert!(!d.seen("n", 1, 5));
        assert!(!d.seen("n", 2, 1), "another nonce is another node instance");
        let s = &d.streams[&("n".to_owned(), 1)];
        assert_eq!((s.floor, s.above.len()), (4, 1));
    }

    #[test]
    fn floor_covers_everything_below() {
        let mut d = Dedup::default();
        d.mark("n", 1, 9);
        d.mark_floor("n", 1, 8);
        assert!(d.seen("n", 1, 1) && d.seen("n", 1, 9) && !d.seen("n", 1, 10));
        let (_, _, floor, above) = d.export().next().unwrap();
        assert_eq!((floor, above.len()), (9, 0));
    }

    #[test]
    fn sequences_up_to_u64_max() {
        // Fuzzed bodies may carry any sequence: no overflow at the top.
        let mut d = Dedup::default();
        for seq in (u64::MAX - MAX_ABOVE as u64)..=u64::MAX {
            d.mark("n", 1, seq);
        }
        assert!(d.seen("n", 1, u64::MAX) && d.seen("n", 1, 1));
        d.mark_floor("m", 1, u64::MAX);
        d.mark("m", 1, u64::MAX);
        assert!(d.seen("m", 1, u64::MAX));
    }

    #[test]
    fn stays_bounded() {
        let mut d = Dedup::default();
        for seq in (2..20_000).step_by(2) {
            d.mark("n", 1, seq);
        }
        assert!(d.streams[&("n".to_owned(), 1)].above.len() <= MAX_ABOVE);
        for nonce in 0..(MAX_STREAMS as u64 + 10) {
            d.mark("m", nonce + 10, 1);
        }
        assert!(d.streams.len() <= MAX_STREAMS);
    }
}
