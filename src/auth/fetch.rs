//! One HTTP GET of a JWKS document, with the hyper client the server already links.
//!
//! `http://` only: the server has no TLS stack, and pulling one in (rustls, its crypto and
//! roots) for one small document is not worth its weight. A JWKS over https is served to
//! Herald by a local proxy or sidecar, or over http on a trusted network; `config check`
//! refuses an `https://` `jwks_url` with that advice. Bounded in time and size; redirects are
//! not followed (a 3xx is a failed fetch).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Uri;
use hyper::header::{ACCEPT, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::task::AbortOnDropHandle;

/// Longest a fetch may take, connecting included.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document read.
pub(crate) const MAX_DOCUMENT_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("bad URL: {0}")]
    Url(String),
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("cannot read the body: {0}")]
    Body(String),
    #[error("no answer within {}s", FETCH_TIMEOUT.as_secs())]
    Timeout,
}

/// Where a JWKS lives: an `http://` URL, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    url: String,
    host: String,
    port: u16,
    authority: String,
    path: String,
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Target, FetchError> {
        let uri: Uri = url
            .trim()
            .parse()
            .map_err(|e| FetchError::Url(format!("{url}: {e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(FetchError::Url(format!("{url}: only http:// is supported")));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| FetchError::Url(format!("{url}: no host")))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(FetchError::Url(format!("{url}: no host")));
        }
        Ok(Target {
            url: url.trim().to_owned(),
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_owned(),
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The document's bytes (a 2xx answer's body), within [`FETCH_TIMEOUT`].
    pub(crate) async fn get(&self) -> Result<Bytes, FetchError> {
        tokio::time::timeout(FETCH_TIMEOUT, self.get_unbounded())
            .await
            .map_err(|_| FetchError::Timeout)?
    }

    async fn get_unbounded(&self) -> Result<Bytes, FetchError> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(FetchError::Connect)?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // The connection is driven beside the request and dropped with this call.
        let _conn = AbortOnDropHandle::new(tokio::spawn(conn));
        let req = hyper::Request::get(self.path.as_str())
            .header(HOST, self.authority.as_str())
            .header(ACCEPT, "application/jwk-set+json, application/json")
            .header(USER_AGENT, concat!("herald/", env!("CARGO_PKG_VERSION")))
            .body(Empty::<Bytes>::new())
            .map_err(|e| FetchError::Url(e.to_string()))?;
        let resp = sender.send_request(req).await?;
        if !resp.status().is_success() {
            return Err(FetchError::Status(resp.status().as_u16()));
        }
        let body = Limited::new(resp.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map_err(|e| FetchError::Body(e.to_string()))?;
        Ok(body.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_once() {
        let t = Target::parse("http://idp.local:8080/.well-known/jwks.json?x=1").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("idp.local", 8080));
        assert_eq!(t.authority, "idp.local:8080");
        assert_eq!(t.path, "/.well-known/jwks.json?x=1");
        let t = Target::parse("http://[::1]/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 80));
        let t = Target::parse("http://h").unwrap();
        assert_eq!(t.path, "/");
        for bad in ["https://h/x", "ftp://h/", "/jwks.json", "", "http://"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
