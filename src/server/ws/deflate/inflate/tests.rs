//! The inflate transform as tungstenite reads through it: the client's frames as a browser
//! or Node's `ws` sends them, whole or a few bytes at a time.

use std::pin::Pin;
use std::task::{Context, Poll};

use flate2::{Compress, Compression, FlushCompress};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::super::offer::choose;
use super::*;
use crate::server::ws::{ReadOnly, socket_config};

const MAX: usize = 65536;

/// A client frame: masked with a key that is not zero.
fn frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
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
    let key = [0x37, 0xfa, 0x21, 0x3d];
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

/// A client's compressor: `compress` one message (sync flush, tail cut), keeping its context
/// unless reset.
struct Client(Compress);

impl Client {
    fn new() -> Client {
        Client(Compress::new(Compression::default(), false))
    }
    fn compress(&mut self, msg: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(msg.len() + 64);
        self.0
            .compress_vec(msg, &mut out, FlushCompress::Sync)
            .unwrap();
        assert!(out.ends_with(&TAIL));
        out.truncate(out.len() - 4);
        out
    }
}

/// Yields at most `step` bytes per read.
struct Trickle {
    data: Vec<u8>,
    at: usize,
    step: usize,
}

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self
            .step
            .min(buf.remaining())
            .min(self.data.len() - self.at);
        let at = self.at;
        buf.put_slice(&self.data[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

/// What tungstenite (as the server) reads from `wire` through the transform, `step` bytes at
/// a time, until the first error or the end.
async fn read(wire: &[u8], offer: Option<&str>, step: usize) -> Vec<Result<Message, String>> {
    let agreed = offer.map(|o| choose([o]).expect("an acceptable offer"));
    let src = Trickle {
        data: wire.to_vec(),
        at: 0,
        step,
    };
    let mut ws = WebSocketStream::from_raw_socket(
        ReadOnly(Inflate::new(src, agreed, MAX)),
        Role::Server,
        Some(socket_config(MAX)),
    )
    .await;
    let mut got = Vec::new();
    while let Some(m) = ws.next().await {
        match m {
            Ok(m) => got.push(Ok(m)),
            Err(WsError::Io(e)) if e.get_ref().is_some_and(|i| i.is::<InflateError>()) => {
                let e = e.into_inner().unwrap().downcast::<InflateError>().unwrap();
                got.push(Err(format!("inflate: {e:?}")));
                break;
            }
            Err(e) => {
                got.push(Err(format!("ws: {e}")));
                break;
            }
        }
    }
    got
}

/// `read` at several read sizes, which must all agree.
async fn read_all_ways(wire: &[u8], offer: Option<&str>) -> Vec<Result<Message, String>> {
    let whole = read(wire, offer, usize::MAX).await;
    for step in [1, 3, 7, 100, 5000] {
        assert_eq!(
            read(wire, offer, step).await,
            whole,
            "read {step} bytes at a time"
        );
    }
    whole
}

fn text(s: &str) -> Result<Message, String> {
    Ok(Message::text(s))
}

fn json(n: usize) -> String {
    let rows: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"op":"pub","topic":"chat/room{}","data":{{"n":{i}}}}}"#,
                i % 7
            )
        })
        .collect();
    format!("[{}]", rows.join(","))
}

#[tokio::test]
async fn uncompressed_frames_pass_through() {
    let mut wire = frame(true, false, 0x1, b"{\"op\":\"hello\"}");
    wire.extend(frame(true, false, 0x9, b"ping!"));
    wire.extend(frame(false, false, 0x1, b"[1,"));
    wire.extend(frame(true, false, 0x0, b"2]"));
    wire.extend(frame(true, false, 0x1, b""));
    let got = read_all_ways(&wire, Some("permessage-deflate")).await;
    assert_eq!(
        got[..4],
        [
            text("{\"op\":\"hello\"}"),
            Ok(Message::Ping("ping!".into())),
            text("[1,2]"),
            text(""),
        ]
    );
    // Then the end of the stream, without a close frame.
    assert!(matches!(&got[4..], [Err(_)]), "{got:?}");
}

#[tokio::test]
async fn compressed_messages_inflate_with_and_without_context_takeover() {
    let (a, b) = (json(30), json(31));
    // With context takeover: the second message refers back to the first.
    let mut c = Client::new();
    let (ca, cb) = (c.compress(a.as_bytes()), c.compress(b.as_bytes()));
    assert!(
        cb.len() < ca.len() / 4,
        "the second message leans on the first"
    );
    let mut wire = frame(true, true, 0x1, &ca);
    wire.extend(frame(true, true, 0x1, &cb));
    wire.extend(frame(true, false, 0x1, b"plain"));
    wire.extend(frame(true, true, 0x2, &c.compress(&[7u8; 400])));
    let got = read_all_ways(&wire, Some("permessage-deflate; client_max_window_bits")).await;
    assert_eq!(got[..3], [text(&a), text(&b), text("plain")]);
    assert_eq!(got[3], Ok(Message::binary(vec![7u8; 400])));

    // Without: every message compressed by a fresh compressor.
    let mut wire = Vec::new();
    for m in [&a, &b, &a] {
        wire.extend(frame(
            true,
            true,
            0x1,
            &Client::new().compress(m.as_bytes()),
        ));
    }
    let offer = "permessage-deflate; client_no_context_takeover";
    let got = read_all_ways(&wire, Some(offer)).await;
    assert_eq!(got[..3], [text(&a), text(&b), text(&a)]);
}

#[tokio::test]
async fn fragmented_compressed_message_with_control_frames_between() {
    let msg = json(60);
    let z = Client::new().compress(msg.as_bytes());
    let (p1, rest) = z.split_at(z.len() / 3);
    let (p2, p3) = rest.split_at(rest.len() / 2);
    let mut wire = frame(false, true, 0x1, p1);
    wire.extend(frame(true, false, 0x9, b"1"));
    wire.extend(frame(false, false, 0x0, p2));
    wire.extend(frame(true, false, 0xA, b"2"));
    wire.extend(frame(false, false, 0x0, b"")); // an empty fragment
    wire.extend(frame(true, false, 0x0, p3));
    wire.extend(frame(true, false, 0x1, b"after"));
    let got = read_all_ways(&wire, Some("permessage-deflate")).await;
    assert_eq!(
        got[..4],
        [
            Ok(Message::Ping("1".into())),
            Ok(Message::Pong("2".into())),
            text(&msg),
            text("after")
        ]
    );
}

#[tokio::test]
async fn a_message_ended_with_a_final_block_is_read() {
    let msg = json(10);
    let mut c = Compress::new(Compression::default(), false);
    let mut z = Vec::with_capacity(4096);
    c.compress_vec(msg.as_bytes(), &mut z, FlushCompress::Finish)
        .unwrap();
    let mut wire = frame(true, true, 0x1, &z);
    wire.extend(frame(
        true,
        true,
        0x1,
        &Client::new().compress(b"[\"next\"]"),
    ));
    let got = read_all_ways(&wire, Some("permessage-deflate")).await;
    assert_eq!(got[..2], [text(&msg), text("[\"next\"]")]);
}

#[tokio::test]
async fn a_bomb_stops_at_max_frame() {
    // 10 MB of one byte: ~10 KB compressed, in frames well under max_frame.
    let z = Client::new().compress(&vec![b'a'; 10 << 20]);
    assert!(z.len() < MAX / 2);
    let (p1, p2) = z.split_at(z.len() / 2);
    let mut wire = frame(false, true, 0x1, p1);
    wire.extend(frame(true, false, 0x0, p2));
    let got = read_all_ways(&wire, Some("permessage-deflate")).await;
    assert_eq!(got, vec![Err("inflate: TooLarge(65536)".into())]);

    // The inflated bytes never take more than max_frame + 1 bytes.
    let mut d = Decompress::new(false);
    let (mut out, mut ended) = (Vec::new(), false);
    assert_eq!(
        feed(&mut d, &z, &mut out, &mut ended, MAX),
        Err(InflateError::TooLarge(MAX))
    );
    assert!(out.capacity() <= MAX + 1, "{}", out.capacity());

    // Exactly max_frame is fine.
    let at_max = Client::new().compress(&vec![b' '; MAX]);
    let got = read(
        &frame(true, true, 0x1, &at_max),
        Some("permessage-deflate"),
        4096,
    )
    .await;
    assert_eq!(got[0], text(&" ".repeat(MAX)));
    let over = Client::new().compress(&vec![b' '; MAX + 1]);
    let got = read(
        &frame(true, true, 0x1, &over),
        Some("permessage-deflate"),
        4096,
    )
    .await;
    assert_eq!(got, vec![Err("inflate: TooLarge(65536)".into())]);
}

#[tokio::test]
async fn garbage_and_bad_framing_are_refused() {
    let ok = frame(true, false, 0x1, b"\"first\"");
    let cases: [(Vec<u8>, &str); 6] = [
        // BTYPE 11 is reserved.
        (frame(true, true, 0x1, &[0xff; 20]), "inflate: Invalid"),
        // A stored block whose NLEN does not match.
        (
            frame(true, true, 0x1, &[0x00, 0x05, 0x00, 0x00, 0x00]),
            "inflate: Invalid",
        ),
        // Data after a final block.
        (
            frame(true, true, 0x1, &[0x03, 0x00, 0x01, 0x02, 0x03]),
            "inflate: Invalid",
        ),
        (
            [frame(false, true, 0x1, b"x"), frame(true, true, 0x0, b"y")].concat(),
            "inflate: Protocol(\"RSV1 set on a continuation frame\")",
        ),
        (
            [frame(false, true, 0x1, b"x"), frame(true, false, 0x1, b"y")].concat(),
            "inflate: Protocol(\"a new message began inside a compressed one\")",
        ),
        (
            vec![0xc1, 0x02, 0x4a, 0x04], // compressed, not masked
            "inflate: Protocol(\"unmasked frame from the client\")",
        ),
    ];
    for (bad, want) in cases {
        let wire = [ok.clone(), bad].concat();
        let got = read_all_ways(&wire, Some("permessage-deflate")).await;
        assert_eq!(got, vec![text("\"first\""), Err(want.into())], "{want}");
    }
    // RSV1 on a continuation of an uncompressed message, or on a control frame: tungstenite
    // refuses it.
    for bad in [
        [frame(false, false, 0x1, b"x"), frame(true, true, 0x0, b"y")].concat(),
        frame(true, true, 0x9, b""),
    ] {
        let got = read(&bad, Some("permessage-deflate"), 100).await;
        assert!(
            matches!(&got[..], [Err(e)] if e.contains("Reserved bits")),
            "{got:?}"
        );
    }
}

#[tokio::test]
async fn without_deflate_bytes_pass_untouched() {
    let z = Client::new().compress(json(5).as_bytes());
    let wire = [frame(true, false, 0x1, b"1"), frame(true, true, 0x1, &z)].concat();
    let got = read(&wire, None, 100).await;
    assert_eq!(got[0], text("1"));
    assert!(
        matches!(&got[1], Err(e) if e.contains("Reserved bits")),
        "{got:?}"
    );
}

#[test]
fn the_inflater_is_kept_only_with_context_takeover() {
    let msg = json(20);
    for (no_context, kept) in [(false, true), (true, false)] {
        let mut st = State::new(MAX, no_context);
        assert!(st.inflater.is_none(), "none before a compressed frame");
        let mut wire = frame(true, false, 0x1, b"1");
        st.parse(&mut wire);
        assert!(st.inflater.is_none(), "none for uncompressed frames");
        let mut wire = frame(true, true, 0x1, &Client::new().compress(msg.as_bytes()));
        assert_eq!(st.parse(&mut wire), wire.len());
        assert_eq!(st.error, None);
        assert_eq!(st.inflater.is_some(), kept);
        assert!(st.message.is_none());
    }
}
