//! The in-process core: what WebSocket connections, the HTTP API and embedded Rust users all
//! call to publish and subscribe.
//!
//! A publish is: validate the topic → take the topic's lock → assign the next offset →
//! build the [`Event`] (its JSON encoded once) → look up matching sessions in the router →
//! push the shared event into each session's buffer. Pushing never blocks, so a publisher is
//! never slowed by a subscriber; writers drain the buffers on their own tasks.

mod error;
mod subscription;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

pub use error::BusError;
pub use subscription::{Received, Subscription};

use crate::config::Config;
use crate::event::{Delivery, Event, EventParts, now_ms};
use crate::router::Router;
use crate::session::{self, Registry, Session, SessionRef, SubKey};
use crate::store::{MemoryStore, TopicInfo};
use crate::topic::{Pattern, Topic};

/// Longest accepted `msg_id`.
pub const MAX_MSG_ID: usize = 256;

/// Topics not published to for this long are forgotten (their next publish starts a new
/// epoch). Keeps memory bounded when clients publish to ever-new topic names.
const TOPIC_IDLE: Duration = Duration::from_secs(600);

/// A cheap-to-clone handle on the bus.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    limits: session::Limits,
    router: Router<SessionRef>,
    sessions: Registry,
    topics: MemoryStore,
    stats: Stats,
}

/// Counters since start. Gauges (connections) are kept by the server.
#[derive(Debug, Default)]
pub struct Stats {
    pub published: AtomicU64,
    pub delivered: AtomicU64,
    /// Unsent messages dropped from full session buffers (reported as gaps).
    pub dropped: AtomicU64,
    /// Connections closed with 4008 as slow consumers.
    pub slow_consumers: AtomicU64,
    /// Open WebSocket connections.
    pub connections: AtomicU64,
}

/// A publish as every transport hands it to the bus.
#[derive(Debug, Clone, Copy)]
pub struct Publish<'a> {
    pub topic: &'a str,
    /// Valid JSON.
    pub data: &'a RawValue,
    pub msg_id: Option<&'a str>,
    pub retain: bool,
}

/// The answer to a publish (`ok {offset, epoch, duplicate}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubAck {
    pub offset: u64,
    pub epoch: Arc<str>,
    pub duplicate: bool,
    /// Sessions the message was handed to.
    pub delivered: usize,
}

/// A row of `GET /v1/topics`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TopicRow {
    pub topic: String,
    pub subscribers: usize,
    pub offset: u64,
    pub epoch: String,
}

impl Bus {
    pub fn new(config: Config) -> Bus {
        let limits = session::Limits {
            buffer_messages: config.session.buffer_messages,
            buffer_bytes: config.session.buffer_bytes,
            slow_consumer: config.session.slow_consumer,
            max_subscriptions: config.limits.max_subscriptions,
        };
        Bus {
            inner: Arc::new(Inner {
                config,
                limits,
                router: Router::new(),
                sessions: Registry::new(),
                topics: MemoryStore::new(),
                stats: Stats::default(),
            }),
        }
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Publishes a message. Any topic is allowed, system topics included: this is the
    /// embedder's own call. Transports use [`Bus::publish_as_client`].
    pub fn publish(&self, p: Publish<'_>) -> Result<PubAck, BusError> {
        let topic = Topic::parse(p.topic)?;
        if let Some(id) = p.msg_id
            && id.len() > MAX_MSG_ID
        {
            return Err(BusError::BadRequest(format!(
                "'msg_id' is longer than {MAX_MSG_ID} bytes"
            )));
        }
        if p.retain {
            return Err(BusError::NotSupported("'retain'"));
        }
        let entry = self.inner.topics.entry(&topic);
        let mut state = entry.lock();
        state.offset += 1;
        state.last_publish = std::time::Instant::now();
        let event = Arc::new(Event::new(
            EventParts {
                topic,
                data: p.data.get(),
                msg_id: p.msg_id,
                reply_to: None,
            },
            state.offset,
            state.epoch.clone(),
            now_ms(),
        ));
        let delivered = self.fan_out(&event);
        let ack = PubAck {
            offset: state.offset,
            epoch: state.epoch.clone(),
            duplicate: false,
            delivered,
        };
        drop(state);
        let stats = &self.inner.stats;
        stats.published.fetch_add(1, Ordering::Relaxed);
        stats
            .delivered
            .fetch_add(delivered as u64, Ordering::Relaxed);
        Ok(ack)
    }

    /// Publishes on behalf of a client: system topics (`$…`) are refused (PROTOCOL.md §1).
    pub fn publish_as_client(&self, p: Publish<'_>) -> Result<PubAck, BusError> {
        if p.topic.starts_with('$') {
            crate::topic::validate_topic(p.topic)?;
            return Err(BusError::Forbidden(format!(
                "clients may not publish to system topic '{}'",
                p.topic
            )));
        }
        self.publish(p)
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

    fn fan_out(&self, event: &Arc<Event>) -> usize {
        let targets = self.inner.router.matches(event.topic.as_str());
        let mut dropped = 0u64;
        let mut kicked = 0u64;
        for s in targets.iter() {
            let r = s.0.push(event, Delivery::LIVE);
            dropped += u64::from(r.dropped_unsent);
            kicked += u64::from(r.kicked);
        }
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
        targets.len()
    }

    /// Subscribes from inside the process: a session of its own, drained by the returned
    /// [`Subscription`].
    pub fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError> {
        let session = self.open_session();
        if let Err(e) = self.subscribe_session(&session, pattern, None) {
            self.close_session(&session);
            return Err(e);
        }
        Ok(Subscription::new(self.clone(), session))
    }

    /// A new registered session.
    pub fn open_session(&self) -> Arc<Session> {
        let s = Arc::new(Session::new(self.inner.limits));
        self.inner.sessions.insert(s.clone());
        s
    }

    /// The live session with this id (for a resume).
    pub fn find_session(&self, id: &str) -> Option<Arc<Session>> {
        self.inner.sessions.get(id)
    }

    /// Adds a subscription to a session. `Ok(true)` if new, `Ok(false)` if it existed.
    pub fn subscribe_session(
        &self,
        session: &Arc<Session>,
        pattern: &str,
        group: Option<&str>,
    ) -> Result<bool, BusError> {
        let pattern = Pattern::parse(pattern)?;
        if group.is_some() {
            return Err(BusError::NotSupported("subscribing with a 'group'"));
        }
        let key = SubKey {
            pattern: pattern.as_str().into(),
            group: None,
        };
        match session.add_sub(key, pattern.clone()) {
            Err(max) => Err(BusError::TooManySubscriptions(max)),
            Ok(false) => Ok(false),
            Ok(true) => {
                self.inner
                    .router
                    .insert(&pattern, SessionRef(session.clone()));
                Ok(true)
            }
        }
    }

    /// Removes a subscription (no error when it did not exist).
    pub fn unsubscribe_session(
        &self,
        session: &Arc<Session>,
        pattern: &str,
        group: Option<&str>,
    ) -> Result<(), BusError> {
        let parsed = Pattern::parse(pattern)?;
        let key = SubKey {
            pattern: parsed.as_str().into(),
            group: group.map(Into::into),
        };
        if let Some(p) = session.remove_sub(&key) {
            self.inner.router.remove(&p, &SessionRef(session.clone()));
        }
        Ok(())
    }

    /// Ends a session now: unregisters it, drops its subscriptions and frees its buffer.
    pub fn close_session(&self, session: &Arc<Session>) {
        self.inner.sessions.remove(session.id());
        self.drop_session(session);
    }

    fn drop_session(&self, session: &Arc<Session>) {
        let r = SessionRef(session.clone());
        for (_, pattern) in session.close() {
            self.inner.router.remove(&pattern, &r);
        }
    }

    /// Expires sessions detached for longer than the TTL; returns how many.
    pub fn reap(&self) -> usize {
        let expired = self
            .inner
            .sessions
            .take_expired(self.inner.config.session.ttl);
        for s in &expired {
            self.drop_session(s);
        }
        self.inner.topics.forget_idle(TOPIC_IDLE);
        expired.len()
    }

    /// Runs [`Bus::reap`] periodically until `cancel` fires.
    pub fn spawn_maintenance(&self, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        let bus = self.clone();
        let every = (self.inner.config.session.ttl / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => {
                        let n = bus.reap();
                        if n > 0 {
                            tracing::debug!(expired = n, "sessions expired");
                        }
                    }
                }
            }
        })
    }

    /// Known topics matching `pattern` (all when `None`), with their subscriber counts.
    pub fn topics(&self, pattern: Option<&str>) -> Result<Vec<TopicRow>, BusError> {
        let pattern = pattern.map(Pattern::parse).transpose()?;
        Ok(self
            .inner
            .topics
            .list()
            .into_iter()
            .filter(|t: &TopicInfo| pattern.as_ref().is_none_or(|p| p.matches(t.topic.as_str())))
            .map(|t| TopicRow {
                subscribers: self.inner.router.matches(t.topic.as_str()).len(),
                topic: t.topic.as_str().to_owned(),
                offset: t.offset,
                epoch: t.epoch.to_string(),
            })
            .collect())
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        self.inner.sessions.len()
    }

    /// Number of (pattern, session) subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.inner.router.len()
    }

    /// Number of known topics.
    pub fn topic_count(&self) -> usize {
        self.inner.topics.len()
    }

    /// Buffer occupancy over all sessions: (messages held, bytes held, unsent messages).
    pub fn buffer_usage(&self) -> (usize, usize, u64) {
        let mut total = (0, 0, 0);
        self.inner.sessions.for_each(|s| {
            let (n, b, u) = s.usage();
            total.0 += n;
            total.1 += b;
            total.2 += u;
        });
        total
    }
}
