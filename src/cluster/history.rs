//! Reading a topic's stored messages back from Redis: its epoch, its history stream, and
//! the whole tail a node needs to start serving the topic with replay.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::error::ClusterError;
use super::keys::TopicKeys;
use super::wire::{self, Record};
use crate::topic::Topic;

/// A stream range as Redis returns it: `(id, [(field, value)])` per entry.
type StreamEntries = Vec<(String, Vec<(String, Vec<u8>)>)>;

/// A topic's state in Redis, for a node that starts serving it.
#[derive(Debug, Clone)]
pub struct Tail {
    pub epoch: Arc<str>,
    pub offset: u64,
    /// Oldest first.
    pub history: Vec<Record>,
    pub retained: Option<Record>,
}

/// A topic's epoch (created now when the topic is new, as a first publish would).
pub(super) async fn epoch(conn: &ConnectionManager, topic: &str) -> Result<Arc<str>, ClusterError> {
    let (epoch,): (String,) = epoch_pipe(&TopicKeys::new(topic))
        .query_async(&mut conn.clone())
        .await?;
    Ok(epoch.into())
}

/// A pipeline answering a topic's epoch first, creating it when the topic is new; more
/// commands may follow.
fn epoch_pipe(keys: &TopicKeys) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(&keys.epoch)
        .arg(&*crate::store::new_epoch())
        .arg("NX")
        .ignore()
        .cmd("GET")
        .arg(&keys.epoch);
    pipe
}

/// Stored messages of `topic` among its newest `keep`: the first `limit` after `since`, or
/// the newest `limit`. Messages older than `ttl` are left out.
///
/// The stream is trimmed approximately (`MAXLEN ~`: Redis drops whole nodes of entries, so
/// it may hold more than `keep`); reads cut it to exactly `keep`, as a single node keeps.
pub(super) async fn history(
    conn: &ConnectionManager,
    topic: &Topic,
    since: Option<u64>,
    limit: usize,
    keep: usize,
    ttl: Option<Duration>,
) -> Result<(Arc<str>, Vec<Record>), ClusterError> {
    let keys = TopicKeys::new(topic.as_str());
    let (epoch, last): (String, Option<u64>) = epoch_pipe(&keys)
        .cmd("GET")
        .arg(&keys.offset)
        .query_async(&mut conn.clone())
        .await?;
    let epoch: Arc<str> = epoch.into();
    let oldest_kept = last.unwrap_or(0).saturating_sub(keep as u64) + 1;
    let limit = limit.min(keep);
    let mut cmd = match since {
        Some(after) => {
            let mut c = redis::cmd("XRANGE");
            c.arg(&keys.history)
                .arg(format!("{}-0", after.saturating_add(1).max(oldest_kept)))
                .arg("+");
            c
        }
        None => {
            let mut c = redis::cmd("XREVRANGE");
            c.arg(&keys.history).arg("+").arg("-");
            c
        }
    };
    cmd.arg("COUNT").arg(limit);
    let entries: StreamEntries = cmd.query_async(&mut conn.clone()).await?;
    let mut records = decode_entries(topic, entries, ttl)?;
    records.retain(|r| r.event.offset >= oldest_kept);
    if since.is_none() {
        records.reverse();
    }
    Ok((epoch, records))
}

/// Everything a node needs to start serving `topic` with replay: epoch, last offset, the
/// newest `keep` stored messages (none with 0) and the retained message.
pub(super) async fn tail(
    conn: &ConnectionManager,
    topic: &Topic,
    keep: usize,
    ttl: Option<Duration>,
) -> Result<Tail, ClusterError> {
    let keys = TopicKeys::new(topic.as_str());
    let (offset, epoch, entries, retained): (
        Option<u64>,
        Option<String>,
        StreamEntries,
        Option<Vec<u8>>,
    ) = redis::pipe()
        .cmd("GET")
        .arg(&keys.offset)
        .cmd("GET")
        .arg(&keys.epoch)
        .cmd("XREVRANGE")
        .arg(&keys.history)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(keep)
        .cmd("GET")
        .arg(&keys.retained)
        .query_async(&mut conn.clone())
        .await?;
    let epoch: Arc<str> = match epoch {
        Some(e) => e.into(),
        None => self::epoch(conn, topic.as_str()).await?,
    };
    let mut history = decode_entries(topic, entries, ttl)?;
    history.reverse();
    let retained = retained
        .map(|b| wire::decode(topic, &b))
        .transpose()?
        .filter(|r| *r.event.epoch == *epoch);
    Ok(Tail {
        epoch,
        offset: offset.unwrap_or(0),
        history,
        retained,
    })
}

fn decode_entries(
    topic: &Topic,
    entries: StreamEntries,
    ttl: Option<Duration>,
) -> Result<Vec<Record>, ClusterError> {
    let cutoff = ttl.map_or(0, |t| {
        crate::event::now_ms().saturating_sub(t.as_millis() as u64)
    });
    let mut out = Vec::with_capacity(entries.len());
    for (id, fields) in entries {
        let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let r = if let Some(p) = field("p") {
            wire::decode(topic, p)?
        } else if let (Some(q), Some(e)) = (field("q"), field("e")) {
            // A message stored from a run: its offset is the entry's id.
            let offset = id
                .split_once('-')
                .and_then(|(o, _)| o.parse().ok())
                .ok_or_else(|| ClusterError::Redis(format!("stream entry id {id}")))?;
            let epoch = std::str::from_utf8(e)
                .map_err(|_| ClusterError::Redis("stream entry epoch".into()))?;
            wire::decode_item(topic, q, offset, epoch.into())?
        } else {
            continue;
        };
        if r.event.ts >= cutoff {
            out.push(r);
        }
    }
    Ok(out)
}
