//! Cluster mode, 1 node against 3 nodes on this machine: one publisher on the first node,
//! subscribers spread over the nodes, 100-byte messages through a real `redis-server`.
//! Reports publishes and deliveries per second and publish-to-deliver latency.
//!
//! `cargo bench --bench cluster` (needs `redis-server` on the PATH). Everything — Redis,
//! the nodes and the clients — shares this machine's cores, so the 3-node figure measures
//! the extra hop and the extra work, not added capacity.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use herald::config::ClusterConfig;
use herald::{Config, Server};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const SUBSCRIBERS: usize = 30;
const WINDOW: u64 = 256;

fn micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

struct Redis(Child, u16);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis() -> Redis {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server on the PATH");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    Redis(child, port)
}

async fn ws(
    addr: std::net::SocketAddr,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let (mut s, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    s.send(Message::text(json!({"op": "hello"}).to_string()))
        .await
        .unwrap();
    s.next().await.unwrap().unwrap();
    s
}

async fn run(nodes: usize, port: u16, messages: u64) {
    let mut addrs = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..nodes {
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            cluster: Some(ClusterConfig {
                redis: vec![format!("redis://127.0.0.1:{port}")],
            }),
            ..Config::default()
        };
        let server = Server::bind(config).await.unwrap();
        let bus = server.bus();
        let (addr, handle, _task) = server.spawn();
        while !bus.is_ready() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        addrs.push(addr);
        handles.push(handle);
    }
    let topic = format!("bench/{nodes}");
    let delivered = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(parking_lot::Mutex::new(
        hdrhistogram::Histogram::<u64>::new(3).unwrap(),
    ));
    let mut subs = Vec::new();
    for i in 0..SUBSCRIBERS {
        let mut s = ws(addrs[i % nodes]).await;
        s.send(Message::text(
            json!({"op": "sub", "id": "s", "pattern": topic}).to_string(),
        ))
        .await
        .unwrap();
        s.next().await.unwrap().unwrap();
        let (delivered, hist) = (delivered.clone(), hist.clone());
        subs.push(tokio::spawn(async move {
            let mut local = hdrhistogram::Histogram::<u64>::new(3).unwrap();
            let mut n = 0;
            while n < messages {
                let Ok(Some(Ok(Message::Text(t)))) =
                    tokio::time::timeout(Duration::from_secs(10), s.next()).await
                else {
                    break;
                };
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["op"] == "msg" {
                    n += 1;
                    let sent = v["data"]["t"].as_u64().unwrap();
                    local.record(micros().saturating_sub(sent)).unwrap();
                }
            }
            delivered.fetch_add(n, Ordering::Relaxed);
            hist.lock().add(&local).unwrap();
        }));
    }
    let mut p = ws(addrs[0]).await;
    let pad = "x".repeat(60);
    let started = Instant::now();
    let (mut sent, mut acked) = (0u64, 0u64);
    while acked < messages {
        while sent < messages && sent - acked < WINDOW {
            let frame = json!({"op": "pub", "id": sent, "topic": topic,
                "data": {"t": micros(), "p": pad}});
            p.feed(Message::text(frame.to_string())).await.unwrap();
            sent += 1;
        }
        p.flush().await.unwrap();
        if let Some(Ok(Message::Text(t))) = p.next().await {
            let v: Value = serde_json::from_str(&t).unwrap();
            assert_eq!(v["op"], "ok", "{v}");
            acked += 1;
        }
    }
    let published = started.elapsed();
    for s in subs {
        s.await.unwrap();
    }
    let all = started.elapsed();
    let h = hist.lock();
    let d = delivered.load(Ordering::Relaxed);
    assert_eq!(d, messages * SUBSCRIBERS as u64, "every message delivered");
    println!(
        "{nodes} node(s): {:>7.0} publishes/s, {:>8.0} deliveries/s ({d} of {}), latency p50 {:.2} ms, p99 {:.2} ms",
        messages as f64 / published.as_secs_f64(),
        d as f64 / all.as_secs_f64(),
        messages * SUBSCRIBERS as u64,
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
    );
    for h in handles {
        h.shutdown();
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this without it: a
    // quick run then, as a smoke test.
    let messages: u64 = if std::env::args().any(|a| a == "--bench") {
        40_000
    } else {
        300
    };
    let redis = redis();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "cluster: 1 publisher, {SUBSCRIBERS} subscribers spread over the nodes, \
         {messages} messages of 100 bytes, window {WINDOW}"
    );
    for nodes in [1, 3] {
        rt.block_on(run(nodes, redis.1, messages));
    }
}
