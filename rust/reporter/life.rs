//! One life of a reporter: everything that belongs to one process (fork
//! generation). A forked child must not inherit its parent's nonce,
//! sequence numbers, pending bodies, connection or locks (one may be held
//! by a thread the child does not have), so it gets a new `Life` and the
//! parent's is leaked, never touched again (see `ReporterCore::life`).
//!
//! Lock order and the GIL: `state` is held for a whole drain-encode-send
//! (up to `timeout_s` per request) and only ever taken with the GIL
//! released, and nothing holding it waits for the GIL; `failure` is held
//! for a string copy only. So no thread waits for the GIL while holding a
//! lock another thread waits for with the GIL.

use super::pending::{Body, Pending};
use super::stats::{Stat, Stats};
use crate::http::client::{Client, Endpoint};
use crate::performance::Drained;
use crate::wire::{encode_drained, Sender};
use bytes::Bytes;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What a reporter is, for all its lives.
pub struct Config {
    pub node_id: String,
    pub endpoint: Endpoint,
    pub token: Option<String>,
    /// Bound of one request (connect, send, answer).
    pub timeout: Duration,
    pub max_pending_bytes: usize,
    pub max_batch_bytes: usize,
    /// The `refresh_deadline` sent is now + this many seconds.
    pub refresh_s: u64,
}

/// A request never gets less than this, even right at a deadline, so a
/// healthy collector can still answer a last flush.
const MIN_REQUEST: Duration = Duration::from_millis(50);

pub struct Life {
    pub generation: u64,
    pub nonce: u64,
    pub stats: Stats,
    failure: Mutex<Failure>,
    state: Mutex<State>,
}

#[derive(Default)]
struct Failure {
    text: String,
    /// Start of the current run of failed sends; `None` once one went.
    since: Option<SystemTime>,
}

pub struct State {
    next_sequence: u64,
    pending: Pending,
    client: Client,
}

impl Life {
    pub fn new(config: &Config) -> Self {
        let client = Client::protobuf(config.endpoint.clone(), config.token.as_deref())
            .expect("token checked when the reporter was made");
        Self {
            generation: crate::fork::generation(),
            nonce: random_nonce(),
            stats: Stats::default(),
            failure: Mutex::default(),
            state: Mutex::new(State {
                next_sequence: 1,
                pending: Pending::new(config.max_pending_bytes),
                client,
            }),
        }
    }

    /// The state; call it only with the GIL released (see the module doc).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The last failure's text and when the current run of failures began
    /// (seconds since the epoch; `None` when the last send went through).
    pub fn last_error(&self) -> (String, Option<f64>) {
        let f = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
        let since = f
            .since
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64());
        (f.text.clone(), since)
    }

    fn failed(&self, text: String) {
        let mut f = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
        f.text = text;
        f.since.get_or_insert_with(SystemTime::now);
    }

    fn went_through(&self) {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .since = None;
    }

    /// Encodes `drained` into pending bodies (numbered on), dropping the
    /// oldest past `max_pending_bytes`. Returns true if this made the
    /// reporter's first drop (worth one warning; the rest are counted).
    pub fn enqueue(&self, state: &mut State, drained: &Drained, config: &Config) -> bool {
        if drained.is_empty() {
            return false;
        }
        let sender = Sender {
            node_id: &config.node_id,
            nonce: self.nonce,
            refresh_deadline: unix_now() + config.refresh_s,
        };
        let before = self.stats.get(Stat::BatchesDropped);
        for batch in encode_drained(
            drained,
            &sender,
            state.next_sequence,
            config.max_batch_bytes,
        ) {
            state.next_sequence = batch.sequence + 1;
            let dropped = state.pending.push(Body {
                samples: batch.samples,
                log_entries: batch.log_entries,
                data: Bytes::from(batch.body),
            });
            self.stats.add(Stat::BatchesDropped, dropped.batches);
            self.stats.add(Stat::SamplesDropped, dropped.samples);
            self.stats.add(Stat::LogEntriesDropped, dropped.log_entries);
        }
        self.publish(state);
        before == 0 && self.stats.get(Stat::BatchesDropped) > 0
    }

    /// Sends pending bodies oldest first until none is left (true), one is
    /// not taken for good, or `deadline` passes (false). See the README's
    /// Delivery table for what each answer does.
    pub fn deliver(&self, state: &mut State, config: &Config, deadline: Option<Instant>) -> bool {
        let result = loop {
            let Some(body) = state.pending.front() else {
                break true;
            };
            let now = Instant::now();
            let mut until = now + config.timeout;
            if let Some(deadline) = deadline {
                if now >= deadline {
                    break false;
                }
                until = until.min(deadline).max(now + MIN_REQUEST);
            }
            let (samples, log_entries) = (body.samples as u64, body.log_entries as u64);
            let answer = state.client.post(body.data.clone(), until);
            match answer {
                Ok(a) if a.status == 202 => {
                    // Taken, but Redis does not hold it yet: keep it.
                    self.stats.add(Stat::BatchesUnconfirmed, 1);
                    self.failed(format!("HTTP 202: {}", a.text));
                    break false;
                }
                Ok(a) if (200..300).contains(&a.status) => {
                    self.stats.add(Stat::BatchesSent, 1);
                    self.stats.add(Stat::SamplesSent, samples);
                    self.stats.add(Stat::LogEntriesSent, log_entries);
                    self.went_through();
                }
                Ok(a) if (400..500).contains(&a.status) && !later(a.status) => {
                    // Refused for good (malformed, too large): resending
                    // cannot help, so it counts as dropped.
                    self.stats.add(Stat::BatchesRejected, 1);
                    self.stats.add(Stat::SamplesDropped, samples);
                    self.stats.add(Stat::LogEntriesDropped, log_entries);
                    self.failed(format!("HTTP {}: {}", a.status, a.text));
                }
                Ok(a) => {
                    self.stats.add(Stat::SendFailures, 1);
                    self.failed(format!("HTTP {}: {}", a.status, a.text));
                    break false;
                }
                Err(e) => {
                    self.stats.add(Stat::SendFailures, 1);
                    self.failed(e.to_string());
                    break false;
                }
            }
            state.pending.pop_front();
            self.publish(state);
        };
        self.publish(state);
        result
    }

    /// Drops the kept-alive connection.
    pub fn close(&self, state: &mut State) {
        state.client.close();
    }

    fn publish(&self, state: &State) {
        let s = &self.stats;
        s.set(Stat::PendingBatches, state.pending.batches() as u64);
        s.set(Stat::PendingBytes, state.pending.bytes() as u64);
        s.set(Stat::PendingSamples, state.pending.samples() as u64);
        s.set(Stat::ConnectionsOpened, state.client.connections_opened());
    }
}

/// 4xx answers that say "not now" rather than "never": a token to fix
/// (401, 403), or, from a proxy in front of the collector, a request that
/// took too long (408) or came too often (429). The body is kept.
fn later(status: u16) -> bool {
    matches!(status, 401 | 403 | 408 | 429)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A nonzero random u64 from the kernel. Not from a seeded generator: a
/// forked child would continue its parent's sequence and could draw the
/// parent's next nonce.
fn random_nonce() -> u64 {
    for _ in 0..16 {
        let mut buf = [0u8; 8];
        // SAFETY: writes at most 8 bytes into `buf`.
        let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
        let nonce = u64::from_ne_bytes(buf);
        if n == 8 && nonce != 0 {
            return nonce;
        }
    }
    // No getrandom (a very old kernel): the time and the pid still differ
    // between a parent and its child.
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish() | 1
}
