//! Which connections a server keeps: deadlines and the connection cap.
//!
//! Every connection is in one of three phases:
//!
//! - *waiting*: accepted (or kept alive after a response) and not yet
//!   having delivered a complete request. It must do so by its deadline,
//!   `request_timeout` after accept, or after the first byte of the next
//!   request on a kept-alive connection: a client trickling one byte at a
//!   time is cut there, not per read. A kept-alive connection may sit idle
//!   (no byte at all) for `idle_timeout` first, so that a scraper's
//!   connection lasts from one scrape to the next.
//! - *handling*: its request is complete (body read, or not needed); the
//!   handler's own bounds apply (storing waits at most for Redis' ack).
//! - *responding*: the response must be written within `response_timeout`:
//!   to the socket, not only handed to hyper, which queues a whole body at
//!   once (a rendering of hundreds of MiB) and then writes it as the client
//!   reads. Once queued, the connection is evictable like a waiting one (a
//!   client that does not read costs nothing to hold), its response
//!   deadline still running; it waits again once hyper has flushed it.
//!
//! Fairness: waiting connections cost a slow client nothing to hold, so
//! they are the ones given up under pressure. When a connection arrives
//! and `max_pending` are waiting, or `max_connections` are open, the oldest
//! waiting connection is closed to admit it (`evictions`); only when every
//! open connection is handling or responding is the newcomer refused with
//! 503 (`busy`). A normal client delivers its request within a round trip
//! of connecting, so it can only lose its place if `max_pending` newer
//! connections arrive in that time; however many slow or idle sockets an
//! attacker holds, each new request evicts one of them, never the other
//! way round. Handling and responding connections are bounded by
//! `max_connections` and by their deadlines.
//!
//! The lock below is taken for a few map operations, never across an
//! await, never with the GIL (server threads never take it), and a forked
//! child does not use its parent's servers, so it cannot be left held.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

#[derive(Clone, Debug)]
pub struct Limits {
    /// Whole request (head and body), from accept or from the first byte
    /// of a kept-alive connection's next request.
    pub request_timeout: Duration,
    /// A kept-alive connection with no byte of a next request is closed
    /// this long after its previous response.
    pub idle_timeout: Duration,
    /// Writing a response, from the handler's answer.
    pub response_timeout: Duration,
    /// Open connections at once (all phases).
    pub max_connections: usize,
    /// Waiting connections at once (see the module doc).
    pub max_pending: usize,
    /// Request line and headers (hyper's read buffer; at least 8 KiB).
    pub max_head_bytes: usize,
}

/// What a server counts; read by the components' `stats()`.
#[derive(Default)]
pub struct Counters {
    pub accepted: AtomicU64,
    pub requests: AtomicU64,
    /// Connections cut at their deadline (a slow request or an idle
    /// kept-alive connection, or a response not taken in time).
    pub timeouts: AtomicU64,
    /// Connections refused with 503: every slot was handling or responding.
    pub busy: AtomicU64,
    /// Waiting connections closed to admit a newer one.
    pub evictions: AtomicU64,
    /// TLS handshakes that failed (no or a wrong client certificate, plain
    /// HTTP to a TLS port, a protocol the configuration refuses).
    pub tls_failures: AtomicU64,
    /// Requests refused by `basic_auth_users` (401).
    pub unauthorized: AtomicU64,
}

const NO_DEADLINE: u64 = u64::MAX;

/// One connection as the admission sees it.
pub struct ConnState {
    /// Milliseconds since the admission's epoch, or `NO_DEADLINE`.
    deadline_ms: AtomicU64,
    /// Key in the waiting map, 0 when not waiting.
    waiting_key: AtomicU64,
    evicted: AtomicBool,
    /// Set once the connection no longer counts as open.
    released: AtomicBool,
    /// Kept alive with no byte of a next request yet (`idle_timeout`
    /// runs, not `request_timeout`).
    idle: AtomicBool,
    /// The response is all queued in hyper, not yet all written: the next
    /// flush that finishes makes the connection wait again.
    queued: AtomicBool,
    /// Wakes the connection's task: deadline changed, or evicted.
    pub wake: Notify,
}

impl ConnState {
    pub fn evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }
}

pub struct Admission {
    pub limits: Limits,
    /// Shared with the component, so its counts outlive a restart.
    pub counters: Arc<Counters>,
    epoch: Instant,
    open: AtomicUsize,
    next_key: AtomicU64,
    waiting: Mutex<BTreeMap<u64, Arc<ConnState>>>,
}

impl Admission {
    pub fn new(limits: Limits, counters: Arc<Counters>) -> Self {
        Self {
            limits,
            counters,
            epoch: Instant::now(),
            open: AtomicUsize::new(0),
            next_key: AtomicU64::new(1),
            waiting: Mutex::new(BTreeMap::new()),
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<ConnState>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn deadline_after(&self, d: Duration) -> u64 {
        self.now_ms().saturating_add(d.as_millis() as u64)
    }

    /// The instant a connection's deadline falls, if it has one.
    pub fn deadline(&self, conn: &ConnState) -> Option<Instant> {
        match conn.deadline_ms.load(Ordering::Acquire) {
            NO_DEADLINE => None,
            ms => Some(self.epoch + Duration::from_millis(ms)),
        }
    }

    /// Whether a connection's deadline has passed.
    pub fn late(&self, conn: &ConnState) -> bool {
        self.deadline(conn).is_some_and(|d| d <= Instant::now())
    }

    /// Admits a new connection (waiting, deadline running), evicting the
    /// oldest waiting one if need be; `None`: refuse it with 503.
    pub fn admit(&self) -> Option<Arc<ConnState>> {
        let mut waiting = self.waiting();
        let full = waiting.len() >= self.limits.max_pending
            || self.open.load(Ordering::Relaxed) >= self.limits.max_connections;
        if full {
            let Some((_, oldest)) = waiting.pop_first() else {
                self.counters.busy.fetch_add(1, Ordering::Relaxed);
                return None;
            };
            oldest.waiting_key.store(0, Ordering::Relaxed);
            oldest.evicted.store(true, Ordering::Release);
            self.release(&oldest);
            oldest.wake.notify_one();
            self.counters.evictions.fetch_add(1, Ordering::Relaxed);
        }
        self.open.fetch_add(1, Ordering::Relaxed);
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(ConnState {
            deadline_ms: AtomicU64::new(self.deadline_after(self.limits.request_timeout)),
            waiting_key: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            released: AtomicBool::new(false),
            idle: AtomicBool::new(false),
            queued: AtomicBool::new(false),
            wake: Notify::new(),
        });
        self.insert_waiting(&mut waiting, &conn);
        Some(conn)
    }

    fn insert_waiting(&self, waiting: &mut BTreeMap<u64, Arc<ConnState>>, conn: &Arc<ConnState>) {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        conn.waiting_key.store(key, Ordering::Relaxed);
        waiting.insert(key, conn.clone());
    }

    fn remove_waiting(&self, waiting: &mut BTreeMap<u64, Arc<ConnState>>, conn: &ConnState) {
        let key = conn.waiting_key.swap(0, Ordering::Relaxed);
        if key != 0 {
            waiting.remove(&key);
        }
    }

    fn set_deadline(&self, conn: &ConnState, ms: u64) {
        conn.deadline_ms.store(ms, Ordering::Release);
        conn.wake.notify_one();
    }

    /// The request is complete: no longer evictable, no deadline. (A
    /// pipelined request can get here before the previous response is
    /// flushed: that flush must not make it wait again.)
    pub fn handling(&self, conn: &ConnState) {
        conn.queued.store(false, Ordering::Relaxed);
        self.remove_waiting(&mut self.waiting(), conn);
        self.set_deadline(conn, NO_DEADLINE);
    }

    /// The handler answered: the response must be written in time.
    pub fn responding(&self, conn: &ConnState) {
        conn.queued.store(false, Ordering::Relaxed);
        self.remove_waiting(&mut self.waiting(), conn);
        self.set_deadline(conn, self.deadline_after(self.limits.response_timeout));
    }

    /// hyper holds the whole response (its body taken): evictable from
    /// now on, the response deadline still running until `flushed`.
    pub fn queued(&self, conn: &Arc<ConnState>) {
        let mut waiting = self.waiting();
        if conn.released.load(Ordering::Acquire) {
            return;
        }
        self.remove_waiting(&mut waiting, conn);
        self.insert_waiting(&mut waiting, conn);
        conn.queued.store(true, Ordering::Relaxed);
    }

    /// hyper's write buffer is empty (it flushes the socket only then):
    /// a queued response is written, and the connection waits again.
    pub fn flushed(&self, conn: &Arc<ConnState>) {
        if conn.queued.load(Ordering::Relaxed) && conn.queued.swap(false, Ordering::Relaxed) {
            self.waiting_again(conn);
        }
    }

    /// The response is written: waiting for the next request (keep-alive),
    /// idle until its first byte.
    pub fn waiting_again(&self, conn: &Arc<ConnState>) {
        let mut waiting = self.waiting();
        // Released: closed or evicted, and must not come back.
        if conn.released.load(Ordering::Acquire) {
            return;
        }
        self.remove_waiting(&mut waiting, conn);
        self.insert_waiting(&mut waiting, conn);
        drop(waiting);
        conn.idle.store(true, Ordering::Release);
        self.set_deadline(conn, self.deadline_after(self.limits.idle_timeout));
    }

    /// Bytes arrived on the connection: if it was idle, its next request
    /// has begun and must be complete within `request_timeout`. One atomic
    /// load per read otherwise.
    pub fn bytes_arrived(&self, conn: &ConnState) {
        if conn.idle.load(Ordering::Relaxed) && conn.idle.swap(false, Ordering::AcqRel) {
            self.set_deadline(conn, self.deadline_after(self.limits.request_timeout));
        }
    }

    /// The connection's task ends.
    pub fn closed(&self, conn: &ConnState) {
        let mut waiting = self.waiting();
        self.remove_waiting(&mut waiting, conn);
        // Under the lock, so that `waiting_again` sees it.
        self.release(conn);
    }

    fn release(&self, conn: &ConnState) {
        if !conn.released.swap(true, Ordering::AcqRel) {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize, max_pending: usize) -> Limits {
        Limits {
            request_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            response_timeout: Duration::from_secs(5),
            max_connections,
            max_pending,
            max_head_bytes: 8192,
        }
    }

    #[test]
    fn the_oldest_waiting_connection_makes_room() {
        let a = Admission::new(limits(3, 2), Default::default());
        let first = a.admit().unwrap();
        let second = a.admit().unwrap();
        let third = a.admit().unwrap(); // two waiting: the first goes
        assert!(first.evicted() && !second.evicted() && !third.evicted());
        assert_eq!(a.open(), 2);
        a.handling(&second);
        a.handling(&third);
        let fourth = a.admit().unwrap();
        assert_eq!(a.open(), 3);
        a.handling(&fourth);
        // Everyone is being served: refused, nobody evicted.
        assert!(a.admit().is_none());
        assert_eq!(a.counters.busy.load(Ordering::Relaxed), 1);
        assert_eq!(a.counters.evictions.load(Ordering::Relaxed), 1);
        // A kept-alive connection waits again and can be evicted again.
        a.waiting_again(&second);
        let fifth = a.admit().unwrap();
        assert!(second.evicted() && !fifth.evicted());
        a.closed(&second);
        a.closed(&first);
        assert_eq!(a.open(), 3);
        for c in [&third, &fourth, &fifth] {
            a.closed(c);
        }
        assert_eq!(a.open(), 0);
    }

    #[test]
    fn a_response_not_taken_yet_gives_way_to_a_newcomer() {
        let a = Admission::new(limits(4, 1), Default::default());
        let slow = a.admit().unwrap();
        a.handling(&slow);
        a.responding(&slow);
        a.queued(&slow);
        let next = a.admit().unwrap();
        assert!(slow.evicted() && !next.evicted());
        a.closed(&slow);
        a.closed(&next);
        assert_eq!(a.open(), 0);
    }

    #[test]
    fn deadlines_follow_the_phase() {
        let a = Admission::new(limits(4, 4), Default::default());
        let c = a.admit().unwrap();
        assert!(a.deadline(&c).is_some() && !a.late(&c));
        a.handling(&c);
        assert!(a.deadline(&c).is_none());
        a.responding(&c);
        assert!(a.deadline(&c).is_some());
        // Queued in hyper is not written: the response deadline runs on
        // until the flush.
        a.queued(&c);
        assert!(a.deadline(&c).unwrap() < Instant::now() + Duration::from_secs(6));
        // Kept alive: the idle timeout runs until the next request's first
        // byte, then the request timeout.
        a.flushed(&c);
        let idle = a.deadline(&c).unwrap();
        assert!(idle > Instant::now() + Duration::from_secs(30));
        a.bytes_arrived(&c);
        let request = a.deadline(&c).unwrap();
        assert!(request < Instant::now() + Duration::from_secs(6));
        // Later bytes of the same request do not move it.
        std::thread::sleep(Duration::from_millis(5));
        a.bytes_arrived(&c);
        assert_eq!(a.deadline(&c), Some(request));
    }
}
