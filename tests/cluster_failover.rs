//! Loss-free failure handling in cluster mode, with a real `redis-server` and three real
//! `herald` nodes on loopback: manual-ack group messages held by a node that is killed are
//! redelivered by another node (and dead-lettered there once `max_deliveries` is reached),
//! and with `history = 0` what a node's feed missed while cut from Redis reaches its
//! subscribers as an exact topic `gap`, never as silence.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::redis::{Redis, client, config_file};
use common::{Binary, Raw, http};
use serde_json::{Value, json};

const CONFIG: &str = r#"
[session]
ttl = "4s"

[[topics]]
pattern = "jobs/**"
history = 0
ack_wait = "3s"
max_deliveries = 2

[[topics]]
pattern = "**"
history = 0
"#;

async fn nodes(redis: &Redis, n: usize) -> Vec<Binary> {
    redis.nodes(n, &config_file("failover", CONFIG)).await
}

async fn join_group(c: &mut Raw, pattern: &str, group: &str) {
    c.send(json!({"op": "sub", "id": "s", "pattern": pattern, "group": group, "ack": "manual"}))
        .await;
    let ok = c.recv_op_id("s").await;
    assert_eq!(ok["op"], "ok", "{ok}");
}

/// The next `n` frames of `op`, waiting at most `limit` in all (other frames skipped).
async fn take(c: &mut Raw, op: &str, n: usize, limit: Duration) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.recv_within(left).await {
            Some(v) if v["op"] == op => out.push(v),
            Some(_) => {}
            None => panic!("{} of {n} {op} frames within {limit:?}: {out:?}", out.len()),
        }
    }
    out
}

async fn wait_ready(b: &Binary, ready: bool) {
    let url = format!("http://{}/readyz", b.addr);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let up = http()
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if up == ready {
            return;
        }
        assert!(Instant::now() < deadline, "readyz never became {ready}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (a) of issue 21 part 3: a manual-ack group with a member on node A and one on node B.
/// The messages A's member got and did not ack are redelivered to B's member once A is
/// killed (`redelivered`, their deliveries counted on), the acked ones are not, and with
/// `max_deliveries` reached on B they go to `$dlq/<topic>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_unacked_group_messages_are_redelivered_by_another_node() {
    let redis = Redis::start();
    let mut n = nodes(&redis, 3).await;
    let mut dlq = client(&n[2]).await;
    dlq.sub("$dlq/jobs/a").await;
    let mut worker_a = client(&n[0]).await;
    join_group(&mut worker_a, "jobs/a", "w").await;
    let mut publisher = client(&n[2]).await;
    for i in 0..6 {
        publisher.publish("jobs/a", json!({"job": i})).await;
    }
    let got = take(&mut worker_a, "msg", 6, Duration::from_secs(10)).await;
    // Two are acked before the node dies: those are done.
    for m in &got[..2] {
        worker_a.send(json!({"op": "ack", "seq": m["seq"]})).await;
    }
    let unacked: BTreeMap<u64, Value> = got[2..]
        .iter()
        .map(|m| (m["offset"].as_u64().unwrap(), m["data"].clone()))
        .collect();
    let mut worker_b = client(&n[1]).await;
    join_group(&mut worker_b, "jobs/a", "w").await;
    // Long enough for the acks to reach Redis, well within `ack_wait` (A would redeliver
    // to its own member then).
    tokio::time::sleep(Duration::from_millis(500)).await;
    n[0].signal("KILL");
    n[0].wait(common::WAIT);

    let redelivered = take(&mut worker_b, "msg", unacked.len(), Duration::from_secs(20)).await;
    let mut seen = BTreeMap::new();
    for m in &redelivered {
        assert_eq!(m["redelivered"], true, "{m}");
        assert_eq!(m["deliveries"], 2, "{m}");
        assert_eq!(m["topic"], "jobs/a", "{m}");
        seen.insert(m["offset"].as_u64().unwrap(), m["data"].clone());
    }
    assert_eq!(
        seen, unacked,
        "every unacked message, once, and no acked one"
    );

    // B's member does not ack either: the second delivery was the last one.
    let dead = take(&mut dlq, "msg", unacked.len(), Duration::from_secs(15)).await;
    let mut lettered = BTreeSet::new();
    for d in &dead {
        assert_eq!(d["data"]["topic"], "jobs/a", "{d}");
        assert_eq!(d["data"]["deliveries"], 2, "{d}");
        assert!(
            lettered.insert(d["data"]["data"]["job"].as_u64().unwrap()),
            "{d}"
        );
    }
    let jobs: BTreeSet<u64> = unacked
        .values()
        .map(|d| d["job"].as_u64().unwrap())
        .collect();
    assert_eq!(lettered, jobs);
    // And nothing comes a third time, nor twice to the dead-letter topic.
    let late = worker_b.recv_within(Duration::from_secs(4)).await;
    assert!(late.as_ref().is_none_or(|v| v["op"] != "msg"), "{late:?}");
    let late = dlq.recv_within(Duration::from_millis(500)).await;
    assert!(late.as_ref().is_none_or(|v| v["op"] != "msg"), "{late:?}");
}

/// A dead node's unacked messages of a group with no member left anywhere wait for one
/// for the session TTL (as on one node), then a live node sends them to `$dlq/<topic>`,
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_messages_of_a_group_without_members_go_to_the_dlq() {
    let redis = Redis::start();
    let mut n = nodes(&redis, 3).await;
    let mut dlq = client(&n[2]).await;
    dlq.sub("$dlq/jobs/b").await;
    let mut worker = client(&n[0]).await;
    join_group(&mut worker, "jobs/b", "solo").await;
    let mut publisher = client(&n[1]).await;
    for i in 0..3 {
        publisher.publish("jobs/b", json!(i)).await;
    }
    take(&mut worker, "msg", 3, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    n[0].signal("KILL");
    n[0].wait(common::WAIT);
    let dead = take(&mut dlq, "msg", 3, Duration::from_secs(25)).await;
    let data: BTreeSet<u64> = dead
        .iter()
        .map(|d| {
            assert_eq!(d["data"]["deliveries"], 1, "{d}");
            d["data"]["data"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(data, BTreeSet::from([0, 1, 2]));
    let late = dlq.recv_within(Duration::from_secs(2)).await;
    assert!(
        late.as_ref().is_none_or(|v| v["op"] != "msg"),
        "once each: {late:?}"
    );
}

/// (b) of issue 21 part 3: with `history = 0`, a subscriber on node B whose feed is cut
/// from Redis (only the pub/sub connections: `CLIENT KILL TYPE pubsub`, and subscribing
/// refused for a while so that they stay down) while node A publishes gets, once B is
/// back, one topic `gap` per topic with exactly the missed offsets, then the later
/// messages. That holds for a topic B had messages of, for one that had messages only
/// before B subscribed, and for one reached through a wildcard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_missed_while_the_feed_was_cut_arrive_as_an_exact_gap() {
    let redis = Redis::start();
    let n = nodes(&redis, 3).await;
    let mut publisher = client(&n[0]).await;
    // Published before the subscriber is there: not owed to it.
    for i in 0..4 {
        publisher.publish("live/y", json!(i)).await;
    }
    for i in 0..2 {
        publisher.publish("wild/z", json!(i)).await;
    }
    let mut sub = client(&n[1]).await;
    sub.sub("live/x").await;
    sub.sub("live/y").await;
    sub.sub("wild/*").await;
    for i in 0..3 {
        publisher.publish("live/x", json!(i)).await;
    }
    let first = take(&mut sub, "msg", 3, common::WAIT).await;
    let offsets: Vec<u64> = first
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![1, 2, 3]);
    let epoch = first[0]["epoch"].clone();
    // The node learns where the quiet topics stand while its feed is up.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    redis.cli(&["ACL", "SETUSER", "default", "-subscribe", "-psubscribe"]);
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    wait_ready(&n[1], false).await;
    for i in 3..8 {
        let ok = publisher.publish("live/x", json!(i)).await;
        assert_eq!(ok["offset"], i + 1, "{ok}");
    }
    for i in 4..6 {
        publisher.publish("live/y", json!(i)).await;
    }
    publisher.publish("wild/z", json!(2)).await;
    redis.cli(&["ACL", "SETUSER", "default", "+@all"]);
    wait_ready(&n[1], true).await;

    let mut gaps = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while gaps.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(v) = sub.recv_within(left).await else {
            panic!("{} gaps after the reconnect: {gaps:?}", gaps.len());
        };
        assert_ne!(
            v["op"], "msg",
            "a missed message after all, or silence: {v}"
        );
        if v["op"] == "gap" {
            gaps.push(v);
        }
    }
    let mut by_topic = BTreeMap::new();
    for g in gaps {
        assert_eq!(g["reason"], "history", "{g}");
        assert!(g.get("from_seq").is_none(), "a topic gap: {g}");
        let t = g["topic"].as_str().unwrap().to_owned();
        assert!(
            by_topic
                .insert(
                    t,
                    (
                        g["from_offset"].clone(),
                        g["to_offset"].clone(),
                        g["epoch"].clone()
                    )
                )
                .is_none(),
            "one gap per topic"
        );
    }
    assert_eq!(by_topic["live/x"], (json!(4), json!(8), epoch));
    assert_eq!(
        (&by_topic["live/y"].0, &by_topic["live/y"].1),
        (&json!(5), &json!(6))
    );
    assert_eq!(
        (&by_topic["wild/z"].0, &by_topic["wild/z"].1),
        (&json!(3), &json!(3))
    );
    // Later messages flow again, and nothing of the gap comes after all.
    publisher.publish("live/x", json!(8)).await;
    publisher.publish("live/y", json!(6)).await;
    let later = take(&mut sub, "msg", 2, common::WAIT).await;
    let got: BTreeSet<(String, u64)> = later
        .iter()
        .map(|m| {
            (
                m["topic"].as_str().unwrap().to_owned(),
                m["offset"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        BTreeSet::from([("live/x".to_owned(), 9), ("live/y".to_owned(), 7)])
    );
    let late = sub.recv_within(Duration::from_millis(500)).await;
    assert!(late.is_none(), "{late:?}");
}
