//! Interrupts raised inside the chain's calls into Python, carried out to
//! the caller.
//!
//! A signal handler runs in the main thread wherever Python code runs
//! there, so a `KeyboardInterrupt` (Ctrl-C) or the `SystemExit` of a
//! SIGTERM handler calling `sys.exit()` often surfaces inside a Python
//! target or a `logging` handler that an event called. The hot path never
//! raises for bad data, but these are no data errors: swallowed (counted
//! as a target error, or printed as unraisable) the program went on as if
//! the signal never came. So a route keeps the first one here and the
//! handle method that emitted the event raises it once the event has been
//! through the chain (the other targets still record it). The same holds
//! for the value's own conversions (a user's `__float__`, `__index__`,
//! `__str__`, `__repr__`): kept, not counted as a bad value.
//!
//! Only `BaseException`s that are not `Exception`s count: those are what
//! Python itself lets through `except Exception`.

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Threads whose `PENDING` holds one: the check on every event is one
/// load of this (a thread-local costs a call in a shared library).
static KEPT: AtomicUsize = AtomicUsize::new(0);

/// This thread's kept interrupt. A thread that ends with one still kept
/// (nothing took it) gives its count back, or every later event in the
/// process would take the slow check.
struct Pending(Option<PyErr>);

impl Drop for Pending {
    fn drop(&mut self) {
        if self.0.take().is_some() {
            KEPT.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

thread_local! {
    static PENDING: RefCell<Pending> = const { RefCell::new(Pending(None)) };
}

/// Whether `err` is an interrupt (not an `Exception`) rather than an error.
pub fn is_interrupt(py: Python<'_>, err: &PyErr) -> bool {
    !err.is_instance_of::<PyException>(py)
}

/// Keeps `err` for the caller if it is an interrupt (the first one wins);
/// gives it back otherwise, to be handled as the error it is.
pub fn keep(py: Python<'_>, err: PyErr) -> Option<PyErr> {
    if !is_interrupt(py, &err) {
        return Some(err);
    }
    let _ = PENDING.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.0.is_none() {
            p.0 = Some(err);
            KEPT.fetch_add(1, Ordering::Relaxed);
        }
    });
    None
}

/// The interrupt kept on this thread since the last call, as an error to
/// raise, or `Ok`.
#[inline]
pub fn take() -> PyResult<()> {
    if KEPT.load(Ordering::Relaxed) != 0 {
        return take_now();
    }
    Ok(())
}

#[cold]
fn take_now() -> PyResult<()> {
    match PENDING.try_with(|p| p.borrow_mut().0.take()) {
        Ok(Some(err)) => {
            KEPT.fetch_sub(1, Ordering::Relaxed);
            Err(err)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyo3::exceptions::PyKeyboardInterrupt;

    #[test]
    fn a_thread_that_ends_with_one_kept_gives_its_count_back() {
        Python::initialize();
        let before = KEPT.load(Ordering::Relaxed);
        std::thread::spawn(move || {
            Python::attach(|py| {
                assert!(keep(py, PyKeyboardInterrupt::new_err(())).is_none());
            });
            assert_eq!(KEPT.load(Ordering::Relaxed), before + 1);
        })
        .join()
        .unwrap();
        assert_eq!(KEPT.load(Ordering::Relaxed), before);
        assert!(take().is_ok());
    }
}
