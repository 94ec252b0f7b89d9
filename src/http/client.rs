//! The HTTP/1.1 client of the exporter's outbound requests (the Shelly hub's API,
//! plugs polled over HTTP, the config server, remote write, `health`).
//!
//! One request per connection, no pool: `http://`, or `https://` with the rustls
//! setup the caller passes ([`request_tls`]). The whole exchange, connect and TLS
//! handshake included, runs under one time limit, and the answer's body is read up
//! to a bound; a larger one is an error, never a partial body.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

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

/// HTTP/1.1 on an open stream; the connection task ends with the exchange.
async fn handshake<S>(
    url: &str,
    stream: S,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, ClientError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ClientError::Http(url.to_owned(), e.to_string()))?;
    tokio::spawn(async move {
        // Ends when the exchange is done or the peer hangs up.
        let _ = connection.await;
    });
    Ok(sender)
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// `GET url` with `headers`, within `timeout`, reading at most `max_body` bytes.
pub async fn get(
    url: &str,
    headers: &[(HeaderName, String)],
    timeout: Duration,
    max_body: usize,
) -> Result<Response, ClientError> {
    request(Method::GET, url, headers, Bytes::new(), timeout, max_body).await
}

/// [`request`] that may also use `https://`, with `tls`.
pub async fn request_tls(
    method: Method,
    url: &str,
    headers: &[(HeaderName, String)],
    body: Bytes,
    timeout: Duration,
    max_body: usize,
    tls: Option<&crate::http::tls::TlsClient>,
) -> Result<Response, ClientError> {
    match tokio::time::timeout(timeout, exchange(method, url, headers, body, max_body, tls)).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::Timeout(url.to_owned(), timeout)),
    }
}

/// `method url` with `headers` and `body`, within `timeout`, reading at most
/// `max_body` bytes of the answer.
pub async fn request(
    method: Method,
    url: &str,
    headers: &[(HeaderName, String)],
    body: Bytes,
    timeout: Duration,
    max_body: usize,
) -> Result<Response, ClientError> {
    request_tls(method, url, headers, body, timeout, max_body, None).await
}

async fn exchange(
    method: Method,
    url: &str,
    headers: &[(HeaderName, String)],
    body: Bytes,
    max_body: usize,
    tls: Option<&crate::http::tls::TlsClient>,
) -> Result<Response, ClientError> {
    let uri: hyper::Uri = url.parse().map_err(|e: hyper::http::uri::InvalidUri| {
        ClientError::Url(url.to_owned(), e.to_string())
    })?;
    let https = match (uri.scheme_str(), tls) {
        (Some("http"), _) => false,
        (Some("https"), Some(_)) => true,
        _ => {
            return Err(ClientError::Url(
                url.to_owned(),
                "only http:// URLs are supported here".into(),
            ));
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| ClientError::Url(url.to_owned(), "no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| ClientError::Connect(format!("{host}:{port}"), e))?;
    let _ = stream.set_nodelay(true);
    let mut sender = match tls.filter(|_| https) {
        Some(tls) => {
            let name = tls.server_name.clone().unwrap_or_else(|| host.clone());
            let name = rustls::pki_types::ServerName::try_from(name)
                .map_err(|e| ClientError::Url(url.to_owned(), format!("TLS server name: {e}")))?;
            let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
                .connect(name, stream)
                .await
                .map_err(|e| ClientError::Connect(format!("{host}:{port} (TLS)"), e))?;
            handshake(url, stream).await?
        }
        None => handshake(url, stream).await?,
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(
            hyper::header::HOST,
            uri.authority().map_or(host.as_str(), |a| a.as_str()),
        )
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
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| ClientError::Http(url.to_owned(), e.to_string()))?;
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
