//! The WebSocket protocol's handshake, errors and close codes (PROTOCOL.md §2, §3, §6).

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn hello_welcome_and_ping() {
    let srv = TestServer::start().await;
    let mut c = srv.connect().await;
    let w = c.hello().await;
    assert_eq!(w["resumed"], false);
    assert!(w["session"].as_str().unwrap().starts_with("s_"));
    assert_eq!(w["heartbeat_ms"], 25_000);
    assert_eq!(w["max_frame"], 65_536);
    c.send(json!({"op": "ping", "id": 5})).await;
    assert_eq!(c.recv().await, json!({"op": "pong", "id": 5}));
    // A second hello on the same connection is refused, the connection stays.
    c.send(json!({"op": "hello"})).await;
    assert_eq!(c.recv_op("error").await["code"], "bad_request");
    c.send(json!({"op": "ping"})).await;
    assert_eq!(c.recv().await["op"], "pong");
}

/// Without `hello`, the first frame opens a fresh session: `welcome` comes first.
#[tokio::test]
async fn implicit_hello() {
    let srv = TestServer::start().await;
    let mut c = srv.connect().await;
    c.send(json!({"op": "sub", "id": 1, "pattern": "a/*"}))
        .await;
    let w = c.recv().await;
    assert_eq!(w["op"], "welcome");
    assert_eq!(w["resumed"], false);
    assert_eq!(
        c.recv().await,
        json!({"op": "ok", "id": 1, "pattern": "a/*"})
    );
    // An unknown session id gives a fresh session, not an error.
    let mut d = srv.connect().await;
    d.send(json!({"op": "hello", "session": "s_nope", "last_seq": 3}))
        .await;
    let w = d.recv().await;
    assert_eq!(w["resumed"], false);
    assert_ne!(w["session"], "s_nope");
}

#[tokio::test]
async fn every_error_code_reachable_so_far() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;

    c.send_text("{not json").await;
    assert_eq!(c.recv().await["code"], "bad_json");

    c.ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(c.recv().await["code"], "bad_frame");

    c.send_text("[1,2,3]").await;
    assert_eq!(c.recv().await["code"], "bad_frame");

    c.send(json!({"topic": "a"})).await;
    assert_eq!(c.recv().await["code"], "bad_frame");

    let e = c.request(json!({"op": "teleport"})).await;
    assert_eq!(
        (e["op"].clone(), e["code"].clone()),
        (json!("error"), json!("unknown_op"))
    );
    assert!(e["message"].as_str().unwrap().contains("teleport"));

    let e = c
        .request(json!({"op": "pub", "topic": "chat//x", "data": 1}))
        .await;
    assert_eq!(e["code"], "bad_topic");
    assert!(e["message"].as_str().unwrap().contains("chat//x"), "{e}");

    let e = c
        .request(json!({"op": "pub", "topic": "chat/*", "data": 1}))
        .await;
    assert_eq!(e["code"], "bad_topic");

    let e = c.request(json!({"op": "sub", "pattern": "a/[b"})).await;
    assert_eq!(e["code"], "bad_pattern");
    let e = c.request(json!({"op": "sub", "pattern": "a/b**"})).await;
    assert_eq!(e["code"], "bad_pattern");
    let e = c.request(json!({"op": "sub", "pattern": ""})).await;
    assert_eq!(e["code"], "bad_pattern");

    let e = c.request(json!({"op": "pub", "topic": "a"})).await;
    assert_eq!(e["code"], "bad_request");
    assert!(e["message"].as_str().unwrap().contains("data"));

    let e = c
        .request(json!({"op": "pub", "topic": "$sys/x", "data": 1}))
        .await;
    assert_eq!(e["code"], "forbidden");

    // After all that the connection still works.
    c.sub("ok/now").await;
    let mut p = srv.connect().await;
    p.publish("ok/now", json!("fine")).await;
    assert_eq!(c.recv_op("msg").await["data"], "fine");
}

#[tokio::test]
async fn frame_over_max_frame_closes_1009() {
    let mut cfg = config();
    cfg.max_frame = 1024;
    let srv = TestServer::with_config(cfg).await;
    let mut c = srv.connect().await;
    let w = c.hello().await;
    assert_eq!(w["max_frame"], 1024);
    let big = "x".repeat(2000);
    c.send(json!({"op": "pub", "topic": "a", "data": big}))
        .await;
    let (code, _) = c.expect_close().await;
    assert_eq!(code, 1009);
    // The server is fine.
    srv.client().await;
}

/// The server pings, and a client that sends nothing for two heartbeats is closed. The
/// client reads everything (so its WebSocket library answers every ping) but a proxy drops
/// all it sends after `hello`: the server must see silence, and its pings must still arrive.
/// The upper bound is a liveness check (the close comes at all), not a timing target.
#[tokio::test]
async fn silent_client_is_closed_after_two_heartbeats() {
    use futures_util::StreamExt;
    const HEARTBEAT: Duration = Duration::from_millis(200);
    let mut cfg = config();
    cfg.heartbeat = HEARTBEAT;
    let srv = TestServer::with_config(cfg).await;
    let proxy = Proxy::start(srv.addr).await;
    let mut c = Raw::connect(&proxy.ws_url()).await;
    let started = std::time::Instant::now();
    let w = c.hello().await;
    assert_eq!(w["heartbeat_ms"], 200);
    proxy.up(Flow::Discard);
    let mut pings = 0;
    let limit = tokio::time::Instant::from_std(started) + HEARTBEAT * 10;
    let code = loop {
        let m = tokio::time::timeout_at(limit, c.ws.next())
            .await
            .unwrap_or_else(|_| panic!("no close within 10 heartbeats ({pings} pings)"));
        match m {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(Message::Close(f))) => break f.map(|f| u16::from(f.code)),
            Some(Ok(other)) => panic!("unexpected frame {other:?}"),
            Some(Err(e)) => panic!("socket error before the close: {e}"),
            None => panic!("socket ended without a close frame"),
        }
    };
    let elapsed = started.elapsed();
    assert_eq!(code, Some(1000));
    assert!(pings >= 1, "the server sent no ping before giving up");
    assert!(
        elapsed >= HEARTBEAT * 2,
        "closed after {elapsed:?}, before two heartbeats"
    );
    assert!(elapsed < HEARTBEAT * 10, "closed only after {elapsed:?}");
}

#[tokio::test]
async fn non_websocket_request_to_ws_is_an_http_error() {
    let srv = TestServer::start().await;
    let r = http().get(srv.http("/ws")).send().await.unwrap();
    assert_eq!(r.status(), 426);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
}

#[tokio::test]
async fn subprotocol_is_accepted() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let srv = TestServer::start().await;
    let mut req = srv.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "herald.v1".parse().unwrap());
    let (_ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "herald.v1");
}
