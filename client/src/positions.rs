//! Where a plain subscription stands in each topic it delivered: the last `(epoch, offset)`
//! of its newest [`MAX_SINCE_TOPICS`] topics, and the time it was made. This is what a
//! recovery asks the server for (`sub.since {topics, ts}`), and what keeps a recovery's
//! replay from showing the application a message twice.
//!
//! `ts` covers the topics not listed, which the subscription never had a message of: it is
//! when the subscription was made, not the newest `ts` delivered, because messages of
//! different topics are not delivered in `ts` order (one stamped earlier on a topic never
//! seen may still have been on its way when the session was lost). Only topics evicted
//! from the map were had yet are not listed; `ts` is raised past the last live message
//! delivered of each, so that their replay does not repeat it. (Live only: a replay cut
//! short by another disconnect has not reached the topics after it, and a live message
//! comes after the whole replay; one that is older than a message delivered a thousand
//! topics ago is not still on its way.)

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_protocol::{MAX_SINCE_TOPICS, MsgFrame, Position, Since, TopicGapFrame, TopicPositions};

/// How far back of the estimated server time a subscription's start is put: the estimate
/// must not be later than the server's real time of subscribing, or a recovery would miss
/// what came in between.
pub(crate) const CLOCK_SLACK: Duration = Duration::from_millis(1000);

/// One subscription's positions, bounded to the most recently delivered topics.
#[derive(Debug)]
pub(crate) struct Positions {
    topics: HashMap<String, Entry>,
    /// Tick of the last delivery → topic, oldest first: the eviction order.
    by_tick: BTreeMap<u64, String>,
    cap: usize,
    /// The server's time when the subscription was made, as well as the client can tell
    /// (lowered to the first live message's `ts` if that is earlier: the local clock was
    /// ahead).
    start_ts: u64,
    /// The newest live `ts` delivered of a topic evicted from the map.
    evicted_ts: u64,
}

#[derive(Debug)]
struct Entry {
    position: Position,
    tick: u64,
    /// `ts` of the topic's last live message delivered, if one was.
    ts: Option<u64>,
}

impl Positions {
    pub(crate) fn new(start_ts: u64) -> Positions {
        Self::with_cap(MAX_SINCE_TOPICS, start_ts)
    }

    pub(crate) fn with_cap(cap: usize, start_ts: u64) -> Positions {
        Positions {
            topics: HashMap::new(),
            by_tick: BTreeMap::new(),
            cap: cap.max(1),
            start_ts,
            evicted_ts: 0,
        }
    }

    /// Takes a user's `since` as where the subscription starts: what it lists, the client
    /// has. `pattern` is the topic of the `{epoch, offset}` form (an exact pattern).
    pub(crate) fn seed(&mut self, pattern: &str, since: &Since, tick: &mut impl FnMut() -> u64) {
        match since {
            Since::Position(p) => self.set(pattern, &p.epoch, p.offset, tick(), None),
            Since::Topics(t) => {
                if let Some(ts) = t.ts {
                    self.start_ts = ts;
                }
                for (topic, p) in &t.topics {
                    self.set(topic, &p.epoch, p.offset, tick(), None);
                }
            }
        }
    }

    /// Records a delivered message; false when the subscription already has it (same
    /// epoch, offset not past the remembered one), which is then not shown again.
    ///
    /// A retained message is filtered the same way but not recorded: it may be far older
    /// than the topic's last offset, and recovering from it would replay messages from
    /// before the subscription.
    pub(crate) fn accept(&mut self, m: &MsgFrame, tick: u64) -> bool {
        if let Some(e) = self.topics.get(m.topic.as_str())
            && e.position.epoch == m.epoch
            && m.offset <= e.position.offset
        {
            return false;
        }
        if m.retained {
            return true;
        }
        let live = (!m.replay).then_some(m.ts);
        if live.is_some() {
            self.start_ts = self.start_ts.min(m.ts);
        }
        self.set(&m.topic, &m.epoch, m.offset, tick, live);
        true
    }

    /// A topic gap: what it covers will never come, so the topic's position moves to its
    /// end when that is further (another epoch, or a later offset). Returns whether it moved.
    pub(crate) fn skip(&mut self, g: &TopicGapFrame, tick: u64) -> bool {
        let further = match self.topics.get(g.topic.as_str()) {
            None => true,
            Some(e) => e.position.epoch != g.epoch || g.to_offset > e.position.offset,
        };
        if further {
            self.set(&g.topic, &g.epoch, g.to_offset, tick, None);
        }
        further
    }

    /// The `ts` a recovery asks for: the start, or past the evicted topics.
    pub(crate) fn ts(&self) -> u64 {
        self.start_ts.max(self.evicted_ts)
    }

    #[cfg(test)]
    pub(crate) fn get(&self, topic: &str) -> Option<&Position> {
        self.topics.get(topic).map(|e| &e.position)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.topics.len()
    }

    /// What a recovery resubscribe sends.
    pub(crate) fn since(&self) -> TopicPositions {
        TopicPositions {
            topics: self
                .topics
                .iter()
                .map(|(t, e)| (t.clone(), e.position.clone()))
                .collect(),
            ts: Some(self.ts()),
        }
    }

    /// Moves a topic's position (and its live `ts`, when `ts` is one) and makes it the most
    /// recently delivered.
    fn set(&mut self, topic: &str, epoch: &str, offset: u64, tick: u64, ts: Option<u64>) {
        if let Some(e) = self.topics.get_mut(topic) {
            if let Some(t) = self.by_tick.remove(&e.tick) {
                self.by_tick.insert(tick, t);
            }
            e.tick = tick;
            if ts.is_some() {
                e.ts = ts;
            }
            if e.position.epoch != epoch {
                e.position.epoch = epoch.to_owned();
            }
            e.position.offset = offset;
            return;
        }
        if self.topics.len() >= self.cap
            && let Some((_, oldest)) = self.by_tick.pop_first()
            && let Some(gone) = self.topics.remove(&oldest)
        {
            self.evicted_ts = self.evicted_ts.max(gone.ts.unwrap_or(0));
        }
        self.by_tick.insert(tick, topic.to_owned());
        self.topics.insert(
            topic.to_owned(),
            Entry {
                position: Position {
                    epoch: epoch.to_owned(),
                    offset,
                },
                tick,
                ts,
            },
        );
    }
}

/// One `since` for several local subscriptions of the same pattern: the server holds one
/// subscription per pattern and ignores a second `sub` of it, so they must recover
/// together. Per topic the lowest offset wins (each subscription filters out what it
/// already has); where they disagree on the epoch, the most recently delivered one wins;
/// the most recently delivered [`MAX_SINCE_TOPICS`] topics are kept; `ts` is the earliest.
pub(crate) fn merge<'a>(all: impl IntoIterator<Item = &'a Positions>) -> TopicPositions {
    let mut all = all.into_iter().peekable();
    let Some(first) = all.next() else {
        return TopicPositions::default();
    };
    if all.peek().is_none() {
        return first.since();
    }
    let mut ts = first.ts();
    let mut out: HashMap<&str, (Position, u64)> = first
        .topics
        .iter()
        .map(|(t, e)| (t.as_str(), (e.position.clone(), e.tick)))
        .collect();
    for p in all {
        ts = ts.min(p.ts());
        for (t, e) in &p.topics {
            match out.get_mut(t.as_str()) {
                None => {
                    out.insert(t, (e.position.clone(), e.tick));
                }
                Some((have, tick)) if have.epoch == e.position.epoch => {
                    have.offset = have.offset.min(e.position.offset);
                    *tick = (*tick).max(e.tick);
                }
                Some((have, tick)) => {
                    if e.tick > *tick {
                        *have = e.position.clone();
                        *tick = e.tick;
                    }
                }
            }
        }
    }
    let mut list: Vec<(&str, (Position, u64))> = out.into_iter().collect();
    if list.len() > MAX_SINCE_TOPICS {
        list.sort_unstable_by_key(|(_, (_, tick))| std::cmp::Reverse(*tick));
        list.truncate(MAX_SINCE_TOPICS);
    }
    TopicPositions {
        topics: list
            .into_iter()
            .map(|(t, (p, _))| (t.to_owned(), p))
            .collect(),
        ts: Some(ts),
    }
}

/// The newest message `ts` the client saw and when it came: an estimate of the server's
/// clock that does not depend on the local one being right.
#[derive(Debug, Default)]
pub(crate) struct ServerClock {
    newest: Option<(u64, Instant)>,
}

impl ServerClock {
    pub(crate) fn saw(&mut self, ts: u64) {
        if self.newest.is_none_or(|(t, _)| ts > t) {
            self.newest = Some((ts, Instant::now()));
        }
    }

    /// The server's time now, minus [`CLOCK_SLACK`]: the newest `ts` seen plus the time
    /// since it came, else the local wall clock.
    pub(crate) fn start_ts(&self) -> u64 {
        let now = match self.newest {
            Some((ts, at)) => ts + at.elapsed().as_millis() as u64,
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        };
        now.saturating_sub(CLOCK_SLACK.as_millis() as u64)
    }
}

#[cfg(test)]
mod tests;
