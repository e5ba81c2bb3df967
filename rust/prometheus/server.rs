//! The `/metrics` endpoint: a tiny HTTP/1.1 responder on std::net.
//!
//! It runs on its own threads and reads only the registry's atomics, so a
//! scrape never waits for the GIL however busy the Python threads are.
//! Each connection gets one request and one response (`Connection: close`);
//! reads are time-limited and requests size-limited, and at most
//! `MAX_CONNECTIONS` are served at once, so a stuck client cannot pile up
//! threads.

use super::encoding::{accepts_gzip, Format};
use super::registry::Registry;
use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const MAX_REQUEST_BYTES: usize = 8 << 10;
const MAX_CONNECTIONS: usize = 16;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses `http://host:port` (an optional `/` or `/metrics` path is
/// accepted) into a socket address. Errors are messages for a ValueError.
pub fn parse_metrics_url(url: &str) -> Result<SocketAddr, String> {
    let bad =
        |why: &str| format!("metrics_url must look like http://host:port, got {url:?}: {why}");
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("only http:// is supported"))?;
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

pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The process that started the thread: a forked child has a copy of
    /// this struct but not the thread (nor should it poke the parent's
    /// listener), so there `stop` only forgets it.
    owner_pid: u32,
}

impl Server {
    /// Binds now (so a port in use fails at construction) and serves on a
    /// background thread.
    pub fn start(registry: Arc<Registry>, addr: SocketAddr) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("edgeless-metrics".into())
            .spawn(move || accept_loop(listener, registry, flag))?;
        Ok(Server {
            addr,
            stop,
            thread: Some(thread),
            owner_pid: std::process::id(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits until the listening socket is closed, so
    /// the port is free when this returns. Idempotent.
    pub fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        if std::process::id() != self.owner_pid {
            return;
        }
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        let wake = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), self.addr.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), self.addr.port())
            }
            _ => self.addr,
        };
        if TcpStream::connect_timeout(&wake, Duration::from_secs(2)).is_ok() {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: TcpListener, registry: Arc<Registry>, stop: Arc<AtomicBool>) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = conn else { continue };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            let mut stream = stream;
            let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
            let _ = respond(
                &mut stream,
                "503 Service Unavailable",
                "text/plain",
                None,
                b"too many scrapes at once\n",
                false,
            );
            continue;
        }
        let registry = registry.clone();
        let active2 = active.clone();
        let spawned = std::thread::Builder::new()
            .name("edgeless-scrape".into())
            .spawn(move || {
                let _ = serve(stream, &registry);
                active2.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Reads the request head (up to the blank line), bounded in size and time.
fn read_head(stream: &mut TcpStream) -> io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            return Ok(Some(String::from_utf8_lossy(&buf).into_owned()));
        }
        if buf.len() > MAX_REQUEST_BYTES {
            return Ok(None);
        }
    }
}

fn serve(mut stream: TcpStream, registry: &Registry) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let _ = stream.set_nodelay(true);
    let Some(head) = read_head(&mut stream)? else {
        return respond(
            &mut stream,
            "400 Bad Request",
            "text/plain",
            None,
            b"bad request\n",
            false,
        );
    };
    let mut lines = head.split("\r\n");
    let request = lines.next().unwrap_or("");
    let mut parts = request.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut accept = None;
    let mut accept_encoding = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("accept") {
                accept = Some(value.trim());
            } else if name.eq_ignore_ascii_case("accept-encoding") {
                accept_encoding = Some(value.trim());
            }
        }
    }
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            None,
            b"only GET /metrics\n",
            false,
        );
    }
    let path = target.split('?').next().unwrap_or("");
    if path != "/metrics" {
        return respond(
            &mut stream,
            "404 Not Found",
            "text/plain",
            None,
            b"not found; try /metrics\n",
            head_only,
        );
    }
    let format = Format::negotiate(accept);
    let body = registry.render(format);
    let gzip = accepts_gzip(accept_encoding);
    for (counter, counted) in
        registry
            .scrapes
            .iter()
            .zip([true, format == Format::OpenMetrics, gzip])
    {
        if counted {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
    if gzip {
        let mut gz = GzEncoder::new(Vec::with_capacity(body.len() / 4 + 64), Compression::fast());
        gz.write_all(&body)?;
        registry.recycle(body);
        let body = gz.finish()?;
        respond(
            &mut stream,
            "200 OK",
            format.content_type(),
            Some("gzip"),
            &body,
            head_only,
        )
    } else {
        let sent = respond(
            &mut stream,
            "200 OK",
            format.content_type(),
            None,
            &body,
            head_only,
        );
        registry.recycle(body);
        sent
    }
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    encoding: Option<&str>,
    body: &[u8],
    head_only: bool,
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(e) = encoding {
        head.push_str("Content-Encoding: ");
        head.push_str(e);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(body)?;
    }
    stream.flush()?;
    // Let the client read everything before the close.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed() {
        assert_eq!(
            parse_metrics_url("http://127.0.0.1:7003").unwrap(),
            "127.0.0.1:7003".parse().unwrap()
        );
        assert!(parse_metrics_url("http://127.0.0.1:0/metrics").is_ok());
        assert!(parse_metrics_url("http://[::1]:9000/").is_ok());
        for bad in [
            "127.0.0.1:7003",
            "https://127.0.0.1:7003",
            "http://127.0.0.1",
            "http://127.0.0.1:99999",
            "http://:80",
            "http://127.0.0.1:80/other",
            "http://127.0.0.1:x",
        ] {
            assert!(parse_metrics_url(bad).is_err(), "{bad}");
        }
    }
}
