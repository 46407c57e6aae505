//! The HTTP client that talks to the application's backend: JSON POSTs over pooled keep-alive
//! connections, each call bounded in time and answer size.
//!
//! Pooled because a proxied publish pays a call each: opening a TCP connection per call would
//! double its latency and burn a port per call under load. `http://` only, as the JWKS fetch
//! (`auth::fetch`): Herald links no TLS stack.
//!
//! The pool is our own, over hyper's HTTP/1 connections: a call takes an idle connection (or
//! opens one), and drives it *in the caller's task* while its request and answer go through,
//! then puts it back. A pooled client that runs each connection as a task of its own (as
//! hyper-util's does) hands every call to that task and back: two more task wake-ups and
//! cross-thread hops per proxied publish, which showed as most of a call's cost.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Uri;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue, USER_AGENT};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpStream;

/// Largest answer read from the backend (a rewritten payload fits: it is at most a frame).
pub const MAX_ANSWER_BYTES: usize = 16 << 20;
/// Idle keep-alive connections kept per backend host.
const IDLE_PER_HOST: usize = 64;
/// How long an idle connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a new connection to the backend.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a call did not give a usable answer. Every one of them makes the operation fail with
/// `unavailable` (PROTOCOL.md §10).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("bad URL {0}")]
    Url(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach the backend: {0}")]
    Connect(String),
    #[error("the backend answered HTTP {0}")]
    Status(u16),
    #[error("cannot read the backend's answer: {0}")]
    Body(String),
    #[error("the backend's answer is not the expected JSON: {0}")]
    BadJson(String),
}

impl CallError {
    /// The metric label of this failure.
    pub fn outcome(&self) -> &'static str {
        match self {
            CallError::Timeout(_) => "timeout",
            CallError::Status(s) if *s >= 500 => "status_5xx",
            CallError::Status(_) => "status_other",
            CallError::BadJson(_) => "bad_json",
            _ => "unreachable",
        }
    }
}

/// A backend endpoint, checked once (at start) so that calls only build requests.
#[derive(Debug, Clone)]
pub struct Endpoint {
    uri: Uri,
    /// `host:port`, where connections go (the pool's key).
    addr: Arc<str>,
    host: HeaderValue,
    /// The request target (origin form: path and query).
    target: Uri,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, CallError> {
        let uri: Uri = url
            .trim()
            .parse()
            .map_err(|e| CallError::Url(format!("{url}: {e}")))?;
        let bad = || CallError::Url(format!("{url}: use http://host[:port]/path"));
        if uri.scheme_str() != Some("http") || uri.host().is_none_or(str::is_empty) {
            return Err(bad());
        }
        let authority = uri.authority().ok_or_else(bad)?;
        let addr = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| bad())?;
        let target = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|_| bad())?;
        Ok(Endpoint {
            addr: addr.into(),
            host,
            target,
            uri,
        })
    }

    pub fn url(&self) -> String {
        self.uri.to_string()
    }
}

/// The shared client; cheap to clone.
#[derive(Clone, Default)]
pub struct Client {
    idle: Arc<Mutex<HashMap<Arc<str>, Vec<Idle>>>>,
}

/// A connection: the handle requests are sent on, and the connection future that does the
/// I/O (polled only by the call using it).
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    io: Pin<Box<Connection<TokioIo<TcpStream>, Full<Bytes>>>>,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

impl Client {
    pub fn new() -> Client {
        Client::default()
    }

    /// POSTs `body` (JSON) to `to` with `headers`; the 2xx answer's body, all within `timeout`.
    /// Returns how long it took, for the latency histogram.
    pub async fn post(
        &self,
        to: &Endpoint,
        body: Bytes,
        headers: &[(HeaderName, HeaderValue)],
        timeout: Duration,
    ) -> (Result<Bytes, CallError>, Duration) {
        let started = Instant::now();
        let r = tokio::time::timeout(timeout, self.post_unbounded(to, body, headers))
            .await
            .unwrap_or(Err(CallError::Timeout(timeout)));
        (r, started.elapsed())
    }

    async fn post_unbounded(
        &self,
        to: &Endpoint,
        body: Bytes,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<Bytes, CallError> {
        let mut req = hyper::Request::post(to.target.clone())
            .header(HOST, to.host.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("herald/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(body))
            .map_err(|e| CallError::Url(e.to_string()))?;
        for (name, value) in headers {
            req.headers_mut().insert(name.clone(), value.clone());
        }
        // An idle connection the backend has closed meanwhile takes the request back unsent;
        // it then goes on a fresh one (a POST that was sent is never sent twice).
        loop {
            let (mut conn, fresh) = match self.checkout(&to.addr) {
                Some(c) => (c, false),
                None => (connect(&to.addr).await?, true),
            };
            let sent = conn.sender.try_send_request(req);
            let (resp, open) = match drive(&mut conn.io, sent).await {
                (Ok(resp), open) => (resp, open),
                (Err(mut e), _) => match e.take_message() {
                    Some(back) if !fresh => {
                        req = back;
                        continue;
                    }
                    _ => return Err(CallError::Connect(error_chain(e.error()))),
                },
            };
            let status = resp.status();
            let collect = Limited::new(resp.into_body(), MAX_ANSWER_BYTES).collect();
            let (body, open) = if open {
                drive(&mut conn.io, collect).await
            } else {
                (collect.await, false) // the connection is done: it is not polled again
            };
            let body = body.map_err(|e| CallError::Body(e.to_string()))?;
            if open {
                self.checkin(&to.addr, conn);
            }
            if !status.is_success() {
                return Err(CallError::Status(status.as_u16()));
            }
            return Ok(body.to_bytes());
        }
    }

    /// An idle connection to `addr` that is still open, if any.
    fn checkout(&self, addr: &Arc<str>) -> Option<Conn> {
        loop {
            let idle = self.idle.lock().get_mut(addr)?.pop()?;
            let mut conn = idle.conn;
            // Polled once: a connection the backend closed ends here instead of failing
            // the call.
            if idle.since.elapsed() < IDLE_TIMEOUT
                && conn.io.as_mut().now_or_never().is_none()
                && conn.sender.is_ready()
            {
                return Some(conn);
            }
        }
    }

    fn checkin(&self, addr: &Arc<str>, mut conn: Conn) {
        // Let the connection take in the end of the answer, so it is ready for the next.
        if conn.io.as_mut().now_or_never().is_some() {
            return;
        }
        let mut idle = self.idle.lock();
        let list = idle.entry(addr.clone()).or_default();
        if list.len() < IDLE_PER_HOST {
            list.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }
}

/// Opens a connection to `addr`.
async fn connect(addr: &str) -> Result<Conn, CallError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| {
            CallError::Connect(format!("{addr}: no connection within {CONNECT_TIMEOUT:?}"))
        })?
        .map_err(|e| CallError::Connect(format!("{addr}: {e}")))?;
    // Small JSON requests: Nagle would hold each back for the previous one's ACK.
    let _ = stream.set_nodelay(true);
    let (sender, io) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| CallError::Connect(error_chain(&e)))?;
    Ok(Conn {
        sender,
        io: Box::pin(io),
    })
}

/// Runs `fut` while driving the connection's I/O; also says whether the connection is still
/// open after it. When the connection ends first, `fut` still completes (with what the
/// connection delivered, or an error).
async fn drive<F: std::future::Future>(
    io: &mut Pin<Box<Connection<TokioIo<TcpStream>, Full<Bytes>>>>,
    fut: F,
) -> (F::Output, bool) {
    let mut fut = std::pin::pin!(fut);
    tokio::select! {
        biased;
        out = &mut fut => (out, true),
        _ = io.as_mut() => (fut.await, false),
    }
}

/// hyper-util's errors say "client error (Connect)" and keep the cause underneath.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A backend answering `{"n":<request number>}` to each request on a connection, and
    /// closing each connection after `per_conn` answers. Counts connections.
    async fn backend(per_conn: usize) -> (Endpoint, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook?x=1", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    for n in 0..per_conn {
                        let mut got = Vec::new();
                        // Headers, then the body by its Content-Length.
                        loop {
                            let k = s.read(&mut buf).await.unwrap_or(0);
                            if k == 0 {
                                return;
                            }
                            got.extend_from_slice(&buf[..k]);
                            let text = String::from_utf8_lossy(&got);
                            if let Some(end) = text.find("\r\n\r\n") {
                                assert!(text.starts_with("POST /hook?x=1 HTTP/1.1\r\n"), "{text}");
                                assert!(text.to_ascii_lowercase().contains("\r\nhost: 127.0.0.1:"));
                                let len: usize = text
                                    .lines()
                                    .find_map(|l| {
                                        l.to_ascii_lowercase()
                                            .strip_prefix("content-length: ")
                                            .map(|v| v.trim().parse().unwrap())
                                    })
                                    .unwrap();
                                if got.len() >= end + 4 + len {
                                    break;
                                }
                            }
                        }
                        let body = format!("{{\"n\":{n}}}");
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        s.write_all(answer.as_bytes()).await.unwrap();
                    }
                    // Closes after its last answer: an idle pooled connection goes stale.
                });
            }
        });
        (Endpoint::parse(&url).unwrap(), accepted)
    }

    async fn call(c: &Client, to: &Endpoint) -> String {
        let (r, _) = c
            .post(to, Bytes::from_static(b"{}"), &[], Duration::from_secs(2))
            .await;
        String::from_utf8(r.unwrap().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn calls_reuse_a_connection() {
        let (to, accepted) = backend(100).await;
        let c = Client::new();
        for n in 0..5 {
            assert_eq!(call(&c, &to).await, format!("{{\"n\":{n}}}"));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_backend_closed_is_replaced() {
        let (to, accepted) = backend(1).await;
        let c = Client::new();
        for _ in 0..4 {
            assert_eq!(call(&c, &to).await, "{\"n\":0}");
            // The close arrives meanwhile: the next checkout finds it and opens anew.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn concurrent_calls_open_more_connections_and_keep_them() {
        let (to, accepted) = backend(1000).await;
        let c = Client::new();
        let calls: Vec<_> = (0..8).map(|_| call(&c, &to)).collect();
        futures_util::future::join_all(calls).await;
        let opened = accepted.load(Ordering::SeqCst);
        assert!((1..=8).contains(&opened));
        for _ in 0..20 {
            call(&c, &to).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), opened, "no new connection");
    }

    #[tokio::test]
    async fn an_unreachable_backend_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/x", listener.local_addr().unwrap());
        drop(listener);
        let (r, _) = Client::new()
            .post(
                &Endpoint::parse(&url).unwrap(),
                Bytes::new(),
                &[],
                Duration::from_secs(2),
            )
            .await;
        assert!(matches!(r, Err(CallError::Connect(_))), "{r:?}");
    }
}
