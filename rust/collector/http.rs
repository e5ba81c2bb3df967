//! The collector's HTTP side on the shared server (`crate::http`):
//! `POST /performance` (a node's batch), `GET /health`, `GET /stats`.
//!
//! Checks run in the order that reads least: token (401, or 403 later
//! when the body's node is not the token's), path (404), method (405),
//! declared length (411, 413 without reading), content type (415), then
//! the in-flight budget (503 if the declared length does not fit now)
//! before a byte of the body is read; the budget is then taken as the body
//! arrives (503 if it runs out meanwhile), so a length declared but never
//! sent holds none of it. Every
//! refusal, and every request that needs no body, is answered without
//! reading what the client declared and closes the connection; only a
//! body that was read whole leaves it open for the next batch. The body
//! goes to `Core::ingest_body` on a blocking thread, whose status
//! is the answer.
//!
//! `read_timeout_s` is the whole-request deadline (head and body, from
//! accept or the previous response; an idle kept-alive connection is
//! closed at it too), `max_connections` the connection cap (see
//! `crate::http::admission` for who gives way when it is reached).

use super::tokens::{Access, Tokens};
use super::{CollectorCore, Core};
use crate::args::{Arg, Limit};
use crate::gil::GilCell;
use crate::http::admission::{Counters, Limits};
use crate::http::pool::Pool;
use crate::http::server::{
    closing, has_body, response, unread_body_answer, Conn, Handler, Listener, Server, TEXT,
};
use crate::http::web_config::Security;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const PROTOBUF: &str = "application/x-protobuf";

/// Batches stored at once (each may wait up to `redis_ack_timeout_s`);
/// more wait for a thread, their bodies counted in flight.
const STORERS: usize = 64;

/// Refusals by status, as `stats()` names them.
#[derive(Default)]
struct Refused {
    unauthorized: AtomicU64,
    forbidden: AtomicU64,
    not_found: AtomicU64,
    bad_method: AtomicU64,
    no_length: AtomicU64,
    too_large: AtomicU64,
    bad_type: AtomicU64,
    /// Over the in-flight budget (the connection cap counts in `http`).
    inflight_full: AtomicU64,
}

struct Collect {
    /// The core's Rust state, not the Python object: this is held by the
    /// server's tasks and storer threads, which must never drop a Python
    /// reference (see `CollectorCore`). Set by `attach`, after the server
    /// has bound its port and checked its settings: a core opens (and,
    /// without `append`, empties) its dataset, which must not happen for a
    /// collector that then cannot listen (a second one started on the same
    /// port and files would have emptied the running one's).
    core: OnceLock<Arc<Core>>,
    tokens: Tokens,
    max_body_bytes: usize,
    max_inflight_bytes: usize,
    inflight: AtomicUsize,
    refused: Refused,
    http: Arc<Counters>,
    /// Where bodies are stored (blocking: decoding, the dataset, waiting
    /// for Redis' ack); see `Pool` for why not `spawn_blocking`.
    storers: Pool,
}

/// Bytes of a body being read or stored, given back on drop: when the
/// blocking ingest ends, even if the connection is gone by then, or when
/// the connection is cut mid-body.
struct Reservation {
    owner: Arc<Collect>,
    bytes: usize,
}

impl Reservation {
    /// Takes `more` bytes of the budget; false (nothing taken) if they do
    /// not fit.
    fn grow(&mut self, more: usize) -> bool {
        let owner = &self.owner;
        let taken = owner
            .inflight
            .fetch_update(Relaxed, Relaxed, |now| {
                (now + more <= owner.max_inflight_bytes).then_some(now + more)
            })
            .is_ok();
        if taken {
            self.bytes += more;
        }
        taken
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.owner.inflight.fetch_sub(self.bytes, Relaxed);
    }
}

fn text(status: StatusCode, reason: impl Into<String>) -> Response<Full<Bytes>> {
    response(status, TEXT, reason.into())
}

impl Collect {
    /// Set before anything calls it: `start` and `stats` refuse to run
    /// without a core.
    fn core(&self) -> &Core {
        self.core.get().expect("CollectorServer: no core attached")
    }

    fn attached(&self) -> PyResult<&Core> {
        self.core
            .get()
            .map(|core| &**core)
            .ok_or_else(|| PyRuntimeError::new_err("CollectorServer: attach(core) first"))
    }

    fn busy(&self) -> Response<Full<Bytes>> {
        let mut resp = self.refuse(
            &self.refused.inflight_full,
            StatusCode::SERVICE_UNAVAILABLE,
            "busy: too many bytes in flight, send again",
        );
        resp.headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
        resp
    }

    fn refuse(
        &self,
        counter: &AtomicU64,
        status: StatusCode,
        reason: &str,
    ) -> Response<Full<Bytes>> {
        counter.fetch_add(1, Relaxed);
        closing(text(status, reason))
    }

    fn access(&self, req: &Request<Incoming>) -> Access {
        self.tokens
            .access(req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes))
    }

    fn unauthorized(&self) -> Response<Full<Bytes>> {
        let mut resp = self.refuse(
            &self.refused.unauthorized,
            StatusCode::UNAUTHORIZED,
            "bearer token missing or wrong",
        );
        resp.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"edgeless-telemetry\""),
        );
        resp
    }

    /// Every count `stats()` and `GET /stats` show.
    fn stats(&self) -> Vec<(&'static str, u64)> {
        let mut out = self.core().stats_pairs();
        let (r, h) = (&self.refused, &self.http);
        for (name, v) in [
            ("http_401", &r.unauthorized),
            ("http_403", &r.forbidden),
            ("http_404", &r.not_found),
            ("http_405", &r.bad_method),
            ("http_411", &r.no_length),
            ("http_413", &r.too_large),
            ("http_415", &r.bad_type),
            ("http_connections", &h.accepted),
            ("http_requests", &h.requests),
            ("http_timeouts", &h.timeouts),
            ("http_evictions", &h.evictions),
            ("http_tls_failures", &h.tls_failures),
            ("http_401_basic_auth", &h.unauthorized),
        ] {
            out.push((name, v.load(Relaxed)));
        }
        let busy = r.inflight_full.load(Relaxed) + h.busy.load(Relaxed);
        out.push(("http_503_busy", busy));
        out.push(("http_inflight_bytes", self.inflight.load(Relaxed) as u64));
        out
    }

    async fn post(self: Arc<Self>, req: Request<Incoming>, conn: Conn) -> Response<Full<Bytes>> {
        let node = match self.access(&req) {
            Access::Denied => return self.unauthorized(),
            Access::AnyNode => None,
            Access::Node(node) => Some(node),
        };
        let path = req.uri().path().trim_end_matches('/');
        if !path.is_empty() && path != "/performance" {
            return self.refuse(
                &self.refused.not_found,
                StatusCode::NOT_FOUND,
                "POST to /performance",
            );
        }
        let length = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .map(|v| v.parse::<usize>().unwrap_or(usize::MAX));
        let Some(length) = length else {
            return self.refuse(
                &self.refused.no_length,
                StatusCode::LENGTH_REQUIRED,
                "Content-Length required",
            );
        };
        if length > self.max_body_bytes {
            let reason = format!("body over {} bytes", self.max_body_bytes);
            return self.refuse(
                &self.refused.too_large,
                StatusCode::PAYLOAD_TOO_LARGE,
                &reason,
            );
        }
        let ctype = req
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("?"))
            .unwrap_or(PROTOBUF);
        if ctype.split(';').next().unwrap_or("").trim() != PROTOBUF {
            let reason = format!("Content-Type must be {PROTOBUF}");
            return self.refuse(
                &self.refused.bad_type,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &reason,
            );
        }
        if self.inflight.load(Relaxed) + length > self.max_inflight_bytes {
            return self.busy();
        }
        let mut reservation = Reservation {
            owner: self.clone(),
            bytes: 0,
        };
        let body = match read_body(req.into_body(), length, &mut reservation).await {
            Ok(body) => body,
            Err(Unread::OverBudget) => return self.busy(),
            // The client went away or sent a body of another length.
            Err(Unread::Short) => {
                return closing(text(
                    StatusCode::BAD_REQUEST,
                    "body shorter than Content-Length",
                ))
            }
        };
        conn.request_complete();
        let stored = self.storers.run(move || {
            let held = reservation;
            held.owner.core().ingest_body(&body, node.as_deref())
        });
        let (status, reason) = stored
            .await
            .unwrap_or_else(|| (500, "storing the batch failed".into()));
        if status == 403 {
            self.refused.forbidden.fetch_add(1, Relaxed);
        }
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        text(status, reason)
    }

    fn get(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().trim_end_matches('/');
        if path == "/stats" {
            if self.access(req) == Access::Denied {
                return self.unauthorized();
            }
            let mut json = String::from("{");
            for (i, (name, v)) in self.stats().into_iter().enumerate() {
                let sep = if i == 0 { "" } else { ", " };
                json.push_str(&format!("{sep}\"{name}\": {v}"));
            }
            json.push('}');
            return response(StatusCode::OK, "application/json", json);
        }
        if path.is_empty() || path == "/health" {
            return text(StatusCode::OK, "ok");
        }
        self.refused.not_found.fetch_add(1, Relaxed);
        text(StatusCode::NOT_FOUND, "not found")
    }
}

/// Why a body was not read whole.
enum Unread {
    /// The stream ended early, failed, or ran past `Content-Length`.
    Short,
    /// The in-flight budget ran out while it arrived.
    OverBudget,
}

/// Reads exactly `length` bytes of body into one buffer, which grows (at
/// most to `length`) as they arrive, each growth taken from the budget
/// first: a client holds what it has sent, not what it declared.
async fn read_body(
    mut body: Incoming,
    length: usize,
    held: &mut Reservation,
) -> Result<Vec<u8>, Unread> {
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| Unread::Short)?.into_data() else {
            continue;
        };
        let needed = buf.len() + data.len();
        if needed > length {
            return Err(Unread::Short);
        }
        if needed > buf.capacity() {
            // Doubling, so a body arriving in small frames is not copied
            // once per frame.
            let capacity = (buf.capacity() * 2).max(needed).min(length);
            if !held.grow(capacity - buf.capacity()) {
                return Err(Unread::OverBudget);
            }
            buf.reserve_exact(capacity - buf.len());
        }
        buf.extend_from_slice(&data);
    }
    if buf.len() == length {
        Ok(buf)
    } else {
        Err(Unread::Short)
    }
}

impl Handler for Collect {
    async fn handle(self: Arc<Self>, req: Request<Incoming>, conn: Conn) -> Response<Full<Bytes>> {
        if req.method() == Method::POST {
            return self.post(req, conn).await;
        }
        // Nothing else needs a body: none is read.
        conn.request_complete();
        let declared_body = has_body(&req);
        let resp = if req.method() == Method::GET || req.method() == Method::HEAD {
            self.get(&req)
        } else {
            self.refused.bad_method.fetch_add(1, Relaxed);
            let mut resp = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "POST /performance, GET /health or /stats",
            );
            resp.headers_mut()
                .insert("allow", HeaderValue::from_static("GET, HEAD, POST"));
            resp
        };
        unread_body_answer(declared_body, resp)
    }
}

enum Phase {
    Bound(Listener),
    Serving(Server),
    Stopped,
}

/// The collector's HTTP server: binds at construction, serves from
/// `start()` until `stop()`; the Python `OrchestratorCollector` wraps it.
#[pyclass(module = "edgeless_telemetry._core", frozen)]
pub struct CollectorServer {
    addr: SocketAddr,
    handler: Arc<Collect>,
    limits: Limits,
    /// Guarded by the GIL, never held while waiting: binding and stopping
    /// run with the GIL released, outside the cell.
    phase: GilCell<Phase>,
    /// TLS and basic auth (`web_config`).
    security: Option<Arc<Security>>,
}

/// `host:port` resolved, IPv4 first (as the standard library's server did).
fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{host:?} resolves to no address"))
}

fn check_auth(basic_auth: bool, tokens: bool) -> PyResult<()> {
    if basic_auth && tokens {
        return Err(PyValueError::new_err(
            "web_config basic_auth_users and bearer tokens both use the Authorization header: configure one of them",
        ));
    }
    Ok(())
}

#[pymethods]
impl CollectorServer {
    #[new]
    #[pyo3(
        text_signature = "(host, port, *, token=None, node_tokens=None, max_body_bytes=16777216, max_inflight_bytes=67108864, read_timeout_s=10.0, max_connections=256, web_config=None)"
    )]
    #[pyo3(signature = (host, port, *, token = None, node_tokens = None, max_body_bytes = Limit::new(16_777_216), max_inflight_bytes = Limit::new(67_108_864), read_timeout_s = Arg::value(10.0), max_connections = Limit::new(256), web_config = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        host: &str,
        port: u16,
        token: Option<Arg<String>>,
        node_tokens: Option<HashMap<String, String>>,
        max_body_bytes: Limit,
        max_inflight_bytes: Limit,
        read_timeout_s: Arg<f64>,
        max_connections: Limit,
        web_config: Option<Arg<std::path::PathBuf>>,
    ) -> PyResult<Self> {
        // The user's arguments of OrchestratorCollector, passed on as given.
        const ME: &str = "OrchestratorCollector";
        let token = token.map(|a| a.named(ME, "token")).transpose()?;
        let web_config = web_config.map(|a| a.named(ME, "web_config")).transpose()?;
        let max_body_bytes = max_body_bytes.at_least(ME, "max_body_bytes", 1)?;
        let max_inflight_bytes = max_inflight_bytes.at_least(ME, "max_inflight_bytes", 1)?;
        let max_connections = max_connections.at_least(ME, "max_connections", 1)?;
        let read_timeout_s = read_timeout_s.named(ME, "read_timeout_s")?;
        if max_inflight_bytes < max_body_bytes {
            return Err(PyValueError::new_err(format!(
                "{ME}: max_inflight_bytes must be at least max_body_bytes ({max_body_bytes}), got {max_inflight_bytes}"
            )));
        }
        if !(read_timeout_s.is_finite() && read_timeout_s > 0.0) {
            return Err(PyValueError::new_err(format!(
                "{ME}: read_timeout_s must be a positive number, got {read_timeout_s}"
            )));
        }
        let mut per_node: Vec<(String, String)> =
            node_tokens.unwrap_or_default().into_iter().collect();
        per_node.sort();
        let tokens = Tokens::new(token.as_deref(), &per_node).map_err(PyValueError::new_err)?;
        let required = tokens.required();
        let security = match &web_config {
            Some(path) => Some(Security::load(py, &path.to_string_lossy(), move |fresh| {
                check_auth(fresh.basic_auth.is_some(), required)
            })?),
            None => None,
        };
        let basic_auth = security
            .as_ref()
            .is_some_and(|s| s.current().basic_auth.is_some());
        check_auth(basic_auth, tokens.required())?;
        let addr = resolve(host, port).map_err(PyValueError::new_err)?;
        let listener = crate::gil::allow_threads(py, || Listener::bind(addr)).map_err(|e| {
            PyOSError::new_err((
                e.raw_os_error().unwrap_or(0),
                format!("OrchestratorCollector cannot listen on {addr}: {e}"),
            ))
        })?;
        let request_timeout = Duration::from_secs_f64(read_timeout_s.min(1e6));
        let limits = Limits {
            request_timeout,
            // A node sends every few seconds and redials after a close.
            idle_timeout: request_timeout,
            // A node reads its answer at once; as long as a request may take.
            response_timeout: request_timeout.max(Duration::from_secs(10)),
            max_connections,
            max_pending: max_connections,
            max_head_bytes: 16 << 10,
        };
        Ok(Self {
            addr: listener.local_addr(),
            handler: Arc::new(Collect {
                core: OnceLock::new(),
                tokens,
                max_body_bytes,
                max_inflight_bytes,
                inflight: AtomicUsize::new(0),
                refused: Refused::default(),
                http: Arc::new(Counters::default()),
                storers: Pool::new("edgeless-collect", STORERS),
            }),
            limits,
            phase: GilCell::new(Phase::Bound(listener)),
            security,
        })
    }

    /// `http://host:port` as bound (the real port when 0 was asked),
    /// `https://` with TLS.
    #[getter]
    fn url(&self) -> String {
        let tls = self.security.as_ref().is_some_and(|s| s.tls());
        format!("{}://{}", if tls { "https" } else { "http" }, self.addr)
    }

    /// Reads the web config file again (see `PrometheusTarget`); the
    /// running one stays on error. RuntimeError without a web_config.
    fn reload_web_config(&self, py: Python<'_>) -> PyResult<()> {
        let Some(security) = &self.security else {
            return Err(PyRuntimeError::new_err(
                "OrchestratorCollector has no web_config to reload",
            ));
        };
        security.reload(py)
    }

    /// Whether requests need a bearer token.
    #[getter]
    fn token_required(&self) -> bool {
        self.handler.tokens.required()
    }

    /// The core that stores what the server receives; once, before
    /// `start` (see `Collect::core` for why not at construction).
    fn attach(&self, core: &Bound<'_, CollectorCore>) -> PyResult<()> {
        self.handler
            .core
            .set(core.get().shared())
            .map_err(|_| PyRuntimeError::new_err("CollectorServer: a core is attached already"))
    }

    /// Starts serving. RuntimeError if started before (or stopped), or
    /// without a core.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        self.handler.attached()?;
        let listener =
            self.phase
                .with(py, |phase| match std::mem::replace(phase, Phase::Stopped) {
                    Phase::Bound(listener) => Ok(listener),
                    other => {
                        *phase = other;
                        Err(PyRuntimeError::new_err(
                            "OrchestratorCollector already started (or stopped)",
                        ))
                    }
                })?;
        let (handler, limits, counters, security) = (
            self.handler.clone(),
            self.limits.clone(),
            self.handler.http.clone(),
            self.security.clone(),
        );
        let server = crate::gil::allow_threads(py, move || {
            Server::start(listener, handler, limits, counters, security)
        })
        .map_err(|e| PyOSError::new_err(format!("OrchestratorCollector cannot serve: {e}")))?;
        self.phase.with(py, |phase| *phase = Phase::Serving(server));
        Ok(())
    }

    /// Stops serving and frees the port (waiting connections are closed,
    /// requests being stored finish); idempotent.
    fn stop(&self, py: Python<'_>) {
        match self
            .phase
            .with(py, |phase| std::mem::replace(phase, Phase::Stopped))
        {
            Phase::Serving(mut server) => crate::gil::allow_threads(py, move || server.stop()),
            Phase::Bound(listener) => drop(listener),
            Phase::Stopped => {}
        }
    }

    /// The core's counts and the HTTP ones (see the README).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.handler.attached()?.usable()?;
        let d = PyDict::new(py);
        for (name, v) in self.handler.stats() {
            d.set_item(name, v)?;
        }
        for (name, v) in Security::reload_stats(self.security.as_deref()) {
            d.set_item(name, v)?;
        }
        Ok(d)
    }
}
