//! `ReporterCore`, the Python-facing class: one call per period, and the
//! choice of this process's `Life` (a forked child gets its own).

use super::life::{Config, Life};
use super::stats::Stat;
use crate::args::{Arg, Limit};
use crate::fork;
use crate::http::client::{Client, Endpoint};
use crate::http::client_tls::ClientTls;
use crate::performance::{PerfStore, PerformanceTarget};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The reporter's state and sending, behind one call per period.
///
/// Fork: the state of the process that made it lives in a `Life`; a forked
/// child that touches the core gets a new one (new nonce, sequence from 1,
/// nothing pending, no connection, fresh locks) and the parent's is leaked:
/// its locks may be held by threads the child does not have, and its
/// connection belongs to the parent's runtime.
#[pyclass(module = "edgeless_telemetry._core", frozen)]
pub struct ReporterCore {
    config: Config,
    store: Arc<PerfStore>,
    /// Never null; freed in `Drop` unless inherited; replaced ones leak.
    life: AtomicPtr<Life>,
}

#[pymethods]
impl ReporterCore {
    #[new]
    #[pyo3(
        text_signature = "(target, orchestrator_url, node_id, *, max_pending_bytes=67108864, max_batch_bytes=4194304, timeout_s=5.0, refresh_s=6, token=None, ca_file=None, client_cert_file=None, client_key_file=None)"
    )]
    #[pyo3(signature = (target, orchestrator_url, node_id, *, max_pending_bytes = Limit::new(67_108_864), max_batch_bytes = Limit::new(4_194_304), timeout_s = 5.0, refresh_s = 6, token = None, ca_file = None, client_cert_file = None, client_key_file = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        target: &Bound<'_, PerformanceTarget>,
        orchestrator_url: Arg<String>,
        node_id: &Bound<'_, PyAny>,
        max_pending_bytes: Limit,
        max_batch_bytes: Limit,
        timeout_s: f64,
        refresh_s: u64,
        token: Option<&str>,
        ca_file: Option<Arg<PathBuf>>,
        client_cert_file: Option<Arg<PathBuf>>,
        client_key_file: Option<Arg<PathBuf>>,
    ) -> PyResult<Self> {
        const ME: &str = "NodeReporter";
        let orchestrator_url = orchestrator_url.named(ME, "orchestrator_url")?;
        let max_pending_bytes = max_pending_bytes.at_least(ME, "max_pending_bytes", 1)?;
        let max_batch_bytes = max_batch_bytes.at_least(ME, "max_batch_bytes", 1)?;
        let path = |arg: Option<Arg<PathBuf>>, name| arg.map(|a| a.named(ME, name)).transpose();
        let ca_file = path(ca_file, "ca_file")?;
        let client_cert_file = path(client_cert_file, "client_cert_file")?;
        let client_key_file = path(client_key_file, "client_key_file")?;
        let mut endpoint = Endpoint::parse(&orchestrator_url, "/performance")
            .map_err(|e| PyValueError::new_err(format!("orchestrator_url: {e}")))?;
        let tls = ClientTls {
            ca_file: ca_file.as_deref(),
            cert_file: client_cert_file.as_deref(),
            key_file: client_key_file.as_deref(),
        };
        if endpoint.https() {
            endpoint = endpoint
                .with_tls(tls.connector()?)
                .map_err(|e| PyValueError::new_err(format!("orchestrator_url: {e}")))?;
        } else if !tls.is_empty() {
            return Err(PyValueError::new_err(
                "ca_file, client_cert_file and client_key_file need an https:// orchestrator_url",
            ));
        }
        let node_id = node_id
            .extract::<String>()
            .ok()
            .filter(|id| {
                (1..=crate::wire::MAX_NODE_ID_BYTES).contains(&id.len())
                    && !id.chars().any(char::is_control)
            })
            .ok_or_else(|| {
                PyValueError::new_err(format!(
                    "node_id must be a str of 1..256 bytes without control characters, got {}",
                    node_id
                        .repr()
                        .map_or_else(|_| "?".into(), |r| r.to_string())
                ))
            })?;
        if !(timeout_s.is_finite() && timeout_s > 0.0) {
            return Err(PyValueError::new_err(format!(
                "timeout_s must be a positive number of seconds, got {timeout_s}"
            )));
        }
        // Checked here so that every later Life can make its client.
        Client::protobuf(endpoint.clone(), token)
            .map_err(|e| PyValueError::new_err(format!("token: {e}")))?;
        let config = Config {
            node_id,
            endpoint,
            token: token.map(str::to_owned),
            timeout: Duration::from_secs_f64(timeout_s.min(1e6)),
            max_pending_bytes,
            max_batch_bytes,
            refresh_s,
        };
        let life = Box::into_raw(Box::new(Life::new(&config)));
        Ok(Self {
            config,
            store: target.get().store.clone(),
            life: AtomicPtr::new(life),
        })
    }

    /// Drains the target, encodes what it held into pending bodies (the
    /// oldest dropped past `max_pending_bytes`, counted) and sends pending
    /// bodies oldest first; each request within `timeout_s`, all of them
    /// within `budget_s` when given. True if nothing is left pending.
    #[pyo3(signature = (budget_s = None))]
    fn flush(&self, py: Python<'_>, budget_s: Option<f64>) -> PyResult<bool> {
        let deadline = match budget_s {
            None => None,
            Some(b) if b.is_nan() => {
                return Err(PyValueError::new_err(
                    "budget_s must be a number of seconds",
                ))
            }
            Some(b) => Some(Instant::now() + Duration::from_secs_f64(b.clamp(0.0, 1e6))),
        };
        let life = self.life();
        let drained = self.store.drain(py);
        let config = &self.config;
        let (done, first_drop) = crate::gil::allow_threads(py, move || {
            let mut state = life.lock();
            let first_drop = life.enqueue(&mut state, &drained, config);
            drop(drained);
            (life.deliver(&mut state, config, deadline), first_drop)
        });
        if first_drop {
            crate::counters::warn(
                py,
                &format!(
                    "NodeReporter dropped its oldest unsent batch (over max_pending_bytes={}); \
                     further drops are only counted, see stats()",
                    config.max_pending_bytes
                ),
            );
        }
        crate::interrupt::take()?;
        Ok(done)
    }

    /// Closes the kept-alive connection (waits for a send in progress).
    fn close(&self, py: Python<'_>) {
        let life = self.life();
        crate::gil::allow_threads(py, move || life.close(&mut life.lock()));
    }

    /// For the fork hook in a child: makes sure this process has its own
    /// life, and discards (counting them) the samples the target inherited,
    /// which the parent sends.
    fn after_fork_in_child(&self, py: Python<'_>) {
        let life = self.life();
        let drained = self.store.drain(py);
        life.stats.add(
            Stat::InheritedSamplesDiscarded,
            drained.sample_count() as u64,
        );
        life.stats.add(
            Stat::InheritedLogEntriesDiscarded,
            drained.log_count() as u64,
        );
    }

    /// Counters and pending gauges; never waits for a send in progress.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for (name, value) in self.life().stats.snapshot() {
            out.set_item(name, value)?;
        }
        Ok(out)
    }

    #[getter]
    fn nonce(&self) -> u64 {
        self.life().nonce
    }

    /// The last failure ("" if none yet), kept after later successes.
    #[getter]
    fn last_error(&self) -> String {
        self.life().last_error().0
    }

    /// When the current run of failed sends began (seconds since the
    /// epoch), None if the last send went through.
    #[getter]
    fn failing_since(&self) -> Option<f64> {
        self.life().last_error().1
    }

    #[getter]
    fn node_id(&self) -> &str {
        &self.config.node_id
    }
}

impl ReporterCore {
    /// This process's life, made anew in a forked child (see the type doc).
    fn life(&self) -> &Life {
        loop {
            let current = self.life.load(Ordering::Acquire);
            // SAFETY: never null; freed only in `Drop`, replaced ones leak.
            let life = unsafe { &*current };
            if !fork::inherited(life.generation) {
                return life;
            }
            let fresh = Box::into_raw(Box::new(Life::new(&self.config)));
            if self
                .life
                .compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                // SAFETY: just published; freed only in `Drop`.
                return unsafe { &*fresh };
            }
            // Another thread of this child won: ours was never published.
            // SAFETY: `fresh` came from `Box::into_raw` above.
            drop(unsafe { Box::from_raw(fresh) });
        }
    }
}

impl Drop for ReporterCore {
    fn drop(&mut self) {
        // SAFETY: from `Box::into_raw`; `&mut self` means no other user.
        let life = unsafe { Box::from_raw(*self.life.get_mut()) };
        if fork::inherited(life.generation) {
            // The parent's: its locks and connection are not ours to drop.
            std::mem::forget(life);
        }
    }
}
