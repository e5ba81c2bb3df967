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
    /// Runs at thread exit, when the thread is no longer attached to
    /// Python: dropping the error there would leave its decrefs to PyO3's
    /// pool, whose lock a `fork()` at that instant leaves held in the child
    /// (README, "Process life"). So it is dropped attached, unless the
    /// interpreter is gone or exiting: then it is leaked (one exception, at
    /// most once per thread).
    fn drop(&mut self) {
        let Some(err) = self.0.take() else {
            return;
        };
        KEPT.fetch_sub(1, Ordering::Relaxed);
        let mut err = Some(err);
        crate::gil::with_gil_unless_exiting(|_py| drop(err.take()));
        std::mem::forget(err);
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

    #[test]
    fn a_thread_that_ends_with_one_kept_drops_it_attached() {
        Python::initialize();
        let (err, value) = Python::attach(|py| {
            let err = PyKeyboardInterrupt::new_err(());
            let value = err.value(py).clone().unbind();
            (err, value)
        });
        let refs = || {
            // Read without attaching through PyO3, which would first apply
            // the decrefs waiting in its pool: what this looks for. (No
            // other thread touches this object.)
            // SAFETY: `value` keeps the object alive.
            unsafe { pyo3::ffi::Py_REFCNT(value.as_ptr()) }
        };
        let held = refs();
        std::thread::spawn(move || {
            Python::attach(|py| assert!(keep(py, err).is_none()));
        })
        .join()
        .unwrap();
        // Dropped by the ending thread itself, attached (a drop left to the
        // pool would still count here).
        assert_eq!(refs(), held - 1);
        Python::attach(|_py| drop(value));
    }
}
