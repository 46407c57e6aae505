//! The Rust client's recovery of lost sessions (`sub.since {topics, ts}` on a new session)
//! and its failover across URLs, against the real binary: kill -9, restarts on the same
//! port with the same data directory, history shorter than the outage, a second node.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Binary, WAIT};
use herald_client::{
    Client, ClientEvent, ClientOptions, Delivery, Subscription, TopicGapFrame, TopicGapReason,
};
use serde_json::{Value, json};

/// A fresh, empty directory under the system temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "herald-client-recovery-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A server with `dir/herald.toml` (written from `toml`) and `dir/data`, on `listen`.
fn start(dir: &Path, toml: &str, listen: &str) -> Binary {
    let config = dir.join("herald.toml");
    std::fs::write(&config, toml).unwrap();
    Binary::spawn(&[
        "--listen",
        listen,
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        dir.join("data").to_str().unwrap(),
    ])
}

/// kill -9, and waits until the process is gone (its port and data directory are free).
fn kill_9(mut bin: Binary) -> SocketAddr {
    bin.child.kill().unwrap();
    bin.child.wait().unwrap();
    bin.addr
}

/// SIGTERM and a clean exit.
async fn stop(mut bin: Binary) {
    bin.signal("TERM");
    let status = tokio::task::spawn_blocking(move || bin.wait(Duration::from_secs(20)))
        .await
        .unwrap();
    assert_eq!(status, Some(0), "clean exit");
}

/// Reconnects fast, so that the tests wait on the server, not on the backoff.
fn quick() -> ClientOptions {
    ClientOptions {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..Default::default()
    }
}

/// What was acked, per topic: (epoch, offset, data) in publish order.
type Acked = BTreeMap<String, Vec<(String, u64, Value)>>;

/// Publishes `n` messages round robin over `topics` through a fresh client and records
/// the acks.
async fn publish(url: &str, topics: &[&str], n: usize, tag: &str, acked: &mut Acked) {
    let p = Client::connect(url).await.unwrap();
    for i in 0..n {
        let topic = topics[i % topics.len()];
        let data = json!({"tag": tag, "i": i});
        let ack = p.publish(topic, &data).await.unwrap();
        acked
            .entry(topic.to_owned())
            .or_default()
            .push((ack.epoch, ack.offset, data));
    }
    p.close();
}

/// Reads deliveries until `done` says enough, then for a quiet moment more (so that an
/// extra delivery, a duplicate, is caught too).
async fn collect(sub: &mut Subscription, done: impl Fn(&[Delivery]) -> bool) -> Vec<Delivery> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    while !done(&got) {
        match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Some(d)) => got.push(d),
            Ok(None) => panic!("subscription ended; got {got:?}"),
            Err(_) => panic!("stalled; got {got:?}"),
        }
    }
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
        got.push(d);
    }
    got
}

fn messages(got: &[Delivery]) -> usize {
    got.iter().filter(|d| matches!(d, Delivery::Msg(_))).count()
}

fn recovered(got: &[Delivery]) -> Vec<bool> {
    got.iter()
        .filter_map(|d| match d {
            Delivery::Recovered { recovered } => Some(*recovered),
            _ => None,
        })
        .collect()
}

/// The messages delivered, per topic, in delivery order, as (epoch, offset, data).
fn per_topic(got: &[Delivery]) -> Acked {
    let mut out = Acked::new();
    for d in got {
        if let Delivery::Msg(m) = d {
            out.entry(m.topic.clone()).or_default().push((
                m.epoch.clone(),
                m.offset,
                m.data.clone(),
            ));
        }
    }
    out
}

/// Waits for an event the predicate picks, skipping others.
async fn event(
    events: &mut tokio::sync::broadcast::Receiver<ClientEvent>,
    pick: impl Fn(&ClientEvent) -> bool,
) -> ClientEvent {
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    loop {
        let e = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("no such event in time")
            .expect("client events");
        if pick(&e) {
            return e;
        }
    }
}

const DURABLE: &str = "[[topics]]\npattern = \"t/**\"\nhistory = 10000\npersist = true\n";

/// kill -9 of the server, messages published while the subscriber is away (on the same
/// data directory), a restart on the same port: the subscriber ends with every acked
/// message exactly once per topic, in offset order, with no gap, and says it recovered.
/// That includes a topic first published during the outage (not in the positions: found
/// through `ts`) and a subscription that had no message before the outage (its `ts` is
/// when it was made).
#[tokio::test]
async fn kill_9_and_restart_on_the_same_port_loses_nothing() {
    let dir = temp_dir("same-port");
    let first = start(&dir, DURABLE, &common::fixed_port());
    let url = first.ws_url();
    let client = Client::connect_with(&url, quick()).await.unwrap();
    let mut events = client.events();
    let mut all = client.subscribe("t/**").await.unwrap();
    let mut acked = Acked::new();

    // Before: three topics, all delivered live.
    publish(&url, &["t/a", "t/b", "t/c"], 30, "before", &mut acked).await;
    let before = collect(&mut all, |g| messages(g) == 30).await;
    assert_eq!(per_topic(&before), acked);
    // A subscription that has seen nothing when the server dies.
    let mut late = client.subscribe("t/late/*").await.unwrap();

    let addr = kill_9(first);
    event(&mut events, |e| {
        matches!(e, ClientEvent::Disconnected { .. })
    })
    .await;

    // The outage: another server on the data directory takes messages on old topics, a
    // new one, and the late subscription's, while the subscriber cannot reach it.
    let meanwhile = start(&dir, DURABLE, "127.0.0.1:0");
    let mut during = Acked::new();
    publish(
        &meanwhile.ws_url(),
        &["t/a", "t/b", "t/d", "t/late/x"],
        40,
        "during",
        &mut during,
    )
    .await;
    stop(meanwhile).await;

    // Back on the same port; more is published while the subscriber recovers.
    let back = start(&dir, DURABLE, &addr.to_string());
    assert_eq!(back.addr, addr);
    let mut after = Acked::new();
    publish(&url, &["t/a", "t/c", "t/d"], 30, "after", &mut after).await;

    let connected = event(&mut events, |e| matches!(e, ClientEvent::Connected { .. })).await;
    assert!(
        matches!(&connected, ClientEvent::Connected { resumed: false, url: u, .. } if *u == url),
        "{connected:?}"
    );
    let e = event(
        &mut events,
        |e| matches!(e, ClientEvent::Recovered { pattern, .. } if pattern == "t/**"),
    )
    .await;
    assert_eq!(
        e,
        ClientEvent::Recovered {
            pattern: "t/**".into(),
            recovered: true
        }
    );

    // Acks come in offset order: what each topic should deliver, in order.
    let mut want = during.clone();
    for (topic, msgs) in &after {
        want.entry(topic.clone()).or_default().extend(msgs.clone());
    }
    // Both subscriptions recover t/late/x, and the session gets both replays: each must
    // drop the copy it already has.
    let total: usize = want.values().map(Vec::len).sum();
    let got = collect(&mut all, |g| {
        messages(g) >= total && !recovered(g).is_empty()
    })
    .await;
    assert_eq!(recovered(&got), [true]);
    assert!(
        !got.iter()
            .any(|d| matches!(d, Delivery::Gap(_) | Delivery::TopicGap(_))),
        "{got:?}"
    );
    let got = per_topic(&got);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (topic, msgs) in &want {
        assert_eq!(&got[topic], msgs, "{topic}: exactly once, in offset order");
        // Offsets continue where they stopped before the kill, in the same epoch.
        if let Some(old) = acked.get(topic) {
            assert_eq!(msgs[0].0, old[0].0, "{topic}: same epoch");
            assert_eq!(msgs[0].1, old.last().unwrap().1 + 1, "{topic}");
        }
    }

    let late_got = collect(&mut late, |g| messages(g) == 10 && !recovered(g).is_empty()).await;
    assert_eq!(recovered(&late_got), [true]);
    assert_eq!(per_topic(&late_got)["t/late/x"], during["t/late/x"]);
    assert_eq!(messages(&late_got), 10);

    // Live again, through the recovered subscription.
    let ack = client.publish("t/a", &json!("live")).await.unwrap();
    let m = all.next_msg().await.unwrap();
    assert_eq!((m.offset, m.data), (ack.offset, json!("live")));
    drop(back);
    let _ = std::fs::remove_dir_all(&dir);
}

/// History shorter than the outage: the subscriber gets a topic gap with the exact
/// offsets history no longer holds, then the messages it still holds, and `recovered:false`.
#[tokio::test]
async fn history_shorter_than_the_outage_is_an_exact_topic_gap() {
    let dir = temp_dir("short");
    let toml = "[[topics]]\npattern = \"t/**\"\nhistory = 5\npersist = true\n";
    let first = start(&dir, toml, &common::fixed_port());
    let url = first.ws_url();
    let client = Client::connect_with(&url, quick()).await.unwrap();
    let mut events = client.events();
    let mut sub = client.subscribe("t/**").await.unwrap();
    let mut acked = Acked::new();
    publish(&url, &["t/a"], 3, "before", &mut acked).await;
    assert_eq!(messages(&collect(&mut sub, |g| messages(g) == 3).await), 3);
    let epoch = acked["t/a"][0].0.clone();

    let addr = kill_9(first);
    let meanwhile = start(&dir, toml, "127.0.0.1:0");
    publish(&meanwhile.ws_url(), &["t/a"], 20, "during", &mut acked).await;
    stop(meanwhile).await;
    assert_eq!(acked["t/a"].last().unwrap().1, 23);

    let back = start(&dir, toml, &addr.to_string());
    let got = collect(&mut sub, |g| messages(g) == 5 && !recovered(g).is_empty()).await;
    assert_eq!(recovered(&got), [false]);
    let rest: Vec<&Delivery> = got
        .iter()
        .filter(|d| !matches!(d, Delivery::Recovered { .. }))
        .collect();
    assert_eq!(
        rest[0],
        &Delivery::TopicGap(TopicGapFrame {
            topic: "t/a".into(),
            from_offset: 4,
            to_offset: 18,
            reason: TopicGapReason::History,
            epoch: epoch.clone(),
        }),
        "{got:?}"
    );
    let held: Vec<(u64, bool)> = rest[1..]
        .iter()
        .map(|d| match d {
            Delivery::Msg(m) => (m.offset, m.replay),
            other => panic!("after the gap, only messages: {other:?}"),
        })
        .collect();
    assert_eq!(held, (19..=23).map(|o| (o, true)).collect::<Vec<_>>());
    assert_eq!(per_topic(&got)["t/a"], acked["t/a"][18..]);
    let e = event(&mut events, |e| matches!(e, ClientEvent::Recovered { .. })).await;
    assert_eq!(
        e,
        ClientEvent::Recovered {
            pattern: "t/**".into(),
            recovered: false
        }
    );
    drop(back);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two independent servers: the client starts on A (the first URL that works, after one
/// that does not), and when A dies it moves to B, where its subscriptions work.
#[tokio::test]
async fn fails_over_to_the_next_url() {
    let dir_a = temp_dir("node-a");
    let dir_b = temp_dir("node-b");
    let a = start(&dir_a, DURABLE, "127.0.0.1:0");
    let b = start(&dir_b, DURABLE, "127.0.0.1:0");
    // Nothing listens there (and no server on port 0 gets it).
    let dead = format!("ws://{}/ws", common::fixed_port());
    let urls = [dead.clone(), a.ws_url(), b.ws_url()];
    let client = Client::connect_urls(urls.clone(), quick()).await.unwrap();
    assert_eq!(client.url(), a.ws_url(), "the first URL that works");
    let mut events = client.events();
    let mut sub = client.subscribe("t/**").await.unwrap();
    let mut acked = Acked::new();
    publish(&a.ws_url(), &["t/a", "t/b"], 4, "on a", &mut acked).await;
    assert_eq!(
        per_topic(&collect(&mut sub, |g| messages(g) == 4).await),
        acked
    );
    // B has history the client never saw: a recovery finds it there.
    let mut on_b = Acked::new();
    publish(&b.ws_url(), &["t/a"], 2, "on b before", &mut on_b).await;

    kill_9(a);
    let e = event(&mut events, |e| matches!(e, ClientEvent::Connected { .. })).await;
    assert!(
        matches!(&e, ClientEvent::Connected { url, resumed: false, .. } if *url == b.ws_url()),
        "{e:?}"
    );
    assert_eq!(client.url(), b.ws_url());
    let e = event(&mut events, |e| matches!(e, ClientEvent::Recovered { .. })).await;
    assert!(matches!(e, ClientEvent::Recovered { ref pattern, .. } if pattern == "t/**"));

    publish(&b.ws_url(), &["t/a", "t/c"], 4, "on b", &mut on_b).await;
    let from_b = |d: &Value| d["tag"].as_str().is_some_and(|t| t.starts_with("on b"));
    let got = collect(&mut sub, |g| {
        per_topic(g)
            .values()
            .flatten()
            .filter(|m| from_b(&m.2))
            .count()
            == 6
    })
    .await;
    let got = per_topic(&got);
    // What B held before the client came (found by the recovery: B's epoch is not the
    // one the client knew, and B holds it from its start), then what came live.
    for (topic, msgs) in &on_b {
        let here: Vec<_> = got[topic].iter().filter(|m| from_b(&m.2)).collect();
        assert_eq!(
            here,
            msgs.iter().collect::<Vec<_>>(),
            "{topic}: B's messages, once each"
        );
    }
    // B's topics are in B's epochs, not A's.
    assert_ne!(on_b["t/a"][0].0, acked["t/a"][0].0);
    for (topic, msgs) in &got {
        let mut offsets: Vec<u64> = msgs.iter().map(|m| m.1).collect();
        let n = offsets.len();
        offsets.dedup();
        assert_eq!(offsets.len(), n, "{topic}: no duplicate");
    }

    // And the client can keep using B: publish and request go there.
    let ack = client
        .publish("t/c", &json!("from the client"))
        .await
        .unwrap();
    let m = sub.next_msg().await.unwrap();
    assert_eq!((m.topic.as_str(), m.offset), ("t/c", ack.offset));

    // A client whose only URLs are dead says so for each one.
    let err = Client::connect_urls([dead.clone(), dead.clone()], quick())
        .await
        .err()
        .expect("no server");
    assert!(err.to_string().matches(&dead).count() == 2, "{err}");
    drop(b);
    let _ = std::fs::remove_dir_all(&dir_a);
    let _ = std::fs::remove_dir_all(&dir_b);
}

type ServerWs = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// The next text frame a scripted server gets, also handed to the test through `seen`.
async fn next_text(ws: &mut ServerWs, seen: &tokio::sync::mpsc::UnboundedSender<Value>) -> Value {
    use futures_util::StreamExt;
    loop {
        let m = ws.next().await.expect("client gone").expect("socket error");
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).unwrap();
            let _ = seen.send(v.clone());
            return v;
        }
    }
}

async fn send_json(ws: &mut ServerWs, v: Value) {
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(v.to_string()))
        .await
        .unwrap();
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A scripted server (like one older than recovery) that answers the recovery `sub` with an
/// error: the client subscribes again plainly, so live messages flow, and reports the
/// refusal and `recovered:false`. Also checks the `since` the client sends.
#[tokio::test]
async fn a_refused_recovery_falls_back_to_a_plain_subscribe() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let msg = |offset: u64| {
        json!({"op": "msg", "seq": 1, "topic": "t/a", "data": offset, "offset": offset,
               "epoch": "e1", "ts": now_ms()})
    };
    let server = tokio::spawn(async move {
        let welcome = |session: &str| {
            json!({"op": "welcome", "session": session, "resumed": false,
                   "heartbeat_ms": 25000, "max_frame": 65536})
        };
        // First connection: take the subscribe, deliver offset 1, answer a ping, then die.
        let mut ws = tokio_tungstenite::accept_async(listener.accept().await.unwrap().0)
            .await
            .unwrap();
        assert_eq!(next_text(&mut ws, &seen_tx).await["op"], "hello");
        send_json(&mut ws, welcome("s1")).await;
        let sub = next_text(&mut ws, &seen_tx).await;
        send_json(
            &mut ws,
            json!({"op": "ok", "id": sub["id"], "pattern": "t/**"}),
        )
        .await;
        send_json(&mut ws, msg(1)).await;
        let ping = next_text(&mut ws, &seen_tx).await;
        assert_eq!(ping["op"], "ping");
        send_json(&mut ws, json!({"op": "pong", "id": ping["id"]})).await;
        drop(ws);

        // Second: the session is gone; refuse the recovery, take the plain subscribe, go live.
        let mut ws = tokio_tungstenite::accept_async(listener.accept().await.unwrap().0)
            .await
            .unwrap();
        assert_eq!(next_text(&mut ws, &seen_tx).await["session"], "s1");
        send_json(&mut ws, welcome("s2")).await;
        let sub = next_text(&mut ws, &seen_tx).await;
        send_json(
            &mut ws,
            json!({"op": "error", "id": sub["id"], "code": "bad_request", "message": "not yet"}),
        )
        .await;
        assert_eq!(next_text(&mut ws, &seen_tx).await["op"], "sub");
        send_json(&mut ws, msg(5)).await;
        while next_text(&mut ws, &seen_tx).await["op"] != "never" {}
    });

    let client = Client::connect_with(&url, quick()).await.unwrap();
    let mut events = client.events();
    let before = now_ms();
    let mut sub = client.subscribe("t/**").await.unwrap();
    let after = now_ms();
    assert_eq!(sub.next_msg().await.unwrap().offset, 1);
    client.ping().await.unwrap();

    let e = event(&mut events, |e| {
        matches!(e, ClientEvent::RecoveryRefused { .. })
    })
    .await;
    assert_eq!(
        e,
        ClientEvent::RecoveryRefused {
            pattern: "t/**".into(),
            code: herald_client::ErrorCode::BadRequest,
            message: "not yet".into()
        }
    );
    let e = event(&mut events, |e| matches!(e, ClientEvent::Recovered { .. })).await;
    assert_eq!(
        e,
        ClientEvent::Recovered {
            pattern: "t/**".into(),
            recovered: false
        }
    );
    let next = tokio::time::timeout(WAIT, sub.next()).await.unwrap();
    assert_eq!(next, Some(Delivery::Recovered { recovered: false }));
    let live = tokio::time::timeout(WAIT, sub.next_msg())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((live.offset, live.data), (5, json!(5)));

    // What the client sent: the first subscribe, the recovery, the plain subscribe.
    let mut subs = Vec::new();
    while let Ok(v) = seen.try_recv() {
        if v["op"] == "sub" {
            subs.push(v);
        }
    }
    assert_eq!(subs.len(), 3, "{subs:?}");
    assert_eq!(subs[0]["pattern"], "t/**");
    assert!(subs[0].get("since").is_none(), "{}", subs[0]);
    let since = &subs[1]["since"];
    assert_eq!(
        since["topics"],
        json!({"t/a": {"epoch": "e1", "offset": 1}})
    );
    // No message had come when it subscribed: the local clock, a second early.
    let ts = since["ts"].as_u64().unwrap();
    assert!((before - 1000..=after - 1000).contains(&ts), "{since}");
    assert!(subs[1]["id"].is_i64(), "{}", subs[1]);
    assert_eq!(subs[2], json!({"op": "sub", "pattern": "t/**"}));
    server.abort();
}
