//! Unit tests of the seq/gap invariant, driven through random pushes, drains and resumes.

use super::*;
use crate::event::{Event, EventParts};
use crate::topic::Topic;

fn limits(n: usize, policy: SlowConsumer) -> Limits {
    Limits {
        buffer_messages: n,
        buffer_bytes: 1 << 30,
        slow_consumer: policy,
        max_subscriptions: 10,
    }
}

fn event(i: u64) -> Arc<Event> {
    Arc::new(Event::new(
        EventParts {
            topic: Topic::parse("t").unwrap(),
            data: "1",
            msg_id: None,
            reply_to: None,
        },
        i,
        "e".into(),
        0,
    ))
}

/// Client-side view: what a client that saw these frames knows.
#[derive(Default)]
struct Seen {
    last: u64,
    covered: Vec<u64>,
}

impl Seen {
    fn apply(&mut self, b: &Batch) {
        if let Some((from, to)) = b.gap {
            assert_eq!(
                from,
                self.last + 1,
                "gap must start right after the last seen seq"
            );
            assert!(to >= from);
            self.covered.extend(from..=to);
            self.last = to;
        }
        for e in &b.entries {
            assert_eq!(e.seq, self.last + 1, "messages must be contiguous");
            self.covered.push(e.seq);
            self.last = e.seq;
        }
    }
}

#[test]
fn live_overflow_reports_exact_gap() {
    let s = Session::new(limits(4, SlowConsumer::DropOldest));
    let ob = Arc::new(Outbox::new());
    s.attach(ob, None);
    for i in 1..=10 {
        s.push(&event(i), Delivery::LIVE);
    }
    let mut b = Batch::default();
    s.take(&mut b, 100);
    assert_eq!(b.gap, Some((1, 6)));
    assert_eq!(
        b.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![7, 8, 9, 10]
    );
}

#[test]
fn resume_replays_after_last_seq_then_gap_for_lost() {
    let s = Session::new(limits(5, SlowConsumer::DropOldest));
    let ob = Arc::new(Outbox::new());
    s.attach(ob.clone(), None);
    for i in 1..=5 {
        s.push(&event(i), Delivery::LIVE);
    }
    let mut b = Batch::default();
    s.take(&mut b, 100); // all 5 "sent", client only got 1..=2
    s.detach(&ob);
    for i in 6..=8 {
        s.push(&event(i), Delivery::LIVE); // evicts 1..=3
    }
    let ob2 = Arc::new(Outbox::new());
    assert!(s.attach(ob2, Some(2)).is_none());
    let mut b = Batch::default();
    s.take(&mut b, 100);
    assert_eq!(b.gap, Some((3, 3)));
    assert_eq!(
        b.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![4, 5, 6, 7, 8]
    );
}

#[test]
fn random_schedule_keeps_invariant() {
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..200 {
        let s = Session::new(limits(1 + (round % 17), SlowConsumer::DropOldest));
        let mut seen = Seen::default();
        let mut ob = Arc::new(Outbox::new());
        s.attach(ob.clone(), None);
        let mut pushed = 0;
        for _ in 0..300 {
            match next() % 5 {
                0 | 1 => {
                    pushed += 1;
                    s.push(&event(pushed), Delivery::LIVE);
                }
                2 | 3 => {
                    let mut b = Batch::default();
                    s.take(&mut b, 1 + (next() % 8) as usize);
                    if next() % 3 == 0 {
                        // The socket dies mid-batch: the client saw a prefix, then resumes.
                        let keep = (next() % (b.entries.len() as u64 + 1)) as usize;
                        b.entries.truncate(keep);
                        if keep == 0 && next() % 2 == 0 {
                            b.gap = None;
                        }
                        seen.apply(&b);
                        s.detach(&ob);
                        ob = Arc::new(Outbox::new());
                        s.attach(ob.clone(), Some(seen.last));
                    } else {
                        seen.apply(&b);
                    }
                }
                _ => {}
            }
        }
        let mut b = Batch::default();
        s.take(&mut b, usize::MAX);
        seen.apply(&b);
        assert_eq!(
            seen.covered,
            (1..=pushed).collect::<Vec<_>>(),
            "round {round}"
        );
    }
}

#[test]
fn disconnect_policy_kicks_when_backlog_full() {
    let s = Session::new(limits(3, SlowConsumer::Disconnect));
    let ob = Arc::new(Outbox::new());
    s.attach(ob.clone(), None);
    assert!(!s.push(&event(1), Delivery::LIVE).kicked);
    assert!(!s.push(&event(2), Delivery::LIVE).kicked);
    assert!(s.push(&event(3), Delivery::LIVE).kicked);
    let mut d = Drained::default();
    ob.drain(&mut d);
    assert_eq!(
        d.close.map(|c| c.code),
        Some(crate::protocol::close::SLOW_CONSUMER)
    );
}

#[test]
fn byte_cap_bounds_memory() {
    let mut l = limits(1000, SlowConsumer::DropOldest);
    l.buffer_bytes = 10 * event(1).cost();
    let s = Session::new(l);
    for i in 1..=100 {
        s.push(&event(i), Delivery::LIVE);
    }
    let (n, bytes, _) = s.usage();
    assert!(n <= 10 && bytes <= l.buffer_bytes, "{n} {bytes}");
}

#[test]
fn idempotent_subscriptions_and_cap() {
    let s = Session::new(limits(3, SlowConsumer::DropOldest));
    let key = |p: &str| SubKey {
        pattern: p.into(),
        group: None,
    };
    let pat = |p: &str| crate::topic::Pattern::parse(p).unwrap();
    let mut l = *s.limits();
    l.max_subscriptions = 2;
    let s2 = Session::new(l);
    assert_eq!(s2.add_sub(key("a"), pat("a")), Ok(true));
    assert_eq!(s2.add_sub(key("a"), pat("a")), Ok(false));
    assert_eq!(s2.add_sub(key("b/*"), pat("b/*")), Ok(true));
    assert_eq!(s2.add_sub(key("c"), pat("c")), Err(2));
    assert!(s.subscriptions().is_empty());
}

/// A writer whose connection was superseded by a resume takes nothing: what it would take is
/// its successor's to send.
#[test]
fn superseded_writer_takes_nothing() {
    let s = Session::new(limits(16, SlowConsumer::DropOldest));
    let old = Arc::new(Outbox::new());
    let new = Arc::new(Outbox::new());
    s.attach(old.clone(), None);
    s.push(&event(1), Delivery::LIVE);
    let mut b = Batch::default();
    s.take_for(&old, &mut b, 10);
    assert_eq!(b.entries.len(), 1);
    s.attach(new.clone(), Some(1));
    s.push(&event(2), Delivery::LIVE);
    b.clear();
    s.take_for(&old, &mut b, 10);
    assert!(b.is_empty(), "the old connection must not take seq 2");
    s.take_for(&new, &mut b, 10);
    assert_eq!(b.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2]);
}

fn event_on(topic: &str, i: u64) -> Arc<Event> {
    Arc::new(Event::new(
        EventParts {
            topic: Topic::parse(topic).unwrap(),
            data: "1",
            msg_id: None,
            reply_to: None,
        },
        i,
        "e".into(),
        0,
    ))
}

/// Allows topics starting with `a`.
#[derive(Debug)]
struct OnlyA;
impl DeliveryFilter for OnlyA {
    fn allows(&self, topic: &str) -> bool {
        topic.starts_with('a')
    }
}

/// A narrower filter set on resume withholds what the buffer already holds outside it: those
/// seqs come out as gaps, the rest as messages, and the invariant holds.
#[test]
fn narrower_filter_withholds_buffered_messages_as_gaps() {
    let s = Session::new(limits(16, SlowConsumer::DropOldest));
    let ob = Arc::new(Outbox::new());
    s.attach(ob.clone(), None);
    for (i, t) in ["b", "a", "b", "b", "a", "b"].iter().enumerate() {
        s.push(&event_on(t, i as u64 + 1), Delivery::LIVE);
    }
    s.detach(&ob);
    s.set_filter(Some(Arc::new(OnlyA)));
    s.attach(Arc::new(Outbox::new()), Some(0));
    let mut seen = Seen::default();
    let mut frames = Vec::new();
    loop {
        let mut b = Batch::default();
        s.take(&mut b, 100);
        if b.is_empty() {
            break;
        }
        seen.apply(&b);
        frames.push((b.gap, b.entries.iter().map(|e| e.seq).collect::<Vec<_>>()));
    }
    assert_eq!(
        frames,
        vec![
            (Some((1, 1)), vec![2]),
            (Some((3, 4)), vec![5]),
            (Some((6, 6)), vec![]),
        ]
    );
    assert_eq!(seen.covered, (1..=6).collect::<Vec<_>>());
    // New messages outside the filter get no seq at all; allowed ones follow on.
    assert_eq!(s.push(&event_on("b", 7), Delivery::LIVE).seq, 0);
    assert_eq!(s.push(&event_on("a", 8), Delivery::LIVE).seq, 7);
    let mut b = Batch::default();
    s.take(&mut b, 100);
    assert_eq!(b.gap, None);
    assert_eq!(b.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![7]);
}

/// Random pushes, drains, resumes and filter changes: every seq is still a message or in
/// exactly one gap, and no withheld topic is ever handed out.
#[test]
fn random_schedule_with_filters_keeps_invariant() {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..200 {
        let s = Session::new(limits(1 + (round % 13), SlowConsumer::DropOldest));
        let mut seen = Seen::default();
        let mut ob = Arc::new(Outbox::new());
        s.attach(ob.clone(), None);
        let mut filtered = false;
        let mut pushed = 0;
        for _ in 0..300 {
            match next() % 6 {
                0 | 1 => {
                    let topic = if next() % 2 == 0 { "a" } else { "b" };
                    pushed += u64::from(s.push(&event_on(topic, 0), Delivery::LIVE).seq > 0);
                }
                2 | 3 => {
                    let mut b = Batch::default();
                    s.take(&mut b, 1 + (next() % 8) as usize);
                    if filtered {
                        assert!(b.entries.iter().all(|e| e.event.topic.as_str() == "a"));
                    }
                    seen.apply(&b);
                }
                4 => {
                    // Resume, maybe under the narrower filter, from a seq the client saw.
                    s.detach(&ob);
                    if next() % 2 == 0 {
                        s.set_filter(Some(Arc::new(OnlyA)));
                        filtered = true;
                    }
                    ob = Arc::new(Outbox::new());
                    s.attach(ob.clone(), Some(seen.last));
                }
                _ => {}
            }
        }
        let mut b = Batch::default();
        loop {
            b.clear();
            s.take(&mut b, usize::MAX);
            if b.is_empty() {
                break;
            }
            seen.apply(&b);
        }
        assert_eq!(
            seen.covered,
            (1..=pushed).collect::<Vec<_>>(),
            "round {round}"
        );
    }
}

/// A stalled session's reported backlog is what it holds, within its cap, however many
/// seqs it dropped.
#[test]
fn usage_counts_held_unsent_messages_not_dropped_seqs() {
    let s = Session::new(limits(10, SlowConsumer::DropOldest));
    s.attach(Arc::new(Outbox::new()), None);
    let mut dropped = 0;
    for i in 1..=100 {
        dropped += s.push(&event(i), Delivery::LIVE).dropped_unsent;
    }
    assert_eq!(dropped, 90);
    let (held, _, unsent) = s.usage();
    assert_eq!((held, unsent), (10, 10));
}

#[test]
fn session_ref_identity_is_the_session() {
    use std::hash::BuildHasher;
    let a = Arc::new(Session::new(limits(4, SlowConsumer::DropOldest)));
    let b = Arc::new(Session::new(limits(4, SlowConsumer::DropOldest)));
    let (a1, a2, b1) = (SessionRef(a.clone()), SessionRef(a), SessionRef(b));
    let state = std::hash::RandomState::new();
    assert_eq!(a1, a2);
    assert_eq!(state.hash_one(&a1), state.hash_one(&a2));
    assert_ne!(a1, b1);
    // Through the router: one session under three matching patterns is one subscriber.
    let router = crate::router::Router::new();
    for p in ["room/*", "room/1", "**"] {
        router.insert(&crate::topic::Pattern::parse(p).unwrap(), a1.clone());
    }
    router.insert(&crate::topic::Pattern::parse("room/1").unwrap(), b1.clone());
    let mut found = router.matches_uncached("room/1").to_vec();
    found.sort_by_key(|s| s.0.key);
    assert_eq!(found, vec![a2, b1]);
}

/// A backlog is the node's only when the writer could write (its socket takes more): from
/// half the buffer on, while it is runnable; never while its socket is full, nor for an
/// outbox drained at its user's pace.
#[test]
fn backlog_counts_only_for_a_runnable_writer() {
    let s = Session::new(limits(8, SlowConsumer::DropOldest));
    let ob = Arc::new(Outbox::new());
    s.attach(ob.clone(), None);
    let backlogged: Vec<bool> = (1..=6)
        .map(|i| s.push(&event(i), Delivery::LIVE).backlogged)
        .collect();
    assert_eq!(
        backlogged, [false; 6],
        "an embedded-style outbox never backlogs"
    );
    ob.set_runnable(true);
    assert!(s.push(&event(7), Delivery::LIVE).backlogged);
    ob.set_runnable(false);
    assert!(
        !s.push(&event(8), Delivery::LIVE).backlogged,
        "socket full: the reader's backlog"
    );
    ob.set_runnable(true);
    let mut b = Batch::default();
    s.take(&mut b, 100);
    let got: Vec<bool> = (9..=13)
        .map(|i| s.push(&event(i), Delivery::LIVE).backlogged)
        .collect();
    assert_eq!(
        got,
        [false, false, false, true, true],
        "from 4 of 8 unsent on"
    );
}

#[test]
fn announced_end_is_taken_once() {
    let s = Session::new(limits(4, SlowConsumer::DropOldest));
    assert!(
        !s.take_announced(),
        "a session is not announced until marked"
    );
    s.mark_announced();
    assert!(s.take_announced());
    assert!(!s.take_announced(), "the end is announced once");
}
