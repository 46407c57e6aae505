//! Sessions that outlive sockets (PROTOCOL.md §3): resume, gaps, slow consumers, expiry.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use herald_client::{Client, ClientEvent, ClientOptions, Delivery};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// (a) Chaos: 20 subscribers while 50,000 messages are published; each subscriber's socket
/// is killed at random moments at least 10 times and resumed within the TTL. Every
/// subscriber sees every seq exactly once, in order, and no gap.
///
/// A kill counts only when it hit a live connection while messages were being published:
/// the killer drops the socket, then waits for the client to report that very connection
/// lost and the session resumed before it kills again (so no kill is wasted on a connection
/// that is not up yet, and the event channel never backs up). Nothing depends on timing:
/// the publisher waits, chunk by chunk, until every killer has had its share of kills, so at
/// least 10 land before the last message is published however slow the machine is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_resume_loses_nothing() {
    const SUBS: usize = 20;
    const MESSAGES: u64 = 50_000;
    const CHUNKS: u64 = 100;
    const KILLS: u64 = 10;
    let mut cfg = config();
    // Large enough that no reconnect outlasts the buffer: this test is about resume
    // correctness; overflow has its own test.
    cfg.session.buffer_messages = MESSAGES as usize;
    cfg.session.buffer_bytes = 256 << 20;
    let srv = TestServer::with_config(cfg).await;
    let opts = ClientOptions {
        backoff_min: Duration::from_millis(5),
        backoff_max: Duration::from_millis(50),
        ..Default::default()
    };
    let mut clients = Vec::new();
    for _ in 0..SUBS {
        let c = Client::connect_with(&srv.ws_url(), opts.clone())
            .await
            .unwrap();
        let sub = c.subscribe("chaos/*").await.unwrap();
        clients.push((c, sub));
    }
    let publishing = Arc::new(AtomicU64::new(1));
    let hits: Arc<Vec<AtomicU64>> = Arc::new((0..SUBS).map(|_| AtomicU64::new(0)).collect());
    let mut tasks = Vec::new();
    for (i, (client, mut sub)) in clients.into_iter().enumerate() {
        let (publishing, hits) = (publishing.clone(), hits.clone());
        let killer_client = client.clone();
        let mut events = client.events();
        let killer = tokio::spawn(async move {
            let mut seed = 0x2545_f491_4f6c_dd1d_u64 ^ (i as u64 + 1);
            loop {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                tokio::time::sleep(Duration::from_millis(1 + seed % 40)).await;
                if publishing.load(Ordering::Acquire) == 0 {
                    return;
                }
                killer_client.drop_connection();
                // The drop lands on the connection that is up now: the client reports it
                // lost, then reconnects, and the reconnect must be a resume.
                let mut lost = false;
                loop {
                    let e = tokio::time::timeout(WAIT * 6, events.recv())
                        .await
                        .unwrap_or_else(|_| panic!("subscriber {i}: no reconnect"))
                        .expect("client events");
                    match e {
                        ClientEvent::Disconnected { reason } => {
                            lost |= reason == "dropped on request";
                        }
                        ClientEvent::Connected { resumed, .. } => {
                            assert!(resumed, "subscriber {i}: a reconnect was not resumed");
                            if lost {
                                break;
                            }
                        }
                        ClientEvent::Gap(g) => panic!("subscriber {i}: unexpected gap {g:?}"),
                        ClientEvent::Bye { .. } => panic!("subscriber {i}: server said bye"),
                        e @ (ClientEvent::Recovered { .. }
                        | ClientEvent::RecoveryRefused { .. }) => {
                            panic!("subscriber {i}: the session was lost: {e:?}")
                        }
                        // Token and server-side subscription events: none in this test.
                        _ => {}
                    }
                }
                hits[i].fetch_add(1, Ordering::AcqRel);
            }
        });
        let reader = tokio::spawn(async move {
            let mut next = 1u64;
            while next <= MESSAGES {
                let d = tokio::time::timeout(Duration::from_secs(60), sub.next())
                    .await
                    .expect("stalled")
                    .expect("stream ended");
                match d {
                    Delivery::Msg(m) => {
                        assert_eq!(m.seq, next, "subscriber {i}: seq out of order");
                        assert_eq!(m.data["i"], next, "subscriber {i}: wrong message");
                        next += 1;
                    }
                    Delivery::Gap(g) => panic!("subscriber {i}: unexpected gap {g:?}"),
                    d @ (Delivery::TopicGap(_) | Delivery::Recovered { .. }) => {
                        panic!("subscriber {i}: the session was lost: {d:?}")
                    }
                }
            }
            client
        });
        tasks.push((killer, reader));
    }
    // Publish in chunks. Before chunk c, every killer must have landed its share of the
    // kills (all KILLS of them before the last chunk): a wait, never a timing assumption.
    let per_chunk = MESSAGES / CHUNKS;
    for chunk in 0..CHUNKS {
        let due = (chunk * KILLS).div_ceil(CHUNKS - 1).min(KILLS);
        let deadline = tokio::time::Instant::now() + WAIT * 6;
        while hits.iter().any(|h| h.load(Ordering::Acquire) < due) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "killers stuck before chunk {chunk}: {hits:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for j in 1..=per_chunk {
            let i = chunk * per_chunk + j;
            srv.bus.publish_json("chaos/t", &json!({ "i": i })).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    publishing.store(0, Ordering::Release);
    for (i, (killer, reader)) in tasks.into_iter().enumerate() {
        killer.await.unwrap();
        let landed = hits[i].load(Ordering::Acquire);
        assert!(
            landed >= KILLS,
            "subscriber {i}: only {landed} kills hit a live connection while publishing"
        );
        let client = reader.await.unwrap();
        client.close();
    }
}

/// (b) A disconnected session misses more than its buffer: the exact gap range is
/// reported, then the newest messages.
#[tokio::test]
async fn overflow_while_away_reports_exact_gap() {
    let mut cfg = config();
    cfg.session.buffer_messages = 10;
    let srv = TestServer::with_config(cfg).await;
    let mut c = srv.connect().await;
    let w = c.hello().await;
    let session = w["session"].as_str().unwrap().to_owned();
    c.sub("g/*").await;
    srv.bus.publish_json("g/a", &json!(1)).unwrap();
    assert_eq!(c.recv_op("msg").await["seq"], 1);
    drop(c);
    // Wait until the server has noticed, then publish 100 more while nobody listens.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 2..=101 {
        srv.bus.publish_json("g/a", &json!(i)).unwrap();
    }
    let mut c = srv.connect().await;
    c.send(json!({"op": "hello", "session": session, "last_seq": 1}))
        .await;
    let w = c.recv().await;
    assert_eq!(
        (w["op"].clone(), w["resumed"].clone()),
        (json!("welcome"), json!(true))
    );
    assert_eq!(w["session"], session.as_str());
    let gap = c.recv().await;
    assert_eq!(
        gap,
        json!({"op": "gap", "from_seq": 2, "to_seq": 91, "reason": "overflow"})
    );
    for seq in 92..=101u64 {
        let m = c.recv().await;
        assert_eq!(
            (m["seq"].as_u64(), m["data"].as_u64()),
            (Some(seq), Some(seq))
        );
    }
    // Subscriptions survived: live messages follow.
    srv.bus.publish_json("g/b", &json!("live")).unwrap();
    let m = c.recv().await;
    assert_eq!(
        (m["seq"].clone(), m["data"].clone()),
        (json!(102), json!("live"))
    );
}

/// A resume replays what was sent but never seen (lost in flight), from `last_seq`.
#[tokio::test]
async fn resume_replays_unseen_messages_in_order() {
    let srv = TestServer::start().await;
    let mut c = srv.connect().await;
    let session = c.hello().await["session"].as_str().unwrap().to_owned();
    c.sub("r").await;
    for i in 1..=5 {
        srv.bus.publish_json("r", &json!(i)).unwrap();
    }
    for seq in 1..=5u64 {
        assert_eq!(c.recv_op("msg").await["seq"], seq);
    }
    drop(c);
    // The client claims to have seen only up to 2.
    let mut c = srv.connect().await;
    c.send(json!({"op": "hello", "session": session, "last_seq": 2}))
        .await;
    assert_eq!(c.recv().await["resumed"], true);
    for seq in 3..=5u64 {
        assert_eq!(c.recv().await["seq"], seq);
    }
    assert!(
        c.recv_within(Duration::from_millis(200)).await.is_none(),
        "no duplicates"
    );
}

/// Resuming a session that is still attached elsewhere takes it over: the old connection
/// is closed with 1008, the new one gets the stream.
#[tokio::test]
async fn resume_takes_over_a_live_connection() {
    let srv = TestServer::start().await;
    let mut old = srv.connect().await;
    let session = old.hello().await["session"].as_str().unwrap().to_owned();
    old.sub("x").await;
    let mut new = srv.connect().await;
    new.send(json!({"op": "hello", "session": session, "last_seq": 0}))
        .await;
    assert_eq!(new.recv().await["resumed"], true);
    let (code, _) = old.expect_close().await;
    assert_eq!(code, 1008);
    srv.bus.publish_json("x", &json!(1)).unwrap();
    assert_eq!(new.recv().await["seq"], 1);
}

fn rss_kib(pid: u32) -> u64 {
    herald_bench::proc::status_kib(pid, "VmRSS").expect("VmRSS")
}

/// (c) One subscriber stops reading while 100 others receive 100,000 messages: the others
/// get everything, and the stalled session is held to its caps, which `/v1/stats` shows.
///
/// What bounds memory is checked directly: at the end only the stalled session has unsent
/// messages, so the server-wide `buffer.unsent` is its backlog and must be within
/// `buffer_messages` (uncapped, it would be nearly all 100,000); the readers' buffers are
/// full of already-sent messages kept for resume (exactly `buffer_messages` each), so the
/// total held is within 101 × `buffer_messages` only if the stalled one is within its cap;
/// and the overflow was counted as drops. RSS is a cruder, second check: 101 rings of
/// 16,384 slots (16 B each: 26 MiB), the newest 16,000 events (about 4 MiB, shared by all
/// rings) and the readers' write buffers make up the growth (about 52 MiB measured in a
/// debug build), bounded here at 96 MiB to leave room for allocator noise; it cannot tell a
/// capped stalled buffer from an uncapped one (that would add some 25 MiB), the stats can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_reader_does_not_hurt_others() {
    const READERS: usize = 100;
    const MESSAGES: u64 = 100_000;
    const BUFFER: u64 = 16_000;
    let dir = std::env::temp_dir().join(format!("herald-stall-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("herald.toml");
    std::fs::write(
        &cfg,
        format!("[session]\nbuffer_messages = {BUFFER}\nbuffer_bytes = \"8MiB\"\n"),
    )
    .unwrap();
    let bin = Binary::spawn(&["--listen", "127.0.0.1:0", "--config", cfg.to_str().unwrap()]);
    let pid = bin.child.id();

    let mut stalled = connect_small_window(bin.addr).await;
    stalled.hello().await;
    stalled.sub("stall/t").await;
    // From here on `stalled` never reads again.

    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..READERS).map(|_| AtomicU64::new(0)).collect());
    let mut readers = Vec::new();
    for r in 0..READERS {
        let mut c = Raw::connect(&bin.ws_url()).await;
        c.hello().await;
        c.sub("stall/t").await;
        let progress = progress.clone();
        readers.push(tokio::spawn(async move {
            let mut next = 1u64;
            while next <= MESSAGES {
                let m = tokio::time::timeout(Duration::from_secs(60), c.ws.next())
                    .await
                    .expect("reader stalled")
                    .expect("socket ended")
                    .expect("socket error");
                if let Message::Text(t) = m {
                    let seq = seq_of(&t);
                    assert_eq!(seq, next, "reader {r}: {t}");
                    next += 1;
                    progress[r].store(next - 1, Ordering::Relaxed);
                }
            }
        }));
    }
    let base_rss = rss_kib(pid);
    let mut publisher = Raw::connect(&bin.ws_url()).await;
    publisher.hello().await;
    let payload = "x".repeat(64);
    let mut peak = base_rss;
    for i in 1..=MESSAGES {
        publisher
            .send(json!({"op": "pub", "topic": "stall/t", "data": {"i": i, "p": payload}}))
            .await;
        if i % 1000 == 0 {
            // Keep the healthy readers within their buffers (they must lose nothing), and
            // watch memory.
            loop {
                let slowest = progress
                    .iter()
                    .map(|p| p.load(Ordering::Relaxed))
                    .min()
                    .unwrap();
                if slowest + BUFFER / 2 >= i {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            peak = peak.max(rss_kib(pid));
        }
    }
    for r in readers {
        r.await.unwrap();
    }
    peak = peak.max(rss_kib(pid));
    let stats: serde_json::Value = get_json(format!("http://{}/v1/stats", bin.addr)).await;
    let (held, unsent, dropped) = (
        stats["buffer"]["messages"].as_u64().unwrap(),
        stats["buffer"]["unsent"].as_u64().unwrap(),
        stats["dropped"].as_u64().unwrap(),
    );
    eprintln!(
        "server RSS: base {base_rss} KiB, peak {peak} KiB; held {held}, unsent {unsent}, \
         dropped {dropped}, buffer bytes {}",
        stats["buffer"]["bytes"]
    );
    assert!(
        unsent <= BUFFER,
        "the stalled session's backlog is {unsent} messages"
    );
    assert!(
        held <= (READERS as u64 + 1) * BUFFER,
        "{held} messages held by {} sessions",
        READERS + 1
    );
    assert!(
        stats["buffer"]["bytes"].as_u64().unwrap() <= (READERS as u64 + 1) * (8 << 20),
        "{stats}"
    );
    assert!(
        dropped > 0,
        "the stalled session's overflow was not counted"
    );
    assert!(dropped + unsent <= MESSAGES, "{stats}");
    assert!(
        peak - base_rss < 96 * 1024,
        "RSS grew by {} KiB",
        peak - base_rss
    );
    drop(stalled);
}

fn seq_of(frame: &str) -> u64 {
    let i = frame.find("\"seq\":").expect("a msg frame") + 6;
    frame[i..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap()
}

/// (d) A session detached for longer than its TTL is gone: `resumed:false`.
#[tokio::test]
async fn expired_session_is_not_resumed() {
    let mut cfg = config();
    cfg.session.ttl = Duration::from_millis(300);
    let srv = TestServer::with_config(cfg).await;
    let mut c = srv.connect().await;
    let session = c.hello().await["session"].as_str().unwrap().to_owned();
    c.sub("e").await;
    drop(c);
    // Within the TTL it resumes …
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut c = srv.connect().await;
    c.send(json!({"op": "hello", "session": session, "last_seq": 0}))
        .await;
    assert_eq!(c.recv().await["resumed"], true);
    drop(c);
    // … after it, it is gone, along with its subscriptions and buffer.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(srv.bus.session_count(), 0);
    assert_eq!(srv.bus.subscription_count(), 0);
    let mut c = srv.connect().await;
    c.send(json!({"op": "hello", "session": session, "last_seq": 0}))
        .await;
    let w = c.recv().await;
    assert_eq!(w["resumed"], false);
    assert_ne!(w["session"], session.as_str());
}

/// `slow_consumer = "disconnect"`: a subscriber whose unsent backlog fills is closed with
/// 4008; its session stays resumable and reports what it missed.
#[tokio::test]
async fn slow_consumer_disconnect_closes_4008_and_keeps_session() {
    let mut cfg = config();
    cfg.session.buffer_messages = 50;
    cfg.session.slow_consumer = herald::config::SlowConsumer::Disconnect;
    let srv = TestServer::with_config(cfg).await;
    let mut slow = srv.connect().await;
    let session = slow.hello().await["session"].as_str().unwrap().to_owned();
    slow.sub("s").await;
    let data = json!("y".repeat(1000));
    // Publish until the server gives up on the reader (the socket buffers fill first).
    let mut published = 0u64;
    while srv.bus.stats().slow_consumers.load(Ordering::Relaxed) == 0 {
        for _ in 0..100 {
            srv.bus.publish_json("s", &data).unwrap();
        }
        published += 100;
        assert!(published < 2_000_000, "never disconnected");
        tokio::task::yield_now().await;
    }
    // Now read: whatever was in flight, then the close.
    let mut last_seq = 0;
    let code = loop {
        match tokio::time::timeout(WAIT, slow.ws.next())
            .await
            .expect("close")
            .unwrap()
        {
            Ok(Message::Text(t)) => last_seq = seq_of(&t),
            Ok(Message::Close(c)) => break c.map(|c| u16::from(c.code)).unwrap(),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert_eq!(code, 4008);
    let mut c = srv.connect().await;
    c.send(json!({"op": "hello", "session": session, "last_seq": last_seq}))
        .await;
    assert_eq!(c.recv().await["resumed"], true);
    let next = c.recv().await;
    let first = if next["op"] == "gap" {
        assert_eq!(next["from_seq"], last_seq + 1);
        next["to_seq"].as_u64().unwrap() + 1
    } else {
        next["seq"].as_u64().unwrap()
    };
    assert!(first > last_seq);
}

/// The Rust client reconnects by itself with backoff, resumes, and surfaces the gap to its
/// caller, then keeps going.
#[tokio::test]
async fn client_reconnects_resumes_and_surfaces_gaps() {
    let mut cfg = config();
    cfg.session.buffer_messages = 10;
    let srv = TestServer::with_config(cfg).await;
    let opts = ClientOptions {
        backoff_min: Duration::from_millis(400),
        backoff_max: Duration::from_millis(400),
        ..Default::default()
    };
    let client = Client::connect_with(&srv.ws_url(), opts).await.unwrap();
    let mut events = client.events();
    let mut sub = client.subscribe("cg").await.unwrap();
    srv.bus.publish_json("cg", &json!(1)).unwrap();
    assert_eq!(sub.next_msg().await.unwrap().seq, 1);
    let session = client.session();
    client.drop_connection();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 2..=51 {
        srv.bus.publish_json("cg", &json!(i)).unwrap();
    }
    match sub.next().await.unwrap() {
        Delivery::Gap(g) => assert_eq!((g.from_seq, g.to_seq), (2, 41)),
        other => panic!("expected a gap, got {other:?}"),
    }
    for seq in 42..=51 {
        let m = sub.next_msg().await.unwrap();
        assert_eq!((m.seq, m.data.clone()), (seq, json!(seq)));
    }
    assert_eq!(client.session(), session, "same session");
    let mut saw_gap = false;
    while let Ok(e) = events.try_recv() {
        saw_gap |= matches!(e, ClientEvent::Gap(ref g) if g.from_seq == 2);
    }
    assert!(saw_gap);
    // Still live, and publishing works through the resumed connection.
    let ack = client.publish("cg", &json!("after")).await.unwrap();
    assert_eq!(ack.offset, 52);
    assert_eq!(sub.next_msg().await.unwrap().data, json!("after"));
}

/// A connection closed for silence leaves its session resumable. The client here stops
/// reading and writing; the server must close it on its own (heartbeats): the connection is
/// gone from the server's count *before* anyone resumes, so a broken heartbeat cannot hide
/// behind the resume's takeover of a live connection. (The close frame itself cannot be
/// read back here: reading would make the client answer the queued pings into a socket the
/// server has closed. `protocol.rs` checks the frame through a proxy.)
#[tokio::test]
async fn heartbeat_close_keeps_session() {
    let mut cfg = config();
    cfg.heartbeat = Duration::from_millis(150);
    let srv = TestServer::with_config(cfg).await;
    let mut c = srv.connect().await;
    let session = c.hello().await["session"].as_str().unwrap().to_owned();
    c.sub("hb").await;
    srv.bus.publish_json("hb", &json!("seen")).unwrap();
    assert_eq!(c.recv_op("msg").await["seq"], 1);
    // Silence: the server pings, hears nothing, closes, and forgets the connection.
    eventually("the server closed the silent connection", || {
        srv.bus.stats().connections.load(Ordering::Relaxed) == 0
    })
    .await;
    srv.bus.publish_json("hb", &json!("while away")).unwrap();
    let mut d = srv.connect().await;
    d.send(json!({"op": "hello", "session": session, "last_seq": 1}))
        .await;
    assert_eq!(d.recv().await["resumed"], true);
    let m = d.recv().await;
    assert_eq!(
        (m["seq"].as_u64(), m["data"].as_str()),
        (Some(2), Some("while away"))
    );
}

/// A half-open peer (it vanished: no FIN, no RST, nothing more in either direction) is
/// found out by heartbeats alone. Its session keeps buffering, and a resume from another
/// socket gets everything after the last seq the client saw, including what the server
/// wrote into the dead socket.
#[tokio::test]
async fn half_open_peer_is_detected_and_its_session_resumed() {
    let mut cfg = config();
    cfg.heartbeat = Duration::from_millis(150);
    let srv = TestServer::with_config(cfg).await;
    let proxy = Proxy::start(srv.addr).await;
    let mut c = Raw::connect(&proxy.ws_url()).await;
    let session = c.hello().await["session"].as_str().unwrap().to_owned();
    c.sub("ho").await;
    srv.bus.publish_json("ho", &json!(1)).unwrap();
    assert_eq!(c.recv_op("msg").await["seq"], 1);
    proxy.up(Flow::Freeze);
    proxy.down(Flow::Freeze);
    // Written into the dead connection (the server cannot know yet) …
    srv.bus.publish_json("ho", &json!(2)).unwrap();
    eventually("the server dropped the half-open connection", || {
        srv.bus.stats().connections.load(Ordering::Relaxed) == 0
    })
    .await;
    // … and buffered while detached.
    srv.bus.publish_json("ho", &json!(3)).unwrap();
    assert_eq!(
        srv.bus.session_count(),
        1,
        "the session outlives its socket"
    );
    let mut d = srv.connect().await;
    d.send(json!({"op": "hello", "session": session, "last_seq": 1}))
        .await;
    assert_eq!(d.recv().await["resumed"], true);
    for seq in 2..=3u64 {
        let m = d.recv().await;
        assert_eq!(
            (m["seq"].as_u64(), m["data"].as_u64()),
            (Some(seq), Some(seq))
        );
    }
    assert!(d.recv_within(Duration::from_millis(200)).await.is_none());
    drop(c);
}

const SECRET: &str = "sessions-test-secret-of-some-length";
const ADMIN_KEY: &str = "sessions-admin-key";

/// An HS256 token for user `sub` allowed to subscribe to `subscribe`, valid for an hour.
fn token(sub: &str, subscribe: &[&str]) -> String {
    token_with_info(sub, subscribe, serde_json::Value::Null)
}

/// [`token`] with an `info` claim (shown in presence).
fn token_with_info(sub: &str, subscribe: &[&str], info: serde_json::Value) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let mut claims = json!({"sub": sub, "exp": exp, "publish": [], "subscribe": subscribe});
    if !info.is_null() {
        claims["info"] = info;
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn auth_config() -> herald::Config {
    let mut cfg = config();
    cfg.auth = Some(herald::config::AuthConfig {
        hs256_secret: Some(SECRET.into()),
        admin_keys: vec![ADMIN_KEY.into()],
        ..Default::default()
    });
    cfg
}

/// Polls `cond` until it holds (panics after [`WAIT`]): for server-side effects of a socket
/// event that the test cannot observe on the socket itself.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// PROTOCOL.md §7 across a resume: messages buffered while the session was away under a
/// broad token are not replayed to a resume under a narrower one. The withheld seq is covered
/// by a gap (§3's invariant), the allowed one is delivered, and live traffic outside the new
/// permissions gets no seq at all.
#[tokio::test]
async fn resume_with_narrower_token_never_replays_what_it_forbids() {
    let srv = TestServer::with_config(auth_config()).await;
    let broad = token("frank", &["feed/**"]);
    let narrow = token("frank", &["feed/a/**"]);
    let mut c = Raw::connect(&format!("{}?token={broad}", srv.ws_url())).await;
    let session = c.hello().await["session"].as_str().unwrap().to_owned();
    c.sub("feed/**").await;
    drop(c);
    eventually("the server saw the disconnect", || {
        srv.bus.stats().connections.load(Ordering::Relaxed) == 0
    })
    .await;
    srv.bus.publish_json("feed/b", &json!("secret")).unwrap();
    srv.bus.publish_json("feed/a", &json!("public")).unwrap();

    let mut c = srv.connect().await;
    c.send(json!({"op": "hello", "token": narrow, "session": session, "last_seq": 0}))
        .await;
    let w = c.recv().await;
    assert_eq!(
        (w["op"].as_str(), w["resumed"].as_bool()),
        (Some("welcome"), Some(true)),
        "{w}"
    );
    srv.bus
        .publish_json("feed/b", &json!("secret, live"))
        .unwrap();
    srv.bus
        .publish_json("feed/a", &json!("public, live"))
        .unwrap();
    let mut frames = Vec::new();
    while let Some(f) = c.recv_within(Duration::from_millis(300)).await {
        frames.push(f);
    }
    assert!(
        frames.iter().all(|f| f["topic"] != "feed/b"),
        "a forbidden topic was delivered: {frames:?}"
    );
    assert_eq!(frames.len(), 3, "{frames:?}");
    assert_eq!(
        frames[0],
        json!({"op": "gap", "from_seq": 1, "to_seq": 1, "reason": "overflow"})
    );
    let got: Vec<_> = frames[1..]
        .iter()
        .map(|f| (f["seq"].clone(), f["topic"].clone(), f["data"].clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (json!(2), json!("feed/a"), json!("public")),
            (json!(3), json!("feed/a"), json!("public, live")),
        ]
    );
}

/// Presence shows who a session belongs to (PROTOCOL.md §5, §7): the token's `sub` as `user`
/// and its `info`, in the `$presence/<topic>` join and leave events and in
/// `GET /v1/presence`, and still after the member's session was resumed.
#[tokio::test]
async fn presence_events_and_listing_carry_the_token_identity() {
    let srv = TestServer::with_config(auth_config()).await;
    let url = |t: &str| format!("{}?token={t}", srv.ws_url());
    let mut watch = Raw::connect(&url(&token("ops", &["$presence/**"]))).await;
    watch.hello().await;
    watch.sub("$presence/room/1").await;
    let kim = token_with_info("kim", &["room/**"], json!({"name": "Kim", "role": "host"}));
    let mut c = Raw::connect(&url(&kim)).await;
    let session = c.hello().await["session"].as_str().unwrap().to_owned();
    c.sub("room/1").await;
    let identity = |event: &str| {
        json!({"event": event, "session": session, "user": "kim",
               "info": {"name": "Kim", "role": "host"}})
    };
    let join = watch.recv_op("msg").await;
    assert_eq!(join["topic"], "$presence/room/1");
    assert_eq!(join["data"], identity("join"));

    let listing = || async {
        let r = http()
            .get(srv.http("/v1/presence?topic=room/1"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<serde_json::Value>().await.unwrap()
    };
    let expected = json!({"count": 1, "clients": [
        {"session": session, "user": "kim", "info": {"name": "Kim", "role": "host"}}
    ]});
    assert_eq!(listing().await, expected);

    // A resume keeps the member as it was: no leave, no join, the same identity.
    drop(c);
    eventually("the server saw the disconnect", || {
        srv.bus.stats().connections.load(Ordering::Relaxed) == 1
    })
    .await;
    let mut c = srv.connect().await;
    c.send(json!({"op": "hello", "token": kim, "session": session, "last_seq": 0}))
        .await;
    assert_eq!(c.recv().await["resumed"], true);
    assert_eq!(listing().await, expected);

    c.request(json!({"op": "unsub", "pattern": "room/1"})).await;
    let leave = watch.recv_op("msg").await;
    assert_eq!(leave["data"], identity("leave"));
    assert_eq!(listing().await, json!({"count": 0, "clients": []}));
}

/// The Rust client's reconnect backoff starts at `backoff_min`, doubles per failed attempt
/// and stops growing at `backoff_max` (each wait jittered to between half and all of it).
/// After the first connection drops, every attempt reaches a listener that closes it at
/// once; the attempts' times show the growth. Only sleeps' lower bounds are relied on (a
/// sleep never ends early): 9 intervals of at least 10, 20, 40, 80, 80, … ms, 620 ms in all,
/// where a backoff stuck at its minimum gives at most 20 ms each. The cap is checked as
/// liveness: uncapped, the last wait would be at least 2.5 s.
#[tokio::test]
async fn client_backoff_grows_from_min_to_max() {
    const MIN: Duration = Duration::from_millis(20);
    const MAX: Duration = Duration::from_millis(160);
    const ATTEMPTS: usize = 10;
    let srv = TestServer::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut attempts) = tokio::sync::mpsc::unbounded_channel();
    let target = srv.addr;
    let front = tokio::spawn(async move {
        // The first connection reaches the server; every later one is closed at once.
        let (mut first, _) = listener.accept().await.unwrap();
        let mut server = tokio::net::TcpStream::connect(target).await.unwrap();
        tokio::spawn(async move {
            let _ = tokio::io::copy_bidirectional(&mut first, &mut server).await;
        });
        loop {
            let (s, _) = listener.accept().await.unwrap();
            let _ = tx.send(std::time::Instant::now());
            drop(s);
        }
    });
    let opts = ClientOptions {
        backoff_min: MIN,
        backoff_max: MAX,
        ..Default::default()
    };
    let client = Client::connect_with(&format!("ws://{addr}/ws"), opts)
        .await
        .unwrap();
    client.drop_connection();
    let mut times = Vec::new();
    for _ in 0..ATTEMPTS {
        let t = tokio::time::timeout(WAIT, attempts.recv())
            .await
            .expect("the client stopped trying")
            .unwrap();
        times.push(t);
    }
    client.close();
    front.abort();
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let total: Duration = gaps.iter().sum();
    eprintln!("intervals between attempts: {gaps:?}");
    // 620 ms at least in theory; 400 leaves room for a late-recorded first attempt.
    assert!(
        total >= Duration::from_millis(400),
        "the backoff did not grow: {gaps:?}"
    );
    assert!(
        *gaps.last().unwrap() < MAX * 10,
        "the backoff passed its cap: {gaps:?}"
    );
}
