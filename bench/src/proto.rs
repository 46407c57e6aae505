//! The three protocols the load tool speaks, behind one client type: Herald v1 (JSON text
//! frames), NATS over WebSocket (a byte stream in binary frames) and Socket.IO 4 (Engine.IO v4
//! packets in text frames).
//!
//! Every scenario is written once against [`Client`]: subscribe to a topic or pattern, encode
//! publishes into a buffer, and read deliveries. A delivery is handed to the caller as the
//! message payload (the bytes after its opening quote, where the send time is written), without
//! decoding the rest of the frame: decoding every delivery would make the tool, not the
//! server, the bottleneck. Herald's control frames (`sub`, `gap`, `error`) go through the
//! `herald-protocol` types, so that the tool and the server agree on them.

use std::net::IpAddr;
use std::time::Duration;

use herald_protocol::{ClientFrame, Id, ServerFrame};
use memchr::memmem;
use tokio::io::AsyncWriteExt;

use super::BenchError;
use super::ws::{self, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, WsConn, WsUrl};

/// Which server the tool talks to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Herald v1
    Herald,
    /// nats-server's WebSocket listener
    Nats,
    /// A Socket.IO 4 server (`bench/peers/socketio-server.mjs`); rooms stand for topics
    Socketio,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Herald => "herald",
            Target::Nats => "nats",
            Target::Socketio => "socketio",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Target::Herald => "Herald",
            Target::Nats => "NATS (WebSocket)",
            Target::Socketio => "Socket.IO 4",
        }
    }

    /// The URL the peer recipes of `bench/peers/` listen on.
    pub fn default_url(self) -> &'static str {
        match self {
            Target::Herald => "ws://127.0.0.1:7400/ws",
            Target::Nats => "ws://127.0.0.1:9222",
            Target::Socketio => "ws://127.0.0.1:9300/socket.io/?EIO=4&transport=websocket",
        }
    }

    /// Whether wildcard subscriptions exist (Socket.IO rooms have none).
    pub fn has_wildcards(self) -> bool {
        self != Target::Socketio
    }

    /// A Herald-style topic or pattern (`bench/t/*`) in this protocol's syntax.
    fn subject(self, topic: &str) -> String {
        match self {
            Target::Nats => topic.replace('/', "."),
            _ => topic.to_owned(),
        }
    }
}

/// What reading the socket turned up besides deliveries.
#[derive(Debug, Default, Clone, Copy)]
pub struct Seen {
    /// Acknowledgements of subscriptions (Herald `ok`, NATS `PONG`, Socket.IO ack).
    pub acks: u32,
    /// Messages the server reported as lost (Herald `gap`).
    pub gap_msgs: u64,
}

/// A connected client of one of the three protocols.
pub struct Client {
    target: Target,
    ws: WsConn,
    mask: [u8; 4],
    /// NATS: the byte stream carried by binary frames, and how far it is parsed.
    stream: Vec<u8>,
    stream_pos: usize,
    /// Bytes to send (answers to pings), written by [`Client::flush`].
    out: Vec<u8>,
    seen: Seen,
}

/// How long a subscription or a handshake may take before the run fails.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

impl Client {
    /// Connects and completes the protocol's own handshake.
    pub async fn connect(
        target: Target,
        url: &WsUrl,
        source: Option<IpAddr>,
    ) -> Result<Client, BenchError> {
        Client::connect_with(target, url, source, None).await
    }

    /// [`Client::connect`], offering permessage-deflate when `deflate` (the server must
    /// accept it), which says one compressed message in how many is inflated (see
    /// [`WsConn::connect`]).
    pub async fn connect_with(
        target: Target,
        url: &WsUrl,
        source: Option<IpAddr>,
        deflate: Option<u32>,
    ) -> Result<Client, BenchError> {
        let ws = WsConn::connect(url, source, deflate).await?;
        let mut c = Client {
            target,
            mask: ws.mask(),
            ws,
            stream: Vec::new(),
            stream_pos: 0,
            out: Vec::new(),
            seen: Seen::default(),
        };
        match target {
            Target::Herald => {
                c.send_text(br#"{"op":"hello","client":"herald-bench"}"#)
                    .await?;
                c.expect(|f| f.starts_with(br#"{"op":"welcome""#), "welcome")
                    .await?;
            }
            Target::Nats => {
                c.expect_nats_info().await?;
                let connect = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"name\":\"herald-bench\"}\r\n";
                c.ws.send(OP_BINARY, connect).await?;
            }
            Target::Socketio => {
                c.expect(|f| f.starts_with(b"0{"), "Engine.IO open").await?;
                c.send_text(b"40").await?;
                c.expect(|f| f.starts_with(b"40"), "Socket.IO connect")
                    .await?;
            }
        }
        Ok(c)
    }

    /// Subscribes to each of `topics` (Herald syntax; patterns allowed where the protocol has
    /// wildcards) and waits until the server confirms all of them.
    pub async fn subscribe(&mut self, topics: &[&str]) -> Result<(), BenchError> {
        let mut req = Vec::new();
        for (i, t) in topics.iter().enumerate() {
            let subject = self.target.subject(t);
            match self.target {
                Target::Herald => {
                    let frame = serde_json::to_vec(&ClientFrame::Sub {
                        id: Some(Id::Num(i as i64)),
                        pattern: subject.as_str().into(),
                        group: None,
                        ack: None,
                        rewind: None,
                        since: None,
                    })
                    .expect("a sub frame always encodes");
                    ws::encode_frame(self.mask, OP_TEXT, &frame, &mut req);
                }
                Target::Nats => {
                    let sub = format!("SUB {subject} {}\r\n", i + 1);
                    ws::encode_frame(self.mask, OP_BINARY, sub.as_bytes(), &mut req);
                }
                Target::Socketio => {
                    if t.contains(['*', '?', '[', '{']) {
                        return Err(BenchError::Usage(
                            "Socket.IO rooms have no wildcards".into(),
                        ));
                    }
                    let frame = format!(r#"42{i}["sub",{subject:?}]"#);
                    ws::encode_frame(self.mask, OP_TEXT, frame.as_bytes(), &mut req);
                }
            }
        }
        let want = match self.target {
            // One PING after the SUBs: its PONG confirms them all.
            Target::Nats => {
                ws::encode_frame(self.mask, OP_BINARY, b"PING\r\n", &mut req);
                1
            }
            _ => topics.len() as u32,
        };
        self.ws.stream.write_all(&req).await?;
        let before = self.seen.acks;
        let wait = async {
            while self.seen.acks - before < want {
                if !self.ws.fill().await? {
                    return Err(BenchError::Closed("closed while subscribing".into()));
                }
                self.poll(|_| {})?;
            }
            self.flush().await
        };
        tokio::time::timeout(SETUP_TIMEOUT, wait)
            .await
            .map_err(|_| BenchError::Timeout("subscription not confirmed".into()))?
    }

    /// Appends one publish of `payload` (JSON text: a quoted string) to `topic` to `out`.
    pub fn encode_publish(&self, topic: &str, payload: &[u8], out: &mut Vec<u8>) {
        match self.target {
            Target::Herald => {
                let mut f = Vec::with_capacity(payload.len() + topic.len() + 32);
                f.extend_from_slice(br#"{"op":"pub","topic":""#);
                f.extend_from_slice(topic.as_bytes());
                f.extend_from_slice(br#"","data":"#);
                f.extend_from_slice(payload);
                f.push(b'}');
                ws::encode_frame(self.mask, OP_TEXT, &f, out);
            }
            Target::Nats => {
                // Raw commands; [`Client::frame_nats`] wraps a batch into one binary frame,
                // as NATS clients do with what is pending when they flush.
                out.extend_from_slice(b"PUB ");
                out.extend_from_slice(self.target.subject(topic).as_bytes());
                out.push(b' ');
                out.extend_from_slice(itoa::Buffer::new().format(payload.len()).as_bytes());
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(payload);
                out.extend_from_slice(b"\r\n");
            }
            Target::Socketio => {
                let mut f = Vec::with_capacity(payload.len() + topic.len() + 16);
                f.extend_from_slice(br#"42["pub",""#);
                f.extend_from_slice(topic.as_bytes());
                f.extend_from_slice(br#"","#);
                f.extend_from_slice(payload);
                f.push(b']');
                ws::encode_frame(self.mask, OP_TEXT, &f, out);
            }
        }
    }

    /// Herald: appends a `pub` with an `id`, which Herald answers with an `ok` once the
    /// message was allowed (by a publish proxy, if one is routed) and routed.
    pub fn encode_acked_publish(&self, topic: &str, id: u64, payload: &[u8], out: &mut Vec<u8>) {
        debug_assert_eq!(self.target, Target::Herald);
        let mut f = Vec::with_capacity(payload.len() + topic.len() + 48);
        f.extend_from_slice(br#"{"op":"pub","id":"#);
        f.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
        f.extend_from_slice(br#","topic":""#);
        f.extend_from_slice(topic.as_bytes());
        f.extend_from_slice(br#"","data":"#);
        f.extend_from_slice(payload);
        f.push(b'}');
        ws::encode_frame(self.mask, OP_TEXT, &f, out);
    }

    /// Herald: appends a `sub` of `pattern` and then its `unsub`, both with ids (two `ok`s).
    pub fn encode_sub_unsub(&self, pattern: &str, id: u64, out: &mut Vec<u8>) {
        debug_assert_eq!(self.target, Target::Herald);
        let sub = ClientFrame::Sub {
            id: Some(Id::Num(id as i64)),
            pattern: pattern.into(),
            group: None,
            ack: None,
            rewind: None,
            since: None,
        };
        let unsub = ClientFrame::Unsub {
            id: Some(Id::Num(id as i64 + 1)),
            pattern: pattern.into(),
            group: None,
        };
        for f in [sub, unsub] {
            let frame = serde_json::to_vec(&f).expect("a sub or unsub frame always encodes");
            ws::encode_frame(self.mask, OP_TEXT, &frame, out);
        }
    }

    /// Sends a batch built by [`Client::encode_publish`].
    pub async fn send_batch(&mut self, batch: &[u8]) -> Result<(), BenchError> {
        if self.target == Target::Nats {
            let mut framed = Vec::with_capacity(batch.len() + 14);
            ws::encode_frame(self.mask, OP_BINARY, batch, &mut framed);
            self.ws.stream.write_all(&framed).await?;
        } else {
            self.ws.stream.write_all(batch).await?;
        }
        Ok(())
    }

    /// Waits for bytes from the server. Returns false once the server closed the socket.
    pub async fn fill(&mut self) -> Result<bool, BenchError> {
        self.ws.fill().await
    }

    /// Reads what is ready without waiting (publishers use it to answer pings).
    pub fn try_fill(&mut self) -> Result<bool, BenchError> {
        self.ws.try_fill()
    }

    /// Handles every complete frame read so far: calls `on_msg` with each delivery's payload
    /// (the bytes after its opening quote), queues answers to pings, and returns the number
    /// of deliveries.
    pub fn poll(&mut self, mut on_msg: impl FnMut(&[u8])) -> Result<u64, BenchError> {
        let mut n = 0u64;
        let target = self.target;
        while let Some(frame) = self.ws.next_frame()? {
            match frame.opcode {
                OP_TEXT if target == Target::Herald => {
                    let f = frame.payload;
                    if f.starts_with(br#"{"op":"msg""#) {
                        n += 1;
                        on_msg(herald_payload(f));
                    } else {
                        herald_control(f, &mut self.seen)?;
                    }
                }
                OP_TEXT if target == Target::Socketio => {
                    let f = frame.payload;
                    if let Some(p) = f.strip_prefix(br#"42["msg",""#) {
                        n += 1;
                        on_msg(p);
                    } else if f == b"2" {
                        ws::encode_frame(self.mask, OP_TEXT, b"3", &mut self.out);
                    } else if f.starts_with(b"43") {
                        self.seen.acks += 1;
                    } else if f.starts_with(b"41") || f.starts_with(b"44") || f == b"1" {
                        return Err(BenchError::Closed(format!(
                            "Socket.IO: {}",
                            String::from_utf8_lossy(f)
                        )));
                    }
                }
                OP_BINARY if target == Target::Nats => {
                    self.stream.extend_from_slice(frame.payload);
                }
                OP_PING => {
                    let payload = frame.payload.to_vec();
                    ws::encode_frame(self.mask, OP_PONG, &payload, &mut self.out);
                }
                OP_CLOSE => {
                    return Err(BenchError::Closed(close_reason(frame.payload)));
                }
                _ => {}
            }
        }
        if target == Target::Nats {
            n += self.parse_nats(&mut on_msg)?;
        }
        Ok(n)
    }

    /// Bytes read from the socket since the handshake.
    pub fn bytes_in(&self) -> u64 {
        self.ws.bytes_in()
    }

    /// What [`Client::poll`] has seen besides deliveries, since the start.
    pub fn seen(&self) -> Seen {
        self.seen
    }

    /// Sends queued answers to pings.
    pub async fn flush(&mut self) -> Result<(), BenchError> {
        if !self.out.is_empty() {
            self.ws.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Whether answers to pings wait in [`Client::flush`].
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    async fn send_text(&mut self, text: &[u8]) -> Result<(), BenchError> {
        self.ws.send(OP_TEXT, text).await
    }

    /// Reads text frames until one satisfies `want`.
    async fn expect(&mut self, want: impl Fn(&[u8]) -> bool, what: &str) -> Result<(), BenchError> {
        let wait = async {
            loop {
                while let Some(f) = self.ws.next_frame()? {
                    if f.opcode == OP_TEXT && want(f.payload) {
                        return Ok(());
                    }
                    if f.opcode == OP_CLOSE {
                        return Err(BenchError::Closed(close_reason(f.payload)));
                    }
                }
                if !self.ws.fill().await? {
                    return Err(BenchError::Closed(format!("closed before {what}")));
                }
            }
        };
        tokio::time::timeout(SETUP_TIMEOUT, wait)
            .await
            .map_err(|_| BenchError::Timeout(format!("no {what}")))?
    }

    async fn expect_nats_info(&mut self) -> Result<(), BenchError> {
        let wait = async {
            loop {
                while let Some(f) = self.ws.next_frame()? {
                    if f.opcode == OP_BINARY {
                        self.stream.extend_from_slice(f.payload);
                    }
                }
                if let Some(eol) = ws::find(&self.stream[self.stream_pos..], b"\r\n") {
                    let line = &self.stream[self.stream_pos..self.stream_pos + eol];
                    if !line.starts_with(b"INFO ") {
                        return Err(BenchError::Protocol(format!(
                            "NATS: expected INFO, got '{}'",
                            String::from_utf8_lossy(line)
                        )));
                    }
                    self.stream_pos += eol + 2;
                    return Ok(());
                }
                if !self.ws.fill().await? {
                    return Err(BenchError::Closed("closed before INFO".into()));
                }
            }
        };
        tokio::time::timeout(SETUP_TIMEOUT, wait)
            .await
            .map_err(|_| BenchError::Timeout("no INFO from NATS".into()))?
    }

    /// Parses the NATS byte stream: `MSG subject sid [reply] len\r\npayload\r\n`, `PING`,
    /// `PONG`, `+OK`, `-ERR`, `INFO`.
    fn parse_nats(&mut self, on_msg: &mut impl FnMut(&[u8])) -> Result<u64, BenchError> {
        let mut n = 0;
        loop {
            let rest = &self.stream[self.stream_pos..];
            // `memchr` needs no searcher built per call (`memmem::find` builds one, which
            // cost the tool more than the parsing itself).
            let Some(eol) = crlf(rest) else {
                break;
            };
            let line = &rest[..eol];
            if line.starts_with(b"MSG ") {
                let len = line
                    .rsplit(|&b| b == b' ')
                    .next()
                    .and_then(|t| std::str::from_utf8(t).ok())
                    .and_then(|t| t.parse::<usize>().ok())
                    .ok_or_else(|| {
                        BenchError::Protocol(format!(
                            "NATS: bad MSG line '{}'",
                            String::from_utf8_lossy(line)
                        ))
                    })?;
                let start = eol + 2;
                if rest.len() < start + len + 2 {
                    break; // the payload is still on its way
                }
                let payload = &rest[start..start + len];
                n += 1;
                on_msg(payload.strip_prefix(b"\"").unwrap_or(payload));
                self.stream_pos += start + len + 2;
                continue;
            }
            if line == b"PING" {
                ws::encode_frame(self.mask, OP_BINARY, b"PONG\r\n", &mut self.out);
            } else if line == b"PONG" {
                self.seen.acks += 1;
            } else if line.starts_with(b"-ERR") {
                return Err(BenchError::Protocol(format!(
                    "NATS: {}",
                    String::from_utf8_lossy(line)
                )));
            }
            self.stream_pos += eol + 2;
        }
        if self.stream_pos == self.stream.len() {
            self.stream.clear();
            self.stream_pos = 0;
        } else if self.stream_pos > 64 * 1024 {
            self.stream.drain(..self.stream_pos);
            self.stream_pos = 0;
        }
        Ok(n)
    }
}

/// Position of the first `\r\n` in `b`.
fn crlf(b: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = memchr::memchr(b'\r', &b[from..]) {
        let at = from + i;
        match b.get(at + 1) {
            Some(b'\n') => return Some(at),
            Some(_) => from = at + 1,
            None => return None,
        }
    }
    None
}

/// The searcher for `,"data":`, built once: building one per frame (`memmem::find`) was
/// the largest cost of the tool in Herald runs.
static DATA_FIELD: std::sync::LazyLock<memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memmem::Finder::new(br#","data":"#));

/// The payload of a Herald `msg` frame: what follows `"data":"`.
fn herald_payload(frame: &[u8]) -> &[u8] {
    match DATA_FIELD.find(frame) {
        Some(i) => {
            let p = &frame[i + 8..];
            p.strip_prefix(b"\"").unwrap_or(p)
        }
        None => &[],
    }
}

/// A Herald frame other than `msg`.
fn herald_control(f: &[u8], seen: &mut Seen) -> Result<(), BenchError> {
    if f.starts_with(br#"{"op":"ok""#) {
        seen.acks += 1;
    } else if f.starts_with(br#"{"op":"gap""#) {
        match serde_json::from_slice(f) {
            Ok(ServerFrame::Gap(herald_protocol::Gap::Seq(g))) => {
                seen.gap_msgs += g.to_seq.saturating_sub(g.from_seq) + 1
            }
            _ => {
                return Err(BenchError::Protocol(format!(
                    "Herald: bad gap frame: {}",
                    String::from_utf8_lossy(f)
                )));
            }
        }
    } else if f.starts_with(br#"{"op":"error""#) || f.starts_with(br#"{"op":"bye""#) {
        return Err(BenchError::Protocol(match serde_json::from_slice(f) {
            Ok(ServerFrame::Error(e)) => format!("Herald: error {}: {}", e.code, e.message),
            _ => format!("Herald: {}", String::from_utf8_lossy(f)),
        }));
    }
    Ok(())
}

fn close_reason(payload: &[u8]) -> String {
    if payload.len() >= 2 {
        let code = u16::from_be_bytes([payload[0], payload[1]]);
        format!(
            "closed by the server: {code} {}",
            String::from_utf8_lossy(&payload[2..])
        )
    } else {
        "closed by the server".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_finds_the_line_end() {
        assert_eq!(crlf(b"PING\r\n"), Some(4));
        assert_eq!(crlf(b"a\rb\r\n"), Some(3));
        assert_eq!(crlf(b"abc\r"), None);
        assert_eq!(crlf(b""), None);
    }

    #[test]
    fn herald_payload_starts_after_the_quote() {
        let f = br#"{"op":"msg","seq":1,"topic":"a","data":"0000000000001234xx","offset":1}"#;
        assert!(herald_payload(f).starts_with(b"0000000000001234xx\""));
    }

    #[test]
    fn subjects_use_dots_for_nats() {
        assert_eq!(Target::Nats.subject("bench/t/*"), "bench.t.*");
        assert_eq!(Target::Herald.subject("bench/t/*"), "bench/t/*");
    }
}
