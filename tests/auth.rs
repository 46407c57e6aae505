//! Tokens, permissions and keys (PROTOCOL.md §7, §8), driven over real sockets: JWTs in the
//! query, the header and `hello`; refused tokens; expiry mid-connection; escalation attempts
//! through `**`, `{a,b}`, `[..]`, `$` topics and inboxes; the delivery filter; the HTTP
//! API's keys; the Origin allow-list.

mod common;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Raw, TestServer, config, http};
use herald::config::{AuthConfig, Permissions};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const SECRET: &str = "test-secret-of-reasonable-length";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims for user `sub` with these permissions, valid for an hour.
fn claims(sub: &str, publish: &[&str], subscribe: &[&str]) -> Value {
    json!({"sub": sub, "exp": now() + 3600, "publish": publish, "subscribe": subscribe})
}

fn hs256(claims: &Value) -> String {
    sign(
        claims,
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
}

fn sign(claims: &Value, alg: Algorithm, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

/// Base64url without padding, for hand-made (unsigned) tokens.
fn b64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn auth_config(anonymous: Permissions) -> herald::Config {
    let mut c = config();
    c.auth = Some(AuthConfig {
        hs256_secret: Some(SECRET.into()),
        api_keys: vec!["api-key-1".into()],
        admin_keys: vec!["admin-key-1".into()],
        anonymous,
        ..Default::default()
    });
    c
}

async fn server() -> TestServer {
    TestServer::with_config(auth_config(Permissions {
        publish: vec![],
        subscribe: vec!["public/**".into()],
    }))
    .await
}

async fn connect_token(server: &TestServer, token: &str) -> Raw {
    Raw::connect(&format!("{}?token={token}", server.ws_url())).await
}

/// Connects with the token in an `Authorization: Bearer` header of the upgrade request.
async fn connect_header(server: &TestServer, token: &str) -> Raw {
    let mut req = server.ws_url().into_client_request().unwrap();
    req.headers_mut().insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    Raw { ws }
}

/// A refused token is refused the same way from the query, the header and `hello`.
async fn assert_refused_everywhere(server: &TestServer, token: &str, what: &str) {
    for (how, mut c) in [
        ("query", connect_token(server, token).await),
        ("header", connect_header(server, token).await),
    ] {
        let (code, frames) = c.expect_close().await;
        assert_eq!(code, 4001, "{what} in the {how}: {frames:?}");
        assert!(
            frames
                .iter()
                .any(|f| f["op"] == "error" && f["code"] == "unauthorized"),
            "{what} in the {how}: {frames:?}"
        );
        assert!(
            frames.iter().all(|f| f["op"] != "welcome"),
            "{what} in the {how}: {frames:?}"
        );
    }
    let mut c = server.connect().await;
    c.send(json!({"op": "hello", "token": token})).await;
    let (code, frames) = c.expect_close().await;
    assert_eq!(code, 4001, "{what} in hello: {frames:?}");
    assert!(
        frames.iter().all(|f| f["op"] != "welcome"),
        "{what} in hello: {frames:?}"
    );
}

async fn try_sub(c: &mut Raw, pattern: &str) -> Value {
    c.request(json!({"op": "sub", "pattern": pattern})).await
}

async fn try_pub(c: &mut Raw, topic: &str) -> Value {
    c.request(json!({"op": "pub", "topic": topic, "data": 1}))
        .await
}

fn assert_forbidden(v: &Value, what: &str) {
    assert_eq!(v["op"], "error", "{what}: {v}");
    assert_eq!(v["code"], "forbidden", "{what}: {v}");
}

#[tokio::test]
async fn token_in_query_grants_exactly_its_permissions() {
    let server = server().await;
    let token = hs256(&claims("alice", &["chat/**"], &["chat/**"]));
    let mut c = connect_token(&server, &token).await;
    c.hello().await;
    assert_eq!(try_sub(&mut c, "chat/*").await["op"], "ok");
    assert_forbidden(&try_sub(&mut c, "news/*").await, "sub news/*");
    assert_eq!(try_pub(&mut c, "chat/general").await["op"], "ok");
    assert_forbidden(&try_pub(&mut c, "news/today").await, "pub news/today");
    // The anonymous grant does not add to a token's.
    assert_forbidden(&try_sub(&mut c, "public/x").await, "sub public/x");
    server
        .bus
        .publish_json("chat/general", &json!("hi"))
        .unwrap();
    let m = c.recv_op("msg").await;
    assert_eq!(m["topic"], "chat/general");
}

#[tokio::test]
async fn token_in_authorization_header_and_in_hello() {
    let server = server().await;
    let token = hs256(&claims("bob", &["a/**"], &["a/**"]));
    let mut c = connect_header(&server, &token).await;
    c.hello().await;
    assert_eq!(try_pub(&mut c, "a/1").await["op"], "ok");
    assert_forbidden(&try_pub(&mut c, "b/1").await, "header token, pub b/1");

    let mut c = server.connect().await;
    c.send(json!({"op": "hello", "token": token})).await;
    assert_eq!(c.recv().await["op"], "welcome");
    assert_eq!(try_pub(&mut c, "a/1").await["op"], "ok");
    assert_forbidden(&try_pub(&mut c, "b/1").await, "hello token, pub b/1");
}

#[tokio::test]
async fn anonymous_clients_get_the_configured_permissions_only() {
    let server = server().await;
    let mut c = server.client().await;
    assert_eq!(try_sub(&mut c, "public/news").await["op"], "ok");
    assert_eq!(try_sub(&mut c, "public/**").await["op"], "ok");
    assert_forbidden(&try_sub(&mut c, "**").await, "anonymous sub **");
    assert_forbidden(&try_sub(&mut c, "private/x").await, "anonymous sub private");
    assert_forbidden(&try_pub(&mut c, "public/news").await, "anonymous pub");
    // Invalid input is still reported as such, not hidden behind `forbidden`.
    let e = try_sub(&mut c, "a//b").await;
    assert_eq!(e["code"], "bad_pattern", "{e}");
}

#[tokio::test]
async fn auth_without_an_anonymous_section_gives_anonymous_clients_nothing() {
    // As a user writes it: `[auth]` with a secret, no `[auth.anonymous]`.
    let mut c =
        herald::Config::from_toml_str(&format!("[auth]\nhs256_secret = \"{SECRET}\"\n")).unwrap();
    c.listen = "127.0.0.1:0".parse().unwrap();
    let server = TestServer::with_config(c).await;
    let mut anon = server.client().await;
    for pattern in ["**", "*", "public/**", "a", "$presence/**"] {
        assert_forbidden(
            &try_sub(&mut anon, pattern).await,
            &format!("sub {pattern}"),
        );
    }
    for topic in ["a", "public/x"] {
        assert_forbidden(&try_pub(&mut anon, topic).await, &format!("pub {topic}"));
    }
    for op in ["req", "history", "presence"] {
        let e = anon
            .request(json!({"op": op, "topic": "a", "data": 1}))
            .await;
        assert_forbidden(&e, op);
    }
    // Published messages do not reach it either way.
    server.bus.publish_json("a", &json!("x")).unwrap();
    assert!(anon.recv_within(Duration::from_millis(200)).await.is_none());
    // A token still grants what it says.
    let mut t = connect_token(&server, &hs256(&claims("olga", &["a"], &["a"]))).await;
    t.hello().await;
    assert_eq!(try_sub(&mut t, "a").await["op"], "ok");
    assert_eq!(try_pub(&mut t, "a").await["op"], "ok");
}

#[tokio::test]
async fn refused_tokens_close_with_4001() {
    let server = server().await;
    let good = claims("mallory", &["**"], &["**"]);
    let wrong_key = sign(
        &good,
        Algorithm::HS256,
        &EncodingKey::from_secret(b"not-the-secret"),
    );
    let alg_none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(good.to_string().as_bytes())
    );
    let mut expired = good.clone();
    expired["exp"] = json!(now() - 10);
    let expired = hs256(&expired);
    let mut no_exp = good.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    let no_exp = hs256(&no_exp);
    let tampered = {
        let t = hs256(&claims("mallory", &[], &[]));
        let parts: Vec<&str> = t.split('.').collect();
        format!(
            "{}.{}.{}",
            parts[0],
            b64(good.to_string().as_bytes()),
            parts[2]
        )
    };
    let bad_pattern = hs256(&claims("mallory", &[], &["a//b"]));
    for (what, token) in [
        ("wrong key", wrong_key.as_str()),
        ("alg none", &alg_none),
        ("expired", &expired),
        ("no exp", &no_exp),
        ("tampered claims", &tampered),
        ("invalid pattern claim", &bad_pattern),
        ("garbage", "not-a-token"),
    ] {
        assert_refused_everywhere(&server, token, what).await;
    }
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_with_the_public_key() {
    for (public, private, other, alg) in [
        (
            "rsa_public.pem",
            "rsa_private.pem",
            "other_rsa_private.pem",
            Algorithm::RS256,
        ),
        (
            "ec_public.pem",
            "ec_private.pem",
            "other_ec_private.pem",
            Algorithm::ES256,
        ),
    ] {
        let mut c = config();
        c.auth = Some(AuthConfig {
            public_key_file: Some(fixture(public)),
            ..Default::default()
        });
        let server = TestServer::with_config(c).await;
        let key = |file: &str| {
            let pem = std::fs::read(fixture(file)).unwrap();
            match alg {
                Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
                _ => EncodingKey::from_ec_pem(&pem).unwrap(),
            }
        };
        let good = claims("carol", &["x/**"], &["x/**"]);
        let mut ok = connect_token(&server, &sign(&good, alg, &key(private))).await;
        ok.hello().await;
        assert_eq!(try_pub(&mut ok, "x/1").await["op"], "ok", "{alg:?}");

        // Signed by another key of the same algorithm.
        let forged = sign(&good, alg, &key(other));
        assert_refused_everywhere(&server, &forged, &format!("{alg:?}, another key")).await;
        // Signed by an RSA key for an EC server.
        if alg == Algorithm::ES256 {
            let rsa = std::fs::read(fixture("other_rsa_private.pem")).unwrap();
            let rsa = EncodingKey::from_rsa_pem(&rsa).unwrap();
            let c = sign(&good, Algorithm::RS256, &rsa);
            assert_refused_everywhere(&server, &c, "RS256 on an ES256 server").await;
        }
        // Algorithm confusion: an HMAC "signed" with the public key file's bytes.
        let public_pem = std::fs::read(fixture(public)).unwrap();
        let confused = sign(
            &good,
            Algorithm::HS256,
            &EncodingKey::from_secret(&public_pem),
        );
        assert_refused_everywhere(&server, &confused, &format!("{alg:?}, HS256 confusion")).await;
    }
}

#[tokio::test]
async fn a_public_key_file_that_is_not_a_key_stops_the_server_from_starting() {
    let mut c = config();
    c.auth = Some(AuthConfig {
        public_key_file: Some(fixture("README.md")),
        ..Default::default()
    });
    let err = herald::Server::bind(c).await.err().expect("refused");
    assert!(err.to_string().contains("public key"), "{err}");
}

#[tokio::test]
async fn token_expiring_mid_connection_closes_4001() {
    let server = server().await;
    let mut short = claims("dave", &["t/**"], &["t/**"]);
    short["exp"] = json!(now() + 2);
    let mut c = connect_token(&server, &hs256(&short)).await;
    c.hello().await;
    assert_eq!(try_sub(&mut c, "t/x").await["op"], "ok");
    let started = std::time::Instant::now();
    let (code, _) = c.expect_close().await;
    assert_eq!(code, 4001);
    assert!(started.elapsed() <= Duration::from_secs(3));
}

#[tokio::test]
async fn escalation_through_wildcards_and_system_topics_is_forbidden() {
    let server = server().await;
    let token = hs256(&claims(
        "erin",
        &["chat/{a,b}"],
        &[
            "chat/{a,b}",
            "orders/eu/**",
            "$presence/chat/a",
            "files/[a-m]*",
        ],
    ));
    let mut c = connect_token(&server, &token).await;
    c.hello().await;
    for allowed in [
        "chat/a",
        "chat/{a,b}",
        "chat/{b,a}",
        "chat/[ab]",
        "orders/eu/**",
        "orders/eu/*/x",
        "orders/eu/{de,fr}/**",
        "$presence/chat/a",
        "files/a*",
        "files/[b-c]x?",
    ] {
        assert_eq!(try_sub(&mut c, allowed).await["op"], "ok", "sub {allowed}");
    }
    for denied in [
        "**",
        "*",
        "chat/*",
        "chat/**",
        "chat/{a,b,c}",
        "chat/[a-c]",
        "chat/?",
        "*/a",
        "orders/**",
        "orders/*/x",
        "orders/{eu,us}/**",
        "$inbox/**",
        "$presence/**",
        "$presence/chat/*",
        "$sys/**",
        "$dlq/**",
        "files/*",
        "files/[!z]*",
        "files/?*",
    ] {
        assert_forbidden(&try_sub(&mut c, denied).await, &format!("sub {denied}"));
    }
    for denied in ["chat/c", "$sys/x", "$presence/chat/a", "orders/eu/1"] {
        assert_forbidden(&try_pub(&mut c, denied).await, &format!("pub {denied}"));
    }
    // Requests count as publishes, history and presence as reads.
    let e = c
        .request(json!({"op": "req", "topic": "orders/eu/1", "data": 1}))
        .await;
    assert_forbidden(&e, "req outside publish");
    let e = c.request(json!({"op": "history", "topic": "chat/c"})).await;
    assert_forbidden(&e, "history outside subscribe");
    let e = c
        .request(json!({"op": "presence", "topic": "news/x"}))
        .await;
    assert_forbidden(&e, "presence outside subscribe");
}

#[tokio::test]
async fn nothing_outside_the_permissions_is_delivered_even_to_an_older_subscription() {
    // A session subscribed under a broad token and resumed under a narrower one keeps its
    // subscription, but only what the new token allows reaches it.
    let server = server().await;
    let broad = hs256(&claims("frank", &[], &["feed/**"]));
    let narrow = hs256(&claims("frank", &[], &["feed/a"]));
    let mut c = connect_token(&server, &broad).await;
    let w = c.hello().await;
    let session = w["session"].as_str().unwrap().to_string();
    assert_eq!(try_sub(&mut c, "feed/**").await["op"], "ok");
    drop(c);

    let mut c = server.connect().await;
    c.send(json!({"op": "hello", "token": narrow, "session": session, "last_seq": 0}))
        .await;
    let w = c.recv().await;
    assert_eq!(w["resumed"], true, "{w}");
    for topic in ["feed/b", "feed/a", "feed/x/y", "feed/a"] {
        server.bus.publish_json(topic, &json!(topic)).unwrap();
    }
    let first = c.recv_op("msg").await;
    assert_eq!(
        (first["topic"].clone(), first["seq"].clone()),
        (json!("feed/a"), json!(1))
    );
    let second = c.recv_op("msg").await;
    assert_eq!(
        (second["topic"].clone(), second["seq"].clone()),
        (json!("feed/a"), json!(2))
    );
    assert!(c.recv_within(Duration::from_millis(200)).await.is_none());
}

#[tokio::test]
async fn another_user_cannot_resume_a_session() {
    let server = server().await;
    let mut c = connect_token(&server, &hs256(&claims("gina", &[], &["g/**"]))).await;
    let session = c.hello().await["session"].as_str().unwrap().to_string();
    assert_eq!(try_sub(&mut c, "g/**").await["op"], "ok");
    drop(c);
    let thief = hs256(&claims("hank", &[], &["**"]));
    let mut t = server.connect().await;
    t.send(json!({"op": "hello", "token": thief, "session": session}))
        .await;
    let w = t.recv().await;
    assert_eq!(w["resumed"], false, "{w}");
    assert_ne!(w["session"], json!(session));
}

#[tokio::test]
async fn inboxes_cannot_be_subscribed_or_guessed() {
    let server = server().await;
    let mut responder = connect_token(&server, &hs256(&claims("svc", &[], &["svc/echo"]))).await;
    responder.hello().await;
    assert_eq!(try_sub(&mut responder, "svc/echo").await["op"], "ok");
    let mut requester = connect_token(&server, &hs256(&claims("ivan", &["svc/**"], &[]))).await;
    requester.hello().await;
    let mut snoop = connect_token(&server, &hs256(&claims("judy", &["**"], &["**"]))).await;
    snoop.hello().await;
    assert_forbidden(&try_sub(&mut snoop, "$inbox/**").await, "sub $inbox/**");
    assert_eq!(try_sub(&mut snoop, "**").await["op"], "ok");

    requester
        .send(json!({"op": "req", "id": "r", "topic": "svc/echo", "data": "hi"}))
        .await;
    let m = responder.recv_op("msg").await;
    let inbox = m["reply_to"].as_str().unwrap().to_string();
    assert!(inbox.starts_with("$inbox/"), "{m}");
    // A guessed inbox goes nowhere; the real one answers the requester only.
    let guess = snoop
        .request(json!({"op": "pub", "topic": "$inbox/0123456789abcdef", "data": "fake"}))
        .await;
    assert_eq!(guess["duplicate"], true, "{guess}");
    let ok = responder
        .request(json!({"op": "pub", "topic": inbox, "data": "pong"}))
        .await;
    assert_eq!(ok["op"], "ok", "{ok}");
    let reply = requester.recv_op("reply").await;
    assert_eq!(reply["data"], "pong");
    // The snoop saw the request (it may read `svc/echo`) but never the reply.
    let mut seen = Vec::new();
    while let Some(f) = snoop.recv_within(Duration::from_millis(200)).await {
        seen.push(f);
    }
    assert!(
        seen.iter()
            .all(|f| !f["topic"].as_str().unwrap_or("").starts_with('$')),
        "{seen:?}"
    );
}

#[tokio::test]
async fn presence_shows_the_token_identity() {
    let server = server().await;
    let mut t = claims("kim", &[], &["room/1"]);
    t["info"] = json!({"name": "Kim"});
    let mut c = connect_token(&server, &hs256(&t)).await;
    c.hello().await;
    assert_eq!(try_sub(&mut c, "room/1").await["op"], "ok");
    let p = c
        .request(json!({"op": "presence", "topic": "room/1"}))
        .await;
    assert_eq!(p["count"], 1, "{p}");
    assert_eq!(p["clients"][0]["user"], "kim");
    assert_eq!(p["clients"][0]["info"]["name"], "Kim");
}

#[tokio::test]
async fn http_api_needs_keys_and_respects_token_permissions() {
    let server = server().await;
    let h = http();
    let publish = |key: Option<String>, topic: &str| {
        let mut r = h
            .post(server.http("/v1/publish"))
            .json(&json!({"topic": topic, "data": 1}));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };
    let status = |r: reqwest::Response| r.status().as_u16();

    let r = publish(None, "a/b").await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    assert_eq!(
        status(publish(Some("wrong".into()), "a/b").await.unwrap()),
        401
    );
    assert_eq!(
        status(publish(Some("api-key-1".into()), "a/b").await.unwrap()),
        200
    );
    assert_eq!(
        status(publish(Some("admin-key-1".into()), "a/b").await.unwrap()),
        200
    );
    let token = hs256(&claims("lee", &["a/**"], &["a/**"]));
    assert_eq!(
        status(publish(Some(token.clone()), "a/b").await.unwrap()),
        200
    );
    let r = publish(Some(token.clone()), "z/b").await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden", "{body}");
    let mut expired = claims("lee", &["a/**"], &[]);
    expired["exp"] = json!(now() - 5);
    assert_eq!(
        status(publish(Some(hs256(&expired)), "a/b").await.unwrap()),
        401
    );

    // Batches check each item.
    let r: Value = h
        .post(server.http("/v1/publish/batch"))
        .bearer_auth(&token)
        .json(&json!([{"topic": "a/1", "data": 1}, {"topic": "z/1", "data": 1}]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(r[0]["offset"].is_u64(), "{r}");
    assert_eq!(r[1]["error"]["code"], "forbidden", "{r}");

    // Listings are for admin keys.
    for path in ["/v1/stats", "/v1/topics", "/v1/presence?topic=a/b"] {
        let get = |k: &str| h.get(server.http(path)).bearer_auth(k.to_string()).send();
        assert_eq!(status(get("admin-key-1").await.unwrap()), 200, "{path}");
        assert_eq!(status(get("api-key-1").await.unwrap()), 403, "{path}");
        assert_eq!(status(get(&token).await.unwrap()), 403, "{path}");
        assert_eq!(
            status(h.get(server.http(path)).send().await.unwrap()),
            401,
            "{path}"
        );
    }
    // History: keys, or a token that may read the topic.
    let hist = |k: &str, topic: &str| {
        h.get(server.http(&format!("/v1/history?topic={topic}")))
            .bearer_auth(k.to_string())
            .send()
    };
    assert_eq!(status(hist("api-key-1", "a/b").await.unwrap()), 200);
    assert_eq!(status(hist(&token, "a/b").await.unwrap()), 200);
    assert_eq!(status(hist(&token, "z/b").await.unwrap()), 403);
    // Health checks stay open.
    assert_eq!(
        status(h.get(server.http("/healthz")).send().await.unwrap()),
        200
    );
}

#[tokio::test]
async fn origin_allow_list_applies_to_browsers() {
    let mut c = auth_config(Permissions::default());
    if let Some(a) = &mut c.auth {
        a.origins = Some(vec!["https://app.example".into()]);
    }
    let server = TestServer::with_config(c).await;
    let with_origin = |origin: &'static str| {
        let mut req = server.ws_url().into_client_request().unwrap();
        req.headers_mut()
            .insert("Origin", HeaderValue::from_static(origin));
        tokio_tungstenite::connect_async(req)
    };
    match with_origin("https://evil.example").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status().as_u16(), 403)
        }
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    assert!(with_origin("https://app.example").await.is_ok());
    assert!(with_origin("https://APP.example/").await.is_ok());
    // Not a browser: no Origin, no objection.
    server.connect().await.hello().await;
}

#[tokio::test]
async fn without_auth_everything_is_open_but_system_topics_keep_their_rules() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    assert_eq!(try_sub(&mut c, "**").await["op"], "ok");
    assert_eq!(try_pub(&mut c, "any/topic").await["op"], "ok");
    let e = try_pub(&mut c, "$sys/x").await;
    assert_forbidden(&e, "pub $sys/x");
    // A token is not needed, and not looked at.
    let mut c = Raw::connect(&format!("{}?token=whatever", server.ws_url())).await;
    c.hello().await;
    let r = http().get(server.http("/v1/stats")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
}
