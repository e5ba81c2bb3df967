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

use tokio::io::{AsyncRead, AsyncWrite};

/// A connection's byte stream, plain TCP or TLS, behind one type: hyper's
/// connection code and ours are then compiled once instead of once per
/// stream type (and, on the server, per handler), which keeps the wheel
/// small. One indirect call per read or write is nothing beside a
/// system call.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}
