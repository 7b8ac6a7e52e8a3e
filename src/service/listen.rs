//! Where a server listens: `HOST:PORT` (TCP) or `unix:/path/to.sock`, several at once,
//! each stopped gracefully (no new connection, requests in flight finished), every
//! connection accepted under one cap and its timeouts ([`Guard`], `crate::net::guard`).

use std::future::{Future, IntoFuture};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::LazyLock;

use axum::Router;
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

use crate::net::guard::{ConnMeta, GuardedListener, RawListener, Slots, Timeouts};

/// An address to listen on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket's path.
    Unix(PathBuf),
}

/// Errors of listening.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The address does not read as `HOST:PORT` or `unix:PATH`.
    #[error("`{0}` is not an address to listen on (HOST:PORT or unix:/path/to.sock)")]
    BadAddress(String),
    /// The address cannot be listened on.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

impl FromStr for ListenAddr {
    type Err = ListenError;

    fn from_str(text: &str) -> Result<ListenAddr, ListenError> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(ListenError::BadAddress(text.to_owned()));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        text.to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .map(ListenAddr::Tcp)
            .ok_or_else(|| ListenError::BadAddress(text.to_owned()))
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "http://{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl ListenAddr {
    /// Whether only this host can connect: a loopback address or a Unix socket.
    pub fn is_local(&self) -> bool {
        match self {
            ListenAddr::Tcp(addr) => addr.ip().is_loopback(),
            ListenAddr::Unix(_) => true,
        }
    }
}

/// The host of `host[:port]` (an IPv6 literal keeps its brackets).
pub fn host_part(host: &str) -> &str {
    let host = host.trim();
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// A bound listener.
#[derive(Debug)]
pub enum Bound {
    /// TCP.
    Tcp(TcpListener),
    /// A Unix socket, removed when the server stops.
    Unix(UnixListener, PathBuf),
}

impl Bound {
    /// Binds `addr`. A Unix socket file left by a server that died is replaced; any other
    /// file at the path is an error.
    ///
    /// # Errors
    /// [`ListenError::Bind`].
    pub async fn bind(addr: &ListenAddr) -> Result<Bound, ListenError> {
        let failed = |source| ListenError::Bind {
            addr: addr.to_string(),
            source,
        };
        match addr {
            ListenAddr::Tcp(a) => TcpListener::bind(a).await.map(Bound::Tcp).map_err(failed),
            ListenAddr::Unix(path) => {
                remove_stale_socket(path).map_err(failed)?;
                UnixListener::bind(path)
                    .map(|l| Bound::Unix(l, path.clone()))
                    .map_err(failed)
            }
        }
    }

    /// Where it listens (the port the system chose for `:0`).
    pub fn local_addr(&self) -> ListenAddr {
        match self {
            Bound::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| ListenAddr::Unix(PathBuf::new()), ListenAddr::Tcp),
            Bound::Unix(_, path) => ListenAddr::Unix(path.clone()),
        }
    }
}

/// A socket file nobody listens on any more (its server died) is removed.
fn remove_stale_socket(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "a server is listening on this socket already",
                ));
            }
            std::fs::remove_file(path)
        }
        _ => Ok(()),
    }
}

/// How the API's listeners hold their connections: one cap for all of them together,
/// and the header-read and idle timeouts (`crate::net::guard`).
#[derive(Debug, Clone)]
pub struct Guard {
    /// The connections all the listeners may hold at once.
    pub slots: Slots,
    /// The timeouts of each connection.
    pub timeouts: Timeouts,
    /// The server takes no token: every connection counts as authenticated.
    pub open: bool,
}

impl Guard {
    /// `listener` under this guard; refused connections get a 503.
    fn listener<L: RawListener>(&self, listener: L) -> GuardedListener<L> {
        GuardedListener::new(listener, self.slots.clone(), self.timeouts, self.open)
            .refusing_with(&REFUSAL)
    }
}

/// What a connection past the cap is told before it is closed.
static REFUSAL: LazyLock<Box<[u8]>> = LazyLock::new(|| {
    let body = r#"{"error":{"code":"TOO_MANY_CONNECTIONS","message":"this server holds as many connections as it takes (service.connections.maxConnections); try again shortly"}}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
    .into_boxed_slice()
});

/// Serves `router` on every listener until `stop` is cancelled, then finishes the
/// requests in flight (event streams end when `stop` is cancelled) and returns. Every
/// connection is accepted under `guard`.
///
/// # Errors
/// An accept loop's I/O error.
pub async fn serve(
    router: Router,
    listeners: Vec<Bound>,
    guard: Guard,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let mut servers = tokio::task::JoinSet::new();
    for listener in listeners {
        let service = router
            .clone()
            .into_make_service_with_connect_info::<ConnMeta>();
        let stopped = stop.clone().cancelled_owned();
        match listener {
            Bound::Tcp(l) => {
                let server =
                    axum::serve(guard.listener(l), service).with_graceful_shutdown(stopped);
                servers.spawn(run(server.into_future(), None));
            }
            Bound::Unix(l, path) => {
                let server =
                    axum::serve(guard.listener(l), service).with_graceful_shutdown(stopped);
                servers.spawn(run(server.into_future(), Some(path)));
            }
        }
    }
    let mut outcome = Ok(());
    while let Some(done) = servers.join_next().await {
        if let Ok(Err(e)) = done {
            outcome = Err(e);
        }
    }
    outcome
}

async fn run(
    server: impl Future<Output = std::io::Result<()>>,
    socket: Option<PathBuf>,
) -> std::io::Result<()> {
    let outcome = server.await;
    if let Some(path) = socket {
        // Gone already is as good.
        let _ = std::fs::remove_file(path);
    }
    outcome
}
