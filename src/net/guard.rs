//! Connections under guard: a cap on how many a listener holds, and timeouts on what each
//! one may hold without working for it. Both the HTTP API (`service::listen`) and the
//! worker port (`worker::gateway`) accept through a [`GuardedListener`].
//!
//! - **The cap.** A connection past [`GuardedListener`]'s cap is answered at once (the
//!   HTTP API writes a 503 `TOO_MANY_CONNECTIONS`; the worker port closes it) and closed:
//!   it never reaches a handler, and never costs the journal a descriptor.
//! - **The timeouts** ([`Activity::expires_at`]): a whole request head within the
//!   header-read time (from the accept for the first request, from its first byte for
//!   each later one); a request carrying an accepted token within the header-read time of
//!   the accept (a peer without a token cannot keep a socket by sending requests that are
//!   refused); and no more than the idle time without a request in flight. A connection
//!   past its time is closed by its own read failing with `TimedOut`: no task watches
//!   connections, the [`Guarded`] socket arms one timer for its next deadline.
//! - **Requests in flight** are counted per connection by [`Connection::request_started`]
//!   (a middleware on the API, a tower layer on the worker port) until the response's body
//!   ends: a long poll, a `?wait` or an event stream is never idle.
//!
//! The decision is [`Activity::expires_at`], pure; the rest is plumbing around it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{Request, Response};
use futures::future::BoxFuture;
use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

use crate::runtime::guardrails::connections::ConnectionLimits;

/// Where a connection came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// A TCP listener at this address.
    Tcp(SocketAddr),
    /// A Unix socket (only this host's users reach it).
    Unix,
}

/// The timeouts of one listener's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// For a whole request head, and for a first request with an accepted token.
    pub header_read: Duration,
    /// Without a request in flight, after the last one.
    pub idle: Duration,
}

impl From<&ConnectionLimits> for Timeouts {
    fn from(limits: &ConnectionLimits) -> Timeouts {
        Timeouts {
            header_read: limits.header_read_timeout,
            idle: limits.idle_timeout,
        }
    }
}

/// What the expiry rule reads of a connection; times in milliseconds since its accept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Activity {
    /// A request with an accepted token came (always, on a listener without tokens).
    pub authenticated: bool,
    /// Requests whose response has not ended.
    pub in_flight: u32,
    /// Requests started so far.
    pub requests: u64,
    /// When the last request started or ended.
    pub last_change: u64,
    /// When the first byte came with no request in flight and none started since: a
    /// request head is on its way.
    pub head_started: Option<u64>,
}

impl Activity {
    /// When the connection is to be closed, in milliseconds since its accept; `None`
    /// while an authenticated request is in flight.
    pub fn expires_at(&self, t: Timeouts) -> Option<u64> {
        let header = millis(t.header_read);
        let mut at: Option<u64> = None;
        let mut earliest = |v: u64| at = Some(at.map_or(v, |a| a.min(v)));
        if !self.authenticated {
            earliest(header);
        }
        if self.in_flight == 0 {
            if self.requests == 0 {
                earliest(header);
            } else {
                earliest(self.last_change.saturating_add(millis(t.idle)));
            }
            if let Some(started) = self.head_started {
                earliest(started.saturating_add(header));
            }
        }
        at
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One connection's state, shared by its socket, the requests it carries and the
/// handlers that read where it came from.
#[derive(Debug)]
pub struct Connection {
    born: Instant,
    local: Local,
    timeouts: Timeouts,
    activity: Mutex<Activity>,
    /// The socket's reader, woken when a request ends (its deadline comes back).
    reader: AtomicWaker,
}

impl Connection {
    fn new(local: Local, timeouts: Timeouts, open: bool) -> Connection {
        Connection {
            born: Instant::now(),
            local,
            timeouts,
            activity: Mutex::new(Activity {
                authenticated: open,
                ..Activity::default()
            }),
            reader: AtomicWaker::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Activity> {
        // Plain counters: a panic under the lock leaves them usable.
        self.activity.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> u64 {
        millis(self.born.elapsed())
    }

    /// Where the connection came in.
    pub fn local(&self) -> Local {
        self.local
    }

    /// A request on this connection carried an accepted token.
    pub fn authenticated(&self) {
        self.lock().authenticated = true;
    }

    /// A request started: the connection is busy until the guard (held by the response's
    /// body) is dropped.
    pub fn request_started(self: &Arc<Self>) -> RequestGuard {
        let now = self.now();
        let mut a = self.lock();
        a.in_flight += 1;
        a.requests += 1;
        a.last_change = now;
        a.head_started = None;
        RequestGuard(self.clone())
    }

    fn request_ended(&self) {
        let now = self.now();
        let mut a = self.lock();
        a.in_flight = a.in_flight.saturating_sub(1);
        a.last_change = now;
        drop(a);
        self.reader.wake();
    }

    fn bytes_read(&self) {
        let now = self.now();
        let mut a = self.lock();
        if a.in_flight == 0 && a.head_started.is_none() {
            a.head_started = Some(now);
        }
    }

    /// When the connection is to be closed, if it is.
    fn deadline(&self) -> Option<Instant> {
        let at = self.lock().expires_at(self.timeouts)?;
        Some(self.born + Duration::from_millis(at))
    }
}

/// A request in flight on its connection; dropped when the response's body ends.
#[derive(Debug)]
pub struct RequestGuard(Arc<Connection>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// What a handler learns of the connection a request came on (axum's `ConnectInfo`, the
/// worker port's request extension).
#[derive(Debug, Clone)]
pub struct ConnMeta(pub Arc<Connection>);

/// A socket under guard: holds its listener's slot until dropped, and fails its read with
/// `TimedOut` once past its deadline ([`Activity::expires_at`]).
#[derive(Debug)]
pub struct Guarded<Io> {
    io: Io,
    conn: Arc<Connection>,
    timer: Pin<Box<Sleep>>,
    armed: Option<Instant>,
    _slot: OwnedSemaphorePermit,
}

impl<Io> Guarded<Io> {
    /// `Pending` until the deadline, then the error that closes the connection. The
    /// reader's waker is kept so that the end of a request re-arms the timer.
    fn poll_expiry(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.conn.reader.register(cx.waker());
        loop {
            let Some(deadline) = self.conn.deadline() else {
                self.armed = None;
                return Poll::Pending;
            };
            if Instant::now() >= deadline {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection closed: past its header-read or idle timeout",
                )));
            }
            if self.armed != Some(deadline) {
                self.timer.as_mut().reset(deadline);
                self.armed = Some(deadline);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for Guarded<Io> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.conn.bytes_read();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_expiry(cx),
        }
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Guarded<Io> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// A listener's raw accept, below the guard.
pub trait RawListener: Send + Sync + 'static {
    /// Its sockets.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Accepts one connection, with the peer's address when it has one.
    fn accept_raw(
        &mut self,
    ) -> impl Future<Output = io::Result<(Self::Io, Option<SocketAddr>)>> + Send;

    /// Writes what fits of `answer` without waiting (a refused connection's last words).
    fn try_answer(io: &Self::Io, answer: &[u8]);

    /// Where it listens.
    fn local(&self) -> Local;
}

impl RawListener for TcpListener {
    type Io = TcpStream;

    async fn accept_raw(&mut self) -> io::Result<(TcpStream, Option<SocketAddr>)> {
        let (stream, peer) = self.accept().await?;
        // Requests and answers are small messages a round trip waits for.
        stream.set_nodelay(true)?;
        Ok((stream, Some(peer)))
    }

    fn try_answer(io: &TcpStream, answer: &[u8]) {
        // A refused peer that does not read gets nothing: it is closed either way.
        let _ = io.try_write(answer);
    }

    fn local(&self) -> Local {
        self.local_addr().map_or(Local::Unix, Local::Tcp)
    }
}

impl RawListener for UnixListener {
    type Io = UnixStream;

    async fn accept_raw(&mut self) -> io::Result<(UnixStream, Option<SocketAddr>)> {
        let (stream, _) = self.accept().await?;
        Ok((stream, None))
    }

    fn try_answer(io: &UnixStream, answer: &[u8]) {
        // As for TCP.
        let _ = io.try_write(answer);
    }

    fn local(&self) -> Local {
        Local::Unix
    }
}

/// The slots of one listener, or of several that share a cap (the API's listeners).
#[derive(Debug, Clone)]
pub struct Slots {
    free: Arc<Semaphore>,
    cap: usize,
}

impl Slots {
    /// `cap` connections at once.
    pub fn new(cap: usize) -> Slots {
        Slots {
            free: Arc::new(Semaphore::new(cap)),
            cap,
        }
    }
}

/// A listener that accepts under a cap and hands out [`Guarded`] sockets.
#[derive(Debug)]
pub struct GuardedListener<L> {
    inner: L,
    slots: Slots,
    timeouts: Timeouts,
    /// No token is needed here: every connection counts as authenticated.
    open: bool,
    /// Written to a connection refused for the cap (nothing: it is just closed).
    refusal: &'static [u8],
    /// When an accept error was last reported (they are reported once a second at most).
    reported: Option<Instant>,
}

impl<L: RawListener> GuardedListener<L> {
    /// Guards `inner` with `slots` and `timeouts`; `open` when the listener takes no token.
    pub fn new(inner: L, slots: Slots, timeouts: Timeouts, open: bool) -> GuardedListener<L> {
        GuardedListener {
            inner,
            slots,
            timeouts,
            open,
            refusal: b"",
            reported: None,
        }
    }

    /// Refused connections get `answer` before they are closed.
    pub fn refusing_with(mut self, answer: &'static [u8]) -> GuardedListener<L> {
        self.refusal = answer;
        self
    }

    /// The next connection within the cap. Connections past it are answered and closed
    /// here; accept errors are retried (after a pause, when the process is out of
    /// descriptors or memory: retrying at once would spin).
    pub async fn accept_guarded(&mut self) -> (Guarded<L::Io>, Option<SocketAddr>) {
        loop {
            let (io, peer) = match self.inner.accept_raw().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    self.accept_failed(&e).await;
                    continue;
                }
            };
            let Ok(slot) = self.slots.free.clone().try_acquire_owned() else {
                L::try_answer(&io, self.refusal);
                tracing::debug!(target: "shipsec::net", cap = self.slots.cap, ?peer, "connection refused: the cap is reached");
                continue;
            };
            let conn = Arc::new(Connection::new(
                self.inner.local(),
                self.timeouts,
                self.open,
            ));
            let guarded = Guarded {
                io,
                conn,
                timer: Box::pin(tokio::time::sleep_until(Instant::now())),
                armed: None,
                _slot: slot,
            };
            return (guarded, peer);
        }
    }

    async fn accept_failed(&mut self, e: &io::Error) {
        let exhausted = matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        );
        let now = Instant::now();
        if self
            .reported
            .is_none_or(|last| now - last >= Duration::from_secs(1))
        {
            self.reported = Some(now);
            tracing::warn!(target: "shipsec::net", error = %e, "accepting a connection failed");
        }
        if exhausted {
            // Out of descriptors or memory: wait for some to come back, instead of
            // spinning on an accept that fails at once.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl<L: RawListener> axum::serve::Listener for GuardedListener<L> {
    type Io = Guarded<L::Io>;
    type Addr = Option<SocketAddr>;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.accept_guarded().await
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(match self.inner.local() {
            Local::Tcp(addr) => Some(addr),
            Local::Unix => None,
        })
    }
}

impl<L: RawListener>
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, GuardedListener<L>>>
    for ConnMeta
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, GuardedListener<L>>) -> ConnMeta {
        ConnMeta(stream.io().conn.clone())
    }
}

impl<Io> tonic::transport::server::Connected for Guarded<Io> {
    type ConnectInfo = ConnMeta;

    fn connect_info(&self) -> ConnMeta {
        ConnMeta(self.conn.clone())
    }
}

/// A response body that holds its request's [`RequestGuard`] until it ends.
#[derive(Debug)]
pub struct Tracked<B> {
    inner: B,
    _guard: Option<RequestGuard>,
}

impl<B> Tracked<B> {
    /// `inner`, holding `guard` until it ends or is dropped.
    pub fn new(inner: B, guard: Option<RequestGuard>) -> Tracked<B> {
        Tracked {
            inner,
            _guard: guard,
        }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Counts each request on its connection until its response's body ends, so that a long
/// poll, a `?wait` or an event stream is never taken for an idle connection. Both ports
/// put it outermost.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackLayer;

impl<S> Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track(inner)
    }
}

/// [`TrackLayer`]'s service.
#[derive(Debug, Clone)]
pub struct Track<S>(S);

impl<S, B, R> Service<Request<B>> for Track<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Tracked<R>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Tracked<R>>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let guard = connection_of(&request).map(|c| c.request_started());
        let answer = self.0.call(request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| Tracked::new(body, guard)))
        })
    }
}

/// The connection a request came on, from the extension its server put there: axum's
/// `ConnectInfo`, or the worker port's (plain or under TLS).
pub fn connection_of<B>(request: &axum::http::Request<B>) -> Option<&Arc<Connection>> {
    let ext = request.extensions();
    ext.get::<axum::extract::ConnectInfo<ConnMeta>>()
        .map(|c| &c.0.0)
        .or_else(|| ext.get::<ConnMeta>().map(|c| &c.0))
        .or_else(|| {
            ext.get::<tonic::transport::server::TlsConnectInfo<ConnMeta>>()
                .map(|c| &c.get_ref().0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        header_read: Duration::from_secs(10),
        idle: Duration::from_secs(60),
    };

    fn authenticated() -> Activity {
        Activity {
            authenticated: true,
            ..Activity::default()
        }
    }

    #[test]
    fn a_new_connection_has_the_header_read_time_for_its_first_request() {
        assert_eq!(authenticated().expires_at(T), Some(10_000));
        let unauthenticated = Activity::default();
        assert_eq!(unauthenticated.expires_at(T), Some(10_000));
    }

    #[test]
    fn a_request_in_flight_holds_an_authenticated_connection_open() {
        let busy = Activity {
            in_flight: 1,
            requests: 1,
            last_change: 5_000,
            ..authenticated()
        };
        assert_eq!(busy.expires_at(T), None);
    }

    #[test]
    fn requests_without_an_accepted_token_do_not_keep_a_connection() {
        let refused_again_and_again = Activity {
            authenticated: false,
            in_flight: 1,
            requests: 40,
            last_change: 9_000,
            head_started: None,
        };
        assert_eq!(refused_again_and_again.expires_at(T), Some(10_000));
    }

    #[test]
    fn an_idle_connection_closes_its_idle_time_after_its_last_request() {
        let idle = Activity {
            requests: 3,
            last_change: 20_000,
            ..authenticated()
        };
        assert_eq!(idle.expires_at(T), Some(80_000));
    }

    #[test]
    fn a_head_that_trickles_in_closes_at_the_header_read_time_from_its_first_byte() {
        let trickling = Activity {
            requests: 3,
            last_change: 20_000,
            head_started: Some(25_000),
            ..authenticated()
        };
        assert_eq!(trickling.expires_at(T), Some(35_000));
    }
}
