//! The Redis side of the [`Backplane`](super::backplane::Backplane): cluster mode
//! (`--redis`), where the bus hands work to [`crate::cluster`] and applies what comes back.
//!
//! Publishes never fan out locally: they are queued for Redis, which assigns their offsets,
//! and come back through the feed like anyone else's, which keeps one order for all nodes.
//! The files: this one starts the side and sends publishes and replies; `mirror.rs` applies
//! the feed to the node's topic table; `queries.rs` answers reads from Redis; `presence.rs`
//! keeps the cluster-wide presence, `occupancy.rs` the cluster-wide occupancy of patterns.

mod catchup;
mod control;
mod groups;
mod lag;
mod mirror;
mod occupancy;
mod pending;
mod presence;
mod queries;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use serde_json::value::RawValue;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::persist::{PendingAck, Published};
use super::{Bus, BusError, Inner, PubAck, Publish};
use crate::cluster::{Cluster, ClusterError, Incoming, PublishReq};
use crate::event::now_ms;
use crate::protocol::Id;
use crate::session::Outbox;
use crate::topic::Topic;

/// The cluster side of a bus.
pub(super) struct Remote {
    pub cluster: Cluster,
    cancel: CancellationToken,
    /// The feed's receiver until [`Remote::run`] starts applying it.
    incoming: parking_lot::Mutex<Option<mpsc::Receiver<Incoming>>>,
    /// Control commands of this node waiting for the nodes' answers.
    control: control::Waiting,
    /// Batches from the feed waiting for group delivery (`groups.rs`).
    groups: groups::Queue,
    groups_rx: parking_lot::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<groups::Batch>>>,
    /// Patterns whose local occupancy changed, for the task that tells Redis.
    pub occupancy: Arc<occupancy::Changes>,
    /// The revocations in Redis were read once: until then the node is not ready (it
    /// would accept tokens revoked before it started).
    pub revocations_loaded: std::sync::atomic::AtomicBool,
    /// Where the missed offsets of a topic start after a loss of the feed.
    floors: catchup::Floors,
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Connects to Redis (in the background); [`Remote::run`] then starts applying the feed.
pub(super) fn start(urls: &[String]) -> Result<Remote, ClusterError> {
    let cancel = CancellationToken::new();
    let (cluster, incoming) = Cluster::start(urls, cancel.clone())?;
    let (groups, groups_rx) = groups::queue();
    Ok(Remote {
        cluster,
        groups,
        groups_rx: parking_lot::Mutex::new(Some(groups_rx)),
        cancel,
        incoming: parking_lot::Mutex::new(Some(incoming)),
        control: control::Waiting::default(),
        occupancy: Arc::default(),
        revocations_loaded: Default::default(),
        floors: Default::default(),
    })
}

impl Remote {
    /// Starts the tasks that apply the feed and keep presence alive, once the bus exists.
    pub(super) fn run(&self, bus: &Bus) {
        if let Some(incoming) = self.incoming.lock().take() {
            let weak = Arc::downgrade(&bus.inner);
            tokio::spawn(mirror::apply_feed(weak.clone(), incoming));
            if let Some(rx) = self.groups_rx.lock().take() {
                tokio::spawn(groups::deliver_groups(weak.clone(), rx));
            }
            tokio::spawn(presence::keep_presence(weak.clone(), self.cancel.clone()));
            tokio::spawn(catchup::keep_floors(weak.clone(), self.cancel.clone()));
            pending::start(bus, self.cancel.clone());
            tokio::spawn(occupancy::keep_occupancy(
                weak,
                self.occupancy.clone(),
                self.cancel.clone(),
            ));
        }
    }
}

fn upgrade(bus: &Weak<Inner>) -> Option<Bus> {
    bus.upgrade().map(|inner| Bus { inner })
}

impl Bus {
    /// The Redis side, for the tasks of this module that outlive the call that started them
    /// (they hold a `Bus`, not the `Remote`).
    fn redis(&self) -> Option<&Remote> {
        self.inner.backplane.redis()
    }

    /// A publish in cluster mode: queued for Redis, answered once Redis assigned its
    /// offset. Delivery, here as on every node, comes back through the feed.
    pub(in crate::bus) fn publish_remote(
        &self,
        remote: &Remote,
        topic: &Topic,
        p: Publish<'_>,
        reply_to: Option<&str>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<Published, BusError> {
        let permit = match permit {
            Some(p) => p,
            None => remote.cluster.try_permit().ok_or_else(|| {
                BusError::Unavailable("too many publishes are waiting for Redis".into())
            })?,
        };
        let settings = self.inner.topics.settings_for(topic);
        let (tx, rx) = oneshot::channel();
        let bus = Arc::downgrade(&self.inner);
        let name = topic.clone();
        let note = !self.inner.noted.contains(topic.as_str());
        remote.cluster.publish(
            PublishReq {
                topic: topic.as_str(),
                data: p.data.get(),
                msg_id: p.msg_id,
                reply_to,
                retain: p.retain_op(),
                history: settings.history,
                history_ttl: settings.history_ttl,
                dedup_window: settings.dedup_window,
                ts: now_ms(),
            },
            note,
            permit,
            move |r| {
                let ack = r.map_err(BusError::from).map(|p| PubAck {
                    offset: p.offset,
                    epoch: p.epoch,
                    duplicate: p.duplicate,
                    delivered: p.receivers as usize,
                    backlogged: false,
                });
                if let (Ok(a), Some(bus)) = (&ack, upgrade(&bus)) {
                    bus.after_remote_publish(name, a.duplicate);
                }
                let _ = tx.send(ack);
            },
        );
        Ok(Published::Pending(PendingAck::waiting(rx)))
    }

    /// Counts a publish Redis accepted (its topic is now in Redis's topic set).
    fn after_remote_publish(&self, topic: Topic, duplicate: bool) {
        let stats = &self.inner.stats;
        if duplicate {
            stats.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        stats.published.fetch_add(1, Ordering::Relaxed);
        // Read first: after its first publish a topic is always there, and a read lock is
        // cheaper than the write lock of an insert.
        if !self.inner.noted.contains(&topic) {
            self.inner.noted.insert(topic);
        }
    }

    /// A reply to an inbox of another node: sent to that node's reply channel. `None` when
    /// the inbox is this node's (and already closed: a late reply).
    pub(in crate::bus) fn reply_remote(
        &self,
        remote: &Remote,
        inbox: &str,
        data: &str,
    ) -> Option<Published> {
        let node = super::inboxes::node_of(inbox)?;
        if node == remote.cluster.node() {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        let bus = self.clone();
        let (node, inbox, data) = (node.to_owned(), inbox.to_owned(), data.to_owned());
        tokio::spawn(async move {
            let Some(remote) = bus.redis() else { return };
            let r = remote.cluster.reply(&node, &inbox, &data).await;
            let _ = tx.send(r.map_err(BusError::from).map(|heard| PubAck {
                offset: 0,
                epoch: "".into(),
                duplicate: false,
                delivered: usize::from(heard),
                backlogged: false,
            }));
        });
        Some(Published::Pending(PendingAck::waiting(rx)))
    }

    /// A request in cluster mode: whether anyone listens is known only from Redis's
    /// answer, so `no_responders` (or a failed publish) reaches the requester as an error
    /// frame once it comes.
    pub(in crate::bus) fn request_remote(
        &self,
        topic: &str,
        data: &RawValue,
        inbox: Box<str>,
        outbox: Arc<Outbox>,
        id: Option<Id>,
    ) -> Result<Box<str>, BusError> {
        let p = Publish {
            topic,
            data,
            msg_id: None,
            retain: false,
        };
        let published = match self.publish_inner(p, Some(&inbox), None) {
            Ok(p) => p,
            Err(e) => {
                self.inner.inboxes.close(&inbox);
                return Err(e);
            }
        };
        let bus = self.clone();
        let (name, topic) = (inbox.clone(), topic.to_owned());
        tokio::spawn(async move {
            let failed = match published.ack().await {
                Ok(ack) if ack.delivered == 0 => BusError::NoResponders(topic),
                Ok(_) => return,
                Err(e) => e,
            };
            if bus.inner.inboxes.close(&name) {
                bus.inner.stats.requests.fetch_add(1, Ordering::Relaxed);
                let frame = crate::protocol::ServerFrame::Error(crate::protocol::ErrorFrame {
                    id,
                    code: failed.code(),
                    message: failed.to_string(),
                });
                let _ = outbox.try_push_control(frame.encode());
            }
        });
        Ok(inbox)
    }
}
