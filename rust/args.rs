//! Arguments given to constructors and other set-up calls, checked by
//! name.
//!
//! Since PyO3 0.29 a wrong type's `TypeError` names the argument only in an
//! exception note, which Python 3.10 (Ubuntu 22.04's, on many nodes) does
//! not have, and which `str(err)` never shows: `PrometheusTarget(9100)`
//! said only "'int' object is not an instance of 'str'". And a negative or
//! too large size became a bare `OverflowError` ("can't convert negative
//! int to unsigned") that did not say which of five limits was wrong. So
//! set-up arguments are taken as an `Arg` (any type) or a `Limit` (a size
//! or count), which never fail to extract, and the call checks each by
//! name. Not for the hot path: there PyO3's own extraction is cheaper.

use pyo3::exceptions::{PyBaseException, PyOverflowError, PyTypeError, PyValueError};
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

/// Any other set-up argument: a `T`, or the error its extraction gave,
/// raised by `named` with the argument's name in the message.
pub struct Arg<T>(Result<T, PyErr>);

impl<T> Arg<T> {
    pub fn value(value: T) -> Self {
        Arg(Ok(value))
    }

    /// The value, or the extraction's error (its type kept: `TypeError`,
    /// `OverflowError`, ...) as "`owner`: `name`: <what PyO3 said>".
    pub fn named(self, owner: &str, name: &str) -> PyResult<T> {
        self.0.map_err(|err| named_error(err, owner, name))
    }
}

/// `Arg::named`'s error path, once for every `T` (it was a third of what
/// the `Arg`s added to the wheel).
#[cold]
#[inline(never)]
fn named_error(err: PyErr, owner: &str, name: &str) -> PyErr {
    Python::attach(|py| {
        let message = format!("{owner}: {name}: {}", err.value(py));
        renamed(py, err, &message)
    })
}

/// `err` with `message` instead: of its own class if that takes a message
/// alone, else of the nearest base class that does, with `err` as its
/// `__cause__`. Not every class does: a `str` with a lone surrogate fails
/// with a `UnicodeEncodeError` (five arguments), a user's `__index__` may
/// raise their own class; a new one made of the class alone failed only
/// when raised, as a `TypeError` about its arguments that hid the message.
fn renamed(py: Python<'_>, err: PyErr, message: &str) -> PyErr {
    let classes = err.get_type(py).mro();
    for (i, class) in classes.iter().enumerate() {
        match class.call1((message,)) {
            Ok(new)
                if new.is_instance(&class).unwrap_or(false)
                    && new.is_instance_of::<PyBaseException>() =>
            {
                let new = PyErr::from_value(new);
                if i > 0 {
                    new.set_cause(py, Some(err));
                }
                return new;
            }
            // A user's class may run code: an interrupt there is the caller's.
            Err(e) if crate::interrupt::is_interrupt(py, &e) => return e,
            _ => {}
        }
    }
    err
}

impl<'a, 'py, T> FromPyObject<'a, 'py> for Arg<T>
where
    T: FromPyObject<'a, 'py>,
    T::Error: Into<PyErr>,
{
    type Error = PyErr;

    fn extract(ob: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        match ob.extract::<T>().map_err(Into::into) {
            // Raised by the object's own conversion (`__index__`,
            // `__float__`): not ours to name.
            Err(e) if crate::interrupt::is_interrupt(ob.py(), &e) => Err(e),
            other => Ok(Arg(other)),
        }
    }
}
