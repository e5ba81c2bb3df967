//! The EDGELESS families, how handles resolve to their series, and the
//! rendering of all of them.

use super::encoding::{
    self, push_f64, push_header, push_i64, push_series_start, push_u64, Format, Kind,
};
use super::family::{Family, Series};
use super::gauge::Gauge;
use super::histogram::{Buckets, Histogram};
use super::native::NativeConfig;
use crate::chain::{
    execution_function_type, ChainResult, Invocation, Route, Tags, Target, FUNCTION_ID,
    FUNCTION_TYPE, NODE_ID,
};
use crate::clock::EventClock;
use crate::counters::DropSource;
use crate::events::{EventRef, FunctionTime};
use crate::fork;
use pyo3::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Weak;
use std::sync::{Arc, OnceLock};

const FUNCTION_COUNT: &str = "function_count";
const EXECUTION_TIMES: &str = "execution_times";
const TRANSFER_TIMES: &str = "transfer_times";
const DROPPED: &str = "edgeless_telemetry_dropped";
/// Largest rendering buffer kept for reuse (about 16,000 execution_times
/// series); larger expositions use fresh memory each time.
const MAX_SPARE_BYTES: usize = 32 << 20;
const SERIES_REFUSED: &str = "edgeless_telemetry_series_refused";
const HELP_COUNT: &str = "Function instances running on the node (+1 on instantiate, -1 on exit).";
const HELP_EXECUTION: &str =
    "Function invocation durations in seconds, by invocation type (Call or Cast).";
const HELP_TRANSFER: &str = "Function transfer durations in seconds.";
const HELP_REFUSED: &str =
    "Label sets refused: their family had max_series series, or a label value was over 256 bytes.";
const HELP_DROPPED: &str = "Events, samples and functions the node's targets dropped, refused or ignored (missing_tag: as EDGELESS, no series without the tags its family needs).";

/// Longest label value a series may carry, counted as written in the
/// exposition (after escaping: `\`, `"` and a newline count two). Tags may
/// be 4,096 bytes, and 10,000 series of such values rendered to about
/// 550 MiB per scrape; with this cap `max_series` bounds a rendering (see
/// the README for the worst case per family). EDGELESS values are UUIDs
/// (36 bytes) and short type names; 256 leaves room for an image
/// reference with a digest. A label set with a longer value is refused and
/// counted like one past `max_series` (cutting it could merge two
/// functions into one series).
pub const MAX_LABEL_VALUE_BYTES: usize = 256;
// The refused family's HELP names the cap.
const _: () = assert!(MAX_LABEL_VALUE_BYTES == 256);

/// Bytes `value` takes in the exposition (see `encoding::push_label`).
fn escaped_len(value: &str) -> usize {
    value.len()
        + value
            .bytes()
            .filter(|b| matches!(b, b'\\' | b'"' | b'\n'))
            .count()
}

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
    /// Native buckets beside the classic ones (`None`: off).
    pub native: Option<NativeConfig>,
    /// Prefix for every family name (`<namespace>_function_count`).
    pub namespace: Option<String>,
    /// Validated (name, value) pairs added to every series.
    pub const_labels: Vec<(String, String)>,
    pub max_series: usize,
}

pub struct Registry {
    buckets: Buckets,
    native: Option<NativeConfig>,
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
    /// Scrapes served: all, in OpenMetrics, gzip-compressed, in protobuf.
    pub scrapes: [AtomicU64; 4],
    /// `fork::Mutex`es: scrape threads take these two without the GIL.
    spare: fork::Mutex<Vec<u8>>,
    /// Drop counters of the other chain members (attached by each
    /// processor this target serves). Weak: a dropped processor's counters
    /// go with it.
    drop_sources: fork::Mutex<Vec<Weak<dyn DropSource>>>,
    /// Label sets refused for a value over `MAX_LABEL_VALUE_BYTES` (also
    /// in their family's `refused`); the first one is logged once, after
    /// the series slot is resolved (never from inside its `OnceLock`).
    long_labels: AtomicU64,
    warn_long_label: AtomicBool,
    /// Events EDGELESS's target ignores for a missing tag (`NODE_ID`,
    /// `FUNCTION_TYPE` for `function_count`, `FUNCTION_ID`, `EVENT_TYPE`):
    /// ignored here too, but counted, so the loss is visible.
    missing_tag: AtomicU64,
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
            native: config.native,
            le_labels,
            const_labels,
            function_count: Family::new(config.max_series),
            execution_times: Family::new(config.max_series),
            transfer_times: Family::new(config.max_series),
            last_render_bytes: AtomicUsize::new(0),
            scrapes: Default::default(),
            spare: fork::Mutex::new(Vec::new()),
            drop_sources: fork::Mutex::new(Vec::new()),
            long_labels: AtomicU64::new(0),
            warn_long_label: AtomicBool::new(false),
            missing_tag: AtomicU64::new(0),
        }
    }

    /// Serves `source`'s drop counters from now on (once per source).
    pub fn attach_drops(&self, source: &Arc<dyn DropSource>) {
        let mut sources = self.drop_sources.lock();
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
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let mut out = BTreeMap::new();
        out.insert(("prometheus", "missing_tag"), self.missing_tags());
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

    /// The series of `family` for these labels, or `None` (counted) when
    /// a value is over `MAX_LABEL_VALUE_BYTES` or the family is full.
    fn series_for<M>(
        &self,
        family: &Family<M>,
        pairs: &[(&str, &str)],
        make: impl FnOnce() -> M,
    ) -> Option<Arc<Series<M>>> {
        if pairs
            .iter()
            .any(|(_, v)| escaped_len(v) > MAX_LABEL_VALUE_BYTES)
        {
            family.refuse();
            if self.long_labels.fetch_add(1, Ordering::Relaxed) == 0 {
                self.warn_long_label.store(true, Ordering::Relaxed);
            }
            return None;
        }
        family.get_or_create(&self.labels(pairs), make)
    }

    /// Logs the first label set refused for a long value, once (a load on
    /// the path of every event whose handle has no series).
    #[inline]
    fn warn_long_label(&self, py: Python<'_>) {
        if self.warn_long_label.load(Ordering::Relaxed) {
            self.warn_long_label_now(py);
        }
    }

    #[cold]
    fn warn_long_label_now(&self, py: Python<'_>) {
        if self.warn_long_label.swap(false, Ordering::Relaxed) {
            crate::counters::warn(
                py,
                &format!(
                    "edgeless_telemetry: a PrometheusTarget refused a series whose label value is over {MAX_LABEL_VALUE_BYTES} bytes; its events are not in Prometheus. Further refusals are only counted (edgeless_telemetry_series_refused_total, PrometheusTarget.stats())"
                ),
            );
        }
    }

    /// Series refused for a label value over `MAX_LABEL_VALUE_BYTES`.
    pub fn long_labels(&self) -> u64 {
        self.long_labels.load(Ordering::Relaxed)
    }

    /// Events ignored for a missing tag, as EDGELESS ignores them.
    pub fn missing_tags(&self) -> u64 {
        self.missing_tag.load(Ordering::Relaxed)
    }

    /// Why a handle has no series for an event: a tag EDGELESS requires is
    /// missing (counted per event), or the series was refused (counted
    /// once, when refused). Off the hot path: only handles without series.
    #[cold]
    fn no_series(&self, py: Python<'_>, tags: &Tags, needs: &[&str], typed: bool) {
        if !typed || needs.iter().any(|t| !tags.contains_key(*t)) {
            self.missing_tag.fetch_add(1, Ordering::Relaxed);
        } else {
            self.warn_long_label(py);
        }
    }

    /// EDGELESS: `function_count` needs `NODE_ID` and `FUNCTION_TYPE`
    /// (no `RESOURCE_CLASS_TYPE` fallback there).
    fn gauge_for(&self, tags: &Tags) -> Option<Arc<Series<Gauge>>> {
        let node = tags.get(NODE_ID)?;
        let ftype = tags.get(FUNCTION_TYPE)?;
        self.series_for(
            &self.function_count,
            &[("node_id", node), ("function_type", ftype)],
            Gauge::default,
        )
    }

    /// EDGELESS: `execution_times` needs `NODE_ID`, `FUNCTION_ID` and an
    /// `EVENT_TYPE`; the function type may be empty.
    fn execution_for(&self, tags: &Tags, call: bool) -> Option<Arc<Series<Histogram>>> {
        let node = tags.get(NODE_ID)?;
        let fid = tags.get(FUNCTION_ID)?;
        let ftype = execution_function_type(tags);
        let kind = if call { "Call" } else { "Cast" };
        self.series_for(
            &self.execution_times,
            &[
                ("node_id", node),
                ("function_id", fid),
                ("function_type", ftype),
                ("invocation_type", kind),
            ],
            || Histogram::new(&self.buckets, self.native.as_ref()),
        )
    }

    fn transfer_for(&self, tags: &Tags) -> Option<Arc<Series<Histogram>>> {
        let node = tags.get(NODE_ID)?;
        let fid = tags.get(FUNCTION_ID)?;
        self.series_for(
            &self.transfer_times,
            &[("node_id", node), ("function_id", fid)],
            || Histogram::new(&self.buckets, self.native.as_ref()),
        )
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
            let mut spare = self.spare.lock();
            if spare.capacity() < buffer.capacity() {
                *spare = buffer;
            }
        }
    }

    /// Whether the histograms have native buckets (and protobuf is served).
    pub fn native_on(&self) -> bool {
        self.native.is_some()
    }

    /// Renders every family. Reads atomics only; never needs the GIL.
    pub fn render(&self, format: Format) -> Vec<u8> {
        let mut out = std::mem::take(&mut *self.spare.lock());
        out.clear();
        out.reserve(self.last_render_bytes.load(Ordering::Relaxed) + 4096);
        if format == Format::Protobuf {
            self.render_protobuf(&mut out);
            self.last_render_bytes.store(out.len(), Ordering::Relaxed);
            return out;
        }
        let [count_name, exec_name, transfer_name, refused_name, dropped_name] = &self.names;

        push_header(&mut out, format, count_name, Kind::Gauge, HELP_COUNT);
        for s in self.function_count.series() {
            push_series_start(&mut out, count_name, "", &s.labels);
            push_i64(&mut out, s.metric.get());
            out.push(b'\n');
        }

        let mut scratch = Vec::with_capacity(self.le_labels.len());
        for (name, family, help) in [
            (exec_name, &self.execution_times, HELP_EXECUTION),
            (transfer_name, &self.transfer_times, HELP_TRANSFER),
        ] {
            push_header(&mut out, format, name, Kind::Histogram, help);
            for s in family.series() {
                self.push_histogram(&mut out, name, &s, &mut scratch);
            }
        }

        push_header(&mut out, format, refused_name, Kind::Counter, HELP_REFUSED);
        for (family, _, refused) in self.stats() {
            let labels = self.labels(&[("family", family)]);
            push_series_start(&mut out, refused_name, "_total", &labels);
            push_u64(&mut out, refused);
            out.push(b'\n');
        }

        let drops = self.drops();
        if !drops.is_empty() {
            push_header(&mut out, format, dropped_name, Kind::Counter, HELP_DROPPED);
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

    /// The same families as `render`, as protobuf messages (see
    /// `encoding::protobuf`), with the native buckets when on.
    fn render_protobuf(&self, out: &mut Vec<u8>) {
        use encoding::protobuf::{self as pb, MetricType};
        let [count_name, exec_name, transfer_name, refused_name, dropped_name] = &self.names;
        let metrics = self
            .function_count
            .series()
            .iter()
            .map(|s| pb::gauge(&s.labels, s.metric.get() as f64))
            .collect();
        pb::push_family(out, count_name, HELP_COUNT, MetricType::Gauge, metrics);
        let mut scratch = Vec::with_capacity(self.le_labels.len());
        let mut native_scratch = Vec::new();
        for (name, family, help) in [
            (exec_name, &self.execution_times, HELP_EXECUTION),
            (transfer_name, &self.transfer_times, HELP_TRANSFER),
        ] {
            let metrics = family
                .series()
                .iter()
                .map(|s| {
                    // Classic first: the native count read after it is
                    // never smaller (see `pb::histogram`).
                    let classic = s.metric.snapshot(&mut scratch);
                    let native = match (s.metric.native(), &self.native) {
                        (Some(h), Some(c)) => {
                            Some((h.snapshot(&mut native_scratch), c.zero_threshold))
                        }
                        _ => None,
                    };
                    pb::histogram(
                        &s.labels,
                        self.buckets.bounds(),
                        classic.cumulative,
                        classic.sum,
                        native.as_ref().map(|(n, z)| (n, *z)),
                    )
                })
                .collect();
            pb::push_family(out, name, help, MetricType::Histogram, metrics);
        }
        let metrics = self
            .stats()
            .iter()
            .map(|(family, _, refused)| {
                pb::counter(&self.labels(&[("family", family)]), *refused as f64)
            })
            .collect();
        pb::push_family(
            out,
            &format!("{refused_name}_total"),
            HELP_REFUSED,
            MetricType::Counter,
            metrics,
        );
        let drops = self.drops();
        if !drops.is_empty() {
            let metrics = drops
                .iter()
                .map(|((target, reason), n)| {
                    pb::counter(
                        &self.labels(&[("target", target), ("reason", reason)]),
                        *n as f64,
                    )
                })
                .collect();
            pb::push_family(
                out,
                &format!("{dropped_name}_total"),
                HELP_DROPPED,
                MetricType::Counter,
                metrics,
            );
        }
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
    /// Indexed by `call as usize`: Cast, Call (an `Untyped` invocation
    /// has no series, as in EDGELESS).
    execution: [Slot<Histogram>; 2],
    transfer: Slot<Histogram>,
}

impl PromRoute {
    #[inline]
    fn count(&self, py: Python<'_>, tags: &Tags, delta: i64) -> ChainResult {
        match self.gauge.get_or_init(|| self.registry.gauge_for(tags)) {
            Some(g) => g.metric.add(py, delta),
            None => self
                .registry
                .no_series(py, tags, &[NODE_ID, FUNCTION_TYPE], true),
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
                invocation,
            } => {
                let series = match invocation {
                    Invocation::Untyped => None,
                    typed => {
                        let call = typed == Invocation::Call;
                        self.execution[call as usize]
                            .get_or_init(|| r.execution_for(tags, call))
                            .as_ref()
                    }
                };
                match series {
                    Some(h) => h.metric.observe(py, &r.buckets, r.native.as_ref(), seconds),
                    None => r.no_series(
                        py,
                        tags,
                        &[NODE_ID, FUNCTION_ID],
                        invocation != Invocation::Untyped,
                    ),
                }
                ChainResult::Final
            }
            EventRef::Duration {
                kind: FunctionTime::Transfer,
                seconds,
                ..
            } => {
                match self.transfer.get_or_init(|| r.transfer_for(tags)) {
                    Some(h) => h.metric.observe(py, &r.buckets, r.native.as_ref(), seconds),
                    None => r.no_series(py, tags, &[NODE_ID, FUNCTION_ID], true),
                }
                ChainResult::Final
            }
            _ => ChainResult::Passed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_measured_as_written() {
        assert_eq!(escaped_len("abc"), 3);
        assert_eq!(escaped_len("é"), 2);
        assert_eq!(escaped_len("a\"b\\c\n"), 9);
        let mut written = String::new();
        encoding::push_label(&mut written, "x", "a\"b\\c\n");
        assert_eq!(written.len(), "x=\"\"".len() + 9);
    }
}
