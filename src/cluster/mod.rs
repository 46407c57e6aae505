//! Scale-out through Redis (`--redis URL[,URL…]`, `[cluster] redis`): nodes share one topic
//! space while clients keep speaking PROTOCOL.md unchanged.
//!
//! What lives where:
//! - **Offsets, epochs, history, retained messages and de-duplication** live in Redis, per
//!   topic, on the topic's shard (`shard.rs`), written by one script call per batch of
//!   publishes ([`wire::PUBLISH_SCRIPT`]) that also publishes the batch's messages of each
//!   topic on its channel as one payload. Redis runs scripts one at a time, so a topic's
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
//!   claims each batch with `SET … NX`; the winner hands it to its members.
//!
//! Each shard is three connections: the publish pipeline and the feed (our own RESP client,
//! `resp/`, built for throughput: `publisher.rs`, `feed.rs`) and a redis-rs connection for
//! reads and the rare commands, which reconnects by itself. While Redis is away a publish
//! fails with `unavailable` — never a false `ok`.
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
mod resp;
mod shard;
pub mod slowdown;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::Value;
use redis::aio::ConnectionManager;
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
use shard::Shard;

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
    /// The first shard's connection for reads: the home of everything that is not a
    /// topic's (see `shard.rs`).
    conn: ConnectionManager,
    shards: Vec<Shard>,
    reap: redis::Script,
    occupancy: redis::Script,
    permits: Arc<Semaphore>,
    slowdown: Arc<slowdown::Slowdown>,
    /// This node's latest ask, for the task that sends them (`send_asks`).
    asks: tokio::sync::watch::Sender<Duration>,
}

impl Cluster {
    /// Connects to every shard (lazily: a Redis that is down now is retried in the
    /// background) and starts their publish pipelines and feeds. Messages for local
    /// sessions arrive on the returned receiver.
    pub fn start(
        urls: &[String],
        cancel: CancellationToken,
    ) -> Result<(Cluster, mpsc::Receiver<Incoming>), ClusterError> {
        let node: Arc<str> = format!("n{:016x}", rand::random::<u64>()).into();
        // Each message from a feed is a batch of a topic's messages.
        let (incoming_tx, incoming) = mpsc::channel(4096);
        let slowdown = Arc::new(slowdown::Slowdown::new(&node));
        let shards = urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                Shard::start(url, &node, i == 0, incoming_tx.clone(), &slowdown, &cancel)
            })
            .collect::<Result<Vec<Shard>, ClusterError>>()?;
        let Some(first) = shards.first() else {
            return Err(ClusterError::Url {
                url: String::new(),
                message: "no Redis URL".into(),
            });
        };
        let (asks, asked) = tokio::sync::watch::channel(Duration::ZERO);
        tokio::spawn(send_asks(
            first.conn.clone(),
            node.clone(),
            asked,
            cancel.clone(),
        ));
        let cluster = Cluster {
            node,
            conn: first.conn.clone(),
            reap: redis::Script::new(presence::REAP_SCRIPT),
            occupancy: redis::Script::new(occupancy::SCRIPT),
            permits: Arc::new(Semaphore::new(publisher::QUEUE * shards.len())),
            slowdown,
            asks,
            shards,
        };
        Ok((cluster, incoming))
    }

    /// The shard of `topic`.
    fn shard(&self, topic: &str) -> &Shard {
        &self.shards[shard::shard_of(topic, self.shards.len())]
    }

    /// How many Redis servers topics are spread over.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// This node's id (random per start; it names the node's reply channel).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether every shard's feed is connected to Redis.
    pub fn is_up(&self) -> bool {
        self.shards.iter().all(|s| s.up.load(Ordering::Acquire))
    }

    /// Times a feed's connection to Redis came back after a loss.
    pub fn reconnects(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.reconnects.load(Ordering::Relaxed))
            .sum()
    }

    /// Room for one publish in the pipeline queue, waiting for it, and first for the holds
    /// lagging nodes asked for (`slowdown.rs`).
    pub async fn permit(&self) -> OwnedSemaphorePermit {
        self.slowdown.wait().await;
        // The semaphore is never closed.
        self.permits
            .clone()
            .acquire_owned()
            .await
            .expect("publish semaphore closed")
    }

    /// The holds this node heard.
    pub fn slowdown(&self) -> &slowdown::Slowdown {
        &self.slowdown
    }

    /// Asks every node (this one at once) to hold publishes for `hold` (`ZERO`: no longer)
    /// because this node lags. Sent in the background: the caller is the feed's apply task.
    pub fn ask_hold(&self, hold: Duration) {
        self.slowdown.hold(&self.node, hold);
        if !hold.is_zero() {
            self.slowdown.count_ask();
        }
        self.asks.send_replace(hold);
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
        let msg_id = req.msg_id.unwrap_or("");
        let window = req.dedup_window.as_millis() as u64;
        let dedup =
            (!msg_id.is_empty() && window > 0).then(|| TopicKeys::new(req.topic).dedup(msg_id));
        let reply_to = req.reply_to.unwrap_or("");
        let rest = wire::rest_len(msg_id, reply_to, req.data);
        let mut args = Vec::with_capacity(rest + msg_id.len() + 64);
        resp::bulk(&mut args, msg_id.as_bytes());
        resp::bulk(&mut args, wire::retain_flag(req.retain).as_bytes());
        resp::bulk(&mut args, itoa::Buffer::new().format(req.ts).as_bytes());
        // The record's rest written straight into its argument: the data is copied once.
        resp::bulk_header(&mut args, rest);
        let rest_at = args.len();
        let written = wire::write_rest(&mut args, msg_id, reply_to, req.data);
        debug_assert_eq!(written, rest, "rest_len and write_rest disagree");
        let rest = rest_at..args.len();
        args.extend_from_slice(b"\r\n");
        let job = publisher::Job {
            topic: req.topic.into(),
            settings: publisher::TopicArgs {
                history: req.history,
                history_ttl_ms: req.history_ttl.map_or(0, |t| t.as_millis() as u64),
                dedup_window_ms: window,
            },
            note: note_topic,
            dedup,
            args,
            flag: wire::retain_flag(req.retain).as_bytes()[0],
            ts: req.ts,
            rest,
            done: Box::new(move |r| {
                drop(permit);
                done(r.map(|a| Published {
                    offset: a.offset,
                    epoch: a.epoch,
                    duplicate: !a.new,
                    receivers: a.receivers,
                }));
            }),
        };
        if let Err(e) = self.shard(req.topic).publisher.send(job) {
            (e.0.done)(Err(ClusterError::Unavailable("shutting down".into())));
        }
    }

    /// The shards whose feeds must carry what `pattern` needs, with the channel or channel
    /// pattern to subscribe: a topic's channel is on its shard, a wildcard's on all.
    fn feeds_for(&self, pattern: &str, exact: bool) -> (Vec<&Shard>, String, bool) {
        let (name, is_pattern) = keys::channel_pattern(pattern, exact);
        let shards = match keys::topic_of(&name) {
            Some(topic) if !is_pattern => vec![self.shard(topic)],
            _ => self.shards.iter().collect(),
        };
        (shards, name, is_pattern)
    }

    /// Makes this node receive what `pattern` needs; Ok once the subscription is active
    /// in Redis (a node that is disconnected counts it and subscribes on reconnect, but
    /// answers `Unavailable`).
    pub async fn watch(&self, pattern: &str, exact: bool) -> Result<(), ClusterError> {
        let (shards, name, is_pattern) = self.feeds_for(pattern, exact);
        let mut answers = Vec::with_capacity(shards.len());
        for shard in shards {
            let (tx, rx) = oneshot::channel();
            let cmd = feed::Command::Watch {
                name: name.clone(),
                pattern: is_pattern,
                done: Some(tx),
            };
            // A feed that is gone still gets the others' commands: `unwatch` undoes all.
            if shard.feed.send(cmd).is_ok() {
                answers.push(rx);
            }
        }
        let mut result = Ok(());
        for rx in answers {
            let r = rx
                .await
                .unwrap_or_else(|_| Err(ClusterError::Unavailable("shutting down".into())));
            if result.is_ok() {
                result = r;
            }
        }
        result
    }

    /// Like [`Cluster::watch`] without waiting for Redis.
    pub fn watch_later(&self, pattern: &str, exact: bool) {
        let (shards, name, is_pattern) = self.feeds_for(pattern, exact);
        for shard in shards {
            let _ = shard.feed.send(feed::Command::Watch {
                name: name.clone(),
                pattern: is_pattern,
                done: None,
            });
        }
    }

    /// Undoes one [`Cluster::watch`] or [`Cluster::watch_later`].
    pub fn unwatch(&self, pattern: &str, exact: bool) {
        let (shards, name, is_pattern) = self.feeds_for(pattern, exact);
        for shard in shards {
            let _ = shard.feed.send(feed::Command::Unwatch {
                name: name.clone(),
                pattern: is_pattern,
            });
        }
    }

    /// A topic's epoch (created now when the topic is new, as a first publish would).
    pub async fn epoch(&self, topic: &str) -> Result<Arc<str>, ClusterError> {
        history::epoch(&self.shard(topic).conn, topic).await
    }

    /// Stored messages of `topic` among its newest `keep`: the first `limit` after
    /// `since`, or the newest `limit`. Messages older than `ttl` are left out.
    pub async fn history(
        &self,
        topic: &Topic,
        since: Option<u64>,
        limit: usize,
        keep: usize,
        ttl: Option<Duration>,
    ) -> Result<(Arc<str>, Vec<Record>), ClusterError> {
        let conn = &self.shard(topic.as_str()).conn;
        history::history(conn, topic, since, limit, keep, ttl).await
    }

    /// Everything a node needs to start serving `topic` with replay: epoch, last offset, its
    /// newest `keep` stored messages (none with 0) and the retained message.
    pub async fn tail(
        &self,
        topic: &Topic,
        keep: usize,
        ttl: Option<Duration>,
    ) -> Result<Tail, ClusterError> {
        history::tail(&self.shard(topic.as_str()).conn, topic, keep, ttl).await
    }

    /// Every topic ever published to in the cluster, or only those holding a retained
    /// message (each shard keeps the set of its own topics).
    pub async fn topics(&self, retained_only: bool) -> Result<Vec<String>, ClusterError> {
        let set = if retained_only {
            keys::RETAINED
        } else {
            keys::TOPICS
        };
        let mut all = Vec::new();
        for shard in &self.shards {
            let some: Vec<String> = redis::cmd("SMEMBERS")
                .arg(set)
                .query_async(&mut shard.conn.clone())
                .await?;
            all.extend(some);
        }
        Ok(all)
    }

    /// Each topic's last offset and epoch, in order (`None` where Redis has no such key).
    pub async fn offsets(
        &self,
        topics: &[String],
    ) -> Result<Vec<(Option<u64>, Option<String>)>, ClusterError> {
        let n = self.shards.len();
        let mut out = vec![(None, None); topics.len()];
        for (s, shard) in self.shards.iter().enumerate() {
            let mine: Vec<usize> = (0..topics.len())
                .filter(|&i| shard::shard_of(&topics[i], n) == s)
                .collect();
            // In pipelines of bounded size: a cluster may know many topics.
            for chunk in mine.chunks(512) {
                let mut pipe = redis::pipe();
                for &i in chunk {
                    let keys = TopicKeys::new(&topics[i]);
                    pipe.cmd("GET")
                        .arg(&keys.offset)
                        .cmd("GET")
                        .arg(&keys.epoch);
                }
                let values: Vec<Option<String>> = pipe.query_async(&mut shard.conn.clone()).await?;
                for (&i, pair) in chunk.iter().zip(values.chunks(2)) {
                    let offset = pair[0].as_deref().and_then(|v| v.parse().ok());
                    out[i] = (offset, pair.get(1).cloned().flatten());
                }
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
        presence::join(&self.shard(topic).conn, topic, members).await
    }

    /// Removes a presence member; true when it was one.
    pub async fn presence_leave(&self, topic: &str, session: &str) -> Result<bool, ClusterError> {
        presence::leave(&self.shard(topic).conn, topic, session).await
    }

    /// The live members of `topic`, ordered by session id.
    pub async fn presence(&self, topic: &str) -> Result<Vec<RemoteMember>, ClusterError> {
        presence::members(&self.shard(topic).conn, topic).await
    }

    /// Removes members whose node stopped refreshing them; returns `(topic, member)` for
    /// each, to announce their leave. Each expired member is returned to one node only.
    pub async fn reap_presence(&self) -> Result<Vec<(String, RemoteMember)>, ClusterError> {
        let mut all = Vec::new();
        for shard in &self.shards {
            all.extend(presence::reap(&shard.conn, &self.reap).await?);
        }
        Ok(all)
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

/// Sends this node's asks for holds (`Cluster::ask_hold`) one at a time, in order, so a
/// release never overtakes the ask before it; asks made while one is on its way are
/// replaced by the latest, which is all the other nodes need.
async fn send_asks(
    mut conn: ConnectionManager,
    node: Arc<str>,
    mut asked: tokio::sync::watch::Receiver<Duration>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = asked.changed() => if changed.is_err() { return },
        }
        let hold = *asked.borrow_and_update();
        let r: Result<u64, _> = redis::cmd("PUBLISH")
            .arg(keys::SLOW)
            .arg(slowdown::Slowdown::encode(&node, hold))
            .query_async(&mut conn)
            .await;
        if let Err(e) = r {
            tracing::debug!(error = %e, "hold not asked");
        }
    }
}
