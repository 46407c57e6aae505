//! A published message and its shared encoding.
//!
//! Fan-out is the hot path, so an event's JSON is built **once** when it is published: the
//! `body` holds everything of a `msg` frame after its per-recipient head
//! (`"topic":…,"data":…,"offset":…,"epoch":…,"ts":…}`). Every buffer and socket that
//! carries the event shares it through `Arc<Event>`; delivering it to one session only
//! writes the small head `{"op":"msg","seq":N,` in front.

pub mod deflate;

use std::ops::Range;
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

use crate::topic::Topic;

mod msgpack;

/// A published message, immutable once built.
#[derive(Debug)]
pub struct Event {
    pub topic: Topic,
    pub offset: u64,
    pub epoch: Arc<str>,
    /// Server receive time, Unix milliseconds.
    pub ts: u64,
    pub msg_id: Option<Box<str>>,
    /// Where a request's answer goes (`$inbox/…`).
    pub reply_to: Option<Box<str>>,
    /// Monotonic time of the publish: writers measure publish-to-socket-write latency from
    /// it (`crate::metrics`). `ts` is wall-clock time and may jump.
    pub published: Instant,
    body: Bytes,
    data: Range<usize>,
    /// The msgpack encoding's shared part, made by the first msgpack writer (`msgpack.rs`).
    msgpack: OnceLock<msgpack::MsgpackBody>,
    /// The body compressed for permessage-deflate, once (`deflate.rs`).
    deflated: deflate::Deflated,
}

/// How a connection's frames are encoded: the subprotocol it negotiated (PROTOCOL.md §2). An
/// event has a shared body per encoding, each built once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Encoding {
    /// Text frames of JSON (`herald.v1`, or no subprotocol).
    #[default]
    Json,
    /// Binary frames of MessagePack (`herald.v1.msgpack`).
    Msgpack,
}

/// Per-recipient flags of a `msg` frame (PROTOCOL.md §4 "optional fields").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    pub retained: bool,
    pub replay: bool,
    /// Set on a redelivery: how many times the message has been delivered, this one included.
    pub redelivered: Option<u32>,
}

impl Delivery {
    pub const LIVE: Delivery = Delivery {
        retained: false,
        replay: false,
        redelivered: None,
    };
}

/// What a publisher supplies; the bus adds offset, epoch and time.
#[derive(Debug, Clone)]
pub struct EventParts<'a> {
    pub topic: Topic,
    /// Valid JSON text.
    pub data: &'a str,
    pub msg_id: Option<&'a str>,
    pub reply_to: Option<&'a str>,
}

impl Event {
    /// Builds the event and its shared body. `data` must be valid JSON (it is copied verbatim).
    pub fn new(parts: EventParts<'_>, offset: u64, epoch: Arc<str>, ts: u64) -> Event {
        let mut body = String::with_capacity(parts.data.len() + parts.topic.as_str().len() + 96);
        body.push_str("\"topic\":");
        push_json_str(&mut body, parts.topic.as_str());
        body.push_str(",\"data\":");
        let start = body.len();
        body.push_str(parts.data);
        let data = start..body.len();
        body.push_str(",\"offset\":");
        body.push_str(itoa::Buffer::new().format(offset));
        body.push_str(",\"epoch\":");
        push_json_str(&mut body, &epoch);
        body.push_str(",\"ts\":");
        body.push_str(itoa::Buffer::new().format(ts));
        if let Some(id) = parts.msg_id {
            body.push_str(",\"msg_id\":");
            push_json_str(&mut body, id);
        }
        if let Some(r) = parts.reply_to {
            body.push_str(",\"reply_to\":");
            push_json_str(&mut body, r);
        }
        body.push('}');
        Event {
            topic: parts.topic,
            offset,
            epoch,
            ts,
            msg_id: parts.msg_id.map(Into::into),
            reply_to: parts.reply_to.map(Into::into),
            published: Instant::now(),
            body: Bytes::from(body),
            data,
            msgpack: OnceLock::new(),
            deflated: deflate::Deflated::default(),
        }
    }

    /// The message's `data` as JSON text.
    pub fn data_json(&self) -> &str {
        // The body was built from `String`s and `data` indexes a slice of it.
        std::str::from_utf8(&self.body[self.data.clone()]).unwrap_or("null")
    }

    /// Bytes this event is charged against a session's `buffer_bytes`.
    pub fn cost(&self) -> usize {
        self.body.len() + std::mem::size_of::<Event>()
    }

    /// Appends the complete `msg` frame for one recipient to `out`: exactly
    /// [`Event::msg_len`] bytes.
    pub fn write_msg(&self, seq: u64, how: Delivery, out: &mut impl BufMut) {
        self.write_head(seq, how, out);
        out.put_slice(&self.body);
    }

    /// Appends the per-recipient head of the `msg` frame, everything before the shared body.
    fn write_head(&self, seq: u64, how: Delivery, out: &mut impl BufMut) {
        out.put_slice(MSG_HEAD);
        out.put_slice(itoa::Buffer::new().format(seq).as_bytes());
        out.put_u8(b',');
        if how.retained {
            out.put_slice(RETAINED);
        }
        if how.replay {
            out.put_slice(REPLAY);
        }
        if let Some(n) = how.redelivered {
            out.put_slice(REDELIVERED);
            out.put_slice(itoa::Buffer::new().format(n).as_bytes());
            out.put_u8(b',');
        }
    }

    /// The length of the `msg` frame [`Event::write_msg`] writes, computed without writing
    /// it (a WebSocket frame header, which holds the length, goes before it).
    pub fn msg_len(&self, seq: u64, how: Delivery) -> usize {
        let mut n = MSG_HEAD.len() + decimal_len(seq) + 1 + self.body.len();
        if how.retained {
            n += RETAINED.len();
        }
        if how.replay {
            n += REPLAY.len();
        }
        if let Some(d) = how.redelivered {
            n += REDELIVERED.len() + decimal_len(u64::from(d)) + 1;
        }
        n
    }

    /// The `msg` frame for one recipient as a standalone string (tests, embedded users).
    pub fn msg_frame(&self, seq: u64, how: Delivery) -> String {
        let mut out = BytesMut::with_capacity(self.msg_len(seq, how));
        self.write_msg(seq, how, &mut out);
        String::from_utf8(out.to_vec()).unwrap_or_default()
    }
}

const MSG_HEAD: &[u8] = b"{\"op\":\"msg\",\"seq\":";
const RETAINED: &[u8] = b"\"retained\":true,";
const REPLAY: &[u8] = b"\"replay\":true,";
const REDELIVERED: &[u8] = b"\"redelivered\":true,\"deliveries\":";

/// Digits of `n` in decimal.
fn decimal_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// Current time in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn push_json_str(out: &mut String, s: &str) {
    // serde_json's string escaping; writing into a String cannot fail.
    if let Ok(quoted) = serde_json::to_string(s) {
        out.push_str(&quoted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MsgFrame;

    #[test]
    fn msg_frame_is_valid_json() {
        let ev = Event::new(
            EventParts {
                topic: Topic::parse("chat/\"q\"").unwrap(),
                data: r#"{"text":"hi"}"#,
                msg_id: Some("c-77"),
                reply_to: None,
            },
            1187,
            "e3k2".into(),
            1_764_000_000_000,
        );
        assert_eq!(ev.data_json(), r#"{"text":"hi"}"#);
        let text = ev.msg_frame(42, Delivery::LIVE);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["op"], "msg");
        let m: MsgFrame = serde_json::from_value(v).unwrap();
        assert_eq!(
            (m.seq, m.offset, m.topic.as_str()),
            (42, 1187, "chat/\"q\"")
        );
        assert_eq!(m.msg_id.as_deref(), Some("c-77"));
        let again = ev.msg_frame(
            43,
            Delivery {
                retained: true,
                replay: true,
                redelivered: Some(2),
            },
        );
        let m: MsgFrame = serde_json::from_str(&again).unwrap();
        for (seq, how) in [
            (0, Delivery::LIVE),
            (9, Delivery::LIVE),
            (10, Delivery::LIVE),
            (u64::MAX, Delivery::LIVE),
            (
                43,
                Delivery {
                    retained: true,
                    replay: true,
                    redelivered: Some(2),
                },
            ),
            (
                7,
                Delivery {
                    redelivered: Some(u32::MAX),
                    ..Delivery::LIVE
                },
            ),
        ] {
            assert_eq!(ev.msg_len(seq, how), ev.msg_frame(seq, how).len());
        }
        assert!(m.retained && m.replay && m.redelivered);
        assert_eq!(m.deliveries, Some(2));
    }
}
