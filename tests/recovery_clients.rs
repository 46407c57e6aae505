//! Recovery as users get it, with both clients doing it by themselves: 10 `herald-client` and
//! 5 herald.js (Node) subscribers on `t/**` of a durable server (`persist`, history 10000)
//! that is killed with `kill -9` and restarted on the same port five times, while a publisher
//! goes on over 50 topics, ten of them first used after each restart. Every subscriber must end
//! with every message of every topic exactly once, in offset order, and no gap.
//!
//! Needs `node` (20 or newer) and web/node_modules (`./scripts/test.sh` installs both).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use herald_client::{Client, ClientOptions, Delivery};
use parking_lot::Mutex;
use serde_json::{Value, json};

use common::Binary;

const CONFIG: &str =
    "[[topics]]\npattern = \"t/**\"\nhistory = 10000\npersist = true\nmax_rewind = 100000\n";

/// Per topic: (offset, data), in order.
type PerTopic = BTreeMap<String, Vec<(u64, Value)>>;

/// What one subscriber handed its application, per topic, in arrival order.
#[derive(Default)]
struct Seen {
    msgs: PerTopic,
    gaps: Vec<String>,
}

type Shared = Arc<Mutex<Seen>>;

fn temp_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "herald-recovery-clients-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn start(dir: &Path, listen: &str) -> Binary {
    let config = dir.join("herald.toml");
    std::fs::write(&config, CONFIG).unwrap();
    Binary::spawn(&[
        "--listen",
        listen,
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        dir.join("data").to_str().unwrap(),
    ])
}

fn quick() -> ClientOptions {
    ClientOptions {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..Default::default()
    }
}

/// A herald.js subscriber in its own Node process; its lines go into `seen`.
fn js_subscriber(url: &str, seen: Shared) -> Child {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/recovering_subscriber.mjs");
    let mut child = Command::new("node")
        .arg(script)
        .arg(url)
        .arg("t/**")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node is needed for the herald.js subscribers (./scripts/test.sh installs it)");
    let stdout = child.stdout.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let v: Value = serde_json::from_str(&line).expect("a JSON line");
            let mut s = seen.lock();
            if v["ready"] == true {
                let _ = ready_tx.send(());
            } else if let Some(topic) = v["topic"].as_str() {
                let offset = v["offset"].as_u64().unwrap();
                s.msgs
                    .entry(topic.to_owned())
                    .or_default()
                    .push((offset, v["data"].clone()));
            } else if v.get("gap").is_some() {
                s.gaps.push(v.to_string());
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the herald.js subscriber did not start (is web/node_modules installed?)");
    child
}

/// A herald-client subscriber; its deliveries go into `seen`.
async fn rust_subscriber(url: &str, seen: Shared) -> Client {
    let client = Client::connect_with(url, quick()).await.unwrap();
    let mut sub = client.subscribe("t/**").await.unwrap();
    tokio::spawn(async move {
        while let Some(d) = sub.next().await {
            let mut s = seen.lock();
            match d {
                Delivery::Msg(m) => s.msgs.entry(m.topic).or_default().push((m.offset, m.data)),
                Delivery::Gap(g) => s.gaps.push(format!("{g:?}")),
                Delivery::TopicGap(g) => s.gaps.push(format!("{g:?}")),
                _ => {}
            }
        }
    });
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_clients_recover_everything_across_five_kill9_restarts() {
    let dir = temp_dir();
    let listen = common::fixed_port();
    let mut server = start(&dir, &listen);
    let url = server.ws_url();

    let seen: Vec<Shared> = (0..15).map(|_| Shared::default()).collect();
    let mut rust = Vec::new();
    for s in &seen[..10] {
        rust.push(rust_subscriber(&url, s.clone()).await);
    }
    let mut node: Vec<Child> = seen[10..]
        .iter()
        .map(|s| js_subscriber(&url, s.clone()))
        .collect();

    // The publisher: round robin over the topics in use, each publish retried until acked
    // (a publish whose ack the kill took may be stored or not: the check allows for both).
    let in_use = Arc::new(std::sync::atomic::AtomicUsize::new(10));
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<PerTopic>> = Arc::default();
    let publisher = {
        let (url, in_use, stop, acked) = (url.clone(), in_use.clone(), stop.clone(), acked.clone());
        tokio::spawn(async move {
            let p = Client::connect_with(&url, quick()).await.unwrap();
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let topic = format!("t/{}", k % in_use.load(Ordering::Relaxed) as u64);
                let data = json!({"k": k});
                match p.publish(&topic, &data).await {
                    Ok(ack) => {
                        acked
                            .lock()
                            .entry(topic)
                            .or_default()
                            .push((ack.offset, data));
                        k += 1;
                        if k.is_multiple_of(20) {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
    };

    for restart in 0..5 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        server = start(&dir, &listen);
        // Ten topics nobody has had a message of, first used while the subscribers recover.
        in_use.store((10 * (restart + 2)).min(50), Ordering::Relaxed);
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::Relaxed);
    publisher.await.unwrap();
    let acked = acked.lock().clone();
    assert_eq!(acked.len(), 50, "every topic was published to");

    // Every subscriber catches up with every topic's last acked offset.
    let deadline = Instant::now() + Duration::from_secs(60);
    for (i, s) in seen.iter().enumerate() {
        loop {
            let behind: Vec<String> = {
                let got = s.lock();
                acked
                    .iter()
                    .filter(|(t, a)| {
                        let last = a.last().unwrap().0;
                        got.msgs
                            .get(*t)
                            .and_then(|m| m.last())
                            .is_none_or(|m| m.0 < last)
                    })
                    .map(|(t, _)| t.clone())
                    .collect()
            };
            if behind.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "subscriber {i} ({}) is behind on {behind:?}",
                if i < 10 { "rust" } else { "herald.js" }
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // A quiet moment, so that a late duplicate would be counted too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, s) in seen.iter().enumerate() {
        let who = if i < 10 { "rust" } else { "herald.js" };
        let got = s.lock();
        assert!(
            got.gaps.is_empty(),
            "subscriber {i} ({who}) got gaps: {:?}",
            got.gaps
        );
        for (topic, acks) in &acked {
            let msgs = &got.msgs[topic];
            let offsets: Vec<u64> = msgs.iter().map(|m| m.0).collect();
            let want: Vec<u64> = (1..=offsets.len() as u64).collect();
            assert_eq!(
                offsets, want,
                "subscriber {i} ({who}), {topic}: once each, in order"
            );
            for (offset, data) in acks {
                assert_eq!(
                    &msgs[*offset as usize - 1].1,
                    data,
                    "{who} {topic} {offset}"
                );
            }
        }
    }
    for c in &mut node {
        let _ = c.kill();
        let _ = c.wait();
    }
    drop(rust);
    server.child.kill().unwrap();
    let _ = server.child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
