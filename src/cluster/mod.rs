//! Scale-out through Redis (`--redis URL`, `[cluster] redis`): nodes share one topic space
//! while clients keep speaking PROTOCOL.md unchanged.
//!
//! What lives where:
//! - **Offsets, epochs, history, retained messages and de-duplication** live in Redis, per
//!   topic, written by one script per publish ([`wire::PUBLISH_SCRIPT`]) that also publishes
//!   the message on the topic's channel. Redis runs scripts one at a time, so a topic's
//!   offsets are cluster-wide and every node receives a topic's messages in offset order.
//! - **Sessions, subscriptions and the router** stay on the node a client is connected to.
//!   A node subscribes in Redis only to the channels its local subscriptions need (one
//!   channel per topic; wildcard patterns become a Redis channel pattern wide enough to
//!   cover them, see [`keys::channel_pattern`]), so it receives only that traffic.
//! - **Presence** lives in Redis with an expiry refreshed by the member's node, so the
//!   members of a dead node leave once it stops refreshing.
//! - **Groups** deliver once cluster-wide: every node with members of a matching group
//!   claims the message with `SET … NX`; the winner hands it to one of its members.
//!
//! The connection to Redis is two connections: a multiplexed one (publishes, in pipelined
//! batches, and reads) that reconnects by itself, and the pub/sub feed. While Redis is away
//! a publish fails with `unavailable` — never a false `ok`.

mod feed;
pub mod keys;
mod publisher;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::Value;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use keys::TopicKeys;
pub use wire::Record;

use crate::store::RetainOp;
use crate::topic::Topic;

/// A stream range as Redis returns it: `(id, [(field, value)])` per entry.
type StreamEntries = Vec<(String, Vec<(String, Vec<u8>)>)>;

/// What the feed hands to the bus.
#[derive(Debug)]
pub enum Incoming {
    /// A message published on `topic` (possibly twice, when a channel and a pattern of this
    /// node both match: offsets tell).
    Message { topic: String, payload: Vec<u8> },
    /// A reply for one of this node's request inboxes: `<inbox> <data>`.
    Reply { payload: Vec<u8> },
    /// The feed (re)connected; `lost_at_ms` is when it was lost (none on first connect).
    Resynced { lost_at_ms: Option<u64> },
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    #[error("invalid Redis URL {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("Redis is unavailable: {0}")]
    Unavailable(String),
    #[error("Redis refused: {0}")]
    Redis(String),
    #[error(transparent)]
    Malformed(Arc<wire::Malformed>),
}

impl From<redis::RedisError> for ClusterError {
    fn from(e: redis::RedisError) -> Self {
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
        {
            ClusterError::Unavailable(e.to_string())
        } else {
            ClusterError::Redis(e.to_string())
        }
    }
}

impl From<wire::Malformed> for ClusterError {
    fn from(e: wire::Malformed) -> Self {
        ClusterError::Malformed(Arc::new(e))
    }
}

/// What one publish asks of Redis.
#[derive(Debug, Clone, Copy)]
pub struct PublishReq<'a> {
    pub topic: &'a str,
    pub data: &'a str,
    pub msg_id: Option<&'a str>,
    pub reply_to: Option<&'a str>,
    pub retain: Option<RetainOp>,
    pub history: usize,
    pub history_ttl: Option<Duration>,
    pub dedup_window: Duration,
    pub ts: u64,
}

/// Redis's answer to a publish.
#[derive(Debug, Clone)]
pub struct Published {
    pub offset: u64,
    pub epoch: Arc<str>,
    pub duplicate: bool,
    /// Nodes subscribed to the topic's channel (0: nobody anywhere listens).
    pub receivers: u64,
}

/// A topic's state in Redis, for a node that starts serving it.
#[derive(Debug, Clone)]
pub struct Tail {
    pub epoch: Arc<str>,
    pub offset: u64,
    /// Oldest first.
    pub history: Vec<Record>,
    pub retained: Option<Record>,
}

/// A presence member as stored in Redis.
#[derive(Debug, Clone)]
pub struct RemoteMember {
    pub session: String,
    /// `{"user":…,"info":…}`.
    pub info: serde_json::Value,
}

/// How long a presence entry lives without a refresh from its node.
pub const PRESENCE_TTL: Duration = Duration::from_secs(15);
/// How often a node refreshes its members and reaps expired ones.
pub const PRESENCE_REFRESH: Duration = Duration::from_secs(5);

/// A node's handle on the cluster.
pub struct Cluster {
    node: Arc<str>,
    conn: ConnectionManager,
    publish_hash: String,
    reap: redis::Script,
    publisher: mpsc::UnboundedSender<publisher::Job>,
    permits: Arc<Semaphore>,
    feed: mpsc::UnboundedSender<feed::Command>,
    up: Arc<AtomicBool>,
    reconnects: Arc<AtomicU64>,
}

impl Cluster {
    /// Connects (lazily: a Redis that is down now is retried in the background) and starts
    /// the publish pipeline and the feed. Messages for local sessions arrive on the returned
    /// receiver.
    pub fn start(
        url: &str,
        cancel: CancellationToken,
    ) -> Result<(Cluster, mpsc::Receiver<Incoming>), ClusterError> {
        let client = redis::Client::open(url).map_err(|e| ClusterError::Url {
            url: url.to_owned(),
            message: e.to_string(),
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        let node: Arc<str> = format!("n{:016x}", rand::random::<u64>()).into();
        let (incoming_tx, incoming) = mpsc::channel(65_536);
        let (feed_tx, feed_rx) = mpsc::unbounded_channel();
        let up = Arc::new(AtomicBool::new(false));
        let reconnects = Arc::new(AtomicU64::new(0));
        tokio::spawn(
            feed::Feed {
                client,
                node: node.clone(),
                up: up.clone(),
                reconnects: reconnects.clone(),
                incoming: incoming_tx,
                commands: feed_rx,
                cancel,
            }
            .run(),
        );
        let publish = redis::Script::new(wire::PUBLISH_SCRIPT);
        let cluster = Cluster {
            node,
            publish_hash: publish.get_hash().to_owned(),
            publisher: publisher::spawn(conn.clone(), wire::PUBLISH_SCRIPT),
            reap: redis::Script::new(wire::REAP_PRESENCE_SCRIPT),
            permits: Arc::new(Semaphore::new(publisher::QUEUE)),
            conn,
            feed: feed_tx,
            up,
            reconnects,
        };
        Ok((cluster, incoming))
    }

    /// This node's id (random per start; it names the node's reply channel).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether the feed is connected to Redis.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Times the feed's connection to Redis came back after a loss.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Room for one publish in the pipeline queue, waiting for it.
    pub async fn permit(&self) -> OwnedSemaphorePermit {
        // The semaphore is never closed.
        self.permits
            .clone()
            .acquire_owned()
            .await
            .expect("publish semaphore closed")
    }

    /// Room for one publish, if there is some now.
    pub fn try_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// Queues a publish behind this node's earlier ones (so a socket's publishes reach
    /// Redis in the order it sent them); `done` gets Redis's answer. `permit` is released
    /// once answered.
    pub fn publish(
        &self,
        req: PublishReq<'_>,
        note_topic: bool,
        permit: OwnedSemaphorePermit,
        done: impl FnOnce(Result<Published, ClusterError>) + Send + 'static,
    ) {
        let keys = TopicKeys::new(req.topic);
        let msg_id = req.msg_id.unwrap_or("");
        let dedup = if msg_id.is_empty() {
            keys.offset.clone()
        } else {
            keys.dedup(msg_id)
        };
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.publish_hash)
            .arg(5)
            .arg(&keys.offset)
            .arg(&keys.epoch)
            .arg(&keys.history)
            .arg(&keys.retained)
            .arg(&dedup)
            .arg(keys::channel(req.topic))
            .arg(req.data)
            .arg(msg_id)
            .arg(req.reply_to.unwrap_or(""))
            .arg(wire::retain_flag(req.retain))
            .arg(req.history)
            .arg(req.dedup_window.as_millis() as u64)
            .arg(&*crate::store::new_epoch())
            .arg(req.ts)
            .arg(req.history_ttl.map_or(0, |t| t.as_millis() as u64));
        // The topic sets serve wildcard lookups (retained messages, `rewind`); updated in
        // the same pipeline, so they are current when the publisher gets its `ok`.
        let mut extra = Vec::new();
        if note_topic {
            let mut c = redis::cmd("SADD");
            c.arg(keys::TOPICS).arg(req.topic);
            extra.push(c);
        }
        match req.retain {
            None => {}
            Some(RetainOp::Set) => {
                let mut c = redis::cmd("SADD");
                c.arg(keys::RETAINED).arg(req.topic);
                extra.push(c);
            }
            Some(RetainOp::Clear) => {
                let mut c = redis::cmd("SREM");
                c.arg(keys::RETAINED).arg(req.topic);
                extra.push(c);
            }
        }
        let job = publisher::Job {
            cmd,
            extra,
            done: Box::new(move |r| {
                drop(permit);
                done(r.and_then(parse_published));
            }),
        };
        if let Err(e) = self.publisher.send(job) {
            (e.0.done)(Err(ClusterError::Unavailable("shutting down".into())));
        }
    }

    /// Makes this node receive what `pattern` needs; Ok once the subscription is active
    /// in Redis (a node that is disconnected counts it and subscribes on reconnect, but
    /// answers `Unavailable`).
    pub async fn watch(&self, pattern: &str, exact: bool) -> Result<(), ClusterError> {
        let (name, is_pattern) = keys::channel_pattern(pattern, exact);
        let (tx, rx) = oneshot::channel();
        let cmd = feed::Command::Watch {
            name,
            pattern: is_pattern,
            done: Some(tx),
        };
        self.feed
            .send(cmd)
            .map_err(|_| ClusterError::Unavailable("shutting down".into()))?;
        rx.await
            .unwrap_or_else(|_| Err(ClusterError::Unavailable("shutting down".into())))
    }

    /// Like [`Cluster::watch`] without waiting for Redis.
    pub fn watch_later(&self, pattern: &str, exact: bool) {
        let (name, is_pattern) = keys::channel_pattern(pattern, exact);
        let _ = self.feed.send(feed::Command::Watch {
            name,
            pattern: is_pattern,
            done: None,
        });
    }

    /// Undoes one [`Cluster::watch`] or [`Cluster::watch_later`].
    pub fn unwatch(&self, pattern: &str, exact: bool) {
        let (name, is_pattern) = keys::channel_pattern(pattern, exact);
        let _ = self.feed.send(feed::Command::Unwatch {
            name,
            pattern: is_pattern,
        });
    }

    /// A topic's epoch (created now when the topic is new, as a first publish would).
    pub async fn epoch(&self, topic: &str) -> Result<Arc<str>, ClusterError> {
        let keys = TopicKeys::new(topic);
        let (epoch,): (String,) = redis::pipe()
            .cmd("SET")
            .arg(&keys.epoch)
            .arg(&*crate::store::new_epoch())
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(&keys.epoch)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(epoch.into())
    }

    /// Stored messages of `topic`: the first `limit` after `since`, or the newest `limit`.
    /// Messages older than `ttl` are left out.
    pub async fn history(
        &self,
        topic: &Topic,
        since: Option<u64>,
        limit: usize,
        ttl: Option<Duration>,
    ) -> Result<(Arc<str>, Vec<Record>), ClusterError> {
        let epoch = self.epoch(topic.as_str()).await?;
        let keys = TopicKeys::new(topic.as_str());
        let mut cmd = match since {
            Some(after) => {
                let mut c = redis::cmd("XRANGE");
                c.arg(&keys.history)
                    .arg(format!("{}-0", after.saturating_add(1)))
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
        let entries: StreamEntries = cmd.query_async(&mut self.conn.clone()).await?;
        let mut records = decode_entries(topic, entries, ttl)?;
        if since.is_none() {
            records.reverse();
        }
        Ok((epoch, records))
    }

    /// Everything a node needs to start serving `topic` with replay: epoch, last offset, the
    /// whole stored history and the retained message.
    pub async fn tail(
        &self,
        topic: &Topic,
        with_history: bool,
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
            .cmd("XRANGE")
            .arg(&keys.history)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(if with_history { u32::MAX } else { 0 })
            .cmd("GET")
            .arg(&keys.retained)
            .query_async(&mut self.conn.clone())
            .await?;
        let epoch: Arc<str> = match epoch {
            Some(e) => e.into(),
            None => self.epoch(topic.as_str()).await?,
        };
        let history = decode_entries(topic, entries, ttl)?;
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

    /// Known topics (all that were ever published to) matching `pattern`.
    pub async fn topics(&self, retained_only: bool) -> Result<Vec<String>, ClusterError> {
        let set = if retained_only {
            keys::RETAINED
        } else {
            keys::TOPICS
        };
        Ok(redis::cmd("SMEMBERS")
            .arg(set)
            .query_async(&mut self.conn.clone())
            .await?)
    }

    /// Each topic's last offset and epoch, in order (`None` where Redis has no such key).
    pub async fn offsets(
        &self,
        topics: &[String],
    ) -> Result<Vec<(Option<u64>, Option<String>)>, ClusterError> {
        let mut out = Vec::with_capacity(topics.len());
        // In pipelines of bounded size: a cluster may know many topics.
        for chunk in topics.chunks(512) {
            let mut pipe = redis::pipe();
            for topic in chunk {
                let keys = TopicKeys::new(topic);
                pipe.cmd("GET")
                    .arg(&keys.offset)
                    .cmd("GET")
                    .arg(&keys.epoch);
            }
            let values: Vec<Option<String>> = pipe.query_async(&mut self.conn.clone()).await?;
            for pair in values.chunks(2) {
                let offset = pair[0].as_deref().and_then(|v| v.parse().ok());
                out.push((offset, pair.get(1).cloned().flatten()));
            }
        }
        Ok(out)
    }

    /// Claims the delivery of each key for this node; true where this node won.
    pub async fn claim(&self, keys: &[String], ttl: Duration) -> Result<Vec<bool>, ClusterError> {
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("SET")
                .arg(k)
                .arg(&*self.node)
                .arg("NX")
                .arg("PX")
                .arg(ttl.as_millis() as u64);
        }
        let won: Vec<Value> = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(won.into_iter().map(|v| matches!(v, Value::Okay)).collect())
    }

    /// Sends a reply to the node owning `inbox` (`$inbox/<node>.<id>`); false when that
    /// node is not listening.
    pub async fn reply(&self, node: &str, inbox: &str, data: &str) -> Result<bool, ClusterError> {
        let n: u64 = redis::cmd("PUBLISH")
            .arg(keys::reply_channel(node))
            .arg(format!("{inbox} {data}"))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(n > 0)
    }

    /// Adds or refreshes presence members of `topic` (`(session, info json)`).
    pub async fn presence_join(
        &self,
        topic: &str,
        members: &[(String, String)],
    ) -> Result<(), ClusterError> {
        if members.is_empty() {
            return Ok(());
        }
        let keys = TopicKeys::new(topic);
        let expires = crate::event::now_ms() + PRESENCE_TTL.as_millis() as u64;
        let mut pipe = redis::pipe();
        for (session, info) in members {
            pipe.cmd("ZADD")
                .arg(&keys.presence)
                .arg(expires)
                .arg(session)
                .ignore();
            pipe.cmd("HSET")
                .arg(&keys.presence_info)
                .arg(session)
                .arg(info)
                .ignore();
        }
        pipe.cmd("SADD")
            .arg(keys::PRESENCE_TOPICS)
            .arg(topic)
            .ignore();
        pipe.query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Removes a presence member; true when it was one.
    pub async fn presence_leave(&self, topic: &str, session: &str) -> Result<bool, ClusterError> {
        let keys = TopicKeys::new(topic);
        let (removed, _): (u64, u64) = redis::pipe()
            .cmd("ZREM")
            .arg(&keys.presence)
            .arg(session)
            .cmd("HDEL")
            .arg(&keys.presence_info)
            .arg(session)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(removed > 0)
    }

    /// The live members of `topic`, ordered by session id.
    pub async fn presence(&self, topic: &str) -> Result<Vec<RemoteMember>, ClusterError> {
        let keys = TopicKeys::new(topic);
        let now = crate::event::now_ms();
        let sessions: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&keys.presence)
            .arg(format!("({now}"))
            .arg("+inf")
            .query_async(&mut self.conn.clone())
            .await?;
        if sessions.is_empty() {
            return Ok(Vec::new());
        }
        let infos: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&keys.presence_info)
            .arg(&sessions)
            .query_async(&mut self.conn.clone())
            .await?;
        let mut members: Vec<RemoteMember> = sessions
            .into_iter()
            .zip(infos)
            .map(|(session, info)| RemoteMember {
                session,
                info: info
                    .and_then(|i| serde_json::from_str(&i).ok())
                    .unwrap_or(serde_json::Value::Null),
            })
            .collect();
        members.sort_by(|a, b| a.session.cmp(&b.session));
        Ok(members)
    }

    /// Removes members whose node stopped refreshing them; returns `(topic, member)` for
    /// each, to announce their leave. Each expired member is returned to one node only.
    pub async fn reap_presence(&self) -> Result<Vec<(String, RemoteMember)>, ClusterError> {
        let topics: Vec<String> = redis::cmd("SMEMBERS")
            .arg(keys::PRESENCE_TOPICS)
            .query_async(&mut self.conn.clone())
            .await?;
        let now = crate::event::now_ms();
        let mut gone = Vec::new();
        for topic in topics {
            let keys = TopicKeys::new(&topic);
            let flat: Vec<String> = self
                .reap
                .key(&keys.presence)
                .key(&keys.presence_info)
                .arg(now)
                .invoke_async(&mut self.conn.clone())
                .await?;
            for pair in flat.chunks_exact(2) {
                gone.push((
                    topic.clone(),
                    RemoteMember {
                        session: pair[0].clone(),
                        info: serde_json::from_str(&pair[1]).unwrap_or(serde_json::Value::Null),
                    },
                ));
            }
        }
        Ok(gone)
    }
}

fn parse_published(v: Value) -> Result<Published, ClusterError> {
    let bad = || ClusterError::Redis(format!("unexpected answer to a publish: {v:?}"));
    let Value::Array(items) = &v else {
        return Err(bad());
    };
    let int = |i: usize| match items.get(i) {
        Some(Value::Int(n)) => Some(*n),
        _ => None,
    };
    let epoch = match items.get(2) {
        Some(Value::BulkString(b)) => std::str::from_utf8(b).ok().map(Arc::<str>::from),
        Some(Value::SimpleString(s)) => Some(Arc::from(s.as_str())),
        _ => None,
    };
    match (int(0), int(1), epoch, int(3)) {
        (Some(new), Some(offset), Some(epoch), Some(receivers)) => Ok(Published {
            offset: offset as u64,
            epoch,
            duplicate: new == 0,
            receivers: receivers as u64,
        }),
        _ => Err(bad()),
    }
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
    for (_, fields) in entries {
        if let Some((_, p)) = fields.into_iter().find(|(k, _)| k == "p") {
            let r = wire::decode(topic, &p)?;
            if r.event.ts >= cutoff {
                out.push(r);
            }
        }
    }
    Ok(out)
}
