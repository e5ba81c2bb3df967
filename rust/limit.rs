//! Sizes and counts given to constructors (`capacity`, `max_series`, ...).
//!
//! PyO3 names the argument only in a `TypeError`: a negative or too large
//! int became a bare `OverflowError` ("can't convert negative int to
//! unsigned") that did not say which of five limits was wrong. A `Limit`
//! takes any int, and the constructor checks it by name.

use pyo3::exceptions::{PyOverflowError, PyValueError};
use pyo3::prelude::*;

pub struct Limit(Result<usize, String>);

impl Limit {
    pub const fn new(value: usize) -> Self {
        Limit(Ok(value))
    }

    /// The value if it is at least `min`; else a `ValueError` naming the
    /// argument and what it got.
    pub fn at_least(self, owner: &str, name: &str, min: usize) -> PyResult<usize> {
        match self.0 {
            Ok(v) if v >= min => Ok(v),
            Ok(v) => Err(PyValueError::new_err(format!(
                "{owner}: {name} must be at least {min}, got {v}"
            ))),
            Err(got) => Err(PyValueError::new_err(format!(
                "{owner}: {name} must be an int from {min} to {}, got {got}",
                usize::MAX
            ))),
        }
    }
}

impl<'py> FromPyObject<'_, 'py> for Limit {
    type Error = PyErr;

    fn extract(ob: Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        match ob.extract::<usize>() {
            Ok(v) => Ok(Limit(Ok(v))),
            Err(e) if e.is_instance_of::<PyOverflowError>(ob.py()) => Ok(Limit(Err(ob
                .repr()
                .map(|r| r.to_string())
                .unwrap_or_default()))),
            Err(e) => Err(e),
        }
    }
}
