//! The message record Herald keeps in Redis: the payload of a channel message, a history
//! stream entry and a retained message are the same string, built by the publish script:
//!
//! ```text
//! <retain n|r|c> <offset> <ts> <epoch> <len msg_id> <len reply_to> <msg_id><reply_to><data>
//! ```
//!
//! A short space-separated header (epochs never hold spaces) and then the raw bytes, so the
//! JSON data is neither escaped nor parsed again on the way through Redis.
//!
//! A channel message carries a batch: every new message of one topic from one script call,
//! each record preceded by its length (`<len>:<record>` repeated), so a node receives,
//! parses and applies a burst of a topic's messages as one.

use std::sync::Arc;

use crate::event::{Event, EventParts};
use crate::store::RetainOp;
use crate::topic::Topic;

/// The record's flag for what a message does to its topic's retained message.
pub fn retain_flag(op: Option<RetainOp>) -> &'static str {
    match op {
        None => "n",
        Some(RetainOp::Set) => "r",
        Some(RetainOp::Clear) => "c",
    }
}

/// Writes the part of a record that follows its epoch (`<len msg_id> <len reply_to>
/// <msg_id><reply_to><data>`): the node builds it, the publish script puts the retain flag,
/// offset, ts and epoch in front.
/// Returns how many bytes it wrote.
pub fn write_rest(out: &mut Vec<u8>, msg_id: &str, reply_to: &str, data: &str) -> usize {
    let start = out.len();
    out.extend_from_slice(itoa::Buffer::new().format(msg_id.len()).as_bytes());
    out.push(b' ');
    out.extend_from_slice(itoa::Buffer::new().format(reply_to.len()).as_bytes());
    out.push(b' ');
    out.extend_from_slice(msg_id.as_bytes());
    out.extend_from_slice(reply_to.as_bytes());
    out.extend_from_slice(data.as_bytes());
    out.len() - start
}

/// How many bytes [`write_rest`] writes.
pub fn rest_len(msg_id: &str, reply_to: &str, data: &str) -> usize {
    let digits = |n: usize| itoa::Buffer::new().format(n).len();
    digits(msg_id.len()) + digits(reply_to.len()) + 2 + msg_id.len() + reply_to.len() + data.len()
}

/// A message as read back from Redis.
#[derive(Debug, Clone)]
pub struct Record {
    pub retain: Option<RetainOp>,
    pub event: Arc<Event>,
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
#[error("malformed record in Redis: {0}")]
pub struct Malformed(&'static str);

/// Reads a record of `topic`.
pub fn decode(topic: &Topic, bytes: &[u8]) -> Result<Record, Malformed> {
    let mut rest = bytes;
    let mut field = |what: &'static str| -> Result<&[u8], Malformed> {
        let end = memchr::memchr(b' ', rest).ok_or(Malformed(what))?;
        let (f, r) = rest.split_at(end);
        rest = &r[1..];
        Ok(f)
    };
    let retain = match field("retain flag")? {
        b"n" => None,
        b"r" => Some(RetainOp::Set),
        b"c" => Some(RetainOp::Clear),
        _ => return Err(Malformed("retain flag")),
    };
    let offset = number(field("offset")?).ok_or(Malformed("offset"))?;
    let ts = number(field("ts")?).ok_or(Malformed("ts"))?;
    let epoch = std::str::from_utf8(field("epoch")?).map_err(|_| Malformed("epoch"))?;
    let epoch: Arc<str> = epoch.into();
    let id_len = number(field("msg_id length")?).ok_or(Malformed("msg_id length"))? as usize;
    let reply_len = number(field("reply_to length")?).ok_or(Malformed("reply_to length"))? as usize;
    if rest.len() < id_len + reply_len {
        return Err(Malformed("truncated"));
    }
    let (id, rest) = rest.split_at(id_len);
    let (reply, data) = rest.split_at(reply_len);
    let id = text(id, "msg_id")?;
    let reply = text(reply, "reply_to")?;
    let data = text(data, "data")?;
    let event = Event::new(
        EventParts {
            topic: topic.clone(),
            data,
            msg_id: (!id.is_empty()).then_some(id),
            reply_to: (!reply.is_empty()).then_some(reply),
        },
        offset,
        epoch,
        ts,
    );
    Ok(Record {
        retain,
        event: Arc::new(event),
    })
}

/// Reads the records of a channel message of `topic` (see the module comment), oldest first.
pub fn decode_batch(topic: &Topic, mut bytes: &[u8]) -> Result<Vec<Record>, Malformed> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let colon = memchr::memchr(b':', bytes).ok_or(Malformed("batch length"))?;
        let len = number(&bytes[..colon]).ok_or(Malformed("batch length"))? as usize;
        let rest = &bytes[colon + 1..];
        if rest.len() < len {
            return Err(Malformed("batch truncated"));
        }
        out.push(decode(topic, &rest[..len])?);
        bytes = &rest[len..];
    }
    Ok(out)
}

fn text<'a>(b: &'a [u8], what: &'static str) -> Result<&'a str, Malformed> {
    std::str::from_utf8(b).map_err(|_| Malformed(what))
}

fn number(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// The publish script: one call per batch of publishes, one channel message per topic of
/// the batch.
///
/// Its KEYS, ARGV and answer are listed at the top of `lua/publish.lua`.
pub const PUBLISH_SCRIPT: &str = include_str!("lua/publish.lua");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_record() {
        let t = Topic::parse("a/b").unwrap();
        let r = decode(&t, b"r 7 1700 ep1 2 0 id{\"x\": 1}").unwrap();
        assert_eq!(r.retain, Some(RetainOp::Set));
        assert_eq!(r.event.offset, 7);
        assert_eq!(r.event.ts, 1700);
        assert_eq!(&*r.event.epoch, "ep1");
        assert_eq!(r.event.msg_id.as_deref(), Some("id"));
        assert_eq!(r.event.data_json(), "{\"x\": 1}");
    }

    #[test]
    fn rest_len_is_what_write_rest_writes() {
        let long = "i".repeat(123);
        for (id, reply, data) in [
            ("", "", "1"),
            ("id", "$inbox/n.1", "{}"),
            (&*long, "", "[]"),
        ] {
            let mut out = b"x".to_vec();
            assert_eq!(
                write_rest(&mut out, id, reply, data),
                rest_len(id, reply, data)
            );
            assert_eq!(out.len(), 1 + rest_len(id, reply, data));
        }
    }

    #[test]
    fn decodes_a_batch() {
        let t = Topic::parse("a").unwrap();
        let one = b"n 1 5 e 0 0 1";
        let two = b"r 2 6 e 0 0 [2]";
        let mut batch = format!("{}:", one.len()).into_bytes();
        batch.extend_from_slice(one);
        batch.extend_from_slice(format!("{}:", two.len()).as_bytes());
        batch.extend_from_slice(two);
        let got = decode_batch(&t, &batch).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].event.offset, 2);
        assert_eq!(got[1].event.data_json(), "[2]");
        for bad in [&b"5:n 1 5"[..], b"x:", b"13:n 1 5 e 0 0 1tail"] {
            assert!(decode_batch(&t, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refuses_garbage() {
        let t = Topic::parse("a").unwrap();
        for bad in [
            &b""[..],
            b"x 1 2 e 0 0 1",
            b"n 1 2 e 5 0 ab",
            b"n one 2 e 0 0 1",
        ] {
            assert!(decode(&t, bad).is_err(), "{:?}", bad);
        }
    }
}
