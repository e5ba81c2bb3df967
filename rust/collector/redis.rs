//! The Redis sink: a bounded queue of ready-made RESP pipelines and one
//! thread that writes them to Redis (connections through the `redis`
//! crate), without the GIL.
//!
//! A job is one received batch, already encoded as multi-member ZADDs; the
//! thread sends a whole job, then reads one reply per command. A job leaves
//! the queue only once every command is stored (or refused for good, see
//! `replies.rs`): an error reply is not an acknowledgement. Commands Redis
//! refuses for now (`OOM`, `MISCONF`, `READONLY`, ...) and whole jobs cut
//! off by a lost connection stay at the head of the queue and go again
//! with backoff; that is safe because ZADD of a member with the same score
//! is idempotent: a resent command stores nothing twice. Meanwhile jobs
//! wait in the queue; the collector refuses new batches (HTTP 503) once
//! the queue holds `max_bytes`, so the node keeps them instead.
//!
//! Our own writer rather than redis-rs's pipelines because we need each
//! reply of a pipeline on its own (its cluster pipeline reports one error
//! for the whole pipeline and does not follow `MOVED`/`ASK` inside one),
//! and one write of bytes rendered once; the measured rates are in the
//! README (`scripts/bench_redis_client.sh`).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::cluster::Cluster;
use super::connection::Connection;
use super::replies::{outcome, settle, Outcome, ERROR_KINDS};
use pyo3::prelude::*;

#[derive(Clone, Debug, PartialEq)]
pub struct RedisConfig {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: u32,
    /// Redis Cluster (`redis+cluster://`): `host:port` is the first seed,
    /// `seeds` holds all of them.
    pub cluster: bool,
    pub seeds: Vec<(String, u16)>,
}

fn host_port(text: &str, url: &str) -> Result<(String, u16), String> {
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse()
                .map_err(|_| format!("redis_url port {p:?} is not a number"))?,
        ),
        _ => (text, 6379),
    };
    let host = host.trim_matches(['[', ']']);
    if host.is_empty() {
        return Err(format!("redis_url has no host: {url:?}"));
    }
    Ok((host.to_owned(), port))
}

/// Parses `redis://[[user]:password@]host[:port][/db]` and
/// `redis+cluster://[[user]:password@]host:port[,host:port...]` (seed
/// nodes of a Redis Cluster; database 0 only, as Cluster has no other).
pub fn parse_url(url: &str) -> Result<RedisConfig, String> {
    let (cluster, rest) = if let Some(r) = url.strip_prefix("redis+cluster://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("redis://") {
        (false, r)
    } else {
        return Err(format!(
            "redis_url must start with redis:// or redis+cluster://, got {url:?}"
        ));
    };
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((a, r)) => (Some(a), r),
        None => (None, rest),
    };
    let (hostport, db) = match rest.split_once('/') {
        Some((h, "")) => (h, 0),
        Some((h, d)) => (
            h,
            d.parse()
                .map_err(|_| format!("redis_url database {d:?} is not a number"))?,
        ),
        None => (rest, 0),
    };
    let seeds = if cluster {
        if db != 0 {
            return Err(format!("Redis Cluster has only database 0: {url:?}"));
        }
        hostport
            .split(',')
            .map(|h| host_port(h, url))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        vec![host_port(hostport, url)?]
    };
    let (host, port) = seeds[0].clone();
    let (username, password) = match auth {
        None => (None, None),
        Some(a) => match a.split_once(':') {
            Some(("", p)) => (None, Some(p.to_owned())),
            Some((u, p)) => (Some(u.to_owned()), Some(p.to_owned())),
            None => (Some(a.to_owned()), None),
        },
    };
    Ok(RedisConfig {
        host,
        port,
        username,
        password,
        db,
        cluster,
        seeds,
    })
}

/// One batch's commands.
pub struct Job {
    pub payload: Vec<u8>,
    pub commands: usize,
    pub members: u64,
    pub samples: u64,
    /// For Redis Cluster: each command's key slot and bytes in `payload`
    /// (empty for a single Redis).
    pub routes: Vec<Route>,
    /// Queue position, set by `push`.
    pub id: u64,
}

/// Where one command of a job lives and which cluster slot it goes to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Route {
    pub slot: u16,
    pub start: usize,
    pub end: usize,
}

#[derive(Default)]
pub struct RedisStats {
    pub samples_written: AtomicU64,
    pub members_added: AtomicU64,
    /// Members already present (a resent job, or the format hazard in
    /// `format.rs`: two samples with the same printed member).
    pub members_existing: AtomicU64,
    /// Error replies, all and by kind (`replies::ERROR_KINDS`).
    pub error_replies: AtomicU64,
    pub error_kinds: [AtomicU64; ERROR_KINDS.len()],
    /// Entries Redis refused for good (`WRONGTYPE`), dropped.
    pub entries_rejected: AtomicU64,
    /// Times Redis started refusing writes or became unreachable, and
    /// since when (Unix seconds) it does now, 0 while it takes them.
    pub faults: AtomicU64,
    pub failing_since: AtomicU64,
    pub connects: AtomicU64,
    pub connection_failures: AtomicU64,
    pub samples_abandoned: AtomicU64,
    pub connected: AtomicBool,
    /// Redis Cluster: redirections followed and slot maps read.
    pub moved: AtomicU64,
    pub asked: AtomicU64,
    pub map_reads: AtomicU64,
}

struct Queue {
    jobs: VecDeque<Job>,
    bytes: usize,
    /// A job taken by the writer and not yet acknowledged (its bytes are
    /// still counted).
    in_flight: bool,
    stop: bool,
    /// The writer thread has returned.
    exited: bool,
    /// Ids of the last job pushed and the last one Redis acknowledged.
    pushed: u64,
    acked: u64,
    /// The last write attempt failed (Redis down or refusing): nobody
    /// should wait for an acknowledgement.
    failing: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    idle: Condvar,
    max_bytes: usize,
    stats: RedisStats,
    last_error: Mutex<String>,
}

/// How long `close` waits for the writer past its timeout: enough for a
/// write to a Redis that answers, not for one that hangs.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

pub struct RedisSink {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl RedisSink {
    pub fn start(config: RedisConfig, max_bytes: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                bytes: 0,
                in_flight: false,
                stop: false,
                exited: false,
                pushed: 0,
                acked: 0,
                failing: false,
            }),
            wake: Condvar::new(),
            idle: Condvar::new(),
            max_bytes,
            stats: RedisStats::default(),
            last_error: Mutex::new(String::new()),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("edgeless-redis-writer".into())
            .spawn(move || {
                writer_loop(&worker, &config);
                worker.queue.lock().expect("queue lock").exited = true;
                worker.idle.notify_all();
            })?;
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Whether a job of `len` bytes fits the bound now (an oversized job
    /// still fits an empty queue, or it could never go). Only the producer
    /// adds jobs, so room seen here is still there for `push`.
    pub fn has_room(&self, len: usize) -> bool {
        let q = self.shared.queue.lock().expect("queue lock");
        !q.stop && (q.bytes == 0 || q.bytes + len <= self.shared.max_bytes)
    }

    /// Queues a job; returns its id for `wait_acked`.
    pub fn push(&self, mut job: Job) -> u64 {
        let mut q = self.shared.queue.lock().expect("queue lock");
        q.pushed += 1;
        job.id = q.pushed;
        q.bytes += job.payload.len();
        q.jobs.push_back(job);
        self.shared.wake.notify_one();
        q.pushed
    }

    /// The id of the last job Redis acknowledged (all before it are too).
    pub fn acked(&self) -> u64 {
        self.shared.queue.lock().expect("queue lock").acked
    }

    /// Waits until Redis acknowledged job `id`, for at most `timeout`, and
    /// not at all while Redis is failing; true if it is acknowledged.
    /// The collector answers 200 only then, so a collector killed after
    /// answering loses nothing that Redis could take at the time.
    pub fn wait_acked(&self, id: u64, timeout: Duration) -> bool {
        self.wait_idle(timeout, |q| {
            if q.acked >= id {
                Some(true)
            } else if q.failing || q.stop {
                Some(false)
            } else {
                None
            }
        })
    }

    /// Waits until everything queued is acknowledged by Redis; false on
    /// timeout.
    pub fn flush(&self, timeout: Duration) -> bool {
        self.wait_idle(timeout, |q| (q.bytes == 0).then_some(true))
    }

    /// Waits on the writer's progress until `decide` has an answer, for at
    /// most `timeout` (then false).
    fn wait_idle(&self, timeout: Duration, decide: impl Fn(&Queue) -> Option<bool>) -> bool {
        let deadline = Instant::now() + timeout;
        let mut q = self.shared.queue.lock().expect("queue lock");
        loop {
            if let Some(answer) = decide(&q) {
                return answer;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            q = self
                .shared
                .idle
                .wait_timeout(q, deadline - now)
                .expect("queue lock")
                .0;
        }
    }

    /// Flushes for at most `timeout`, then stops the writer; what is still
    /// queued is counted in `samples_abandoned`. Returns by `timeout` (and
    /// a moment): a writer stuck in a write to a Redis that stopped
    /// answering (up to its 30 s read timeout) is left to end by itself,
    /// and counts the job it holds as written or abandoned when it does.
    pub fn close(&self, timeout: Duration) {
        self.flush(timeout);
        {
            let mut q = self.shared.queue.lock().expect("queue lock");
            q.stop = true;
            self.shared.wake.notify_all();
        }
        let exited = self.wait_idle(CLOSE_GRACE, |q| q.exited.then_some(true));
        let mut q = self.shared.queue.lock().expect("queue lock");
        let (mut samples, mut bytes) = (0, 0);
        for job in q.jobs.drain(..) {
            samples += job.samples;
            bytes += job.payload.len();
        }
        q.bytes = q.bytes.saturating_sub(bytes);
        self.shared
            .stats
            .samples_abandoned
            .fetch_add(samples, Relaxed);
        drop(q);
        // Not exited: detached; it ends at its next look at `stop`.
        let thread = self.thread.lock().expect("thread lock").take();
        if let (Some(t), true) = (thread, exited) {
            let _ = t.join();
        }
    }

    pub fn stats(&self) -> &RedisStats {
        &self.shared.stats
    }

    /// (bytes, jobs) waiting, including one being written.
    pub fn queued(&self) -> (usize, usize) {
        let q = self.shared.queue.lock().expect("queue lock");
        (q.bytes, q.jobs.len() + q.in_flight as usize)
    }

    pub fn last_error(&self) -> String {
        self.shared.last_error.lock().expect("error lock").clone()
    }
}

impl Drop for RedisSink {
    /// Stops the writer without waiting for it: Python's garbage collector
    /// drops us holding the GIL, which the writer may be waiting for (to
    /// log). Nobody can read the counts any more, so none are lost.
    fn drop(&mut self) {
        self.shared.queue.lock().expect("queue lock").stop = true;
        self.shared.wake.notify_all();
    }
}

/// Why a write attempt failed as a whole.
pub(super) enum Failure {
    /// The connection is unusable: reconnect, resend.
    Connection(String),
}

/// Where jobs go: one Redis, or the nodes of a Redis Cluster.
enum Backend {
    Single(Option<Connection>),
    Cluster(Cluster),
}

impl Backend {
    /// Sends a job; each command's outcome, in order.
    fn send(
        &mut self,
        job: &Job,
        config: &RedisConfig,
        stats: &RedisStats,
    ) -> Result<Vec<Outcome>, Failure> {
        match self {
            Backend::Single(conn) => {
                let c = match conn {
                    Some(c) => c,
                    None => {
                        let c = Connection::open(config, &config.host, config.port)?;
                        stats.connects.fetch_add(1, Relaxed);
                        conn.insert(c)
                    }
                };
                stats.connected.store(true, Relaxed);
                c.write(&job.payload)?;
                // Every reply is read, errors included, to stay in step.
                (0..job.commands)
                    .map(|_| Ok(outcome(c.reply()?, stats)))
                    .collect()
            }
            Backend::Cluster(cluster) => cluster.send(job, config, stats),
        }
    }

    fn reset(&mut self) {
        match self {
            Backend::Single(conn) => *conn = None,
            Backend::Cluster(cluster) => cluster.reset(),
        }
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Keys named in a "refused for good" warning; past this many, refusals
/// are only counted.
const MAX_NAMED_KEYS: usize = 1024;

/// A stretch of time during which Redis refused (or could not be reached).
struct Fault {
    since: Instant,
    attempts: u64,
}

/// Logs on the package logger from the writer thread (never holding one
/// of our locks: a Python thread holding the GIL may wait for them).
fn log(level: &str, message: String) {
    let logged = crate::gil::with_gil_unless_exiting(|py| {
        let result = py
            .import("logging")
            .and_then(|l| l.call_method1("getLogger", ("edgeless_telemetry",)))
            .and_then(|logger| logger.call_method1(level, (message.as_str(),)));
        if let Err(err) = result {
            err.write_unraisable(py, None);
        }
    });
    if logged.is_none() {
        eprintln!("edgeless_telemetry: {message}");
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn writer_loop(shared: &Shared, config: &RedisConfig) {
    let stats = &shared.stats;
    let mut backend = if config.cluster {
        Backend::Cluster(Cluster::new())
    } else {
        Backend::Single(None)
    };
    let mut backoff = MIN_BACKOFF;
    let mut fault: Option<Fault> = None;
    let mut named: HashSet<String> = HashSet::new();
    loop {
        let mut job = {
            let mut q = shared.queue.lock().expect("queue lock");
            loop {
                if q.stop {
                    return;
                }
                if let Some(job) = q.jobs.pop_front() {
                    q.in_flight = true;
                    break job;
                }
                q = shared.wake.wait(q).expect("queue lock");
            }
        };
        // Why the job (or what is left of it) must wait and go again.
        let mut retry = None;
        let mut freed = 0;
        match backend.send(&job, config, stats) {
            Ok(outcomes) => {
                let settled = settle(&mut job, outcomes, stats);
                freed = settled.freed;
                for (key, why) in settled.rejected {
                    if named.len() < MAX_NAMED_KEYS && named.insert(key.clone()) {
                        log(
                            "warning",
                            format!(
                                "Redis refuses key {key} for good ({why}): its entries are \
                                 dropped and counted in redis_entries_rejected; the other \
                                 keys are stored (further refusals of this key are only counted)"
                            ),
                        );
                    }
                }
                if !settled.done {
                    let why = settled
                        .transient
                        .unwrap_or_else(|| "Redis Cluster redirections did not settle".into());
                    // A replica after a failover: the address may lead to
                    // the new master on a new connection.
                    if why.starts_with("READONLY") {
                        backend.reset();
                    }
                    retry = Some(why);
                }
            }
            Err(Failure::Connection(why)) => {
                backend.reset();
                stats.connected.store(false, Relaxed);
                stats.connection_failures.fetch_add(1, Relaxed);
                retry = Some(why);
            }
        }
        let mut q = shared.queue.lock().expect("queue lock");
        q.in_flight = false;
        q.bytes -= freed;
        match retry {
            None => {
                backoff = MIN_BACKOFF;
                stats.samples_written.fetch_add(job.samples, Relaxed);
                q.bytes -= job.payload.len();
                q.acked = job.id;
                q.failing = false;
                shared.idle.notify_all();
                drop(q);
                if let Some(f) = fault.take() {
                    stats.failing_since.store(0, Relaxed);
                    log(
                        "info",
                        format!(
                            "Redis takes writes again after {:.1} s ({} attempts refused); \
                             the queued batches are being written",
                            f.since.elapsed().as_secs_f64(),
                            f.attempts
                        ),
                    );
                }
            }
            // Stopped meanwhile (`close` did not wait for us): nobody will
            // try it again.
            Some(_) if q.stop => {
                q.bytes = q.bytes.saturating_sub(job.payload.len());
                stats.samples_abandoned.fetch_add(job.samples, Relaxed);
                shared.idle.notify_all();
            }
            Some(why) => {
                q.failing = true;
                shared.idle.notify_all();
                q.jobs.push_front(job);
                drop(q);
                *shared.last_error.lock().expect("error lock") = why.clone();
                match &mut fault {
                    Some(f) => f.attempts += 1,
                    None => {
                        fault = Some(Fault {
                            since: Instant::now(),
                            attempts: 1,
                        });
                        stats.faults.fetch_add(1, Relaxed);
                        stats.failing_since.store(unix_now(), Relaxed);
                        log(
                            "warning",
                            format!(
                                "Redis does not take writes: {}. Batches stay queued and \
                                 are retried with backoff; nodes are answered 202 (503 once \
                                 max_redis_queue_bytes are queued) and keep them",
                                why.trim_end_matches('.')
                            ),
                        );
                    }
                }
                // Wait before trying again, but wake at once to stop.
                let q = shared.queue.lock().expect("queue lock");
                let _ = shared.wake.wait_timeout_while(q, backoff, |q| !q.stop);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = parse_url("redis://127.0.0.1:7000/2").unwrap();
        assert_eq!((c.host.as_str(), c.port, c.db), ("127.0.0.1", 7000, 2));
        let c = parse_url("redis://:pw@localhost").unwrap();
        assert_eq!((c.password.as_deref(), c.port), (Some("pw"), 6379));
        let c = parse_url("redis://u:p@h:1/").unwrap();
        assert_eq!(c.username.as_deref(), Some("u"));
        assert!(parse_url("http://x").is_err());
        let c = parse_url("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001").unwrap();
        assert!(c.cluster && c.password.as_deref() == Some("pw"));
        assert_eq!(
            c.seeds,
            vec![("10.0.0.1".into(), 7000), ("10.0.0.2".into(), 7001)]
        );
        assert!(parse_url("redis+cluster://h:1/2").is_err());
        assert!(parse_url("redis://h:notaport").is_err());
    }
}
