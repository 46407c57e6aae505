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
//! - **Occupancy** (which subscription patterns have subscribers anywhere, for the
//!   `topic.occupied` and `topic.vacated` webhooks) is kept the same way, per pattern.
//! - **Groups** deliver once cluster-wide: every node with members of a matching group
//!   claims the message with `SET … NX`; the winner hands it to one of its members.
//!
//! The connection to Redis is two connections: a multiplexed one (publishes, in pipelined
//! batches, and reads) that reconnects by itself, and the pub/sub feed. While Redis is away
//! a publish fails with `unavailable` — never a false `ok`.
//!
//! This file holds the [`Cluster`] handle (connecting, publishing, watching channels, claims
//! and replies); reading stored messages back is in `history.rs`, presence in
//! `presence.rs`, occupancy in `occupancy.rs`, and the Lua scripts Redis runs are under
//! `lua/`.

mod control;
mod error;
mod feed;
mod history;
pub mod keys;
mod occupancy;
pub mod pending;
mod presence;
mod publisher;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::Value;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use error::ClusterError;
pub use feed::Incoming;
pub use history::Tail;
pub use keys::TopicKeys;
pub use occupancy::{OCCUPANCY_CHUNK, OCCUPANCY_REFRESH, OCCUPANCY_TTL, Occupancy};
pub use presence::{PRESENCE_REFRESH, PRESENCE_TTL, RemoteMember};
pub use wire::Record;

use crate::store::RetainOp;
use crate::topic::Topic;

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

/// A node's handle on the cluster.
pub struct Cluster {
    node: Arc<str>,
    conn: ConnectionManager,
    publish_hash: String,
    reap: redis::Script,
    occupancy: redis::Script,
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
            reap: redis::Script::new(presence::REAP_SCRIPT),
            occupancy: redis::Script::new(occupancy::SCRIPT),
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
        history::epoch(&self.conn, topic).await
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
        history::history(&self.conn, topic, since, limit, ttl).await
    }

    /// Everything a node needs to start serving `topic` with replay: epoch, last offset, the
    /// whole stored history and the retained message.
    pub async fn tail(
        &self,
        topic: &Topic,
        with_history: bool,
        ttl: Option<Duration>,
    ) -> Result<Tail, ClusterError> {
        history::tail(&self.conn, topic, with_history, ttl).await
    }

    /// Every topic ever published to in the cluster, or only those holding a retained message.
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
        presence::join(&self.conn, topic, members).await
    }

    /// Removes a presence member; true when it was one.
    pub async fn presence_leave(&self, topic: &str, session: &str) -> Result<bool, ClusterError> {
        presence::leave(&self.conn, topic, session).await
    }

    /// The live members of `topic`, ordered by session id.
    pub async fn presence(&self, topic: &str) -> Result<Vec<RemoteMember>, ClusterError> {
        presence::members(&self.conn, topic).await
    }

    /// Removes members whose node stopped refreshing them; returns `(topic, member)` for
    /// each, to announce their leave. Each expired member is returned to one node only.
    pub async fn reap_presence(&self) -> Result<Vec<(String, RemoteMember)>, ClusterError> {
        presence::reap(&self.conn, &self.reap).await
    }

    /// Adds or refreshes this node's occupancy of `patterns` (at most [`OCCUPANCY_CHUNK`]);
    /// what each join did to the cluster's occupancy.
    pub async fn occupy(&self, patterns: &[Arc<str>]) -> Result<Vec<Occupancy>, ClusterError> {
        occupancy::join(&self.conn, &self.occupancy, &self.node, patterns).await
    }

    /// Ends this node's occupancy of `patterns` (at most [`OCCUPANCY_CHUNK`]); what each
    /// leave did to the cluster's occupancy.
    pub async fn vacate(&self, patterns: &[Arc<str>]) -> Result<Vec<Occupancy>, ClusterError> {
        occupancy::leave(&self.conn, &self.occupancy, &self.node, patterns).await
    }

    /// Removes the occupancy of nodes that stopped refreshing it; returns the patterns left
    /// without subscribers anywhere, each to one node only.
    pub async fn reap_occupancy(&self) -> Result<Vec<String>, ClusterError> {
        occupancy::reap(&self.conn, &self.occupancy).await
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
