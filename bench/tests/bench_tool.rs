//! The `herald-bench` binary against a real Herald server on an ephemeral port: every
//! scenario reports deliveries with zero loss, and `herald-bench report` turns the results into
//! the BENCHMARKS.md section and its chart. No timing is asserted: figures are for benchmarks.
//!
//! The server runs inside this test process (the `herald` crate, on its own runtime), so the
//! test needs no other binary; `--server-pid` is this process, which is the server and an idle
//! test harness.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_herald-bench");

/// Starts a Herald server on 127.0.0.1:0 on a thread of its own; returns its WebSocket URL.
/// It lives until the test process exits.
fn start_server() -> String {
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let config = herald::Config {
                listen: "127.0.0.1:0".parse().unwrap(),
                ..Default::default()
            };
            let server = herald::Server::bind(config).await.unwrap();
            tx.send(server.local_addr()).unwrap();
            server.run().await.unwrap();
        });
    });
    let addr = rx.recv().expect("the server started");
    format!("ws://{addr}/ws")
}

/// A scratch folder removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("herald-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `herald-bench ARGS --json FILE`; returns the parsed report.
fn bench(args: &[&str], json: &Path) -> Value {
    let out = Command::new(BENCH)
        .args(args)
        .arg("--json")
        .arg(json)
        .output()
        .expect("run herald-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "herald-bench {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    assert_eq!(report["errors"], serde_json::json!([]), "{stdout}");
    report
}

fn assert_lossless(r: &Value, subscribers: u64) {
    let published = r["published"].as_u64().unwrap();
    assert!(published > 0, "nothing published: {r}");
    assert_eq!(r["expected"].as_u64().unwrap(), published * subscribers);
    assert_eq!(r["received"], r["expected"], "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["gap_reported"], 0, "{r}");
    assert!(r["deliveries_per_sec"].as_f64().unwrap() > 0.0);
}

#[test]
fn every_scenario_delivers_without_loss_and_the_report_is_written() {
    let url = start_server();
    let pid = std::process::id().to_string();
    let dir = Scratch::new("all");
    let common = [
        "--url",
        url.as_str(),
        "--server-pid",
        pid.as_str(),
        "--duration",
        "300ms",
        "--drain",
        "10s",
        "--sources",
        "4",
    ];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        common
            .iter()
            .copied()
            .chain(extra.iter().copied())
            .collect()
    };

    let fanout = bench(
        &[&["fanout"][..], &with(&["--subscribers", "8"])].concat(),
        &dir.0.join("herald-fanout.json"),
    );
    assert_eq!(fanout["scenario"], "fanout");
    assert_eq!(fanout["target"], "herald");
    assert_lossless(&fanout, 8);
    assert!(fanout["server_cpu"].as_f64().is_some(), "{fanout}");

    let fanin = bench(
        &[&["fanin"][..], &with(&["--publishers", "6"])].concat(),
        &dir.0.join("herald-fanin.json"),
    );
    assert_lossless(&fanin, 1);

    let topics = bench(
        &[
            &["topics"][..],
            &with(&["--subscribers", "3", "--publishers", "2", "--topics", "50"]),
        ]
        .concat(),
        &dir.0.join("herald-topics.json"),
    );
    assert_eq!(topics["topics"], 50);
    assert_lossless(&topics, 3);

    let latency = bench(
        &[
            &["latency"][..],
            &with(&["--subscribers", "4", "--rate", "4000", "--warmup", "0s"]),
        ]
        .concat(),
        &dir.0.join("herald-latency.json"),
    );
    assert_lossless(&latency, 4);
    let l = &latency["latency"];
    assert!(l["samples"].as_u64().unwrap() > 0, "{latency}");
    assert!(l["p50_us"].as_f64().unwrap() <= l["p99_us"].as_f64().unwrap());
    assert!(l["p99_us"].as_f64().unwrap() <= l["max_us"].as_f64().unwrap());

    let idle = bench(
        &[
            "idle",
            "--url",
            &url,
            "--server-pid",
            &pid,
            "--connections",
            "40",
            "--sources",
            "4",
        ],
        &dir.0.join("herald-idle.json"),
    );
    assert_eq!(idle["connections"], 40);
    assert!(idle["rss_after"].as_u64().unwrap() > 0, "{idle}");
    assert!(idle["rss_per_connection"].as_f64().is_some(), "{idle}");

    // The report: a section between the markers, the rest of the file kept, and a chart.
    let md = dir.0.join("BENCHMARKS.md");
    std::fs::write(
        &md,
        "# Benchmarks\n\nkept\n\n<!-- compare:begin -->\nold\n<!-- compare:end -->\n",
    )
    .unwrap();
    let svg = dir.0.join("bench").join("compare.svg");
    let results: Vec<PathBuf> = ["fanout", "fanin", "topics", "latency", "idle"]
        .iter()
        .map(|s| dir.0.join(format!("herald-{s}.json")))
        .collect();
    let out = Command::new(BENCH)
        .arg("report")
        .args(&results)
        .arg("--out")
        .arg(&md)
        .arg("--svg")
        .arg(&svg)
        .args(["--date", "today", "--fact", "a fact"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&md).unwrap();
    assert!(text.starts_with("# Benchmarks\n\nkept\n"), "{text}");
    assert!(!text.contains("\nold\n"), "{text}");
    assert!(
        text.contains("| fan-out (1 pub → 8 subs, 100 B) |"),
        "{text}"
    );
    assert!(text.contains("- a fact"), "{text}");
    assert!(text.contains("](bench/compare.svg)"), "{text}");
    assert!(text.trim_end().ends_with("<!-- compare:end -->"), "{text}");
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(
        chart.starts_with("<svg") && chart.contains("Herald"),
        "{chart}"
    );
}

#[test]
fn bad_options_are_refused_with_a_message() {
    let out = Command::new(BENCH)
        .args(["topics", "--target", "socketio"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wildcard"), "{err}");

    let out = Command::new(BENCH)
        .args(["fanout", "--size", "4"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--size"));

    // Nothing listens on this port: a clear error, not a hang or a panic.
    let out = Command::new(BENCH)
        .args(["fanout", "--url", "ws://127.0.0.1:1/ws"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("herald-bench:"));
}

#[test]
fn subscribers_on_other_urls_than_the_publisher() {
    // Two servers that share nothing would deliver nothing across: every URL is the same
    // server's (the test checks the spreading, the options and the report, not a cluster).
    let url = start_server();
    let pid = std::process::id().to_string();
    let dir = Scratch::new("sub-url");
    let mut reports = Vec::new();
    for (scenario, extra) in [
        ("fanout", &[][..]),
        ("latency", &["--rate", "2000", "--warmup", "0s"][..]),
        ("overload", &[][..]),
    ] {
        let json = dir.0.join(format!("cluster-{scenario}.json"));
        let args: Vec<&str> = [
            scenario,
            "--url",
            &url,
            "--sub-url",
            &url,
            "--sub-url",
            &url,
            "--server-pid",
            &pid,
            "--server-pid",
            &pid,
            "--subscribers",
            "5",
            "--duration",
            "300ms",
            "--drain",
            "10s",
            "--settle",
            "50ms",
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
        let r = bench(&args, &json);
        assert_lossless(&r, 5);
        assert_eq!(r["sub_urls"], serde_json::json!([url, url]), "{r}");
        assert_eq!(r["settle_ms"], 50, "{r}");
        // 5 subscribers round-robin: 3 on the first URL, 2 on the second.
        let per: Vec<u64> = r["received_per_sub_url"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let each = r["published"].as_u64().unwrap();
        assert_eq!(per, vec![3 * each, 2 * each], "{r}");
        assert_eq!(r["server_processes"].as_array().unwrap().len(), 2, "{r}");
        reports.push(json);
    }

    let md = dir.0.join("BENCHMARKS.md");
    let out = Command::new(BENCH)
        .arg("report")
        .args(&reports)
        .arg("--out")
        .arg(&md)
        .arg("--svg")
        .arg(dir.0.join("compare.svg"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&md).unwrap();
    assert!(text.contains("3-node clusters"), "{text}");
    assert!(text.contains("| saturation (closed loop) |"), "{text}");
    assert!(text.contains("| overload (publisher flat out) |"), "{text}");
    assert!(!text.contains("| fan-in"), "no single-server table: {text}");

    // Scenarios that have no subscribers of their own refuse it.
    let out = Command::new(BENCH)
        .args(["idle", "--sub-url", &url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--sub-url"));
}
