//! `[limits]` (PROTOCOL.md §9): publish rate, connections (global and per address), the
//! handshake timeout, and the default posture warning. Each violation has its error or
//! close code.

mod common;

use std::time::Duration;

use common::{Binary, Raw, TestServer, config};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn upgrade_status(url: &str) -> u16 {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[tokio::test]
async fn publish_rate_refuses_over_the_bucket_then_closes_4029() {
    let mut c = config();
    c.limits.publish_rate = 5; // bursts of 10
    let server = TestServer::with_config(c).await;
    let mut p = server.client().await;
    for i in 0..10 {
        let ok = p
            .request(json!({"op": "pub", "topic": "r/x", "data": i}))
            .await;
        assert_eq!(ok["op"], "ok", "publish {i} within the burst: {ok}");
    }
    let e = p
        .request(json!({"op": "pub", "topic": "r/x", "data": 10}))
        .await;
    assert_eq!(e["code"], "rate_limited", "{e}");
    // Requests take from the same bucket.
    let e = p
        .request(json!({"op": "req", "topic": "r/x", "data": 0}))
        .await;
    assert_eq!(e["code"], "rate_limited", "{e}");
    // Other operations are not rate limited.
    p.send(json!({"op": "ping", "id": 1})).await;
    assert_eq!(p.recv_op("pong").await["id"], 1);
    // A client that keeps going is closed.
    for i in 0..40 {
        p.send(json!({"op": "pub", "topic": "r/x", "data": i}))
            .await;
    }
    let (code, frames) = p.expect_close().await;
    assert_eq!(code, 4029, "{frames:?}");
    // Another connection has its own bucket.
    let mut q = server.client().await;
    assert_eq!(q.publish("r/x", json!(1)).await["op"], "ok");
}

#[tokio::test]
async fn connections_per_address_are_capped_with_429() {
    let mut c = config();
    c.limits.max_connections_per_ip = 3;
    let server = TestServer::with_config(c).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let r = server.client().await;
        open.push(r);
    }
    assert_eq!(upgrade_status(&server.ws_url()).await, 429);
    // A slot comes back when a connection ends.
    drop(open.pop());
    let mut ok = false;
    for _ in 0..50 {
        if upgrade_status(&server.ws_url()).await == 101 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "no slot came back");
}

#[tokio::test]
async fn global_connection_cap_answers_503() {
    let mut c = config();
    c.limits.max_connections = 2;
    let server = TestServer::with_config(c).await;
    let _a = server.client().await;
    let _b = server.client().await;
    assert_eq!(upgrade_status(&server.ws_url()).await, 503);
}

/// Reads until the server closes the connection; false if it is still open after `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {} // e.g. a 408 response before the close
        }
    }
}

#[tokio::test]
async fn handshake_timeout_drops_silent_and_slow_clients() {
    let mut c = config();
    c.limits.handshake_timeout = Duration::from_millis(300);
    let server = TestServer::with_config(c).await;
    let started = std::time::Instant::now();
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let drip = async {
        for _ in 0..20 {
            if slow.write_all(b"X").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        closed_within(&mut slow, Duration::from_secs(3)).await
    };
    let (silent_closed, slow_closed) =
        tokio::join!(closed_within(&mut silent, Duration::from_secs(3)), drip);
    assert!(silent_closed, "a silent connection was kept");
    assert!(slow_closed, "a slow handshake was kept");
    assert!(started.elapsed() < Duration::from_secs(3));
    // A prompt client is served, and its WebSocket outlives the handshake timeout.
    let mut ok = server.client().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ok.publish("x", json!(1)).await["op"], "ok");
}

#[test]
fn limits_and_auth_load_from_the_config_file() {
    let c = herald::Config::from_toml_str(
        "[limits]\nmax_connections_per_ip = 2\npublish_rate = 3\nhandshake_timeout = \"2s\"\n\
         [auth]\nhs256_secret = \"s\"\n[auth.anonymous]\nsubscribe = [\"public/**\"]\n",
    )
    .unwrap();
    assert_eq!(c.limits.max_connections_per_ip, 2);
    assert_eq!(c.limits.publish_rate, 3);
    assert_eq!(c.limits.handshake_timeout, Duration::from_secs(2));
    assert_eq!(c.auth.unwrap().anonymous.subscribe, vec!["public/**"]);
    let e = herald::Config::from_toml_str("[limits]\nhandshake_timeout = \"1ms\"\n").unwrap_err();
    assert!(e.to_string().contains("handshake_timeout"), "{e}");
}

#[test]
fn non_loopback_listen_without_auth_warns_loudly() {
    let open = Binary::spawn(&["--listen", "0.0.0.0:0"]);
    let log = open.log.lock().unwrap().join("\n");
    assert!(log.contains("SECURITY WARNING"), "{log}");
    drop(open);
    let local = Binary::spawn(&["--listen", "127.0.0.1:0"]);
    let log = local.log.lock().unwrap().join("\n");
    assert!(!log.contains("SECURITY WARNING"), "{log}");
}

/// Waits until the server counts `n` open connections; panics if it does not within 2 s.
async fn await_connections(server: &TestServer, n: u64) {
    let mut seen = serde_json::Value::Null;
    for _ in 0..200 {
        let s: serde_json::Value = common::get_json(server.http("/v1/stats")).await;
        if s["connections"] == n {
            return;
        }
        seen = s["connections"].clone();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the server still counts {seen} connections, expected {n}");
}

#[tokio::test]
async fn refused_upgrade_leaves_no_slot_behind() {
    // Over the global cap (503): the refused upgrade takes no connection slot and no address
    // slot; when the one connection ends, the next upgrade gets in.
    let mut c = config();
    c.limits.max_connections = 1;
    c.limits.max_connections_per_ip = 1;
    let server = TestServer::with_config(c).await;
    for _ in 0..5 {
        let mut r: Raw = server.connect().await;
        r.hello().await;
        assert_eq!(upgrade_status(&server.ws_url()).await, 503);
        await_connections(&server, 1).await;
        drop(r);
        await_connections(&server, 0).await;
    }
}

#[tokio::test]
async fn refused_upgrade_per_address_leaves_no_slot_behind() {
    // Over the per-address cap (429) with room under the global cap: a refusal that kept a
    // global slot would turn the next refusals into 503, and one that kept the address's
    // slot would refuse the connection after.
    let mut c = config();
    c.limits.max_connections = 2;
    c.limits.max_connections_per_ip = 1;
    let server = TestServer::with_config(c).await;
    for _ in 0..3 {
        let mut r: Raw = server.connect().await;
        r.hello().await;
        for _ in 0..5 {
            assert_eq!(upgrade_status(&server.ws_url()).await, 429);
        }
        await_connections(&server, 1).await;
        drop(r);
        await_connections(&server, 0).await;
    }
}

/// The (soft, hard) limit on open files of a process, from `/proc/PID/limits`.
fn open_files_limit(pid: &str) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files");
    let mut n = line["Max open files".len()..]
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(u64::MAX));
    (n.next().unwrap(), n.next().unwrap())
}

#[test]
fn the_binary_raises_its_open_files_limit_to_the_hard_limit() {
    let (_, hard) = open_files_limit("self");
    assert!(hard > 256, "hard limit {hard}");
    // Started with a soft limit of 256, as a shell with `ulimit -Sn 256` would.
    let mut child = std::process::Command::new("sh")
        .args([
            "-c",
            "ulimit -S -n 256 && exec \"$0\" --listen 127.0.0.1:0 2>&1",
            env!("CARGO_BIN_EXE_herald"),
        ])
        .env("RUST_LOG", "info")
        .env_remove("HERALD_LISTEN")
        .env_remove("HERALD_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut log = Vec::new();
    for line in std::io::BufRead::lines(out).map_while(Result::ok) {
        let listening = line.contains("listening on http://");
        log.push(line);
        if listening {
            break;
        }
    }
    let limits = open_files_limit(&child.id().to_string());
    let _ = child.kill();
    let _ = child.wait();
    let log = log.join("\n");
    let expected = hard.min(1 << 20);
    assert_eq!(limits, (expected, hard), "{log}");
    assert!(
        log.contains(&format!(
            "raised the open files limit from 256 to {expected}"
        )),
        "{log}"
    );
}
