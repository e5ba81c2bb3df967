//! One HTTP/1.1 server (hyper) on the extension's runtime, for `/metrics`
//! and the collector. It never takes the GIL: handlers are Rust, and slow
//! work (rendering, storing) goes to blocking threads.
//!
//! What it guarantees, whatever clients do (see `admission` for how):
//! a whole request (head and body) arrives within `request_timeout` of
//! accept or of its first byte on a kept-alive connection (which may idle
//! for `idle_timeout` between requests), or the connection is cut; slow or
//! idle connections are the first given up when the caps are reached, so
//! they cannot starve a normal request; a response must be taken within
//! `response_timeout`. A handler that needs no body answers without
//! reading it and closes the connection (`closing`), so a
//! declared but never sent body holds nothing.
//!
//! Life: `Listener::bind` binds at once (a port in use fails at
//! construction), `Server::start` serves, `Server::stop` returns once the
//! listening socket is closed. A forked child has neither the runtime's
//! threads nor the listening socket (`fork` closes it there): its copies
//! of listeners and servers are not running, and stopping or dropping them
//! only forgets them.

use super::admission::{Admission, ConnState, Counters, Limits};
use super::basic_auth::BasicAuth;
use super::runtime::runtime;
use super::web_config::{Security, WebConfig};
use super::Io;
use crate::fork;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How long `stop` waits for the accept loop to close its socket.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// A bound, not yet serving, listening socket.
pub struct Listener {
    socket: Option<StdListener>,
    addr: SocketAddr,
    fork_slot: Option<usize>,
    generation: u64,
}

impl Listener {
    /// Binds now; the socket is closed in forked children.
    pub fn bind(addr: SocketAddr) -> io::Result<Listener> {
        let socket = StdListener::bind(addr)?;
        socket.set_nonblocking(true)?;
        let addr = socket.local_addr()?;
        let fork_slot = fork::close_listener_in_children(socket.as_raw_fd());
        Ok(Listener {
            socket: Some(socket),
            addr,
            fork_slot,
            generation: fork::generation(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(socket) = self.socket.take() {
            if fork::inherited(self.generation) {
                // The fork handler closed this fd; its number may be
                // another file's by now.
                std::mem::forget(socket);
            } else {
                fork::forget_listener(self.fork_slot); // before the close
                drop(socket);
            }
        }
    }
}

/// The response body: the bytes, and the connection told when hyper has
/// taken them all (`Admission::queued`; it waits for the next request once
/// they are written, see `Watched::poll_flush`).
pub struct Tracked {
    inner: Full<Bytes>,
    done: Option<(Arc<ConnState>, Arc<Admission>)>,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some((conn, admission)) = self.done.take() {
            admission.queued(&conn);
        }
    }
}

/// A handler's view of its connection.
pub struct Conn {
    state: Arc<ConnState>,
    admission: Arc<Admission>,
}

impl Conn {
    /// The request is complete (its body read, or not needed): from now
    /// on the request deadline no longer runs and the connection is not
    /// evicted. Call it before slow work such as storing.
    pub fn request_complete(&self) {
        self.admission.handling(&self.state);
    }
}

/// What serves the requests: `handle` answers one; it runs on the async
/// workers and must move blocking work off them (`spawn_blocking`, or a
/// `pool::Pool`).
pub trait Handler: Send + Sync + 'static {
    fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: Conn,
    ) -> impl Future<Output = Response<Full<Bytes>>> + Send;
}

/// A handler behind one type, so that the accept loop and hyper's
/// connection code are compiled once for all handlers (see `Io`).
type DynHandler = Arc<
    dyn Fn(Request<Incoming>, Conn) -> Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>
        + Send
        + Sync,
>;

/// A response with a body of text (or JSON, with `content_type`).
pub fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub const TEXT: &str = "text/plain; charset=utf-8";

/// Marks a response as the connection's last: used whenever the request's
/// body is not read (refusals, requests that need none), so a client that
/// declares a body and never sends it holds nothing past the answer.
pub fn closing(mut resp: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// The answer to a request whose body is not read: kept alive for the
/// next request only when it is a 200 and no body was declared; anything
/// else ends the connection (`closing`).
pub fn unread_body_answer(
    declared_body: bool,
    resp: Response<Full<Bytes>>,
) -> Response<Full<Bytes>> {
    if declared_body || resp.status() != StatusCode::OK {
        closing(resp)
    } else {
        resp
    }
}

/// Whether the request carries a body (declared length > 0, or chunked).
pub fn has_body(req: &Request<Incoming>) -> bool {
    !req.body().is_end_stream()
}

/// A running server (in this process; see the module doc for forks).
pub struct Server {
    addr: SocketAddr,
    admission: Arc<Admission>,
    running: Option<Running>,
    generation: u64,
}

struct Running {
    stop: watch::Sender<bool>,
    closed: std::sync::mpsc::Receiver<()>,
}

impl Server {
    /// Serves `listener` with `handler` on the runtime; with `security`,
    /// TLS and basic auth as its web configuration says. After a
    /// `Security::reload`, basic auth applies to each connection's next
    /// request, and TLS to its next connection: a kept-alive connection
    /// made under the old configuration is closed after its next answer.
    pub fn start<H: Handler>(
        mut listener: Listener,
        handler: Arc<H>,
        limits: Limits,
        counters: Arc<Counters>,
        security: Option<Arc<Security>>,
    ) -> io::Result<Server> {
        let rt = runtime();
        let socket = listener.socket.take().expect("a listener serves once");
        let fork_slot = listener.fork_slot.take();
        let addr = listener.addr;
        let tokio_listener = {
            let _guard = rt.enter();
            TcpListener::from_std(socket)
        };
        let tokio_listener = match tokio_listener {
            Ok(l) => l,
            Err(e) => {
                fork::forget_listener(fork_slot);
                return Err(e);
            }
        };
        let admission = Arc::new(Admission::new(limits, counters));
        let (stop_tx, stop_rx) = watch::channel(false);
        let (closed_tx, closed_rx) = std::sync::mpsc::channel();
        let adm = admission.clone();
        let handler: DynHandler =
            Arc::new(move |req, conn| Box::pin(handler.clone().handle(req, conn)));
        rt.spawn(async move {
            accept_loop(&tokio_listener, handler, adm, stop_rx, security).await;
            // Unregistered before the close, so a fork in between cannot
            // close a reused fd number in the child.
            fork::forget_listener(fork_slot);
            drop(tokio_listener);
            let _ = closed_tx.send(());
        });
        Ok(Server {
            addr,
            admission,
            running: Some(Running {
                stop: stop_tx,
                closed: closed_rx,
            }),
            generation: fork::generation(),
        })
    }

    /// Serving in this process (false in a forked child, and after stop).
    pub fn running(&self) -> bool {
        self.running.is_some() && !fork::inherited(self.generation)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counters and open connections.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// Stops accepting and returns once the listening socket is closed
    /// (the port is free). Waiting connections are closed; requests being
    /// handled finish, bounded by their deadlines. Idempotent.
    pub fn stop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        if fork::inherited(self.generation) {
            // The parent's runtime: its threads are not here to answer.
            std::mem::forget(running);
            return;
        }
        let _ = running.stop.send(true);
        let _ = running.closed.recv_timeout(STOP_WAIT);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(
    listener: &TcpListener,
    handler: DynHandler,
    admission: Arc<Admission>,
    mut stop: watch::Receiver<bool>,
    security: Option<Arc<Security>>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true)
        .half_close(false)
        .max_buf_size(admission.limits.max_head_bytes.max(8192));
    let http = Arc::new(http);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // Out of fds and the like: do not spin on it.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(state) = admission.admit() else {
            refuse_busy(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let fd = stream.as_raw_fd();
        let stream = Watched {
            inner: stream,
            state: state.clone(),
            admission: admission.clone(),
        };
        let security = security.as_ref().map(|s| {
            s.watch();
            ConnSecurity {
                accepted: s.current(),
                security: s.clone(),
                peer: None,
            }
        });
        let (handler, admission, http, stop) = (
            handler.clone(),
            admission.clone(),
            http.clone(),
            stop.clone(),
        );
        match security.as_ref().and_then(|s| s.accepted.tls.clone()) {
            None => tokio::spawn(serve_connection(
                Box::new(stream),
                fd,
                state,
                handler,
                admission,
                http,
                stop,
                security,
            )),
            Some(tls) => tokio::spawn(async move {
                let mut security = security;
                // The handshake is part of the request: same deadline,
                // evictable like any waiting connection.
                let Some(stream) = handshake(tls, stream, &admission, &state).await else {
                    shutdown(fd);
                    admission.closed(&state);
                    return;
                };
                if let Some(s) = security.as_mut() {
                    s.peer = stream.get_ref().1.peer_certificates().map(<[_]>::to_vec);
                }
                let stream = Box::new(stream);
                serve_connection(stream, fd, state, handler, admission, http, stop, security).await
            }),
        };
    }
}

/// A connection's socket, telling the admission when bytes arrive (the
/// end of a kept-alive connection's idle time) and when hyper's writes are
/// flushed (the end of a response).
struct Watched {
    inner: TcpStream,
    state: Arc<ConnState>,
    admission: Arc<Admission>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.admission.bytes_arrived(&self.state);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    /// hyper (and rustls, above us) flush the socket only once all they
    /// hold is written to it.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(polled, Poll::Ready(Ok(()))) {
            self.admission.flushed(&self.state);
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Every slot is serving a complete request: 503 without reading anything.
fn refuse_busy(stream: TcpStream) {
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Content-Length: 25\r\nRetry-After: 1\r\nConnection: close\r\n\r\ntoo many connections now\n";
    let _ = stream.try_write(BUSY);
    shutdown(stream.as_raw_fd());
}

/// Sends FIN/RST now, even if a forked child holds a copy of the socket.
fn shutdown(fd: RawFd) {
    // SAFETY: `fd` belongs to a socket the caller still owns.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// A connection's web configuration: the one it was accepted (and its TLS
/// handshake made) under, where the current one is, and the client
/// certificate chain its handshake presented.
struct ConnSecurity {
    security: Arc<Security>,
    accepted: Arc<WebConfig>,
    peer: Option<Vec<CertificateDer<'static>>>,
}

/// What a request is checked against.
struct RequestSecurity {
    /// Always the current configuration's: a user removed by a reload is
    /// refused at once on kept-alive connections too.
    basic_auth: Option<Arc<BasicAuth>>,
    /// The connection's handshake was made under an older configuration:
    /// its answer closes it, so the client's next request handshakes anew.
    stale: bool,
    /// Stale, and the current configuration's client certificate check
    /// does not accept what the handshake presented (a client CA removed,
    /// or client certificates now required): refused now, not after one
    /// more answer.
    certificate_refused: bool,
}

impl ConnSecurity {
    fn for_request(&self) -> RequestSecurity {
        self.security.watch();
        let current = self.security.current();
        let stale = !Arc::ptr_eq(&current, &self.accepted);
        let certificate_refused = stale
            && current
                .client_verifier
                .as_ref()
                .is_some_and(|v| !accepts(v.as_ref(), self.peer.as_deref()));
        RequestSecurity {
            basic_auth: current.basic_auth.clone(),
            stale,
            certificate_refused,
        }
    }
}

/// Whether `verifier` accepts the chain a handshake presented (or none).
fn accepts(verifier: &dyn ClientCertVerifier, chain: Option<&[CertificateDer<'static>]>) -> bool {
    match chain {
        None | Some([]) => !verifier.client_auth_mandatory(),
        Some([end_entity, intermediates @ ..]) => verifier
            .verify_client_cert(end_entity, intermediates, UnixTime::now())
            .is_ok(),
    }
}

type ServiceFuture = Pin<Box<dyn Future<Output = Result<Response<Tracked>, Infallible>> + Send>>;

/// Why a connection's task stops waiting.
enum Wake {
    Late,
    Evicted,
    Changed,
}

/// Waits until the connection's deadline passes, it is evicted, or its
/// deadline changes (then the caller looks again).
async fn watch_conn(admission: &Admission, state: &ConnState) -> Wake {
    let deadline = admission.deadline(state);
    tokio::select! {
        _ = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        } => if admission.late(state) { Wake::Late } else { Wake::Changed },
        _ = state.wake.notified() => if state.evicted() { Wake::Evicted } else { Wake::Changed },
    }
}

/// The TLS handshake, cut at the connection's deadline or eviction;
/// `None` when it failed or was cut (counted). A failed handshake's alert
/// (say, "unknown CA" for a client certificate) is sent and the client
/// given `LINGER` to read it, as an HTTP refusal is (see `linger`).
async fn handshake(
    tls: tokio_rustls::TlsAcceptor,
    stream: Watched,
    admission: &Admission,
    state: &ConnState,
) -> Option<tokio_rustls::server::TlsStream<Watched>> {
    let accept = tls.accept(stream).into_fallible();
    tokio::pin!(accept);
    loop {
        tokio::select! {
            done = &mut accept => {
                return match done {
                    Ok(stream) => Some(stream),
                    Err((_, mut stream)) => {
                        admission.counters.tls_failures.fetch_add(1, Ordering::Relaxed);
                        linger(&mut stream, admission, state).await;
                        None
                    }
                };
            }
            wake = watch_conn(admission, state) => match wake {
                Wake::Late => {
                    admission.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                Wake::Evicted => return None,
                Wake::Changed => {}
            },
        }
    }
}

/// 401 for basic auth, closing (the body is not read).
fn basic_auth_refusal() -> Response<Full<Bytes>> {
    let mut resp = closing(response(
        StatusCode::UNAUTHORIZED,
        TEXT,
        "user name or password missing or wrong\n",
    ));
    resp.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"edgeless-telemetry\""),
    );
    resp
}

/// How long a connection whose last answer was sent keeps draining what
/// the client still sends before it is closed: closing with unread bytes
/// makes the kernel reset the connection, and the client could lose the
/// answer (a 401 or 413 sent before its body was read). Bounded also by
/// the request deadline, and the connection is evictable meanwhile.
const LINGER: Duration = Duration::from_secs(2);

#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    stream: Box<dyn Io>,
    fd: RawFd,
    state: Arc<ConnState>,
    handler: DynHandler,
    admission: Arc<Admission>,
    http: Arc<hyper::server::conn::http1::Builder>,
    mut stop: watch::Receiver<bool>,
    security: Option<ConnSecurity>,
) {
    let svc_state = state.clone();
    let svc_admission = admission.clone();
    let service = service_fn(move |req: Request<Incoming>| -> ServiceFuture {
        let checks = security.as_ref().map(ConnSecurity::for_request);
        let (state, admission, handler) =
            (svc_state.clone(), svc_admission.clone(), handler.clone());
        Box::pin(async move {
            admission.counters.requests.fetch_add(1, Ordering::Relaxed);
            let conn = Conn {
                state: state.clone(),
                admission: admission.clone(),
            };
            let (basic_auth, stale, certificate_refused) = match &checks {
                Some(c) => (c.basic_auth.as_ref(), c.stale, c.certificate_refused),
                None => (None, false, false),
            };
            let allowed = match basic_auth {
                None => true,
                Some(auth) => {
                    let header = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
                    auth.allows(header).await
                }
            };
            let resp = if certificate_refused {
                admission
                    .counters
                    .tls_failures
                    .fetch_add(1, Ordering::Relaxed);
                closing(response(
                    StatusCode::FORBIDDEN,
                    TEXT,
                    "client certificate no longer trusted (web config reloaded)\n",
                ))
            } else if allowed {
                handler(req, conn).await
            } else {
                admission
                    .counters
                    .unauthorized
                    .fetch_add(1, Ordering::Relaxed);
                basic_auth_refusal()
            };
            let resp = if stale { closing(resp) } else { resp };
            admission.responding(&state);
            Ok(resp.map(|inner| Tracked {
                inner,
                done: Some((state, admission)),
            }))
        })
    });
    let mut conn = http.serve_connection(TokioIo::new(stream), service);
    let mut stopping = *stop.borrow();
    if stopping {
        Pin::new(&mut conn).graceful_shutdown();
    }
    let finished = loop {
        tokio::select! {
            done = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => break done.is_ok(),
            wake = watch_conn(&admission, &state) => match wake {
                Wake::Late => {
                    admission.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                    break false;
                }
                Wake::Evicted => break false,
                Wake::Changed => {}
            },
            _ = stop.changed(), if !stopping => {
                stopping = true;
                // Idle connections close now, others after their response.
                Pin::new(&mut conn).graceful_shutdown();
            }
        }
    };
    if finished {
        let mut stream = conn.into_parts().io.into_inner();
        linger(&mut *stream, &admission, &state).await;
    } else {
        shutdown(fd);
        // Dropped before `closed`: its response body (if any) must not put
        // the connection back among the waiting ones afterwards.
        drop(conn);
    }
    admission.closed(&state);
}

/// Sends FIN, then reads and drops what the client still sends until it
/// closes, for at most `LINGER` (see there).
async fn linger(stream: &mut dyn Io, admission: &Admission, state: &ConnState) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if stream.shutdown().await.is_err() {
        return;
    }
    let until = tokio::time::Instant::now() + LINGER;
    let mut sink = [0u8; 8192];
    loop {
        tokio::select! {
            read = stream.read(&mut sink) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            _ = tokio::time::sleep_until(until) => return,
            wake = watch_conn(admission, state) => match wake {
                Wake::Late | Wake::Evicted => return,
                Wake::Changed => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    struct Echo {
        /// Requests to /slow wait until this many are waiting.
        slow: AtomicUsize,
    }

    impl Handler for Echo {
        async fn handle(
            self: Arc<Self>,
            req: Request<Incoming>,
            conn: Conn,
        ) -> Response<Full<Bytes>> {
            conn.request_complete();
            if req.uri().path() == "/slow" {
                self.slow.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(800)).await;
            }
            if req.uri().path() == "/big" {
                return response(StatusCode::OK, TEXT, Bytes::from_static(&BIG));
            }
            let resp = response(StatusCode::OK, TEXT, "ok\n");
            if req.uri().path() == "/keep" {
                resp
            } else {
                closing(resp)
            }
        }
    }

    /// More than loopback's socket buffers hold (zeroed: no binary size).
    static BIG: [u8; 64 << 20] = [0; 64 << 20];

    fn serve(limits: Limits) -> Server {
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        Server::start(
            listener,
            Arc::new(Echo {
                slow: AtomicUsize::new(0),
            }),
            limits,
            Default::default(),
            None,
        )
        .unwrap()
    }

    fn limits(max_connections: usize, timeout_ms: u64) -> Limits {
        Limits {
            request_timeout: Duration::from_millis(timeout_ms),
            idle_timeout: Duration::from_millis(timeout_ms),
            response_timeout: Duration::from_secs(5),
            max_connections,
            max_pending: max_connections,
            max_head_bytes: 8192,
        }
    }

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // A refusal may come (and the socket close) before we write.
        let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn a_trickling_request_is_cut_at_its_deadline_not_per_read() {
        let server = serve(limits(8, 300));
        let mut s = std::net::TcpStream::connect(server.local_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let start = Instant::now();
        let head =
            b"GET /x HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        let mut cut = false;
        for b in head {
            if s.write_all(&[*b]).is_err() {
                cut = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            let mut buf = [0u8; 1];
            s.set_nonblocking(true).unwrap();
            let r = s.read(&mut buf);
            s.set_nonblocking(false).unwrap();
            if matches!(r, Ok(0)) || matches!(&r, Err(e) if e.kind() != io::ErrorKind::WouldBlock) {
                cut = true;
                break;
            }
        }
        assert!(cut, "a request trickled past its deadline");
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(
            server.admission().counters.timeouts.load(Ordering::Relaxed),
            1
        );
        assert!(get(server.local_addr(), "/").starts_with("HTTP/1.1 200"));
    }

    #[test]
    fn idle_connections_make_room_and_busy_ones_refuse() {
        let server = serve(limits(2, 10_000));
        let addr = server.local_addr();
        let idle: Vec<_> = (0..2)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        // Both slots idle: a request evicts the oldest and is served.
        assert!(get(addr, "/").starts_with("HTTP/1.1 200"));
        assert!(
            server
                .admission()
                .counters
                .evictions
                .load(Ordering::Relaxed)
                >= 1
        );
        drop(idle);
        // Both slots handling: the third is refused at once.
        let slow: Vec<_> = (0..2)
            .map(|_| std::thread::spawn(move || get(addr, "/slow")))
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        assert!(get(addr, "/").starts_with("HTTP/1.1 503"));
        for t in slow {
            assert!(t.join().unwrap().starts_with("HTTP/1.1 200"));
        }
        assert_eq!(server.admission().counters.busy.load(Ordering::Relaxed), 1);
    }

    fn connect(addr: SocketAddr) -> std::net::TcpStream {
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// GET /keep on a kept-alive `s`: the response (its "ok\n" body read).
    fn get_kept(s: &mut std::net::TcpStream) -> String {
        s.write_all(b"GET /keep HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = Vec::new();
        let mut byte = [0u8; 1];
        while !out.ends_with(b"\r\n\r\nok\n") {
            match s.read(&mut byte) {
                Ok(1) => out.push(byte[0]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn a_kept_alive_connection_idles_past_the_request_timeout_but_not_a_request() {
        let mut l = limits(8, 300);
        l.idle_timeout = Duration::from_secs(60);
        let server = serve(l);
        let mut s = connect(server.local_addr());
        assert!(get_kept(&mut s).starts_with("HTTP/1.1 200"));
        // Idle for twice the request timeout: still open.
        std::thread::sleep(Duration::from_millis(600));
        assert!(get_kept(&mut s).starts_with("HTTP/1.1 200"));
        let counters = &server.admission().counters;
        assert_eq!(counters.accepted.load(Ordering::Relaxed), 1);
        assert_eq!(counters.requests.load(Ordering::Relaxed), 2);
        // A next request begun and not finished is cut at the request
        // timeout: the server closes it before our 10 s read timeout,
        // where the idle timeout would leave it open for a minute.
        std::thread::sleep(Duration::from_millis(100));
        s.write_all(b"GET /keep HT").unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("closed by the server");
        assert!(rest.is_empty());
        assert_eq!(counters.timeouts.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn an_idle_kept_alive_connection_is_closed_at_the_idle_timeout() {
        let mut l = limits(8, 200);
        l.idle_timeout = Duration::from_millis(400);
        let server = serve(l);
        let mut s = connect(server.local_addr());
        assert!(get_kept(&mut s).starts_with("HTTP/1.1 200"));
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(rest.is_empty());
        assert_eq!(
            server.admission().counters.timeouts.load(Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn a_response_not_taken_is_cut_at_the_response_timeout_not_the_idle_one() {
        let mut l = limits(8, 10_000);
        l.idle_timeout = Duration::from_secs(60);
        // Long enough to write 64 MiB to a reading client on a busy machine.
        l.response_timeout = Duration::from_millis(1500);
        let server = serve(l);
        let counters = &server.admission().counters;
        // Read at once: the whole answer, and the connection then idles
        // (kept alive) past the response timeout.
        let mut s = connect(server.local_addr());
        s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).unwrap(), 1);
            head.push(byte[0]);
        }
        let mut body = vec![0u8; BIG.len()];
        s.read_exact(&mut body).unwrap();
        std::thread::sleep(Duration::from_millis(2000));
        assert!(get_kept(&mut s).starts_with("HTTP/1.1 200"));
        assert_eq!(counters.timeouts.load(Ordering::Relaxed), 0);
        // Never read: hyper has queued the whole body long before it is
        // written; the connection is cut at the response timeout, not
        // kept for the idle one (60 s, past our 10 s read timeout).
        let mut s = connect(server.local_addr());
        s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(2500));
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("closed by the server");
        assert!(got.len() < BIG.len(), "the whole answer was sent");
        assert_eq!(counters.timeouts.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn stop_frees_the_port() {
        let mut server = serve(limits(4, 1000));
        let addr = server.local_addr();
        let idle = std::net::TcpStream::connect(addr).unwrap();
        server.stop();
        assert!(!server.running());
        let again = Listener::bind(addr).expect("port free after stop");
        drop(again);
        drop(idle);
    }
}
