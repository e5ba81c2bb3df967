//! `TelemetryProcessor` and `TelemetryHandle`: the data-plane entry points.
//!
//! Setup calls (`TelemetryProcessor(...)`, `get_handle`, `fork`) validate and
//! raise; the per-event methods never raise for bad data, they count and
//! drop it (see `counters`). An event runs through the chain on the
//! caller's thread, inside one call into Rust.

use crate::args::Arg;
use crate::batch;
use crate::chain::{dispatch, Invocation, Route, Tags, Target, EVENT_TYPE, FUNCTION_ID};
use crate::clock::EventClock;
use crate::counters::{Counters, DropReason, DropSource};
use crate::events::{check_duration, EventRef, ExitStatus, FunctionTime, LogLevel, TelemetryEvent};
use crate::log_target::LogTarget;
use crate::performance::{parse_function_id, PerformanceTarget};
use crate::py_target::PyTarget;
use crate::text::Text;
use crate::timing::{OnError, Timer, TimerSlot, TimerSpec};
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Longest tag key or value accepted at setup (they become label values).
const MAX_TAG_BYTES: usize = 4096;
const MAX_TAGS: usize = 64;

struct Core {
    targets: Vec<Box<dyn Target>>,
    counters: Arc<Counters>,
}

impl Core {
    fn resolve(&self, py: Python<'_>, tags: &Tags) -> PyResult<Box<[Box<dyn Route>]>> {
        self.targets.iter().map(|t| t.resolve(py, tags)).collect()
    }
}

/// Fans each event out to its targets, in order (EDGELESS chain semantics).
#[pyclass(module = "edgeless_telemetry._core", frozen)]
pub struct TelemetryProcessor {
    core: Arc<Core>,
    /// Keeps the Python target objects (and their servers) alive.
    target_objects: Py<PyTuple>,
}

/// Turns a user's target object into a chain member; the single place that
/// knows the native target types.
fn native_target(
    py: Python<'_>,
    object: &Bound<'_, PyAny>,
    counters: &Arc<Counters>,
) -> PyResult<Box<dyn Target>> {
    if let Ok(perf) = object.cast::<PerformanceTarget>() {
        return Ok(Box::new(perf.get().store.clone()));
    }
    if let Ok(prom) = object.cast::<crate::prometheus::PrometheusTarget>() {
        return Ok(Box::new(prom.get().target()));
    }
    if object.hasattr("handle")? && object.getattr("handle")?.is_callable() {
        return Ok(Box::new(PyTarget::new(
            object.clone().unbind(),
            counters.clone(),
        )));
    }
    let _ = py;
    Err(PyTypeError::new_err(format!(
        "TelemetryProcessor: a target must be a PerformanceTarget, a PrometheusTarget or an object with a handle(event, tags) method, not {}",
        object.get_type().name()?
    )))
}

/// Lets every PrometheusTarget in the chain serve the drop counters of the
/// processor and of every PerformanceTarget beside it.
fn attach_drop_sources(objects: &[Bound<'_, PyAny>], counters: &Arc<Counters>) {
    let mut sources: Vec<Arc<dyn DropSource>> = vec![counters.clone()];
    for o in objects {
        if let Ok(perf) = o.cast::<PerformanceTarget>() {
            sources.push(perf.get().store.clone());
        }
    }
    for o in objects {
        if let Ok(prom) = o.cast::<crate::prometheus::PrometheusTarget>() {
            let registry = prom.get().target();
            for source in &sources {
                registry.attach_drops(source);
            }
        }
    }
}

#[pymethods]
impl TelemetryProcessor {
    #[new]
    #[pyo3(text_signature = "(targets, *, log=True)")]
    #[pyo3(signature = (targets, *, log = Arg::value(true)))]
    fn new(py: Python<'_>, targets: &Bound<'_, PyAny>, log: Arg<bool>) -> PyResult<Self> {
        let log = log.named("TelemetryProcessor", "log")?;
        // Calibrate the clock events are stamped with here, not at the
        // first event (about a millisecond, once per process).
        crate::clock::monotonic();
        let counters = Arc::new(Counters::default());
        let objects: Vec<Bound<'_, PyAny>> = targets
            .try_iter()
            .map_err(|_| {
                PyTypeError::new_err("TelemetryProcessor: targets must be a list of targets")
            })?
            .collect::<PyResult<_>>()?;
        let mut chain = objects
            .iter()
            .map(|o| native_target(py, o, &counters))
            .collect::<PyResult<Vec<_>>>()?;
        if log {
            chain.push(Box::new(LogTarget::new(py, counters.clone())?));
        }
        attach_drop_sources(&objects, &counters);
        Ok(Self {
            core: Arc::new(Core {
                targets: chain,
                counters,
            }),
            target_objects: PyTuple::new(py, objects)?.unbind(),
        })
    }

    /// A handle carrying `tags` (for example `NODE_ID`, `FUNCTION_ID`).
    /// Raises `TypeError` for non-string keys or values and `ValueError` for
    /// a `FUNCTION_ID` that is not a UUID or oversized tags.
    #[pyo3(signature = (tags = None))]
    fn get_handle(
        &self,
        py: Python<'_>,
        tags: Option<Arg<Bound<'_, PyDict>>>,
    ) -> PyResult<TelemetryHandle> {
        let tags = match tags {
            Some(t) => parse_handle_tags(&t.named("get_handle", "tags")?)?,
            None => Tags::new(),
        };
        TelemetryHandle::new(py, self.core.clone(), tags)
    }

    /// The targets, in chain order.
    #[getter]
    fn targets(&self, py: Python<'_>) -> Py<PyTuple> {
        self.target_objects.clone_ref(py)
    }

    /// Events dropped on the hot path, by reason (cumulative).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (name, value) in self.core.counters.snapshot() {
            d.set_item(name, value)?;
        }
        Ok(d)
    }
}

/// Validates a tags dict: string keys and values of bounded size.
fn parse_tags(dict: &Bound<'_, PyDict>) -> PyResult<Tags> {
    if dict.len() > MAX_TAGS {
        return Err(PyValueError::new_err(format!(
            "at most {MAX_TAGS} tags are allowed, got {}",
            dict.len()
        )));
    }
    let mut tags = Tags::new();
    for (k, v) in dict.iter() {
        tags.insert(tag_string(&k, "key", &k)?, tag_string(&v, "value", &k)?);
    }
    Ok(tags)
}

/// Setup calls insist on a UUID `FUNCTION_ID`; per-event tags do not (an
/// event with another id is passed on and counted, as in EDGELESS).
fn parse_handle_tags(dict: &Bound<'_, PyDict>) -> PyResult<Tags> {
    let tags = parse_tags(dict)?;
    if let Some(value) = tags.get(FUNCTION_ID) {
        if parse_function_id(value).is_none() {
            return Err(PyValueError::new_err(format!(
                "FUNCTION_ID must be a UUID (as EDGELESS uses), got {value:?}"
            )));
        }
    }
    Ok(tags)
}

fn tag_string(obj: &Bound<'_, PyAny>, what: &str, key: &Bound<'_, PyAny>) -> PyResult<String> {
    let s = obj.cast::<PyString>().map_err(|_| {
        PyTypeError::new_err(format!(
            "tag {what}s must be str, got {} for tag {}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default(),
            key.repr().map(|r| r.to_string()).unwrap_or_default()
        ))
    })?;
    let s = s.to_cow().map_err(|_| {
        PyValueError::new_err(format!(
            "tag {what} for {} is not valid UTF-8 (lone surrogate?)",
            key.repr().map(|r| r.to_string()).unwrap_or_default()
        ))
    })?;
    if s.len() > MAX_TAG_BYTES {
        return Err(PyValueError::new_err(format!(
            "tag {what} for {} is {} bytes; at most {MAX_TAG_BYTES} are allowed",
            key.repr().map(|r| r.to_string()).unwrap_or_default(),
            s.len()
        )));
    }
    Ok(s.into_owned())
}

/// What recording an event takes from a handle: the routes its tags
/// resolved to, and the tags. A handle's timers share it rather than hold
/// the handle object, so a handle can keep an idle timer for the next
/// block without the two making a reference cycle.
pub struct Emitter {
    routes: Box<[Box<dyn Route>]>,
    tags: Arc<Tags>,
}

impl Emitter {
    #[inline]
    fn emit(&self, py: Python<'_>, event: &EventRef<'_>, clock: &mut EventClock) {
        dispatch(py, &self.routes, event, &self.tags, clock);
    }

    /// For `timing::Timer`: a duration it measured (valid by construction)
    /// and, after a failure that ends the instance, the exit; both stamped
    /// with the wall-clock time the block ended.
    pub(crate) fn record_timed(
        &self,
        py: Python<'_>,
        kind: FunctionTime,
        seconds: f64,
        invocation: Invocation,
        exit: Option<ExitStatus>,
        ts_ns: i64,
    ) {
        let event = EventRef::Duration {
            kind,
            seconds,
            invocation,
        };
        let mut clock = EventClock::at(ts_ns);
        self.emit(py, &event, &mut clock);
        if let Some(status) = exit {
            self.emit(py, &EventRef::Exit(status), &mut clock);
        }
    }
}

/// Tagged entry point for one function instance (or node, or component).
/// Its tags are resolved to series once, here; an event is then one call.
#[pyclass(module = "edgeless_telemetry._core", frozen)]
pub struct TelemetryHandle {
    core: Arc<Core>,
    emitter: Arc<Emitter>,
    /// The invocation kind the handle's own `EVENT_TYPE` tag says.
    invocation: Invocation,
    /// The last timer made, handed out again while idle (`timing`).
    idle_timer: TimerSlot,
}

impl TelemetryHandle {
    fn new(py: Python<'_>, core: Arc<Core>, tags: Tags) -> PyResult<Self> {
        let routes = core.resolve(py, &tags)?;
        let invocation = Invocation::from_event_type(tags.get(EVENT_TYPE).map(String::as_str));
        Ok(Self {
            core,
            emitter: Arc::new(Emitter {
                routes,
                tags: Arc::new(tags),
            }),
            invocation,
            idle_timer: TimerSlot::default(),
        })
    }

    fn tags(&self) -> &Tags {
        &self.emitter.tags
    }

    #[inline]
    fn emit(&self, py: Python<'_>, event: &EventRef<'_>) {
        self.emitter.emit(py, event, &mut EventClock::default());
    }

    /// A timer for `kind`: the handle's idle one when it is alike.
    fn timer(
        &self,
        py: Python<'_>,
        kind: FunctionTime,
        invocation: Invocation,
        on_error: OnError,
    ) -> PyResult<Py<Timer>> {
        let spec = TimerSpec {
            kind,
            invocation,
            on_error: on_error.resolve(kind),
        };
        self.idle_timer.idle_or_new(py, spec, &self.emitter)
    }

    /// Validates a duration from Python and emits it; counts what it drops.
    #[inline]
    fn emit_duration(
        &self,
        py: Python<'_>,
        kind: FunctionTime,
        seconds: &Bound<'_, PyAny>,
        invocation: Invocation,
    ) {
        match seconds.extract::<f64>() {
            Ok(s) => match check_duration(s) {
                Ok(seconds) => self.emit(
                    py,
                    &EventRef::Duration {
                        kind,
                        seconds,
                        invocation,
                    },
                ),
                Err(why) => self.core.counters.count_drop(
                    py,
                    DropReason::InvalidValue,
                    &format!("{why}, got {s}"),
                ),
            },
            // An interrupt raised by the value's `__float__` is kept for the
            // caller (`crate::interrupt`), not counted.
            Err(err) => match crate::interrupt::keep(py, err) {
                None => {}
                // A number too large for a float (an int past 1.8e308) is a
                // value out of range, not a wrong type.
                Some(err) if err.is_instance_of::<PyOverflowError>(py) => {
                    self.core.counters.count_drop(
                        py,
                        DropReason::InvalidValue,
                        &format!(
                            "a duration must be finite, got {} too large for a float",
                            type_name(seconds)
                        ),
                    )
                }
                Some(_) => self.core.counters.count_drop(
                    py,
                    DropReason::InvalidType,
                    &format!(
                        "a duration must be a number (seconds), got {}",
                        type_name(seconds)
                    ),
                ),
            },
        }
    }

    fn invocation_named(&self, event_type: Option<&Bound<'_, PyString>>) -> Invocation {
        match event_type {
            // A str that is not UTF-8 (lone surrogates) is not "CALL".
            Some(s) => Invocation::from_event_type(Some(s.to_str().unwrap_or(""))),
            None => match self.invocation {
                Invocation::Untyped => Invocation::Cast,
                known => known,
            },
        }
    }

    /// The fast methods' `event_type=`: `"CALL"` a call, another str a
    /// cast; without it the handle's `EVENT_TYPE` tag decides, and a cast
    /// when the handle has none (the fast method names an invocation, so
    /// it is never untyped). `None` for a value that is not a str: the
    /// event is dropped and counted, never raised.
    fn invocation_of(
        &self,
        py: Python<'_>,
        event_type: Option<&Bound<'_, PyAny>>,
    ) -> Option<Invocation> {
        let Some(value) = event_type.filter(|v| !v.is_none()) else {
            return Some(self.invocation_named(None));
        };
        match value.cast::<PyString>() {
            Ok(s) => Some(self.invocation_named(Some(s))),
            Err(_) => {
                self.core.counters.count_drop(
                    py,
                    DropReason::InvalidType,
                    &format!("event_type must be a str, got {}", type_name(value)),
                );
                None
            }
        }
    }

    /// Text from Python for a log entry: a str as is (lone surrogates
    /// escaped, counted as `lossy_strings`), other objects through `str()`.
    fn text(&self, obj: &Bound<'_, PyAny>) -> PyResult<Text> {
        let s = match obj.cast::<PyString>() {
            Ok(s) => s.clone(),
            Err(_) => obj.str()?,
        };
        let text = Text::from_py(&s)?;
        if text.is_escaped() {
            self.core
                .counters
                .lossy_strings
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(text)
    }
}

/// `repr(obj)` for a drop's detail; an interrupt raised by the object's
/// `__repr__` is kept for the caller, as on the rest of the hot path.
fn repr(obj: &Bound<'_, PyAny>) -> String {
    obj.repr().map(|r| r.to_string()).unwrap_or_else(|err| {
        crate::interrupt::keep(obj.py(), err);
        String::new()
    })
}

pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

#[pymethods]
impl TelemetryHandle {
    /// A new handle with the merged tags (child tags win). Raises like
    /// `get_handle`.
    fn fork(
        &self,
        py: Python<'_>,
        child_tags: Arg<Bound<'_, PyDict>>,
    ) -> PyResult<TelemetryHandle> {
        let mut tags = self.tags().clone();
        tags.extend(parse_handle_tags(&child_tags.named("fork", "child_tags")?)?);
        TelemetryHandle::new(py, self.core.clone(), tags)
    }

    /// A copy of the handle's tags.
    #[getter(tags)]
    fn tags_copy(&self) -> Tags {
        self.tags().clone()
    }

    /// The generic path (EDGELESS `TelemetryHandleAPI::observe`). Event tags
    /// other than `EVENT_TYPE` are merged over the handle's and resolved for
    /// this event only, which is slower; prefer a forked handle.
    #[pyo3(signature = (event, event_tags = None))]
    fn observe(
        &self,
        py: Python<'_>,
        event: &Bound<'_, PyAny>,
        event_tags: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.observe_event(py, event, event_tags);
        crate::interrupt::take()
    }

    /// Records a FunctionInstantiate duration (seconds); a bad value is
    /// dropped and counted, never raised.
    fn function_instantiate(&self, py: Python<'_>, seconds: &Bound<'_, PyAny>) -> PyResult<()> {
        self.emit_duration(py, FunctionTime::Instantiate, seconds, self.invocation);
        crate::interrupt::take()
    }

    /// Records a FunctionInit duration (seconds); a bad value is dropped and
    /// counted.
    fn function_init(&self, py: Python<'_>, seconds: &Bound<'_, PyAny>) -> PyResult<()> {
        self.emit_duration(py, FunctionTime::Init, seconds, self.invocation);
        crate::interrupt::take()
    }

    /// `event_type="CALL"` marks a call; any other str a cast. Without it
    /// the handle's `EVENT_TYPE` tag decides (cast when absent); a value
    /// that is not a str drops the event, counted (`dropped_invalid_type`).
    #[pyo3(signature = (seconds, event_type = None))]
    fn invocation_completed(
        &self,
        py: Python<'_>,
        seconds: &Bound<'_, PyAny>,
        event_type: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        if let Some(invocation) = self.invocation_of(py, event_type) {
            self.emit_duration(py, FunctionTime::Execution, seconds, invocation)
        }
        crate::interrupt::take()
    }

    /// Records a FunctionStop duration (seconds); a bad value is dropped and
    /// counted.
    fn function_stop(&self, py: Python<'_>, seconds: &Bound<'_, PyAny>) -> PyResult<()> {
        self.emit_duration(py, FunctionTime::Stop, seconds, self.invocation);
        crate::interrupt::take()
    }

    /// Records a FunctionTransfer duration (seconds); a bad value is dropped
    /// and counted.
    fn function_transfer(&self, py: Python<'_>, seconds: &Bound<'_, PyAny>) -> PyResult<()> {
        self.emit_duration(py, FunctionTime::Transfer, seconds, self.invocation);
        crate::interrupt::take()
    }

    /// Records a FunctionExit with a `FunctionExitStatus`; another value is
    /// dropped and counted.
    fn function_exit(&self, py: Python<'_>, status: &Bound<'_, PyAny>) -> PyResult<()> {
        let index = status
            .extract::<i64>()
            .map_err(|e| crate::interrupt::keep(py, e));
        match index.map(ExitStatus::from_index) {
            Ok(Some(s)) => self.emit(py, &EventRef::Exit(s)),
            // An interrupt from the value's `__index__`: raised below.
            Err(None) => {}
            Ok(None) | Err(Some(_)) => self.core.counters.count_drop(
                py,
                DropReason::InvalidValue,
                &format!(
                    "function_exit needs a FunctionExitStatus, got {}",
                    repr(status)
                ),
            ),
        }
        crate::interrupt::take()
    }

    /// A function log entry. Messages longer than the PerformanceTarget's
    /// `max_message_bytes` are cut (counted there); lone surrogates are
    /// escaped as `\udXXX` (counted as `lossy_strings`); non-str values go
    /// through `str()`.
    fn log(
        &self,
        py: Python<'_>,
        level: &Bound<'_, PyAny>,
        target: &Bound<'_, PyAny>,
        message: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.log_event(py, level, target, message);
        crate::interrupt::take()
    }

    /// Records many durations of one kind at once (for runtimes that
    /// aggregate). `values` is any 1-D array-like of seconds;
    /// `timestamps_ns`, if given, one int64 per value (else all get now).
    /// Invalid values are dropped and counted; a shape mismatch raises.
    #[pyo3(signature = (kind, values, *, timestamps_ns = None, event_type = None))]
    fn observe_many(
        &self,
        py: Python<'_>,
        kind: i64,
        values: &Bound<'_, PyAny>,
        timestamps_ns: Option<&Bound<'_, PyAny>>,
        event_type: Option<&Bound<'_, PyString>>,
    ) -> PyResult<usize> {
        let kind = FunctionTime::from_index(kind).ok_or_else(|| {
            PyValueError::new_err(format!("kind must be a FunctionTime, got {kind}"))
        })?;
        let invocation = self.invocation_named(event_type);
        let values = batch::values_of(py, values)?;
        let stamps = timestamps_ns.map(|t| batch::stamps_of(py, t)).transpose()?;
        if let Some(s) = &stamps {
            if s.len() != values.len() {
                return Err(PyValueError::new_err(format!(
                    "timestamps_ns has {} entries but values has {}",
                    s.len(),
                    values.len()
                )));
            }
        }
        let now = crate::clock::wall_now_ns(py);
        let mut recorded = 0;
        for (i, v) in values.into_iter().enumerate() {
            let stamp = stamps.as_ref().map_or(Ok(now), |s| s[i]);
            match check_duration(v) {
                Ok(seconds) => {
                    let Ok(ts) = stamp else {
                        self.core.counters.count_drop(
                            py,
                            DropReason::InvalidValue,
                            &format!(
                                "a timestamp must be ns since the Unix epoch (0 to 2**63-1), got {}",
                                stamp.unwrap_err()
                            ),
                        );
                        continue;
                    };
                    let event = EventRef::Duration {
                        kind,
                        seconds,
                        invocation,
                    };
                    self.emitter.emit(py, &event, &mut EventClock::at(ts));
                    recorded += 1;
                    // The rest is not recorded once a target was
                    // interrupted (Ctrl-C must not wait for them all).
                    crate::interrupt::take()?;
                }
                Err(why) => self.core.counters.count_drop(
                    py,
                    DropReason::InvalidValue,
                    &format!("{why}, got {v}"),
                ),
            }
        }
        crate::interrupt::take()?;
        Ok(recorded)
    }

    fn __repr__(&self) -> String {
        format!("TelemetryHandle({:?})", self.tags())
    }

    // Timing (rust/timing.rs): each returns a `Timer`, a context manager
    // and decorator that records the measured duration.

    /// Times a block or function; records `invocation_completed`.
    #[pyo3(signature = (event_type = None, *, on_error = OnError::Default))]
    fn invocation(
        &self,
        py: Python<'_>,
        event_type: Option<&Bound<'_, PyString>>,
        on_error: OnError,
    ) -> PyResult<Py<Timer>> {
        let invocation = self.invocation_named(event_type);
        self.timer(py, FunctionTime::Execution, invocation, on_error)
    }

    /// Times a block or function; records `function_instantiate`.
    #[pyo3(signature = (*, on_error = OnError::Default))]
    fn timed_instantiate(&self, py: Python<'_>, on_error: OnError) -> PyResult<Py<Timer>> {
        self.timer(py, FunctionTime::Instantiate, self.invocation, on_error)
    }

    /// Times a block or function; records `function_init`.
    #[pyo3(signature = (*, on_error = OnError::Default))]
    fn timed_init(&self, py: Python<'_>, on_error: OnError) -> PyResult<Py<Timer>> {
        self.timer(py, FunctionTime::Init, self.invocation, on_error)
    }

    /// Times a block or function; records `function_stop`.
    #[pyo3(signature = (*, on_error = OnError::Default))]
    fn timed_stop(&self, py: Python<'_>, on_error: OnError) -> PyResult<Py<Timer>> {
        self.timer(py, FunctionTime::Stop, self.invocation, on_error)
    }

    /// Times a block or function; records `function_transfer`.
    #[pyo3(signature = (*, on_error = OnError::Default))]
    fn timed_transfer(&self, py: Python<'_>, on_error: OnError) -> PyResult<Py<Timer>> {
        self.timer(py, FunctionTime::Transfer, self.invocation, on_error)
    }

    /// `observe` without the interrupt check.
    fn observe_event(
        &self,
        py: Python<'_>,
        event: &Bound<'_, PyAny>,
        event_tags: Option<&Bound<'_, PyAny>>,
    ) {
        let event_tags = match event_tags
            .filter(|t| !t.is_none())
            .map(|t| t.cast::<PyDict>())
        {
            None => None,
            Some(Ok(dict)) => Some(dict),
            Some(Err(_)) => {
                return self.core.counters.count_drop(
                    py,
                    DropReason::InvalidType,
                    &format!(
                        "event_tags must be a dict of str to str, got {}",
                        type_name(event_tags.expect("matched Some"))
                    ),
                )
            }
        };
        let Ok(event) = event.cast::<TelemetryEvent>() else {
            return self.core.counters.count_drop(
                py,
                DropReason::InvalidType,
                &format!("observe() needs a TelemetryEvent, got {}", type_name(event)),
            );
        };
        let event = event.get();
        let extra = match event_tags.map(parse_tags).transpose() {
            Ok(t) => t.unwrap_or_default(),
            Err(err) => {
                return self.core.counters.count_drop(
                    py,
                    DropReason::InvalidType,
                    &format!("bad event_tags: {err}"),
                )
            }
        };
        let invocation = match extra.get(EVENT_TYPE) {
            Some(t) => Invocation::from_event_type(Some(t)),
            None => self.invocation,
        };
        let event = event.as_ref(invocation);
        if extra.keys().all(|k| k == EVENT_TYPE) {
            return self.emit(py, &event);
        }
        let mut tags = self.tags().clone();
        tags.extend(extra);
        match self.core.resolve(py, &tags) {
            Ok(routes) => dispatch(py, &routes, &event, &tags, &mut EventClock::default()),
            Err(err) => {
                self.core
                    .counters
                    .count_drop(py, DropReason::TargetError, &err.to_string())
            }
        }
    }

    /// `log` without the interrupt check.
    fn log_event(
        &self,
        py: Python<'_>,
        level: &Bound<'_, PyAny>,
        target: &Bound<'_, PyAny>,
        message: &Bound<'_, PyAny>,
    ) {
        // Interrupts from a user's `__index__` or `__str__` are kept for
        // the caller (`crate::interrupt::keep` gives back `None`), not
        // counted.
        let level = match LogLevel::from_py(level) {
            Ok(level) => level,
            Err(err) => {
                if crate::interrupt::keep(py, err).is_some() {
                    let detail = format!("unknown log level {}", repr(level));
                    self.core
                        .counters
                        .count_drop(py, DropReason::InvalidValue, &detail);
                }
                return;
            }
        };
        let texts = self.text(target).and_then(|t| Ok((t, self.text(message)?)));
        let (target, message) = match texts {
            Ok(texts) => texts,
            Err(err) => {
                if crate::interrupt::keep(py, err).is_some() {
                    self.core.counters.count_drop(
                        py,
                        DropReason::InvalidType,
                        "log target or message has no str()",
                    );
                }
                return;
            }
        };
        self.emit(
            py,
            &EventRef::Log {
                level,
                target: &target,
                message: &message,
            },
        )
    }
}
