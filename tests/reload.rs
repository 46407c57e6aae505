//! Configuration reloads on SIGHUP with the real binary: connections stay up, new settings
//! apply, a bad file changes nothing and says why; and the `herald config` commands an
//! operator runs before sending the signal.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("herald-reload-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn start(config: &Path) -> Binary {
    Binary::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--config",
        config.to_str().unwrap(),
    ])
}

fn http_url(bin: &Binary, path: &str) -> String {
    format!("http://{}{}", bin.addr, path)
}

/// JSON log lines from index `from` on.
fn logs_since(bin: &Binary, from: usize) -> Vec<Value> {
    bin.log.lock().unwrap()[from..]
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn message(v: &Value) -> &str {
    v["fields"]["message"].as_str().unwrap_or("")
}

/// Sends SIGHUP and waits for the reload's final log line; returns every line it logged.
async fn sighup(bin: &Binary) -> Vec<Value> {
    let from = bin.log.lock().unwrap().len();
    bin.signal("HUP");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let lines = logs_since(bin, from);
        let done = lines.iter().any(|v| {
            let m = message(v);
            m == "configuration reloaded" || m.starts_with("configuration not reloaded")
        });
        if done {
            return lines;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no reload logged: {lines:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `sub` and returns the answer.
async fn try_sub(c: &mut Raw, pattern: &str) -> Value {
    c.request(json!({"op": "sub", "pattern": pattern})).await
}

#[tokio::test]
async fn reload_changes_max_subscriptions_and_keeps_connections() {
    let file = temp_file("subs.toml", "[limits]\nmax_subscriptions = 5\n");
    let bin = start(&file);
    let mut a = Raw::connect(&bin.ws_url()).await;
    a.hello().await;
    for p in ["x/1", "x/2", "x/3"] {
        a.sub(p).await;
    }
    let mut b = Raw::connect(&bin.ws_url()).await;
    b.hello().await;

    std::fs::write(&file, "[limits]\nmax_subscriptions = 3\n").unwrap();
    let lines = sighup(&bin).await;
    let changed: Vec<&Value> = lines
        .iter()
        .filter(|v| message(v) == "config changed")
        .collect();
    assert_eq!(changed.len(), 1, "{lines:#?}");
    let f = &changed[0]["fields"];
    assert_eq!(
        (&f["key"], &f["old"], &f["new"]),
        (&json!("limits.max_subscriptions"), &json!("5"), &json!("3"))
    );
    assert!(
        !lines.iter().any(|v| message(v).contains("needs a restart")),
        "the --listen flag still wins over the file: {lines:#?}"
    );

    // The open connection is still served, and its next sub meets the new cap.
    let refused = try_sub(&mut a, "x/4").await;
    assert_eq!(
        (&refused["op"], &refused["code"]),
        (&json!("error"), &json!("too_many_subscriptions")),
        "{refused}"
    );
    b.publish("x/1", json!("still here")).await;
    assert_eq!(a.recv_op("msg").await["data"], "still here");
    // So does a new one.
    let mut c = Raw::connect(&bin.ws_url()).await;
    c.hello().await;
    for p in ["y/1", "y/2", "y/3"] {
        c.sub(p).await;
    }
    assert_eq!(
        try_sub(&mut c, "y/4").await["code"],
        "too_many_subscriptions"
    );

    // Raising it again lets the same connection subscribe.
    std::fs::write(&file, "[limits]\nmax_subscriptions = 10\n").unwrap();
    sighup(&bin).await;
    assert_eq!(try_sub(&mut a, "x/4").await["op"], "ok");

    let stats: Value = common::get_json(http_url(&bin, "/v1/stats")).await;
    assert_eq!(
        (&stats["reloads"], &stats["reload_failures"]),
        (&json!(2), &json!(0))
    );
    assert_eq!(stats["connections"], 3);
}

#[tokio::test]
async fn a_bad_file_changes_nothing_and_says_why() {
    let file = temp_file("bad.toml", "[limits]\nmax_subscriptions = 2\n");
    let bin = start(&file);
    let mut a = Raw::connect(&bin.ws_url()).await;
    a.hello().await;
    a.sub("p/1").await;
    a.sub("p/2").await;

    // An unknown key: refused with its line, the old settings stay.
    std::fs::write(
        &file,
        "[limits]\nmax_subscriptions = 9\nmax_subscripshuns = 9\n",
    )
    .unwrap();
    let lines = sighup(&bin).await;
    let err = lines
        .iter()
        .find(|v| message(v).starts_with("configuration not reloaded"))
        .unwrap();
    let text = err["fields"]["error"].as_str().unwrap();
    assert!(
        text.contains("line 3") && text.contains("max_subscripshuns"),
        "{text}"
    );
    assert_eq!(
        try_sub(&mut a, "p/3").await["code"],
        "too_many_subscriptions"
    );

    // A pattern that does not parse: refused, naming the entry and its line.
    std::fs::write(&file, "[[topics]]\npattern = \"chat/**x\"\nhistory = 5\n").unwrap();
    let lines = sighup(&bin).await;
    let err = lines
        .iter()
        .find(|v| message(v).starts_with("configuration not reloaded"))
        .unwrap();
    let text = err["fields"]["error"].as_str().unwrap();
    assert!(
        text.contains("line 2") && text.contains("topics[0].pattern"),
        "{text}"
    );

    // A restart-only setting: the rest applies, that one is reported and kept.
    std::fs::write(
        &file,
        "heartbeat = \"10s\"\n[limits]\nmax_subscriptions = 3\n",
    )
    .unwrap();
    let lines = sighup(&bin).await;
    let warn = lines
        .iter()
        .find(|v| message(v).contains("needs a restart"))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert_eq!(warn["fields"]["key"], "heartbeat");
    assert_eq!(try_sub(&mut a, "p/3").await["op"], "ok");
    let mut fresh = Raw::connect(&bin.ws_url()).await;
    assert_eq!(fresh.hello().await["heartbeat_ms"], 25_000);

    // The connection lived through all of it.
    a.send(json!({"op": "ping", "id": 1})).await;
    assert_eq!(a.recv_op("pong").await["id"], 1);
    let metrics = get_text(http_url(&bin, "/metrics")).await;
    assert!(
        metrics.contains("herald_config_reloads_total{result=\"failed\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("herald_config_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn reload_applies_topic_settings_to_known_and_new_topics() {
    let file = temp_file("topics.toml", "");
    let bin = start(&file);
    let mut sub = Raw::connect(&bin.ws_url()).await;
    sub.hello().await;
    sub.sub("chat/*").await;
    let publish = |topic: &'static str, n: u64| {
        let url = http_url(&bin, "/v1/publish");
        async move {
            let res = http()
                .post(url)
                .json(&json!({"topic": topic, "data": n}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
        }
    };
    let history = |topic: &'static str| {
        let url = http_url(&bin, &format!("/v1/history?topic={topic}"));
        async move {
            let v: Value = common::get_json(url).await;
            v["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["data"].as_u64().unwrap())
                .collect::<Vec<u64>>()
        }
    };
    publish("chat/a", 1).await;
    assert_eq!(
        history("chat/a").await,
        Vec::<u64>::new(),
        "no history by default"
    );

    std::fs::write(&file, "[[topics]]\npattern = \"chat/**\"\nhistory = 10\n").unwrap();
    let lines = sighup(&bin).await;
    assert!(
        lines
            .iter()
            .any(|v| v["fields"]["key"] == "topics[0].history"),
        "{lines:#?}"
    );
    publish("chat/a", 2).await; // a topic known before the reload
    publish("chat/b", 3).await; // a topic first used after it
    assert_eq!(history("chat/a").await, vec![2]);
    assert_eq!(history("chat/b").await, vec![3]);
    for n in [1, 2, 3] {
        assert_eq!(sub.recv_op("msg").await["data"], n);
    }
}

fn herald(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env_remove("HERALD_LISTEN")
        .env_remove("HERALD_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What an operator runs before `kill -HUP`: check the file, see the effective settings.
#[test]
fn config_check_and_show_from_the_command_line() {
    let good = temp_file("good.toml", "[limits]\nmax_subscriptions = 42\n");
    let good_arg = good.to_str().unwrap();
    let (code, out, err) = herald(&["config", "check", good_arg]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(out, format!("ok: {good_arg}\n"));

    let bad = temp_file(
        "bad-check.toml",
        "[session]\nttl = \"2m\"\nbuffer_msgs = 3\n[[topics]]\npattern = \"a/{b\"\n",
    );
    let bad_arg = bad.to_str().unwrap();
    let (code, out, err) = herald(&["config", "check", bad_arg]);
    assert_eq!((code, out.as_str()), (1, ""));
    // Every error, in line order.
    assert_eq!(
        err,
        format!(
            "error: {bad_arg}: line 3: unknown key `buffer_msgs` in [session]\n\
             error: {bad_arg}: line 5: `topics[0].pattern`: unbalanced '{{' in segment '{{b'\n"
        )
    );
    let bad_pattern = temp_file("bad-pattern.toml", "\n[[topics]]\npattern = \"a/{b\"\n");
    let (code, _, err) = herald(&["config", "check", bad_pattern.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("line 3: `topics[0].pattern`"),
        "the error names the key and its line: {err}"
    );

    // The effective configuration: the file, with flags on top.
    let (code, out, _) = herald(&[
        "config",
        "show",
        "--config",
        good_arg,
        "--listen",
        "127.0.0.1:9",
    ]);
    assert_eq!(code, 0);
    let shown = herald::Config::from_toml_str(&out).unwrap();
    assert_eq!(shown.listen, "127.0.0.1:9".parse().unwrap());
    assert_eq!(shown.limits.max_subscriptions, 42);
    assert_eq!(
        shown.session.buffer_messages, 1024,
        "defaults are shown too"
    );

    // The sample configuration in the repository passes the check.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("herald.example.toml");
    let (code, _, err) = herald(&["config", "check", example.to_str().unwrap()]);
    assert_eq!((code, err.as_str()), (0, ""));
}

async fn http_publish(bin: &Binary, key: &str, topic: &str, data: Value) -> u16 {
    http()
        .post(http_url(bin, "/v1/publish"))
        .bearer_auth(key)
        .json(&json!({"topic": topic, "data": data}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Rotating API keys and widening anonymous permissions by SIGHUP: open connections stay
/// up, the new keys work at once and the old ones no longer do, and connections opened after
/// the reload get the new permissions.
#[tokio::test]
async fn reload_applies_new_keys_and_permissions() {
    let auth = |key: &str, subscribe: &str| {
        format!(
            "[auth]\nhs256_secret = \"s3cret\"\napi_keys = [\"{key}\"]\n\
             [auth.anonymous]\nsubscribe = [{subscribe}]\n"
        )
    };
    let file = temp_file("auth.toml", &auth("key-1", "\"public/**\""));
    let bin = start(&file);
    let mut a = Raw::connect(&bin.ws_url()).await;
    a.hello().await;
    a.sub("public/news").await;
    assert_eq!(try_sub(&mut a, "private/x").await["code"], "forbidden");
    assert_eq!(
        http_publish(&bin, "key-1", "public/news", json!(1)).await,
        200
    );
    assert_eq!(
        http_publish(&bin, "key-2", "public/news", json!(0)).await,
        401
    );

    std::fs::write(&file, auth("key-2", "\"public/**\", \"private/**\"")).unwrap();
    let lines = sighup(&bin).await;
    assert!(
        lines
            .iter()
            .any(|v| v["fields"]["key"] == "auth.api_keys" && v["fields"]["new"] == "(hidden)"),
        "the change is logged without the key: {lines:#?}"
    );
    assert!(
        !bin.log.lock().unwrap().iter().any(|l| l.contains("key-2")),
        "keys never reach the log"
    );
    assert_eq!(
        http_publish(&bin, "key-1", "public/news", json!(0)).await,
        401
    );
    assert_eq!(
        http_publish(&bin, "key-2", "public/news", json!(2)).await,
        200
    );
    // The open connection lived through the reload and still receives.
    assert_eq!(a.recv_op("msg").await["data"], 1);
    assert_eq!(a.recv_op("msg").await["data"], 2);
    // A connection opened now has the new anonymous permissions.
    let mut b = Raw::connect(&bin.ws_url()).await;
    b.hello().await;
    assert_eq!(try_sub(&mut b, "private/x").await["op"], "ok");

    // An [auth] that does not compile changes nothing.
    std::fs::write(
        &file,
        "[auth]\npublic_key_file = \"/nonexistent/key.pem\"\napi_keys = [\"key-3\"]\n",
    )
    .unwrap();
    let lines = sighup(&bin).await;
    assert!(
        lines
            .iter()
            .any(|v| message(v).starts_with("configuration not reloaded")),
        "{lines:#?}"
    );
    assert_eq!(
        http_publish(&bin, "key-2", "public/news", json!(3)).await,
        200
    );
    assert_eq!(
        http_publish(&bin, "key-3", "public/news", json!(0)).await,
        401
    );
}

/// An HS256 token for `sub`, allowed `feed/**` both ways, valid for an hour.
fn token(secret: &str, sub: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let claims = json!({"sub": sub, "exp": exp, "publish": ["feed/**"], "subscribe": ["feed/**"]});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// Connects and says hello with `token`; returns the connection and the answer (`welcome`,
/// or the `error` of a refused token).
async fn hello_with(bin: &Binary, token: &str) -> (Raw, Value) {
    let mut c = Raw::connect(&bin.ws_url()).await;
    c.send(json!({"op": "hello", "token": token})).await;
    let answer = c.recv().await;
    (c, answer)
}

/// Rotating `hs256_secret` by SIGHUP: tokens signed with the new secret are accepted from
/// then on and tokens signed with the old one are refused (WebSocket and HTTP), while a
/// connection that said hello with an old token before the reload stays up and keeps the
/// permissions it was granted.
#[tokio::test]
async fn rotating_the_hs256_secret_applies_to_new_connections() {
    let file = temp_file("rotate.toml", "[auth]\nhs256_secret = \"old-secret\"\n");
    let bin = start(&file);
    let (old, new) = (token("old-secret", "alice"), token("new-secret", "bob"));
    let (_, refused) = hello_with(&bin, &new).await;
    assert_eq!(refused["code"], "unauthorized", "{refused}");
    let (mut kept, welcome) = hello_with(&bin, &old).await;
    assert_eq!(welcome["op"], "welcome", "{welcome}");
    kept.sub("feed/a").await;

    std::fs::write(&file, "[auth]\nhs256_secret = \"new-secret\"\n").unwrap();
    let lines = sighup(&bin).await;
    assert!(
        lines
            .iter()
            .any(|v| v["fields"]["key"] == "auth.hs256_secret" && v["fields"]["new"] == "(hidden)"),
        "the change is logged without the secret: {lines:#?}"
    );
    assert!(
        !bin.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("new-secret")),
        "secrets never reach the log"
    );

    // New connections: the old secret's tokens are refused, the new one's accepted.
    let (mut late, refused) = hello_with(&bin, &old).await;
    assert_eq!(refused["code"], "unauthorized", "{refused}");
    assert_eq!(late.expect_close().await.0, 4001);
    let (mut fresh, welcome) = hello_with(&bin, &new).await;
    assert_eq!(welcome["op"], "welcome", "{welcome}");
    assert_eq!(http_publish(&bin, &old, "feed/a", json!("old")).await, 401);
    assert_eq!(http_publish(&bin, &new, "feed/a", json!("http")).await, 200);

    // The connection opened with the old token is still up, receives, and may still
    // publish within what its token granted.
    assert_eq!(kept.recv_op("msg").await["data"], "http");
    fresh.sub("feed/b").await;
    fresh.publish("feed/a", json!("ws")).await;
    assert_eq!(kept.recv_op("msg").await["data"], "ws");
    kept.publish("feed/b", json!("kept")).await;
    assert_eq!(fresh.recv_op("msg").await["data"], "kept");
}

/// Sends `n` publishes back to back on `c`, then returns how many were accepted and the
/// error codes of the others.
async fn publish_burst(c: &mut Raw, n: usize) -> (usize, Vec<String>) {
    for i in 0..n {
        c.send(json!({"op": "pub", "id": format!("b{i}"), "topic": "rate/x", "data": i}))
            .await;
    }
    let mut accepted = 0;
    let mut refused = Vec::new();
    for i in 0..n {
        let answer = c.recv_op_id(&format!("b{i}")).await;
        match answer["op"].as_str() {
            Some("ok") => accepted += 1,
            _ => refused.push(answer["code"].as_str().unwrap_or_default().to_owned()),
        }
    }
    (accepted, refused)
}

#[tokio::test]
async fn reload_changes_the_publish_rate_of_open_connections() {
    let file = temp_file("rate.toml", "[limits]\npublish_rate = 1000\n");
    let bin = start(&file);
    let mut a = Raw::connect(&bin.ws_url()).await;
    a.hello().await;
    assert_eq!(publish_burst(&mut a, 20).await, (20, vec![]));

    // Lowered to 2 per second (bursts of 4): the same connection is held to it at once.
    std::fs::write(&file, "[limits]\npublish_rate = 2\n").unwrap();
    sighup(&bin).await;
    let (accepted, refused) = publish_burst(&mut a, 7).await;
    assert!((4..=5).contains(&accepted), "accepted {accepted}");
    assert_eq!(refused.len(), 7 - accepted);
    assert!(refused.iter().all(|c| c == "rate_limited"), "{refused:?}");

    // Lifted (0: unlimited): the same connection publishes freely again.
    std::fs::write(&file, "[limits]\npublish_rate = 0\n").unwrap();
    sighup(&bin).await;
    assert_eq!(publish_burst(&mut a, 50).await, (50, vec![]));
}

#[tokio::test]
async fn a_bad_auth_section_is_refused_at_its_line() {
    let file = temp_file("auth-line.toml", "[auth]\nhs256_secret = \"a-secret\"\n");
    let bin = start(&file);
    let missing = std::env::temp_dir().join("herald-reload-test-no-such-key.pem");
    std::fs::write(
        &file,
        format!(
            "[auth]\nhs256_secret = \"a-secret\"\npublic_key_file = \"{}\"\n",
            missing.display()
        ),
    )
    .unwrap();
    let lines = sighup(&bin).await;
    let err = lines
        .iter()
        .find(|v| message(v).starts_with("configuration not reloaded"))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    let text = err["fields"]["error"].as_str().unwrap();
    assert!(
        text.contains("line 3") && text.contains("auth.public_key_file"),
        "{text}"
    );
}
