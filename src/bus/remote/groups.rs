//! Group delivery of what the feed brings: claimed in Redis once per batch and group, off
//! the feed's task.
//!
//! Every node with members of a group receives the same batch (one channel message per
//! topic and script call, see `cluster::wire`), so the nodes claim the batch, not each
//! message: one `SET NX` per batch and group decides which node hands the batch's
//! messages to one of its members. The claims run on one task, in the order batches
//! arrived, several batches' claims in one pipeline when they queue up: a group sees a
//! topic's messages in order, and the feed goes on applying while Redis answers.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;

use super::super::groups::Group;
use super::super::{Bus, Inner};
use super::upgrade;
use crate::event::Event;

/// How long a group delivery claim is kept (longer than any redelivery of the feed).
pub(super) const CLAIM_TTL: Duration = Duration::from_secs(600);
/// Batches whose claims go in one pipeline at most.
const CLAIMS_PER_ROUND: usize = 64;

/// A batch of one topic's messages, applied here and waiting for group delivery.
pub(super) struct Batch {
    events: Vec<Arc<Event>>,
    ack_wait: Duration,
}

pub(super) type Queue = mpsc::UnboundedSender<Batch>;

pub(super) fn queue() -> (Queue, mpsc::UnboundedReceiver<Batch>) {
    mpsc::unbounded_channel()
}

impl Bus {
    /// Hands a batch (in offset order, all of one topic) to the group task.
    pub(super) fn queue_group_delivery(&self, events: Vec<Arc<Event>>, ack_wait: Duration) {
        if let Some(remote) = self.redis() {
            let _ = remote.groups.send(Batch { events, ack_wait });
        }
    }
}

pub(super) async fn deliver_groups(bus: Weak<Inner>, mut rx: mpsc::UnboundedReceiver<Batch>) {
    let mut batches = Vec::with_capacity(CLAIMS_PER_ROUND);
    while rx.recv_many(&mut batches, CLAIMS_PER_ROUND).await > 0 {
        let Some(bus) = upgrade(&bus) else { return };
        bus.claim_and_deliver(std::mem::take(&mut batches)).await;
    }
}

impl Bus {
    async fn claim_and_deliver(&self, batches: Vec<Batch>) {
        let Some(remote) = self.redis() else { return };
        // (batch, group) pairs to claim, in order.
        let mut wanted: Vec<(usize, Arc<Group>)> = Vec::new();
        let mut keys = Vec::new();
        for (i, b) in batches.iter().enumerate() {
            let (Some(first), Some(last)) = (b.events.first(), b.events.last()) else {
                continue;
            };
            let topic = crate::cluster::TopicKeys::new(first.topic.as_str());
            for g in self.inner.group_router.matches(first.topic.as_str()).iter() {
                let g = g.0.clone();
                keys.push(topic.claim_batch(
                    &g.pattern,
                    &g.name,
                    first.offset,
                    last.offset,
                    &first.epoch,
                ));
                wanted.push((i, g));
            }
        }
        if keys.is_empty() {
            return;
        }
        let won = match remote.cluster.claim(&keys, CLAIM_TTL).await {
            Ok(won) => won,
            Err(e) => {
                tracing::warn!(error = %e, "group delivery not claimed; messages skipped");
                return;
            }
        };
        let mut delivered = 0u64;
        for ((i, g), won) in wanted.into_iter().zip(won) {
            if !won {
                continue;
            }
            let b = &batches[i];
            for e in &b.events {
                if self.deliver_to_group(&g, e, b.ack_wait) {
                    delivered += 1;
                }
            }
        }
        self.inner
            .stats
            .delivered
            .fetch_add(delivered, Ordering::Relaxed);
    }
}
