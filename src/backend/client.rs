//! The HTTP client that talks to the application's backend: JSON POSTs over pooled keep-alive
//! connections, each call bounded in time and answer size.
//!
//! Pooled because a proxied publish pays a call each: opening a TCP connection per call would
//! double its latency and burn a port per call under load. The calling task writes and reads
//! the connection itself (`http1`): no connection task in between. `http://` only, as the JWKS
//! fetch (`auth::fetch`): Herald links no TLS stack.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Uri;
use hyper::header::{HeaderName, HeaderValue};
use parking_lot::Mutex;
use tokio::net::TcpStream;

use super::http1::{self, ExchangeError};

/// Largest answer read from the backend (a rewritten payload fits: it is at most a frame).
pub const MAX_ANSWER_BYTES: usize = 16 << 20;
/// Idle keep-alive connections kept per backend host.
const IDLE_PER_HOST: usize = 64;
/// How long an idle connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long opening a connection may take (within the call's own timeout).
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

/// A backend endpoint, checked once (at start) so that calls only fill in a body.
#[derive(Debug, Clone)]
pub struct Endpoint {
    uri: Uri,
    /// Where to connect (an IPv6 literal without its brackets).
    host: Arc<str>,
    port: u16,
    /// `host:port`: the pool's key.
    authority: Arc<str>,
    /// The request up to its per-call headers: request line, Host, Content-Type, User-Agent.
    head: Arc<[u8]>,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, CallError> {
        let uri: Uri = url
            .trim()
            .parse()
            .map_err(|e| CallError::Url(format!("{url}: {e}")))?;
        let Some(host) = uri
            .host()
            .filter(|h| !h.is_empty() && uri.scheme_str() == Some("http"))
        else {
            return Err(CallError::Url(format!(
                "{url}: use http://host[:port]/path"
            )));
        };
        let port = uri.port_u16().unwrap_or(80);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        // The Host header names the server as the URL does, never with a `user:pass@`.
        let host_header = match uri.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host_header}\r\nContent-Type: application/json\r\n\
             User-Agent: herald/{}\r\n",
            env!("CARGO_PKG_VERSION")
        );
        Ok(Endpoint {
            host: host.trim_start_matches('[').trim_end_matches(']').into(),
            port,
            authority: format!("{host}:{port}").into(),
            head: head.into_bytes().into(),
            uri,
        })
    }

    pub fn url(&self) -> String {
        self.uri.to_string()
    }

    /// The whole request: the head, `headers`, the length and `body`, for one write.
    fn request(&self, body: &[u8], headers: &[(HeaderName, HeaderValue)]) -> Vec<u8> {
        let mut r = Vec::with_capacity(self.head.len() + 64 + body.len());
        r.extend_from_slice(&self.head);
        for (name, value) in headers {
            r.extend_from_slice(name.as_str().as_bytes());
            r.extend_from_slice(b": ");
            r.extend_from_slice(value.as_bytes());
            r.extend_from_slice(b"\r\n");
        }
        r.extend_from_slice(b"Content-Length: ");
        r.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        r.extend_from_slice(b"\r\n\r\n");
        r.extend_from_slice(body);
        r
    }
}

/// A connection waiting for its next call.
struct Idle {
    stream: TcpStream,
    since: Instant,
}

/// Idle connections by `host:port`, the most recently used last.
type Pool = Mutex<HashMap<Arc<str>, Vec<Idle>>>;

/// The shared client; cheap to clone.
#[derive(Clone)]
pub struct Client {
    idle: Arc<Pool>,
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl Client {
    /// A client; inside a runtime it also closes connections idle past the timeout.
    pub fn new() -> Client {
        let client = Client {
            idle: Arc::default(),
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(sweep(Arc::downgrade(&client.idle)));
        }
        client
    }

    /// POSTs `body` (JSON) to `to` with `headers`; the 2xx answer's body, all within `timeout`.
    /// Returns how long it took, for the latency histogram.
    pub async fn post(
        &self,
        to: &Endpoint,
        body: &[u8],
        headers: &[(HeaderName, HeaderValue)],
        timeout: Duration,
    ) -> (Result<Bytes, CallError>, Duration) {
        let started = Instant::now();
        let request = to.request(body, headers);
        // A timeout drops the exchange with its connection: never back in the pool half read.
        let r = tokio::time::timeout(timeout, self.send(to, &request))
            .await
            .unwrap_or(Err(CallError::Timeout(timeout)));
        (r, started.elapsed())
    }

    async fn send(&self, to: &Endpoint, request: &[u8]) -> Result<Bytes, CallError> {
        loop {
            let (mut stream, reused) = match self.checkout(&to.authority) {
                Some(s) => (s, true),
                None => (connect(to).await?, false),
            };
            let answer = match http1::exchange(&mut stream, request, MAX_ANSWER_BYTES).await {
                Ok(a) => a,
                // The backend closed the idle connection as it was reused: it never saw the
                // request. Its other idle ones are likely closed too (a restart): drop them,
                // and send once more on a new connection.
                Err(ExchangeError::Closed) if reused => {
                    self.idle.lock().remove(&to.authority);
                    continue;
                }
                Err(ExchangeError::Closed) => {
                    return Err(CallError::Connect("the connection closed".into()));
                }
                Err(ExchangeError::Io(e)) => return Err(CallError::Connect(e.to_string())),
                Err(e) => return Err(CallError::Body(e.to_string())),
            };
            if answer.reusable {
                self.checkin(&to.authority, stream);
            }
            if !(200..300).contains(&answer.status) {
                return Err(CallError::Status(answer.status));
            }
            return Ok(answer.body);
        }
    }

    /// The most recently used idle connection that is still open.
    fn checkout(&self, authority: &Arc<str>) -> Option<TcpStream> {
        let mut idle = self.idle.lock();
        let list = idle.get_mut(authority)?;
        while let Some(c) = list.pop() {
            // Readable while idle means closed (or an answer nobody asked for): drop it.
            let open = matches!(c.stream.try_read(&mut [0; 1]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
            if open && c.since.elapsed() < IDLE_TIMEOUT {
                return Some(c.stream);
            }
        }
        None
    }

    fn checkin(&self, authority: &Arc<str>, stream: TcpStream) {
        let mut idle = self.idle.lock();
        let list = idle.entry(authority.clone()).or_default();
        if list.len() < IDLE_PER_HOST {
            list.push(Idle {
                stream,
                since: Instant::now(),
            });
        }
    }
}

async fn connect(to: &Endpoint) -> Result<TcpStream, CallError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((&*to.host, to.port)))
        .await
        .map_err(|_| CallError::Connect(format!("no connection within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| CallError::Connect(format!("{}: {e}", to.authority)))?;
    // Small JSON requests: Nagle would hold each back for the previous one's ACK.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Closes connections idle past the timeout, until the client is gone.
async fn sweep(pool: Weak<Pool>) {
    let mut tick = tokio::time::interval(IDLE_TIMEOUT / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let mut idle = pool.lock();
        for list in idle.values_mut() {
            list.retain(|c| c.since.elapsed() < IDLE_TIMEOUT);
        }
        idle.retain(|_, list| !list.is_empty());
    }
}

#[cfg(test)]
mod tests;
