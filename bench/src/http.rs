//! The smallest HTTP/1.1 server the backend scenarios need: the proxy scenario's backend and
//! the webhooks scenario's sink, both on 127.0.0.1, both answering Herald's pooled keep-alive
//! client.
//!
//! Hand-rolled rather than hyper: it runs on the load tool's one thread (a `LocalSet`, so
//! handlers share plain `Cell` counters with the scenario), it costs one read and one write
//! per batch of requests (pipelined requests are answered in one write), and what it must
//! understand is small: a request line, `content-length` or `transfer-encoding: chunked`,
//! `connection: close`, and HTTP/1.0's default close.

use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;

use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::BenchError;

/// Largest request head (request line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body (a webhook batch is 100 events of some hundred bytes).
const MAX_BODY: usize = 16 << 20;
const READ_CHUNK: usize = 64 * 1024;

/// What a handler answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200 with this JSON body.
    Json(&'static [u8]),
    /// 204, no body.
    NoContent,
    /// 400: the body was not what the handler expects.
    BadRequest,
}

/// One parsed request; `body` is decoded (chunks joined). The path is not kept: each
/// server has one purpose, whatever URL Herald was configured with.
pub struct Request<'a> {
    pub method: &'a [u8],
    pub body: std::borrow::Cow<'a, [u8]>,
}

/// What the server saw, all connections together.
#[derive(Debug, Default)]
pub struct HttpStats {
    pub connections: Cell<u64>,
    pub requests: Cell<u64>,
    /// Requests that could not be parsed (answered 400, connection closed).
    pub malformed: Cell<u64>,
}

/// A server listening on 127.0.0.1.
pub struct HttpServer {
    pub addr: SocketAddr,
    pub stats: Rc<HttpStats>,
    stop: CancellationToken,
}

impl HttpServer {
    /// Binds 127.0.0.1:`port` and serves every connection with `handler` until dropped.
    pub async fn start<H>(port: u16, handler: H) -> Result<HttpServer, BenchError>
    where
        H: Fn(&Request<'_>) -> Answer + 'static,
    {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .map_err(|e| {
                BenchError::Usage(format!(
                    "cannot listen on 127.0.0.1:{port} for Herald's HTTP calls: {e}"
                ))
            })?;
        let addr = listener.local_addr()?;
        let stats = Rc::new(HttpStats::default());
        let stop = CancellationToken::new();
        tokio::task::spawn_local(accept(
            listener,
            Rc::new(handler),
            stats.clone(),
            stop.clone(),
        ));
        Ok(HttpServer { addr, stats, stop })
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept<H>(
    listener: TcpListener,
    handler: Rc<H>,
    stats: Rc<HttpStats>,
    stop: CancellationToken,
) where
    H: Fn(&Request<'_>) -> Answer + 'static,
{
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                // Out of file descriptors and the like: the run's counts will show it.
                Err(_) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        stats.connections.set(stats.connections.get() + 1);
        tokio::task::spawn_local(serve(stream, handler.clone(), stats.clone(), stop.clone()));
    }
}

/// One connection: answers every complete request in the buffer, in order, with one write.
async fn serve<H>(
    mut stream: TcpStream,
    handler: Rc<H>,
    stats: Rc<HttpStats>,
    stop: CancellationToken,
) where
    H: Fn(&Request<'_>) -> Answer,
{
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let mut pos = 0;
        let mut close = false;
        while !close {
            match parse(&buf[pos..]) {
                Parsed::Incomplete => break,
                Parsed::Bad => {
                    stats.malformed.set(stats.malformed.get() + 1);
                    out.extend_from_slice(BAD_REQUEST_CLOSE);
                    close = true;
                }
                Parsed::Complete {
                    len,
                    request,
                    keep_alive,
                } => {
                    stats.requests.set(stats.requests.get() + 1);
                    write_answer(handler(&request), keep_alive, &mut out);
                    pos += len;
                    close = !keep_alive;
                }
            }
        }
        buf.drain(..pos);
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if close {
            return;
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(READ_CHUNK);
        }
        let n = tokio::select! {
            _ = stop.cancelled() => return,
            r = stream.read_buf(&mut buf) => r,
        };
        match n {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

const BAD_REQUEST_CLOSE: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

fn write_answer(a: Answer, keep_alive: bool, out: &mut Vec<u8>) {
    let close: &[u8] = if keep_alive {
        b""
    } else {
        b"connection: close\r\n"
    };
    match a {
        Answer::Json(body) => {
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n");
            out.extend_from_slice(close);
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(body);
        }
        Answer::NoContent => {
            out.extend_from_slice(b"HTTP/1.1 204 No Content\r\n");
            out.extend_from_slice(close);
            out.extend_from_slice(b"\r\n");
        }
        Answer::BadRequest => {
            out.extend_from_slice(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n");
            out.extend_from_slice(close);
            out.extend_from_slice(b"\r\n");
        }
    }
}

enum Parsed<'a> {
    Incomplete,
    Bad,
    Complete {
        /// Bytes of the buffer the request took.
        len: usize,
        request: Request<'a>,
        keep_alive: bool,
    },
}

static HEAD_END: std::sync::LazyLock<memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memmem::Finder::new(b"\r\n\r\n"));

/// The first request of `b`, if it is all there.
fn parse(b: &[u8]) -> Parsed<'_> {
    let Some(head_len) = HEAD_END.find(b) else {
        return if b.len() > MAX_HEAD {
            Parsed::Bad
        } else {
            Parsed::Incomplete
        };
    };
    let head = &b[..head_len];
    let mut lines = head.split(|&c| c == b'\n').map(|l| l.trim_ascii_end());
    let mut parts = lines.next().unwrap_or_default().split(|&c| c == b' ');
    let (Some(method), Some(_path), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parsed::Bad;
    };
    let mut keep_alive = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        _ => return Parsed::Bad,
    };
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    for line in lines {
        let Some(colon) = memchr::memchr(b':', line) else {
            return Parsed::Bad;
        };
        let name = &line[..colon];
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            match std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()) {
                Some(n) if n <= MAX_BODY => content_length = Some(n),
                _ => return Parsed::Bad,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = value.eq_ignore_ascii_case(b"chunked");
            if !chunked {
                return Parsed::Bad;
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            if value.eq_ignore_ascii_case(b"close") {
                keep_alive = false;
            } else if value.eq_ignore_ascii_case(b"keep-alive") {
                keep_alive = true;
            }
        }
    }
    let body_start = head_len + 4;
    let rest = &b[body_start..];
    let (body, body_len) = if chunked {
        match dechunk(rest) {
            Dechunked::Incomplete => return Parsed::Incomplete,
            Dechunked::Bad => return Parsed::Bad,
            Dechunked::Done { body, len } => (std::borrow::Cow::Owned(body), len),
        }
    } else {
        let n = content_length.unwrap_or(0);
        if rest.len() < n {
            return Parsed::Incomplete;
        }
        (std::borrow::Cow::Borrowed(&rest[..n]), n)
    };
    Parsed::Complete {
        len: body_start + body_len,
        request: Request { method, body },
        keep_alive,
    }
}

enum Dechunked {
    Incomplete,
    Bad,
    Done { body: Vec<u8>, len: usize },
}

/// A chunked body: `<hex size>[;ext]\r\n<data>\r\n` … `0\r\n` [trailers] `\r\n`.
fn dechunk(b: &[u8]) -> Dechunked {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(eol) = memmem::find(&b[at..], b"\r\n") else {
            return Dechunked::Incomplete;
        };
        let line = &b[at..at + eol];
        let hex = line.split(|&c| c == b';').next().unwrap_or_default();
        let Some(size) = std::str::from_utf8(hex.trim_ascii())
            .ok()
            .and_then(|h| usize::from_str_radix(h, 16).ok())
        else {
            return Dechunked::Bad;
        };
        at += eol + 2;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let Some(eol) = memmem::find(&b[at..], b"\r\n") else {
                    return Dechunked::Incomplete;
                };
                at += eol + 2;
                if eol == 0 {
                    return Dechunked::Done { body, len: at };
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Dechunked::Bad;
        }
        if b.len() < at + size + 2 {
            return Dechunked::Incomplete;
        }
        body.extend_from_slice(&b[at..at + size]);
        if &b[at + size..at + size + 2] != b"\r\n" {
            return Dechunked::Bad;
        }
        at += size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(b: &[u8]) -> (usize, Vec<u8>, bool) {
        match parse(b) {
            Parsed::Complete {
                len,
                request,
                keep_alive,
            } => (len, request.body.into_owned(), keep_alive),
            Parsed::Incomplete => panic!("incomplete"),
            Parsed::Bad => panic!("bad"),
        }
    }

    #[test]
    fn content_length_bodies_and_pipelining() {
        let two = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nabPOST /p HTTP/1.1\r\ncontent-length: 0\r\n\r\n";
        let (len, body, keep) = complete(two);
        assert_eq!((body.as_slice(), keep), (&b"ab"[..], true));
        let (len2, body2, _) = complete(&two[len..]);
        assert_eq!(len + len2, two.len());
        assert!(body2.is_empty());
        for cut in 0..len {
            assert!(
                matches!(parse(&two[..cut]), Parsed::Incomplete),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn chunked_bodies_are_joined() {
        let r = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\n[1,\r\n2\r\n2]\r\n0\r\nT: v\r\n\r\nnext";
        let (len, body, _) = complete(r);
        assert_eq!(body, b"[1,2]");
        assert_eq!(&r[len..], b"next");
        for cut in 0..len {
            assert!(
                matches!(parse(&r[..cut]), Parsed::Incomplete),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn close_and_http_1_0() {
        let (_, _, keep) = complete(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(!keep);
        let (_, _, keep) = complete(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!keep);
        let (_, _, keep) = complete(b"GET / HTTP/1.0\r\nconnection: Keep-Alive\r\n\r\n");
        assert!(keep);
        assert!(matches!(parse(b"GARBAGE\r\n\r\n"), Parsed::Bad));
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\ncontent-length: x\r\n\r\n"),
            Parsed::Bad
        ));
    }

    #[test]
    fn answers_are_http_1_1() {
        let mut out = Vec::new();
        write_answer(Answer::Json(br#"{"allow":true}"#), true, &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 14\r\n\r\n{\"allow\":true}"
        );
        out.clear();
        write_answer(Answer::NoContent, false, &mut out);
        assert_eq!(out, b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn serves_keep_alive_requests() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let server = HttpServer::start(0, |r| {
                    assert_eq!(r.method, b"POST");
                    Answer::Json(br#"{"allow":true}"#)
                })
                .await
                .unwrap();
                let mut s = TcpStream::connect(server.addr).await.unwrap();
                let req = b"POST /x HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}";
                s.write_all(&[&req[..], &req[..]].concat()).await.unwrap();
                let want = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 14\r\n\r\n{\"allow\":true}".repeat(2);
                let mut got = vec![0; want.len()];
                s.read_exact(&mut got).await.unwrap();
                assert_eq!(got, want);
                assert_eq!(server.stats.requests.get(), 2);
                assert_eq!(server.stats.connections.get(), 1);
            })
            .await;
    }
}
