//! The orchestrator's side of shipping: check a received batch, drop it if
//! already stored, turn it into Redis commands and CSV rows, hand it over.
//!
//! `CollectorCore.ingest(body)` does all of it without the GIL and answers
//! with an HTTP status: 200 stored (or already stored), 400 malformed
//! (nothing written), 413 more entries or decoded work than one body may
//! hold (nothing written, see `admission`), 503 not taken now (Redis queue
//! full, closing, or the decoded-work budget in use; the node keeps the
//! batch and retries), 507 / 500 the dataset files are full / failed
//! (nothing of the batch kept; the node retries). The HTTP
//! server around it is `http` (tokens in `tokens`).

pub mod admission;
#[cfg(test)]
mod client_bench;
pub mod cluster;
mod connection;
pub mod dataset;
pub mod dedup;
pub mod format;
#[cfg(test)]
mod fuzz;
pub mod http;
pub mod redis;
mod replies;
pub mod tokens;

use crate::args::{Arg, Limit};
use crate::events::FunctionTime;
use crate::wire::scan::scan;
use crate::wire::{decode_checked, Malformed, NodePerformanceSamples};
use admission::{estimate, Budget, Estimate, Permit};
use dataset::Dataset;
use dedup::Dedup;
use format::{push_csv_field, push_f64, score, Resp};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use redis::{Job, RedisSink, Route};
use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Stats {
    batches_received: AtomicU64,
    batches_stored: AtomicU64,
    batches_duplicate: AtomicU64,
    batches_malformed: AtomicU64,
    batches_refused: AtomicU64,
    batches_forbidden: AtomicU64,
    batches_queued: AtomicU64,
    samples_stored: AtomicU64,
    log_entries_stored: AtomicU64,
    dataset_errors: AtomicU64,
    refused_too_many_entries: AtomicU64,
    refused_too_large_decoded: AtomicU64,
    busy_decoded_budget: AtomicU64,
    batches_unsequenced: AtomicU64,
    log_keys_renamed: AtomicU64,
}

struct State {
    dedup: Dedup,
    dataset: Option<Dataset>,
    closed: bool,
    /// Batches whose Redis job is not yet acknowledged, oldest first (job
    /// ids grow), so a resent one is answered by its job's fate.
    unacked: VecDeque<(BatchKey, u64)>,
}

type BatchKey = (String, u64, u64);

impl State {
    /// Forgets acknowledged jobs: what is left is bounded by the queue.
    fn prune(&mut self, redis: &RedisSink) {
        let acked = redis.acked();
        while self.unacked.front().is_some_and(|(_, id)| *id <= acked) {
            self.unacked.pop_front();
        }
    }

    fn unacked_job(&mut self, redis: &RedisSink, key: &BatchKey) -> Option<u64> {
        self.prune(redis);
        self.unacked
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, id)| *id)
    }
}

/// What one batch becomes.
#[derive(Default)]
pub struct Rendered {
    pub resp: Vec<u8>,
    pub commands: usize,
    pub members: u64,
    pub samples_csv: Vec<u8>,
    pub logs_csv: Vec<u8>,
    /// Each command's cluster slot and bytes (Redis Cluster only).
    pub routes: Vec<Route>,
    /// Log entries whose target is a metric's name, written under
    /// `performance:<id>:log:<target>` (see `log_key`).
    pub log_keys_renamed: u64,
}

/// Where a log entry goes in Redis: `performance:<id>:<target>`, as
/// EDGELESS writes it, except for a target named like a metric
/// (`function_execution_time`, ...): in that key its messages would be read
/// as samples (`summary` would count a "999" message as a 999 s execution),
/// so it goes to `performance:<id>:log:<target>` instead.
fn log_key(key: &mut Vec<u8>, id: &str, target: &str) -> bool {
    let clash = FunctionTime::ALL.iter().any(|t| t.metric_name() == target);
    let mark = if clash { "log:" } else { "" };
    write!(key, "performance:{id}:{mark}{target}").expect("vec write");
    clash
}

/// How a batch goes to Redis, if at all.
#[derive(Clone, Copy, PartialEq)]
pub enum RedisMode {
    None,
    Single,
    Cluster,
}

/// Renders a batch as pipelined multi-member ZADDs (unless `mode` is
/// `None`; with each command's slot for a cluster) and CSV rows (when
/// `csv_prefix` is given), formatting each number once.
pub fn render(
    perf: &NodePerformanceSamples,
    mode: RedisMode,
    csv_prefix: Option<&str>,
    members_per_command: usize,
) -> Rendered {
    render_into(
        Rendered::default(),
        perf,
        mode,
        csv_prefix,
        members_per_command,
    )
}

/// `render` into buffers allocated at once at their bound (`est`, from the
/// pre-scan), so they never grow by doubling past what was reserved.
pub fn render_reserved(
    perf: &NodePerformanceSamples,
    mode: RedisMode,
    csv_prefix: Option<&str>,
    members_per_command: usize,
    est: &Estimate,
) -> Rendered {
    let cap = |n: u64| usize::try_from(n).unwrap_or(0);
    let out = Rendered {
        resp: Vec::with_capacity(cap(est.resp)),
        routes: Vec::with_capacity(cap(est.routes)),
        samples_csv: Vec::with_capacity(cap(est.samples_csv)),
        logs_csv: Vec::with_capacity(cap(est.logs_csv)),
        ..Rendered::default()
    };
    render_into(out, perf, mode, csv_prefix, members_per_command)
}

fn render_into(
    mut out: Rendered,
    perf: &NodePerformanceSamples,
    mode: RedisMode,
    csv_prefix: Option<&str>,
    members_per_command: usize,
) -> Rendered {
    let redis = mode != RedisMode::None;
    let cluster = mode == RedisMode::Cluster;
    let mut score_text = Vec::with_capacity(32);
    let mut value_text = Vec::with_capacity(32);
    let mut key = Vec::with_capacity(128);
    for (kind, series) in perf.times() {
        let metric = kind.metric_name();
        for s in series {
            key.clear();
            write!(key, "performance:{}:{}", s.id, metric).expect("vec write");
            let slot = if cluster { cluster::key_slot(&key) } else { 0 };
            for chunk in s.samples.chunks(members_per_command.max(1)) {
                let start = out.resp.len();
                if redis {
                    let mut resp = Resp { buf: &mut out.resp };
                    resp.array(2 + 2 * chunk.len());
                    resp.bulk(&[b"ZADD"]);
                    resp.bulk(&[&key]);
                    out.commands += 1;
                    out.members += chunk.len() as u64;
                }
                for x in chunk {
                    score_text.clear();
                    value_text.clear();
                    push_f64(&mut score_text, score(x.timestamp_sec, x.timestamp_ns));
                    push_f64(&mut value_text, x.sample);
                    if redis {
                        let mut resp = Resp { buf: &mut out.resp };
                        resp.bulk(&[&score_text]);
                        resp.bulk(&[&score_text, b":", &value_text]);
                    }
                    if let Some(prefix) = csv_prefix {
                        let row = &mut out.samples_csv;
                        row.extend_from_slice(prefix.as_bytes());
                        for part in [s.id.as_bytes(), metric.as_bytes(), &score_text] {
                            row.extend_from_slice(part);
                            row.push(b',');
                        }
                        row.extend_from_slice(&value_text);
                        row.push(b'\n');
                    }
                }
                if cluster {
                    let end = out.resp.len();
                    out.routes.push(Route { slot, start, end });
                }
            }
        }
    }
    for group in &perf.function_log_entries {
        for e in &group.entries {
            score_text.clear();
            push_f64(&mut score_text, score(e.timestamp_sec, e.timestamp_ns));
            if redis {
                key.clear();
                if log_key(&mut key, &group.id, &e.target) {
                    out.log_keys_renamed += 1;
                }
                let start = out.resp.len();
                let mut resp = Resp { buf: &mut out.resp };
                resp.array(4);
                resp.bulk(&[b"ZADD"]);
                resp.bulk(&[&key]);
                resp.bulk(&[&score_text]);
                resp.bulk(&[&score_text, b":", e.msg.as_bytes()]);
                out.commands += 1;
                out.members += 1;
                if cluster {
                    let (slot, end) = (cluster::key_slot(&key), out.resp.len());
                    out.routes.push(Route { slot, start, end });
                }
            }
            if let Some(prefix) = csv_prefix {
                let row = &mut out.logs_csv;
                row.extend_from_slice(prefix.as_bytes());
                row.extend_from_slice(group.id.as_bytes());
                row.push(b',');
                push_csv_field(row, &e.target);
                row.push(b',');
                row.extend_from_slice(&score_text);
                row.push(b',');
                push_csv_field(row, &e.msg);
                row.push(b'\n');
            }
        }
    }
    out
}

/// The collector's storage half (see the module doc), as Python sees it:
/// a handle on the Rust state it shares with the HTTP server.
///
/// Why not one pyclass that the server holds as a `Py<CollectorCore>`: the
/// server's async tasks and storer threads hold it until their request is
/// done, which may be after `stop()` and after Python let go of it, so the
/// last reference was dropped by a thread that is not attached to Python.
/// PyO3 defers such a decref to a pool behind a mutex (its "reference
/// pool"): a `fork()` while that thread held the mutex left it locked in
/// the child, whose next call into the extension then hung. Those threads
/// now hold an `Arc<Core>`, with nothing of Python in it (README, "Process
/// life"; `tests/test_reference_pool.py`).
#[pyclass(module = "edgeless_telemetry._core", frozen)]
pub struct CollectorCore(Arc<Core>);

impl std::ops::Deref for CollectorCore {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.0
    }
}

impl CollectorCore {
    /// What the HTTP server holds (see the type doc).
    pub(crate) fn shared(&self) -> Arc<Core> {
        self.0.clone()
    }
}

/// `CollectorCore`'s state: no Python object in it, so that any thread may
/// drop it (the last holder may be a storer thread or a server task, so
/// dropping never waits: the Redis writer is only told to stop).
pub struct Core {
    /// The fork generation that made it: its Redis writer thread and the
    /// locks that thread takes belong to that process (see `usable`).
    generation: u64,
    state: Mutex<State>,
    redis: Option<RedisSink>,
    redis_mode: RedisMode,
    redis_ack_timeout: Duration,
    row_prefix: Option<String>,
    members_per_command: usize,
    stats: Stats,
    /// Most samples plus log entries one body may hold (413 past it).
    max_entries: u64,
    /// Decoded work of all requests in flight; see `admission`.
    budget: Budget,
}

impl Core {
    /// `node`: the only node id this body may carry (the sender's token is
    /// that node's), checked before anything is written.
    pub fn ingest_body(&self, body: &[u8], node: Option<&str>) -> (u16, String) {
        self.stats.batches_received.fetch_add(1, Relaxed);
        let admitted = match self.admit(body) {
            Ok(admitted) => admitted,
            Err(answer) => return answer,
        };
        let msg = match decode_checked(body) {
            Ok(m) => m,
            Err(Malformed(why)) => {
                self.stats.batches_malformed.fetch_add(1, Relaxed);
                return (400, why);
            }
        };
        if let Some(expected) = node {
            if msg.node_id != expected {
                self.stats.batches_forbidden.fetch_add(1, Relaxed);
                return (
                    403,
                    format!(
                        "node_id {:?} does not match the token's node {expected:?}",
                        msg.node_id
                    ),
                );
            }
        }
        let perf = msg.performance_samples.unwrap_or_default();
        let (samples, logs) = (perf.sample_count(), perf.log_count());
        let (node, nonce, seq) = (&msg.node_id, msg.nonce, msg.batch_sequence);
        // Without a batch sequence (EDGELESS's own message, not our node's)
        // a resent body cannot be told from a new one: stored as it comes.
        let sequenced = seq != 0;
        if !sequenced {
            self.stats.batches_unsequenced.fetch_add(1, Relaxed);
        }
        if sequenced
            && self
                .state
                .lock()
                .expect("state lock")
                .dedup
                .seen(node, nonce, seq)
        {
            return self.duplicate(perf, (node.clone(), nonce, seq), admitted);
        }
        let (permit, est) = admitted;
        let rendered = render_reserved(
            &perf,
            self.redis_mode,
            self.row_prefix.as_deref(),
            self.members_per_command,
            &est,
        );
        // Under the lock: check again (a concurrent retry), check Redis
        // room, write the dataset, then queue for Redis (which cannot fail
        // now: only this lock's holder adds to the queue).
        let mut st = self.state.lock().expect("state lock");
        if st.closed {
            self.stats.batches_refused.fetch_add(1, Relaxed);
            return (503, "collector is closing".into());
        }
        if sequenced && st.dedup.seen(node, nonce, seq) {
            drop((st, rendered));
            return self.duplicate(perf, (node.clone(), nonce, seq), (permit, est));
        }
        if let Some(redis) = &self.redis {
            if !redis.has_room(rendered.resp.len()) {
                self.stats.batches_refused.fetch_add(1, Relaxed);
                return (503, format!("redis queue full ({})", redis.last_error()));
            }
        }
        if let Some(ds) = st.dataset.as_mut() {
            // All or nothing (rows of both files and the journal line): on
            // failure nothing of the batch stays, nothing goes to Redis, and
            // the node sends it again.
            let written =
                ds.write_batch(&rendered.samples_csv, &rendered.logs_csv, node, nonce, seq);
            if let Err(e) = written {
                self.stats.dataset_errors.fetch_add(1, Relaxed);
                return (
                    e.status(),
                    format!("writing the dataset failed, nothing kept, send again: {e}"),
                );
            }
        }
        // A batch with nothing for Redis (no samples) queues nothing.
        let for_redis = self.redis.as_ref().filter(|_| rendered.commands > 0);
        let job = for_redis.map(|redis| {
            redis.push(Job {
                payload: rendered.resp,
                commands: rendered.commands,
                members: rendered.members,
                samples: (samples + logs) as u64,
                routes: rendered.routes,
                id: 0,
            })
        });
        if sequenced {
            st.dedup.mark(node, nonce, seq);
        }
        if let (Some(redis), Some(id), true) = (&self.redis, job, sequenced) {
            st.prune(redis);
            st.unacked.push_back(((node.clone(), nonce, seq), id));
        }
        drop(st);
        // Everything decoded and rendered is gone (the Redis commands now
        // count against the queue's own limit): give the budget back
        // before waiting for Redis.
        let renamed = rendered.log_keys_renamed;
        drop((perf, rendered.samples_csv, rendered.logs_csv));
        drop(permit);
        self.stats.log_keys_renamed.fetch_add(renamed, Relaxed);
        self.stats.batches_stored.fetch_add(1, Relaxed);
        self.stats.samples_stored.fetch_add(samples as u64, Relaxed);
        self.stats
            .log_entries_stored
            .fetch_add(logs as u64, Relaxed);
        let stored = format!("stored {samples} samples, {logs} log entries");
        match job {
            Some(id) => self.answer_when_acked(id, stored),
            None => (200, stored),
        }
    }

    /// Every count, by its `stats()` name (also served on `GET /stats`).
    /// A collector does not survive `fork()`: in a child its Redis writer
    /// thread is gone, and a lock that thread held at the fork would never
    /// be released there. So an inherited one refuses clearly instead of
    /// hanging; the child makes its own.
    pub(crate) fn usable(&self) -> PyResult<()> {
        if crate::fork::inherited(self.generation) {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "this OrchestratorCollector was made before fork(): it belongs to the parent \
                 process; make a new one in the child",
            ));
        }
        Ok(())
    }

    pub(crate) fn stats_pairs(&self) -> Vec<(&'static str, u64)> {
        let mut out = Vec::with_capacity(32);
        let s = &self.stats;
        for (name, v) in [
            ("batches_received", &s.batches_received),
            ("batches_stored", &s.batches_stored),
            ("batches_duplicate", &s.batches_duplicate),
            ("batches_unsequenced", &s.batches_unsequenced),
            ("log_keys_renamed", &s.log_keys_renamed),
            ("batches_malformed", &s.batches_malformed),
            ("batches_refused", &s.batches_refused),
            ("batches_forbidden", &s.batches_forbidden),
            ("batches_queued", &s.batches_queued),
            ("samples_stored", &s.samples_stored),
            ("log_entries_stored", &s.log_entries_stored),
            ("dataset_errors", &s.dataset_errors),
            ("refused_too_many_entries", &s.refused_too_many_entries),
            ("refused_too_large_decoded", &s.refused_too_large_decoded),
            ("busy_decoded_budget", &s.busy_decoded_budget),
        ] {
            out.push((name, v.load(Relaxed)));
        }
        out.push(("decoded_budget_bytes_in_use", self.budget.in_use()));
        out.push(("decoded_budget_bytes", self.budget.limit()));
        if let Some(r) = &self.redis {
            let rs = r.stats();
            for (name, v) in [
                ("redis_entries_written", &rs.samples_written),
                ("redis_members_added", &rs.members_added),
                ("redis_members_existing", &rs.members_existing),
                ("redis_error_replies", &rs.error_replies),
                ("redis_connects", &rs.connects),
                ("redis_connection_failures", &rs.connection_failures),
                ("redis_entries_abandoned", &rs.samples_abandoned),
                ("redis_cluster_moved", &rs.moved),
                ("redis_cluster_asked", &rs.asked),
                ("redis_cluster_map_reads", &rs.map_reads),
                ("redis_entries_rejected", &rs.entries_rejected),
                ("redis_faults", &rs.faults),
                ("redis_failing_since", &rs.failing_since),
            ] {
                out.push((name, v.load(Relaxed)));
            }
            for (name, v) in replies::ERROR_STAT_NAMES.iter().zip(&rs.error_kinds) {
                out.push((name, v.load(Relaxed)));
            }
            let (bytes, jobs) = r.queued();
            out.push(("redis_queue_bytes", bytes as u64));
            out.push(("redis_queue_batches", jobs as u64));
            out.push(("redis_connected", rs.connected.load(Relaxed) as u64));
        }
        out
    }

    /// Pre-scans a body and reserves what decoding it will take, or says
    /// why not: 400 malformed, 413 never (too many entries, or more decoded
    /// work than the whole budget), 503 not now (the budget is in use).
    fn admit(&self, body: &[u8]) -> Result<(Permit<'_>, Estimate), (u16, String)> {
        let counts = match scan(body) {
            Ok(c) => c,
            Err(Malformed(why)) => {
                self.stats.batches_malformed.fetch_add(1, Relaxed);
                return Err((400, why));
            }
        };
        if counts.entries() > self.max_entries {
            self.stats.refused_too_many_entries.fetch_add(1, Relaxed);
            return Err((
                413,
                format!(
                    "body holds {} samples and log entries, over max_entries_per_body ({})",
                    counts.entries(),
                    self.max_entries
                ),
            ));
        }
        let est = estimate(
            &counts,
            self.redis_mode,
            self.row_prefix.as_ref().map(String::len),
            self.members_per_command,
        );
        let bytes = est.total();
        if bytes > self.budget.limit() {
            self.stats.refused_too_large_decoded.fetch_add(1, Relaxed);
            return Err((
                413,
                format!(
                    "body would take up to {bytes} bytes decoded, over max_decoded_bytes ({})",
                    self.budget.limit()
                ),
            ));
        }
        match self.budget.try_reserve(bytes) {
            Some(permit) => Ok((permit, est)),
            None => {
                self.stats.busy_decoded_budget.fetch_add(1, Relaxed);
                Err((
                    503,
                    "busy: max_decoded_bytes of decoded work in flight, send again".into(),
                ))
            }
        }
    }

    /// 200 once Redis has job `id`; 202 if it still waits in the queue
    /// (Redis down or slow): taken, and the CSV rows written, but the node
    /// should keep the batch and send it again until it gets a 200, since
    /// the queue dies with this process.
    fn answer_when_acked(&self, id: u64, stored: String) -> (u16, String) {
        let redis = self.redis.as_ref().expect("a job means Redis");
        if redis.wait_acked(id, self.redis_ack_timeout) {
            (200, stored)
        } else {
            self.stats.batches_queued.fetch_add(1, Relaxed);
            (202, format!("{stored}; queued for Redis, send again"))
        }
    }

    /// A batch stored before. Without Redis it is done. With Redis, it may
    /// be a batch answered 202 whose job is still queued (then its job's
    /// fate answers), or one whose job is done or died with an earlier
    /// collector process (we cannot tell which): then its ZADDs are queued
    /// again (resending a member stores nothing twice) and the CSV is left
    /// alone.
    fn duplicate(
        &self,
        perf: NodePerformanceSamples,
        key: BatchKey,
        (permit, est): (Permit<'_>, Estimate),
    ) -> (u16, String) {
        self.stats.batches_duplicate.fetch_add(1, Relaxed);
        let done = "duplicate batch, already stored".to_string();
        let Some(redis) = &self.redis else {
            return (200, done);
        };
        let queued = self
            .state
            .lock()
            .expect("state lock")
            .unacked_job(redis, &key);
        if let Some(id) = queued {
            drop((perf, permit));
            return self.answer_when_acked(id, done);
        }
        let no_csv = Estimate {
            samples_csv: 0,
            logs_csv: 0,
            ..est
        };
        let rendered = render_reserved(
            &perf,
            self.redis_mode,
            None,
            self.members_per_command,
            &no_csv,
        );
        drop(perf);
        if rendered.commands == 0 {
            return (200, done);
        }
        let mut st = self.state.lock().expect("state lock");
        if st.closed || !redis.has_room(rendered.resp.len()) {
            self.stats.batches_refused.fetch_add(1, Relaxed);
            return (503, "redis queue full or collector closing".into());
        }
        let id = redis.push(Job {
            payload: rendered.resp,
            commands: rendered.commands,
            members: rendered.members,
            samples: 0,
            routes: rendered.routes,
            id: 0,
        });
        st.prune(redis);
        st.unacked.push_back((key, id));
        drop((st, permit));
        self.answer_when_acked(id, done)
    }
}

#[pymethods]
impl CollectorCore {
    // The limits' defaults are literals for the text signature (stubtest
    // reads it): `admission::DEFAULT_MAX_ENTRIES` and
    // `DEFAULT_MAX_DECODED_BYTES`, checked by a test there.
    #[new]
    #[pyo3(
        text_signature = "(*, redis_url=None, dataset_path=None, append=False, additional_header=None, additional_fields=None, max_redis_queue_bytes=268435456, members_per_command=1000, redis_ack_timeout_s=2.0, max_entries_per_body=1048576, max_decoded_bytes=268435456, layout='plain')"
    )]
    #[pyo3(signature = (*, redis_url = None, dataset_path = None, append = Arg::value(false), additional_header = None, additional_fields = None, max_redis_queue_bytes = Limit::new(268435456), members_per_command = Limit::new(1000), redis_ack_timeout_s = Arg::value(2.0), max_entries_per_body = Limit::new(1048576), max_decoded_bytes = Limit::new(268435456), layout = Arg::value("plain".into())))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        redis_url: Option<Arg<String>>,
        dataset_path: Option<Arg<String>>,
        append: Arg<bool>,
        additional_header: Option<Arg<String>>,
        additional_fields: Option<Arg<String>>,
        max_redis_queue_bytes: Limit,
        members_per_command: Limit,
        redis_ack_timeout_s: Arg<f64>,
        max_entries_per_body: Limit,
        max_decoded_bytes: Limit,
        layout: Arg<String>,
    ) -> PyResult<Self> {
        // The user's arguments of OrchestratorCollector, passed on as given.
        const ME: &str = "OrchestratorCollector";
        let text = |arg: Option<Arg<String>>, name| arg.map(|a| a.named(ME, name)).transpose();
        let redis_url = text(redis_url, "redis_url")?;
        let dataset_path = text(dataset_path, "dataset_path")?;
        let additional_header = text(additional_header, "additional_header")?;
        let additional_fields = text(additional_fields, "additional_fields")?;
        let append = append.named(ME, "append")?;
        let redis_ack_timeout_s = redis_ack_timeout_s.named(ME, "redis_ack_timeout_s")?;
        let max_redis_queue_bytes =
            max_redis_queue_bytes.at_least(ME, "max_redis_queue_bytes", 1)?;
        let members_per_command = members_per_command.at_least(ME, "members_per_command", 1)?;
        let max_entries_per_body =
            max_entries_per_body.at_least(ME, "max_entries_per_body", 1)? as u64;
        let max_decoded_bytes = max_decoded_bytes.at_least(ME, "max_decoded_bytes", 1)? as u64;
        let layout = layout.named(ME, "layout")?;
        let layout = dataset::Layout::parse(&layout).map_err(PyValueError::new_err)?;
        if !(redis_ack_timeout_s.is_finite() && redis_ack_timeout_s >= 0.0) {
            return Err(PyValueError::new_err(
                "redis_ack_timeout_s must be a number of seconds >= 0",
            ));
        }
        let additional_header = additional_header.unwrap_or_default();
        let additional_fields = additional_fields.unwrap_or_default();
        for (name, value) in [
            ("additional_header", &additional_header),
            ("additional_fields", &additional_fields),
        ] {
            if value.contains(['\n', '\r']) {
                return Err(PyValueError::new_err(format!(
                    "{name} must be one CSV line, got {value:?}"
                )));
            }
        }
        let mut redis_mode = RedisMode::None;
        let redis = match redis_url.as_deref().filter(|u| !u.is_empty()) {
            None => None,
            Some(url) => {
                let config = redis::parse_url(url).map_err(PyValueError::new_err)?;
                redis_mode = if config.cluster {
                    RedisMode::Cluster
                } else {
                    RedisMode::Single
                };
                Some(
                    RedisSink::start(config, max_redis_queue_bytes)
                        .map_err(|e| PyOSError::new_err(e.to_string()))?,
                )
            }
        };
        let mut dedup = Dedup::default();
        let dataset = match dataset_path.as_deref().filter(|p| !p.is_empty()) {
            None => None,
            Some(prefix) => Some(
                Dataset::open(
                    prefix,
                    append,
                    &additional_header,
                    &additional_fields,
                    layout,
                    &mut dedup,
                )
                .map_err(|e| {
                    // Name the prefix: the error alone ("No such file or
                    // directory") does not say which path the user gave.
                    PyErr::from(std::io::Error::new(
                        e.kind(),
                        format!("cannot open the CSV dataset at prefix {prefix:?}: {e}"),
                    ))
                })?,
            ),
        };
        let row_prefix = dataset.as_ref().map(|d| d.row_prefix.clone());
        Ok(Self(Arc::new(Core {
            generation: crate::fork::generation(),
            state: Mutex::new(State {
                dedup,
                dataset,
                closed: false,
                unacked: VecDeque::new(),
            }),
            redis,
            redis_mode,
            redis_ack_timeout: Duration::from_secs_f64(redis_ack_timeout_s.min(1e6)),
            row_prefix,
            members_per_command,
            stats: Stats::default(),
            max_entries: max_entries_per_body,
            budget: Budget::new(max_decoded_bytes),
        })))
    }

    /// Stores one received body; returns (HTTP status, reason). With
    /// `node_id`, a body for any other node is refused (403).
    #[pyo3(signature = (body, node_id = None))]
    fn ingest(
        &self,
        py: Python<'_>,
        body: &[u8],
        node_id: Option<String>,
    ) -> PyResult<(u16, String)> {
        self.usable()?;
        Ok(crate::gil::allow_threads(py, || {
            self.ingest_body(body, node_id.as_deref())
        }))
    }

    /// Waits until Redis has acknowledged everything queued; False on
    /// timeout. True at once without Redis.
    fn flush(&self, py: Python<'_>, timeout_s: f64) -> PyResult<bool> {
        self.usable()?;
        let timeout = Duration::from_secs_f64(timeout_s.clamp(0.0, 1e9));
        Ok(crate::gil::allow_threads(py, || {
            self.redis.as_ref().is_none_or(|r| r.flush(timeout))
        }))
    }

    /// Refuses further batches, flushes Redis for at most `timeout_s`, and
    /// stops the writer (what is left is counted as abandoned).
    fn close(&self, py: Python<'_>, timeout_s: f64) {
        if self.usable().is_err() {
            return; // the parent's to close
        }
        let timeout = Duration::from_secs_f64(timeout_s.clamp(0.0, 1e9));
        crate::gil::allow_threads(py, || {
            self.state.lock().expect("state lock").closed = true;
            if let Some(r) = &self.redis {
                r.close(timeout);
            }
        })
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.usable()?;
        let d = PyDict::new(py);
        for (name, v) in self.stats_pairs() {
            d.set_item(name, v)?;
        }
        Ok(d)
    }

    /// What Redis last answered instead of storing (an error reply, or why
    /// it could not be reached), "" if nothing yet; `stats()` says since
    /// when it refuses (`redis_failing_since`, 0 while it takes writes).
    fn redis_last_error(&self) -> PyResult<String> {
        self.usable()?;
        Ok(self
            .redis
            .as_ref()
            .map(|r| r.last_error())
            .unwrap_or_default())
    }
}

impl Drop for Core {
    /// In a forked child the Redis writer's locks may be held for good by
    /// the parent's thread: leak the sink there rather than touch them.
    fn drop(&mut self) {
        if crate::fork::inherited(self.generation) {
            if let Some(redis) = self.redis.take() {
                std::mem::forget(redis);
            }
        }
    }
}
