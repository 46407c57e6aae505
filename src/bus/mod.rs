//! The in-process core: what WebSocket connections, the HTTP API and embedded Rust users all
//! call to publish and subscribe.
//!
//! A publish is: validate the topic → take the topic's lock → assign the next offset →
//! build the [`Event`] (its JSON encoded once) → look up matching sessions in the router →
//! push the shared event into each session's buffer. Pushing never blocks, so a publisher is
//! never slowed by a subscriber; writers drain the buffers on their own tasks.

mod backplane;
mod control;
mod error;
mod groups;
mod health;
mod inboxes;
mod observe;
mod occupancy;
mod persist;
mod presence;
mod publish;
mod query;
mod recover;
mod redeliver;
mod remote;
mod requests;
mod subscribe;
mod subscription;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use control::{
    Answer, Control, MAX_SESSION_ROWS, SessionRow, SubRow, Target, valid_disconnect_code,
};
pub use error::BusError;
pub use health::{DurableHealth, RedisHealth, StoreHealth};
pub use inboxes::INBOX_PREFIX;
pub use observe::{BusEvent, Observer};
pub use persist::{MAX_IN_FLIGHT, PendingAck, Published};
pub use publish::{PubAck, Publish};
pub use query::{HistoryPage, PresenceList};
pub use subscribe::{MAX_GROUP, SubOptions, SubOutcome};
pub use subscription::{Received, Subscription};

use crate::config::{Config, ConfigError};
use crate::reload::{Live, Reload, Settings};
use crate::router::Router;
use crate::session::{Registry, Session, SessionRef};
use crate::store::{MemoryStore, StoreError};
use crate::topic::Topic;
use backplane::Backplane;
use groups::{GroupRef, Groups, Pending};
use inboxes::Inboxes;
use occupancy::Occupancy;
use presence::Presence;

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
    /// The reloadable settings (see `crate::reload`): read through this handle, never cached.
    live: Live<Settings>,
    /// Serializes reloads (reads never wait for it).
    reloading: parking_lot::Mutex<()>,
    /// Plain subscriptions.
    router: Router<SessionRef>,
    /// Queue groups: one entry per (pattern, group name), not per member.
    group_router: Router<GroupRef>,
    groups: Groups,
    /// Manual-ack group messages awaiting their `ack`.
    pending: Pending,
    presence: Presence,
    /// Subscriptions per pattern on this node (`topic.occupied` and `topic.vacated`).
    occupancy: Occupancy,
    inboxes: Inboxes,
    sessions: Registry,
    topics: MemoryStore,
    /// The durable store of persisted topics (with a data directory).
    durable: Option<persist::Persistence>,
    /// Topics holding a retained message: a new wildcard subscription looks only at these.
    retained: dashmap::DashSet<Topic>,
    /// Local, or Redis in cluster mode (`--redis`).
    backplane: Backplane,
    /// Cluster mode: topics this node recorded in Redis's topic set already.
    noted: dashmap::DashSet<Topic>,
    /// Users whose older tokens are refused (`POST /v1/revoke`).
    revocations: control::Revocations,
    /// Who hears about sessions and topics (the webhooks); `None`: nobody.
    observer: arc_swap::ArcSwapOption<Arc<dyn Observer>>,
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
    /// Publishes answered `duplicate: true`.
    pub duplicates: AtomicU64,
    /// Group messages redelivered after `ack_wait`.
    pub redelivered: AtomicU64,
    /// Group messages sent to `$dlq/…` after `max_deliveries`.
    pub dead_lettered: AtomicU64,
    /// Requests answered, timed out, or without responders.
    pub requests: AtomicU64,
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
    /// A bus for `config`.
    ///
    /// # Panics
    /// When `config.data_dir` is set and the durable store there cannot be opened; use
    /// [`Bus::open`] to get that as an error.
    pub fn new(config: Config) -> Bus {
        match Self::open(config) {
            Ok(bus) => bus,
            Err(e) => panic!("{e}"),
        }
    }

    /// A bus for `config`, opening and recovering the durable store when `config.data_dir`
    /// is set (every persisted topic's epoch, offset, history and retained message come
    /// back before this returns).
    pub fn open(config: Config) -> Result<Bus, StoreError> {
        let durable_dir = config.data_dir.clone();
        let redis = config.cluster.as_ref().map(|c| c.redis.clone());
        if redis.is_some() && tokio::runtime::Handle::try_current().is_err() {
            return Err(StoreError::Cluster(
                "cluster mode needs a Tokio runtime: open the bus inside one".into(),
            ));
        }
        let live = Live::new(Settings::compile_lenient(config));
        let rules = live.clone();
        let settings = move |topic: &Topic| rules.load().topic(topic);
        let mut topics = MemoryStore::with_settings(Box::new(settings));
        if durable_dir.is_some() {
            topics = topics.keep_persisted();
        }
        let retained = dashmap::DashSet::new();
        let mut opened: Result<(), StoreError> = Ok(());
        let inner = Arc::new_cyclic(|weak| {
            let durable = persist::open(durable_dir.as_deref(), &topics, &retained, weak.clone())
                .unwrap_or_else(|e| {
                    opened = Err(e);
                    None
                });
            let backplane = Backplane::start(redis.as_deref()).unwrap_or_else(|e| {
                opened = Err(StoreError::Cluster(e.to_string()));
                Backplane::Local
            });
            let inboxes = match backplane.node() {
                Some(node) => Inboxes::for_node(node.into()),
                None => Inboxes::default(),
            };
            Inner {
                live,
                reloading: parking_lot::Mutex::new(()),
                router: Router::new(),
                group_router: Router::new(),
                groups: Groups::default(),
                pending: Pending::default(),
                presence: Presence::default(),
                occupancy: Occupancy::default(),
                inboxes,
                sessions: Registry::new(),
                topics,
                durable,
                retained,
                backplane,
                noted: dashmap::DashSet::new(),
                revocations: control::Revocations::default(),
                observer: arc_swap::ArcSwapOption::empty(),
                stats: Stats::default(),
            }
        });
        let bus = opened.map(|()| Bus { inner })?;
        bus.inner.backplane.run(&bus);
        Ok(bus)
    }

    /// The configuration in effect (it changes on reload: read it when needed, don't keep it).
    pub fn config(&self) -> Arc<Config> {
        self.inner.live.load().config.clone()
    }

    /// `limits.publish_rate` in effect (read at every publish: no reference count taken).
    pub fn publish_rate(&self) -> u32 {
        self.inner.live.load().config.limits.publish_rate
    }

    /// The reloadable settings in effect.
    pub fn settings(&self) -> Arc<Settings> {
        self.inner.live.get()
    }

    /// Replaces the settings with those of `wanted` while everything keeps running (see
    /// `crate::reload` for what takes effect when). On an error nothing changes.
    pub fn reload(&self, wanted: Config) -> Result<Reload, ConfigError> {
        let _one_at_a_time = self.inner.reloading.lock();
        let current = self.config();
        let (settings, report) = crate::reload::plan(&current, wanted)?;
        self.inner.live.store(settings);
        // Topics already known resolve their `[[topics]]` settings again.
        self.inner.topics.refresh_settings();
        Ok(report)
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Subscribes from inside the process: a session of its own, drained by the returned
    /// [`Subscription`].
    pub async fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError> {
        let session = self.open_session();
        if let Err(e) = self.subscribe_session(&session, pattern, None).await {
            self.close_session(&session);
            return Err(e);
        }
        Ok(Subscription::new(self.clone(), session))
    }

    /// A new registered session.
    pub fn open_session(&self) -> Arc<Session> {
        let s = Arc::new(Session::new(self.inner.live.load().session));
        self.inner.sessions.insert(s.clone());
        s
    }

    /// The live session with this id (for a resume).
    pub fn find_session(&self, id: &str) -> Option<Arc<Session>> {
        self.inner.sessions.get(id)
    }

    /// Ends a session now: unregisters it, drops its subscriptions and frees its buffer.
    pub fn close_session(&self, session: &Arc<Session>) {
        self.inner.sessions.remove(session.id());
        self.drop_session(session);
        self.session_closed(session, "closed");
    }

    /// Expires sessions detached for longer than the TTL, redelivers unacked group
    /// messages past their `ack_wait`; returns how many sessions expired.
    pub fn reap(&self) -> usize {
        let expired = self
            .inner
            .sessions
            .take_expired(self.inner.live.load().config.session.ttl);
        for s in &expired {
            self.drop_session(s);
            self.session_closed(s, "expired");
        }
        self.redeliver_due();
        self.inner.topics.forget_idle(TOPIC_IDLE);
        self.prune_revocations();
        expired.len()
    }

    /// Runs [`Bus::reap`] periodically until `cancel` fires.
    pub fn spawn_maintenance(&self, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        let bus = self.clone();
        let settings = self.settings();
        let shortest_ack_wait = settings.shortest_ack_wait();
        let every = (settings.config.session.ttl / 4)
            .min(shortest_ack_wait / 4)
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

    /// Whether this node is in cluster mode.
    pub fn is_clustered(&self) -> bool {
        self.inner.backplane.is_clustered()
    }

    /// Ready to serve: always for a single node; in cluster mode, while the feed is
    /// connected to Redis.
    pub fn is_ready(&self) -> bool {
        self.inner.backplane.is_up()
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        self.inner.sessions.len()
    }

    /// Number of (pattern, session) subscriptions, groups counted once each.
    pub fn subscription_count(&self) -> usize {
        self.inner.router.len() + self.inner.group_router.len()
    }

    /// Number of known topics.
    pub fn topic_count(&self) -> usize {
        self.inner.topics.len()
    }

    /// Queue groups with at least one member.
    pub fn group_count(&self) -> usize {
        self.inner.groups.len()
    }

    /// Manual-ack group messages not acknowledged yet.
    pub fn unacked_count(&self) -> usize {
        self.inner.pending.len()
    }

    /// Requests waiting for a reply.
    pub fn pending_requests(&self) -> usize {
        self.inner.inboxes.len()
    }

    /// Replies lost because the requester's control queue was full (it stopped reading).
    pub fn replies_dropped(&self) -> u64 {
        self.inner.inboxes.replies_dropped()
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
