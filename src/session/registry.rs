//! All live sessions by id, for resume and for the TTL reaper.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::Session;

#[derive(Debug, Default)]
pub struct Registry {
    map: DashMap<Arc<str>, Arc<Session>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&self, session: Arc<Session>) {
        self.map.insert(session.id().clone(), session);
    }

    /// The live session with this id, if any.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.map
            .get(id)
            .map(|s| s.value().clone())
            .filter(|s| !s.is_closed())
    }

    pub fn remove(&self, id: &str) -> Option<Arc<Session>> {
        self.map.remove(id).map(|(_, s)| s)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Removes and returns every session detached for at least `ttl`.
    pub fn take_expired(&self, ttl: Duration) -> Vec<Arc<Session>> {
        let now = Instant::now();
        let ids: Vec<Arc<str>> = self
            .map
            .iter()
            .filter(|e| e.value().expired(now, ttl))
            .map(|e| e.key().clone())
            .collect();
        ids.iter()
            .filter_map(|id| self.map.remove_if(id, |_, s| s.expired(now, ttl)))
            .map(|(_, s)| s)
            .collect()
    }

    /// Visits every session (for stats).
    pub fn for_each(&self, mut f: impl FnMut(&Arc<Session>)) {
        for e in self.map.iter() {
            f(e.value());
        }
    }
}
