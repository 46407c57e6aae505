//! What a new subscription replays of one topic before its live messages, and the topic gap
//! that says what it cannot replay (PROTOCOL.md §5, `sub.rewind` and `sub.since`).
//!
//! Pure functions of a locked [`TopicState`]: `subscribe.rs` holds the topic locks, pushes
//! the gap (as a note, which takes no seq) and then the messages, and enters the subscription
//! in the router before it lets go, so nothing is missed or doubled at the seam.
//!
//! The rules, per topic:
//! - a listed position in the current epoch replays every held message after its offset;
//!   offsets after it that history no longer holds are a gap `history`;
//! - a listed position in another epoch (or past the topic's last offset, which this epoch
//!   never reached) cannot be placed: a gap `epoch`, then everything held;
//! - a topic not listed, with `since.ts`, replays its held messages newer than `ts`; when its
//!   history starts after `ts` and it had older messages, those are a gap `history` from 1
//!   (the server keeps no times of what it dropped, so the gap is what history lacks);
//! - `max_rewind` keeps the newest of what would be replayed; the older part cut off joins
//!   the gap, never silently.

use std::sync::Arc;
use std::time::Instant;

use crate::event::Event;
use crate::protocol::{Position, TopicGapFrame, TopicGapReason};
use crate::store::TopicState;
use crate::topic::Topic;

/// What a subscription asks of one topic.
#[derive(Debug, Clone, Copy)]
pub(super) enum Want<'a> {
    /// `rewind`: the newest N.
    Latest(u64),
    /// A listed position: everything after it.
    After(&'a Position),
    /// Not listed, with `since.ts`: everything newer than these Unix milliseconds.
    Newer(u64),
}

/// One topic's part of a subscription's replay.
#[derive(Debug, Default)]
pub(super) struct Replay {
    pub gap: Option<TopicGapFrame>,
    pub events: Vec<Arc<Event>>,
}

/// Plans the replay of `topic` for `want`, at most `cap` messages.
pub(super) fn plan(topic: &Topic, state: &TopicState, want: Want<'_>, cap: usize) -> Replay {
    let (mut gap, mut events) = match want {
        Want::Latest(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX).min(cap);
            return Replay {
                gap: None,
                events: state.latest(n),
            };
        }
        Want::After(p) => after(state, p),
        Want::Newer(ts) => newer(state, ts),
    };
    if events.len() > cap {
        let cut = events.len() - cap;
        // The first offset kept (one past the last when the cap is 0 and nothing is).
        let kept_from = events
            .get(cut)
            .map_or(events[cut - 1].offset + 1, |e| e.offset);
        let from = gap.map_or(events[0].offset, |(from, _, _)| from);
        let reason = gap.map_or(TopicGapReason::History, |(_, _, r)| r);
        gap = Some((from, kept_from - 1, reason));
        events.drain(..cut);
    }
    Replay {
        gap: gap.map(|(from_offset, to_offset, reason)| TopicGapFrame {
            topic: topic.as_str().to_owned(),
            from_offset,
            to_offset,
            reason,
            epoch: state.epoch.to_string(),
        }),
        events,
    }
}

type Planned = (Option<(u64, u64, TopicGapReason)>, Vec<Arc<Event>>);

fn after(state: &TopicState, p: &Position) -> Planned {
    let held_from = state.history.front().map(|e| e.offset);
    // Offsets after `delivered` are on their way to the disk and will be delivered live
    // (their fan-out waits for this topic's lock): neither held nor missing.
    if *state.epoch == *p.epoch && p.offset <= state.delivered {
        let events = state.after(p.offset, usize::MAX);
        // What follows the position and is not held: up to the first held one, or all.
        let missing_to = events.first().map_or(state.delivered, |e| e.offset - 1);
        let gap =
            (missing_to > p.offset).then_some((p.offset + 1, missing_to, TopicGapReason::History));
        return (gap, events);
    }
    let missing_to = held_from.map_or(state.delivered, |f| f - 1);
    let events = state.after(0, usize::MAX);
    (Some((1, missing_to, TopicGapReason::Epoch)), events)
}

fn newer(state: &TopicState, ts: u64) -> Planned {
    let events: Vec<Arc<Event>> = state
        .history
        .iter()
        .filter(|e| e.ts > ts)
        .cloned()
        .collect();
    let lost_to = match state.history.front() {
        Some(first) if first.offset > 1 && first.ts > ts => first.offset - 1,
        Some(_) => 0,
        // Nothing held: lost if anything was published after `ts`.
        None if state.delivered > 0 && last_publish_ms(state) > ts => state.delivered,
        None => 0,
    };
    let gap = (lost_to > 0).then_some((1, lost_to, TopicGapReason::History));
    (gap, events)
}

/// The wall-clock time of the topic's last publish, from its monotonic instant.
fn last_publish_ms(state: &TopicState) -> u64 {
    let ago = Instant::now().saturating_duration_since(state.last_publish);
    crate::event::now_ms().saturating_sub(ago.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::event::EventParts;
    use crate::store::Dedup;

    /// A topic at offset `last` holding `held` (offsets), message `n` published at ts `n*10`.
    fn state(last: u64, held: impl Iterator<Item = u64>) -> TopicState {
        let topic = Topic::parse("t/a").unwrap();
        let history: VecDeque<Arc<Event>> = held
            .filter(|o| *o >= 1)
            .map(|o| {
                let parts = EventParts {
                    topic: topic.clone(),
                    data: "1",
                    msg_id: None,
                    reply_to: None,
                };
                Arc::new(Event::new(parts, o, "e1".into(), o * 10))
            })
            .collect();
        TopicState {
            epoch: "e1".into(),
            offset: last,
            delivered: last,
            last_publish: Instant::now(),
            history,
            retained: None,
            dedup: Dedup::default(),
        }
    }

    fn at(epoch: &str, offset: u64) -> Position {
        Position {
            epoch: epoch.into(),
            offset,
        }
    }

    fn run(
        state: &TopicState,
        want: Want<'_>,
        cap: usize,
    ) -> (Option<(u64, u64, TopicGapReason)>, Vec<u64>) {
        let topic = Topic::parse("t/a").unwrap();
        let r = plan(&topic, state, want, cap);
        let gap = r.gap.map(|g| {
            assert_eq!((g.topic.as_str(), g.epoch.as_str()), ("t/a", "e1"));
            (g.from_offset, g.to_offset, g.reason)
        });
        (gap, r.events.iter().map(|e| e.offset).collect())
    }

    use TopicGapReason::{Epoch, History};

    #[test]
    fn a_held_position_replays_the_rest_without_a_gap() {
        let s = state(10, 1..=10);
        assert_eq!(
            run(&s, Want::After(&at("e1", 7)), 100),
            (None, vec![8, 9, 10])
        );
        assert_eq!(run(&s, Want::After(&at("e1", 10)), 100), (None, vec![]));
        assert_eq!(run(&s, Want::After(&at("e1", 0)), 100).1.len(), 10);
    }

    #[test]
    fn what_history_lost_after_a_position_is_a_gap() {
        let s = state(10, 6..=10);
        assert_eq!(
            run(&s, Want::After(&at("e1", 2)), 100),
            (Some((3, 5, History)), vec![6, 7, 8, 9, 10])
        );
        // Exactly at the seam: nothing lost.
        assert_eq!(
            run(&s, Want::After(&at("e1", 5)), 100),
            (None, vec![6, 7, 8, 9, 10])
        );
        // No history at all: every offset after the position is lost.
        let none = state(10, std::iter::empty());
        assert_eq!(
            run(&none, Want::After(&at("e1", 4)), 100),
            (Some((5, 10, History)), vec![])
        );
    }

    #[test]
    fn offsets_waiting_for_the_disk_are_neither_held_nor_missing() {
        // Offsets 11 and 12 are taken but not yet durable: they will be delivered live.
        let mut s = state(12, 1..=10);
        s.delivered = 10;
        assert_eq!(run(&s, Want::After(&at("e1", 8)), 100), (None, vec![9, 10]));
        assert_eq!(run(&s, Want::After(&at("e1", 10)), 100), (None, vec![]));
        let mut none = state(2, std::iter::empty());
        none.delivered = 0;
        assert_eq!(run(&none, Want::Newer(1), 100), (None, vec![]));
        assert_eq!(run(&none, Want::After(&at("e1", 0)), 100), (None, vec![]));
    }

    #[test]
    fn another_epoch_or_an_offset_past_the_end_cannot_be_placed() {
        let s = state(10, 6..=10);
        assert_eq!(
            run(&s, Want::After(&at("old", 3)), 100),
            (Some((1, 5, Epoch)), vec![6, 7, 8, 9, 10])
        );
        assert_eq!(
            run(&s, Want::After(&at("e1", 11)), 100).0,
            Some((1, 5, Epoch))
        );
        // Held from its start: the range is empty, the old epoch's tail is what is unknown.
        let whole = state(3, 1..=3);
        assert_eq!(
            run(&whole, Want::After(&at("old", 9)), 100),
            (Some((1, 0, Epoch)), vec![1, 2, 3])
        );
    }

    #[test]
    fn max_rewind_keeps_the_newest_and_reports_the_cut() {
        let s = state(10, 1..=10);
        assert_eq!(
            run(&s, Want::After(&at("e1", 2)), 3),
            (Some((3, 7, History)), vec![8, 9, 10])
        );
        let t = state(10, 6..=10);
        assert_eq!(
            run(&t, Want::After(&at("e1", 2)), 2),
            (Some((3, 8, History)), vec![9, 10])
        );
        assert_eq!(
            run(&t, Want::After(&at("x", 2)), 2),
            (Some((1, 8, Epoch)), vec![9, 10])
        );
        assert_eq!(
            run(&s, Want::After(&at("e1", 2)), 0),
            (Some((3, 10, History)), vec![])
        );
    }

    #[test]
    fn unlisted_topics_replay_what_is_newer_than_ts() {
        let s = state(10, 1..=10);
        assert_eq!(run(&s, Want::Newer(75), 100), (None, vec![8, 9, 10]));
        assert_eq!(run(&s, Want::Newer(200), 100), (None, vec![]));
        // History starts after ts and the topic had older messages: those are a gap from 1.
        let t = state(10, 6..=10);
        assert_eq!(
            run(&t, Want::Newer(20), 100),
            (Some((1, 5, History)), vec![6, 7, 8, 9, 10])
        );
        // History reaches back past ts: nothing lost.
        assert_eq!(run(&t, Want::Newer(60), 100), (None, vec![7, 8, 9, 10]));
        assert_eq!(
            run(&t, Want::Newer(20), 2),
            (Some((1, 8, History)), vec![9, 10])
        );
        // Nothing held, published just now (after ts): all of it is lost.
        let none = state(4, std::iter::empty());
        assert_eq!(
            run(&none, Want::Newer(1), 100),
            (Some((1, 4, History)), vec![])
        );
        assert_eq!(run(&none, Want::Newer(u64::MAX), 100), (None, vec![]));
    }

    #[test]
    fn rewind_takes_the_newest_within_the_cap() {
        let s = state(10, 1..=10);
        assert_eq!(run(&s, Want::Latest(3), 100), (None, vec![8, 9, 10]));
        assert_eq!(run(&s, Want::Latest(u64::MAX), 2), (None, vec![9, 10]));
    }
}
