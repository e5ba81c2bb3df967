//! The processing chain: targets, and the per-handle routes they resolve to.
//!
//! A target turns a handle's tags into a `Route` once, when the handle is
//! made or forked (label lookups, UUID parsing, series creation); an event
//! then costs one virtual call per target. Targets run in order and each
//! answers with EDGELESS's `TelemetryProcessingResult`.

use crate::clock::EventClock;
use crate::events::EventRef;
use pyo3::prelude::*;
use std::cell::Cell;
use std::collections::BTreeMap;

pub type Tags = BTreeMap<String, String>;

pub const NODE_ID: &str = "NODE_ID";
pub const FUNCTION_ID: &str = "FUNCTION_ID";
pub const FUNCTION_TYPE: &str = "FUNCTION_TYPE";
pub const EVENT_TYPE: &str = "EVENT_TYPE";
pub const RESOURCE_CLASS_TYPE: &str = "RESOURCE_CLASS_TYPE";

/// What kind of invocation an event is, from EDGELESS's `EVENT_TYPE` tag:
/// `"CALL"` is a call, any other value a cast, and an invocation without
/// the tag is `Untyped`: EDGELESS's PrometheusTarget records those in no
/// histogram (its PerformanceTarget keeps them), and so do we.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invocation {
    Cast = 0,
    Call = 1,
    Untyped = 2,
}

impl Invocation {
    pub fn from_event_type(event_type: Option<&str>) -> Self {
        match event_type {
            Some("CALL") => Invocation::Call,
            Some(_) => Invocation::Cast,
            None => Invocation::Untyped,
        }
    }
}

/// EDGELESS's `execution_times` function type: `FUNCTION_TYPE`, else
/// `RESOURCE_CLASS_TYPE`, else the empty string. (`function_count` takes
/// `FUNCTION_TYPE` only.)
pub fn execution_function_type(tags: &Tags) -> &str {
    tags.get(FUNCTION_TYPE)
        .or_else(|| tags.get(RESOURCE_CLASS_TYPE))
        .map_or("", String::as_str)
}

/// EDGELESS `TelemetryProcessingResult`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ChainResult {
    /// The target ignored the event.
    Passed = 0,
    /// The target used the event; later targets still see it.
    Processed = 1,
    /// The target used the event and ends the chain.
    Final = 2,
}

impl ChainResult {
    pub fn from_index(i: i64) -> Option<Self> {
        match i {
            0 => Some(ChainResult::Passed),
            1 => Some(ChainResult::Processed),
            2 => Some(ChainResult::Final),
            _ => None,
        }
    }
}

/// What one target does for one handle.
pub trait Route: Send + Sync {
    fn handle(
        &self,
        py: Python<'_>,
        event: &EventRef<'_>,
        tags: &Tags,
        clock: &mut EventClock,
    ) -> ChainResult;
}

/// A chain member: resolves tags into a route once per handle.
pub trait Target: Send + Sync {
    fn resolve(&self, py: Python<'_>, tags: &Tags) -> PyResult<Box<dyn Route>>;
}

/// Calls into Python nested on one thread: an event recorded from inside
/// a Python target or a `logging` handler reaches that target again, one
/// level deeper. Each level costs about 1.9 KB of C stack (measured: 556
/// levels fill a 1 MiB thread stack), and unbounded it ended in a segfault
/// where Python would raise `RecursionError`. 32 levels take about 60 KB,
/// which leaves a 1 MiB thread stack most of its room for what the targets
/// themselves do; a target recording on another handle needs 2. Only the
/// routes that call Python count levels (every recursion passes through
/// one), so an event through native targets pays nothing for this.
pub const MAX_DEPTH: u32 = 32;

/// Set in `DEPTH` once a nest reached `MAX_DEPTH`: until its outermost
/// call returns, every nested call into Python is skipped, so a target
/// that records twice per event ends in `MAX_DEPTH + 1` drops, not 2^32
/// calls.
const TRIPPED: u32 = 1 << 31;

thread_local! {
    /// This thread's nested calls into Python, `TRIPPED` or'ed in.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// One route's call into Python, counted while alive (also through a
/// panic).
pub struct PythonCall(());

impl PythonCall {
    /// `None` when the call would nest too deep (see `MAX_DEPTH`): the
    /// route must not call Python, and counts the event as dropped.
    #[inline]
    pub fn enter() -> Option<PythonCall> {
        DEPTH.with(|cell| {
            let state = cell.get();
            let depth = state & !TRIPPED;
            if depth >= MAX_DEPTH || (depth > 0 && state & TRIPPED != 0) {
                cell.set(state | TRIPPED);
                return None;
            }
            cell.set(state + 1);
            Some(PythonCall(()))
        })
    }
}

impl Drop for PythonCall {
    #[inline]
    fn drop(&mut self) {
        DEPTH.with(|cell| {
            let state = cell.get();
            let depth = (state & !TRIPPED) - 1;
            cell.set(if depth == 0 {
                0
            } else {
                depth | (state & TRIPPED)
            });
        });
    }
}

/// Runs an event through a handle's routes in chain order.
#[inline]
pub fn dispatch(
    py: Python<'_>,
    routes: &[Box<dyn Route>],
    event: &EventRef<'_>,
    tags: &Tags,
    clock: &mut EventClock,
) {
    for route in routes {
        if route.handle(py, event, tags, clock) == ChainResult::Final {
            break;
        }
    }
}
