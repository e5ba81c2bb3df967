//! The EDGELESS telemetry events, and their Python face.
//!
//! Enums cross the boundary as small ints; the Python package wraps them in
//! `IntEnum`s (`TelemetryLogLevel`, `FunctionExitStatus`, `FunctionTime`), so
//! Rust and Python agree on the numbering defined here.

use crate::chain::Invocation;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// Duration-carrying events, in EDGELESS order; also the PerformanceTarget's
/// per-function series index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FunctionTime {
    Instantiate = 0,
    Init = 1,
    Execution = 2,
    Stop = 3,
    Transfer = 4,
}

impl FunctionTime {
    pub const ALL: [FunctionTime; 5] = [
        FunctionTime::Instantiate,
        FunctionTime::Init,
        FunctionTime::Execution,
        FunctionTime::Stop,
        FunctionTime::Transfer,
    ];

    pub fn from_index(i: i64) -> Option<Self> {
        usize::try_from(i)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
    }

    /// The metric name EDGELESS uses in Redis keys and CSV rows.
    pub fn metric_name(self) -> &'static str {
        match self {
            FunctionTime::Instantiate => "function_instantiate_time",
            FunctionTime::Init => "function_init_time",
            FunctionTime::Execution => "function_execution_time",
            FunctionTime::Stop => "function_stop_time",
            FunctionTime::Transfer => "function_transfer_time",
        }
    }

    fn event_name(self) -> &'static str {
        match self {
            FunctionTime::Instantiate => "function_instantiate",
            FunctionTime::Init => "function_init",
            FunctionTime::Execution => "function_invocation_completed",
            FunctionTime::Stop => "function_stop",
            FunctionTime::Transfer => "function_transfer",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum LogLevel {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
    Trace = 4,
}

impl LogLevel {
    pub const ALL: [LogLevel; 5] = [
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ];

    pub fn from_index(i: i64) -> Option<Self> {
        usize::try_from(i)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
    }

    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Error => "ERROR",
            LogLevel::Warn => "WARN",
            LogLevel::Info => "INFO",
            LogLevel::Debug => "DEBUG",
            LogLevel::Trace => "TRACE",
        }
    }

    /// Accepts the enum (an int) or its name, case-insensitively; used by
    /// setup-style calls that may raise.
    pub fn from_py(value: &Bound<'_, PyAny>) -> PyResult<Self> {
        match value.extract::<i64>() {
            Ok(i) => {
                return Self::from_index(i).ok_or_else(|| {
                    PyValueError::new_err(format!("log level {i} is out of range 0..=4"))
                })
            }
            // Raised by the value's `__index__`: not a wrong level.
            Err(err) if crate::interrupt::is_interrupt(value.py(), &err) => return Err(err),
            Err(_) => {}
        }
        if let Ok(s) = value.extract::<String>() {
            let upper = s.to_ascii_uppercase();
            let name = if upper == "WARNING" {
                "WARN"
            } else {
                upper.as_str()
            };
            return Self::ALL
                .into_iter()
                .find(|l| l.name() == name)
                .ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "unknown log level {s:?}: use TelemetryLogLevel or one of ERROR, WARN, INFO, DEBUG, TRACE"
                    ))
                });
        }
        Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "log level must be a TelemetryLogLevel or its name, not {}",
            value.get_type().name()?
        )))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitStatus {
    Ok = 0,
    InternalError = 1,
    CodeError = 2,
}

impl ExitStatus {
    pub fn from_index(i: i64) -> Option<Self> {
        match i {
            0 => Some(ExitStatus::Ok),
            1 => Some(ExitStatus::InternalError),
            2 => Some(ExitStatus::CodeError),
            _ => None,
        }
    }
}

/// An event as the targets see it: borrowed, never allocated on the hot path.
#[derive(Clone, Copy, Debug)]
pub enum EventRef<'a> {
    /// A duration in seconds, already validated (finite, >= 0).
    /// `invocation` is only meaningful for invocations (EDGELESS's
    /// `EVENT_TYPE`).
    Duration {
        kind: FunctionTime,
        seconds: f64,
        invocation: Invocation,
    },
    Exit(ExitStatus),
    Log {
        level: LogLevel,
        target: &'a str,
        message: &'a str,
    },
}

/// Why a duration is refused: the hot path counts it, setup calls raise.
pub fn check_duration(seconds: f64) -> Result<f64, &'static str> {
    if seconds.is_nan() {
        Err("a duration must not be NaN")
    } else if seconds.is_infinite() {
        Err("a duration must be finite")
    } else if seconds < 0.0 {
        Err("a duration must not be negative")
    } else {
        Ok(seconds)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Payload {
    Duration(FunctionTime, f64),
    Exit(ExitStatus),
    Log(LogLevel, String, String),
}

/// A telemetry event for the generic `TelemetryHandle.observe` path and for
/// targets written in Python. Constructors validate and raise `ValueError`
/// (a NaN, infinite or negative duration), since building an event object is
/// not the hot path; the handle's fast methods count and drop instead.
#[pyclass(module = "edgeless_telemetry._core", frozen)]
#[derive(Clone, Debug)]
pub struct TelemetryEvent {
    payload: Payload,
}

impl TelemetryEvent {
    fn duration(kind: FunctionTime, seconds: f64) -> PyResult<Self> {
        let seconds = check_duration(seconds)
            .map_err(|why| PyValueError::new_err(format!("{why}, got {seconds}")))?;
        Ok(Self {
            payload: Payload::Duration(kind, seconds),
        })
    }

    pub fn from_ref(event: &EventRef<'_>) -> Self {
        let payload = match *event {
            EventRef::Duration { kind, seconds, .. } => Payload::Duration(kind, seconds),
            EventRef::Exit(status) => Payload::Exit(status),
            EventRef::Log {
                level,
                target,
                message,
            } => Payload::Log(level, target.to_owned(), message.to_owned()),
        };
        Self { payload }
    }

    pub fn as_ref(&self, invocation: Invocation) -> EventRef<'_> {
        match &self.payload {
            Payload::Duration(kind, seconds) => EventRef::Duration {
                kind: *kind,
                seconds: *seconds,
                invocation,
            },
            Payload::Exit(status) => EventRef::Exit(*status),
            Payload::Log(level, target, message) => EventRef::Log {
                level: *level,
                target,
                message,
            },
        }
    }
}

#[pymethods]
impl TelemetryEvent {
    /// A FunctionInstantiate event (seconds); `ValueError` for NaN, infinite
    /// or negative durations.
    #[staticmethod]
    fn function_instantiate(seconds: f64) -> PyResult<Self> {
        Self::duration(FunctionTime::Instantiate, seconds)
    }

    /// A FunctionInit event (seconds); `ValueError` for a bad duration.
    #[staticmethod]
    fn function_init(seconds: f64) -> PyResult<Self> {
        Self::duration(FunctionTime::Init, seconds)
    }

    /// A FunctionInvocationCompleted event (seconds); `ValueError` for a bad
    /// duration.
    #[staticmethod]
    fn function_invocation_completed(seconds: f64) -> PyResult<Self> {
        Self::duration(FunctionTime::Execution, seconds)
    }

    /// A FunctionStop event (seconds); `ValueError` for a bad duration.
    #[staticmethod]
    fn function_stop(seconds: f64) -> PyResult<Self> {
        Self::duration(FunctionTime::Stop, seconds)
    }

    /// A FunctionTransfer event (seconds); `ValueError` for a bad duration.
    #[staticmethod]
    fn function_transfer(seconds: f64) -> PyResult<Self> {
        Self::duration(FunctionTime::Transfer, seconds)
    }

    /// A FunctionExit event with a `FunctionExitStatus`; `ValueError` for
    /// another value.
    #[staticmethod]
    fn function_exit(status: i64) -> PyResult<Self> {
        let status = ExitStatus::from_index(status).ok_or_else(|| {
            PyValueError::new_err(format!("exit status {status} is not a FunctionExitStatus"))
        })?;
        Ok(Self {
            payload: Payload::Exit(status),
        })
    }

    /// A FunctionLogEntry event (level, target, message).
    #[staticmethod]
    fn function_log_entry(
        level: &Bound<'_, PyAny>,
        target: String,
        message: String,
    ) -> PyResult<Self> {
        Ok(Self {
            payload: Payload::Log(LogLevel::from_py(level)?, target, message),
        })
    }

    /// The event's name, e.g. `"function_invocation_completed"`.
    #[getter]
    fn kind(&self) -> &'static str {
        match &self.payload {
            Payload::Duration(kind, _) => kind.event_name(),
            Payload::Exit(_) => "function_exit",
            Payload::Log(..) => "function_log_entry",
        }
    }

    /// Index into `FunctionTime` for duration events, else `None`.
    #[getter]
    fn function_time(&self) -> Option<u8> {
        match &self.payload {
            Payload::Duration(kind, _) => Some(*kind as u8),
            _ => None,
        }
    }

    /// The duration in seconds, or `None` for an exit or log event.
    #[getter]
    fn duration_s(&self) -> Option<f64> {
        match &self.payload {
            Payload::Duration(_, s) => Some(*s),
            _ => None,
        }
    }

    /// The exit status, or `None` for other events.
    #[getter]
    fn status(&self) -> Option<u8> {
        match &self.payload {
            Payload::Exit(s) => Some(*s as u8),
            _ => None,
        }
    }

    /// The log level, or `None` for other events.
    #[getter]
    fn level(&self) -> Option<u8> {
        match &self.payload {
            Payload::Log(l, ..) => Some(*l as u8),
            _ => None,
        }
    }

    /// The log entry's target, or `None` for other events.
    #[getter]
    fn target(&self) -> Option<&str> {
        match &self.payload {
            Payload::Log(_, t, _) => Some(t),
            _ => None,
        }
    }

    /// The log entry's message, or `None` for other events.
    #[getter]
    fn message(&self) -> Option<&str> {
        match &self.payload {
            Payload::Log(_, _, m) => Some(m),
            _ => None,
        }
    }

    pub fn __repr__(&self) -> String {
        match &self.payload {
            Payload::Duration(kind, s) => format!("TelemetryEvent.{}({s})", kind.event_name()),
            Payload::Exit(st) => format!("TelemetryEvent.function_exit({})", *st as u8),
            Payload::Log(l, t, m) => format!(
                "TelemetryEvent.function_log_entry({}, {t:?}, {m:?})",
                l.name()
            ),
        }
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        match other.cast::<TelemetryEvent>() {
            Ok(o) => self.payload == o.get().payload,
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_checked() {
        assert!(check_duration(f64::NAN).is_err());
        assert!(check_duration(f64::INFINITY).is_err());
        assert!(check_duration(-0.1).is_err());
        assert_eq!(check_duration(0.0), Ok(0.0));
    }

    #[test]
    fn enum_indices_round_trip() {
        for k in FunctionTime::ALL {
            assert_eq!(FunctionTime::from_index(k as i64), Some(k));
        }
        assert_eq!(FunctionTime::from_index(5), None);
        assert_eq!(LogLevel::from_index(-1), None);
    }
}
