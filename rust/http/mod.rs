//! The HTTP layer: one tokio runtime owned by the extension, on which the
//! servers (`/metrics`, the collector) and the NodeReporter's client run.
//!
//! Nothing here takes the GIL. The runtime is made on first use and made
//! again in a forked child (its worker threads are not there); the parent's
//! copy is leaked in the child, never dropped, since dropping it would wait
//! for threads that do not exist.

/// `AsyncWrite` for a socket wrapper that only watches reads: every write
/// goes straight to its `$field`.
macro_rules! delegate_async_write {
    ($wrapper:ty, $field:ident) => {
        impl tokio::io::AsyncWrite for $wrapper {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.$field).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.$field).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.$field.is_write_vectored()
            }

            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.$field).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.$field).poll_shutdown(cx)
            }
        }
    };
}
pub(crate) use delegate_async_write;

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
