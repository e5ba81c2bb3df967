//! The `/metrics` endpoint on the shared HTTP layer (`crate::http`).
//!
//! GET or HEAD `/metrics` (any query), 404 elsewhere, 405 for other
//! methods. The format follows `Accept`, gzip when `Accept-Encoding`
//! allows it; renderings are shared between concurrent scrapes (`scrape`).
//! A scraper's connection is kept alive between scrapes (a TLS scrape then
//! pays no handshake), for up to `IDLE` without a request; a request that
//! declares a body, or gets anything but 200, closes its connection, so
//! nothing a client declares is read.

use super::encoding::{accepts_gzip, Format};
use super::registry::Registry;
use super::scrape::{bytes_of, Scrapes};
use crate::http::admission::{Counters, Limits};
use crate::http::server::{
    has_body, response, unread_body_answer, Conn, Handler, Listener, Server, TEXT,
};
use crate::http::web_config::Security;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long a scraper's connection may idle between scrapes: longer than
/// Prometheus' default interval of 1 min. Idle connections are waiting
/// ones: evicted first when the caps are reached, so they hold no slot a
/// newcomer needs.
const IDLE: Duration = Duration::from_secs(90);

/// A scrape is one short request: 5 s to send it is plenty. Responding
/// connections (slow readers share renderings) may be more than waiting
/// ones, which an attacker can hold for free.
pub fn limits() -> Limits {
    Limits {
        request_timeout: Duration::from_secs(5),
        idle_timeout: IDLE,
        response_timeout: Duration::from_secs(30),
        max_connections: 64,
        max_pending: 16,
        max_head_bytes: 8 << 10,
    }
}
/// Parses `http://host:port` (an optional `/` or `/metrics` path is
/// accepted) into a socket address; `https://` when `tls` (a web config
/// with TLS). Errors are messages for a ValueError.
pub fn parse_metrics_url(url: &str, tls: bool) -> Result<SocketAddr, String> {
    let bad =
        |why: &str| format!("metrics_url must look like http://host:port, got {url:?}: {why}");
    let rest = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => rest,
        (None, Some(rest)) if tls => rest,
        (None, Some(_)) => return Err(bad("https:// needs a web_config with tls_server_config")),
        _ => {
            return Err(bad(
                "only http:// (or https:// with a web_config) is supported",
            ))
        }
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if !matches!(path, "" | "/" | "/metrics") {
        return Err(bad("the path can only be /metrics"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, port) = v6.split_once("]:").ok_or_else(|| bad("missing port"))?;
        (host, port)
    } else {
        authority
            .rsplit_once(':')
            .ok_or_else(|| bad("missing port"))?
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '@') {
        return Err(bad("missing or invalid host"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| bad("the port must be a number in 0..=65535"))?;
    (host, port)
        .to_socket_addrs()
        .map_err(|e| bad(&format!("cannot resolve host: {e}")))?
        .next()
        .ok_or_else(|| bad("host resolves to no address"))
}

pub struct Metrics {
    scrapes: Arc<Scrapes>,
}

/// Binds `addr` now and serves `/metrics` for `registry`.
pub fn start(
    registry: Arc<Registry>,
    addr: SocketAddr,
    counters: Arc<Counters>,
    security: Option<Arc<Security>>,
) -> io::Result<Server> {
    let listener = Listener::bind(addr)?;
    let handler = Arc::new(Metrics {
        scrapes: Arc::new(Scrapes::new(registry)),
    });
    Server::start(listener, handler, limits(), counters, security)
}

impl Handler for Metrics {
    async fn handle(self: Arc<Self>, req: Request<Incoming>, conn: Conn) -> Response<Full<Bytes>> {
        conn.request_complete();
        let resp = self.answer(&req).await;
        unread_body_answer(has_body(&req), resp)
    }
}

impl Metrics {
    async fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return response(StatusCode::METHOD_NOT_ALLOWED, TEXT, "only GET /metrics\n");
        }
        if req.uri().path() != "/metrics" {
            return response(StatusCode::NOT_FOUND, TEXT, "not found; try /metrics\n");
        }
        let header = |name| {
            req.headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let registry = self.scrapes.registry();
        let format = Format::negotiate(header(ACCEPT), registry.native_on());
        let gzip = accepts_gzip(header(ACCEPT_ENCODING));
        for (counter, counted) in registry.scrapes.iter().zip([
            true,
            format == Format::OpenMetrics,
            gzip,
            format == Format::Protobuf,
        ]) {
            if counted {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
        let Some(rendering) = self.scrapes.rendering(format, gzip).await else {
            return response(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT,
                "rendering failed\n",
            );
        };
        let mut resp = response(StatusCode::OK, TEXT, bytes_of(rendering));
        let headers = resp.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        );
        if gzip {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed() {
        assert_eq!(
            parse_metrics_url("http://127.0.0.1:7003", false).unwrap(),
            "127.0.0.1:7003".parse().unwrap()
        );
        assert!(parse_metrics_url("http://127.0.0.1:0/metrics", false).is_ok());
        assert!(parse_metrics_url("http://[::1]:9000/", false).is_ok());
        assert!(parse_metrics_url("https://127.0.0.1:0", true).is_ok());
        assert!(parse_metrics_url("https://127.0.0.1:0", false).is_err());
        for bad in [
            "127.0.0.1:7003",
            "https://127.0.0.1:7003",
            "http://127.0.0.1",
            "http://127.0.0.1:99999",
            "http://:80",
            "http://127.0.0.1:80/other",
            "http://127.0.0.1:x",
        ] {
            assert!(parse_metrics_url(bad, false).is_err(), "{bad}");
        }
    }
}
