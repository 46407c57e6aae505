//! After the feed was lost and came back: what was published meanwhile reaches the local
//! subscribers, from the stored history where there is one, and as an exact topic `gap`
//! (PROTOCOL.md §5) for what no history holds, never as silence.
//!
//! Which offsets a node missed runs from the last one its subscribers had to Redis's
//! offset after the reconnect. The mirror's offset is the last one the node applied, but
//! it lags behind Redis for a topic that had messages before the node subscribed and none
//! since: those were never owed to its subscribers. So the node also keeps, per topic it
//! has subscribers of, a *floor*: Redis's offset read once while the feed was connected and
//! subscribed (every message after it reached the node, until the feed broke). The missed
//! range starts after the higher of the two.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;

use super::super::{Bus, BusError, Inner};
use super::{Remote, upgrade};
use crate::protocol::{Gap, ServerFrame, TopicGapFrame, TopicGapReason};
use crate::topic::{Pattern, Topic};

/// How often new subscriptions get their topics' floors.
const SAMPLE: Duration = Duration::from_secs(1);

/// Per topic with local subscribers: an offset of Redis's (with its epoch) that the node
/// had received everything after while its feed stayed up.
#[derive(Debug, Default)]
pub(super) struct Floors {
    map: DashMap<Topic, (Arc<str>, u64)>,
    /// The wildcard patterns whose topics were sampled (a new one samples its topics).
    seen: parking_lot::Mutex<HashSet<Arc<str>>>,
}

impl Floors {
    fn of(&self, topic: &Topic, epoch: &str) -> u64 {
        self.map
            .get(topic)
            .filter(|f| *f.0 == *epoch)
            .map_or(0, |f| f.1)
    }
}

/// Samples the floors of topics that new subscriptions brought, and forgets those of
/// topics without subscribers, until `cancel` fires.
pub(super) async fn keep_floors(bus: Weak<Inner>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(SAMPLE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(bus) = upgrade(&bus) else { return };
        let Some(remote) = bus.redis() else { return };
        if let Err(e) = bus.sample_floors(remote).await {
            tracing::debug!(error = %e, "floors not sampled");
        }
    }
}

impl Bus {
    async fn sample_floors(&self, remote: &Remote) -> Result<(), BusError> {
        let floors = &remote.floors;
        floors.map.retain(|t, _| self.has_subscribers(t.as_str()));
        let cluster = &remote.cluster;
        if !cluster.is_up() {
            return Ok(());
        }
        let reconnects = cluster.reconnects();
        let mut wanted: Vec<Topic> = Vec::new();
        let mut wild: Vec<Pattern> = Vec::new();
        {
            let patterns = self.occupied_here();
            let mut seen = floors.seen.lock();
            seen.retain(|p| patterns.contains(p));
            for p in patterns {
                let Ok(parsed) = Pattern::parse(&p) else {
                    continue;
                };
                if parsed.is_exact() {
                    if let Ok(t) = Topic::parse(&p)
                        && !floors.map.contains_key(&t)
                    {
                        wanted.push(t);
                    }
                } else if seen.insert(p) {
                    wild.push(parsed);
                }
            }
        }
        if !wild.is_empty() {
            let listed = match cluster.topics(false).await {
                Ok(l) => l,
                Err(e) => {
                    self.unsee(floors, &wild);
                    return Err(e.into());
                }
            };
            wanted.extend(
                listed
                    .iter()
                    .filter(|t| wild.iter().any(|p| p.matches(t)))
                    .filter_map(|t| Topic::parse(t).ok())
                    .filter(|t| !floors.map.contains_key(t)),
            );
        }
        wanted.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = wanted.iter().map(|t| t.as_str().to_owned()).collect();
        let at = cluster.offsets(&names).await;
        // Only what was read while the feed stayed connected is a floor.
        let (Ok(at), true) = (at, cluster.is_up() && cluster.reconnects() == reconnects) else {
            self.unsee(floors, &wild);
            return Ok(());
        };
        for (topic, (offset, epoch)) in wanted.into_iter().zip(at) {
            let Some(epoch) = epoch else { continue };
            let floor = (Arc::<str>::from(epoch), offset.unwrap_or(0));
            floors
                .map
                .entry(topic)
                .and_modify(|f| {
                    if f.0 != floor.0 || f.1 < floor.1 {
                        *f = floor.clone();
                    }
                })
                .or_insert(floor);
        }
        Ok(())
    }

    /// Makes the next sampling look at `patterns` again.
    fn unsee(&self, floors: &Floors, patterns: &[Pattern]) {
        let mut seen = floors.seen.lock();
        for p in patterns {
            seen.remove(p.as_str());
        }
    }

    /// After the feed was lost and came back: applies what was published meanwhile to
    /// the topics local sessions subscribe to, and reports what cannot be applied as a
    /// topic gap. Retried while Redis is still settling (the first commands on a
    /// connection that died with Redis fail before it reconnects); a retry reports
    /// nothing twice (the mirror's offset moved past a reported gap).
    pub(super) async fn catch_up(&self, lost_at_ms: u64) {
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
        let Some(remote) = self.redis() else {
            return Ok(0);
        };
        let known = remote.cluster.topics(false).await?;
        let topics: Vec<Topic> = known
            .iter()
            .filter_map(|t| Topic::parse(t).ok())
            .filter(|t| self.has_subscribers(t.as_str()))
            .collect();
        let names: Vec<String> = topics.iter().map(|t| t.as_str().to_owned()).collect();
        // Read before warming: what is published after this comes on the feed.
        let at = remote.cluster.offsets(&names).await?;
        // Clock differences between nodes: look a little before the loss.
        let since = lost_at_ms.saturating_sub(1000);
        for (topic, (offset, epoch)) in topics.iter().zip(at) {
            let entry = self.inner.topics.entry(topic);
            let before = {
                let state = entry.lock();
                let floor = remote.floors.of(topic, &state.epoch);
                (state.epoch.clone(), state.offset.max(floor))
            };
            self.warm(topic, true, since).await?;
            if let (Some(offset), Some(epoch)) = (offset, epoch) {
                self.report_missed(remote, topic, before, &epoch, offset, since);
            }
        }
        Ok(topics.len())
    }

    /// Tells the local subscribers of `topic` which offsets up to `last` (Redis's, in
    /// `epoch`) they will not get: those after `before` (the epoch and offset the node had
    /// everything up to) that the warm-up did not fan out. Moves the mirror past them.
    fn report_missed(
        &self,
        remote: &Remote,
        topic: &Topic,
        before: (Arc<str>, u64),
        epoch: &str,
        last: u64,
        since: u64,
    ) {
        let entry = self.inner.topics.entry(topic);
        let mut state = entry.lock();
        if *state.epoch != *epoch {
            return; // changed again since: the feed brings that epoch's messages
        }
        let from = if *before.0 == *epoch {
            before.1
        } else {
            // A new epoch in Redis (it lost the topic): everything of it was missed.
            remote.floors.of(topic, epoch)
        };
        let to = last.max(state.offset);
        if to <= from {
            return;
        }
        // What the warm-up fanned out: the stored messages after `from` that are newer
        // than `since` (the rule it applies), and a retained message so.
        let fanned: BTreeSet<u64> = state
            .history
            .iter()
            .chain(state.retained.iter())
            .filter(|e| e.offset > from && e.offset <= state.offset && e.ts >= since)
            .map(|e| e.offset)
            .collect();
        let missed = missed(from, to, &fanned);
        if missed.is_empty() && state.offset >= last {
            return;
        }
        state.offset = state.offset.max(last);
        state.delivered = state.delivered.max(last);
        let targets = self.inner.router.matches(topic.as_str());
        for (from_offset, to_offset) in missed {
            tracing::info!(
                topic = topic.as_str(),
                from_offset,
                to_offset,
                "missed while disconnected from redis; reported as a gap"
            );
            let frame: Arc<str> = ServerFrame::Gap(Gap::Topic(TopicGapFrame {
                topic: topic.as_str().to_owned(),
                from_offset,
                to_offset,
                reason: TopicGapReason::History,
                epoch: epoch.to_owned(),
            }))
            .encode()
            .into();
            for s in targets.iter() {
                s.0.push_note(frame.clone());
            }
        }
    }
}

/// The runs of offsets in `from + 1 ..= to` that are not in `fanned`.
fn missed(from: u64, to: u64, fanned: &BTreeSet<u64>) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut start = from + 1;
    for o in fanned
        .range(start..=to)
        .copied()
        .chain(std::iter::once(to + 1))
    {
        if o > start {
            out.push((start, o - 1));
        }
        start = o + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missed_offsets_are_the_runs_not_fanned_out() {
        let set = |v: &[u64]| v.iter().copied().collect::<BTreeSet<u64>>();
        assert_eq!(missed(4, 10, &set(&[])), vec![(5, 10)]);
        assert_eq!(missed(4, 10, &set(&[5, 6, 7, 8, 9, 10])), vec![]);
        assert_eq!(missed(4, 10, &set(&[8, 9, 10])), vec![(5, 7)]);
        assert_eq!(missed(4, 10, &set(&[7, 8])), vec![(5, 6), (9, 10)]);
        assert_eq!(missed(4, 10, &set(&[2, 5, 12])), vec![(6, 10)]);
        assert_eq!(missed(0, 1, &set(&[])), vec![(1, 1)]);
    }
}
