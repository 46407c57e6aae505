//! The bus in cluster mode (`--redis`): where it hands work to [`crate::cluster`] and
//! applies what comes back.
//!
//! The node's topic table stays what local reads are served from, as a mirror of Redis
//! for the topics this node receives: every message arriving from the feed is *applied*
//! (offset advanced, history and retained message updated, fanned out to local sessions)
//! at most once and in offset order; a copy with an offset already applied is dropped. A
//! subscription that replays (`since`, `rewind`, retained messages) first makes the node
//! watch the channel, then *warms* the topics concerned from Redis — messages newer than
//! the mirror are applied as if they had just arrived — and then runs the single-node
//! replay under the topic locks, so replay and live delivery meet without a gap or a
//! duplicate. Publishes never fan out locally: they come back through the feed like
//! anyone else's, which keeps one order for all nodes.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::groups::Group;
use super::persist::{PendingAck, Published};
use super::{Bus, BusError, Inner, PubAck, Publish, SubOptions, SubOutcome};
use crate::cluster::{Cluster, ClusterError, Incoming, PRESENCE_REFRESH, PublishReq, Tail};
use crate::event::{Event, now_ms};
use crate::session::Session;
use crate::store::{RetainOp, TopicState};
use crate::topic::{Pattern, Topic};

/// A message warmed from Redis is fanned out when it is at most this old: it was then in
/// flight on the feed (and its feed copy will be dropped as already applied), not an old
/// message the node missed while it did not watch the topic.
const IN_FLIGHT: Duration = Duration::from_secs(2);

/// How long a group delivery claim is kept (longer than any redelivery of the feed).
const CLAIM_TTL: Duration = Duration::from_secs(600);

/// The cluster side of a bus.
pub(super) struct Remote {
    pub cluster: Cluster,
    cancel: CancellationToken,
    /// The feed's receiver until [`Remote::run`] starts applying it.
    incoming: parking_lot::Mutex<Option<mpsc::Receiver<Incoming>>>,
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Connects to Redis (in the background); [`Remote::run`] then starts applying the feed.
pub(super) fn start(url: &str) -> Result<Remote, ClusterError> {
    let cancel = CancellationToken::new();
    let (cluster, incoming) = Cluster::start(url, cancel.clone())?;
    Ok(Remote {
        cluster,
        cancel,
        incoming: parking_lot::Mutex::new(Some(incoming)),
    })
}

impl Remote {
    /// Starts the tasks that apply the feed and keep presence alive, once the bus exists.
    pub(super) fn run(&self, bus: &Bus) {
        if let Some(incoming) = self.incoming.lock().take() {
            let weak = Arc::downgrade(&bus.inner);
            tokio::spawn(apply_feed(weak.clone(), incoming));
            tokio::spawn(keep_presence(weak, self.cancel.clone()));
        }
    }
}

fn upgrade(bus: &Weak<Inner>) -> Option<Bus> {
    bus.upgrade().map(|inner| Bus { inner })
}

async fn apply_feed(bus: Weak<Inner>, mut incoming: mpsc::Receiver<Incoming>) {
    while let Some(m) = incoming.recv().await {
        let Some(bus) = upgrade(&bus) else { return };
        match m {
            Incoming::Message { topic, payload } => bus.apply_message(&topic, &payload).await,
            Incoming::Reply { payload } => bus.apply_reply(&payload),
            Incoming::Resynced { lost_at_ms } => {
                if let Some(lost) = lost_at_ms {
                    bus.catch_up(lost).await;
                }
            }
        }
    }
}

/// Refreshes this node's presence members in Redis and announces the leave of members
/// whose node stopped refreshing them.
async fn keep_presence(bus: Weak<Inner>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(PRESENCE_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(bus) = upgrade(&bus) else { return };
        let Some(remote) = bus.remote() else { return };
        for (topic, members) in bus.inner.presence.snapshot() {
            let rows: Vec<(String, String)> = members
                .iter()
                .map(|m| (m.session.to_string(), member_info(&m.identity)))
                .collect();
            if let Err(e) = remote.cluster.presence_join(&topic, &rows).await {
                tracing::debug!(error = %e, "presence not refreshed");
                break;
            }
        }
        match remote.cluster.reap_presence().await {
            Ok(gone) => {
                for (topic, m) in gone {
                    bus.announce_remote_leave(&topic, &m);
                }
            }
            Err(e) => tracing::debug!(error = %e, "presence not reaped"),
        }
    }
}

/// What Redis keeps about a presence member besides its session id.
fn member_info(identity: &crate::session::Identity) -> String {
    serde_json::json!({"user": identity.user, "info": identity.info}).to_string()
}

impl Bus {
    pub(super) fn remote(&self) -> Option<&Remote> {
        self.inner.remote.as_ref()
    }

    /// Whether this node is in cluster mode.
    pub fn is_clustered(&self) -> bool {
        self.inner.remote.is_some()
    }

    /// Ready to serve: always for a single node; in cluster mode, while the feed is
    /// connected to Redis.
    pub fn is_ready(&self) -> bool {
        self.remote().is_none_or(|r| r.cluster.is_up())
    }

    /// Room in the cluster's publish queue, waiting for it (`None` on a single node).
    pub(super) async fn remote_permit(&self) -> Option<OwnedSemaphorePermit> {
        match self.remote() {
            Some(r) => Some(r.cluster.permit().await),
            None => None,
        }
    }

    /// A publish in cluster mode: queued for Redis, answered once Redis assigned its
    /// offset. Delivery, here as on every node, comes back through the feed.
    pub(super) fn publish_remote(
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

    /// A reply to an inbox of another node: sent to that node's reply channel.
    pub(super) fn reply_remote(&self, inbox: &str, data: &str) -> Option<Published> {
        let remote = self.remote()?;
        let node = super::requests::node_of(inbox)?;
        if node == remote.cluster.node() {
            return None; // ours, and already closed: a late reply
        }
        let (tx, rx) = oneshot::channel();
        let bus = self.clone();
        let (node, inbox, data) = (node.to_owned(), inbox.to_owned(), data.to_owned());
        tokio::spawn(async move {
            let Some(remote) = bus.remote() else { return };
            let r = remote.cluster.reply(&node, &inbox, &data).await;
            let _ = tx.send(r.map_err(BusError::from).map(|heard| PubAck {
                offset: 0,
                epoch: "".into(),
                duplicate: false,
                delivered: usize::from(heard),
            }));
        });
        Some(Published::Pending(PendingAck::waiting(rx)))
    }

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

    /// Applies a message from the feed.
    async fn apply_message(&self, topic: &str, payload: &[u8]) {
        let Ok(topic) = Topic::parse(topic) else {
            return;
        };
        let record = match crate::cluster::wire::decode(&topic, payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, topic = topic.as_str(), "message from redis dropped");
                return;
            }
        };
        let entry = self.inner.topics.entry(&topic);
        let settings = entry.settings();
        let applied = {
            let mut state = entry.lock();
            self.apply_locked(&mut state, &settings, &record.event, record.retain, true)
        };
        if let Some(event) = applied {
            self.deliver_groups(&event, settings.ack_wait).await;
        }
    }

    /// Applies one message to a topic's mirror under its lock: drops it when its offset
    /// was applied already, else advances the offset, remembers it, updates the retained
    /// message and (with `fan_out`) hands it to local plain subscribers. Returns the event
    /// when it still has to go to groups.
    fn apply_locked(
        &self,
        state: &mut TopicState,
        settings: &crate::config::TopicConfig,
        event: &Arc<Event>,
        retain: Option<RetainOp>,
        fan_out: bool,
    ) -> Option<Arc<Event>> {
        self.follow_epoch(state, &event.topic, &event.epoch);
        if event.offset <= state.offset {
            return None;
        }
        state.offset = event.offset;
        state.last_publish = Instant::now();
        state.remember(event, settings);
        self.apply_retain(state, event, retain);
        if !fan_out {
            return None;
        }
        let n = self.fan_out_plain(event);
        self.inner
            .stats
            .delivered
            .fetch_add(n as u64, Ordering::Relaxed);
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
        let Some(remote) = self.remote() else { return };
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
    async fn warm(
        &self,
        topic: &Topic,
        history: bool,
        fresh_after_ms: u64,
    ) -> Result<(), BusError> {
        let Some(remote) = self.remote() else {
            return Ok(());
        };
        let entry = self.inner.topics.entry(topic);
        let settings = entry.settings();
        let tail = remote
            .cluster
            .tail(topic, history, settings.history_ttl)
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
            let fresh = e.ts >= fresh_after_ms;
            if let Some(e) = self.apply_locked(state, settings, e, None, fresh) {
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

    /// After the feed was lost and came back: applies what was published meanwhile to
    /// the topics local sessions subscribe to. Retried while Redis is still settling (the
    /// first commands on a connection that died with Redis fail before it reconnects).
    async fn catch_up(&self, lost_at_ms: u64) {
        let mut wait = Duration::from_millis(50);
        for _ in 0..20 {
            match self.try_catch_up(lost_at_ms).await {
                Ok(n) => {
                    tracing::info!(topics = n, "caught up after redis reconnect");
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "catch-up after reconnect; retrying"),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(1));
        }
        tracing::warn!("catch-up after redis reconnect gave up");
    }

    async fn try_catch_up(&self, lost_at_ms: u64) -> Result<usize, BusError> {
        let Some(remote) = self.remote() else {
            return Ok(0);
        };
        let known = remote.cluster.topics(false).await?;
        // Clock differences between nodes: look a little before the loss.
        let since = lost_at_ms.saturating_sub(1000);
        let mut n = 0;
        for name in known {
            let Ok(topic) = Topic::parse(&name) else {
                continue;
            };
            if self.has_subscribers(topic.as_str()) {
                self.warm(&topic, true, since).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Subscribes with every option of `sub`, in cluster mode making sure this node
    /// receives the pattern's messages and that replayed messages come from Redis. On a
    /// single node this is [`Bus::subscribe_with`].
    pub async fn subscribe_async(
        &self,
        session: &Arc<Session>,
        pattern: &str,
        opts: &SubOptions<'_>,
    ) -> Result<SubOutcome, BusError> {
        let Some(remote) = self.remote() else {
            return self.subscribe_with(session, pattern, opts);
        };
        let parsed = Pattern::parse(pattern)?;
        let replay = opts.since.is_some() || opts.rewind.is_some();
        // A watch of our own while we warm; `subscribe_with` takes the lasting one.
        let watched = remote
            .cluster
            .watch(parsed.as_str(), parsed.is_exact())
            .await;
        let result = async {
            if let Err(e) = watched {
                if replay {
                    return Err(BusError::from(e));
                }
            } else if opts.group.is_none() {
                let fresh = now_ms().saturating_sub(IN_FLIGHT.as_millis() as u64);
                let topics: Vec<Topic> = if parsed.is_exact() {
                    Topic::parse(parsed.as_str()).into_iter().collect()
                } else {
                    let only_retained = opts.rewind.is_none();
                    remote
                        .cluster
                        .topics(only_retained)
                        .await?
                        .iter()
                        .filter(|t| parsed.matches(t))
                        .filter_map(|t| Topic::parse(t).ok())
                        .collect()
                };
                for t in &topics {
                    match self.warm(t, replay, fresh).await {
                        Ok(()) => {}
                        Err(e) if replay => return Err(e),
                        Err(e) => tracing::debug!(error = %e, "retained message not fetched"),
                    }
                }
            }
            self.subscribe_with(session, pattern, opts)
        }
        .await;
        remote.cluster.unwatch(parsed.as_str(), parsed.is_exact());
        result
    }

    /// Keeps the node's Redis subscriptions in step with local ones.
    pub(super) fn watch_remote(&self, pattern: &Pattern, on: bool) {
        if let Some(r) = self.remote() {
            if on {
                r.cluster.watch_later(pattern.as_str(), pattern.is_exact());
            } else {
                r.cluster.unwatch(pattern.as_str(), pattern.is_exact());
            }
        }
    }

    /// A topic's history: from Redis in cluster mode, else [`Bus::history`].
    pub async fn history_async(
        &self,
        topic: &str,
        since: Option<u64>,
        limit: Option<u64>,
    ) -> Result<super::HistoryPage, BusError> {
        let Some(remote) = self.remote() else {
            return self.history(topic, since, limit);
        };
        let (topic, limit) = super::query::check_history(topic, limit)?;
        let ttl = self.inner.topics.settings_for(&topic).history_ttl;
        let (epoch, records) = remote
            .cluster
            .history(&topic, since, limit as usize, ttl)
            .await?;
        Ok(super::HistoryPage {
            epoch,
            messages: records.into_iter().map(|r| r.event).collect(),
        })
    }

    /// `GET /v1/topics`: in cluster mode every topic published to anywhere in the cluster,
    /// with its cluster-wide offset and epoch (from Redis); `subscribers` counts this node's,
    /// as the others' are theirs. Else [`Bus::topics`].
    pub async fn topics_async(
        &self,
        pattern: Option<&str>,
    ) -> Result<Vec<super::TopicRow>, BusError> {
        let Some(remote) = self.remote() else {
            return self.topics(pattern);
        };
        let pattern = pattern.map(crate::topic::Pattern::parse).transpose()?;
        let mut names = remote.cluster.topics(false).await?;
        names.retain(|t| pattern.as_ref().is_none_or(|p| p.matches(t)));
        names.sort_unstable();
        let meta = remote.cluster.offsets(&names).await?;
        Ok(names
            .into_iter()
            .zip(meta)
            .filter_map(|(topic, (offset, epoch))| {
                Some(super::TopicRow {
                    subscribers: self.inner.router.matches(&topic).len(),
                    offset: offset?,
                    epoch: epoch?,
                    topic,
                })
            })
            .collect())
    }

    /// A topic's members: from Redis in cluster mode, else [`Bus::presence`].
    pub async fn presence_async(&self, topic: &str) -> Result<super::PresenceList, BusError> {
        let Some(remote) = self.remote() else {
            return self.presence(topic);
        };
        let topic = Topic::parse(topic)?;
        let members = remote.cluster.presence(topic.as_str()).await?;
        let clients: Vec<crate::protocol::PresenceClient> = members
            .into_iter()
            .map(|m| crate::protocol::PresenceClient {
                session: m.session,
                user: m
                    .info
                    .get("user")
                    .and_then(|u| u.as_str())
                    .map(str::to_owned),
                info: m
                    .info
                    .get("info")
                    .cloned()
                    .unwrap_or(serde_json::Value::Null),
            })
            .collect();
        Ok(super::PresenceList {
            count: clients.len(),
            clients,
        })
    }

    /// Records a local presence join or leave in Redis.
    pub(super) fn presence_remote(&self, topic: &str, session: &Session, joined: bool) {
        let Some(remote) = self.remote() else { return };
        let _ = remote;
        let bus = self.clone();
        let topic = topic.to_owned();
        let id = session.id().to_string();
        let info = member_info(&session.identity());
        tokio::spawn(async move {
            let Some(remote) = bus.remote() else { return };
            let r = if joined {
                remote.cluster.presence_join(&topic, &[(id, info)]).await
            } else {
                remote.cluster.presence_leave(&topic, &id).await.map(|_| ())
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, "presence not recorded in redis");
            }
        });
    }

    fn announce_remote_leave(&self, topic: &str, m: &crate::cluster::RemoteMember) {
        let body = serde_json::json!({
            "event": "leave",
            "session": m.session,
            "user": m.info.get("user"),
            "info": m.info.get("info"),
        });
        let presence_topic = format!("$presence/{topic}");
        if let Err(e) = self.publish_json(&presence_topic, &body) {
            tracing::debug!(error = %e, topic = %presence_topic, "presence leave not published");
        }
    }
}
