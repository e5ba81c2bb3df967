//! Wall-clock timestamps, read at most once per event.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch (EDGELESS samples carry wall-clock time).
#[inline]
pub fn now_ns() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

/// Splits a ns timestamp into EDGELESS's (seconds, nanoseconds) pair, with
/// the nanoseconds always in `0..1e9` (also before 1970).
#[inline]
pub fn split_ns(ts_ns: i64) -> (i64, u32) {
    (
        ts_ns.div_euclid(1_000_000_000),
        ts_ns.rem_euclid(1_000_000_000) as u32,
    )
}

/// Lazily read clock shared by all targets that handle one event.
#[derive(Default)]
pub struct EventClock(Option<i64>);

impl EventClock {
    pub fn at(ts_ns: i64) -> Self {
        Self(Some(ts_ns))
    }

    #[inline]
    pub fn now_ns(&mut self) -> i64 {
        *self.0.get_or_insert_with(now_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_euclidean() {
        assert_eq!(split_ns(1_500_000_000), (1, 500_000_000));
        assert_eq!(split_ns(-1), (-1, 999_999_999));
    }

    #[test]
    fn event_clock_reads_once() {
        let mut c = EventClock::default();
        let a = c.now_ns();
        assert_eq!(a, c.now_ns());
    }
}
