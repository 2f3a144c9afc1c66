//! One client connection: HTTP/1.1 served by hyper, with a watchdog that closes it when
//! the client stalls, and the framing checks made before any handler (or any
//! `100 Continue`) runs.
//!
//! A connection is always in one [`Phase`]:
//!
//! - `Head`: waiting for a complete request head, since the connection was accepted
//!   (or since the first byte of the next request on a kept-alive connection); closed
//!   after `header_read_timeout` (slowloris: one header line at a time).
//! - `Idle`: between requests on a kept-alive connection; closed after `idle_timeout`.
//! - `Busy`: a request is being handled. Handlers bound their own time (the request
//!   timeout); once the response is being written, a client that stops reading it
//!   for `idle_timeout` is closed.
//!
//! The phase moves on what the socket and the service see: the first byte read while
//! idle starts a head, the service call starts a request, and the response body being
//! dropped (hyper drops it once written) ends it.
//!
//! Framing, checked before the router: a request whose head carried both
//! `Content-Length` and `Transfer-Encoding` gets 400 (hyper itself would drop the
//! `Content-Length`, decode the body as chunked and close the connection afterwards,
//! so the head as sent is inspected: the bytes read in the `Head` phase are kept, at
//! most [`MAX_HEAD_BYTES`], and parsed again only for such a request), and a
//! `Content-Length` above the body limit gets 413 at once, without reading the body
//! or sending `100 Continue`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response};
use axum::response::IntoResponse;
use axum::Router;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tower::ServiceExt;

use super::error::ApiError;

/// Largest request head (request line and headers) accepted, in bytes; hyper answers
/// 431 beyond it. Also the most kept per connection for the framing check.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The connection's timeouts and the body limit its framing check uses.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time to send a complete request head.
    pub header_read_timeout: Duration,
    /// Time a kept-alive connection may wait between requests, and a response may go
    /// unread without progress.
    pub idle_timeout: Duration,
    /// Largest request body, in bytes.
    pub body_limit: usize,
}

/// Where a connection is in its request cycle (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a complete request head since `since`.
    Head { since: Instant },
    /// Between requests since `since`.
    Idle { since: Instant },
    /// A request is being handled; `responding` once its response is being written.
    Busy { responding: bool },
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// No complete request head within `header_read_timeout`.
    HeaderTimeout,
    /// Idle between requests for `idle_timeout`.
    Idle,
    /// A response left unread for `idle_timeout`.
    WriteStalled,
}

#[derive(Debug)]
struct Shared {
    phase: Phase,
    /// Requests handed to the service whose response body is not yet dropped (one,
    /// with HTTP/1.1; counted so an early drop cannot end another request).
    in_flight: usize,
    /// Last time a write made progress.
    last_write: Instant,
    /// Bytes read in the `Head` phase since the last request (at most
    /// [`MAX_HEAD_BYTES`]).
    head: Vec<u8>,
}

/// The state the socket wrapper, the service and the watchdog share.
#[derive(Debug)]
struct ConnState {
    shared: Mutex<Shared>,
    /// Signalled on every phase change, so the watchdog recomputes its deadline.
    changed: Notify,
}

impl ConnState {
    fn new(now: Instant) -> Self {
        Self {
            shared: Mutex::new(Shared {
                phase: Phase::Head { since: now },
                in_flight: 0,
                last_write: now,
                head: Vec::new(),
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes arrived from the client.
    fn on_read(&self, bytes: &[u8], now: Instant) {
        let mut s = self.lock();
        if let Phase::Idle { .. } = s.phase {
            s.phase = Phase::Head { since: now };
            self.changed.notify_one();
        }
        if let Phase::Head { .. } = s.phase {
            let room = MAX_HEAD_BYTES.saturating_sub(s.head.len());
            s.head.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }

    /// A write made progress.
    fn on_write(&self, now: Instant) {
        self.lock().last_write = now;
    }

    /// The service was called: returns the head bytes read for this request.
    fn begin_request(&self) -> Vec<u8> {
        let mut s = self.lock();
        s.in_flight += 1;
        s.phase = Phase::Busy { responding: false };
        self.changed.notify_one();
        std::mem::take(&mut s.head)
    }

    /// The response is ready and is about to be written.
    fn begin_response(&self, now: Instant) {
        let mut s = self.lock();
        s.phase = Phase::Busy { responding: true };
        s.last_write = now;
        self.changed.notify_one();
    }

    /// The response body was dropped (written, or the connection is going away).
    fn end_request(&self, now: Instant) {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight == 0 {
            s.phase = Phase::Idle { since: now };
            self.changed.notify_one();
        }
    }

    fn is_busy(&self) -> bool {
        matches!(self.lock().phase, Phase::Busy { .. })
    }

    /// When the current phase times out, and why (`None`: a handler is running).
    fn deadline(&self, limits: &ConnectionLimits) -> Option<(Instant, Closed)> {
        let s = self.lock();
        match s.phase {
            Phase::Head { since } => {
                Some((since + limits.header_read_timeout, Closed::HeaderTimeout))
            }
            Phase::Idle { since } => Some((since + limits.idle_timeout, Closed::Idle)),
            Phase::Busy { responding: true } => {
                Some((s.last_write + limits.idle_timeout, Closed::WriteStalled))
            }
            Phase::Busy { responding: false } => None,
        }
    }
}

/// The socket, reporting reads and writes to the connection's state.
#[derive(Debug)]
struct ConnIo {
    inner: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                this.state.on_read(new, Instant::now());
            }
        }
        r
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                this.state.on_write(Instant::now());
            }
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                this.state.on_write(Instant::now());
            }
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A response body that ends its request (in the connection's state) when dropped.
#[derive(Debug)]
pub struct TrackedBody {
    inner: Body,
    state: Arc<ConnState>,
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.state.end_request(Instant::now());
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The per-connection service: framing checks, then the router.
#[derive(Debug, Clone)]
struct ConnService {
    router: Router,
    state: Arc<ConnState>,
    body_limit: usize,
}

type BoxedResponse =
    Pin<Box<dyn Future<Output = Result<Response<TrackedBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = BoxedResponse;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let head = self.state.begin_request();
        let refusal = framing_error(&req, &head, self.body_limit);
        let router = self.router.clone();
        let state = self.state.clone();
        Box::pin(async move {
            let response = match refusal {
                Some(e) => {
                    // The body is left unread: the connection cannot be reused.
                    let mut r = e.into_response();
                    r.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    r
                }
                None => match router.oneshot(req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                },
            };
            state.begin_response(Instant::now());
            Ok(response.map(|inner| TrackedBody { inner, state }))
        })
    }
}

/// The framing error of a request, if any: both `Content-Length` and
/// `Transfer-Encoding` in the head as sent (`head`, the raw bytes), or a
/// `Content-Length` above `body_limit`.
fn framing_error<B>(req: &Request<B>, head: &[u8], body_limit: usize) -> Option<ApiError> {
    let headers = req.headers();
    if headers.contains_key(header::TRANSFER_ENCODING) && sent_content_length(req, head) {
        return Some(ApiError::MalformedBody(
            "the request carries both Content-Length and Transfer-Encoding; send exactly \
             one of them"
                .into(),
        ));
    }
    // hyper has already refused an unparseable or conflicting Content-Length.
    let claimed = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match claimed {
        Some(n) if n > body_limit as u64 => Some(ApiError::BodyTooLarge(body_limit)),
        _ => None,
    }
}

/// Whether the raw `head` is this request's head and has a `Content-Length` header
/// (hyper removes it from a request that also has `Transfer-Encoding`).
fn sent_content_length<B>(req: &Request<B>, head: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut parsed = httparse::Request::new(&mut headers);
    if !matches!(parsed.parse(head), Ok(httparse::Status::Complete(_))) {
        return false;
    }
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().to_string(), |p| p.as_str().to_owned());
    if parsed.method != Some(req.method().as_str()) || parsed.path != Some(target.as_str()) {
        return false;
    }
    parsed
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("content-length"))
}

/// Serves one accepted connection until it ends, the watchdog closes it, or shutdown
/// (`stop` turning true) closes it: at once if no request is in flight, otherwise
/// after the response to the request in flight. Returns why the watchdog closed it.
pub async fn serve(
    stream: TcpStream,
    router: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) -> Option<Closed> {
    let state = Arc::new(ConnState::new(Instant::now()));
    let io = TokioIo::new(ConnIo {
        inner: stream,
        state: state.clone(),
    });
    let service = ConnService {
        router,
        state: state.clone(),
        body_limit: limits.body_limit,
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_header_size(MAX_HEAD_BYTES)
        // The watchdog times heads; hyper's own timer would also count idle time.
        .header_read_timeout(None::<Duration>);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        if stopping && !state.is_busy() {
            return None;
        }
        let deadline = state.deadline(&limits);
        let changed = state.changed.notified();
        let sleep = async {
            match deadline {
                Some((at, _)) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return None;
            }
            () = sleep => {
                // The phase may have moved on since the deadline was computed.
                if let Some((at, why)) = state.deadline(&limits) {
                    if Instant::now() >= at {
                        tracing::debug!(reason = ?why, "closing a stalled connection");
                        return Some(why);
                    }
                }
            }
            () = changed => {}
            _ = stop.changed(), if !stopping => {
                // A dropped sender also means the server is going away.
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn request(raw: &[u8]) -> Request<()> {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut p = httparse::Request::new(&mut headers);
        p.parse(raw).unwrap();
        let mut b = Request::builder()
            .method(p.method.unwrap())
            .uri(p.path.unwrap());
        for h in p.headers.iter() {
            // What hyper hands over: no Content-Length beside Transfer-Encoding.
            if h.name.eq_ignore_ascii_case("content-length")
                && p.headers
                    .iter()
                    .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
            {
                continue;
            }
            b = b.header(h.name, h.value);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn both_framing_headers_are_found_in_the_raw_head_in_either_order() {
        for raw in [
            &b"POST /v1/x?a=1 HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            &b"POST /v1/x?a=1 HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n"[..],
        ] {
            let req = request(raw);
            let e = framing_error(&req, raw, 1 << 20).unwrap();
            assert_eq!(e.code(), "malformed_body");
            let msg = e.to_string();
            assert!(msg.contains("Content-Length") && msg.contains("Transfer-Encoding"));
        }
    }

    #[test]
    fn a_chunked_request_alone_or_a_head_of_another_request_is_not_refused() {
        let raw = b"POST /v1/x HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(framing_error(&request(raw), raw, 1 << 20).is_none());
        // A captured head that is not this request's (e.g. a pipelined one).
        let other =
            b"POST /v1/y HTTP/1.1\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(framing_error(&request(raw), other, 1 << 20).is_none());
        // An incomplete capture.
        assert!(framing_error(&request(raw), &other[..20], 1 << 20).is_none());
    }

    #[test]
    fn a_content_length_over_the_body_limit_is_refused_and_the_limit_itself_is_not() {
        let raw = b"POST /v1/x HTTP/1.1\r\ncontent-length: 1025\r\n\r\n";
        let e = framing_error(&request(raw), raw, 1024).unwrap();
        assert_eq!(e.code(), "body_too_large");
        assert!(e.to_string().contains("1024"));
        let raw = b"POST /v1/x HTTP/1.1\r\ncontent-length: 1024\r\n\r\n";
        assert!(framing_error(&request(raw), raw, 1024).is_none());
    }

    #[test]
    fn the_phase_follows_reads_requests_and_responses() {
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(7),
            body_limit: 1024,
        };
        let t0 = Instant::now();
        let s = ConnState::new(t0);
        assert_eq!(
            s.deadline(&limits),
            Some((t0 + Duration::from_secs(3), Closed::HeaderTimeout))
        );
        s.on_read(b"GET / HTTP/1.1\r\n", t0 + Duration::from_secs(1));
        // Still the first head: its clock started at accept.
        assert_eq!(s.deadline(&limits).unwrap().0, t0 + Duration::from_secs(3));
        assert_eq!(s.begin_request(), b"GET / HTTP/1.1\r\n");
        assert_eq!(s.deadline(&limits), None);
        s.begin_response(t0 + Duration::from_secs(2));
        assert_eq!(
            s.deadline(&limits),
            Some((t0 + Duration::from_secs(9), Closed::WriteStalled))
        );
        s.on_write(t0 + Duration::from_secs(4));
        assert_eq!(s.deadline(&limits).unwrap().0, t0 + Duration::from_secs(11));
        s.end_request(t0 + Duration::from_secs(5));
        assert_eq!(
            s.deadline(&limits),
            Some((t0 + Duration::from_secs(12), Closed::Idle))
        );
        s.on_read(b"G", t0 + Duration::from_secs(6));
        assert_eq!(
            s.deadline(&limits),
            Some((t0 + Duration::from_secs(9), Closed::HeaderTimeout))
        );
    }

    #[test]
    fn the_kept_head_is_bounded() {
        let s = ConnState::new(Instant::now());
        let chunk = vec![b'a'; 40 * 1024];
        s.on_read(&chunk, Instant::now());
        s.on_read(&chunk, Instant::now());
        assert_eq!(s.begin_request().len(), MAX_HEAD_BYTES);
    }
}
