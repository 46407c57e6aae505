//! The HTTP client that talks to the application's backend: JSON POSTs over pooled keep-alive
//! connections (hyper-util's pooled client), each bounded in time and answer size.
//!
//! Pooled because a proxied publish pays a call each: opening a TCP connection per call would
//! double its latency and burn a port per call under load. `http://` only, as the JWKS fetch
//! (`auth::fetch`): Herald links no TLS stack.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Uri;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
use hyper_util::client::legacy::Client as Pooled;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Largest answer read from the backend (a rewritten payload fits: it is at most a frame).
pub const MAX_ANSWER_BYTES: usize = 16 << 20;
/// Idle keep-alive connections kept per backend host.
const IDLE_PER_HOST: usize = 64;
/// How long an idle connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

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
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, CallError> {
        let uri: Uri = url
            .trim()
            .parse()
            .map_err(|e| CallError::Url(format!("{url}: {e}")))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none_or(str::is_empty) {
            return Err(CallError::Url(format!(
                "{url}: use http://host[:port]/path"
            )));
        }
        Ok(Endpoint { uri })
    }

    pub fn url(&self) -> String {
        self.uri.to_string()
    }
}

/// The shared client; cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Pooled<HttpConnector, Full<Bytes>>,
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl Client {
    pub fn new() -> Client {
        let mut connector = HttpConnector::new();
        // Small JSON requests: Nagle would hold each back for the previous one's ACK.
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let inner = Pooled::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(IDLE_PER_HOST)
            .build(connector);
        Client { inner }
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
        let mut req = hyper::Request::post(to.uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("herald/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(body))
            .map_err(|e| CallError::Url(e.to_string()))?;
        for (name, value) in headers {
            req.headers_mut().insert(name.clone(), value.clone());
        }
        let resp = self
            .inner
            .request(req)
            .await
            .map_err(|e| CallError::Connect(error_chain(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(CallError::Status(status.as_u16()));
        }
        let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| CallError::Body(e.to_string()))?;
        Ok(body.to_bytes())
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
