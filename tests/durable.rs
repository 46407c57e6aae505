//! The durable store (`--data-dir`, `[[topics]] persist = true`) with the real binary:
//! crash safety under kill -9, recovery of history, retained messages, epochs and offsets,
//! and retention by count and by age freeing the disk (PROTOCOL.md §5, §9).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Binary, Raw, WAIT, http, post_json};
use futures_util::{SinkExt, StreamExt};
use herald::store::{Durable, FILE_NAME, RedbStore, Retention};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// A fresh, empty directory under the system temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "herald-durable-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `herald.toml` into `dir` and returns its path.
fn config_file(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("herald.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn start(data: &Path, config: &Path) -> Binary {
    Binary::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ])
}

/// Stops the server with SIGTERM and waits for a clean exit.
async fn stop(mut bin: Binary) {
    bin.signal("TERM");
    let status = tokio::task::spawn_blocking(move || bin.wait(Duration::from_secs(20)))
        .await
        .unwrap();
    assert_eq!(status, Some(0), "clean exit");
}

/// Everything on disk, whatever the limits: (topic → (last offset, epoch, stored offsets)).
fn on_disk(data: &Path) -> HashMap<String, (u64, String, Vec<u64>)> {
    let mut store = RedbStore::open(data).expect("open the store");
    let all = |_: &herald::topic::Topic| {
        Some(Retention {
            history: usize::MAX,
            ttl: None,
        })
    };
    store
        .recover(&all, herald::event::now_ms())
        .unwrap()
        .into_iter()
        .map(|r| {
            let offsets = r.history.iter().map(|e| e.offset).collect();
            (
                r.topic.as_str().to_owned(),
                (r.offset, r.epoch.to_string(), offsets),
            )
        })
        .collect()
}

/// The whole history of a topic over HTTP, paging forward: (epoch, offset → message).
async fn history_all(bin: &Binary, topic: &str) -> (String, BTreeMap<u64, Value>) {
    let client = http();
    let mut since = 0u64;
    let mut out = BTreeMap::new();
    loop {
        let url = format!(
            "http://{}/v1/history?topic={topic}&since={since}&limit=1000",
            bin.addr
        );
        let page: Value = client.get(url).send().await.unwrap().json().await.unwrap();
        let msgs = page["messages"].as_array().unwrap();
        if msgs.is_empty() {
            return (page["epoch"].as_str().unwrap().to_owned(), out);
        }
        for m in msgs {
            let offset = m["offset"].as_u64().unwrap();
            assert!(
                out.insert(offset, m.clone()).is_none(),
                "offset {offset} twice"
            );
            since = offset;
        }
    }
}

/// Publishes `n` messages on one connection without waiting between them (at most 100
/// unacknowledged), returning the `ok` frames in order of their ids.
async fn publish_pipelined(bin: &Binary, topic: &str, n: usize, data: Value) -> Vec<Value> {
    let mut c = Raw::connect(&bin.ws_url()).await;
    c.hello().await;
    let (mut tx, mut rx) = c.ws.split();
    let window = Arc::new(tokio::sync::Semaphore::new(100));
    let w = window.clone();
    let topic = topic.to_owned();
    let writer = tokio::spawn(async move {
        for i in 0..n {
            w.acquire().await.unwrap().forget();
            let f = json!({"op": "pub", "id": i, "topic": topic, "data": data});
            tx.send(Message::text(f.to_string())).await.unwrap();
        }
        tx
    });
    let mut oks = vec![Value::Null; n];
    for _ in 0..n {
        let v = loop {
            let m = tokio::time::timeout(WAIT, rx.next()).await.expect("an ok");
            if let Some(Ok(Message::Text(t))) = m {
                break serde_json::from_str::<Value>(&t).unwrap();
            }
        };
        assert_eq!(v["op"], "ok", "{v}");
        let i = v["id"].as_u64().unwrap() as usize;
        oks[i] = v;
        window.add_permits(1);
    }
    drop(writer.await.unwrap());
    oks
}

/// Subscribes (`sub` is the frame without `op` and `id`) and returns the `n` messages that
/// follow, whether they arrive before or after the `ok` (checked: `recovered` is true when
/// present).
async fn sub_then_msgs(c: &mut Raw, mut sub: Value, n: usize) -> Vec<Value> {
    sub["op"] = json!("sub");
    sub["id"] = json!("s");
    c.send(sub).await;
    let (mut ok, mut msgs) = (false, Vec::new());
    while !ok || msgs.len() < n {
        let v = c.recv().await;
        match v["op"].as_str() {
            Some("msg") => msgs.push(v),
            Some("ok") if v["id"] == "s" => {
                assert_ne!(v["recovered"], false, "{v}");
                ok = true;
            }
            _ => panic!("unexpected {v}"),
        }
    }
    msgs
}

/// One acknowledged publish of the crash test.
#[derive(Debug, Clone)]
struct Acked {
    topic: String,
    offset: u64,
    epoch: String,
    conn: usize,
    k: u64,
}

/// Publishes with acks as fast as the server takes them (100 outstanding per connection)
/// until the socket dies, recording every `ok`.
async fn publish_until_killed(
    url: String,
    conn: usize,
    acked: Arc<Mutex<Vec<Acked>>>,
    count: Arc<AtomicUsize>,
) {
    let mut c = Raw::connect(&url).await;
    c.hello().await;
    let (mut tx, mut rx) = c.ws.split();
    let topic = format!("d/t{}", conn % 3);
    let window = Arc::new(tokio::sync::Semaphore::new(100));
    let w = window.clone();
    let t = topic.clone();
    let writer = tokio::spawn(async move {
        // Bounded: the server is killed long before this many.
        for k in 0..1_000_000u64 {
            let Ok(p) = w.acquire().await else { return };
            p.forget();
            let f = json!({"op": "pub", "id": k, "topic": t, "data": {"c": conn, "k": k}});
            if tx.send(Message::text(f.to_string())).await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(m)) = rx.next().await {
        let Message::Text(text) = m else { continue };
        let v: Value = serde_json::from_str(&text).unwrap();
        if v["op"] != "ok" {
            continue;
        }
        acked.lock().unwrap().push(Acked {
            topic: topic.clone(),
            offset: v["offset"].as_u64().unwrap(),
            epoch: v["epoch"].as_str().unwrap().to_owned(),
            conn,
            k: v["id"].as_u64().unwrap(),
        });
        count.fetch_add(1, Ordering::Relaxed);
        window.add_permits(1);
    }
    window.close();
    let _ = writer.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_keeps_every_acked_message() {
    let dir = temp_dir("kill9");
    let data = dir.join("data");
    let cfg = config_file(
        &dir,
        "[[topics]]\npattern = \"d/**\"\nhistory = 1000000\npersist = true\n",
    );
    let mut bin = start(&data, &cfg);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let publishers: Vec<_> = (0..10)
        .map(|c| {
            tokio::spawn(publish_until_killed(
                bin.ws_url(),
                c,
                acked.clone(),
                count.clone(),
            ))
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while count.load(Ordering::Relaxed) < 3000 {
        assert!(tokio::time::Instant::now() < deadline, "too few acks");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Killed mid-stream: publishes are in flight on all ten connections.
    bin.signal("KILL");
    let _ = tokio::task::spawn_blocking(move || {
        bin.wait(Duration::from_secs(10));
        bin
    })
    .await
    .unwrap();
    for p in publishers {
        tokio::time::timeout(WAIT, p).await.unwrap().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 3000);

    let bin = start(&data, &cfg);
    for t in 0..3 {
        let topic = format!("d/t{t}");
        let mine: Vec<&Acked> = acked.iter().filter(|a| a.topic == topic).collect();
        let (epoch, history) = history_all(&bin, &topic).await;
        // The epoch is the one every ack named.
        assert!(mine.iter().all(|a| a.epoch == epoch), "epoch changed");
        // Every acked message is there, at its offset.
        for a in &mine {
            let m = history
                .get(&a.offset)
                .unwrap_or_else(|| panic!("acked offset {} of {topic} lost", a.offset));
            assert_eq!(
                m["data"],
                json!({"c": a.conn, "k": a.k}),
                "{topic}@{}",
                a.offset
            );
        }
        // Offsets are 1..=last without holes, and no message is stored twice.
        let last = *history.keys().last().unwrap();
        assert_eq!(
            history.keys().copied().collect::<Vec<_>>(),
            (1..=last).collect::<Vec<_>>()
        );
        let mut seen = std::collections::HashSet::new();
        for m in history.values() {
            assert!(seen.insert(m["data"].to_string()), "stored twice: {m}");
        }
        // New publishes continue after the last stored offset, in the same epoch.
        let mut c = Raw::connect(&bin.ws_url()).await;
        c.hello().await;
        let ok = c.publish(&topic, json!("after")).await;
        assert_eq!(ok["epoch"], epoch.as_str());
        assert_eq!(ok["offset"], last + 1);
        let max_acked = mine.iter().map(|a| a.offset).max().unwrap();
        assert!(last >= max_acked);
    }
    stop(bin).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn restart_recovers_history_retained_epoch_and_offsets() {
    let dir = temp_dir("restart");
    let data = dir.join("data");
    let cfg = config_file(
        &dir,
        "[[topics]]\npattern = \"keep/**\"\nhistory = 5\npersist = true\n\
         [[topics]]\npattern = \"mem/**\"\nhistory = 5\n",
    );
    let bin = start(&data, &cfg);
    let mut c = Raw::connect(&bin.ws_url()).await;
    c.hello().await;
    let mut epoch = Value::Null;
    for i in 1..=8 {
        let f =
            json!({"op": "pub", "id": "p", "topic": "keep/a", "data": {"n": i}, "retain": i == 3});
        c.send(f).await;
        let ok = c.recv_op_id("p").await;
        assert_eq!(ok["offset"], i, "{ok}");
        epoch = ok["epoch"].clone();
    }
    // An HTTP publish is acked once durable too.
    let r: Value = post_json(
        format!("http://{}/v1/publish", bin.addr),
        &json!({"topic": "keep/b", "data": "x", "retain": true}),
    )
    .await;
    assert_eq!(r["offset"], 1, "{r}");
    let mem_epoch = c.publish("mem/a", json!(1)).await["epoch"].clone();
    stop(bin).await;

    let bin = start(&data, &cfg);
    let mut c = Raw::connect(&bin.ws_url()).await;
    c.hello().await;
    let h = c.request(json!({"op": "history", "topic": "keep/a"})).await;
    assert_eq!(h["epoch"], epoch);
    let offsets: Vec<u64> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [4, 5, 6, 7, 8]);
    assert_eq!(h["messages"][4]["data"], json!({"n": 8}));
    // The retained message (offset 3, older than the history kept) comes back first.
    let m = sub_then_msgs(&mut c, json!({"pattern": "keep/a"}), 1)
        .await
        .remove(0);
    assert_eq!(
        (m["retained"].clone(), m["offset"].clone()),
        (json!(true), json!(3))
    );
    assert_eq!(m["data"], json!({"n": 3}));
    // `since` across the restart: same epoch, so recovered.
    let mut d = Raw::connect(&bin.ws_url()).await;
    d.hello().await;
    let replay = sub_then_msgs(
        &mut d,
        json!({"pattern": "keep/a", "since": {"epoch": epoch, "offset": 6}}),
        2,
    )
    .await;
    assert_eq!(
        replay
            .iter()
            .map(|m| m["offset"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [7, 8]
    );
    // Offsets continue; the retained message of keep/b is back.
    c.send(json!({"op": "pub", "id": "p", "topic": "keep/a", "data": {"n": 9}}))
        .await;
    // Both the live message (this connection subscribes) and the ack arrive.
    let (a, b) = (c.recv().await, c.recv().await);
    let (m, ok) = if a["op"] == "msg" { (a, b) } else { (b, a) };
    assert_eq!(
        (m["op"].clone(), m["offset"].clone()),
        (json!("msg"), json!(9)),
        "{m}"
    );
    assert_eq!(
        (ok["offset"].clone(), ok["epoch"].clone()),
        (json!(9), epoch.clone())
    );
    let mut e = Raw::connect(&bin.ws_url()).await;
    e.hello().await;
    let mut msgs = sub_then_msgs(&mut e, json!({"pattern": "keep/*"}), 2).await;
    let m = msgs.remove(0);
    assert_eq!(
        (m["topic"].clone(), m["retained"].clone()),
        (json!("keep/a"), json!(true))
    );
    let m = msgs.remove(0);
    assert_eq!(
        (m["topic"].clone(), m["data"].clone()),
        (json!("keep/b"), json!("x"))
    );
    // A topic without `persist` lives in memory only: a new epoch, no history.
    let h = c.request(json!({"op": "history", "topic": "mem/a"})).await;
    assert_eq!(h["messages"], json!([]));
    let ok = c.publish("mem/a", json!(2)).await;
    assert_eq!(ok["offset"], 1);
    assert_ne!(ok["epoch"], mem_epoch);
    // Clearing the retained message is durable too.
    c.send(json!({"op": "pub", "id": "p", "topic": "keep/b", "data": null, "retain": true}))
        .await;
    assert_eq!(c.recv_op_id("p").await["offset"], 2);
    stop(bin).await;

    let bin = start(&data, &cfg);
    let mut c = Raw::connect(&bin.ws_url()).await;
    c.hello().await;
    c.sub("keep/b").await;
    assert!(
        c.recv_within(Duration::from_millis(300)).await.is_none(),
        "no retained message after a clear"
    );
    stop(bin).await;
    let disk = on_disk(&data);
    assert_eq!(disk["keep/a"].0, 9);
    assert_eq!(disk["keep/a"].2, [5, 6, 7, 8, 9]);
    assert!(
        !disk.contains_key("mem/a"),
        "memory-only topics never reach the disk"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn retention_by_count_frees_disk_space() {
    let dir = temp_dir("count");
    let data = dir.join("data");
    let cfg = config_file(
        &dir,
        "[[topics]]\npattern = \"big/**\"\nhistory = 10\npersist = true\n",
    );
    let bin = start(&data, &cfg);
    let payload = json!("x".repeat(8000));
    let file = data.join(FILE_NAME);
    let mut sizes = Vec::new();
    let mut last = 0;
    for _round in 0..6 {
        // 8 MB per round: the file would grow by that much if nothing were deleted.
        let oks = publish_pipelined(&bin, "big/a", 1000, payload.clone()).await;
        last = oks.last().unwrap()["offset"].as_u64().unwrap();
        sizes.push(std::fs::metadata(&file).unwrap().len());
    }
    assert_eq!(last, 6000);
    // Pages of deleted messages are reused: 48 MB went through the file, which stays
    // smaller than a single round's 8 MB.
    assert!(
        sizes.iter().all(|s| *s < 6 << 20),
        "file keeps growing: {sizes:?}"
    );
    stop(bin).await;
    let disk = on_disk(&data);
    assert_eq!(disk["big/a"].0, 6000);
    // Retention deletes whole chunks (one per topic per commit), so the disk may hold one
    // chunk more than the 10 messages kept; never the thousands published.
    let held = &disk["big/a"].2;
    assert!(
        held.len() <= 10 + 100,
        "{} messages still on disk",
        held.len()
    );
    assert_eq!(held[held.len() - 10..], (5991..=6000).collect::<Vec<_>>());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn retention_by_age_deletes_from_disk() {
    let dir = temp_dir("age");
    let data = dir.join("data");
    let cfg = config_file(
        &dir,
        "[[topics]]\npattern = \"old/**\"\nhistory = 1000\nhistory_ttl = \"300ms\"\npersist = true\n",
    );
    let bin = start(&data, &cfg);
    let oks = publish_pipelined(&bin, "old/a", 20, json!("soon gone")).await;
    let epoch = oks[0]["epoch"].clone();
    // Past the TTL and at least one expiry pass of the committer.
    tokio::time::sleep(Duration::from_millis(300) + herald::store::EXPIRE_EVERY * 2).await;
    stop(bin).await;
    let disk = on_disk(&data);
    let (last, _, held) = &disk["old/a"];
    assert_eq!(*last, 20);
    assert!(held.is_empty(), "expired messages still on disk: {held:?}");

    // The offset and epoch outlive the messages.
    let bin = start(&data, &cfg);
    let mut c = Raw::connect(&bin.ws_url()).await;
    c.hello().await;
    let ok = c.publish("old/a", json!("new")).await;
    assert_eq!(
        (ok["offset"].clone(), ok["epoch"].clone()),
        (json!(21), epoch)
    );
    stop(bin).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn data_dir_in_use_is_refused() {
    let dir = temp_dir("locked");
    let data = dir.join("data");
    let cfg = config_file(&dir, "[[topics]]\npattern = \"**\"\npersist = true\n");
    let bin = start(&data, &cfg);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("data directory"), "{text}");
    stop(bin).await;
    let _ = std::fs::remove_dir_all(&dir);
}
