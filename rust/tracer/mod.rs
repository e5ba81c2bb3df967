//! `ControlPlaneTracer`: spans for the EDGELESS control plane, written as CSV
//! (the format is in docs/formats.md) by a background thread.
//!
//! - `csv`: RFC 4180 row formatting into the pending buffer.
//! - `ids`: fast UUID v4 correlation ids.
//! - `writer`: the bounded buffer, the writer thread, flush/close, atexit.
//! - `span`: the `Span` pyclass (RAII end).
//! - `current`: the current span (`tracer.span(...)`, a `ContextVar`).
//! - `traceparent`: W3C trace context, how our ids map to its ids.

pub mod csv;
pub mod current;
pub mod ids;
pub mod span;
pub mod traceparent;
pub mod writer;

use crate::args::{Arg, Limit};
use crate::events::LogLevel;
use current::SpanScope;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use span::{span_name, text, write_log, Origin, Span};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use uuid::Uuid;
use writer::Sink;

static ATEXIT_REGISTERED: AtomicBool = AtomicBool::new(false);

#[pyfunction]
fn tracer_flush_at_exit(py: Python<'_>) {
    crate::gil::allow_threads(py, writer::flush_all_at_exit);
}

/// Records control-plane spans (start, end, logs) as CSV rows, written
/// by a background thread; `start_span` makes a root span.
#[pyclass(module = "edgeless_telemetry._core", frozen)]
pub struct ControlPlaneTracer {
    sink: Arc<Sink>,
}

/// `None`, `"-"` and `""` (as upstream) mean stdout; else a path.
fn output_target(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<PathBuf>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(None);
    };
    if let Ok(s) = obj.cast::<PyString>() {
        let s = s.to_cow()?;
        if s.is_empty() || s == "-" {
            return Ok(None);
        }
    }
    obj.extract::<PathBuf>().map(Some).map_err(|_| {
        PyTypeError::new_err(format!(
            "output_path must be None, \"-\", a str or an os.PathLike, not {}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })
}

/// A parent id from another process: a UUID string or `uuid.UUID`.
fn parent_uuid(obj: &Bound<'_, PyAny>) -> PyResult<Uuid> {
    let text = if let Ok(s) = obj.cast::<PyString>() {
        s.to_string_lossy().into_owned()
    } else if obj.is_instance(&obj.py().import("uuid")?.getattr("UUID")?)? {
        obj.str()?.to_string_lossy().into_owned()
    } else {
        return Err(PyTypeError::new_err(format!(
            "parent_id must be a UUID string or uuid.UUID, not {}",
            obj.get_type().name()?
        )));
    };
    Uuid::parse_str(text.trim()).map_err(|e| {
        PyValueError::new_err(format!(
            "parent_id must be a UUID (a correlation_id from another tracer), got {text:?}: {e}"
        ))
    })
}

/// The parent a caller named, if any: a correlation id or a W3C header.
fn explicit_origin(
    parent_id: Option<&Bound<'_, PyAny>>,
    traceparent: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<Origin>> {
    let parent_id = parent_id.filter(|p| !p.is_none());
    let traceparent = traceparent.filter(|t| !t.is_none());
    match (parent_id, traceparent) {
        (Some(_), Some(_)) => Err(PyValueError::new_err(
            "give parent_id or traceparent, not both",
        )),
        (Some(p), None) => Ok(Some(Origin::under_id(parent_uuid(p)?))),
        (None, Some(t)) => {
            let header = t.cast::<PyString>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "traceparent must be a str, not {}",
                    t.get_type()
                        .name()
                        .map(|n| n.to_string())
                        .unwrap_or_default()
                ))
            })?;
            let header = header.to_string_lossy();
            let parsed = traceparent::parse(&header).map_err(|why| {
                // Quoted, but cut: the value may come from the network.
                let mut shown: String = header.chars().take(80).collect();
                if shown.len() < header.len() {
                    shown.push_str("...");
                }
                PyValueError::new_err(format!(
                    "traceparent {shown:?} is not a W3C traceparent header: {why}"
                ))
            })?;
            Ok(Some(Origin::Child {
                parent: parsed.parent_uuid(),
                trace: parsed.trace_uuid(),
            }))
        }
        (None, None) => Ok(None),
    }
}

fn open_error(path: &Option<PathBuf>, e: io::Error) -> PyErr {
    let what = match path {
        Some(p) => p.display().to_string(),
        None => "stdout".to_owned(),
    };
    if e.kind() == io::ErrorKind::InvalidData {
        return PyValueError::new_err(e.to_string());
    }
    PyErr::from(io::Error::new(
        e.kind(),
        format!("cannot open tracer output {what}: {e}"),
    ))
}

#[pymethods]
impl ControlPlaneTracer {
    /// Opens the output and starts the writer thread. A path's directories
    /// are created; the file is truncated and gets the header, or with
    /// `append=True` keeps its rows (header only if it was empty; a
    /// non-empty file without our header is refused with `ValueError`).
    #[new]
    #[pyo3(
        text_signature = "(output_path=None, *, append=False, max_pending_bytes=16777216, max_message_bytes=65536)"
    )]
    #[pyo3(signature = (output_path = None, *, append = Arg::value(false), max_pending_bytes = Limit::new(16777216), max_message_bytes = Limit::new(65536)))]
    fn new(
        py: Python<'_>,
        output_path: Option<&Bound<'_, PyAny>>,
        append: Arg<bool>,
        max_pending_bytes: Limit,
        max_message_bytes: Limit,
    ) -> PyResult<Self> {
        const ME: &str = "ControlPlaneTracer";
        let append = append.named(ME, "append")?;
        let max_pending_bytes = max_pending_bytes.at_least(ME, "max_pending_bytes", 4096)?;
        let max_message_bytes = max_message_bytes.at_least(ME, "max_message_bytes", 1)?;
        let path = output_target(output_path)?;
        let sink = Sink::open(path.clone(), append, max_pending_bytes, max_message_bytes)
            .map_err(|e| open_error(&path, e))?;
        if !ATEXIT_REGISTERED.swap(true, Ordering::Relaxed) {
            let hook = wrap_pyfunction!(tracer_flush_at_exit, py)?;
            if let Err(e) = py.import("atexit")?.call_method1("register", (hook,)) {
                ATEXIT_REGISTERED.store(false, Ordering::Relaxed);
                return Err(e);
            }
        }
        Ok(Self { sink })
    }

    /// Starts a span. Its parent, first match wins: `parent_id` (a
    /// correlation id from elsewhere: the span's rows carry it as their
    /// `parent_id`), `traceparent` (a W3C header from another process, see
    /// `Span.traceparent`), the current span (inside `tracer.span(...)`),
    /// else none: a new trace. Passing both `parent_id` and `traceparent`
    /// is a `ValueError`; so is a malformed one.
    #[pyo3(signature = (name, *, parent_id = None, traceparent = None))]
    fn start_span(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        parent_id: Option<&Bound<'_, PyAny>>,
        traceparent: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Span> {
        let name = span_name(&self.sink, name)?;
        let origin = match explicit_origin(parent_id, traceparent)? {
            Some(origin) => origin,
            None => current::default_origin(py),
        };
        Ok(Span::start(self.sink.clone(), origin, name))
    }

    /// A scope that starts a span named `name` and makes it current for a
    /// `with` block (`as` gives the span) or, used as a decorator, for each
    /// call of a sync or `async def` function. The span's parent: as
    /// `start_span` (without `parent_id`/`traceparent`: the span current
    /// when the block is entered).
    #[pyo3(signature = (name, *, parent_id = None, traceparent = None))]
    fn span(
        &self,
        name: &Bound<'_, PyAny>,
        parent_id: Option<&Bound<'_, PyAny>>,
        traceparent: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<SpanScope> {
        let name = span_name(&self.sink, name)?;
        let origin = explicit_origin(parent_id, traceparent)?;
        Ok(SpanScope::new(self.sink.clone(), name, origin))
    }

    /// The current span of this thread or asyncio task (the innermost
    /// `tracer.span(...)` block running), or `None`.
    fn current_span<'py>(&self, py: Python<'py>) -> Option<Bound<'py, Span>> {
        current::current(py)
    }

    /// A `log` row. Inside a `tracer.span(...)` block it carries the
    /// current span's ids and name; otherwise it belongs to no span (empty
    /// `correlation_id`, `parent_id` and `name`), as upstream's
    /// `ControlPlaneTracer::log`.
    fn log(
        &self,
        py: Python<'_>,
        level: &Bound<'_, PyAny>,
        message: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let level = LogLevel::from_py(level)?;
        let message = text(&self.sink, message, "log message")?;
        match current::current(py) {
            Some(span) => write_log(&self.sink, span.get().fields(), level, &message),
            None => write_log(&self.sink, b",,", level, &message),
        }
        Ok(())
    }

    /// Waits (GIL released) until every row so far is written to the OS.
    fn flush(&self, py: Python<'_>) {
        let sink = &self.sink;
        crate::gil::allow_threads(py, || sink.flush());
    }

    /// Writes what is pending and closes the output; later rows are dropped
    /// and counted (`rows_after_close`). Idempotent.
    fn close(&self, py: Python<'_>) {
        let sink = &self.sink;
        crate::gil::allow_threads(py, || sink.close());
    }

    /// Whether `close()` was called (later rows are counted, not written).
    #[getter]
    fn closed(&self) -> bool {
        self.sink.is_closed()
    }

    /// The file written to, or `None` for stdout.
    #[getter]
    fn output_path(&self) -> Option<String> {
        self.sink.path.as_ref().map(|p| p.display().to_string())
    }

    /// Cumulative counters: rows queued, written, dropped (buffer full),
    /// after close, lost to write errors; bytes; truncations.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in self.sink.stats() {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    /// `with ControlPlaneTracer(...) as tracer:` closes it at the end.
    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Closes the tracer (writes what is pending); never swallows an exception.
    #[pyo3(signature = (exc_type = None, exc_value = None, traceback = None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        exc_value: Option<&Bound<'_, PyAny>>,
        traceback: Option<&Bound<'_, PyAny>>,
    ) -> bool {
        let _ = (exc_type, exc_value, traceback);
        self.close(py);
        false
    }

    fn __repr__(&self) -> String {
        match &self.sink.path {
            Some(p) => format!("ControlPlaneTracer({:?})", p.display().to_string()),
            None => "ControlPlaneTracer('-')".to_owned(),
        }
    }
}

impl Drop for ControlPlaneTracer {
    /// Spans may outlive the tracer object and keep writing; the sink closes
    /// when the last of them goes. Here only what is pending is flushed.
    fn drop(&mut self) {
        self.sink.flush_implicitly();
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ControlPlaneTracer>()?;
    m.add_class::<Span>()?;
    m.add_class::<SpanScope>()?;
    Ok(())
}
