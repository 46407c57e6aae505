//! The health of what backs the bus — the durable store, the Redis connection — as the
//! metrics report it (`herald_store_*`, `herald_redis_*`). Read at scrape time.

use super::Bus;
use crate::store::{FILE_NAME, Health};

/// Where messages live, and whether that place answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreHealth {
    /// `memory` (the default), `redb` (with `--data-dir`) or `redis` (cluster mode, where
    /// offsets, history and retained messages live in Redis).
    pub backend: &'static str,
    /// Whether the backend accepts writes now.
    pub up: bool,
    pub durable: Option<DurableHealth>,
    pub redis: Option<RedisHealth>,
}

/// The durable store of persisted topics (`--data-dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableHealth {
    pub committer: Health,
    /// Size of the store's file on disk (`None` when it cannot be read).
    pub file_bytes: Option<u64>,
}

/// The connection to Redis (cluster mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisHealth {
    /// The pub/sub feed is connected (what `/readyz` reports too).
    pub connected: bool,
    /// Times the feed came back after losing Redis.
    pub reconnects: u64,
    /// Times this node, lagging behind its feed, asked the cluster to hold publishes.
    pub holds_asked: u64,
    /// Publishes of this node that waited for a lagging node's hold.
    pub publishes_held: u64,
    /// Time they waited, summed.
    pub held_for: std::time::Duration,
}

impl Bus {
    /// The store's and Redis's health now.
    pub fn store_health(&self) -> StoreHealth {
        let durable = self.inner.durable.as_ref().map(|p| DurableHealth {
            committer: p.committer.health(),
            file_bytes: self
                .config()
                .data_dir
                .as_ref()
                .and_then(|dir| std::fs::metadata(dir.join(FILE_NAME)).ok().map(|m| m.len())),
        });
        let redis = self.inner.backplane.health();
        let (backend, up) = match (&redis, &durable) {
            (Some(r), _) => ("redis", r.connected),
            (None, Some(d)) => ("redb", d.committer.up),
            (None, None) => ("memory", true),
        };
        StoreHealth {
            backend,
            up,
            durable,
            redis,
        }
    }
}
