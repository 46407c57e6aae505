//! What an operator sees (issue "Operating Herald"): `GET /metrics` and `GET /v1/stats` move
//! with traffic, labels stay bounded, and logs carry connection and session ids.

mod common;

use std::time::Duration;

use common::redis::Redis;
use common::*;
use serde_json::{Value, json};

/// The value of one series (`name` or `name{labels}`) in an exposition, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        (key == series).then(|| value.parse().ok())?
    })
}

async fn scrape(srv: &TestServer) -> String {
    let res = http().get(srv.http("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = res.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    text
}

async fn stats(srv: &TestServer) -> Value {
    let res = http().get(srv.http("/v1/stats")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// Scrapes until `series` reaches `at_least` (writers record a batch right after its flush,
/// so a client can see a message an instant before it is counted).
async fn scrape_until(srv: &TestServer, series: &str, at_least: f64) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = scrape(srv).await;
        if sample(&text, series).is_some_and(|v| v >= at_least) {
            return text;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{series} never reached {at_least}:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stats_until(srv: &TestServer, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = stats(srv).await;
        if ok(&s) {
            return s;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("stats never got there: {s:#}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn prometheus_metrics_move_with_traffic() {
    const N: u64 = 50;
    let srv = TestServer::start().await;
    let before = scrape(&srv).await;
    assert_eq!(sample(&before, "herald_published_total"), Some(0.0));
    assert_eq!(sample(&before, "herald_connections"), Some(0.0));
    assert_eq!(
        sample(&before, "herald_publish_to_write_seconds_count"),
        Some(0.0)
    );
    assert_eq!(
        sample(&before, "herald_build_info{version=\"0.1.0\"}"),
        Some(1.0)
    );

    let mut sub = srv.connect().await;
    let welcome = sub.hello().await;
    let session = welcome["session"].as_str().unwrap().to_owned();
    sub.sub("orders/*").await;
    let mut publisher = srv.client().await;
    for i in 0..N {
        publisher.publish("orders/eu-7781", json!({"n": i})).await;
    }
    for _ in 0..N {
        assert_eq!(sub.recv_op("msg").await["topic"], "orders/eu-7781");
    }
    // A client error is counted by its code.
    sub.send(json!({"op": "sub", "id": "bad", "pattern": "a/**b"}))
        .await;
    assert_eq!(sub.recv_op_id("bad").await["code"], "bad_pattern");

    let text = scrape_until(&srv, "herald_publish_to_write_seconds_count", N as f64).await;
    let text = if sample(&text, "herald_error_frames_total{code=\"bad_pattern\"}") == Some(1.0) {
        text
    } else {
        scrape_until(&srv, "herald_error_frames_total{code=\"bad_pattern\"}", 1.0).await
    };
    let v = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series}:\n{text}"));
    assert_eq!(v("herald_published_total"), N as f64);
    assert_eq!(v("herald_deliveries_total"), N as f64);
    assert_eq!(v("herald_messages_written_total{kind=\"live\"}"), N as f64);
    assert_eq!(v("herald_messages_written_total{kind=\"replay\"}"), 0.0);
    assert_eq!(v("herald_publish_to_write_seconds_count"), N as f64);
    assert_eq!(
        v("herald_publish_to_write_seconds_bucket{le=\"+Inf\"}"),
        N as f64
    );
    assert!(v("herald_publish_to_write_seconds_sum") > 0.0);
    assert!(v("herald_written_bytes_total") > 0.0);
    assert_eq!(v("herald_connections"), 2.0);
    assert_eq!(v("herald_connections_opened_total"), 2.0);
    assert_eq!(v("herald_sessions"), 2.0);
    assert_eq!(v("herald_subscriptions"), 1.0);
    assert_eq!(v("herald_topics"), 1.0);
    assert_eq!(v("herald_error_frames_total{code=\"bad_topic\"}"), 0.0);
    assert_eq!(v("herald_dropped_messages_total"), 0.0);
    assert_eq!(v("herald_store_up{backend=\"memory\"}"), 1.0);
    assert!(v("herald_start_time_seconds") > 1.7e9);

    // Bounded labels: no series is named after a topic, a session or a peer.
    for needle in ["orders", "eu-7781", session.as_str(), "127.0.0.1"] {
        assert!(
            !text.contains(needle),
            "{needle:?} leaked into the exposition"
        );
    }

    // Leaving is counted by reason, whether the client says goodbye or just vanishes.
    sub.ws.close(None).await.unwrap();
    drop(publisher);
    let text = scrape_until(
        &srv,
        "herald_connections_closed_total{reason=\"peer\"}",
        2.0,
    )
    .await;
    assert_eq!(sample(&text, "herald_connections"), Some(0.0));
    assert_eq!(
        sample(
            &text,
            "herald_connections_closed_total{reason=\"protocol\"}"
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn drops_and_gaps_are_counted() {
    let mut cfg = config();
    cfg.session.buffer_messages = 4;
    let srv = TestServer::with_config(cfg).await;
    let mut sub = srv.connect().await;
    let session = sub.hello().await["session"].as_str().unwrap().to_owned();
    sub.sub("feed").await;
    drop(sub);
    // Wait until the server has let go of the socket: from here on, messages stay unsent.
    stats_until(&srv, |s| s["connections"] == 0).await;

    let mut publisher = srv.client().await;
    for i in 0..10 {
        publisher.publish("feed", json!(i)).await;
    }
    let s = stats(&srv).await;
    assert_eq!(s["dropped"], 6, "{s:#}");
    assert_eq!(s["buffer"]["messages"], 4, "{s:#}");

    let mut again = srv.connect().await;
    again
        .send(json!({"op": "hello", "session": session, "last_seq": 0}))
        .await;
    assert_eq!(again.recv().await["resumed"], true);
    let gap = again.recv().await;
    assert_eq!(
        (&gap["op"], &gap["from_seq"], &gap["to_seq"]),
        (&json!("gap"), &json!(1), &json!(6))
    );
    for seq in 7..=10 {
        assert_eq!(again.recv_op("msg").await["seq"], seq);
    }
    let text = scrape_until(&srv, "herald_messages_written_total{kind=\"live\"}", 4.0).await;
    assert_eq!(sample(&text, "herald_gaps_total"), Some(1.0));
    assert_eq!(sample(&text, "herald_gap_messages_total"), Some(6.0));
    assert_eq!(sample(&text, "herald_dropped_messages_total"), Some(6.0));
    let s = stats_until(&srv, |s| s["buffer"]["unsent"] == 0).await;
    assert_eq!((&s["gaps"], &s["gap_messages"]), (&json!(1), &json!(6)));
}

#[tokio::test]
async fn stats_give_the_dashboard_rates_and_latency() {
    let srv = TestServer::start().await;
    let s = stats(&srv).await;
    for key in [
        "connections",
        "sessions",
        "subscriptions",
        "topics",
        "published",
        "delivered",
        "dropped",
        "gaps",
        "slow_consumers",
    ] {
        assert_eq!(s[key], 0, "{key} in {s:#}");
    }
    assert!(s["uptime_ms"].is_u64(), "{s:#}");
    assert_eq!(s["rates"]["published"], 0.0);
    assert_eq!(s["latency_ms"]["count"], 0);
    assert_eq!(s["latency_ms"]["p50"], Value::Null);

    let mut sub = srv.client().await;
    sub.sub("t/**").await;
    let mut publisher = srv.client().await;
    for i in 0..20 {
        publisher.publish(&format!("t/{}", i % 4), json!(i)).await;
    }
    for _ in 0..20 {
        sub.recv_op("msg").await;
    }
    let s = stats_until(&srv, |s| s["latency_ms"]["count"] == 20).await;
    assert_eq!(
        (
            &s["connections"],
            &s["sessions"],
            &s["subscriptions"],
            &s["topics"]
        ),
        (&json!(2), &json!(2), &json!(1), &json!(4))
    );
    assert_eq!((&s["published"], &s["delivered"]), (&json!(20), &json!(20)));
    assert_eq!(s["written"], 20);
    assert_eq!(s["written_by_kind"]["live"], 20);
    // Rates are per second over the last seconds, measured up to this very request.
    let r = &s["rates"];
    assert!(r["window_ms"].as_u64().unwrap() > 0, "{r}");
    for key in ["published", "delivered", "written", "bytes_written"] {
        assert!(r[key].as_f64().unwrap() > 0.0, "rates.{key}: {r}");
    }
    assert_eq!(r["dropped"], 0.0);
    let lat = &s["latency_ms"];
    let (p50, p99) = (lat["p50"].as_f64().unwrap(), lat["p99"].as_f64().unwrap());
    assert!(p50 > 0.0 && p50 <= p99, "{lat}");
    assert!(lat["mean"].as_f64().unwrap() > 0.0, "{lat}");
    assert!(s["buffer"]["messages"].as_u64().unwrap() >= 20, "{s:#}");
    assert_eq!(s["buffer"]["unsent"], 0);
}

/// The real binary with JSON logs: events inside a connection carry its `conn` span with the
/// connection id and, once known, the session id.
#[tokio::test]
async fn logs_carry_connection_and_session_ids() {
    let bin = Binary::spawn_env(
        &["--listen", "127.0.0.1:0", "--log-format", "json"],
        &[("RUST_LOG", "herald=debug")],
    );
    let mut a = Raw::connect(&bin.ws_url()).await;
    let session_a = a.hello().await["session"].as_str().unwrap().to_owned();
    let mut b = Raw::connect(&bin.ws_url()).await;
    let session_b = b.hello().await["session"].as_str().unwrap().to_owned();

    let deadline = std::time::Instant::now() + WAIT;
    let spans = loop {
        let log = bin.log.lock().unwrap().clone();
        let spans: Vec<Value> = log
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["fields"]["message"] == "hello")
            .map(|v| v["span"].clone())
            .collect();
        if spans.len() >= 2 {
            break spans;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no hello logs: {log:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let find = |session: &str| {
        spans
            .iter()
            .find(|s| s["session"] == session)
            .unwrap_or_else(|| panic!("no span for {session}: {spans:#?}"))
            .clone()
    };
    let (sa, sb) = (find(&session_a), find(&session_b));
    assert_eq!(sa["name"], "conn");
    assert!(
        sa["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{sa}"
    );
    let (ia, ib) = (sa["id"].as_u64().unwrap(), sb["id"].as_u64().unwrap());
    assert_ne!(ia, ib, "connection ids are unique");
}

/// Scrapes a spawned binary until `ok` holds for the exposition.
async fn scrape_bin_until(bin: &Binary, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let url = format!("http://{}/metrics", bin.addr);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = http().get(&url).send().await.unwrap().text().await.unwrap();
        if ok(&text) {
            return text;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("never {what}:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fresh directory under the system's temporary one, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "herald-metrics-{}-{name}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn path(&self, file: &str) -> String {
        self.0.join(file).to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The durable store's health with a real `--data-dir`: up, commits and the file size move
/// with publishes; when the disk refuses a write (here: the process's file-size limit,
/// `ulimit -f`, with SIGXFSZ ignored so the write fails with EFBIG instead of killing the
/// process) the store goes down, `store_up` drops to 0 and errors are counted.
#[tokio::test]
async fn durable_store_health_is_reported() {
    let dir = TempDir::new("durable");
    std::fs::write(
        dir.path("herald.toml"),
        "[[topics]]\npattern = \"**\"\npersist = true\nhistory = 100000\n",
    )
    .unwrap();
    let data = dir.path("data");
    let config = dir.path("herald.toml");
    // 1024 blocks of 512 bytes: 512 KiB, room for the empty store (~72 KiB) and a few
    // messages.
    let bin = Binary::spawn_program(
        "sh",
        &[
            "-c",
            "trap '' XFSZ; ulimit -f 1024; exec \"$@\"",
            "sh",
            env!("CARGO_BIN_EXE_herald"),
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &data,
            "--config",
            &config,
        ],
        &[],
    );
    let text = scrape_bin_until(&bin, "a redb store", |t| {
        sample(t, "herald_store_up{backend=\"redb\"}").is_some()
    })
    .await;
    let v = |t: &str, series: &str| sample(t, series).unwrap_or_else(|| panic!("{series}:\n{t}"));
    assert_eq!(v(&text, "herald_store_up{backend=\"redb\"}"), 1.0);
    assert_eq!(v(&text, "herald_store_commits_total"), 0.0);
    assert_eq!(v(&text, "herald_store_errors_total"), 0.0);
    assert!(sample(&text, "herald_store_up{backend=\"memory\"}").is_none());
    let empty = v(&text, "herald_store_file_bytes");
    assert!(empty > 0.0, "{text}");

    let publish_url = format!("http://{}/v1/publish", bin.addr);
    let big = "x".repeat(40_000);
    let publish = |n: usize| {
        http()
            .post(&publish_url)
            .json(&json!({"topic": "audit/log", "data": {"n": n, "pad": big}}))
            .send()
    };
    // A publish to a persisted topic is acked once on disk: the figures have moved.
    assert_eq!(publish(0).await.unwrap().status(), 200);
    let text = scrape_bin_until(&bin, "one commit", |_| true).await;
    assert!(v(&text, "herald_store_commits_total") >= 1.0, "{text}");
    assert_eq!(v(&text, "herald_store_written_messages_total"), 1.0);
    assert!(v(&text, "herald_store_file_bytes") > empty, "{text}");
    assert_eq!(v(&text, "herald_store_up{backend=\"redb\"}"), 1.0);

    // Fill the store until the disk says no: that publish and every later one is refused
    // with `unavailable`, and the metrics say why.
    let mut refused = 0;
    for n in 1..200 {
        let res = publish(n).await.unwrap();
        if res.status() != 200 {
            assert_eq!(res.status(), 503);
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unavailable", "{body}");
            refused += 1;
            if refused == 2 {
                break;
            }
        }
    }
    assert_eq!(refused, 2, "the file-size limit never stopped the store");
    let text = scrape_bin_until(&bin, "the store down", |t| {
        sample(t, "herald_store_up{backend=\"redb\"}") == Some(0.0)
    })
    .await;
    assert!(v(&text, "herald_store_errors_total") >= 2.0, "{text}");
    let s: Value = get_json(format!("http://{}/v1/stats", bin.addr)).await;
    assert_eq!(s["store"]["backend"], "redb", "{s:#}");
    assert_eq!(s["store"]["up"], false, "{s:#}");
    // The server itself stays up (topics that are not persisted still work).
    assert_eq!(
        http()
            .get(format!("http://{}/healthz", bin.addr))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// Cluster mode with a real Redis: `herald_redis_connected` follows the connection (as
/// `/readyz` does) and `herald_redis_reconnects_total` counts its returns.
#[tokio::test]
async fn redis_health_follows_the_connection() {
    let mut redis = Redis::start();
    let url = redis.url();
    let bin = Binary::spawn(&["--listen", "127.0.0.1:0", "--redis", &url]);
    let connected = |want: f64| {
        move |t: &str| {
            sample(t, "herald_redis_connected") == Some(want)
                && sample(t, "herald_store_up{backend=\"redis\"}") == Some(want)
        }
    };
    let text = scrape_bin_until(&bin, "connected", connected(1.0)).await;
    assert_eq!(sample(&text, "herald_redis_reconnects_total"), Some(0.0));
    assert!(sample(&text, "herald_store_up{backend=\"memory\"}").is_none());

    redis.kill();
    let text = scrape_bin_until(&bin, "disconnected", connected(0.0)).await;
    assert_eq!(sample(&text, "herald_redis_reconnects_total"), Some(0.0));
    let ready = http()
        .get(format!("http://{}/readyz", bin.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);

    redis.launch();
    let text = scrape_bin_until(&bin, "reconnected", connected(1.0)).await;
    assert_eq!(sample(&text, "herald_redis_reconnects_total"), Some(1.0));
    let s: Value = get_json(format!("http://{}/v1/stats", bin.addr)).await;
    assert_eq!(s["store"]["backend"], "redis", "{s:#}");
    assert_eq!(s["store"]["redis_connected"], true, "{s:#}");
    assert_eq!(s["store"]["redis_reconnects"], 1, "{s:#}");
}
