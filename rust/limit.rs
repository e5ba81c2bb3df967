//! Sizes and counts given to constructors (`capacity`, `max_series`, ...).
//!
//! A negative or too large int became a bare `OverflowError` ("can't
//! convert negative int to unsigned") that did not say which of five
//! limits was wrong, and since PyO3 0.29 a wrong type's `TypeError` names
//! the argument only in an exception note, which Python 3.10 does not have
//! (nor `str(err)` on any version). A `Limit` takes any object, and the
//! constructor checks it by name.

use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;

pub struct Limit(Result<usize, Bad>);

/// What a `Limit` got instead of a usable int.
enum Bad {
    /// An int out of `usize`'s range (its repr).
    Range(String),
    /// Not an int (its type's name).
    Type(String),
}

impl Limit {
    pub const fn new(value: usize) -> Self {
        Limit(Ok(value))
    }

    /// The value if it is at least `min`; else a `ValueError` (or a
    /// `TypeError` for what is no int) naming the argument and what it got.
    pub fn at_least(self, owner: &str, name: &str, min: usize) -> PyResult<usize> {
        match self.0 {
            Ok(v) if v >= min => Ok(v),
            Ok(v) => Err(PyValueError::new_err(format!(
                "{owner}: {name} must be at least {min}, got {v}"
            ))),
            Err(Bad::Range(got)) => Err(PyValueError::new_err(format!(
                "{owner}: {name} must be an int from {min} to {}, got {got}",
                usize::MAX
            ))),
            Err(Bad::Type(got)) => Err(PyTypeError::new_err(format!(
                "{owner}: {name} must be an int, got {got}"
            ))),
        }
    }
}

impl<'py> FromPyObject<'_, 'py> for Limit {
    type Error = PyErr;

    fn extract(ob: Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        let py = ob.py();
        match ob.extract::<usize>() {
            Ok(v) => Ok(Limit(Ok(v))),
            // Raised by the object's own `__index__`: not ours to name.
            Err(e) if crate::interrupt::is_interrupt(py, &e) => Err(e),
            Err(e) if e.is_instance_of::<PyOverflowError>(py) => Ok(Limit(Err(Bad::Range(
                ob.repr().map(|r| r.to_string()).unwrap_or_default(),
            )))),
            Err(_) => Ok(Limit(Err(Bad::Type(
                ob.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|_| "?".into()),
            )))),
        }
    }
}
