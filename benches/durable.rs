//! The durable store: publish throughput with acks, history reads, and restart time.
//!
//! ```text
//! cargo bench --bench durable                       # everything, defaults below
//! HERALD_BENCH_MSGS=200000 cargo bench --bench durable -- publish
//! cargo bench --bench durable -- restart            # one section: publish | history | restart
//! cargo bench --bench durable -- inproc             # only the in-process part of publish
//! ```
//!
//! - **publish**: the release binary with `--data-dir` on a temp directory; C WebSocket
//!   connections (`HERALD_BENCH_CONNS`, default 10) each publish 100-byte messages with an
//!   `id` to their own persisted topic, keeping W unacknowledged (`HERALD_BENCH_WINDOW`,
//!   default 1000); the figure is acked messages per second, from the first send to the last
//!   `ok`. The same run against a topic without `persist` gives the in-memory baseline, and
//!   an in-process run (no sockets: `Bus::publish` then waiting for the store) shows what the
//!   store itself sustains.
//! - **history**: `history` pages of 1000 over WebSocket from a persisted topic holding
//!   100,000 messages, and `Bus::history` in-process.
//! - **restart**: 1,000,000 stored messages (10 topics × 100,000, `history = 100000`): the
//!   time `Bus::open` takes to recover them in-process, and the release binary's time from
//!   spawn to its `listening on` line.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use herald::Config;
use herald::bus::Publish;
use herald::config::TopicConfig;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Message;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "herald-bench-{name}-{}-{}",
        std::process::id(),
        herald::event::now_ms()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A 100-byte JSON value: a string of 98 characters in quotes.
fn payload() -> String {
    format!("\"{}\"", "x".repeat(98))
}

fn topics(history: usize) -> Vec<TopicConfig> {
    vec![TopicConfig {
        pattern: "bench/**".into(),
        history,
        persist: true,
        ..TopicConfig::default()
    }]
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// User + system CPU time a process has used, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// The release binary with the given config file and data directory; waits for its address.
fn start_server(config: &Path, data: &Path) -> (std::process::Child, String, Duration) {
    let started = Instant::now();
    let (child, addr) = common::spawn_herald([
        OsStr::new("--config"),
        config.as_os_str(),
        OsStr::new("--data-dir"),
        data.as_os_str(),
    ]);
    (child, addr, started.elapsed())
}

fn write_config(dir: &Path, persist: bool, history: usize) -> PathBuf {
    let path = dir.join("herald.toml");
    std::fs::write(
        &path,
        format!("[[topics]]\npattern = \"bench/**\"\nhistory = {history}\npersist = {persist}\n"),
    )
    .unwrap();
    path
}

/// C connections, each publishing `per_conn` messages with ids, W outstanding; returns
/// acked messages per second.
async fn ws_publish(addr: &str, conns: usize, per_conn: usize, window: usize) -> f64 {
    let url = format!("ws://{addr}/ws");
    let data = payload();
    let mut sockets = Vec::new();
    for _ in 0..conns {
        let (ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .expect("connect");
        sockets.push(ws);
    }
    let started = Instant::now();
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(c, ws)| {
            let data = data.clone();
            tokio::spawn(async move {
                let (mut tx, mut rx) = ws.split();
                let room = Arc::new(tokio::sync::Semaphore::new(window));
                let r = room.clone();
                let writer = tokio::spawn(async move {
                    for k in 0..per_conn {
                        r.acquire().await.unwrap().forget();
                        let f = format!(
                            r#"{{"op":"pub","id":{k},"topic":"bench/t{c}","data":{data}}}"#
                        );
                        tx.feed(Message::text(f)).await.unwrap();
                        if r.available_permits() == 0 || k + 1 == per_conn {
                            tx.flush().await.unwrap();
                        }
                    }
                    tx
                });
                let mut acked = 0;
                while acked < per_conn {
                    match rx.next().await {
                        Some(Ok(Message::Text(t))) => {
                            if t.as_str().starts_with(r#"{"op":"ok""#) {
                                acked += 1;
                                room.add_permits(1);
                            } else if t.as_str().contains("\"error\"") {
                                panic!("publish failed: {t}");
                            }
                        }
                        Some(Ok(_)) => {}
                        other => panic!("socket ended: {other:?}"),
                    }
                }
                drop(writer.await.unwrap());
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (conns * per_conn) as f64 / started.elapsed().as_secs_f64()
}

async fn publish_section() {
    let total = env_usize("HERALD_BENCH_MSGS", sized(500_000));
    let conns = env_usize("HERALD_BENCH_CONNS", 10);
    let window = env_usize("HERALD_BENCH_WINDOW", 1000);
    let per_conn = total / conns;
    println!(
        "publish: {} messages of 100 bytes, {conns} connections, {window} unacked each",
        per_conn * conns
    );
    if let Ok(addr) = std::env::var("HERALD_BENCH_ADDR") {
        // A server started by hand (its `bench/**` topics configured as wanted).
        let rate = ws_publish(&addr, conns, per_conn, window).await;
        println!("  over WebSocket to {addr}: {rate:.0} msgs/s");
        return;
    }
    for persist in [true, false] {
        let dir = temp_dir("publish");
        let cfg = write_config(&dir, persist, 1000);
        let (mut child, addr, _) = start_server(&cfg, &dir.join("data"));
        // Warm-up: the store file grows to its working size, connections settle.
        ws_publish(&addr, conns, per_conn / 5, window).await;
        let cpu_before = cpu_seconds(child.id());
        let rate = ws_publish(&addr, conns, per_conn, window).await;
        let cpu = cpu_seconds(child.id()) - cpu_before;
        let label = if persist {
            "persisted (acked once durable)"
        } else {
            "memory only (baseline)"
        };
        println!(
            "  over WebSocket, {label}: {rate:.0} msgs/s; server CPU {:.1} µs/msg",
            cpu * 1e6 / (per_conn * conns) as f64
        );
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// In-process: the committer and the engine without sockets or JSON parsing.
async fn inproc_section() {
    let total = env_usize("HERALD_BENCH_MSGS", sized(500_000));
    let conns = env_usize("HERALD_BENCH_CONNS", 10);
    let per_conn = total / conns;
    let dir = temp_dir("publish-inproc");
    let config = Config {
        topics: topics(1000),
        data_dir: Some(dir.clone()),
        ..Config::default()
    };
    let bus = herald::Bus::open(config).unwrap();
    let data = payload();
    let raw: &RawValue = serde_json::from_str(&data).unwrap();
    let names: Vec<String> = (0..conns).map(|c| format!("bench/t{c}")).collect();
    let started = Instant::now();
    let n = per_conn * conns;
    for i in 0..n {
        bus.submit(Publish {
            topic: &names[i % conns],
            data: raw,
            msg_id: None,
            retain: false,
        })
        .await
        .unwrap();
    }
    bus.flush_store().await;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    println!("  in-process (Bus, no sockets), persisted: {rate:.0} msgs/s");
    drop(bus);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn history_section() {
    let n = sized(100_000);
    let dir = temp_dir("history");
    let data_dir = dir.join("data");
    let config = Config {
        topics: topics(n),
        data_dir: Some(data_dir.clone()),
        ..Config::default()
    };
    let bus = herald::Bus::open(config).unwrap();
    fill(&bus, &["bench/h".to_owned()], n).await;
    let started = Instant::now();
    let mut read = 0;
    let mut since = 0;
    while read < n {
        let page = bus
            .history("bench/h", Some(since), Some(1000))
            .await
            .unwrap();
        read += page.messages.len();
        since = page.messages.last().unwrap().offset;
    }
    let took = started.elapsed();
    println!(
        "history: {n} messages in pages of 1000, in-process: {:.0} msgs/s",
        n as f64 / took.as_secs_f64()
    );
    drop(bus);

    let cfg = write_config(&dir, true, n);
    let (mut child, addr, _) = start_server(&cfg, &data_dir);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let started = Instant::now();
    let mut read = 0;
    let mut since = 0;
    while read < n {
        let f =
            format!(r#"{{"op":"history","id":1,"topic":"bench/h","since":{since},"limit":1000}}"#);
        ws.send(Message::text(f)).await.unwrap();
        let page: serde_json::Value = loop {
            if let Some(Ok(Message::Text(t))) = ws.next().await {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["op"] == "ok" {
                    break v;
                }
            }
        };
        let msgs = page["messages"].as_array().unwrap();
        read += msgs.len();
        since = msgs.last().unwrap()["offset"].as_u64().unwrap();
    }
    let took = started.elapsed();
    println!(
        "  over WebSocket (one client, one page at a time): {:.0} msgs/s",
        n as f64 / took.as_secs_f64()
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Publishes `per_topic` messages to each topic through the store and waits until durable.
async fn fill(bus: &herald::Bus, names: &[String], per_topic: usize) {
    let data = payload();
    let raw: &RawValue = serde_json::from_str(&data).unwrap();
    for _ in 0..per_topic {
        for t in names {
            bus.submit(Publish {
                topic: t,
                data: raw,
                msg_id: None,
                retain: false,
            })
            .await
            .unwrap();
        }
    }
    bus.flush_store().await;
}

async fn restart_section() {
    let per_topic = sized(100_000);
    let names: Vec<String> = (0..10).map(|i| format!("bench/r{i}")).collect();
    let dir = temp_dir("restart");
    let data_dir = dir.join("data");
    let config = Config {
        topics: topics(per_topic),
        data_dir: Some(data_dir.clone()),
        ..Config::default()
    };
    let started = Instant::now();
    let bus = herald::Bus::open(config.clone()).unwrap();
    fill(&bus, &names, per_topic).await;
    drop(bus);
    println!(
        "restart: {} messages stored in {:.1} s; data directory {:.0} MiB",
        per_topic * names.len(),
        started.elapsed().as_secs_f64(),
        dir_size(&data_dir) as f64 / (1 << 20) as f64
    );
    for _ in 0..2 {
        let started = Instant::now();
        let bus = tokio::task::spawn_blocking({
            let config = config.clone();
            move || herald::Bus::open(config).unwrap()
        })
        .await
        .unwrap();
        let took = started.elapsed();
        let page = bus.history("bench/r9", None, Some(1)).await.unwrap();
        assert_eq!(page.messages[0].offset, per_topic as u64);
        println!(
            "  Bus::open (recovery in-process): {:.2} s",
            took.as_secs_f64()
        );
        drop(bus);
    }
    let cfg = write_config(&dir, true, per_topic);
    let (mut child, _, took) = start_server(&cfg, &data_dir);
    println!(
        "  release binary, spawn to `listening on`: {:.2} s",
        took.as_secs_f64()
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `n` under `cargo bench` (which passes `--bench`); a hundredth of it when `cargo test
/// --all-targets` runs this bench as a smoke test, which must stay quick.
fn sized(n: usize) -> usize {
    if std::env::args().any(|a| a == "--bench") {
        n
    } else {
        (n / 100).max(100)
    }
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |s: &str| filter.is_empty() || filter.iter().any(|f| s.contains(f.as_str()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        if wants("publish") {
            publish_section().await;
        }
        // Part of `publish` (not against a server started by hand); `inproc` runs it alone.
        if (wants("publish") && std::env::var_os("HERALD_BENCH_ADDR").is_none()) || wants("inproc")
        {
            inproc_section().await;
        }
        if wants("history") {
            history_section().await;
        }
        if wants("restart") {
            restart_section().await;
        }
    });
}
