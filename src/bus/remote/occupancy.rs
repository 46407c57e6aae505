//! Occupancy across the cluster: this node tells Redis which patterns it has subscribers
//! to, refreshes them while it lives, and reaps those of dead nodes; Redis's answers say
//! which node announces `topic.occupied` and `topic.vacated` (see `cluster/occupancy.rs`),
//! so each fires once per cluster.
//!
//! One task does it all, in order: the bus only marks patterns as changed (it never waits
//! for Redis), and the task reconciles what Redis holds for this node with what the node
//! has now. A pattern occupied and vacated again before the task ran costs nothing.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::super::{Bus, Inner};
use super::{Remote, upgrade};
use crate::cluster::{ClusterError, OCCUPANCY_CHUNK, OCCUPANCY_REFRESH, Occupancy};

/// How soon a failed exchange with Redis is tried again (the refresh would repair it too,
/// later).
const RETRY: Duration = Duration::from_millis(500);

/// Patterns whose local occupancy changed since the task last looked.
#[derive(Default)]
pub(in crate::bus) struct Changes {
    dirty: parking_lot::Mutex<HashSet<Arc<str>>>,
    wake: Notify,
}

impl Changes {
    pub(in crate::bus) fn changed(&self, pattern: &str) {
        self.dirty.lock().insert(pattern.into());
        self.wake.notify_one();
    }

    fn take(&self) -> HashSet<Arc<str>> {
        std::mem::take(&mut *self.dirty.lock())
    }
}

/// What the task knows of this node's entries in Redis.
#[derive(Default)]
struct Held {
    /// Patterns whose entry Redis acknowledged.
    held: HashSet<Arc<str>>,
    /// Patterns whose last leave got no answer: it may have run and emptied the pattern.
    unanswered_leaves: HashSet<Arc<str>>,
    /// Patterns to look at (changed locally, or not settled by a failed exchange).
    pending: HashSet<Arc<str>>,
}

/// Runs until `cancel`: tells Redis of this node's occupancy changes, refreshes its entries
/// and reaps dead nodes' every [`OCCUPANCY_REFRESH`]. Only while the bus is observed: the
/// nodes of a cluster are configured alike, and a node nobody listens to would announce
/// what nobody hears.
pub(super) async fn keep_occupancy(
    bus: Weak<Inner>,
    changes: Arc<Changes>,
    cancel: CancellationToken,
) {
    let mut state = Held::default();
    let mut tick = tokio::time::interval(OCCUPANCY_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retry = false;
    loop {
        let refresh = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => true,
            _ = changes.wake.notified() => false,
            _ = tokio::time::sleep(RETRY), if retry => false,
        };
        let Some(bus) = upgrade(&bus) else { return };
        let Some(remote) = bus.redis() else { return };
        state.pending.extend(changes.take());
        if !bus.observed() {
            state.pending.clear();
            continue;
        }
        if refresh {
            let held: Vec<Arc<str>> = state.held.iter().cloned().collect();
            state.pending.extend(held);
            state.pending.extend(bus.occupied_here());
        }
        retry = match state.apply(&bus, remote, refresh).await {
            Ok(()) => false,
            Err(e) => {
                tracing::debug!(error = %e, "occupancy not recorded in redis");
                true
            }
        };
        if refresh {
            match remote.cluster.reap_occupancy().await {
                Ok(vacated) => {
                    for p in vacated {
                        bus.announce_occupancy(&p, false);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "occupancy not reaped"),
            }
        }
    }
}

impl Held {
    /// Joins the pending patterns this node occupies (all of them on a refresh, which
    /// renews their expiry), leaves those it no longer does, and announces what Redis says
    /// changed. What a failure leaves unsettled stays pending.
    async fn apply(
        &mut self,
        bus: &Bus,
        remote: &Remote,
        refresh: bool,
    ) -> Result<(), ClusterError> {
        let (mut joins, mut leaves) = (Vec::new(), Vec::new());
        for p in self.pending.drain() {
            let here = bus.is_occupied_here(&p);
            if here && (refresh || !self.held.contains(&p)) {
                joins.push(p);
            } else if !here && self.held.contains(&p) {
                leaves.push(p);
            }
        }
        let mut failed = None;
        for (i, chunk) in joins.chunks(OCCUPANCY_CHUNK).enumerate() {
            match remote.cluster.occupy(chunk).await {
                Ok(answers) => {
                    for (p, a) in chunk.iter().zip(answers) {
                        let new = self.held.insert(p.clone());
                        self.unanswered_leaves.remove(p);
                        // Unsure and not held: this node's entry is there from a join whose
                        // answer was lost, which may have been the one that occupied it.
                        if a == Occupancy::Changed || (a == Occupancy::Unsure && new) {
                            bus.announce_occupancy(p, true);
                        }
                    }
                }
                Err(e) => {
                    self.pending
                        .extend(joins[i * OCCUPANCY_CHUNK..].iter().cloned());
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            self.pending.extend(leaves);
            return Err(e);
        }
        for (i, chunk) in leaves.chunks(OCCUPANCY_CHUNK).enumerate() {
            match remote.cluster.vacate(chunk).await {
                Ok(answers) => {
                    for (p, a) in chunk.iter().zip(answers) {
                        self.held.remove(p);
                        // Unsure: the entry is gone and nobody is left; announced only when
                        // this node's own earlier leave may have removed it unheard (a
                        // reaper that removed it announced it already).
                        let unanswered = self.unanswered_leaves.remove(p);
                        if a == Occupancy::Changed || (a == Occupancy::Unsure && unanswered) {
                            bus.announce_occupancy(p, false);
                        }
                    }
                }
                Err(e) => {
                    self.unanswered_leaves.extend(chunk.iter().cloned());
                    self.pending
                        .extend(leaves[i * OCCUPANCY_CHUNK..].iter().cloned());
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}
