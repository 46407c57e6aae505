//! The cluster table of the report (`COMPARE_ONLY=cluster bench/compare.sh`): 3-node clusters
//! side by side, the publisher on node 1 (`--url`) and the subscribers on the other nodes
//! (`--sub-url`), so that every delivery crosses from one node to another. Server CPU is that
//! of every process of the cluster (its nodes, and Redis where there is one), all on one core.

use std::fmt::Write;

use super::args::Scenario;
use super::fmt::{fmt_count, fmt_rate, fmt_ratio, fmt_us, ratio};
use super::proto::Target;
use super::report::{Latency, Report};

/// One column of the table: a server, and the label of a variant of its runs (`None`: the
/// plain one).
#[derive(Debug, Clone, PartialEq)]
struct Column {
    target: Target,
    label: Option<String>,
}

impl Column {
    fn title(&self) -> String {
        match (self.target, &self.label) {
            (Target::Herald, None) => "Herald".into(),
            (Target::Nats, None) => "NATS".into(),
            (Target::Socketio, None) => "Socket.IO".into(),
            (t, Some(l)) => format!("{}, {l}", Column::plain(t).title()),
        }
    }

    fn plain(target: Target) -> Column {
        Column {
            target,
            label: None,
        }
    }
}

/// One figure of a run (a row of the table).
type Figure = Box<dyn Fn(&Report) -> Option<f64>>;

/// A run whose figures count: no errors, deliveries made.
fn ok(r: Option<&Report>) -> Option<&Report> {
    r.filter(|r| r.errors.is_empty() && r.received > 0)
}

/// Tool CPU from which a run is taken as limited by the tool rather than the servers.
const BUSY: f64 = 0.9;

/// Appends the table (nothing without cluster runs).
pub fn table(reports: &[Report], s: &mut String) {
    let runs: Vec<&Report> = reports.iter().filter(|r| r.is_cluster()).collect();
    let Some(first) = runs.first() else {
        return;
    };
    // Herald first, each server's variants (labelled runs) next to it, then the peers.
    let mut columns = Vec::new();
    for t in [Target::Herald, Target::Nats, Target::Socketio] {
        columns.push(Column::plain(t));
        for r in runs.iter().filter(|r| r.target == t && r.label.is_some()) {
            let c = Column {
                target: t,
                label: r.label.clone(),
            };
            if !columns.contains(&c) {
                columns.push(c);
            }
        }
    }
    let peers = [Target::Nats, Target::Socketio];
    let find = |c: &Column, sc: Scenario| {
        runs.iter()
            .rev()
            .copied()
            .find(|r| r.target == c.target && r.label == c.label && r.scenario == sc)
    };
    let nodes = first.sub_urls.len();
    let per_node = first.subscribers.div_ceil(nodes.max(1));
    let _ = writeln!(
        s,
        "### Cluster: 3 nodes each, every delivery from one node to another\n\n\
         Herald: 3 nodes sharing a redis-server (`--redis`); NATS: 3 nats-server nodes with \
         routes between them; Socket.IO 4: 3 node processes with `@socket.io/redis-adapter` \
         and a redis-server. The publisher is on node 1, {} subscribers on nodes 2{} ({per_node} \
         each), {} B messages, one topic: node 1 has no subscriber, so every delivery crossed \
         to another node. Every process of a cluster (Redis included) ran on core 1, the load \
         tool on core 0: the figures are what 3 nodes and their broker do with one core \
         between them, which measures the cost of the cross-node path, not added capacity. \
         Server CPU is summed over all the cluster's processes. Lost: deliveries that had not \
         arrived when the run ended. Ratios are Herald ÷ peer (for the µs rows lower is \
         better).\n",
        first.subscribers,
        if nodes > 1 {
            format!("–{}", nodes + 1)
        } else {
            String::new()
        },
        first.size
    );
    let head: Vec<String> = columns.iter().map(Column::title).collect();
    let _ = writeln!(
        s,
        "| scenario | measure | {} | Herald ÷ NATS | Herald ÷ Socket.IO |\n|---|---|{}---|---|",
        head.join(" | "),
        "---|".repeat(columns.len())
    );
    let mut notes = Vec::new();
    for (sc, title) in [
        (Scenario::Fanout, "saturation (closed loop)".to_owned()),
        (Scenario::Latency, steady_title(&runs)),
        (
            Scenario::Overload,
            "overload (publisher flat out)".to_owned(),
        ),
    ] {
        let reports: Vec<Option<&Report>> = columns.iter().map(|c| find(c, sc)).collect();
        if reports.iter().all(Option::is_none) {
            continue;
        }
        let herald_rate = reports[0].and_then(|r| r.target_rate);
        // A peer run at another rate than Herald's says so in each of its cells.
        let at = |r: Option<&Report>| match r.and_then(|r| r.target_rate) {
            Some(rate) if sc == Scenario::Latency && Some(rate) != herald_rate => {
                format!(" (at {}/s)", fmt_count(rate as f64))
            }
            _ => String::new(),
        };
        let mut rows: Vec<(&str, Figure)> = Vec::new();
        let rate_row = match sc {
            Scenario::Fanout => "cross-node deliveries/s (higher is better)",
            Scenario::Latency => "deliveries/s",
            _ => "goodput: deliveries/s (higher is better)",
        };
        rows.push((rate_row, Box::new(|r| Some(r.deliveries_per_sec))));
        if sc != Scenario::Fanout {
            let pick = |f: fn(&Latency) -> f64| {
                move |r: &Report| r.latency.as_ref().filter(|l| l.samples > 0).map(f)
            };
            if sc == Scenario::Latency {
                rows.push(("p50 µs", Box::new(pick(|l| l.p50_us))));
            }
            rows.push(("p99 µs", Box::new(pick(|l| l.p99_us))));
            if sc == Scenario::Latency {
                rows.push(("p99.9 µs", Box::new(pick(|l| l.p999_us))));
            }
        }
        rows.push((
            "deliveries per server CPU-second (all processes)",
            Box::new(|r| r.deliveries_per_server_cpu_sec),
        ));
        for (i, (measure, value)) in rows.iter().enumerate() {
            let v: Vec<Option<f64>> = reports.iter().map(|&r| ok(r).and_then(value)).collect();
            let cells: Vec<String> = v
                .iter()
                .zip(&reports)
                .map(|(&x, &r)| {
                    let text = if measure.contains("µs") {
                        fmt_us(x)
                    } else {
                        fmt_rate(x)
                    };
                    if x.is_some() { text + &at(r) } else { text }
                })
                .collect();
            let vs = |t: Target| {
                let k = columns.iter().position(|c| *c == Column::plain(t));
                fmt_ratio(ratio(v[0], k.and_then(|k| v[k])))
            };
            let _ = writeln!(
                s,
                "| {} | {measure} | {} | {} | {} |",
                if i == 0 { title.as_str() } else { " " },
                cells.join(" | "),
                vs(peers[0]),
                vs(peers[1]),
            );
        }
        let cells: Vec<String> = reports
            .iter()
            .map(|&r| r.map(lost).unwrap_or("–".into()))
            .collect();
        let _ = writeln!(s, "| | lost | {} | | |", cells.join(" | "));
        let cells: Vec<String> = reports.iter().map(|&r| limit(r)).collect();
        let _ = writeln!(
            s,
            "| | what limited it: core 1 (the cluster's processes), core 0 (the tool) | {} | | |",
            cells.join(" | ")
        );
        for (c, r) in columns.iter().zip(&reports) {
            let Some(r) = r else { continue };
            if !r.errors.is_empty() {
                notes.push(format!(
                    "{} {}: {}",
                    c.title(),
                    sc.name(),
                    r.errors.join("; ")
                ));
            }
            if r.gap_reported > 0 {
                notes.push(format!(
                    "{} {}: the server reported {} messages dropped (`gap`)",
                    c.title(),
                    sc.name(),
                    r.gap_reported
                ));
            }
        }
    }
    for n in notes {
        let _ = writeln!(s, "\nNote: {}", n.replace('|', "/"));
    }
}

/// The fixed-rate row's title, from Herald's run (or the first one).
fn steady_title(runs: &[&Report]) -> String {
    let r = runs
        .iter()
        .find(|r| r.scenario == Scenario::Latency && r.target == Target::Herald)
        .or_else(|| runs.iter().find(|r| r.scenario == Scenario::Latency));
    match r.and_then(|r| Some((r.target_rate?, r.subscribers.max(1)))) {
        Some((rate, subs)) => format!(
            "steady {} publishes/s ({} deliveries/s)",
            fmt_count((rate / subs as u64) as f64),
            fmt_count(rate as f64)
        ),
        None => "steady rate".into(),
    }
}

fn lost(r: &Report) -> String {
    if r.lost == 0 {
        return "0".into();
    }
    let share = r.lost as f64 / r.expected.max(1) as f64;
    format!("{} ({:.1}%)", fmt_count(r.lost as f64), 100.0 * share)
}

/// What the run was limited by: the share of core 1 the cluster took (each process's part)
/// and the tool's of core 0.
fn limit(r: Option<&Report>) -> String {
    let Some(r) = r else {
        return "–".into();
    };
    let pct = |c: f64| format!("{:.0}%", c * 100.0);
    let server = r.server_cpu.map(pct).unwrap_or_else(|| "?".into());
    let parts = r
        .processes_text()
        .map(|p| format!(" ({p})"))
        .unwrap_or_default();
    let tool = r.tool_cpu.map(pct).unwrap_or_else(|| "?".into());
    let verdict = match (r.server_cpu, r.tool_cpu) {
        (_, Some(t)) if t >= BUSY => "the tool's core full: ",
        (Some(c), _) if c >= BUSY => "core 1 full: ",
        _ => "neither core full: ",
    };
    format!("{verdict}{server}{parts}; tool {tool}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t: Target, sc: &str, label: Option<&str>, rate: f64, lost: u64) -> Report {
        serde_json::from_value(serde_json::json!({
            "target": t, "scenario": sc, "label": label, "url": "ws://n1",
            "sub_urls": ["ws://n2", "ws://n3"], "received_per_sub_url": [500, 500],
            "subscribers": 30, "publishers": 1, "topics": 1, "size": 100,
            "published": 1000, "expected": 30000, "received": 30000 - lost, "lost": lost,
            "gap_reported": 0, "seconds": 1.0, "deliveries_per_sec": rate,
            "target_rate": if sc == "latency" { Some(300_000) } else { None },
            "latency": {"samples": 10, "p50_us": 100.0, "p99_us": 200.0, "p999_us": 300.0,
            "max_us": 400.0}, "connections": null,
            "rss_before": null, "rss_after": null, "rss_per_connection": null,
            "server_cpu": 0.99, "tool_cpu": 0.5, "deliveries_per_server_cpu_sec": rate,
            "server_processes": [
                {"pid": 1, "name": "herald", "seconds": 0.5, "cpu": 0.5},
                {"pid": 2, "name": "redis-server", "seconds": 0.49, "cpu": 0.49}
            ],
            "errors": []
        }))
        .unwrap()
    }

    #[test]
    fn one_column_per_server_and_variant_with_ratios() {
        let reports = [
            run(Target::Herald, "fanout", None, 2.0e6, 0),
            run(Target::Herald, "fanout", Some("history 100"), 1.5e6, 0),
            run(Target::Nats, "fanout", None, 1.0e6, 0),
            run(Target::Socketio, "fanout", None, 1.0e5, 300),
            run(Target::Herald, "latency", None, 3.0e5, 0),
            run(Target::Nats, "latency", None, 3.0e5, 0),
        ];
        let mut s = String::new();
        table(&reports, &mut s);
        assert!(
            s.contains("| Herald | Herald, history 100 | NATS | Socket.IO |"),
            "{s}"
        );
        assert!(
            s.contains("| 2.00M | 1.50M | 1.00M | 100k | 2.00× | 20× |"),
            "{s}"
        );
        assert!(s.contains("| 0 | 0 | 0 | 300 (1.0%) |"), "{s}");
        assert!(
            s.contains("steady 10k publishes/s (300k deliveries/s)"),
            "{s}"
        );
        assert!(
            s.contains("core 1 full: 99% (herald 50% + redis-server 49%); tool 50%"),
            "{s}"
        );
        assert!(s.contains("30 subscribers on nodes 2–3 (15 each)"), "{s}");
        assert!(!s.contains("overload"), "no overload runs: {s}");
    }

    #[test]
    fn single_server_runs_make_no_table() {
        let mut r = run(Target::Herald, "fanout", None, 1.0, 0);
        r.sub_urls.clear();
        let mut s = String::new();
        table(&[r], &mut s);
        assert!(s.is_empty());
    }
}
