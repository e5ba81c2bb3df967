//! Rust core of `edgeless_telemetry`: the event path, the targets, the wire
//! format and the control-plane tracer. The Python package in
//! `python/edgeless_telemetry` re-exports and types what lives here.

pub mod chain;
pub mod clock;
pub mod collector;
pub mod counters;
pub mod events;
pub mod fork;
pub mod gil;
pub mod http;
pub mod log_target;
pub mod performance;
pub mod processor;
pub mod prometheus;
pub mod py_target;
pub mod reporter;
pub mod text;
pub mod tracer;
pub mod wire;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<events::TelemetryEvent>()?;
    m.add_class::<processor::TelemetryProcessor>()?;
    m.add_class::<processor::TelemetryHandle>()?;
    m.add_class::<performance::PerformanceTarget>()?;
    prometheus::register(m)?;
    m.add_class::<collector::CollectorCore>()?;
    m.add_class::<collector::http::CollectorServer>()?;
    m.add_function(wrap_pyfunction!(reporter::drain_encode, m)?)?;
    tracer::register(m)?;
    gil::register(m)?;
    Ok(())
}
