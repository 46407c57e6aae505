//! Reads answered from Redis, where the cluster's state is: history, the topic list, and
//! the replay a new subscription gets (warmed into the mirror first, see `mirror.rs`).

use std::sync::Arc;
use std::time::Duration;

use super::super::{Bus, BusError, HistoryPage, SubOptions, SubOutcome, TopicRow};
use super::Remote;
use crate::event::now_ms;
use crate::protocol::Since;
use crate::session::Session;
use crate::topic::{Pattern, Topic};

/// A message warmed from Redis is fanned out when it is at most this old: it was then in
/// flight on the feed (and its feed copy will be dropped as already applied), not an old
/// message the node missed while it did not watch the topic.
const IN_FLIGHT: Duration = Duration::from_secs(2);

impl Bus {
    /// A subscription in cluster mode: makes sure this node receives the pattern's messages
    /// and that replayed messages come from Redis, then subscribes as on a single node.
    pub(in crate::bus) async fn subscribe_remote(
        &self,
        remote: &Remote,
        session: &Arc<Session>,
        pattern: &str,
        opts: &SubOptions<'_>,
    ) -> Result<SubOutcome, BusError> {
        let parsed = Pattern::parse(pattern)?;
        let replay = opts.since.is_some() || opts.rewind.is_some();
        // A watch of our own while we warm; `subscribe_here` takes the lasting one.
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
                    // Listed positions are warmed even when Redis does not list the topic
                    // (yet): the mirror then knows its epoch.
                    let (listed, ts) = match opts.since {
                        Some(Since::Topics(t)) => (
                            t.topics
                                .keys()
                                .filter(|k| parsed.matches(k))
                                .filter_map(|k| Topic::parse(k).ok())
                                .collect(),
                            t.ts,
                        ),
                        _ => (Vec::new(), None),
                    };
                    let every = opts.rewind.is_some() || ts.is_some();
                    let mut topics: Vec<Topic> = if every || opts.since.is_none() {
                        remote
                            .cluster
                            .topics(!every)
                            .await?
                            .iter()
                            .filter(|t| parsed.matches(t))
                            .filter_map(|t| Topic::parse(t).ok())
                            .collect()
                    } else {
                        Vec::new()
                    };
                    let known: std::collections::HashSet<Topic> = topics.iter().cloned().collect();
                    topics.extend(listed.into_iter().filter(|t| !known.contains(t)));
                    topics
                };
                for t in &topics {
                    match self.warm(t, replay, fresh).await {
                        Ok(()) => {}
                        Err(e) if replay => return Err(e),
                        Err(e) => tracing::debug!(error = %e, "retained message not fetched"),
                    }
                }
            }
            self.subscribe_here(session, pattern, opts)
        }
        .await;
        remote.cluster.unwatch(parsed.as_str(), parsed.is_exact());
        result
    }

    /// A topic's history, from Redis: this node's mirror holds only the topics it receives.
    pub(in crate::bus) async fn history_remote(
        &self,
        remote: &Remote,
        topic: &Topic,
        since: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, BusError> {
        let settings = self.inner.topics.settings_for(topic);
        let (epoch, records) = remote
            .cluster
            .history(topic, since, limit, settings.history, settings.history_ttl)
            .await?;
        Ok(HistoryPage {
            epoch,
            messages: records.into_iter().map(|r| r.event).collect(),
        })
    }

    /// Every topic published to anywhere in the cluster, with its cluster-wide offset and
    /// epoch (from Redis); `subscribers` counts this node's, as the others' are theirs.
    pub(in crate::bus) async fn topics_remote(
        &self,
        remote: &Remote,
        pattern: Option<&Pattern>,
    ) -> Result<Vec<TopicRow>, BusError> {
        let mut names = remote.cluster.topics(false).await?;
        names.retain(|t| pattern.is_none_or(|p| p.matches(t)));
        names.sort_unstable();
        let meta = remote.cluster.offsets(&names).await?;
        Ok(names
            .into_iter()
            .zip(meta)
            .filter_map(|(topic, (offset, epoch))| {
                Some(TopicRow {
                    subscribers: self.inner.router.matches(&topic).len(),
                    offset: offset?,
                    epoch: epoch?,
                    topic,
                })
            })
            .collect())
    }
}
