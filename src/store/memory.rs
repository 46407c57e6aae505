//! The in-memory topic table: offsets, epochs, history, retained messages and the
//! de-duplication window of every topic (PROTOCOL.md §5).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use parking_lot::{Mutex, MutexGuard};

use crate::config::TopicConfig;
use crate::event::Event;
use crate::topic::Topic;

/// Bound on remembered `msg_id`s per topic, whatever the window: a publisher sending unique
/// ids as fast as it can must not grow memory without limit. Past it, the oldest ids are
/// forgotten early (a late duplicate of one of them would be delivered again).
pub const DEDUP_MAX_IDS: usize = 100_000;

/// One topic's state. The publish path holds [`TopicEntry::lock`] while it assigns an
/// offset and fans the message out, so every subscriber sees a topic's offsets in order
/// even with several concurrent publishers.
#[derive(Debug)]
pub struct TopicEntry {
    /// The `[[topics]]` settings that apply (first matching entry, or the defaults).
    /// Swappable: a configuration reload re-resolves them ([`MemoryStore::refresh_settings`]).
    settings: arc_swap::ArcSwap<TopicConfig>,
    state: Mutex<TopicState>,
}

#[derive(Debug)]
pub struct TopicState {
    pub epoch: Arc<str>,
    /// Offset of the last published message (0: none yet).
    pub offset: u64,
    /// Offset of the last message handed to subscribers: behind `offset` while the messages
    /// after it wait for the disk (a persisted topic), which are then delivered, not lost.
    pub delivered: u64,
    pub last_publish: Instant,
    /// The newest messages, oldest first, at most `settings.history`.
    pub history: VecDeque<Arc<Event>>,
    /// The last message published with `retain: true` (cleared by a retained `null`).
    pub retained: Option<Arc<Event>>,
    pub dedup: Dedup,
}

/// `msg_id`s seen within the window, with the offset each was first published at.
#[derive(Debug, Default)]
pub struct Dedup {
    ids: HashMap<Box<str>, u64>,
    order: VecDeque<(Instant, Box<str>)>,
}

impl Dedup {
    /// The offset `id` was first published at, if within `window`.
    pub fn check(&mut self, id: &str, window: Duration, now: Instant) -> Option<u64> {
        self.expire(window, now);
        self.ids.get(id).copied()
    }

    pub fn record(&mut self, id: &str, offset: u64, now: Instant) {
        if self.ids.insert(id.into(), offset).is_none() {
            self.order.push_back((now, id.into()));
        }
        while self.order.len() > DEDUP_MAX_IDS {
            if let Some((_, old)) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }

    fn expire(&mut self, window: Duration, now: Instant) {
        while let Some((t, _)) = self.order.front() {
            if now.duration_since(*t) < window {
                break;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

impl TopicState {
    /// Appends to the history (when the topic keeps one) and trims it by count and age.
    /// Called for every message as it is delivered, so it also advances `delivered`.
    pub fn remember(&mut self, event: &Arc<Event>, settings: &TopicConfig) {
        self.delivered = self.delivered.max(event.offset);
        if settings.history == 0 {
            return;
        }
        self.history.push_back(event.clone());
        while self.history.len() > settings.history {
            self.history.pop_front();
        }
        self.trim_by_age(settings, event.ts);
    }

    /// Drops history older than `history_ttl` (relative to `now_ms`).
    pub fn trim_by_age(&mut self, settings: &TopicConfig, now_ms: u64) {
        if let Some(ttl) = settings.history_ttl {
            let oldest = now_ms.saturating_sub(ttl.as_millis() as u64);
            while self.history.front().is_some_and(|e| e.ts < oldest) {
                self.history.pop_front();
            }
        }
    }

    /// Held messages with an offset above `after`, oldest first, at most `limit`.
    pub fn after(&self, after: u64, limit: usize) -> Vec<Arc<Event>> {
        // Offsets in the history are consecutive: index straight to the first one wanted.
        let Some(first) = self.history.front().map(|e| e.offset) else {
            return Vec::new();
        };
        let skip = after.saturating_add(1).saturating_sub(first) as usize;
        self.history
            .iter()
            .skip(skip)
            .take(limit)
            .cloned()
            .collect()
    }

    /// The newest `n` held messages, oldest first.
    pub fn latest(&self, n: usize) -> Vec<Arc<Event>> {
        let skip = self.history.len().saturating_sub(n);
        self.history.iter().skip(skip).cloned().collect()
    }

    /// Whether every message after `offset` (in this epoch) is still held.
    pub fn holds_after(&self, offset: u64) -> bool {
        if offset >= self.offset {
            return offset == self.offset;
        }
        self.history.front().is_some_and(|e| e.offset <= offset + 1)
    }
}

impl TopicEntry {
    pub fn lock(&self) -> MutexGuard<'_, TopicState> {
        self.state.lock()
    }

    /// The `[[topics]]` settings in effect for this topic.
    pub fn settings(&self) -> Arc<TopicConfig> {
        self.settings.load_full()
    }
}

/// A row of `GET /v1/topics`.
#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub topic: Topic,
    pub offset: u64,
    pub epoch: Arc<str>,
}

/// Maps a topic to the settings of the first `[[topics]]` entry whose pattern matches it.
pub type SettingsFn = dyn Fn(&Topic) -> Arc<TopicConfig> + Send + Sync;

pub struct MemoryStore {
    topics: DashMap<Topic, Arc<TopicEntry>>,
    settings: Box<SettingsFn>,
    /// Persisted topics that have been published to are never forgotten: forgetting one
    /// would start it a new epoch while its history is still on disk.
    keep_persisted: bool,
    /// Read while a topic is created, written by [`MemoryStore::hold_creation`].
    creation: parking_lot::RwLock<()>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("topics", &self.topics.len())
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        let defaults = Arc::new(TopicConfig::default());
        Self::with_settings(Box::new(move |_| defaults.clone()))
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_settings(settings: Box<SettingsFn>) -> Self {
        MemoryStore {
            topics: DashMap::new(),
            settings,
            keep_persisted: false,
            creation: parking_lot::RwLock::new(()),
        }
    }

    /// Marks this table as backed by a durable store (see the `keep_persisted` field).
    pub fn keep_persisted(mut self) -> Self {
        self.keep_persisted = true;
        self
    }

    /// The settings that apply to `topic`.
    pub fn settings_for(&self, topic: &Topic) -> Arc<TopicConfig> {
        (self.settings)(topic)
    }

    /// Puts a topic recovered from the durable store back, with its epoch, offset, history
    /// and retained message, before anything else uses it.
    pub fn restore(&self, r: super::Recovered) -> Arc<TopicEntry> {
        let settings = (self.settings)(&r.topic);
        let entry = Arc::new(TopicEntry {
            settings: arc_swap::ArcSwap::new(settings),
            state: Mutex::new(TopicState {
                epoch: r.epoch,
                offset: r.offset,
                delivered: r.offset,
                last_publish: Instant::now(),
                history: r.history.into(),
                retained: r.retained,
                dedup: Dedup::default(),
            }),
        });
        self.topics.insert(r.topic, entry.clone());
        entry
    }

    /// The topic's entry, created (offset 0, new epoch) on first use.
    pub fn entry(&self, topic: &Topic) -> Arc<TopicEntry> {
        if let Some(e) = self.topics.get(topic) {
            return e.value().clone();
        }
        let _may_create = self.creation.read();
        let settings = (self.settings)(topic);
        self.topics
            .entry(topic.clone())
            .or_insert_with(|| {
                Arc::new(TopicEntry {
                    settings: arc_swap::ArcSwap::new(settings),
                    state: Mutex::new(TopicState {
                        epoch: super::new_epoch(),
                        offset: 0,
                        delivered: 0,
                        last_publish: Instant::now(),
                        history: VecDeque::new(),
                        retained: None,
                        dedup: Dedup::default(),
                    }),
                })
            })
            .value()
            .clone()
    }

    /// Holds off the creation of topics until the guard is dropped: a wildcard subscription
    /// that replays every matching topic holds it while it gathers and locks them, so that no
    /// topic appears in between. Never take it while holding a topic lock, nor create a
    /// topic while holding a topic lock (nothing does either).
    pub fn hold_creation(&self) -> parking_lot::RwLockWriteGuard<'_, ()> {
        self.creation.write()
    }

    /// Resolves every known topic's settings again (after a configuration reload); topics
    /// met later resolve theirs when first used. History above a lowered `history` is trimmed
    /// at the topic's next publish.
    pub fn refresh_settings(&self) {
        for e in self.topics.iter() {
            e.value().settings.store((self.settings)(e.key()));
        }
    }

    /// The entry of a topic that has been used, without creating one.
    pub fn existing(&self, topic: &str) -> Option<Arc<TopicEntry>> {
        self.topics.get(topic).map(|e| e.value().clone())
    }

    /// The topic's current offset and epoch, if it has been published to.
    pub fn get(&self, topic: &str) -> Option<TopicInfo> {
        let e = self.topics.get(topic)?;
        let s = e.value().lock();
        Some(TopicInfo {
            topic: e.key().clone(),
            offset: s.offset,
            epoch: s.epoch.clone(),
        })
    }

    /// Every known topic with its entry, sorted by name.
    pub fn entries(&self) -> Vec<(Topic, Arc<TopicEntry>)> {
        let mut v: Vec<(Topic, Arc<TopicEntry>)> = self
            .topics
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        v.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        v
    }

    /// Every known topic, sorted by name.
    pub fn list(&self) -> Vec<TopicInfo> {
        self.entries()
            .into_iter()
            .map(|(topic, e)| {
                let s = e.lock();
                TopicInfo {
                    topic,
                    offset: s.offset,
                    epoch: s.epoch.clone(),
                }
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.topics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// Forgets topics not published to for `idle` that hold nothing (no history, no
    /// retained message, no live de-duplication ids) and are not in use right now, so that
    /// publishing to ever-new topic names cannot grow memory without bound. A forgotten
    /// topic that is published to again starts a new epoch. Also trims history by age.
    pub fn forget_idle(&self, idle: Duration) -> usize {
        let now = Instant::now();
        let now_ms = crate::event::now_ms();
        let before = self.topics.len();
        self.topics.retain(|_, e| {
            if Arc::strong_count(e) > 1 {
                return true;
            }
            let mut s = e.lock();
            let settings = e.settings();
            s.trim_by_age(&settings, now_ms);
            s.dedup.expire(settings.dedup_window, now);
            now.duration_since(s.last_publish) < idle
                || (self.keep_persisted && settings.persist && s.offset > 0)
                || !s.history.is_empty()
                || s.retained.is_some()
                || !s.dedup.is_empty()
        });
        before - self.topics.len()
    }
}
