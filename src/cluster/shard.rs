//! Shards: `redis = ["redis://a", "redis://b", …]` spreads topics over that many Redis
//! servers by a hash of the topic name, so publishes, history, offsets, de-duplication
//! and presence of a topic all live on its shard and throughput grows with shards.
//!
//! Each shard has its own publish pipeline, feed and connection for reads. What is not a
//! topic's (node replies, control commands, revocations, occupancy, claims, node
//! liveness) lives on the first shard. A node's exact subscriptions are watched on their
//! topic's shard only; a wildcard may match topics of every shard, so it is watched on all.
//!
//! Invariant: every node lists the same servers in the same order (the hash picks by
//! position); a topic's offsets are ordered by its one shard, as with a single Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::error::ClusterError;
use super::feed::{self, Incoming};
use super::slowdown::Slowdown;
use super::{publisher, resp, wire};

/// One Redis server's share of the cluster.
pub(super) struct Shard {
    /// Reads and the rare commands (redis-rs, reconnecting by itself).
    pub conn: ConnectionManager,
    pub publisher: mpsc::UnboundedSender<publisher::Job>,
    pub feed: mpsc::UnboundedSender<feed::Command>,
    pub up: Arc<AtomicBool>,
    pub reconnects: Arc<AtomicU64>,
}

impl Shard {
    /// Connects lazily (a Redis that is down now is retried in the background). The first
    /// shard's feed also carries the node's own channels (`global`).
    pub fn start(
        url: &str,
        node: &Arc<str>,
        global: bool,
        incoming: mpsc::Sender<Incoming>,
        slowdown: &Arc<Slowdown>,
        cancel: &CancellationToken,
    ) -> Result<Shard, ClusterError> {
        let client = redis::Client::open(url).map_err(|e| ClusterError::Url {
            url: url.to_owned(),
            message: e.to_string(),
        })?;
        let endpoint = resp::Endpoint::parse(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        let (feed_tx, feed_rx) = mpsc::unbounded_channel();
        let up = Arc::new(AtomicBool::new(false));
        let reconnects = Arc::new(AtomicU64::new(0));
        tokio::spawn(
            feed::Feed {
                at: endpoint.clone(),
                node: node.clone(),
                global,
                up: up.clone(),
                slowdown: slowdown.clone(),
                reconnects: reconnects.clone(),
                incoming,
                commands: feed_rx,
                cancel: cancel.clone(),
            }
            .run(),
        );
        Ok(Shard {
            conn,
            publisher: publisher::spawn(endpoint, wire::PUBLISH_SCRIPT, cancel.clone()),
            feed: feed_tx,
            up,
            reconnects,
        })
    }
}

/// The shard of `topic` among `n` (FNV-1a: stable across nodes, versions and platforms).
pub fn shard_of(topic: &str, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let h = topic.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (h % n as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_topics_and_stays_put() {
        assert_eq!(shard_of("anything", 1), 0);
        // A fixed value: a change here moves topics between shards of a running cluster.
        let on_first = (0..1000)
            .filter(|i| shard_of(&format!("bench/{i}"), 2) == 0)
            .count();
        assert!((400..600).contains(&on_first), "{on_first}");
        assert_eq!(shard_of("chat/room-1", 4), 1);
    }
}
