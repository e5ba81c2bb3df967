//! PerformanceTarget: raw timestamped samples and log entries per function,
//! drained periodically (EDGELESS `get_metrics`) and shipped to the
//! orchestrator.

pub mod ring;
pub mod store;

use crate::args::Limit;
use crate::chain::{ChainResult, Route, Tags, Target, FUNCTION_ID};
use crate::clock::EventClock;
use crate::events::EventRef;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyDict, PyList, PyTuple};
use std::sync::{Arc, OnceLock};
use store::SlotRef;
pub use store::{Drained, LogEntry, PerfConfig, PerfStats, PerfStore, Sample};
use uuid::Uuid;

/// Parses a `FUNCTION_ID` the way EDGELESS does: only UUIDs are stored.
pub fn parse_function_id(value: &str) -> Option<Uuid> {
    Uuid::parse_str(value).ok()
}

/// Bounded store of raw samples. Python subclasses it to add `get_metrics`.
#[pyclass(module = "edgeless_telemetry._core", subclass, frozen)]
pub struct PerformanceTarget {
    pub store: Arc<PerfStore>,
}

#[pymethods]
impl PerformanceTarget {
    #[new]
    #[pyo3(
        text_signature = "(capacity=100000, *, log_capacity=10000, log_bytes=4194304, max_message_bytes=65536, max_functions=10000)"
    )]
    #[pyo3(signature = (capacity = Limit::new(100_000), *, log_capacity = Limit::new(10_000), log_bytes = Limit::new(4_194_304), max_message_bytes = Limit::new(65_536), max_functions = Limit::new(10_000)))]
    fn new(
        capacity: Limit,
        log_capacity: Limit,
        log_bytes: Limit,
        max_message_bytes: Limit,
        max_functions: Limit,
    ) -> PyResult<Self> {
        const ME: &str = "PerformanceTarget";
        let capacity = capacity.at_least(ME, "capacity", 1)?;
        let log_capacity = log_capacity.at_least(ME, "log_capacity", 1)?;
        let log_bytes = log_bytes.at_least(ME, "log_bytes", 1)?;
        let max_message_bytes = max_message_bytes.at_least(ME, "max_message_bytes", 1)?;
        let max_functions = max_functions.at_least(ME, "max_functions", 1)?;
        Ok(Self {
            store: Arc::new(PerfStore::new(PerfConfig {
                capacity,
                log_capacity,
                log_bytes,
                max_message_bytes,
                max_functions,
            })),
        })
    }

    #[getter]
    fn capacity(&self) -> usize {
        self.store.config().capacity
    }

    /// Cumulative counters (recorded, dropped, refused); a drain does not
    /// reset them.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.store.stats();
        let (pending_samples, pending_log_entries) = self.store.pending(py);
        let d = PyDict::new(py);
        d.set_item("samples_recorded", s.samples_recorded)?;
        d.set_item("samples_dropped", s.samples_dropped)?;
        d.set_item("log_entries_recorded", s.log_entries_recorded)?;
        d.set_item("log_entries_dropped", s.log_entries_dropped)?;
        d.set_item("messages_truncated", s.messages_truncated)?;
        d.set_item("targets_truncated", s.targets_truncated)?;
        d.set_item("events_without_function_id", s.events_without_function_id)?;
        d.set_item("functions_refused", s.functions_refused)?;
        d.set_item("pending_samples", pending_samples)?;
        d.set_item("pending_log_entries", pending_log_entries)?;
        Ok(d)
    }

    /// Drains everything as plain Python data for `Metrics._from_raw`:
    /// `(times, logs)` where `times[k]` lists `(function_id, timestamps_ns
    /// bytes, values bytes)` and `logs` lists `(function_id, [(ts, target,
    /// message), ...])`. Byte buffers are native-endian int64 / float64.
    fn _drain_raw<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let drained = self.store.drain(py);
        let times = PyList::empty(py);
        for per_kind in &drained.times {
            let list = PyList::empty(py);
            for (id, samples) in per_kind {
                let ts = column(py, samples, |s| s.timestamp_ns.to_ne_bytes())?;
                let vs = column(py, samples, |s| s.value.to_ne_bytes())?;
                list.append((id.to_string(), ts, vs))?;
            }
            times.append(list)?;
        }
        let logs = PyList::empty(py);
        for (id, entries) in &drained.logs {
            let list = PyList::empty(py);
            for e in entries {
                list.append((e.timestamp_ns, &e.target, &e.message))?;
            }
            logs.append((id.to_string(), list))?;
        }
        PyTuple::new(py, [times.into_any(), logs.into_any()])
    }
}

/// Copies one field of every sample into a bytearray (which numpy wraps
/// without another copy).
fn column<'py>(
    py: Python<'py>,
    samples: &[Sample],
    field: impl Fn(&Sample) -> [u8; 8],
) -> PyResult<Bound<'py, PyByteArray>> {
    PyByteArray::new_with(py, samples.len() * 8, |buf| {
        for (chunk, s) in buf.chunks_exact_mut(8).zip(samples) {
            chunk.copy_from_slice(&field(s));
        }
        Ok(())
    })
}

impl Target for Arc<PerfStore> {
    fn resolve(&self, py: Python<'_>, tags: &Tags) -> PyResult<Box<dyn Route>> {
        let route = match tags.get(FUNCTION_ID).and_then(|v| parse_function_id(v)) {
            None => PerfRoute::Skip(self.clone()),
            Some(id) => match self.slot_for(py, id) {
                Some(slot) => PerfRoute::Slot(self.clone(), slot),
                None => PerfRoute::Waiting(self.clone(), id, OnceLock::new()),
            },
        };
        Ok(Box::new(route))
    }
}

enum PerfRoute {
    Slot(Arc<PerfStore>, SlotRef),
    /// No UUID `FUNCTION_ID`: not stored (as in EDGELESS), but counted.
    Skip(Arc<PerfStore>),
    /// The function table was full when the handle was made. A drain frees
    /// the slots no handle refers to, so each event asks again (only such
    /// handles pay for it) and keeps the slot once it gets one; until then
    /// each event is refused and counted. Refused for good, a long-lived
    /// handle made while the table was full would lose every event after.
    Waiting(Arc<PerfStore>, Uuid, OnceLock<SlotRef>),
}

impl PerfRoute {
    /// A waiting route's slot: the one it got, else a new try (see
    /// `Waiting`); `None`, counted, while the table stays full.
    #[cold]
    fn waiting_slot<'a>(
        py: Python<'_>,
        store: &'a Arc<PerfStore>,
        id: Uuid,
        slot: &'a OnceLock<SlotRef>,
    ) -> Option<&'a SlotRef> {
        if let Some(slot) = slot.get() {
            return Some(slot);
        }
        match store.slot_for(py, id) {
            Some(got) => Some(slot.get_or_init(|| got)),
            None => {
                store.count_refused(py);
                None
            }
        }
    }
}

impl Route for PerfRoute {
    #[inline]
    fn handle(
        &self,
        py: Python<'_>,
        event: &EventRef<'_>,
        _tags: &Tags,
        clock: &mut EventClock,
    ) -> ChainResult {
        let (store, slot) = match (self, event) {
            (_, EventRef::Exit(_)) => return ChainResult::Passed,
            (PerfRoute::Slot(store, slot), _) => (store, slot),
            (PerfRoute::Skip(store), _) => {
                store.count_without_function_id(py);
                return ChainResult::Passed;
            }
            (PerfRoute::Waiting(store, id, slot), _) => {
                match PerfRoute::waiting_slot(py, store, *id, slot) {
                    Some(slot) => (store, slot),
                    None => return ChainResult::Passed,
                }
            }
        };
        match event {
            EventRef::Duration { kind, seconds, .. } => {
                let sample = Sample {
                    timestamp_ns: clock.now_ns(py),
                    value: *seconds,
                };
                store.push_sample(py, slot, *kind, sample);
            }
            EventRef::Log {
                target, message, ..
            } => store.push_log(py, slot, clock.now_ns(py), target, message),
            EventRef::Exit(_) => {}
        }
        ChainResult::Processed
    }
}
