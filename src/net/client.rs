//! The HTTP/1.1 client of every outbound request (config sync, remote write, Shelly
//! plugs and hub, `health`, `measure`).
//!
//! A [`Client`] keeps connections alive in a pool (per scheme and host, idle ones
//! closed after [`POOL_IDLE`]), so a device pushing every few seconds keeps one
//! connection rather than opening one per push; its rustls setup is shared by every
//! connection, so TLS sessions resume. Proxies come from `HTTPS_PROXY`, `HTTP_PROXY`,
//! `ALL_PROXY` and `NO_PROXY` (upper or lower case, curl's rules): `http://` requests
//! go to the proxy in absolute form, `https://` ones through a `CONNECT` tunnel, with
//! the proxy URL's user and password as Basic credentials.
//!
//! Every exchange, connecting, proxy tunnel and TLS handshake included, runs under
//! one time limit, and the answer's body is read up to a bound: a larger one is an
//! error, never a partial body.
//!
//! [`Client::shared`] is the process's client for `http://` and `https://` with the
//! system's roots (loaded on first use); a caller with its own TLS settings (a CA
//! file, a client certificate) makes one [`Client`] and keeps it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::tls::TlsClient;

/// Idle pooled connections are closed after this; under the 30 s our own servers
/// allow, so a reused connection is not one the server is closing.
pub const POOL_IDLE: Duration = Duration::from_secs(20);
/// Idle connections kept per host.
const POOL_PER_HOST: usize = 4;
/// The largest proxy answer to a `CONNECT` read.
const MAX_PROXY_ANSWER: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad URL {0:?}: {1}")]
    Url(String, String),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("no answer from {0} within {1:?}")]
    Timeout(String, Duration),
    #[error("HTTP exchange with {0} failed: {1}")]
    Http(String, String),
    #[error("the answer from {0} is larger than {1} bytes")]
    TooLarge(String, usize),
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// How `https://` connections are set up.
#[derive(Debug, Clone)]
enum Tls {
    Given(TlsClient),
    /// The system's roots, loaded when the first `https://` connection is made.
    System(Arc<OnceLock<Result<TlsClient, String>>>),
}

impl Tls {
    fn get(&self) -> Result<&TlsClient, String> {
        match self {
            Tls::Given(tls) => Ok(tls),
            Tls::System(cell) => cell
                .get_or_init(|| {
                    super::tls::client(&super::tls_policy::TlsClientConfig::default())
                        .map_err(|e| e.to_string())
                })
                .as_ref()
                .map_err(Clone::clone),
        }
    }
}

/// A pooled HTTP/1.1 client; cheap to clone (clones share the pool).
#[derive(Debug, Clone)]
pub struct Client {
    pool: hyper_util::client::legacy::Client<Connector, Full<Bytes>>,
    proxies: Arc<Matcher>,
}

impl Client {
    /// A client whose `https://` connections use `tls` (the system's roots when
    /// `None`).
    pub fn new(tls: Option<TlsClient>) -> Client {
        let tls = match tls {
            Some(tls) => Tls::Given(tls),
            None => Tls::System(Arc::default()),
        };
        Self::with(tls, Arc::new(Matcher::from_env()))
    }

    fn with(tls: Tls, proxies: Arc<Matcher>) -> Client {
        let connector = Connector {
            tls,
            proxies: proxies.clone(),
        };
        let pool = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(POOL_PER_HOST)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Client { pool, proxies }
    }

    /// The process's client: `http://`, and `https://` with the system's roots.
    pub fn shared() -> &'static Client {
        static SHARED: OnceLock<Client> = OnceLock::new();
        SHARED.get_or_init(|| Client::new(None))
    }

    /// `GET url` with `headers`, within `timeout`, reading at most `max_body` bytes.
    pub async fn get(
        &self,
        url: &str,
        headers: &[(HeaderName, String)],
        timeout: Duration,
        max_body: usize,
    ) -> Result<Response, ClientError> {
        self.request(Method::GET, url, headers, Bytes::new(), timeout, max_body)
            .await
    }

    /// `method url` with `headers` and `body`, within `timeout`, reading at most
    /// `max_body` bytes of the answer.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(HeaderName, String)],
        body: Bytes,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Response, ClientError> {
        match tokio::time::timeout(timeout, self.exchange(method, url, headers, body, max_body))
            .await
        {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout(url.to_owned(), timeout)),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        url: &str,
        headers: &[(HeaderName, String)],
        body: Bytes,
        max_body: usize,
    ) -> Result<Response, ClientError> {
        let uri = parse_url(url)?;
        let mut request = Request::builder()
            .method(method)
            .uri(uri.clone())
            .header(
                hyper::header::USER_AGENT,
                concat!("edge-metrics-exporter/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body))
            .map_err(|e| ClientError::Http(url.to_owned(), e.to_string()))?;
        for (name, value) in headers {
            let value = HeaderValue::from_str(value)
                .map_err(|e| ClientError::Http(url.to_owned(), e.to_string()))?;
            request.headers_mut().insert(name.clone(), value);
        }
        // A plain request through a proxy carries the proxy's credentials; a tunnel
        // carries them in its CONNECT.
        if uri.scheme_str() == Some("http")
            && let Some(auth) = self
                .proxies
                .intercept(&uri)
                .and_then(|i| i.basic_auth().cloned())
        {
            request
                .headers_mut()
                .insert(hyper::header::PROXY_AUTHORIZATION, auth);
        }
        let response = self.pool.request(request).await.map_err(|e| {
            use std::error::Error as _;
            let mut message = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                message = format!("{message}: {s}");
                source = s.source();
            }
            if e.is_connect() {
                let place = uri.authority().map_or(url, |a| a.as_str()).to_owned();
                ClientError::Connect(place, std::io::Error::other(message))
            } else {
                ClientError::Http(url.to_owned(), message)
            }
        })?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = Limited::new(response.into_body(), max_body)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    ClientError::TooLarge(url.to_owned(), max_body)
                } else {
                    ClientError::Http(url.to_owned(), e.to_string())
                }
            })?
            .to_bytes();
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

fn parse_url(url: &str) -> Result<Uri, ClientError> {
    let uri: Uri = url.parse().map_err(|e: hyper::http::uri::InvalidUri| {
        ClientError::Url(url.to_owned(), e.to_string())
    })?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(ClientError::Url(
                url.to_owned(),
                "only http:// and https:// URLs are supported".into(),
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(ClientError::Url(url.to_owned(), "no host".into()));
    }
    Ok(uri)
}

/// `GET url` with the shared client.
pub async fn get(
    url: &str,
    headers: &[(HeaderName, String)],
    timeout: Duration,
    max_body: usize,
) -> Result<Response, ClientError> {
    Client::shared().get(url, headers, timeout, max_body).await
}

/// Opens the connections of a [`Client`]: TCP, a proxy's tunnel, TLS.
#[derive(Debug, Clone)]
struct Connector {
    tls: Tls,
    proxies: Arc<Matcher>,
}

type Connecting = Pin<Box<dyn Future<Output = std::io::Result<Conn>> + Send>>;

impl tower_service::Service<Uri> for Connector {
    type Response = Conn;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Connecting {
        let this = self.clone();
        Box::pin(async move { this.connect(dst).await })
    }
}

fn host_port(uri: &Uri, default_port: u16) -> std::io::Result<(String, u16)> {
    let host = uri
        .host()
        .ok_or_else(|| std::io::Error::other("no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok((host, uri.port_u16().unwrap_or(default_port)))
}

async fn tcp(host: &str, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("{host}:{port}: {e}")))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

impl Connector {
    async fn connect(self, dst: Uri) -> std::io::Result<Conn> {
        let https = dst.scheme_str() == Some("https");
        let (host, port) = host_port(&dst, if https { 443 } else { 80 })?;
        let proxy = self.proxies.intercept(&dst);
        let stream = match &proxy {
            Some(proxy) => {
                if proxy.uri().scheme_str() != Some("http") {
                    // The host only: the URL may hold the proxy's password.
                    return Err(std::io::Error::other(format!(
                        "proxy {}: only http:// proxies are supported",
                        proxy.uri().host().unwrap_or("?")
                    )));
                }
                let (proxy_host, proxy_port) = host_port(proxy.uri(), 80)?;
                let mut stream = tcp(&proxy_host, proxy_port).await?;
                if !https {
                    // The pool sends this connection absolute-form requests.
                    return Ok(Conn::new(stream, true));
                }
                tunnel(&mut stream, &host, port, proxy.basic_auth()).await?;
                stream
            }
            None => tcp(&host, port).await?,
        };
        if !https {
            return Ok(Conn::new(stream, false));
        }
        let tls = self.tls.get().map_err(std::io::Error::other)?;
        let name = tls.server_name.clone().unwrap_or(host);
        let name = rustls::pki_types::ServerName::try_from(name)
            .map_err(|e| std::io::Error::other(format!("TLS server name: {e}")))?;
        let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
            .connect(name, stream)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("TLS: {e}")))?;
        Ok(Conn::new(stream, false))
    }
}

/// Asks an HTTP proxy on `stream` for a tunnel to `host:port`.
async fn tunnel(
    stream: &mut tokio::net::TcpStream,
    host: &str,
    port: u16,
    auth: Option<&HeaderValue>,
) -> std::io::Result<()> {
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut ask = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(auth) = auth.and_then(|a| a.to_str().ok()) {
        ask.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    ask.push_str("\r\n");
    stream.write_all(ask.as_bytes()).await?;
    // Read the answer's head byte by byte, so nothing of the tunnel is consumed.
    let mut head = Vec::with_capacity(128);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_PROXY_ANSWER {
            return Err(std::io::Error::other("the proxy's answer is too long"));
        }
        let byte = stream
            .read_u8()
            .await
            .map_err(|e| std::io::Error::new(e.kind(), "the proxy closed the connection"))?;
        head.push(byte);
    }
    let status_line = head
        .split(|b| *b == b'\n')
        .next()
        .map(|l| String::from_utf8_lossy(l).trim().to_owned())
        .unwrap_or_default();
    let code = status_line.split_whitespace().nth(1).unwrap_or("");
    if code != "200" {
        return Err(std::io::Error::other(format!(
            "the proxy refused the tunnel to {authority}: {status_line}"
        )));
    }
    Ok(())
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// One open connection, plain or TLS, direct or to a proxy.
struct Conn {
    io: TokioIo<Box<dyn Io>>,
    /// Requests on it go to an HTTP proxy (absolute form).
    proxied: bool,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("proxied", &self.proxied)
            .finish_non_exhaustive()
    }
}

impl Conn {
    fn new(io: impl Io + 'static, proxied: bool) -> Conn {
        Conn {
            io: TokioIo::new(Box::new(io)),
            proxied,
        }
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new().proxy(self.proxied)
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};

    /// A server that answers every request on a connection with `200 ok`, and
    /// reports each connection's request lines.
    async fn server() -> (
        std::net::SocketAddr,
        tokio::sync::mpsc::UnboundedReceiver<Vec<String>>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    let mut seen = Vec::new();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if line.is_empty() {
                            let _ = tx.send(seen.clone());
                            let _ = write
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                .await;
                        } else {
                            seen.push(line);
                        }
                    }
                });
            }
        });
        (addr, rx)
    }

    #[tokio::test]
    async fn one_connection_serves_many_requests() {
        let (addr, mut rx) = server().await;
        let client = Client::with(
            Tls::System(Arc::default()),
            Arc::new(Matcher::builder().build()),
        );
        for _ in 0..5 {
            let r = client
                .get(
                    &format!("http://{addr}/x"),
                    &[],
                    Duration::from_secs(5),
                    100,
                )
                .await
                .expect("answer");
            assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]));
        }
        let mut last = Vec::new();
        while let Ok(seen) = rx.try_recv() {
            last = seen;
        }
        // All five on one connection: its request lines hold five GETs.
        let gets = last.iter().filter(|l| l.starts_with("GET /x ")).count();
        assert_eq!(gets, 5, "{last:?}");
    }

    #[tokio::test]
    async fn http_through_a_proxy_in_absolute_form_with_its_credentials() {
        let (proxy, mut rx) = server().await;
        let matcher = Matcher::builder()
            .http(format!("http://user:pa55@{proxy}"))
            .no("bypassed.invalid")
            .build();
        let client = Client::with(Tls::System(Arc::default()), Arc::new(matcher));
        let r = client
            .get(
                "http://plug.invalid:8080/rpc/Shelly.GetStatus",
                &[],
                Duration::from_secs(5),
                100,
            )
            .await
            .expect("the proxy answers");
        assert_eq!(r.status, 200);
        let seen = rx.recv().await.expect("request");
        assert_eq!(
            seen[0],
            "GET http://plug.invalid:8080/rpc/Shelly.GetStatus HTTP/1.1"
        );
        // user:pa55 in Basic.
        assert!(
            seen.iter()
                .any(|l| l.eq_ignore_ascii_case("proxy-authorization: Basic dXNlcjpwYTU1")),
            "{seen:?}"
        );
        // NO_PROXY goes direct (and fails here: the name does not resolve).
        let direct = client
            .get("http://bypassed.invalid/", &[], Duration::from_secs(5), 100)
            .await;
        assert!(
            matches!(direct, Err(ClientError::Connect(..))),
            "{direct:?}"
        );
    }

    #[tokio::test]
    async fn bad_urls_and_large_answers_are_errors() {
        let client = Client::shared();
        for url in ["ftp://x/", "http:///path", "not a url"] {
            let r = client.get(url, &[], Duration::from_secs(1), 10).await;
            assert!(matches!(r, Err(ClientError::Url(..))), "{url}: {r:?}");
        }
        let (addr, _rx) = server().await;
        let r = client
            .get(&format!("http://{addr}/"), &[], Duration::from_secs(5), 1)
            .await;
        assert!(matches!(r, Err(ClientError::TooLarge(..))), "{r:?}");
    }
}
