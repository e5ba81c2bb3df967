//! Targets written in Python: any object with `handle(event, tags)`.
//!
//! The slow path by design: each event becomes a `TelemetryEvent` object and
//! a fresh tags dict. `handle` returns a `ChainResult` (or `None`, taken as
//! PROCESSED). A target that raises does not break the caller: the error is
//! counted (`target_errors`) and the chain goes on. An event recorded from
//! inside `handle` more than `MAX_DEPTH` deep is not passed to Python
//! (counted, `dropped_reentrant`): recursion without end would overflow
//! the C stack.

use crate::chain::{
    ChainResult, Invocation, PythonCall, Route, Tags, Target, EVENT_TYPE, MAX_DEPTH,
};
use crate::clock::EventClock;
use crate::counters::{Counters, DropReason};
use crate::events::{EventRef, TelemetryEvent};
use pyo3::prelude::*;
use std::sync::Arc;

pub struct PyTarget {
    object: Py<PyAny>,
    counters: Arc<Counters>,
}

impl PyTarget {
    pub fn new(object: Py<PyAny>, counters: Arc<Counters>) -> Self {
        Self { object, counters }
    }
}

impl Target for PyTarget {
    fn resolve(&self, py: Python<'_>, _tags: &Tags) -> PyResult<Box<dyn Route>> {
        Ok(Box::new(PyTarget {
            object: self.object.clone_ref(py),
            counters: self.counters.clone(),
        }))
    }
}

impl Route for PyTarget {
    fn handle(
        &self,
        py: Python<'_>,
        event: &EventRef<'_>,
        tags: &Tags,
        _clock: &mut EventClock,
    ) -> ChainResult {
        let Some(_exit) = crate::gil::PythonSection::enter() else {
            self.counters.count_drop(py, DropReason::Exiting, "");
            return ChainResult::Passed;
        };
        let Some(_call) = PythonCall::enter() else {
            self.counters
                .count_drop(py, DropReason::Reentrant, &too_deep("a Python target"));
            return ChainResult::Passed;
        };
        let mut tags = tags.clone();
        if let EventRef::Duration {
            invocation: Invocation::Call,
            ..
        } = event
        {
            tags.insert(EVENT_TYPE.to_owned(), "CALL".to_owned());
        }
        let outcome = self
            .object
            .call_method1(py, "handle", (TelemetryEvent::from_ref(event), tags))
            .and_then(|r| {
                if r.is_none(py) {
                    return Ok(ChainResult::Processed);
                }
                let i: i64 = r.extract(py)?;
                ChainResult::from_index(i).ok_or_else(|| {
                    pyo3::exceptions::PyValueError::new_err(format!(
                        "handle() returned {i}, not a ChainResult"
                    ))
                })
            });
        outcome.unwrap_or_else(|err| {
            // An interrupt is the caller's to raise (see `interrupt`).
            if let Some(err) = crate::interrupt::keep(py, err) {
                self.counters.count_drop(
                    py,
                    DropReason::TargetError,
                    &format!("a Python target failed: {err}"),
                );
            }
            ChainResult::Passed
        })
    }
}

/// The warning for the first event nested too deep.
pub fn too_deep(what: &str) -> String {
    format!(
        "an event was recorded from inside a target more than {MAX_DEPTH} levels deep (a target or logging handler that records on a handle of its own processor?); it was not passed to {what}, the other targets still got it"
    )
}
