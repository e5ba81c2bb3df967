//! The NodeReporter's HTTP/1.1 client: POST one body to one URL, within one
//! deadline, on a kept-alive connection.
//!
//! Built on hyper's `client::conn::http1` (one connection we hold) rather
//! than hyper-util's pooled `legacy::Client`: a reporter talks to one
//! collector, one request at a time, so a pool buys nothing, while holding
//! the connection ourselves gives what the reporter needs and a pool hides:
//! whether a request went out on a reused connection (a collector that
//! closed it meanwhile is worth one retry on a fresh one, not a failure),
//! a connection task we can abort when a deadline cuts a request, no
//! background reaper task, and a single place to forget the connection in a
//! forked child.
//!
//! Fork: the parent's connection is driven by a task on the parent's
//! runtime, whose threads the child does not have; touching it (even
//! dropping it, which wakes that task) could wait forever on a lock a dead
//! worker held. So a client notices it was inherited (`fork::generation`)
//! and forgets its connection without dropping it; its socket is closed in
//! the child at fork time by the `pthread_atfork` handler (registered in
//! `fork.rs` like a listening socket), so the parent's connection closes
//! when the parent closes it. The next request dials anew on the child's
//! own runtime.
//!
//! Runs on `super::runtime::runtime()`; `post` blocks the calling (Python)
//! thread, which must not hold the GIL.

use super::Io;
use crate::fork;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Response text kept for the status line (the collector's reason).
const TEXT_MAX: usize = 512;
/// Response bodies past this are not read to the end: the connection is
/// closed instead of reused (a collector answers a line).
const BODY_MAX: usize = 64 << 10;
/// How long a failed request waits for its connection's TLS error.
const TLS_WHY_WAIT: std::time::Duration = std::time::Duration::from_millis(200);
/// Response heads past this are a protocol error, not a memory cost.
const HEAD_MAX: usize = 64 << 10;

/// Why a request got no HTTP answer. The `Display` text names the peer and
/// fits a status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// Not `http://host[:port][/path]`; found before any request.
    BadUrl(String),
    /// A header value that cannot travel (found when the client is made).
    BadHeader(String),
    /// The host name did not resolve.
    Resolve(String),
    /// Nothing listens there (connection refused).
    Refused(String),
    /// No answer within the deadline (connect, send and response together).
    Timeout(String),
    /// The peer closed or reset the connection before answering.
    Reset(String),
    /// The peer answered, but not in HTTP/1.x.
    BadResponse(String),
    /// Any other socket error.
    Io(String),
    /// The TLS handshake failed (the collector's certificate is not
    /// trusted or not for its name, or it refused ours).
    Tls(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadUrl(m) => write!(f, "bad URL: {m}"),
            Self::BadHeader(m) => write!(f, "bad header: {m}"),
            Self::Resolve(m) => write!(f, "cannot resolve {m}"),
            Self::Refused(m) => write!(f, "connection refused by {m}"),
            Self::Timeout(m) => write!(f, "timed out: {m}"),
            Self::Reset(m) => write!(f, "connection reset: {m}"),
            Self::BadResponse(m) => write!(f, "bad response: {m}"),
            Self::Io(m) => write!(f, "I/O error: {m}"),
            Self::Tls(m) => write!(f, "TLS: {m}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// An HTTP answer: status and the start of its body (lossy UTF-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub text: String,
}

/// TLS to the endpoint (`https://`): the connector and the name the
/// server's certificate must carry.
#[derive(Clone)]
pub struct Tls {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tls({:?})", self.name)
    }
}

/// Where requests go: parsed once, so a bad URL fails at construction.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `https://`: set by `with_tls` (the URL alone says it is wanted).
    https: bool,
    tls: Option<Tls>,
    /// Host to resolve (IPv6 without brackets).
    host: String,
    port: u16,
    /// `Host` header and the name used in messages (`host:port`).
    authority: HeaderValue,
    /// Origin-form request target.
    path: Uri,
}

impl Endpoint {
    /// Parses `http[s]://host[:port][/base]` and appends `suffix` to the
    /// path (`/performance` for the reporter). Anything else is `BadUrl`
    /// naming the URL. An `https://` endpoint needs `with_tls` before use.
    pub fn parse(url: &str, suffix: &str) -> Result<Self, ClientError> {
        let bad = |why: &str| ClientError::BadUrl(format!("{url:?}: {why}"));
        let uri: Uri = url.parse().map_err(|e| bad(&format!("not a URL ({e})")))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("must be http://host:port or https://host:port")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user information is not supported"));
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        // `Authority::port` is `None` for a port it cannot parse (`:99999`),
        // which must not become port 80: read it ourselves.
        let port = match authority.as_str()[host.len()..].strip_prefix(':') {
            None if https => 443,
            None => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(bad(&format!("bad port {p:?}"))),
            },
        };
        if uri.query().is_some() {
            return Err(bad("a query is not supported"));
        }
        let path = format!("{}{suffix}", uri.path().trim_end_matches('/'));
        let path = path.parse().map_err(|e| bad(&format!("bad path ({e})")))?;
        let authority =
            HeaderValue::from_str(&format!("{host}:{port}")).map_err(|_| bad("bad host"))?;
        Ok(Self {
            https,
            tls: None,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            authority,
            path,
        })
    }

    pub fn https(&self) -> bool {
        self.https
    }

    /// TLS with `connector`, the certificate checked against the URL's
    /// host (an IP address or a DNS name).
    pub fn with_tls(mut self, connector: tokio_rustls::TlsConnector) -> Result<Self, ClientError> {
        let name = ServerName::try_from(self.host.clone())
            .map_err(|e| ClientError::BadUrl(format!("{}: {e}", self.host)))?;
        self.tls = Some(Tls { connector, name });
        Ok(self)
    }

    /// `host:port`, for messages.
    pub fn authority(&self) -> &str {
        self.authority.to_str().unwrap_or("?")
    }
}

/// A kept-alive connection: the sending half and the task driving it.
struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    /// Ends with the connection's TLS error, if that is why it ended.
    task: JoinHandle<Option<ClientError>>,
}

impl Drop for Conn {
    /// hyper closes a connection whose request was cancelled, but a peer
    /// that never answers must not keep the task (and socket) alive either.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// POSTs bodies to one endpoint, one at a time, on a kept-alive connection.
pub struct Client {
    endpoint: Endpoint,
    headers: Vec<(HeaderName, HeaderValue)>,
    conn: Option<Conn>,
    /// The fork generation `conn` belongs to.
    generation: u64,
    connections_opened: u64,
}

impl Client {
    /// `headers` go with every request besides `Host` and `Content-Length`.
    pub fn new(endpoint: Endpoint, headers: Vec<(HeaderName, HeaderValue)>) -> Self {
        Self {
            endpoint,
            headers,
            conn: None,
            generation: fork::generation(),
            connections_opened: 0,
        }
    }

    /// A protobuf client: `Content-Type: application/x-protobuf` and, with
    /// a token, `Authorization: Bearer <token>`.
    pub fn protobuf(endpoint: Endpoint, token: Option<&str>) -> Result<Self, ClientError> {
        let mut headers = vec![(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        )];
        if let Some(token) = token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                ClientError::BadHeader("the token cannot travel in a header".into())
            })?;
            value.set_sensitive(true);
            headers.push((hyper::header::AUTHORIZATION, value));
        }
        Ok(Self::new(endpoint, headers))
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Connections dialled so far (kept-alive ones are reused).
    pub fn connections_opened(&self) -> u64 {
        self.connections_opened
    }

    /// Drops the kept-alive connection (the next request dials anew).
    pub fn close(&mut self) {
        self.forget_if_inherited();
        self.conn = None;
    }

    /// POSTs `body`; connect, send and response all within `deadline`. A
    /// failure on a reused connection (the peer closed it while idle) is
    /// tried once more on a new one: the reporter's bodies are idempotent.
    /// Blocks the calling thread: never call it holding the GIL, nor from
    /// the runtime's own threads.
    pub fn post(&mut self, body: Bytes, deadline: Instant) -> Result<Answer, ClientError> {
        self.forget_if_inherited();
        let runtime = super::runtime::runtime();
        let started = Instant::now();
        let name = self.endpoint.authority().to_owned();
        let result = runtime.block_on(async {
            let deadline = tokio::time::Instant::from_std(deadline);
            let outcome = tokio::time::timeout_at(deadline, self.post_inner(body)).await;
            outcome.unwrap_or_else(|_| {
                Err(ClientError::Timeout(format!(
                    "no answer from {name} within {:.1} s",
                    started.elapsed().as_secs_f64()
                )))
            })
        });
        if result.is_err() {
            // Its state is unknown (a request may be half sent): never reuse.
            self.conn = None;
        }
        result
    }

    async fn post_inner(&mut self, body: Bytes) -> Result<Answer, ClientError> {
        let reusable = match &mut self.conn {
            Some(conn) => conn.sender.ready().await.is_ok(),
            None => false,
        };
        if reusable {
            match self.exchange(body.clone()).await {
                Ok(answer) => return Ok(answer),
                Err(ClientError::BadResponse(m)) => return Err(ClientError::BadResponse(m)),
                Err(_) => {} // probably closed by the peer meanwhile: once more
            }
        }
        self.conn = None;
        self.conn = Some(self.connect().await?);
        self.exchange(body).await
    }

    async fn connect(&mut self) -> Result<Conn, ClientError> {
        let name = self.endpoint.authority().to_owned();
        let addrs = tokio::net::lookup_host((self.endpoint.host.as_str(), self.endpoint.port))
            .await
            .map_err(|e| ClientError::Resolve(format!("{name}: {e}")))?;
        let mut last = ClientError::Resolve(format!("{name}: no address"));
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = io_error(&name, &e),
            }
        }
        let stream = stream.ok_or(last)?;
        // Bodies go in one write; do not hold the last segment back.
        let _ = stream.set_nodelay(true);
        self.connections_opened += 1;
        let stream = ClosedInChildren::new(stream);
        match &self.endpoint.tls {
            None => handshake(&name, Box::new(stream)).await,
            Some(tls) => {
                let stream = tls
                    .connector
                    .connect(tls.name.clone(), stream)
                    .await
                    .map_err(|e| tls_error(&name, &e))?;
                handshake(&name, Box::new(stream)).await
            }
        }
    }

    async fn exchange(&mut self, body: Bytes) -> Result<Answer, ClientError> {
        let name = self.endpoint.authority().to_owned();
        let conn = self.conn.as_mut().expect("connected before exchange");
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.endpoint.path.clone())
            .header(HOST, self.endpoint.authority.clone());
        for (k, v) in &self.headers {
            request = request.header(k, v);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| ClientError::BadHeader(e.to_string()))?;
        let response = match conn.sender.send_request(request).await {
            Ok(response) => response,
            Err(e) => {
                // A server refusing our certificate (TLS 1.3) does so right
                // after the handshake; the connection's task has the alert,
                // the request only sees the connection closed.
                if self.endpoint.tls.is_some() {
                    let why = tokio::time::timeout(TLS_WHY_WAIT, &mut conn.task).await;
                    if let Ok(Ok(Some(tls))) = why {
                        return Err(tls);
                    }
                }
                return Err(hyper_error(&name, &e));
            }
        };
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut text = Vec::new();
        let mut read = 0usize;
        let mut whole = false;
        while read <= BODY_MAX {
            match body.frame().await {
                None => {
                    whole = true;
                    break;
                }
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        read += data.len();
                        let room = TEXT_MAX.saturating_sub(text.len());
                        text.extend_from_slice(&data[..room.min(data.len())]);
                    }
                }
                // The head arrived: the status stands, the connection not.
                Some(Err(_)) => break,
            }
        }
        if !whole {
            self.conn = None;
        }
        Ok(Answer {
            status,
            text: String::from_utf8_lossy(&text).trim().to_owned(),
        })
    }

    fn forget_if_inherited(&mut self) {
        if fork::inherited(self.generation) {
            // The parent's: its task lives on a runtime without threads here.
            if let Some(conn) = self.conn.take() {
                std::mem::forget(conn);
            }
            self.generation = fork::generation();
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.forget_if_inherited();
    }
}

/// HTTP/1.1 on a connected stream, driven by a task on the runtime.
async fn handshake(name: &str, stream: Box<dyn Io>) -> Result<Conn, ClientError> {
    let (sender, connection) = http1::Builder::new()
        .max_buf_size(HEAD_MAX.max(8192))
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| hyper_error(name, &e))?;
    let name = name.to_owned();
    let task = tokio::spawn(async move {
        match connection.await {
            Err(e) => Some(hyper_error(&name, &e)).filter(|e| matches!(e, ClientError::Tls(_))),
            Ok(()) => None,
        }
    });
    Ok(Conn { sender, task })
}

/// A handshake error, saying what was wrong (rustls' own words: "invalid
/// peer certificate: UnknownIssuer", "received fatal alert: ...").
fn tls_error(name: &str, e: &io::Error) -> ClientError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => ClientError::Tls(format!("handshake with {name} failed: {tls}")),
        None => io_error(name, e),
    }
}

fn io_error(name: &str, e: &io::Error) -> ClientError {
    use io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => ClientError::Refused(name.to_owned()),
        TimedOut => ClientError::Timeout(format!("{name}: {e}")),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | NotConnected => {
            ClientError::Reset(format!("{name}: {e}"))
        }
        _ => ClientError::Io(format!("{name}: {e}")),
    }
}

fn hyper_error(name: &str, e: &hyper::Error) -> ClientError {
    if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        return ClientError::BadResponse(format!("{name} did not answer in HTTP/1.x: {e}"));
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            // A refusal of our certificate arrives after the handshake
            // (TLS 1.3), as an alert on the first read.
            return tls_error(name, io);
        }
        source = s.source();
    }
    if e.is_incomplete_message() || e.is_canceled() || e.is_closed() || e.is_body_write_aborted() {
        return ClientError::Reset(format!("{name} closed the connection before answering"));
    }
    ClientError::Io(format!("{name}: {e}"))
}

/// A client socket that a forked child does not keep open (see the module
/// doc). Registered with `fork.rs` while open; deregistered before it is
/// closed, so a child never closes a number reused by something else.
struct ClosedInChildren {
    stream: TcpStream,
    slot: Option<usize>,
}

impl ClosedInChildren {
    fn new(stream: TcpStream) -> Self {
        let slot = fork::close_listener_in_children(stream.as_raw_fd());
        Self { stream, slot }
    }
}

impl Drop for ClosedInChildren {
    fn drop(&mut self) {
        // Runs before `stream` is dropped (fields drop after this).
        fork::forget_listener(self.slot.take());
    }
}

impl AsyncRead for ClosedInChildren {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

super::delegate_async_write!(ClosedInChildren, stream);

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Duration;

    fn client(url: &str) -> Client {
        Client::protobuf(Endpoint::parse(url, "/performance").unwrap(), Some("tok")).unwrap()
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn urls() {
        let e = Endpoint::parse("http://127.0.0.1:7100/", "/performance").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 7100));
        assert_eq!(e.path.to_string(), "/performance");
        let e = Endpoint::parse("http://[::1]/base", "/performance").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.authority()),
            ("::1", 80, "[::1]:80")
        );
        assert_eq!(e.path.to_string(), "/base/performance");
        let e = Endpoint::parse("https://h/", "/p").unwrap();
        assert!(e.https() && e.port == 443);
        for bad in [
            "ftp://h",
            "h:1",
            "http://",
            "http://h:99999",
            "http://h:0",
            "http://u@h:1",
            "http://h:1/?q",
            "http://h x",
            "",
        ] {
            match Endpoint::parse(bad, "/p") {
                Err(ClientError::BadUrl(m)) => assert!(m.contains(&format!("{bad:?}")), "{m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn refused() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = client(&format!("http://127.0.0.1:{port}"))
            .post(Bytes::from_static(b"x"), soon())
            .unwrap_err();
        assert!(matches!(err, ClientError::Refused(_)), "{err}");
    }

    /// Answers `answers` in turn on one connection each, returning what
    /// each request carried.
    fn serve(answers: Vec<&'static [u8]>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for answer in answers {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = vec![0; 4096];
                let n = s.read(&mut buf).unwrap();
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                s.write_all(answer).unwrap();
            }
            seen
        });
        (url, thread)
    }

    #[test]
    fn posts_headers_and_reads_status() {
        let (url, server) = serve(vec![
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy",
        ]);
        let mut c = client(&url);
        let answer = c.post(Bytes::from_static(b"body"), soon()).unwrap();
        assert_eq!((answer.status, answer.text.as_str()), (503, "busy"));
        let seen = server.join().unwrap().remove(0).to_ascii_lowercase();
        assert!(seen.starts_with("post /performance http/1.1\r\n"), "{seen}");
        assert!(seen.contains("content-type: application/x-protobuf\r\n"));
        assert!(seen.contains("authorization: bearer tok\r\n"));
        assert!(seen.contains("content-length: 4\r\n") && seen.ends_with("\r\n\r\nbody"));
    }

    #[test]
    fn garbage_is_a_bad_response() {
        let (url, server) = serve(vec![b"SSH-2.0-OpenSSH\r\n\r\n"]);
        let err = client(&url)
            .post(Bytes::from_static(b"x"), soon())
            .unwrap_err();
        assert!(matches!(err, ClientError::BadResponse(_)), "{err}");
        server.join().unwrap();
    }

    #[test]
    fn silence_ends_at_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let started = Instant::now();
        let err = client(&url)
            .post(
                Bytes::from_static(b"x"),
                Instant::now() + Duration::from_millis(300),
            )
            .unwrap_err();
        assert!(matches!(err, ClientError::Timeout(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        drop(listener);
    }

    #[test]
    fn a_closed_kept_alive_connection_is_redialled() {
        // First connection answers keep-alive then closes; the client must
        // notice on the next post and dial a second one without failing.
        let (url, server) = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ]);
        let mut c = client(&url);
        assert_eq!(
            c.post(Bytes::from_static(b"1"), soon()).unwrap().status,
            200
        );
        std::thread::sleep(Duration::from_millis(100));
        let answer = c.post(Bytes::from_static(b"2"), soon()).unwrap();
        assert_eq!((answer.status, answer.text.as_str()), (200, "ok"));
        assert_eq!(c.connections_opened(), 2);
        server.join().unwrap();
    }
}
