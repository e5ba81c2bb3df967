//! The NodeReporter's Rust side: drain a PerformanceTarget, encode the
//! samples as protobuf bodies, keep them pending within a byte budget and
//! POST them to the collector (`crate::http::client`), all in one call per
//! period with the GIL released for everything but the drain. The Python
//! `NodeReporter` keeps the thread, the timing, token loading and the
//! process-life hooks.
//!
//! `drain_encode` (drain and encode only) stays for tests and benchmarks
//! that build bodies by hand.

mod life;
mod pending;
mod reporter_core;
mod stats;

pub use reporter_core::ReporterCore;

use crate::performance::PerformanceTarget;
use crate::wire::{encode_drained, Sender};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// (sequence, samples, log entries, body).
type EncodedBatch<'py> = (u64, usize, usize, Bound<'py, PyBytes>);

/// Drains `target` (with the GIL, only moving buffers) and encodes what it
/// held without the GIL. Returns one `(sequence, samples, log_entries,
/// body)` per body of at most about `max_batch_bytes`, numbered from
/// `first_sequence`; an empty target gives an empty list.
#[pyfunction]
#[pyo3(signature = (target, node_id, nonce, first_sequence, refresh_deadline, max_batch_bytes))]
pub fn drain_encode<'py>(
    py: Python<'py>,
    target: &Bound<'py, PerformanceTarget>,
    node_id: String,
    nonce: u64,
    first_sequence: u64,
    refresh_deadline: u64,
    max_batch_bytes: usize,
) -> PyResult<Vec<EncodedBatch<'py>>> {
    if node_id.is_empty() || nonce == 0 || first_sequence == 0 {
        return Err(PyValueError::new_err(
            "node_id must be non-empty, nonce and first_sequence at least 1",
        ));
    }
    let drained = target.get().store.drain(py);
    if drained.is_empty() {
        return Ok(Vec::new());
    }
    let sender = Sender {
        node_id: &node_id,
        nonce,
        refresh_deadline,
    };
    let batches = crate::gil::allow_threads(py, || {
        encode_drained(&drained, &sender, first_sequence, max_batch_bytes)
    });
    drop(drained);
    Ok(batches
        .into_iter()
        .map(|b| {
            (
                b.sequence,
                b.samples,
                b.log_entries,
                PyBytes::new(py, &b.body),
            )
        })
        .collect())
}
