//! The processing chain: targets, and the per-handle routes they resolve to.
//!
//! A target turns a handle's tags into a `Route` once, when the handle is
//! made or forked (label lookups, UUID parsing, series creation); an event
//! then costs one virtual call per target. Targets run in order and each
//! answers with EDGELESS's `TelemetryProcessingResult`.

use crate::clock::EventClock;
use crate::events::EventRef;
use pyo3::prelude::*;
use std::collections::BTreeMap;

pub type Tags = BTreeMap<String, String>;

pub const NODE_ID: &str = "NODE_ID";
pub const FUNCTION_ID: &str = "FUNCTION_ID";
pub const FUNCTION_TYPE: &str = "FUNCTION_TYPE";
pub const EVENT_TYPE: &str = "EVENT_TYPE";
pub const RESOURCE_CLASS_TYPE: &str = "RESOURCE_CLASS_TYPE";

/// EDGELESS: `EVENT_TYPE == "CALL"` is a call, anything else a cast.
pub fn is_call(event_type: Option<&str>) -> bool {
    event_type == Some("CALL")
}

/// EDGELESS: the function type, falling back to the resource class type.
pub fn function_type(tags: &Tags) -> Option<&str> {
    tags.get(FUNCTION_TYPE)
        .or_else(|| tags.get(RESOURCE_CLASS_TYPE))
        .map(String::as_str)
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
