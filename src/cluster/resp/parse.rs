//! Parsing replies in place: [`parse`] takes one complete reply off the front of a read
//! buffer, its strings sharing the buffer's memory, or says it needs more bytes.
//!
//! Two passes over a reply: the first only finds where it ends (nothing is allocated for a
//! reply that is still incomplete, however often the buffer is looked at); the second
//! splits it off and builds it.

use bytes::{Bytes, BytesMut};

/// Nesting deeper than this is refused: no reply Herald asks for comes near it.
const MAX_DEPTH: usize = 8;

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(Bytes),
    Error(Bytes),
    Int(i64),
    Bulk(Bytes),
    Nil,
    Array(Vec<Reply>),
}

impl Reply {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// A bulk or status string.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Reply::Bulk(b) | Reply::Status(b) => Some(b),
            _ => None,
        }
    }

    pub fn error_text(&self) -> Option<String> {
        match self {
            Reply::Error(e) => Some(String::from_utf8_lossy(e).into_owned()),
            _ => None,
        }
    }
}

/// Bytes from Redis that are not RESP2: the connection cannot be read any further.
#[derive(Debug, Clone, thiserror::Error)]
#[error("bad reply from Redis: {0}")]
pub struct ProtocolError(&'static str);

/// Takes one reply off the front of `buf`; `Ok(None)` when it is not complete yet.
pub fn parse(buf: &mut BytesMut) -> Result<Option<Reply>, ProtocolError> {
    let Some(end) = scan(buf, 0, 0)? else {
        return Ok(None);
    };
    let bytes = buf.split_to(end).freeze();
    let (reply, _) = build(&bytes, 0);
    Ok(Some(reply))
}

/// Where the line starting at `pos` ends (the index of its `\r`), if it is complete.
fn line_end(buf: &[u8], pos: usize) -> Option<usize> {
    let i = memchr::memchr(b'\r', buf.get(pos..)?)? + pos;
    (i + 1 < buf.len()).then_some(i)
}

fn number(line: &[u8]) -> Result<i64, ProtocolError> {
    let (neg, digits) = match line.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, line),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(ProtocolError("bad number"));
    }
    let n = digits
        .iter()
        .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
    Ok(if neg { -n } else { n })
}

/// The end of the reply starting at `pos`, if it is complete.
fn scan(buf: &[u8], pos: usize, depth: usize) -> Result<Option<usize>, ProtocolError> {
    if depth > MAX_DEPTH {
        return Err(ProtocolError("nested too deep"));
    }
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some(eol) = line_end(buf, pos + 1) else {
        return Ok(None);
    };
    if buf[eol + 1] != b'\n' {
        return Err(ProtocolError("line not ended by CRLF"));
    }
    let after = eol + 2;
    match kind {
        b'+' | b'-' => Ok(Some(after)),
        b':' => number(&buf[pos + 1..eol]).map(|_| Some(after)),
        b'$' => {
            let len = number(&buf[pos + 1..eol])?;
            if len < 0 {
                return Ok(Some(after));
            }
            let end = after + len as usize + 2;
            if buf.len() < end {
                return Ok(None);
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Err(ProtocolError("bulk string not ended by CRLF"));
            }
            Ok(Some(end))
        }
        b'*' => {
            let n = number(&buf[pos + 1..eol])?;
            let mut at = after;
            for _ in 0..n.max(0) {
                match scan(buf, at, depth + 1)? {
                    Some(e) => at = e,
                    None => return Ok(None),
                }
            }
            Ok(Some(at))
        }
        _ => Err(ProtocolError("unknown reply type")),
    }
}

/// Builds the reply starting at `pos` of a buffer [`scan`] found complete.
fn build(bytes: &Bytes, pos: usize) -> (Reply, usize) {
    let kind = bytes[pos];
    let eol = line_end(bytes, pos + 1).expect("scanned");
    let line = bytes.slice(pos + 1..eol);
    let after = eol + 2;
    let num = || number(&line).expect("scanned");
    match kind {
        b'+' => (Reply::Status(line), after),
        b'-' => (Reply::Error(line), after),
        b':' => (Reply::Int(num()), after),
        b'$' => {
            let len = num();
            if len < 0 {
                return (Reply::Nil, after);
            }
            let end = after + len as usize;
            (Reply::Bulk(bytes.slice(after..end)), end + 2)
        }
        _ => {
            let n = num();
            if n < 0 {
                return (Reply::Nil, after);
            }
            let mut items = Vec::with_capacity(n as usize);
            let mut at = after;
            for _ in 0..n {
                let (item, next) = build(bytes, at);
                items.push(item);
                at = next;
            }
            (Reply::Array(items), at)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8]) -> Vec<Reply> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(r) = parse(&mut buf).unwrap() {
            out.push(r);
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        out
    }

    #[test]
    fn parses_every_kind() {
        let got = all(
            b"+OK\r\n-ERR no\r\n:-12\r\n$3\r\na\r\n\r\n$-1\r\n*-1\r\n*2\r\n:1\r\n*1\r\n$0\r\n\r\n",
        );
        assert_eq!(
            got,
            vec![
                Reply::Status(Bytes::from_static(b"OK")),
                Reply::Error(Bytes::from_static(b"ERR no")),
                Reply::Int(-12),
                Reply::Bulk(Bytes::from_static(b"a\r\n")),
                Reply::Nil,
                Reply::Nil,
                Reply::Array(vec![
                    Reply::Int(1),
                    Reply::Array(vec![Reply::Bulk(Bytes::new())])
                ]),
            ]
        );
    }

    #[test]
    fn waits_for_the_rest_at_every_cut() {
        let whole = b"*3\r\n$7\r\nmessage\r\n$4\r\nchan\r\n$5\r\nhello\r\n";
        for cut in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..cut]);
            assert_eq!(parse(&mut buf).unwrap(), None, "cut at {cut}");
            assert_eq!(buf.len(), cut, "nothing taken at {cut}");
            buf.extend_from_slice(&whole[cut..]);
            assert!(matches!(parse(&mut buf).unwrap(), Some(Reply::Array(_))));
        }
    }

    #[test]
    fn refuses_what_is_not_resp() {
        for bad in [
            &b"?x\r\n"[..],
            b":12a\r\n",
            b"$3\r\nabcd\r\n",
            b"+OK\rx",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
        ] {
            let mut buf = BytesMut::from(bad);
            assert!(parse(&mut buf).is_err(), "{bad:?}");
        }
    }
}
