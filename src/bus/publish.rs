//! Publishing: offsets, de-duplication, history, retained messages, fan-out to plain
//! subscribers and groups, and the redelivery of unacked group messages.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::value::RawValue;

use super::groups::{self, Unacked};
use super::inboxes::INBOX_PREFIX;
use super::persist::Published;
use super::{Bus, BusError, MAX_MSG_ID};
use crate::event::{Delivery, Event, EventParts, now_ms};
use crate::store::{RetainOp, TopicState};
use crate::topic::Topic;

/// A publish as every transport hands it to the bus.
#[derive(Debug, Clone, Copy)]
pub struct Publish<'a> {
    pub topic: &'a str,
    /// Valid JSON.
    pub data: &'a RawValue,
    pub msg_id: Option<&'a str>,
    pub retain: bool,
}

impl Publish<'_> {
    /// What this publish does to its topic's retained message: a retained `null` clears it.
    pub(super) fn retain_op(&self) -> Option<RetainOp> {
        match (self.retain, self.data.get() == "null") {
            (false, _) => None,
            (true, false) => Some(RetainOp::Set),
            (true, true) => Some(RetainOp::Clear),
        }
    }
}

/// The answer to a publish (`ok {offset, epoch, duplicate}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubAck {
    pub offset: u64,
    pub epoch: Arc<str>,
    pub duplicate: bool,
    /// Sessions the message was handed to.
    pub delivered: usize,
    /// Some recipient's writer is half its buffer behind although its socket takes what it
    /// is given: this node is not writing as fast as it accepts (CPU, not a slow reader). A
    /// publisher that can wait should let the writers run first (the WebSocket reader
    /// yields); see DESIGN.md, "Overload".
    pub backlogged: bool,
}

/// What a fan-out did.
#[derive(Default)]
pub(super) struct FanOut {
    pub delivered: usize,
    /// A recipient found behind (see [`PubAck::backlogged`]): the one to watch for when
    /// the node has caught up (cluster mode, `remote/lag.rs`).
    pub behind: Option<Arc<crate::session::Session>>,
}

impl Bus {
    /// Publishes a message. Any topic is allowed, system topics included: this is the
    /// embedder's own call. Transports use [`Bus::publish_as_client`].
    ///
    /// On a persisted topic (with a data directory) the message is queued for the disk and
    /// delivered once durable; the ack returned has its offset but `delivered: 0`. Use
    /// [`Bus::publish_durable`] to wait for the disk.
    pub fn publish(&self, p: Publish<'_>) -> Result<PubAck, BusError> {
        self.publish_with_reply(p, None)
    }

    /// Publishes on behalf of a client: system topics (`$…`) are refused (PROTOCOL.md §1),
    /// except reply inboxes (`$inbox/…`), which is how a responder answers a request.
    ///
    /// On a persisted topic the ack comes before the message is durable; transports that
    /// must not ack earlier use [`Bus::submit_as_client`].
    pub fn publish_as_client(&self, p: Publish<'_>) -> Result<PubAck, BusError> {
        self.check_client_topic(p.topic)?;
        self.publish(p)
    }

    /// Refuses system topics to clients, except reply inboxes.
    pub(super) fn check_client_topic(&self, topic: &str) -> Result<(), BusError> {
        if topic.starts_with('$') {
            crate::topic::validate_topic(topic)?;
            if !topic.starts_with(INBOX_PREFIX) {
                return Err(BusError::Forbidden(format!(
                    "clients may not publish to system topic '{topic}'"
                )));
            }
        }
        Ok(())
    }

    /// Publishes any serializable value (embedded use).
    pub fn publish_json<T: serde::Serialize>(
        &self,
        topic: &str,
        data: &T,
    ) -> Result<PubAck, BusError> {
        let raw = serde_json::value::to_raw_value(data)
            .map_err(|e| BusError::BadRequest(format!("data is not JSON: {e}")))?;
        self.publish(Publish {
            topic,
            data: &raw,
            msg_id: None,
            retain: false,
        })
    }

    /// Whether a plain subscription or a group matches `topic`.
    pub(super) fn has_subscribers(&self, topic: &str) -> bool {
        !self.inner.router.matches(topic).is_empty()
            || (!self.inner.group_router.is_empty()
                && !self.inner.group_router.matches(topic).is_empty())
    }

    fn publish_with_reply(
        &self,
        p: Publish<'_>,
        reply_to: Option<&str>,
    ) -> Result<PubAck, BusError> {
        self.publish_inner(p, reply_to, None).map(Published::now)
    }

    /// The publish itself. `permit` is the room taken in the durable queue (when the topic
    /// is persisted and the caller could wait for it).
    pub(super) fn publish_inner(
        &self,
        p: Publish<'_>,
        reply_to: Option<&str>,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<Published, BusError> {
        let topic = Topic::parse(p.topic)?;
        if let Some(id) = p.msg_id {
            if id.len() > MAX_MSG_ID {
                return Err(BusError::BadRequest(format!(
                    "'msg_id' is longer than {MAX_MSG_ID} bytes"
                )));
            }
            if id.is_empty() {
                return Err(BusError::BadRequest("'msg_id' is empty".into()));
            }
        }
        if topic.as_str().starts_with(INBOX_PREFIX) {
            if p.retain {
                return Err(BusError::BadRequest(
                    "a reply to an inbox cannot be retained".into(),
                ));
            }
            // A reply: straight to the requester, never through the router or history.
            let answered = self.inner.inboxes.reply(topic.as_str(), p.data);
            if !answered
                && let Some(sent) = self
                    .inner
                    .backplane
                    .reply(self, topic.as_str(), p.data.get())
            {
                return Ok(sent);
            }
            if answered {
                self.inner.stats.requests.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(Published::Done(PubAck {
                offset: 0,
                epoch: "".into(),
                duplicate: !answered,
                delivered: usize::from(answered),
                backlogged: false,
            }));
        }
        self.inner
            .backplane
            .publish(self, &topic, p, reply_to, permit)
    }

    /// A publish ordered by this node (a single node: see [`Backplane`](super::backplane)).
    pub(super) fn publish_here(
        &self,
        topic: &Topic,
        p: Publish<'_>,
        reply_to: Option<&str>,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<Published, BusError> {
        let entry = self.inner.topics.entry(topic);
        let settings = entry.settings();
        let now = Instant::now();
        let mut state = entry.lock();
        if let Some(id) = p.msg_id
            && let Some(offset) = state.dedup.check(id, settings.dedup_window, now)
        {
            let ack = PubAck {
                offset,
                epoch: state.epoch.clone(),
                duplicate: true,
                delivered: 0,
                backlogged: false,
            };
            drop(state);
            self.inner.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            return Ok(Published::Done(ack));
        }
        let durable = self.persisted(&settings);
        if let Some(d) = durable {
            // Refuse before taking an offset that could then never be stored.
            d.committer
                .check()
                .map_err(|e| BusError::Unavailable(e.to_string()))?;
        }
        state.offset += 1;
        state.last_publish = now;
        let event = Arc::new(Event::new(
            EventParts {
                topic: topic.clone(),
                data: p.data.get(),
                msg_id: p.msg_id,
                reply_to,
            },
            state.offset,
            state.epoch.clone(),
            now_ms(),
        ));
        if let Some(id) = p.msg_id {
            let offset = state.offset;
            state.dedup.record(id, offset, now);
        }
        if let Some(d) = durable {
            let retain = p.retain_op();
            let pending = self.queue_durable(d, &entry, &settings, event, retain, permit)?;
            return Ok(Published::Pending(pending));
        }
        state.remember(&event, &settings);
        self.apply_retain(&mut state, &event, p.retain_op());
        let FanOut { delivered, behind } = self.fan_out(&event, settings.ack_wait);
        let backlogged = behind.is_some();
        let ack = PubAck {
            offset: state.offset,
            epoch: state.epoch.clone(),
            duplicate: false,
            delivered,
            backlogged,
        };
        drop(state);
        let stats = &self.inner.stats;
        stats.published.fetch_add(1, Ordering::Relaxed);
        stats
            .delivered
            .fetch_add(delivered as u64, Ordering::Relaxed);
        Ok(Published::Done(ack))
    }

    /// Hands `event` to every plain subscriber and to one member of each matching group.
    /// Returns the number of sessions it went to.
    pub(super) fn fan_out(&self, event: &Arc<Event>, ack_wait: std::time::Duration) -> FanOut {
        let mut out = self.fan_out_plain(event);
        if !self.inner.group_router.is_empty() {
            for g in self.inner.group_router.matches(event.topic.as_str()).iter() {
                out.delivered += usize::from(self.deliver_to_group(&g.0, event, ack_wait));
            }
        }
        out
    }

    /// Hands `event` to every plain subscriber.
    pub(super) fn fan_out_plain(&self, event: &Arc<Event>) -> FanOut {
        let targets = self.inner.router.matches(event.topic.as_str());
        let mut dropped = 0u64;
        let mut kicked = 0u64;
        let mut behind = None;
        for s in targets.iter() {
            let r = s.0.push(event, Delivery::LIVE);
            dropped += u64::from(r.dropped_unsent);
            kicked += u64::from(r.kicked);
            if r.backlogged && behind.is_none() {
                behind = Some(s.0.clone());
            }
        }
        self.count_drops(dropped, kicked);
        FanOut {
            delivered: targets.len(),
            behind,
        }
    }

    /// Hands `event` to one member of group `g`; false when it has no member to take it
    /// (or the member picked already has it as a plain subscriber).
    pub(super) fn deliver_to_group(
        &self,
        g: &Arc<groups::Group>,
        event: &Arc<Event>,
        ack_wait: std::time::Duration,
    ) -> bool {
        let Some(picked) = g.pick(None) else {
            return false;
        };
        if picked.session.matches_plain(event.topic.as_str()) {
            return false; // it already has the message
        }
        let r = picked.session.push(event, Delivery::LIVE);
        self.count_drops(u64::from(r.dropped_unsent), u64::from(r.kicked));
        if picked.manual && r.seq > 0 {
            self.inner.pending.insert(
                r.seq,
                Unacked {
                    event: event.clone(),
                    group: g.clone(),
                    holder: picked.session.clone(),
                    deliveries: 1,
                    ack_wait,
                    deadline: Instant::now(),
                    sent: false,
                    orphaned: None,
                },
            );
        }
        true
    }

    /// Sets or clears (per `op`) the retained message of `event`'s topic, keeping the set
    /// of topics holding one in step.
    pub(super) fn apply_retain(
        &self,
        state: &mut TopicState,
        event: &Arc<Event>,
        op: Option<RetainOp>,
    ) {
        match op {
            None => {}
            Some(RetainOp::Set) => {
                state.retained = Some(event.clone());
                self.inner.retained.insert(event.topic.clone());
            }
            Some(RetainOp::Clear) => {
                state.retained = None;
                self.inner.retained.remove(&event.topic);
            }
        }
    }

    pub(super) fn count_drops(&self, dropped: u64, kicked: u64) {
        if dropped > 0 {
            self.inner
                .stats
                .dropped
                .fetch_add(dropped, Ordering::Relaxed);
        }
        if kicked > 0 {
            self.inner
                .stats
                .slow_consumers
                .fetch_add(kicked, Ordering::Relaxed);
        }
    }
}
