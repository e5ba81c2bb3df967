//! `Span`: one traced step, ended exactly once (by `end()`, a `with` block,
//! or being dropped, as upstream's RAII `TraceSpan`).

use super::csv::{push_row, span_fields, EventType};
use super::ids::{in_trace, span_low, trace_high};
use super::traceparent;
use super::writer::Sink;
use crate::clock::now_ns;
use crate::events::LogLevel;
use crate::text::{truncate, Text};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use uuid::Uuid;

/// Longest span name accepted (it is repeated in every row of the span).
pub const MAX_NAME_BYTES: usize = 4096;

/// One span of a trace: a context manager and a guard; it ends (one
/// `span_end` row) on `end()`, at the end of a `with` block, or when the
/// last reference to it goes, whichever comes first.
#[pyclass(module = "edgeless_telemetry._core", frozen)]
pub struct Span {
    sink: Arc<Sink>,
    id: Uuid,
    parent: Option<Uuid>,
    /// The W3C trace id: the root's id; its high half is also this id's.
    trace: Uuid,
    name: String,
    /// `correlation_id,parent_id,name`, encoded once for all rows.
    fields: Box<[u8]>,
    ended: AtomicBool,
}

pub fn text(sink: &Sink, obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Text> {
    let s = obj.cast::<PyString>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} must be str, not {}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })?;
    let text = Text::from_py(s)?;
    if text.is_escaped() {
        sink.lossy_strings.fetch_add(1, Ordering::Relaxed);
    }
    Ok(text)
}

/// Validates a span name (a setup-style argument: raises).
pub fn span_name(sink: &Sink, obj: &Bound<'_, PyAny>) -> PyResult<String> {
    let name = text(sink, obj, "span name")?;
    if name.is_empty() {
        return Err(PyValueError::new_err("span name must not be empty"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(PyValueError::new_err(format!(
            "span name is {} bytes; at most {MAX_NAME_BYTES} are allowed",
            name.len()
        )));
    }
    Ok(name.to_owned())
}

/// Where a new span hangs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Nowhere: it starts a trace (its id is the trace id).
    Root,
    /// Under `parent` (an id of this process or of another), in `trace`.
    Child { parent: Uuid, trace: Uuid },
}

impl Origin {
    /// Under an existing span.
    pub fn under(span: &Span) -> Self {
        Origin::Child {
            parent: span.id,
            trace: span.trace,
        }
    }

    /// Under a bare correlation id from elsewhere: its trace id is not
    /// known, so the id stands for it (its high half, the part the trace
    /// shares, is right; the W3C trace id is only right when it names the
    /// root: pass a `traceparent` to keep it).
    pub fn under_id(parent: Uuid) -> Self {
        Origin::Child {
            parent,
            trace: parent,
        }
    }

    /// Draws the new span's id (`next` gives a fresh random UUID).
    fn new_id(&self, next: impl FnOnce() -> Uuid) -> (Uuid, Option<Uuid>, Option<Uuid>) {
        match *self {
            Origin::Root => (next(), None, None),
            Origin::Child { parent, trace } => (
                in_trace(trace_high(&trace), span_low(&next())),
                Some(parent),
                Some(trace),
            ),
        }
    }
}

impl Span {
    /// Writes the start row and returns the span. The id is drawn under the
    /// sink's lock, so the row order in the file is the order of the clock.
    pub fn start(sink: Arc<Sink>, origin: Origin, name: String) -> Self {
        let mut made = None;
        sink.append(|p| {
            let (id, parent, trace) = origin.new_id(|| p.ids.next_uuid());
            let fields = span_fields(&id, parent.as_ref(), &name);
            push_row(&mut p.buf, now_ns(), EventType::SpanStart, &fields, None);
            made = Some((id, parent, trace, fields));
        });
        // A closed sink takes no rows, but the caller still gets a usable span.
        let (id, parent, trace, fields) = made.unwrap_or_else(|| {
            let (id, parent, trace) = origin.new_id(|| sink.next_id());
            let fields = span_fields(&id, parent.as_ref(), &name);
            (id, parent, trace, fields)
        });
        Span {
            sink,
            id,
            parent,
            trace: trace.unwrap_or(id),
            name,
            fields,
            ended: AtomicBool::new(false),
        }
    }

    /// The `with` exit: an exception leaving the block is first logged on
    /// the span at ERROR (once, and only while the span is open), then the
    /// span ends.
    pub fn exit_with(
        &self,
        exc_type: Option<&Bound<'_, PyAny>>,
        exc_value: Option<&Bound<'_, PyAny>>,
    ) {
        if let (Some(t), Some(v)) = (exc_type, exc_value) {
            if !t.is_none() && !self.ended.load(Ordering::Relaxed) {
                let kind = t
                    .getattr("__name__")
                    .and_then(|n| n.extract::<String>())
                    .unwrap_or_else(|_| "exception".to_owned());
                let detail = v
                    .str()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let message = if detail.is_empty() {
                    kind
                } else {
                    format!("{kind}: {detail}")
                };
                self.write_log(LogLevel::Error, &message);
            }
        }
        self.finish();
    }

    /// `correlation_id,parent_id,name` of this span, for rows written
    /// through the tracer on its behalf.
    pub fn fields(&self) -> &[u8] {
        &self.fields
    }

    fn finish(&self) {
        if !self.ended.swap(true, Ordering::Relaxed) {
            self.sink
                .append(|p| push_row(&mut p.buf, now_ns(), EventType::SpanEnd, &self.fields, None));
        }
    }

    fn write_log(&self, level: LogLevel, message: &str) {
        write_log(&self.sink, &self.fields, level, message);
    }
}

/// Appends a `log` row with the given `correlation_id,parent_id,name`
/// fields, cutting the message to the sink's budget (counted).
pub fn write_log(sink: &Sink, fields: &[u8], level: LogLevel, message: &str) {
    let message = match truncate(message, sink.max_message_bytes) {
        Some(cut) => {
            sink.messages_truncated.fetch_add(1, Ordering::Relaxed);
            cut
        }
        None => message,
    };
    sink.append(|p| {
        push_row(
            &mut p.buf,
            now_ns(),
            EventType::Log,
            fields,
            Some((level.name(), message)),
        )
    });
}

impl Drop for Span {
    fn drop(&mut self) {
        self.finish();
    }
}

#[pymethods]
impl Span {
    /// A child span whose `parent_id` is this span's `correlation_id`. Also
    /// allowed after this span ended (work it started may outlive it).
    fn child(&self, name: &Bound<'_, PyAny>) -> PyResult<Span> {
        let name = span_name(&self.sink, name)?;
        Ok(Span::start(self.sink.clone(), Origin::under(self), name))
    }

    /// A `log` row carrying this span's ids and name. `level` is a
    /// `TelemetryLogLevel` or its name. Also allowed after the span ended.
    fn log(&self, level: &Bound<'_, PyAny>, message: &Bound<'_, PyAny>) -> PyResult<()> {
        let level = LogLevel::from_py(level)?;
        let message = text(&self.sink, message, "log message")?;
        self.write_log(level, &message);
        Ok(())
    }

    /// Writes the `span_end` row; only the first call (or the `with` exit,
    /// or the drop) does.
    fn end(&self) {
        self.finish();
    }

    /// This span's id (a UUID string), the `parent_id` of its children.
    #[getter]
    fn correlation_id(&self) -> String {
        self.id.hyphenated().to_string()
    }

    /// The parent's correlation id, or `None` for a root span.
    #[getter]
    fn parent_id(&self) -> Option<String> {
        self.parent.map(|p| p.hyphenated().to_string())
    }

    /// The name given when the span was started.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// Whether its `span_end` row was written.
    #[getter]
    fn ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }

    /// `with tracer.start_span(...) as span:` ends it at the end of the block.
    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Ends the span; an exception leaving the block is first logged on the
    /// span at ERROR (and still propagates).
    #[pyo3(signature = (exc_type = None, exc_value = None, traceback = None))]
    fn __exit__(
        &self,
        exc_type: Option<&Bound<'_, PyAny>>,
        exc_value: Option<&Bound<'_, PyAny>>,
        traceback: Option<&Bound<'_, PyAny>>,
    ) -> bool {
        let _ = traceback;
        self.exit_with(exc_type, exc_value);
        false
    }

    /// The W3C `traceparent` header naming this span as the parent:
    /// `00-<trace id>-<low 64 bits of correlation_id>-01`.
    fn traceparent(&self) -> String {
        traceparent::format(&self.trace, &self.id)
    }

    /// The W3C trace id (32 hex digits): the root span's correlation id.
    #[getter]
    fn trace_id(&self) -> String {
        format!("{:032x}", self.trace.as_u128())
    }

    fn __repr__(&self) -> String {
        format!(
            "Span(name={:?}, correlation_id='{}', ended={})",
            self.name,
            self.id.hyphenated(),
            if self.ended.load(Ordering::Relaxed) {
                "True"
            } else {
                "False"
            }
        )
    }
}
