//! The extension's tokio runtime, one per process (fork generation).
//!
//! Lock-free on purpose: a mutex here could be held by another thread at
//! the moment of `fork()` and then never released in the child. The
//! runtime of each generation is leaked (a few threads and their stacks),
//! so a `&'static Runtime` is always safe to hold.

use crate::fork;
use std::sync::atomic::{AtomicPtr, Ordering};
use tokio::runtime::Runtime;

struct Slot {
    generation: u64,
    runtime: Runtime,
}

static CURRENT: AtomicPtr<Slot> = AtomicPtr::new(std::ptr::null_mut());

/// Worker threads: the machines this runs on have few cores, and the work
/// on the runtime is I/O; rendering and storing run on blocking threads.
const WORKERS: usize = 2;

/// The runtime of this process, made on first use (and again after fork).
pub fn runtime() -> &'static Runtime {
    let generation = fork::generation();
    let current = CURRENT.load(Ordering::Acquire);
    // SAFETY: slots are leaked, never freed, so the pointer stays valid.
    if let Some(slot) = unsafe { current.as_ref() } {
        if slot.generation == generation {
            return &slot.runtime;
        }
    }
    let built = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .max_blocking_threads(64)
        .thread_name("edgeless-http")
        .enable_all()
        .build()
        .expect("cannot start the HTTP runtime (out of threads?)");
    let fresh = Box::into_raw(Box::new(Slot {
        generation,
        runtime: built,
    }));
    match CURRENT.compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire) {
        // The previous slot (another generation's) stays leaked on purpose.
        Ok(_) => {
            // SAFETY: just published; never freed.
            unsafe { &(*fresh).runtime }
        }
        Err(winner) => {
            // Another thread made one first: use it, shut ours down.
            // SAFETY: `fresh` was never published, so we own it.
            let ours = unsafe { Box::from_raw(fresh) };
            ours.runtime.shutdown_background();
            // SAFETY: published slots are never freed.
            let slot = unsafe { &*winner };
            if slot.generation == generation {
                &slot.runtime
            } else {
                runtime()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_runtime_per_process() {
        let a = super::runtime() as *const _;
        let b = super::runtime() as *const _;
        assert_eq!(a, b);
        assert_eq!(super::runtime().block_on(async { 40 + 2 }), 42);
    }
}
