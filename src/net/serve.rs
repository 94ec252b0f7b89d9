//! Serves a router on a listener with the limits `axum::serve` does not set
//! ([`Limits`]):
//!
//! * every connection is closed after [`IDLE_TIMEOUT`] without a byte read or
//!   written (a client that connects and sends nothing, stops reading a response,
//!   or keeps an unused connection open);
//! * a request's headers, and a TLS handshake, must be complete within
//!   [`HEADER_DEADLINE`] however slowly they trickle in;
//! * each listener holds at most a set number of connections, never more than half
//!   the process's file descriptors beyond a reserve, so a flood of connections
//!   cannot take the descriptors the collectors need; further connections wait in
//!   the kernel's queue, and an `accept` that fails (out of descriptors) backs off.
//!
//! (Prometheus simply reconnects.) On shutdown, connections finish their request
//! in flight and close; the caller bounds how long that may take.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::tls::ServerTls;

/// Longest time a connection may go without any byte read or written.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a client may take to send a request's headers, from its first byte, or
/// to finish a TLS handshake: a client that trickles them is cut off.
pub const HEADER_DEADLINE: Duration = Duration::from_secs(10);
/// File descriptors kept out of every listener's reach, for collectors, config
/// writes, child processes and outbound connections.
pub const RESERVED_FDS: u64 = 64;

/// Connections each listener holds at once (before the file-descriptor cap).
pub const METRICS_CONNECTIONS: usize = 128;
pub const API_CONNECTIONS: usize = 32;
pub const CONFIG_SERVER_CONNECTIONS: usize = 512;
pub const HUB_API_CONNECTIONS: usize = 128;
/// Plugs connected to one hub (each holds its socket open).
pub const PLUG_CONNECTIONS: usize = 20_000;

/// What one listener allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// See [`IDLE_TIMEOUT`].
    pub idle: Duration,
    /// See [`HEADER_DEADLINE`].
    pub header: Duration,
    /// Connections open at once; further ones wait in the kernel's queue until
    /// one closes.
    pub connections: usize,
}

impl Limits {
    /// At most `connections` at once, and never more than half of the process's
    /// file descriptors beyond [`RESERVED_FDS`], so connections alone cannot
    /// exhaust them.
    pub fn new(connections: usize) -> Limits {
        Limits {
            idle: IDLE_TIMEOUT,
            header: HEADER_DEADLINE,
            connections: connections.min(fd_budget()).max(1),
        }
    }
}

/// Half of the descriptors this process may open beyond the reserve.
fn fd_budget() -> usize {
    use nix::sys::resource::{Resource, getrlimit};
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    (soft.saturating_sub(RESERVED_FDS) / 2).max(4) as usize
}

/// Raises the soft limit of open files to the hard one (as Go programs do at
/// start): a hub with thousands of plugs needs them, and the listeners' caps follow
/// the limit.
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::debug!(error = %e, "could not raise the open-files limit");
    }
}

/// Holds one of the listener's connection slots for as long as the connection
/// lives, also past an upgrade: a WebSocket handler keeps it with the socket
/// (it is in the upgrade request's extensions).
#[derive(Debug, Clone)]
pub struct ConnectionSlot(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

/// Accepts connections until `shutdown`, then lets open connections finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    limits: Limits,
) {
    serve_with(listener, router, shutdown, limits, None).await;
}

/// [`serve`] with HTTPS whenever `tls` holds a certificate (checked per
/// connection, so a reload can turn TLS on or off or change the certificate).
pub async fn serve_tls(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    tls: Arc<ServerTls>,
    limits: Limits,
) {
    serve_with(listener, router, shutdown, limits, Some(tls)).await;
}

pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    limits: Limits,
    tls: Option<Arc<ServerTls>>,
) {
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(limits.connections));
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header);
    let mut told_full = false;
    loop {
        // A free slot first: at the cap, new connections wait in the backlog.
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if !std::mem::replace(&mut told_full, true) {
                    tracing::warn!(
                        limit = limits.connections,
                        "connection limit reached; new connections wait until one closes"
                    );
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                }
            }
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if slots.available_permits() > limits.connections / 2 {
            told_full = false;
        }
        let _ = stream.set_nodelay(true);
        // The idle limit sits under TLS, so a stalled handshake is cut too.
        let stream = IdleTimeout::new(stream, limits.idle);
        let tls_config = tls.as_ref().and_then(|t| t.current());
        let (builder, shutdown) = (builder.clone(), shutdown.clone());
        let slot = ConnectionSlot(Arc::new(slot));
        let router = router.clone().layer(axum::Extension(slot));
        let handshake = limits.header;
        connections.spawn(async move {
            match tls_config {
                None => serve_connection(builder, stream, router, shutdown).await,
                Some(config) => {
                    let accept = TlsAcceptor::from(config).accept(stream);
                    match tokio::time::timeout(handshake, accept).await {
                        Ok(Ok(stream)) if stream.get_ref().1.alpn_protocol() == Some(b"h2") => {
                            serve_h2(stream, router, shutdown).await
                        }
                        Ok(Ok(stream)) => serve_connection(builder, stream, router, shutdown).await,
                        Ok(Err(e)) => {
                            HANDSHAKE_FAILURES.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            HANDSHAKE_FAILURES.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, "TLS handshake took too long");
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// TLS handshakes that failed (plain HTTP to the HTTPS port, untrusted client
/// certificates, scanners), for the self-telemetry.
pub static HANDSHAKE_FAILURES: AtomicU64 = AtomicU64::new(0);

async fn serve_connection<I>(
    builder: http1::Builder,
    io: I,
    router: Router,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    // Upgrades are allowed so the same loop serves the Shelly WebSocket endpoint
    // (an upgraded socket lives on in its own task; see `shelly::hub`).
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.cancelled() => {
            // Finish the request in flight, then close.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    // Errors here are per connection (a client that hung up or idled out).
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Streams one HTTP/2 client may have open at once.
pub const H2_STREAMS: u32 = 16;
/// Largest header block an HTTP/2 client may send (as the HTTP/1.1 side).
const H2_HEADER_LIST: u32 = 64 * 1024;

/// Serves an HTTP/2 connection (TLS with ALPN `h2`, which the web config's
/// `http2` offers): bounded streams and headers, the same idle limit beneath.
async fn serve_h2<I>(io: I, router: Router, shutdown: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_STREAMS)
        .max_header_list_size(H2_HEADER_LIST)
        .max_pending_accept_reset_streams(Some(H2_STREAMS as usize))
        .max_local_error_reset_streams(Some(H2_STREAMS as usize));
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP/2 connection ended with an error");
    }
}

/// An I/O stream that fails with `TimedOut` once it has been waiting on its peer
/// for `timeout` since the last byte moved in either direction.
#[derive(Debug)]
pub struct IdleTimeout<T> {
    inner: T,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<T> IdleTimeout<T> {
    pub fn new(inner: T, timeout: Duration) -> Self {
        IdleTimeout {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    fn progressed(&mut self) {
        let next = Instant::now() + self.timeout;
        self.deadline.as_mut().reset(next);
    }

    /// Called when the inner stream is pending: an error once the deadline passed.
    fn check(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle for too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.progressed();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.check(cx),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    self.progressed();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.check(cx).map(|r| r.map(|()| 0)),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn server(idle: Duration) -> (std::net::SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let shutdown = CancellationToken::new();
        tokio::spawn(serve_with(
            listener,
            router,
            shutdown.clone(),
            Limits {
                idle,
                header: idle * 2,
                connections: 64,
            },
            None,
        ));
        (addr, shutdown)
    }

    /// Reads until the server closes; the time that took.
    async fn time_to_close(stream: &mut tokio::net::TcpStream) -> Duration {
        let started = std::time::Instant::now();
        let mut buf = [0u8; 1024];
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
        }
        started.elapsed()
    }

    #[tokio::test]
    async fn silent_partial_and_idle_connections_are_closed() {
        let idle = Duration::from_millis(300);
        let (addr, shutdown) = server(idle).await;

        let mut silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
        assert!(time_to_close(&mut silent).await < Duration::from_secs(2));

        let mut partial = tokio::net::TcpStream::connect(addr).await.expect("connect");
        partial
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        assert!(time_to_close(&mut partial).await < Duration::from_secs(2));

        let mut kept = tokio::net::TcpStream::connect(addr).await.expect("connect");
        kept.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 256];
        let n = kept.read(&mut buf).await.expect("read");
        assert!(String::from_utf8_lossy(&buf[..n]).contains("200 OK"));
        assert!(time_to_close(&mut kept).await < Duration::from_secs(2));
        shutdown.cancel();
    }
}
