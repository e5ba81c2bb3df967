//! The PerformanceTarget's storage: per function, one ring of raw samples
//! per `FunctionTime` and one bounded log, all behind the GIL.
//!
//! Handles resolve their `FUNCTION_ID` to a slot index once; an event is
//! then `slots[index].times[kind].push(sample)`. Slots of functions that no
//! live handle refers to are recycled after they are drained, so a node
//! whose function instances come and go keeps a bounded table.

use super::ring::{BoundedLog, ByteSize, Ring};
use crate::events::FunctionTime;
use crate::gil::GilCell;
use crate::text::truncate;
use pyo3::Python;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use uuid::Uuid;

/// One raw sample: 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub timestamp_ns: i64,
    pub value: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LogEntry {
    pub timestamp_ns: i64,
    pub target: String,
    pub message: String,
}

impl ByteSize for LogEntry {
    fn bytes(&self) -> usize {
        self.target.len() + self.message.len()
    }
}

#[derive(Clone, Debug)]
pub struct PerfConfig {
    /// Samples kept per function and `FunctionTime` between drains.
    pub capacity: usize,
    /// Log entries kept per function between drains.
    pub log_capacity: usize,
    /// Bytes of log target+message kept per function between drains.
    pub log_bytes: usize,
    /// Longest message kept; longer ones are cut at a char boundary.
    pub max_message_bytes: usize,
    /// Functions tracked at once; events of further functions are refused
    /// (counted) until a drain frees a slot.
    pub max_functions: usize,
}

impl Default for PerfConfig {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            log_capacity: 10_000,
            log_bytes: 4 << 20,
            max_message_bytes: 64 << 10,
            max_functions: 10_000,
        }
    }
}

/// Longest log target kept; longer ones are cut at a char boundary. A
/// target names where an entry came from (a module path, tens of bytes),
/// and it becomes part of a Redis key (`performance:<function_id>:<target>`)
/// and of every CSV row of the entry: no reason to carry megabytes.
pub const MAX_TARGET_BYTES: usize = 256;

/// Cumulative counters, never reset by a drain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PerfStats {
    pub samples_recorded: u64,
    pub samples_dropped: u64,
    pub log_entries_recorded: u64,
    pub log_entries_dropped: u64,
    pub messages_truncated: u64,
    pub targets_truncated: u64,
    pub events_without_function_id: u64,
    pub functions_refused: u64,
}

/// The live counters behind `PerfStats`. Written only with the GIL held
/// (one writer at a time), so a relaxed load + store is a correct
/// increment and costs what a plain field would; atomics so that the
/// Prometheus scrape thread can read them without the GIL.
#[derive(Default)]
struct PerfCounters {
    samples_recorded: AtomicU64,
    samples_dropped: AtomicU64,
    log_entries_recorded: AtomicU64,
    log_entries_dropped: AtomicU64,
    messages_truncated: AtomicU64,
    targets_truncated: AtomicU64,
    events_without_function_id: AtomicU64,
    functions_refused: AtomicU64,
}

/// Adds `n` to a counter written only under the GIL (the token).
#[inline]
fn bump(_py: Python<'_>, counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

/// Everything drained at once: per `FunctionTime`, per function, samples
/// oldest first; and per function, log entries oldest first.
#[derive(Debug, Default)]
pub struct Drained {
    pub times: [Vec<(Uuid, Vec<Sample>)>; 5],
    pub logs: Vec<(Uuid, Vec<LogEntry>)>,
}

impl Drained {
    pub fn sample_count(&self) -> usize {
        self.times.iter().flatten().map(|(_, s)| s.len()).sum()
    }

    pub fn log_count(&self) -> usize {
        self.logs.iter().map(|(_, l)| l.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.sample_count() == 0 && self.log_count() == 0
    }
}

struct Slot {
    id: Uuid,
    times: [Ring<Sample>; 5],
    logs: BoundedLog<LogEntry>,
    /// One clone per live route; the slot is recyclable when only the
    /// table's own clone is left.
    users: Arc<()>,
}

struct Table {
    slots: Vec<Option<Slot>>,
    index: HashMap<Uuid, usize>,
    free: Vec<usize>,
}

pub struct PerfStore {
    config: PerfConfig,
    table: GilCell<Table>,
    counters: PerfCounters,
}

/// A handle's resolved place in the store.
pub struct SlotRef {
    index: usize,
    _user: Arc<()>,
}

impl PerfStore {
    pub fn new(config: PerfConfig) -> Self {
        Self {
            config,
            table: GilCell::new(Table {
                slots: Vec::new(),
                index: HashMap::new(),
                free: Vec::new(),
            }),
            counters: PerfCounters::default(),
        }
    }

    pub fn config(&self) -> &PerfConfig {
        &self.config
    }

    /// Finds or creates the slot for `id`; `None` when the function table
    /// is full (the caller counts the events this refuses).
    pub fn slot_for(&self, py: Python<'_>, id: Uuid) -> Option<SlotRef> {
        let config = &self.config;
        self.table.with(py, |t| {
            if let Some(&index) = t.index.get(&id) {
                let user = t.slots[index]
                    .as_ref()
                    .expect("indexed slot exists")
                    .users
                    .clone();
                return Some(SlotRef { index, _user: user });
            }
            if t.index.len() >= config.max_functions {
                return None;
            }
            let users = Arc::new(());
            let slot = Slot {
                id,
                times: std::array::from_fn(|_| Ring::new(config.capacity)),
                logs: BoundedLog::new(config.log_capacity, config.log_bytes),
                users: users.clone(),
            };
            let index = match t.free.pop() {
                Some(i) => {
                    t.slots[i] = Some(slot);
                    i
                }
                None => {
                    t.slots.push(Some(slot));
                    t.slots.len() - 1
                }
            };
            t.index.insert(id, index);
            Some(SlotRef {
                index,
                _user: users,
            })
        })
    }

    #[inline]
    pub fn push_sample(&self, py: Python<'_>, slot: &SlotRef, kind: FunctionTime, sample: Sample) {
        self.table.with(py, |t| {
            let s = t.slots[slot.index]
                .as_mut()
                .expect("referenced slot exists");
            let dropped = s.times[kind as usize].push(sample);
            bump(py, &self.counters.samples_recorded, 1);
            bump(py, &self.counters.samples_dropped, dropped as u64);
        })
    }

    pub fn push_log(
        &self,
        py: Python<'_>,
        slot: &SlotRef,
        timestamp_ns: i64,
        target: &str,
        message: &str,
    ) {
        let cut = |s, max| truncate(s, max).map_or((s, false), |cut| (cut, true));
        let (message, truncated) = cut(message, self.config.max_message_bytes);
        let (target, target_truncated) = cut(target, MAX_TARGET_BYTES);
        let entry = LogEntry {
            timestamp_ns,
            target: target.to_owned(),
            message: message.to_owned(),
        };
        self.table.with(py, |t| {
            let s = t.slots[slot.index]
                .as_mut()
                .expect("referenced slot exists");
            bump(py, &self.counters.log_entries_dropped, s.logs.push(entry));
            bump(py, &self.counters.log_entries_recorded, 1);
            bump(py, &self.counters.messages_truncated, truncated as u64);
            bump(
                py,
                &self.counters.targets_truncated,
                target_truncated as u64,
            );
        })
    }

    /// An event not stored: its function got no slot (`max_functions`).
    pub fn count_refused(&self, py: Python<'_>) {
        bump(py, &self.counters.functions_refused, 1);
    }

    pub fn count_without_function_id(&self, py: Python<'_>) {
        bump(py, &self.counters.events_without_function_id, 1);
    }

    /// A snapshot of the counters; needs no GIL.
    pub fn stats(&self) -> PerfStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PerfStats {
            samples_recorded: get(&c.samples_recorded),
            samples_dropped: get(&c.samples_dropped),
            log_entries_recorded: get(&c.log_entries_recorded),
            log_entries_dropped: get(&c.log_entries_dropped),
            messages_truncated: get(&c.messages_truncated),
            targets_truncated: get(&c.targets_truncated),
            events_without_function_id: get(&c.events_without_function_id),
            functions_refused: get(&c.functions_refused),
        }
    }

    /// Samples and log entries waiting to be drained.
    pub fn pending(&self, py: Python<'_>) -> (usize, usize) {
        self.table.with(py, |t| {
            t.slots.iter().flatten().fold((0, 0), |(s, l), slot| {
                (
                    s + slot.times.iter().map(Ring::len).sum::<usize>(),
                    l + slot.logs.len(),
                )
            })
        })
    }

    /// Takes everything recorded so far, atomically with respect to writers
    /// (they need the GIL too), and recycles slots nobody refers to. Only
    /// moves buffers: the copying into Python or protobuf happens later.
    pub fn drain(&self, py: Python<'_>) -> Drained {
        self.table.with(py, |t| {
            let mut out = Drained::default();
            for (i, entry) in t.slots.iter_mut().enumerate() {
                let Some(slot) = entry else { continue };
                for kind in FunctionTime::ALL {
                    let ring = &mut slot.times[kind as usize];
                    if !ring.is_empty() {
                        out.times[kind as usize].push((slot.id, ring.take()));
                    }
                }
                if !slot.logs.is_empty() {
                    out.logs.push((slot.id, slot.logs.take()));
                }
                if Arc::strong_count(&slot.users) == 1 {
                    t.index.remove(&slot.id);
                    t.free.push(i);
                    *entry = None;
                }
            }
            out
        })
    }
}

impl crate::counters::DropSource for PerfStore {
    fn drops(&self) -> Vec<(&'static str, &'static str, u64)> {
        let s = self.stats();
        vec![
            ("performance", "sample_overwritten", s.samples_dropped),
            (
                "performance",
                "log_entry_overwritten",
                s.log_entries_dropped,
            ),
            (
                "performance",
                "no_function_id",
                s.events_without_function_id,
            ),
            ("performance", "function_refused", s.functions_refused),
        ]
    }
}
