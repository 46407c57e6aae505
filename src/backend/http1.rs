//! One HTTP/1.1 exchange on a connection the caller owns: the request goes out in one write
//! and the answer is read off the same socket by the same task.
//!
//! Why not hyper's pooled client: it runs each connection in a task of its own and passes
//! every request and answer across channels, so a call costs two extra task wakeups and a
//! pool lock on top of its two syscalls. A proxied publish pays one call each, at tens of
//! thousands a second (BENCHMARKS.md, issue 23). What Herald sends is one shape (a POST of
//! JSON), so only the answer needs a general reader: any framing (length, chunked, until
//! close), interim 1xx answers, and keep-alive as the server allows it.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest answer head (status line and headers).
const MAX_HEAD: usize = 64 << 10;
/// Most answer headers read.
const MAX_HEADERS: usize = 64;
/// Longest chunk-size line of a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
/// How much is read at a time.
const READ_AHEAD: usize = 8192;

/// A complete answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
    /// Whether the connection may carry another request: the server keeps it alive and the
    /// body's end was known without closing it.
    pub reusable: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The connection ended before any byte of an answer. On a pooled connection this is
    /// the server having closed it while idle, so the request is sent again on a new one.
    #[error("the connection closed before an answer")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed answer: {0}")]
    Malformed(String),
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
}

/// How the answer's body ends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// A parsed answer head.
struct Head {
    status: u16,
    framing: Framing,
    keep_alive: bool,
    len: usize,
}

/// Writes `request` (a whole HTTP/1.1 request) and reads its answer, with a body of at most
/// `max_body` bytes.
pub async fn exchange<S>(
    s: &mut S,
    request: &[u8],
    max_body: usize,
) -> Result<Answer, ExchangeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Err(e) = s.write_all(request).await {
        return Err(if closed(&e) {
            ExchangeError::Closed
        } else {
            e.into()
        });
    }
    let mut buf = BytesMut::with_capacity(READ_AHEAD);
    let mut answered = false;
    loop {
        let head = loop {
            if let Some(h) = parse_head(&buf)? {
                break h;
            }
            if buf.len() >= MAX_HEAD {
                return Err(ExchangeError::Malformed(format!(
                    "head longer than {MAX_HEAD} bytes"
                )));
            }
            let n = match read_more(s, &mut buf).await {
                Err(ExchangeError::Closed) => 0,
                r => r?,
            };
            if n == 0 {
                return Err(if answered || !buf.is_empty() {
                    ExchangeError::Malformed("closed inside the head".into())
                } else {
                    ExchangeError::Closed
                });
            }
            answered = true;
        };
        let _ = buf.split_to(head.len);
        if (100..200).contains(&head.status) {
            // An interim answer (100 Continue, 103 Early Hints): the real one follows.
            continue;
        }
        let body = read_body(s, &mut buf, head.framing, max_body).await?;
        return Ok(Answer {
            status: head.status,
            body,
            // Bytes past the body would be an answer nobody asked for: do not reuse that.
            reusable: head.keep_alive && head.framing != Framing::UntilClose && buf.is_empty(),
        });
    }
}

/// Reads more into `buf`; `Ok(0)` at the end of the stream. A reset counts as `Closed`.
async fn read_more<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
) -> Result<usize, ExchangeError> {
    buf.reserve(READ_AHEAD);
    match s.read_buf(buf).await {
        Ok(n) => Ok(n),
        Err(e) if closed(&e) => Err(ExchangeError::Closed),
        Err(e) => Err(e.into()),
    }
}

fn closed(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
    )
}

/// The head at the start of `buf`, once it is all there.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, ExchangeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ExchangeError::Malformed(e.to_string())),
    };
    let status = resp.code.unwrap_or(0);
    let http11 = resp.version == Some(1);
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut coded = false;
    let mut close = false;
    let mut keep_alive = false;
    for h in resp.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| ExchangeError::Malformed(format!("header {} is not UTF-8", h.name)))?;
        if h.name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .trim()
                .parse()
                .map_err(|_| ExchangeError::Malformed(format!("content-length {value:?}")))?;
            if length.is_some_and(|l| l != n) {
                return Err(ExchangeError::Malformed("two content-lengths".into()));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // The body is chunked when chunked is the last coding (RFC 9112 §6.3).
            coded = true;
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                close |= token.eq_ignore_ascii_case("close");
                keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        }
    }
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Length(0)
    } else if coded {
        // A transfer coding overrides any length; one that is not chunked ends at close.
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok(Some(Head {
        status,
        framing,
        keep_alive: !close && (http11 || keep_alive),
        len,
    }))
}

async fn read_body<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    framing: Framing,
    max: usize,
) -> Result<Bytes, ExchangeError> {
    let cut = |what: &str| ExchangeError::Malformed(format!("closed inside the {what}"));
    match framing {
        Framing::Length(n) => {
            if n > max {
                return Err(ExchangeError::TooLarge(max));
            }
            while buf.len() < n {
                if read_more(s, buf).await? == 0 {
                    return Err(cut("body"));
                }
            }
            Ok(buf.split_to(n).freeze())
        }
        Framing::UntilClose => {
            loop {
                if buf.len() > max {
                    return Err(ExchangeError::TooLarge(max));
                }
                match read_more(s, buf).await {
                    Ok(0) | Err(ExchangeError::Closed) => break,
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(buf.split().freeze())
        }
        Framing::Chunked => {
            let mut body = BytesMut::new();
            loop {
                let line = read_line(s, buf, "chunked body").await?;
                let size = line[..].split(|&b| b == b';').next().unwrap_or_default();
                let size = std::str::from_utf8(size)
                    .ok()
                    .and_then(|t| usize::from_str_radix(t.trim(), 16).ok())
                    .ok_or_else(|| {
                        ExchangeError::Malformed(format!(
                            "chunk size {:?}",
                            String::from_utf8_lossy(&line)
                        ))
                    })?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    while !read_line(s, buf, "trailers").await?.is_empty() {}
                    return Ok(body.freeze());
                }
                if body.len().saturating_add(size) > max {
                    return Err(ExchangeError::TooLarge(max));
                }
                while buf.len() < size + 2 {
                    if read_more(s, buf).await? == 0 {
                        return Err(cut("chunked body"));
                    }
                }
                body.extend_from_slice(&buf[..size]);
                if &buf[size..size + 2] != b"\r\n" {
                    return Err(ExchangeError::Malformed("chunk without its CRLF".into()));
                }
                let _ = buf.split_to(size + 2);
            }
        }
    }
}

/// The next CRLF-ended line (without the CRLF), taken off `buf`.
async fn read_line<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    what: &str,
) -> Result<BytesMut, ExchangeError> {
    loop {
        if let Some(i) = memchr::memmem::find(buf, b"\r\n") {
            let mut line = buf.split_to(i + 2);
            line.truncate(i);
            return Ok(line);
        }
        if buf.len() > MAX_CHUNK_LINE {
            return Err(ExchangeError::Malformed(format!(
                "a line of the {what} too long"
            )));
        }
        if read_more(s, buf).await? == 0 {
            return Err(ExchangeError::Malformed(format!(
                "closed inside the {what}"
            )));
        }
    }
}

#[cfg(test)]
mod tests;
