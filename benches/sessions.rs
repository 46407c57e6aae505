//! Session costs: memory per idle connection and per idle session, and the cost of a resume
//! with a full buffer.
//!
//! ```text
//! cargo bench --bench sessions            # 10,000 connections (default)
//! HERALD_BENCH_CONNS=2000 cargo bench --bench sessions
//! ```
//!
//! Idle connections are measured against the real release binary: its RSS after start, then
//! after N WebSocket connections have each said `hello` and subscribed to one topic. Client
//! sockets are spread over several loopback source addresses so ephemeral ports never run
//! out. Idle sessions and resume are measured in-process.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use herald::Config;
use herald::event::{Delivery, Event, EventParts};
use herald::session::{Batch, Limits, Outbox, Session};
use herald::topic::Topic;
use serde_json::json;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

fn rss_kib(pid: u32) -> u64 {
    herald_bench::proc::status_kib(pid, "VmRSS").unwrap_or(0)
}

fn start_server() -> (std::process::Child, String) {
    common::spawn_herald(std::iter::empty::<&str>())
}

async fn idle_connections(n: usize) {
    let (mut child, addr) = start_server();
    let pid = child.id();
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = rss_kib(pid);
    let started = Instant::now();
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let src = std::net::Ipv4Addr::new(127, 0, 0, 1 + (i / 5000) as u8);
        let sock = TcpSocket::new_v4().unwrap();
        sock.bind((src, 0).into()).unwrap();
        let tcp = sock
            .connect((std::net::Ipv4Addr::LOCALHOST, port).into())
            .await
            .expect("connect");
        let url = format!("ws://{addr}/ws");
        let (mut ws, _) = tokio_tungstenite::client_async(url, tcp)
            .await
            .expect("upgrade");
        ws.send(Message::text(json!({"op":"hello"}).to_string()))
            .await
            .unwrap();
        ws.send(Message::text(
            json!({"op":"sub","id":1,"pattern":format!("idle/{i}")}).to_string(),
        ))
        .await
        .unwrap();
        // welcome, ok
        for _ in 0..2 {
            ws.next().await.unwrap().unwrap();
        }
        conns.push(ws);
    }
    let setup = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with = rss_kib(pid);
    let per = (with.saturating_sub(base)) as f64 / n as f64;
    println!(
        "idle connections: {n} connections (hello + 1 subscription each) in {:.1}s; server RSS {base} KiB -> {with} KiB: {per:.2} KiB per connection",
        setup.as_secs_f64()
    );
    drop(conns);
    let _ = child.kill();
    let _ = child.wait();
}

fn own_rss() -> u64 {
    rss_kib(std::process::id())
}

async fn idle_sessions(n: usize) {
    let bus = herald::Bus::new(Config::default());
    let before = own_rss();
    let mut keep = Vec::with_capacity(n);
    for i in 0..n {
        let s = bus.open_session();
        bus.subscribe_session(&s, &format!("idle/{i}"), None)
            .await
            .unwrap();
        keep.push(s);
    }
    let after = own_rss();
    println!(
        "idle sessions: {n} sessions with 1 subscription each, in-process: {:.2} KiB per session",
        (after.saturating_sub(before)) as f64 / n as f64
    );
}

fn resume_cost() {
    let limits = Limits {
        buffer_messages: 1024,
        buffer_bytes: 4 << 20,
        slow_consumer: herald::config::SlowConsumer::DropOldest,
        max_subscriptions: 10,
    };
    let session = Session::new(limits);
    let data = format!("{{\"payload\":\"{}\"}}", "x".repeat(80));
    for i in 0..1024u64 {
        let ev = Arc::new(Event::new(
            EventParts {
                topic: Topic::parse("bench/resume").unwrap(),
                data: &data,
                msg_id: None,
                reply_to: None,
            },
            i + 1,
            "e".into(),
            0,
        ));
        session.push(&ev, Delivery::LIVE);
    }
    let rounds = 2000;
    let mut batch = Batch::default();
    let mut buf = bytes::BytesMut::with_capacity(256 * 1024);
    let started = Instant::now();
    let mut frames = 0usize;
    for _ in 0..rounds {
        session.attach(Arc::new(Outbox::new()), Some(0));
        loop {
            batch.clear();
            session.take(&mut batch, 256);
            if batch.is_empty() {
                break;
            }
            for e in &batch.entries {
                e.event.write_msg(e.seq, e.how, &mut buf);
                frames += 1;
            }
            buf.clear();
        }
    }
    let per = started.elapsed() / rounds;
    assert_eq!(frames, 1024 * rounds as usize);
    println!(
        "resume with a full buffer (1024 messages of ~100 bytes): {:.1} us to replay and encode ({:.0} ns per message)",
        per.as_secs_f64() * 1e6,
        per.as_secs_f64() * 1e9 / 1024.0
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this with no such flag: keep
    // that run quick.
    let full = std::env::args().any(|a| a == "--bench");
    let conns: usize = std::env::var("HERALD_BENCH_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 10_000 } else { 200 });
    resume_cost();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(idle_sessions(if full { 100_000 } else { 1000 }));
    rt.block_on(idle_connections(conns));
}
