//! Blocking work handed to the most recently idle thread (LIFO).
//!
//! Why not tokio's `spawn_blocking` for storing batches: its idle threads
//! are woken in turn and retired after 10 s, so successive batches run on
//! ever other threads, and glibc gives each new thread its own malloc
//! arena (up to 8 per core) that keeps the peak of what a batch needed
//! (decoded samples, Redis commands: tens of MiB). The collector's memory
//! then grew for minutes with a single node sending (the soak test saw
//! +14 MiB in 20 s). Here a job goes to the thread that finished last, so
//! `k` concurrent senders use `k` threads (and arenas) at steady state,
//! and threads stay, at most `max` of them; past that, jobs queue.
//!
//! The lock is held for a push or pop; a forked child never uses a pool of
//! its parent (its collector is not inherited).

use std::collections::VecDeque;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// A job returns how to hand its result over, which the thread does only
/// once it is idle again: so the caller's next job finds it idle.
type Job = Box<dyn FnOnce() -> Handover + Send>;
type Handover = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    /// Idle threads, the most recently idle last.
    idle: Vec<Sender<Job>>,
    threads: usize,
    queued: VecDeque<Job>,
}

struct Inner {
    state: Mutex<State>,
    max: usize,
    name: &'static str,
}

pub struct Pool {
    inner: Arc<Inner>,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Pool {
    pub fn new(name: &'static str, max: usize) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                max: max.max(1),
                name,
            }),
        }
    }

    /// Runs `f` on a pool thread (handed over now, so it runs even if the
    /// returned future is dropped); `None` if it panicked (or no thread
    /// could be started).
    pub fn run<T, F>(&self, f: F) -> impl std::future::Future<Output = Option<T>>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Box::new(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            Box::new(move || {
                let _ = tx.send(result.ok());
            })
        }));
        async move { rx.await.ok().flatten() }
    }

    fn submit(&self, mut job: Job) {
        let mut st = self.inner.state();
        while let Some(worker) = st.idle.pop() {
            match worker.send(job) {
                Ok(()) => return,
                Err(returned) => {
                    // That thread ended (it does not, short of a bug).
                    st.threads -= 1;
                    job = returned.0;
                }
            }
        }
        if st.threads >= self.inner.max {
            st.queued.push_back(job);
            return;
        }
        st.threads += 1;
        drop(st);
        let weak = Arc::downgrade(&self.inner);
        let spawned = std::thread::Builder::new()
            .name(self.inner.name.into())
            .spawn(move || worker(weak, job));
        if spawned.is_err() {
            // Out of threads: the job is dropped and its caller sees `None`.
            self.inner.state().threads -= 1;
        }
    }
}

fn worker(pool: Weak<Inner>, first: Job) {
    let mut job = first;
    loop {
        let handover = job();
        let Some(inner) = pool.upgrade() else {
            handover();
            return;
        };
        let mut st = inner.state();
        if let Some(queued) = st.queued.pop_front() {
            drop(st);
            handover();
            job = queued;
            continue;
        }
        // A channel per idle spell: when the pool is dropped, so is its
        // sender, and the thread ends.
        let (tx, rx) = channel::<Job>();
        st.idle.push(tx);
        drop(st);
        drop(inner);
        handover();
        match rx.recv() {
            Ok(next) => job = next,
            Err(_) => return,
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Idle threads see their channel closed and end; busy ones end
        // after their job (their `Weak` no longer upgrades).
        let mut st = self.inner.state();
        st.idle.clear();
        st.queued.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_idle_thread_takes_the_next_job() {
        let rt = crate::http::runtime::runtime();
        let pool = Pool::new("test-pool", 4);
        let name = || std::thread::current().id();
        let first = rt.block_on(pool.run(name)).unwrap();
        for _ in 0..20 {
            assert_eq!(rt.block_on(pool.run(name)).unwrap(), first);
        }
        assert_eq!(rt.block_on(pool.run(|| -> u8 { panic!("boom") })), None);
        // Concurrent jobs past `max` queue, and all run.
        let jobs: Vec<_> = (0..10u64)
            .map(|i| {
                pool.run(move || {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    i
                })
            })
            .collect();
        let done: u64 = rt.block_on(async {
            let mut sum = 0;
            for j in jobs {
                sum += j.await.unwrap();
            }
            sum
        });
        assert_eq!(done, 45);
        assert!(pool.inner.state().threads <= 4);
    }
}
