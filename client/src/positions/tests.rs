//! The position map: bounded eviction, duplicate filtering, gap advancing, `ts`.

use super::*;

fn msg(topic: &str, epoch: &str, offset: u64, ts: u64) -> MsgFrame {
    MsgFrame {
        seq: offset,
        topic: topic.into(),
        data: serde_json::Value::Null,
        offset,
        epoch: epoch.into(),
        ts,
        msg_id: None,
        reply_to: None,
        retained: false,
        replay: false,
        redelivered: false,
        deliveries: None,
    }
}

fn gap(topic: &str, epoch: &str, from: u64, to: u64) -> TopicGapFrame {
    TopicGapFrame {
        topic: topic.into(),
        from_offset: from,
        to_offset: to,
        reason: herald_protocol::TopicGapReason::History,
        epoch: epoch.into(),
    }
}

fn at(p: &Positions, topic: &str) -> Option<(String, u64)> {
    p.get(topic).map(|p| (p.epoch.clone(), p.offset))
}

#[test]
fn keeps_the_most_recently_delivered_topics() {
    let mut p = Positions::with_cap(3, 0);
    let mut tick = 0..;
    for t in ["a", "b", "c"] {
        assert!(p.accept(&msg(t, "e", 1, 10), tick.next().unwrap()));
    }
    // `a` delivered again: `b` is now the least recently delivered.
    assert!(p.accept(&msg("a", "e", 2, 11), tick.next().unwrap()));
    assert!(p.accept(&msg("d", "e", 1, 12), tick.next().unwrap()));
    assert_eq!(p.len(), 3);
    assert_eq!(at(&p, "b"), None);
    assert_eq!(at(&p, "a"), Some(("e".into(), 2)));
    assert!(at(&p, "c").is_some() && at(&p, "d").is_some());
    // A gap counts as a delivery of its topic.
    assert!(p.skip(&gap("c", "e", 2, 5), tick.next().unwrap()));
    assert!(p.accept(&msg("f", "e", 1, 13), tick.next().unwrap()));
    assert_eq!(at(&p, "a"), None, "a is now the oldest");
    assert_eq!(at(&p, "c"), Some(("e".into(), 5)));
    let since = p.since();
    assert_eq!(
        since.topics.keys().map(String::as_str).collect::<Vec<_>>(),
        ["c", "d", "f"]
    );
}

#[test]
fn bounded_at_the_protocols_cap() {
    let mut p = Positions::new(0);
    for i in 0..=MAX_SINCE_TOPICS as u64 {
        assert!(p.accept(&msg(&format!("t/{i}"), "e", 1, i), i));
    }
    assert_eq!(p.len(), MAX_SINCE_TOPICS);
    assert_eq!(at(&p, "t/0"), None);
    assert!(at(&p, "t/1").is_some());
    assert_eq!(p.since().topics.len(), MAX_SINCE_TOPICS);
}

#[test]
fn drops_what_the_subscription_already_has() {
    let mut p = Positions::new(0);
    for o in 1..=3 {
        assert!(p.accept(&msg("a", "e1", o, 100 + o), o));
    }
    // A replay of 2..=4 after a recovery: only 4 is new.
    for (o, new) in [(2, false), (3, false), (4, true)] {
        let mut m = msg("a", "e1", o, 100 + o);
        m.replay = true;
        assert_eq!(p.accept(&m, 10 + o), new, "offset {o}");
    }
    assert_eq!(at(&p, "a"), Some(("e1".into(), 4)));
    // Another topic with the same offsets is not a duplicate.
    assert!(p.accept(&msg("b", "e1", 2, 200), 20));
    // Another epoch starts over: offset 1 of e2 is new.
    assert!(p.accept(&msg("a", "e2", 1, 300), 21));
    assert_eq!(at(&p, "a"), Some(("e2".into(), 1)));
    assert!(!p.accept(&msg("a", "e2", 1, 300), 22));
}

#[test]
fn retained_messages_are_filtered_but_not_recorded() {
    let mut p = Positions::new(50);
    let mut r = msg("a", "e", 7, 5);
    r.retained = true;
    assert!(p.accept(&r, 1), "a retained message not yet seen is shown");
    assert_eq!(at(&p, "a"), None, "and not taken as the topic's position");
    assert_eq!(p.ts(), 50, "nor as the subscription's time");
    assert!(p.accept(&msg("a", "e", 9, 60), 2));
    assert!(!p.accept(&r, 3), "one it already has is dropped");
}

#[test]
fn gaps_move_positions_forward_only() {
    let mut p = Positions::new(0);
    assert!(p.accept(&msg("a", "e1", 3, 1), 1));
    assert!(p.skip(&gap("a", "e1", 4, 10), 2));
    assert_eq!(at(&p, "a"), Some(("e1".into(), 10)));
    assert!(!p.accept(&msg("a", "e1", 9, 2), 3));
    assert!(p.accept(&msg("a", "e1", 11, 2), 4));
    // A gap behind the position (it came after the replay that followed it).
    assert!(!p.skip(&gap("a", "e1", 4, 8), 5));
    assert_eq!(at(&p, "a"), Some(("e1".into(), 11)));
    // A new epoch held from its start: an empty gap, then offset 1 of it is new.
    assert!(p.skip(&gap("a", "e2", 1, 0), 6));
    assert_eq!(at(&p, "a"), Some(("e2".into(), 0)));
    assert!(p.accept(&msg("a", "e2", 1, 3), 7));
    // A gap on a topic never delivered starts its position.
    assert!(p.skip(&gap("b", "e1", 1, 4), 8));
    assert_eq!(at(&p, "b"), Some(("e1".into(), 4)));
}

#[test]
fn ts_is_the_start_raised_past_evicted_topics() {
    let mut p = Positions::with_cap(2, 1000);
    assert_eq!(p.ts(), 1000);
    // Newer messages do not move it: a topic never seen may have an older one on its way.
    assert!(p.accept(&msg("a", "e", 1, 1500), 1));
    assert!(p.accept(&msg("b", "e", 1, 1400), 2));
    assert_eq!(p.ts(), 1000);
    assert!(p.accept(&msg("a", "e", 2, 1600), 3));
    // `b` goes: what it had (up to ts 1400) must not come again.
    assert!(p.accept(&msg("c", "e", 1, 1700), 4));
    assert_eq!(at(&p, "b"), None);
    assert_eq!(p.ts(), 1400);
    assert_eq!(p.since().ts, Some(1400));

    // Replays and gaps say nothing of time: a topic known only through them raises
    // nothing when it goes; one moved by them keeps the ts of its last live message.
    let mut q = Positions::with_cap(1, 1000);
    let mut old = msg("x", "e", 1, 5000);
    old.replay = true;
    assert!(q.accept(&old, 1));
    assert!(q.skip(&gap("y", "e", 1, 4), 2));
    assert_eq!(at(&q, "x"), None);
    assert_eq!(q.ts(), 1000);
    assert!(q.accept(&msg("y", "e", 5, 1200), 3));
    assert!(q.skip(&gap("y", "e", 6, 9), 4));
    let mut again = msg("y", "e", 10, 6000);
    again.replay = true;
    assert!(q.accept(&again, 5));
    assert!(q.accept(&msg("z", "e", 1, 2000), 6));
    assert_eq!(at(&q, "y"), None);
    assert_eq!(q.ts(), 1200);
}

#[test]
fn a_local_clock_ahead_is_corrected_by_the_first_live_message() {
    let mut p = Positions::new(10_000);
    let mut r = msg("a", "e", 1, 100);
    r.retained = true;
    assert!(p.accept(&r, 1));
    r.retained = false;
    r.replay = true;
    assert!(p.accept(&r, 2));
    assert_eq!(
        p.ts(),
        10_000,
        "retained and replayed messages are older anyway"
    );
    assert!(p.accept(&msg("a", "e", 2, 9_000), 3));
    assert_eq!(p.ts(), 9_000);
    assert!(p.accept(&msg("a", "e", 3, 9_500), 4));
    assert_eq!(p.ts(), 9_000);
}

#[test]
fn a_users_since_is_where_it_starts() {
    let mut p = Positions::new(1000);
    let mut n = 0;
    let mut tick = || {
        n += 1;
        n
    };
    p.seed("t/a", &Since::at("e", 4), &mut tick);
    assert_eq!(at(&p, "t/a"), Some(("e".into(), 4)));
    let mut topics = BTreeMap::new();
    topics.insert(
        "t/b".to_owned(),
        Position {
            epoch: "e".into(),
            offset: 2,
        },
    );
    p.seed(
        "t/**",
        &Since::Topics(TopicPositions {
            topics,
            ts: Some(77),
        }),
        &mut tick,
    );
    assert_eq!(at(&p, "t/b"), Some(("e".into(), 2)));
    assert_eq!(p.ts(), 77);
    assert!(!p.accept(&msg("t/b", "e", 2, 80), 10));
    assert!(p.accept(&msg("t/b", "e", 3, 80), 11));
}

#[test]
fn subscriptions_of_one_pattern_recover_together() {
    let mut a = Positions::new(500);
    let mut b = Positions::new(600);
    assert!(a.accept(&msg("x", "e", 5, 600), 1));
    assert!(b.accept(&msg("x", "e", 3, 600), 2));
    assert!(a.accept(&msg("y", "old", 9, 600), 3));
    assert!(b.accept(&msg("y", "new", 2, 600), 4));
    assert!(b.accept(&msg("z", "e", 1, 700), 5));
    let m = merge([&a, &b]);
    assert_eq!(m.topics["x"].offset, 3, "the lower offset");
    assert_eq!(m.topics["y"].epoch, "new", "the later delivered epoch");
    assert_eq!(m.topics["z"].offset, 1);
    assert_eq!(m.ts, Some(500), "the earlier start");
    assert_eq!(merge([&a]), a.since());
    assert_eq!(merge(std::iter::empty()), TopicPositions::default());

    let mut c = Positions::new(0);
    let mut d = Positions::new(0);
    for i in 0..MAX_SINCE_TOPICS as u64 {
        assert!(c.accept(&msg(&format!("c/{i}"), "e", 1, 1), 10 + 2 * i));
        assert!(d.accept(&msg(&format!("d/{i}"), "e", 1, 1), 11 + 2 * i));
    }
    let m = merge([&c, &d]);
    assert_eq!(m.topics.len(), MAX_SINCE_TOPICS);
    assert!(m.topics.contains_key("c/999") && m.topics.contains_key("d/999"));
    assert!(!m.topics.contains_key("c/0") && !m.topics.contains_key("d/499"));
    assert!(m.topics.contains_key("d/500"));
}

#[test]
fn server_clock_prefers_the_servers_timestamps() {
    let mut c = ServerClock::default();
    let local = c.start_ts();
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(local <= wall - 1000 && local + 5000 > wall - 1000);
    c.saw(10_000);
    c.saw(9_000);
    let s = c.start_ts();
    assert!((9_000..9_100).contains(&s), "{s}");
}
