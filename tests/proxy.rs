//! The proxies (`[proxy]`, PROTOCOL.md §10) against a real HTTP backend started by each test:
//! connect, subscribe, publish (WebSocket and HTTP) and rpc, each allowed, denied and
//! rewritten, and the backend slow, refusing, failing or answering garbage.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::{Raw, TestServer, config};
use herald::config::{AuthConfig, ProxyConfig, ProxyRoute};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// What the test backend answers, per endpoint: a function of the request body.
type Rule = Arc<dyn Fn(&Value) -> Answer + Send + Sync>;

#[derive(Clone)]
enum Answer {
    Json(Value),
    /// Waits, then answers.
    Slow(Duration, Value),
    Status(u16),
    Garbage,
}

#[derive(Clone, Default)]
struct Backend {
    rules: Arc<Mutex<Vec<(String, Rule)>>>,
    /// Every request: (path, body, headers).
    seen: Arc<Mutex<Vec<(String, Value, HeaderMap)>>>,
}

impl Backend {
    fn on(&self, path: &str, rule: impl Fn(&Value) -> Answer + Send + Sync + 'static) {
        let mut rules = self.rules.lock();
        rules.retain(|(p, _)| p != path);
        rules.push((path.to_owned(), Arc::new(rule)));
    }

    fn seen(&self, path: &str) -> Vec<Value> {
        self.seen
            .lock()
            .iter()
            .filter(|(p, ..)| p == path)
            .map(|(_, b, _)| b.clone())
            .collect()
    }

    async fn start(&self) -> SocketAddr {
        async fn handle(
            State(b): State<Backend>,
            uri: axum::http::Uri,
            headers: HeaderMap,
            body: axum::body::Bytes,
        ) -> Response {
            let path = uri.path().to_owned();
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            b.seen.lock().push((path.clone(), v.clone(), headers));
            let rule = b
                .rules
                .lock()
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, r)| r.clone());
            let answer = rule.map_or(Answer::Status(404), |r| r(&v));
            match answer {
                Answer::Json(v) => Json(v).into_response(),
                Answer::Slow(d, v) => {
                    tokio::time::sleep(d).await;
                    Json(v).into_response()
                }
                Answer::Status(s) => StatusCode::from_u16(s).unwrap().into_response(),
                Answer::Garbage => "{not json".into_response(),
            }
        }
        let app = axum::Router::new()
            .route("/{*path}", post(handle))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }
}

fn allow() -> Answer {
    Answer::Json(json!({"allow": true}))
}

/// A server whose `[proxy]` points at `backend` for every kind: subscribe and publish
/// routes on `chat/**`.
async fn server(backend: SocketAddr, tweak: impl FnOnce(&mut herald::Config)) -> TestServer {
    let url = |p: &str| format!("http://{backend}/{p}");
    let mut c = config();
    c.proxy = Some(ProxyConfig {
        timeout: Duration::from_millis(500),
        connect: Some(url("connect")),
        rpc: Some(url("rpc")),
        subscribe: vec![ProxyRoute {
            pattern: "chat/**".into(),
            url: url("subscribe"),
            skip_api_keys: false,
        }],
        publish: vec![ProxyRoute {
            pattern: "chat/**".into(),
            url: url("publish"),
            skip_api_keys: true,
        }],
    });
    tweak(&mut c);
    TestServer::with_config(c).await
}

/// A connection with a cookie, welcomed (the connect proxy must allow it).
async fn welcomed(s: &TestServer) -> (Raw, String) {
    let mut req = s.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("cookie", "sid=abc123".parse().unwrap());
    req.headers_mut()
        .insert("authorization", "Bearer not-forwarded".parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut c = Raw { ws };
    c.send(json!({"op": "hello", "client": {"app": "test", "v": 2}}))
        .await;
    let w = c.recv().await;
    assert_eq!(w["op"], "welcome", "{w}");
    let sid = w["session"].as_str().unwrap().to_owned();
    (c, sid)
}

#[tokio::test]
async fn connect_gives_the_connection_its_user_and_permissions() {
    let b = Backend::default();
    b.on("/connect", |_| {
        Answer::Json(
            json!({"allow": true, "user": "bob", "info": {"name": "Bob"},
            "publish": ["chat/**"], "subscribe": ["chat/**"]}),
        )
    });
    b.on("/subscribe", |_| allow());
    b.on("/publish", |_| allow());
    let s = server(b.start().await, |_| {}).await;
    let (mut c, sid) = welcomed(&s).await;
    let asked = b.seen("/connect");
    assert_eq!(asked.len(), 1);
    let a = &asked[0];
    assert_eq!(a["session"], sid.as_str());
    assert_eq!(a["ip"], "127.0.0.1");
    assert_eq!(a["headers"]["cookie"], "sid=abc123");
    assert!(a["headers"].get("authorization").is_none(), "{a}");
    assert_eq!(a["token"], Value::Null);
    assert_eq!(a["client"], json!({"app": "test", "v": 2}));
    // The granted permissions hold, and the user is the backend's.
    c.sub("chat/room1").await;
    let r = c.request(json!({"op": "sub", "pattern": "news/x"})).await;
    assert_eq!(r["code"], "forbidden", "{r}");
    let r = c
        .request(json!({"op": "pub", "topic": "news/x", "data": 1}))
        .await;
    assert_eq!(r["code"], "forbidden", "{r}");
    let p = c
        .request(json!({"op": "presence", "topic": "chat/room1"}))
        .await;
    assert_eq!(p["clients"][0]["user"], "bob", "{p}");
    assert_eq!(p["clients"][0]["info"], json!({"name": "Bob"}));
}

#[tokio::test]
async fn connect_refused_closes_4003_or_4001() {
    let b = Backend::default();
    let s = server(b.start().await, |_| {}).await;
    for (code, close) in [
        ("forbidden", 4003),
        ("unauthorized", 4001),
        ("banned", 4003),
    ] {
        b.on("/connect", move |_| {
            Answer::Json(json!({"allow": false, "code": code, "message": "go away"}))
        });
        let mut c = s.connect().await;
        c.send(json!({"op": "hello"})).await;
        let e = c.recv().await;
        assert_eq!(e["op"], "error", "{e}");
        let want = if code == "banned" { "forbidden" } else { code };
        assert_eq!(e["code"], want, "{e}");
        assert_eq!(e["message"], "go away");
        assert_eq!(c.expect_close().await.0, close, "{code}");
    }
    // A first frame other than `hello` asks too (its implicit `hello`).
    let mut c = s.connect().await;
    c.send(json!({"op": "sub", "id": 1, "pattern": "a"})).await;
    assert_eq!(c.recv().await["op"], "error");
    assert_eq!(c.expect_close().await.0, 4003);
}

#[tokio::test]
async fn a_token_is_only_narrowed_by_the_connect_answer() {
    const SECRET: &str = "proxy-test-secret-of-some-length";
    let b = Backend::default();
    b.on("/connect", |_| {
        Answer::Json(json!({"allow": true, "user": "mallory",
            "subscribe": ["chat/**", "admin/**"], "expires_at": 4_000_000_000u64}))
    });
    b.on("/subscribe", |_| allow());
    let s = server(b.start().await, |c| {
        c.auth = Some(AuthConfig {
            hs256_secret: Some(SECRET.into()),
            ..Default::default()
        });
    })
    .await;
    let now = common::now_s();
    let claims = json!({"sub": "ann", "exp": now + 3600, "iat": now,
        "subscribe": ["chat/**", "news/**"], "publish": []});
    let token = common::hs256(SECRET, &claims);
    let mut c = s.connect().await;
    c.send(json!({"op": "hello", "token": token})).await;
    assert_eq!(c.recv().await["op"], "welcome");
    let asked = &b.seen("/connect")[0];
    assert_eq!(asked["token"]["sub"], "ann");
    assert_eq!(asked["token"]["subscribe"], json!(["chat/**", "news/**"]));
    c.sub("chat/x").await;
    for p in ["admin/x", "news/x"] {
        let r = c.request(json!({"op": "sub", "pattern": p})).await;
        assert_eq!(r["code"], "forbidden", "{p}: {r}");
    }
    let p = c
        .request(json!({"op": "presence", "topic": "chat/x"}))
        .await;
    assert_eq!(
        p["clients"][0]["user"], "ann",
        "the token's user stays: {p}"
    );
}

#[tokio::test]
async fn subscribe_is_asked_for_every_pattern_that_can_reach_a_route() {
    let b = Backend::default();
    b.on("/connect", |_| allow());
    b.on("/subscribe", |v| {
        if v["pattern"] == "chat/secret" {
            Answer::Json(json!({"allow": false, "code": "forbidden", "message": "members only"}))
        } else {
            allow()
        }
    });
    let s = server(b.start().await, |_| {}).await;
    let (mut c, sid) = welcomed(&s).await;
    c.sub("chat/room1").await;
    let r = c
        .request(json!({"op": "sub", "pattern": "chat/secret"}))
        .await;
    assert_eq!(
        (r["code"].as_str(), r["message"].as_str()),
        (Some("forbidden"), Some("members only"))
    );
    // `*/secret` and `**` could receive chat topics: asked too. `news/**` cannot: not asked.
    c.request(json!({"op": "sub", "pattern": "*/room2", "group": "g"}))
        .await;
    c.sub("news/**").await;
    let asked: Vec<(Value, Value)> = b
        .seen("/subscribe")
        .into_iter()
        .map(|v| (v["pattern"].clone(), v["group"].clone()))
        .collect();
    assert_eq!(
        asked,
        vec![
            (json!("chat/room1"), Value::Null),
            (json!("chat/secret"), Value::Null),
            (json!("*/room2"), json!("g")),
        ]
    );
    assert_eq!(b.seen("/subscribe")[0]["session"], sid.as_str());
    // Reading a refused topic's history or presence is refused the same way.
    for op in ["history", "presence"] {
        let r = c.request(json!({"op": op, "topic": "chat/secret"})).await;
        assert_eq!(r["message"], "members only", "{op}: {r}");
    }
    let r = c
        .request(json!({"op": "history", "topic": "chat/room1"}))
        .await;
    assert_eq!(r["op"], "ok", "{r}");
    // The refused subscription delivers nothing.
    s.bus.publish_json("chat/secret", &json!(1)).unwrap();
    s.bus.publish_json("chat/room1", &json!(2)).unwrap();
    assert_eq!(c.recv_op("msg").await["data"], 2);
}

#[tokio::test]
async fn publish_is_allowed_denied_or_rewritten_in_order() {
    let b = Backend::default();
    b.on("/connect", |_| allow());
    b.on("/publish", |v| match v["data"]["text"].as_str() {
        Some("spam") => {
            Answer::Json(json!({"allow": false, "code": "forbidden", "message": "no spam"}))
        }
        // The first message is slow to check: later ones must still come after it.
        Some("first") => Answer::Slow(Duration::from_millis(200), json!({"allow": true})),
        Some(t) if t.contains("darn") => Answer::Json(
            json!({"allow": true, "data": {"text": t.replace("darn", "****"), "checked": true}}),
        ),
        _ => allow(),
    });
    b.on("/subscribe", |_| allow());
    let s = server(b.start().await, |_| {}).await;
    let mut sub = s.client().await;
    sub.sub("chat/**").await;
    let (mut c, sid) = welcomed(&s).await;
    for (i, text) in ["first", "second", "spam", "oh darn"].iter().enumerate() {
        c.send(json!({"op": "pub", "id": i, "topic": "chat/x", "data": {"text": text}, "msg_id": format!("m{i}")}))
            .await;
    }
    let mut answers = Vec::new();
    while answers.len() < 4 {
        let f = c.recv().await;
        answers.push((f["id"].clone(), f["op"].clone()));
    }
    assert_eq!(
        answers,
        vec![
            (json!(0), json!("ok")),
            (json!(1), json!("ok")),
            (json!(2), json!("error")),
            (json!(3), json!("ok"))
        ]
    );
    let mut texts = Vec::new();
    for _ in 0..3 {
        texts.push(sub.recv_op("msg").await["data"].clone());
    }
    assert_eq!(
        texts,
        vec![
            json!({"text": "first"}),
            json!({"text": "second"}),
            json!({"text": "oh ****", "checked": true}),
        ]
    );
    let asked = b.seen("/publish");
    assert_eq!(asked[0]["session"], sid.as_str());
    assert_eq!(asked[0]["topic"], "chat/x");
    assert_eq!(asked[0]["msg_id"], "m0");
    // Topics no route covers are not asked.
    c.publish("news/x", json!(1)).await;
    assert_eq!(b.seen("/publish").len(), 4);
}

#[tokio::test]
async fn http_publishes_are_asked_unless_made_with_an_api_key_on_a_skipping_route() {
    let b = Backend::default();
    b.on("/publish", |_| {
        Answer::Json(json!({"allow": true, "data": "rewritten"}))
    });
    b.on("/subscribe", |_| allow());
    let s = server(b.start().await, |c| {
        c.auth = Some(AuthConfig {
            api_keys: vec!["api".into()],
            hs256_secret: Some("x".repeat(32)),
            ..Default::default()
        });
        c.proxy.as_mut().unwrap().connect = None;
    })
    .await;
    // With an API key on a `skip_api_keys` route: not asked, published as sent.
    let r = common::http()
        .post(s.http("/v1/publish"))
        .bearer_auth("api")
        .json(&json!({"topic": "chat/x", "data": "as sent"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(b.seen("/publish").is_empty());
    // The same route without skipping: asked, and rewritten.
    let s2 = server(b.start().await, |c| {
        c.proxy.as_mut().unwrap().connect = None;
        c.proxy.as_mut().unwrap().publish[0].skip_api_keys = false;
    })
    .await;
    let mut sub = s2.client().await;
    sub.sub("chat/**").await;
    let body = json!([{"topic": "chat/a", "data": 1}, {"topic": "news/b", "data": 2}]);
    let v: Value = common::post_json(s2.http("/v1/publish/batch"), &body).await;
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");
    assert_eq!(sub.recv_op("msg").await["data"], "rewritten");
    let asked = b.seen("/publish");
    assert_eq!(asked.len(), 1, "only the routed topic: {asked:?}");
    assert_eq!(asked[0]["session"], Value::Null);
    b.on("/publish", |_| {
        Answer::Json(json!({"allow": false, "code": "rate_limited", "message": "slow down"}))
    });
    let r = common::http()
        .post(s2.http("/v1/publish"))
        .json(&json!({"topic": "chat/x", "data": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["message"], "slow down");
}

/// Sends an `rpc` (fields of `v`) and returns its `reply` or `error`.
async fn rpc(c: &mut Raw, mut v: Value) -> Value {
    v["op"] = json!("rpc");
    v["id"] = json!("rpc-1");
    c.send(v).await;
    loop {
        let f = c.recv().await;
        if f["id"] == "rpc-1" {
            return f;
        }
    }
}

#[tokio::test]
async fn rpc_answers_replies_and_errors() {
    let b = Backend::default();
    b.on("/connect", |_| {
        Answer::Json(json!({"allow": true, "user": "carol"}))
    });
    b.on("/rpc", |v| match v["method"].as_str() {
        Some("add") => Answer::Json(
            json!({"data": v["data"]["a"].as_i64().unwrap() + v["data"]["b"].as_i64().unwrap()}),
        ),
        Some("fail") => {
            Answer::Json(json!({"error": {"code": "not_found", "message": "no such room"}}))
        }
        _ => Answer::Json(json!({"error": {"message": "unknown method"}})),
    });
    let s = server(b.start().await, |_| {}).await;
    let (mut c, sid) = welcomed(&s).await;
    c.send(json!({"op": "rpc", "id": "r", "method": "add", "data": {"a": 2, "b": 3}}))
        .await;
    let r = c.recv().await;
    eprintln!("DEBUG {r}");
    assert_eq!(
        (r["op"].as_str(), &r["data"]),
        (Some("reply"), &json!(5)),
        "{r}"
    );
    let asked = &b.seen("/rpc")[0];
    assert_eq!(
        (asked["session"].as_str(), asked["user"].as_str()),
        (Some(sid.as_str()), Some("carol"))
    );
    let r = rpc(&mut c, json!({"method": "fail", "data": null})).await;
    assert_eq!(
        (r["code"].as_str(), r["message"].as_str()),
        (Some("not_found"), Some("no such room"))
    );
    let r = rpc(&mut c, json!({"method": "other", "data": null})).await;
    assert_eq!(r["code"], "internal", "{r}");
    for bad in [
        json!({"op": "rpc", "method": "", "data": 1}),
        json!({"op": "rpc", "data": 1}),
    ] {
        let r = c.request(bad).await;
        assert_eq!(r["code"], "bad_request", "{r}");
    }
    // Without `[proxy] rpc`: not_found.
    let s2 = server(b.start().await, |c| {
        let p = c.proxy.as_mut().unwrap();
        p.rpc = None;
        p.connect = None;
    })
    .await;
    let mut c2 = s2.client().await;
    let r = rpc(&mut c2, json!({"method": "add", "data": {}})).await;
    assert_eq!(r["code"], "not_found", "{r}");
}

#[tokio::test]
async fn a_failing_backend_refuses_with_unavailable_and_never_hangs() {
    let b = Backend::default();
    b.on("/connect", |_| allow());
    let s = server(b.start().await, |_| {}).await;
    let (mut c, _) = welcomed(&s).await;
    let cases = [
        Answer::Slow(Duration::from_secs(3), json!({"allow": true})),
        Answer::Status(500),
        Answer::Status(404),
        Answer::Garbage,
        Answer::Json(json!({"no": "verdict"})),
    ];
    for case in cases {
        let shown = match &case {
            Answer::Slow(..) => "slow",
            Answer::Status(_) => "status",
            Answer::Garbage => "garbage",
            Answer::Json(_) => "no verdict",
        };
        let answer = case.clone();
        b.on("/publish", move |_| answer.clone());
        let started = Instant::now();
        let r = c
            .request(json!({"op": "pub", "topic": "chat/x", "data": 1}))
            .await;
        assert_eq!(r["code"], "unavailable", "{shown}: {r}");
        // Within the timeout (500 ms) and a margin: never the backend's 3 s.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{shown}: {:?}",
            started.elapsed()
        );
    }
    // Each failure is counted by its kind and outcome, and timed.
    let metrics = common::get_text(s.http("/metrics")).await;
    for line in [
        r#"herald_proxy_calls_total{kind="publish",outcome="timeout"} 1"#,
        r#"herald_proxy_calls_total{kind="publish",outcome="status_5xx"} 1"#,
        r#"herald_proxy_calls_total{kind="publish",outcome="status_other"} 1"#,
        r#"herald_proxy_calls_total{kind="publish",outcome="bad_json"} 2"#,
        r#"herald_proxy_calls_total{kind="connect",outcome="allowed"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    assert!(
        metrics.contains(r#"herald_proxy_call_seconds_count{kind="publish"} 5"#),
        "{metrics}"
    );
    // A backend that is not there at all (refused connections).
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let s2 = server(closed, |c| c.proxy.as_mut().unwrap().connect = None).await;
    let mut c2 = s2.client().await;
    let r = c2.request(json!({"op": "sub", "pattern": "chat/x"})).await;
    assert_eq!(r["code"], "unavailable", "{r}");
    // Connect refused the same way when the connect proxy is down.
    let s3 = server(closed, |_| {}).await;
    let mut c4 = s3.connect().await;
    c4.send(json!({"op": "hello"})).await;
    assert_eq!(c4.recv().await["code"], "unavailable");
    assert_eq!(c4.expect_close().await.0, 4003);
}

#[tokio::test]
async fn a_slow_backend_never_holds_up_delivery() {
    let b = Backend::default();
    b.on("/connect", |_| allow());
    b.on("/publish", |_| {
        Answer::Slow(Duration::from_millis(400), json!({"allow": true}))
    });
    let s = server(b.start().await, |_| {}).await;
    let (mut c, _) = welcomed(&s).await;
    c.sub("news/x").await;
    c.send(json!({"op": "pub", "id": "slow", "topic": "chat/x", "data": 1}))
        .await;
    // While its own publish waits for the backend, the connection still gets its messages,
    // and other connections publish and deliver as usual.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut other = s.client().await;
    other.publish("news/x", json!("meanwhile")).await;
    let first = c.recv().await;
    assert_eq!(
        (first["op"].as_str(), &first["data"]),
        (Some("msg"), &json!("meanwhile")),
        "{first}"
    );
    assert_eq!(c.recv().await["id"], "slow");
}
