//! Wall-clock timestamps, taken at most once per event, and the monotonic
//! clock that timed blocks measure with.
//!
//! An event's timestamp is not a read of the OS wall clock: that costs
//! about 23 ns on the VMs we measure on (a `clock_gettime` through the
//! vDSO), a third of a whole event. The OS clock is read at most once per
//! millisecond (an anchor) and extrapolated in between with the monotonic
//! clock, which quanta reads from the TSC where it is invariant (about 10
//! ns here; the OS monotonic clock otherwise). The result is within a
//! microsecond of the wall clock under NTP slewing (at most 500 ppm) and
//! follows a step of the clock within a millisecond. Where a new anchor
//! lands a little behind the last extrapolation (the two clocks' rates
//! differ by the slew), timestamps wait for it rather than go back, so
//! they never decrease except by a real step of the clock, as the OS
//! clock's own readings.

use crate::gil::GilCell;
use pyo3::Python;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch read from the OS now (EDGELESS samples
/// carry wall-clock time). Off the event path: the collector, the tracer's
/// writer, anchors.
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

static MONOTONIC: OnceLock<quanta::Clock> = OnceLock::new();

/// The monotonic clock. Calibrating it takes about a millisecond, once per
/// process. Raw readings are kept, and only a difference is scaled.
#[inline]
pub fn monotonic() -> &'static quanta::Clock {
    MONOTONIC.get_or_init(quanta::Clock::new)
}

/// How often the OS wall clock is read again.
const ANCHOR_NS: u64 = 1_000_000;

/// An OS wall-clock reading and the raw monotonic reading of the same
/// instant (`read_anchor`); and the last timestamp given.
struct Anchor {
    wall_ns: i64,
    raw: u64,
    last_ns: i64,
}

static ANCHOR: GilCell<Option<Anchor>> = GilCell::new(None);

/// An OS wall-clock reading and the raw monotonic reading of the same
/// instant: the middle of two raw readings around it. A thread preempted
/// between the reads would otherwise put every timestamp until the next
/// anchor behind by the time it lost, so the pair is read again (a few
/// times at most) until the reads are less than 2 µs apart.
fn read_anchor(clock: &quanta::Clock) -> (i64, u64) {
    let mut best = (i64::MIN, 0, u64::MAX);
    for _ in 0..4 {
        let before = clock.raw();
        let wall_ns = now_ns();
        let after = clock.raw().max(before);
        let gap = clock.delta_as_nanos(before, after);
        if gap < best.2 {
            best = (wall_ns, before + (after - before) / 2, gap);
        }
        if gap < 2_000 {
            break;
        }
    }
    (best.0, best.1)
}

/// The wall-clock time (ns since the Unix epoch) at raw monotonic reading
/// `raw` (see the module doc).
pub fn wall_ns_at(py: Python<'_>, clock: &quanta::Clock, raw: u64) -> i64 {
    ANCHOR.with(py, |anchor| {
        let fresh = |a: &Anchor| raw >= a.raw && clock.delta_as_nanos(a.raw, raw) < ANCHOR_NS;
        let a = match anchor {
            Some(a) if fresh(a) => a,
            _ => {
                let last_ns = anchor.as_ref().map_or(i64::MIN, |a| a.last_ns);
                let (wall_ns, raw) = read_anchor(clock);
                anchor.insert(Anchor {
                    wall_ns,
                    raw,
                    last_ns,
                })
            }
        };
        // `raw` may precede a fresh anchor by the time it took to read it.
        let ns = if raw >= a.raw {
            a.wall_ns + clock.delta_as_nanos(a.raw, raw) as i64
        } else {
            a.wall_ns - clock.delta_as_nanos(raw, a.raw) as i64
        };
        // Behind the last by less than an anchor's span: the rates' drift,
        // not a step of the clock.
        let ns = if ns < a.last_ns && a.last_ns - ns < ANCHOR_NS as i64 {
            a.last_ns
        } else {
            ns
        };
        a.last_ns = ns;
        ns
    })
}

/// The wall-clock time now, for an event's timestamp.
#[inline]
pub fn wall_now_ns(py: Python<'_>) -> i64 {
    let clock = monotonic();
    wall_ns_at(py, clock, clock.raw())
}

/// Lazily read clock shared by all targets that handle one event.
#[derive(Default)]
pub struct EventClock(Option<i64>);

impl EventClock {
    pub fn at(ts_ns: i64) -> Self {
        Self(Some(ts_ns))
    }

    #[inline]
    pub fn now_ns(&mut self, py: Python<'_>) -> i64 {
        *self.0.get_or_insert_with(|| wall_now_ns(py))
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
        Python::initialize();
        Python::attach(|py| {
            let mut c = EventClock::default();
            let a = c.now_ns(py);
            assert_eq!(a, c.now_ns(py));
        })
    }

    #[test]
    fn extrapolated_wall_clock_keeps_to_the_os_clock() {
        Python::initialize();
        Python::attach(|py| {
            for _ in 0..2_000 {
                let before = now_ns();
                let ours = wall_now_ns(py);
                let after = now_ns();
                // Within the anchor's age of scaling error (500 ppm of 1 ms
                // at most) around the OS readings.
                assert!(
                    ours >= before - 1_000 && ours <= after + 1_000,
                    "{before} {ours} {after}"
                );
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
        })
    }

    #[test]
    fn timestamps_do_not_go_back() {
        Python::initialize();
        Python::attach(|py| {
            let mut last = i64::MIN;
            // Across many anchors (each about a millisecond).
            for _ in 0..200_000 {
                let ts = wall_now_ns(py);
                assert!(ts >= last, "{last} then {ts}");
                last = ts;
            }
        })
    }
}
