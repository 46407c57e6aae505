//! The admin control endpoints in cluster mode: two real `herald` nodes on one real
//! `redis-server`. Every call goes to node A and must act on the sessions of both nodes
//! (through Redis), with counts that add up across the cluster.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::redis::{Redis, ready};
use common::{Binary, Raw, WAIT, http};
use serde_json::{Value, json};

const SECRET: &str = "control-cluster-secret-of-some-length";
const ADMIN: &str = "admin-key";

/// A token of `sub` allowed to subscribe to `subscribe` (and publish anywhere), issued at
/// `iat`.
fn token_at(sub: &str, subscribe: &[&str], iat: u64) -> String {
    let claims = json!({"sub": sub, "iat": iat, "exp": common::now_s() + 3600, "publish": ["**"], "subscribe": subscribe});
    common::hs256(SECRET, &claims)
}

fn token(sub: &str, subscribe: &[&str]) -> String {
    token_at(sub, subscribe, common::now_s())
}

/// The nodes' config file, written once per process: tests run in parallel, and a node
/// starting while another test rewrote the file could read it half-written (empty: no auth).
fn config_file() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(write_config)
}

fn write_config() -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "herald-control-cluster-{}.toml",
        std::process::id()
    ));
    let body = format!(
        r#"
[auth]
hs256_secret = "{SECRET}"
admin_keys = ["{ADMIN}"]

[session]
ttl = "30s"

# Low, for the subscribe refused by a full session (no test needs more).
[limits]
max_subscriptions = 2

[[topics]]
pattern = "**"
history = 100
"#
    );
    std::fs::write(&p, body).unwrap();
    p
}

/// Two nodes on a Redis of their own. Field order: the nodes go before Redis.
struct Cluster {
    a: Binary,
    b: Binary,
    redis: Redis,
}

async fn cluster() -> Cluster {
    let redis = Redis::start();
    let a = redis.node(config_file());
    let b = redis.node(config_file());
    ready(&a).await;
    ready(&b).await;
    Cluster { a, b, redis }
}

/// A connection of `token` to node `b`, welcomed; with its session id.
async fn client(b: &Binary, token: &str) -> (Raw, String) {
    let mut c = Raw::connect(&b.ws_url()).await;
    c.send(json!({"op": "hello", "token": token})).await;
    let w = c.recv().await;
    assert_eq!(w["op"], "welcome", "{w}");
    (c, w["session"].as_str().unwrap().to_owned())
}

/// A `hello` with `token` that node `b` must refuse: close 4001 after an `unauthorized`.
async fn refused(b: &Binary, token: &str) {
    let mut c = Raw::connect(&b.ws_url()).await;
    c.send(json!({"op": "hello", "token": token})).await;
    let (code, frames) = c.expect_close().await;
    assert_eq!(code, 4001, "{frames:?}");
    assert!(
        frames.iter().any(|f| f["code"] == "unauthorized"),
        "{frames:?}"
    );
}

/// POSTs `body` with the admin key; (status, JSON answer).
async fn admin_post_status(b: &Binary, path: &str, body: &Value) -> (u16, Value) {
    let r = http()
        .post(format!("http://{}{path}", b.addr))
        .bearer_auth(ADMIN)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// POSTs `body` with the admin key; its JSON answer, which must be a 200.
async fn admin_post(b: &Binary, path: &str, body: Value) -> Value {
    let (status, v) = admin_post_status(b, path, &body).await;
    assert_eq!(status, 200, "{path} {body}: {v}");
    v
}

/// Waits until `GET /v1/sessions` on `b` lists `session` as disconnected (its connection's
/// task lets go of it just after the close frame went out); returns that row.
async fn until_disconnected(b: &Binary, user: &str, session: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let rows = admin_get(b, &format!("/v1/sessions?user={user}")).await;
        let row = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["session"] == session)
            .unwrap_or_else(|| panic!("{session} not listed: {rows}"))
            .clone();
        if row["connected"] == false {
            return row;
        }
        assert!(Instant::now() < deadline, "still connected: {rows}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn admin_get(b: &Binary, path: &str) -> Value {
    let r = http()
        .get(format!("http://{}{path}", b.addr))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{path}");
    r.json().await.unwrap()
}

/// The connection still works: a ping is answered.
async fn assert_alive(c: &mut Raw) {
    c.send(json!({"op": "ping", "id": "alive"})).await;
    let pong = c.recv_op("pong").await;
    assert_eq!(pong["id"], "alive");
}

/// The next `msg` frame, and every other frame seen before it.
async fn next_msg(c: &mut Raw) -> (Value, Vec<Value>) {
    let mut before = Vec::new();
    loop {
        let v = c.recv().await;
        if v["op"] == "msg" {
            return (v, before);
        }
        before.push(v);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_reaches_a_users_sessions_on_both_nodes() {
    let n = cluster().await;
    let t = token("ann", &["**"]);
    let (mut on_a, _) = client(&n.a, &t).await;
    let (mut on_b, sid_b) = client(&n.b, &t).await;
    let (mut bob_a, _) = client(&n.a, &token("bob", &["**"])).await;
    let (mut bob_b, bob_sid) = client(&n.b, &token("bob", &["**"])).await;

    let v = admin_post(&n.a, "/v1/disconnect", json!({"user": "ann"})).await;
    assert_eq!(v, json!({"disconnected": 2}), "one session on each node");
    assert_eq!(on_a.expect_close().await.0, 4003);
    assert_eq!(on_b.expect_close().await.0, 4003);
    assert_alive(&mut bob_a).await;
    assert_alive(&mut bob_b).await;
    // Not resumable (the default): ann's sessions ended everywhere.
    assert_eq!(admin_get(&n.a, "/v1/sessions?user=ann").await, json!([]));
    let mut again = Raw::connect(&n.b.ws_url()).await;
    again
        .send(json!({"op": "hello", "token": t, "session": sid_b, "last_seq": 0}))
        .await;
    assert_eq!(again.recv().await["resumed"], false);
    // Nobody left of that name: nothing to do on either node.
    let v = admin_post(&n.a, "/v1/disconnect", json!({"user": "nobody"})).await;
    assert_eq!(v, json!({"disconnected": 0}));

    // By session id, from the node that does not hold it, with a code of its own.
    let body = json!({"session": bob_sid, "code": 4000, "reason": "move along", "resumable": true});
    let v = admin_post(&n.a, "/v1/disconnect", body).await;
    assert_eq!(v, json!({"disconnected": 1}));
    assert_eq!(bob_b.expect_close().await.0, 4000);
    // Gone (rather than waiting for the server to give up on the close handshake).
    drop(bob_b);
    assert_alive(&mut bob_a).await;
    // Resumable: the session is still listed, disconnected.
    until_disconnected(&n.a, "bob", &bob_sid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_by_user_acts_on_both_nodes() {
    let n = cluster().await;
    let t = token("ann", &["**"]);
    let (mut on_a, _) = client(&n.a, &t).await;
    let (mut on_b, _) = client(&n.b, &t).await;
    let (mut bob, _) = client(&n.b, &token("bob", &["**"])).await;
    for c in [&mut on_a, &mut on_b, &mut bob] {
        c.sub("t/**").await;
        c.sub("mark/**").await;
    }
    let (mut publisher, _) = client(&n.a, &token("pub", &[])).await;

    let body = json!({"user": "ann", "pattern": "t/**"});
    let v = admin_post(&n.a, "/v1/unsubscribe", body.clone()).await;
    assert_eq!(v, json!({"unsubscribed": 2}), "one session on each node");
    for c in [&mut on_a, &mut on_b] {
        let u = c.recv_op("unsubscribed").await;
        assert_eq!(
            u,
            json!({"op": "unsubscribed", "pattern": "t/**", "reason": "server"})
        );
    }
    // t/x then mark/x, in that order for every node: ann's next message is the mark, so
    // t/x reached neither of ann's sessions. Bob still gets both.
    publisher.publish("t/x", json!("gone")).await;
    publisher.publish("mark/x", json!("mark")).await;
    for c in [&mut on_a, &mut on_b] {
        let (m, _) = next_msg(c).await;
        assert_eq!(m["topic"], "mark/x", "{m}");
    }
    assert_eq!(next_msg(&mut bob).await.0["topic"], "t/x");
    assert_eq!(next_msg(&mut bob).await.0["topic"], "mark/x");
    let rows = admin_get(&n.a, "/v1/sessions?user=ann").await;
    for r in rows.as_array().unwrap() {
        assert_eq!(
            r["subscriptions"],
            json!([{"pattern": "mark/**"}]),
            "{rows}"
        );
    }
    // Again: nobody has it any more.
    let v = admin_post(&n.a, "/v1/unsubscribe", body).await;
    assert_eq!(v, json!({"unsubscribed": 0}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_a_session_on_the_other_node() {
    let n = cluster().await;
    let (mut publisher, _) = client(&n.a, &token("pub", &[])).await;
    publisher.publish("news/old", json!("old")).await;
    let (mut ann, sid) = client(&n.b, &token("ann", &["news/**"])).await;

    // Asked of node A, the session lives on node B.
    let body = json!({"session": sid, "pattern": "news/**", "rewind": 1});
    let v = admin_post(&n.a, "/v1/subscribe", body.clone()).await;
    assert_eq!(v, json!({"subscribed": 1}));
    assert_eq!(
        ann.recv().await,
        json!({"op": "subscribed", "pattern": "news/**"})
    );
    let replay = ann.recv().await;
    assert_eq!(
        (&replay["data"], &replay["replay"]),
        (&json!("old"), &json!(true)),
        "{replay}"
    );
    // Published on A, delivered on B.
    publisher.publish("news/a", json!("live")).await;
    let (m, before) = next_msg(&mut ann).await;
    assert_eq!(
        (&m["topic"], &m["data"]),
        (&json!("news/a"), &json!("live")),
        "{m}"
    );
    assert!(before.is_empty(), "{before:?}");
    // Twice: already subscribed, nothing changes.
    assert_eq!(
        admin_post(&n.a, "/v1/subscribe", body).await,
        json!({"subscribed": 0})
    );
    // Outside the session's permissions: not subscribed.
    let outside = json!({"session": sid, "pattern": "secret/**"});
    assert_eq!(
        admin_post(&n.a, "/v1/subscribe", outside).await,
        json!({"subscribed": 0})
    );
    let rows = admin_get(&n.a, "/v1/sessions?user=ann").await;
    assert_eq!(
        rows[0]["subscriptions"],
        json!([{"pattern": "news/**"}]),
        "{rows}"
    );

    // A session at its subscription cap: the other node's refusal comes back as the error
    // (as on a single node), not as a count of 0.
    ann.sub("news/own").await;
    let full = json!({"session": sid, "pattern": "news/more/**"});
    let (st, v) = admin_post_status(&n.a, "/v1/subscribe", &full).await;
    assert_eq!(
        (st, &v["error"]["code"]),
        (429, &json!("too_many_subscriptions")),
        "{v}"
    );
    let rows = admin_get(&n.a, "/v1/sessions?user=ann").await;
    let mut subs: Vec<&str> = rows[0]["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pattern"].as_str().unwrap())
        .collect();
    subs.sort_unstable();
    assert_eq!(subs, ["news/**", "news/own"], "{rows}");

    // Nor is the client told of it: the next frame it gets is the next message.
    publisher.publish("news/c", json!("next")).await;
    let next = ann.recv().await;
    assert_eq!(
        (&next["op"], &next["topic"]),
        (&json!("msg"), &json!("news/c")),
        "{next}"
    );
    // The subscription is the session's: kept across a resume on its node.
    drop(ann);
    until_disconnected(&n.a, "ann", &sid).await;
    publisher.publish("news/b", json!("while away")).await;
    let mut back = Raw::connect(&n.b.ws_url()).await;
    let t = token("ann", &["news/**"]);
    back.send(json!({"op": "hello", "token": t, "session": sid, "last_seq": next["seq"]}))
        .await;
    assert_eq!(back.recv().await["resumed"], true);
    let (m, _) = next_msg(&mut back).await;
    assert_eq!(
        (&m["topic"], &m["data"]),
        (&json!("news/b"), &json!("while away")),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_listed_from_both_nodes() {
    let n = cluster().await;
    let t = token("ann", &["**"]);
    let (mut on_a, sid_a) = client(&n.a, &t).await;
    on_a.sub("a/b").await;
    let (_on_b, sid_b) = client(&n.b, &t).await;
    let (_bob, bob_sid) = client(&n.b, &token("bob", &["**"])).await;

    let row = |sid: &str, subs: Value| json!({"session": sid, "user": "ann", "connected": true, "subscriptions": subs});
    let mut want = vec![
        (sid_a.clone(), row(&sid_a, json!([{"pattern": "a/b"}]))),
        (sid_b.clone(), row(&sid_b, json!([]))),
    ];
    want.sort_by(|x, y| x.0.cmp(&y.0));
    let want: Vec<Value> = want.into_iter().map(|(_, r)| r).collect();
    // Either node lists both, in one order.
    assert_eq!(admin_get(&n.a, "/v1/sessions?user=ann").await, json!(want));
    assert_eq!(admin_get(&n.b, "/v1/sessions?user=ann").await, json!(want));
    let all = admin_get(&n.a, "/v1/sessions").await;
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["session"].as_str().unwrap())
        .collect();
    for sid in [&sid_a, &sid_b, &bob_sid] {
        assert!(ids.contains(&sid.as_str()), "{sid} in {all}");
    }
    assert_eq!(ids.len(), 3, "{all}");
    assert_eq!(admin_get(&n.a, "/v1/sessions?user=nobody").await, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_on_one_node_closes_and_refuses_on_the_other() {
    let n = cluster().await;
    let before = common::now_s() - 50;
    let old = token_at("ann", &["**"], before - 50);
    let (mut old_b, _) = client(&n.b, &old).await;
    // Issued at `before` exactly: not revoked, and not counted.
    let (mut new_a, _) = client(&n.a, &token_at("ann", &["**"], before)).await;
    let (mut bob, _) = client(&n.b, &token("bob", &["**"])).await;

    let v = admin_post(&n.a, "/v1/revoke", json!({"user": "ann", "before": before})).await;
    assert_eq!(v, json!({"disconnected": 1}));
    assert_eq!(old_b.expect_close().await.0, 4001);
    assert_alive(&mut new_a).await;
    assert_alive(&mut bob).await;
    // From now on the old token is refused on both nodes, a newer one accepted.
    refused(&n.b, &old).await;
    refused(&n.a, &old).await;
    let (mut fresh, _) = client(&n.b, &token_at("ann", &["**"], before)).await;
    assert_alive(&mut fresh).await;
    let r = http()
        .post(format!("http://{}/v1/publish", n.b.addr))
        .bearer_auth(&old)
        .json(&json!({"topic": "t/x", "data": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "the HTTP API refuses it too");

    // A node started after the call reads the revocation from Redis. It does so once its
    // feed is up, just after `/readyz` says ready: a known gap (a hello in between is let
    // in). A control call of its own comes through its feed after that read, so once C has
    // answered it, C holds the revocation.
    let c = n.redis.node(config_file());
    ready(&c).await;
    admin_get(&c, "/v1/sessions?user=ann").await;
    refused(&c, &old).await;
    let (mut on_c, _) = client(&c, &token_at("ann", &["**"], before)).await;
    assert_alive(&mut on_c).await;
}
