//! Rust core of `edgeless_telemetry`: the event path, the targets, the wire
//! format and the control-plane tracer. The Python package in
//! `python/edgeless_telemetry` re-exports and types what lives here.

pub mod args;
pub mod batch;
pub mod chain;
pub mod clock;
pub mod collector;
pub mod counters;
pub mod csv_field;
pub mod events;
pub mod fork;
pub mod gil;
pub mod http;
pub mod interrupt;
pub mod log_target;
pub mod performance;
pub mod processor;
pub mod prometheus;
pub mod py_target;
pub mod reporter;
#[cfg(test)]
mod test_rng;
pub mod text;
pub mod timing;
pub mod tracer;
pub mod wire;

use pyo3::prelude::*;

// `gil_used`: the GIL is our lock (rust/gil.rs); PyO3 0.28 changed the
// default to declaring free-threading support. (A no-op for an abi3-py310
// build, whose module never names it; the right answer if that changes.)
#[pymodule(gil_used = true)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    gil::one_interpreter(m.py())?;
    // The package version: Cargo.toml is its one source (pyproject.toml
    // declares it dynamic, so maturin copies it into the wheel too).
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<events::TelemetryEvent>()?;
    m.add_class::<processor::TelemetryProcessor>()?;
    m.add_class::<processor::TelemetryHandle>()?;
    m.add_class::<timing::Timer>()?;
    m.add_class::<performance::PerformanceTarget>()?;
    prometheus::register(m)?;
    m.add_class::<collector::CollectorCore>()?;
    m.add_class::<collector::http::CollectorServer>()?;
    m.add_function(wrap_pyfunction!(reporter::drain_encode, m)?)?;
    m.add_class::<reporter::ReporterCore>()?;
    tracer::register(m)?;
    gil::register(m)?;
    Ok(())
}
