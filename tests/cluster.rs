//! Cluster mode (`--redis`) with a real `redis-server` and three real `herald` nodes on
//! loopback: cross-node fan-out, cluster-wide offsets and history, groups that deliver once
//! across nodes, presence, request-reply and de-duplication across nodes, a node killed
//! with its clients catching up elsewhere, and Redis restarted under load.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::process::Command;
use std::time::{Duration, Instant};

use common::redis::{Redis, client, config_file};
use common::{Binary, Raw, WAIT, http};
use serde_json::{Value, json};

const CONFIG: &str = r#"
[session]
ttl = "5s"

[[topics]]
pattern = "**"
history = 5000
dedup_window = "60s"
"#;

async fn nodes(redis: &Redis, n: usize) -> Vec<Binary> {
    redis.nodes(n, &config_file("nodes", CONFIG)).await
}

/// Collects `msg` frames until `n` arrived.
async fn take_msgs(c: &mut Raw, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let Some(v) = c.recv_within(WAIT).await else {
            panic!(
                "{} of {n} messages arrived; last: {:?}",
                out.len(),
                out.last()
            );
        };
        if v["op"] == "msg" {
            out.push(v);
        }
    }
    out
}

/// Sends a `sub` with id "s" and returns its `ok` and the messages that came before it
/// (a replay is pushed before the answer, but the answer may overtake some of it).
async fn sub_replay(c: &mut Raw, sub: Value) -> (Value, Vec<Value>) {
    c.send(sub).await;
    let mut before = Vec::new();
    loop {
        let v = c.recv().await;
        if v["op"] == "msg" {
            before.push(v);
        } else if v["id"] == "s" {
            return (v, before);
        }
    }
}

/// `GET /v1/topics?pattern=…` on node `b`: (topic, offset, subscribers) per row.
async fn topic_rows(b: &Binary, pattern: &str) -> Vec<(Value, Value, Value)> {
    let url = format!("http://{}/v1/topics?pattern={pattern}", b.addr);
    let rows: Value = common::get_json(url.as_str()).await;
    let rows = rows.as_array().unwrap_or_else(|| panic!("{rows}"));
    rows.iter()
        .map(|r| {
            (
                r["topic"].clone(),
                r["offset"].clone(),
                r["subscribers"].clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_node_fanout_offsets_and_history() {
    let redis = Redis::start();
    let n = nodes(&redis, 3).await;
    let mut subs = Vec::new();
    for b in &n {
        let mut c = client(b).await;
        c.sub("news/**").await;
        subs.push(c);
    }
    // Publishers on two nodes write to the same topic: offsets are cluster-wide.
    let mut p1 = client(&n[0]).await;
    let mut p2 = client(&n[1]).await;
    let mut acked = BTreeSet::new();
    for i in 0..150 {
        for p in [&mut p1, &mut p2] {
            let ok = p.publish("news/a", json!({"i": i})).await;
            assert_eq!(ok["duplicate"], false);
            assert!(acked.insert(ok["offset"].as_u64().unwrap()), "{ok}");
        }
    }
    assert_eq!(acked, (1..=300).collect::<BTreeSet<u64>>());
    for c in &mut subs {
        let msgs = take_msgs(c, 300).await;
        let offsets: Vec<u64> = msgs.iter().map(|m| m["offset"].as_u64().unwrap()).collect();
        assert_eq!(
            offsets,
            (1..=300).collect::<Vec<u64>>(),
            "in offset order, once each"
        );
        let seqs: Vec<u64> = msgs.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=300).collect::<Vec<u64>>());
    }
    // History is the same from every node (it lives in Redis).
    let mut pages = Vec::new();
    for b in &n {
        let url = format!("http://{}/v1/history?topic=news/a&limit=1000", b.addr);
        let page: Value = common::get_json(url.as_str()).await;
        assert_eq!(page["messages"].as_array().unwrap().len(), 300, "{page}");
        pages.push(page);
    }
    assert!(pages.windows(2).all(|w| w[0] == w[1]));
    // `GET /v1/topics` on any node lists the cluster's topics with their cluster-wide offset,
    // even one only another node ever saw; `subscribers` counts the asked node's.
    let mut solo = client(&n[0]).await;
    for i in 0..3 {
        solo.publish("solo/x", json!(i)).await;
    }
    let rows = topic_rows(&n[2], "solo/**").await;
    assert_eq!(rows, vec![(json!("solo/x"), json!(3), json!(0))]);
    let rows = topic_rows(&n[1], "news/*").await;
    assert_eq!(rows, vec![(json!("news/a"), json!(300), json!(1))]);
    // `since` replays from Redis on a node that never saw the topic.
    let mut late = client(&n[2]).await;
    let epoch = pages[0]["epoch"].as_str().unwrap();
    let sub = json!({"op": "sub", "id": "s", "pattern": "news/a",
        "since": {"epoch": epoch, "offset": 290}});
    let (ok, mut msgs) = sub_replay(&mut late, sub).await;
    assert_eq!(ok["recovered"], true, "{ok}");
    let more = 10 - msgs.len();
    msgs.extend(take_msgs(&mut late, more).await);
    assert_eq!(msgs[0]["offset"], 291);
    assert_eq!(msgs[9]["offset"], 300);
    // Retained messages reach a new subscriber on any node.
    p1.send(json!({"op": "pub", "id": "r", "topic": "cfg/x", "data": {"v": 1}, "retain": true}))
        .await;
    assert_eq!(p1.recv_op_id("r").await["op"], "ok");
    let mut r = client(&n[2]).await;
    let (_, mut m) = sub_replay(&mut r, json!({"op": "sub", "id": "s", "pattern": "cfg/*"})).await;
    if m.is_empty() {
        m = take_msgs(&mut r, 1).await; // the `ok` may overtake the retained message
    }
    assert_eq!(m[0]["data"], json!({"v": 1}));
    assert_eq!(m[0]["retained"], true, "{}", m[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_deliver_once_across_nodes() {
    let redis = Redis::start();
    let n = nodes(&redis, 3).await;
    let mut workers = Vec::new();
    for b in &n {
        for _ in 0..2 {
            let mut c = client(b).await;
            c.send(json!({"op": "sub", "id": "s", "pattern": "jobs/*", "group": "w"}))
                .await;
            assert_eq!(c.recv_op_id("s").await["op"], "ok");
            workers.push(c);
        }
    }
    let mut p = client(&n[0]).await;
    const JOBS: u64 = 600;
    for i in 0..JOBS {
        p.send(json!({"op": "pub", "topic": "jobs/a", "data": i}))
            .await;
    }
    let ok = p.publish("jobs/a", json!("last")).await;
    assert_eq!(ok["offset"], JOBS + 1);
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut per_node = [0usize; 3];
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < (JOBS + 1) as usize && Instant::now() < deadline {
        for (i, w) in workers.iter_mut().enumerate() {
            while let Some(v) = w.recv_within(Duration::from_millis(20)).await {
                if v["op"] == "msg" {
                    *seen.entry(v["offset"].as_u64().unwrap()).or_default() += 1;
                    per_node[i / 2] += 1;
                }
            }
        }
    }
    assert_eq!(seen.len(), (JOBS + 1) as usize, "every job delivered");
    assert!(seen.values().all(|&c| c == 1), "no job delivered twice");
    assert!(
        per_node.iter().filter(|&&c| c > 0).count() >= 2,
        "work spread over nodes: {per_node:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_requests_and_dedup_across_nodes() {
    let redis = Redis::start();
    let n = nodes(&redis, 3).await;
    // Presence: a member on node 0 is listed by node 2, and its join is announced there.
    let mut watcher = client(&n[2]).await;
    watcher.sub("$presence/room/1").await;
    let mut member = client(&n[0]).await;
    member.sub("room/1").await;
    let join = take_msgs(&mut watcher, 1).await.remove(0);
    assert_eq!(join["data"]["event"], "join", "{join}");
    let url = format!("http://{}/v1/presence?topic=room/1", n[2].addr);
    let list: Value = common::get_json(url.as_str()).await;
    assert_eq!(list["count"], 1, "{list}");
    member
        .send(json!({"op": "unsub", "id": "u", "pattern": "room/1"}))
        .await;
    member.recv_op_id("u").await;
    let leave = take_msgs(&mut watcher, 1).await.remove(0);
    assert_eq!(leave["data"]["event"], "leave", "{leave}");
    let list: Value = common::get_json(url.as_str()).await;
    assert_eq!(list["count"], 0, "{list}");

    // Request-reply: requester on node 0, responder on node 1.
    let mut responder = client(&n[1]).await;
    responder.sub("rpc/echo").await;
    let mut requester = client(&n[0]).await;
    requester
        .send(json!({"op": "req", "id": "q", "topic": "rpc/echo", "data": {"x": 7}, "timeout_ms": 5000}))
        .await;
    let m = take_msgs(&mut responder, 1).await.remove(0);
    let inbox = m["reply_to"].as_str().unwrap().to_owned();
    responder
        .send(json!({"op": "pub", "id": "a", "topic": inbox, "data": {"echo": 7}}))
        .await;
    assert_eq!(responder.recv_op_id("a").await["op"], "ok");
    let reply = requester.recv_op("reply").await;
    assert_eq!(reply["id"], "q");
    assert_eq!(reply["data"], json!({"echo": 7}));
    // Nobody anywhere listens: no_responders.
    let e = requester
        .request(json!({"op": "req", "topic": "rpc/nobody", "data": 1}))
        .await;
    assert_eq!(e["code"], "no_responders", "{e}");

    // De-duplication goes through Redis: the same msg_id on two nodes is one message.
    let mut a = client(&n[0]).await;
    let mut b = client(&n[1]).await;
    a.send(json!({"op": "pub", "id": "d", "topic": "pay/1", "data": 1, "msg_id": "m-1"}))
        .await;
    let first = a.recv_op_id("d").await;
    b.send(json!({"op": "pub", "id": "d", "topic": "pay/1", "data": 1, "msg_id": "m-1"}))
        .await;
    let second = b.recv_op_id("d").await;
    assert_eq!(first["duplicate"], false);
    assert_eq!(second["duplicate"], true, "{second}");
    assert_eq!(first["offset"], second["offset"]);
}

/// (c) of the recovery issue: ten subscribers to a pattern on a node that is killed fail
/// over to the other nodes and recover from Redis with `since` positions, while a publisher
/// on another node goes on, also on topics first used during the outage: every acked
/// message once per topic, in order, no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pattern_subscribers_of_a_killed_node_recover_everything_elsewhere() {
    let redis = Redis::start();
    let mut n = nodes(&redis, 3).await;
    let since_ts = herald::event::now_ms() - 1;
    let mut subs = Vec::new();
    for _ in 0..10 {
        let mut c = client(&n[2]).await;
        c.sub("r/**").await;
        subs.push((c, HashMap::<String, Vec<Value>>::new()));
    }
    let mut publisher = client(&n[0]).await;
    let mut acked: HashMap<String, Vec<u64>> = HashMap::new();
    let mut publish = async |topic: String, k: usize, acked: &mut HashMap<String, Vec<u64>>| {
        let ok = publisher.publish(&topic, json!(k)).await;
        acked
            .entry(topic)
            .or_default()
            .push(ok["offset"].as_u64().unwrap());
    };
    for k in 0..60 {
        publish(format!("r/{}", k % 4), k, &mut acked).await;
    }
    // Each subscriber reads part of it; then its node dies with the rest in flight.
    for (i, (c, got)) in subs.iter_mut().enumerate() {
        for m in take_msgs(c, 20 + i).await {
            got.entry(m["topic"].as_str().unwrap().to_owned())
                .or_default()
                .push(m);
        }
    }
    n[2].signal("KILL");
    n[2].wait(WAIT);
    for k in 60..120 {
        publish(format!("r/{}", k % 5), k, &mut acked).await; // r/4 is new
    }
    for (i, (c, got)) in subs.iter_mut().enumerate() {
        let topics: serde_json::Map<String, Value> = got
            .iter()
            .map(|(t, ms)| {
                let last = ms.last().unwrap();
                (
                    t.clone(),
                    json!({"epoch": last["epoch"], "offset": last["offset"]}),
                )
            })
            .collect();
        *c = client(&n[i % 2]).await;
        c.send(json!({"op": "sub", "id": "s", "pattern": "r/**",
                      "since": {"topics": topics, "ts": since_ts}}))
            .await;
    }
    for k in 120..150 {
        publish(format!("r/{}", k % 5), k, &mut acked).await;
    }
    let total: usize = acked.values().map(Vec::len).sum();
    for (c, got) in subs.iter_mut() {
        let mut have: usize = got.values().map(Vec::len).sum();
        while have < total {
            let v = c.recv().await;
            assert_ne!(v["op"], "gap", "{v}");
            if v["op"] == "ok" {
                assert_eq!(v["recovered"], true, "{v}");
            }
            if v["op"] == "msg" {
                got.entry(v["topic"].as_str().unwrap().to_owned())
                    .or_default()
                    .push(v);
                have += 1;
            }
        }
        let offsets: HashMap<String, Vec<u64>> = got
            .iter()
            .map(|(t, ms)| {
                (
                    t.clone(),
                    ms.iter().map(|m| m["offset"].as_u64().unwrap()).collect(),
                )
            })
            .collect();
        assert_eq!(
            offsets, acked,
            "every acked message once per topic, in order"
        );
    }
}

/// The same with the Rust client doing it by itself: ten clients given every node's URL,
/// their node killed; they move to the next URL, recover from Redis and lose nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_clients_of_a_killed_node_fail_over_and_recover_by_themselves() {
    use herald_client::{Client, ClientOptions, Delivery};
    let redis = Redis::start();
    let mut n = nodes(&redis, 3).await;
    let urls = [n[2].ws_url(), n[0].ws_url(), n[1].ws_url()];
    let options = ClientOptions {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..Default::default()
    };
    type Got = std::sync::Arc<parking_lot::Mutex<(HashMap<String, Vec<u64>>, Vec<String>)>>;
    let mut clients = Vec::new();
    let mut got: Vec<Got> = Vec::new();
    for _ in 0..10 {
        let c = Client::connect_urls(urls.clone(), options.clone())
            .await
            .unwrap();
        assert_eq!(c.url(), urls[0]);
        let mut sub = c.subscribe("f/**").await.unwrap();
        let g = Got::default();
        let g2 = g.clone();
        tokio::spawn(async move {
            while let Some(d) = sub.next().await {
                let mut g = g2.lock();
                match d {
                    Delivery::Msg(m) => g.0.entry(m.topic).or_default().push(m.offset),
                    Delivery::Gap(x) => g.1.push(format!("{x:?}")),
                    Delivery::TopicGap(x) => g.1.push(format!("{x:?}")),
                    _ => {}
                }
            }
        });
        clients.push(c);
        got.push(g);
    }
    let mut publisher = client(&n[1]).await;
    let mut acked: HashMap<String, Vec<u64>> = HashMap::new();
    for k in 0..200usize {
        if k == 80 {
            n[2].signal("KILL");
            n[2].wait(WAIT);
        }
        // f/3 is first used after the kill.
        let topic = format!("f/{}", k % if k < 80 { 3 } else { 4 });
        let ok = publisher.publish(&topic, json!(k)).await;
        acked
            .entry(topic)
            .or_default()
            .push(ok["offset"].as_u64().unwrap());
    }
    let deadline = Instant::now() + WAIT;
    for (i, g) in got.iter().enumerate() {
        while g.lock().0 != acked {
            assert!(
                Instant::now() < deadline,
                "client {i} on {}: {:?} of {acked:?}",
                clients[i].url(),
                g.lock()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(g.lock().1.is_empty(), "no gap: {:?}", g.lock().1);
        assert_ne!(clients[i].url(), urls[0], "moved off the dead node");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for g in &got {
        assert_eq!(g.lock().0, acked, "nothing twice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_clients_catch_up_on_another_node() {
    let redis = Redis::start();
    let mut n = nodes(&redis, 3).await;
    let mut sub = client(&n[0]).await;
    sub.sub("feed/x").await;
    let mut publisher = client(&n[1]).await;
    let mut acked = Vec::new();
    for i in 0..100 {
        let ok = publisher.publish("feed/x", json!(i)).await;
        acked.push(ok["offset"].as_u64().unwrap());
    }
    let msgs = take_msgs(&mut sub, 100).await;
    let epoch = msgs[0]["epoch"].as_str().unwrap().to_owned();
    let last_seen = msgs[99]["offset"].as_u64().unwrap();
    // The subscriber's node dies; publishing goes on.
    n[0].signal("KILL");
    n[0].wait(WAIT);
    for i in 100..200 {
        let ok = publisher.publish("feed/x", json!(i)).await;
        acked.push(ok["offset"].as_u64().unwrap());
    }
    // The client reconnects to another node and catches up with `since`.
    let mut again = client(&n[2]).await;
    let sub = json!({"op": "sub", "id": "s", "pattern": "feed/x",
        "since": {"epoch": epoch, "offset": last_seen}});
    let (ok, mut rest) = sub_replay(&mut again, sub).await;
    assert_eq!(ok["recovered"], true, "{ok}");
    for i in 200..250 {
        let ok = publisher.publish("feed/x", json!(i)).await;
        acked.push(ok["offset"].as_u64().unwrap());
    }
    let more = 150 - rest.len();
    rest.extend(take_msgs(&mut again, more).await);
    let got: Vec<u64> = msgs
        .iter()
        .chain(&rest)
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(got, acked, "every acked message, once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_gives_unavailable_and_loses_no_acked_message() {
    let mut redis = Redis::start();
    let n = nodes(&redis, 2).await;
    let mut sub = client(&n[1]).await;
    sub.sub("orders/*").await;
    let mut publisher = client(&n[0]).await;
    let mut acked = BTreeSet::new();
    let mut refused = 0;
    let mut i = 0u64;
    // Publish, kill Redis midway, keep trying, start it again, keep publishing.
    let started = Instant::now();
    let mut restarted = false;
    let mut killed = false;
    let mut after_restart = 0;
    while after_restart < 50 {
        publisher
            .send(json!({"op": "pub", "id": i.to_string(), "topic": "orders/eu", "data": i, "msg_id": format!("o-{i}")}))
            .await;
        let answer = publisher.recv_op_id(&i.to_string()).await;
        if answer["op"] == "ok" {
            assert_eq!(answer["duplicate"], false);
            acked.insert(answer["offset"].as_u64().unwrap());
            after_restart += usize::from(restarted);
        } else {
            assert_eq!(answer["code"], "unavailable", "{answer}");
            refused += 1;
        }
        i += 1;
        if !killed && acked.len() >= 50 {
            redis.kill();
            killed = true;
            // While Redis is away the node says it is not ready.
            let url = format!("http://{}/readyz", n[0].addr);
            let deadline = Instant::now() + WAIT;
            while http().get(&url).send().await.unwrap().status() == 200 {
                assert!(Instant::now() < deadline, "readyz stayed 200 without redis");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } else if killed && !restarted && refused >= 5 {
            redis.launch();
            restarted = true;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
    }
    assert!(refused >= 5, "publishes during the outage were refused");
    // Every acked publish is in the history and reached the subscriber on the other node.
    let url = format!(
        "http://{}/v1/history?topic=orders/eu&since=0&limit=1000",
        n[1].addr
    );
    let page: Value = common::get_json(url.as_str()).await;
    let stored: BTreeSet<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert!(
        acked.is_subset(&stored),
        "acked but not stored: {:?}",
        acked.difference(&stored).collect::<Vec<_>>()
    );
    let mut got = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !acked.is_subset(&got) {
        assert!(
            Instant::now() < deadline,
            "missing {:?}; log of the subscriber's node: {:#?}",
            acked.difference(&got).collect::<Vec<_>>(),
            n[1].log
                .lock()
                .unwrap()
                .iter()
                .filter(|l| !l.contains("conn{"))
                .collect::<Vec<_>>()
        );
        if let Some(v) = sub.recv_within(Duration::from_millis(200)).await
            && v["op"] == "msg"
        {
            assert!(
                got.insert(v["offset"].as_u64().unwrap()),
                "delivered twice: {v}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_redis_url_is_refused_at_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["--listen", "127.0.0.1:0", "--redis", "http://nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("redis:// or rediss://"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_presence_members_leave() {
    let redis = Redis::start();
    let mut n = nodes(&redis, 2).await;
    let mut watcher = client(&n[1]).await;
    watcher.sub("$presence/room/z").await;
    let mut member = client(&n[0]).await;
    member.sub("room/z").await;
    let join = take_msgs(&mut watcher, 1).await.remove(0);
    assert_eq!(join["data"]["event"], "join", "{join}");
    let url = format!("http://{}/v1/presence?topic=room/z", n[1].addr);
    let list: Value = common::get_json(url.as_str()).await;
    assert_eq!(list["count"], 1, "{list}");
    // The member's node dies without a word: its members expire and someone announces it.
    n[0].signal("KILL");
    n[0].wait(WAIT);
    let deadline = Instant::now() + Duration::from_secs(40);
    let leave = loop {
        assert!(
            Instant::now() < deadline,
            "no leave for the dead node's member"
        );
        if let Some(v) = watcher.recv_within(Duration::from_secs(1)).await
            && v["op"] == "msg"
        {
            break v;
        }
    };
    assert_eq!(leave["data"]["event"], "leave", "{leave}");
    assert_eq!(leave["data"]["session"], join["data"]["session"]);
    let list: Value = common::get_json(url.as_str()).await;
    assert_eq!(list["count"], 0, "{list}");
}

/// The embedded API answers the same on a cluster node as the HTTP API does: an in-process
/// `Bus` on the same Redis reads history, topics and presence from the cluster, for a topic
/// it never subscribed to (it used to read only its local mirror, and saw nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_bus_queries_the_cluster_not_its_mirror() {
    let redis = Redis::start();
    let n = nodes(&redis, 1).await;
    let config = herald::Config {
        cluster: Some(herald::config::ClusterConfig {
            redis: vec![redis.url()],
        }),
        topics: vec![herald::config::TopicConfig {
            pattern: "**".into(),
            history: 100,
            ..Default::default()
        }],
        ..Default::default()
    };
    let bus = herald::Bus::open(config).unwrap();
    let deadline = Instant::now() + WAIT;
    while !bus.is_ready() {
        assert!(
            Instant::now() < deadline,
            "the embedded node never reached Redis"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut publisher = client(&n[0]).await;
    for i in 1..=5 {
        publisher.publish("orders/eu", json!({"i": i})).await;
    }
    let mut member = client(&n[0]).await;
    member.sub("room/1").await;

    let page = bus.history("orders/eu", None, None).await.unwrap();
    let offsets: Vec<u64> = page.messages.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, vec![1, 2, 3, 4, 5]);
    let rows = bus.topics(Some("orders/*")).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].topic.as_str(), rows[0].offset), ("orders/eu", 5));
    let deadline = Instant::now() + WAIT;
    loop {
        let who = bus.presence("room/1").await.unwrap();
        if who.count == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the other node's member never showed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A subscription on the embedded node replays from Redis too.
    let session = bus.open_session();
    let opts = herald::bus::SubOptions {
        rewind: Some(2),
        ..Default::default()
    };
    let outcome = bus
        .subscribe_with(&session, "orders/**", &opts)
        .await
        .unwrap();
    assert!(outcome.new);
    let mut batch = herald::session::Batch::default();
    session.take(&mut batch, 10);
    let replayed: Vec<u64> = batch.entries.iter().map(|e| e.event.offset).collect();
    assert_eq!(replayed, vec![4, 5]);
}

/// Publishes in flight together share script calls, where a topic without history goes as
/// one run and the others message by message (history, a retain flag, a msg_id): whatever
/// the mix, each topic's offsets rise by one in publish order, acks carry them, duplicates
/// carry the original's, and another node delivers each topic in offset order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_and_single_messages_share_batches_in_order() {
    let redis = Redis::start();
    let config = "[[topics]]\npattern = \"kept/**\"\nhistory = 50\n";
    let n = redis.nodes(2, &config_file("runs", config)).await;
    let mut sub = client(&n[1]).await;
    sub.sub("live/**").await;
    sub.sub("kept/**").await;
    let mut p = client(&n[0]).await;
    const N: usize = 800;
    // (topic, msg_id, retain) of publish i, its id "p<i>".
    let plan = |i: usize| -> (&'static str, Option<String>, bool) {
        match i % 4 {
            0 => ("live/a", None, false),
            1 => ("live/b", None, i % 40 == 1),
            2 => ("kept/x", None, false),
            // Every msg_id sent twice, the second time 4 publishes later.
            _ => ("live/c", Some(format!("m{}", i / 8)), false),
        }
    };
    for i in 0..N {
        let (topic, msg_id, retain) = plan(i);
        let mut f = json!({"op": "pub", "id": format!("p{i}"), "topic": topic, "data": {"i": i}});
        if let Some(m) = &msg_id {
            f["msg_id"] = json!(m);
        }
        if retain {
            f["retain"] = json!(true);
        }
        p.send(f).await;
    }
    let mut acks: HashMap<String, Value> = HashMap::new();
    while acks.len() < N {
        let v = p.recv().await;
        assert_eq!(v["op"], "ok", "{v}");
        acks.insert(v["id"].as_str().unwrap().to_owned(), v);
    }
    // They went in batches (far fewer script calls than publishes), so runs and single
    // messages shared calls.
    let stats = redis.cli(&["info", "commandstats"]);
    let calls: usize = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|l| l.split(',').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no EVALSHA in {stats}"));
    assert!(calls < N / 4, "{calls} script calls for {N} publishes");
    // Per topic, in publish order: the new messages' offsets 1, 2, 3, …; a duplicate has
    // its original's.
    let mut next: HashMap<&str, u64> = HashMap::new();
    let mut first_of: HashMap<String, u64> = HashMap::new();
    let mut expected: HashMap<&str, Vec<(u64, usize)>> = HashMap::new();
    for i in 0..N {
        let (topic, msg_id, _) = plan(i);
        let ack = &acks[&format!("p{i}")];
        let offset = ack["offset"].as_u64().unwrap();
        match msg_id.as_ref().and_then(|m| first_of.get(m)) {
            Some(original) => {
                assert_eq!(
                    (ack["duplicate"].clone(), offset),
                    (json!(true), *original),
                    "{ack}"
                );
            }
            None => {
                let o = next.entry(topic).or_insert(0);
                *o += 1;
                assert_eq!(
                    (ack["duplicate"].clone(), offset),
                    (json!(false), *o),
                    "p{i}: {ack}"
                );
                if let Some(m) = msg_id {
                    first_of.insert(m, offset);
                }
                expected.entry(topic).or_default().push((offset, i));
            }
        }
    }
    assert!(first_of.len() < N / 4, "some msg_ids were sent twice");
    let total: usize = expected.values().map(Vec::len).sum();
    let mut got: HashMap<String, Vec<(u64, usize)>> = HashMap::new();
    for m in take_msgs(&mut sub, total).await {
        let i = m["data"]["i"].as_u64().unwrap() as usize;
        let topic = m["topic"].as_str().unwrap().to_owned();
        got.entry(topic)
            .or_default()
            .push((m["offset"].as_u64().unwrap(), i));
    }
    for (topic, want) in &expected {
        assert_eq!(got.get(*topic), Some(want), "{topic}");
    }
    // kept/x's history (its runs stored message by message) reads back the newest 50,
    // with their offsets and data, and `since` replays from it on the other node.
    let kept = &expected["kept/x"];
    let url = format!("http://{}/v1/history?topic=kept/x&limit=1000", n[1].addr);
    let page: Value = common::get_json(url.as_str()).await;
    let stored: Vec<(u64, usize)> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["offset"].as_u64().unwrap(),
                m["data"]["i"].as_u64().unwrap() as usize,
            )
        })
        .collect();
    assert_eq!(stored, kept[kept.len() - 50..], "{page}");
    let last = kept.last().unwrap().0;
    let epoch = page["epoch"].as_str().unwrap();
    let mut late = client(&n[1]).await;
    let sub = json!({"op": "sub", "id": "s", "pattern": "kept/x",
        "since": {"epoch": epoch, "offset": last - 5}});
    let (ok, mut replayed) = sub_replay(&mut late, sub).await;
    assert_eq!(ok["recovered"], true, "{ok}");
    let more = 5 - replayed.len();
    replayed.extend(take_msgs(&mut late, more).await);
    let replayed: Vec<(u64, usize)> = replayed
        .iter()
        .map(|m| {
            (
                m["offset"].as_u64().unwrap(),
                m["data"]["i"].as_u64().unwrap() as usize,
            )
        })
        .collect();
    assert_eq!(replayed, kept[kept.len() - 5..]);
    // The last retained message of live/b reaches a new subscriber on the other node.
    let last_retained = (0..N).rev().find(|&i| plan(i).2).unwrap();
    let mut late = client(&n[1]).await;
    let (_, mut m) = sub_replay(
        &mut late,
        json!({"op": "sub", "id": "s", "pattern": "live/b"}),
    )
    .await;
    if m.is_empty() {
        m = take_msgs(&mut late, 1).await;
    }
    assert_eq!(m[0]["data"]["i"], last_retained, "{}", m[0]);
}

/// A topic's history trimmed by age in Redis, whether its messages were stored from runs
/// or one by one: what is older than `history_ttl` leaves the stream at the next publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_ttl_trims_the_stream_in_redis() {
    let redis = Redis::start();
    let config = "[[topics]]\npattern = \"aged/**\"\nhistory = 100\nhistory_ttl = \"1s\"\n";
    let n = redis.nodes(1, &config_file("aged", config)).await;
    let mut p = client(&n[0]).await;
    for i in 0..5 {
        p.publish("aged/run", json!(i)).await;
        // A msg_id makes each publish of aged/one a message of its own (no run).
        p.send(
            json!({"op": "pub", "id": "o", "topic": "aged/one", "data": i,
            "msg_id": format!("m{i}")}),
        )
        .await;
        assert_eq!(p.recv_op_id("o").await["op"], "ok");
    }
    let len = |topic: &str| -> u64 {
        let key = format!("herald:{{{topic}}}:hist");
        redis.cli(&["XLEN", &key]).trim().parse().unwrap()
    };
    assert_eq!((len("aged/run"), len("aged/one")), (5, 5));
    // Stored from runs (`q`, `e`) and one by one (`p`).
    let first_field = |topic: &str| -> String {
        let key = format!("herald:{{{topic}}}:hist");
        let out = redis.cli(&["XRANGE", &key, "-", "+", "COUNT", "1"]);
        out.lines().nth(1).unwrap_or_default().to_owned()
    };
    assert_eq!(
        (first_field("aged/run"), first_field("aged/one")),
        ("q".into(), "p".into())
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    p.publish("aged/run", json!("new")).await;
    p.send(json!({"op": "pub", "id": "o", "topic": "aged/one", "data": "new", "msg_id": "m9"}))
        .await;
    assert_eq!(p.recv_op_id("o").await["op"], "ok");
    assert_eq!((len("aged/run"), len("aged/one")), (1, 1));
    for topic in ["aged/run", "aged/one"] {
        let url = format!("http://{}/v1/history?topic={topic}", n[0].addr);
        let page: Value = common::get_json(url.as_str()).await;
        let msgs = page["messages"].as_array().unwrap();
        assert_eq!(
            (msgs.len(), &msgs[0]["data"], &msgs[0]["offset"]),
            (1, &json!("new"), &json!(6))
        );
    }
}
