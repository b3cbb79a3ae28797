//! One HTTP/1.1 request to a ccr-syncer API, over TCP or TLS (hyper's
//! client connection, tokio-rustls): what a member forwarding a job's call
//! to its owner and `ccr-syncer ctl` both send, what the cluster manager
//! and the node agents send each other ([`to_agent`]), and a clone's
//! streamed backup ([`post_stream`]).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::time::Duration;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens there, or the connection could not be made: the
    /// server may be gone.
    #[error("{0}")]
    Connect(String),
    /// Connected, but the exchange failed (TLS, a broken connection, no
    /// answer in time).
    #[error("{0}")]
    Exchange(String),
}

/// An answer: status, content type and body.
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

/// `method` `path` on `base` (`http://host:port` or `https://host:port`)
/// with `headers` and a JSON `body`; HTTPS needs `tls`. Connecting may take
/// 5 s, the answer `timeout`.
pub async fn request(
    base: &str,
    tls: Option<&tokio_rustls::TlsConnector>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    timeout: Duration,
) -> Result<Answer, ClientError> {
    let exchange = |e: String| ClientError::Exchange(e);
    let (authority, tls) = match (base.split_once("://"), tls) {
        (Some(("http", rest)), _) => (rest.trim_end_matches('/'), None),
        (Some(("https", rest)), Some(tls)) => (rest.trim_end_matches('/'), Some(tls)),
        (Some(("https", _)), None) => {
            return Err(ClientError::Exchange(format!(
                "{base} serves HTTPS and no certificate to trust it with was given (a member: \
                 tls_cert or [group] peer_ca; ctl: --cacert)"
            )))
        }
        _ => {
            return Err(ClientError::Exchange(format!(
                "{base} is not http://host:port or https://host:port"
            )))
        }
    };
    let stream = connect(authority).await?;
    let mut sender = match tls {
        None => handshake(stream).await,
        Some(tls) => {
            let host = authority
                .rsplit_once(':')
                .map_or(authority, |(h, _)| h)
                .trim_start_matches('[')
                .trim_end_matches(']');
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| exchange(format!("{host} is not a name to check: {e}")))?;
            let stream = tokio::time::timeout(Duration::from_secs(10), tls.connect(name, stream))
                .await
                .map_err(|_| exchange("the TLS handshake timed out".into()))?
                .map_err(|e| exchange(format!("TLS: {e}")))?;
            handshake(stream).await
        }
    }
    .map_err(|e| exchange(e.to_string()))?;
    send(&mut sender, authority, method, path, headers, body, timeout).await
}

/// `POST /` of a JSON `body` to the node agent at `host:port`, with the
/// agents' `token`: what the manager and an agent asking another send.
pub async fn to_agent(
    host: &str,
    port: i64,
    token: &crate::secret::Secret,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<Answer, ClientError> {
    let auth = format!("Bearer {}", token.expose());
    request(
        &format!("http://{host}:{port}"),
        None,
        "POST",
        "/",
        &[("authorization", auth.as_str())],
        Bytes::from(body.to_string()),
        timeout,
    )
    .await
}

/// Plain HTTP over a connection kept open for the next request to the same
/// `authority` (`host:port`): what the minder's parties send every second.
/// A kept connection the server has closed meanwhile is replaced once; the
/// request must be safe to deliver twice (the minder's are: each states a
/// state and carries its id).
pub async fn request_kept(
    authority: &str,
    path: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<Answer, ClientError> {
    static KEPT: std::sync::OnceLock<
        parking_lot::Mutex<std::collections::HashMap<String, Vec<Sender>>>,
    > = std::sync::OnceLock::new();
    let kept = KEPT.get_or_init(Default::default);
    let reused = {
        let mut pool = kept.lock();
        let list = pool.entry(authority.to_string()).or_default();
        list.retain(|s| !s.is_closed());
        list.pop()
    };
    let fresh = || async {
        handshake(connect(authority).await?)
            .await
            .map_err(|e| ClientError::Exchange(e.to_string()))
    };
    let (mut sender, was_kept) = match reused {
        Some(s) => (s, true),
        None => (fresh().await?, false),
    };
    let started = std::time::Instant::now();
    let mut answer = send(
        &mut sender,
        authority,
        "POST",
        path,
        &[],
        body.clone(),
        timeout,
    )
    .await;
    // A kept connection the server closed fails at once; one that timed out
    // (a peer cut off) is not tried again here: the caller resends.
    if answer.is_err() && was_kept && started.elapsed() < Duration::from_secs(1) {
        sender = fresh().await?;
        answer = send(&mut sender, authority, "POST", path, &[], body, timeout).await;
    }
    if answer.is_ok() && !sender.is_closed() {
        let mut pool = kept.lock();
        let list = pool.entry(authority.to_string()).or_default();
        if list.len() < 4 {
            list.push(sender);
        }
    }
    answer
}

/// A TCP connection to `authority`, in at most 5 s.
async fn connect(authority: &str) -> Result<tokio::net::TcpStream, ClientError> {
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(authority),
    )
    .await
    .map_err(|_| ClientError::Connect(format!("connecting to {authority} timed out")))?
    .map_err(|e| ClientError::Connect(format!("{authority}: {e}")))
}

async fn send(
    sender: &mut Sender,
    authority: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    timeout: Duration,
) -> Result<Answer, ClientError> {
    let exchange = |e: String| ClientError::Exchange(e);
    tokio::time::timeout(timeout, sender.ready())
        .await
        .map_err(|_| exchange(format!("no answer within {} s", timeout.as_secs())))?
        .map_err(|e| exchange(e.to_string()))?;
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority)
        .header("content-type", "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder
        .body(Full::new(body))
        .map_err(|e| exchange(e.to_string()))?;
    let answer = tokio::time::timeout(timeout, sender.send_request(request))
        .await
        .map_err(|_| exchange(format!("no answer within {} s", timeout.as_secs())))?
        .map_err(|e| exchange(e.to_string()))?;
    let status = answer.status().as_u16();
    let content_type = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let body = answer
        .into_body()
        .collect()
        .await
        .map_err(|e| exchange(e.to_string()))?
        .to_bytes();
    Ok(Answer {
        status,
        content_type,
        body,
    })
}

/// `POST` of a streamed `body` to `url` (`http://host:port/path`), with
/// `headers`; the answer. Connecting may take 5 s; the body takes as long
/// as it takes (the caller bounds it), the answer after it `timeout`.
pub async fn post_stream<B>(
    url: &str,
    headers: &[(&str, &str)],
    body: B,
    timeout: Duration,
) -> Result<Answer, ClientError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let exchange = |e: String| ClientError::Exchange(e);
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| exchange(format!("{url} is not http://host:port/path")))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let stream = connect(authority).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| exchange(e.to_string()))?;
    tokio::spawn(conn);
    let mut builder = hyper::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", authority)
        .header("content-type", "application/octet-stream");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(body).map_err(|e| exchange(e.to_string()))?;
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| exchange(e.to_string()))?;
    let status = answer.status().as_u16();
    let body = tokio::time::timeout(timeout, answer.into_body().collect())
        .await
        .map_err(|_| exchange(format!("no answer within {} s", timeout.as_secs())))?
        .map_err(|e| exchange(e.to_string()))?
        .to_bytes();
    Ok(Answer {
        status,
        content_type: "application/json".into(),
        body,
    })
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn handshake<S>(stream: S) -> Result<Sender, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// A client TLS configuration trusting the PEM certificates in `path`
/// (`what` names the setting it comes from).
pub fn connector(path: &std::path::Path, what: &str) -> Result<tokio_rustls::TlsConnector, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    let roots = crate::tls::pem_roots(&pem, &format!("{what} {}", path.display()))?;
    if roots.is_empty() {
        return Err(format!(
            "{what} {} holds no PEM certificate",
            path.display()
        ));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}
