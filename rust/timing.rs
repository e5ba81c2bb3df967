//! Timing on handles: `with fn.invocation():` and `@fn.invocation()` (and
//! `timed_instantiate`, `timed_init`, `timed_stop`, `timed_transfer`)
//! measure the block or call with the monotonic clock and record the
//! duration through the handle, like `prometheus_client`'s
//! `Histogram.time()`.
//!
//! The `with` path is all Rust: one small object, two clock reads and the
//! same event the bare handle method sends, so timing a block costs little
//! more than reporting a duration measured by hand. Decorating is a setup
//! step and goes through Python (`edgeless_telemetry.decorators`), which
//! knows sync from `async def`; each call then enters a fresh timer.
//!
//! The sample's wall-clock timestamp is extrapolated from the monotonic
//! reading that ended the block (`clock::wall_ns_at`), so a timed block
//! reads no OS clock at all between anchors.
//!
//! When an exception leaves the block, the duration is still recorded (the
//! time was spent), and if the timer has an `on_error` status the instance
//! is taken to be over: `function_exit(on_error)` follows, so the
//! `function_count` gauge (+1 on instantiate, -1 on exit) stays balanced.
//! Defaults follow EDGELESS's function life cycle, where an error in
//! instantiate, init or stop ends the instance (`exit` with
//! `INTERNAL_ERROR`, or `CODE_ERROR` when the function's own code failed):
//! instantiate -> `INTERNAL_ERROR` (the runtime could not make it), init and
//! stop -> `CODE_ERROR` (they run the function's code), invocation and
//! transfer -> none (a Python runtime usually keeps serving after one failed
//! call; pass `on_error=FunctionExitStatus.CODE_ERROR` when a failed call
//! ends the instance, as in EDGELESS). Only `Exception`s count as failures:
//! `KeyboardInterrupt`, `SystemExit` and `asyncio.CancelledError` record
//! the duration but no exit (the instance was interrupted, not broken).

use crate::chain::Invocation;
use crate::clock::{monotonic, wall_ns_at};
use crate::events::{ExitStatus, FunctionTime};
use crate::gil::{GilCell, GilOnce};
use crate::processor::Emitter;
use pyo3::exceptions::{PyException, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyType;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A raw reading, never 0 (0 marks an idle timer).
#[inline]
fn raw_now(clock: &quanta::Clock) -> u64 {
    clock.raw().max(1)
}

/// The `on_error=` argument: left out (the kind's default), `None` (never
/// an exit), or a `FunctionExitStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    Default,
    Never,
    Exit(ExitStatus),
}

impl<'py> FromPyObject<'_, 'py> for OnError {
    type Error = PyErr;

    fn extract(ob: Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        if ob.is_none() {
            return Ok(OnError::Never);
        }
        let index = ob.extract::<i64>().map_err(|_| {
            PyTypeError::new_err(format!(
                "on_error must be a FunctionExitStatus or None, not {}",
                ob.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        ExitStatus::from_index(index)
            .map(OnError::Exit)
            .ok_or_else(|| {
                PyValueError::new_err(format!(
                    "on_error must be a FunctionExitStatus (0, 1 or 2) or None, got {index}"
                ))
            })
    }
}

impl OnError {
    pub fn resolve(self, kind: FunctionTime) -> Option<ExitStatus> {
        match self {
            OnError::Exit(status) => Some(status),
            OnError::Never => None,
            OnError::Default => match kind {
                FunctionTime::Instantiate => Some(ExitStatus::InternalError),
                FunctionTime::Init | FunctionTime::Stop => Some(ExitStatus::CodeError),
                FunctionTime::Execution | FunctionTime::Transfer => None,
            },
        }
    }
}

/// What a timer records: the event kind, the invocation kind, and the exit
/// status after a failure.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TimerSpec {
    pub kind: FunctionTime,
    pub invocation: Invocation,
    pub on_error: Option<ExitStatus>,
}

/// Times one block at a time (`with`), or decorates a function.
#[pyclass(module = "edgeless_telemetry._core", frozen)]
pub struct Timer {
    emitter: Arc<Emitter>,
    spec: TimerSpec,
    /// 0 while idle, else the raw clock reading at the start.
    started: AtomicU64,
    /// For a decorating timer: the last timer made for a call.
    idle_fresh: TimerSlot,
}

/// The last timer a handle (or a decorating timer) made, handed out again
/// when it is idle: making and freeing a Python object for every block was
/// a fifth of what timing a block costs. Idle means nobody but the slot
/// holds it (its reference count is 1): a block in progress, a caller
/// keeping it, or a decoration holds it, and then a new timer is made,
/// so overlapping blocks (threads, tasks, recursion) never share one.
pub struct TimerSlot(GilCell<Option<Py<Timer>>>);

impl Default for TimerSlot {
    fn default() -> Self {
        Self(GilCell::new(None))
    }
}

impl TimerSlot {
    pub fn idle_or_new(
        &self,
        py: Python<'_>,
        spec: TimerSpec,
        emitter: &Arc<Emitter>,
    ) -> PyResult<Py<Timer>> {
        let idle = self.0.with(py, |slot| match slot {
            Some(t) if t.get().spec == spec && refcnt(py, t) == 1 => Some(t.clone_ref(py)),
            _ => None,
        });
        if let Some(timer) = idle {
            // Entered and dropped without `__exit__` (no one can exit it
            // now): idle again.
            timer.get().started.store(0, Ordering::Relaxed);
            return Ok(timer);
        }
        let timer = Py::new(py, Timer::new(emitter.clone(), spec))?;
        // The one replaced is dropped outside the cell: freeing it may run
        // Python code, which may time a block of this handle.
        let replaced = self.0.with(py, |slot| slot.replace(timer.clone_ref(py)));
        drop(replaced);
        Ok(timer)
    }
}

/// `t`'s reference count (PyO3 0.29 deprecated `Py::get_refcnt` in favour
/// of the FFI call).
#[inline]
fn refcnt(_py: Python<'_>, t: &Py<Timer>) -> isize {
    // SAFETY: `t` keeps the object alive and the token proves the thread
    // is attached, so its header may be read.
    unsafe { pyo3::ffi::Py_REFCNT(t.as_ptr()) }
}

impl Timer {
    fn new(emitter: Arc<Emitter>, spec: TimerSpec) -> Self {
        Timer {
            emitter,
            spec,
            started: AtomicU64::new(0),
            idle_fresh: TimerSlot::default(),
        }
    }
}

fn is_exception(exc_type: &Bound<'_, PyAny>) -> bool {
    exc_type
        .cast::<PyType>()
        .ok()
        .and_then(|t| t.is_subclass_of::<PyException>().ok())
        .unwrap_or(false)
}

#[pymethods]
impl Timer {
    /// Starts the clock. Raises `RuntimeError` if this timer is already
    /// timing a block (make one timer per block, or decorate: each call
    /// gets its own).
    fn __enter__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, Self>> {
        let timer = slf.get();
        // The GIL serialises every caller: a plain load and store suffice.
        if timer.started.load(Ordering::Relaxed) != 0 {
            return Err(PyRuntimeError::new_err(
                "this timer is already timing a block; use one timer per block",
            ));
        }
        timer.started.store(raw_now(monotonic()), Ordering::Relaxed);
        Ok(slf.clone())
    }

    /// Records the duration; after an `Exception`, also `function_exit`
    /// with the timer's `on_error` status, if it has one. Never swallows
    /// the exception; raises only an interrupt that a target's Python code
    /// got while recording (see `interrupt`).
    #[pyo3(signature = (exc_type = None, exc_value = None, traceback = None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        exc_value: Option<&Bound<'_, PyAny>>,
        traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let _ = (exc_value, traceback);
        let start = self.started.load(Ordering::Relaxed);
        if start == 0 {
            return Ok(false); // never entered: nothing was timed
        }
        self.started.store(0, Ordering::Relaxed);
        let clock = monotonic();
        let end = clock.raw();
        let seconds = clock.delta_as_nanos(start, end) as f64 * 1e-9;
        let exit = match exc_type {
            Some(t) if !t.is_none() && is_exception(t) => self.spec.on_error,
            _ => None,
        };
        let ts = wall_ns_at(py, clock, end);
        self.emitter
            .record_timed(py, self.spec.kind, seconds, self.spec.invocation, exit, ts);
        crate::interrupt::take().map(|()| false)
    }

    /// Decorates a function (sync or `async def`): each call is timed.
    fn __call__(slf: &Bound<'_, Self>, func: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let fresh = slf.getattr("_fresh")?;
        decorate(slf.py(), &fresh, func)
    }

    /// An idle timer like this one (for one decorated call).
    fn _fresh(&self, py: Python<'_>) -> PyResult<Py<Timer>> {
        self.idle_fresh.idle_or_new(py, self.spec, &self.emitter)
    }

    fn __repr__(&self) -> String {
        let on_error = match self.spec.on_error {
            Some(s) => format!("{}", s as u8),
            None => "None".to_owned(),
        };
        format!(
            "Timer(kind={:?}, invocation={:?}, on_error={on_error})",
            self.spec.kind.metric_name(),
            self.spec.invocation
        )
    }
}

static DECORATE: GilOnce<Py<PyAny>> = GilOnce::new();

/// `edgeless_telemetry.decorators.decorate(fresh, func)`: wraps `func` so
/// that each call runs inside `with fresh():`.
pub fn decorate(
    py: Python<'_>,
    fresh: &Bound<'_, PyAny>,
    func: &Bound<'_, PyAny>,
) -> PyResult<Py<PyAny>> {
    let decorate = DECORATE.get_or_try_init(py, || {
        py.import("edgeless_telemetry.decorators")?
            .getattr("decorate")
            .map(Bound::unbind)
    })?;
    Ok(decorate.bind(py).call1((fresh, func))?.unbind())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_life_cycle() {
        use FunctionTime::*;
        let d = |k| OnError::Default.resolve(k);
        assert_eq!(d(Instantiate), Some(ExitStatus::InternalError));
        assert_eq!(d(Init), Some(ExitStatus::CodeError));
        assert_eq!(d(Stop), Some(ExitStatus::CodeError));
        assert_eq!(d(Execution), None);
        assert_eq!(d(Transfer), None);
        assert_eq!(OnError::Never.resolve(Init), None);
        let e = OnError::Exit(ExitStatus::CodeError);
        assert_eq!(e.resolve(Execution), Some(ExitStatus::CodeError));
    }

    #[test]
    fn raw_readings_scale_to_elapsed_time() {
        let c = monotonic();
        let start = raw_now(c);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let nanos = c.delta_as_nanos(start, c.raw());
        assert!(nanos >= 19_000_000, "{nanos}");
        assert!(nanos < 10_000_000_000, "{nanos}");
    }
}
