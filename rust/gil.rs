//! Data that only the GIL-holding thread may touch.
//!
//! The extension is built for the GIL-enabled ABI (abi3), so at most one
//! thread runs inside it with the GIL at a time. Using the GIL as the lock
//! keeps the hot path free of atomics read-modify-writes and mutexes: a
//! buffered sample costs a plain store. Anything that must be read without
//! the GIL (the Prometheus scrape thread) lives in atomics instead.

use pyo3::marker::Ungil;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::Python;
use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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

/// A value made once, on first use, with the GIL held throughout.
/// `PyOnceLock::get_or_init` releases the GIL before making the value,
/// even when no other thread is making it (so that one waiting for
/// another cannot deadlock with it): a release that bypasses the
/// exit-time rule below. This keeps the old `GILOnceCell` way instead:
/// the maker runs with the GIL, and if it lets another thread in (Python
/// code may) that sets the cell first, that value wins and ours is
/// dropped. Setting never waits on Python.
#[derive(Default)]
pub struct GilOnce<T>(PyOnceLock<T>);

impl<T> GilOnce<T> {
    pub const fn new() -> Self {
        Self(PyOnceLock::new())
    }

    pub fn get_or_try_init<E>(
        &self,
        py: Python<'_>,
        make: impl FnOnce() -> Result<T, E>,
    ) -> Result<&T, E> {
        if let Some(value) = self.0.get(py) {
            return Ok(value);
        }
        let value = make()?;
        let _ = self.0.set(py, value);
        Ok(self
            .0
            .get(py)
            .expect("set just above, by us or another thread"))
    }
}

/// Releasing the GIL is unsafe for a non-main thread once the interpreter
/// finalizes: CPython 3.10-3.13 ends a thread that takes the GIL back then
/// with `pthread_exit`, whose forced unwind through our frames aborts the
/// whole process (cpython gh-87135; 3.14 hangs the thread instead). A
/// daemon thread scraping `render()` or storing a batch at exit did exactly
/// that. So from interpreter exit on (`enter_exit`, an atexit hook that
/// runs before finalization) work runs with the GIL held, and the hook
/// waits, bounded, for the sections already running without it.
static EXITING: AtomicBool = AtomicBool::new(false);
static RELEASED: AtomicUsize = AtomicUsize::new(0);
const EXIT_WAIT: Duration = Duration::from_secs(5);

thread_local! {
    /// This thread's share of `RELEASED`.
    static MINE: Cell<usize> = const { Cell::new(0) };
}

#[inline]
fn section_begin() {
    RELEASED.fetch_add(1, Ordering::SeqCst);
    MINE.with(|m| m.set(m.get() + 1));
}

#[inline]
fn section_end() {
    MINE.with(|m| m.set(m.get() - 1));
    RELEASED.fetch_sub(1, Ordering::SeqCst);
}

/// `py.detach(f)`, but safe at interpreter exit (see above).
pub fn allow_threads<T, F>(py: Python<'_>, f: F) -> T
where
    F: Ungil + FnOnce() -> T,
    T: Ungil,
{
    struct Section;
    impl Drop for Section {
        // Runs once the GIL is held again (also when `f` panics).
        fn drop(&mut self) {
            section_end();
        }
    }
    section_begin();
    let _section = Section;
    if EXITING.load(Ordering::SeqCst) {
        return f();
    }
    py.detach(f)
}

thread_local! {
    /// Set on the thread that ran `enter_exit`: the one that finalizes.
    static EXIT_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// A call from our frames into Python code (a Python target, a `logging`
/// handler). The same `pthread_exit` hits a thread running Python code
/// called from Rust: the eval loop gives the GIL up to the finalizing
/// thread and takes it back. So `enter_exit` waits for these calls too, and
/// from then on only the finalizing thread may start one.
pub struct PythonSection(());

impl PythonSection {
    /// `None` once the interpreter exits, on every thread but the one
    /// finalizing: the caller must not call Python (it counts a drop).
    #[inline]
    pub fn enter() -> Option<Self> {
        section_begin();
        if EXITING.load(Ordering::SeqCst) && !EXIT_THREAD.with(Cell::get) {
            section_end();
            return None;
        }
        Some(PythonSection(()))
    }
}

impl Drop for PythonSection {
    #[inline]
    fn drop(&mut self) {
        section_end();
    }
}

/// The atexit hook: from now on `allow_threads` keeps the GIL and other
/// threads call no Python code from ours; waits (GIL released, so they can
/// finish) until no section runs without the GIL or in Python.
#[pyfunction]
pub fn enter_exit(py: Python<'_>) {
    EXIT_THREAD.with(|t| t.set(true));
    EXITING.store(true, Ordering::SeqCst);
    // Sections this thread is in itself (it runs the hook from inside one)
    // cannot end while it waits.
    let own = MINE.with(Cell::get);
    py.detach(|| {
        let deadline = Instant::now() + EXIT_WAIT;
        while RELEASED.load(Ordering::SeqCst) > own && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

/// From the fork handler: the threads inside sections are the parent's,
/// but the forking thread may be inside its own (a Python target that
/// forks), which it leaves in the child too.
pub fn after_fork_in_child() {
    RELEASED.store(MINE.with(Cell::get), Ordering::SeqCst);
}

/// The interpreter the module was first made in.
static INTERPRETER: AtomicI64 = AtomicI64::new(-1);

/// Refuses a second interpreter: everything here (the exit hook's flag,
/// the GIL-bound cells, the type objects) is per process. PyO3 did this
/// before its module code ran until 0.28; since then a subinterpreter's
/// import ran ours (and then failed), and the exit hook it registered there
/// set the process exiting when that interpreter ended. Runs first.
pub fn one_interpreter(py: Python<'_>) -> PyResult<()> {
    // SAFETY: the token proves this thread is attached to an interpreter.
    let id = unsafe { pyo3::ffi::PyInterpreterState_GetID(pyo3::ffi::PyInterpreterState_Get()) };
    if id < 0 {
        return Err(PyErr::fetch(py));
    }
    match INTERPRETER.compare_exchange(-1, id, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => Ok(()),
        Err(first) if first == id => Ok(()),
        Err(_) => Err(pyo3::exceptions::PyImportError::new_err(
            "edgeless_telemetry does not support subinterpreters: import it in the main interpreter only",
        )),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    crate::fork::install();
    let hook = wrap_pyfunction!(enter_exit, m)?;
    m.py().import("atexit")?.call_method1("register", (hook,))?;
    Ok(())
}

/// For a thread of ours (not started by Python) that wants the GIL, e.g.
/// to log: runs `f` with it, or returns None once the interpreter exits or
/// when there is none. Counted like an `allow_threads` section, so
/// `enter_exit` waits for it instead of finalizing under it.
pub fn with_gil_unless_exiting<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> Option<R> {
    section_begin();
    // SAFETY: a plain query of interpreter state, callable without the GIL.
    let running = unsafe { pyo3::ffi::Py_IsInitialized() } != 0;
    let result = if running && !EXITING.load(Ordering::SeqCst) {
        Some(Python::attach(f))
    } else {
        None
    };
    section_end();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gil_once_first_set_wins_and_maker_may_reenter() {
        static CELL: GilOnce<u32> = GilOnce::new();
        Python::initialize();
        Python::attach(|py| {
            // The maker lets "another thread" in (here: a nested use, which
            // `PyOnceLock::get_or_try_init` would deadlock on) that sets
            // the cell first; its value stays and ours is dropped.
            let got = CELL.get_or_try_init(py, || {
                let inner = CELL.get_or_try_init(py, || Ok::<_, ()>(1));
                assert_eq!(inner, Ok(&1));
                Ok::<_, ()>(2)
            });
            assert_eq!(got, Ok(&1));
            let again = CELL.get_or_try_init(py, || -> Result<u32, ()> { panic!("made twice") });
            assert_eq!(again, Ok(&1));
        });
    }

    #[test]
    fn gil_once_stays_empty_when_the_maker_fails() {
        static CELL: GilOnce<u32> = GilOnce::new();
        Python::initialize();
        Python::attach(|py| {
            assert_eq!(CELL.get_or_try_init(py, || Err("no")), Err("no"));
            assert_eq!(CELL.get_or_try_init(py, || Ok::<_, &str>(3)), Ok(&3));
        });
    }
}
