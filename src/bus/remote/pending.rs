//! Manual-ack group messages survive the node holding them (PROTOCOL.md §5 held across
//! the cluster): this node records its unacked messages in Redis, keeps itself alive
//! there, and redelivers the messages of nodes that died to its own members.
//!
//! One task does it all ([`keep_pending`]):
//! - **The journal.** [`Pending`](super::super::groups::Pending) tells a channel of every
//!   message handed to a member here and of every one settled; the task coalesces them
//!   per message (the last change wins) and writes them in one pipeline, together with
//!   this node's liveness, so that the fan-out never waits for Redis. What Redis refuses
//!   is kept and written again.
//! - **Takeover.** Every [`HEARTBEAT`] it looks for nodes whose liveness expired and
//!   takes their entries of the groups it has members of (one script in Redis: each entry
//!   goes to exactly one node), and, whatever the group, those due for longer than the
//!   session TTL: nobody took them, as on one node they then go to `$dlq/<topic>`.
//! - **Redelivery.** A taken entry is redelivered once its `ack_wait` is over, to one of
//!   this node's members, as a redelivery after a wait that ran out (its deliveries go
//!   on counting, so `max_deliveries` and `$dlq/<topic>` hold across nodes); from then on
//!   it is this node's unacked message like any other.

use std::collections::HashMap;
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::super::groups::{self, Journaled, Unacked};
use super::super::{Bus, Inner};
use super::upgrade;
use crate::cluster::pending::{self as record, HEARTBEAT, Taken};
use crate::event::now_ms;

/// How often taken entries are looked at (their redelivery is due within this).
const TICK: Duration = Duration::from_millis(250);
/// How long a journal write that failed waits before it is tried again.
const RETRY: Duration = Duration::from_millis(500);

/// Starts recording this node's unacked messages and taking over those of dead nodes.
pub(super) fn start(bus: &Bus, cancel: CancellationToken) {
    let (tx, rx) = mpsc::unbounded_channel();
    bus.inner.pending.journal_to(tx);
    tokio::spawn(keep_pending(
        std::sync::Arc::downgrade(&bus.inner),
        rx,
        cancel,
    ));
}

/// What became of a taken entry.
enum Outcome {
    /// Not due yet, or due with nobody to take it: looked at again later.
    Kept(Taken),
    /// Handed to a member that acks: its record is the pending message's now.
    Handed,
    /// Dead-lettered, or handed to a member that does not ack: its record goes.
    Settled(String),
}

async fn keep_pending(
    bus: Weak<Inner>,
    mut changes: mpsc::UnboundedReceiver<Journaled>,
    cancel: CancellationToken,
) {
    // Field → new value (`None`: remove), the last change of each message.
    let mut dirty: HashMap<String, Option<String>> = HashMap::new();
    let mut taken: Vec<Taken> = Vec::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beat: Option<Instant> = None;
    let mut retry_at: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            change = changes.recv() => {
                let Some(change) = change else { return };
                note(&mut dirty, change);
                while let Ok(change) = changes.try_recv() {
                    note(&mut dirty, change);
                }
            }
            _ = tick.tick() => {}
        }
        let Some(bus) = upgrade(&bus) else { return };
        let Some(remote) = bus.redis() else { return };
        let now = Instant::now();
        let beat_due = beat.is_none_or(|b| now >= b + HEARTBEAT);
        let write_due = !dirty.is_empty() && retry_at.is_none_or(|t| now >= t);
        if beat_due || write_due {
            let writes: Vec<(String, Option<String>)> = dirty.drain().collect();
            match remote.cluster.journal(&writes).await {
                Ok(()) => retry_at = None,
                Err(e) => {
                    tracing::debug!(error = %e, entries = writes.len(), "unacked messages not recorded; retrying");
                    dirty.extend(writes);
                    retry_at = Some(now + RETRY);
                }
            }
        }
        if beat_due {
            beat = Some(now);
            if let Err(e) = bus.take_over_dead(remote, &mut taken).await {
                tracing::debug!(error = %e, "dead nodes not looked at");
            }
        }
        if !taken.is_empty() {
            let now_ms = now_ms();
            for t in std::mem::take(&mut taken) {
                match bus.redeliver_taken(t, now_ms) {
                    Outcome::Kept(t) => taken.push(t),
                    Outcome::Handed => {}
                    Outcome::Settled(field) => {
                        dirty.insert(field, None);
                    }
                }
            }
        }
    }
}

/// Adds one change to the writes waiting for Redis.
fn note(dirty: &mut HashMap<String, Option<String>>, change: Journaled) {
    match change {
        Journaled::Held {
            event,
            group,
            deliveries,
            ack_wait,
        } => {
            let deadline = now_ms() + ack_wait.as_millis() as u64;
            dirty.insert(
                record::field(&group.pattern, &group.name, &event),
                Some(record::value(&event, deliveries, deadline)),
            );
        }
        Journaled::Settled { event, group } => {
            dirty.insert(record::field(&group.pattern, &group.name, &event), None);
        }
    }
}

impl Bus {
    /// Takes the entries of dead nodes that this node can redeliver (see the module
    /// comment) into `taken`.
    async fn take_over_dead(
        &self,
        remote: &super::Remote,
        taken: &mut Vec<Taken>,
    ) -> Result<(), crate::cluster::ClusterError> {
        let dead = remote.cluster.dead_nodes().await?;
        if dead.is_empty() {
            return Ok(());
        }
        let groups: Vec<String> = self
            .inner
            .groups
            .names()
            .iter()
            .map(|(pattern, name)| record::group_key(pattern, name))
            .collect();
        let orphan_limit = self.inner.live.load().config.session.ttl;
        let cutoff = now_ms().saturating_sub(orphan_limit.as_millis() as u64);
        for node in dead {
            let before = taken.len();
            let r = remote
                .cluster
                .take_over(&node, &groups, cutoff, taken)
                .await;
            if taken.len() > before {
                tracing::info!(
                    node,
                    messages = taken.len() - before,
                    "took over a dead node's unacked group messages"
                );
            }
            r?;
        }
        Ok(())
    }

    /// Redelivers a taken entry once due: as a wait that ran out on the dead node, so to
    /// `$dlq/<topic>` once `max_deliveries` is reached. With no member here (they left
    /// since) it is held, for at most the session TTL from its deadline as on one node.
    fn redeliver_taken(&self, t: Taken, now_ms: u64) -> Outcome {
        if t.deadline_ms > now_ms {
            return Outcome::Kept(t);
        }
        let settings = self.inner.topics.settings_for(&t.event.topic);
        if t.deliveries >= settings.max_deliveries {
            self.dead_letter_of(&t.event, &t.name, t.deliveries);
            return Outcome::Settled(t.field);
        }
        let group = self.inner.groups.get(&t.pattern, &t.name);
        let Some((group, picked)) = group.and_then(|g| g.pick(None).map(|p| (g, p))) else {
            let orphan_limit = self.inner.live.load().config.session.ttl;
            if now_ms.saturating_sub(t.deadline_ms) < orphan_limit.as_millis() as u64 {
                return Outcome::Kept(t);
            }
            self.dead_letter_of(&t.event, &t.name, t.deliveries);
            return Outcome::Settled(t.field);
        };
        let deliveries = t.deliveries + 1;
        let r = picked.session.push(&t.event, groups::delivery(deliveries));
        self.count_drops(u64::from(r.dropped_unsent), u64::from(r.kicked));
        self.inner.stats.redelivered.fetch_add(1, Ordering::Relaxed);
        if !(picked.manual && r.seq > 0) {
            return Outcome::Settled(t.field);
        }
        self.inner.pending.insert(
            r.seq,
            Unacked {
                event: t.event,
                group,
                holder: picked.session,
                deliveries,
                ack_wait: settings.ack_wait,
                deadline: Instant::now(),
                sent: false,
                orphaned: None,
            },
        );
        Outcome::Handed
    }
}
