//! Write coalescing (`session.write_delay`): a streaming connection's writer waits out the
//! interval before its next write, and nothing else changes: order, the seq invariant, gaps,
//! slow consumers, answers that do not wait, and shutdown writing what was held. Run with the
//! delay on and off. (What it saves, syscalls per delivery, is measured in the benchmark.)

mod common;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{Raw, TestServer, WAIT};
use herald::config::WriteDelay;

async fn server(delay: WriteDelay, buffer_messages: usize) -> TestServer {
    let mut c = common::config();
    c.session.write_delay = delay;
    c.session.buffer_messages = buffer_messages;
    TestServer::with_config(c).await
}

async fn subscriber(s: &TestServer, pattern: &str) -> Raw {
    let mut c = s.client().await;
    c.sub(pattern).await;
    c
}

/// Publishes over one socket without waiting for the acks.
async fn blast(s: &TestServer, topic: &str, n: usize) -> Raw {
    let mut p = s.client().await;
    for i in 0..n {
        p.send(json!({"op": "pub", "topic": topic, "data": i}))
            .await;
    }
    p
}

/// Reads until seq `last` is covered; returns the messages' data and the gaps, in order.
async fn read_to(c: &mut Raw, last: u64) -> (Vec<u64>, Vec<(u64, u64)>) {
    let (mut data, mut gaps, mut covered) = (Vec::new(), Vec::new(), 0u64);
    while covered < last {
        let v = c.recv().await;
        match v["op"].as_str() {
            Some("msg") => {
                let seq = v["seq"].as_u64().unwrap();
                assert_eq!(seq, covered + 1, "seqs in order, none twice: {v}");
                covered = seq;
                // (Non-numbers: what `fill_sockets` sent.)
                if let Some(d) = v["data"].as_u64() {
                    data.push(d);
                }
            }
            Some("gap") => {
                let (from, to) = (
                    v["from_seq"].as_u64().unwrap(),
                    v["to_seq"].as_u64().unwrap(),
                );
                assert_eq!(from, covered + 1, "a gap starts where the stream is: {v}");
                covered = to;
                gaps.push((from, to));
            }
            _ => {}
        }
    }
    (data, gaps)
}

#[tokio::test]
async fn a_held_write_waits_at_most_the_interval_and_an_idle_one_not_at_all() {
    let s = server(WriteDelay::Every(Duration::from_millis(300)), 1024).await;
    let mut sub = subscriber(&s, "t").await;
    let mut p = s.client().await;
    // The first message goes out at once: nothing was written before.
    let t0 = Instant::now();
    p.publish("t", json!(1)).await;
    assert_eq!(sub.recv_op("msg").await["data"], 1);
    let first = t0.elapsed();
    // The next one, right after a write, waits out the interval...
    p.publish("t", json!(2)).await;
    p.publish("t", json!(3)).await;
    let m = sub.recv_op("msg").await;
    let held = t0.elapsed();
    assert_eq!(m["data"], 2);
    assert!(held >= Duration::from_millis(250), "held {held:?}");
    assert!(
        held < Duration::from_millis(300) + WAIT / 4,
        "held {held:?}"
    );
    // ...and goes out in the same write as the one behind it.
    assert_eq!(
        sub.recv_within(Duration::from_millis(50)).await.unwrap()["data"],
        3
    );
    // After a quiet moment a message goes out at once again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let t1 = Instant::now();
    p.publish("t", json!(4)).await;
    assert_eq!(sub.recv_op("msg").await["data"], 4);
    assert!(
        t1.elapsed() < first + Duration::from_millis(150),
        "{:?}",
        t1.elapsed()
    );
    s.stop().await;
}

#[tokio::test]
async fn answers_are_not_held_by_a_waiting_writer() {
    let s = server(WriteDelay::Every(Duration::from_secs(3)), 1024).await;
    // One socket subscribes and publishes: after a message was written, its writer holds
    // the next message for 3 s, but the `ok` of its own publish must not wait.
    let mut c = subscriber(&s, "t").await;
    c.publish("t", json!(0)).await;
    assert_eq!(c.recv_op("msg").await["data"], 0);
    let t0 = Instant::now();
    c.send(json!({"op": "pub", "id": "x", "topic": "t", "data": 1}))
        .await;
    let ok = c.recv_op_id("x").await;
    assert_eq!(ok["op"], "ok");
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    s.stop().await;
}

#[tokio::test]
async fn order_and_seqs_hold_with_the_delay_on_and_off() {
    for delay in [
        WriteDelay::Off,
        WriteDelay::Every(Duration::from_millis(2)),
        WriteDelay::Auto,
    ] {
        let s = server(delay, 100_000).await;
        let mut subs = Vec::new();
        for _ in 0..5 {
            subs.push(subscriber(&s, "o/**").await);
        }
        let _p = blast(&s, "o/x", 20_000).await;
        for sub in subs.iter_mut() {
            let (data, gaps) = read_to(sub, 20_000).await;
            assert!(gaps.is_empty(), "{delay:?}");
            assert_eq!(
                data,
                (0..20_000).collect::<Vec<u64>>(),
                "{delay:?}: in publish order"
            );
        }
        s.stop().await;
    }
}

#[tokio::test]
async fn a_slow_reader_gets_exact_gaps_with_the_delay_on_and_off() {
    for delay in [WriteDelay::Off, WriteDelay::Every(Duration::from_millis(2))] {
        let s = server(delay, 64).await;
        // A reader that does not read, with a full socket (see `fill_sockets`).
        let mut slow = common::connect_small_window(s.addr).await;
        slow.hello().await;
        slow.sub("g").await;
        slow.sub("g/fill").await;
        let mut quick = subscriber(&s, "g").await;
        common::fill_sockets(&mut s.client().await, "g/fill").await;
        let mut p = blast(&s, "g", 5_000).await;
        // The publisher is never slowed by the reader that does not read.
        p.send(json!({"op": "pub", "id": "last", "topic": "g", "data": 5_000}))
            .await;
        assert_eq!(p.recv_op_id("last").await["offset"], 5_001);
        // A reader that keeps up: every seq once, as a message or in a gap.
        let (data, gaps) = read_to(&mut quick, 5_001).await;
        let covered: u64 = gaps.iter().map(|(f, t)| t - f + 1).sum();
        assert_eq!(data.len() as u64 + covered, 5_001, "{delay:?}");
        // Every seq once, as a message or in a gap (`read_to` checks it).
        let (data, gaps) = read_to(&mut slow, common::FILL + 5_001).await;
        assert!(!gaps.is_empty(), "{delay:?}: the slow reader lost some");
        let mut sorted = data.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, data, "{delay:?}: what it got is in order");
        s.stop().await;
    }
}

#[tokio::test]
async fn shutdown_writes_what_a_waiting_writer_held() {
    let s = server(WriteDelay::Every(Duration::from_secs(5)), 1024).await;
    let mut sub = subscriber(&s, "h").await;
    let mut p = s.client().await;
    p.publish("h", json!(1)).await;
    assert_eq!(sub.recv_op("msg").await["data"], 1);
    // Held for 5 s after that write...
    for i in 2..=4 {
        p.publish("h", json!(i)).await;
    }
    assert!(sub.recv_within(Duration::from_millis(200)).await.is_none());
    // ...until the server shuts down: the flush writes them, then `bye`.
    let t0 = Instant::now();
    s.handle.shutdown();
    let mut got: Vec<Value> = Vec::new();
    loop {
        let v = sub.recv().await;
        if v["op"] == "bye" {
            break;
        }
        if v["op"] == "msg" {
            got.push(v["data"].clone());
        }
    }
    assert_eq!(got, [json!(2), json!(3), json!(4)]);
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
}
