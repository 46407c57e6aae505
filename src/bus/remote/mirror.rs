//! The node's topic table as a mirror of Redis, for the topics this node receives.
//!
//! Local reads are served from it. Every message arriving from the feed is *applied*
//! (offset advanced, history and retained message updated, fanned out to local sessions)
//! at most once and in offset order; a copy with an offset already applied is dropped. A
//! subscription that replays (`since`, `rewind`, retained messages) first makes the node
//! watch the channel, then *warms* the topics concerned from Redis — messages newer than
//! the mirror are applied as if they had just arrived — and then runs the single-node
//! replay under the topic locks, so replay and live delivery meet without a gap or a
//! duplicate (see `queries.rs`).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::super::groups::Group;
use super::super::{Bus, BusError, Inner};
use super::groups::CLAIM_TTL;
use super::lag::{self, Lag};
use super::upgrade;
use crate::cluster::{Incoming, Tail};
use crate::event::Event;
use crate::session::Session;
use crate::store::{RetainOp, TopicState};
use crate::topic::Topic;

pub(super) async fn apply_feed(bus: Weak<Inner>, mut incoming: mpsc::Receiver<Incoming>) {
    let mut lag = Lag::default();
    loop {
        // While this node holds the cluster back, it looks every tick whether it caught up.
        let m = if lag.asking() {
            match tokio::time::timeout(lag::TICK, incoming.recv()).await {
                Ok(m) => m,
                Err(_) => {
                    let Some(bus) = upgrade(&bus) else { return };
                    if let Some(remote) = bus.redis() {
                        lag.idle(&remote.cluster);
                    }
                    continue;
                }
            }
        } else {
            incoming.recv().await
        };
        let Some(m) = m else { return };
        let Some(bus) = upgrade(&bus) else { return };
        match m {
            Incoming::Message {
                topic,
                payload,
                read_at,
            } => {
                if lag.asking() {
                    lag.make_room(crate::cluster::wire::count(&payload)).await;
                }
                let behind = bus.apply_message(&topic, &payload);
                if let Some(remote) = bus.redis() {
                    lag.applied(&remote.cluster, read_at, behind);
                }
                lag.drain().await;
            }
            Incoming::Slow { payload } => {
                if let Some(remote) = bus.redis() {
                    remote.cluster.slowdown().heard(&payload);
                }
            }
            Incoming::Reply { payload } => bus.apply_reply(&payload),
            Incoming::Control { payload } => bus.apply_control(&payload),
            Incoming::ControlReply { payload } => bus.apply_control_reply(&payload),
            Incoming::Resynced { lost_at_ms } => {
                bus.load_remote_revocations().await;
                if let Some(lost) = lost_at_ms {
                    bus.catch_up(lost).await;
                }
            }
        }
    }
}

impl Bus {
    fn apply_reply(&self, payload: &[u8]) {
        let Ok(text) = std::str::from_utf8(payload) else {
            return;
        };
        let Some((inbox, data)) = text.split_once(' ') else {
            return;
        };
        let Ok(data) = serde_json::from_str::<&serde_json::value::RawValue>(data) else {
            return;
        };
        if self.inner.inboxes.reply(inbox, data) {
            self.inner.stats.requests.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Applies a batch of a topic's messages from the feed: one lookup and one lock for
    /// the batch, each message fanned out to local subscribers as it is applied; what groups
    /// here must get goes to the group task (`groups.rs`), so a claim in Redis never holds
    /// up the feed. Returns a local session whose writer it found behind (see `lag.rs`).
    fn apply_message(&self, topic: &str, payload: &[u8]) -> Option<Arc<Session>> {
        let Ok(topic) = Topic::parse(topic) else {
            return None;
        };
        let records = match crate::cluster::wire::decode_batch(&topic, payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, topic = topic.as_str(), "message from redis dropped");
                return None;
            }
        };
        let entry = self.inner.topics.entry(&topic);
        let settings = entry.settings();
        let mut applied = Vec::new();
        let mut behind = None;
        {
            let mut state = entry.lock();
            for r in &records {
                let fan_out = Some(&mut behind);
                if let Some(e) =
                    self.apply_locked(&mut state, &settings, &r.event, r.retain, fan_out)
                {
                    applied.push(e);
                }
            }
        }
        if !applied.is_empty() && !self.inner.group_router.is_empty() {
            self.queue_group_delivery(applied, settings.ack_wait);
        }
        behind
    }

    /// Applies one message to a topic's mirror under its lock: drops it when its offset
    /// was applied already, else advances the offset, remembers it, updates the retained
    /// message and (with `fan_out`) hands it to local plain subscribers, noting there a
    /// session whose writer it found behind. Returns the event when it still has to go to
    /// groups.
    fn apply_locked(
        &self,
        state: &mut TopicState,
        settings: &crate::config::TopicConfig,
        event: &Arc<Event>,
        retain: Option<RetainOp>,
        fan_out: Option<&mut Option<Arc<Session>>>,
    ) -> Option<Arc<Event>> {
        self.follow_epoch(state, &event.topic, &event.epoch);
        if event.offset <= state.offset {
            return None;
        }
        state.offset = event.offset;
        state.last_publish = Instant::now();
        state.remember(event, settings);
        self.apply_retain(state, event, retain);
        let behind = fan_out?;
        let f = self.fan_out_plain(event);
        if behind.is_none() {
            *behind = f.behind;
        }
        self.inner
            .stats
            .delivered
            .fetch_add(f.delivered as u64, Ordering::Relaxed);
        Some(event.clone())
    }

    /// When Redis holds `topic` under another epoch than the mirror (Redis restarted
    /// empty), the mirror starts that epoch from offset 0, and the topic must be recorded in
    /// Redis's topic set again.
    fn follow_epoch(&self, state: &mut TopicState, topic: &Topic, epoch: &Arc<str>) {
        if *state.epoch == **epoch {
            return;
        }
        self.inner.noted.remove(topic.as_str());
        state.epoch = epoch.clone();
        state.offset = 0;
        state.delivered = 0;
        state.history.clear();
        state.retained = None;
    }

    /// Hands `event` to each matching group that has members here, once cluster-wide:
    /// the node that claims the message for a group in Redis delivers it.
    async fn deliver_groups(&self, event: &Arc<Event>, ack_wait: Duration) {
        if self.inner.group_router.is_empty() {
            return;
        }
        let groups: Vec<Arc<Group>> = self
            .inner
            .group_router
            .matches(event.topic.as_str())
            .iter()
            .map(|g| g.0.clone())
            .collect();
        if groups.is_empty() {
            return;
        }
        let Some(remote) = self.redis() else { return };
        let keys = crate::cluster::TopicKeys::new(event.topic.as_str());
        let claims: Vec<String> = groups
            .iter()
            .map(|g| keys.claim(&g.pattern, &g.name, event.offset, &event.epoch))
            .collect();
        match remote.cluster.claim(&claims, CLAIM_TTL).await {
            Ok(won) => {
                for (g, won) in groups.iter().zip(won) {
                    if won && self.deliver_to_group(g, event, ack_wait) {
                        self.inner.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "group delivery not claimed; message skipped"),
        }
    }

    /// Brings a topic's mirror up to Redis (see the module comment). `history`: fetch and
    /// keep the stored history too (for a replay); messages newer than the mirror and
    /// newer than `fresh_after_ms` are fanned out as live.
    pub(super) async fn warm(
        &self,
        topic: &Topic,
        history: bool,
        fresh_after_ms: u64,
    ) -> Result<(), BusError> {
        let Some(remote) = self.redis() else {
            return Ok(());
        };
        let entry = self.inner.topics.entry(topic);
        let settings = entry.settings();
        let tail = remote
            .cluster
            .tail(
                topic,
                if history { settings.history } else { 0 },
                settings.history_ttl,
            )
            .await?;
        let live = {
            let mut state = entry.lock();
            self.merge_tail(&mut state, topic, &settings, tail, history, fresh_after_ms)
        };
        for event in live {
            self.deliver_groups(&event, settings.ack_wait).await;
        }
        Ok(())
    }

    fn merge_tail(
        &self,
        state: &mut TopicState,
        topic: &Topic,
        settings: &crate::config::TopicConfig,
        tail: Tail,
        history: bool,
        fresh_after_ms: u64,
    ) -> Vec<Arc<Event>> {
        self.follow_epoch(state, topic, &tail.epoch);
        // The stored messages and the retained one, in offset order, applied without touching
        // the retained message: that is settled once below, from what Redis holds now.
        let mut events: Vec<&Arc<Event>> = tail.history.iter().map(|r| &r.event).collect();
        if let Some(r) = &tail.retained
            && !events.iter().any(|e| e.offset == r.event.offset)
        {
            events.push(&r.event);
            events.sort_by_key(|e| e.offset);
        }
        let mut live = Vec::new();
        for e in events {
            let mut behind = None;
            let fan_out = (e.ts >= fresh_after_ms).then_some(&mut behind);
            if let Some(e) = self.apply_locked(state, settings, e, None, fan_out) {
                live.push(e);
            }
        }
        if history {
            // The stored history is complete up to where it ends; what the feed brought
            // after that stays.
            let last = tail.history.last().map_or(0, |r| r.event.offset);
            let newer: Vec<Arc<Event>> = state
                .history
                .iter()
                .filter(|e| e.offset > last)
                .cloned()
                .collect();
            state.history = tail.history.iter().map(|r| r.event.clone()).collect();
            state.history.extend(newer);
            while state.history.len() > settings.history {
                state.history.pop_front();
            }
        }
        match &tail.retained {
            Some(r)
                if state
                    .retained
                    .as_ref()
                    .is_none_or(|x| x.offset <= r.event.offset) =>
            {
                self.apply_retain(state, &r.event, Some(RetainOp::Set));
            }
            None => {
                if let Some(x) = state.retained.clone()
                    && x.offset <= tail.offset
                {
                    self.apply_retain(state, &x, Some(RetainOp::Clear));
                }
            }
            _ => {}
        }
        live
    }
}
