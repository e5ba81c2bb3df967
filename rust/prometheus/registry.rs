//! The EDGELESS families, how handles resolve to their series, and the
//! rendering of all of them.

use super::encoding::{
    self, push_f64, push_header, push_i64, push_series_start, push_u64, Format, Kind,
};
use super::family::{Family, Series};
use super::gauge::Gauge;
use super::histogram::{Buckets, Histogram};
use crate::chain::{function_type, ChainResult, Route, Tags, Target, FUNCTION_ID, NODE_ID};
use crate::clock::EventClock;
use crate::counters::DropSource;
use crate::events::{EventRef, FunctionTime};
use pyo3::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Weak;
use std::sync::{Arc, Mutex, OnceLock};

const FUNCTION_COUNT: &str = "function_count";
const EXECUTION_TIMES: &str = "execution_times";
const TRANSFER_TIMES: &str = "transfer_times";
const DROPPED: &str = "edgeless_telemetry_dropped";
/// Largest rendering buffer kept for reuse (about 16,000 execution_times
/// series); larger expositions use fresh memory each time.
const MAX_SPARE_BYTES: usize = 32 << 20;
const SERIES_REFUSED: &str = "edgeless_telemetry_series_refused";

/// Label names the families use; const labels may not reuse them.
pub const RESERVED_LABELS: [&str; 6] = [
    "node_id",
    "function_id",
    "function_type",
    "invocation_type",
    "le",
    "family",
];

pub struct Config {
    pub buckets: Buckets,
    /// Prefix for every family name (`<namespace>_function_count`).
    pub namespace: Option<String>,
    /// Validated (name, value) pairs added to every series.
    pub const_labels: Vec<(String, String)>,
    pub max_series: usize,
}

pub struct Registry {
    buckets: Buckets,
    /// `le="0.1"` ... `le="+Inf"`, escaped once.
    le_labels: Box<[String]>,
    /// Escaped const labels, the start of every label set.
    const_labels: String,
    names: [String; 5],
    function_count: Family<Gauge>,
    execution_times: Family<Histogram>,
    transfer_times: Family<Histogram>,
    /// Size of the last rendering, to size the next buffer in one go.
    last_render_bytes: AtomicUsize,
    /// Scrapes served: all, in OpenMetrics, gzip-compressed.
    pub scrapes: [AtomicU64; 3],
    spare: Mutex<Vec<u8>>,
    /// Drop counters of the other chain members (attached by each
    /// processor this target serves). Weak: a dropped processor's counters
    /// go with it.
    drop_sources: Mutex<Vec<Weak<dyn DropSource>>>,
}

impl Registry {
    pub fn new(config: Config) -> Self {
        let name = |base: &str| match &config.namespace {
            Some(ns) => format!("{ns}_{base}"),
            None => base.to_owned(),
        };
        let mut const_labels = String::new();
        for (k, v) in &config.const_labels {
            encoding::push_label(&mut const_labels, k, v);
        }
        let le_labels = config
            .buckets
            .bounds()
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .map(|b| {
                let mut value = Vec::new();
                push_f64(&mut value, b);
                let mut s = String::new();
                encoding::push_label(&mut s, "le", &String::from_utf8_lossy(&value));
                s
            })
            .collect();
        Self {
            names: [
                name(FUNCTION_COUNT),
                name(EXECUTION_TIMES),
                name(TRANSFER_TIMES),
                name(SERIES_REFUSED),
                name(DROPPED),
            ],
            buckets: config.buckets,
            le_labels,
            const_labels,
            function_count: Family::new(config.max_series),
            execution_times: Family::new(config.max_series),
            transfer_times: Family::new(config.max_series),
            last_render_bytes: AtomicUsize::new(0),
            scrapes: Default::default(),
            spare: Mutex::new(Vec::new()),
            drop_sources: Mutex::new(Vec::new()),
        }
    }

    /// Serves `source`'s drop counters from now on (once per source).
    pub fn attach_drops(&self, source: &Arc<dyn DropSource>) {
        let mut sources = self.drop_sources.lock().unwrap_or_else(|e| e.into_inner());
        sources.retain(|w| w.strong_count() > 0);
        let weak = Arc::downgrade(source);
        if !sources.iter().any(|w| Weak::ptr_eq(w, &weak)) {
            sources.push(weak);
        }
    }

    /// Every attached source's drops, summed per `(target, reason)` (two
    /// processors sharing this target both count as `processor`).
    fn drops(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        let sources: Vec<_> = self
            .drop_sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let mut out = BTreeMap::new();
        for (target, reason, n) in sources.iter().flat_map(|s| s.drops()) {
            *out.entry((target, reason)).or_insert(0) += n;
        }
        out
    }

    fn labels(&self, pairs: &[(&str, &str)]) -> String {
        let mut s = self.const_labels.clone();
        for (k, v) in pairs {
            encoding::push_label(&mut s, k, v);
        }
        s
    }

    fn gauge_for(&self, tags: &Tags) -> Option<Arc<Series<Gauge>>> {
        let node = tags.get(NODE_ID)?;
        let ftype = function_type(tags)?;
        let labels = self.labels(&[("node_id", node), ("function_type", ftype)]);
        self.function_count.get_or_create(&labels, Gauge::default)
    }

    fn execution_for(&self, tags: &Tags, call: bool) -> Option<Arc<Series<Histogram>>> {
        let node = tags.get(NODE_ID)?;
        let fid = tags.get(FUNCTION_ID)?;
        let ftype = function_type(tags)?;
        let kind = if call { "Call" } else { "Cast" };
        let labels = self.labels(&[
            ("node_id", node),
            ("function_id", fid),
            ("function_type", ftype),
            ("invocation_type", kind),
        ]);
        self.execution_times
            .get_or_create(&labels, || Histogram::new(&self.buckets))
    }

    fn transfer_for(&self, tags: &Tags) -> Option<Arc<Series<Histogram>>> {
        let node = tags.get(NODE_ID)?;
        let fid = tags.get(FUNCTION_ID)?;
        let labels = self.labels(&[("node_id", node), ("function_id", fid)]);
        self.transfer_times
            .get_or_create(&labels, || Histogram::new(&self.buckets))
    }

    /// (series, refused) per family, in exposition order.
    pub fn stats(&self) -> [(&'static str, usize, u64); 3] {
        [
            (
                FUNCTION_COUNT,
                self.function_count.series_count(),
                self.function_count.refused(),
            ),
            (
                EXECUTION_TIMES,
                self.execution_times.series_count(),
                self.execution_times.refused(),
            ),
            (
                TRANSFER_TIMES,
                self.transfer_times.series_count(),
                self.transfer_times.refused(),
            ),
        ]
    }

    /// Hands a rendering's buffer back for the next one: a large
    /// exposition then reuses warm memory instead of faulting in fresh
    /// pages. Only one buffer of at most `MAX_SPARE_BYTES` is kept.
    pub fn recycle(&self, buffer: Vec<u8>) {
        if buffer.capacity() <= MAX_SPARE_BYTES {
            if let Ok(mut spare) = self.spare.lock() {
                if spare.capacity() < buffer.capacity() {
                    *spare = buffer;
                }
            }
        }
    }

    /// Renders every family. Reads atomics only; never needs the GIL.
    pub fn render(&self, format: Format) -> Vec<u8> {
        let mut out = self
            .spare
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        out.clear();
        out.reserve(self.last_render_bytes.load(Ordering::Relaxed) + 4096);
        let [count_name, exec_name, transfer_name, refused_name, dropped_name] = &self.names;

        push_header(
            &mut out,
            format,
            count_name,
            Kind::Gauge,
            "Function instances running on the node (+1 on instantiate, -1 on exit).",
        );
        for s in self.function_count.series() {
            push_series_start(&mut out, count_name, "", &s.labels);
            push_i64(&mut out, s.metric.get());
            out.push(b'\n');
        }

        let mut scratch = Vec::with_capacity(self.le_labels.len());
        for (name, family, help) in [
            (
                exec_name,
                &self.execution_times,
                "Function invocation durations in seconds, by invocation type (Call or Cast).",
            ),
            (
                transfer_name,
                &self.transfer_times,
                "Function transfer durations in seconds.",
            ),
        ] {
            push_header(&mut out, format, name, Kind::Histogram, help);
            for s in family.series() {
                self.push_histogram(&mut out, name, &s, &mut scratch);
            }
        }

        push_header(
            &mut out,
            format,
            refused_name,
            Kind::Counter,
            "Label sets refused because their family had max_series series.",
        );
        for (family, _, refused) in self.stats() {
            let labels = self.labels(&[("family", family)]);
            push_series_start(&mut out, refused_name, "_total", &labels);
            push_u64(&mut out, refused);
            out.push(b'\n');
        }

        let drops = self.drops();
        if !drops.is_empty() {
            push_header(
                &mut out,
                format,
                dropped_name,
                Kind::Counter,
                "Events, samples and functions the node's other targets dropped or refused.",
            );
            for ((target, reason), n) in drops {
                let labels = self.labels(&[("target", target), ("reason", reason)]);
                push_series_start(&mut out, dropped_name, "_total", &labels);
                push_u64(&mut out, n);
                out.push(b'\n');
            }
        }

        if format == Format::OpenMetrics {
            out.extend_from_slice(b"# EOF\n");
        }
        self.last_render_bytes.store(out.len(), Ordering::Relaxed);
        out
    }

    fn push_histogram(
        &self,
        out: &mut Vec<u8>,
        name: &str,
        series: &Series<Histogram>,
        scratch: &mut Vec<u64>,
    ) {
        let snap = series.metric.snapshot(scratch);
        let labels: &str = &series.labels;
        for (le, count) in self.le_labels.iter().zip(snap.cumulative) {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"_bucket{");
            if !labels.is_empty() {
                out.extend_from_slice(labels.as_bytes());
                out.push(b',');
            }
            out.extend_from_slice(le.as_bytes());
            out.extend_from_slice(b"} ");
            push_u64(out, *count);
            out.push(b'\n');
        }
        let count = snap.cumulative.last().copied().unwrap_or(0);
        push_series_start(out, name, "_count", labels);
        push_u64(out, count);
        out.push(b'\n');
        push_series_start(out, name, "_sum", labels);
        push_f64(out, snap.sum);
        out.push(b'\n');
    }
}

impl Target for Arc<Registry> {
    fn resolve(&self, _py: Python<'_>, _tags: &Tags) -> PyResult<Box<dyn Route>> {
        // Series are created on a handle's first event that needs them (from
        // the tags the chain passes along), so a handle that only forks
        // creates none.
        Ok(Box::new(PromRoute {
            registry: self.clone(),
            gauge: OnceLock::new(),
            execution: [OnceLock::new(), OnceLock::new()],
            transfer: OnceLock::new(),
        }))
    }
}

type Slot<M> = OnceLock<Option<Arc<Series<M>>>>;

/// One handle's series; `None` once resolved means a required tag is
/// missing (or the family was full): such events create no series.
struct PromRoute {
    registry: Arc<Registry>,
    gauge: Slot<Gauge>,
    /// Indexed by `call as usize`: Cast, Call.
    execution: [Slot<Histogram>; 2],
    transfer: Slot<Histogram>,
}

impl PromRoute {
    #[inline]
    fn count(&self, py: Python<'_>, tags: &Tags, delta: i64) -> ChainResult {
        if let Some(g) = self.gauge.get_or_init(|| self.registry.gauge_for(tags)) {
            g.metric.add(py, delta);
        }
        ChainResult::Final
    }
}

impl Route for PromRoute {
    /// Upstream ends the chain for the events it handles: instantiate,
    /// exit and invocation completed (whether or not the tags were enough
    /// for a series); we add transfer, the family upstream lacks.
    #[inline]
    fn handle(
        &self,
        py: Python<'_>,
        event: &EventRef<'_>,
        tags: &Tags,
        _clock: &mut EventClock,
    ) -> ChainResult {
        let r = &self.registry;
        match *event {
            EventRef::Duration {
                kind: FunctionTime::Instantiate,
                ..
            } => self.count(py, tags, 1),
            EventRef::Exit(_) => self.count(py, tags, -1),
            EventRef::Duration {
                kind: FunctionTime::Execution,
                seconds,
                call,
            } => {
                let slot = &self.execution[call as usize];
                if let Some(h) = slot.get_or_init(|| r.execution_for(tags, call)) {
                    h.metric.observe(py, &r.buckets, seconds);
                }
                ChainResult::Final
            }
            EventRef::Duration {
                kind: FunctionTime::Transfer,
                seconds,
                ..
            } => {
                if let Some(h) = self.transfer.get_or_init(|| r.transfer_for(tags)) {
                    h.metric.observe(py, &r.buckets, seconds);
                }
                ChainResult::Final
            }
            _ => ChainResult::Passed,
        }
    }
}
