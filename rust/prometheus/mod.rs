//! PrometheusTarget: the EDGELESS families (`function_count`,
//! `execution_times`, `transfer_times`) as lock-free series, rendered in
//! Rust and served on `GET /metrics` from threads that never need the GIL.
//!
//! Split like prometheus/client_rust: `histogram` and `gauge` hold the
//! atomics, `family` maps label sets to series, `registry` ties the
//! families to the event chain and renders them, `encoding` knows the two
//! exposition formats, `server` is the endpoint.

pub mod encoding;
pub mod family;
pub mod gauge;
pub mod histogram;
pub mod registry;
pub mod server;

use encoding::{valid_name, Format};
use histogram::Buckets;
use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use registry::{Config, Registry, RESERVED_LABELS};
use server::{parse_metrics_url, Server};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// Longest const label value accepted (they are copied into every series).
const MAX_CONST_LABEL_BYTES: usize = 1024;

#[pyclass(module = "edgeless_telemetry._core", subclass, frozen)]
pub struct PrometheusTarget {
    registry: Arc<Registry>,
    server: Mutex<Option<Server>>,
    /// Where the server listens, as bound (port 0 resolved).
    addr: Option<std::net::SocketAddr>,
}

impl PrometheusTarget {
    /// The chain member (see `processor::native_target`).
    pub fn target(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    fn running_addr(&self) -> Option<std::net::SocketAddr> {
        let running = self
            .server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        self.addr.filter(|_| running)
    }

    fn stop_server(&self, py: Python<'_>) {
        let server = self.server.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut server) = server {
            py.allow_threads(move || server.stop());
        }
    }
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
    let bounds: Vec<f64> = value
        .try_iter()
        .map_err(|_| PyTypeError::new_err("buckets must be a sequence of numbers"))?
        .map(|b| {
            b.and_then(|b| b.extract::<f64>())
                .map_err(|_| PyTypeError::new_err("buckets must be a sequence of numbers"))
        })
        .collect::<PyResult<_>>()?;
    Buckets::new(bounds)
}

fn const_labels_from(dict: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(String, String)>> {
    let mut labels = Vec::new();
    for (k, v) in dict.into_iter().flat_map(|d| d.iter()) {
        let (Ok(k), Ok(v)) = (k.extract::<String>(), v.extract::<String>()) else {
            return Err(PyTypeError::new_err("const_labels must map str to str"));
        };
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
    /// one; `""` serves nothing, use `render()`). Raises `ValueError` for a
    /// malformed URL, bad buckets or names, `OSError` when the port cannot
    /// be bound (for example in use).
    #[new]
    #[pyo3(signature = (metrics_url = "", *, buckets = None, namespace = None, const_labels = None, max_series = 10_000))]
    fn new(
        py: Python<'_>,
        metrics_url: &str,
        buckets: Option<&Bound<'_, PyAny>>,
        namespace: Option<String>,
        const_labels: Option<&Bound<'_, PyDict>>,
        max_series: usize,
    ) -> PyResult<Self> {
        let buckets = buckets_from(buckets)?;
        if let Some(ns) = &namespace {
            if !valid_name(ns) {
                return Err(PyValueError::new_err(format!(
                    "namespace {ns:?} is not a valid metric name prefix ([a-zA-Z_][a-zA-Z0-9_]*)"
                )));
            }
        }
        if max_series == 0 {
            return Err(PyValueError::new_err("max_series must be at least 1"));
        }
        let registry = Arc::new(Registry::new(Config {
            buckets,
            namespace,
            const_labels: const_labels_from(const_labels)?,
            max_series,
        }));
        let server = if metrics_url.is_empty() {
            None
        } else {
            let addr = parse_metrics_url(metrics_url).map_err(PyValueError::new_err)?;
            let reg = registry.clone();
            let server = py.allow_threads(|| Server::start(reg, addr)).map_err(|e| {
                PyOSError::new_err((
                    e.raw_os_error().unwrap_or(0),
                    format!("PrometheusTarget cannot listen on {addr} ({metrics_url}): {e}"),
                ))
            })?;
            Some(server)
        };
        Ok(Self {
            addr: server.as_ref().map(Server::local_addr),
            server: Mutex::new(server),
            registry,
        })
    }

    /// The exposition as bytes: Prometheus text 0.0.4, or OpenMetrics
    /// 1.0.0 (ending in `# EOF`). Renders with the GIL released.
    #[pyo3(signature = (openmetrics = false))]
    fn render<'py>(&self, py: Python<'py>, openmetrics: bool) -> Bound<'py, PyBytes> {
        let format = if openmetrics {
            Format::OpenMetrics
        } else {
            Format::Text
        };
        let registry = &self.registry;
        let body = py.allow_threads(|| registry.render(format));
        let bytes = PyBytes::new(py, &body);
        registry.recycle(body);
        bytes
    }

    /// `http://host:port/metrics` as bound, or `None` without a server (or
    /// after `close()`).
    #[getter]
    fn url(&self) -> Option<String> {
        self.running_addr().map(|a| format!("http://{a}/metrics"))
    }

    /// The bound port (useful with port 0), or `None` without a server (or
    /// after `close()`).
    #[getter]
    fn port(&self) -> Option<u16> {
        self.running_addr().map(|a| a.port())
    }

    /// Series and refused label sets per family, and scrapes served.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (family, series, refused) in self.registry.stats() {
            d.set_item(format!("{family}_series"), series)?;
            d.set_item(format!("{family}_refused"), refused)?;
        }
        let [all, openmetrics, gzip] = &self.registry.scrapes;
        d.set_item("scrapes", all.load(Ordering::Relaxed))?;
        d.set_item("scrapes_openmetrics", openmetrics.load(Ordering::Relaxed))?;
        d.set_item("scrapes_gzip", gzip.load(Ordering::Relaxed))?;
        Ok(d)
    }

    /// Stops the server and frees the port; idempotent. The series stay
    /// and `render()` still works.
    fn close(&self, py: Python<'_>) {
        self.stop_server(py);
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: &Bound<'_, PyAny>,
        _exc: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) {
        self.stop_server(py);
    }

    fn __repr__(&self) -> String {
        match self.url() {
            Some(url) => format!("PrometheusTarget({url:?})"),
            None => "PrometheusTarget(no server)".to_owned(),
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PrometheusTarget>()
}
