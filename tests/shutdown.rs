//! The real binary: start, listen line, graceful shutdown on SIGTERM and SIGINT.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

async fn bye_on(sig: &str) {
    let mut bin = Binary::spawn(&["--listen", "127.0.0.1:0"]);
    let mut a = Raw::connect(&bin.ws_url()).await;
    let mut b = Raw::connect(&bin.ws_url()).await;
    a.hello().await;
    b.hello().await;
    a.sub("x").await;
    bin.signal(sig);
    for c in [&mut a, &mut b] {
        let (code, frames) = c.expect_close().await;
        assert_eq!(code, 1001);
        let bye = frames.last().expect("bye before close");
        assert_eq!(bye["op"], "bye");
        assert_eq!(bye["reason"], "shutdown");
        assert!(bye["retry_ms"].as_u64().is_some());
    }
    let status = tokio::task::spawn_blocking(move || bin.wait(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(status, Some(0), "clean exit");
}

#[tokio::test]
async fn sigterm_sends_bye_and_exits() {
    bye_on("TERM").await;
}

#[tokio::test]
async fn sigint_sends_bye_and_exits() {
    bye_on("INT").await;
}

#[tokio::test]
async fn serve_subcommand_and_env_listen() {
    let bin = Binary::spawn_env(&["serve"], &[("HERALD_LISTEN", "127.0.0.1:0")]);
    assert_eq!(bin.addr.ip().to_string(), "127.0.0.1");
    let mut c = Raw::connect(&bin.ws_url()).await;
    c.hello().await;
    c.send(json!({"op": "ping"})).await;
    assert_eq!(c.recv().await["op"], "pong");
}

#[tokio::test]
async fn json_logs() {
    let bin = Binary::spawn(&["--listen", "127.0.0.1:0", "--log-format", "json"]);
    let log = bin.log.lock().unwrap().clone();
    let line = log.iter().find(|l| l.contains("listening on")).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
    assert_eq!(v["level"], "INFO");
}

#[test]
fn bad_config_is_refused_with_line() {
    let dir = std::env::temp_dir().join(format!("herald-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:0\"\n[session]\nbuffer_msgs = 3\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("buffer_msgs") && err.contains("line 3"),
        "{err}"
    );
}

/// Shutdown drains: messages published before it are all written, then `bye`, then the
/// close; and the server stops accepting connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_buffered_messages_before_bye() {
    const N: u64 = 3000;
    let mut cfg = config();
    cfg.session.buffer_messages = N as usize;
    let srv = TestServer::with_config(cfg).await;
    let addr = srv.addr;
    let mut c = srv.client().await;
    c.sub("drain").await;
    let pad = "x".repeat(200);
    for i in 1..=N {
        srv.bus
            .publish_json("drain", &json!({"n": i, "pad": pad}))
            .unwrap();
    }
    let stopping = tokio::spawn(srv.stop());
    let (code, frames) = c.expect_close().await;
    assert_eq!(code, 1001);
    let seqs: Vec<u64> = frames
        .iter()
        .filter(|f| f["op"] == "msg")
        .map(|f| f["seq"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=N).collect();
    assert!(
        seqs == expected,
        "every buffered message, in order: got {} messages, first wrong at index {:?}",
        seqs.len(),
        seqs.iter().zip(&expected).position(|(a, b)| a != b)
    );
    assert_eq!(frames.last().unwrap()["op"], "bye");
    stopping.await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}
