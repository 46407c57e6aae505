//! Sessions over Server-Sent Events (`GET /v1/events`, PROTOCOL.md §2) with a real HTTP
//! client: events and their ids, subscriptions changed by POST, resume by `Last-Event-ID`
//! with no loss or an exact gap, bad input, tokens, heartbeats and shutdown.

mod common;

use std::time::Duration;

use common::{TestServer, config, http};
use herald::config::AuthConfig;
use serde_json::{Value, json};

/// One SSE event: its id, name and data (JSON).
#[derive(Debug, Clone)]
struct Event {
    id: String,
    name: String,
    data: Value,
}

/// An open event stream, read event by event.
struct Stream {
    resp: reqwest::Response,
    buf: String,
    /// Comment lines seen (heartbeats).
    comments: usize,
}

impl Stream {
    async fn open(s: &TestServer, query: &str, last_event_id: Option<&str>) -> Stream {
        let mut req = http().get(s.http(&format!("/v1/events{query}")));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200, "{query}");
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Stream {
            resp,
            buf: String::new(),
            comments: 0,
        }
    }

    /// The next event, within 10 s.
    async fn next(&mut self) -> Event {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(end) = self.buf.find("\n\n") {
                    let block: String = self.buf.drain(..end + 2).collect();
                    let mut e = Event {
                        id: String::new(),
                        name: String::new(),
                        data: Value::Null,
                    };
                    let mut any = false;
                    for line in block.lines() {
                        if line.starts_with(':') {
                            self.comments += 1;
                        } else if let Some(v) = line.strip_prefix("id: ") {
                            e.id = v.to_owned();
                        } else if let Some(v) = line.strip_prefix("event: ") {
                            e.name = v.to_owned();
                            any = true;
                        } else if let Some(v) = line.strip_prefix("data: ") {
                            e.data = serde_json::from_str(v).unwrap();
                        }
                    }
                    if any {
                        return e;
                    }
                    continue;
                }
                match self.resp.chunk().await.unwrap() {
                    Some(c) => self.buf.push_str(std::str::from_utf8(&c).unwrap()),
                    None => panic!("stream ended; left: {:?}", self.buf),
                }
            }
        })
        .await
        .expect("an event within 10 s")
    }

    /// The next event named `name` (others are skipped).
    async fn next_named(&mut self, name: &str) -> Event {
        loop {
            let e = self.next().await;
            if e.name == name {
                return e;
            }
        }
    }

    /// Reads until the server ends the stream; the events on the way.
    async fn until_end(&mut self) -> Vec<String> {
        let mut names = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(c) = self.resp.chunk().await.unwrap() {
                self.buf.push_str(std::str::from_utf8(&c).unwrap());
            }
        })
        .await
        .expect("the stream ends");
        for block in self.buf.split("\n\n") {
            if let Some(n) = block.lines().find_map(|l| l.strip_prefix("event: ")) {
                names.push(n.to_owned());
            }
        }
        names
    }
}

async fn post(s: &TestServer, path: &str, body: Value) -> (u16, Value) {
    let r = http().post(s.http(path)).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn a_stream_is_a_session() {
    let s = TestServer::start().await;
    let mut st = Stream::open(&s, "?pattern=news/**&pattern=alerts/x", None).await;
    let w = st.next().await;
    assert_eq!(w.name, "welcome");
    assert_eq!(w.data["resumed"], false);
    let sid = w.data["session"].as_str().unwrap().to_owned();
    assert_eq!(w.id, format!("{sid}:0"));
    s.bus.publish_json("news/a", &json!({"n": 1})).unwrap();
    s.bus.publish_json("alerts/x", &json!({"n": 2})).unwrap();
    s.bus.publish_json("other/y", &json!({"n": 0})).unwrap();
    let m = st.next().await;
    assert_eq!((m.name.as_str(), m.id.clone()), ("msg", format!("{sid}:1")));
    assert_eq!(
        (m.data["topic"].as_str(), &m.data["data"]),
        (Some("news/a"), &json!({"n": 1}))
    );
    assert_eq!(st.next().await.data["seq"], 2);
    // Subscriptions change by POST; the answer is the `ok` the frame would get.
    let (code, ok) = post(
        &s,
        &format!("/v1/events/{sid}/sub"),
        json!({"pattern": "chat/r"}),
    )
    .await;
    assert_eq!((code, ok), (200, json!({"pattern": "chat/r"})));
    let (code, _) = post(
        &s,
        &format!("/v1/events/{sid}/unsub"),
        json!({"pattern": "news/**"}),
    )
    .await;
    assert_eq!(code, 200);
    s.bus.publish_json("news/b", &json!("gone")).unwrap();
    s.bus.publish_json("chat/r", &json!("here")).unwrap();
    let m = st.next().await;
    assert_eq!(
        (m.data["topic"].as_str(), m.id),
        (Some("chat/r"), format!("{sid}:3"))
    );
}

#[tokio::test]
async fn last_event_id_resumes_without_loss_or_with_an_exact_gap() {
    let mut cfg = config();
    cfg.session.buffer_messages = 8;
    let s = TestServer::with_config(cfg).await;
    let mut st = Stream::open(&s, "?pattern=t", None).await;
    let sid = st.next().await.data["session"].as_str().unwrap().to_owned();
    s.bus.publish_json("t", &json!(1)).unwrap();
    let first = st.next().await;
    assert_eq!(first.id, format!("{sid}:1"));
    // The client goes away; messages come meanwhile; it comes back with its last id.
    drop(st);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in 2..=4 {
        s.bus.publish_json("t", &json!(n)).unwrap();
    }
    let mut st = Stream::open(&s, "", Some(&first.id)).await;
    let w = st.next().await;
    assert_eq!(
        (w.name.as_str(), &w.data["resumed"]),
        ("welcome", &json!(true))
    );
    for n in 2..=4 {
        let m = st.next().await;
        assert_eq!(
            (m.data["data"].clone(), m.id),
            (json!(n), format!("{sid}:{n}"))
        );
    }
    // A resume with the URL's patterns again does not undo an `unsub` made meanwhile.
    let (code, _) = post(
        &s,
        &format!("/v1/events/{sid}/unsub"),
        json!({"pattern": "t"}),
    )
    .await;
    assert_eq!(code, 200);
    let again = format!("{sid}:4");
    drop(st);
    let mut st = Stream::open(&s, "?pattern=t", Some(&again)).await;
    assert_eq!(st.next().await.data["resumed"], true);
    let rows: Value = http()
        .get(s.http("/v1/sessions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["session"] == sid.as_str())
        .unwrap();
    assert_eq!(row["subscriptions"], json!([]), "{rows}");
    let (code, _) = post(
        &s,
        &format!("/v1/events/{sid}/sub"),
        json!({"pattern": "t"}),
    )
    .await;
    assert_eq!(code, 200);
    // Away longer than the buffer holds: an exact gap, then what was kept.
    let last = format!("{sid}:4");
    drop(st);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in 5..=20 {
        s.bus.publish_json("t", &json!(n)).unwrap();
    }
    let mut st = Stream::open(&s, "", Some(&last)).await;
    assert_eq!(st.next().await.data["resumed"], true);
    let gap = st.next().await;
    assert_eq!(gap.name, "gap");
    assert_eq!(
        (gap.data["from_seq"].clone(), gap.data["to_seq"].clone()),
        (json!(5), json!(12))
    );
    assert_eq!(
        gap.id,
        format!("{sid}:12"),
        "a reconnect after the gap resumes past it"
    );
    let m = st.next().await;
    assert_eq!(m.data["data"], 13);
}

#[tokio::test]
async fn a_bad_last_event_id_gets_a_new_session() {
    let s = TestServer::start().await;
    for bad in ["nonsense", "s_unknown:3", "s_x:notanumber", ""] {
        let mut st = Stream::open(&s, "?pattern=a", Some(bad)).await;
        let w = st.next().await;
        assert_eq!(
            (w.name.as_str(), &w.data["resumed"]),
            ("welcome", &json!(false)),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn bad_input_gets_a_clear_error() {
    let s = TestServer::start().await;
    for (query, status, code) in [
        ("?pattern=a//b", 400, "bad_pattern"),
        ("?pattern=", 400, "bad_pattern"),
    ] {
        let r = http()
            .get(s.http(&format!("/v1/events{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{query}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{query}: {v}");
    }
    let mut st = Stream::open(&s, "", None).await;
    let sid = st.next().await.data["session"].as_str().unwrap().to_owned();
    let sub = format!("/v1/events/{sid}/sub");
    for (path, body, status, code) in [
        (sub.as_str(), json!({"pattern": "a//b"}), 400, "bad_pattern"),
        (sub.as_str(), json!({}), 400, "bad_request"),
        (
            sub.as_str(),
            json!({"pattern": "a", "op": "unsub"}),
            400,
            "bad_request",
        ),
        (sub.as_str(), json!([1]), 400, "bad_request"),
        (
            sub.as_str(),
            json!({"pattern": "a", "ack": "manual"}),
            400,
            "bad_request",
        ),
        (
            "/v1/events/s_nope/sub",
            json!({"pattern": "a"}),
            404,
            "not_found",
        ),
        (
            "/v1/events/s_nope/unsub",
            json!({"pattern": "a"}),
            404,
            "not_found",
        ),
    ] {
        let (st, v) = post(&s, path, body.clone()).await;
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{path} {body}: {v}"
        );
    }
    let r = http()
        .post(s.http(&sub))
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // The stream is unharmed.
    s.bus.publish_json("a", &json!(1)).unwrap();
    let (code, _) = post(&s, &sub, json!({"pattern": "b"})).await;
    assert_eq!(code, 200);
    s.bus.publish_json("b", &json!(2)).unwrap();
    assert_eq!(st.next_named("msg").await.data["data"], 2);
}

#[tokio::test]
async fn tokens_and_users() {
    const SECRET: &str = "sse-test-secret-of-some-length";
    let token = |sub: &str, subscribe: &[&str]| {
        let claims = json!({"sub": sub, "exp": common::now_s() + 600, "subscribe": subscribe, "publish": []});
        common::hs256(SECRET, &claims)
    };
    let mut cfg = config();
    cfg.auth = Some(AuthConfig {
        hs256_secret: Some(SECRET.into()),
        ..Default::default()
    });
    let s = TestServer::with_config(cfg).await;
    let ann = token("ann", &["ann/**"]);
    let r = http()
        .get(s.http("/v1/events?token=bad.token.here"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http()
        .get(s.http(&format!("/v1/events?token={ann}&pattern=bob/x")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let mut st = Stream::open(&s, &format!("?token={ann}&pattern=ann/inbox"), None).await;
    let w = st.next().await;
    let sid = w.data["session"].as_str().unwrap().to_owned();
    // Another user can neither change the session nor resume it.
    let bob = token("bob", &["**"]);
    let r = http()
        .post(s.http(&format!("/v1/events/{sid}/sub")))
        .bearer_auth(&bob)
        .json(&json!({"pattern": "ann/inbox"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http()
        .post(s.http(&format!("/v1/events/{sid}/sub")))
        .bearer_auth(&ann)
        .json(&json!({"pattern": "bob/x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let mut other = Stream::open(&s, &format!("?token={bob}"), Some(&format!("{sid}:0"))).await;
    assert_eq!(other.next().await.data["resumed"], false);
    s.bus.publish_json("ann/inbox", &json!("for ann")).unwrap();
    assert_eq!(st.next().await.data["data"], "for ann");
}

#[tokio::test]
async fn heartbeats_and_shutdown() {
    let mut cfg = config();
    cfg.heartbeat = Duration::from_millis(200);
    let s = TestServer::with_config(cfg).await;
    let mut st = Stream::open(&s, "?pattern=t", None).await;
    st.next().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    s.bus.publish_json("t", &json!(1)).unwrap();
    st.next_named("msg").await;
    assert!(st.comments >= 2, "heartbeats: {}", st.comments);
    s.bus.publish_json("t", &json!(2)).unwrap();
    s.handle.shutdown();
    let names = st.until_end().await;
    assert_eq!(names.last().map(String::as_str), Some("bye"), "{names:?}");
}

#[tokio::test]
async fn a_stream_counts_as_a_connection() {
    let mut cfg = config();
    cfg.limits.max_connections = 1;
    let s = TestServer::with_config(cfg).await;
    let mut st = Stream::open(&s, "?pattern=t", None).await;
    st.next().await;
    let r = http().get(s.http("/v1/events")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    // Its place is given back when it ends.
    drop(st);
    let opened = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let r = http().get(s.http("/v1/events")).send().await.unwrap();
            if r.status() == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(opened.is_ok(), "the slot came back");
    // Streams the client left are counted as closed.
    let metrics = common::get_text(s.http("/metrics")).await;
    let closed: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("herald_connections_closed_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(closed >= 1, "{metrics}");
}
