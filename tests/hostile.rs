//! Hostile clients against the real binary: a slowloris handshake, 10,000 tiny frames a second
//! (taken, or refused over `publish_rate` and closed 4029), a
//! 10 MB frame, invalid UTF-8, JSON nested 10,000 deep, 100,000 subscription attempts and
//! 5,000 sockets at once. Each time the server stays up, a well-behaved client is
//! unaffected, and the server's memory (RSS from /proc) stays bounded.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Binary, Raw};
use futures_util::{SinkExt, StreamExt};
use herald_bench::proc::status_kib;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS").expect("VmRSS")
}

/// Peak resident memory of a process since its last [`reset_peak`], in KiB.
fn peak_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM").expect("VmHWM")
}

/// Resets a process's peak resident memory to its current RSS (`clear_refs` 5, Linux 4.0+),
/// so that a buffer allocated and freed again between two samples still shows; returns
/// the RSS.
fn reset_peak(pid: u32) -> u64 {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM");
    rss_kib(pid)
}

/// The binary with a config file; returns it and its baseline RSS.
fn spawn(config: &str) -> (Binary, u64) {
    let dir = std::env::temp_dir().join(format!(
        "herald-hostile-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("herald.toml");
    std::fs::write(&file, config).unwrap();
    let b = Binary::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--config",
        file.to_str().unwrap(),
    ]);
    let base = rss_kib(b.child.id());
    (b, base)
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A well-behaved client still gets through: subscribe, publish, receive.
async fn probe(url: &str) {
    let mut c = Raw::connect(url).await;
    c.hello().await;
    c.sub("probe/x").await;
    c.publish("probe/x", json!("still here")).await;
    let m = c.recv_op("msg").await;
    assert_eq!(m["data"], "still here");
}

/// Logs the peak RSS since [`reset_peak`] gave `base`, and returns the peak.
fn report_peak(what: &str, pid: u32, base: u64) -> u64 {
    let peak = peak_kib(pid);
    eprintln!(
        "{what}: RSS {base} KiB, peak since {peak} KiB (+{} KiB)",
        peak.saturating_sub(base)
    );
    peak
}

/// The seq a `msg` or `gap` frame brings a subscriber up to (`None` for other frames).
fn seq_covered(v: &Value) -> Option<u64> {
    let field = match v["op"].as_str() {
        Some("msg") => "seq",
        Some("gap") => "to_seq",
        _ => return None,
    };
    Some(
        v[field]
            .as_u64()
            .unwrap_or_else(|| panic!("no {field}: {v}")),
    )
}

/// The start of each flood test: a server with `config`, warmed up by a probe; a watcher
/// subscribed to `flood/x`; a flooder past its `hello`; the RSS peak reset to `base`.
struct FloodScene {
    b: Binary,
    pid: u32,
    watcher: Raw,
    flooder: Raw,
    base: u64,
}

async fn flood_scene(config: &str) -> FloodScene {
    let (b, _) = spawn(config);
    let pid = b.child.id();
    probe(&b.ws_url()).await;
    let mut watcher = Raw::connect(&b.ws_url()).await;
    watcher.hello().await;
    watcher.sub("flood/x").await;
    let mut flooder = Raw::connect(&b.ws_url()).await;
    flooder.hello().await;
    let base = reset_peak(pid);
    FloodScene {
        b,
        pid,
        watcher,
        flooder,
        base,
    }
}

fn report(what: &str, pid: u32, base: u64) -> u64 {
    let now = rss_kib(pid);
    eprintln!(
        "{what}: RSS {base} KiB -> {now} KiB (+{} KiB)",
        now.saturating_sub(base)
    );
    now
}

#[tokio::test]
async fn slowloris_handshakes_are_cut_off() {
    let (b, base) = spawn("[limits]\nhandshake_timeout = \"500ms\"\n");
    let mut socks = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(b.addr).await.unwrap();
        s.write_all(b"GET /ws HTTP/1.1\r\nHost: h\r\n")
            .await
            .unwrap();
        socks.push(s);
    }
    // Drip one header byte per socket every 100 ms; the server must cut them all off.
    let started = std::time::Instant::now();
    let mut open = socks.len();
    while open > 0 && started.elapsed() < Duration::from_secs(5) {
        open = 0;
        for s in &mut socks {
            if s.write_all(b"a").await.is_ok() {
                let mut buf = [0u8; 512];
                match tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => {}
                    _ => open += 1,
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        open,
        0,
        "slow handshakes still open after {:?}",
        started.elapsed()
    );
    probe(&b.ws_url()).await;
    let now = report("slowloris x300", b.child.id(), base);
    assert!(now < base + 64 * 1024);
}

/// Writes `frame` at 10,000 frames per second (paced by the clock, not one burst) for at
/// least `min`, and on until `until` is set. Stops early at a write error (the server closed
/// the connection) and late at 20 s. Returns the frames written, and the sink.
async fn flood<S>(mut tx: S, frame: String, min: Duration, until: Arc<AtomicBool>) -> (u64, S)
where
    S: futures_util::Sink<Message> + Unpin,
{
    const PER_SEC: u64 = 10_000;
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut sent = 0u64;
    loop {
        tick.tick().await;
        let elapsed = started.elapsed();
        let due = PER_SEC * elapsed.as_micros() as u64 / 1_000_000;
        while sent < due {
            if tx.feed(Message::text(frame.clone())).await.is_err() {
                return (sent, tx);
            }
            sent += 1;
        }
        if tx.flush().await.is_err() {
            return (sent, tx);
        }
        if elapsed >= Duration::from_secs(20) || (elapsed >= min && until.load(Ordering::SeqCst)) {
            return (sent, tx);
        }
    }
}

#[tokio::test]
async fn ten_thousand_tiny_frames_per_second_from_one_client() {
    // No publish_rate: the server takes every frame.
    let FloodScene {
        b,
        pid,
        mut watcher,
        flooder,
        base,
    } = flood_scene("").await;
    let (tx, rx) = flooder.ws.split();
    let frame = json!({"op": "pub", "topic": "flood/x", "data": 0}).to_string();
    let probed = Arc::new(AtomicBool::new(false));
    let flood = tokio::spawn(flood(tx, frame, Duration::from_secs(3), probed.clone()));
    // Another client is served while the flood goes on (the flood lasts until it was).
    tokio::time::sleep(Duration::from_millis(500)).await;
    probe(&b.ws_url()).await;
    assert!(
        !flood.is_finished(),
        "the flood ended before the probe got through"
    );
    probed.store(true, Ordering::SeqCst);
    let (sent, tx) = flood.await.unwrap();
    eprintln!("{sent} frames at 10,000 per second");
    assert!(sent >= 30_000, "{sent}");
    // Every flood message reached the subscriber (as messages or a gap), in order.
    let mut last = 0u64;
    while last < sent {
        if let Some(seq) = seq_covered(&watcher.recv().await) {
            last = seq;
        }
    }
    assert_eq!(last, sent);
    // The flooder itself was never refused, and is still served.
    let mut flooder = Raw {
        ws: tx.reunite(rx).unwrap(),
    };
    flooder.send(json!({"op": "ping", "id": "after"})).await;
    let pong = flooder.recv().await;
    assert_eq!(pong, json!({"op": "pong", "id": "after"}));
    let peak = report_peak("10,000 frames/s", pid, base);
    assert!(peak < base + 32 * 1024, "peak {peak} KiB from {base} KiB");
}

#[tokio::test]
async fn ten_thousand_frames_per_second_over_the_publish_rate_are_refused_then_closed() {
    // 1,000 publishes per second, bursts of 2,000: the flood is ten times the rate, so it
    // gets a token every tenth frame or so, and is still closed.
    let FloodScene {
        b,
        pid,
        mut watcher,
        flooder,
        base,
    } = flood_scene("[limits]\npublish_rate = 1000\n").await;
    let started = std::time::Instant::now();
    let (tx, mut rx) = flooder.ws.split();
    let frame = json!({"op": "pub", "topic": "flood/x", "data": 0}).to_string();
    let flood = tokio::spawn(flood(
        tx,
        frame,
        Duration::from_secs(4),
        Arc::new(AtomicBool::new(true)),
    ));
    // What the flooder hears: `rate_limited` errors, then close 4029.
    let (first_refusal, refused) = tokio::sync::oneshot::channel();
    let hears = tokio::spawn(async move {
        let mut first_refusal = Some(first_refusal);
        let mut refusals = 0u64;
        loop {
            match tokio::time::timeout(common::WAIT, rx.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    assert_eq!(v["op"], "error", "{v}");
                    assert_eq!(v["code"], "rate_limited", "{v}");
                    refusals += 1;
                    if let Some(tx) = first_refusal.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Some(Ok(Message::Close(c)))) => {
                    return (refusals, c.map(|c| u16::from(c.code)));
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("no close after {refusals} refusals: {other:?}"),
            }
        }
    });
    // Another client is served while the flooder is being refused.
    refused.await.expect("a rate_limited error");
    probe(&b.ws_url()).await;
    let (refusals, code) = hears.await.unwrap();
    let (sent, _) = flood.await.unwrap();
    let elapsed = started.elapsed();
    eprintln!("{sent} frames sent, {refusals} refused, closed {code:?} after {elapsed:?}");
    assert_eq!(code, Some(4029));
    assert!(
        sent < 40_000,
        "the flood ran its full course: {sent} frames"
    );
    // The subscriber got the burst and what the rate let through since, nothing more (its
    // session numbers them: the last number, of a message or a gap, is how many there were).
    let mut accepted = 0u64;
    while let Some(v) = watcher.recv_within(Duration::from_millis(500)).await {
        if let Some(seq) = seq_covered(&v) {
            accepted = seq;
        }
    }
    let most = 2000 + (1000.0 * elapsed.as_secs_f64()).ceil() as u64;
    assert!(
        (2000..=most).contains(&accepted),
        "{accepted} accepted, at most {most}"
    );
    assert!(refusals > 2000, "{refusals} refusals");
    let peak = report_peak("over publish_rate", pid, base);
    assert!(peak < base + 32 * 1024, "peak {peak} KiB from {base} KiB");
    probe(&b.ws_url()).await;
}

#[tokio::test]
async fn ten_megabyte_frame_closes_1009() {
    let (b, _) = spawn("");
    let pid = b.child.id();
    // Warm up first, so that what the first connections cost is in the baseline.
    probe(&b.ws_url()).await;
    let mut big = Raw::connect(&b.ws_url()).await;
    big.hello().await;
    let base = reset_peak(pid);
    let payload = format!(
        r#"{{"op":"pub","topic":"big","data":"{}"}}"#,
        "x".repeat(10 << 20)
    );
    // The server reads the frame to its end (dropping it unread, unbuffered) before it closes
    // the socket: closing with unread data would reset the connection under our write.
    let sent = big.ws.send(Message::text(payload)).await;
    assert!(sent.is_ok(), "the server reset the connection: {sent:?}");
    let (code, frames) = big.expect_close().await;
    assert_eq!(code, 1009, "{frames:?}");
    // A server that had buffered the frame would have peaked at least 10 MiB higher.
    let peak = report_peak("10 MB frame", pid, base);
    assert!(peak < base + 8 * 1024, "peak {peak} KiB from {base} KiB");
    probe(&b.ws_url()).await;
}

#[tokio::test]
async fn invalid_utf8_and_deep_json_are_refused_without_harm() {
    let (b, base) = spawn("");
    // Invalid UTF-8 in a text frame: close 1007.
    let mut bad = Raw::connect(&b.ws_url()).await;
    bad.hello().await;
    let frame = Frame::message(vec![b'"', 0xff, 0xfe, b'"'], OpCode::Data(Data::Text), true);
    bad.ws.send(Message::Frame(frame)).await.unwrap();
    let (code, _) = bad.expect_close().await;
    assert_eq!(code, 1007);

    // JSON nested 10,000 deep: an error frame, and the connection stays usable.
    let mut deep = Raw::connect(&b.ws_url()).await;
    deep.hello().await;
    let nested = format!(
        r#"{{"op":"pub","id":"d","topic":"deep","data":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    deep.send_text(&nested).await;
    // `data` is carried as opaque JSON (never parsed into a tree), so the server may take
    // it; either way it answers, and does not recurse 10,000 deep.
    let a = deep.recv_op_id("d").await;
    assert!(a["op"] == "ok" || a["code"] == "bad_json", "{a}");
    let nested_id = format!(
        r#"{{"op":"sub","id":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    deep.send_text(&nested_id).await;
    let e = deep.recv_op("error").await;
    assert!(e["code"] == "bad_json" || e["code"] == "bad_request", "{e}");
    let bare = "[".repeat(10_000);
    deep.send_text(&bare).await;
    let e = deep.recv_op("error").await;
    assert!(e["code"] == "bad_json" || e["code"] == "bad_frame", "{e}");
    deep.send(json!({"op": "ping", "id": "p"})).await;
    assert_eq!(deep.recv_op("pong").await["id"], "p");
    probe(&b.ws_url()).await;
    let now = report("invalid UTF-8 + deep JSON", b.child.id(), base);
    assert!(now < base + 32 * 1024);
}

#[tokio::test]
async fn hundred_thousand_subscription_attempts() {
    let (b, base) = spawn("");
    let (ws, _) = tokio_tungstenite::connect_async(b.ws_url()).await.unwrap();
    let (mut tx, mut rx) = ws.split();
    tx.send(Message::text(r#"{"op":"hello"}"#)).await.unwrap();
    // Read concurrently: every refusal is answered, and the server waits for us to read.
    let reader = tokio::spawn(async move {
        let mut refused = 0u32;
        while refused < 99_000 {
            match tokio::time::timeout(Duration::from_secs(30), rx.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["op"] == "error" {
                        assert_eq!(v["code"], "too_many_subscriptions", "{v}");
                        refused += 1;
                    }
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("stream ended after {refused} refusals: {other:?}"),
            }
        }
        refused
    });
    for i in 0..100_000 {
        let f = format!(r#"{{"op":"sub","pattern":"many/{i}/*"}}"#);
        tx.feed(Message::text(f)).await.unwrap();
        if i % 1000 == 999 {
            tx.flush().await.unwrap();
        }
    }
    tx.flush().await.unwrap();
    assert_eq!(reader.await.unwrap(), 99_000);
    let stats: Value = common::get_json(format!("http://{}/v1/stats", b.addr)).await;
    assert_eq!(stats["subscriptions"], 1000, "{stats}");
    probe(&b.ws_url()).await;
    let now = report("100,000 subscription attempts", b.child.id(), base);
    assert!(now < base + 64 * 1024);
}

#[tokio::test]
async fn five_thousand_sockets_at_once() {
    // 5,000 sockets here and 5,000 in the server (which raises its own limit too, and starts
    // with this one): more than the usual soft limit of 1024 open files.
    let limit = herald::fd_limit::raise_to_hard().expect("raise the open files limit");
    assert!(
        limit.to >= 6000,
        "this test needs 6,000 open files and the hard limit is {}: raise it (ulimit -Hn)",
        limit.to
    );
    let (b, base) = spawn("");
    let url = b.ws_url();
    let mut tasks = Vec::new();
    for _ in 0..5000 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Raw::connect(&url).await;
            c.hello().await;
            c
        }));
    }
    let mut clients = Vec::with_capacity(5000);
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    let stats: Value = common::get_json(format!("http://{}/v1/stats", b.addr)).await;
    assert!(stats["connections"].as_u64().unwrap() >= 5000, "{stats}");
    probe(&url).await;
    let now = report("5,000 sockets", b.child.id(), base);
    // Measured about 12 KiB per idle connection; allow 32.
    assert!(now < base + 5000 * 32, "{now} KiB");
    // Everyone is still served: a message reaches all of them.
    let mut some = clients.split_off(4900);
    for c in &mut some {
        c.sub("all").await;
    }
    let mut p = Raw::connect(&url).await;
    p.hello().await;
    p.publish("all", json!("hi")).await;
    for c in &mut some {
        assert_eq!(c.recv_op("msg").await["data"], "hi");
    }
}
