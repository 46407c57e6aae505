//! The seam between the bus and what lies beyond this process: every place where a single
//! node and a cluster node act differently goes through [`Backplane`], so the rest of `bus/`
//! is written once, and a new cluster engine replaces the [`Redis`](Backplane::Redis) side
//! (`remote/`) without touching publish, subscribe or the queries.
//!
//! The rule each call follows: on a single node the bus's own state is the truth; in
//! cluster mode Redis is, and the node's topic table is a mirror of the topics it receives
//! (see `remote/mirror.rs`). A query therefore gives the same answer on either: a single
//! node reads its state, a cluster node asks Redis.

use std::sync::Arc;

use serde_json::value::RawValue;
use tokio::sync::OwnedSemaphorePermit;

use super::control::{Answer, Control};
use super::health::RedisHealth;
use super::persist::Published;
use super::remote::{self, Remote};
use super::{Bus, BusError, HistoryPage, PresenceList, Publish, SubOptions, SubOutcome, TopicRow};
use crate::cluster::ClusterError;
use crate::protocol::Id;
use crate::session::{Outbox, Session};
use crate::topic::{Pattern, Topic};

/// Where the bus's state lives besides this process.
pub(super) enum Backplane {
    /// One node: this process holds everything and orders every publish.
    Local,
    /// Cluster mode (`--redis`): Redis orders publishes and holds history, retained
    /// messages, presence and the topic list for every node. Boxed: the local variant is
    /// the common one, and needs no room for it.
    Redis(Box<Remote>),
}

impl Backplane {
    /// The backplane for a `--redis` URL, or the local one. Connects in the background.
    pub(super) fn start(redis: Option<&[String]>) -> Result<Backplane, ClusterError> {
        match redis {
            None => Ok(Backplane::Local),
            Some(urls) => remote::start(urls).map(|r| Backplane::Redis(Box::new(r))),
        }
    }

    /// Starts its background work once the bus exists (applying the feed, refreshing
    /// presence).
    pub(super) fn run(&self, bus: &Bus) {
        if let Backplane::Redis(r) = self {
            r.run(bus);
        }
    }

    pub(super) fn redis(&self) -> Option<&Remote> {
        match self {
            Backplane::Local => None,
            Backplane::Redis(r) => Some(&**r),
        }
    }

    /// This node's id in the cluster (it leads the names of its reply inboxes).
    pub(super) fn node(&self) -> Option<&str> {
        self.redis().map(|r| r.cluster.node())
    }

    pub(super) fn is_clustered(&self) -> bool {
        matches!(self, Backplane::Redis(_))
    }

    /// Whether it can serve now: a single node always; a cluster node while its feed is
    /// connected to Redis.
    /// Connected to Redis, and the revocations kept there read (a single node: always).
    pub(super) fn is_up(&self) -> bool {
        self.redis().is_none_or(|r| {
            r.cluster.is_up()
                && r.revocations_loaded
                    .load(std::sync::atomic::Ordering::Acquire)
        })
    }

    pub(super) fn health(&self) -> Option<RedisHealth> {
        self.redis().map(|r| RedisHealth {
            connected: r.cluster.is_up(),
            reconnects: r.cluster.reconnects(),
            holds_asked: r.cluster.slowdown().asked(),
            publishes_held: r.cluster.slowdown().waited(),
            held_for: r.cluster.slowdown().waited_for(),
        })
    }

    /// Room in the queue of publishes waiting for the backplane, waiting for it; `None`
    /// on a single node, which queues nothing (the durable store has its own queue).
    pub(super) async fn publish_permit(&self) -> Option<OwnedSemaphorePermit> {
        match self {
            Backplane::Local => None,
            Backplane::Redis(r) => Some(r.cluster.permit().await),
        }
    }

    /// Orders a publish (already validated): a single node does it here and now, a
    /// cluster node queues it for Redis.
    pub(super) fn publish(
        &self,
        bus: &Bus,
        topic: &Topic,
        p: Publish<'_>,
        reply_to: Option<&str>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<Published, BusError> {
        match self {
            Backplane::Local => bus.publish_here(topic, p, reply_to, permit),
            Backplane::Redis(r) => bus.publish_remote(r, topic, p, reply_to, permit),
        }
    }

    /// A reply to an inbox this node does not hold: on a cluster, maybe another node's.
    /// `None` when nobody can be waiting for it.
    pub(super) fn reply(&self, bus: &Bus, inbox: &str, data: &str) -> Option<Published> {
        bus.reply_remote(self.redis()?, inbox, data)
    }

    /// Sends a request whose reply inbox is open: a single node knows at once whether
    /// anyone listens; a cluster node learns it from Redis's answer.
    pub(super) fn request(
        &self,
        bus: &Bus,
        topic: &str,
        data: &RawValue,
        inbox: Box<str>,
        outbox: Arc<Outbox>,
        id: Option<Id>,
    ) -> Result<Box<str>, BusError> {
        match self {
            Backplane::Local => bus.request_here(topic, data, inbox),
            Backplane::Redis(_) => bus.request_remote(topic, data, inbox, outbox, id),
        }
    }

    /// Follows the node's subscriptions: a cluster node receives from Redis the patterns
    /// its sessions subscribe to.
    pub(super) fn watch(&self, pattern: &Pattern, on: bool) {
        if let Backplane::Redis(r) = self {
            if on {
                r.cluster.watch_later(pattern.as_str(), pattern.is_exact());
            } else {
                r.cluster.unwatch(pattern.as_str(), pattern.is_exact());
            }
        }
    }

    /// A pattern got its first or lost its last subscription on this node: a single node
    /// announces it; a cluster node lets Redis decide whether the cluster's changed (see
    /// `remote/occupancy.rs`).
    pub(super) fn occupancy_changed(&self, bus: &Bus, pattern: &str, occupied: bool) {
        match self {
            Backplane::Local => bus.announce_occupancy(pattern, occupied),
            Backplane::Redis(r) => r.occupancy.changed(pattern),
        }
    }

    /// Records a local presence join or leave where other nodes see it.
    pub(super) fn presence_changed(&self, bus: &Bus, topic: &str, session: &Session, joined: bool) {
        if self.is_clustered() {
            bus.record_presence(topic, session, joined);
        }
    }

    pub(super) async fn subscribe(
        &self,
        bus: &Bus,
        session: &Arc<Session>,
        pattern: &str,
        opts: &SubOptions<'_>,
    ) -> Result<SubOutcome, BusError> {
        match self {
            Backplane::Local => bus.subscribe_here(session, pattern, opts),
            Backplane::Redis(r) => bus.subscribe_remote(r, session, pattern, opts).await,
        }
    }

    pub(super) async fn history(
        &self,
        bus: &Bus,
        topic: &Topic,
        since: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, BusError> {
        match self {
            Backplane::Local => Ok(bus.history_here(topic, since, limit)),
            Backplane::Redis(r) => bus.history_remote(r, topic, since, limit).await,
        }
    }

    pub(super) async fn topics(
        &self,
        bus: &Bus,
        pattern: Option<&Pattern>,
    ) -> Result<Vec<TopicRow>, BusError> {
        match self {
            Backplane::Local => Ok(bus.topics_here(pattern)),
            Backplane::Redis(r) => bus.topics_remote(r, pattern).await,
        }
    }

    pub(super) async fn presence(
        &self,
        bus: &Bus,
        topic: &Topic,
    ) -> Result<PresenceList, BusError> {
        match self {
            Backplane::Local => Ok(bus.presence_here(topic)),
            Backplane::Redis(r) => bus.presence_remote(r, topic).await,
        }
    }

    /// Runs a control command on this node, or on every node of the cluster (the answers
    /// summed; see `remote/control.rs`).
    pub(super) async fn control(&self, bus: &Bus, cmd: Control) -> Result<Answer, BusError> {
        match self {
            Backplane::Local => bus.control_here(&cmd).await,
            Backplane::Redis(r) => bus.control_remote(r, cmd).await,
        }
    }
}
