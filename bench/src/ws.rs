//! A minimal WebSocket client for the load tool: the handshake, masked client frames, and
//! server frames parsed in place from one read buffer.
//!
//! The load tool runs on one core and has to consume millions of deliveries per second, more
//! cheaply than the server under test produces them. A general client (tokio-tungstenite)
//! builds a `Message` and validates UTF-8 for every frame; here a frame is a slice of the read
//! buffer, looked at and dropped, with no allocation per message. Only what a benchmark client
//! needs is handled: no TLS; pings are answered by the caller. One extension:
//! permessage-deflate (RFC 7692), when asked for (`--deflate`): the client offers it, inflates
//! what the server compressed, and sends uncompressed (which RFC 7692 allows).

use std::net::{IpAddr, SocketAddr};

use flate2::{Decompress, FlushDecompress};
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
    /// The first fragment of `partial` had RSV1 set (compressed).
    partial_rsv1: bool,
    /// Bytes read from the socket after the handshake.
    bytes_in: u64,
    /// permessage-deflate was negotiated.
    inflater: Option<Inflater>,
}

/// The receiving side of permessage-deflate.
struct Inflater {
    /// Inflate one compressed message in this many (`--inflate-every`); the others stand for
    /// a Herald `msg` unread (see [`WsConn::connect`]).
    every: u32,
    seen: u32,
    d: Decompress,
    /// The server said `server_no_context_takeover`: each message inflates on its own.
    reset: bool,
    out: Vec<u8>,
}

/// What a compressed Herald frame left uninflated stands for (`--inflate-every`).
pub const SKIPPED: &[u8] = br#"{"op":"msg"}"#;

/// What a client offers with `--deflate` (what browsers offer, and no context takeover for
/// what it sends, which it never compresses anyway).
const DEFLATE_OFFER: &str = "permessage-deflate; client_no_context_takeover";

/// A frame borrowed from the connection's read buffer.
pub struct Frame<'a> {
    pub opcode: u8,
    pub payload: &'a [u8],
}

impl WsConn {
    /// Connects from `source` (a loopback address, so that many connections do not run out of
    /// ephemeral ports) and performs the opening handshake.
    ///
    /// `deflate`: offer permessage-deflate and inflate one compressed message in `deflate`
    /// (`Some(1)`: all of them). Skipping is for Herald only, whose compressed frames are
    /// `msg`s (its other frames are short, under its 256-byte threshold): a skipped one comes
    /// out as [`SKIPPED`], without its send time. Inflating every delivery costs a client
    /// more than the server's whole delivery, so a one-core tool inflating all of them
    /// measures itself, not the server.
    pub async fn connect(
        url: &WsUrl,
        source: Option<IpAddr>,
        deflate: Option<u32>,
    ) -> Result<WsConn, BenchError> {
        let socket = TcpSocket::new_v4()?;
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let mut stream = socket.connect(url.addr).await?;
        stream.set_nodelay(true)?;
        let key = generate_key();
        let offer = if deflate.is_some() {
            format!("Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n")
        } else {
            String::new()
        };
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n",
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
        let extensions = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| v.trim().to_ascii_lowercase())
        });
        let inflater = match extensions {
            Some(e) if deflate.is_some() && e.starts_with("permessage-deflate") => Some(Inflater {
                every: deflate.unwrap_or(1).max(1),
                seen: 0,
                d: Decompress::new(false),
                reset: e.contains("server_no_context_takeover"),
                out: Vec::new(),
            }),
            Some(e) => {
                return Err(BenchError::Handshake(format!(
                    "an extension that was not offered: {e}"
                )));
            }
            None if deflate.is_some() => {
                return Err(BenchError::Handshake(
                    "permessage-deflate was offered and declined".into(),
                ));
            }
            None => None,
        };
        buf.drain(..end);
        Ok(WsConn {
            stream,
            buf,
            pos: 0,
            mask: rand::random(),
            partial: Vec::new(),
            partial_op: 0,
            partial_rsv1: false,
            bytes_in: 0,
            inflater,
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
        let n = self.stream.read_buf(&mut self.buf).await?;
        self.bytes_in += n as u64;
        Ok(n > 0)
    }

    /// Bytes read from the socket since the handshake (frames as they were on the wire).
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    /// Reads without waiting: `Ok(true)` if bytes came, `Ok(false)` if none were ready.
    pub fn try_fill(&mut self) -> Result<bool, BenchError> {
        self.make_room();
        match self.stream.try_read_buf(&mut self.buf) {
            Ok(0) => Err(BenchError::Closed(
                "the server closed the connection".into(),
            )),
            Ok(n) => {
                self.bytes_in += n as u64;
                Ok(true)
            }
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
    /// with the first fragment's opcode; compressed ones (RSV1) inflated.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, BenchError> {
        // Offsets first, the borrow of the buffer last (one return point keeps the borrow
        // checker happy).
        let whole = loop {
            let Some((fin, rsv1, opcode, start, len)) = parse_header(&self.buf[self.pos..])? else {
                return Ok(None);
            };
            let begin = self.pos + start;
            self.pos = begin + len;
            if fin && opcode != OP_CONT {
                break Some((opcode, rsv1, begin, len));
            }
            // A fragment: collect until the final one.
            if opcode != OP_CONT {
                self.partial.clear();
                self.partial_op = opcode;
                self.partial_rsv1 = rsv1;
            }
            self.partial
                .extend_from_slice(&self.buf[begin..begin + len]);
            if fin {
                break None;
            }
        };
        let (opcode, rsv1, payload) = match whole {
            Some((opcode, rsv1, begin, len)) => (opcode, rsv1, &self.buf[begin..begin + len]),
            None => (self.partial_op, self.partial_rsv1, &self.partial[..]),
        };
        if !rsv1 {
            return Ok(Some(Frame { opcode, payload }));
        }
        let Some(inf) = self.inflater.as_mut() else {
            return Err(BenchError::Protocol(
                "a compressed frame without permessage-deflate".into(),
            ));
        };
        inf.seen = inf.seen.wrapping_add(1);
        if inf.seen % inf.every != 0 && inf.reset {
            return Ok(Some(Frame {
                opcode,
                payload: SKIPPED,
            }));
        }
        inflate(inf, payload)?;
        Ok(Some(Frame {
            opcode,
            payload: &inf.out,
        }))
    }
}

/// Inflates one compressed message into `inf.out` (RFC 7692 §7.2.2: the tail `00 00 ff ff`
/// appended).
fn inflate(inf: &mut Inflater, payload: &[u8]) -> Result<(), BenchError> {
    if inf.reset {
        inf.d.reset(false);
    }
    inf.out.clear();
    let bad = |_| BenchError::Protocol("a compressed frame does not inflate".into());
    for mut input in [payload, &[0x00, 0x00, 0xff, 0xff][..]] {
        loop {
            if inf.out.capacity() - inf.out.len() < 1024 {
                inf.out.reserve((payload.len() * 4).max(4096));
            }
            let spare = inf.out.capacity() - inf.out.len();
            let (took, gave) = (inf.d.total_in(), inf.d.total_out());
            inf.d
                .decompress_vec(input, &mut inf.out, FlushDecompress::None)
                .map_err(bad)?;
            let took = (inf.d.total_in() - took) as usize;
            let gave = (inf.d.total_out() - gave) as usize;
            input = &input[took..];
            if input.is_empty() && gave < spare {
                break;
            }
            if took == 0 && gave == 0 {
                return Err(BenchError::Protocol(
                    "a compressed frame does not inflate".into(),
                ));
            }
            if inf.out.len() > MAX_FRAME {
                return Err(BenchError::Protocol(
                    "a frame that inflates too large".into(),
                ));
            }
        }
    }
    Ok(())
}

/// `(fin, rsv1, opcode, header length, payload length)` of the frame at the start of `b`, or
/// `None` until all of it has arrived.
#[allow(clippy::type_complexity)]
fn parse_header(b: &[u8]) -> Result<Option<(bool, bool, u8, usize, usize)>, BenchError> {
    if b.len() < 2 {
        return Ok(None);
    }
    let fin = b[0] & 0x80 != 0;
    let rsv1 = b[0] & 0x40 != 0;
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
    Ok(Some((fin, rsv1, opcode, start, len)))
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
            let (fin, rsv1, op, start, n) = parse_header(&server).unwrap().unwrap();
            assert!(fin && !rsv1);
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
