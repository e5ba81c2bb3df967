//! What a `fork()` leaves behind in the child, for the parts that run
//! background threads (tracer writer, `/metrics` server): only the forking
//! thread survives, so those parts must notice they were inherited.
//!
//! One `pthread_atfork` child handler, installed on first use, bumps a
//! generation counter (a part compares it with the one it started in: one
//! relaxed load instead of a `getpid` per row) and closes the listening
//! sockets registered here, so a child does not keep its parent's port
//! bound (and unanswered) after the parent closes it, and resets the count
//! of GIL-released sections (the threads in them are not in the child).
//! The handler only touches atomics and calls `close`, both
//! async-signal-safe.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

static FORKS: AtomicU64 = AtomicU64::new(0);

/// Listening sockets to close in a child. A part past this many servers
/// still works; its socket just stays open in children until they exit.
const SLOTS: usize = 64;
static LISTENERS: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];

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
}

/// Installs the child handler (idempotent); the module does at import.
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a handler that only touches atomics and `close`.
        unsafe {
            libc::pthread_atfork(None, None, Some(after_fork_in_child));
        }
    });
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
