//! Publishing to persisted topics: the path through the group committer.
//!
//! Under the topic lock the publish is checked for duplicates, given its offset, and queued
//! on the committer — queueing under the lock keeps a topic's queue in offset order. The
//! lock is then released and the publisher gets a [`PendingAck`]. Once the batch holding the
//! message is durable, the committer thread takes the lock again to add the message to the
//! history, set or clear the retained message, fan it out and complete the ack. So a
//! subscriber never sees a message a crash could still lose, and an `ok` always means "on
//! disk". Offsets of messages lost in a crash were never acked nor delivered; after the
//! restart they are simply assigned again.
//!
//! Topics that are not persisted (or every topic, without `--data-dir`) keep the synchronous
//! path of `publish.rs`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Bus, BusError, Inner, PubAck, Publish};
use crate::config::TopicConfig;
use crate::event::Event;
use crate::store::{
    Committer, Durable as _, MemoryStore, RedbStore, RetainOp, Retention, StoreError, Ticket,
    TopicEntry, Write,
};
use crate::topic::Topic;

/// Messages of persisted topics queued for the disk at most at once (over all
/// publishers). Past it, WebSocket readers and HTTP handlers wait for room, so a publisher
/// faster than the disk is slowed through TCP instead of growing the queue.
pub const MAX_IN_FLIGHT: usize = 65_536;

/// The durable store of a bus with a data directory.
pub(super) struct Persistence {
    pub committer: Committer<Held>,
    pub permits: Arc<Semaphore>,
}

/// What a message waiting for its batch to be durable needs besides its event (which
/// travels in the store's [`crate::store::Write`]).
pub(super) struct Held {
    entry: Arc<TopicEntry>,
    /// Room in the queue, given back once the message is delivered.
    _permit: Option<OwnedSemaphorePermit>,
}

/// The outcome of a publish: answered at once, or once durable.
#[derive(Debug)]
pub enum Published {
    Done(PubAck),
    Pending(PendingAck),
}

/// A publish to a persisted topic, queued for the disk with its offset assigned.
#[derive(Debug)]
pub struct PendingAck {
    pub offset: u64,
    pub epoch: Arc<str>,
    wait: Wait,
}

/// What a pending publish waits on.
#[derive(Debug)]
enum Wait {
    /// Its place in a durable batch.
    Ticket(Ticket),
    /// Redis's answer (cluster mode), with the offset in it.
    Answer(tokio::sync::oneshot::Receiver<Result<PubAck, BusError>>),
}

impl PendingAck {
    /// A publish whose offset is known only with its answer (cluster mode).
    pub(super) fn waiting(
        rx: tokio::sync::oneshot::Receiver<Result<PubAck, BusError>>,
    ) -> PendingAck {
        PendingAck {
            offset: 0,
            epoch: "".into(),
            wait: Wait::Answer(rx),
        }
    }

    /// Resolves once the message is durable and delivered (or the store failed).
    pub async fn durable(self) -> Result<PubAck, BusError> {
        let ticket = match self.wait {
            Wait::Ticket(t) => t,
            Wait::Answer(rx) => {
                return rx.await.unwrap_or_else(|_| {
                    Err(BusError::Unavailable(
                        "shut down before Redis answered".into(),
                    ))
                });
            }
        };
        match ticket.wait().await {
            Ok(delivered) => Ok(PubAck {
                offset: self.offset,
                epoch: self.epoch,
                duplicate: false,
                delivered: delivered as usize,
                backlogged: false,
            }),
            Err(e) => Err(BusError::Unavailable(e.to_string())),
        }
    }
}

impl Published {
    /// The ack, waiting for the disk when the topic is persisted.
    pub async fn ack(self) -> Result<PubAck, BusError> {
        match self {
            Published::Done(a) => Ok(a),
            Published::Pending(p) => p.durable().await,
        }
    }

    /// The ack as far as it is known now: for a pending publish, its offset and epoch
    /// (nothing delivered yet).
    pub fn now(self) -> PubAck {
        match self {
            Published::Done(a) => a,
            Published::Pending(p) => PubAck {
                offset: p.offset,
                epoch: p.epoch,
                duplicate: false,
                delivered: 0,
                backlogged: false,
            },
        }
    }
}

/// Opens the data directory's store, puts every persisted topic back into `topics`, and
/// starts the committer, which delivers through `bus` once messages are durable.
pub(super) fn open(
    dir: Option<&std::path::Path>,
    topics: &MemoryStore,
    retained: &dashmap::DashSet<Topic>,
    bus: Weak<Inner>,
) -> Result<Option<Persistence>, StoreError> {
    let Some(dir) = dir else {
        return Ok(None);
    };
    let started = std::time::Instant::now();
    let mut engine = RedbStore::open(dir)?;
    let retention = |t: &Topic| {
        let s = topics.settings_for(t);
        s.persist.then(|| Retention::of(&s))
    };
    let recovered = engine.recover(&retention, crate::event::now_ms())?;
    let (count, mut messages) = (recovered.len(), 0);
    for r in recovered {
        messages += r.history.len();
        if r.retained.is_some() {
            retained.insert(r.topic.clone());
        }
        topics.restore(r);
    }
    tracing::info!(
        dir = %dir.display(),
        topics = count,
        messages,
        ms = started.elapsed().as_millis() as u64,
        "durable store opened"
    );
    let deliver = Box::new(
        move |writes: Vec<Write>, held: Vec<Held>, result: &Result<(), StoreError>| {
            let Some(inner) = bus.upgrade() else {
                return Vec::new();
            };
            if result.is_err() {
                return Vec::new();
            }
            Bus { inner }.deliver_durable(writes, held)
        },
    );
    let committer = Committer::start(Box::new(engine), deliver).map_err(|e| StoreError::Open {
        path: dir.display().to_string(),
        message: format!("cannot start the commit thread: {e}"),
    })?;
    Ok(Some(Persistence {
        committer,
        permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
    }))
}

impl Bus {
    /// Room in the durable queue when `topic` is persisted (waiting for it if the queue is
    /// full); `None` otherwise.
    /// In cluster mode: room in the queue of publishes for Redis.
    pub(super) async fn durable_permit(&self, topic: &str) -> Option<OwnedSemaphorePermit> {
        if self.inner.backplane.is_clustered() {
            return self.inner.backplane.publish_permit().await;
        }
        let p = self.inner.durable.as_ref()?;
        // While there is room, take it without looking the topic up: a publish to a topic
        // that is not persisted gives it back at once (`publish_inner` drops it).
        if let Ok(permit) = p.permits.clone().try_acquire_owned() {
            return Some(permit);
        }
        let topic = Topic::parse(topic).ok()?;
        if !self.inner.topics.entry(&topic).settings().persist {
            return None;
        }
        p.permits.clone().acquire_owned().await.ok()
    }

    /// Whether messages of a topic with these settings go through the durable store.
    pub(super) fn persisted(&self, settings: &TopicConfig) -> Option<&Persistence> {
        self.inner.durable.as_ref().filter(|_| settings.persist)
    }

    /// Queues an event whose offset was just assigned (the topic lock is held by the
    /// caller, which keeps the queue in offset order).
    pub(super) fn queue_durable(
        &self,
        p: &Persistence,
        entry: &Arc<TopicEntry>,
        settings: &TopicConfig,
        event: Arc<Event>,
        retain: Option<RetainOp>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<PendingAck, BusError> {
        let (offset, epoch) = (event.offset, event.epoch.clone());
        let write = Write {
            event,
            retain,
            keep: Retention::of(settings),
        };
        let held = Held {
            entry: entry.clone(),
            _permit: permit,
        };
        let ticket = p
            .committer
            .submit(write, held)
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        Ok(PendingAck {
            offset,
            epoch,
            wait: Wait::Ticket(ticket),
        })
    }

    /// Runs on the delivery thread after each durable batch: adds each message to its
    /// topic's history, sets or clears the retained message and fans it out, in queue
    /// order. Returns how many sessions each message went to; the committer then completes
    /// the whole batch's acks at once, and the permits (dropped with `held`) make room.
    fn deliver_durable(&self, writes: Vec<Write>, held: Vec<Held>) -> Vec<u32> {
        let stats = &self.inner.stats;
        let mut total = 0u64;
        let mut counts = Vec::with_capacity(writes.len());
        // Consecutive messages of one topic share its settings.
        let mut current: Option<(&Arc<TopicEntry>, Arc<TopicConfig>)> = None;
        for (w, h) in writes.iter().zip(&held) {
            if !current
                .as_ref()
                .is_some_and(|(e, _)| Arc::ptr_eq(e, &h.entry))
            {
                current = Some((&h.entry, h.entry.settings()));
            }
            let Some((_, s)) = &current else { continue };
            let event = &w.event;
            let mut state = h.entry.lock();
            state.remember(event, s);
            self.apply_retain(&mut state, event, w.retain);
            let delivered = self.fan_out(event, s.ack_wait).delivered;
            drop(state);
            total += delivered as u64;
            counts.push(delivered as u32);
        }
        stats
            .published
            .fetch_add(writes.len() as u64, Ordering::Relaxed);
        stats.delivered.fetch_add(total, Ordering::Relaxed);
        counts
    }

    /// Waits until every message queued for the durable store so far is on disk (no-op
    /// without a data directory). Called on shutdown.
    pub async fn flush_store(&self) {
        if let Some(p) = &self.inner.durable {
            p.committer.flush().await;
        }
    }

    /// Publishes and waits until the message is durable when its topic is persisted (at
    /// once otherwise). Any topic is allowed, as with [`Bus::publish`].
    pub async fn publish_durable(&self, p: Publish<'_>) -> Result<PubAck, BusError> {
        let permit = self.durable_permit(p.topic).await;
        self.publish_inner(p, None, permit)?.ack().await
    }

    /// Publishes, waiting only for room in the durable queue (not for the disk): the
    /// returned [`Published`] can be awaited for the durable ack, or dropped. Any topic is
    /// allowed, as with [`Bus::publish`].
    pub async fn submit(&self, p: Publish<'_>) -> Result<Published, BusError> {
        let permit = self.durable_permit(p.topic).await;
        self.publish_inner(p, None, permit)
    }

    /// Like [`Bus::publish_as_client`], but a publish to a persisted topic waits for room
    /// in the durable queue and returns a [`PendingAck`] to await for its `ok`.
    pub async fn submit_as_client(&self, p: Publish<'_>) -> Result<Published, BusError> {
        self.check_client_topic(p.topic)?;
        let permit = self.durable_permit(p.topic).await;
        self.publish_inner(p, None, permit)
    }
}
