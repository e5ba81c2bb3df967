//! The current span: `tracer.span(name)` makes its span current for the
//! block (or the decorated call), and `start_span` / `tracer.log` inside it
//! attach to it.
//!
//! "Current" lives in a `contextvars.ContextVar`, so each thread and each
//! asyncio task sees its own (a task starts with a copy of its creator's
//! context: spans it starts nest under the span that was current when it
//! was created). Reading the variable costs a call into Python, so the
//! tracer only reads it once some `span()` block has ever been entered
//! (`IN_USE`): code that never uses current spans pays one relaxed load.

use super::span::{Origin, Span};
use super::writer::Sink;
use crate::gil::{GilCell, GilOnce};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

static IN_USE: AtomicBool = AtomicBool::new(false);

/// The variable's bound `get`, `set` and `reset`, made once.
struct Var {
    get: Py<PyAny>,
    set: Py<PyAny>,
    reset: Py<PyAny>,
}

static VAR: GilOnce<Var> = GilOnce::new();

fn var(py: Python<'_>) -> PyResult<&Var> {
    VAR.get_or_try_init(py, || {
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("default", py.None())?;
        let var = py
            .import("contextvars")?
            .getattr("ContextVar")?
            .call(("edgeless_telemetry.current_span",), Some(&kwargs))?;
        Ok(Var {
            get: var.getattr("get")?.unbind(),
            set: var.getattr("set")?.unbind(),
            reset: var.getattr("reset")?.unbind(),
        })
    })
}

/// The current span of this thread or task, if any. Cheap (no call into
/// Python) until the first `span()` block.
pub fn current(py: Python<'_>) -> Option<Bound<'_, Span>> {
    if !IN_USE.load(Ordering::Relaxed) {
        return None;
    }
    let value = var(py).ok()?.get.bind(py).call0().ok()?;
    value.cast_into::<Span>().ok()
}

/// Where a span started without an explicit parent goes: under the
/// current span, else it starts a trace.
pub fn default_origin(py: Python<'_>) -> Origin {
    match current(py) {
        Some(span) => Origin::under(span.get()),
        None => Origin::Root,
    }
}

/// What a scope holds while its block runs.
struct Active {
    span: Py<Span>,
    token: Py<PyAny>,
}

/// A scope's life: `Entering` covers the calls into Python in `__enter__`,
/// during which another thread may run and try to enter the same scope.
enum State {
    Idle,
    Entering,
    Active(Active),
}

/// What `tracer.span(...)` returns: a context manager that starts a span,
/// makes it current and ends it, and a decorator doing the same around
/// each call (sync or async).
#[pyclass(module = "edgeless_telemetry._core", frozen)]
pub struct SpanScope {
    sink: Arc<Sink>,
    name: String,
    /// `None`: under whatever span is current when the block is entered.
    origin: Option<Origin>,
    state: GilCell<State>,
}

impl SpanScope {
    pub fn new(sink: Arc<Sink>, name: String, origin: Option<Origin>) -> Self {
        IN_USE.store(true, Ordering::Relaxed);
        Self {
            sink,
            name,
            origin,
            state: GilCell::new(State::Idle),
        }
    }

    /// Starts the span and makes it current (calls into Python).
    fn enter(&self, py: Python<'_>) -> PyResult<Active> {
        let origin = match self.origin {
            Some(origin) => origin,
            None => default_origin(py),
        };
        let span = Py::new(
            py,
            Span::start(self.sink.clone(), origin, self.name.clone()),
        )?;
        let token = var(py)?.set.bind(py).call1((span.clone_ref(py),))?;
        Ok(Active {
            span,
            token: token.unbind(),
        })
    }
}

#[pymethods]
impl SpanScope {
    /// Starts the span, makes it current and returns it. Raises
    /// `RuntimeError` if this scope's block is already running (make one
    /// scope per block, or decorate: each call gets its own).
    fn __enter__(&self, py: Python<'_>) -> PyResult<Py<Span>> {
        let was_idle = self.state.with(py, |s| {
            let idle = matches!(s, State::Idle);
            if idle {
                *s = State::Entering;
            }
            idle
        });
        if !was_idle {
            return Err(PyRuntimeError::new_err(format!(
                "span scope {:?} is already entered; use one tracer.span(...) per block",
                self.name
            )));
        }
        match self.enter(py) {
            Ok(active) => {
                let span = active.span.clone_ref(py);
                self.state.with(py, |s| *s = State::Active(active));
                Ok(span)
            }
            Err(e) => {
                self.state.with(py, |s| *s = State::Idle);
                Err(e)
            }
        }
    }

    /// Restores the span that was current before and ends this one (an
    /// exception is logged on it at ERROR first, and propagates).
    #[pyo3(signature = (exc_type = None, exc_value = None, traceback = None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        exc_value: Option<&Bound<'_, PyAny>>,
        traceback: Option<&Bound<'_, PyAny>>,
    ) -> bool {
        let _ = traceback;
        let active = self
            .state
            .with(py, |s| match std::mem::replace(s, State::Idle) {
                State::Active(active) => Some(active),
                other => {
                    *s = other; // not entered (or still entering): nothing to end
                    None
                }
            });
        let Some(active) = active else {
            return false;
        };
        if let Ok(var) = var(py) {
            // Fails only if the block was left in another context than it
            // was entered in (a generator moved between tasks): the span
            // still ends, and that other context keeps its own value.
            let _ = var.reset.bind(py).call1((active.token.bind(py),));
        }
        active.span.get().exit_with(exc_type, exc_value);
        false
    }

    /// Decorates a function (sync or `async def`): each call runs in its own
    /// span, current for the call.
    fn __call__(slf: &Bound<'_, Self>, func: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let fresh = slf.getattr("_fresh")?;
        crate::timing::decorate(slf.py(), &fresh, func)
    }

    /// A new scope like this one (for one decorated call).
    fn _fresh(&self) -> SpanScope {
        SpanScope::new(self.sink.clone(), self.name.clone(), self.origin)
    }

    fn __repr__(&self) -> String {
        format!("SpanScope(name={:?})", self.name)
    }
}
