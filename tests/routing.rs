//! Foundation, end to end: wildcard routing, ordering at fan-out, seq/offset numbering.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::json;

/// Collects the topics of `msg` frames until one on `end` arrives.
async fn topics_until(c: &mut Raw, end: &str) -> BTreeSet<String> {
    let mut got = BTreeSet::new();
    loop {
        let m = c.recv_op("msg").await;
        let t = m["topic"].as_str().unwrap().to_owned();
        if t == end {
            return got;
        }
        assert!(got.insert(t.clone()), "{t} delivered twice");
    }
}

/// The wildcard table of PROTOCOL.md §1, through real sockets.
#[tokio::test]
async fn wildcard_table_end_to_end() {
    let srv = TestServer::start().await;
    #[rustfmt::skip]
    let table: &[(&str, &[&str], &[&str])] = &[
        ("chat/*", &["chat/a", "chat/general"], &["chat/a/b", "chat", "chatx/a"]),
        ("orders/**", &["orders", "orders/eu", "orders/eu/created"], &["order", "ordersx/eu", "x/orders"]),
        ("a/**/z", &["a/z", "a/b/z", "a/b/c/z"], &["a/z/b", "b/z", "a"]),
        ("**/created", &["created", "orders/created", "orders/eu/created"], &["orders/created/x"]),
        ("sensors/b?/temp", &["sensors/b7/temp", "sensors/bx/temp"], &["sensors/b77/temp", "sensors/b/temp"]),
        ("sensors/[ab]1", &["sensors/a1", "sensors/b1"], &["sensors/c1", "sensors/ab1"]),
        ("sensors/[a-c]x", &["sensors/ax", "sensors/cx"], &["sensors/dx"]),
        ("sensors/[!a]1", &["sensors/b1", "sensors/z1"], &["sensors/a1"]),
        ("chat/{general,random}", &["chat/general", "chat/random"], &["chat/other", "chat/general/x"]),
        ("chat/gen*", &["chat/general", "chat/gen"], &["chat/x", "chat/general/x"]),
        ("chat/general", &["chat/general"], &["chat/general/x", "chat/generals"]),
        ("**", &["x", "a/b/c"], &["$sys/x", "$inbox/a/b", "$presence/chat"]),
        ("*", &["x"], &["$sys", "a/b"]),
        ("*/x", &["a/x"], &["$sys/x"]),
        ("$sys/*", &["$sys/x"], &["sys/x", "$sys/x/y"]),
        ("$presence/**", &["$presence/chat/a"], &["presence/chat"]),
    ];
    for (pattern, yes, no) in table {
        let mut c = srv.client().await;
        c.sub(pattern).await;
        // A wildcard end marker: an exact subscription would join presence and publish
        // to `$presence/test/end`, which the `$presence/**` row would then see.
        c.sub("test/en[d]").await;
        for t in yes.iter().chain(no.iter()) {
            srv.bus.publish_json(t, &json!({"t": t})).unwrap();
        }
        srv.bus.publish_json("test/end", &json!(null)).unwrap();
        let got = topics_until(&mut c, "test/end").await;
        let want: BTreeSet<String> = yes.iter().map(|s| s.to_string()).collect();
        assert_eq!(got, want, "pattern {pattern}");
    }
}

/// 100 subscribers x 1,000 messages: every subscriber gets all, in order, seq 1..=1000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_subscribers_thousand_messages_in_order() {
    let srv = TestServer::start().await;
    let mut subs = Vec::new();
    for _ in 0..100 {
        let mut c = srv.client().await;
        c.sub("load/*").await;
        subs.push(c);
    }
    let mut publisher = srv.client().await;
    for i in 0..1000 {
        publisher
            .send(json!({"op": "pub", "topic": "load/a", "data": {"i": i}}))
            .await;
    }
    let ok = publisher.publish("load/b", json!("end")).await;
    assert_eq!(ok["offset"], 1);
    let readers = subs.into_iter().map(|mut c| {
        tokio::spawn(async move {
            for i in 0..1000u64 {
                let m = c.recv_op("msg").await;
                assert_eq!(m["seq"], i + 1);
                assert_eq!(m["data"]["i"], i);
                assert_eq!(m["offset"], i + 1);
                assert_eq!(m["topic"], "load/a");
            }
            let last = c.recv_op("msg").await;
            assert_eq!(last["topic"], "load/b");
            assert_eq!(last["seq"], 1001);
        })
    });
    for r in readers.collect::<Vec<_>>() {
        r.await.unwrap();
    }
}

/// A message matching several of a session's patterns is delivered once.
#[tokio::test]
async fn overlapping_patterns_deliver_once() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    for p in ["a/*", "a/b", "**", "a/{b,c}"] {
        c.sub(p).await;
    }
    let mut p = srv.connect().await;
    p.publish("a/b", json!(1)).await;
    p.publish("a/c", json!(2)).await;
    let m1 = c.recv_op("msg").await;
    let m2 = c.recv_op("msg").await;
    assert_eq!(
        (m1["seq"].clone(), m1["data"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(
        (m2["seq"].clone(), m2["data"].clone()),
        (json!(2), json!(2))
    );
    assert!(
        c.recv_within(std::time::Duration::from_millis(200))
            .await
            .is_none()
    );

    // Dropping one of the patterns keeps the others.
    c.send(json!({"op": "unsub", "id": "u", "pattern": "a/b"}))
        .await;
    assert_eq!(c.recv_op_id("u").await["op"], "ok");
    p.publish("a/b", json!(3)).await;
    assert_eq!(c.recv_op("msg").await["data"], 3);
    // Unsubscribing from everything stops delivery; unsub of an unknown pattern is ok.
    for pat in ["a/*", "**", "a/{b,c}", "never/subscribed"] {
        c.send(json!({"op": "unsub", "id": "u", "pattern": pat}))
            .await;
        assert_eq!(c.recv_op_id("u").await["op"], "ok");
    }
    p.publish("a/b", json!(4)).await;
    assert!(
        c.recv_within(std::time::Duration::from_millis(200))
            .await
            .is_none()
    );
}

/// Offsets rise per topic from 1 under one epoch; `seq` is per session across topics.
#[tokio::test]
async fn offsets_epochs_and_seq() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    c.sub("o/*").await;
    let mut p = srv.connect().await;
    let a1 = p.publish("o/a", json!(1)).await;
    let a2 = p.publish("o/a", json!(2)).await;
    let b1 = p.publish("o/b", json!(3)).await;
    assert_eq!(
        (
            a1["offset"].clone(),
            a2["offset"].clone(),
            b1["offset"].clone()
        ),
        (json!(1), json!(2), json!(1))
    );
    assert_eq!(a1["epoch"], a2["epoch"]);
    assert_eq!(a1["duplicate"], false);
    let ms = [
        c.recv_op("msg").await,
        c.recv_op("msg").await,
        c.recv_op("msg").await,
    ];
    assert_eq!(
        ms.iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(ms[1]["offset"], 2);
    assert_eq!(ms[1]["epoch"], a1["epoch"]);
    assert!(ms[0]["ts"].as_u64().unwrap() > 1_600_000_000_000);
}

/// Subscribing twice to the same pattern is idempotent; a session holds a bounded number of
/// subscriptions.
#[tokio::test]
async fn idempotent_subscribe_and_subscription_limit() {
    let mut cfg = config();
    cfg.limits.max_subscriptions = 3;
    let srv = TestServer::with_config(cfg).await;
    let mut c = srv.client().await;
    c.sub("x/1").await;
    c.sub("x/1").await;
    c.sub("x/2").await;
    c.sub("x/3").await;
    let e = c.request(json!({"op": "sub", "pattern": "x/4"})).await;
    assert_eq!(e["code"], "too_many_subscriptions", "{e}");
    srv.bus.publish_json("x/1", &json!(1)).unwrap();
    assert_eq!(c.recv_op("msg").await["seq"], 1);
    assert!(
        c.recv_within(std::time::Duration::from_millis(200))
            .await
            .is_none()
    );
}
