//! Correlation ids: UUID v4 from a per-tracer xoshiro256** generator.
//!
//! Asking the OS for 16 random bytes per span (`getrandom`) costs a syscall,
//! more than the rest of a span. The ids only have to be unique, not secret,
//! so each tracer seeds a fast generator once (from std's per-process random
//! hash keys, the clock, the pid and a counter) and draws from it under its
//! lock. A tracer made in a forked child gets its own seed.
//!
//! Every span of one trace shares the high 64 bits of its correlation id
//! with the trace id (the root span's id); only the low 64 bits, the W3C
//! span id, are drawn per span. So a W3C `traceparent` (trace id, parent
//! span id) names the parent's full correlation id, and a span continued in
//! another process can fill its `parent_id` column exactly (see
//! `traceparent`).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use uuid::Uuid;

pub struct IdGen {
    s: [u64; 4],
}

static SEEDS: AtomicU64 = AtomicU64::new(0);

impl IdGen {
    pub fn seeded() -> Self {
        let counter = SEEDS.fetch_add(1, Ordering::Relaxed);
        let mut s = [0u64; 4];
        for (i, word) in s.iter_mut().enumerate() {
            let mut h = RandomState::new().build_hasher();
            h.write_i64(crate::clock::now_ns());
            h.write_u32(std::process::id());
            h.write_u64(counter);
            h.write_usize(i);
            *word = h.finish();
        }
        if s == [0; 4] {
            s[0] = 1; // the one state xoshiro cannot leave
        }
        Self { s }
    }

    #[inline]
    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A fresh random (version 4, RFC 4122 variant) UUID.
    #[inline]
    pub fn next_uuid(&mut self) -> Uuid {
        let hi = self.next_u64();
        let lo = self.next_u64();
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&hi.to_le_bytes());
        bytes[8..].copy_from_slice(&lo.to_le_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    /// A fresh id inside the trace whose ids start with `high` (the trace
    /// id's high 64 bits): those bits as given, then 64 random bits with
    /// the RFC 4122 variant bits set (so a trace rooted here keeps yielding
    /// version-4 UUIDs; a trace continued from another system keeps that
    /// system's high bits, whatever their version nibble).
    #[inline]
    pub fn next_in_trace(&mut self, high: u64) -> Uuid {
        in_trace(high, self.next_u64())
    }
}

/// The id made of a trace's high 64 bits and a span's random low 64 bits
/// (variant bits forced to RFC 4122, `10`).
#[inline]
pub fn in_trace(high: u64, random: u64) -> Uuid {
    let low = (random & !(0b11 << 62)) | (0b10 << 62);
    Uuid::from_u64_pair(high, low)
}

/// The high 64 bits of an id: what every span of its trace shares.
#[inline]
pub fn trace_high(id: &Uuid) -> u64 {
    id.as_u64_pair().0
}

/// The low 64 bits of an id: its W3C span id.
#[inline]
pub fn span_low(id: &Uuid) -> u64 {
    id.as_u64_pair().1
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_v4_and_distinct() {
        let mut a = IdGen::seeded();
        let mut b = IdGen::seeded();
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            for id in [a.next_uuid(), b.next_uuid()] {
                assert_eq!(id.get_version_num(), 4);
                assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
                assert!(seen.insert(id));
            }
        }
    }

    #[test]
    fn ids_in_a_trace_share_the_high_half_and_stay_v4() {
        let mut g = IdGen::seeded();
        let root = g.next_uuid();
        let high = trace_high(&root);
        let mut seen = HashSet::from([root]);
        for _ in 0..10_000 {
            let id = g.next_in_trace(high);
            assert_eq!(trace_high(&id), high);
            assert_eq!(id.get_version_num(), 4);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            assert!(seen.insert(id));
        }
        // A foreign trace's high half is kept as is.
        let id = g.next_in_trace(0x0123_4567_89ab_cdef);
        assert_eq!(trace_high(&id), 0x0123_4567_89ab_cdef);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
    }
}
