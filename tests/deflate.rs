//! permessage-deflate (PROTOCOL.md §2, "Compression") as a client meets it: a raw client over
//! a TcpStream that does the upgrade and the framing by hand, offers the extension, reads the
//! server's compressed frames (RSV1) and inflates them, and sends compressed frames of its own.

mod common;

use std::net::SocketAddr;

use flate2::{Compress, Compression as Level, Decompress, FlushCompress, FlushDecompress};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{TestServer, WAIT, config};
use herald::config::{Compression, TopicConfig};

const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
const DEFLATE: &str = "permessage-deflate; server_no_context_takeover";

/// A server frame.
#[derive(Debug)]
struct Frame {
    rsv1: bool,
    opcode: u8,
    payload: Vec<u8>,
}

/// How a client frame is sent.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Send {
    Plain,
    /// Compressed by a fresh compressor (no context takeover).
    Fresh,
    /// Compressed by the connection's compressor, which keeps its window from message to
    /// message (context takeover).
    Takeover,
}

/// A WebSocket client written by hand.
struct Ws {
    tcp: TcpStream,
    /// Read, not parsed yet.
    buf: Vec<u8>,
    /// The response's `Sec-WebSocket-Extensions`.
    extensions: Option<String>,
    /// Bytes read from the socket after the handshake.
    wire_in: usize,
    /// The client's compressor for [`Send::Takeover`].
    takeover: Compress,
    /// Speaks `herald.v1.msgpack`: binary frames of MessagePack.
    msgpack: bool,
}

impl Ws {
    async fn connect(addr: SocketAddr, offer: Option<&str>) -> Ws {
        Ws::connect_as(addr, offer, false).await
    }

    async fn connect_as(addr: SocketAddr, offer: Option<&str>, msgpack: bool) -> Ws {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let mut offer = offer
            .map(|o| format!("Sec-WebSocket-Extensions: {o}\r\n"))
            .unwrap_or_default();
        if msgpack {
            offer.push_str("Sec-WebSocket-Protocol: herald.v1.msgpack\r\n");
        }
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut b = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, tcp.read(&mut b))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed during the handshake");
            buf.extend_from_slice(&b[..n]);
        };
        let head = String::from_utf8(buf[..end].to_vec()).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let extensions = head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| value.trim().to_owned())
        });
        buf.drain(..end);
        Ws {
            tcp,
            buf,
            extensions,
            wire_in: 0,
            takeover: Compress::new(Level::default(), false),
            msgpack,
        }
    }

    /// The next frame from the server (unmasked, never fragmented by Herald).
    async fn frame(&mut self) -> Frame {
        loop {
            if let Some((f, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                return f;
            }
            let mut b = [0u8; 16384];
            let n = tokio::time::timeout(WAIT, self.tcp.read(&mut b))
                .await
                .expect("a frame in time")
                .unwrap();
            assert!(n > 0, "the server closed the socket without a close frame");
            self.wire_in += n;
            self.buf.extend_from_slice(&b[..n]);
        }
    }

    /// The next text message as JSON, and whether it came compressed (pings skipped).
    async fn recv(&mut self) -> (Value, bool) {
        loop {
            let f = self.frame().await;
            match f.opcode {
                0x1 => {
                    let text = if f.rsv1 {
                        inflate(&f.payload)
                    } else {
                        f.payload
                    };
                    assert!(!self.msgpack, "a text frame on a msgpack connection");
                    return (serde_json::from_slice(&text).unwrap(), f.rsv1);
                }
                0x2 => {
                    assert!(self.msgpack, "a binary frame on a JSON connection");
                    let bytes = if f.rsv1 {
                        inflate(&f.payload)
                    } else {
                        f.payload
                    };
                    let json = herald_protocol::msgpack::to_json(&bytes).unwrap();
                    return (serde_json::from_str(&json).unwrap(), f.rsv1);
                }
                0x8 => panic!("closed: {:?}", close_code(&f.payload)),
                _ => {}
            }
        }
    }

    /// The next frame with this `op`.
    async fn recv_op(&mut self, op: &str) -> (Value, bool) {
        loop {
            let (v, z) = self.recv().await;
            if v["op"] == op {
                return (v, z);
            }
        }
    }

    /// Reads until a close frame: its code.
    async fn expect_close(&mut self) -> u16 {
        loop {
            let f = self.frame().await;
            if f.opcode == 0x8 {
                return close_code(&f.payload);
            }
        }
    }

    /// Sends one frame, masked.
    async fn send_frame(&mut self, fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) {
        let mut out = vec![(u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 0xffff {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let key: [u8; 4] = rand::random();
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        self.tcp.write_all(&out).await.unwrap();
    }

    /// Sends a text message, compressed or not.
    async fn send(&mut self, v: &Value, how: Send) {
        let (op, bytes) = if self.msgpack {
            (
                0x2,
                herald_protocol::msgpack::from_json(&v.to_string()).unwrap(),
            )
        } else {
            (0x1, v.to_string().into_bytes())
        };
        match how {
            Send::Plain => self.send_frame(true, false, op, &bytes).await,
            Send::Fresh => {
                let z = compress(&mut Compress::new(Level::default(), false), &bytes);
                self.send_frame(true, true, op, &z).await;
            }
            Send::Takeover => {
                let z = compress(&mut self.takeover, &bytes);
                self.send_frame(true, true, op, &z).await;
            }
        }
    }

    /// `hello`, answered by `welcome` (small: never compressed).
    async fn hello(&mut self, how: Send) {
        self.send(&json!({"op": "hello"}), how).await;
        let (w, compressed) = self.recv().await;
        assert_eq!(w["op"], "welcome", "{w}");
        assert!(!compressed, "a frame under 256 bytes goes uncompressed");
    }

    /// Sends a frame with `id` and returns its answer.
    async fn ask(&mut self, v: Value, how: Send) -> Value {
        let id = v["id"].clone();
        self.send(&v, how).await;
        loop {
            let (a, _) = self.recv().await;
            if a["id"] == id && (a["op"] == "ok" || a["op"] == "error") {
                return a;
            }
        }
    }
}

/// A server frame at the start of `b`, and its length.
fn parse(b: &[u8]) -> Option<(Frame, usize)> {
    let (b0, b1) = (*b.first()?, *b.get(1)?);
    assert_eq!(b1 & 0x80, 0, "server frames are not masked");
    assert!(b0 & 0x80 != 0, "Herald does not fragment");
    assert_eq!(b0 & 0x30, 0, "RSV2 and RSV3 are clear");
    let (len, at) = match b1 & 0x7f {
        126 => (
            u16::from_be_bytes(b.get(2..4)?.try_into().unwrap()) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(b.get(2..10)?.try_into().unwrap()) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let payload = b.get(at..at + len)?.to_vec();
    let opcode = b0 & 0x0f;
    let rsv1 = b0 & 0x40 != 0;
    assert!(
        !(rsv1 && opcode >= 0x8),
        "control frames are never compressed"
    );
    Some((
        Frame {
            rsv1,
            opcode,
            payload,
        },
        at + len,
    ))
}

fn close_code(payload: &[u8]) -> u16 {
    payload
        .get(..2)
        .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]))
}

/// What a client does with a compressed message from a server that said
/// `server_no_context_takeover`: a fresh inflater, the tail appended (RFC 7692 §7.2.2).
fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&TAIL);
    let mut d = Decompress::new(false);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("the server's payload inflates");
    assert_eq!(d.total_in() as usize, input.len());
    out
}

/// One message through `c` (sync flush, the tail cut off).
fn compress(c: &mut Compress, msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 64);
    c.compress_vec(msg, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - TAIL.len());
    out
}

/// Application-like JSON: a page of orders, ~`n` × 110 bytes.
fn orders(n: usize) -> Value {
    let rows: Vec<Value> = (0..n)
        .map(|i| {
            let status = ["paid", "pending", "shipped"][i % 3];
            json!({
                "id": format!("ord_{:08x}", (i as u32).wrapping_mul(0x9e37_79b9)),
                "customer": format!("cus_{}", 100_000 + i * 37),
                "status": status,
                "total": (1700 + i * 1309 % 9000) as f64 / 100.0,
                "currency": "EUR",
            })
        })
        .collect();
    json!({ "orders": rows, "page": 1 })
}

#[tokio::test]
async fn subscribers_that_negotiated_deflate_get_each_msg_compressed_once() {
    let s = TestServer::start().await;
    // Chromium's offer, and Node's `ws`.
    let mut zs = Vec::new();
    for _ in 0..8 {
        let mut c = Ws::connect(s.addr, Some("permessage-deflate; client_max_window_bits")).await;
        assert_eq!(c.extensions.as_deref(), Some(DEFLATE));
        c.hello(Send::Plain).await;
        let ok = c
            .ask(json!({"op":"sub","id":1,"pattern":"shop/**"}), Send::Plain)
            .await;
        assert_eq!(ok["op"], "ok", "{ok}");
        zs.push(c);
    }
    let mut plain = Ws::connect(s.addr, None).await;
    assert_eq!(plain.extensions, None, "no offer, no extension");
    plain.hello(Send::Plain).await;
    plain
        .ask(json!({"op":"sub","id":1,"pattern":"shop/**"}), Send::Plain)
        .await;

    let big = orders(30);
    let small = json!({"text": "hi"});
    s.bus.publish_json("shop/orders", &big).unwrap();
    s.bus.publish_json("shop/chat", &small).unwrap();
    s.bus.publish_json("shop/orders", &big).unwrap();

    let mut payloads = Vec::new();
    for c in &mut zs {
        let before = c.wire_in;
        let (m, compressed) = c.recv_op("msg").await;
        assert!(compressed, "a large msg comes compressed");
        assert_eq!((m["seq"].as_u64(), &m["data"]), (Some(1), &big));
        assert_eq!(m["topic"], "shop/orders");
        let (m, compressed) = c.recv_op("msg").await;
        assert!(!compressed, "a msg under 256 bytes does not");
        assert_eq!((m["seq"].as_u64(), &m["data"]), (Some(2), &small));
        let (m, compressed) = c.recv_op("msg").await;
        assert!(compressed);
        assert_eq!((m["seq"].as_u64(), &m["data"]), (Some(3), &big));
        payloads.push(c.wire_in - before);
    }
    let before = plain.wire_in;
    for (seq, data) in [(1, &big), (2, &small), (3, &big)] {
        let (m, compressed) = plain.recv_op("msg").await;
        assert!(!compressed);
        assert_eq!((m["seq"].as_u64(), &m["data"]), (Some(seq), data));
    }
    let plain_bytes = plain.wire_in - before;
    // The same event, the same bytes to everyone (compressed once), and far fewer of them.
    assert!(payloads.windows(2).all(|w| w[0] == w[1]), "{payloads:?}");
    assert!(
        payloads[0] * 3 < plain_bytes,
        "{} compressed vs {plain_bytes} plain",
        payloads[0]
    );
}

#[tokio::test]
async fn msgpack_connections_get_their_encoding_compressed_once_too() {
    let s = TestServer::start().await;
    let mut mps = Vec::new();
    for _ in 0..4 {
        let mut c = Ws::connect_as(s.addr, Some("permessage-deflate"), true).await;
        assert_eq!(c.extensions.as_deref(), Some(DEFLATE));
        c.hello(Send::Fresh).await;
        let ok = c
            .ask(
                json!({"op":"sub","id":1,"pattern":"shop/**"}),
                Send::Takeover,
            )
            .await;
        assert_eq!(ok["op"], "ok", "{ok}");
        mps.push(c);
    }
    let mut json_z = Ws::connect(s.addr, Some("permessage-deflate")).await;
    json_z.hello(Send::Plain).await;
    json_z
        .ask(json!({"op":"sub","id":1,"pattern":"shop/**"}), Send::Plain)
        .await;
    // Binary data too: bin for msgpack, {"$base64"} for JSON.
    let mut big = orders(30);
    big["sig"] = json!({"$base64": "AAECAwQFBgcICQ=="});
    // Published by a msgpack client, compressed.
    let ok = mps[0]
        .ask(
            json!({"op":"pub","id":2,"topic":"shop/orders","data": big}),
            Send::Fresh,
        )
        .await;
    assert_eq!(ok["op"], "ok", "{ok}");
    let mut sizes = Vec::new();
    for c in &mut mps {
        let before = c.wire_in;
        let (m, compressed) = c.recv_op("msg").await;
        assert!(compressed, "a large msgpack msg comes compressed");
        assert_eq!(m["data"], big);
        sizes.push(c.wire_in - before);
    }
    assert!(sizes[1..].windows(2).all(|w| w[0] == w[1]), "{sizes:?}");
    let (m, compressed) = json_z.recv_op("msg").await;
    assert!(compressed);
    assert_eq!(m["data"], big);
}

#[tokio::test]
async fn the_same_compressed_body_follows_each_recipients_own_head() {
    let s = TestServer::start().await;
    // Two sessions at different seqs: their heads differ, the compressed body does not.
    let mut a = Ws::connect(s.addr, Some("permessage-deflate")).await;
    let mut b = Ws::connect(s.addr, Some("permessage-deflate")).await;
    for c in [&mut a, &mut b] {
        c.hello(Send::Plain).await;
    }
    a.ask(json!({"op":"sub","id":1,"pattern":"x/**"}), Send::Plain)
        .await;
    s.bus.publish_json("x/warmup", &json!(1)).unwrap();
    a.recv_op("msg").await;
    b.ask(json!({"op":"sub","id":1,"pattern":"x/**"}), Send::Plain)
        .await;
    s.bus.publish_json("x/big", &orders(20)).unwrap();
    let (fa, fb) = loop {
        let f = a.frame().await;
        if f.opcode == 1 {
            break (f, b.frame().await);
        }
    };
    assert!(fa.rsv1 && fb.rsv1);
    let ma: Value = serde_json::from_slice(&inflate(&fa.payload)).unwrap();
    let mb: Value = serde_json::from_slice(&inflate(&fb.payload)).unwrap();
    assert_eq!((ma["seq"].as_u64(), mb["seq"].as_u64()), (Some(2), Some(1)));
    assert_eq!(ma["data"], mb["data"]);
    // A stored block holding the head, then the shared body.
    assert_eq!((fa.payload[0], fb.payload[0]), (0, 0));
    let head = |p: &[u8]| 5 + u16::from_le_bytes([p[1], p[2]]) as usize;
    assert_eq!(
        fa.payload[head(&fa.payload)..],
        fb.payload[head(&fb.payload)..]
    );
}

#[tokio::test]
async fn compressed_client_frames_are_answered() {
    let mut cfg = config();
    cfg.topics.push(TopicConfig {
        pattern: "hist/**".into(),
        history: 100,
        ..TopicConfig::default()
    });
    let s = TestServer::with_config(cfg).await;
    let mut watcher = common::Raw::connect(&s.ws_url()).await;
    watcher.hello().await;
    watcher.sub("hist/**").await;

    // With context takeover (what browsers do), mixed with uncompressed frames.
    let mut c = Ws::connect(s.addr, Some("permessage-deflate; client_max_window_bits")).await;
    assert_eq!(c.extensions.as_deref(), Some(DEFLATE));
    c.hello(Send::Takeover).await;
    let big = orders(25);
    for (i, how) in [Send::Takeover, Send::Plain, Send::Takeover, Send::Takeover]
        .into_iter()
        .enumerate()
    {
        let ok = c
            .ask(
                json!({"op":"pub","id":i,"topic":"hist/a","data":{"i":i,"page":big}}),
                how,
            )
            .await;
        assert_eq!(ok["op"], "ok", "{ok}");
        let m = watcher.recv_op("msg").await;
        assert_eq!((&m["data"]["i"], &m["data"]["page"]), (&json!(i), &big));
    }
    // A large answer of the connection's own comes compressed.
    c.send(
        &json!({"op":"history","id":"h","topic":"hist/a"}),
        Send::Takeover,
    )
    .await;
    let (h, compressed) = c.recv_op("ok").await;
    assert!(compressed, "a large answer is compressed");
    assert_eq!(h["messages"].as_array().unwrap().len(), 4);
    assert_eq!(h["messages"][3]["data"]["page"], big);

    // Without context takeover, offered by the client and confirmed.
    let mut c = Ws::connect(
        s.addr,
        Some("permessage-deflate; client_no_context_takeover"),
    )
    .await;
    assert_eq!(
        c.extensions.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    c.hello(Send::Fresh).await;
    for i in 0..3 {
        let ok = c
            .ask(
                json!({"op":"pub","id":i,"topic":"hist/b","data":big}),
                Send::Fresh,
            )
            .await;
        assert_eq!(ok["op"], "ok", "{ok}");
        assert_eq!(watcher.recv_op("msg").await["data"], big);
    }
    // A compressed message in fragments, a ping between them: both are answered.
    let text = json!({"op":"pub","id":"f","topic":"hist/c","data":big}).to_string();
    let z = compress(&mut Compress::new(Level::default(), false), text.as_bytes());
    let (p1, p2) = z.split_at(z.len() / 2);
    c.send_frame(false, true, 0x1, p1).await;
    c.send_frame(true, false, 0x9, b"between").await;
    c.send_frame(true, false, 0x0, p2).await;
    let (mut pong, mut ok) = (false, None);
    while !pong || ok.is_none() {
        let f = c.frame().await;
        match f.opcode {
            0xA => {
                assert_eq!(f.payload, b"between");
                pong = true;
            }
            0x1 => ok = Some(serde_json::from_slice::<Value>(&f.payload).unwrap()),
            _ => {}
        }
    }
    assert_eq!(ok.unwrap()["id"], "f");
    assert_eq!(watcher.recv_op("msg").await["data"], big);
}

#[tokio::test]
async fn bad_compressed_frames_close_only_their_connection() {
    let s = TestServer::start().await;
    let mut watcher = Ws::connect(s.addr, Some("permessage-deflate")).await;
    watcher.hello(Send::Plain).await;
    watcher
        .ask(json!({"op":"sub","id":1,"pattern":"live/**"}), Send::Plain)
        .await;
    s.bus.publish_json("live/x", &orders(10)).unwrap();
    assert_eq!(watcher.recv_op("msg").await.0["seq"], 1);

    // Not deflate data: 1007.
    let mut garbage = Ws::connect(s.addr, Some("permessage-deflate")).await;
    garbage.hello(Send::Fresh).await;
    garbage.send_frame(true, true, 0x1, &[0xff; 40]).await;
    assert_eq!(garbage.expect_close().await, 1007);

    // A bomb: 8 MiB of spaces, ~8 KiB compressed, past max_frame (64 KiB) once inflated.
    let mut bomb = Ws::connect(s.addr, Some("permessage-deflate")).await;
    bomb.hello(Send::Plain).await;
    let z = compress(
        &mut Compress::new(Level::best(), false),
        &vec![b' '; 8 << 20],
    );
    assert!(z.len() < 65536, "{}", z.len());
    bomb.send_frame(true, true, 0x1, &z).await;
    assert_eq!(bomb.expect_close().await, 1009);

    // Another client on the same server goes on.
    for i in 0..3 {
        s.bus.publish_json("live/x", &json!({"i": i})).unwrap();
    }
    for seq in 2..=4 {
        assert_eq!(watcher.recv_op("msg").await.0["seq"], seq);
    }
}

#[tokio::test]
async fn offers_the_server_cannot_honour_are_declined() {
    let s = TestServer::start().await;
    for (offer, want) in [
        ("permessage-deflate; server_max_window_bits=10", None),
        ("permessage-deflate; x-unknown=1", None),
        ("x-webkit-deflate-frame", None),
        (
            "permessage-deflate; server_max_window_bits=10, permessage-deflate; client_no_context_takeover",
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        ),
        (
            "permessage-deflate; server_max_window_bits=15",
            Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=15"),
        ),
    ] {
        let mut c = Ws::connect(s.addr, Some(offer)).await;
        assert_eq!(c.extensions.as_deref(), want, "{offer}");
        // Declined or not, the connection works.
        c.hello(Send::Plain).await;
        if want.is_none() {
            // Uncompressed: a frame with RSV1 is a protocol error.
            c.send(&json!({"op":"ping"}), Send::Fresh).await;
            assert_eq!(c.expect_close().await, 1002, "{offer}");
        }
    }
}

#[tokio::test]
async fn compression_off_declines_every_offer() {
    let mut cfg = config();
    cfg.compression = Compression::Off;
    let s = TestServer::with_config(cfg).await;
    let mut c = Ws::connect(s.addr, Some("permessage-deflate; client_max_window_bits")).await;
    assert_eq!(c.extensions, None);
    c.hello(Send::Plain).await;
    c.ask(json!({"op":"sub","id":1,"pattern":"a/**"}), Send::Plain)
        .await;
    s.bus.publish_json("a/b", &orders(30)).unwrap();
    let (m, compressed) = c.recv_op("msg").await;
    assert!(!compressed);
    assert_eq!(m["data"], orders(30));
    c.send(&json!({"op":"ping"}), Send::Fresh).await;
    assert_eq!(c.expect_close().await, 1002);
}

#[tokio::test]
async fn a_reload_applies_compression_to_new_connections() {
    let mut cfg = config();
    cfg.compression = Compression::Off;
    let server = herald::Server::bind(cfg.clone()).await.unwrap();
    let reload = server.reload_handle();
    let (addr, handle, _task) = server.spawn();
    let offer = Some("permessage-deflate");
    let mut before = Ws::connect(addr, offer).await;
    assert_eq!(before.extensions, None);
    before.hello(Send::Plain).await;

    cfg.compression = Compression::Auto;
    let report = reload.reload(cfg).unwrap();
    assert!(
        report.applied.iter().any(|c| c.key == "compression"),
        "{report:?}"
    );
    let mut after = Ws::connect(addr, offer).await;
    assert_eq!(after.extensions.as_deref(), Some(DEFLATE));
    after.hello(Send::Fresh).await;
    // The open connection keeps what it negotiated: nothing.
    before.send(&json!({"op":"ping"}), Send::Fresh).await;
    assert_eq!(before.expect_close().await, 1002);
    handle.shutdown();
}
