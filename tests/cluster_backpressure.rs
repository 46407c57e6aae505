//! Backpressure across nodes (DESIGN.md, "Cluster mode", "Overload across nodes"), with a
//! real `redis-server` and real `herald` nodes on loopback: a node that falls behind its
//! feed asks every node to hold publishes, a node holds its publishes while asked but never
//! longer than its cap, and once nobody asks publishes go straight through again.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::redis::{Redis, client, config_file};
use common::{Binary, get_text};
use serde_json::json;

const CONFIG: &str = r#"
[[topics]]
pattern = "**"
history = 0
"#;

/// A counter of a node's `/metrics`.
async fn counter(node: &Binary, name: &str) -> f64 {
    let text = get_text(format!("http://{}/metrics", node.addr)).await;
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            (key == name).then(|| value.parse().ok())?
        })
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
}

/// `PUBLISH channel payload` on a plain connection of its own, as any Redis client would.
fn publish(conn: &mut std::net::TcpStream, channel: &str, payload: &str) {
    let mut cmd = String::from("*3\r\n$7\r\nPUBLISH\r\n");
    for a in [channel, payload] {
        cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    conn.write_all(cmd.as_bytes()).unwrap();
    let mut reply = [0u8; 64];
    let n = conn.read(&mut reply).unwrap();
    assert_eq!(reply[0], b':', "{:?}", String::from_utf8_lossy(&reply[..n]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_wait_while_a_node_asks_and_never_longer_than_the_cap() {
    let redis = Redis::start();
    let nodes = redis
        .nodes(1, &config_file("backpressure-hold", CONFIG))
        .await;
    let node = &nodes[0];
    let mut c = client(node).await;
    assert_eq!(c.publish("t/a", json!(0)).await["op"], "ok");
    assert_eq!(
        counter(node, "herald_redis_publishes_held_total").await,
        0.0
    );

    // A node nobody else knows asks again and again, as one that lags for good would.
    let port = redis.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let asking = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                publish(&mut conn, "herald:slow", "ghost 20");
                std::thread::sleep(Duration::from_millis(5));
            }
            publish(&mut conn, "herald:slow", "ghost 0");
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Each publish waits for the cap (100 ms), then goes: slowed, never stopped.
    let started = Instant::now();
    for i in 1..=5 {
        let t = Instant::now();
        let ok = c.publish("t/a", json!(i)).await;
        assert_eq!(ok["op"], "ok", "{ok}");
        assert!(
            t.elapsed() >= Duration::from_millis(50),
            "{:?}",
            t.elapsed()
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let held = counter(node, "herald_redis_publishes_held_total").await;
    assert!(held >= 5.0, "{held}");
    let waited = counter(node, "herald_redis_publish_hold_seconds_total").await;
    assert!(waited >= 0.25, "{waited} s held in all");

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    asking.join().unwrap();
    // Released (and any hold heard lapses within 20 ms): nothing waits any more.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 6..26 {
        assert_eq!(c.publish("t/a", json!(i)).await["op"], "ok");
    }
    assert_eq!(
        counter(node, "herald_redis_publishes_held_total").await,
        held
    );
    // The asking was another node's: this one never asked.
    assert_eq!(counter(node, "herald_redis_holds_asked_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_its_feed_holds_the_publisher_on_another_node() {
    let redis = Redis::start();
    let nodes = redis
        .nodes(2, &config_file("backpressure-lag", CONFIG))
        .await;
    let (front, back) = (&nodes[0], &nodes[1]);
    let mut readers = Vec::new();
    for _ in 0..4 {
        let mut s = client(back).await;
        assert_eq!(s.sub("load/x").await["op"], "ok");
        readers.push(tokio::spawn(async move {
            // Every message or gap, until the last message.
            let mut seen = 0u64;
            loop {
                let v = s.recv_within(Duration::from_secs(20)).await;
                let Some(v) = v else {
                    panic!("silence after {seen} messages")
                };
                match v["op"].as_str() {
                    Some("msg") if v["data"] == "end" => return seen,
                    Some("msg") => seen += 1,
                    _ => {}
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The publisher sends flat out; the subscribers' node stops for a moment and comes back
    // to a feed far ahead of it.
    let mut p = client(front).await;
    let started = Instant::now();
    let (mut stopped, mut resumed) = (false, false);
    let mut sent = 0u64;
    while started.elapsed() < Duration::from_millis(2000) {
        let t = started.elapsed();
        if !stopped && t >= Duration::from_millis(200) {
            back.signal("STOP");
            stopped = true;
        }
        if !resumed && t >= Duration::from_millis(600) {
            back.signal("CONT");
            resumed = true;
        }
        p.send(json!({"op": "pub", "topic": "load/x", "data": sent}))
            .await;
        sent += 1;
    }
    assert_eq!(p.publish("load/x", json!("end")).await["op"], "ok");
    for r in readers {
        let seen = r.await.unwrap();
        assert!(seen > 0 && seen <= sent, "{seen} of {sent}");
    }
    let asked = counter(back, "herald_redis_holds_asked_total").await;
    assert!(asked >= 1.0, "the lagging node never asked for a hold");
    let held = counter(front, "herald_redis_publishes_held_total").await;
    assert!(
        held >= 1.0,
        "the publisher's node never held a publish ({asked} asks)"
    );
}
