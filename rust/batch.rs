//! `observe_many`'s arrays from Python: durations and timestamps read
//! through numpy (any array-like, one conversion per batch), with the
//! input decided on purpose: text is refused rather than parsed, shapes
//! beyond 1-D are refused, and a timestamp that is no time is marked so
//! its sample is dropped and counted (see the README's bad-input table).

use crate::gil::GilOnce;
use crate::processor::type_name;
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyInt, PyString};

static NUMPY: GilOnce<Py<PyModule>> = GilOnce::new();

fn numpy(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    Ok(NUMPY
        .get_or_try_init(py, || py.import("numpy").map(Bound::unbind))?
        .bind(py))
}

/// A 1-D array-like of numbers as a numpy array (its own dtype).
fn numbers<'py>(
    py: Python<'py>,
    name: &str,
    values: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let array = numpy(py)?.call_method1(intern!(py, "asarray"), (values,))?;
    // numpy would parse text ("1.5", ["2"]) as numbers; text is a caller's
    // mistake (an unparsed CSV field), so it is refused, not guessed at.
    // Also in numpy 2's StringDType ('T') and in an object array (a pandas
    // column of str), which numpy parses item by item.
    let kind = dtype_kind(&array)?;
    if matches!(kind, 'U' | 'S' | 'T') || (kind == 'O' && holds_text(&array)?) {
        return Err(PyTypeError::new_err(format!(
            "{name} must be numbers, not text (got a {} holding text)",
            type_name(values)
        )));
    }
    if array.getattr(intern!(py, "ndim"))?.extract::<usize>()? > 1 {
        return Err(PyValueError::new_err(format!(
            "{name} must be 1-D (a scalar counts as one value)"
        )));
    }
    Ok(array)
}

/// Whether an object array holds a str or bytes (numpy's text).
fn holds_text(array: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = array.py();
    for item in array.call_method0(intern!(py, "ravel"))?.try_iter()? {
        let item = item?;
        if item.is_instance_of::<PyString>() || item.is_instance_of::<PyBytes>() {
            return Ok(true);
        }
    }
    Ok(false)
}

fn dtype_kind(array: &Bound<'_, PyAny>) -> PyResult<char> {
    let py = array.py();
    array
        .getattr(intern!(py, "dtype"))?
        .getattr(intern!(py, "kind"))?
        .extract()
}

/// The 8-byte numbers `read_as` gives.
trait Word: Sized {
    fn from_ne(bytes: [u8; 8]) -> Self;
}

impl Word for f64 {
    fn from_ne(bytes: [u8; 8]) -> Self {
        f64::from_ne_bytes(bytes)
    }
}

impl Word for i64 {
    fn from_ne(bytes: [u8; 8]) -> Self {
        i64::from_ne_bytes(bytes)
    }
}

/// `array` (0-D or 1-D) converted to `dtype` as numpy casts, one `T` each.
fn read_as<T: Word>(array: &Bound<'_, PyAny>, dtype: &str) -> PyResult<Vec<T>> {
    let py = array.py();
    let flat = numpy(py)?.call_method1(intern!(py, "ascontiguousarray"), (array, dtype))?;
    let bytes = flat
        .call_method0(intern!(py, "tobytes"))?
        .cast_into::<PyBytes>()?;
    Ok(bytes
        .as_bytes()
        .chunks_exact(8)
        .map(|c| T::from_ne(c.try_into().unwrap()))
        .collect())
}

/// The caller's `timestamps_ns`: each one a time (`Ok`), or what was given
/// for one that is none (`Err`: NaN, infinite, before the epoch, past
/// 2**63 - 1 ns), whose sample is then dropped and counted. Floats are
/// read as floats, so a NaN is seen rather than cast to numpy's arbitrary
/// integer.
pub fn stamps_of(py: Python<'_>, given: &Bound<'_, PyAny>) -> PyResult<Vec<Result<i64, f64>>> {
    let array = numbers(py, "timestamps_ns", given)?;
    Ok(if dtype_kind(&array)? == 'f' {
        read_as::<f64>(&array, "float64")?
            .into_iter()
            .map(|ns| {
                // `i64::MAX as f64` rounds up to 2**63: every float below
                // it is an i64 (the largest, 2**63 - 1024, a valid time).
                if (0.0..i64::MAX as f64).contains(&ns) {
                    Ok(ns as i64)
                } else {
                    Err(ns)
                }
            })
            .collect()
    } else {
        let ints = match read_as::<i64>(&array, "int64") {
            Ok(ints) => ints,
            // numpy keeps a Python int past 64 bits as an object, and its
            // cast then refuses the whole call: read one by one instead.
            Err(e) if e.is_instance_of::<PyOverflowError>(py) && dtype_kind(&array)? == 'O' => {
                return object_stamps(&array);
            }
            Err(e) => return Err(e),
        };
        ints.into_iter().map(stamp_of_int).collect()
    })
}

fn stamp_of_int(ns: i64) -> Result<i64, f64> {
    if ns >= 0 {
        Ok(ns)
    } else {
        Err(ns as f64)
    }
}

/// `stamps_of` for an object array holding an int past 64 bits: that one
/// is no time; each item is an int as numpy's cast makes it (`int(item)`).
fn object_stamps(array: &Bound<'_, PyAny>) -> PyResult<Vec<Result<i64, f64>>> {
    let py = array.py();
    let int = py.get_type::<PyInt>();
    let mut stamps = Vec::new();
    for item in array.call_method0(intern!(py, "ravel"))?.try_iter()? {
        let item = int.call1((item?,))?;
        stamps.push(match item.extract::<i64>() {
            Ok(ns) => stamp_of_int(ns),
            // Past 10**308 even a float says only which way.
            Err(_) => Err(item.extract::<f64>().unwrap_or(if item.gt(0)? {
                f64::INFINITY
            } else {
                f64::NEG_INFINITY
            })),
        });
    }
    Ok(stamps)
}

/// The durations, as float64 (numpy's cast).
pub fn values_of(py: Python<'_>, values: &Bound<'_, PyAny>) -> PyResult<Vec<f64>> {
    read_as::<f64>(&numbers(py, "values", values)?, "float64")
}
