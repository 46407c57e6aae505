//! The durable side of the store: what a persisted topic (`[[topics]] persist = true` with
//! `--data-dir`) writes to disk, and what comes back on start (PROTOCOL.md §5).
//!
//! The in-memory topic table ([`super::MemoryStore`]) stays the one place reads are served
//! from — `history`, `rewind`, `since` and retained messages cost the same with or without a
//! data directory. A [`Durable`] engine sits behind it as a write-behind log: every message
//! of a persisted topic is committed through it (in batches, one fsync each, by the
//! [`super::Committer`]) *before* it enters the memory history or reaches any subscriber, and
//! on start the engine hands back each topic's epoch, last offset, history and retained
//! message. Topics with `persist = false` never touch it: they live in memory only and
//! start a new epoch after a restart.

use std::sync::Arc;
use std::time::Duration;

use crate::config::TopicConfig;
use crate::event::{Event, EventParts};
use crate::topic::Topic;

/// A disk engine for persisted topics. One thread (the committer) owns it, so methods take
/// `&mut self` and need no locking of their own.
pub trait Durable: Send + 'static {
    /// Reads back every persisted topic still configured to persist (`retention` returns
    /// `None` for the others, which are left untouched on disk), trims what the current
    /// limits no longer keep, and returns the rest.
    fn recover(
        &mut self,
        retention: &dyn Fn(&Topic) -> Option<Retention>,
        now_ms: u64,
    ) -> Result<Vec<Recovered>, StoreError>;

    /// Makes a batch of writes durable, in order, with one sync to disk. Trims each touched
    /// topic to its `history` count in the same transaction.
    fn commit(&mut self, batch: &[Write]) -> Result<(), StoreError>;

    /// Deletes messages older than their topic's `history_ttl`; returns how many went.
    fn expire(&mut self, now_ms: u64) -> Result<u64, StoreError>;
}

/// How much of a topic's history is kept (its `[[topics]]` entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Messages kept; 0: none (the offset, epoch and retained message are still kept).
    pub history: usize,
    pub ttl: Option<Duration>,
}

impl Retention {
    pub fn of(settings: &TopicConfig) -> Retention {
        Retention {
            history: settings.history,
            ttl: settings.history_ttl,
        }
    }

    /// The oldest `ts` still kept at `now_ms` (0 without a TTL).
    pub fn cutoff(&self, now_ms: u64) -> u64 {
        self.ttl
            .map_or(0, |ttl| now_ms.saturating_sub(ttl.as_millis() as u64))
    }
}

/// What a published message changes about its topic's retained message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetainOp {
    Set,
    Clear,
}

/// One message to make durable.
#[derive(Debug, Clone)]
pub struct Write {
    pub event: Arc<Event>,
    pub retain: Option<RetainOp>,
    pub keep: Retention,
}

/// A persisted topic as found on start.
#[derive(Debug)]
pub struct Recovered {
    pub topic: Topic,
    pub epoch: Arc<str>,
    /// Offset of the last message committed.
    pub offset: u64,
    /// Oldest first, within the topic's current limits.
    pub history: Vec<Arc<Event>>,
    pub retained: Option<Arc<Event>>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use the data directory {path}: {message}")]
    Open { path: String, message: String },
    #[error("durable store: {0}")]
    Engine(String),
    #[error("the durable store failed earlier ({0}); persisted topics are unavailable")]
    Failed(String),
    /// Cluster mode could not start (a bad Redis URL).
    #[error("cluster: {0}")]
    Cluster(String),
}

/// A stored message: `ts` (u64 LE), `msg_id` and `reply_to` (u16 LE length, 0 for none,
/// then the bytes), then the `data` JSON. Topic, offset and epoch live in the key and the
/// topic's metadata, so they are not repeated per message.
pub fn encode_record(event: &Event, out: &mut Vec<u8>) {
    out.extend_from_slice(&event.ts.to_le_bytes());
    for s in [event.msg_id.as_deref(), event.reply_to.as_deref()] {
        let s = s.unwrap_or("").as_bytes();
        out.extend_from_slice(&(s.len() as u16).to_le_bytes());
        out.extend_from_slice(s);
    }
    out.extend_from_slice(event.data_json().as_bytes());
}

/// The `ts` of a stored message, without decoding the rest.
pub fn record_ts(record: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(record.get(..8)?.try_into().ok()?))
}

/// Rebuilds an event from its stored record; `None` when the record is malformed.
pub fn decode_record(topic: &Topic, offset: u64, epoch: &Arc<str>, rec: &[u8]) -> Option<Event> {
    let ts = record_ts(rec)?;
    let mut rest = &rec[8..];
    let mut field = || -> Option<Option<&str>> {
        let len = u16::from_le_bytes(rest.get(..2)?.try_into().ok()?) as usize;
        let s = std::str::from_utf8(rest.get(2..2 + len)?).ok()?;
        rest = &rest[2 + len..];
        Some((len > 0).then_some(s))
    };
    let msg_id = field()?;
    let reply_to = field()?;
    let data = std::str::from_utf8(rest).ok()?;
    if data.is_empty() {
        return None;
    }
    Some(Event::new(
        EventParts {
            topic: topic.clone(),
            data,
            msg_id,
            reply_to,
        },
        offset,
        epoch.clone(),
        ts,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let topic = Topic::parse("a/b").unwrap();
        let epoch: Arc<str> = "e1".into();
        for (msg_id, reply_to) in [(None, None), (Some("m-1"), Some("$inbox/x"))] {
            let ev = Event::new(
                EventParts {
                    topic: topic.clone(),
                    data: r#"{"x":[1,"é"]}"#,
                    msg_id,
                    reply_to,
                },
                7,
                epoch.clone(),
                1234,
            );
            let mut buf = Vec::new();
            encode_record(&ev, &mut buf);
            assert_eq!(record_ts(&buf), Some(1234));
            let back = decode_record(&topic, 7, &epoch, &buf).unwrap();
            assert_eq!(back.data_json(), ev.data_json());
            assert_eq!(back.msg_id, ev.msg_id);
            assert_eq!(back.reply_to, ev.reply_to);
            assert_eq!(
                back.msg_frame(1, Default::default()),
                ev.msg_frame(1, Default::default())
            );
        }
        assert!(decode_record(&topic, 1, &epoch, &[1, 2, 3]).is_none());
        assert!(decode_record(&topic, 1, &epoch, &[0; 12]).is_none());
    }
}
