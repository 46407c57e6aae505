//! The HTTP API (PROTOCOL.md §8) against a real server.

mod common;

use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn http_publish_reaches_socket_subscribers() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    c.sub("orders/**").await;
    let r = http()
        .post(srv.http("/v1/publish"))
        .json(&json!({"topic": "orders/eu/created", "data": {"id": 7}, "msg_id": "m-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ack: Value = r.json().await.unwrap();
    assert_eq!(ack["offset"], 1);
    assert_eq!(ack["duplicate"], false);
    assert!(ack["epoch"].is_string());
    let m = c.recv_op("msg").await;
    assert_eq!(m["topic"], "orders/eu/created");
    assert_eq!(m["data"], json!({"id": 7}));
    assert_eq!(m["msg_id"], "m-1");
    assert_eq!(m["epoch"], ack["epoch"]);
}

#[tokio::test]
async fn batch_publish_answers_each_item() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    c.sub("b/*").await;
    let r = http()
        .post(srv.http("/v1/publish/batch"))
        .json(&json!([
            {"topic": "b/1", "data": 1},
            {"topic": "b//bad", "data": 2},
            {"topic": "b/1", "data": 3},
            {"data": 4}
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let res: Vec<Value> = r.json().await.unwrap();
    assert_eq!(res.len(), 4);
    assert_eq!(res[0]["offset"], 1);
    assert_eq!(res[1]["error"]["code"], "bad_topic");
    assert_eq!(res[2]["offset"], 2);
    assert_eq!(res[3]["error"]["code"], "bad_request");
    assert_eq!(c.recv_op("msg").await["data"], 1);
    assert_eq!(c.recv_op("msg").await["data"], 3);

    let too_many: Vec<Value> = (0..1001)
        .map(|i| json!({"topic": "b/x", "data": i}))
        .collect();
    let r = http()
        .post(srv.http("/v1/publish/batch"))
        .json(&too_many)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_large");
}

#[tokio::test]
async fn http_errors_are_json() {
    let srv = TestServer::start().await;
    let post = |body: String| {
        http()
            .post(srv.http("/v1/publish"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let cases = [
        ("{oops".to_string(), 400, "bad_json"),
        (
            json!({"topic": "a/*", "data": 1}).to_string(),
            400,
            "bad_topic",
        ),
        (json!({"topic": "a"}).to_string(), 400, "bad_request"),
        (
            json!({"topic": "$sys/a", "data": 1}).to_string(),
            403,
            "forbidden",
        ),
        (
            format!(r#"{{"topic":"a","data":"{}"}}"#, "x".repeat(70_000)),
            413,
            "too_large",
        ),
    ];
    for (body, status, code) in cases {
        let r = post(body).await.unwrap();
        assert_eq!(r.status(), status);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(v["error"]["message"].is_string());
    }
    let r = http().get(srv.http("/v1/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "not_found");
}

#[tokio::test]
async fn topics_listing_and_health() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    c.sub("t/*").await;
    for t in ["t/a", "t/a", "t/b", "u/c"] {
        srv.bus.publish_json(t, &json!(0)).unwrap();
    }
    let all: Vec<Value> = common::get_json(srv.http("/v1/topics")).await;
    let names: Vec<&str> = all.iter().map(|r| r["topic"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["t/a", "t/b", "u/c"]);
    assert_eq!(all[0]["offset"], 2);
    assert_eq!(all[0]["subscribers"], 1);
    assert_eq!(all[2]["subscribers"], 0);
    let some: Vec<Value> = common::get_json(srv.http("/v1/topics?pattern=u/*")).await;
    assert_eq!(some.len(), 1);
    let bad = http()
        .get(srv.http("/v1/topics?pattern=a/["))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            http().get(srv.http(path)).send().await.unwrap().status(),
            200
        );
    }
    let stats: Value = common::get_json(srv.http("/v1/stats")).await;
    assert_eq!(stats["published"], 4);
    assert_eq!(stats["connections"], 1);
    assert_eq!(stats["subscriptions"], 1);
}

#[tokio::test]
async fn web_page_is_served() {
    let srv = TestServer::start().await;
    let r = http().get(srv.http("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let body = r.text().await.unwrap();
    assert!(body.contains("Herald"));
    assert!(body.contains("/ws"), "the page says how to connect");
}
