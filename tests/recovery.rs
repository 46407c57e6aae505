//! Recovery of a lost session with `sub.since` for patterns (PROTOCOL.md §5): replay of
//! every listed topic after its position and of unlisted topics after `since.ts`, exact
//! topic gaps where history no longer holds what follows, across `kill -9` restarts of a
//! durable server, with publishers running at the seam, and against bad input.
//!
//! These drive the server with raw sockets and keep positions the way a client does; the
//! clients' own recovery (herald.js, `herald::client`) is tested beside them.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use common::{Binary, Raw, TestServer, WAIT};
use herald::config::{Config, TopicConfig};

fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "herald-recovery-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn with_topics(entries: &[(&str, usize, usize)]) -> Config {
    let mut c = common::config();
    for &(pattern, history, max_rewind) in entries {
        c.topics.push(TopicConfig {
            pattern: pattern.into(),
            history,
            max_rewind,
            ..Default::default()
        });
    }
    c
}

/// What one subscriber has seen, kept the way a recovering client keeps it.
struct Tracker {
    positions: BTreeMap<String, (String, u64)>,
    /// When the subscription was first made. A topic with no position is one this
    /// subscriber never got a message of, so everything it had since then is missing:
    /// the newest `ts` seen would not do (the stream is not in `ts` order across topics,
    /// and a replay stopped half-way has not reached the topics after it).
    since_ts: u64,
    /// Offsets per topic, in the order they arrived.
    got: HashMap<String, Vec<u64>>,
    /// Topic gaps and session gaps, as received.
    gaps: Vec<Value>,
}

impl Tracker {
    fn see(&mut self, v: &Value) {
        match v["op"].as_str() {
            Some("msg") => {
                let topic = v["topic"].as_str().unwrap().to_owned();
                let offset = v["offset"].as_u64().unwrap();
                let epoch = v["epoch"].as_str().unwrap().to_owned();
                self.got.entry(topic.clone()).or_default().push(offset);
                self.positions.insert(topic, (epoch, offset));
            }
            Some("gap") => self.gaps.push(v.clone()),
            _ => {}
        }
    }

    fn new() -> Tracker {
        Tracker {
            positions: BTreeMap::new(),
            since_ts: herald::event::now_ms() - 1,
            got: HashMap::new(),
            gaps: Vec::new(),
        }
    }

    /// The `since` a client sends after losing its session.
    fn since(&self) -> Value {
        let topics: serde_json::Map<String, Value> = self
            .positions
            .iter()
            .map(|(t, (e, o))| (t.clone(), json!({"epoch": e, "offset": o})))
            .collect();
        json!({"topics": topics, "ts": self.since_ts})
    }

    fn count(&self) -> usize {
        self.got.values().map(Vec::len).sum()
    }
}

/// Reads frames until the socket ends (the server was killed).
async fn read_until_gone(c: &mut Raw, t: &mut Tracker) {
    while let Ok(Some(Ok(m))) = tokio::time::timeout(WAIT, c.ws.next()).await {
        match m {
            Message::Text(text) => t.see(&serde_json::from_str(&text).unwrap()),
            Message::Close(_) => return,
            _ => {}
        }
    }
}

/// Reads frames until `t` holds `n` messages; returns the `ok`s seen on the way.
async fn read_until(c: &mut Raw, t: &mut Tracker, n: usize) -> Vec<Value> {
    let mut oks = Vec::new();
    while t.count() < n {
        let v = c.recv().await;
        if v["op"] == "ok" || v["op"] == "error" {
            oks.push(v.clone());
        }
        t.see(&v);
    }
    oks
}

/// Connects a new session and subscribes `pattern`, with `since` when given.
async fn subscribe(url: &str, pattern: &str, since: Option<Value>) -> (Raw, Value) {
    let mut c = Raw::connect(url).await;
    let w = c.hello().await;
    assert_eq!(w["resumed"], false);
    let mut sub = json!({"op": "sub", "id": "s", "pattern": pattern});
    if let Some(s) = since {
        sub["since"] = s;
    }
    c.send(sub).await;
    (c, w)
}

/// Acked publishes: topic → offsets, in publish order.
type Acked = HashMap<String, Vec<u64>>;

async fn publish_round(url: &str, topics: &[String], per_topic: usize, acked: &mut Acked) {
    let mut p = Raw::connect(url).await;
    p.hello().await;
    for k in 0..per_topic {
        for t in topics {
            let ok = p.publish(t, json!({"k": k})).await;
            acked
                .entry(t.clone())
                .or_default()
                .push(ok["offset"].as_u64().unwrap());
        }
    }
}

fn spawn_durable(data: &Path, config: &Path, listen: &str) -> Binary {
    Binary::spawn(&[
        "--listen",
        listen,
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ])
}

async fn kill9(mut bin: Binary) {
    bin.signal("KILL");
    tokio::task::spawn_blocking(move || bin.wait(Duration::from_secs(10)))
        .await
        .unwrap();
}

/// (a) of the issue, with raw sockets: a durable server killed and restarted four times; each
/// time the subscribers come back after publishers have gone on (also on topics first used
/// while they were away) and recover with `since`: every acked message exactly once per
/// topic, in offset order, no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pattern_since_recovers_everything_across_kill9_restarts() {
    let dir = temp_dir("kill9");
    let data = dir.join("data");
    let config = dir.join("herald.toml");
    std::fs::write(
        &config,
        "[[topics]]\npattern = \"t/**\"\nhistory = 10000\npersist = true\nmax_rewind = 100000\n",
    )
    .unwrap();
    let mut bin = spawn_durable(&data, &config, "127.0.0.1:0");
    let listen = bin.addr.to_string();
    let url = bin.ws_url();
    let mut acked = Acked::new();
    let mut subs: Vec<(Raw, Tracker)> = Vec::new();
    for _ in 0..4 {
        let (c, _) = subscribe(&url, "t/**", None).await;
        subs.push((c, Tracker::new()));
    }
    let mut topics: Vec<String> = (0..8).map(|i| format!("t/{i}")).collect();
    for round in 0..4 {
        publish_round(&url, &topics, 5, &mut acked).await;
        // Killed with messages still on their way to the subscribers.
        kill9(bin).await;
        for (c, t) in subs.iter_mut() {
            read_until_gone(c, t).await;
        }
        bin = spawn_durable(&data, &config, &listen);
        // While the subscribers are away: more on the old topics and on new ones.
        topics.push(format!("t/new/{round}"));
        publish_round(&url, &topics, 3, &mut acked).await;
        for (c, t) in subs.iter_mut() {
            let (again, _) = subscribe(&url, "t/**", Some(t.since())).await;
            *c = again;
        }
    }
    let total: usize = acked.values().map(Vec::len).sum();
    for (c, t) in subs.iter_mut() {
        let oks = read_until(c, t, total).await;
        assert!(oks.iter().all(|ok| ok["op"] == "ok"), "{oks:?}");
        assert!(t.gaps.is_empty(), "no gap: {:?}", t.gaps);
        assert_eq!(t.got, acked, "every acked message once per topic, in order");
    }
    // Nothing more was sent than the acked messages.
    let (c, t) = &mut subs[0];
    assert!(c.recv_within(Duration::from_millis(200)).await.is_none());
    assert_eq!(t.count(), total);
    drop(subs);
    kill9(bin).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// (b): with history shorter than what was missed, exact topic gaps before what is held.
#[tokio::test]
async fn short_history_gives_exact_topic_gaps_then_what_is_held() {
    let server = TestServer::with_config(with_topics(&[("t/**", 5, 1000)])).await;
    let url = server.ws_url();
    let mut p = server.client().await;
    let mut epoch = String::new();
    for i in 0..3 {
        epoch = p.publish("t/a", json!(i)).await["epoch"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    // The client had t/a up to 3. Meanwhile 20 more on t/a (held: 19..=23), and t/b, new,
    // gets 10 (held: 6..=10), all after the client's `ts`.
    let ts = herald::event::now_ms() - 1;
    tokio::time::sleep(Duration::from_millis(5)).await;
    for i in 0..20 {
        p.publish("t/a", json!(i)).await;
    }
    let b_epoch = p.publish("t/b", json!(0)).await["epoch"].clone();
    for i in 1..10 {
        p.publish("t/b", json!(i)).await;
    }
    let since = json!({"topics": {"t/a": {"epoch": epoch, "offset": 3},
                                  "t/c": {"epoch": "gone", "offset": 9}},
                       "ts": ts});
    let (mut c, _) = subscribe(&url, "t/**", Some(since)).await;
    let mut frames = Vec::new();
    while frames.iter().filter(|f: &&Value| f["op"] == "msg").count() < 10 {
        frames.push(c.recv().await);
    }
    let ok = frames.iter().find(|f| f["op"] == "ok").cloned();
    let ok = match ok {
        Some(ok) => ok,
        None => c.recv_op_id("s").await,
    };
    assert_eq!(ok["recovered"], false, "{ok}");
    let stream: Vec<String> = frames
        .iter()
        .filter(|f| f["op"] != "ok")
        .map(|f| match f["op"].as_str().unwrap() {
            "gap" => format!(
                "gap {} {}..{} {}",
                f["topic"].as_str().unwrap(),
                f["from_offset"],
                f["to_offset"],
                f["reason"].as_str().unwrap()
            ),
            _ => format!("{} {}", f["topic"].as_str().unwrap(), f["offset"]),
        })
        .collect();
    let mut want = vec!["gap t/a 4..18 history".to_owned()];
    want.extend((19..=23).map(|o| format!("t/a {o}")));
    want.push("gap t/b 1..5 history".into());
    want.extend((6..=10).map(|o| format!("t/b {o}")));
    assert_eq!(stream, want);
    let gap = frames.iter().find(|f| f["op"] == "gap").unwrap();
    assert_eq!(gap["epoch"], json!(epoch));
    assert!(
        gap.get("from_seq").is_none() && gap.get("seq").is_none(),
        "{gap}"
    );
    // t/c was listed under an epoch the server never had: an epoch gap, empty here (t/c is
    // new and held from its start), sent when t/c's turn came... it sorts after t/b.
    let c_gap = c.recv_op("gap").await;
    assert_eq!(
        (
            c_gap["topic"].as_str(),
            c_gap["reason"].as_str(),
            c_gap["from_offset"].as_u64(),
            c_gap["to_offset"].as_u64()
        ),
        (Some("t/c"), Some("epoch"), Some(1), Some(0)),
        "{c_gap}"
    );
    assert_ne!(c_gap["epoch"], json!("gone"));
    // Live messages follow, with seqs that count only messages.
    let m = {
        p.publish("t/b", json!("live")).await;
        c.recv_op("msg").await
    };
    assert_eq!((m["offset"].as_u64(), m.get("replay")), (Some(11), None));
    assert_eq!(m["epoch"], b_epoch);
    assert_eq!(m["seq"], 11);
    server.stop().await;
}

/// `max_rewind` keeps the newest of a recovery and reports the older part as a gap.
#[tokio::test]
async fn max_rewind_cuts_a_recovery_with_a_gap_not_silently() {
    let server = TestServer::with_config(with_topics(&[("t/**", 100, 5)])).await;
    let mut p = server.client().await;
    let epoch = p.publish("t/a", json!(0)).await["epoch"].clone();
    for i in 1..20 {
        p.publish("t/a", json!(i)).await;
    }
    let since = json!({"topics": {"t/a": {"epoch": epoch, "offset": 1}}});
    let (mut c, _) = subscribe(&server.ws_url(), "t/*", Some(since)).await;
    let gap = c.recv_op("gap").await;
    assert_eq!(
        (
            gap["from_offset"].as_u64(),
            gap["to_offset"].as_u64(),
            gap["reason"].as_str()
        ),
        (Some(2), Some(15), Some("history")),
        "{gap}"
    );
    let mut t = Tracker::new();
    read_until(&mut c, &mut t, 5).await;
    assert_eq!(t.got["t/a"], vec![16, 17, 18, 19, 20]);
    server.stop().await;
}

/// No hole and no duplicate at the seam: publishers keep going on old and ever-new topics
/// while subscribers recover from positions taken earlier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_under_live_publishing_has_no_hole_or_duplicate_at_the_seam() {
    let mut config = with_topics(&[("t/**", 100_000, 100_000)]);
    // Room for a whole replay: what is tested is the seam, not overflow (a fast machine
    // publishes more than the default 1,024 messages between two recoveries).
    config.session.buffer_messages = 100_000;
    config.session.buffer_bytes = 256 << 20;
    let server = TestServer::with_config(config).await;
    let url = server.ws_url();
    let start_ts = herald::event::now_ms() - 1;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(parking_lot::Mutex::new(Acked::new()));
    let mut pubs = Vec::new();
    for w in 0..2 {
        let (url, stop, acked) = (url.clone(), stop.clone(), acked.clone());
        pubs.push(tokio::spawn(async move {
            let mut p = Raw::connect(&url).await;
            p.hello().await;
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Every fifth publish opens a topic nobody has seen yet.
                let t = if k.is_multiple_of(5) {
                    format!("t/new/{w}/{k}")
                } else {
                    format!("t/{w}/{}", k % 3)
                };
                let ok = p.publish(&t, json!(k)).await;
                acked
                    .lock()
                    .entry(t)
                    .or_default()
                    .push(ok["offset"].as_u64().unwrap());
                k += 1;
            }
        }));
    }
    // A first subscriber sees part of it, then loses its session.
    let (mut first, _) = subscribe(&url, "t/**", Some(json!({"ts": start_ts}))).await;
    let mut t = Tracker::new();
    t.since_ts = start_ts;
    read_until(&mut first, &mut t, 300).await;
    drop(first);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Several recoveries while publishing goes on, each from where the last one stopped.
    for _ in 0..3 {
        let (mut c, _) = subscribe(&url, "t/**", Some(t.since())).await;
        let n = t.count() + 200;
        read_until(&mut c, &mut t, n).await;
    }
    let (mut c, _) = subscribe(&url, "t/**", Some(t.since())).await;
    stop.store(true, Ordering::Relaxed);
    for p in pubs {
        p.await.unwrap();
    }
    let acked = acked.lock().clone();
    let total: usize = acked.values().map(Vec::len).sum();
    read_until(&mut c, &mut t, total).await;
    assert!(t.gaps.is_empty(), "{:?}", t.gaps);
    assert_eq!(t.got, acked);
    assert!(c.recv_within(Duration::from_millis(200)).await.is_none());
    server.stop().await;
}

/// (e): bad `since` input gets a clear `bad_request` (or a topic gap where the input is
/// well-formed but cannot be placed); the server goes on serving.
#[tokio::test]
async fn bad_since_input_gets_clear_errors_or_gaps() {
    let mut config = with_topics(&[("t/**", 10, 1000)]);
    config.max_frame = 1 << 20;
    let server = TestServer::with_config(config).await;
    let mut c = server.client().await;
    let epoch = c.publish("t/a", json!(1)).await["epoch"].clone();
    let many: serde_json::Map<String, Value> = (0..10_000)
        .map(|i| (format!("t/{i}"), json!({"epoch": "e", "offset": 1})))
        .collect();
    let bad = [
        json!({"topics": {"t/a": {"epoch": 5, "offset": 1}}}),
        json!({"topics": {"t/a": {"epoch": "e", "offset": -1}}}),
        json!({"topics": {"t/a": {"epoch": "e"}}}),
        json!({"topics": ["t/a"]}),
        json!({"topics": {"t//a": {"epoch": "e", "offset": 1}}}),
        json!({"ts": "yesterday"}),
        json!({"epoch": "e", "offset": 1, "ts": 1}),
        json!("t/a"),
        json!({"topics": many}),
    ];
    for since in bad {
        let e = c
            .request(json!({"op": "sub", "pattern": "t/**", "since": since}))
            .await;
        assert_eq!(e["op"], "error", "{e}");
        assert_eq!(e["code"], "bad_request", "{e}");
        assert!(e["message"].as_str().unwrap().contains("since"), "{e}");
    }
    // Refused combinations.
    for sub in [
        json!({"op": "sub", "pattern": "t/*", "since": {"epoch": epoch, "offset": 0}}),
        json!({"op": "sub", "pattern": "t/*", "group": "g", "since": {"ts": 1}}),
        json!({"op": "sub", "pattern": "t/*", "rewind": 2, "since": {"ts": 1}}),
    ] {
        let e = c.request(sub).await;
        assert_eq!(e["code"], "bad_request", "{e}");
    }
    // Well-formed but unplaceable: an offset past the end, an unknown epoch.
    for position in [
        json!({"epoch": epoch, "offset": 999}),
        json!({"epoch": "nope", "offset": 1}),
    ] {
        let mut s = server.client().await;
        let ok = s
            .request(json!({"op": "sub", "pattern": "t/**",
                            "since": {"topics": {"t/a": position}}}))
            .await;
        assert_eq!(ok["recovered"], false, "{ok}");
        let gap = s.recv_op("gap").await;
        assert_eq!(
            (gap["reason"].as_str(), gap["topic"].as_str()),
            (Some("epoch"), Some("t/a"))
        );
        let m = s.recv_op("msg").await;
        assert_eq!(
            (m["offset"].as_u64(), m["replay"].as_bool()),
            (Some(1), Some(true))
        );
    }
    // A refused subscription left nothing behind, and the connection still works.
    let ok = c.request(json!({"op": "sub", "pattern": "t/**"})).await;
    assert_eq!(ok["op"], "ok");
    c.send(json!({"op": "pub", "topic": "t/z", "data": 2}))
        .await;
    assert_eq!(c.recv_op("msg").await["topic"], "t/z");
    // Over max_frame: the frame-size rule answers first, with its close code.
    let small = TestServer::with_config(with_topics(&[("t/**", 10, 1000)])).await;
    let mut s = small.client().await;
    let many: serde_json::Map<String, Value> = (0..10_000)
        .map(|i| (format!("t/{i}"), json!({"epoch": "e", "offset": 1})))
        .collect();
    s.send(json!({"op": "sub", "pattern": "t/**", "since": {"topics": many}}))
        .await;
    assert_eq!(s.expect_close().await.0, 1009);
    small.stop().await;
    server.stop().await;
}

/// A topic gap keeps its place across a resume: a client that drops before reading it gets
/// it again, before the same replayed messages.
#[tokio::test]
async fn a_topic_gap_is_sent_again_on_resume() {
    let server = TestServer::with_config(with_topics(&[("t/**", 3, 1000)])).await;
    let mut p = server.client().await;
    let epoch = p.publish("t/a", json!(0)).await["epoch"].clone();
    for i in 1..10 {
        p.publish("t/a", json!(i)).await;
    }
    let (mut c, w) = subscribe(
        &server.ws_url(),
        "t/a",
        Some(json!({"epoch": epoch, "offset": 1})),
    )
    .await;
    let gap = c.recv_op("gap").await;
    assert_eq!(
        (gap["from_offset"].as_u64(), gap["to_offset"].as_u64()),
        (Some(2), Some(7))
    );
    drop(c);
    let mut again = Raw::connect(&server.ws_url()).await;
    again
        .send(json!({"op": "hello", "session": w["session"], "last_seq": 0}))
        .await;
    assert_eq!(again.recv().await["resumed"], true);
    let mut frames = Vec::new();
    while frames.len() < 4 {
        let f = again.recv().await;
        if f["op"] == "gap" || f["op"] == "msg" {
            frames.push(f);
        }
    }
    assert_eq!(frames[0]["op"], "gap", "{frames:?}");
    assert_eq!(frames[0]["to_offset"], 7);
    let offsets: Vec<_> = frames[1..].iter().map(|f| f["offset"].as_u64()).collect();
    assert_eq!(offsets, [Some(8), Some(9), Some(10)]);
    server.stop().await;
}

/// (d): a session that expired (its TTL ran out while the client was away) recovers the
/// same way as one lost to a restart.
#[tokio::test]
async fn an_expired_session_recovers_with_since() {
    let mut config = with_topics(&[("t/**", 10_000, 10_000)]);
    config.session.ttl = Duration::from_millis(200);
    let server = TestServer::with_config(config).await;
    let url = server.ws_url();
    let mut t = Tracker::new();
    let (mut c, w) = subscribe(&url, "t/**", None).await;
    let mut acked = Acked::new();
    let topics: Vec<String> = (0..5).map(|i| format!("t/{i}")).collect();
    publish_round(&url, &topics, 4, &mut acked).await;
    read_until(&mut c, &mut t, 10).await;
    drop(c);
    let mut more = topics.clone();
    more.push("t/late".into());
    publish_round(&url, &more, 3, &mut acked).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut c = Raw::connect(&url).await;
    c.send(json!({"op": "hello", "session": w["session"], "last_seq": t.count()}))
        .await;
    let welcome = c.recv().await;
    assert_eq!(welcome["resumed"], false, "the session expired: {welcome}");
    c.send(json!({"op": "sub", "id": "s", "pattern": "t/**", "since": t.since()}))
        .await;
    let total: usize = acked.values().map(Vec::len).sum();
    let oks = read_until(&mut c, &mut t, total).await;
    assert!(t.gaps.is_empty(), "{:?}", t.gaps);
    assert_eq!(t.got, acked);
    let ok = match oks.first() {
        Some(ok) => ok.clone(),
        None => c.recv_op_id("s").await,
    };
    assert_eq!(ok["recovered"], true, "{ok}");
    server.stop().await;
}
