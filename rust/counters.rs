//! What the hot path drops instead of raising, counted and made visible.
//!
//! Handles never raise for bad event data: a wrong type, a NaN or negative
//! duration, an unknown level or a failing Python target is counted here.
//! The first drop of each kind is also logged once as a warning on the
//! `edgeless_telemetry` logger so a broken caller is noticed; later ones are
//! only counted (see `TelemetryProcessor.stats()`).

use pyo3::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};

/// Drop counters a chain member exposes so a PrometheusTarget in the same
/// processor can serve them (`edgeless_telemetry_dropped_total{target,
/// reason}`): operators see losses in Grafana, not only in `stats()`.
/// Read by the scrape thread, so without the GIL.
pub trait DropSource: Send + Sync {
    /// `(target, reason, count)`, cumulative.
    fn drops(&self) -> Vec<(&'static str, &'static str, u64)>;
}

#[derive(Clone, Copy, Debug)]
pub enum DropReason {
    /// A duration that is not a number (wrong type).
    InvalidType,
    /// NaN, infinite or negative duration; out-of-range enum value.
    InvalidValue,
    /// A Python target raised or returned something that is not a result.
    TargetError,
    /// Recorded from inside a target more than `chain::MAX_DEPTH` deep:
    /// not passed to a Python target or the `logging` target.
    Reentrant,
    /// Recorded on another thread than the finalizing one once the
    /// interpreter exits: not passed to a Python target or the `logging`
    /// target (`crate::gil::PythonSection`).
    Exiting,
}

impl DropReason {
    const ALL: [DropReason; 5] = [
        DropReason::InvalidType,
        DropReason::InvalidValue,
        DropReason::TargetError,
        DropReason::Reentrant,
        DropReason::Exiting,
    ];

    fn name(self) -> &'static str {
        match self {
            DropReason::InvalidType => "dropped_invalid_type",
            DropReason::InvalidValue => "dropped_invalid_value",
            DropReason::TargetError => "target_errors",
            DropReason::Reentrant => "dropped_reentrant",
            DropReason::Exiting => "dropped_at_exit",
        }
    }

    /// The `reason` label value.
    fn label(self) -> &'static str {
        match self {
            DropReason::InvalidType => "invalid_type",
            DropReason::InvalidValue => "invalid_value",
            DropReason::TargetError => "target_error",
            DropReason::Reentrant => "reentrant",
            DropReason::Exiting => "exiting",
        }
    }
}

#[derive(Default)]
pub struct Counters {
    counts: [AtomicU64; DropReason::ALL.len()],
    /// Strings that were not valid UTF-8 (lone surrogates) and were stored
    /// with them escaped (`backslashreplace`): kept, but altered.
    pub lossy_strings: AtomicU64,
}

impl Counters {
    /// Counts one drop; warns the first time this kind happens.
    pub fn count_drop(&self, py: Python<'_>, kind: DropReason, detail: &str) {
        if self.counts[kind as usize].fetch_add(1, Ordering::Relaxed) == 0 {
            warn(
                py,
                &format!(
                    "edgeless_telemetry dropped an event ({}): {detail}; further drops of this kind are only counted, see TelemetryProcessor.stats()",
                    kind.name()
                ),
            );
        }
    }

    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let mut out: Vec<_> = DropReason::ALL
            .iter()
            .map(|k| (k.name(), self.counts[*k as usize].load(Ordering::Relaxed)))
            .collect();
        out.push(("lossy_strings", self.lossy_strings.load(Ordering::Relaxed)));
        out
    }
}

/// Logs a warning on the package logger; never raises into the caller.
pub fn warn(py: Python<'_>, message: &str) {
    // Not from a daemon thread at interpreter exit (`gil::PythonSection`).
    let Some(_section) = crate::gil::PythonSection::enter() else {
        return;
    };
    let result = py
        .import("logging")
        .and_then(|logging| logging.call_method1("getLogger", ("edgeless_telemetry",)))
        .and_then(|logger| logger.call_method1("warning", (message,)));
    if let Some(err) = result.err().and_then(|e| crate::interrupt::keep(py, e)) {
        err.write_unraisable(py, None);
    }
}

impl DropSource for Counters {
    fn drops(&self) -> Vec<(&'static str, &'static str, u64)> {
        DropReason::ALL
            .iter()
            .map(|k| {
                (
                    "processor",
                    k.label(),
                    self.counts[*k as usize].load(Ordering::Relaxed),
                )
            })
            .collect()
    }
}
