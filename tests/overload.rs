//! Overload: a publisher sending flat out to more subscribers than the node writes to at
//! that rate is slowed (its reader lets the writers run first, `herald_publisher_yields`), so
//! the healthy subscribers lose nothing; a subscriber stalled at the same time loses only its
//! own messages (an exact `gap` when it reads again) and never slows the publisher. What it
//! gains in goodput is measured in the benchmark (`herald-bench overload`), not here.

mod common;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use common::*;

const READERS: usize = 20;
const MESSAGES: u64 = 5_000;
/// Frames the publisher hands its socket at once.
const BURST: u64 = 500;
/// Each session's buffer: far smaller than a burst, while the readers' sockets can take all
/// the messages (about 0.6 MB each) even if the readers, which share the machine's CPU with
/// the server, fall behind. Their writers then wait for CPU, never for their sockets: that
/// backlog is the node's, and it must slow the publisher, not drop.
const BUFFER: u64 = 64;

fn seq_of(text: &str) -> Option<u64> {
    let v: Value = serde_json::from_str(text).unwrap();
    match v["op"].as_str() {
        Some("msg") => v["seq"].as_u64(),
        Some("gap") => panic!("a healthy reader got a gap: {v}"),
        _ => None,
    }
}

async fn metric(addr: std::net::SocketAddr, name: &str) -> f64 {
    let text = get_text(format!("http://{addr}/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// 20 readers and one stalled subscriber; the publisher sends 5,000 messages as fast as its
/// socket takes them, with no ack to wait for. A node that read everything it was sent
/// would overflow the readers' 64-message buffers and drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flat_out_publisher_is_slowed_not_dropped_even_with_a_stalled_reader() {
    let dir = std::env::temp_dir().join(format!("herald-overload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("herald.toml");
    std::fs::write(&cfg, format!("[session]\nbuffer_messages = {BUFFER}\n")).unwrap();
    let bin = Binary::spawn(&["--listen", "127.0.0.1:0", "--config", cfg.to_str().unwrap()]);
    let mut stalled = connect_small_window(bin.addr).await;
    stalled.hello().await;
    stalled.sub("load/t").await;
    stalled.sub("load/big").await;
    // From here on `stalled` does not read until the end.

    let mut readers = Vec::new();
    for r in 0..READERS {
        let mut c = Raw::connect(&bin.ws_url()).await;
        c.hello().await;
        c.sub("load/t").await;
        readers.push(tokio::spawn(async move {
            let mut next = 1u64;
            while next <= MESSAGES {
                let m = tokio::time::timeout(Duration::from_secs(60), c.ws.next())
                    .await
                    .expect("reader stalled")
                    .expect("socket ended")
                    .expect("socket error");
                if let Message::Text(t) = m
                    && let Some(seq) = seq_of(&t)
                {
                    assert_eq!(seq, next, "reader {r}: {t}");
                    next += 1;
                }
            }
        }));
    }

    let mut publisher = Raw::connect(&bin.ws_url()).await;
    publisher.hello().await;
    // Large messages only the stalled subscriber takes, first: its writer waits for its
    // socket while the burst comes.
    fill_sockets(&mut publisher, "load/big").await;
    let payload = "x".repeat(80);
    for i in 1..=MESSAGES {
        let mut f = json!({"op": "pub", "topic": "load/t", "data": {"i": i, "p": payload}});
        if i == MESSAGES {
            f["id"] = json!("last");
        }
        publisher
            .ws
            .feed(Message::text(f.to_string()))
            .await
            .unwrap();
        if i % BURST == 0 {
            publisher.ws.flush().await.unwrap();
        }
    }
    publisher.ws.flush().await.unwrap();
    // The stalled subscriber does not hold the publisher back: its last publish is answered
    // while that subscriber still reads nothing.
    let ok = publisher.recv_op_id("last").await;
    assert_eq!(ok["op"], "ok", "{ok}");
    for r in readers {
        r.await.unwrap();
    }
    let yields = metric(bin.addr, "herald_publisher_yields_total").await;
    let dropped = metric(bin.addr, "herald_dropped_messages_total").await;
    eprintln!("publisher yields {yields}, dropped {dropped}");
    assert!(
        yields > 0.0,
        "the node was never behind: the test did not overload it"
    );
    // A backlog that counted the stalled session would make nearly every publish wait.
    assert!(
        yields < (MESSAGES / 2) as f64,
        "{yields} publishes waited: the stalled session's backlog slowed the publisher"
    );
    assert!(
        dropped > 0.0 && dropped < (FILL + MESSAGES) as f64,
        "only the stalled session drops, and not everything: {dropped}"
    );
    // The stalled subscriber, reading again, learns exactly what it lost.
    let mut seen_gap = false;
    let mut last = 0;
    while last < FILL + MESSAGES {
        let v = stalled.recv().await;
        match v["op"].as_str() {
            Some("gap") => {
                assert_eq!(v["from_seq"].as_u64().unwrap(), last + 1, "{v}");
                last = v["to_seq"].as_u64().unwrap();
                seen_gap = true;
            }
            Some("msg") => {
                assert_eq!(v["seq"].as_u64().unwrap(), last + 1, "{v}");
                last += 1;
            }
            _ => {}
        }
    }
    assert!(
        seen_gap,
        "the stalled subscriber lost nothing: it did not stall"
    );
}
