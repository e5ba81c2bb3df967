//! The Redis sink: a bounded queue of ready-made RESP pipelines and one
//! thread that writes them to a plain socket, without the GIL.
//!
//! A job is one received batch, already encoded as multi-member ZADDs; the
//! thread sends a whole job, then reads one reply per command. A job leaves
//! the queue only once every reply has arrived, so if Redis goes away the
//! job is sent again after reconnecting. That is safe because ZADD of a
//! member with the same score is idempotent: a resent job stores nothing
//! twice. While Redis is down, jobs wait in the queue; the collector
//! refuses new batches (HTTP 503) once the queue holds `max_bytes`, so the
//! node keeps them instead.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::cluster::Cluster;
use super::format::Resp;

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
    pub error_replies: AtomicU64,
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
    /// Ids of the last job pushed and the last one Redis acknowledged.
    pushed: u64,
    acked: u64,
    /// The last write attempt failed (Redis down): nobody should wait.
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
            .spawn(move || writer_loop(&worker, &config))?;
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
    /// queued is counted in `samples_abandoned`.
    pub fn close(&self, timeout: Duration) {
        self.flush(timeout);
        {
            let mut q = self.shared.queue.lock().expect("queue lock");
            q.stop = true;
            self.shared.wake.notify_all();
        }
        if let Some(t) = self.thread.lock().expect("thread lock").take() {
            let _ = t.join();
        }
        let mut q = self.shared.queue.lock().expect("queue lock");
        let left: u64 = q.jobs.drain(..).map(|j| j.samples).sum();
        q.bytes = 0;
        self.shared.stats.samples_abandoned.fetch_add(left, Relaxed);
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
    fn drop(&mut self) {
        self.close(Duration::ZERO);
    }
}

/// Why a write attempt failed.
pub(super) enum Failure {
    /// The connection is unusable (or Redis is loading): reconnect, resend.
    Connection(String),
}

/// Where jobs go: one Redis, or the nodes of a Redis Cluster.
enum Backend {
    Single(Option<Connection>),
    Cluster(Cluster),
}

impl Backend {
    fn send(&mut self, job: &Job, config: &RedisConfig, stats: &RedisStats) -> Result<(), Failure> {
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
                let added = c.send(&job.payload, job.commands, stats)?;
                stats.members_added.fetch_add(added, Relaxed);
                stats
                    .members_existing
                    .fetch_add(job.members.saturating_sub(added), Relaxed);
                Ok(())
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

fn writer_loop(shared: &Shared, config: &RedisConfig) {
    let mut backend = if config.cluster {
        Backend::Cluster(Cluster::new())
    } else {
        Backend::Single(None)
    };
    let mut backoff = Duration::from_millis(50);
    loop {
        let job = {
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
        let result = backend.send(&job, config, &shared.stats);
        let mut q = shared.queue.lock().expect("queue lock");
        q.in_flight = false;
        match result {
            Ok(()) => {
                backoff = Duration::from_millis(50);
                shared.stats.samples_written.fetch_add(job.samples, Relaxed);
                q.bytes -= job.payload.len();
                q.acked = job.id;
                q.failing = false;
                shared.idle.notify_all();
            }
            Err(Failure::Connection(why)) => {
                backend.reset();
                q.failing = true;
                shared.idle.notify_all();
                shared.stats.connected.store(false, Relaxed);
                shared.stats.connection_failures.fetch_add(1, Relaxed);
                *shared.last_error.lock().expect("error lock") = why;
                q.jobs.push_front(job);
                // Wait before reconnecting, but wake at once to stop.
                let _ = shared.wake.wait_timeout_while(q, backoff, |q| !q.stop);
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

pub(super) struct Connection {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    line: Vec<u8>,
}

pub(super) enum Reply {
    Integer(i64),
    Ok,
    Error(String),
}

/// A whole RESP reply, for the few commands whose answer we read (CLUSTER
/// SLOTS).
#[derive(Debug)]
pub(super) enum Value {
    Integer(i64),
    Text(Vec<u8>),
    Nil,
    Error(String),
    Array(Vec<Value>),
}

impl Connection {
    /// Connects to `host:port` with `config`'s credentials and database.
    pub(super) fn open(config: &RedisConfig, host: &str, port: u16) -> Result<Self, Failure> {
        let fail = |e: std::io::Error| Failure::Connection(format!("redis {host}:{port}: {e}"));
        let addr = (host, port)
            .to_socket_addrs()
            .map_err(fail)?
            .next()
            .ok_or_else(|| Failure::Connection(format!("redis host {host} not found")))?;
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(fail)?;
        stream.set_nodelay(true).map_err(fail)?;
        // A Redis that stops answering counts as gone; resending is safe.
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(fail)?;
        let mut c = Self {
            writer: stream.try_clone().map_err(fail)?,
            reader: BufReader::with_capacity(64 << 10, stream),
            line: Vec::new(),
        };
        let mut setup = Vec::new();
        let mut n = 0;
        {
            let mut resp = Resp { buf: &mut setup };
            match (&config.username, &config.password) {
                (Some(u), Some(p)) => {
                    resp.command(&[b"AUTH", u.as_bytes(), p.as_bytes()]);
                    n += 1;
                }
                (None, Some(p)) => {
                    resp.command(&[b"AUTH", p.as_bytes()]);
                    n += 1;
                }
                _ => {}
            }
            if config.db != 0 {
                resp.command(&[b"SELECT", config.db.to_string().as_bytes()]);
                n += 1;
            }
        }
        if n > 0 {
            c.writer.write_all(&setup).map_err(fail)?;
            for _ in 0..n {
                if let Reply::Error(e) = c.reply()? {
                    return Err(Failure::Connection(format!("redis setup refused: {e}")));
                }
            }
        }
        Ok(c)
    }

    pub(super) fn write(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.writer
            .write_all(bytes)
            .map_err(|e| Failure::Connection(format!("redis write: {e}")))
    }

    /// Sends `commands` pipelined commands and reads their replies; returns
    /// the members they added.
    fn send(
        &mut self,
        payload: &[u8],
        commands: usize,
        stats: &RedisStats,
    ) -> Result<u64, Failure> {
        self.write(payload)?;
        let mut added = 0u64;
        for _ in 0..commands {
            match self.reply()? {
                Reply::Integer(n) => added += n.max(0) as u64,
                Reply::Ok => {}
                Reply::Error(e) if e.starts_with("LOADING") || e.starts_with("BUSY") => {
                    return Err(Failure::Connection(format!("redis not ready: {e}")));
                }
                Reply::Error(_) => {
                    stats.error_replies.fetch_add(1, Relaxed);
                }
            }
        }
        Ok(added)
    }

    /// Reads one nested reply (arrays included).
    pub(super) fn value(&mut self) -> Result<Value, Failure> {
        let body = self.header()?;
        let number = || -> Result<i64, Failure> {
            body.parse()
                .map_err(|_| Failure::Connection(format!("bad redis reply {body:?}")))
        };
        Ok(match self.line[0] {
            b':' => Value::Integer(number()?),
            b'+' => Value::Text(body.into_bytes()),
            b'-' => Value::Error(body),
            b'$' => match number()? {
                len if len < 0 => Value::Nil,
                len => {
                    let mut data = vec![0; len as usize + 2];
                    self.reader.read_exact(&mut data).map_err(broken)?;
                    data.truncate(len as usize);
                    Value::Text(data)
                }
            },
            b'*' => match number()? {
                len if len < 0 => Value::Nil,
                len => Value::Array(
                    (0..len)
                        .map(|_| self.value())
                        .collect::<Result<Vec<_>, _>>()?,
                ),
            },
            other => {
                return Err(Failure::Connection(format!(
                    "unexpected redis reply type {:?}",
                    other as char
                )))
            }
        })
    }

    /// Reads a reply's first line into `self.line` (its type byte stays
    /// at `self.line[0]`) and returns the text after the type byte.
    fn header(&mut self) -> Result<String, Failure> {
        self.line.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.line)
            .map_err(broken)?;
        if n < 3 || !self.line.ends_with(b"\r\n") {
            return Err(Failure::Connection("redis closed the connection".into()));
        }
        Ok(String::from_utf8_lossy(&self.line[1..n - 2]).into_owned())
    }

    pub(super) fn reply(&mut self) -> Result<Reply, Failure> {
        let body = self.header()?;
        match self.line[0] {
            b':' => Ok(Reply::Integer(body.parse().unwrap_or(0))),
            b'+' => Ok(Reply::Ok),
            b'-' => Ok(Reply::Error(body)),
            b'$' => {
                // Not sent by the commands we use; skip it to stay in sync.
                let len: i64 = body.parse().unwrap_or(-1);
                if len >= 0 {
                    let mut skip = vec![0; len as usize + 2];
                    self.reader.read_exact(&mut skip).map_err(broken)?;
                }
                Ok(Reply::Ok)
            }
            other => Err(Failure::Connection(format!(
                "unexpected redis reply type {:?}",
                other as char
            ))),
        }
    }
}

fn broken(e: std::io::Error) -> Failure {
    Failure::Connection(format!("redis read: {e}"))
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
