//! The in-memory topic table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use parking_lot::{Mutex, MutexGuard};

use crate::topic::Topic;

/// One topic's state. The publish path holds [`TopicEntry::lock`] while it assigns an
/// offset and fans the message out, so every subscriber sees a topic's offsets in order
/// even with several concurrent publishers.
#[derive(Debug)]
pub struct TopicEntry {
    state: Mutex<TopicState>,
}

#[derive(Debug)]
pub struct TopicState {
    pub epoch: Arc<str>,
    /// Offset of the last published message (0: none yet).
    pub offset: u64,
    pub last_publish: Instant,
}

impl TopicEntry {
    pub fn lock(&self) -> MutexGuard<'_, TopicState> {
        self.state.lock()
    }
}

/// A row of `GET /v1/topics`.
#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub topic: Topic,
    pub offset: u64,
    pub epoch: Arc<str>,
}

#[derive(Debug, Default)]
pub struct MemoryStore {
    topics: DashMap<Topic, Arc<TopicEntry>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The topic's entry, created (offset 0, new epoch) on first use.
    pub fn entry(&self, topic: &Topic) -> Arc<TopicEntry> {
        if let Some(e) = self.topics.get(topic) {
            return e.value().clone();
        }
        self.topics
            .entry(topic.clone())
            .or_insert_with(|| {
                Arc::new(TopicEntry {
                    state: Mutex::new(TopicState {
                        epoch: super::new_epoch(),
                        offset: 0,
                        last_publish: Instant::now(),
                    }),
                })
            })
            .value()
            .clone()
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

    /// Every known topic, sorted by name.
    pub fn list(&self) -> Vec<TopicInfo> {
        let mut v: Vec<TopicInfo> = self
            .topics
            .iter()
            .map(|e| {
                let s = e.value().lock();
                TopicInfo {
                    topic: e.key().clone(),
                    offset: s.offset,
                    epoch: s.epoch.clone(),
                }
            })
            .collect();
        v.sort_by(|a, b| a.topic.as_str().cmp(b.topic.as_str()));
        v
    }

    pub fn len(&self) -> usize {
        self.topics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// Forgets topics not published to for `idle` (and not in use right now), so that
    /// publishing to ever-new topic names cannot grow memory without bound. A forgotten
    /// topic that is published to again starts a new epoch.
    pub fn forget_idle(&self, idle: Duration) -> usize {
        let now = Instant::now();
        let before = self.topics.len();
        self.topics.retain(|_, e| {
            Arc::strong_count(e) > 1 || now.duration_since(e.lock().last_publish) < idle
        });
        before - self.topics.len()
    }
}
