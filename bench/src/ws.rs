//! A minimal WebSocket client for the load tool: the handshake, masked client frames, and
//! server frames parsed in place from one read buffer.
//!
//! The load tool runs on one core and has to consume millions of deliveries per second, more
//! cheaply than the server under test produces them. A general client (tokio-tungstenite)
//! builds a `Message` and validates UTF-8 for every frame; here a frame is a slice of the read
//! buffer, looked at and dropped, with no allocation per message. Only what a benchmark client
//! needs is handled: no extensions, no TLS; pings are answered by the caller.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::BenchError;

/// Read buffer size under load (a connection's buffer grows to this when busy).
const READ_CHUNK: usize = 64 * 1024;
/// Largest frame accepted from a server (the tool never asks for large ones).
const MAX_FRAME: usize = 16 * 1024 * 1024;

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// A `ws://host:port/path?query` address.
#[derive(Debug, Clone)]
pub struct WsUrl {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
}

impl WsUrl {
    pub fn parse(url: &str) -> Result<WsUrl, BenchError> {
        let bad = |why: &str| BenchError::Usage(format!("bad URL '{url}': {why}"));
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| bad("only ws:// URLs are supported"))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr: SocketAddr = host
            .parse()
            .or_else(|_| {
                std::net::ToSocketAddrs::to_socket_addrs(host)
                    .ok()
                    .and_then(|mut a| a.find(|a| a.is_ipv4()))
                    .ok_or(())
            })
            .map_err(|_| bad("expected host:port"))?;
        Ok(WsUrl {
            addr,
            host: host.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// One client connection: the socket and its unparsed input.
pub struct WsConn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// Start of the unparsed bytes in `buf`.
    pos: usize,
    mask: [u8; 4],
    /// Payload of a fragmented message being assembled (rare: servers send whole frames).
    partial: Vec<u8>,
    partial_op: u8,
}

/// A frame borrowed from the connection's read buffer.
pub struct Frame<'a> {
    pub opcode: u8,
    pub payload: &'a [u8],
}

impl WsConn {
    /// Connects from `source` (a loopback address, so that many connections do not run out of
    /// ephemeral ports) and performs the opening handshake.
    pub async fn connect(url: &WsUrl, source: Option<IpAddr>) -> Result<WsConn, BenchError> {
        let socket = TcpSocket::new_v4()?;
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let mut stream = socket.connect(url.addr).await?;
        stream.set_nodelay(true)?;
        let key = generate_key();
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            url.path, url.host
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buf = Vec::with_capacity(1024);
        let end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 16 * 1024 {
                return Err(BenchError::Handshake("response headers too long".into()));
            }
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(BenchError::Handshake("closed during the handshake".into()));
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let status = head.lines().next().unwrap_or_default();
        if !status.contains(" 101 ") {
            return Err(BenchError::Handshake(format!(
                "expected 101, got '{status}'"
            )));
        }
        let accept = derive_accept_key(key.as_bytes());
        let accepted = head.lines().any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == accept
            })
        });
        if !accepted {
            return Err(BenchError::Handshake("wrong Sec-WebSocket-Accept".into()));
        }
        buf.drain(..end);
        Ok(WsConn {
            stream,
            buf,
            pos: 0,
            mask: rand::random(),
            partial: Vec::new(),
            partial_op: 0,
        })
    }

    /// The masking key of this connection's frames (see [`encode_frame`]).
    pub fn mask(&self) -> [u8; 4] {
        self.mask
    }

    /// Appends a masked client frame holding `payload` to `out`.
    pub fn encode(&self, opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
        encode_frame(self.mask, opcode, payload, out);
    }

    /// Sends one frame now.
    pub async fn send(&mut self, opcode: u8, payload: &[u8]) -> Result<(), BenchError> {
        let mut out = Vec::with_capacity(payload.len() + 14);
        self.encode(opcode, payload, &mut out);
        self.stream.write_all(&out).await?;
        Ok(())
    }

    /// Reads more bytes from the socket. Returns false when the server closed it.
    /// Cancel-safe: bytes land in the buffer's spare capacity only once read.
    pub async fn fill(&mut self) -> Result<bool, BenchError> {
        self.make_room();
        Ok(self.stream.read_buf(&mut self.buf).await? > 0)
    }

    /// Reads without waiting: `Ok(true)` if bytes came, `Ok(false)` if none were ready.
    pub fn try_fill(&mut self) -> Result<bool, BenchError> {
        self.make_room();
        match self.stream.try_read_buf(&mut self.buf) {
            Ok(0) => Err(BenchError::Closed(
                "the server closed the connection".into(),
            )),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Drops parsed bytes and makes sure a read has room. Buffers start small (idle
    /// connections are many) and grow to [`READ_CHUNK`] under load.
    fn make_room(&mut self) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.capacity() - self.buf.len() < 4096 {
            let grow = self.buf.capacity().clamp(4096, READ_CHUNK);
            self.buf.reserve(grow);
        }
    }

    /// The next complete frame in the buffer, if any. Fragmented messages come out whole,
    /// with the first fragment's opcode.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, BenchError> {
        // Offsets first, the borrow of the buffer last (one return point keeps the borrow
        // checker happy).
        let whole = loop {
            let Some((fin, opcode, start, len)) = parse_header(&self.buf[self.pos..])? else {
                return Ok(None);
            };
            let begin = self.pos + start;
            self.pos = begin + len;
            if fin && opcode != OP_CONT {
                break Some((opcode, begin, len));
            }
            // A fragment: collect until the final one.
            if opcode != OP_CONT {
                self.partial.clear();
                self.partial_op = opcode;
            }
            self.partial
                .extend_from_slice(&self.buf[begin..begin + len]);
            if fin {
                break None;
            }
        };
        Ok(Some(match whole {
            Some((opcode, begin, len)) => Frame {
                opcode,
                payload: &self.buf[begin..begin + len],
            },
            None => Frame {
                opcode: self.partial_op,
                payload: &self.partial,
            },
        }))
    }
}

/// `(fin, opcode, header length, payload length)` of the frame at the start of `b`, or
/// `None` until all of it has arrived.
fn parse_header(b: &[u8]) -> Result<Option<(bool, u8, usize, usize)>, BenchError> {
    if b.len() < 2 {
        return Ok(None);
    }
    let fin = b[0] & 0x80 != 0;
    let opcode = b[0] & 0x0F;
    if b[1] & 0x80 != 0 {
        return Err(BenchError::Protocol(
            "the server sent a masked frame".into(),
        ));
    }
    let (start, len) = match b[1] & 0x7F {
        126 => {
            if b.len() < 4 {
                return Ok(None);
            }
            (4, u16::from_be_bytes([b[2], b[3]]) as usize)
        }
        127 => {
            if b.len() < 10 {
                return Ok(None);
            }
            let mut n = [0u8; 8];
            n.copy_from_slice(&b[2..10]);
            (10, u64::from_be_bytes(n) as usize)
        }
        n => (2, n as usize),
    };
    if len > MAX_FRAME {
        return Err(BenchError::Protocol(format!("frame of {len} bytes")));
    }
    if b.len() < start + len {
        return Ok(None);
    }
    Ok(Some((fin, opcode, start, len)))
}

/// Appends one final client frame (masked, as RFC 6455 requires of clients) to `out`.
pub fn encode_frame(mask: [u8; 4], opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    for (i, b) in out[start..].iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_the_header_parser() {
        for len in [0usize, 5, 125, 126, 300, 65535, 65536] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = Vec::new();
            encode_frame([1, 2, 3, 4], OP_TEXT, &payload, &mut out);
            // A server frame is the same without the mask: strip it to parse.
            let mut server = vec![out[0], out[1] & 0x7F];
            let hdr = match out[1] & 0x7F {
                126 => 4,
                127 => 10,
                _ => 2,
            };
            server.extend_from_slice(&out[2..hdr]);
            let body: Vec<u8> = out[hdr + 4..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ [1, 2, 3, 4][i & 3])
                .collect();
            assert_eq!(body, payload);
            server.extend_from_slice(&body);
            let (fin, op, start, n) = parse_header(&server).unwrap().unwrap();
            assert!(fin);
            assert_eq!((op, n), (OP_TEXT, len));
            assert_eq!(&server[start..start + n], &payload[..]);
            assert!(parse_header(&server[..server.len() - 1]).unwrap().is_none() || len == 0);
        }
    }

    #[test]
    fn urls_parse() {
        let u = WsUrl::parse("ws://127.0.0.1:9300/socket.io/?EIO=4&transport=websocket").unwrap();
        assert_eq!(u.addr.port(), 9300);
        assert_eq!(u.path, "/socket.io/?EIO=4&transport=websocket");
        assert_eq!(WsUrl::parse("ws://127.0.0.1:9222").unwrap().path, "/");
        assert!(WsUrl::parse("http://x").is_err());
    }
}
