//! Webhooks (`[[webhooks]]`, PROTOCOL.md §10) against a real HTTP backend started by each
//! test: the batch shape and its signature, every event type with its data, an endpoint
//! down and back (every event arrives, duplicates only by id, the other endpoint never
//! waits), a full queue dropping its oldest, the flush at shutdown, and `topic.occupied` /
//! `topic.vacated` once per cluster, a killed node's included.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::redis::{Redis, ready};
use common::{Binary, Raw, TestServer, WAIT, config, get_text};
use herald::config::{TopicConfig, WebhookConfig};
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde_json::{Value, json};
use sha2::Sha256;

const SECRET: &str = "webhook-secret";

/// One request the backend got.
#[derive(Debug, Clone)]
struct Hit {
    status: u16,
    signature: Option<String>,
    body: axum::body::Bytes,
}

/// The application's backend: records every request and answers `status` (200 unless
/// set), or 500 to the first `fail_first` requests.
#[derive(Clone)]
struct Recorder {
    hits: Arc<Mutex<Vec<Hit>>>,
    status: Arc<AtomicU16>,
    fail_first: Arc<AtomicUsize>,
}

impl Recorder {
    fn new() -> Recorder {
        Recorder {
            hits: Arc::default(),
            status: Arc::new(AtomicU16::new(200)),
            fail_first: Arc::default(),
        }
    }

    async fn start(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.serve(listener)
    }

    fn serve(&self, listener: tokio::net::TcpListener) -> SocketAddr {
        async fn hook(
            State(r): State<Recorder>,
            headers: HeaderMap,
            body: axum::body::Bytes,
        ) -> StatusCode {
            let failing = r
                .fail_first
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok();
            let status = if failing {
                500
            } else {
                r.status.load(Ordering::Acquire)
            };
            r.hits.lock().push(Hit {
                status,
                signature: headers
                    .get("herald-signature")
                    .map(|v| v.to_str().unwrap().to_owned()),
                body,
            });
            StatusCode::from_u16(status).unwrap()
        }
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/hook", post(hook))
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().clone()
    }

    /// The events of the requests answered 2xx, in the order they came.
    fn delivered(&self) -> Vec<Value> {
        self.hits()
            .iter()
            .filter(|h| (200..300).contains(&h.status))
            .flat_map(|h| {
                let v: Value = serde_json::from_slice(&h.body).unwrap();
                v.as_array().unwrap().clone()
            })
            .collect()
    }

    /// Waits until the delivered events satisfy `done`; returns them.
    async fn wait_for(
        &self,
        limit: Duration,
        what: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.delivered();
            if done(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: delivered so far {got:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn hook(url: String, events: &[&str]) -> WebhookConfig {
    WebhookConfig {
        url,
        events: events.iter().map(|e| (*e).to_owned()).collect(),
        secret: None,
        retry_for: Duration::from_secs(30),
        queue: WebhookConfig::QUEUE,
    }
}

fn url(addr: impl std::fmt::Display) -> String {
    format!("http://{addr}/hook")
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

fn has(events: &[Value], kind: &str, data: &Value) -> bool {
    events
        .iter()
        .any(|e| e["type"] == kind && e["data"] == *data)
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The value of one series in a `/metrics` scrape (0 when absent).
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_type_arrives_in_signed_batches() {
    let backend = Recorder::new();
    let addr = backend.start().await;
    let mut c = config();
    c.session.ttl = Duration::from_millis(500);
    c.topics = vec![TopicConfig {
        pattern: "jobs".into(),
        ack_wait: Duration::from_millis(200),
        max_deliveries: 1,
        ..Default::default()
    }];
    let mut h = hook(url(addr), &[]);
    h.secret = Some(SECRET.into());
    c.webhooks = vec![h];
    let server = TestServer::with_config(c).await;
    let bus = server.bus.clone();
    let started = now_ms();

    // Presence and occupancy, from a WebSocket client.
    let mut client = server.connect().await;
    let welcome = client.hello().await;
    let sid = welcome["session"].as_str().unwrap().to_owned();
    client.sub("room/1").await;
    client.sub("news/*").await;
    client
        .request(json!({"op": "unsub", "pattern": "room/1"}))
        .await;
    // A group message nobody acks goes to `$dlq/jobs`.
    client
        .request(json!({"op": "sub", "pattern": "jobs", "group": "w", "ack": "manual"}))
        .await;
    client
        .request(json!({"op": "pub", "topic": "jobs", "data": {"job": 1}, "msg_id": "m1"}))
        .await;
    // Sessions, announced as a transport announces them: one closed, one left to expire.
    let closed = bus.open_session();
    bus.session_opened(&closed);
    bus.close_session(&closed);
    let expiring = bus.open_session();
    bus.session_opened(&expiring);
    // The bus's own embedded sessions are never announced.
    let internal = bus.subscribe("internal/x").await.unwrap();
    let internal_id = internal.session_id().to_owned();
    drop(internal);

    let (closed_id, expiring_id) = (closed.id().to_string(), expiring.id().to_string());
    let expected = vec![
        ("topic.occupied", json!({"pattern": "room/1"})),
        (
            "presence.join",
            json!({"topic": "room/1", "session": sid, "user": null, "info": null}),
        ),
        ("topic.occupied", json!({"pattern": "news/*"})),
        (
            "presence.leave",
            json!({"topic": "room/1", "session": sid, "user": null, "info": null}),
        ),
        ("topic.vacated", json!({"pattern": "room/1"})),
        ("topic.occupied", json!({"pattern": "jobs"})),
        (
            "message.dead",
            json!({"topic": "jobs", "group": "w", "deliveries": 1, "msg_id": "m1", "data": {"job": 1}}),
        ),
        (
            "session.opened",
            json!({"session": closed_id, "user": null}),
        ),
        (
            "session.closed",
            json!({"session": closed_id, "user": null, "reason": "closed"}),
        ),
        (
            "session.opened",
            json!({"session": expiring_id, "user": null}),
        ),
        (
            "session.closed",
            json!({"session": expiring_id, "user": null, "reason": "expired"}),
        ),
        ("topic.occupied", json!({"pattern": "internal/x"})),
        ("topic.vacated", json!({"pattern": "internal/x"})),
        // The WebSocket client's own session, announced at its `hello`.
        ("session.opened", json!({"session": sid, "user": null})),
    ];
    let events = backend
        .wait_for(WAIT, "every event type", |got| {
            expected.iter().all(|(k, d)| has(got, k, d))
        })
        .await;
    let ended = now_ms();

    // The shape: signed JSON arrays of {id, type, ts, data}, ids unique.
    let hits = backend.hits();
    for h in &hits {
        assert_eq!(
            h.signature.as_deref(),
            Some(sign(&h.body).as_str()),
            "{h:?}"
        );
        let batch: Value = serde_json::from_slice(&h.body).unwrap();
        let n = batch.as_array().unwrap().len();
        assert!((1..=100).contains(&n), "{n} events in one request");
    }
    let mut ids = BTreeSet::new();
    for e in &events {
        let keys: BTreeSet<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["id", "type", "ts", "data"]), "{e}");
        assert!(WebhookConfig::EVENTS.contains(&e["type"].as_str().unwrap()));
        let ts = e["ts"].as_u64().unwrap();
        assert!((started..=ended).contains(&ts), "{e}");
        assert!(
            ids.insert(e["id"].as_str().unwrap().to_owned()),
            "id twice: {e}"
        );
    }
    // What happens in one order reaches the backend in that order.
    let pos = |(kind, data): &(&str, Value)| {
        events
            .iter()
            .position(|e| e["type"] == *kind && e["data"] == *data)
            .unwrap()
    };
    for (before, after) in [(13, 1), (0, 1), (1, 3), (3, 4), (7, 8), (9, 10), (11, 12)] {
        assert!(
            pos(&expected[before]) < pos(&expected[after]),
            "{:?} after {:?}",
            expected[before],
            expected[after]
        );
    }
    // No session event for the embedded session; the WebSocket one opened once, never closed.
    for e in of_type(&events, "session.opened")
        .into_iter()
        .chain(of_type(&events, "session.closed"))
    {
        assert!(e["data"]["session"] != internal_id.as_str(), "{e}");
    }
    assert_eq!(of_type(&events, "session.closed").len(), 2);
    assert_eq!(of_type(&events, "session.opened").len(), 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_down_then_up_gets_every_event_and_delays_no_other() {
    let up = Recorder::new();
    let up_addr = up.start().await;
    // Nothing listens there for 5 s: connections are refused.
    let later = common::fixed_port();
    let events = ["topic.occupied", "topic.vacated"];
    let mut c = config();
    c.webhooks = vec![hook(url(up_addr), &events), hook(url(&later), &events)];
    let server = TestServer::with_config(c).await;
    let outage = Instant::now();
    let mut subs = Vec::new();
    for i in 0..30 {
        subs.push(server.bus.subscribe(&format!("d/{i}")).await.unwrap());
    }
    drop(subs);
    let all = up
        .wait_for(WAIT, "the endpoint that is up", |got| got.len() >= 60)
        .await;
    assert_eq!(all.len(), 60);
    let ids: BTreeSet<String> = all
        .iter()
        .map(|e| e["id"].as_str().unwrap().into())
        .collect();
    assert_eq!(ids.len(), 60);

    tokio::time::sleep(Duration::from_secs(5).saturating_sub(outage.elapsed())).await;
    let down = Recorder::new();
    down.serve(tokio::net::TcpListener::bind(&later).await.unwrap());
    let got = down
        .wait_for(
            Duration::from_secs(30),
            "the endpoint that came back",
            |got| {
                let seen: BTreeSet<&str> = got.iter().map(|e| e["id"].as_str().unwrap()).collect();
                ids.iter().all(|id| seen.contains(id.as_str()))
            },
        )
        .await;
    // At least once: a duplicate is the same event under the same id.
    let mut by_id: HashMap<&str, &Value> = HashMap::new();
    for e in &got {
        if let Some(before) = by_id.insert(e["id"].as_str().unwrap(), e) {
            assert_eq!(before, e, "one id, two events");
        }
    }
    let first: HashMap<&str, &Value> = all.iter().map(|e| (e["id"].as_str().unwrap(), e)).collect();
    assert_eq!(by_id, first, "both endpoints got the same events");

    let text = get_text(server.http("/metrics")).await;
    assert!(
        metric(&text, "herald_webhook_events_total{result=\"retried\"}") > 0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "herald_webhook_events_total{result=\"dropped\"}"),
        0
    );
    assert!(
        metric(&text, "herald_webhook_events_total{result=\"sent\"}") >= 120,
        "{text}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_the_oldest_and_counts_them() {
    let backend = Recorder::new();
    backend.status.store(500, Ordering::Release);
    let addr = backend.start().await;
    let mut c = config();
    let mut h = hook(url(addr), &["topic.occupied"]);
    h.queue = 5;
    c.webhooks = vec![h];
    let server = TestServer::with_config(c).await;
    let mut subs = Vec::new();
    for i in 0..20 {
        subs.push(server.bus.subscribe(&format!("o/{i}")).await.unwrap());
    }
    let patterns = |body: &[u8]| -> Vec<String> {
        let v: Value = serde_json::from_slice(body).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["data"]["pattern"].as_str().unwrap().to_owned())
            .collect()
    };
    let newest: Vec<String> = (15..20).map(|i| format!("o/{i}")).collect();
    // Once a failed request carries what is left (the 5 newest), the backend recovers.
    let deadline = Instant::now() + WAIT;
    while !backend.hits().iter().any(|h| patterns(&h.body) == newest) {
        assert!(Instant::now() < deadline, "{:?}", backend.hits());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    backend.status.store(200, Ordering::Release);
    let got = backend
        .wait_for(WAIT, "the newest events", |got| !got.is_empty())
        .await;
    let delivered: Vec<&str> = got
        .iter()
        .map(|e| e["data"]["pattern"].as_str().unwrap())
        .collect();
    assert_eq!(delivered, newest);
    let text = get_text(server.http("/metrics")).await;
    assert_eq!(
        metric(&text, "herald_webhook_events_total{result=\"dropped\"}"),
        15,
        "{text}"
    );
    assert_eq!(
        metric(&text, "herald_webhook_events_total{result=\"sent\"}"),
        5
    );
    assert!(metric(&text, "herald_webhook_events_total{result=\"retried\"}") >= 5);
    assert!(metric(&text, "herald_webhook_requests_total{result=\"failed\"}") >= 1);
    assert_eq!(metric(&text, "herald_webhook_queued"), 0);
    drop(subs);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_what_is_queued() {
    let backend = Recorder::new();
    // Fails twice: delivered only if the shutdown keeps trying.
    backend.fail_first.store(2, Ordering::Release);
    let addr = backend.start().await;
    let mut c = config();
    c.webhooks = vec![hook(url(addr), &["topic.occupied"])];
    let server = TestServer::with_config(c).await;
    let sub = server.bus.subscribe("f/1").await.unwrap();
    server.stop().await;
    let got = backend.delivered();
    assert_eq!(got.len(), 1, "{:?}", backend.hits());
    assert_eq!(got[0]["data"], json!({"pattern": "f/1"}));
    assert_eq!(backend.hits().len(), 3);
    drop(sub);
}

async fn client(b: &Binary) -> Raw {
    let mut c = Raw::connect(&b.ws_url()).await;
    c.hello().await;
    c
}

/// How many distinct events (by id) of `kind` for `pattern` were delivered.
fn count(events: &[Value], kind: &str, pattern: &str) -> usize {
    events
        .iter()
        .filter(|e| e["type"] == kind && e["data"]["pattern"] == pattern)
        .map(|e| e["id"].as_str().unwrap())
        .collect::<BTreeSet<_>>()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn occupancy_is_announced_once_per_cluster_even_for_a_killed_node() {
    let backend = Recorder::new();
    let addr = backend.start().await;
    let redis = Redis::start();
    let path = std::env::temp_dir().join(format!("herald-webhooks-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        format!(
            "[[webhooks]]\nurl = \"{}\"\nevents = [\"topic.occupied\", \"topic.vacated\"]\n",
            url(addr)
        ),
    )
    .unwrap();
    let mut n = vec![redis.node(&path), redis.node(&path)];
    for b in &n {
        ready(b).await;
    }
    let (mut a, mut b) = (client(&n[0]).await, client(&n[1]).await);

    // Both nodes subscribe: one occupied. Both leave: one vacated.
    a.sub("chat/*").await;
    b.sub("chat/*").await;
    backend
        .wait_for(WAIT, "chat/* occupied", |got| {
            count(got, "topic.occupied", "chat/*") >= 1
        })
        .await;
    a.request(json!({"op": "unsub", "pattern": "chat/*"})).await;
    b.request(json!({"op": "unsub", "pattern": "chat/*"})).await;
    backend
        .wait_for(WAIT, "chat/* vacated", |got| {
            count(got, "topic.vacated", "chat/*") >= 1
        })
        .await;

    // The last subscriber's node dies: its entry expires, the survivor announces it.
    a.sub("room/k").await;
    b.sub("room/k").await;
    b.request(json!({"op": "unsub", "pattern": "room/k"})).await;
    backend
        .wait_for(WAIT, "room/k occupied", |got| {
            count(got, "topic.occupied", "room/k") >= 1
        })
        .await;
    n[0].signal("KILL");
    n[0].wait(WAIT);
    backend
        .wait_for(
            Duration::from_secs(30),
            "room/k vacated after the kill",
            |got| count(got, "topic.vacated", "room/k") >= 1,
        )
        .await;
    // A reaper pass and a refresh later, still once each.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let got = backend.delivered();
    for (kind, pattern) in [
        ("topic.occupied", "chat/*"),
        ("topic.vacated", "chat/*"),
        ("topic.occupied", "room/k"),
        ("topic.vacated", "room/k"),
    ] {
        assert_eq!(count(&got, kind, pattern), 1, "{kind} {pattern}: {got:#?}");
    }
    let ids: BTreeSet<&str> = got.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 4, "{got:#?}");
    drop((a, b));
    n.clear();
    let _ = std::fs::remove_file(&path);
}
