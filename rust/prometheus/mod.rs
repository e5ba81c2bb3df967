//! PrometheusTarget: placeholder until the Prometheus issue lands.
//! It resolves every handle to a route that passes every event on.

use crate::chain::{ChainResult, Route, Tags, Target};
use crate::clock::EventClock;
use crate::events::EventRef;
use pyo3::prelude::*;
use std::sync::Arc;

pub struct Registry;

#[pyclass(module = "edgeless_telemetry._core", subclass, frozen)]
pub struct PrometheusTarget {
    registry: Arc<Registry>,
}

impl PrometheusTarget {
    pub fn target(&self) -> Arc<Registry> {
        self.registry.clone()
    }
}

#[pymethods]
impl PrometheusTarget {
    #[new]
    #[pyo3(signature = (metrics_url = ""))]
    fn new(metrics_url: &str) -> Self {
        let _ = metrics_url;
        Self {
            registry: Arc::new(Registry),
        }
    }
}

impl Target for Arc<Registry> {
    fn resolve(&self, _py: Python<'_>, _tags: &Tags) -> PyResult<Box<dyn Route>> {
        Ok(Box::new(PassRoute))
    }
}

struct PassRoute;

impl Route for PassRoute {
    fn handle(
        &self,
        _py: Python<'_>,
        _e: &EventRef<'_>,
        _t: &Tags,
        _c: &mut EventClock,
    ) -> ChainResult {
        ChainResult::Passed
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PrometheusTarget>()
}
