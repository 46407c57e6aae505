//! An event's `msg` frame in MessagePack (`herald.v1.msgpack`, PROTOCOL.md §2), encoded once:
//! the first msgpack writer that sends the event builds the shared part, every later one
//! reuses it, and an event no msgpack connection reads never pays for it.
//!
//! As with JSON, the frame is a small per-recipient head and a shared body. MessagePack puts
//! the map's entry count in front, so the head holds it: `op`, `seq` and the recipient's
//! flags, plus the body's pairs (`topic`, `data`, `offset`, `epoch`, `ts`, `msg_id`?,
//! `reply_to`?). At most 12 pairs in all: the head's map header is always one byte.

use bytes::{BufMut, Bytes};
use herald_protocol::msgpack::{from_json_into, write};

use super::{Delivery, Event};

/// The shared part of an event's msgpack `msg` frame.
#[derive(Debug)]
pub(super) struct MsgpackBody {
    bytes: Bytes,
    pairs: u8,
}

impl MsgpackBody {
    fn new(ev: &Event) -> MsgpackBody {
        let mut out = Vec::with_capacity(ev.body.len() + 16);
        let mut pairs = 5;
        write::str(&mut out, "topic");
        write::str(&mut out, ev.topic.as_str());
        write::str(&mut out, "data");
        let at = out.len();
        // `data` was checked as JSON when it was published, so this holds; were it not, the
        // subscriber gets `nil` rather than a broken frame.
        if from_json_into(ev.data_json(), &mut out).is_err() {
            out.truncate(at);
            write::nil(&mut out);
        }
        write::str(&mut out, "offset");
        write::uint(&mut out, ev.offset);
        write::str(&mut out, "epoch");
        write::str(&mut out, &ev.epoch);
        write::str(&mut out, "ts");
        write::uint(&mut out, ev.ts);
        for (key, v) in [("msg_id", &ev.msg_id), ("reply_to", &ev.reply_to)] {
            if let Some(v) = v {
                write::str(&mut out, key);
                write::str(&mut out, v);
                pairs += 1;
            }
        }
        MsgpackBody {
            bytes: out.into(),
            pairs,
        }
    }
}

const OP_MSG: &[u8] = b"\xa2op\xa3msg";
const SEQ: &[u8] = b"\xa3seq";
const RETAINED: &[u8] = b"\xa8retained\xc3";
const REPLAY: &[u8] = b"\xa6replay\xc3";
const REDELIVERED: &[u8] = b"\xabredelivered\xc3\xaadeliveries";

impl Event {
    fn msgpack(&self) -> &MsgpackBody {
        self.msgpack.get_or_init(|| MsgpackBody::new(self))
    }

    /// Appends the msgpack `msg` frame for one recipient: exactly [`Event::msgpack_len`] bytes.
    pub fn write_msgpack(&self, seq: u64, how: Delivery, out: &mut impl BufMut) {
        self.write_msgpack_head(seq, how, out);
        out.put_slice(&self.msgpack().bytes);
    }

    /// The shared part of the msgpack `msg` frame (built on first use).
    pub(super) fn msgpack_body(&self) -> &[u8] {
        &self.msgpack().bytes
    }

    /// Appends the per-recipient head of the msgpack `msg` frame, everything before
    /// [`Event::msgpack_body`].
    pub(super) fn write_msgpack_head(&self, seq: u64, how: Delivery, out: &mut impl BufMut) {
        let body = self.msgpack();
        let flags =
            u8::from(how.retained) + u8::from(how.replay) + 2 * u8::from(how.redelivered.is_some());
        out.put_u8(0x80 | (2 + flags + body.pairs));
        out.put_slice(OP_MSG);
        out.put_slice(SEQ);
        let (n, len) = write::uint_bytes(seq);
        out.put_slice(&n[..len]);
        if how.retained {
            out.put_slice(RETAINED);
        }
        if how.replay {
            out.put_slice(REPLAY);
        }
        if let Some(d) = how.redelivered {
            out.put_slice(REDELIVERED);
            let (n, len) = write::uint_bytes(u64::from(d));
            out.put_slice(&n[..len]);
        }
    }

    /// The length of the frame [`Event::write_msgpack`] writes.
    pub fn msgpack_len(&self, seq: u64, how: Delivery) -> usize {
        let mut n = 1 + OP_MSG.len() + SEQ.len() + uint_len(seq) + self.msgpack().bytes.len();
        if how.retained {
            n += RETAINED.len();
        }
        if how.replay {
            n += REPLAY.len();
        }
        if let Some(d) = how.redelivered {
            n += REDELIVERED.len() + uint_len(u64::from(d));
        }
        n
    }
}

/// The length of [`write::uint`]'s encoding of `n`.
fn uint_len(n: u64) -> usize {
    write::uint_bytes(n).1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventParts;
    use crate::topic::Topic;
    use herald_protocol::msgpack::to_json;

    #[test]
    fn msgpack_frame_is_the_json_frame() {
        let ev = Event::new(
            EventParts {
                topic: Topic::parse("chat/\"q\"").unwrap(),
                data: r#"{"text":"hi","bin":{"$base64":"AAE="},"n":[1,2.5,null]}"#,
                msg_id: Some("c-77"),
                reply_to: Some("$inbox/x/1"),
            },
            1187,
            "e3k2".into(),
            1_764_000_000_000,
        );
        for seq in [0, 127, 128, 255, 256, 65535, 65536, u32::MAX as u64 + 1] {
            for how in [
                Delivery::LIVE,
                Delivery {
                    retained: true,
                    replay: true,
                    redelivered: Some(300),
                },
                Delivery {
                    redelivered: Some(1),
                    ..Delivery::LIVE
                },
            ] {
                let mut out = Vec::new();
                ev.write_msgpack(seq, how, &mut out);
                assert_eq!(out.len(), ev.msgpack_len(seq, how));
                let got: serde_json::Value = serde_json::from_str(&to_json(&out).unwrap()).unwrap();
                let want: serde_json::Value =
                    serde_json::from_str(&ev.msg_frame(seq, how)).unwrap();
                assert_eq!(got, want);
            }
        }
        // The binary value travels as `bin`.
        let mut out = Vec::new();
        ev.write_msgpack(1, Delivery::LIVE, &mut out);
        assert!(out.windows(4).any(|w| w == [0xc4, 2, 0, 1]));
    }
}
