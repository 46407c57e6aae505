//! Cluster mode over two Redis shards (`--redis A,B`): real `redis-server`s and three real
//! `herald` nodes on loopback. Topics spread over both shards; offsets, history and the
//! topic list stay exact; a wildcard subscriber hears every shard; and under load (100k
//! messages from two publishers on two nodes) every subscriber gets everything, in each
//! publisher's order.

mod common;

use std::collections::HashMap;

use common::redis::{Redis, client, config_file, ready};
use common::{Binary, Raw, WAIT, http};
use serde_json::{Value, json};

async fn nodes(shards: &[&Redis], n: usize, name: &str, config: &str) -> Vec<Binary> {
    let urls: Vec<String> = shards.iter().map(|r| r.url()).collect();
    let urls = urls.join(",");
    let config = config_file(&format!("shards-{name}"), config);
    let mut v = Vec::new();
    for _ in 0..n {
        let b = Binary::spawn(&[
            "--listen",
            "127.0.0.1:0",
            "--redis",
            &urls,
            "--config",
            config.to_str().unwrap(),
        ]);
        ready(&b).await;
        v.push(b);
    }
    v
}

/// Keys of `redis` matching `pattern`.
async fn keys(redis: &Redis, pattern: &str) -> Vec<String> {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// Collects `n` messages (`(topic, offset, data)`).
async fn take(c: &mut Raw, n: usize) -> Vec<(String, u64, Value)> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let Some(v) = c.recv_within(WAIT).await else {
            panic!("{} of {n} messages arrived", out.len());
        };
        if v["op"] == "msg" {
            out.push((
                v["topic"].as_str().unwrap().to_owned(),
                v["offset"].as_u64().unwrap(),
                v["data"].clone(),
            ));
        } else {
            assert_ne!(v["op"], "gap", "{v}");
        }
    }
    out
}

const HISTORY: &str = r#"
[[topics]]
pattern = "**"
history = 5
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_keep_offsets_history_and_the_topic_list_exact() {
    let (a, b) = (Redis::start(), Redis::start());
    let n = nodes(&[&a, &b], 3, "history", HISTORY).await;
    let mut wild = client(&n[1]).await;
    wild.sub("s/*").await;
    let mut exact = client(&n[2]).await;
    exact.sub("s/7").await;
    let mut publisher = client(&n[0]).await;
    for round in 0..8 {
        for t in 0..20 {
            let ok = publisher
                .publish(&format!("s/{t}"), json!({"t": t, "r": round}))
                .await;
            assert_eq!(ok["op"], "ok", "{ok}");
            assert_eq!(ok["offset"], round + 1, "{ok}");
        }
    }
    // Every topic's offsets 1..=8, in order, on the wildcard (which hears both shards).
    let got = take(&mut wild, 160).await;
    let mut per: HashMap<String, Vec<u64>> = HashMap::new();
    for (topic, offset, _) in got {
        per.entry(topic).or_default().push(offset);
    }
    assert_eq!(per.len(), 20);
    assert!(per.values().all(|o| *o == (1..=8).collect::<Vec<u64>>()));
    let got = take(&mut exact, 8).await;
    assert!(got.iter().all(|(t, ..)| t == "s/7"));
    // The topics are spread over both servers.
    let (on_a, on_b) = (
        keys(&a, "herald:{s/*}:off").await,
        keys(&b, "herald:{s/*}:off").await,
    );
    assert_eq!(on_a.len() + on_b.len(), 20, "{on_a:?} {on_b:?}");
    assert!(!on_a.is_empty() && !on_b.is_empty(), "{on_a:?} {on_b:?}");
    // The topic list and history come from the right shard, seen from any node.
    let rows: Value = common::get_json(format!("http://{}/v1/topics?pattern=s/*", n[2].addr)).await;
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 20, "{rows:?}");
    assert!(rows.iter().all(|r| r["offset"] == 8), "{rows:?}");
    for t in [0, 1] {
        let url = format!("http://{}/v1/history?topic=s/{t}", n[1].addr);
        let page: Value = http().get(url).send().await.unwrap().json().await.unwrap();
        let offsets: Vec<u64> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["offset"].as_u64().unwrap())
            .collect();
        assert_eq!(offsets, vec![4, 5, 6, 7, 8], "s/{t}: {page}");
    }
}

/// Publishes `count` messages to `topics` in turn, `window` unanswered at most.
async fn publish_all(mut c: Raw, p: u64, topics: &'static [&'static str], count: u64) {
    const WINDOW: u64 = 256;
    let mut sent = 0;
    let mut acked = 0;
    while acked < count {
        while sent < count && sent - acked < WINDOW {
            let topic = topics[(sent % topics.len() as u64) as usize];
            c.send(json!({"op": "pub", "id": sent.to_string(), "topic": topic, "data": {"p": p, "n": sent}}))
                .await;
            sent += 1;
        }
        let v = c.recv().await;
        if v["op"] == "ok" {
            acked += 1;
        } else {
            panic!("publish refused: {v}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_every_subscriber_gets_everything_in_publisher_order() {
    const EACH: u64 = 50_000;
    let (a, b) = (Redis::start(), Redis::start());
    let n = nodes(&[&a, &b], 3, "load", "").await;
    // load/a and load/b live on different shards.
    let mut wild = client(&n[1]).await;
    wild.sub("load/*").await;
    let mut exact = client(&n[2]).await;
    exact.sub("load/a").await;
    let readers = [
        tokio::spawn(async move { take(&mut wild, 2 * EACH as usize).await }),
        tokio::spawn(async move { take(&mut exact, EACH as usize).await }),
    ];
    const TOPICS: &[&str] = &["load/a", "load/b"];
    let p0 = tokio::spawn(publish_all(client(&n[0]).await, 0, TOPICS, EACH));
    let p1 = tokio::spawn(publish_all(client(&n[1]).await, 1, TOPICS, EACH));
    p0.await.unwrap();
    p1.await.unwrap();
    let [wild, exact] = readers;
    for (name, got) in [
        ("wildcard", wild.await.unwrap()),
        ("exact", exact.await.unwrap()),
    ] {
        let mut offsets: HashMap<&str, u64> = HashMap::new();
        let mut last: HashMap<(String, u64), u64> = HashMap::new();
        for (topic, offset, data) in &got {
            // Each topic's offsets come one after the other: nothing lost, nothing twice.
            let o = offsets.entry(topic.as_str()).or_insert(0);
            assert_eq!(*o + 1, *offset, "{name}: {topic} after {o}");
            *o = *offset;
            // Each publisher's messages to a topic in the order it sent them.
            let (p, k) = (data["p"].as_u64().unwrap(), data["n"].as_u64().unwrap());
            if let Some(prev) = last.insert((topic.clone(), p), k) {
                assert!(
                    prev < k,
                    "{name}: publisher {p} on {topic}: {k} after {prev}"
                );
            }
        }
    }
}
