//! What happens to a group message after it is handed out: the manual `ack`, redelivery
//! once `ack_wait` passes (preferably to another member), and the dead-letter topic
//! `$dlq/<topic>` after `max_deliveries` (PROTOCOL.md §5).

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::groups::{self, Due, Unacked};
use super::{Bus, BusEvent};
use crate::event::Event;
use crate::session::SeqState;

impl Bus {
    /// Settles a manual-ack group message (`ack {seq}`); false when nothing awaited it.
    pub fn ack(&self, session: &crate::session::Session, seq: u64) -> bool {
        self.inner.pending.ack(session.key(), seq)
    }

    /// Redelivers group messages whose `ack_wait` passed, preferably to another member;
    /// after `max_deliveries` they go to `$dlq/<topic>` instead.
    ///
    /// A group whose members all left has nobody to redeliver to. PROTOCOL.md §5 sends a
    /// message to the dead-letter topic only after `max_deliveries`, so such a message is
    /// held (and retried) until a member joins the group again, which may be a new group
    /// object for the same (pattern, name). It is held for at most the session TTL, the
    /// time the protocol gives a disconnected member to come back; a group still empty then
    /// is abandoned, and the message goes to `$dlq/<topic>` (its `deliveries` showing it was
    /// not exhausted) rather than being kept forever or lost silently.
    pub(super) fn redeliver_due(&self) {
        if self.inner.pending.is_empty() {
            return;
        }
        let now = Instant::now();
        let orphan_limit = self.inner.live.load().config.session.ttl;
        for (why, seq, u) in self.inner.pending.take_due(now) {
            let max = self
                .inner
                .topics
                .entry(&u.event.topic)
                .settings()
                .max_deliveries;
            let deliveries = match why {
                Due::Expired => u.deliveries + 1,
                Due::Undelivered => u.deliveries,
            };
            if why == Due::Expired && u.deliveries >= max {
                u.holder.withhold(seq);
                self.inner.pending.forget(&u);
                self.dead_letter(&u);
                continue;
            }
            let group = self
                .inner
                .groups
                .current(&u.group)
                .unwrap_or_else(|| u.group.clone());
            let Some(picked) = group.pick(Some(u.holder.key())) else {
                let since = u.orphaned.unwrap_or(now);
                if now.duration_since(since) < orphan_limit {
                    let deadline = if u.sent { now + u.ack_wait } else { u.deadline };
                    let held = Unacked {
                        orphaned: Some(since),
                        deadline,
                        ..u
                    };
                    self.inner.pending.insert(seq, held);
                } else {
                    u.holder.withhold(seq);
                    self.inner.pending.forget(&u);
                    self.dead_letter(&u);
                }
                continue;
            };
            if why == Due::Undelivered
                && picked.session.key() == u.holder.key()
                && u.holder.seq_state(seq) == SeqState::Unsent
            {
                // Its only member is away but may resume: keep it where it is.
                self.inner.pending.insert(
                    seq,
                    Unacked {
                        deadline: Instant::now(),
                        ..u
                    },
                );
                continue;
            }
            // The member held it only until now (PROTOCOL.md §5): a resume of the member
            // must not bring back a job that another member (or a later delivery) has.
            u.holder.withhold(seq);
            let r = picked.session.push(&u.event, groups::delivery(deliveries));
            self.count_drops(u64::from(r.dropped_unsent), u64::from(r.kicked));
            self.inner.stats.redelivered.fetch_add(1, Ordering::Relaxed);
            if picked.manual && r.seq > 0 {
                self.inner.pending.insert(
                    r.seq,
                    Unacked {
                        holder: picked.session.clone(),
                        group,
                        deliveries,
                        deadline: Instant::now(),
                        sent: false,
                        orphaned: None,
                        ..u
                    },
                );
            } else {
                self.inner.pending.forget(&u);
            }
        }
    }

    fn dead_letter(&self, u: &Unacked) {
        self.dead_letter_of(&u.event, &u.group.name, u.deliveries);
    }

    /// Publishes `event` to `$dlq/<topic>` (and tells the observers) as a message of group
    /// `group` given up after `deliveries`.
    pub(super) fn dead_letter_of(&self, event: &Event, group: &str, deliveries: u32) {
        let body = serde_json::json!({
            "topic": event.topic.as_str(),
            "data": serde_json::from_str::<serde_json::Value>(event.data_json())
                .unwrap_or(serde_json::Value::Null),
            "deliveries": deliveries,
            "msg_id": event.msg_id.as_deref(),
        });
        let topic = format!("$dlq/{}", event.topic.as_str());
        match self.publish_json(&topic, &body) {
            Ok(_) => {
                self.inner
                    .stats
                    .dead_lettered
                    .fetch_add(1, Ordering::Relaxed);
                if self.observed() {
                    self.notify(BusEvent::MessageDead {
                        topic: event.topic.as_str().to_owned(),
                        group: group.to_owned(),
                        deliveries,
                        data: body["data"].clone(),
                        msg_id: event.msg_id.as_deref().map(str::to_owned),
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, %topic, "dead letter not published"),
        }
    }
}
