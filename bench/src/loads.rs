//! The table of loads in the report: labelled `latency` runs (a fixed offered load both
//! servers should carry without loss) and `overload` runs (publishers flat out), Herald and
//! NATS side by side per load. This is where the cost a deployment pays shows: server CPU
//! per delivery and write system calls per delivery at the rates people run, and goodput
//! when offered more than a core can write.

use std::fmt::Write;

use super::args::Scenario;
use super::fmt::{fmt_rate, fmt_ratio, fmt_us, goal_cell, ratio};
use super::proto::Target;
use super::report::Report;

/// The load whose efficiency and p99 have goals (issue 26): 10k publishes/s to 100.
pub const GOAL_LOAD: &str = "1M/s";
const GOAL_EFFICIENCY: f64 = 3.0;
const GOAL_P99_US: f64 = 3000.0;

/// Appends the table (nothing when no run is labelled).
pub fn table(reports: &[Report], s: &mut String) {
    let mut labels: Vec<&str> = Vec::new();
    // Only the fan-out shape's runs: a labelled run of another scenario has its own table.
    let reports: Vec<&Report> = reports
        .iter()
        .filter(|r| matches!(r.scenario, Scenario::Latency | Scenario::Overload) && !r.is_cluster())
        .collect();
    for r in &reports {
        if let Some(l) = r.label.as_deref()
            && !labels.contains(&l)
        {
            labels.push(l);
        }
    }
    if labels.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\n### Loads: fixed rates and overload\n\n\
         Fixed rates: the publisher sends at that rate whatever the server does; overload: it \
         sends as fast as the server reads. Lost: deliveries that had not arrived when the \
         run ended (drops and what was still in flight). Writes: the server's socket write \
         system calls per delivery (`sendto`, `write`, …), counted by `perf stat`.\n\n\
         | load | server | deliveries/s | lost | per server CPU-s | Herald ÷ NATS | p50 µs | p99 µs | p99.9 µs | writes per delivery | goal |\n\
         |---|---|---|---|---|---|---|---|---|---|---|"
    );
    for label in labels {
        let find = |t: Target| {
            reports
                .iter()
                .rev()
                .copied()
                .find(|r| r.target == t && r.label.as_deref() == Some(label))
        };
        let (herald, nats) = (find(Target::Herald), find(Target::Nats));
        let eff = |r: Option<&Report>| {
            r.filter(|r| r.errors.is_empty())
                .and_then(|r| r.deliveries_per_server_cpu_sec)
        };
        let rate = |r: Option<&Report>| {
            r.filter(|r| r.errors.is_empty())
                .map(|r| r.deliveries_per_sec)
        };
        for (t, r) in [(Target::Herald, herald), (Target::Nats, nats)] {
            let Some(r) = r else { continue };
            let (vs, goal) = match t {
                Target::Herald => (fmt_ratio(ratio(eff(herald), eff(nats))), goal_for(r, nats)),
                _ => (String::new(), String::new()),
            };
            let lat = r.latency.as_ref().filter(|l| l.samples > 0);
            let _ = writeln!(
                s,
                "| {label} ({}) | {} | {} | {} | {} | {vs} | {} | {} | {} | {} | {goal} |",
                shape(r),
                t.label(),
                fmt_rate(rate(Some(r))),
                lost(r),
                fmt_rate(eff(Some(r))),
                fmt_us(lat.map(|l| l.p50_us)),
                fmt_us(lat.map(|l| l.p99_us)),
                fmt_us(lat.map(|l| l.p999_us)),
                r.writes_per_delivery()
                    .map(|w| format!("{w:.3}"))
                    .unwrap_or_else(|| "–".into()),
            );
        }
    }
}

/// The goal a Herald run of this load has, and whether it was met.
fn goal_for(herald: &Report, nats: Option<&Report>) -> String {
    if herald.scenario == Scenario::Overload {
        let Some(nats) = nats else {
            return String::new();
        };
        let rate = herald.deliveries_per_sec >= nats.deliveries_per_sec;
        let loss = loss_share(herald) <= loss_share(nats);
        return goal_cell(Some(rate && loss), "≥ NATS deliveries/s, ≤ its loss");
    }
    if herald.label.as_deref() != Some(GOAL_LOAD) {
        return String::new();
    }
    let eff = ratio(
        herald.deliveries_per_server_cpu_sec,
        nats.and_then(|n| n.deliveries_per_server_cpu_sec),
    );
    let p99 = herald.latency.as_ref().map(|l| l.p99_us);
    let met = eff
        .zip(p99)
        .map(|(e, p)| e >= GOAL_EFFICIENCY && p <= GOAL_P99_US);
    goal_cell(met, "≥ 3× NATS per CPU-s, p99 ≤ 3 ms")
}

fn loss_share(r: &Report) -> f64 {
    if r.expected == 0 {
        return 0.0;
    }
    r.lost as f64 / r.expected as f64
}

fn lost(r: &Report) -> String {
    if r.lost == 0 {
        return "0".into();
    }
    format!("{:.1}%", 100.0 * loss_share(r))
}

fn shape(r: &Report) -> String {
    let publishes = match r.target_rate {
        Some(rate) => format!(
            "{}/s",
            fmt_rate(Some((rate / r.subscribers.max(1) as u64) as f64))
        ),
        None => "flat out".into(),
    };
    format!("{publishes} → {} subs, {} B", r.subscribers, r.size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t: Target, label: &str, per_cpu: f64, p99: f64) -> Report {
        serde_json::from_value(serde_json::json!({
            "target": t, "scenario": "latency", "label": label, "url": "ws://x",
            "subscribers": 100, "publishers": 1, "topics": 1, "size": 100,
            "published": 1000, "expected": 100000, "received": 100000, "lost": 0,
            "gap_reported": 0, "seconds": 1.0, "deliveries_per_sec": 100000.0,
            "target_rate": 1000000, "latency": {"samples": 10, "p50_us": 100.0,
            "p99_us": p99, "p999_us": p99, "max_us": p99}, "connections": null,
            "rss_before": null, "rss_after": null, "rss_per_connection": null,
            "server_cpu": 0.5, "tool_cpu": 0.5, "deliveries_per_server_cpu_sec": per_cpu,
            "server_syscalls": {"reads": 10, "writes": 1000}, "errors": []
        }))
        .unwrap()
    }

    #[test]
    fn one_row_per_server_and_load_with_the_goal() {
        let reports = [
            run(Target::Herald, GOAL_LOAD, 3.5e6, 2000.0),
            run(Target::Nats, GOAL_LOAD, 1.0e6, 2500.0),
            run(Target::Herald, "200k/s", 1.0e6, 4000.0),
        ];
        let mut s = String::new();
        table(&reports, &mut s);
        assert_eq!(
            s.matches("| 1M/s (10k/s → 100 subs, 100 B) |").count(),
            2,
            "{s}"
        );
        assert!(s.contains("| 3.50× |"), "{s}");
        assert!(s.contains("p99 ≤ 3 ms: met"), "{s}");
        assert!(s.contains("| 0.010 |"), "writes per delivery: {s}");
        assert_eq!(s.matches("200k/s").count(), 1, "{s}");
    }

    #[test]
    fn a_missed_goal_says_so() {
        let reports = [
            run(Target::Herald, GOAL_LOAD, 2.0e6, 2000.0),
            run(Target::Nats, GOAL_LOAD, 1.0e6, 2500.0),
        ];
        let mut s = String::new();
        table(&reports, &mut s);
        assert!(s.contains("**not met**"), "{s}");
    }

    #[test]
    fn no_labels_no_table() {
        let mut r = run(Target::Herald, "x", 1.0, 1.0);
        r.label = None;
        let mut s = String::new();
        table(&[r], &mut s);
        assert!(s.is_empty());
    }
}
