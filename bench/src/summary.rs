//! `herald-bench report`: the comparison section of `BENCHMARKS.md` and its chart, from the
//! JSON results of one `bench/compare.sh` run.
//!
//! Only the text between `<!-- compare:begin -->` and `<!-- compare:end -->` is replaced, so
//! the rest of the file (written by hand) survives every run.

use std::fmt::Write;
use std::path::Path;

use super::BenchError;
use super::args::{ReportArgs, Scenario};
use super::backend;
use super::chart::{self, Group, Panel, Series};
use super::fmt::{fmt_count, fmt_kib, fmt_rate, fmt_rate_or, fmt_ratio, fmt_us, goal_cell, ratio};
use super::loads;
use super::proto::Target;
use super::report::Report;

pub const BEGIN: &str = "<!-- compare:begin -->";
pub const END: &str = "<!-- compare:end -->";

/// The goals of the benchmarks issue.
const FANOUT_GOAL: f64 = 1.5;
const IDLE_GOAL_BYTES: f64 = 8.0 * 1024.0;

const TARGETS: [Target; 3] = [Target::Herald, Target::Nats, Target::Socketio];
const COLORS: [&str; 3] = ["#d9534f", "#337ab7", "#5cb85c"];

pub fn write(args: &ReportArgs) -> Result<(), BenchError> {
    let mut reports = Vec::new();
    for path in &args.results {
        let text = std::fs::read_to_string(path)?;
        let r: Report = serde_json::from_str(&text).map_err(|e| {
            BenchError::Usage(format!("{}: not a bench result: {e}", path.display()))
        })?;
        reports.push(r);
    }
    let results = Results(reports);
    let svg_name = args
        .svg
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "compare.svg".into());
    let svg_link = relative_link(&args.out, &args.svg).unwrap_or(svg_name);
    let notes = match &args.notes {
        Some(p) => Some(std::fs::read_to_string(p)?),
        None => None,
    };
    let section = results.markdown(args, &svg_link, notes.as_deref());
    if let Some(dir) = args.svg.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.svg, results.chart())?;
    let old = std::fs::read_to_string(&args.out).unwrap_or_default();
    std::fs::write(&args.out, splice(&old, &section))?;
    println!("wrote {} and {}", args.out.display(), args.svg.display());
    Ok(())
}

/// `old` with the text between the markers replaced by `section` (markers added if absent).
pub fn splice(old: &str, section: &str) -> String {
    let body = format!("{BEGIN}\n{}\n{END}", section.trim_end());
    match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{body}{}", &old[..b], &old[e + END.len()..])
        }
        _ if old.trim().is_empty() => format!("# Benchmarks\n\n{body}\n"),
        _ => format!("{}\n\n{body}\n", old.trim_end()),
    }
}

/// The chart's path as seen from the Markdown file, when both are under the same folder.
fn relative_link(md: &Path, svg: &Path) -> Option<String> {
    let dir = md.parent().unwrap_or(Path::new(""));
    let rel = if dir.as_os_str().is_empty() {
        svg
    } else {
        svg.strip_prefix(dir).ok()?
    };
    Some(rel.to_string_lossy().into_owned())
}

struct Results(Vec<Report>);

impl Results {
    /// The last single-server result of `target` in `scenario` (unlabelled: labelled runs
    /// are the table of loads'; cluster runs the cluster table's).
    fn get(&self, target: Target, scenario: Scenario) -> Option<&Report> {
        self.0.iter().rev().find(|r| {
            r.target == target && r.scenario == scenario && r.label.is_none() && !r.is_cluster()
        })
    }

    /// Whether every run is a cluster run (`COMPARE_ONLY=cluster`): the section is then the
    /// cluster table alone.
    fn only_clusters(&self) -> bool {
        !self.0.is_empty() && self.0.iter().all(Report::is_cluster)
    }

    fn rate(&self, t: Target, s: Scenario) -> Option<f64> {
        self.get(t, s)
            .filter(|r| r.errors.is_empty() && r.received > 0)
            .map(|r| r.deliveries_per_sec)
    }

    fn efficiency(&self, t: Target, s: Scenario) -> Option<f64> {
        self.get(t, s)
            .filter(|r| r.errors.is_empty())
            .and_then(|r| r.deliveries_per_server_cpu_sec)
    }

    fn p(&self, t: Target, pick: fn(&super::Latency) -> f64) -> Option<f64> {
        self.get(t, Scenario::Latency)
            .filter(|r| r.errors.is_empty())
            .and_then(|r| r.latency.as_ref())
            .filter(|l| l.samples > 0)
            .map(pick)
    }

    fn idle(&self, t: Target) -> Option<f64> {
        self.get(t, Scenario::Idle)
            .and_then(|r| r.rss_per_connection)
    }

    fn markdown(&self, args: &ReportArgs, svg: &str, notes: Option<&str>) -> String {
        let mut s = String::new();
        let clusters = self.only_clusters();
        let date = args
            .date
            .as_deref()
            .map(|d| format!(" on {d}"))
            .unwrap_or_default();
        if clusters {
            let _ = writeln!(
                s,
                "## Herald side by side with NATS and Socket.IO: 3-node clusters\n\n\
                 Written by `bench/compare.sh`{date}. Every cluster ran alone on core 1 \
                 (`taskset -c 1`: its 3 nodes, and its redis-server), the load tool \
                 `herald-bench` on core 0; all on loopback, driven by the same tool in the \
                 same run. Ratios are Herald ÷ peer.\n"
            );
        } else {
            let _ = writeln!(s, "## Herald side by side with NATS and Socket.IO\n");
            let _ = writeln!(
                s,
                "Written by `bench/compare.sh`{date}. Every server ran alone on core 1 \
                 (`taskset -c 1`), the load tool `herald-bench` on core 0; all on loopback, \
                 driven by the same tool in the same run. Ratios are Herald ÷ peer.\n"
            );
        }
        let _ = writeln!(s, "- Machine: {}", machine());
        for f in &args.facts {
            let _ = writeln!(s, "- {f}");
        }
        if let Some(c) = &args.command {
            let _ = writeln!(s, "- Command: `{c}`");
        }
        s.push('\n');
        if clusters {
            super::cluster::table(&self.0, &mut s);
            s.push('\n');
        } else {
            let single: Vec<Report> = self.0.iter().filter(|r| !r.is_cluster()).cloned().collect();
            self.ratio_table(&mut s);
            loads::table(&single, &mut s);
            backend::table(&single, &mut s);
            super::compression::table(&single, &mut s);
            super::cluster::table(&self.0, &mut s);
            let _ = writeln!(s, "\n![Herald, NATS and Socket.IO side by side]({svg})\n");
        }
        self.detail_table(&mut s);
        if let Some(n) = notes {
            let _ = writeln!(s, "\n{}", n.trim_end());
        }
        s
    }

    fn ratio_table(&self, s: &mut String) {
        let mut footnotes = Vec::new();
        let _ = writeln!(
            s,
            "| scenario | measure | Herald | NATS | Socket.IO | Herald ÷ NATS | Herald ÷ Socket.IO | goal |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        for (sc, what) in [
            (Scenario::Fanout, "fan-out"),
            (Scenario::Fanin, "fan-in"),
            (Scenario::Topics, "many topics, wildcard subscribers"),
        ] {
            let shape = self
                .get(Target::Herald, sc)
                .or_else(|| self.get(Target::Nats, sc))
                .map(shape)
                .unwrap_or_default();
            let v: Vec<_> = TARGETS.iter().map(|&t| self.rate(t, sc)).collect();
            let goal = if sc == Scenario::Fanout {
                goal_cell(ratio(v[0], v[1]).map(|r| r >= FANOUT_GOAL), "≥ 1.5× NATS")
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "| {what} ({shape}) | deliveries/s (higher is better) | {} | {} | {} | {} | {} | {goal} |",
                fmt_rate(v[0]),
                fmt_rate(v[1]),
                fmt_rate_or(v[2], sc, Target::Socketio),
                fmt_ratio(ratio(v[0], v[1])),
                fmt_ratio(ratio(v[0], v[2])),
            );
            let e: Vec<_> = TARGETS.iter().map(|&t| self.efficiency(t, sc)).collect();
            let _ = writeln!(
                s,
                "| {what} | deliveries per server CPU-second | {} | {} | {} | {} | {} | |",
                fmt_rate(e[0]),
                fmt_rate(e[1]),
                fmt_rate_or(e[2], sc, Target::Socketio),
                fmt_ratio(ratio(e[0], e[1])),
                fmt_ratio(ratio(e[0], e[2])),
            );
        }
        let rate = |t| {
            self.get(t, Scenario::Latency)
                .and_then(|r| r.target_rate)
                .map(|r| format!(" at {}/s", fmt_count(r as f64)))
                .unwrap_or_default()
        };
        for (name, pick) in [
            (
                "p50",
                (|l: &super::Latency| l.p50_us) as fn(&super::Latency) -> f64,
            ),
            ("p99", |l| l.p99_us),
            ("p99.9", |l| l.p999_us),
        ] {
            let v: Vec<_> = TARGETS.iter().map(|&t| self.p(t, pick)).collect();
            let goal = if name == "p99" {
                goal_cell(ratio(v[0], v[1]).map(|r| r <= 1.0), "≤ NATS")
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "| latency{} | {name} µs (lower is better) | {} | {} | {} | {} | {} | {goal} |",
                rate(Target::Herald),
                fmt_us(v[0]),
                fmt_us(v[1]),
                fmt_us(v[2]).to_string()
                    + &self
                        .get(Target::Socketio, Scenario::Latency)
                        .filter(|r| r.target_rate
                            != self
                                .get(Target::Herald, Scenario::Latency)
                                .and_then(|h| h.target_rate))
                        .and_then(|r| r.target_rate)
                        .map(|r| format!(" (at {}/s)", fmt_count(r as f64)))
                        .unwrap_or_default(),
                fmt_ratio(ratio(v[0], v[1])),
                fmt_ratio(ratio(v[0], v[2])),
            );
        }
        let behind: Vec<&str> = TARGETS
            .iter()
            .filter(|&&t| self.get(t, Scenario::Latency).is_some_and(|r| r.lost > 0))
            .map(|t| t.label())
            .collect();
        if !behind.is_empty() {
            footnotes.push(format!(
                "Latency: {} lost messages in the fixed-rate run, so it fell behind the rate \
                 (its CPU share during the run is under “Every run”); that latency measures a \
                 growing backlog more than the server's own delay.",
                behind.join(", ")
            ));
        }
        let v: Vec<_> = TARGETS.iter().map(|&t| self.idle(t)).collect();
        let conns = self
            .get(Target::Herald, Scenario::Idle)
            .and_then(|r| r.connections)
            .map(|n| {
                format!(
                    " ({} connections, 1 subscription each)",
                    fmt_count(n as f64)
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "| idle connections{conns} | server memory per connection (lower is better) | {} | {} | {} | {} | {} | {} |",
            fmt_kib(v[0]),
            fmt_kib(v[1]),
            fmt_kib(v[2]),
            fmt_ratio(ratio(v[0], v[1])),
            fmt_ratio(ratio(v[0], v[2])),
            goal_cell(v[0].map(|b| b <= IDLE_GOAL_BYTES), "≤ 8 KiB"),
        );
        for f in footnotes {
            let _ = writeln!(s, "\nNote: {f}");
        }
    }

    fn detail_table(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "<details><summary>Every run</summary>\n\n\
             | server | scenario | load | published | delivered | lost | time s | deliveries/s | server CPU | per server CPU-s | tool CPU | errors |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for r in &self.0 {
            let pct = |c: Option<f64>| {
                c.map(|c| format!("{:.0}%", c * 100.0))
                    .unwrap_or("–".into())
            };
            let (published, delivered, lost, rate) = if r.scenario == Scenario::Idle {
                (
                    "–".to_string(),
                    format!("{} conns", r.connections.unwrap_or(0)),
                    "–".to_string(),
                    "–".to_string(),
                )
            } else {
                (
                    r.published.to_string(),
                    r.received.to_string(),
                    r.lost.to_string(),
                    fmt_rate(Some(r.deliveries_per_sec)),
                )
            };
            let _ = writeln!(
                s,
                "| {} | {}{} | {} | {published} | {delivered} | {lost} | {:.2} | {rate} | {} | {} | {} | {} |",
                r.target.label(),
                r.scenario.name(),
                if r.is_cluster() {
                    format!(
                        " (cluster: subscribers on {} other nodes)",
                        r.sub_urls.len()
                    )
                } else {
                    String::new()
                },
                r.label.as_deref().unwrap_or("–"),
                r.seconds,
                pct(r.server_cpu)
                    + &r.processes_text()
                        .map(|p| format!(" ({p})"))
                        .unwrap_or_default(),
                fmt_rate(r.deliveries_per_server_cpu_sec),
                pct(r.tool_cpu),
                if r.errors.is_empty() {
                    "–".to_string()
                } else {
                    r.errors.join("; ").replace('|', "/")
                }
            );
        }
        let _ = writeln!(s, "\n</details>");
    }

    fn chart(&self) -> String {
        let throughput = [
            (Scenario::Fanout, "fan-out"),
            (Scenario::Fanin, "fan-in"),
            (Scenario::Topics, "topics"),
        ];
        let panels = vec![
            Panel {
                title: "Deliveries/s, millions (higher is better)".into(),
                groups: throughput
                    .iter()
                    .map(|&(sc, label)| Group {
                        label: label.into(),
                        values: TARGETS
                            .iter()
                            .map(|&t| self.rate(t, sc).map(|v| v / 1e6))
                            .collect(),
                    })
                    .collect(),
                format: |v| format!("{v:.2}"),
            },
            Panel {
                title: format!(
                    "Latency µs{} (lower is better)",
                    self.get(Target::Herald, Scenario::Latency)
                        .and_then(|r| r.target_rate)
                        .map(|r| format!(" at {}/s", fmt_count(r as f64)))
                        .unwrap_or_default()
                ),
                groups: [
                    (
                        "p50",
                        (|l: &super::Latency| l.p50_us) as fn(&super::Latency) -> f64,
                    ),
                    ("p99", |l| l.p99_us),
                    ("p99.9", |l| l.p999_us),
                ]
                .iter()
                .map(|&(label, pick)| Group {
                    label: label.into(),
                    // Socket.IO runs at a lower rate; its latency is in the table, not here.
                    values: vec![
                        self.p(Target::Herald, pick),
                        self.p(Target::Nats, pick),
                        None,
                    ],
                })
                .collect(),
                format: |v| format!("{v:.0}"),
            },
            Panel {
                title: "KiB per idle connection (lower is better)".into(),
                groups: vec![Group {
                    label: "server RSS".into(),
                    values: TARGETS
                        .iter()
                        .map(|&t| self.idle(t).map(|b| b / 1024.0))
                        .collect(),
                }],
                format: |v| format!("{v:.1}"),
            },
        ];
        let names: Vec<&str> = TARGETS.iter().map(|t| t.label()).collect();
        chart::render(
            "Herald vs NATS vs Socket.IO: same machine, same run, same load tool",
            &panels,
            &Series {
                names: &names,
                colors: &COLORS,
            },
        )
    }
}

fn shape(r: &Report) -> String {
    let subs = match r.subscribers {
        1 => "1 sub".to_owned(),
        n => format!("{n} subs"),
    };
    match r.scenario {
        Scenario::Topics => format!(
            "{} topics, {} pub → {subs} on a wildcard, {} B",
            r.topics, r.publishers, r.size
        ),
        _ => format!("{} pub → {subs}, {} B", r.publishers, r.size),
    }
}

/// CPU model, cores, memory and kernel, from /proc.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let l = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: f64 = l.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.0} GiB", kib / 1024.0 / 1024.0))
        })
        .unwrap_or_else(|| "? GiB".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_default();
    format!("{model}, {cores} cores, {mem} RAM, Linux {kernel}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_replaces_only_the_section() {
        let old = format!("# B\n\nintro\n\n{BEGIN}\nold\n{END}\n\nafter\n");
        let new = splice(&old, "new");
        assert_eq!(
            new,
            format!("# B\n\nintro\n\n{BEGIN}\nnew\n{END}\n\nafter\n")
        );
        assert!(splice("", "x").contains(&format!("{BEGIN}\nx\n{END}")));
        let appended = splice("# Mine\n", "x");
        assert!(appended.starts_with("# Mine\n"));
        assert!(appended.contains(BEGIN));
    }

    #[test]
    fn svg_link_is_relative_to_the_markdown() {
        assert_eq!(
            relative_link(Path::new("BENCHMARKS.md"), Path::new("bench/compare.svg")).unwrap(),
            "bench/compare.svg"
        );
        assert_eq!(
            relative_link(Path::new("/r/BENCHMARKS.md"), Path::new("/r/bench/c.svg")).unwrap(),
            "bench/c.svg"
        );
    }
}
