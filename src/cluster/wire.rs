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
//!
//! Or a run, when the batch's messages of the topic have consecutive offsets and nothing
//! for the script to do one by one but store them (no de-duplication, no retain flag):
//! `=<first offset> <epoch> ` and then `<len>:<retain> <ts> <rest>` repeated, as the
//! publishing node wrote them. The script then publishes what it was given without
//! building a record per message, which was most of Redis's time per publish. A run's
//! messages of a topic with history are stored the same way: stream entry `<offset>-0`
//! with fields `q` (`<retain> <ts> <rest>`) and `e` (the epoch); other messages are
//! stored as `p` (the record).

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
    let mut f = Fields(bytes);
    let retain = f.retain()?;
    let offset = f.number("offset")?;
    let ts = f.number("ts")?;
    let epoch: Arc<str> = text(f.next("epoch")?, "epoch")?.into();
    f.finish(topic, retain, offset, ts, epoch)
}

/// A record's space-separated fields, read one at a time.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn next(&mut self, what: &'static str) -> Result<&'a [u8], Malformed> {
        let end = memchr::memchr(b' ', self.0).ok_or(Malformed(what))?;
        let (f, r) = self.0.split_at(end);
        self.0 = &r[1..];
        Ok(f)
    }

    fn number(&mut self, what: &'static str) -> Result<u64, Malformed> {
        number(self.next(what)?).ok_or(Malformed(what))
    }

    fn retain(&mut self) -> Result<Option<RetainOp>, Malformed> {
        match self.next("retain flag")? {
            b"n" => Ok(None),
            b"r" => Ok(Some(RetainOp::Set)),
            b"c" => Ok(Some(RetainOp::Clear)),
            _ => Err(Malformed("retain flag")),
        }
    }

    /// The rest (`<len msg_id> <len reply_to> <msg_id><reply_to><data>`) and the record.
    fn finish(
        mut self,
        topic: &Topic,
        retain: Option<RetainOp>,
        offset: u64,
        ts: u64,
        epoch: Arc<str>,
    ) -> Result<Record, Malformed> {
        let id_len = self.number("msg_id length")? as usize;
        let reply_len = self.number("reply_to length")? as usize;
        let rest = self.0;
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
}

/// Reads the records of a channel message of `topic` (see the module comment), oldest first.
pub fn decode_batch(topic: &Topic, bytes: &[u8]) -> Result<Vec<Record>, Malformed> {
    if let Some(run) = bytes.strip_prefix(b"=") {
        return decode_run(topic, run);
    }
    let mut out = Vec::new();
    for item in items(bytes) {
        out.push(decode(topic, item?)?);
    }
    Ok(out)
}

/// How many messages a channel message carries (0 when it is malformed: it will be
/// refused when it is read).
pub fn count(bytes: &[u8]) -> usize {
    let items_at = match bytes.strip_prefix(b"=") {
        Some(run) => {
            let mut head = Fields(run);
            if head.next("run offset").and(head.next("run epoch")).is_err() {
                return 0;
            }
            head.0
        }
        None => bytes,
    };
    items(items_at).take_while(Result::is_ok).count()
}

/// A run after its `=`: `<first offset> <epoch> ` and its items, each `<retain> <ts>
/// <rest>`.
fn decode_run(topic: &Topic, bytes: &[u8]) -> Result<Vec<Record>, Malformed> {
    let mut head = Fields(bytes);
    let first = head.number("run offset")?;
    let epoch: Arc<str> = text(head.next("run epoch")?, "run epoch")?.into();
    let mut out = Vec::new();
    for (i, item) in items(head.0).enumerate() {
        let offset = first.checked_add(i as u64).ok_or(Malformed("run offset"))?;
        out.push(decode_item(topic, item?, offset, epoch.clone())?);
    }
    Ok(out)
}

/// Reads a message of a run (`<retain> <ts> <rest>`), whose offset and epoch come from
/// around it: its place in the run, or its stream entry's id and `e` field.
pub fn decode_item(
    topic: &Topic,
    item: &[u8],
    offset: u64,
    epoch: Arc<str>,
) -> Result<Record, Malformed> {
    let mut f = Fields(item);
    let retain = f.retain()?;
    let ts = f.number("ts")?;
    f.finish(topic, retain, offset, ts, epoch)
}

/// The `<len>:<bytes>` items of a batch.
fn items(mut bytes: &[u8]) -> impl Iterator<Item = Result<&[u8], Malformed>> {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let Some(colon) = memchr::memchr(b':', bytes) else {
            bytes = &[];
            return Some(Err(Malformed("batch length")));
        };
        let Some(len) = number(&bytes[..colon]) else {
            bytes = &[];
            return Some(Err(Malformed("batch length")));
        };
        let rest = &bytes[colon + 1..];
        if rest.len() < len as usize {
            bytes = &[];
            return Some(Err(Malformed("batch truncated")));
        }
        let (item, after) = rest.split_at(len as usize);
        bytes = after;
        Some(Ok(item))
    })
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
        assert_eq!(count(&batch), 2);
        assert_eq!(got[1].event.offset, 2);
        assert_eq!(got[1].event.data_json(), "[2]");
        for bad in [&b"5:n 1 5"[..], b"x:", b"13:n 1 5 e 0 0 1tail"] {
            assert!(decode_batch(&t, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn decodes_a_run() {
        let t = Topic::parse("a").unwrap();
        let one = b"n 5 0 0 1";
        let two = b"n 6 2 0 id[2]";
        let mut run = b"=41 ep7 ".to_vec();
        for item in [&one[..], two] {
            run.extend_from_slice(format!("{}:", item.len()).as_bytes());
            run.extend_from_slice(item);
        }
        let got = decode_batch(&t, &run).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].event.offset, got[1].event.offset), (41, 42));
        assert_eq!((got[0].event.ts, got[1].event.ts), (5, 6));
        assert!(
            got.iter()
                .all(|r| &*r.event.epoch == "ep7" && r.retain.is_none())
        );
        assert_eq!(got[1].event.msg_id.as_deref(), Some("id"));
        assert_eq!(got[1].event.data_json(), "[2]");
        for bad in [
            &b"=41 ep7"[..],
            b"=x ep7 9:n 5 0 0 1",
            b"=41 ep7 9:n 5 0 0 1tail",
            b"=41 ep7 5:n 5 0",
            b"=18446744073709551615 e 9:n 5 0 0 19:n 5 0 0 1",
        ] {
            assert!(
                decode_batch(&t, bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // An empty run is no message.
        assert!(decode_batch(&t, b"=1 e ").unwrap().is_empty());
        assert_eq!((count(&run), count(b"=1 e "), count(b"=1")), (2, 0, 0));
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
