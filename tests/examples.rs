//! The examples, run the way a user would: a real server, the example binaries.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Binary;

fn example(name: &str) -> PathBuf {
    // tests run from target/<profile>/deps; cargo builds examples into target/<profile>/examples
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "example {name} not built at {}",
        path.display()
    );
    path
}

#[test]
fn subscribe_sees_what_broadcast_publishes() {
    let server = Binary::spawn(&["--listen", "127.0.0.1:0"]);
    let url = server.ws_url();
    let mut sub = Command::new(example("subscribe"))
        .args([&url, "orders/*/created", "--count", "6"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.starts_with("subscribed to orders/*/created"),
        "{first}"
    );

    let out = Command::new(example("broadcast"))
        .args([&url, "6"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let published = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        published
            .lines()
            .filter(|l| l.starts_with("published orders/"))
            .count(),
        6
    );

    let got: Vec<String> = lines.by_ref().take(6).map(|l| l.unwrap()).collect();
    assert_eq!(got.len(), 6);
    for (i, line) in got.iter().enumerate() {
        assert!(line.starts_with(&format!("#{} orders/", i + 1)), "{line}");
        assert!(line.contains("\"amount_cents\""), "{line}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = sub.try_wait().unwrap() {
            assert!(status.success());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "subscribe did not exit after --count"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn workers_share_jobs_and_each_is_done_once() {
    let server = Binary::spawn(&["--listen", "127.0.0.1:0"]);
    let url = server.ws_url();
    let mut workers: Vec<_> = (0..2)
        .map(|_| {
            let mut w = Command::new(example("worker"))
                .args([&url, "jobs/**", "--count", "5"])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut lines = BufReader::new(w.stdout.take().unwrap()).lines();
            let first = lines.next().unwrap().unwrap();
            assert!(first.starts_with("worker ready"), "{first}");
            (w, lines)
        })
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for i in 0..10 {
            let r = common::http()
                .post(format!("http://{}/v1/publish", server.addr))
                .json(&serde_json::json!({"topic": "jobs/resize", "data": {"job": i}}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    });
    let mut done = Vec::new();
    for (w, lines) in &mut workers {
        let got: Vec<String> = lines.by_ref().take(5).map(|l| l.unwrap()).collect();
        assert_eq!(got.len(), 5, "{got:?}");
        done.extend(got);
        assert!(w.wait().unwrap().success());
    }
    let mut jobs: Vec<u64> = done
        .iter()
        .map(|l| {
            let json = &l[l.find('{').unwrap()..];
            serde_json::from_str::<serde_json::Value>(json).unwrap()["job"]
                .as_u64()
                .unwrap()
        })
        .collect();
    jobs.sort();
    assert_eq!(jobs, (0..10).collect::<Vec<u64>>());
}

#[test]
fn rpc_call_gets_the_service_answer() {
    let server = Binary::spawn(&["--listen", "127.0.0.1:0"]);
    let url = server.ws_url();
    let out = Command::new(example("rpc"))
        .args(["call", &url, "nobody"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no_responders"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut service = Command::new(example("rpc"))
        .args(["serve", &url])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(service.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "serving rpc/upper");
    let out = Command::new(example("rpc"))
        .args(["call", &url, "hello herald"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "reply HELLO HERALD"
    );
    let _ = service.kill();
    let _ = service.wait();
}

/// A child process killed when the test ends, passed or not.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn chat_backend_logs_in_moderates_and_refuses_without_a_cookie() {
    use serde_json::json;
    use std::sync::{Arc, Mutex};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let mut backend = Killed(
        Command::new(example("chat_backend"))
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(backend.0.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = out.clone();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            sink.lock().unwrap().push(l);
        }
    });

    // The example's config as shipped, with the backend's port.
    let toml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/chat_backend.toml"
    ))
    .unwrap()
    .replace("127.0.0.1:9000", &addr);
    let config =
        std::env::temp_dir().join(format!("herald-chat-backend-{}.toml", std::process::id()));
    std::fs::write(&config, toml).unwrap();
    let server = Binary::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--config",
        config.to_str().unwrap(),
    ]);
    std::fs::remove_file(&config).unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let login = common::http()
            .post(format!("http://{addr}/login"))
            .json(&json!({"name": "ann"}))
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), 200);
        let set_cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
        let cookie = set_cookie.split(';').next().unwrap();

        let mut req = server.ws_url().into_client_request().unwrap();
        req.headers_mut().insert("cookie", cookie.parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let mut ann = common::Raw { ws };
        let session = ann.hello().await["session"].clone();
        ann.sub("chat/general").await;
        ann.publish(
            "chat/general",
            json!({"text": "darn it, Heck", "from": "bob"}),
        )
        .await;
        let m = ann.recv_op("msg").await;
        let data = &m["data"];
        assert_eq!(data["text"], "**** it, ****", "{m}");
        assert_eq!(data["from"], "ann", "the backend says who sent it: {m}");
        assert_eq!(data["session"], session);
        assert!(data["id"].is_string(), "{m}");
        let r = ann
            .request(json!({"op": "pub", "topic": "chat/general", "data": {"text": " "}}))
            .await;
        assert_eq!(r["code"], "bad_request", "{r}");
        let r = ann
            .request(json!({"op": "sub", "pattern": "chat/admin"}))
            .await;
        assert_eq!(r["message"], "chat/admin is for admins only", "{r}");
        ann.send(json!({"op": "rpc", "id": "w", "method": "whoami", "data": null}))
            .await;
        let reply = ann.recv_op("reply").await;
        assert_eq!(reply["data"], json!({"user": "ann", "admin": false}));

        // No cookie, or one the backend did not sign: the hello is refused with 4001.
        for cookie in [None, Some("chat_user=ann.00ff")] {
            let mut req = server.ws_url().into_client_request().unwrap();
            if let Some(c) = cookie {
                req.headers_mut().insert("cookie", c.parse().unwrap());
            }
            let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
            let mut c = common::Raw { ws };
            c.send(json!({"op": "hello"})).await;
            let (code, seen) = c.expect_close().await;
            assert_eq!(code, 4001, "{cookie:?}: {seen:?}");
            assert_eq!(seen[0]["code"], "unauthorized");
            assert_eq!(seen[0]["message"], "log in first");
        }
    });

    // The backend prints only webhook batches whose signature holds.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let want = |l: &String| l.starts_with("event session.opened ") && l.contains(r#""user":"ann""#);
    while !out.lock().unwrap().iter().any(want) {
        assert!(
            std::time::Instant::now() < deadline,
            "no signed session.opened for ann: {:?}",
            out.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
