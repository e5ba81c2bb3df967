//! PrometheusTarget: the EDGELESS families (`function_count`,
//! `execution_times`, `transfer_times`) as lock-free series, rendered in
//! Rust and served on `GET /metrics` by the extension's HTTP server
//! (`crate::http`), whose threads never need the GIL.
//!
//! Split like prometheus/client_rust: `histogram` and `gauge` hold the
//! atomics (`native` the optional native-histogram buckets), `family`
//! maps label sets to series, `registry` ties the families to the event
//! chain and renders them, `encoding` knows the exposition formats (the two
//! text ones, and `encoding::protobuf`, the only one with native buckets),
//! `server` is the endpoint (on `crate::http`) and `scrape` shares
//! renderings between concurrent scrapes.

pub mod encoding;
pub mod family;
pub mod gauge;
pub mod histogram;
pub mod native;
pub mod registry;
pub mod scrape;
pub mod server;

use crate::args::{Arg, Limit};
use crate::gil::GilCell;
use crate::http::admission::Counters;
use crate::http::server::Server;
use crate::http::web_config::Security;
use encoding::{valid_name, Format};
use histogram::Buckets;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use registry::{Config, Registry, RESERVED_LABELS};
use server::parse_metrics_url;
use std::sync::atomic::Ordering;
use std::sync::Arc;

// The constructor's signature spells the native defaults as literals (so
// Python's introspection shows them); they are these.
const _: () = assert!(
    native::DEFAULT_SCHEMA == 3
        && native::DEFAULT_MAX_BUCKETS == 100
        && native::DEFAULT_ZERO_THRESHOLD.to_bits() == 2.938735877055719e-39f64.to_bits()
);

/// Longest const label value accepted (they are copied into every series).
const MAX_CONST_LABEL_BYTES: usize = 1024;

/// The EDGELESS Prometheus families (`function_count`, `execution_times`,
/// `transfer_times`) as lock-free series, served on `GET /metrics` from
/// threads that never take the GIL; `render()` gives the exposition.
#[pyclass(module = "edgeless_telemetry._core", subclass, frozen)]
pub struct PrometheusTarget {
    registry: Arc<Registry>,
    /// Running or not (stopped, or inherited through fork: see `serve`).
    /// Guarded by the GIL, not a mutex: a Python thread reading `url`
    /// while another one stops the server must never wait for a lock whose
    /// holder waits for the GIL. Only taking the server in or out happens
    /// under the GIL; binding and stopping (which never need the GIL) run
    /// with it released, outside the cell.
    server: GilCell<Option<Server>>,
    /// The HTTP counters of every server this target ran.
    http: Arc<Counters>,
    /// TLS and basic auth (`web_config`), for every server this target runs.
    security: Option<Arc<Security>>,
}

impl PrometheusTarget {
    /// The chain member (see `processor::native_target`).
    pub fn target(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// Where the server listens in this process, as bound (port 0
    /// resolved).
    fn running_addr(&self, py: Python<'_>) -> Option<std::net::SocketAddr> {
        self.server.with(py, |server| {
            server
                .as_ref()
                .filter(|s| s.running())
                .map(Server::local_addr)
        })
    }

    fn scheme(&self) -> &'static str {
        if self.security.as_ref().is_some_and(|s| s.tls()) {
            "https"
        } else {
            "http"
        }
    }

    fn stop_server(&self, py: Python<'_>) {
        // An inherited server is only forgotten (`Server::stop`).
        if let Some(mut server) = self.server.with(py, Option::take) {
            crate::gil::allow_threads(py, move || server.stop());
        }
    }
}

fn start_server(
    py: Python<'_>,
    registry: &Arc<Registry>,
    counters: &Arc<Counters>,
    metrics_url: &str,
    security: &Option<Arc<Security>>,
) -> PyResult<Server> {
    let tls = security.as_ref().is_some_and(|s| s.tls());
    let addr = parse_metrics_url(metrics_url, tls).map_err(PyValueError::new_err)?;
    let (reg, counters, security) = (registry.clone(), counters.clone(), security.clone());
    crate::gil::allow_threads(py, || server::start(reg, addr, counters, security)).map_err(|e| {
        PyOSError::new_err((
            e.raw_os_error().unwrap_or(0),
            format!("PrometheusTarget cannot listen on {addr} ({metrics_url}): {e}"),
        ))
    })
}

fn buckets_from(value: Option<&Bound<'_, PyAny>>) -> PyResult<Buckets> {
    let Some(value) = value else {
        return Ok(Buckets::edgeless());
    };
    if value.is_instance_of::<pyo3::types::PyString>() {
        return Err(PyTypeError::new_err(
            "buckets must be a sequence of numbers, not str",
        ));
    }
    // Read no further than the longest list allowed (the bounds and a
    // trailing +Inf): a typo such as `range(10**9)` must fail at once, not
    // after filling memory with it.
    let most = histogram::MAX_BUCKETS + 1;
    let bounds: Vec<f64> = value
        .try_iter()
        .map_err(|_| PyTypeError::new_err("buckets must be a sequence of numbers"))?
        .take(most + 1)
        .map(|b| {
            b.and_then(|b| b.extract::<f64>())
                .map_err(|_| PyTypeError::new_err("buckets must be a sequence of numbers"))
        })
        .collect::<PyResult<_>>()?;
    if bounds.len() > most {
        return Err(PyValueError::new_err(format!(
            "at most {} buckets are allowed, got more than {most}",
            histogram::MAX_BUCKETS
        )));
    }
    Buckets::new(bounds)
}

fn const_labels_from(dict: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(String, String)>> {
    let mut labels = Vec::new();
    for (k, v) in dict.into_iter().flat_map(|d| d.iter()) {
        let (Ok(k), Ok(v)) = (k.cast::<PyString>(), v.cast::<PyString>()) else {
            return Err(PyTypeError::new_err("const_labels must map str to str"));
        };
        let (Ok(k), Ok(v)) = (k.to_str(), v.to_str()) else {
            return Err(PyValueError::new_err(format!(
                "const label {} is not valid UTF-8 (lone surrogate?)",
                k.repr().map(|r| r.to_string()).unwrap_or_default()
            )));
        };
        let (k, v) = (k.to_owned(), v.to_owned());
        if !valid_name(&k) || k.starts_with("__") {
            return Err(PyValueError::new_err(format!(
                "const label name {k:?} is not a valid Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, no leading __)"
            )));
        }
        if RESERVED_LABELS.contains(&k.as_str()) {
            return Err(PyValueError::new_err(format!(
                "const label name {k:?} is used by the EDGELESS families; pick another"
            )));
        }
        if v.len() > MAX_CONST_LABEL_BYTES {
            return Err(PyValueError::new_err(format!(
                "const label {k:?} is {} bytes; at most {MAX_CONST_LABEL_BYTES} are allowed",
                v.len()
            )));
        }
        labels.push((k, v));
    }
    labels.sort();
    Ok(labels)
}

#[pymethods]
impl PrometheusTarget {
    /// `metrics_url` like `http://127.0.0.1:7003` (port 0 picks a free
    /// one; `""` serves nothing, use `render()`). `web_config`: an
    /// exporter-toolkit web configuration file (TLS, client certificates,
    /// basic auth). Raises `ValueError` for a malformed URL, bad buckets or
    /// names, or a bad web config; `OSError` when the port cannot be bound
    /// or a file of the web config cannot be read.
    ///
    /// `native=True` adds Prometheus native histogram buckets to
    /// `execution_times` and `transfer_times` (see `native`), served in the
    /// protobuf format to scrapers that ask for it.
    #[new]
    #[pyo3(
        text_signature = "(metrics_url='', *, buckets=None, namespace=None, const_labels=None, max_series=10000, native=False, native_schema=3, native_max_buckets=100, native_zero_threshold=2.938735877055719e-39, web_config=None)"
    )]
    #[pyo3(signature = (metrics_url = Arg::value(String::new()), *, buckets = None, namespace = None, const_labels = None, max_series = Limit::new(10_000), native = Arg::value(false), native_schema = Arg::value(3), native_max_buckets = Limit::new(100), native_zero_threshold = Arg::value(2.938735877055719e-39), web_config = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        metrics_url: Arg<String>,
        buckets: Option<&Bound<'_, PyAny>>,
        namespace: Option<Arg<String>>,
        const_labels: Option<Arg<Bound<'_, PyDict>>>,
        max_series: Limit,
        native: Arg<bool>,
        native_schema: Arg<i32>,
        native_max_buckets: Limit,
        native_zero_threshold: Arg<f64>,
        web_config: Option<Arg<std::path::PathBuf>>,
    ) -> PyResult<Self> {
        const ME: &str = "PrometheusTarget";
        let metrics_url = metrics_url.named(ME, "metrics_url")?;
        let namespace = namespace.map(|a| a.named(ME, "namespace")).transpose()?;
        let const_labels = const_labels
            .map(|a| a.named(ME, "const_labels"))
            .transpose()?;
        let native = native.named(ME, "native")?;
        let native_schema = native_schema.named(ME, "native_schema")?;
        let native_zero_threshold = native_zero_threshold.named(ME, "native_zero_threshold")?;
        let web_config = web_config.map(|a| a.named(ME, "web_config")).transpose()?;
        let security = match &web_config {
            Some(path) => Some(Security::load(py, &path.to_string_lossy(), |_| Ok(()))?),
            None => None,
        };
        let max_series = max_series.at_least(ME, "max_series", 1)?;
        let native_max_buckets = native_max_buckets.at_least(ME, "native_max_buckets", 0)?;
        let buckets = buckets_from(buckets)?;
        // Checked also when off, so a typo is not silently ignored.
        let native_config =
            native::NativeConfig::new(native_schema, native_zero_threshold, native_max_buckets)
                .map_err(PyValueError::new_err)?;
        if let Some(ns) = &namespace {
            if !valid_name(ns) {
                return Err(PyValueError::new_err(format!(
                    "namespace {ns:?} is not a valid metric name prefix ([a-zA-Z_][a-zA-Z0-9_]*)"
                )));
            }
        }
        let registry = Arc::new(Registry::new(Config {
            buckets,
            native: native.then_some(native_config),
            namespace,
            const_labels: const_labels_from(const_labels.as_ref())?,
            max_series,
        }));
        let http = Arc::new(Counters::default());
        let server = if metrics_url.is_empty() {
            None
        } else {
            Some(start_server(py, &registry, &http, &metrics_url, &security)?)
        };
        Ok(Self {
            server: GilCell::new(server),
            registry,
            http,
            security,
        })
    }

    /// Reads the web config file again (new certificates, keys, users):
    /// new connections use it, and a kept-alive connection from its next
    /// request (then it closes). The server also reloads by itself within
    /// a second or so of the files changing. On error
    /// (`ValueError`/`OSError` as at construction) the running one stays.
    /// `RuntimeError` without a `web_config`.
    fn reload_web_config(&self, py: Python<'_>) -> PyResult<()> {
        match &self.security {
            Some(security) => security.reload(py),
            None => Err(PyRuntimeError::new_err(
                "PrometheusTarget has no web_config to reload",
            )),
        }
    }

    /// Starts serving `GET /metrics` on `metrics_url` when no server runs
    /// in this process: for a target made with `""`, after `close()`, or in
    /// a forked child (the parent's server, its runtime and socket are not
    /// inherited; the child's series are its own). Raises `RuntimeError`
    /// if one is running, else as the constructor does.
    fn serve(&self, py: Python<'_>, metrics_url: Arg<String>) -> PyResult<()> {
        let metrics_url = &metrics_url.named("PrometheusTarget.serve", "metrics_url")?;
        let already = |addr| {
            PyRuntimeError::new_err(format!(
                "PrometheusTarget is already serving on {addr}; close() it first"
            ))
        };
        if let Some(addr) = self.running_addr(py) {
            return Err(already(addr));
        }
        let server = start_server(py, &self.registry, &self.http, metrics_url, &self.security)?;
        // Another thread may have started one meanwhile (the GIL was
        // released while binding): then ours goes.
        let clash = self.server.with(py, |slot| match slot {
            Some(running) if running.running() => Some((server, running.local_addr())),
            _ => {
                // An inherited (or stopped) server is only forgotten.
                *slot = Some(server);
                None
            }
        });
        if let Some((mut ours, addr)) = clash {
            crate::gil::allow_threads(py, move || ours.stop());
            return Err(already(addr));
        }
        Ok(())
    }

    /// The exposition as bytes: Prometheus text 0.0.4, or OpenMetrics
    /// 1.0.0 (ending in `# EOF`), or with `protobuf=True` the delimited
    /// protobuf stream (the only one with native buckets). Renders with
    /// the GIL released.
    #[pyo3(signature = (openmetrics = false, *, protobuf = false))]
    fn render<'py>(
        &self,
        py: Python<'py>,
        openmetrics: bool,
        protobuf: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let format = match (openmetrics, protobuf) {
            (true, true) => {
                return Err(PyValueError::new_err(
                    "render() takes openmetrics=True or protobuf=True, not both",
                ))
            }
            (true, false) => Format::OpenMetrics,
            (false, true) => Format::Protobuf,
            (false, false) => Format::Text,
        };
        let registry = &self.registry;
        let body = crate::gil::allow_threads(py, || registry.render(format));
        let bytes = PyBytes::new(py, &body);
        registry.recycle(body);
        Ok(bytes)
    }

    /// `http://host:port/metrics` as bound (`https://` with TLS), or
    /// `None` without a server (or after `close()`).
    #[getter]
    fn url(&self, py: Python<'_>) -> Option<String> {
        let scheme = self.scheme();
        self.running_addr(py)
            .map(|a| format!("{scheme}://{a}/metrics"))
    }

    /// The bound port (useful with port 0), or `None` without a server (or
    /// after `close()`).
    #[getter]
    fn port(&self, py: Python<'_>) -> Option<u16> {
        self.running_addr(py).map(|a| a.port())
    }

    /// Series and refused label sets per family, scrapes served, and the
    /// HTTP server's counts: requests, connections cut at their deadline
    /// (`http_timeouts`), refused with 503 (`http_503_busy`), closed to admit
    /// a newer one (`http_evictions`), failed TLS handshakes
    /// (`http_tls_failures`), refused by basic auth (`http_401`).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (family, series, refused) in self.registry.stats() {
            d.set_item(format!("{family}_series"), series)?;
            d.set_item(format!("{family}_refused"), refused)?;
        }
        let [all, openmetrics, gzip, protobuf] = &self.registry.scrapes;
        d.set_item("scrapes", all.load(Ordering::Relaxed))?;
        d.set_item("scrapes_protobuf", protobuf.load(Ordering::Relaxed))?;
        d.set_item("scrapes_openmetrics", openmetrics.load(Ordering::Relaxed))?;
        d.set_item("scrapes_gzip", gzip.load(Ordering::Relaxed))?;
        let http = &self.http;
        for (name, v) in [
            ("http_connections", &http.accepted),
            ("http_requests", &http.requests),
            ("http_timeouts", &http.timeouts),
            ("http_503_busy", &http.busy),
            ("http_evictions", &http.evictions),
            ("http_tls_failures", &http.tls_failures),
            ("http_401", &http.unauthorized),
        ] {
            d.set_item(name, v.load(Ordering::Relaxed))?;
        }
        for (name, v) in Security::reload_stats(self.security.as_deref()) {
            d.set_item(name, v)?;
        }
        Ok(d)
    }

    /// Stops the server and frees the port; idempotent. The series stay
    /// and `render()` still works.
    fn close(&self, py: Python<'_>) {
        self.stop_server(py);
    }

    /// `with PrometheusTarget(...) as prom:` stops its server at the end.
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Stops the `/metrics` server (the port is free on return).
    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: &Bound<'_, PyAny>,
        _exc: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) {
        self.stop_server(py);
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        match self.url(py) {
            Some(url) => format!("PrometheusTarget({url:?})"),
            None => "PrometheusTarget(no server)".to_owned(),
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PrometheusTarget>()
}
