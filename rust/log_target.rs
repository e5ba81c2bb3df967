//! The log target: function log entries go to Python's `logging` (logger
//! `edgeless_telemetry`, levels mapped); other events are logged at DEBUG.
//!
//! Whether DEBUG is on is cached and re-read at most once a second, so with
//! DEBUG off a non-log event costs one comparison, not a call into Python.
//! A handler that records on a handle re-enters this target; past
//! `chain::MAX_DEPTH` levels the event is not logged (counted,
//! `dropped_reentrant`).

use crate::chain::{ChainResult, PythonCall, Route, Tags, Target, FUNCTION_ID, NODE_ID};
use crate::clock::EventClock;
use crate::counters::{Counters, DropReason};
use crate::events::{EventRef, LogLevel, TelemetryEvent};
use pyo3::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

const RECHECK_NS: i64 = 1_000_000_000;
/// Python has no TRACE; it sits below DEBUG (10).
const PY_TRACE: i32 = 5;

pub struct LogTarget {
    logger: Py<PyAny>,
    counters: Arc<Counters>,
    debug_enabled: AtomicBool,
    next_check_ns: AtomicI64,
}

impl LogTarget {
    pub fn new(py: Python<'_>, counters: Arc<Counters>) -> PyResult<Arc<Self>> {
        let logger = py
            .import("logging")?
            .call_method1("getLogger", ("edgeless_telemetry",))?
            .unbind();
        Ok(Arc::new(Self {
            logger,
            counters,
            debug_enabled: AtomicBool::new(false),
            next_check_ns: AtomicI64::new(i64::MIN),
        }))
    }

    fn debug_enabled(&self, py: Python<'_>, clock: &mut EventClock) -> bool {
        let now = clock.now_ns(py);
        let next = self.next_check_ns.load(Ordering::Relaxed);
        // The event's time may be one given to `observe_many`, anywhere in
        // time: one far in the future set the next check there, and DEBUG
        // switched on later went unseen for good. A reading more than
        // `RECHECK_NS` before the next check checks again.
        if now >= next || now < next.saturating_sub(RECHECK_NS) {
            // At interpreter exit, off the finalizing thread: as it was.
            let Some(_exit) = crate::gil::PythonSection::enter() else {
                return self.debug_enabled.load(Ordering::Relaxed);
            };
            let enabled = self
                .logger
                .call_method1(py, "isEnabledFor", (10,))
                .and_then(|r| r.extract::<bool>(py))
                .unwrap_or_else(|e| {
                    crate::interrupt::keep(py, e);
                    false
                });
            self.debug_enabled.store(enabled, Ordering::Relaxed);
            self.next_check_ns
                .store(now.saturating_add(RECHECK_NS), Ordering::Relaxed);
        }
        self.debug_enabled.load(Ordering::Relaxed)
    }
}

fn py_level(level: LogLevel) -> i32 {
    match level {
        LogLevel::Error => 40,
        LogLevel::Warn => 30,
        LogLevel::Info => 20,
        LogLevel::Debug => 10,
        LogLevel::Trace => PY_TRACE,
    }
}

impl Target for Arc<LogTarget> {
    fn resolve(&self, _py: Python<'_>, tags: &Tags) -> PyResult<Box<dyn Route>> {
        Ok(Box::new(LogRoute {
            target: self.clone(),
            node_id: tags.get(NODE_ID).cloned().unwrap_or_default(),
            function_id: tags.get(FUNCTION_ID).cloned().unwrap_or_default(),
        }))
    }
}

struct LogRoute {
    target: Arc<LogTarget>,
    node_id: String,
    function_id: String,
}

impl Route for LogRoute {
    fn handle(
        &self,
        py: Python<'_>,
        event: &EventRef<'_>,
        tags: &Tags,
        clock: &mut EventClock,
    ) -> ChainResult {
        let log = matches!(event, EventRef::Log { .. });
        if !log && !self.target.debug_enabled(py, clock) {
            return ChainResult::Passed;
        }
        let Some(_exit) = crate::gil::PythonSection::enter() else {
            self.target.counters.count_drop(py, DropReason::Exiting, "");
            return ChainResult::Passed;
        };
        let Some(_call) = PythonCall::enter() else {
            self.target.counters.count_drop(
                py,
                DropReason::Reentrant,
                &crate::py_target::too_deep("logging"),
            );
            return ChainResult::Passed;
        };
        let logger = self.target.logger.bind(py);
        let result = match *event {
            EventRef::Log {
                level,
                target,
                message,
            } => logger.call_method1(
                "log",
                (
                    py_level(level),
                    "function log node_id=%s function_id=%s target=%s: %s",
                    &self.node_id,
                    &self.function_id,
                    target,
                    message,
                ),
            ),
            _ => {
                let repr = TelemetryEvent::from_ref(event).__repr__();
                logger.call_method1("debug", ("telemetry event %s tags=%s", repr, tags.clone()))
            }
        };
        if let Some(err) = result.err().and_then(|e| crate::interrupt::keep(py, e)) {
            err.write_unraisable(py, None);
        }
        ChainResult::Processed
    }
}
