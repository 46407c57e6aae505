//! Cutting and changing access on a running server (single node): live token `refresh`,
//! the `expiring` notice, and the admin endpoints `/v1/disconnect`, `/v1/unsubscribe`,
//! `/v1/subscribe`, `/v1/sessions`, `/v1/revoke`, over real sockets.

mod common;

use std::time::Duration;

use common::{Raw, TestServer, config};
use herald::config::AuthConfig;
use serde_json::{Value, json};

const SECRET: &str = "control-test-secret-of-some-length";
const ADMIN: &str = "admin-key";

/// A token of `sub` allowed to subscribe to `subscribe` (and publish anywhere), issued at
/// `iat`, expiring at `exp`.
fn token_at(sub: &str, subscribe: &[&str], iat: u64, exp: u64) -> String {
    let claims =
        json!({"sub": sub, "iat": iat, "exp": exp, "publish": ["**"], "subscribe": subscribe});
    common::hs256(SECRET, &claims)
}

fn token(sub: &str, subscribe: &[&str]) -> String {
    token_at(sub, subscribe, common::now_s(), common::now_s() + 3600)
}

fn auth_config() -> herald::Config {
    let mut c = config();
    c.auth = Some(AuthConfig {
        hs256_secret: Some(SECRET.into()),
        admin_keys: vec![ADMIN.into()],
        api_keys: vec!["api-key".into()],
        ..Default::default()
    });
    c
}

async fn server() -> TestServer {
    TestServer::with_config(auth_config()).await
}

/// A connection of `token`, welcomed.
async fn client(s: &TestServer, token: &str) -> (Raw, String) {
    let mut c = s.connect().await;
    c.send(json!({"op": "hello", "token": token})).await;
    let w = c.recv().await;
    assert_eq!(w["op"], "welcome", "{w}");
    (c, w["session"].as_str().unwrap().to_owned())
}

/// POSTs `body` with the admin key; (status, JSON answer).
async fn admin_post(s: &TestServer, path: &str, body: Value) -> (u16, Value) {
    admin_post_key(s, path, body, Some(ADMIN)).await
}

async fn admin_post_key(
    s: &TestServer,
    path: &str,
    body: Value,
    key: Option<&str>,
) -> (u16, Value) {
    let mut req = common::http().post(s.http(path)).json(&body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn admin_get(s: &TestServer, path: &str) -> (u16, Value) {
    let r = common::http()
        .get(s.http(path))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Frames until (and with) the first one `stop` accepts.
async fn until(c: &mut Raw, stop: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let v = c.recv().await;
        let done = stop(&v);
        seen.push(v);
        if done {
            return seen;
        }
    }
}

async fn assert_alive(c: &mut Raw) {
    c.send(json!({"op": "ping", "id": "alive"})).await;
    let v = until(c, |v| v["op"] == "pong").await;
    assert_eq!(v.last().unwrap()["id"], "alive");
}

#[tokio::test]
async fn refresh_that_narrows_withholds_even_what_is_buffered() {
    let mut cfg = auth_config();
    // Room for a large backlog: the client stops reading, so messages pile up in its ring.
    cfg.session.buffer_messages = 10_000;
    cfg.session.buffer_bytes = 256 << 20;
    let s = TestServer::with_config(cfg).await;
    let (mut c, _) = client(&s, &token("ann", &["a/**", "b/**"])).await;
    c.sub("a/**").await;
    c.sub("b/**").await;
    // Not read: the socket's buffers fill and the rest stays in the session's ring.
    let pad = "x".repeat(32 * 1024);
    const N: usize = 600;
    for i in 0..N {
        s.bus
            .publish_json("b/x", &json!({"i": i, "pad": pad}))
            .unwrap();
    }
    s.bus.publish_json("a/x", &json!("still mine")).unwrap();
    c.send(json!({"op": "refresh", "id": "r", "token": token("ann", &["a/**"])}))
        .await;
    let frames = until(&mut c, |v| v["op"] == "unsubscribed").await;
    let ok_at = frames
        .iter()
        .position(|v| v["op"] == "ok" && v["id"] == "r")
        .expect("refresh answered");
    assert!(frames[ok_at]["exp"].as_u64().unwrap() > common::now_s());
    let b_msgs = |fs: &[Value]| {
        fs.iter()
            .filter(|v| v["op"] == "msg" && v["topic"] == "b/x")
            .count()
    };
    assert_eq!(b_msgs(&frames[ok_at..]), 0, "nothing of b/ after the ok");
    let before = b_msgs(&frames[..ok_at]);
    assert!(
        before < N,
        "some were still buffered: {before} of {N} were written"
    );
    // The withheld ones are a gap, so the seq invariant still holds.
    let gaps: u64 = frames
        .iter()
        .filter(|v| v["op"] == "gap")
        .map(|g| g["to_seq"].as_u64().unwrap() - g["from_seq"].as_u64().unwrap() + 1)
        .sum();
    assert_eq!(gaps as usize + before, N);
    assert!(
        frames
            .iter()
            .any(|v| v["op"] == "msg" && v["topic"] == "a/x")
    );
    let last = frames.last().unwrap();
    assert_eq!(last["pattern"], "b/**");
    assert_eq!(last["reason"], "forbidden");
    // From now on: b/ is neither subscribed nor deliverable; a/ still is.
    s.bus.publish_json("b/x", &json!("late")).unwrap();
    s.bus.publish_json("a/y", &json!("after")).unwrap();
    let m = c.recv_op("msg").await;
    assert_eq!(m["topic"], "a/y", "{m}");
    let listed = admin_get(&s, "/v1/sessions?user=ann").await.1;
    assert_eq!(listed[0]["subscriptions"], json!([{"pattern": "a/**"}]));
}

#[tokio::test]
async fn refresh_needs_a_good_token_of_the_same_user() {
    let s = server().await;
    let (mut c, _) = client(&s, &token("ann", &["a/**"])).await;
    let other = c
        .request(json!({"op": "refresh", "token": token("bob", &["a/**"])}))
        .await;
    assert_eq!(other["code"], "forbidden", "{other}");
    let bad = c
        .request(json!({"op": "refresh", "token": "not.a.token"}))
        .await;
    assert_eq!(bad["code"], "unauthorized", "{bad}");
    let expired = c
        .request(
            json!({"op": "refresh", "token": token_at("ann", &["a/**"], common::now_s() - 100, common::now_s() - 10)}),
        )
        .await;
    assert_eq!(expired["code"], "unauthorized", "{expired}");
    let missing = c.request(json!({"op": "refresh"})).await;
    assert_eq!(missing["code"], "bad_request", "{missing}");
    // The connection keeps its token and goes on.
    assert_alive(&mut c).await;
    c.sub("a/b").await;
}

#[tokio::test]
async fn expiring_comes_before_exp_and_a_refresh_keeps_the_connection() {
    let mut cfg = auth_config();
    cfg.auth.as_mut().unwrap().refresh_notice = Duration::from_secs(60);
    let s = TestServer::with_config(cfg).await;
    let exp = common::now_s() + 3;
    let short = token_at("ann", &["a/**"], common::now_s(), exp);
    let (mut refreshed, _) = client(&s, &short).await;
    let (mut lapsed, _) = client(&s, &short).await;
    // Within the notice already: `expiring` comes at once, after `welcome`.
    let e = refreshed.recv_op("expiring").await;
    assert_eq!(e["exp"], exp);
    let e = lapsed.recv_op("expiring").await;
    assert_eq!(e["exp"], exp);
    let ok = refreshed
        .request(json!({"op": "refresh", "token": token("ann", &["a/**"])}))
        .await;
    assert_eq!(ok["op"], "ok", "{ok}");
    // Refreshing with a token that expires no later is accepted, but announces nothing new
    // (a second `expiring` at once would start a refresh loop). Without a later token the
    // connection is closed at `exp`, as before.
    let same = lapsed
        .request(json!({"op": "refresh", "token": short}))
        .await;
    assert_eq!(
        (same["op"].as_str(), &same["exp"]),
        (Some("ok"), &json!(exp)),
        "{same}"
    );
    let (code, seen) = lapsed.expect_close().await;
    assert_eq!(code, 4001);
    assert!(seen.iter().all(|f| f["op"] != "expiring"), "{seen:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_alive(&mut refreshed).await;
}

#[tokio::test]
async fn disconnect_a_users_sessions() {
    let s = server().await;
    let t = token("ann", &["**"]);
    let (mut a1, s1) = client(&s, &t).await;
    let (mut a2, _) = client(&s, &t).await;
    let (mut bob, _) = client(&s, &token("bob", &["**"])).await;
    let (st, v) = admin_post(&s, "/v1/disconnect", json!({"user": "ann"})).await;
    assert_eq!((st, &v), (200, &json!({"disconnected": 2})));
    for c in [&mut a1, &mut a2] {
        assert_eq!(c.expect_close().await.0, 4003);
    }
    assert_alive(&mut bob).await;
    // Not resumable (the default): the session ended.
    let mut again = s.connect().await;
    again
        .send(json!({"op": "hello", "token": t, "session": s1, "last_seq": 0}))
        .await;
    assert_eq!(again.recv().await["resumed"], false);
}

#[tokio::test]
async fn disconnect_resumable_with_code_and_reason() {
    let s = server().await;
    let t = token("ann", &["**"]);
    let (mut a, sid) = client(&s, &t).await;
    a.sub("t/x").await;
    let body = json!({"session": sid, "code": 4000, "reason": "move along", "resumable": true});
    let (st, v) = admin_post(&s, "/v1/disconnect", body).await;
    assert_eq!((st, v), (200, json!({"disconnected": 1})));
    // Listed as not connected at once, though the socket may still be closing.
    let (_, rows) = admin_get(&s, "/v1/sessions?user=ann").await;
    assert_eq!(rows[0]["connected"], false, "{rows}");
    let (code, _) = a.expect_close().await;
    assert_eq!(code, 4000);
    s.bus.publish_json("t/x", &json!(1)).unwrap();
    let mut back = s.connect().await;
    back.send(json!({"op": "hello", "token": t, "session": sid, "last_seq": 0}))
        .await;
    assert_eq!(back.recv().await["resumed"], true);
    assert_eq!(back.recv_op("msg").await["data"], 1);
    // Nobody of that name: nothing to do.
    let (_, v) = admin_post(&s, "/v1/disconnect", json!({"user": "nobody"})).await;
    assert_eq!(v, json!({"disconnected": 0}));
}

#[tokio::test]
async fn server_side_unsubscribe() {
    let s = server().await;
    let (mut c, sid) = client(&s, &token("ann", &["**"])).await;
    c.sub("t/**").await;
    let body = json!({"session": sid, "pattern": "t/**"});
    let (st, v) = admin_post(&s, "/v1/unsubscribe", body.clone()).await;
    assert_eq!((st, v), (200, json!({"unsubscribed": 1})));
    let u = c.recv_op("unsubscribed").await;
    assert_eq!(
        u,
        json!({"op": "unsubscribed", "pattern": "t/**", "reason": "server"})
    );
    s.bus.publish_json("t/x", &json!("gone")).unwrap();
    assert!(c.recv_within(Duration::from_millis(300)).await.is_none());
    let (_, v) = admin_post(&s, "/v1/unsubscribe", body).await;
    assert_eq!(v, json!({"unsubscribed": 0}), "not subscribed any more");
}

#[tokio::test]
async fn server_side_subscribe_delivers_and_survives_a_resume() {
    let mut cfg = auth_config();
    cfg.topics.push(herald::config::TopicConfig {
        pattern: "news/**".into(),
        history: 10,
        ..Default::default()
    });
    let s = TestServer::with_config(cfg).await;
    s.bus.publish_json("news/old", &json!("old")).unwrap();
    let t = token("ann", &["news/**"]);
    let (mut c, sid) = client(&s, &t).await;
    let body = json!({"user": "ann", "pattern": "news/**", "rewind": 1});
    let (st, v) = admin_post(&s, "/v1/subscribe", body.clone()).await;
    assert_eq!((st, v), (200, json!({"subscribed": 1})));
    assert_eq!(
        c.recv().await,
        json!({"op": "subscribed", "pattern": "news/**"})
    );
    let replay = c.recv().await;
    assert_eq!(
        (replay["data"].clone(), replay["replay"].clone()),
        (json!("old"), json!(true))
    );
    s.bus.publish_json("news/a", &json!("live")).unwrap();
    let m = c.recv_op("msg").await;
    assert_eq!(m["data"], "live");
    let seq = m["seq"].as_u64().unwrap();
    // Twice: already subscribed, nothing changes.
    assert_eq!(
        admin_post(&s, "/v1/subscribe", body).await.1,
        json!({"subscribed": 0})
    );
    // Outside the session's permissions: not subscribed.
    let outside = json!({"session": sid, "pattern": "secret/**"});
    assert_eq!(
        admin_post(&s, "/v1/subscribe", outside).await.1,
        json!({"subscribed": 0})
    );
    // The subscription is the session's: kept across a resume.
    drop(c);
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.bus.publish_json("news/b", &json!("while away")).unwrap();
    let mut back = s.connect().await;
    back.send(json!({"op": "hello", "token": t, "session": sid, "last_seq": seq}))
        .await;
    assert_eq!(back.recv().await["resumed"], true);
    assert_eq!(back.recv_op("msg").await["data"], "while away");
    let listed = admin_get(&s, "/v1/sessions?user=ann").await.1;
    assert_eq!(listed[0]["subscriptions"], json!([{"pattern": "news/**"}]));
}

#[tokio::test]
async fn a_subscribe_made_while_disconnected_is_told_on_resume() {
    let s = server().await;
    let t = token("ann", &["**"]);
    let (c, sid) = client(&s, &t).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let body = json!({"session": sid, "pattern": "q/x", "group": "workers"});
    assert_eq!(
        admin_post(&s, "/v1/subscribe", body).await.1,
        json!({"subscribed": 1})
    );
    s.bus.publish_json("q/x", &json!("job")).unwrap();
    let mut back = s.connect().await;
    back.send(json!({"op": "hello", "token": t, "session": sid, "last_seq": 0}))
        .await;
    assert_eq!(back.recv().await["resumed"], true);
    assert_eq!(
        back.recv().await,
        json!({"op": "subscribed", "pattern": "q/x", "group": "workers"})
    );
    assert_eq!(back.recv().await["data"], "job");
}

#[tokio::test]
async fn sessions_are_listed() {
    let s = server().await;
    let (mut c, sid) = client(&s, &token("ann", &["**"])).await;
    c.sub("a/b").await;
    let (_, other) = client(&s, &token("bob", &["**"])).await;
    let (st, v) = admin_get(&s, "/v1/sessions?user=ann").await;
    assert_eq!(st, 200);
    assert_eq!(
        v,
        json!([{"session": sid, "user": "ann", "connected": true, "subscriptions": [{"pattern": "a/b"}]}])
    );
    let all = admin_get(&s, "/v1/sessions").await.1;
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["session"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&sid.as_str()) && ids.contains(&other.as_str()),
        "{all}"
    );
    assert_eq!(admin_get(&s, "/v1/sessions?user=nobody").await.1, json!([]));
}

#[tokio::test]
async fn revoke_closes_and_refuses_older_tokens() {
    let s = server().await;
    let old = token_at(
        "ann",
        &["**"],
        common::now_s() - 100,
        common::now_s() + 3600,
    );
    let (mut c, _) = client(&s, &old).await;
    let (mut bob, _) = client(&s, &token("bob", &["**"])).await;
    let body = json!({"user": "ann", "before": common::now_s() - 50});
    let (st, v) = admin_post(&s, "/v1/revoke", body).await;
    assert_eq!((st, v), (200, json!({"disconnected": 1})));
    assert_eq!(c.expect_close().await.0, 4001);
    assert_alive(&mut bob).await;
    // The old token is refused from now on, on the socket and on the HTTP API.
    let mut again = s.connect().await;
    again.send(json!({"op": "hello", "token": old})).await;
    let (code, frames) = again.expect_close().await;
    assert_eq!(code, 4001, "{frames:?}");
    assert!(
        frames.iter().any(|f| f["code"] == "unauthorized"),
        "{frames:?}"
    );
    let r = common::http()
        .post(s.http("/v1/publish"))
        .bearer_auth(&old)
        .json(&json!({"topic": "t/x", "data": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Nor can it come back through a refresh.
    let (mut fresh, _) = client(&s, &token("ann", &["**"])).await;
    let r = fresh.request(json!({"op": "refresh", "token": old})).await;
    assert_eq!(r["code"], "unauthorized", "{r}");
    // A token issued after `before` works.
    assert_alive(&mut fresh).await;
    assert_eq!(s.bus.revocation_count(), 1);
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx() {
    let s = server().await;
    let cases: &[(&str, Value, &str)] = &[
        ("/v1/disconnect", json!({}), "bad_request"),
        ("/v1/disconnect", json!({"user": ""}), "bad_request"),
        (
            "/v1/disconnect",
            json!({"user": "a", "code": 1006}),
            "bad_request",
        ),
        (
            "/v1/disconnect",
            json!({"user": "a", "code": "x"}),
            "bad_request",
        ),
        (
            "/v1/disconnect",
            json!({"user": "a", "reason": "r".repeat(200)}),
            "bad_request",
        ),
        ("/v1/unsubscribe", json!({"pattern": "a"}), "bad_request"),
        (
            "/v1/unsubscribe",
            json!({"user": "a", "session": "s", "pattern": "a"}),
            "bad_request",
        ),
        ("/v1/unsubscribe", json!({"user": "a"}), "bad_request"),
        (
            "/v1/unsubscribe",
            json!({"user": "a", "pattern": "a//b"}),
            "bad_pattern",
        ),
        (
            "/v1/subscribe",
            json!({"user": "a", "pattern": "[a"}),
            "bad_pattern",
        ),
        (
            "/v1/subscribe",
            json!({"user": "a", "pattern": "a", "group": ""}),
            "bad_request",
        ),
        (
            "/v1/subscribe",
            json!({"user": "a", "pattern": "a", "group": "g", "rewind": 1}),
            "bad_request",
        ),
        ("/v1/subscribe", json!({"session": "s"}), "bad_request"),
        ("/v1/revoke", json!({"user": "a"}), "bad_request"),
        ("/v1/revoke", json!({"before": 1}), "bad_request"),
        (
            "/v1/revoke",
            json!({"user": "a", "before": -1}),
            "bad_request",
        ),
        // A misspelt field is refused, not ignored (it would widen the call).
        (
            "/v1/disconnect",
            json!({"user": "a", "sesion": "s"}),
            "bad_request",
        ),
        (
            "/v1/unsubscribe",
            json!({"user": "a", "pattern": "a", "grop": "g"}),
            "bad_request",
        ),
        (
            "/v1/revoke",
            json!({"user": "a", "before": 1, "after": 2}),
            "bad_request",
        ),
    ];
    for (path, body, code) in cases {
        let (st, v) = admin_post(&s, path, body.clone()).await;
        assert_eq!(st, 400, "{path} {body}: {v}");
        assert_eq!(v["error"]["code"], *code, "{path} {body}: {v}");
    }
    // Not JSON.
    let r = common::http()
        .post(s.http("/v1/disconnect"))
        .bearer_auth(ADMIN)
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "bad_json");
    let (st, v) = admin_get(&s, "/v1/sessions?user=").await;
    assert_eq!(
        (st, v["error"]["code"].clone()),
        (400, json!("bad_request"))
    );
    // Without an admin key: 401 (none) or 403 (an API key).
    for path in [
        "/v1/disconnect",
        "/v1/unsubscribe",
        "/v1/subscribe",
        "/v1/revoke",
    ] {
        let body = json!({"user": "a", "pattern": "a", "before": 1});
        let (st, v) = admin_post_key(&s, path, body.clone(), None).await;
        assert_eq!(
            (st, v["error"]["code"].clone()),
            (401, json!("unauthorized")),
            "{path}"
        );
        let (st, v) = admin_post_key(&s, path, body, Some("api-key")).await;
        assert_eq!(
            (st, v["error"]["code"].clone()),
            (403, json!("forbidden")),
            "{path}"
        );
    }
    let r = common::http()
        .get(s.http("/v1/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}
