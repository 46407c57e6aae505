//! History, offsets, `rewind`, `since` and retained messages (PROTOCOL.md §5), over real
//! sockets and the HTTP API, with the in-memory store.

mod common;

use std::time::Duration;

use common::{Raw, TestServer, config, http};
use herald::config::TopicConfig;
use serde_json::{Value, json};

fn with_history(pattern: &str, history: usize) -> herald::Config {
    let mut c = config();
    c.topics.push(TopicConfig {
        pattern: pattern.into(),
        history,
        ..TopicConfig::default()
    });
    c
}

async fn publish_n(c: &mut Raw, topic: &str, n: u64) -> Vec<Value> {
    let mut acks = Vec::new();
    for i in 1..=n {
        acks.push(c.publish(topic, json!({ "n": i })).await);
    }
    acks
}

/// Reads `n` messages, returning their `data.n` values and the frames.
async fn read_msgs(c: &mut Raw, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        out.push(c.recv_op("msg").await);
    }
    out
}

#[tokio::test]
async fn history_op_returns_latest_and_pages_forward() {
    let server = TestServer::with_config(with_history("chat/**", 5)).await;
    let mut c = server.client().await;
    let acks = publish_n(&mut c, "chat/general", 8).await;
    let epoch = acks[0]["epoch"].clone();
    assert_eq!(acks[7]["offset"], 8);

    let ok = c
        .request(json!({"op": "history", "topic": "chat/general"}))
        .await;
    assert_eq!(ok["op"], "ok", "{ok}");
    assert_eq!(ok["epoch"], epoch);
    let offsets: Vec<u64> = ok["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [4, 5, 6, 7, 8], "only the last 5 are kept");
    assert_eq!(ok["messages"][0]["data"], json!({"n": 4}));
    assert_eq!(ok["messages"][0]["topic"], "chat/general");
    assert!(ok["messages"][0]["ts"].as_u64().unwrap() > 0);

    let ok = c
        .request(json!({"op": "history", "topic": "chat/general", "since": 5, "limit": 2}))
        .await;
    let offsets: Vec<u64> = ok["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [6, 7]);

    // Topics without a [[topics]] entry keep no history.
    c.publish("other/x", json!(1)).await;
    let ok = c
        .request(json!({"op": "history", "topic": "other/x"}))
        .await;
    assert_eq!(ok["messages"], json!([]));

    // Bad input.
    let e = c
        .request(json!({"op": "history", "topic": "chat/general", "limit": 5000}))
        .await;
    assert_eq!(
        (e["op"].as_str(), e["code"].as_str()),
        (Some("error"), Some("bad_request"))
    );
    let e = c
        .request(json!({"op": "history", "topic": "chat//x"}))
        .await;
    assert_eq!(e["code"], "bad_topic");

    // The same over HTTP.
    let r = http()
        .get(server.http("/v1/history?topic=chat/general&since=6"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["epoch"], epoch);
    assert_eq!(v["messages"].as_array().unwrap().len(), 2);
    let r = http()
        .get(server.http("/v1/history?topic=a/*"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "bad_topic");
    let r = http().get(server.http("/v1/history")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    server.stop().await;
}

#[tokio::test]
async fn history_ttl_drops_old_messages() {
    let mut c = config();
    c.topics.push(TopicConfig {
        pattern: "ticks".into(),
        history: 100,
        history_ttl: Some(Duration::from_millis(300)),
        ..TopicConfig::default()
    });
    let server = TestServer::with_config(c).await;
    let mut c = server.client().await;
    publish_n(&mut c, "ticks", 3).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    c.publish("ticks", json!({"n": 4})).await;
    let ok = c.request(json!({"op": "history", "topic": "ticks"})).await;
    let msgs = ok["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 1, "{ok}");
    assert_eq!(msgs[0]["offset"], 4);
    server.stop().await;
}

#[tokio::test]
async fn rewind_replays_latest_per_topic_before_live() {
    let server = TestServer::with_config(with_history("feed/**", 10)).await;
    let mut p = server.client().await;
    publish_n(&mut p, "feed/a", 4).await;
    publish_n(&mut p, "feed/b", 1).await;

    let mut s = server.client().await;
    let ok = s
        .request(json!({"op": "sub", "pattern": "feed/*", "rewind": 2}))
        .await;
    assert_eq!(ok["op"], "ok", "{ok}");
    p.publish("feed/a", json!({"n": 5})).await;
    let msgs = read_msgs(&mut s, 4).await;
    let seen: Vec<(String, u64, bool)> = msgs
        .iter()
        .map(|m| {
            (
                m["topic"].as_str().unwrap().to_owned(),
                m["offset"].as_u64().unwrap(),
                m["replay"] == true,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("feed/a".into(), 3, true),
            ("feed/a".into(), 4, true),
            ("feed/b".into(), 1, true),
            ("feed/a".into(), 5, false),
        ]
    );
    let seqs: Vec<u64> = msgs.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    server.stop().await;
}

#[tokio::test]
async fn since_recovers_missed_messages_or_says_it_cannot() {
    let server = TestServer::with_config(with_history("orders/**", 3)).await;
    let mut p = server.client().await;
    let acks = publish_n(&mut p, "orders/eu", 5).await;
    let epoch = acks[0]["epoch"].as_str().unwrap().to_owned();

    // Offsets 3, 4, 5 are held: resuming after 3 recovers 4 and 5.
    let mut s = server.client().await;
    let ok = s
        .request(json!({"op": "sub", "pattern": "orders/eu",
                        "since": {"epoch": epoch, "offset": 3}}))
        .await;
    assert_eq!(ok["recovered"], true, "{ok}");
    let msgs = read_msgs(&mut s, 2).await;
    assert_eq!(msgs[0]["offset"], 4);
    assert_eq!(msgs[1]["offset"], 5);
    assert_eq!(msgs[0]["replay"], true);

    // After 1: offset 2 is gone, so not recovered; what is held is still replayed.
    let mut s2 = server.client().await;
    let ok = s2
        .request(json!({"op": "sub", "pattern": "orders/eu",
                        "since": {"epoch": epoch, "offset": 1}}))
        .await;
    assert_eq!(ok["recovered"], false, "{ok}");
    let msgs = read_msgs(&mut s2, 3).await;
    assert_eq!(msgs[0]["offset"], 3);

    // Up to date: recovered, nothing replayed, then live.
    let mut s3 = server.client().await;
    let ok = s3
        .request(json!({"op": "sub", "pattern": "orders/eu",
                        "since": {"epoch": epoch, "offset": 5}}))
        .await;
    assert_eq!(ok["recovered"], true, "{ok}");
    // Another epoch: not recovered.
    let ok = s3
        .request(json!({"op": "sub", "pattern": "orders/us",
                        "since": {"epoch": "zzzz", "offset": 5}}))
        .await;
    assert_eq!(ok["recovered"], false, "{ok}");
    p.publish("orders/eu", json!({"n": 6})).await;
    let m = s3.recv_op("msg").await;
    assert_eq!((m["offset"].as_u64(), m.get("replay")), (Some(6), None));

    // `since` needs an exact topic.
    let e = s3
        .request(json!({"op": "sub", "pattern": "orders/*",
                        "since": {"epoch": epoch, "offset": 1}}))
        .await;
    assert_eq!(e["code"], "bad_request", "{e}");
    server.stop().await;
}

#[tokio::test]
async fn retained_message_comes_first_and_null_clears_it() {
    let server = TestServer::start().await;
    let mut p = server.client().await;
    let ok = p
        .request(json!({"op": "pub", "topic": "status/door", "data": "open", "retain": true}))
        .await;
    assert_eq!(ok["offset"], 1);
    p.publish("status/door", json!("ajar")).await; // not retained
    p.request(json!({"op": "pub", "topic": "status/light", "data": "on", "retain": true}))
        .await;

    let mut s = server.client().await;
    s.sub("status/*").await;
    let msgs = read_msgs(&mut s, 2).await;
    let got: Vec<(Value, Value)> = msgs
        .iter()
        .map(|m| (m["data"].clone(), m["retained"].clone()))
        .collect();
    assert_eq!(
        got,
        [(json!("open"), json!(true)), (json!("on"), json!(true))]
    );
    p.publish("status/door", json!("closed")).await;
    let live = s.recv_op("msg").await;
    assert_eq!(
        (live["data"].clone(), live.get("retained")),
        (json!("closed"), None)
    );

    // Clearing: later subscribers get nothing for that topic.
    p.request(json!({"op": "pub", "topic": "status/door", "data": null, "retain": true}))
        .await;
    let mut s2 = server.client().await;
    s2.sub("status/door").await;
    assert!(s2.recv_within(Duration::from_millis(300)).await.is_none());

    // Retained over HTTP too.
    let r = http()
        .post(server.http("/v1/publish"))
        .json(&json!({"topic": "status/fan", "data": {"rpm": 900}, "retain": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s2.sub("status/fan").await;
    let m = s2.recv_op("msg").await;
    assert_eq!(
        (m["data"]["rpm"].as_u64(), m["retained"].as_bool()),
        (Some(900), Some(true))
    );
    server.stop().await;
}
