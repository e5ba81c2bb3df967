//! The HTTP layer: one tokio runtime owned by the extension, on which the
//! servers (`/metrics`, the collector) and the NodeReporter's client run.
//!
//! Nothing here takes the GIL. The runtime is made on first use and made
//! again in a forked child (its worker threads are not there); the parent's
//! copy is leaked in the child, never dropped, since dropping it would wait
//! for threads that do not exist.

pub mod admission;
pub mod basic_auth;
pub mod client;
pub mod client_tls;
pub mod pool;
pub mod runtime;
pub mod server;
pub mod web_config;
