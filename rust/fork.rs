//! What a `fork()` leaves behind in the child, for the parts that run
//! background threads (tracer writer, `/metrics` server, scrapes): only the
//! forking thread survives, so those parts must notice they were inherited,
//! and no lock may be left held by a thread that is not there.
//!
//! One `pthread_atfork` child handler, installed on first use, bumps a
//! generation counter (a part compares it with the one it started in: one
//! relaxed load instead of a `getpid` per row) and closes the listening
//! sockets registered here, so a child does not keep its parent's port
//! bound (and unanswered) after the parent closes it, and resets the count
//! of GIL-released sections (the threads in them are not in the child).
//! The handlers touch only atomics, thread-locals, the gate below and
//! `close`; never Python.
//!
//! Locks: a lock that a thread without the GIL can hold (a scrape copying
//! a family's series, say) is a `fork::Mutex`, taken only inside a
//! [`Section`]. The `prepare` handler waits until no thread is inside a
//! section and keeps new ones out until the fork is done, so the child
//! inherits every such lock free and the data behind it whole. Waiting in
//! `prepare` is safe although the forking thread holds the GIL, because a
//! section never waits for the GIL, for I/O or on a condition variable:
//! its holder always gets out. (A lock used with a `Condvar` cannot be
//! held only inside a section; such parts check `inherited` and make their
//! state anew in the child instead.)

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

static FORKS: AtomicU64 = AtomicU64::new(0);

/// Listening sockets to close in a child. A part past this many servers
/// still works; its socket just stays open in children until they exit.
const SLOTS: usize = 64;
static LISTENERS: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];

/// Held shared by every section, exclusively by a fork in progress.
static GATE: RwLock<()> = RwLock::new(());

thread_local! {
    /// Sections this thread is inside (only the outermost holds the gate,
    /// so nesting never waits behind a pending fork).
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    /// The gate, held exclusively by this thread from `prepare` until the
    /// `parent`/`child` handler (the same thread, in both processes).
    static FORKING: RefCell<Option<RwLockWriteGuard<'static, ()>>> =
        const { RefCell::new(None) };
}

extern "C" fn before_fork() {
    // A fork from inside a section (only possible if a section called
    // Python, which none does) must not wait for itself. `try_with`
    // throughout: a panic here would abort, and a thread whose locals are
    // being destroyed just forks without the gate.
    if DEPTH.try_with(Cell::get).unwrap_or(1) > 0 {
        return;
    }
    let _ = FORKING.try_with(|f| {
        *f.borrow_mut() = Some(GATE.write().unwrap_or_else(|e| e.into_inner()));
    });
}

fn open_gate() {
    let _ = FORKING.try_with(|f| f.borrow_mut().take());
}

extern "C" fn after_fork_in_parent() {
    open_gate();
}

extern "C" fn after_fork_in_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
    crate::gil::after_fork_in_child();
    for slot in &LISTENERS {
        let fd = slot.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: the fd was registered by a live server of the parent;
            // the child has no thread using it (only the forking thread
            // survives) and the child's copy of its owner is never dropped.
            unsafe {
                libc::close(fd);
            }
        }
    }
    open_gate();
}

/// Installs the handlers (idempotent); the module does at import.
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers handlers that touch atomics, a thread-local,
        // the gate and `close`.
        unsafe {
            libc::pthread_atfork(
                Some(before_fork),
                Some(after_fork_in_parent),
                Some(after_fork_in_child),
            );
        }
    });
}

/// While alive, a `fork()` waits (see the module doc). Never wait for the
/// GIL, for I/O or on a condition variable inside one.
pub struct Section {
    _gate: Option<RwLockReadGuard<'static, ()>>,
}

impl Section {
    pub fn enter() -> Section {
        let outermost = DEPTH.with(|d| d.replace(d.get() + 1)) == 0;
        let gate = outermost.then(|| GATE.read().unwrap_or_else(|e| e.into_inner()));
        Section { _gate: gate }
    }
}

impl Drop for Section {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// A mutex that a fork never leaves held in the child: it is only ever
/// held inside a [`Section`]. Poisoning is ignored (holders keep the data
/// consistent at every step, and a panic is reported where it happens).
/// Not for use with a `Condvar` (see the module doc).
#[derive(Default)]
pub struct Mutex<T> {
    inner: std::sync::Mutex<T>,
}

/// The lock, then the section: fields drop in order, lock first.
pub struct Guard<'a, T> {
    lock: MutexGuard<'a, T>,
    _section: Section,
}

impl<T> Mutex<T> {
    pub const fn new(value: T) -> Self {
        Self {
            inner: std::sync::Mutex::new(value),
        }
    }

    pub fn lock(&self) -> Guard<'_, T> {
        let section = Section::enter();
        Guard {
            lock: self.inner.lock().unwrap_or_else(|e| e.into_inner()),
            _section: section,
        }
    }
}

impl<T> std::ops::Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.lock
    }
}

impl<T> std::ops::DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.lock
    }
}

/// The current fork generation (0 in the process that loaded us, bumped in
/// every forked child). Installs the handler, so call it when a part starts.
pub fn generation() -> u64 {
    install();
    FORKS.load(Ordering::Relaxed)
}

/// Whether a part started at `generation` was inherited through fork.
#[inline]
pub fn inherited(generation: u64) -> bool {
    FORKS.load(Ordering::Relaxed) != generation
}

/// Registers a listening socket to be closed in forked children; the
/// returned slot goes to `forget_listener` before the socket is closed.
pub fn close_listener_in_children(fd: RawFd) -> Option<usize> {
    install();
    LISTENERS.iter().position(|slot| {
        slot.compare_exchange(-1, fd, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    })
}

pub fn forget_listener(slot: Option<usize>) {
    if let Some(i) = slot {
        LISTENERS[i].store(-1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_fork_waits_for_sections_and_nested_ones_never_wait_for_it() {
        let outer = Section::enter();
        let (done, forked) = mpsc::channel();
        // Stands for `before_fork` on another thread.
        let forker = std::thread::spawn(move || {
            let _gate = GATE.write().unwrap_or_else(|e| e.into_inner());
            done.send(()).unwrap();
        });
        std::thread::sleep(Duration::from_millis(50));
        let lock = Mutex::new(1);
        *lock.lock() += 1; // nested: must not wait behind the pending fork
        assert!(
            forked.try_recv().is_err(),
            "the fork went ahead of a section"
        );
        drop(outer);
        forked.recv_timeout(Duration::from_secs(5)).unwrap();
        forker.join().unwrap();
        assert_eq!(*lock.lock(), 2);
    }
}
