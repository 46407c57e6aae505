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
