//! Data that only the GIL-holding thread may touch.
//!
//! The extension is built for the GIL-enabled ABI (abi3), so at most one
//! thread runs inside it with the GIL at a time. Using the GIL as the lock
//! keeps the hot path free of atomics read-modify-writes and mutexes: a
//! buffered sample costs a plain store. Anything that must be read without
//! the GIL (the Prometheus scrape thread) lives in atomics instead.

use pyo3::Python;
use std::cell::{Cell, UnsafeCell};

pub struct GilCell<T> {
    value: UnsafeCell<T>,
    /// Guards against re-entrance (a closure that calls back into the same
    /// cell), which would otherwise hand out two `&mut T`.
    busy: Cell<bool>,
}

// SAFETY: every access goes through `with`, which demands a `Python` token,
// i.e. the GIL; the GIL serialises all accessing threads and its
// acquire/release gives the needed happens-before between them.
unsafe impl<T: Send> Sync for GilCell<T> {}
unsafe impl<T: Send> Send for GilCell<T> {}

impl<T> GilCell<T> {
    pub const fn new(value: T) -> Self {
        Self {
            value: UnsafeCell::new(value),
            busy: Cell::new(false),
        }
    }

    /// Runs `f` with exclusive access. `f` must not release the GIL (no
    /// calls into Python), or another thread could enter.
    #[inline]
    pub fn with<R>(&self, _py: Python<'_>, f: impl FnOnce(&mut T) -> R) -> R {
        assert!(!self.busy.replace(true), "GilCell re-entered");
        // SAFETY: GIL held (token) and not re-entered (flag above).
        let result = f(unsafe { &mut *self.value.get() });
        self.busy.set(false);
        result
    }
}
